// CRC-32C against published vectors (RFC 3720 appendix B.4 and the "check" value).
import assert from "node:assert/strict";
import { crc32c, crc32cUpdate } from "../src/storage/crc32c.ts";

Deno.test("crc32c", async (t) => {
  await t.step('"123456789" gives the check value 0xE3069283', () => {
    assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  });

  await t.step("RFC 3720 vectors: 32 zeros, 32 ones, 0..31, 31..0", () => {
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  });

  await t.step("the empty input gives 0", () => {
    assert.equal(crc32c(new Uint8Array(0)), 0);
  });

  await t.step("updating in pieces equals one pass, at every split of odd lengths", () => {
    const bytes = Uint8Array.from({ length: 67 }, (_, i) => (i * 37 + 11) & 0xff);
    const whole = crc32c(bytes);
    for (let split = 0; split <= bytes.length; split++) {
      const c = crc32cUpdate(crc32cUpdate(0, bytes.subarray(0, split)), bytes.subarray(split));
      assert.equal(c, whole, `split at ${split}`);
    }
  });

  await t.step("slicing-by-8 agrees with a bit-at-a-time reference", () => {
    const reference = (bytes: Uint8Array) => {
      let c = 0xffffffff;
      for (const b of bytes) {
        c ^= b;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return ~c >>> 0;
    };
    for (let n = 0; n < 40; n++) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 101 + n) & 0xff);
      assert.equal(crc32c(bytes), reference(bytes), `length ${n}`);
    }
  });
});
