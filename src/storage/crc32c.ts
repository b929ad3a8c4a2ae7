/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every WAL record and
 * snapshot file. Table-driven, slicing by 8 bytes, so recovery is bound by the disk, not the sum.
 *
 * @example
 * ```ts
 * import { crc32c } from "./crc32c.ts";
 * const sum = crc32c(new TextEncoder().encode("123456789"));
 * if (sum !== 0xe3069283) throw new Error("Bad CRC-32C");
 * ```
 *
 * @module
 */

const POLYNOMIAL_REFLECTED = 0x82f63b78;

// TABLES[k][b]: the CRC contribution of byte b followed by k zero bytes (slicing-by-8).
const TABLES: Uint32Array[] = (() => {
  const tables = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL_REFLECTED : c >>> 1;
    tables[0][b] = c >>> 0;
  }
  for (let b = 0; b < 256; b++) {
    let c = tables[0][b];
    for (let k = 1; k < 8; k++) {
      c = (c >>> 8) ^ tables[0][c & 0xff];
      tables[k][b] = c >>> 0;
    }
  }
  return tables;
})();

/**
 * Extends a running CRC-32C with `bytes`. Start from 0; the result of one call is the `crc` of
 * the next, so `crc32cUpdate(crc32cUpdate(0, a), b)` equals `crc32c(a ++ b)`.
 */
export function crc32cUpdate(crc: number, bytes: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const n = bytes.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    c ^= bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    c = t7[c & 0xff] ^ t6[(c >>> 8) & 0xff] ^ t5[(c >>> 16) & 0xff] ^ t4[c >>> 24] ^
      t3[bytes[i + 4]] ^ t2[bytes[i + 5]] ^ t1[bytes[i + 6]] ^ t0[bytes[i + 7]];
    i += 8;
  }
  while (i < n) c = (c >>> 8) ^ t0[(c ^ bytes[i++]) & 0xff];
  return ~c >>> 0;
}

/** The CRC-32C of `bytes`, as an unsigned 32-bit number. */
export function crc32c(bytes: Uint8Array): number {
  return crc32cUpdate(0, bytes);
}
