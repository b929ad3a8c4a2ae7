// raftmeta's HTTP/2 server for gRPC (src/net/h2.ts, src/net/hpack.ts, src/net/grpc_h2.ts) under
// attack: a hostile client on a raw TCP socket sends hand-built frames (floods, resets, HPACK bombs,
// zero windows, frames the RFC forbids) and each test checks the server's defence (GOAWAY with
// RFC 9113's code, RST_STREAM, or a bounded resource) and that the server still answers a normal
// gRPC call on a new connection afterwards.
//
// Each defence here was missing once and its test was seen to fail before the fix: Rapid Reset and
// its server-provoked variant, empty CONTINUATION frames, an HPACK integer that became NaN, a
// client that never reads with huge or zero windows, header values with CR LF, a decreasing stream
// id, a garbage grpc-timeout.

import * as assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { EventEmitter } from "node:events";
import { inOrder, STREAM_MESSAGES_PENDING_MAX, type StreamCall } from "../src/net/grpc.ts";
import { encodeHeaders, HpackDecoder, huffmanEncode } from "../src/net/hpack.ts";
import { H2Error, type H2Limits, H2Server, type H2Stream, PREFACE } from "../src/net/h2.ts";
import { type GrpcCall, GrpcH2Server, Status, type UnaryCallback } from "../src/net/grpc_h2.ts";
import {
  bytesMethod,
  code32,
  concat,
  CONTINUATION,
  DATA,
  END_HEADERS,
  END_STREAM,
  type Frame,
  frame,
  GOAWAY,
  grpcMessage,
  HEADERS,
  hex,
  hpackInt,
  hpackString,
  PADDED,
  PING,
  Raw,
  requestFields,
  requestHeaders,
  RST_STREAM,
  SETTINGS,
  settings,
  sleep,
  u32,
  WINDOW_UPDATE,
} from "./h2_helpers.ts";

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;

/**
 * Methods: Echo (unary), Slow (unary that never answers: work a client's reset does not stop, as a
 * proposal to the log), Hang (bidirectional, never ends), Stream (server stream of n MiB, n the
 * request's first byte, written as a well-behaved handler does: it waits for `drain`), Blast
 * (server stream of n MiB written at once, ignoring `write`'s answer).
 */
function attackServer(limits: Partial<H2Limits> = {}, receiveBytesMax = 1000) {
  const stats = { slow: 0, hang: 0, hangCancelled: 0, produced: 0, echo: 0 };
  const g = new GrpcH2Server({
    hostname: "127.0.0.1",
    port: 0,
    receiveBytesMax,
    limits,
    methods: [
      {
        definition: bytesMethod("/t.T/Echo", false, false),
        handler: (call: GrpcCall, cb: UnaryCallback) => {
          stats.echo++;
          cb(null, call.request);
        },
      },
      {
        definition: bytesMethod("/t.T/Slow", false, false),
        handler: (_call: GrpcCall, _cb: UnaryCallback) => {
          stats.slow++;
        },
      },
      {
        definition: bytesMethod("/t.T/Hang", true, true),
        handler: (call: GrpcCall) => {
          stats.hang++;
          call.on("cancelled", () => stats.hangCancelled++);
        },
      },
      {
        definition: bytesMethod("/t.T/Stream", false, true),
        handler: (call: GrpcCall) => {
          const total = (call.request as Buffer)[0] * MiB;
          const chunk = Buffer.alloc(CHUNK, 7);
          const pump = () => {
            while (!call.cancelled && stats.produced < total) {
              stats.produced += CHUNK;
              if (!call.write(chunk)) {
                call.once("drain", () => setTimeout(pump, 0));
                return;
              }
            }
            if (!call.cancelled) call.end();
          };
          pump();
        },
      },
      {
        definition: bytesMethod("/t.T/Blast", false, true),
        handler: (call: GrpcCall) => {
          const total = (call.request as Buffer)[0] * MiB;
          const chunk = Buffer.alloc(CHUNK, 7);
          for (let n = 0; n < total && !call.cancelled; n += CHUNK) {
            stats.produced += CHUNK;
            call.write(chunk);
          }
          if (!call.cancelled) call.end();
        },
      },
    ],
  });
  return { g, port: g.addr.port, stats };
}

/** A normal gRPC call on a new connection is answered (OK) within `ms`. */
async function assertResponsive(port: number, ms = 2000): Promise<void> {
  const t0 = Date.now();
  const r = await Raw.open(port);
  try {
    await r.send(
      frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Echo")),
      frame(DATA, END_STREAM, 1, grpcMessage(hex("2a"))),
    );
    const d = await r.until((f) => f.type === DATA && f.stream === 1, ms);
    assert.deepEqual(d.payload, grpcMessage(hex("2a")));
    const t = await r.until((f) => f.type === HEADERS && (f.flags & END_STREAM) !== 0, ms);
    assert.equal(r.status(t).code, Status.OK);
    assert.ok(Date.now() - t0 < ms, `answered in ${Date.now() - t0} ms`);
  } finally {
    r.close();
  }
}

/** Runs `attack` against a fresh server, then checks that the server still answers. */
async function withServer(
  limits: Partial<H2Limits>,
  attack: (s: ReturnType<typeof attackServer>) => Promise<void>,
  receiveBytesMax = 1000,
): Promise<void> {
  const s = attackServer(limits, receiveBytesMax);
  try {
    await attack(s);
    await assertResponsive(s.port);
  } finally {
    await s.g.close();
  }
}

