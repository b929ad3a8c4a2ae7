// raftmeta's HTTP/2 server for gRPC (src/net/h2.ts, src/net/hpack.ts, src/net/grpc_h2.ts): HPACK
// against RFC 7541's examples and its error rules, and the server's framing, flow control and
// gRPC edges, driven by raw frames over TCP.

import * as assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  encodeHeaders,
  HpackDecoder,
  HpackError,
  huffmanDecode,
  huffmanEncode,
} from "../src/net/hpack.ts";
import { H2Error, PREFACE } from "../src/net/h2.ts";
import {
  type GrpcCall,
  GrpcH2Server,
  percentEncode,
  Status,
  type UnaryCallback,
} from "../src/net/grpc_h2.ts";
import {
  bytesMethod,
  type Frame,
  frame,
  grpcMessage,
  hex,
  Raw,
  requestHeaders,
  settings,
  u32,
} from "./h2_helpers.ts";

Deno.test("HPACK: RFC 7541 C.3 and C.4 request sequences share one dynamic table", () => {
  for (
    const blocks of [
      [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
      ],
      [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
      ],
    ]
  ) {
    const d = new HpackDecoder();
    assert.deepEqual(d.decode(hex(blocks[0])).fields, [
      [":method", "GET"],
      [":scheme", "http"],
      [":path", "/"],
      [":authority", "www.example.com"],
    ]);
    assert.equal(d.tableBytes, 57);
    assert.deepEqual(d.decode(hex(blocks[1])).fields.at(-1), ["cache-control", "no-cache"]);
    assert.equal(d.tableBytes, 110);
    assert.deepEqual(d.decode(hex(blocks[2])).fields, [
      [":method", "GET"],
      [":scheme", "https"],
      [":path", "/index.html"],
      [":authority", "www.example.com"],
      ["custom-key", "custom-value"],
    ]);
    assert.equal(d.tableBytes, 164);
    assert.equal(d.tableLength, 3);
  }
});

Deno.test("HPACK: RFC 7541 C.5 responses evict the oldest entries from a 256-byte table", () => {
  const d = new HpackDecoder(256);
  // C.5: the table size update to 256 is the encoder's choice; ours allows 256.
  d.decode(hex(
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 " +
      "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 " +
      "6c65 2e63 6f6d",
  ));
  assert.equal(d.tableBytes, 222);
  const second = d.decode(hex("4803 3330 37c1 c0bf"));
  assert.deepEqual(second.fields[0], [":status", "307"]);
  assert.equal(d.tableBytes, 222);
  assert.equal(d.tableLength, 4);
});

Deno.test("HPACK: Huffman round trip and the RFC's example", () => {
  assert.equal(huffmanDecode(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")), "www.example.com");
  const all = String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i));
  assert.equal(huffmanDecode(huffmanEncode(all)), all);
  assert.equal(huffmanDecode(huffmanEncode("/etcdserverpb.KV/Put")), "/etcdserverpb.KV/Put");
});

Deno.test("HPACK: malformed blocks are errors", () => {
  const bad: [string, string][] = [
    ["80", "index 0"],
    ["be", "index past the dynamic table (62 with an empty table)"],
    ["3fe21f", "table size update over the allowed 4096"],
    ["82 20", "table size update after a field"],
    ["00 03 6162", "string longer than the block"],
    ["ff ffffffff 0f", "integer over 2^31"],
    // "a" is 00011 (5 bits); 3 bits of zero padding are not EOS's prefix.
    ["00 81 18 81 61", "Huffman padding of zeros"],
    // 1 byte of "0" (00000) then 11 bits of ones: padding over 7 bits.
    ["00 82 07ff 81 61", "Huffman padding over 7 bits"],
    // EOS (30 ones) coded in a string.
    ["00 84 ffffffff 81 61", "EOS in a Huffman string"],
  ];
  for (const [block, why] of bad) {
    assert.throws(() => new HpackDecoder().decode(hex(block)), HpackError, why);
  }
  // A header list over the limit is decoded whole (the table stays in step) and flagged.
  const d = new HpackDecoder(4096, 100);
  const big = encodeHeaders([["x-a", "v".repeat(80)], ["x-b", "w"]]);
  assert.equal(d.decode(big).tooLarge, true);
  assert.equal(d.decode(encodeHeaders([["x-c", "1"]])).tooLarge, false);
});

