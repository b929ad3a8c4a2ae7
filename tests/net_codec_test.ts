/**
 * The peer wire format and transport in one process: every message type round-trips, malformed
 * frames are refused with a FrameError, and a connection that sends garbage or the wrong secret is
 * closed while the transport keeps working.
 */

import assert from "node:assert/strict";
import { decodeMessages, encodeMessagesFrame, FrameError, FrameReader } from "../src/net/codec.ts";
import { PeerTransport } from "../src/net/transport.ts";
import { ByteWriter } from "../src/kv/bytes.ts";
import { Buffer } from "node:buffer";
import {
  decodeBase64,
  gatewayJson,
  kvJson,
  kvMessage,
  parsePut,
  parseRange,
  parseTxn,
} from "../src/net/etcd.ts";
import type { Message } from "../src/raft/types.ts";
import { freePort } from "./net_helpers.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

const SAMPLES: Message[] = [
  { type: "RequestVote", from: "n1", to: "n2", term: 3, lastLogIndex: 10, lastLogTerm: 2 },
  { type: "PreVote", from: "n1", to: "n2", term: 4, lastLogIndex: 10, lastLogTerm: 2 },
  { type: "RequestVoteReply", from: "n2", to: "n1", term: 3, requestTerm: 3, granted: true },
  { type: "PreVoteReply", from: "n2", to: "n1", term: 4, requestTerm: 4, granted: false },
  {
    type: "AppendEntries",
    from: "n1",
    to: "n2",
    term: 3,
    prevLogIndex: 4,
    prevLogTerm: 2,
    entries: [
      { index: 5, term: 3, kind: "noop", command: new Uint8Array(0) },
      { index: 6, term: 3, kind: "command", command: bytes(0xff, 0, 1, 2, 0x0a) },
      { index: 7, term: 3, kind: "config", command: new TextEncoder().encode("CONF\npromote\nn4") },
    ],
    leaderCommit: 4,
    readRound: 7,
  },
  {
    type: "AppendEntriesReply",
    from: "n2",
    to: "n1",
    term: 3,
    requestTerm: 2,
    success: false,
    matchIndex: 0,
    rejectedIndex: 4,
    conflictTerm: 1,
    conflictIndex: 2,
    readRound: 7,
  },
  {
    type: "InstallSnapshot",
    from: "n1",
    to: "n3",
    term: 3,
    meta: { index: 100, term: 2, voters: ["n1", "n2", "n3"], learners: ["n4"] },
    totalBytes: 5,
    offset: 2,
    data: bytes(1, 2, 3),
    done: true,
  },
  {
    type: "InstallSnapshot",
    from: "n1",
    to: "n3",
    term: 3,
    // The host's context: the member table raftmeta's server attaches (src/net/members.ts).
    meta: { index: 101, term: 3, voters: ["n1"], context: '{"version":1,"members":{}}' },
    totalBytes: 1,
    offset: 0,
    data: bytes(9),
    done: true,
  },
  {
    type: "InstallSnapshotReply",
    from: "n3",
    to: "n1",
    term: 3,
    requestTerm: 2,
    snapshotIndex: 100,
    offset: 5,
    done: true,
    matchIndex: 100,
  },
  { type: "ReadIndex", from: "n2", to: "n1", term: 3, readId: "n2.17" },
  {
    type: "ReadIndexReply",
    from: "n1",
    to: "n2",
    term: 3,
    readId: "n2.17",
    readIndex: 9,
    ok: true,
  },
  {
    type: "RequestVote",
    from: "n1",
    to: "n3",
    term: 5,
    lastLogIndex: 10,
    lastLogTerm: 2,
    transfer: true,
  },
  { type: "TimeoutNow", from: "n2", to: "n1", term: 4 },
];