/** Repeats `unit` `n` times in one buffer. */
function repeat(n: number, unit: (i: number) => Uint8Array): Uint8Array {
  return concat(Array.from({ length: n }, (_, i) => unit(i)));
}

// ---- Rapid Reset (CVE-2023-44487) and server-provoked resets --------------------------------

/**
 * 5000 unary calls on one connection, each followed at once by `third(id)`, a frame that ends the
 * stream (a client's RST_STREAM, or one the server must answer with a reset), in bursts of 500
 * with a PING after each. Returns the GOAWAY code if the server ended the connection.
 */
async function resetFlood(
  r: Raw,
  third: (id: number) => Uint8Array,
): Promise<number | undefined> {
  const block = requestHeaders("/t.T/Slow");
  const body = grpcMessage(hex("01"));
  for (let batch = 0; batch < 10; batch++) {
    const burst = repeat(500, (i) => {
      const id = 2 * (batch * 500 + i) + 1;
      return concat([
        frame(HEADERS, END_HEADERS, id, block),
        frame(DATA, END_STREAM, id, body),
        third(id),
      ]);
    });
    await r.send(burst).catch(() => {});
    await r.send(frame(PING, 0, 0, new Uint8Array(8))).catch(() => {});
    for (;;) {
      const f = await r.next(3000);
      if (f === null) break;
      if (f.type === GOAWAY) return code32(f, 4);
      if (f.type === PING) break;
    }
  }
  return undefined;
}

Deno.test("attack: Rapid Reset (HEADERS then RST_STREAM, 5000 times) is bounded", () =>
  withServer({ streamsMax: 100 }, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      const goaway = await resetFlood(r, (id) => frame(RST_STREAM, 0, id, u32(H2Error.CANCEL)));
      // A bounded server either refuses the flood (GOAWAY ENHANCE_YOUR_CALM) or keeps the
      // handlers started to a small multiple of SETTINGS_MAX_CONCURRENT_STREAMS.
      assert.ok(
        stats.slow <= 1000,
        `${stats.slow} handlers started for 5000 reset streams (GOAWAY ${goaway})`,
      );
      if (goaway !== undefined) assert.equal(goaway, H2Error.ENHANCE_YOUR_CALM);
    } finally {
      r.close();
    }
  }));

Deno.test("attack: streams the server is made to reset (WINDOW_UPDATE 0, 5000 times) are bounded", () =>
  withServer({ streamsMax: 100 }, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      // A WINDOW_UPDATE of 0 on a stream is a stream error: the server resets it itself.
      await resetFlood(r, (id) => frame(WINDOW_UPDATE, 0, id, u32(0)));
      assert.ok(stats.slow <= 1000, `${stats.slow} handlers started for 5000 reset streams`);
    } finally {
      r.close();
    }
  }));

Deno.test("attack: Rapid Reset without a request body starts no unary handler", () =>
  withServer({ streamsMax: 100 }, async ({ port, stats }) => {
    // HEADERS (no END_STREAM) and RST_STREAM: a unary handler waits for its message, so none
    // runs; a few are a client's right, 3000 at once spend the connection's reset budget.
    const r = await Raw.open(port);
    try {
      const block = requestHeaders("/t.T/Slow");
      await r.send(repeat(50, (i) =>
        concat([
          frame(HEADERS, END_HEADERS, 2 * i + 1, block),
          frame(RST_STREAM, 0, 2 * i + 1, u32(H2Error.CANCEL)),
        ])));
      await r.pingPong();
      await r.send(repeat(3000, (i) =>
        concat([
          frame(HEADERS, END_HEADERS, 2 * (50 + i) + 1, block),
          frame(RST_STREAM, 0, 2 * (50 + i) + 1, u32(H2Error.CANCEL)),
        ]))).catch(() => {});
      await r.goaway(H2Error.ENHANCE_YOUR_CALM);
      assert.equal(stats.slow, 0);
    } finally {
      r.close();
    }
  }));

// ---- CONTINUATION floods (CVE-2024-27316 class) ---------------------------------------------

Deno.test("attack: endless CONTINUATION frames end at the header block limit (GOAWAY ENHANCE_YOUR_CALM)", () =>
  withServer({}, async ({ port }) => {
    const r = await Raw.open(port);
    try {
      const block = requestHeaders("/t.T/Echo");
      // 1 MiB of CONTINUATION frames after HEADERS without END_HEADERS, sent without waiting.
      const cont = frame(CONTINUATION, 0, 1, new Uint8Array(16_000).fill(0x40));
      let sent = 0;
      const flood = (async () => {
        await r.send(frame(HEADERS, 0, 1, block));
        for (let i = 0; i < 64; i++) {
          await r.send(cont);
          sent += cont.length;
        }
      })().catch(() => {});
      await r.goaway(H2Error.ENHANCE_YOUR_CALM);
      await flood;
      assert.ok(sent < 1024 * 1024, "the server stopped reading");
    } finally {
      r.close();
    }
  }));

Deno.test({
  name: "attack: a flood of empty CONTINUATION frames ends the connection",
  fn: () =>
    withServer({}, async ({ port }) => {
      const r = await Raw.open(port);
      try {
        const empty = frame(CONTINUATION, 0, 1);
        const burst = repeat(10_000, () => empty);
        const flood = (async () => {
          await r.send(frame(HEADERS, 0, 1, requestHeaders("/t.T/Echo").subarray(0, 4)));
          for (let i = 0; i < 30; i++) await r.send(burst);
        })().catch(() => {});
        await r.goaway([H2Error.ENHANCE_YOUR_CALM, H2Error.PROTOCOL_ERROR], 3000);
        await flood;
      } finally {
        r.close();
      }
    }),
});

