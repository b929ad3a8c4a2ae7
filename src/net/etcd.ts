/**
 * etcd's v3 JSON gateway shapes (etcd 3.4 `/v3/kv/*`, `/v3/maintenance/status`): request bodies
 * parsed into raftmeta commands, and responses rendered as etcd renders them — base64 keys and
 * values, 64-bit integers as decimal strings, snake_case field names, zero values left out.
 * Input field names are accepted in snake_case and camelCase, as etcd's gateway accepts them;
 * fields a request type does not have are ignored, as etcd's gateway (grpc-gateway) ignores them.
 *
 * @module
 */

import type { WatchOptions } from "../coord/watch.ts";
import type {
  Compare,
  CompareResult,
  DeleteCommand,
  DeleteResponse,
  KeyRange,
  KeyValue,
  KvEvent,
  PutCommand,
  PutResponse,
  RangeCommand,
  RangeResponse,
  SortTarget,
  TxnCommand,
  TxnOp,
  TxnResponse,
} from "../kv/types.ts";
import { keyBytes, keyFromBytes, strictText } from "../kv/bytes.ts";
import { DUPLICATE_KEY_ERROR, txnDuplicateKeyError } from "../kv/command.ts";
import { txnReadOnly } from "../kv/store.ts";
import { TXN_DEPTH_MAX } from "../kv/types.ts";

/** A request that cannot be served; carries the HTTP status and etcd's gRPC code. */
export class HttpError extends Error {
  /** HTTP status, e.g. 400. */
  readonly status: number;
  /** gRPC status code etcd's gateway would report (3: invalid argument, 14: unavailable, ...). */
  readonly code: number;
  /** Seconds a client should wait before retrying (the `Retry-After` header), when set. */
  readonly retryAfterSeconds: number | undefined;
  /** Makes an error. */
  constructor(
    status: number,
    message: string,
    code = status === 404 ? 5 : 3,
    retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** Shorthand for a 400 with etcd's invalid-argument code. */
export function badRequest(message: string): HttpError {
  return new HttpError(400, message, 3);
}

/** The `header` every etcd response carries. */
export interface EtcdHeader {
  /** Cluster id as uint64. */
  readonly clusterId: bigint;
  /** This member's id as uint64. */
  readonly memberId: bigint;
  /** Store revision. */
  readonly revision: number;
  /** Raft term. */
  readonly raftTerm: number;
}

/** A 64-bit id for a name (FNV-1a), so etcd's numeric cluster_id and member_id have values. */
export function id64(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(name)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

/**
 * Largest magnitude of an integer field (2^53 - 1): etcd's fields are int64, but a larger value
 * would not be exact in JavaScript, so it is refused with a 400 rather than rounded.
 */
export const INT_MAX: number = Number.MAX_SAFE_INTEGER;

/** Most key-values a range limit can ask for (the command codec's u32); a larger limit is none. */
const RANGE_LIMIT_MAX = 0xffff_ffff;

type Json = Record<string, unknown>;

/** snake_case field name → camelCase, computed once per name (it ran per field per request). */
const CAMEL = new Map<string, string>();

/**
 * Reads the fields of an etcd request object in either case. Fields it is never asked for are
 * ignored, as etcd 3.4's gateway ignores them (a put with `"colour": "red"` is a put).
 */
/** A request's fields by etcd's snake_case name (or camelCase), with typed readers. */
export class Fields {
  readonly #obj: Json;
  readonly #what: string;

  constructor(value: unknown, what: string) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw badRequest(`${what} must be a JSON object`);
    }
    this.#obj = value as Json;
    this.#what = what;
  }

  /** The value of `snake` (or its camelCase form), or undefined. */
  get(snake: string): unknown {
    let camel = CAMEL.get(snake);
    if (camel === undefined) {
      camel = snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      CAMEL.set(snake, camel);
    }
    const v = this.#obj[snake] !== undefined ? this.#obj[snake] : this.#obj[camel];
    return v === null ? undefined : v;
  }

  bytes(snake: string): Uint8Array | undefined {
    const v = this.get(snake);
    if (v === undefined) return undefined;
    // Bytes already decoded (the gRPC face's messages; JSON has none): copied, as a decoder's
    // bytes may be a view of its whole receive buffer.
    if (v instanceof Uint8Array) return new Uint8Array(v);
    if (typeof v !== "string") {
      throw badRequest(`Field "${snake}" of ${this.#what} must be a base64 string: ${show(v)}`);
    }
    return decodeBase64(v, snake);
  }

  /**
   * An integer given as a JSON number or a decimal string (etcd's int64 fields), within
   * ±{@linkcode INT_MAX}: every value returned is exact, so it can be applied, snapshotted and
   * restored. Absent: 0.
   */
  int(snake: string): number {
    const v = this.get(snake);
    if (v === undefined) return 0;
    let n: number;
    if (typeof v === "number" && (Number.isInteger(v) || !Number.isFinite(v))) n = v;
    else if (typeof v === "string" && /^-?\d+$/.test(v)) {
      // More digits than any int64 has: out of range without converting a huge string.
      n = v.length > 21 ? Infinity : Number(v);
    } else {
      throw badRequest(
        `Field "${snake}" of ${this.#what} must be an integer (number or decimal string): ${
          show(v)
        }`,
      );
    }
    if (!Number.isSafeInteger(n)) {
      throw badRequest(
        `Field "${snake}" of ${this.#what} is out of range: ${
          typeof v === "number" ? String(v) : show(v)
        } (at most 2^53 - 1 = ${INT_MAX})`,
      );
    }
    // "-0" is 0.
    return n === 0 ? 0 : n;
  }

  bool(snake: string): boolean {
    const v = this.get(snake);
    if (v === undefined) return false;
    if (typeof v !== "boolean") {
      throw badRequest(`Field "${snake}" of ${this.#what} must be true or false: ${show(v)}`);
    }
    return v;
  }

  /** An enum given by name or number; returns the name. */
  enumeration(snake: string, names: readonly string[]): string {
    const v = this.get(snake);
    if (v === undefined) return names[0];
    if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v < names.length) return names[v];
    if (typeof v === "string" && names.includes(v)) return v;
    throw badRequest(
      `Field "${snake}" of ${this.#what} must be one of ${names.join(", ")}: ${show(v)}`,
    );
  }