Deno.test("net codec: every message type round-trips in one frame", () => {
  const frame = encodeMessagesFrame(SAMPLES);
  const reader = new FrameReader();
  // Delivered a byte at a time, as a slow socket might.
  let payload: Uint8Array | undefined;
  for (const b of frame) {
    reader.push(bytes(b));
    payload ??= reader.next();
  }
  assert.ok(payload);
  assert.deepEqual(decodeMessages(payload), SAMPLES);
  assert.equal(reader.next(), undefined);
});

Deno.test("net codec: a reused writer encodes each frame as a fresh one does", () => {
  const writer = new ByteWriter(16); // small, so the long batch grows it
  const big: Message = {
    type: "AppendEntries",
    from: "n1",
    to: "n2",
    term: 3,
    prevLogIndex: 0,
    prevLogTerm: 0,
    leaderCommit: 0,
    readRound: 0,
    entries: Array.from({ length: 50 }, (_, i) => ({
      index: i + 1,
      term: 3,
      kind: "command" as const,
      command: new Uint8Array(100).fill(i),
    })),
  };
  // Long, then short: the short frame must not carry the long one's tail.
  for (const batch of [SAMPLES, [big], [SAMPLES[0]], SAMPLES.slice(2), [big, SAMPLES[1]]]) {
    const reused = encodeMessagesFrame(batch, writer);
    assert.deepEqual(reused, encodeMessagesFrame(batch));
    assert.deepEqual(decodeMessages(reused.subarray(4)), batch);
  }
});

Deno.test("net codec: malformed frames are refused", async (t) => {
  const good = encodeMessagesFrame([SAMPLES[4]]).slice(4);
  const cases: [string, Uint8Array][] = [
    ["empty", new Uint8Array(0)],
    ["wrong kind", bytes(9, 0, 0, 0, 0)],
    ["truncated", good.subarray(0, good.length - 3)],
    ["trailing bytes", new Uint8Array([...good, 0])],
    ["unknown type tag", bytes(5, 0, 0, 0, 1, 99, 0, 0, 0, 0)],
    ["huge count", bytes(5, 0xff, 0xff, 0xff, 0xff)],
  ];
  // A term that is not an integer.
  const badTerm = encodeMessagesFrame([SAMPLES[2]]).slice(4);
  new DataView(badTerm.buffer).setFloat64(1 + 4 + 1 + 4 + 2 + 4 + 2, 1.5);
  cases.push(["fractional term", badTerm]);
  // A sender id that is not UTF-8 (its two bytes follow kind, count, type tag and length).
  const badId = encodeMessagesFrame([SAMPLES[2]]).slice(4);
  badId.set([0xff, 0xfe], 1 + 4 + 1 + 4);
  cases.push(["sender id not UTF-8", badId]);
  // Entries that do not follow prevLogIndex.
  const gap = encodeMessagesFrame([{
    ...SAMPLES[4],
    entries: [{ index: 9, term: 3, kind: "command", command: bytes(1) }],
  } as Message]).slice(4);
  cases.push(["entry index gap", gap]);
  const noopWithBytes = encodeMessagesFrame([{
    ...SAMPLES[4],
    entries: [{ index: 5, term: 3, kind: "noop", command: bytes(1) }],
  } as Message]).slice(4);
  cases.push(["no-op with bytes", noopWithBytes]);
  for (const [name, payload] of cases) {
    await t.step(name, () => assert.throws(() => decodeMessages(payload), FrameError));
  }
  await t.step("the error names the field that is not UTF-8", () => {
    assert.throws(() => decodeMessages(badId), /is not valid UTF-8/);
    // The same bytes as valid ASCII decode (the fast path), so the check is on the content.
    const ok = encodeMessagesFrame([SAMPLES[2]]).slice(4);
    ok.set([0x6e, 0x39], 1 + 4 + 1 + 4); // "n9"
    assert.equal(decodeMessages(ok)[0].from, "n9");
  });
  await t.step("frame length over the limit", () => {
    const r = new FrameReader(1024);
    r.push(bytes(0, 0, 0x10, 0));
    assert.throws(() => r.next(), FrameError);
  });
});

