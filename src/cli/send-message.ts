// The message `postern send` sends: a stored .eml sent as it is, or one
// built by nodemailer's MailComposer (RFC 5322 headers: Date, Message-ID,
// From, To, Subject; MIME multipart/mixed when files are attached).
// Fails: composeMessage rejects when an attachment cannot be read (the
// caller reports it as a bad argument); nothing else.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import MailComposer from 'nodemailer/lib/mail-composer';

export const DEFAULT_SUBJECT = 'Test message from postern send';
export const DEFAULT_BODY = 'This is a test message sent by postern send.\n';

export interface ComposeRequest {
  from: string;
  to: string[];
  subject?: string;
  /** The text body; DEFAULT_BODY when absent or empty. */
  body?: string;
  /** Files to attach, read now so a missing one is reported before connecting. */
  attach: string[];
}

/** composeMessage - the RFC 5322 bytes for a text message with optional attachments. */
export async function composeMessage(request: ComposeRequest): Promise<Buffer> {
  const attachments = await Promise.all(request.attach.map(async (path) => ({ filename: basename(path), content: await readFile(path) })));
  const composer = new MailComposer({
    from: request.from,
    to: request.to,
    subject: request.subject ?? DEFAULT_SUBJECT,
    text: request.body ? request.body : DEFAULT_BODY,
    attachments,
    // CRLF on the wire, as RFC 5322 2.1 wants it; nodemailer would convert LF anyway.
    newline: 'win',
  });
  return composer.compile().build();
}

/** splitPasswordLine - the first line (the password) and the bytes after it (the body, if any). */
export function splitPasswordLine(input: Buffer): { password: string; rest: Buffer } {
  const end = input.indexOf(0x0a);
  if (end === -1) return { password: input.toString('utf8').replace(/\r$/, ''), rest: Buffer.alloc(0) };
  return { password: input.subarray(0, end).toString('utf8').replace(/\r$/, ''), rest: input.subarray(end + 1) };
}

/** readAll - every byte of a stream (stdin). */
export async function readAll(input: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}