Deno.test("HPACK: the encoder's output decodes to its input", () => {
  const fields: [string, string][] = [
    [":status", "200"],
    ["content-type", "application/grpc"],
    ["grpc-status", "3"],
    ["grpc-message", "x".repeat(300)],
  ];
  assert.deepEqual(new HpackDecoder().decode(encodeHeaders(fields)).fields, fields);
  assert.equal(encodeHeaders([[":status", "200"]])[0], 0x88);
  assert.equal(percentEncode("a%b\nç"), "a%25b%0A%C3%A7");
});

// ---- the server, over raw frames ------------------------------------------------------------

/** A server with an echo method, a streaming method and a method that never answers. */
function testServer(limits: Record<string, number> = {}, receiveBytesMax = 1000) {
  const events: string[] = [];
  const g = new GrpcH2Server({
    hostname: "127.0.0.1",
    port: 0,
    receiveBytesMax,
    limits,
    methods: [
      {
        definition: bytesMethod("/t.T/Echo", false, false),
        handler: (call: GrpcCall, cb: UnaryCallback) => cb(null, call.request),
      },
      {
        definition: bytesMethod("/t.T/Fail", false, false),
        handler: (_call: GrpcCall, cb: UnaryCallback) =>
          cb({ code: Status.INVALID_ARGUMENT, details: "bad: 100% wrong\n" }),
      },
      {
        // Server stream: answers with `n` bytes, n from the request's first byte × 1000.
        definition: bytesMethod("/t.T/Blob", false, true),
        handler: (call: GrpcCall) => {
          const n = (call.request as Buffer)[0] * 1000;
          call.write(Buffer.alloc(n, 7));
          call.end();
        },
      },
      {
        definition: bytesMethod("/t.T/Hang", true, true),
        handler: (call: GrpcCall) => {
          events.push("hang-start");
          call.on("cancelled", () => events.push("hang-cancelled"));
          call.on("data", (m: Buffer) => call.write(m));
        },
      },
    ],
  });
  return { g, port: g.addr.port, events };
}

function statusOf(raw: Raw, f: Frame): { code: number; message: string | undefined } {
  const fields = raw.fields(f);
  return { code: Number(fields.get("grpc-status")), message: fields.get("grpc-message") };
}

Deno.test("h2: a unary call, headers split over CONTINUATION, answered with DATA and trailers", async () => {
  const { g, port } = testServer();
  const r = await Raw.open(port);
  try {
    const block = requestHeaders("/t.T/Echo");
    await r.send(
      frame(1, 0, 1, block.subarray(0, 5)),
      frame(9, 0, 1, block.subarray(5, 9)),
      frame(9, 4, 1, block.subarray(9)),
      frame(0, 1, 1, grpcMessage(new TextEncoder().encode("hello"))),
    );
    const h = await r.until((f) => f.type === 1);
    assert.equal(r.fields(h).get(":status"), "200");
    const d = await r.until((f) => f.type === 0);
    assert.equal(new TextDecoder().decode(d.payload.subarray(5)), "hello");
    const t = await r.until((f) => f.type === 1);
    assert.equal(t.flags & 1, 1, "trailers end the stream");
    assert.deepEqual(statusOf(r, t), { code: 0, message: undefined });
    // An error status: trailers-only, message percent-encoded.
    await r.send(
      frame(1, 4, 3, requestHeaders("/t.T/Fail")),
      frame(0, 1, 3, grpcMessage(new Uint8Array(1))),
    );
    const e = await r.until((f) => f.type === 1 && f.stream === 3);
    assert.equal(e.flags & 1, 1);
    assert.deepEqual(statusOf(r, e), { code: 3, message: "bad: 100%25 wrong%0A" });
    // PING is answered with its payload.
    await r.send(frame(6, 0, 0, hex("0102030405060708")));
    const p = await r.until((f) => f.type === 6);
    assert.equal(p.flags, 1);
    assert.deepEqual(p.payload, hex("0102030405060708"));
    // DATA on a stream that completed: RST_STREAM STREAM_CLOSED, the connection stays.
    await r.send(frame(0, 0, 1, grpcMessage(new Uint8Array(1))));
    const rst = await r.until((f) => f.type === 3);
    assert.equal(rst.stream, 1);
    assert.equal(new DataView(rst.payload.buffer).getUint32(0), H2Error.STREAM_CLOSED);
    await r.send(frame(1, 5, 5, requestHeaders("/t.T/Nope")));
    const u = await r.until((f) => f.type === 1 && f.stream === 5);
    assert.equal(statusOf(r, u).code, Status.UNIMPLEMENTED);
  } finally {
    r.close();
    await g.close();
  }
});