Deno.test("net etcd parsing: shapes, both cases, bad input", () => {
  assert.deepEqual(parsePut({ key: "Zm9v", value: "YmFy", prevKv: true }), {
    type: "put",
    key: "foo",
    value: new TextEncoder().encode("bar"),
    prevKv: true,
  });
  assert.deepEqual(parseRange({ key: "Zm9v", range_end: "Zm9w" }).command.range, {
    prefix: "foo",
  });
  assert.deepEqual(parseRange({ key: "YQ==", rangeEnd: "AA==" }).command.range, {
    fromKey: "a",
  });
  assert.deepEqual(parseRange({ key: "YQ==", range_end: "Yw==" }).command.range, {
    key: "a",
    rangeEnd: "c",
  });
  assert.deepEqual(decodeBase64("Zm9v", "k"), decodeBase64("Zm9v", "k"));
  assert.deepEqual(decodeBase64("-_8", "k"), bytes(0xfb, 0xff)); // URL-safe, unpadded
  assert.deepEqual(decodeBase64("YWJjZA", "k"), new TextEncoder().encode("abcd"));
  assert.deepEqual(decodeBase64("YWJjZA==", "k"), new TextEncoder().encode("abcd"));
  assert.deepEqual(decodeBase64("", "k"), bytes());
  for (
    const bad of ["YW Jj", "YWJj\n", " YWJj", "YW=j", "Y", "YWJjZ", "!!!!", "YWJj===", "YWJjZA="]
  ) {
    assert.throws(
      () => decodeBase64(bad, "value"),
      /Field "value" is not valid base64/,
      JSON.stringify(bad),
    );
  }
  const parsed = parseTxn({
    compare: [{ target: 3, key: "Zm9v", value: "YmFy", result: "NOT_EQUAL" }],
    success: [{ request_delete_range: { key: "Zm9v" } }],
  });
  assert.equal(parsed.readOnly, false);
  const txn = parsed.command;
  assert.equal(txn.compare[0].target, "value");
  assert.equal(txn.compare[0].result, "notEqual");
  assert.throws(() => parsePut({ key: "Zm9v", value: 7 }), /base64 string/);
  assert.throws(() => parseRange({ key: "Zm9v", limit: 1.5 }), /out of range|integer/);
  // LEASE compares (etcd's target 4) read the key's lease id.
  assert.deepEqual(
    parseTxn({ compare: [{ key: "Zm9v", target: "LEASE", lease: "7" }] }).command
      .compare,
    [{ key: "foo", target: "lease", result: "equal", value: 7 }],
  );
  // etcd serves a txn of ranges only on the read path; serializable when every range says so.
  const reads = (serializable: boolean[]) =>
    parseTxn({
      success: [{ request_range: { key: "Zm9v", serializable: serializable[0] } }],
      failure: [{ request_range: { key: "YmFy", serializable: serializable[1] } }],
    });
  assert.equal(reads([true, true]).readOnly, true);
  assert.equal(reads([true, true]).serializable, true);
  assert.equal(reads([true, false]).serializable, false);
});

