import assert from "node:assert/strict";
import {
  BINARY_MAGIC,
  type Command,
  CommandError,
  decodeCommand,
  DEFAULT_KV_LIMITS,
  encodeCommand,
  encodeDelete,
  encodePut,
  utf8,
} from "../src/kv/mod.ts";
import { cmp, delOp, putOp, rangeOp, session, TestRng, txnOp } from "./kv_helpers.ts";

const bytesOf = (...parts: (string | number[])[]) =>
  new Uint8Array(parts.flatMap((p) => typeof p === "string" ? [...utf8(p)] : p));

/** Asserts that decoding `bytes` throws a CommandError whose message is `message`. */
function refuses(bytes: Uint8Array, message: string | RegExp) {
  assert.throws(
    () => decodeCommand(bytes),
    (e: unknown) => {
      assert.ok(e instanceof CommandError, `not a CommandError: ${e}`);
      if (typeof message === "string") assert.equal(e.message, message);
      else assert.match(e.message, message);
      return true;
    },
  );
}

Deno.test("the seed encodings, byte for byte", async (t) => {
  await t.step("PUT\\n<key>\\n<value>", () => {
    assert.deepEqual(
      encodePut("/a", "v"),
      new Uint8Array([0x50, 0x55, 0x54, 0x0a, 0x2f, 0x61, 0x0a, 0x76]),
    );
    assert.deepEqual(encodePut("/k", "x\ny\n"), utf8("PUT\n/k\nx\ny\n"));
    assert.deepEqual(encodePut("/k", ""), utf8("PUT\n/k\n"));
    assert.deepEqual(encodePut("/é", "ü"), bytesOf("PUT\n/", [0xc3, 0xa9], "\n", [0xc3, 0xbc]));
  });

  await t.step("DEL\\n<key>", () => {
    assert.deepEqual(
      encodeDelete("/a/b"),
      new Uint8Array([0x44, 0x45, 0x4c, 0x0a, 0x2f, 0x61, 0x2f, 0x62]),
    );
  });

  await t.step("decoding them: the value is everything after the second newline", () => {
    assert.deepEqual(decodeCommand(utf8("PUT\n/k\nline1\nline2")), {
      type: "put",
      key: "/k",
      value: utf8("line1\nline2"),
      prevKv: false,
    });
    assert.deepEqual(decodeCommand(utf8("PUT\n/k\n")), {
      type: "put",
      key: "/k",
      value: new Uint8Array(),
      prevKv: false,
    });
    assert.deepEqual(decodeCommand(utf8("DEL\n/k")), {
      type: "delete",
      range: { key: "/k" },
      prevKv: false,
    });
  });

  await t.step("encodeCommand uses the seed form whenever the command fits it", () => {
    assert.deepEqual(encodeCommand(putOp("/k", "v")), utf8("PUT\n/k\nv"));
    assert.deepEqual(encodeCommand(delOp("/k")), utf8("DEL\n/k"));
    assert.equal(encodeCommand(putOp("/k", "v", true))[0], BINARY_MAGIC);
    assert.equal(encodeCommand(delOp("/k", true))[0], BINARY_MAGIC);
    assert.equal(
      encodeCommand({ type: "put", key: "/k", value: new Uint8Array([0xff]), prevKv: false })[0],
      BINARY_MAGIC,
    );
  });
});

Deno.test("the binary encoding, byte for byte (as in docs/commands.md)", () => {
  assert.deepEqual(
    encodeCommand(delOp({ prefix: "/a/" }, true)),
    new Uint8Array([0xff, 0x01, 0x02, 0x02, 0, 0, 0, 3, 0x2f, 0x61, 0x2f, 0x01]),
  );
  assert.deepEqual(
    encodeCommand(session("c1", 7, putOp("/k", "v"))),
    bytesOf(
      [0xff, 0x01, 0x05, 0x00],
      [0, 0, 0, 2],
      "c1",
      [0, 0, 0, 0, 0, 0, 0, 7],
      [0, 0, 0, 8],
      "PUT\n/k\nv",
    ),
  );
  assert.deepEqual(
    encodeCommand(txnOp([cmp("/k", "version", "equal", 0)], [putOp("/k", "v", true)])),
    bytesOf(
      [0xff, 0x01, 0x04],
      [0, 0, 0, 1],
      [0, 0, 0, 2],
      "/k",
      [1, 0],
      [0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 1],
      [0x01, 0, 0, 0, 2],
      "/k",
      [0, 0, 0, 1],
      "v",
      [1],
      [0, 0, 0, 0],
    ),
  );
});