for (
  const [name, input, code] of [
    [
      "a bad preface",
      [new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")],
      H2Error.PROTOCOL_ERROR,
    ],
    [
      "a first frame that is not SETTINGS",
      [PREFACE, frame(6, 0, 0, new Uint8Array(8))],
      H2Error.PROTOCOL_ERROR,
    ],
  ] as const
) {
  Deno.test(`h2: ${name} ends the connection with GOAWAY`, async () => {
    const { g, port } = testServer();
    const r = await Raw.open(port, false);
    try {
      await r.send(...input);
      await r.goaway(code);
    } finally {
      r.close();
      await g.close();
    }
  });
}

const connectionErrors: [string, () => Uint8Array[], number][] = [
  [
    "a frame over SETTINGS_MAX_FRAME_SIZE",
    () => [frame(0, 0, 1, new Uint8Array(16385))],
    H2Error.FRAME_SIZE_ERROR,
  ],
  [
    "SETTINGS of a length not a multiple of 6",
    () => [frame(4, 0, 0, new Uint8Array(5))],
    H2Error.FRAME_SIZE_ERROR,
  ],
  [
    "a SETTINGS ack with a payload",
    () => [frame(4, 1, 0, new Uint8Array(6))],
    H2Error.FRAME_SIZE_ERROR,
  ],
  [
    "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
    () => [settings([[4, 0x80000000]])],
    H2Error.FLOW_CONTROL_ERROR,
  ],
  ["SETTINGS_MAX_FRAME_SIZE below 16384", () => [settings([[5, 100]])], H2Error.PROTOCOL_ERROR],
  ["a PING of 7 bytes", () => [frame(6, 0, 0, new Uint8Array(7))], H2Error.FRAME_SIZE_ERROR],
  [
    "a WINDOW_UPDATE of 0 on the connection",
    () => [frame(8, 0, 0, u32(0))],
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "a connection window over 2^31-1",
    () => [frame(8, 0, 0, u32(0x7fffffff))],
    H2Error.FLOW_CONTROL_ERROR,
  ],
  ["an HPACK error", () => [frame(1, 5, 1, hex("80"))], H2Error.COMPRESSION_ERROR],
  ["DATA on an idle stream", () => [frame(0, 0, 7, new Uint8Array(1))], H2Error.PROTOCOL_ERROR],
  [
    "an even stream id",
    () => [frame(1, 5, 2, requestHeaders("/t.T/Echo"))],
    H2Error.PROTOCOL_ERROR,
  ],
  ["a header block interrupted by another frame", () => [
    frame(1, 0, 1, requestHeaders("/t.T/Echo").subarray(0, 4)),
    frame(6, 0, 0, new Uint8Array(8)),
  ], H2Error.PROTOCOL_ERROR],
  [
    "CONTINUATION without HEADERS",
    () => [frame(9, 4, 1, new Uint8Array(1))],
    H2Error.PROTOCOL_ERROR,
  ],
  ["a header block over 64 KiB in CONTINUATION frames", () => [
    frame(1, 0, 1, new Uint8Array(16000)),
    ...Array.from({ length: 4 }, () => frame(9, 0, 1, new Uint8Array(16000))),
  ], H2Error.ENHANCE_YOUR_CALM],
  ["RST_STREAM on an idle stream", () => [frame(3, 0, 9, u32(8))], H2Error.PROTOCOL_ERROR],
  ["PUSH_PROMISE from a client", () => [frame(5, 4, 1, new Uint8Array(4))], H2Error.PROTOCOL_ERROR],
  ["HEADERS on a closed stream", () => [
    frame(1, 4, 1, requestHeaders("/t.T/Echo")),
    frame(0, 1, 1, grpcMessage(new Uint8Array(1))),
    frame(1, 4, 3, requestHeaders("/t.T/Echo")),
    frame(0, 1, 3, grpcMessage(new Uint8Array(1))),
    // Stream 1 completed normally (not reset by us): new headers on it are a connection error.
    frame(1, 5, 1, requestHeaders("/t.T/Echo")),
  ], H2Error.STREAM_CLOSED],
];
for (const [name, input, code] of connectionErrors) {
  Deno.test(`h2: ${name} ends the connection with GOAWAY ${code}`, async () => {
    const { g, port } = testServer();
    const r = await Raw.open(port);
    try {
      await r.send(...input());
      await r.goaway(code);
      assert.equal(g.h2.connections, 0);
    } finally {
      r.close();
      await g.close();
    }
  });
}

Deno.test("h2: DATA waits for the peer's stream and connection windows", async () => {
  const { g, port } = testServer();
  // The client allows 1000 bytes per stream.
  const r = await Raw.open(port, true, [[4, 1000]]);
  try {
    await r.send(
      frame(1, 4, 1, requestHeaders("/t.T/Blob")),
      frame(0, 1, 1, grpcMessage(hex("03"))),
    );
    let got = 0;
    const seen: Frame[] = [];
    while (got < 1000) got += (await r.until((f) => f.type === 0, 5000, seen)).payload.length;
    assert.equal(got, 1000, "no more than the stream window");
    assert.equal(await r.next(300), null, "nothing more until a WINDOW_UPDATE");
    await r.send(frame(8, 0, 1, u32(1500)));
    while (got < 2500) got += (await r.until((f) => f.type === 0)).payload.length;
    assert.equal(got, 2500);
    assert.equal(await r.next(300), null);
    await r.send(frame(8, 0, 1, u32(100_000)));
    while (got < 3005) got += (await r.until((f) => f.type === 0)).payload.length;
    const t = await r.until((f) => f.type === 1);
    assert.equal(statusOf(r, t).code, 0);

    // The connection window (65,535 by default) holds a large answer until it is raised.
    await r.send(settings([[4, 1_000_000]]));
    await r.send(
      frame(1, 4, 3, requestHeaders("/t.T/Blob")),
      frame(0, 1, 3, grpcMessage(hex("64"))),
    );
    let big = 0;
    while (big < 65_535 - 3005) {
      big += (await r.until((f) => f.type === 0 && f.stream === 3)).payload.length;
    }
    assert.equal(big, 65_535 - 3005);
    assert.equal(await r.next(300), null, "the connection window is used up");
    await r.send(frame(8, 0, 0, u32(1_000_000)));
    while (big < 100_005) {
      big += (await r.until((f) => f.type === 0 && f.stream === 3)).payload.length;
    }
    assert.equal(statusOf(r, await r.until((f) => f.type === 1 && f.stream === 3)).code, 0);
  } finally {
    r.close();
    await g.close();
  }
});

Deno.test("h2: what we receive is given back with WINDOW_UPDATE; past the window is an error", async () => {
  const { g, port } = testServer({ streamWindowBytes: 1000 }, 100_000);
  const r = await Raw.open(port);
  try {
    await r.send(frame(1, 4, 1, requestHeaders("/t.T/Hang")));
    await r.send(frame(0, 0, 1, new Uint8Array(600)));
    const w = await r.until((f) => f.type === 8 && f.stream === 1);
    assert.equal(new DataView(w.payload.buffer).getUint32(0), 600);
    // Window now 1000 again: 1001 bytes overflow it.
    await r.send(frame(0, 0, 1, new Uint8Array(1001)));
    const rst = await r.until((f) => f.type === 3 && f.stream === 1);
    assert.equal(new DataView(rst.payload.buffer).getUint32(0), H2Error.FLOW_CONTROL_ERROR);
  } finally {
    r.close();
    await g.close();
  }
});

Deno.test("h2: streams past the limit are refused; RST_STREAM cancels a handler", async () => {
  const { g, port, events } = testServer({ streamsMax: 2 });
  const r = await Raw.open(port);
  try {
    for (const id of [1, 3, 5]) await r.send(frame(1, 4, id, requestHeaders("/t.T/Hang")));
    const refused = await r.until((f) => f.type === 3);
    assert.equal(refused.stream, 5);
    assert.equal(new DataView(refused.payload.buffer).getUint32(0), H2Error.REFUSED_STREAM);
    assert.deepEqual(events, ["hang-start", "hang-start"]);
    await r.send(frame(3, 0, 1, u32(H2Error.CANCEL)));
    await r.send(frame(6, 0, 0, new Uint8Array(8)));
    await r.until((f) => f.type === 6);
    assert.deepEqual(events, ["hang-start", "hang-start", "hang-cancelled"]);
    // The bidirectional stream echoes; the client ending its side and the server's answer.
    await r.send(frame(0, 0, 3, grpcMessage(hex("aabb"))));
    const d = await r.until((f) => f.type === 0 && f.stream === 3);
    assert.deepEqual(d.payload, grpcMessage(hex("aabb")));
    // DATA in flight after our RST of stream 5 is ignored (no second RST, no GOAWAY).
    await r.send(frame(0, 0, 5, new Uint8Array(3)), frame(6, 0, 0, new Uint8Array(8)));
    const seen: Frame[] = [];
    await r.until((f) => f.type === 6, 5000, seen);
    assert.deepEqual(seen.map((f) => f.type), [6]);
  } finally {
    r.close();
    await g.close();
  }
});

Deno.test("gRPC: compressed and oversized messages and deadlines end the call with a status", async () => {
  const { g, port, events } = testServer();
  const r = await Raw.open(port);
  try {
    await r.send(
      frame(1, 4, 1, requestHeaders("/t.T/Echo", [["grpc-encoding", "gzip"]])),
      frame(0, 1, 1, grpcMessage(hex("00"), 1)),
    );
    const c = statusOf(r, await r.until((f) => f.type === 1 && f.stream === 1));
    assert.equal(c.code, Status.UNIMPLEMENTED);
    assert.match(c.message!, /Compressed messages are not supported/);
    await r.send(
      frame(1, 4, 3, requestHeaders("/t.T/Echo")),
      frame(0, 1, 3, grpcMessage(new Uint8Array(1001))),
    );
    const big = statusOf(r, await r.until((f) => f.type === 1 && f.stream === 3));
    assert.equal(big.code, Status.RESOURCE_EXHAUSTED);
    assert.match(big.message!, /larger than max \(1001 vs\. 1000\)/);
    const t0 = Date.now();
    await r.send(frame(1, 4, 5, requestHeaders("/t.T/Hang", [["grpc-timeout", "200m"]])));
    const d = statusOf(r, await r.until((f) => f.type === 1 && f.stream === 5));
    assert.equal(d.code, Status.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - t0 >= 150, "not before the deadline");
    assert.deepEqual(events, ["hang-start", "hang-cancelled"]);
  } finally {
    r.close();
    await g.close();
  }
});

Deno.test("h2: a PING flood from a client that does not read stalls only its connection", async () => {
  const { g, port } = testServer({ outputBytesHighWater: 64 * 1024 });
  const r = await Raw.open(port);
  const other = await Raw.open(port);
  try {
    // 2 MiB of PINGs, never reading the acks.
    const ping = frame(6, 0, 0, new Uint8Array(8));
    const burst = new Uint8Array(ping.length * 4096);
    for (let i = 0; i < 4096; i++) burst.set(ping, i * ping.length);
    const writing = (async () => {
      for (let i = 0; i < 16; i++) await r.send(burst);
    })().catch(() => {});
    await new Promise((res) => setTimeout(res, 300));
    // Another connection is still served.
    await other.send(
      frame(1, 4, 1, requestHeaders("/t.T/Echo")),
      frame(0, 1, 1, grpcMessage(hex("01"))),
    );
    assert.equal(
      statusOf(other, await other.until((f) => f.type === 1 && (f.flags & 1) === 1)).code,
      0,
    );
    r.close();
    await writing;
  } finally {
    r.close();
    other.close();
    await g.close();
  }
});

Deno.test("gRPC: messages split across DATA frames, and several in one frame, are reassembled", async () => {
  const { g, port } = testServer({}, 100_000);
  const r = await Raw.open(port);
  try {
    const body = Uint8Array.from({ length: 40_000 }, (_, i) => i % 251);
    const m = grpcMessage(body);
    await r.send(
      frame(1, 4, 1, requestHeaders("/t.T/Echo")),
      frame(0, 0, 1, m.subarray(0, 3)),
      frame(0, 0, 1, m.subarray(3, 16_000)),
      frame(0, 0, 1, m.subarray(16_000, 30_000)),
      frame(0, 1, 1, m.subarray(30_000)),
    );
    const parts: Uint8Array[] = [];
    const t = await r.until((f) => {
      if (f.type === 0 && f.stream === 1) parts.push(f.payload);
      return f.type === 1 && (f.flags & 1) === 1;
    });
    assert.equal(statusOf(r, t).code, 0);
    const got = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      got.set(p, off);
      off += p.length;
    }
    assert.deepEqual(got, m);
    // Two messages in one DATA frame on a bidirectional stream: two answers.
    await r.send(
      frame(1, 4, 3, requestHeaders("/t.T/Hang")),
      frame(0, 0, 3, new Uint8Array([...grpcMessage(hex("01")), ...grpcMessage(hex("0203"))])),
    );
    const answers: Uint8Array[] = [];
    while (answers.length < 2) {
      const f = await r.until((f) => f.type === 0 && f.stream === 3);
      answers.push(f.payload);
    }
    assert.deepEqual(answers, [grpcMessage(hex("01")), grpcMessage(hex("0203"))]);
  } finally {
    r.close();
    await g.close();
  }
});
