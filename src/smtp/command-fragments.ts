// smtp-server reads command lines by joining what it holds of the current
// line with each new chunk and searching the whole for a line end
// (SMTPStream#_write). A client that sends a line a byte at a time so made
// it search the line again for every byte: a 16 KB line (the most it takes
// before "421 Command line too long") cost about 130 million characters
// looked at, a tenth of a second of the event loop per line, for a few
// thousand bytes sent. Postfix reads lines in linear time. A chunk outside
// DATA that holds no LF cannot end a line: it is added to what is held, with
// the library's length limit, and not searched; any other chunk goes to the
// library's method as before.
// Installed on both builds of smtp-server (ESM and CJS), like
// smtp/fast-data-scan.ts. Throws at start if the library's layout changed.
//
//   installCommandFragments - replace SMTPStream#_write in both builds; idempotent.
import { patchMethods, SMTP_STREAM } from './library-builds.ts';

/** The parser's state that _write reads and writes (smtp-server's SMTPStream). */
interface CommandStreamState {
  _dataMode: boolean;
  isClosed: boolean;
  _remainder: string;
  _maxCommandLength: number;
  _commandTooLong(): Error;
  _write(chunk: Buffer, encoding: BufferEncoding, next: (err?: Error | null) => void): void;
}

const LF = 0x0a;

/** installCommandFragments - a command chunk without a line end is held without a search; idempotent. */
export function installCommandFragments(): Promise<void> {
  return patchMethods<CommandStreamState, '_write' | '_commandTooLong'>('command fragments', SMTP_STREAM, ['_write', '_commandTooLong'], (library) => ({
    _write(this: CommandStreamState, chunk: Buffer, encoding: BufferEncoding, next: (err?: Error | null) => void) {
      if (this._dataMode || this.isClosed || !chunk || chunk.length === 0 || chunk.indexOf(LF) !== -1) return library._write.call(this, chunk, encoding, next);
      this._remainder += chunk.toString('binary');
      if (this._remainder.length > this._maxCommandLength) return next(this._commandTooLong());
      next();
    },
  }));
}
