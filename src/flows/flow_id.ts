/**
 * Flow ids that sort by creation time: UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then
 * a 12-bit counter for ids of the same millisecond, then 62 random bits.
 *
 * Why: the flow store keeps a unique index on `flows.id`. Random (version 4) ids land on a random
 * page of that index, so each flow of a committed batch dirtied a page of its own that went to the
 * WAL; ids in time order land on the index's last page or two (bench/store_writer.ts `--ids`).
 * @module
 */

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const random = new Uint8Array(8 * 256);
let randomAt = random.length;
let lastMs = -1;
let counter = 0;

/** A new UUID version 7 string (lower-case, 36 characters), greater than every one made before by this process. */
export function newFlowId(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now;
    counter = 0;
  } else if (++counter > 0xfff) {
    // 4,096 ids in one millisecond: borrow the next millisecond (the clock catches up).
    lastMs++;
    counter = 0;
  }
  if (randomAt === random.length) {
    crypto.getRandomValues(random);
    randomAt = 0;
  }
  const r = random.subarray(randomAt, randomAt + 8);
  randomAt += 8;
  const ms = lastMs;
  const high = Math.floor(ms / 0x1000000); // top 24 bits of 48
  const low = ms % 0x1000000;
  return HEX[(high >>> 16) & 255]! + HEX[(high >>> 8) & 255]! + HEX[high & 255]! + HEX[(low >>> 16) & 255]! +
    "-" + HEX[(low >>> 8) & 255]! + HEX[low & 255]! +
    "-" + HEX[0x70 | (counter >>> 8)]! + HEX[counter & 255]! +
    "-" + HEX[0x80 | (r[0]! & 0x3f)]! + HEX[r[1]!]! +
    "-" + HEX[r[2]!]! + HEX[r[3]!]! + HEX[r[4]!]! + HEX[r[5]!]! + HEX[r[6]!]! + HEX[r[7]!]!;
}
