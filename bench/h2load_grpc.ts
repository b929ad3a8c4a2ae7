/**
 * gRPC load with h2load (nghttp2's HTTP/2 load generator, written in C): the same client, with
 * little CPU of its own, against raftmeta's and etcd's gRPC ports, for `deno task bench:etcd`'s gRPC
 * rows. h2load sends one fixed request body per run, so a put row puts one key over and over (etcd's
 * benchmark tool can do the same with a key space of 1) and a range row reads one key.
 *
 * h2load counts a stream with HTTP status 200 as a success, while gRPC reports its errors in the
 * trailers (grpc-status) of a 200 answer. So each run is checked after the fact: a put row's key
 * must have gained at least one version per success (and at most one per stream still in flight at
 * the end), and every answer must have carried a message as large as a success's (an error answer
 * has no message). A run that fails either check throws.
 *
 * @module
 */

/** One gRPC load run's figures. */
export interface H2loadResult {
  /** Streams that ended with HTTP 200 within the measured time. */
  readonly succeeded: number;
  /** Streams that failed (reset, timeout, connection error, non-200). */
  readonly failed: number;
  readonly seconds: number;
  readonly requestsPerSecond: number;
  readonly latencyMsP50: number;
  readonly latencyMsP99: number;
  /** Bytes of DATA received (gRPC messages with their 5-byte prefixes). */
  readonly dataBytes: number;
}

/** The rows: sequential and concurrent puts, concurrent linearizable ranges (one connection). */
export const GRPC_WORKLOADS = [
  { name: "gRPC sequential puts", streams: 1, kind: "put" },
  { name: "gRPC concurrent puts", streams: 64, kind: "put" },
  { name: "gRPC linearizable ranges", streams: 64, kind: "range" },
] as const;

/** One gRPC row. */
export type GrpcWorkload = typeof GRPC_WORKLOADS[number];

/** The key every gRPC row puts or reads (outside the JSON rows' "k%07d" keys). */
export const GRPC_KEY = "grpc-bench";
/** Bytes of the value the put rows write. */
export const GRPC_VALUE_BYTES = 256;

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** A length-delimited protobuf field (wire type 2). */
function field(num: number, bytes: Uint8Array): number[] {
  return [(num << 3) | 2, ...varint(bytes.length), ...bytes];
}

/**
 * The gRPC request body of a row: etcd's PutRequest {key, value} or RangeRequest {key}
 * (linearizable: serializable stays false), in a gRPC length-prefixed message.
 */
export function grpcBody(kind: "put" | "range"): Uint8Array {
  const key = new TextEncoder().encode(GRPC_KEY);
  const message = kind === "put"
    ? [...field(1, key), ...field(2, new Uint8Array(GRPC_VALUE_BYTES).fill(0x76))]
    : field(1, key);
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length); // byte 0: not compressed
  out.set(message, 5);
  return out;
}

/** The smallest answer message a success carries (prefix included): an error carries none. */
export function smallestAnswerBytes(kind: "put" | "range"): number {
  // A put answers a ResponseHeader (cluster id, member id, revision, term: 4 varints, ≥ 8 bytes in
  // its own field); a range of the key also carries its value.
  return kind === "put" ? 5 + 10 : 5 + GRPC_VALUE_BYTES;
}

/** gRPC's path of a row's method. */
export function grpcPath(kind: "put" | "range"): string {
  return kind === "put" ? "/etcdserverpb.KV/Put" : "/etcdserverpb.KV/Range";
}

/**
 * Parses h2load's summary (its "requests:" and "traffic:" lines) and the per-request log
 * (`--log-file`: start µs, status, duration µs, tab-separated) into a result.
 */
export function parseH2load(summary: string, log: string, seconds: number): H2loadResult {
  const req = summary.match(
    /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/,
  );
  const traffic = summary.match(
    /traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?\((\d+)\) data/,
  );
  if (req === null || traffic === null) {
    throw new Error(`h2load printed no summary; its output was:\n${summary.slice(0, 2000)}`);
  }
  const durations: number[] = [];
  for (const line of log.split("\n")) {
    const [, status, us] = line.split("\t");
    if (status === "200") durations.push(Number(us) / 1000);
  }
  durations.sort((a, b) => a - b);
  const q = (p: number) =>
    durations.length === 0
      ? NaN
      : durations[Math.min(durations.length - 1, Math.floor(p * durations.length))];
  const succeeded = Number(req[4]);
  return {
    succeeded,
    failed: Number(req[5]),
    seconds,
    requestsPerSecond: succeeded / seconds,
    latencyMsP50: q(0.5),
    latencyMsP99: q(0.99),
    dataBytes: Number(traffic[3]),
  };
}

/**
 * Runs one row for `seconds` against `target` (`http://host:port` or `https://…`), on one
 * connection, and checks the answers (see the module's text). `token` is sent as gRPC metadata
 * ("token", as etcd's clients do). `versionOf` reads the key's version (for the put check).
 */
export async function h2loadRun(
  h2load: string,
  dir: string,
  target: string,
  w: GrpcWorkload,
  seconds: number,
  versionOf: () => Promise<number>,
  token?: string,
): Promise<H2loadResult> {
  const body = `${dir}/${w.kind}.grpc`;
  Deno.writeFileSync(body, grpcBody(w.kind));
  const log = `${dir}/h2load-${w.kind}-${w.streams}.log`;
  const args = [
    "-c",
    "1",
    "-m",
    String(w.streams),
    "-D",
    String(seconds),
    "-d",
    body,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    ...(token === undefined ? [] : ["-H", `token: ${token}`]),
    `--log-file=${log}`,
    `${target}${grpcPath(w.kind)}`,
  ];
  const before = w.kind === "put" ? await versionOf() : 0;
  const o = await new Deno.Command(h2load, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  const summary = dec.decode(o.stdout) + dec.decode(o.stderr);
  if (o.code !== 0) throw new Error(`h2load failed (exit ${o.code}):\n${summary.slice(0, 2000)}`);
  const r = parseH2load(summary, Deno.readTextFileSync(log), seconds);
  if (r.succeeded === 0) throw new Error(`${w.name}: no request succeeded:\n${summary}`);
  if (r.dataBytes < r.succeeded * smallestAnswerBytes(w.kind)) {
    throw new Error(
      `${w.name}: ${r.succeeded} answers carried ${r.dataBytes} bytes of messages, fewer than ` +
        `${smallestAnswerBytes(w.kind)} each: some were gRPC errors\n${summary}`,
    );
  }
  if (w.kind === "put") {
    const gained = await versionOf() - before;
    if (gained < r.succeeded || gained > r.succeeded + r.failed + w.streams) {
      throw new Error(
        `${w.name}: the key gained ${gained} versions for ${r.succeeded} successful puts ` +
          `(${r.failed} failed, ${w.streams} streams): some answers were gRPC errors`,
      );
    }
  }
  return r;
}
