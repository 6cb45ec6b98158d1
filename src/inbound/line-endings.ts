// Bare CR and bare LF in DATA (smtp.bareLineFeed). smtp-server ends DATA
// only on <CRLF>.<CRLF> but stores bare CR/LF unchanged, and a next hop
// that reads them as line ends could see a different message (SMTP
// smuggling). Like Postfix 3.9's smtpd_forbid_bare_newline:
//  - normalize: every bare CR or LF becomes CRLF (the default);
//  - reject: bytes pass unchanged, `found` is set, and the caller refuses
//    the message with 550 5.5.2 once DATA ends.
// End of DATA was already decided on the raw bytes, so rewriting here can
// not make a second message appear.
// As the first stage after smtp-server, it also passes small chunks on
// gathered (chunk-gatherer.ts), so a client sending a byte at a time does
// not make the later stages hold a Buffer per byte.
import { Transform, type TransformCallback } from 'node:stream';
import { ChunkGatherer } from './chunk-gatherer.ts';
import { isAllCrlf } from './crlf-scan.ts';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

export class BareLineEndings extends Transform {
  /** Whether any bare CR or LF was seen. */
  found = false;
  /**
   * Whether the message as stored (bare line ends made CRLF) is over the size limit: nothing more is passed on once it
   * is. smtp-server counts the bytes as sent, and a message of bare LFs is stored at up to twice that.
   */
  overLimit = false;
  private bytesOut = 0;
  private pendingCr = false;
  private readonly gatherer = new ChunkGatherer();

  constructor(
    private readonly mode: 'normalize' | 'reject',
    private readonly sizeLimit: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    // An empty chunk says nothing of a CR the last one ended with.
    if (chunk.length === 0) return done();
    if (this.mode === 'reject') {
      if (!this.found && !this.clean(chunk)) this.found = hasBareLineEnding(chunk, this.pendingCr);
      this.pendingCr = chunk[chunk.length - 1] === CR;
      this.passOn(chunk);
    } else {
      this.passOn(this.clean(chunk) ? chunk : this.normalize(chunk));
    }
    done();
  }

  /** passOn - `out`, gathered with its neighbours when small, unless it takes the message over the size limit (Postfix's cleanup stops storing there too). */
  private passOn(out: Buffer): void {
    this.bytesOut += out.length;
    if (this.bytesOut > this.sizeLimit) this.overLimit = true;
    if (!this.overLimit) for (const piece of this.gatherer.take(out)) this.push(piece);
  }

  /** clean - the usual chunk: CRLF line ends only, and nothing carried over from the one before. */
  private clean(chunk: Buffer): boolean {
    return !this.pendingCr && isAllCrlf(chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingCr) {
      // A message ending in a lone CR: the CR was bare.
      this.found = true;
      if (this.mode === 'normalize') this.passOn(CRLF);
    }
    const rest = this.gatherer.release();
    done(null, this.overLimit ? undefined : rest);
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
    // From line end to line end with indexOf (native), not byte by byte: a
    // message is mostly CRLF pairs, and only bare ones make a copy.
    let nextCr = chunk.indexOf(CR, i);
    let nextLf = chunk.indexOf(LF, i);
    while (nextCr !== -1 || nextLf !== -1) {
      if (nextLf === -1 || (nextCr !== -1 && nextCr < nextLf)) {
        if (nextCr + 1 === chunk.length) {
          // The chunk ends in a CR: the next chunk decides whether it is bare.
          parts.push(chunk.subarray(start, nextCr));
          this.pendingCr = true;
          start = chunk.length;
          break;
        }
        if (nextLf === nextCr + 1) {
          nextLf = chunk.indexOf(LF, nextCr + 2);
        } else {
          this.found = true;
          parts.push(chunk.subarray(start, nextCr), CRLF);
          start = nextCr + 1;
        }
        nextCr = chunk.indexOf(CR, nextCr + 1);
      } else {
        // An LF not right after a CR (the CR of a pair takes its LF along above).
        this.found = true;
        parts.push(chunk.subarray(start, nextLf), CRLF);
        start = nextLf + 1;
        nextLf = chunk.indexOf(LF, start);
      }
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    if (parts.length === 0) return chunk.subarray(0, 0);
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