// ---- SETTINGS and PING floods ---------------------------------------------------------------

for (
  const [name, unit] of [
    ["SETTINGS", frame(SETTINGS, 0, 0)],
    ["PING", frame(PING, 0, 0, new Uint8Array(8))],
  ] as const
) {
  Deno.test(`attack: a ${name} flood from a client that never reads stops being read (bounded)`, () =>
    withServer({ outputBytesHighWater: 64 * 1024 }, async ({ port, g }) => {
      const r = await Raw.open(port);
      const burst = repeat(Math.floor(MiB / unit.length), () => unit);
      let sent = 0;
      const flood = (async () => {
        for (let i = 0; i < 64; i++) {
          await r.send(burst);
          sent += burst.length;
        }
      })().catch(() => {});
      try {
        // The server answers each frame (an ack) but stops reading once its answers wait for
        // the socket: the client's writes block, far before 64 MiB.
        await sleep(1500);
        const first = sent;
        await sleep(500);
        assert.equal(sent, first, "the server stopped reading the flood");
        assert.ok(sent < 32 * MiB, `${sent} bytes of ${name} taken`);
        // Other connections are served meanwhile.
        await assertResponsive(port);
      } finally {
        r.close();
        await flood;
      }
      // The flooding connection is gone once its client is.
      const t0 = Date.now();
      while (g.h2.connections > 0 && Date.now() - t0 < 3000) await sleep(20);
      assert.equal(g.h2.connections, 0);
    }));
}

// ---- zero windows and slow readers ----------------------------------------------------------

Deno.test("attack: a zero window (SETTINGS_INITIAL_WINDOW_SIZE 0) holds a stream's answer to its queue limit", () =>
  withServer({ streamQueuedBytesMax: 2 * MiB }, async ({ port, stats }) => {
    const r = await Raw.open(port, true, [[4, 0]]);
    try {
      // 64 MiB asked; the handler waits for `drain`, which a zero window never gives.
      await r.send(
        frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Stream")),
        frame(DATA, END_STREAM, 1, grpcMessage(hex("40"))),
      );
      const h = await r.until((f) => f.type === HEADERS && f.stream === 1);
      assert.equal(r.fields(h).get(":status"), "200");
      assert.equal(await r.next(500), null, "no DATA without a window");
      assert.ok(stats.produced <= MiB + CHUNK, `${stats.produced} bytes produced`);
      // Another connection is served while this one is stuck.
      await assertResponsive(port);
      // A window of 100 bytes lets exactly 100 bytes through.
      await r.send(frame(WINDOW_UPDATE, 0, 1, u32(100)));
      const d = await r.until((f) => f.type === DATA);
      assert.equal(d.payload.length, 100);
      assert.equal(await r.next(300), null);
    } finally {
      r.close();
    }
  }));

Deno.test("attack: a handler that ignores backpressure on a zero window is ended with RESOURCE_EXHAUSTED", () =>
  withServer({ streamQueuedBytesMax: 2 * MiB }, async ({ port, stats }) => {
    const r = await Raw.open(port, true, [[4, 0]]);
    try {
      await r.send(
        frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Blast")),
        frame(DATA, END_STREAM, 1, grpcMessage(hex("10"))),
      );
      await r.until((f) => f.type === HEADERS && f.stream === 1);
      const t = await r.until((f) => f.type === HEADERS && f.stream === 1);
      assert.equal(t.flags & END_STREAM, END_STREAM);
      assert.equal(r.status(t).code, Status.RESOURCE_EXHAUSTED);
      assert.ok(stats.produced <= 2 * MiB + 2 * CHUNK, `${stats.produced} bytes produced`);
    } finally {
      r.close();
    }
  }));

Deno.test({
  name: "attack: a huge window and a client that never reads do not buffer a whole answer",
  fn: () =>
    withServer(
      { streamQueuedBytesMax: 2 * MiB, outputBytesHighWater: 256 * 1024 },
      async ({ port, stats }) => {
        const r = await Raw.open(port, true, [[4, 0x7fffffff]]);
        try {
          await r.send(
            frame(WINDOW_UPDATE, 0, 0, u32(0x7fffffff - 4 * 1024 * 1024)),
            frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Stream")),
            frame(DATA, END_STREAM, 1, grpcMessage(hex("30"))),
          );
          await sleep(1500);
          // Loopback socket buffers take some MiB; the rest must wait in the handler.
          assert.ok(stats.produced <= 24 * MiB, `${stats.produced / MiB} MiB produced`);
        } finally {
          r.close();
        }
      },
    ),
});

Deno.test({
  name: "attack: answers queued for a zero-window client are bounded per connection",
  fn: async () => {
    const streams: H2Stream[] = [];
    const answer = new Uint8Array(1.5 * MiB);
    const h2 = new H2Server({
      hostname: "127.0.0.1",
      port: 0,
      limits: { streamQueuedBytesMax: 2 * MiB },
      onStream: (s) => {
        streams.push(s);
        s.respond(encodeHeaders([[":status", "200"], ["content-type", "application/grpc"]]));
        s.write(answer);
        s.end(encodeHeaders([["grpc-status", "0"]]));
      },
    });
    const r = await Raw.open(h2.addr.port, true, [[4, 0]]);
    try {
      for (let i = 0; i < 64; i++) {
        await r.send(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, requestHeaders("/t.T/X")));
      }
      await r.pingPong();
      const queued = streams.reduce((n, s) => n + (s.closed ? 0 : s.queuedBytes), 0);
      assert.ok(queued <= 16 * MiB, `${queued / MiB} MiB queued on one connection`);
    } finally {
      r.close();
      await h2.close();
    }
  },
});

