// Whether bytes hold only CRLF line ends: every LF right after a CR, every
// CR right before an LF. Mail is almost always so, and inbound/line-
// endings.ts needs to know it for every chunk of every message before it
// can pass the chunk on untouched. Node has no native search for the first
// of two bytes, so finding line ends with indexOf took two calls into
// native code per line: 4.5 ms per 10 MB message of 80-byte lines, about
// 12% of the CPU such a message costs. Here a WebAssembly function compares
// 16 bytes at a time with SIMD: 0.8 ms per 10 MB with the copy into its
// memory (bench/ROUNDS.md, "Twenty-first round").
//
// The rule, byte by byte: a byte is an LF exactly when the byte before it
// is a CR, and the last byte is no CR. For 16 bytes at once, with a bit
// per byte for "is CR" and one for "is LF": lf == (cr << 1 | carry) in 16
// bits, where carry says that the byte before the block was a CR.
//
//   isAllCrlf - whether `bytes` hold only CRLF line ends (none at all is fine), and do not end in a CR.

/** The module's one function, crlfRun(length, carry), in WebAssembly's text format beside its bytes. */
const CRLF_RUN: number[] = [
  // (local $o i32) (local $cr i32) (local $v v128); params: $length (0, a multiple of 16), $carry (1)
  0x02, 0x02, 0x7f, 0x01, 0x7b,
  0x02, 0x40, //                     block $done
  0x03, 0x40, //                       loop $block
  0x20, 0x02, 0x20, 0x00, 0x4f, //       local.get $o, local.get $length, i32.ge_u
  0x0d, 0x01, //                         br_if $done
  0x20, 0x02, 0xfd, 0x00, 0x00, 0x00, // local.get $o, v128.load
  0x21, 0x04, //                         local.set $v
  0x20, 0x04, ...splat(0x0d), //         local.get $v, v128.const i8x16 13 (×16)
  0xfd, 0x23, 0xfd, 0x64, 0x21, 0x03, // i8x16.eq, i8x16.bitmask, local.set $cr
  0x20, 0x04, ...splat(0x0a), //         local.get $v, v128.const i8x16 10 (×16)
  0xfd, 0x23, 0xfd, 0x64, //             i8x16.eq, i8x16.bitmask: the LF bits
  0x20, 0x03, 0x41, 0x01, 0x74, //       local.get $cr, i32.const 1, i32.shl
  0x41, 0xff, 0xff, 0x03, 0x71, //       i32.const 0xffff, i32.and
  0x20, 0x01, 0x72, //                   local.get $carry, i32.or: where the LF bits must be
  0x47, 0x04, 0x40, //                   i32.ne, if
  0x41, 0x7f, 0x0f, //                     i32.const -1, return
  0x0b, //                               end
  0x20, 0x03, 0x41, 0x0f, 0x76, //       local.get $cr, i32.const 15, i32.shr_u
  0x21, 0x01, //                         local.set $carry
  0x20, 0x02, 0x41, 0x10, 0x6a, //       local.get $o, i32.const 16, i32.add
  0x21, 0x02, //                         local.set $o
  0x0c, 0x00, //                         br $block
  0x0b, 0x0b, //                       end, end
  0x20, 0x01, //                     local.get $carry: 1 when the last byte was a CR
  0x0b,
];

/** One 64 KiB page of memory; longer inputs go through it a window at a time (a multiple of 16 bytes). */
const WINDOW = 65536;

const { memory, crlfRun } = instantiate();
const windowBytes = new Uint8Array(memory.buffer, 0, WINDOW);

/** isAllCrlf - whether `bytes` hold only CRLF line ends (none at all is fine), and do not end in a CR. */
export function isAllCrlf(bytes: Uint8Array): boolean {
  let carry = 0;
  for (let at = 0; at < bytes.length; at += WINDOW) {
    const window = bytes.subarray(at, at + WINDOW);
    windowBytes.set(window);
    const blocks = window.length & ~15;
    carry = crlfRun(blocks, carry);
    if (carry < 0) return false;
    // Only the last window has bytes after its last whole block.
    for (let i = blocks; i < window.length; i++) {
      const byte = window[i];
      if ((byte === 0x0a ? 1 : 0) !== carry) return false;
      carry = byte === 0x0d ? 1 : 0;
    }
  }
  return carry === 0;
}

function splat(byte: number): number[] {
  return [0xfd, 0x0c, ...new Array<number>(16).fill(byte)];
}

function instantiate(): { memory: WebAssembly.Memory; crlfRun: (length: number, carry: number) => number } {
  const uleb = (n: number): number[] => (n < 0x80 ? [n] : [(n & 0x7f) | 0x80, ...uleb(n >>> 7)]);
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const name = (text: string) => [text.length, ...Buffer.from(text, 'latin1')];
  const bytes = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, [1, 0x60, 2, 0x7f, 0x7f, 1, 0x7f]), // one type: (i32, i32) -> i32
    ...section(3, [1, 0]), // one function, of that type
    ...section(5, [1, 0, 1]), // one memory of one page
    ...section(7, [2, ...name('memory'), 2, 0, ...name('crlfRun'), 0, 0]), // exported
    ...section(10, [1, ...uleb(CRLF_RUN.length), ...CRLF_RUN]),
  ]);
  const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes));
  return exports as unknown as { memory: WebAssembly.Memory; crlfRun: (length: number, carry: number) => number };
}