  array(snake: string): unknown[] {
    const v = this.get(snake);
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      throw badRequest(`Field "${snake}" of ${this.#what} must be an array: ${show(v)}`);
    }
    return v;
  }
}

function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 64 ? s.slice(0, 63) + "…" : s;
}

/** Decodes base64 as protobuf's JSON mapping does: standard or URL-safe, padding optional. */
export function decodeBase64(text: string, field: string): Uint8Array {
  const normalized = text.includes("-") || text.includes("_")
    ? text.replaceAll("-", "+").replaceAll("_", "/")
    : text;
  if (NATIVE_BASE64) {
    // The built-in decoder refuses stray characters and misplaced padding, allows missing padding
    // ("loose") and skips whitespace; whitespace shows as fewer bytes than the text's length
    // promises, and is refused like the rest (no regex pass over every value).
    const n = normalized.length;
    const body = n - (normalized.endsWith("==") ? 2 : normalized.endsWith("=") ? 1 : 0);
    let out: Uint8Array | undefined;
    if (body % 4 !== 1) {
      try {
        out = (Uint8Array as unknown as { fromBase64(s: string): Uint8Array }).fromBase64(
          normalized,
        );
      } catch { /* refused below */ }
    }
    if (out === undefined || out.length !== Math.floor(body * 3 / 4)) {
      throw badRequest(`Field "${field}" is not valid base64: ${show(text)}`);
    }
    return out;
  }
  if (
    !/^[A-Za-z0-9+/]*={0,2}$/.test(normalized) || normalized.replace(/=+$/, "").length % 4 === 1
  ) {
    throw badRequest(`Field "${field}" is not valid base64: ${show(text)}`);
  }
  let bin: string;
  try {
    bin = atob(normalized);
  } catch {
    throw badRequest(`Field "${field}" is not valid base64: ${show(text)}`);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Whether the built-in base64 (Deno 2.5+, V8 ≥ 13.9) exists: several times faster than atob. */
const NATIVE_BASE64 =
  typeof (Uint8Array as unknown as { fromBase64?: unknown }).fromBase64 === "function" &&
  typeof (Uint8Array.prototype as { toBase64?: unknown }).toBase64 === "function";

/**
 * A decoded gRPC message as the gateway's JSON text: bytes (Buffers) as base64. The bytes are
 * replaced before `JSON.stringify` sees them: a Buffer's own `toJSON` (an array of every byte's
 * number) would otherwise run first, and cost a follower 3% of its time forwarding 1 KiB puts.
 */
export function gatewayJson(message: unknown): string {
  return JSON.stringify(withBase64Bytes(message));
}

function withBase64Bytes(v: unknown): unknown {
  if (v instanceof Uint8Array) return encodeBase64(v);
  if (Array.isArray(v)) return v.map(withBase64Bytes);
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = withBase64Bytes(x);
    return out;
  }
  return v;
}

/** Standard padded base64. */
export function encodeBase64(bytes: Uint8Array): string {
  if (NATIVE_BASE64) return (bytes as unknown as { toBase64(): string }).toBase64();
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** The key after every key with prefix `bytes` (etcd's prefix end), or undefined for none. */
function prefixEnd(bytes: Uint8Array): Uint8Array | undefined {
  const end = bytes.slice();
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return undefined;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((v, i) => v === b[i]);
}

/** etcd's key + range_end as a {@linkcode KeyRange}. */
export function keyRange(f: Fields): KeyRange {
  const key = f.bytes("key");
  const end = f.bytes("range_end");
  if (key === undefined || key.length === 0) throw badRequest('Field "key" is not provided');
  if (end === undefined || end.length === 0) return { key: keyFromBytes(key) };
  if (end.length === 1 && end[0] === 0) {
    // range_end "\0": every key >= key; key "\0" too means every key.
    if (key.length === 1 && key[0] === 0) return { prefix: "" };
    return { fromKey: keyFromBytes(key) };
  }
  // A prefix range when the prefix is text; a byte prefix outside UTF-8 stays a key and range end
  // (a string prefix of escaped bytes would miss keys whose bytes go on into a character).
  const prefix = strictText(key);
  if (prefix !== undefined && sameBytes(prefixEnd(key), end)) return { prefix };
  return { key: keyFromBytes(key), rangeEnd: keyFromBytes(end) };
}

/** A parsed `/v3/kv/range` request. */
export interface EtcdRange {
  /** The command (for a transaction or the store). */
  readonly command: RangeCommand;
  /** Whether a local (possibly stale) read is allowed. */
  readonly serializable: boolean;
}

function unsupported(f: Fields, fields: readonly string[], what: string): void {
  for (const name of fields) {
    const v = f.get(name);
    if (v !== undefined && v !== 0 && v !== "0" && v !== false && v !== "") {
      throw badRequest(`Field "${name}" of ${what} is not supported by raftmeta: ${show(v)}`);
    }
  }
}

const SORT_TARGETS: Record<string, SortTarget> = {
  KEY: "key",
  VERSION: "version",
  CREATE: "createRevision",
  MOD: "modRevision",
  VALUE: "value",
};

const RANGE_FILTERS = [
  ["min_mod_revision", "minModRevision"],
  ["max_mod_revision", "maxModRevision"],
  ["min_create_revision", "minCreateRevision"],
  ["max_create_revision", "maxCreateRevision"],
] as const;

/** Parses a RangeRequest. */
export function parseRange(body: unknown, what = "RangeRequest"): EtcdRange {
  const f = new Fields(body, what);
  const range = keyRange(f);
  const limit = Math.min(f.int("limit"), RANGE_LIMIT_MAX);
  if (limit < 0) throw badRequest(`Field "limit" must not be negative: ${limit}`);
  const revision = f.int("revision");
  const sortOrder = f.enumeration("sort_order", ["NONE", "ASCEND", "DESCEND"]);
  const sortTarget = SORT_TARGETS[
    f.enumeration("sort_target", ["KEY", "VERSION", "CREATE", "MOD", "VALUE"])
  ];
  // etcd's filters are int64 and any value but 0 applies, negative ones too.
  const filters: Record<string, number> = {};
  for (const [snake, name] of RANGE_FILTERS) {
    const v = f.int(snake);
    if (v !== 0) filters[name] = v;
  }
  const serializable = f.bool("serializable");
  const keysOnly = f.bool("keys_only");
  const countOnly = f.bool("count_only");
  if (revision < 0) throw badRequest(`Field "revision" must not be negative: ${revision}`);
  return {
    command: {
      type: "range",
      range,
      limit,
      keysOnly,
      countOnly,
      ...(sortOrder === "NONE" ? {} : { sortOrder: sortOrder === "ASCEND" ? "ascend" : "descend" }),
      ...(sortTarget === "key" ? {} : { sortTarget }),
      ...filters,
    },
    serializable,
    ...(revision > 0 ? { revision } : {}),
  } as EtcdRange & { revision?: number };
}

/** The revision a range asked for (0: latest). */
export function requestedRevision(r: EtcdRange): number {
  return (r as EtcdRange & { revision?: number }).revision ?? 0;
}

/** Parses a PutRequest. */
export function parsePut(body: unknown, what = "PutRequest"): PutCommand {
  const f = new Fields(body, what);
  const key = f.bytes("key");
  if (key === undefined || key.length === 0) throw badRequest('Field "key" is not provided');
  const value = f.bytes("value") ?? new Uint8Array(0);
  const prevKv = f.bool("prev_kv");
  const lease = f.int("lease");
  if (lease < 0) throw badRequest(`Field "lease" of ${what} must not be negative: ${lease}`);
  unsupported(f, ["ignore_value", "ignore_lease"], what);
  const put: PutCommand = { type: "put", key: keyFromBytes(key), value, prevKv };
  return lease > 0 ? { ...put, lease } : put;
}

/** Parses a DeleteRangeRequest. */
export function parseDeleteRange(body: unknown, what = "DeleteRangeRequest"): DeleteCommand {
  const f = new Fields(body, what);
  const range = keyRange(f);
  const prevKv = f.bool("prev_kv");
  return { type: "delete", range, prevKv };
}

const RESULTS: Record<string, CompareResult> = {
  EQUAL: "equal",
  GREATER: "greater",
  LESS: "less",
  NOT_EQUAL: "notEqual",
};

function parseCompare(value: unknown, i: number, list = "compare"): Compare {
  const what = `${list}[${i}]`;
  const f = new Fields(value, what);
  const result = RESULTS[f.enumeration("result", ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])];
  const target = f.enumeration("target", ["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]);
  const compareKey = f.bytes("key");
  if (compareKey === undefined || compareKey.length === 0) {
    throw badRequest(`Field "key" of ${what} is not provided`);
  }
  const key = keyFromBytes(compareKey);
  const end = f.bytes("range_end");
  // A range end "\0" means every key >= key (the store's Compare takes it as "\u0000").
  const rangeEnd = end === undefined || end.length === 0 ? {} : { rangeEnd: keyFromBytes(end) };
  let c: Compare;
  switch (target) {
    case "VERSION":
      c = { key, ...rangeEnd, target: "version", result, value: f.int("version") };
      break;
    case "CREATE":
      c = { key, ...rangeEnd, target: "createRevision", result, value: f.int("create_revision") };
      break;
    case "MOD":
      c = { key, ...rangeEnd, target: "modRevision", result, value: f.int("mod_revision") };
      break;
    case "VALUE":
      c = {
        key,
        ...rangeEnd,
        target: "value",
        result,
        value: f.bytes("value") ?? new Uint8Array(0),
      };
      break;
    default:
      c = { key, ...rangeEnd, target: "lease", result, value: f.int("lease") };
  }
  return c;
}

function parseRequestOp(
  value: unknown,
  where: string,
  depth: number,
): { op: TxnOp; serializable: boolean } {
  const f = new Fields(value, where);
  const put = f.get("request_put");
  const range = f.get("request_range");
  const del = f.get("request_delete_range");
  const txn = f.get("request_txn");
  const given = [put, range, del, txn].filter((v) => v !== undefined).length;
  if (given !== 1) {
    throw badRequest(
      `${where} must hold exactly one of request_put, request_range, request_delete_range, request_txn`,
    );
  }
  if (txn !== undefined) {
    const t = parseTxnAt(txn, `${where}.request_txn`, depth + 1);
    return { op: t.command, serializable: t.serializable };
  }
  if (put !== undefined) return { op: parsePut(put, `${where}.request_put`), serializable: false };
  if (del !== undefined) {
    return { op: parseDeleteRange(del, `${where}.request_delete_range`), serializable: false };
  }
  const r = parseRange(range, `${where}.request_range`);
  if (requestedRevision(r) !== 0) {
    throw badRequest(`Field "revision" of ${where}.request_range is not supported in a txn`);
  }
  return { op: r.command, serializable: r.serializable };
}

/** A parsed `/v3/kv/txn` request. */
export interface EtcdTxn {
  /** The command. */
  readonly command: TxnCommand;
  /** Whether it only reads: ranges in both lists (etcd serves it without the log). */
  readonly readOnly: boolean;
  /** Whether a local (possibly stale) read is allowed: every op is a serializable range. */
  readonly serializable: boolean;
}

/**
 * Parses a TxnRequest, nested ones included (at most {@linkcode TXN_DEPTH_MAX} levels). Two
 * writes to one key are refused with etcd's "duplicate key given in txn request".
 */
export function parseTxn(body: unknown): EtcdTxn {
  const txn = parseTxnAt(body, "TxnRequest", 1);
  if (txnDuplicateKeyError(txn.command) !== undefined) throw badRequest(DUPLICATE_KEY_ERROR);
  return txn;
}

function parseTxnAt(body: unknown, what: string, depth: number): EtcdTxn {
  if (depth > TXN_DEPTH_MAX) {
    throw badRequest(`Transactions nest too deep: more than ${TXN_DEPTH_MAX} levels`);
  }
  const f = new Fields(body, what);
  const prefix = depth === 1 ? "" : `${what}.`;
  const compare = f.array("compare").map((v, i) => parseCompare(v, i, `${prefix}compare`));
  const success = f.array("success").map((v, i) =>
    parseRequestOp(v, `${prefix}success[${i}]`, depth)
  );
  const failure = f.array("failure").map((v, i) =>
    parseRequestOp(v, `${prefix}failure[${i}]`, depth)
  );
  const ops = [...success, ...failure];
  const command: TxnCommand = {
    type: "txn",
    compare,
    success: success.map((o) => o.op),
    failure: failure.map((o) => o.op),
  };
  return {
    command,
    readOnly: txnReadOnly(command),
    // As etcd's isTxnSerializable: only when every op asks for it.
    serializable: ops.every((o) => o.serializable),
  };
}

/** etcd's largest lease TTL in seconds (its `MaxLeaseTTL`); more is "too large lease TTL". */
export const LEASE_TTL_SECONDS_MAX = 9_000_000_000;

/**
 * Parses a LeaseGrantRequest: `TTL` in seconds, `ID` optional (0: the store picks). A TTL below
 * the node's minimum (0 and negative ones included) is raised to it by the caller, as etcd does.
 */
export function parseLeaseGrant(body: unknown): { id: number; ttlSeconds: number } {
  const f = new Fields(body, "LeaseGrantRequest");
  const ttlSeconds = f.int("TTL");
  const id = f.int("ID");
  if (ttlSeconds > LEASE_TTL_SECONDS_MAX) {
    throw new HttpError(400, "etcdserver: too large lease TTL", 11);
  }
  if (id < 0) throw badRequest(`Field "ID" must not be negative: ${id}`);
  return { id, ttlSeconds };
}

/**
 * Parses a request naming one lease (`ID`); `keys` read where `withKeys`. Any id is returned, 0
 * and negative ones too: no lease has them, and etcd answers them as it answers an unknown lease.
 */
export function parseLeaseId(
  body: unknown,
  what: string,
  withKeys = false,
): { id: number; keys: boolean } {
  const f = new Fields(body, what);
  const id = f.int("ID");
  const keys = withKeys ? f.bool("keys") : false;
  return { id, keys };
}

/** Parses a CompactionRequest. */
export function parseCompaction(body: unknown): number {
  const f = new Fields(body, "CompactionRequest");
  const revision = f.int("revision");
  f.bool("physical");
  if (revision < 1) throw badRequest(`Field "revision" must be positive: ${revision}`);
  return revision;
}

/**
 * Parses a WatchRequest holding a `create_request` (one watch per HTTP stream: cancel by closing
 * the connection; `cancel_request` and `progress_request` are refused).
 */
export function parseWatchCreate(body: unknown): WatchOptions {
  const outer = new Fields(body, "WatchRequest");
  const create = outer.get("create_request");
  for (const other of ["cancel_request", "progress_request"]) {
    if (outer.get(other) !== undefined) {
      throw badRequest(
        `Field "${other}" is not supported: one watch per stream, close the connection to cancel`,
      );
    }
  }
  if (create === undefined) throw badRequest('Field "create_request" is not provided');
  const what = "WatchCreateRequest";
  const f = new Fields(create, what);
  const range = keyRange(f);
  const startRevision = f.int("start_revision");
  if (startRevision < 0) {
    throw badRequest(`Field "start_revision" must not be negative: ${startRevision}`);
  }
  const prevKv = f.bool("prev_kv");
  const progressNotify = f.bool("progress_notify");
  if (f.array("filters").length > 0) {
    throw badRequest(`Field "filters" of ${what} is not supported by raftmeta`);
  }
  unsupported(f, ["watch_id", "fragment"], what);
  return { range, startRevision, prevKv, progressNotify };
}

/** Checks a request that has no fields (StatusRequest, HashRequest, ...): any JSON object. */
export function parseEmpty(body: unknown, what: string): void {
  new Fields(body ?? {}, what);
}

/** An AlarmRequest: `action` GET, ACTIVATE or DEACTIVATE; `memberID` a uint64 ("0": every member). */
export interface AlarmRequest {
  /** What to do. */
  readonly action: "GET" | "ACTIVATE" | "DEACTIVATE";
  /** The member as etcd's uint64, 0n for none given. */
  readonly memberId: bigint;
  /** Which alarm (NONE lists every alarm). */
  readonly alarm: "NONE" | "NOSPACE" | "CORRUPT";
}

/** Parses etcd's AlarmRequest (`POST /v3/maintenance/alarm`); names or numbers for enums. */
export function parseAlarm(body: unknown): AlarmRequest {
  const f = new Fields(body ?? {}, "AlarmRequest");
  const action = f.enumeration("action", ["GET", "ACTIVATE", "DEACTIVATE"]);
  const raw = f.get("member_id") ?? f.get("memberID");
  const alarm = f.enumeration("alarm", ["NONE", "NOSPACE", "CORRUPT"]);
  let memberId = 0n;
  if (raw !== undefined) {
    if (
      !((typeof raw === "string" && /^\d{1,20}$/.test(raw)) ||
        (typeof raw === "number" && Number.isSafeInteger(raw) && raw >= 0)) ||
      BigInt(raw) >= 1n << 64n
    ) {
      throw badRequest(`Field "memberID" of AlarmRequest must be a uint64: ${show(raw)}`);
    }
    memberId = BigInt(raw);
  }
  if (action !== "GET" && alarm !== "NOSPACE") {
    throw badRequest(
      `Field "alarm" of AlarmRequest must be NOSPACE to ${action.toLowerCase()}: ${show(alarm)}`,
    );
  }
  return {
    action: action as AlarmRequest["action"],
    memberId,
    alarm: alarm as AlarmRequest["alarm"],
  };
}

// ---- Responses ---------------------------------------------------------------------------------

/** The response header in etcd's JSON shape. */
export function headerJson(h: EtcdHeader): Json {
  return {
    cluster_id: h.clusterId.toString(),
    member_id: h.memberId.toString(),
    revision: String(h.revision),
    raft_term: String(h.raftTerm),
  };
}

/** A key-value in etcd's JSON shape (zero fields left out, as etcd's gateway does). */
export function kvJson(kv: KeyValue): Json {
  const out: Json = { key: encodeBase64(keyBytes(kv.key)) };
  if (kv.createRevision !== 0) out.create_revision = String(kv.createRevision);
  if (kv.modRevision !== 0) out.mod_revision = String(kv.modRevision);
  if (kv.version !== 0) out.version = String(kv.version);
  if (kv.value.length > 0) out.value = encodeBase64(kv.value);
  if (kv.lease !== undefined && kv.lease !== 0) out.lease = String(kv.lease);
  return out;
}

/**
 * A key-value as {@linkcode kvJson}, with its key and value as bytes: the gRPC face's encoder
 * takes them as they are (no base64 text to write and read back).
 */
export function kvMessage(kv: KeyValue): Json {
  const out: Json = { key: keyBytes(kv.key) };
  if (kv.createRevision !== 0) out.create_revision = String(kv.createRevision);
  if (kv.modRevision !== 0) out.mod_revision = String(kv.modRevision);
  if (kv.version !== 0) out.version = String(kv.version);
  if (kv.value.length > 0) out.value = kv.value;
  if (kv.lease !== undefined && kv.lease !== 0) out.lease = String(kv.lease);
  return out;
}

/** A watch event in etcd's JSON shape: `type` left out for PUT (the zero value). */
export function eventJson(e: KvEvent): Json {
  const out: Json = {};
  if (e.type === "DELETE") out.type = "DELETE";
  out.kv = kvJson(e.kv);
  if (e.prevKv !== undefined) out.prev_kv = kvJson(e.prevKv);
  return out;
}

/** Renders a list of key-values; a caller may substitute its own (to render them in slices). */
export type KvsRenderer = (kvs: readonly KeyValue[]) => unknown;

const renderKvs: KvsRenderer = (kvs) => kvs.map(kvJson);

/** A RangeResponse body. */
export function rangeJson(header: Json, r: RangeResponse, kvs: KvsRenderer = renderKvs): Json {
  const out: Json = { header };
  if (r.kvs.length > 0) out.kvs = kvs(r.kvs);
  if (r.more) out.more = true;
  if (r.count !== 0) out.count = String(r.count);
  return out;
}

/** A PutResponse body. */
export function putJson(header: Json, r: PutResponse): Json {
  const out: Json = { header };
  if (r.prevKv !== undefined) out.prev_kv = kvJson(r.prevKv);
  return out;
}

/** A DeleteRangeResponse body. */
export function deleteJson(header: Json, r: DeleteResponse, kvs: KvsRenderer = renderKvs): Json {
  const out: Json = { header };
  if (r.deleted !== 0) out.deleted = String(r.deleted);
  if (r.prevKvs !== undefined && r.prevKvs.length > 0) out.prev_kvs = kvs(r.prevKvs);
  return out;
}

/**
 * A TxnResponse body. As in etcd, an inner put, delete or range carries a header with its own
 * revision only, and a nested transaction an empty header.
 */
export function txnJson(header: Json, r: TxnResponse, kvs: KvsRenderer = renderKvs): Json {
  const out: Json = { header };
  if (r.succeeded) out.succeeded = true;
  if (r.responses.length > 0) {
    out.responses = r.responses.map((x) => {
      const inner = { revision: String(x.revision) };
      switch (x.type) {
        case "put":
          return { response_put: putJson(inner, x) };
        case "delete":
          return { response_delete_range: deleteJson(inner, x, kvs) };
        case "range":
          return { response_range: rangeJson(inner, x, kvs) };
        case "txn":
          return { response_txn: txnJson({}, x, kvs) };
      }
    });
  }
  return out;
}

// ---- Snapshot files ----------------------------------------------------------------------------

/** The trailer's first bytes: "RMSNAP01" (raftmeta snapshot file, version 1). */
const SNAPSHOT_FILE_MAGIC = new TextEncoder().encode("RMSNAP01");
/** Bytes of the trailer: magic and the store snapshot's length (u64 big-endian). */
const SNAPSHOT_TRAILER_BYTES = 16;
/** Bytes of the SHA-256 that ends the file, as etcd's snapshot stream ends with one. */
const SHA256_BYTES = 32;
/** etcd's snapshot files are bolt pages (multiples of 512 bytes) plus the SHA-256. */
const SNAPSHOT_FILE_ALIGN = 512;

/**
 * The file `snapshot save` writes (over gRPC with etcdctl, or over the gateway): raftmeta's store
 * snapshot (src/storage/store_snapshot.ts), zero padding, a 16-byte trailer (magic "RMSNAP01" and
 * the snapshot's length) ending on a 512-byte boundary, then the SHA-256 of all that. The shape
 * is etcd's (a size of 32 more than a multiple of 512, the last 32 bytes a SHA-256), which
 * etcdctl 3.4 checks before it keeps the file; the contents are raftmeta's, not a bolt database.
 */
export async function frameSnapshotFile(chunks: readonly Uint8Array[]): Promise<Uint8Array> {
  let n = 0;
  for (const c of chunks) n += c.length;
  const body = Math.ceil((n + SNAPSHOT_TRAILER_BYTES) / SNAPSHOT_FILE_ALIGN) * SNAPSHOT_FILE_ALIGN;
  const out = new Uint8Array(body + SHA256_BYTES);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  out.set(SNAPSHOT_FILE_MAGIC, body - SNAPSHOT_TRAILER_BYTES);
  new DataView(out.buffer).setBigUint64(body - 8, BigInt(n));
  out.set(new Uint8Array(await crypto.subtle.digest("SHA-256", out.subarray(0, body))), body);
  return out;
}

/**
 * The store snapshot inside a file made by {@linkcode frameSnapshotFile}, after checking its
 * shape and SHA-256; throws naming what is wrong (an etcd bolt file is refused as not ours).
 */
export async function unframeSnapshotFile(file: Uint8Array): Promise<Uint8Array> {
  if (
    file.length < SNAPSHOT_FILE_ALIGN + SHA256_BYTES ||
    file.length % SNAPSHOT_FILE_ALIGN !== SHA256_BYTES
  ) {
    throw new Error(
      `Not a raftmeta snapshot file: its size ${file.length} is not 32 more than a multiple of 512`,
    );
  }
  const body = file.length - SHA256_BYTES;
  const magic = file.subarray(body - SNAPSHOT_TRAILER_BYTES, body - 8);
  if (!magic.every((b, i) => b === SNAPSHOT_FILE_MAGIC[i])) {
    throw new Error(
      `Not a raftmeta snapshot file: no "RMSNAP01" trailer at byte ${
        body - SNAPSHOT_TRAILER_BYTES
      }` +
        ` (an etcd snapshot is a bolt database, which raftmeta cannot restore)`,
    );
  }
  const sha = new Uint8Array(
    await crypto.subtle.digest("SHA-256", file.subarray(0, body) as Uint8Array<ArrayBuffer>),
  );
  if (!sha.every((b, i) => b === file[body + i])) {
    throw new Error(`Snapshot file is damaged: its SHA-256 does not match its contents`);
  }
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(body - 8));
  if (n > body - SNAPSHOT_TRAILER_BYTES) {
    throw new Error(`Snapshot file is damaged: its trailer gives a length of ${n} bytes`);
  }
  return file.subarray(0, n);
}