Deno.test("every command round-trips", () => {
  const commands: Command[] = [
    putOp("/k", "v"),
    putOp("/k", "v", true),
    { type: "put", key: "/bin", value: new Uint8Array([0, 0xff, 0x80]), prevKv: false },
    delOp("/k"),
    delOp("/k", true),
    delOp({ key: "/a", rangeEnd: "/b" }),
    delOp({ prefix: "" }),
    delOp({ prefix: "/p/" }, true),
    delOp({ fromKey: "/m" }),
    rangeOp({ prefix: "/svc/" }, { limit: 100, keysOnly: true }),
    rangeOp({ key: "/a", rangeEnd: "/z" }, { countOnly: true }),
    rangeOp("/one"),
    txnOp(
      [
        cmp("/k", "value", "equal", "v"),
        cmp("/k", "value", "notEqual", ""),
        cmp("/k", "version", "greater", 3),
        cmp("/k", "createRevision", "less", 2 ** 53 - 1),
        cmp("/k", "modRevision", "notEqual", 12345678901),
      ],
      [putOp("/k", "w", true), delOp({ prefix: "/tmp/" }), rangeOp({ fromKey: "/" }, { limit: 5 })],
      [rangeOp("/k")],
    ),
    txnOp([], [], []),
    session("client-7", 1, putOp("/k", "v")),
    session(0, 2 ** 53 - 1, delOp({ prefix: "/x" }, true)),
    session("☃", 3, txnOp([cmp("/a", "version", "equal", 0)], [putOp("/a", "1")])),
  ];
  for (const c of commands) {
    const bytes = encodeCommand(c);
    const decoded = decodeCommand(bytes);
    assert.deepEqual(decoded, c);
    assert.deepEqual(encodeCommand(decoded), bytes);
  }
});

Deno.test("malformed seed commands are refused with a clear message", () => {
  refuses(new Uint8Array(), 'Command must not be empty: ""');
  refuses(utf8("PUT\n\nvalue"), 'Key must not be empty: ""');
  refuses(utf8("DEL\n"), 'Key must not be empty: ""');
  // A key may hold a newline (etcd's keys are any bytes); the text form's delete runs to the end.
  assert.deepEqual(decodeCommand(utf8("DEL\na\nb")), delOp("a\nb"));
  refuses(utf8("PUT\n/k"), 'Put command needs a newline between key and value: "PUT\\n/k"');
  refuses(
    utf8("GET\n/k"),
    'Unknown command (expected "PUT\\n", "DEL\\n" or byte 0xff first): "GET\\n/k"',
  );
  refuses(utf8("put\n/k\nv"), /^Unknown command/);
  refuses(utf8("PUT"), /^Unknown command/);
  refuses(bytesOf("PUT\n/k\n", [0xc3]), /^Command is not valid UTF-8: "PUT\\n\/k\\n\uFFFD"$/);
  refuses(bytesOf("DEL\n", [0xed, 0xa0, 0x80]), /^Command is not valid UTF-8/);
});

