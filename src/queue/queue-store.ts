// The queue: the only place inbound and outbound meet (DESIGN.md).
//
// QueueStore is the contract every backend (sqlite, later postgres) fulfils
// and one shared contract suite (test/helpers/queue-store-contract.ts) checks.
// Failure model: every method rejects on a storage error; a message is
// visible to readers only after commit() resolved, and commit() resolves
// only once message and envelope are durable (fsynced). A draft that is
// discarded, or never committed because the process died, leaves nothing.
import type { Readable } from 'node:stream';

/** How the client reached us: recorded with every message, shown by `queue show`. */
export interface ClientFacts {
  address: string;
  helo: string;
  listener: 'relay' | 'submission' | 'submissions';
  authUser?: string;
  tlsVersion?: string;
  tlsCipher?: string;
}

/** The SMTP envelope as accepted, plus what the sender asked for. */
export interface StoredEnvelope {
  /** '' is the null sender (bounces). */
  mailFrom: string;
  recipients: string[];
  /** BODY= parameter: '7BIT' or '8BITMIME'. */
  bodyType: '7BIT' | '8BITMIME';
  smtpUtf8: boolean;
  client: ClientFacts;
}

export type MessageState = 'queued' | 'held';

/** One line of `postern queue list`. */
export interface QueuedMessageSummary {
  id: string;
  mailFrom: string;
  recipients: string[];
  size: number;
  receivedAt: Date;
  state: MessageState;
}

/** A message being received: its id is fixed first so the Received header can name it. */
export interface MessageDraft {
  readonly id: string;
  /** writeBody - stream the final bytes to storage; resolves with the byte count. Rejects if the stream errors. */
  writeBody(body: Readable): Promise<number>;
  /** commit - make body and envelope durable; only after this may the client hear 250. */
  commit(envelope: StoredEnvelope): Promise<void>;
  /** discard - throw the draft away (client vanished, message refused); idempotent. */
  discard(): Promise<void>;
}

export interface QueueStore {
  /** beginMessage - start a draft with a fresh queue id. */
  beginMessage(): MessageDraft;
  /** listMessages - committed messages, oldest first. */
  listMessages(): Promise<QueuedMessageSummary[]>;
  /** readBody - the stored bytes of a committed message; the stream errors if the id is unknown. */
  readBody(id: string): Readable;
  /** close - release files and handles; drafts not committed are discarded. */
  close(): Promise<void>;
}
