// Bare CR and bare LF in DATA (smtp.bareLineFeed). smtp-server ends DATA
// only on <CRLF>.<CRLF> but stores bare CR/LF unchanged, and a next hop
// that reads them as line ends could see a different message (SMTP
// smuggling). Like Postfix 3.9's smtpd_forbid_bare_newline:
//  - normalize: every bare CR or LF becomes CRLF (the default);
//  - reject: bytes pass unchanged, `found` is set, and the caller refuses
//    the message with 550 5.5.2 once DATA ends.
// End of DATA was already decided on the raw bytes, so rewriting here can
// not make a second message appear.
import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export class BareLineEndings extends Transform {
  /** Whether any bare CR or LF was seen. */
  found = false;
  private pendingCr = false;

  constructor(private readonly mode: 'normalize' | 'reject') {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (this.mode === 'reject') {
      if (!this.found) this.found = hasBareLineEnding(chunk, this.pendingCr);
      this.pendingCr = chunk.length > 0 && chunk[chunk.length - 1] === CR;
      return done(null, chunk);
    }
    done(null, this.normalize(chunk));
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCr) {
      // A message ending in a lone CR: the CR was bare.
      this.found = true;
      if (this.mode === 'normalize') return done(null, CRLF);
    }
    done();
  }

  private normalize(chunk: Buffer): Buffer {
    const parts: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (chunk[0] === LF) {
        parts.push(CRLF);
        start = i = 1;
      } else {
        this.found = true;
        parts.push(CRLF);
      }
    }
    for (; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte === CR) {
        if (i + 1 === chunk.length) {
          parts.push(chunk.subarray(start, i));
          this.pendingCr = true;
          start = chunk.length;
        } else if (chunk[i + 1] === LF) {
          i++;
        } else {
          this.found = true;
          parts.push(chunk.subarray(start, i), CRLF);
          start = i + 1;
        }
      } else if (byte === LF) {
        this.found = true;
        parts.push(chunk.subarray(start, i), CRLF);
        start = i + 1;
      }
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}

function hasBareLineEnding(chunk: Buffer, pendingCr: boolean): boolean {
  if (pendingCr && chunk.length > 0 && chunk[0] !== LF) return true;
  for (let i = 0; i < chunk.length; i++) {
    if (chunk[i] === LF && (i === 0 ? !pendingCr : chunk[i - 1] !== CR)) return true;
    if (chunk[i] === CR && i + 1 < chunk.length && chunk[i + 1] !== LF) return true;
  }
  return false;
}