Deno.test("net etcd parsing: a decoded gRPC message's bytes are taken as bytes, copied", () => {
  // One receive buffer, as a protobuf decoder hands out views of it.
  const received = new TextEncoder().encode("xfoo-bar-baz-");
  const put = parsePut({ key: received.subarray(1, 4), value: received.subarray(5, 8) });
  assert.deepEqual(put, {
    type: "put",
    key: "foo",
    value: new TextEncoder().encode("bar"),
    prevKv: false,
  });
  received.fill(0);
  assert.deepEqual(put.value, new TextEncoder().encode("bar"));
  assert.equal(put.value.buffer.byteLength, 3);
  assert.deepEqual(
    parseRange({ key: new Uint8Array([0x61]), range_end: new Uint8Array([0x63]) }).command.range,
    { key: "a", rangeEnd: "c" },
  );
  // A gRPC answer's key-value carries bytes; the JSON one base64 text.
  const kv = {
    key: "k",
    value: new Uint8Array([1, 2]),
    createRevision: 2,
    modRevision: 3,
    version: 1,
  };
  assert.deepEqual(kvMessage(kv), {
    key: new TextEncoder().encode("k"),
    create_revision: "2",
    mod_revision: "3",
    version: "1",
    value: new Uint8Array([1, 2]),
  });
  assert.deepEqual(kvJson(kv), {
    key: "aw==",
    create_revision: "2",
    mod_revision: "3",
    version: "1",
    value: "AQI=",
  });
  // Forwarded to the leader, the message is the gateway's JSON again.
  assert.equal(
    gatewayJson({
      key: Buffer.from("foo"),
      n: "1",
      success: [{ request_put: { key: new Uint8Array([255]), value: Buffer.alloc(0) } }],
      absent: undefined,
    }),
    '{"key":"Zm9v","n":"1","success":[{"request_put":{"key":"/w==","value":""}}]}',
  );
});

Deno.test("net transport: peers exchange messages; garbage and a wrong secret are refused", async () => {
  const ports = [freePort(), freePort(), freePort()];
  const got: Message[] = [];
  const logs: string[] = [];
  const make = (id: string, port: number, peers: [string, number][], secret: string) =>
    new PeerTransport({
      nodeId: id,
      clusterId: "c",
      secret,
      listen: { hostname: "127.0.0.1", port },
      peers: new Map(peers.map(([p, pp]) => [p, { hostname: "127.0.0.1", port: pp }])),
      onMessages: (_from, ms) => got.push(...ms),
      localState: () => ({ term: 5, commitIndex: 9 }),
      seenTermOf: () => 2,
      log: (event, fields) => logs.push(`${id} ${event} ${JSON.stringify(fields)}`),
    });
  const a = make("n1", ports[0], [["n2", ports[1]], ["n3", ports[2]]], "s");
  const b = make("n2", ports[1], [["n1", ports[0]], ["n3", ports[2]]], "s");
  const intruder = make("n3", ports[2], [["n1", ports[0]], ["n2", ports[1]]], "wrong");
  try {
    a.start();
    b.start();
    intruder.start();
    // Garbage straight onto n1's peer port.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: ports[0] });
    await conn.write(bytes(0, 0, 0, 3, 2, 0x7b, 0x7d));
    await conn.write(new Uint8Array(64).fill(0xee));
    try {
      conn.close();
    } catch { /* closed by the peer */ }
    for (let i = 0; i < 500; i++) {
      b.send({
        type: "RequestVoteReply",
        from: "n2",
        to: "n1",
        term: 1,
        requestTerm: 1,
        granted: i % 2 === 0,
      });
    }
    intruder.send({
      type: "RequestVoteReply",
      from: "n3",
      to: "n1",
      term: 9,
      requestTerm: 9,
      granted: true,
    });
    const deadline = Date.now() + 5000;
    while (got.length < 500 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(got.length, 500);
    assert.ok(got.every((m) => m.from === "n2"));
    assert.equal(b.peerInfo.get("n1")?.connected, true);
    assert.equal(b.peerInfo.get("n1")?.term, 5);
    assert.equal(b.peerInfo.get("n1")?.seenTerm, 2);
    assert.ok(a.stats.connectionsRefused >= 1);
    assert.ok(logs.some((l) => l.includes("wrong cluster secret")), logs.join("\n"));
    assert.ok(b.stats.framesSent < 500, `batching: ${b.stats.framesSent} frames`);
  } finally {
    a.close();
    b.close();
    intruder.close();
    await new Promise((r) => setTimeout(r, 50));
  }
});