Deno.test("attack: a stream whose handler paused receiving gets no window back until it resumes", async () => {
  // A client that sends faster than a bidirectional handler keeps up: the handler pauses, the
  // window stays shut (the client may send one window more, then must wait), and resuming gives
  // it back. Sending past the shut window is a FLOW_CONTROL_ERROR.
  let stream: H2Stream | undefined;
  let received = 0;
  const h2 = new H2Server({
    hostname: "127.0.0.1",
    port: 0,
    limits: { streamWindowBytes: 64 * 1024 },
    onStream: (s) => {
      stream = s;
      s.pauseReceive();
      s.handler = {
        onData: (d: Uint8Array) => received += d.length,
        onEnd: () => {},
        onAbort: () => {},
        onDrain: () => {},
      };
    },
  });
  const r = await Raw.open(h2.addr.port);
  try {
    await r.send(frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Bidi")));
    const chunk = new Uint8Array(16 * 1024);
    for (let i = 0; i < 4; i++) await r.send(frame(DATA, 0, 1, chunk));
    await r.pingPong();
    assert.equal(received, 64 * 1024);
    assert.equal(stream?.recvWindow, 0, "the window is spent and not given back");
    for (let f = await r.next(200); f !== null; f = await r.next(200)) {
      assert.ok(!(f.type === WINDOW_UPDATE && f.stream === 1), "a WINDOW_UPDATE while paused");
    }
    stream!.resumeReceive();
    const update = await r.until((f) => f.type === WINDOW_UPDATE && f.stream === 1);
    assert.equal(code32(update, 0), 64 * 1024);
    stream!.pauseReceive();
    for (let i = 0; i < 4; i++) await r.send(frame(DATA, 0, 1, chunk));
    await r.send(frame(DATA, 0, 1, chunk)); // one frame past the window
    await r.reset(1, H2Error.FLOW_CONTROL_ERROR);
  } finally {
    r.close();
    await h2.close();
  }
});

Deno.test("attack: a bidirectional stream's messages waiting for a slow handler pause the client", async () => {
  // inOrder (src/net/grpc.ts) runs Watch and LeaseKeepAlive messages one after the other; past
  // STREAM_MESSAGES_PENDING_MAX waiting it pauses the call, and resumes it once they drain.
  const events: string[] = [];
  const call = new EventEmitter() as EventEmitter & StreamCall;
  Object.assign(call, {
    request: {},
    metadata: { get: () => [] },
    getPeer: () => "test",
    write: () => true,
    end: () => events.push("end"),
    pause: () => events.push("pause"),
    resume: () => events.push("resume"),
  });
  const gates: (() => void)[] = [];
  let handled = 0;
  inOrder(call, async () => {
    await new Promise<void>((res) => gates.push(res));
    handled++;
  }, () => {});
  for (let i = 0; i < STREAM_MESSAGES_PENDING_MAX + 1; i++) call.emit("data", { i });
  assert.deepEqual(events, ["pause"], "paused once past the limit");
  const release = async () => {
    while (gates.length === 0) await new Promise((r) => setTimeout(r, 0));
    gates.shift()!();
    await new Promise((r) => setTimeout(r, 0));
  };
  // 65 waiting: resumed when a quarter (16) is left, after 49 are handled.
  for (let i = 0; i < STREAM_MESSAGES_PENDING_MAX * 3 / 4; i++) await release();
  assert.deepEqual(events, ["pause"], "still paused with 17 waiting");
  await release();
  assert.deepEqual(events, ["pause", "resume"], "resumed once a quarter is left");
  while (handled < STREAM_MESSAGES_PENDING_MAX + 1) await release();
});

Deno.test("attack: idle connections do not hold the connection limit for ever (GOAWAY NO_ERROR)", async () => {
  // connectionsMax idle sockets would lock every client out; each is closed once it has had no
  // stream open for idleTimeoutMs, and a connection with a stream open is left alone.
  await withServer({ connectionsMax: 4, idleTimeoutMs: 300 }, async ({ port }) => {
    const idle = await Promise.all([1, 2, 3].map(() => Raw.open(port)));
    const busy = await Raw.open(port);
    try {
      await busy.send(frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Hang")));
      for (const r of idle) await r.goaway(H2Error.NO_ERROR);
      await busy.pingPong();
    } finally {
      for (const r of [...idle, busy]) r.close();
    }
  });
});

// ---- flow-control errors --------------------------------------------------------------------

Deno.test("attack: window overflow and WINDOW_UPDATE of 0, on a stream and on the connection", async () => {
  await withServer({}, async ({ port }) => {
    const r = await Raw.open(port);
    try {
      // A stream's window past 2^31-1: RST_STREAM FLOW_CONTROL_ERROR (RFC 9113, 6.9.1).
      await r.send(frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Hang")));
      await r.send(frame(WINDOW_UPDATE, 0, 1, u32(0x7fffffff)));
      await r.reset(1, H2Error.FLOW_CONTROL_ERROR);
      // Exactly to 2^31-1 is allowed.
      await r.send(frame(HEADERS, END_HEADERS, 3, requestHeaders("/t.T/Hang")));
      await r.send(frame(WINDOW_UPDATE, 0, 3, u32(0x7fffffff - 65_535)));
      await r.pingPong();
      // A WINDOW_UPDATE of 0 on a stream: RST_STREAM PROTOCOL_ERROR (6.9).
      await r.send(frame(HEADERS, END_HEADERS, 5, requestHeaders("/t.T/Hang")));
      await r.send(frame(WINDOW_UPDATE, 0, 5, u32(0)));
      await r.reset(5, H2Error.PROTOCOL_ERROR);
      // A SETTINGS_INITIAL_WINDOW_SIZE change that overflows stream 3's window: connection
      // error FLOW_CONTROL_ERROR (6.9.2).
      await r.send(settings([[4, 65_536]]));
      await r.goaway(H2Error.FLOW_CONTROL_ERROR);
    } finally {
      r.close();
    }
  });
  for (
    const [inc, code] of [[0, H2Error.PROTOCOL_ERROR], [0x7fffffff, H2Error.FLOW_CONTROL_ERROR]]
  ) {
    await withServer({}, async ({ port }) => {
      const r = await Raw.open(port);
      try {
        await r.send(frame(WINDOW_UPDATE, 0, 0, u32(inc)));
        await r.goaway(code);
      } finally {
        r.close();
      }
    });
  }
});

// ---- HPACK bombs ----------------------------------------------------------------------------

/** Sends a header block (split into HEADERS and CONTINUATION frames of at most 16 KiB). */
function headerFrames(stream: number, block: Uint8Array, endStream = true): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < block.length || off === 0; off += 16_384) {
    const part = block.subarray(off, off + 16_384);
    const last = off + 16_384 >= block.length;
    const flags = (last ? END_HEADERS : 0) | (off === 0 && endStream ? END_STREAM : 0);
    out.push(frame(off === 0 ? HEADERS : CONTINUATION, flags, stream, part));
    if (block.length === 0) break;
  }
  return out;
}

const hpackErrors: [string, () => Uint8Array][] = [
  [
    "a dynamic table size update over SETTINGS_HEADER_TABLE_SIZE (4097)",
    () => concat([Uint8Array.from(hpackInt(0x20, 5, 4097)), requestHeaders("/t.T/Echo")]),
  ],
  [
    "an index past the tables (62 with an empty dynamic table)",
    () => concat([requestHeaders("/t.T/Echo"), hex("be")]),
  ],
  [
    "a Huffman string holding EOS",
    () => concat([requestHeaders("/t.T/Echo"), hex("00 01 61 84 ffffffff")]),
  ],
  [
    "Huffman padding over 7 bits",
    () => concat([requestHeaders("/t.T/Echo"), hex("00 01 61 82 07ff")]),
  ],
  [
    "Huffman padding that is not all ones",
    () => concat([requestHeaders("/t.T/Echo"), hex("00 01 61 81 18")]),
  ],
  [
    "a string longer than the block",
    () => concat([requestHeaders("/t.T/Echo"), hex("00 01 61 05 6161")]),
  ],
];
for (const [name, block] of hpackErrors) {
  Deno.test(`attack: HPACK ${name} ends the connection with GOAWAY COMPRESSION_ERROR`, () =>
    withServer({}, async ({ port, stats }) => {
      const r = await Raw.open(port);
      try {
        await r.send(...headerFrames(1, block()));
        await r.goaway(H2Error.COMPRESSION_ERROR);
        assert.equal(stats.echo, 0);
      } finally {
        r.close();
      }
    }));
}

Deno.test("attack: HPACK bomb (60,000 references to a 4 KB entry) is answered RESOURCE_EXHAUSTED at once", () =>
  withServer({}, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      // One entry of 4037 bytes in the dynamic table, then index 62 (it) 60,000 times: 240 MB of
      // header list from a 64 KB block.
      const big = [0x40, ...hpackString("x-big"), ...hpackString("v".repeat(4000))];
      const block = concat([
        requestHeaders("/t.T/Echo"),
        Uint8Array.from(big),
        new Uint8Array(60_000).fill(0xbe),
      ]);
      assert.ok(block.length <= 64 * 1024);
      const t0 = Date.now();
      await r.send(...headerFrames(1, block));
      const h = await r.until((f) => f.type === HEADERS && f.stream === 1);
      assert.ok(Date.now() - t0 < 1000, `answered in ${Date.now() - t0} ms`);
      assert.equal(h.flags & END_STREAM, END_STREAM, "trailers-only");
      assert.equal(r.status(h).code, Status.RESOURCE_EXHAUSTED);
      assert.equal(stats.echo, 0);
      // The dynamic table stayed in step: a request that uses the entry decodes.
      await r.send(
        ...headerFrames(3, concat([requestHeaders("/t.T/Echo"), hex("be")]), false),
        frame(DATA, END_STREAM, 3, grpcMessage(hex("01"))),
      );
      const t = await r.until((f) =>
        f.type === HEADERS && f.stream === 3 && (f.flags & END_STREAM) !== 0
      );
      assert.equal(r.status(t).code, Status.OK);
    } finally {
      r.close();
    }
  }));

