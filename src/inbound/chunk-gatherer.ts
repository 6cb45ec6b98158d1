// Small chunks of a message gathered into larger ones before they go on to
// be stored. A client decides how its bytes are cut into TCP segments: sent
// a byte at a time, each byte reached the stages after smtp-server as a
// Buffer of its own, some hundred bytes of memory each, and the header
// (held whole until it ends, up to 256 KB) or a store's write batch took a
// hundred times its size. Postfix's cleanup holds bytes, not segments.
// A chunk of SMALL_CHUNK bytes or more goes on as it came, uncopied, as do
// a lone small one before it (smtp-server's DATA scan passes on four bytes
// ahead of each chunk); a run of small chunks is copied together into one
// buffer of GATHERED bytes, passed on when full or when a large chunk or the
// end comes. So a connection holds at most GATHERED bytes here.
//
//   ChunkGatherer - take(chunk): what to pass on now; release(): what is held, at the end.

/** Chunks smaller than this are gathered. */
export const SMALL_CHUNK = 1024;
/** The size of a gathering buffer; a full one is passed on. */
export const GATHERED = 16 * 1024;

export class ChunkGatherer {
  /** A small chunk held as it came, while no other followed it. */
  private lone: Buffer | undefined;
  private gathered: Buffer | undefined;
  private used = 0;

  /** take - the chunks to pass on now, in order; `chunk`'s bytes are among them or held. */
  take(chunk: Buffer): Buffer[] {
    if (chunk.length === 0) return [];
    if (chunk.length >= SMALL_CHUNK) {
      const held = this.release();
      return held ? [held, chunk] : [chunk];
    }
    if (!this.lone && this.used === 0) {
      this.lone = chunk;
      return [];
    }
    const out: Buffer[] = [];
    if (this.lone) {
      this.append(this.lone);
      this.lone = undefined;
    }
    if (this.used + chunk.length > GATHERED) out.push(this.release()!);
    this.append(chunk);
    return out;
  }

  /** release - what is held, as one chunk; undefined when nothing is. */
  release(): Buffer | undefined {
    if (this.lone) {
      const lone = this.lone;
      this.lone = undefined;
      return lone;
    }
    if (this.used === 0 || !this.gathered) return undefined;
    const used = this.used;
    this.used = 0;
    // A short gathering is copied out (from Node's pool) and the buffer kept for the next; a long one goes as it is.
    if (used <= SMALL_CHUNK * 4) return Buffer.from(this.gathered.subarray(0, used));
    const out = this.gathered.subarray(0, used);
    this.gathered = undefined;
    return out;
  }

  private append(chunk: Buffer): void {
    this.gathered ??= Buffer.allocUnsafe(GATHERED);
    this.used += chunk.copy(this.gathered, this.used);
  }
}
