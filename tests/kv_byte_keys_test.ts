/**
 * Keys are bytes, as etcd's (issue 18): any byte string is a key, held in the store as a string
 * whose bytes outside UTF-8 are escaped (src/kv/bytes.ts). These tests check the mapping both
 * ways, that the store orders, ranges, counts and snapshots such keys by their bytes, that the
 * command codec carries them, and that a permission on a text prefix does not reach byte keys
 * just past it.
 */

import assert from "node:assert/strict";
import {
  compareBytes,
  isKeyString,
  isUtf8,
  keyByteLength,
  keyBytes,
  keyFromBytes,
  strictText,
} from "../src/kv/bytes.ts";
import { decodeCommand, encodeCommand } from "../src/kv/command.ts";
import { compareKeys } from "../src/kv/sorted_map.ts";
import { MetadataStore } from "../src/kv/store.ts";
import { AuthState, type PasswordHash } from "../src/kv/auth.ts";
import type { KeyRange } from "../src/kv/types.ts";
import { decodeStoreSnapshot, encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";
import { Harness, putOp, TestRng } from "./kv_helpers.ts";

/** Random bytes that mix ASCII, valid UTF-8 of every length, and broken or forbidden sequences. */
function randomKeyBytes(rng: TestRng, lengthMax = 8): Uint8Array {
  const out: number[] = [];
  const pieces = 1 + rng.int(lengthMax);
  const pieceKinds: (() => number[])[] = [
    () => [0x21 + rng.int(0x5e)], // ASCII
    () => [rng.int(0x100)], // any byte
    () => [0xc2 + rng.int(0x1e), 0x80 + rng.int(0x40)], // 2-byte character
    () => [0xe1 + rng.int(0x0c), 0x80 + rng.int(0x40), 0x80 + rng.int(0x40)], // 3-byte
    () => [0xf0, 0x90 + rng.int(0x30), 0x80 + rng.int(0x40), 0x80 + rng.int(0x40)], // 4-byte
    () => [0xe2, 0x82], // a truncated "€"
    () => [0xc0, 0xaf], // an overlong "/"
    () => [0xed, 0xa0, 0x80], // an encoded surrogate
    () => [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    () => [0x80 + rng.int(0x40)], // a stray continuation byte
    () => [0xff],
    () => [0x00],
    () => [0x0a], // newline
  ];
  for (let i = 0; i < pieces; i++) out.push(...rng.pick(pieceKinds)());
  return Uint8Array.from(out);
}

const sign = (n: number) => Math.sign(n);

Deno.test("any bytes are one key string and back", () => {
  const rng = new TestRng(18);
  for (let i = 0; i < 20_000; i++) {
    const bytes = randomKeyBytes(rng);
    const key = keyFromBytes(bytes);
    assert.deepEqual(keyBytes(key), bytes, `round trip of ${[...bytes]}`);
    assert.equal(keyByteLength(key), bytes.length);
    assert.ok(isKeyString(key));
    // Valid UTF-8 reads as its text, unescaped.
    let text: string | undefined;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      text = undefined;
    }
    if (text !== undefined) assert.equal(key, text);
    else assert.ok(!key.isWellFormed(), `${[...bytes]} holds an escape`);
  }
  // Strings that no bytes give: a lone surrogate outside the escapes, escapes that spell UTF-8.
  for (const bad of ["\ud800", "a\udc00", "\udcc3\udca9", "\udcf0\udc9f\udc98\udc80"]) {
    assert.equal(isKeyString(bad), false, JSON.stringify(bad));
  }
  assert.deepEqual([...keyBytes("\udcff\u00e9\udc80")], [0xff, 0xc3, 0xa9, 0x80]);
});

Deno.test("key strings compare as their bytes", () => {
  const rng = new TestRng(1818);
  for (let i = 0; i < 20_000; i++) {
    const a = randomKeyBytes(rng);
    // Half the pairs share a prefix, so the comparison reaches the interesting byte.
    const b = rng.int(2) === 0
      ? Uint8Array.from([...a.subarray(0, rng.int(a.length + 1)), ...randomKeyBytes(rng, 3)])
      : randomKeyBytes(rng);
    assert.equal(
      sign(compareKeys(keyFromBytes(a), keyFromBytes(b))),
      sign(compareBytes(a, b)),
      `${[...a]} vs ${[...b]}`,
    );
  }
});

Deno.test("the store orders, ranges and counts byte keys by their bytes", async (t) => {
  const rng = new TestRng(7);
  const h = new Harness();
  const all = new Map<string, Uint8Array>();
  for (let i = 0; i < 600; i++) {
    const bytes = randomKeyBytes(rng, 5);
    const key = keyFromBytes(bytes);
    h.ok(putOp(key, `v${i}`));
    all.set(key, bytes);
  }
  const sorted = [...all.values()].sort(compareBytes);
  const { store } = h;

  await t.step("a full range lists them in byte order", () => {
    const r = store.range({ prefix: "" });
    assert.deepEqual(r.kvs.map((kv) => [...keyBytes(kv.key)]), sorted.map((b) => [...b]));
  });

  await t.step("[key, rangeEnd) from random byte bounds: the keys a byte compare picks", () => {
    for (let i = 0; i < 300; i++) {
      let lo = randomKeyBytes(rng, 2);
      let hi = randomKeyBytes(rng, 2);
      if (compareBytes(lo, hi) > 0) [lo, hi] = [hi, lo];
      const range: KeyRange = { key: keyFromBytes(lo), rangeEnd: keyFromBytes(hi) };
      const want = sorted.filter((b) => compareBytes(b, lo) >= 0 && compareBytes(b, hi) < 0);
      const got = store.range(range);
      assert.deepEqual(got.kvs.map((kv) => [...keyBytes(kv.key)]), want.map((b) => [...b]));
      assert.equal(got.count, want.length);
      assert.equal(store.range(range, { countOnly: true }).count, want.length);
    }
  });

  await t.step("a text prefix takes exactly the keys whose bytes start with it", () => {
    for (const prefix of ["\u00e9", "a", "\u20ac", "\n", "\u{1F600}"]) {
      const p = keyBytes(prefix);
      const want = sorted.filter((b) => p.every((x, i) => b[i] === x));
      const got = store.range({ prefix });
      assert.deepEqual(got.kvs.map((kv) => [...keyBytes(kv.key)]), want.map((b) => [...b]));
      assert.equal(got.count, want.length);
    }
  });

  await t.step("a snapshot keeps every byte key, its history and the order", () => {
    // Some history: overwrite and delete a few keys, so versions of byte keys are in the history.
    const keys = [...all.keys()];
    const before = store.revision;
    for (let i = 0; i < 50; i++) h.ok(putOp(keys[i], `again${i}`));
    for (let i = 50; i < 60; i++) {
      h.ok({ type: "delete", range: { key: keys[i] }, prevKv: false });
    }
    const again = decodeStoreSnapshot(encodeStoreSnapshot(store));
    for (const at of [0, before]) {
      assert.deepEqual(
        again.range({ prefix: "" }, { revision: at }),
        store.range({ prefix: "" }, { revision: at }),
      );
    }
    assert.equal(again.revision, store.revision);
  });
});

Deno.test("the codec carries byte keys in every place a key goes", () => {
  const k = keyFromBytes(Uint8Array.from([0xff, 0x0a, 0xe2, 0x82]));
  const end = keyFromBytes(Uint8Array.from([0xff, 0x0b]));
  for (
    const command of [
      putOp(k, "v"),
      { type: "delete", range: { key: k, rangeEnd: end }, prevKv: true },
      { type: "delete", range: { fromKey: k }, prevKv: false },
      {
        type: "txn",
        compare: [{ key: k, rangeEnd: end, target: "version", result: "greater", value: 0 }],
        success: [{
          type: "range",
          range: { key: k },
          limit: 0,
          keysOnly: false,
          countOnly: false,
        }],
        failure: [putOp(end, "w")],
      },
    ] as const
  ) {
    const bytes = encodeCommand(command);
    assert.deepEqual(decodeCommand(bytes), command);
  }
  // A prefix is text: a byte prefix outside UTF-8 goes as key and range end.
  assert.throws(
    () => encodeCommand({ type: "delete", range: { prefix: k }, prevKv: false }),
    /^CommandError: Prefix must be well-formed Unicode/,
  );
  // A key's size is its bytes: 4,096 escaped bytes fit, 4,097 do not.
  const store = new MetadataStore();
  const big = keyFromBytes(new Uint8Array(4096).fill(0xff));
  assert.equal(store.apply(encodeCommand(putOp(big, "v")), 1).status, "applied");
  assert.throws(
    () => decodeCommand(encodeCommand(putOp(big + "\udcff", "v")), { limits: store.limits }),
    /Key is too large: 4097 bytes/,
  );
});

Deno.test("a permission on a text prefix does not reach the byte keys after it", () => {
  const hash: PasswordHash = {
    algorithm: "pbkdf2-sha256",
    iterations: 1,
    salt: "AA==",
    hash: "AA==",
  };
  const a = new AuthState();
  for (
    const op of [
      { op: "userAdd", name: "root", password: hash },
      { op: "userGrantRole", name: "root", role: "root" },
      { op: "userAdd", name: "u", password: hash },
      { op: "roleAdd", role: "r" },
      {
        op: "roleGrantPermission",
        role: "r",
        permission: { permType: "READ", range: { prefix: "a\u007f" } },
      },
      { op: "userGrantRole", name: "u", role: "r" },
      { op: "enable" },
    ] as const
  ) {
    assert.equal(a.apply(op), undefined, JSON.stringify(op));
  }
  assert.equal(a.permitted("u", { key: "a\u007fz" }, "read"), true);
  // Bytes 61 80: after every key starting 61 7F, before "a\u0080" (61 C2 80). Not in the prefix.
  assert.equal(a.permitted("u", { key: "a\udc80" }, "read"), false);
  assert.equal(a.permitted("u", { key: "a\u0080" }, "read"), false);
});

Deno.test("UTF-8 validity is decided in JS exactly as a fatal TextDecoder decides it", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const byDecoder = (b: Uint8Array): string | undefined => {
    try {
      return fatal.decode(b);
    } catch {
      return undefined;
    }
  };
  const check = (b: Uint8Array) => {
    const expected = byDecoder(b);
    assert.equal(
      isUtf8(b),
      expected !== undefined,
      `isUtf8 of [${[...b].map((x) => x.toString(16))}]`,
    );
    assert.equal(strictText(b), expected, `strictText of [${[...b].map((x) => x.toString(16))}]`);
  };
  // The edges: every lead byte with every second byte's class, cut short and whole, a BOM, and
  // the boundaries of overlong forms, surrogates and U+10FFFF.
  for (let lead = 0x80; lead <= 0xff; lead++) {
    for (const second of [0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff]) {
      check(Uint8Array.of(lead));
      check(Uint8Array.of(lead, second));
      check(Uint8Array.of(lead, second, 0x80));
      check(Uint8Array.of(lead, second, 0x80, 0x80));
      check(Uint8Array.of(0x61, lead, second, 0xbf, 0xbf, 0x62));
    }
  }
  check(Uint8Array.of(0xef, 0xbb, 0xbf, 0x61)); // a BOM is kept, as the store's decoders keep it
  // Random bytes, random valid text, and valid text with one byte changed.
  let seed = 7;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  for (let i = 0; i < 20_000; i++) {
    const kind = i % 3;
    let b: Uint8Array;
    if (kind === 0) {
      b = Uint8Array.from({ length: rnd(12) }, () => rnd(256));
    } else {
      const text = Array.from({ length: rnd(8) }, () => {
        const cp =
          [rnd(0x80), 0x80 + rnd(0x780), 0x800 + rnd(0xd000), 0x10000 + rnd(0x100000)][rnd(4)];
        return String.fromCodePoint(cp);
      }).join("");
      b = new TextEncoder().encode(text);
      if (kind === 2 && b.length > 0) b[rnd(b.length)] = rnd(256);
    }
    check(b);
  }
});