Deno.test("attack: Huffman-coded request headers are decoded", () =>
  withServer({}, async ({ port }) => {
    const r = await Raw.open(port);
    try {
      // :path as a literal with a Huffman-coded value (index 4 is :path).
      const path = huffmanEncode("/t.T/Echo");
      const block = concat([
        hex("83 86 41 01 78"), // POST, http, :authority "x" (incremental indexing)
        Uint8Array.from([0x04, ...hpackInt(0x80, 7, path.length)]),
        path,
        encodeHeaders([["content-type", "application/grpc"]]),
      ]);
      await r.send(
        frame(HEADERS, END_HEADERS, 1, block),
        frame(DATA, END_STREAM, 1, grpcMessage(hex("05"))),
      );
      const t = await r.until((f) => f.type === HEADERS && (f.flags & END_STREAM) !== 0);
      assert.equal(r.status(t).code, Status.OK);
    } finally {
      r.close();
    }
  }));

Deno.test({
  name: "attack: HPACK integer with endless continuation bytes is a COMPRESSION_ERROR",
  fn: async () => {
    const update = Uint8Array.from([0x3f, ...new Array(150).fill(0x80), 0x00]);
    // The decoder alone: the table must stay within its 4096 bytes.
    const d = new HpackDecoder();
    try {
      d.decode(update);
      for (let i = 0; i < 100; i++) {
        d.decode(
          Uint8Array.from([0x40, ...hpackString("x-big"), ...hpackString("v".repeat(1000))]),
        );
      }
    } catch { /* refused: right */ }
    assert.ok(d.tableBytes <= 4096, `dynamic table of ${d.tableBytes} bytes`);
    // Over the wire: GOAWAY COMPRESSION_ERROR.
    await withServer({}, async ({ port }) => {
      const r = await Raw.open(port);
      try {
        await r.send(...headerFrames(1, concat([update, requestHeaders("/t.T/Echo")])));
        await r.goaway(H2Error.COMPRESSION_ERROR);
      } finally {
        r.close();
      }
    });
  },
});