Deno.test("malformed binary commands are refused with a clear message", () => {
  const good = encodeCommand(delOp({ prefix: "/a/" }, true));
  refuses(new Uint8Array([0xff]), "Command is truncated: needs 1 bytes at offset 1 but 0 remain");
  refuses(
    new Uint8Array([0xff, 0x02, 0x01]),
    "Unsupported command format version: 2 (this build reads 1)",
  );
  refuses(new Uint8Array([0xff, 0x01, 0x0c]), "Unknown command tag: 0x0c");
  refuses(good.subarray(0, good.length - 1), /^Command is truncated: needs 1 bytes at offset 11/);
  refuses(bytesOf([...good], [0]), "Command has 1 trailing bytes at offset 12");
  const badFlags = good.slice();
  badFlags[good.length - 1] = 0x03;
  refuses(badFlags, "Delete flags have unknown bits: 0x03");
  const badKind = good.slice();
  badKind[3] = 9;
  refuses(badKind, "Unknown range kind: 9");
  const longLength = good.slice();
  longLength[7] = 200;
  refuses(longLength, /^Command is truncated: needs 200 bytes at offset 8/);
  const nested = encodeCommand(session("c", 1, putOp("/k", "v")));
  const wrapped = bytesOf([0xff, 1, 5, 0, 0, 0, 0, 1], "c", [
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    2,
    0,
    0,
    0,
    nested.length,
  ], [
    ...nested,
  ]);
  refuses(wrapped, 'A session command cannot wrap a session command: "session"');
  const zeroSeq = bytesOf(
    [0xff, 1, 5, 0, 0, 0, 0, 1],
    "c",
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6],
    "DEL\n/k",
  );
  refuses(zeroSeq, "Sequence number must be an integer in [1, 9007199254740991]: 0");
  const badInner = bytesOf(
    [0xff, 1, 5, 0, 0, 0, 0, 1],
    "c",
    [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4],
    "DEL\n",
  );
  refuses(badInner, 'Session command: Key must not be empty: ""');
  const hugeSeq = bytesOf([0xff, 1, 5, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0], [
    0,
    0,
    0,
    0,
  ]);
  refuses(hugeSeq, /^Sequence number is above 2\^53 - 1/);
  const txnInTxn = bytesOf([
    0xff,
    1,
    4,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    4,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  // A transaction inside a transaction decodes (etcd's nested txns); 65 levels are refused.
  assert.deepEqual(decodeCommand(txnInTxn), txnOp([], [txnOp([], [])]));
  let deep = txnOp([], []);
  for (let level = 1; level < 65; level++) deep = txnOp([], [deep]);
  assert.throws(() => encodeCommand(deep), {
    name: "CommandError",
    message: "Transactions nest too deep: more than 64 levels",
  });
  // Keys are bytes: one outside UTF-8 reads as its escape, a newline as itself.
  const byteKey = bytesOf([0xff, 1, 2, 0, 0, 0, 0, 1, 0xc3, 0]);
  assert.deepEqual(decodeCommand(byteKey), delOp("\udcc3"));
  const newlineKey = bytesOf([0xff, 1, 2, 0, 0, 0, 0, 3], "a\nb", [0]);
  assert.deepEqual(decodeCommand(newlineKey), delOp("a\nb"));
});

Deno.test("limits are enforced at decode", () => {
  const big = utf8(`PUT\n/k\n${"x".repeat(DEFAULT_KV_LIMITS.commandBytesMax)}`);
  refuses(
    big,
    `Command is too large: ${big.length} bytes (most ${DEFAULT_KV_LIMITS.commandBytesMax})`,
  );
  const longKey = "/" + "k".repeat(DEFAULT_KV_LIMITS.keyBytesMax);
  refuses(encodePut(longKey, "v"), /^Key is too large: 4097 bytes \(most 4096\): "\/kkk/);
  const ops = Array.from({ length: 129 }, (_, i) => putOp(`/k${i}`, "v"));
  refuses(
    encodeCommand(txnOp([], ops)),
    "Transaction has too many success entries: 129 (most 128)",
  );
  assert.doesNotThrow(() => decodeCommand(encodeCommand(txnOp([], ops.slice(0, 128)))));
  const tight = { ...DEFAULT_KV_LIMITS, keyBytesMax: 3 };
  assert.throws(() => decodeCommand(encodePut("/abc", "v"), { limits: tight }), CommandError);
  assert.throws(
    () => decodeCommand(encodeCommand(session("x".repeat(129), 1, putOp("/k", "v")))),
    { message: `Client id is too large: 129 bytes (most 128): "${"x".repeat(64)}"…(129 chars)` },
  );
});

const NOT_A_KEY =
  "Key must be well-formed Unicode, or bytes with those outside UTF-8 escaped as U+DC80..U+DCFF";

Deno.test("encoding refuses malformed command objects", () => {
  const bad: [unknown, string][] = [
    [putOp("", "v"), 'Key must not be empty: ""'],
    [putOp("/\ud800", "v"), `${NOT_A_KEY}: "/\\ud800"`],
    // Escapes that spell valid UTF-8 ("é" is C3 A9) are not the key string of any bytes.
    [putOp("/\udcc3\udca9", "v"), `${NOT_A_KEY}: "/\\udcc3\\udca9"`],
    [{ type: "get", key: "/k" }, 'Unknown command type: "get"'],
    [{ type: "put", key: "/k", value: "text", prevKv: false }, "Put value must be bytes: text"],
    [
      { type: "delete", range: { key: "/a", prefix: "/" }, prevKv: false },
      'Range must have exactly one of key, prefix or fromKey: "key, prefix"',
    ],
    [
      { type: "delete", range: { prefix: "/", rangeEnd: "/z" }, prevKv: false },
      'Range end needs a key: "/z"',
    ],
    [rangeOp("/k", { limit: -1 }), "Limit must be an integer in [0, 4294967295]: -1"],
    [{
      type: "txn",
      compare: [{ key: "/k", target: "owner", result: "equal", value: 0 }],
      success: [],
      failure: [],
    }, 'Unknown compare target: "owner"'],
    [session("", 1, putOp("/k", "v")), 'Client id must not be empty: ""'],
    [
      session("c", 0, putOp("/k", "v")),
      "Sequence number must be an integer in [1, 9007199254740991]: 0",
    ],
    [
      session("c", 1.5, putOp("/k", "v")),
      "Sequence number must be an integer in [1, 9007199254740991]: 1.5",
    ],
    [session(-1, 1, putOp("/k", "v")), "Client id must be an integer in [0, 9007199254740991]: -1"],
  ];
  for (const [command, message] of bad) {
    assert.throws(() => encodeCommand(command as Command), { name: "CommandError", message });
  }
  assert.throws(() => encodePut("", "v"), { message: 'Key must not be empty: ""' });
  // The seed's text forms cannot carry a newline or escaped bytes in a key: the binary form does.
  for (const key of ["a\nb", "/\udcff"]) {
    assert.equal(encodeDelete(key)[0], BINARY_MAGIC);
    assert.deepEqual(decodeCommand(encodeDelete(key)), delOp(key));
    assert.equal(encodePut(key, "v")[0], BINARY_MAGIC);
    assert.deepEqual(decodeCommand(encodePut(key, "v")), putOp(key, "v"));
  }
});

Deno.test("corrupted commands either decode to a valid command or throw CommandError", () => {
  const rng = new TestRng(20240601);
  const samples = [
    encodeCommand(
      txnOp([cmp("/k", "value", "equal", "v")], [putOp("/k", "w", true), delOp({ prefix: "/t/" })]),
    ),
    encodeCommand(session("c", 9, rangeOp({ prefix: "/" }, { limit: 3 }))),
    encodePut("/k", "value"),
  ];
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    const bytes = rng.pick(samples).slice();
    const flips = 1 + rng.int(3);
    for (let f = 0; f < flips; f++) bytes[rng.int(bytes.length)] = rng.int(256);
    const cut = rng.chance(0.2) ? bytes.subarray(0, rng.int(bytes.length + 1)) : bytes;
    try {
      const decoded = decodeCommand(cut);
      // Whatever decodes must encode and decode again to the same command.
      assert.deepEqual(decodeCommand(encodeCommand(decoded)), decoded);
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      refused++;
    }
  }
  assert.ok(refused > 1000, `only ${refused} refused`);
});
