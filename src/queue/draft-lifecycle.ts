// The life of a message being received, the same in every queue backend:
// the states a draft goes through, which call is allowed in which, and what
// discard does at each step. Where the bytes go and what makes them durable
// is the backend's DraftStorage (in SQLite a row holding a small body, or a
// row and a body file; in PostgreSQL chunk rows, the last with the envelope).
//
// Decides the draft's life: open → writing → written → committing →
// committed, or discarded / failed from any step before committed. writeBody
// is allowed only when open, commit only when written and only for an
// envelope with a recipient. discard aborts a write in progress (its
// failure path then abandons the storage) or abandons a written draft; it
// waits for a commit in flight and lets the commit decide; it does nothing
// to a committed, discarded or failed draft. A draft reaching an end
// (committed, discarded, failed) is reported once through onEnd, so the
// store stops tracking it.
//
// How it fails: writeBody and commit reject, naming the call and the state,
// when called out of order; writeBody rejects, after abandoning the storage,
// when the storage's write does (or the draft was discarded as it finished);
// commit rejects when the storage's commit does, which has by then cleaned
// up after itself. A draft that failed or was discarded stays dead. discard
// never rejects unless the storage's abandon does.
//
//   DraftStorage   - what a backend supplies: write, commit, abandon.
//   DraftLifecycle - the MessageDraft every backend hands out, built on a DraftStorage.
//   OpenDrafts     - a store's drafts not yet ended, which its close discards.
import type { Readable } from 'node:stream';
import type { MessageDraft, StoredEnvelope } from './queue-store.ts';

/** What a backend does at each step of a draft; the lifecycle calls each at most as its states allow. */
export interface DraftStorage {
  /** write - store the body as it streams in, stopping when `signal` aborts; resolves with the byte count. */
  write(body: Readable, signal: AbortSignal): Promise<number>;
  /** commit - make the written body and the envelope durable; on rejection, it has undone what it must. */
  commit(envelope: StoredEnvelope): Promise<void>;
  /** abandon - undo a write that failed, or a written draft being discarded. */
  abandon(): Promise<void>;
}

type DraftState = 'open' | 'writing' | 'written' | 'committing' | 'committed' | 'discarded' | 'failed';

export class DraftLifecycle implements MessageDraft {
  #state: DraftState = 'open';
  /** The writeBody or commit in flight, settled (never rejects): discard waits for it. */
  #inFlight: Promise<unknown> = Promise.resolve();
  readonly #abort = new AbortController();

  /** `onEnd` - the draft reached an end (committed, discarded, failed): the store stops tracking it. */
  constructor(
    readonly id: string,
    private readonly storage: DraftStorage,
    private readonly onEnd: (draft: DraftLifecycle) => void,
  ) {}

  /** writeBody - hand the body to the storage; resolves with the byte count. */
  writeBody(body: Readable): Promise<number> {
    if (this.#state !== 'open') return Promise.reject(this.#outOfOrder('writeBody'));
    this.#state = 'writing';
    const writing = this.#write(body);
    this.#inFlight = writing.catch(() => undefined);
    return writing;
  }

  /** commit - have the storage make body and envelope durable; only then resolve. */
  commit(envelope: StoredEnvelope): Promise<void> {
    if (this.#state !== 'written') return Promise.reject(this.#outOfOrder('commit'));
    if (envelope.recipients.length === 0) return Promise.reject(new Error(`draft ${this.id}: an envelope needs at least one recipient`));
    this.#state = 'committing';
    const committing = this.#commit(envelope);
    this.#inFlight = committing.catch(() => undefined);
    return committing;
  }

  /** discard - abort a write in progress or abandon a written draft; no-op once committed. */
  async discard(): Promise<void> {
    const state = this.#state;
    if (state === 'committing' || state === 'committed' || state === 'discarded' || state === 'failed') {
      // A commit in flight decides: committed stays committed, a failed one cleaned up after itself.
      await this.#inFlight;
      return;
    }
    this.#state = 'discarded';
    if (state === 'writing') {
      this.#abort.abort(); // #write's catch abandons the storage
      await this.#inFlight;
    } else {
      await this.storage.abandon();
    }
    this.onEnd(this);
  }

  async #write(body: Readable): Promise<number> {
    try {
      const size = await this.storage.write(body, this.#abort.signal);
      // Discarded in the moment the write finished: the abort came too late to stop it.
      if (this.#state !== 'writing') throw new Error(`draft ${this.id}: discarded as its body was written`);
      this.#state = 'written';
      return size;
    } catch (error) {
      if (this.#state === 'writing') this.#state = 'failed';
      await this.storage.abandon();
      this.onEnd(this);
      throw error;
    }
  }

  async #commit(envelope: StoredEnvelope): Promise<void> {
    try {
      await this.storage.commit(envelope);
    } catch (error) {
      this.#state = 'failed';
      this.onEnd(this);
      throw error;
    }
    this.#state = 'committed';
    this.onEnd(this);
  }

  #outOfOrder(call: string): Error {
    return new Error(`draft ${this.id}: ${call} called when the draft is ${this.#state}`);
  }
}

/** The drafts a store has handed out that have not reached an end: what its close discards. */
export class OpenDrafts {
  readonly #drafts = new Set<DraftLifecycle>();

  /** begin - a new draft with queue id `id` on `storage`, tracked until it ends. */
  begin(id: string, storage: DraftStorage): DraftLifecycle {
    const draft = new DraftLifecycle(id, storage, (ended) => this.#drafts.delete(ended));
    this.#drafts.add(draft);
    return draft;
  }

  /** discardAll - discard every draft not yet ended; a commit in flight is waited for, and decides. */
  async discardAll(): Promise<void> {
    await Promise.all([...this.#drafts].map((draft) => draft.discard()));
  }
}