// ---- frames in the wrong place --------------------------------------------------------------

const connectionErrors: [string, () => Uint8Array[], number][] = [
  ["DATA on stream 0", () => [frame(DATA, 0, 0, new Uint8Array(4))], H2Error.PROTOCOL_ERROR],
  [
    "HEADERS on stream 0",
    () => [frame(HEADERS, END_HEADERS, 0, requestHeaders("/t.T/Echo"))],
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "an even (server-initiated) stream id",
    () => [frame(HEADERS, END_HEADERS, 4, requestHeaders("/t.T/Hang"))],
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "a frame over SETTINGS_MAX_FRAME_SIZE (16,385 bytes)",
    () => [frame(DATA, 0, 1, new Uint8Array(16_385))],
    H2Error.FRAME_SIZE_ERROR,
  ],
  [
    "a frame header claiming 16 MiB",
    () => [hex("ffffff 00 00 00000001")],
    H2Error.FRAME_SIZE_ERROR,
  ],
  [
    "DATA whose pad length equals the payload",
    () => [
      frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Hang")),
      frame(DATA, PADDED, 1, Uint8Array.from([4, 0, 0, 0])),
    ],
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "HEADERS whose pad length exceeds the payload",
    () => {
      const block = requestHeaders("/t.T/Hang");
      return [frame(HEADERS, END_HEADERS | PADDED, 1, concat([Uint8Array.of(200), block]))];
    },
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "PING with a stream id",
    () => [frame(PING, 0, 1, new Uint8Array(8))],
    H2Error.PROTOCOL_ERROR,
  ],
  [
    "SETTINGS_ENABLE_PUSH of 2",
    () => [settings([[2, 2]])],
    H2Error.PROTOCOL_ERROR,
  ],
];
for (const [name, input, code] of connectionErrors) {
  Deno.test(`attack: ${name} ends the connection with GOAWAY ${code}`, () =>
    withServer({}, async ({ port, g }) => {
      const r = await Raw.open(port);
      try {
        await r.send(...input());
        await r.goaway(code);
        const t0 = Date.now();
        while (g.h2.connections > 0 && Date.now() - t0 < 2000) await sleep(10);
        assert.equal(g.h2.connections, 0);
      } finally {
        r.close();
      }
    }));
}

Deno.test({
  name: "attack: a decreasing stream id ends the connection with GOAWAY PROTOCOL_ERROR",
  fn: () =>
    withServer({}, async ({ port }) => {
      const r = await Raw.open(port);
      try {
        await r.send(
          frame(HEADERS, END_HEADERS, 5, requestHeaders("/t.T/Hang")),
          frame(HEADERS, END_HEADERS, 3, requestHeaders("/t.T/Hang")),
        );
        await r.goaway(H2Error.PROTOCOL_ERROR);
      } finally {
        r.close();
      }
    }),
});

Deno.test("attack: a decreasing stream id ends the connection (GOAWAY, no stream 3)", () =>
  withServer({}, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      await r.send(
        frame(HEADERS, END_HEADERS, 5, requestHeaders("/t.T/Hang")),
        frame(HEADERS, END_HEADERS, 3, requestHeaders("/t.T/Hang")),
      );
      await r.goaway([H2Error.PROTOCOL_ERROR, H2Error.STREAM_CLOSED]);
      assert.equal(stats.hang, 1);
    } finally {
      r.close();
    }
  }));

Deno.test("attack: DATA on a half-closed (remote) stream is RST_STREAM STREAM_CLOSED", () =>
  withServer({}, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      await r.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, requestHeaders("/t.T/Hang")));
      await r.pingPong();
      assert.equal(stats.hang, 1);
      await r.send(frame(DATA, 0, 1, grpcMessage(hex("01"))));
      await r.reset(1, H2Error.STREAM_CLOSED);
      assert.equal(stats.hangCancelled, 1, "the handler hears that its stream ended");
      // Trailers on it likewise.
      await r.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, requestHeaders("/t.T/Hang")));
      await r.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, encodeHeaders([["x-t", "1"]])));
      await r.reset(3, H2Error.STREAM_CLOSED);
    } finally {
      r.close();
    }
  }));

