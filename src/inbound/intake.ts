// Intake: one message from the DATA stream to the queue, streamed (memory
// does not grow with message size: a store holds at most 256 KB of a body
// before it writes it out), with the trace headers prepended and
// bare line endings handled. Answers with the queue id only after the
// store committed (durable); on any failure the draft is discarded, so a
// dropped connection or a refused message leaves nothing behind. A client
// that leaves mid-message is told apart from a refusal: there is nobody to
// answer, and the store did nothing wrong (Postfix: "lost connection after
// DATA").
import type { Readable, Transform } from 'node:stream';
import type { Config, ListenerName } from '../config/config.ts';
import type { QueueStore, StoredEnvelope } from '../queue/queue-store.ts';
import { replies, type Reply } from '../smtp/replies.ts';
import { BareLineEndings } from './line-endings.ts';
import { buildReceivedHeader, HeaderPrepender, HOP_LIMIT, messageIdOf, missingSubmissionHeaders, receivedCount, type ReceivedFacts } from './trace-headers.ts';

export type IntakeResult =
  | { outcome: 'queued'; queueId: string; size: number; messageId?: string }
  | { outcome: 'refused'; reply: Reply; reason: string; error?: Error }
  /** The client's connection ended before the message did; `receivedBytes` of it had come. */
  /** bareLineEndings: the message had lines ending in a bare LF or CR, so its "<LF>.<LF>" (if any) did not end it. */
  | { outcome: 'lost'; receivedBytes: number; bareLineEndings: boolean };

export interface IntakeRequest {
  store: QueueStore;
  /** smtp-server's DATA stream: it keeps count of the bytes received and whether they passed the size limit. */
  data: Readable & { sizeExceeded?: boolean; byteLength?: number };
  envelope: StoredEnvelope;
  listener: ListenerName;
  received: Omit<ReceivedFacts, 'queueId' | 'recipients' | 'hostname' | 'date' | 'smtpUtf8'>;
  config: Pick<Config, 'hostname' | 'smtp'> & { limits: Pick<Config['limits'], 'messageSize'> };
  now: Date;
}

/** receiveMessage - stream, check, commit; never throws. */
export async function receiveMessage(request: IntakeRequest): Promise<IntakeResult> {
  const { store, envelope, config, now } = request;
  const draft = store.beginMessage();
  const received = buildReceivedHeader({ ...request.received, queueId: draft.id, recipients: envelope.recipients, hostname: config.hostname, date: now, smtpUtf8: envelope.smtpUtf8 });
  const addSubmissionHeaders = request.listener !== 'relay';
  const lineEndings = new BareLineEndings(config.smtp.bareLineFeed, config.limits.messageSize);
  let hops = 0;
  let messageId: string | undefined;
  const prepender = new HeaderPrepender((headerBlock) => {
    hops = receivedCount(headerBlock) + 1;
    const added = addSubmissionHeaders ? missingSubmissionHeaders(headerBlock, { queueId: draft.id, hostname: config.hostname, date: now, mailFrom: envelope.mailFrom }) : '';
    messageId = messageIdOf(headerBlock) ?? messageIdOf(added);
    return received + added;
  });
  const link = linkStages(request.data, lineEndings, prepender);
  try {
    const size = await draft.writeBody(link.body);
    // Counted as sent (smtp-server) and as stored, bare line ends made CRLF (Postfix's cleanup counts what it
    // writes): a message of bare LFs was otherwise queued at twice the limit, for a next hop with the same limit to
    // refuse. Our own trace headers are not counted, or a message sent at exactly the SIZE we offer would be refused.
    if (request.data.sizeExceeded || lineEndings.overLimit) {
      await draft.discard();
      return { outcome: 'refused', reply: replies.messageTooBig, reason: 'message-too-big' };
    }
    if (hops >= HOP_LIMIT) {
      await draft.discard();
      return { outcome: 'refused', reply: replies.tooManyHops, reason: 'too-many-hops' };
    }
    if (lineEndings.found && config.smtp.bareLineFeed === 'reject') {
      await draft.discard();
      return { outcome: 'refused', reply: replies.bareLineFeed, reason: 'bare-line-feed' };
    }
    await draft.commit(envelope);
    return { outcome: 'queued', queueId: draft.id, size, ...(messageId !== undefined && { messageId }) };
  } catch (err) {
    await draft.discard().catch(() => undefined);
    if (link.clientLeft(err)) return { outcome: 'lost', receivedBytes: request.data.byteLength ?? 0, bareLineEndings: lineEndings.found };
    return { outcome: 'refused', reply: replies.queueWriteFailed, reason: 'queue-write-failed', error: err as Error };
  }
}

/**
 * linkStages - source.pipe(stage).pipe(…), where an error in any stage, or one closing before its end
 * (client gone mid-DATA, the draft giving up on a failed disk), destroys every stage with an error, so
 * writeBody rejects; the source is drained instead, unless it is gone: the client is still sending, and
 * smtp-server answers only once the message's end has been read. (stream.pipeline destroyed the source too,
 * and the reply never came; it also made an AbortController and two error objects for every message,
 * 3% of the loop's time with 4 KB messages.) `clientLeft(err)` tells whether the error the body's consumer
 * failed with is the source's own (smtp-server destroys it when the connection closes mid-message). Not which
 * stream failed first: a store write that fails after the client left (a sick disk makes clients time out)
 * rejects with its own error, and that one must be reported.
 */
function linkStages(source: Readable, ...stages: Transform[]): { body: Readable; clientLeft: (err: unknown) => boolean } {
  let sourceError: Error | undefined;
  const failed = (stream: Readable) => (error: Error) => {
    if (stream === source) sourceError ??= error;
    for (const stage of stages) if (!stage.destroyed) stage.destroy(error);
    if (!source.destroyed) {
      source.unpipe();
      source.resume();
    }
  };
  for (const stream of [source, ...stages]) {
    const fail = failed(stream);
    stream.on('error', fail);
    stream.once('close', () => {
      if (!stream.readableEnded) fail(new Error('message stream closed before its end'));
    });
  }
  return { body: stages.reduce<Readable>((upstream, stage) => upstream.pipe(stage), source), clientLeft: (err) => sourceError !== undefined && err === sourceError };
}
