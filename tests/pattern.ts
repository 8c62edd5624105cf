/**
 * A deterministic byte pattern both ends of a transfer can produce, so integrity is checked
 * without shipping the data twice.
 * @module
 */

const BLOCK = 65_536;
const block = new Uint8Array(BLOCK);
{
  let x = 0x9e3779b9;
  for (let i = 0; i < BLOCK; i++) {
    x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
    block[i] = x & 0xff;
  }
}

/**
 * The pattern's bytes from `offset` for `length` bytes: a pseudo-random block whose copies are
 * told apart by their index written into their first four bytes.
 */
export function pattern(offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length;) {
    const pos = offset + i;
    const index = Math.floor(pos / BLOCK);
    const within = pos % BLOCK;
    const n = Math.min(BLOCK - within, length - i);
    out.set(block.subarray(within, within + n), i);
    for (let k = 0; k < 4; k++) {
      const at = index * BLOCK + k - offset;
      if (at >= i && at < i + n) out[at] = (index >>> (8 * k)) & 0xff;
    }
    i += n;
  }
  return out;
}