for (
  const [name, fields] of [
    ["an upper-case header name", requestFields("/t.T/Hang", [["X-Up", "1"]])],
    ["a pseudo-header after a regular one", [...requestFields("/t.T/Hang"), [":method", "POST"]]],
    ["a connection-specific header", requestFields("/t.T/Hang", [["connection", "close"]])],
    ["no :path", requestFields("/t.T/Hang").filter(([n]) => n !== ":path")],
    ["an unknown pseudo-header", [[":protocol", "x"], ...requestFields("/t.T/Hang")]],
  ] as [string, [string, string][]][]
) {
  Deno.test(`attack: a request with ${name} is malformed (RST_STREAM PROTOCOL_ERROR)`, () =>
    withServer({}, async ({ port, stats }) => {
      const r = await Raw.open(port);
      try {
        await r.send(frame(HEADERS, END_HEADERS, 1, encodeHeaders(fields)));
        await r.reset(1, H2Error.PROTOCOL_ERROR);
        assert.equal(stats.hang, 0);
      } finally {
        r.close();
      }
    }));
}

Deno.test({
  name: "attack: a header value with CR LF is malformed (RST_STREAM PROTOCOL_ERROR)",
  fn: () =>
    withServer({}, async ({ port, stats }) => {
      const r = await Raw.open(port);
      try {
        const fields = requestFields("/t.T/Hang", [["x-inject", "a\r\nx-evil: 1"]]);
        await r.send(frame(HEADERS, END_HEADERS, 1, encodeHeaders(fields)));
        await r.reset(1, H2Error.PROTOCOL_ERROR);
        assert.equal(stats.hang, 0);
      } finally {
        r.close();
      }
    }),
});

// ---- concurrency and connection limits ------------------------------------------------------

Deno.test("attack: streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM)", () =>
  withServer({ streamsMax: 4 }, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      const refused: number[] = [];
      await r.send(
        ...Array.from(
          { length: 10 },
          (_, i) => frame(HEADERS, END_HEADERS, 2 * i + 1, requestHeaders("/t.T/Hang")),
        ),
      );
      await r.send(frame(PING, 0, 0, new Uint8Array(8)));
      await r.until((f) => {
        if (f.type === RST_STREAM) {
          assert.equal(code32(f), H2Error.REFUSED_STREAM);
          refused.push(f.stream);
        }
        return f.type === PING;
      });
      assert.deepEqual(refused, [9, 11, 13, 15, 17, 19]);
      assert.equal(stats.hang, 4);
      // A slot freed by a reset takes a new stream.
      await r.send(frame(RST_STREAM, 0, 1, u32(H2Error.CANCEL)));
      await r.send(frame(HEADERS, END_HEADERS, 21, requestHeaders("/t.T/Hang")));
      await r.pingPong();
      assert.equal(stats.hang, 5);
    } finally {
      r.close();
    }
  }));

for (
  const [name, input] of [
    ["nothing", []],
    ["half the preface", [PREFACE.subarray(0, 12)]],
    ["the preface but no SETTINGS", [PREFACE]],
  ] as [string, Uint8Array[]][]
) {
  Deno.test(`attack: a connection that sends ${name} is closed after the preface timeout`, () =>
    withServer({ prefaceTimeoutMs: 300 }, async ({ port, g }) => {
      const t0 = Date.now();
      const r = await Raw.open(port, false);
      try {
        await r.send(...input);
        assert.ok(await r.ends(2000), "closed");
        const took = Date.now() - t0;
        assert.ok(took >= 250 && took < 1500, `closed after ${took} ms`);
        assert.equal(g.h2.connections, 0);
      } finally {
        r.close();
      }
    }));
}

Deno.test("attack: connections past the limit are closed at once; a freed slot is reused", () =>
  withServer({ connectionsMax: 3 }, async ({ port, g }) => {
    const held = await Promise.all([1, 2, 3].map(() => Raw.open(port)));
    try {
      const extra = await Raw.open(port, false);
      assert.ok(await extra.ends(1000), "the 4th connection is closed");
      extra.close();
      assert.equal(g.h2.connections, 3);
      held.pop()!.close();
      const t0 = Date.now();
      while (g.h2.connections > 2 && Date.now() - t0 < 2000) await sleep(10);
      held.push(await Raw.open(port));
      await held[2].pingPong();
      assert.equal(g.h2.connections, 3);
    } finally {
      for (const r of held) r.close();
    }
    const t0 = Date.now();
    while (g.h2.connections > 0 && Date.now() - t0 < 2000) await sleep(10);
  }));

// ---- the gRPC layer -------------------------------------------------------------------------

async function unaryStatus(
  r: Raw,
  stream: number,
  path: string,
  body: Uint8Array[],
  extra: [string, string][] = [],
) {
  await r.send(frame(HEADERS, END_HEADERS, stream, requestHeaders(path, extra)));
  for (const [i, b] of body.entries()) {
    await r.send(frame(DATA, i === body.length - 1 ? END_STREAM : 0, stream, b));
  }
  if (body.length === 0) await r.send(frame(DATA, END_STREAM, stream));
  const t = await r.until((f) =>
    f.type === HEADERS && f.stream === stream && (f.flags & END_STREAM) !== 0
  );
  return r.status(t);
}

Deno.test("attack: gRPC messages that lie about their size or encoding end the call, not the connection", () =>
  withServer({}, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      // A prefix claiming 4 GiB: RESOURCE_EXHAUSTED before anything is allocated.
      const huge = await unaryStatus(r, 1, "/t.T/Echo", [grpcMessage(hex("00"), 0, 0xffffffff)]);
      assert.equal(huge.code, Status.RESOURCE_EXHAUSTED);
      // The compressed flag (no grpc-encoding): refused.
      const comp = await unaryStatus(r, 3, "/t.T/Echo", [grpcMessage(hex("00"), 1)]);
      assert.equal(comp.code, Status.UNIMPLEMENTED);
      // A flag that is neither 0 nor 1.
      const flag = await unaryStatus(r, 5, "/t.T/Echo", [grpcMessage(hex("00"), 0x80)]);
      assert.notEqual(flag.code, Status.OK);
      // The body ends inside a message prefix, then inside a message.
      const prefix = await unaryStatus(r, 7, "/t.T/Echo", [hex("000000")]);
      assert.equal(prefix.code, Status.INTERNAL);
      const body = await unaryStatus(r, 9, "/t.T/Echo", [grpcMessage(hex("0102"), 0, 900)]);
      assert.equal(body.code, Status.INTERNAL);
      // No message at all, and two messages for a unary method.
      assert.equal((await unaryStatus(r, 11, "/t.T/Echo", [])).code, Status.UNIMPLEMENTED);
      const two = await unaryStatus(r, 13, "/t.T/Echo", [
        concat([grpcMessage(hex("01")), grpcMessage(hex("02"))]),
      ]);
      assert.equal(two.code, Status.UNIMPLEMENTED);
      assert.equal(stats.echo, 0);
      await r.pingPong();
    } finally {
      r.close();
    }
  }));

Deno.test("attack: an unknown method is UNIMPLEMENTED, trailers-only", () =>
  withServer({}, async ({ port }) => {
    const r = await Raw.open(port);
    try {
      await r.send(
        frame(HEADERS, END_HEADERS, 1, requestHeaders("/t.T/Nope")),
        frame(DATA, END_STREAM, 1, grpcMessage(hex("01"))),
        frame(PING, 0, 0, new Uint8Array(8)),
      );
      const frames: Frame[] = [];
      await r.until((f) => {
        frames.push(f);
        return f.type === PING;
      });
      const onStream = frames.filter((f) => f.stream === 1);
      assert.equal(onStream[0].type, HEADERS);
      assert.equal(onStream[0].flags & END_STREAM, END_STREAM, "one block that ends the stream");
      const fields = r.fields(onStream[0]);
      assert.equal(fields.get(":status"), "200");
      assert.equal(fields.get("content-type"), "application/grpc");
      assert.equal(fields.get("grpc-status"), String(Status.UNIMPLEMENTED));
      assert.ok(onStream.every((f) => f.type !== DATA), "no DATA");
      // Wrong :method and content-type are refused with HTTP statuses (gRPC's HTTP/2 doc).
      await r.send(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        encodeHeaders(
          requestFields("/t.T/Echo").map(([n, v]) =>
            [n, n === ":method" ? "GET" : v] as [string, string]
          ),
        ),
      ));
      const get = await r.until((f) => f.type === HEADERS && f.stream === 3);
      assert.equal(r.fields(get).get(":status"), "405");
      await r.send(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        5,
        encodeHeaders(
          requestFields("/t.T/Echo").map(([n, v]) =>
            [n, n === "content-type" ? "text/plain" : v] as [string, string]
          ),
        ),
      ));
      const type = await r.until((f) => f.type === HEADERS && f.stream === 5);
      assert.equal(r.fields(type).get(":status"), "415");
    } finally {
      r.close();
    }
  }));

Deno.test({
  name: "attack: a garbage grpc-timeout ends the call with INTERNAL",
  fn: () =>
    withServer({}, async ({ port, stats }) => {
      const r = await Raw.open(port);
      try {
        let id = 1;
        for (const bad of ["1x", "123456789S", "-1S", "S", "1.5S", "1 S"]) {
          const s = await unaryStatus(r, id, "/t.T/Echo", [grpcMessage(hex("01"))], [
            ["grpc-timeout", bad],
          ]);
          assert.equal(s.code, Status.INTERNAL, `grpc-timeout ${JSON.stringify(bad)}`);
          id += 2;
        }
        assert.equal(stats.echo, 0);
      } finally {
        r.close();
      }
    }),
});

Deno.test("attack: a grpc-timeout of 0 or of 99999999H is honoured without breaking the timer", () =>
  withServer({}, async ({ port, stats }) => {
    const r = await Raw.open(port);
    try {
      await r.send(
        frame(
          HEADERS,
          END_HEADERS,
          1,
          requestHeaders("/t.T/Hang", [["grpc-timeout", "99999999H"]]),
        ),
      );
      await r.send(
        frame(HEADERS, END_HEADERS, 3, requestHeaders("/t.T/Hang", [["grpc-timeout", "0n"]])),
      );
      const t = await r.until((f) => f.type === HEADERS && f.stream === 3, 1000);
      assert.equal(r.status(t).code, Status.DEADLINE_EXCEEDED);
      for (let f = await r.next(300); f !== null; f = await r.next(300)) {
        assert.notEqual(f.stream, 1, "stream 1 is not ended early");
      }
      assert.equal(stats.hang, 2);
    } finally {
      r.close();
    }
  }));
