/**
 * The HTTP face of a node: etcd's v3 JSON gateway paths, the REST paths (`/v1/kv/<key>`,
 * `/v1/status`), `/metrics` and `/health`. Writes on a follower are forwarded to the leader;
 * linearizable reads use ReadIndex (a follower asks the leader for the index and reads locally).
 * Every failure is a JSON error `{error, code, message}` with a 4xx or 5xx status; nothing a
 * client sends can throw past this module.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { NotLeaderError } from "../raft/types.ts";
import { CommandError } from "../kv/command.ts";
import { keyBytes } from "../kv/bytes.ts";
import { CompactedError } from "../kv/history.ts";
import { LeaseError } from "../coord/lease_manager.ts";
import { WatchError, type WatchStream } from "../coord/watch.ts";
import type { Http1FastAnswer, Http1FastHandler, Http1FastRequest } from "./http1.ts";
import {
  type ApplyResult,
  COMPACTED_ERROR,
  FUTURE_REVISION_ERROR,
  kvResponseBytes,
  NOSPACE_ERROR,
  ResponseTooLargeError,
  RevisionUnavailableError,
} from "../kv/store.ts";
import type {
  ClientId,
  CommandResponse,
  KeyRange,
  KeyValue,
  PlainCommand,
  PutCommand,
  RangeResponse,
  TxnCommand,
} from "../kv/types.ts";
import {
  badRequest,
  deleteJson,
  encodeBase64,
  eventJson,
  frameSnapshotFile,
  gatewayJson,
  headerJson,
  HttpError,
  id64,
  kvJson,
  kvMessage,
  type KvsRenderer,
  parseAlarm,
  parseCompaction,
  parseDeleteRange,
  parseEmpty,
  parseLeaseGrant,
  parseLeaseId,
  parsePut,
  parseRange,
  parseTxn,
  parseWatchCreate,
  putJson,
  rangeJson,
  requestedRevision,
  txnJson,
} from "./etcd.ts";
import { Histogram, renderMetrics } from "./metrics.ts";
import { JSON_DEPTH_MAX, jsonTooDeepAt } from "./json_depth.ts";
import { fetchErrorText, neverSent } from "./fetch_error.ts";
import { crc32cUpdate } from "../storage/crc32c.ts";
import { encodeCommand } from "../kv/command.ts";
import { encodeStoreSnapshotChunks } from "../storage/store_snapshot.ts";
import { type LocalStatus, MemberRemovedError, type RaftServer, ReadRefused } from "./server.ts";
import { MEMBER_ROUTES, parseMemberRequest, runMemberRequest } from "./member_routes.ts";
import {
  type Access,
  AUTH_RECHECKS_MAX,
  AUTH_ROUTES,
  authAnswer,
  authRejected,
  type Identity,
} from "./auth.ts";
import { AUTH_OLD_REVISION, commandNeeds, PERMISSION_DENIED, USER_EMPTY } from "../kv/auth.ts";

/** Header marking a request a follower forwarded to the leader (never forwarded again). */
export const FORWARDED_HEADER = "raftmeta-forwarded-by";
/** Header carrying the client id of a write's session envelope. */
export const CLIENT_ID_HEADER = "raftmeta-client-id";
/** Header carrying the sequence number of a write's session envelope. */
export const SEQ_HEADER = "raftmeta-seq";
/** Response header naming the leader's client URL, when known. */
export const LEADER_HEADER = "raftmeta-leader-url";

type Json = Record<string, unknown>;

const ROUTES = new Set([
  "/v3/kv/put",
  "/v3/kv/range",
  "/v3/kv/deleterange",
  "/v3/kv/txn",
  "/v3/maintenance/status",
  "/v3/maintenance/alarm",
  "/v3/kv/compaction",
  "/v3/lease/grant",
  "/v3/lease/revoke",
  "/v3/lease/keepalive",
  "/v3/lease/timetolive",
  "/v3/lease/leases",
  "/v3/watch",
  "/v3/cluster/member/list",
  ...MEMBER_ROUTES,
  "/v3/maintenance/hash",
  "/v3/maintenance/snapshot",
  "/v3/maintenance/defragment",
  ...AUTH_ROUTES,
]);

/**
 * The version `GET /version` and Status report: etcd 3.4's API, served by raftmeta. A semver
 * prerelease of 3.4.0, so it names raftmeta and still reads as 3.4 to a client that parses it.
 */
export const ETCD_VERSION = "3.4.0-raftmeta";
/** The cluster version `GET /version` reports (etcd reports major.minor.0). */
export const ETCD_CLUSTER_VERSION = "3.4.0";

/** Serves one HTTP request. Never throws. */
export async function handleHttp(
  server: RaftServer,
  req: Request,
  _info?: Deno.ServeHandlerInfo<Deno.NetAddr>,
): Promise<Response> {
  const started = server.nowMs();
  let route = "other";
  let response: Response;
  const admitted = server.admitRequest();
  try {
    if (!admitted) throw tooManyRequests(server);
    const url = new URL(req.url);
    server.browserGuard.check(req);
    // etcd 3.4's gateway also serves revoke, timetolive and leases under /v3/kv/lease/, and
    // everything under /v3beta/; /v3alpha/ is not served (404).
    const path = url.pathname.replace(/^\/v3beta\//, "/v3/").replace(
      /^\/v3\/kv\/lease\//,
      "/v3/lease/",
    );
    const methods = methodsOf(path);
    if (req.method === "OPTIONS" && methods !== undefined) {
      response = server.browserGuard.options(req, methods);
    } else if (ROUTES.has(path)) {
      route = path;
      response = await etcdRoute(server, req, path, _info);
    } else if (path === "/v1/kv" || path.startsWith("/v1/kv/")) {
      route = "/v1/kv";
      response = await restKv(server, req, url, _info);
    } else if (path === "/v1/status") {
      route = path;
      requireMethod(req, ["GET"]);
      // With auth on, the operations endpoints need a user (any): they show the cluster's layout.
      const identity = identityOf(server, req, EMPTY_BODY, _info);
      gate(server, identity, { kind: "user" });
      response = await statusRoute(server, url, identity);
    } else if (path === "/metrics") {
      route = path;
      requireMethod(req, ["GET"]);
      gate(server, identityOf(server, req, EMPTY_BODY, _info), { kind: "user" });
      response = metricsResponse(server);
    } else if (path === "/version") {
      route = path;
      requireMethod(req, ["GET"]);
      response = Response.json({ etcdserver: ETCD_VERSION, etcdcluster: ETCD_CLUSTER_VERSION });
    } else if (path === "/health") {
      route = path;
      requireMethod(req, ["GET"]);
      response = healthResponse(server);
    } else {
      throw new HttpError(404, `Unknown path ${JSON.stringify(url.pathname)}`, 5);
    }
  } catch (e) {
    response = errorResponse(server, e);
  } finally {
    if (admitted) server.releaseRequest();
  }
  observeRequest(server, route, started);
  const leader = server.node.leaderId;
  const leaderUrl = leader === undefined ? undefined : server.clientUrlOf(leader);
  if (leaderUrl !== undefined && !response.headers.has(LEADER_HEADER)) {
    try {
      response.headers.set(LEADER_HEADER, leaderUrl);
    } catch { /* immutable headers of a forwarded response */ }
  }
  server.browserGuard.decorate(req, response);
  return response;
}

/**
 * The client port's fast path (src/net/http1.ts's {@linkcode Http1FastHandler}): a unary etcd
 * gateway call (`POST` to one of its paths as etcd spells them, a Content-Length body within the
 * request limit, arrived whole) is answered from the head's fields and the body's bytes, with no
 * `Request`, `Response`, `Headers` or stream objects unless it is forwarded or streamed. The same
 * checks, limits, routes, errors, metrics and headers as {@linkcode handleHttp}; everything else
 * (other paths, aliases, chunked bodies, keep-alive and watch streams) goes there.
 */
export function etcdFastHandler(server: RaftServer): Http1FastHandler {
  const bodyBytesMax = requestBodyBytesMax(server.requestBytesMax);
  return {
    // A login goes the general way, which knows the client's address (for the login limiter).
    accepts: (method, target, bodyBytes) =>
      method === "POST" && bodyBytes <= bodyBytesMax && ROUTES.has(target) &&
      !STREAMED_ROUTES.has(target) && target !== "/v3/auth/authenticate",
    handle: (req) => etcdFast(server, req),
  };
}

const JSON_FIELDS: readonly [string, string][] = [["content-type", "application/json"]];

async function etcdFast(
  server: RaftServer,
  req: Http1FastRequest,
): Promise<Http1FastAnswer | Response> {
  const started = server.nowMs();
  const path = req.target;
  server.counters.fastRequests++;
  const admitted = server.admitRequest();
  let answer: Answer | undefined;
  let error: EtcdCallError | undefined;
  // Built only when a forward or the session needs it.
  let headers: Headers | undefined;
  const headersOf = () => headers ??= new Headers(req.fields as [string, string][]);
  const reqHeaders = { get: (name: string) => req.header(name) };
  try {
    if (!admitted) throw tooManyRequests(server);
    server.browserGuard.check({ headers: reqHeaders });
    const identity = identityOfFields(server, reqHeaders, "POST", path, req.body, "unknown");
    const body = parseJson(req.body);
    answer = await etcdAnswer(server, path, body, {
      request: {
        method: "POST",
        target: path,
        get headers() {
          return headersOf();
        },
        body: () => req.body,
        identity,
      },
      session: sessionOf({ headers: reqHeaders }),
      bodyBytes: req.body.length,
      identity,
    });
  } catch (e) {
    error = errorOf(server, e);
  } finally {
    if (admitted) server.releaseRequest();
  }
  observeRequest(server, path, started);
  const leader = server.node.leaderId;
  const leaderUrl = leader === undefined ? undefined : server.clientUrlOf(leader);
  const origin = req.header("origin");
  if (answer instanceof Response) {
    // A forwarded or streamed answer: as handleHttp sends it.
    if (leaderUrl !== undefined && !answer.headers.has(LEADER_HEADER)) {
      try {
        answer.headers.set(LEADER_HEADER, leaderUrl);
      } catch { /* immutable headers of a forwarded response */ }
    }
    for (const [name, value] of server.browserGuard.corsFields(origin)) {
      try {
        answer.headers.set(name, value);
      } catch { /* immutable headers */ }
    }
    return answer;
  }
  const fields: [string, string][] = [...JSON_FIELDS];
  let status = 200;
  let json: unknown;
  if (error !== undefined) {
    status = error.status;
    json = { error: error.message, code: error.code, message: error.message };
    for (const [name, value] of error.headers) fields.push([name, value]);
  } else {
    json = answer!.json;
    for (const [name, value] of Object.entries(answer!.headers ?? {})) fields.push([name, value]);
  }
  if (leaderUrl !== undefined) fields.push([LEADER_HEADER, leaderUrl]);
  fields.push(...server.browserGuard.corsFields(origin));
  return { status, fields, body: lineEncoder.encode(JSON.stringify(json)) };
}

/** The 503 for a request over `--http-requests-max` (both faces count against it). */
function tooManyRequests(server: RaftServer): HttpError {
  return new HttpError(
    503,
    `Too many requests in flight on this node: ${server.httpRequestsMax} (retry later)`,
    14,
    1,
  );
}

/** Records how long a request on `route` took, in the node's per-route histogram. */
function observeRequest(server: RaftServer, route: string, startedMs: number): void {
  let h = server.requestSeconds.get(route);
  if (h === undefined) server.requestSeconds.set(route, h = new Histogram());
  h.observe((server.nowMs() - startedMs) / 1000);
}

/**
 * An etcd gateway call that failed: its HTTP status, etcd's gRPC code and message. Both faces
 * derive it from the same error ({@linkcode errorOf}): the HTTP face sends it as JSON, the gRPC
 * face as a gRPC status.
 */
export class EtcdCallError extends Error {
  /** The HTTP status the JSON gateway answers with. */
  readonly status: number;
  /** etcd's gRPC code. */
  readonly code: number;
  /** Headers the HTTP answer carries (`allow`, `retry-after`, `connection`). */
  readonly headers: Headers;
  constructor(status: number, code: number, message: string, headers: Headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function errorResponse(server: RaftServer, e: unknown): Response {
  const error = errorOf(server, e);
  return Response.json({ error: error.message, code: error.code, message: error.message }, {
    status: error.status,
    headers: error.headers,
  });
}

/** What a failure is answered with: status, code and message (counted and logged here). */
function errorOf(server: RaftServer, e: unknown): EtcdCallError {
  let status = 500;
  let code = 13;
  let message: string;
  if (e instanceof HttpError) {
    status = e.status;
    code = e.code;
    message = e.message;
  } else if (e instanceof CommandError) {
    status = 400;
    code = 3;
    message = e.message;
  } else if (e instanceof ResponseTooLargeError) {
    status = 429;
    code = 8;
    message = responseTooLarge(e.bytesMax, "ask for less with limit, keys_only or count_only");
  } else if (e instanceof NotLeaderError || e instanceof ReadRefused) {
    status = 503;
    code = 14;
    message = e.message;
  } else {
    message = `Internal error: ${(e as Error)?.message ?? String(e)}`;
    server.logEvent("http-internal-error", { error: message });
  }
  if (status >= 400 && status < 500) server.counters.badRequests++;
  const headers = new Headers();
  if (e instanceof MethodNotAllowed) headers.set("allow", e.allow);
  const retryAfter = e instanceof HttpError ? e.retryAfterSeconds : undefined;
  if (retryAfter !== undefined) headers.set("retry-after", String(retryAfter));
  // A body that did not arrive in time is not drained: the connection goes.
  if (status === 408) headers.set("connection", "close");
  return new EtcdCallError(status, code, message, headers);
}

/** The methods a path is served with (HEAD wherever GET), or undefined for an unknown path. */
function methodsOf(path: string): string[] | undefined {
  if (ROUTES.has(path)) return ["POST"];
  if (path === "/v1/kv" || path.startsWith("/v1/kv/")) return ["GET", "HEAD", "PUT", "DELETE"];
  if (["/v1/status", "/metrics", "/health", "/version"].includes(path)) return ["GET", "HEAD"];
  return undefined;
}

function requireMethod(req: Request, methods: string[]): void {
  // HEAD is GET without the body (Deno.serve drops it).
  const method = req.method === "HEAD" ? "GET" : req.method;
  if (!methods.includes(method)) throw new MethodNotAllowed(req.method, methods);
}

/** A 405, with the `Allow` list its response must carry (RFC 9110 §15.5.6). */
class MethodNotAllowed extends HttpError {
  readonly allow: string;
  constructor(method: string, methods: string[]) {
    super(
      405,
      `Method ${JSON.stringify(method)} is not allowed here; use ${methods.join(" or ")}`,
      12,
    );
    this.allow = [...methods, ...(methods.includes("GET") ? ["HEAD"] : []), "OPTIONS"].join(", ");
  }
}

/** What a JSON request may carry beyond its decoded bytes (field names, gRPC's own overhead). */
const REQUEST_OVERHEAD_BYTES = 512 * 1024;

/**
 * Most bytes of an etcd JSON request body: `--max-request-bytes` applies to the decoded request
 * (as etcd's does), and base64 makes bytes 4/3 larger, so the body may have
 * 4/3 × (`requestBytesMax` + 512 KiB): 2.67 MiB by default. Over it: 413 without reading it all.
 */
export function requestBodyBytesMax(requestBytesMax: number): number {
  return Math.ceil((requestBytesMax + REQUEST_OVERHEAD_BYTES) * 4 / 3);
}

/**
 * Refuses a write whose command, as written to the log, exceeds `--max-request-bytes`, with
 * etcd's error. Only a body larger than the limit can hold such a command (the log's encoding is
 * smaller than base64 JSON), so smaller bodies are not encoded twice.
 */
function refuseLargeCommand(server: RaftServer, bodyBytes: number, command: PlainCommand): void {
  if (bodyBytes <= server.requestBytesMax) return;
  if (encodeCommand(command).length > server.requestBytesMax) {
    throw badRequest(REQUEST_TOO_LARGE_ERROR);
  }
}

/** etcd's error for a request over `--max-request-bytes` (gRPC InvalidArgument). */
const REQUEST_TOO_LARGE_ERROR = "etcdserver: request is too large";

/**
 * Reads the body, refusing more than `bytesMax` bytes without reading them all, and a body
 * that has not arrived within `bodyReadTimeoutMs` (a slow client must not hold a request open).
 */
async function readBody(
  server: RaftServer,
  req: Request,
  bytesMax = server.requestBytesMax,
): Promise<Uint8Array> {
  const timeoutMs = server.bodyReadTimeoutMs;
  let timedOut: () => void = () => {};
  const deadline = new Promise<never>((_, reject) => {
    timedOut = () =>
      reject(
        new HttpError(408, `Request body did not arrive within ${timeoutMs} ms`, 4),
      );
  });
  deadline.catch(() => {});
  let done = false;
  server.afterMs(timeoutMs, () => {
    if (!done) timedOut();
  });
  const read = readBodyBounded(req, bytesMax);
  read.catch(() => {});
  try {
    return await Promise.race([read, deadline]);
  } catch (e) {
    // Give up on the stream: the connection is closed rather than drained.
    if (e instanceof HttpError && e.status === 408) req.body?.cancel().catch(() => {});
    throw e;
  } finally {
    done = true;
  }
}

async function readBodyBounded(req: Request, max: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > max) {
    throw new HttpError(413, `Request body is too large: ${declared} bytes (most ${max})`, 8);
  }
  if (req.body === null) return new Uint8Array(0);
  // Declared and small enough: one read (the reader loop below cost about 2% of a leader's CPU).
  if (declared !== null && /^\d{1,10}$/.test(declared)) {
    try {
      return new Uint8Array(await req.arrayBuffer());
    } catch {
      // The client closed its side before sending what it declared: its request, not our fault.
      throw badRequest(
        `Request body is shorter than its Content-Length of ${declared} bytes (the connection closed first)`,
      );
    }
  }
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (true) {
    let read;
    try {
      read = await reader.read();
    } catch {
      throw badRequest(`Request body broke off after ${total} bytes (the connection closed first)`);
    }
    const { done, value } = read;
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw new HttpError(413, `Request body is too large: over ${max} bytes`, 8);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function parseJson(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return {};
  refuseDeepJson(bytes);
  let text: string;
  try {
    text = textDecoder.decode(bytes);
  } catch {
    throw badRequest("Request body is not UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badRequest(`Request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Refuses JSON nested deeper than {@linkcode JSON_DEPTH_MAX}, before anything parses it. */
function refuseDeepJson(bytes: Uint8Array): void {
  const at = jsonTooDeepAt(bytes);
  if (at >= 0) {
    throw badRequest(
      `Request body nests deeper than ${JSON_DEPTH_MAX} levels of arrays and objects (at byte ${at})`,
    );
  }
}

function sessionOf(
  req: { readonly headers: { get(name: string): string | null } },
): { clientId: ClientId; seq: number } | undefined {
  const clientId = req.headers.get(CLIENT_ID_HEADER);
  const seqText = req.headers.get(SEQ_HEADER);
  if (clientId === null && seqText === null) return undefined;
  if (clientId === null || seqText === null) {
    throw badRequest(`Headers ${CLIENT_ID_HEADER} and ${SEQ_HEADER} go together`);
  }
  if (clientId.length === 0 || clientId.length > 128) {
    throw badRequest(
      `Header ${CLIENT_ID_HEADER} must have 1 to 128 characters: ${JSON.stringify(clientId)}`,
    );
  }
  if (!/^\d{1,15}$/.test(seqText) || Number(seqText) < 1) {
    throw badRequest(`Header ${SEQ_HEADER} must be a positive integer: ${JSON.stringify(seqText)}`);
  }
  return { clientId, seq: Number(seqText) };
}

/** Each server's ids as etcd's uint64s, hashed once (BigInt FNV per request showed in profiles). */
const ids = new WeakMap<RaftServer, { clusterId: bigint; memberId: bigint }>();

/** A member's id as etcd's uint64 (the header's member_id; see src/net/members.ts). */
function memberId64(server: RaftServer, nodeId: string): bigint {
  return server.memberIdOf(nodeId);
}

/** The `header` of an etcd response from `server` (src/net/grpc.ts's own messages use it too). */
export function header(server: RaftServer, revision = server.store.revision): Json {
  let id = ids.get(server);
  if (id === undefined) {
    id = {
      clusterId: id64(server.clusterId),
      memberId: server.memberIdOf(server.nodeId),
    };
    ids.set(server, id);
  }
  return headerJson({ ...id, revision, raftTerm: server.node.term });
}

// ---- Leader handling ---------------------------------------------------------------------------

/**
 * A request as the leader would get it if it is forwarded: the HTTP face's request as it came,
 * the gRPC face's message as the JSON gateway's request (rendered only when it is forwarded).
 */
interface Forwardable {
  readonly method: string;
  /** Path and query, e.g. `/v3/kv/put`. */
  readonly target: string;
  /** Its headers: content type, session headers, {@linkcode FORWARDED_HEADER}. */
  readonly headers: Headers;
  /** Its body. */
  body(): Uint8Array;
  /** Who sent it: a user checked here is vouched for to the leader (src/net/auth.ts). */
  readonly identity?: Identity;
}

/** The HTTP face's request, forwardable as it came. */
function forwardableRequest(req: Request, body: Uint8Array, identity?: Identity): Forwardable {
  return {
    identity,
    method: req.method,
    get target() {
      const url = new URL(req.url);
      return url.pathname + url.search;
    },
    headers: req.headers,
    body: () => body,
  };
}

/**
 * Runs `local` (a write) here if this node leads; otherwise forwards the request to the leader,
 * waiting for one to be elected if needed, until the request timeout.
 */
async function asLeader<T>(
  server: RaftServer,
  req: Forwardable,
  session: { clientId: ClientId; seq: number } | undefined,
  local: () => Promise<T>,
  // A session makes a resent write apply once; an idempotent request is safe to resend anyway.
  resendable = session !== undefined,
): Promise<T | Response> {
  const deadline = server.nowMs() + server.requestTimeoutMs;
  let lastError = "no leader is known";
  while (server.nowMs() < deadline) {
    try {
      return await local();
    } catch (e) {
      if (!(e instanceof NotLeaderError)) throw e;
      lastError = e.message;
    }
    if (req.headers.has(FORWARDED_HEADER)) {
      // Leadership moved while the request was on its way: let the client (or the forwarding
      // node) decide; never forward twice.
      throw new HttpError(503, `${lastError}; the request was already forwarded once`, 14);
    }
    const leader = server.node.leaderId;
    const url = leader === undefined || leader === server.nodeId
      ? undefined
      : server.clientUrlOf(leader);
    if (url === undefined && leader !== undefined && server.memberTable.isRemoved(leader)) {
      // The leader was removed (its entry applied here): it steps down once the change commits,
      // and the others elect a new one. Wait for it, as with no leader.
      lastError = `the leader "${leader}" was removed from the cluster; a new one is being elected`;
      await server.sleep(20);
      continue;
    }
    if (url === undefined && leader !== undefined && leader !== server.nodeId) {
      // Client URLs come from configuration only (never from what a peer claims).
      throw new HttpError(
        503,
        `Node "${server.nodeId}" is not the leader and cannot forward: the leader is "${leader}", ` +
          `whose client URL is unknown here (not in --peer-client-urls); send the request to it`,
        14,
      );
    }
    if (url !== undefined) {
      const forwarded = await forward(
        server,
        url,
        req,
        deadline - server.nowMs(),
        resendable,
      );
      if (forwarded.ok === true) return forwarded.response;
      if (forwarded.ok === "unknown" && !resendable) {
        throw new HttpError(
          504,
          `The leader ${leader} failed while handling the forwarded write (${forwarded.error}); its outcome is unknown`,
          4,
        );
      }
      lastError = forwarded.error;
      await server.sleep(20);
      continue;
    }
    // No leader, or one whose address we do not know yet: wait, never spin.
    await server.sleep(20);
    await server.waitForLeader(Math.max(0, deadline - server.nowMs()));
    if (server.node.leaderId === undefined) break;
  }
  throw new HttpError(503, `No leader could take the request in time: ${lastError}`, 14);
}

/**
 * Deno's fetch sends a request again on a new connection when its pooled connection closes under
 * it, even if the first copy arrived, and then reports the new connection's error. A request
 * that must not apply twice therefore goes over a connection of its own.
 */
const unpooled = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });

async function forward(
  server: RaftServer,
  leaderUrl: string,
  req: Forwardable,
  timeoutMs: number,
  resendable: boolean,
): Promise<{ ok: true; response: Response } | { ok: false | "unknown"; error: string }> {
  const headers = new Headers();
  for (const name of ["content-type", CLIENT_ID_HEADER, SEQ_HEADER]) {
    const v = req.headers.get(name);
    if (v !== null) headers.set(name, v);
  }
  headers.set(FORWARDED_HEADER, server.nodeId);
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : req.body().slice();
  // The token stays here (it is this node's); the user it stood for goes signed.
  const user = req.identity?.user;
  if (user !== undefined) {
    const vouch = server.auth.vouchFor(user, req.method, req.target, body ?? EMPTY_BODY);
    if (vouch === undefined) {
      throw new HttpError(
        503,
        `Auth is enabled and this cluster has no cluster secret, so node "${server.nodeId}" ` +
          `cannot vouch for user ${JSON.stringify(user)} to the leader: send the request to ` +
          `the leader (${leaderUrl})`,
        14,
      );
    }
    for (const [name, value] of Object.entries(vouch)) headers.set(name, value);
  }
  server.counters.forwarded++;
  let sent = false;
  try {
    const res = await server.fetch(leaderUrl + req.target, {
      client: resendable ? undefined : unpooled,
      unpooled: !resendable,
      method: req.method,
      headers,
      body,
    }, timeoutMs);
    sent = true;
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (res.status === 503) {
      // The target was not (or no longer) the leader: try again once we know better.
      return { ok: false, error: new TextDecoder().decode(bytes).slice(0, 200) };
    }
    const out = new Headers({
      "content-type": res.headers.get("content-type") ?? "application/json",
    });
    out.set(FORWARDED_HEADER, server.nodeId);
    out.set(LEADER_HEADER, leaderUrl);
    return { ok: true, response: new Response(bytes, { status: res.status, headers: out }) };
  } catch (e) {
    // A refused connection never carried the request: safe to send again, to the next leader.
    return { ok: !sent && neverSent(e) ? false : "unknown", error: fetchErrorText(e) };
  }
}

/** Waits until a linearizable read may be served here, retrying through leader changes. */
async function linearizable(server: RaftServer): Promise<void> {
  const deadline = server.nowMs() + server.requestTimeoutMs;
  let lastError = "";
  while (true) {
    const remaining = deadline - server.nowMs();
    if (remaining <= 0) break;
    try {
      await server.readBarrier(Math.min(remaining, 1000));
      server.counters.readsLinearizable++;
      return;
    } catch (e) {
      if (e instanceof MemberRemovedError) throw e;
      if (!(e instanceof ReadRefused) && !(e instanceof HttpError && e.status === 503)) throw e;
      lastError = e.message;
    }
    await server.sleep(10);
    await server.waitForLeader(Math.max(0, deadline - server.nowMs()));
  }
  throw new HttpError(503, `The read could not be confirmed by a leader in time: ${lastError}`, 14);
}

function settle(result: ApplyResult): CommandResponse {
  switch (result.status) {
    case "applied":
      return result.response;
    case "rejected":
      // etcd answers a put with an unknown lease with NotFound.
      // (with etcd's exact message, which names neither the lease nor the key).
      if (/^Lease \d+ not found/.test(result.error)) {
        throw new HttpError(404, LEASE_NOT_FOUND_ERROR, 5);
      }
      // etcd's gateway answers ResourceExhausted with 429.
      if (result.error === NOSPACE_ERROR) throw new HttpError(429, result.error, 8);
      if (result.error === COMPACTED_ERROR || result.error === FUTURE_REVISION_ERROR) {
        throw new HttpError(400, result.error, 11);
      }
      throw badRequest(result.error);
    case "stale":
    case "unknownSession":
      throw new HttpError(409, result.error, 9);
  }
}

/** Bytes of key-values rendered per slice of a large answer (see {@linkcode jsonAnswer}). */
const ANSWER_SLICE_BYTES = 1024 * 1024;

/**
 * An answer whose key-value lists may be long. A small one is one JSON text; a large one is
 * streamed in slices of about 1 MiB of key-values with a turn of the event loop between them, so
 * that rendering tens of MiB does not hold heartbeats back (55 MB in one piece stalled the loop
 * 430 ms and cost the leader its term).
 */
function jsonAnswer(
  build: (kvs?: KvsRenderer) => Json,
  render: KvsRenderer | undefined,
  headers?: Record<string, string>,
): Answer {
  const lists: (readonly KeyValue[])[] = [];
  let bytes = 0;
  const skeleton = build((kvs) => {
    lists.push(kvs);
    for (const kv of kvs) bytes += kvResponseBytes(kv.key, kv.value.length);
    return KVS_PLACEHOLDER;
  });
  if (bytes <= ANSWER_SLICE_BYTES) return { json: build(render), headers };
  const parts = JSON.stringify(skeleton).split(JSON.stringify(KVS_PLACEHOLDER));
  if (parts.length !== lists.length + 1) throw new Error("Key-value placeholder out of place");
  async function* pieces(): AsyncGenerator<string> {
    for (const [i, kvs] of lists.entries()) {
      yield parts[i] + "[";
      for (let start = 0; start < kvs.length;) {
        let end = start;
        for (let slice = 0; end < kvs.length && slice < ANSWER_SLICE_BYTES; end++) {
          slice += kvResponseBytes(kvs[end].key, kvs[end].value.length);
        }
        const text = JSON.stringify(kvs.slice(start, end).map(kvJson));
        yield (start > 0 ? "," : "") + text.slice(1, -1);
        start = end;
        await new Promise((r) => setImmediate(r));
      }
      yield "]";
    }
    yield parts[lists.length];
  }
  const it = pieces();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await it.next();
      if (next.done) controller.close();
      else controller.enqueue(lineEncoder.encode(next.value));
    },
    async cancel() {
      await it.return(undefined);
    },
  }, { highWaterMark: 0 });
  return new Response(body, { headers: { "content-type": "application/json", ...headers } });
}

/** Stands for a key-value list in the skeleton of a large answer; no JSON value holds it. */
const KVS_PLACEHOLDER = "\u0000kvs";

/** etcd's ResourceExhausted message for an answer over `bytesMax`. */
function responseTooLarge(bytesMax: number, advice: string): string {
  return `etcdserver: response is too large: its key-values would exceed ${bytesMax} bytes (--max-response-bytes); ${advice}`;
}

/**
 * Refuses to send the answer of an applied write that carries more key-values than this node
 * sends (a delete's previous key-values, a txn's ranges): as etcd, the write stands and the client
 * gets ResourceExhausted. Sums what was gathered; renders nothing.
 */
function refuseLargeAnswer(server: RaftServer, r: CommandResponse): void {
  let bytesMax = server.responseBytesMax;
  let bytes = 0;
  const add = (kvs: readonly KeyValue[] | undefined) => {
    for (const kv of kvs ?? []) bytes += kvResponseBytes(kv.key, kv.value.length);
  };
  const addResponse = (x: CommandResponse) => {
    if (x.type === "put" && x.prevKv !== undefined) add([x.prevKv]);
    if (x.type === "delete") add(x.prevKvs);
    if (x.type === "range") add(x.kvs);
  };
  if (r.type === "txn") {
    if (r.responseTooLarge) bytesMax = Math.min(bytesMax, server.store.applyResponseBytesMax);
    r.responses.forEach(addResponse);
  } else addResponse(r);
  if (bytes > bytesMax || (r.type === "txn" && r.responseTooLarge)) {
    throw new HttpError(
      429,
      responseTooLarge(
        bytesMax,
        `the ${r.type === "txn" ? "transaction" : r.type} was applied at revision ${r.revision}`,
      ),
      8,
    );
  }
}

// ---- etcd v3 -----------------------------------------------------------------------------------

/**
 * An etcd gateway answer: a small one as its object (the HTTP face writes it as JSON text, the
 * gRPC face encodes it as a message), a streamed or forwarded one as a Response.
 */
export type Answer = { readonly json: Json; readonly headers?: Record<string, string> } | Response;

function answer(json: Json): Answer {
  return { json };
}

function asResponse(answer: Answer): Response {
  if (answer instanceof Response) return answer;
  return Response.json(answer.json, { headers: answer.headers });
}

async function etcdRoute(
  server: RaftServer,
  req: Request,
  path: string,
  info?: Deno.ServeHandlerInfo<Deno.NetAddr>,
): Promise<Response> {
  requireMethod(req, ["POST"]);
  if (path === "/v3/lease/keepalive") return await keepAliveRoute(server, req);
  const bytes = await readBody(server, req, requestBodyBytesMax(server.requestBytesMax));
  const identity = identityOf(server, req, bytes, info);
  const body = parseJson(bytes);
  return asResponse(
    await etcdAnswer(server, path, body, {
      request: forwardableRequest(req, bytes, identity),
      session: sessionOf(req),
      bodyBytes: bytes.length,
      identity,
    }),
  );
}

/** The `/metrics` answer (Prometheus text). */
function metricsResponse(server: RaftServer): Response {
  return new Response(metricsText(server), {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

/** The `/health` answer: 200 while the node knows a leader, else 503. */
function healthResponse(server: RaftServer): Response {
  const ok = server.node.leaderId !== undefined;
  return Response.json({ health: String(ok) }, { status: ok ? 200 : 503 });
}

/** A listener of {@linkcode serveMetrics}. */
export interface MetricsListener {
  /** `http://HOST:PORT`. */
  readonly url: string;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * Serves `/metrics` and `/health` on `address`, without auth and without TLS (`--listen-metrics`,
 * as etcd's `--listen-metrics-urls`): for a scraper on a trusted network, while the client port
 * asks for a user once auth is on. Anything else there is 404; only GET and HEAD.
 */
export function serveMetrics(
  server: RaftServer,
  address: { readonly hostname: string; readonly port: number },
): Promise<MetricsListener> {
  return new Promise((resolve, reject) => {
    try {
      const httpServer: Deno.HttpServer = Deno.serve({
        hostname: address.hostname,
        port: address.port,
        onListen: (a) => {
          const host = a.hostname.includes(":") ? `[${a.hostname}]` : a.hostname;
          resolve({ url: `http://${host}:${a.port}`, close: () => httpServer.shutdown() });
        },
        onError: () => new Response("internal error", { status: 500 }),
      }, (req) => {
        const path = new URL(req.url).pathname;
        if (path !== "/metrics" && path !== "/health") {
          return Response.json({
            error: `Unknown path ${JSON.stringify(path)}: the metrics port serves /metrics and ` +
              `/health`,
            code: 5,
          }, { status: 404 });
        }
        if (req.method !== "GET" && req.method !== "HEAD") {
          return Response.json({ error: `Method ${req.method} not allowed`, code: 12 }, {
            status: 405,
            headers: { allow: "GET, HEAD" },
          });
        }
        return path === "/metrics" ? metricsResponse(server) : healthResponse(server);
      });
    } catch (e) {
      reject(e);
    }
  });
}

/** An empty request body. */
const EMPTY_BODY = new Uint8Array(0);

/**
 * Headers for asking another member for its status row on behalf of `identity`: with auth on, the
 * user signed with the cluster secret (tokens are per node), as a forwarded request carries it.
 */
function statusHeaders(server: RaftServer, identity: Identity): Record<string, string> {
  if (!server.store.auth.enabled || identity.user === undefined) return {};
  return server.auth.vouchFor(identity.user, "GET", "/v1/status?local=1", EMPTY_BODY) ?? {};
}

/**
 * Who sent an HTTP request: its `Authorization` token (etcd's gateway takes the bare token; a
 * `Bearer ` before it is allowed), or the user a follower vouched for with a valid signature.
 */
function identityOf(
  server: RaftServer,
  req: Request,
  body: Uint8Array,
  info?: Deno.ServeHandlerInfo<Deno.NetAddr>,
): Identity {
  const url = new URL(req.url);
  return identityOfFields(
    server,
    req.headers,
    req.method,
    url.pathname + url.search,
    body,
    info?.remoteAddr.hostname ?? "unknown",
  );
}

/** {@linkcode identityOf} from a request's parts (the fast path has no Request). */
function identityOfFields(
  server: RaftServer,
  headers: { get(name: string): string | null },
  method: string,
  target: string,
  body: Uint8Array,
  address: string,
): Identity {
  const forwardedUser = server.auth.forwardedUser(headers, method, target, body);
  const token = headers.get("authorization")?.replace(/^Bearer /, "") ?? undefined;
  return { token, forwardedUser, address };
}

/** Throws etcd's error unless `identity` may do what `access` says (src/net/auth.ts). */
function gate(server: RaftServer, identity: Identity | undefined, access: Access): void {
  server.auth.require(identity ?? { address: "in-process" }, server.store.auth, access);
}

/** Headers of a gRPC call's request when it is forwarded to the leader as a gateway request. */
const GRPC_FORWARD_HEADERS: Headers = new Headers({ "content-type": "application/json" });

/**
 * The gRPC face's unary call (src/net/grpc.ts): the gateway route of `path` with an already
 * decoded request, answered as an object (no JSON text, no Request or Response in between, unless
 * it is forwarded to the leader or streamed). The same routes, limits, leader forwarding and
 * errors as the JSON gateway; a failure is thrown as an {@linkcode EtcdCallError}. Counts against
 * `--http-requests-max` like an HTTP request.
 */
export async function etcdCall(
  server: RaftServer,
  path: string,
  message: Json,
  identity?: Identity,
): Promise<Answer> {
  if (!ROUTES.has(path) || STREAMED_ROUTES.has(path)) {
    throw new Error(`etcdCall serves unary gateway routes only: ${JSON.stringify(path)}`);
  }
  const started = server.nowMs();
  const admitted = server.admitRequest();
  try {
    if (!admitted) throw tooManyRequests(server);
    if (objectTooDeep(message, JSON_DEPTH_MAX)) {
      throw badRequest(`Request nests deeper than ${JSON_DEPTH_MAX} levels of messages and lists`);
    }
    let bytes: Uint8Array | undefined;
    return await etcdAnswer(server, path, message, {
      request: {
        method: "POST",
        target: path,
        headers: GRPC_FORWARD_HEADERS,
        body: () => bytes ??= lineEncoder.encode(gatewayJson(message)),
        identity,
      },
      session: undefined,
      bodyBytes: undefined,
      kvs: (kvs) => kvs.map(kvMessage),
      identity,
    });
  } catch (e) {
    throw errorOf(server, e);
  } finally {
    if (admitted) server.releaseRequest();
    observeRequest(server, path, started);
  }
}

/** Gateway routes answered with a stream, which {@linkcode etcdCall} does not serve. */
const STREAMED_ROUTES = new Set([
  "/v3/lease/keepalive",
  "/v3/watch",
  "/v3/maintenance/snapshot",
]);

/** Whether a decoded message nests deeper than `depthMax` objects and arrays (bytes are leaves). */
function objectTooDeep(value: unknown, depthMax: number): boolean {
  if (typeof value !== "object" || value === null || value instanceof Uint8Array) return false;
  if (depthMax === 0) return true;
  for (const v of Object.values(value)) {
    if (typeof v === "object" && v !== null && objectTooDeep(v, depthMax - 1)) return true;
  }
  return false;
}

/** Where an etcd call came from: what forwarding needs, the session, the body's size if known. */
interface CallSource {
  readonly request: Forwardable;
  readonly session: { clientId: ClientId; seq: number } | undefined;
  /** Bytes of the request as received; undefined (gRPC): a write's command is measured. */
  readonly bodyBytes: number | undefined;
  /** How a small answer renders key-values (default: etcd's JSON shape, base64 strings). */
  readonly kvs?: KvsRenderer;
  /** Who sent it (undefined: an in-process caller, subject to the same checks). */
  readonly identity?: Identity;
}

/**
 * The routes of etcd's JSON gateway (all but the keep-alive), with a parsed body. A write refused
 * because the auth state changed after its permissions were checked ("revision of auth store is
 * old") is checked and proposed again, at most {@linkcode AUTH_RECHECKS_MAX} times, as etcd does.
 */
async function etcdAnswer(
  server: RaftServer,
  path: string,
  body: unknown,
  source: CallSource,
): Promise<Answer> {
  for (let attempt = 1;; attempt++) {
    try {
      return await etcdAnswerOnce(server, path, body, source);
    } catch (e) {
      if (!(e instanceof HttpError) || e.message !== AUTH_OLD_REVISION) throw e;
      if (attempt >= AUTH_RECHECKS_MAX) throw e;
    }
  }
}

async function etcdAnswerOnce(
  server: RaftServer,
  path: string,
  body: unknown,
  source: CallSource,
): Promise<Answer> {
  const { request: req, session } = source;
  const identity = source.identity;
  if (path.startsWith("/v3/auth/")) {
    return answer(
      await authAnswer(server.auth, () => server.store.auth, path, body, {
        identity: identity ?? { address: "in-process" },
        linearizable: () => linearizable(server),
        header: () => header(server),
        write: async (make) => {
          const out = await asLeader(server, req, session, async () => {
            const result = await server.propose(
              { type: "auth", op: await make() },
              session,
              identity?.checkedAuthRevision,
            );
            if (result.status === "rejected") throw authRejected(result.error);
            const r = settle(result);
            return { json: { header: header(server, r.revision) } } as Answer;
          });
          return out instanceof Response ? await out.json() : (out as { json: Json }).json;
        },
      }),
    );
  }
  const write = (
    command: PlainCommand,
    render: (r: CommandResponse, kvs?: KvsRenderer) => Json,
  ) => {
    refuseLargeCommand(server, source.bodyBytes ?? Infinity, command);
    return asLeader(server, req, session, async () => {
      const result = await server.propose(command, session, identity?.checkedAuthRevision);
      const response = settle(result);
      refuseLargeAnswer(server, response);
      const headers = result.status === "applied" && result.duplicate
        ? { "raftmeta-duplicate": "true" }
        : undefined;
      return jsonAnswer((kvs) => render(response, kvs), source.kvs, headers);
    });
  };
  switch (path) {
    case "/v3/kv/put": {
      const command = parsePut(body);
      gate(server, identity, { kind: "keys", needs: commandNeeds(command) });
      leasePutGate(server, identity, command.lease);
      return await write(
        command,
        (r) => putJson(header(server, r.revision), r as Extract<CommandResponse, { type: "put" }>),
      );
    }
    case "/v3/kv/deleterange": {
      const command = parseDeleteRange(body);
      gate(server, identity, { kind: "keys", needs: commandNeeds(command) });
      return await write(command, (r, kvs) =>
        deleteJson(
          header(server, r.revision),
          r as Extract<CommandResponse, { type: "delete" }>,
          kvs,
        ));
    }
    case "/v3/kv/txn": {
      const txn = parseTxn(body);
      gate(server, identity, { kind: "keys", needs: commandNeeds(txn.command) });
      for (const op of txnPuts(txn.command)) leasePutGate(server, identity, op.lease);
      // As etcd: a txn that only reads is served on the read path, never through the log. With a
      // session it goes through the log all the same, so the client's seq is recorded.
      if (txn.readOnly && session === undefined) {
        if (txn.serializable) server.counters.readsSerializable++;
        else await linearizable(server);
        // The answer is encoded to JSON or protobuf and dropped: the store's values need no copy.
        const r = server.store.txnRead(txn.command, {
          responseBytesMax: server.responseBytesMax,
          shareValues: true,
        });
        return jsonAnswer((kvs) => txnJson(header(server, r.revision), r, kvs), source.kvs);
      }
      return await write(txn.command, (r, kvs) =>
        txnJson(
          header(server, r.revision),
          r as Extract<CommandResponse, { type: "txn" }>,
          kvs,
        ));
    }
    case "/v3/kv/range": {
      const r = parseRange(body);
      gate(server, identity, { kind: "keys", needs: commandNeeds(r.command) });
      if (r.serializable) server.counters.readsSerializable++;
      else await linearizable(server);
      const c = r.command;
      let result;
      try {
        result = server.store.range(c.range, {
          limit: c.limit,
          keysOnly: c.keysOnly,
          countOnly: c.countOnly,
          sortOrder: c.sortOrder,
          sortTarget: c.sortTarget,
          minModRevision: c.minModRevision,
          maxModRevision: c.maxModRevision,
          minCreateRevision: c.minCreateRevision,
          maxCreateRevision: c.maxCreateRevision,
          revision: requestedRevision(r),
          responseBytesMax: server.responseBytesMax,
          // Encoded to JSON or protobuf and dropped: the store's values need no copy.
          shareValues: true,
        });
      } catch (e) {
        // etcd's gateway answers OutOfRange (a compacted or future revision) with 400, code 11.
        if (e instanceof RevisionUnavailableError) throw new HttpError(400, e.message, 11);
        throw e;
      }
      return jsonAnswer(
        (kvs) => rangeJson(header(server, result.revision), result, kvs),
        source.kvs,
      );
    }
    case "/v3/kv/compaction": {
      const revision = parseCompaction(body);
      gate(server, identity, { kind: "root" });
      return await write({ type: "compact", revision }, (r) => ({
        header: header(server, r.revision),
      }));
    }
    case "/v3/lease/grant": {
      const g = parseLeaseGrant(body);
      // As etcd: a TTL under the minimum (0 and negative ones too) is raised to it.
      const ttlSeconds = Math.max(g.ttlSeconds, leaseTtlSecondsMin(server));
      return await write({ type: "leaseGrant", id: g.id, ttlMs: ttlSeconds * 1000 }, (r) => {
        const grant = r as Extract<CommandResponse, { type: "leaseGrant" }>;
        return {
          header: header(server, grant.revision),
          ID: String(grant.id),
          TTL: String(Math.ceil(grant.ttlMs / 1000)),
        };
      });
    }
    case "/v3/lease/revoke": {
      const { id } = parseLeaseId(body, "LeaseRevokeRequest");
      if (id <= 0) throw leaseNotFound(id);
      // As etcd: revoking a lease deletes its keys, so it needs write on each of them.
      leasePutGate(server, identity, id);
      return await write({ type: "leaseRevoke", id, expired: false }, (r) => {
        const revoke = r as Extract<CommandResponse, { type: "leaseRevoke" }>;
        if (!revoke.found) throw leaseNotFound(id);
        return { header: header(server, revoke.revision) };
      });
    }
    case "/v3/lease/timetolive": {
      const { id, keys } = parseLeaseId(body, "LeaseTimeToLiveRequest", true);
      // etcd answers a time-to-live of an unknown or expired lease with TTL -1, not an error.
      const unknown = () => ({ header: header(server), ...leaseIdJson(id), TTL: "-1" });
      if (id <= 0) return answer(unknown());
      return await atLeaseLeader(server, req, () => {
        const t = server.leaseManager.timeToLive(id);
        const out: Json = {
          header: header(server),
          ID: String(id),
          TTL: String(Math.ceil(t.remainingMs / 1000)),
          grantedTTL: String(Math.ceil(t.ttlMs / 1000)),
        };
        if (keys && t.keys.length > 0) {
          out.keys = t.keys.map((k) => encodeBase64(keyBytes(k)));
        }
        return out;
      }, (e) => e.code === "notFound" ? unknown() : undefined);
    }
    case "/v3/lease/leases": {
      parseEmpty(body, "LeaseLeasesRequest");
      await linearizable(server);
      const leases = server.store.leases().map((l) => ({ ID: String(l.id) }));
      const out: Json = { header: header(server) };
      if (leases.length > 0) out.leases = leases;
      return answer(out);
    }
    case "/v3/watch":
      return watchRoute(server, body, identity);
    case "/v3/maintenance/alarm": {
      const a = parseAlarm(body);
      const render = (alarms: readonly { memberId: string; alarm: string }[]) => {
        const out: Json = { header: header(server) };
        const list = alarms.filter((m) => a.alarm === "NONE" || m.alarm === a.alarm)
          .filter((m) =>
            a.action === "GET" || a.memberId === 0n || memberId64(server, m.memberId) === a.memberId
          );
        // etcd's gateway omits an empty list.
        if (list.length > 0) {
          out.alarms = list.map((m) => ({
            memberID: memberId64(server, m.memberId).toString(),
            alarm: m.alarm,
          }));
        }
        return out;
      };
      if (a.action === "GET") {
        await linearizable(server);
        return answer(render(server.store.alarms));
      }
      gate(server, identity, { kind: "root" });
      let memberId = "";
      if (a.memberId !== 0n) {
        memberId = server.node.voters.find((v) => memberId64(server, v) === a.memberId) ?? "";
        // (learners hold no quota alarm of their own: etcd's alarms name voters)
        if (memberId === "") {
          throw badRequest(`Member ${a.memberId} is not a member of this cluster`);
        }
      } else if (a.action === "ACTIVATE") {
        throw badRequest(`Field "memberID" of AlarmRequest must name a member to activate`);
      }
      return await write({
        type: "alarm",
        action: a.action === "ACTIVATE" ? "activate" : "deactivate",
        memberId,
        alarm: "NOSPACE",
      }, (r) => render((r as Extract<CommandResponse, { type: "alarm" }>).alarms));
    }
    case "/v3/maintenance/status": {
      parseEmpty(body, "StatusRequest");
      const s = server.localStatus();
      // etcd 3.4's gateway names StatusResponse's fields in camelCase (its other messages are
      // snake_case); dbSize in bytes, here the store's size as the quota counts it.
      const dbBytes = String(server.store.backendBytes);
      const out: Json = { header: header(server), version: ETCD_VERSION, dbSize: dbBytes };
      if (s.leader !== null) out.leader = server.memberIdOf(s.leader).toString();
      out.raftIndex = String(s.lastLogIndex);
      out.raftTerm = String(s.term);
      out.raftAppliedIndex = String(s.lastApplied);
      out.dbSizeInUse = dbBytes;
      return answer(out);
    }
    case "/v3/cluster/member/list": {
      parseEmpty(body, "MemberListRequest");
      // Linearizable, as etcd 3.5's default: a member asked right after a change (sent to
      // another member) answers with it applied, not with the configuration it had applied then.
      await linearizable(server);
      return answer(
        memberListJson(server, (m) => m.clientUrl === null ? [] : [m.clientUrl]),
      );
    }
    case "/v3/cluster/member/add":
    case "/v3/cluster/member/remove":
    case "/v3/cluster/member/update":
    case "/v3/cluster/member/promote":
    case "/v3/maintenance/transfer-leadership": {
      const r = parseMemberRequest(path, body);
      // As etcd: changing the membership or moving leadership needs the root role.
      gate(server, identity, { kind: "root" });
      const clientUrls = (id: string) => {
        // gRPC (no body bytes) lists gRPC URLs as client URLs, as MemberList does.
        const url = source.bodyBytes === undefined ? server.grpcUrlOf(id) : server.clientUrlOf(id);
        return url === undefined ? [] : [url];
      };
      return await asLeader(server, req, undefined, async () =>
        answer(
          await runMemberRequest(server, r, {
            header: () => {
              const h = header(server);
              delete h.revision;
              return h;
            },
            members: () => memberListJson(server, (m) => clientUrls(m.id)).members as Json[],
            clientUrls,
          }),
        ));
    }
    case "/v3/maintenance/hash": {
      parseEmpty(body, "HashRequest");
      gate(server, identity, { kind: "root" });
      const h = storeHash(server.store, 0);
      return answer({ header: header(server, h.revision), hash: h.hash });
    }
    case "/v3/maintenance/defragment":
      // raftmeta's store lives in memory: there is nothing to defragment. etcd answers {}.
      parseEmpty(body, "DefragmentRequest");
      gate(server, identity, { kind: "root" });
      return answer({});
    case "/v3/maintenance/snapshot":
      parseEmpty(body, "SnapshotRequest");
      gate(server, identity, { kind: "root" });
      return snapshotRoute(server);
  }
  throw new HttpError(404, `Unknown path ${JSON.stringify(path)}`, 5);
}

/** A member of the cluster as {@linkcode RaftServer.members} lists it. */
type Member = ReturnType<RaftServer["members"]>[number];

/**
 * etcd's MemberListResponse: each member's id (the header's member_id hash), name (its node id),
 * peer URL and `clientURLs` (the gateway's: client URLs; gRPC: gRPC URLs). As etcd's, the
 * header carries no revision.
 */
export function memberListJson(server: RaftServer, clientUrls: (m: Member) => string[]): Json {
  const h = header(server);
  delete h.revision;
  return {
    header: h,
    members: server.members().map((m) => ({
      ID: m.memberId.toString(),
      name: m.id,
      peerURLs: m.peerUrl === null ? [] : [m.peerUrl],
      clientURLs: clientUrls(m),
      ...(m.isLearner ? { isLearner: true } : {}),
    })),
  };
}

/** Key-values hashed per range call (the store's `rangeKvsMax` bounds each call anyway). */
const HASH_PAGE_KVS = 1000;

/**
 * A CRC-32C of the key-values of `store` at `revision` (0: the latest), for etcd's Hash and
 * HashKV: deterministic, so every node that has applied the same revision gives the same hash.
 * Covers the revision and, in key order, each key with its value, create and mod revisions,
 * version and lease. It is raftmeta's own hash: etcd hashes its bolt database, so the numbers of
 * the two never match. Throws the store's error for a compacted or future revision.
 */
export function storeHash(
  store: RaftServer["store"],
  revision: number,
): { hash: number; revision: number; compactRevision: number } {
  const frozen = store.freeze();
  const compactRevision = frozen.compactRevision;
  frozen.release();
  const at = revision === 0 ? store.revision : revision;
  const numbers = new DataView(new ArrayBuffer(8 * 6));
  let crc = 0;
  const putNumbers = (...xs: number[]) => {
    xs.forEach((x, i) => numbers.setFloat64(8 * i, x));
    crc = crc32cUpdate(crc, new Uint8Array(numbers.buffer, 0, 8 * xs.length));
  };
  putNumbers(at);
  let range: KeyRange = { prefix: "" };
  for (;;) {
    const page = store.range(range, { revision: at, limit: HASH_PAGE_KVS });
    for (const kv of page.kvs) {
      const key = keyBytes(kv.key);
      putNumbers(key.length, kv.value.length, kv.createRevision, kv.modRevision, kv.version);
      crc = crc32cUpdate(crc, key);
      crc = crc32cUpdate(crc, kv.value);
      putNumbers(kv.lease ?? 0);
    }
    if (!page.more || page.kvs.length === 0) break;
    range = { fromKey: page.kvs[page.kvs.length - 1].key + "\u0000" };
  }
  return { hash: crc >>> 0, revision: at, compactRevision };
}

/** Snapshot bytes per message of `/v3/maintenance/snapshot` (and gRPC Snapshot): 64 KiB. */
export const SNAPSHOT_MESSAGE_BYTES = 64 * 1024;

/**
 * `POST /v3/maintenance/snapshot`, as etcd's gateway: newline-delimited
 * `{"result": {"remaining_bytes", "blob"}}` messages, the blobs joined being a snapshot file
 * ({@linkcode frameSnapshotFile}: this node's store snapshot in raftmeta's format, framed the way
 * etcdctl checks). The store is frozen at once and encoded a chunk per event-loop turn; the whole
 * file is held until sent, so that `remaining_bytes` is exact.
 */
async function snapshotRoute(server: RaftServer): Promise<Response> {
  const frozen = server.store.freeze();
  const chunks: Uint8Array[] = [];
  try {
    for (const chunk of encodeStoreSnapshotChunks(frozen, { chunkBytes: SNAPSHOT_MESSAGE_BYTES })) {
      chunks.push(chunk);
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    frozen.release();
  }
  const file = await frameSnapshotFile(chunks);
  chunks.length = 0;
  // As etcd: `remaining_bytes` counts the snapshot without its SHA-256, which comes last, alone.
  const body = file.length - 32;
  let at = 0;
  const out = messageStream(() => {
    if (at >= file.length) return Promise.resolve(null);
    const blob = file.subarray(
      at,
      at < body ? Math.min(body, at + SNAPSHOT_MESSAGE_BYTES) : file.length,
    );
    at += blob.length;
    const result: Json = {};
    if (at < body) result.remaining_bytes = String(body - at);
    result.blob = encodeBase64(blob);
    return Promise.resolve(ndjson(result));
  });
  return new Response(out, { headers: { "content-type": "application/json" } });
}

/**
 * As etcd's checkLeasePuts: a put that attaches a key to lease `id`, and a revoke of it, need
 * write permission on every key the lease already holds.
 */
function leasePutGate(server: RaftServer, identity: Identity | undefined, id?: number): void {
  if (!id || !server.store.auth.enabled) return;
  const keys = server.store.lease(id)?.keys ?? [];
  if (keys.length === 0) return;
  gate(server, identity, {
    kind: "keys",
    needs: { reads: [], writes: keys.map((key) => ({ key })) },
  });
}

/** The puts of `txn`, nested transactions included. */
function txnPuts(txn: TxnCommand): PutCommand[] {
  return [...txn.success, ...txn.failure].flatMap((op) =>
    op.type === "put" ? [op] : op.type === "txn" ? txnPuts(op) : []
  );
}

/** etcd's error for a put or txn naming a lease that does not exist (gRPC NotFound). */
const LEASE_NOT_FOUND_ERROR = "etcdserver: requested lease not found";

function leaseNotFound(id: number): HttpError {
  return new HttpError(404, `etcdserver: requested lease not found (lease ${id})`, 5);
}

/** A lease's `ID` field as etcd's gateway renders it: left out when 0. */
function leaseIdJson(id: number): Json {
  return id === 0 ? {} : { ID: String(id) };
}

/**
 * The shortest lease TTL granted, in seconds: 1.5 × the longest election timeout, rounded up,
 * as etcd's minimum (`minTTL`) is 1.5 × its election timeout, so that a lease outlives a leader
 * election. 1 s with the default timeouts.
 */
export function leaseTtlSecondsMin(server: RaftServer): number {
  return Math.max(1, Math.ceil(1.5 * server.node.config.electionTimeoutMaxMs / 1000));
}

/**
 * Runs a lease operation that only the leader's lease manager can answer (keep-alive,
 * time-to-live): here after the leader confirms its leadership with a quorum (a deposed leader
 * must not extend a lease), or forwarded to the leader.
 */
function atLeaseLeader(
  server: RaftServer,
  req: Forwardable,
  run: () => Json,
  onError: (e: LeaseError) => Json | undefined = () => undefined,
  extendsLease = false,
): Promise<Answer> {
  return asLeader<Answer>(server, req, undefined, async () => {
    if (server.node.role !== "Leader") {
      throw new NotLeaderError(server.nodeId, server.node.leaderId);
    }
    // The fault point (tests only) lets a keep-alive extend a lease without the confirmation.
    if (!(extendsLease && server.keepAliveBeforeBarrier)) await server.readBarrier();
    try {
      return answer(run());
    } catch (e) {
      if (!(e instanceof LeaseError)) throw e;
      if (e.code === "notLeader") throw new NotLeaderError(server.nodeId, server.node.leaderId);
      const json = onError(e);
      if (json !== undefined) return answer(json);
      throw new HttpError(404, `etcdserver: requested lease not found (${e.message})`, 5);
    }
  }, true); // a keep-alive or time-to-live done twice does no harm
}

// ---- Lease keep-alive ----------------------------------------------------------------------------

/**
 * `POST /v3/lease/keepalive` in its two forms. A body of one JSON object (what curl sends) is one
 * keep-alive, answered with one `{"result": …}` object, or a 404 when the lease is gone. A body of
 * newline-delimited JSON objects — streamed (chunked, no content-length), as etcd's gateway serves
 * its `LeaseKeepAlive` stream — is answered line for line: each request line gets one result line,
 * in order, as soon as it is answered (see {@linkcode keepAliveStream}).
 */
async function keepAliveRoute(server: RaftServer, req: Request): Promise<Response> {
  if (req.body !== null && req.headers.get("content-length") === null) {
    return keepAliveStream(server, req, bodyLines(req.body, server.requestBytesMax));
  }
  const bytes = await readBody(server, req);
  let text: string;
  try {
    text = textDecoder.decode(bytes);
  } catch {
    throw badRequest("Request body is not UTF-8");
  }
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (lines.length > 1) {
    refuseDeepJson(bytes);
    try {
      JSON.parse(text); // one object spread over several lines
    } catch {
      return keepAliveStream(server, req, lines.values());
    }
  }
  return await keepAliveOnce(server, req, bytes, parseJson(bytes));
}

/** One keep-alive, at the leader (forwarded there from a follower). */
async function keepAliveOnce(
  server: RaftServer,
  req: Request,
  bytes: Uint8Array,
  body: unknown,
): Promise<Response> {
  const { id } = parseLeaseId(body, "LeaseKeepAliveRequest");
  // As etcd: a keep-alive of an unknown or expired lease is answered, with TTL 0 (left out).
  const unknown = () => ({ result: { header: header(server), ...leaseIdJson(id) } });
  if (id <= 0) return Response.json(unknown());
  return asResponse(
    await atLeaseLeader(
      server,
      forwardableRequest(req, bytes),
      () => {
        const { ttlMs } = server.leaseManager.keepAlive(id);
        return {
          result: { header: header(server), ID: String(id), TTL: String(Math.ceil(ttlMs / 1000)) },
        };
      },
      (e) => e.code === "notFound" ? unknown() : undefined,
      true,
    ),
  );
}

/** The HTTP reason phrase etcd's gateway puts in a stream's error line. */
const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  413: "Payload Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/**
 * The streaming form: reads one request line, answers it, then reads the next, so a client that
 * does not read its answers stops being read (nothing piles up here). Answers as etcd's
 * `LeaseKeepAlive` stream: `{"result": {header, ID, TTL}}`, with `TTL` left out (0) for a lease
 * that is unknown or expired. Any other failure (a malformed line, no leader in time) is sent as one
 * `{"error": {grpc_code, http_code, message, http_status}}` line (grpc-gateway's shape), and the
 * stream ends; the client opens a new one (perhaps on another node).
 */
function keepAliveStream(
  server: RaftServer,
  req: Request,
  lines: Iterator<string> | AsyncIterator<string>,
): Response {
  let ended = false;
  const out = messageStream(async () => {
    if (ended) return null;
    let res: Response;
    try {
      const next = await lines.next();
      if (next.done) return null;
      const bytes = lineEncoder.encode(next.value);
      res = await keepAliveOnce(server, req, bytes, parseJson(bytes));
    } catch (e) {
      res = errorResponse(server, e);
    }
    // deno-lint-ignore no-explicit-any
    const json: any = await res.json().catch(() => ({}));
    if (res.ok) return lineEncoder.encode(JSON.stringify(json) + "\n");
    const error = {
      grpc_code: json.code ?? 13,
      http_code: res.status,
      message: json.error ?? `HTTP ${res.status}`,
      http_status: STATUS_TEXT[res.status] ?? "Error",
    };
    ended = true;
    await lines.return?.();
    return lineEncoder.encode(JSON.stringify({ error }) + "\n");
  }, async () => {
    await lines.return?.();
  });
  return new Response(out, { headers: { "content-type": "application/json" } });
}

/** The non-empty lines of a streamed request body; a line longer than `max` bytes is refused. */
async function* bodyLines(body: ReadableStream<Uint8Array>, max: number): AsyncGenerator<string> {
  const reader = body.pipeThrough(new TextDecoderStream("utf-8", { fatal: true })).getReader();
  let rest = "";
  try {
    for (;;) {
      let r;
      try {
        r = await reader.read();
      } catch {
        throw badRequest("Request body is not UTF-8, or the connection broke");
      }
      if (r.done) break;
      const parts = (rest + r.value).split("\n");
      rest = parts.pop()!;
      for (const line of parts) if (line.trim() !== "") yield line;
      if (rest.length > max) {
        throw new HttpError(413, `Request line is too long: over ${max} bytes`, 8);
      }
    }
    if (rest.trim() !== "") yield rest;
  } finally {
    await reader.cancel().catch(() => {});
  }
}

// ---- Watch -------------------------------------------------------------------------------------

const lineEncoder = new TextEncoder();

function ndjson(result: Json): Uint8Array {
  return lineEncoder.encode(JSON.stringify({ result }) + "\n");
}

/**
 * `POST /v3/watch`: one watch per request, answered as etcd's gateway does — a stream of
 * newline-delimited JSON objects `{"result": WatchResponse}`: first `created`, then events,
 * progress notifications (when asked for) and at most one `canceled` at the end. Served from this
 * node's store (a follower's watch follows what it has applied). Closing the connection cancels.
 */
function watchRoute(server: RaftServer, body: unknown, identity?: Identity): Response {
  let options = parseWatchCreate(body);
  if (server.watchStartSkips && (options.startRevision ?? 0) > 0) {
    options = { ...options, startRevision: options.startRevision! + 1 };
  }
  let stream: WatchStream;
  const headers = { "content-type": "application/json" };
  // As etcd: a watch the user may not read is created and canceled at once, saying why.
  const refusal = watchRefusal(server, identity, options.range);
  if (refusal !== undefined) {
    const h = header(server);
    const messages = [
      ndjson({ header: h, watch_id: "-1", created: true, canceled: true, cancel_reason: refusal }),
    ];
    return new Response(messageStream(() => Promise.resolve(messages.shift() ?? null)), {
      headers,
    });
  }
  try {
    stream = server.watchHub.watch(options);
  } catch (e) {
    if (e instanceof WatchError) throw new HttpError(429, e.message, 8);
    if (!(e instanceof CompactedError)) throw e;
    // As etcd: the watch is created, then canceled naming the compacted revision.
    const h = header(server);
    const messages = [
      ndjson({ header: h, created: true }),
      ndjson({
        header: h,
        compact_revision: String(e.oldestRevision - 1),
        canceled: true,
        cancel_reason: e.message,
      }),
    ];
    return new Response(messageStream(() => Promise.resolve(messages.shift() ?? null)), {
      headers,
    });
  }
  const watchId = String(stream.id);
  let created = false;
  let ended = false;
  const out = messageStream(async () => {
    if (!created) {
      created = true;
      return ndjson({ header: header(server), created: true, watch_id: watchId });
    }
    if (ended) return null;
    const r = await stream.next();
    if (r.done) return null;
    const v = r.value;
    // A permission revoked (or auth enabled) while the watch runs ends it before the next event.
    const revoked = watchRefusal(server, identity, options.range);
    if (revoked !== undefined) {
      ended = true;
      stream.cancel();
      return ndjson({
        header: header(server),
        watch_id: watchId,
        canceled: true,
        cancel_reason: revoked,
      });
    }
    if (v.kind === "events") {
      return ndjson({ header: header(server), watch_id: watchId, events: v.events.map(eventJson) });
    }
    if (v.kind === "progress") return ndjson({ header: header(server), watch_id: watchId });
    const result: Json = {
      header: header(server),
      watch_id: watchId,
      canceled: true,
      cancel_reason: v.reason,
    };
    if (v.compactRevision !== undefined) result.compact_revision = String(v.compactRevision);
    ended = true;
    return ndjson(result);
  }, () => stream.cancel());
  return new Response(out, { headers });
}

/** Why `identity` may not watch `range` (etcd's cancel reason), or undefined when it may. */
function watchRefusal(
  server: RaftServer,
  identity: Identity | undefined,
  range: KeyRange,
): string | undefined {
  try {
    gate(server, identity, { kind: "keys", needs: { reads: [range], writes: [] } });
    return undefined;
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    const code = e.message === PERMISSION_DENIED
      ? "PermissionDenied"
      : e.message === USER_EMPTY
      ? "InvalidArgument"
      : "Unauthenticated";
    return `rpc error: code = ${code} desc = ${e.message}`;
  }
}

/**
 * A response body of messages, one per HTTP chunk as etcd's gateway writes them (clients parse
 * chunk by chunk). Deno's server joins whatever was enqueued before it writes, so the next message
 * is asked for only after a turn of the event loop (`setImmediate`), in which the last one is
 * written as its own chunk. `next` returns null at the end.
 */
function messageStream(
  next: () => Promise<Uint8Array | null>,
  cancel?: () => void | Promise<void>,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const message = await next();
      if (message === null) return controller.close();
      controller.enqueue(message);
      await new Promise((r) => setImmediate(r));
    },
    cancel,
  }, { highWaterMark: 0 });
}

// ---- REST --------------------------------------------------------------------------------------

const textDecoder = new TextDecoder("utf-8", { fatal: true });

function restKvJson(kv: KeyValue): Json {
  const out: Json = {
    key: kv.key,
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
  };
  try {
    out.value = textDecoder.decode(kv.value);
  } catch {
    out.valueBase64 = btoa(String.fromCharCode(...kv.value));
  }
  return out;
}

function flag(url: URL, name: string): boolean {
  const v = url.searchParams.get(name);
  return v !== null && v !== "false" && v !== "0";
}

async function restKv(
  server: RaftServer,
  req: Request,
  url: URL,
  info?: Deno.ServeHandlerInfo<Deno.NetAddr>,
): Promise<Response> {
  requireMethod(req, ["GET", "PUT", "DELETE"]);
  for (const name of url.searchParams.keys()) {
    if (!["prefix", "serializable", "prev"].includes(name)) {
      throw badRequest(`Unknown query parameter ${JSON.stringify(name)}`);
    }
  }
  let key: string;
  try {
    key = decodeURIComponent(url.pathname.slice("/v1/kv/".length));
  } catch {
    throw badRequest(`Key in the path is not valid percent-encoding: ${url.pathname}`);
  }
  const prefix = flag(url, "prefix");
  if (key === "" && !prefix) {
    throw badRequest("Key is missing: use /v1/kv/<key>, or /v1/kv/?prefix for every key");
  }
  const range: KeyRange = prefix ? { prefix: key } : { key };
  const prev = flag(url, "prev");
  const body = req.method === "GET" || req.method === "HEAD"
    ? new Uint8Array()
    : await readBody(server, req);
  const identity = identityOf(server, req, body, info);
  gate(server, identity, {
    kind: "keys",
    needs: req.method === "PUT"
      ? { reads: prev ? [range] : [], writes: [range] }
      : req.method === "DELETE"
      ? { reads: prev ? [range] : [], writes: [range] }
      : { reads: [range], writes: [] },
  });
  if (req.method === "GET" || req.method === "HEAD") {
    if (flag(url, "serializable")) server.counters.readsSerializable++;
    else await linearizable(server);
    const result: RangeResponse = server.store.range(range, {
      responseBytesMax: server.responseBytesMax,
    });
    if (prefix) {
      return Response.json({
        revision: result.revision,
        count: result.count,
        more: result.more,
        kvs: result.kvs.map(restKvJson),
      });
    }
    if (result.kvs.length === 0) {
      return Response.json(
        {
          error: `Key not found: ${JSON.stringify(key)}`,
          code: 5,
          message: `Key not found: ${JSON.stringify(key)}`,
          revision: result.revision,
        },
        { status: 404 },
      );
    }
    return Response.json({ ...restKvJson(result.kvs[0]), revision: result.revision });
  }
  const session = sessionOf(req);
  if (req.method === "PUT") {
    if (prefix) throw badRequest("PUT takes one key, not ?prefix");
    const command: PlainCommand = { type: "put", key, value: body, prevKv: prev };
    return await asLeader(server, forwardableRequest(req, body, identity), session, async () => {
      const r = settle(await server.propose(command, session, identity.checkedAuthRevision));
      refuseLargeAnswer(server, r);
      if (r.type !== "put") throw new Error(`Unexpected response ${r.type}`);
      const out: Json = { revision: r.revision };
      if (r.prevKv !== undefined) out.prevKv = restKvJson(r.prevKv);
      return Response.json(out);
    });
  }
  if (body.length > 0) throw badRequest("DELETE takes no body");
  const command: PlainCommand = { type: "delete", range, prevKv: prev };
  return await asLeader(server, forwardableRequest(req, body, identity), session, async () => {
    const r = settle(await server.propose(command, session, identity.checkedAuthRevision));
    refuseLargeAnswer(server, r);
    if (r.type !== "delete") throw new Error(`Unexpected response ${r.type}`);
    const out: Json = { revision: r.revision, deleted: r.deleted };
    if (r.prevKvs !== undefined) out.prevKvs = r.prevKvs.map(restKvJson);
    return Response.json(out);
  });
}

/** The cluster as one node sees it: its own row and every peer's, and the leader's progress. */
async function statusRoute(
  server: RaftServer,
  url: URL,
  identity: Identity,
): Promise<Response> {
  for (const name of url.searchParams.keys()) {
    if (name !== "local") throw badRequest(`Unknown query parameter ${JSON.stringify(name)}`);
  }
  const self = server.localStatus();
  if (flag(url, "local")) return Response.json({ node: self });
  const members = server.members();
  const rows: (LocalStatus | { id: string; status: string; clientUrl: string | null })[] = [];
  await Promise.all(members.map(async (m, i) => {
    if (m.id === server.nodeId) {
      rows[i] = self;
      return;
    }
    if (m.clientUrl === null) {
      rows[i] = { id: m.id, status: "client URL not configured", clientUrl: null };
      return;
    }
    try {
      const res = await server.fetch(
        `${m.clientUrl}/v1/status?local=1`,
        { headers: statusHeaders(server, identity) },
        500,
      );
      const body = await res.json();
      rows[i] = body?.node ?? { id: m.id, status: `error ${res.status}`, clientUrl: m.clientUrl };
    } catch {
      rows[i] = { id: m.id, status: "unreachable", clientUrl: m.clientUrl };
    }
  }));
  const leaderRow = rows.find((r) => "role" in r && r.role === "Leader" && r.term >= self.term) as
    | LocalStatus
    | undefined;
  const progress = (leaderRow?.progress ?? []).map((p) => ({ leader: leaderRow!.id, ...p }));
  return Response.json({
    clusterId: server.clusterId,
    answeredBy: server.nodeId,
    leader: self.leader,
    voters: self.voters,
    learners: self.learners,
    pendingChange: self.pendingChange,
    rows,
    progress,
    members: members.map((m) => ({ ...m, memberId: m.memberId.toString() })),
  });
}

// ---- Metrics -----------------------------------------------------------------------------------

const ROLE_NUMBER = { Follower: 0, PreCandidate: 1, Candidate: 2, Leader: 3 } as const;

function metricsText(server: RaftServer): string {
  const s = server.localStatus();
  const c = server.counters;
  const t = server.transport?.stats;
  const stalls = server.loopStalls.stalls;
  const latency: string[] = [];
  for (const [route, h] of [...server.requestSeconds].sort()) {
    latency.push(...h.lines("raftmeta_http_request_duration_seconds", `route="${route}"`));
  }
  return renderMetrics([
    {
      name: "raftmeta_term",
      help: "Current Raft term.",
      type: "gauge",
      samples: [`raftmeta_term ${s.term}`],
    },
    {
      name: "raftmeta_role",
      help: "Raft role: 0 Follower, 1 PreCandidate, 2 Candidate, 3 Leader.",
      type: "gauge",
      samples: [`raftmeta_role ${ROLE_NUMBER[s.role]}`],
    },
    {
      name: "raftmeta_is_leader",
      help: "1 when this node is the leader.",
      type: "gauge",
      samples: [`raftmeta_is_leader ${s.role === "Leader" ? 1 : 0}`],
    },
    {
      name: "raftmeta_voters",
      help: "Voters in the configuration in force on this node.",
      type: "gauge",
      samples: [`raftmeta_voters ${s.voters.length}`],
    },
    {
      name: "raftmeta_learners",
      help: "Learners (non-voting members) in the configuration in force on this node.",
      type: "gauge",
      samples: [`raftmeta_learners ${s.learners.length}`],
    },
    {
      name: "raftmeta_membership_change_pending",
      help: "1 while a membership change is appended but not committed.",
      type: "gauge",
      samples: [`raftmeta_membership_change_pending ${s.pendingChange === null ? 0 : 1}`],
    },
    {
      name: "raftmeta_commit_index",
      help: "Highest log index known committed.",
      type: "gauge",
      samples: [`raftmeta_commit_index ${s.commitIndex}`],
    },
    {
      name: "raftmeta_last_applied",
      help: "Highest log index applied to the store.",
      type: "gauge",
      samples: [`raftmeta_last_applied ${s.lastApplied}`],
    },
    {
      name: "raftmeta_last_log_index",
      help: "Index of the last log entry.",
      type: "gauge",
      samples: [`raftmeta_last_log_index ${s.lastLogIndex}`],
    },
    {
      name: "raftmeta_store_revision",
      help: "Store revision.",
      type: "gauge",
      samples: [`raftmeta_store_revision ${s.revision}`],
    },
    {
      name: "raftmeta_store_keys",
      help: "Number of keys.",
      type: "gauge",
      samples: [`raftmeta_store_keys ${s.keys}`],
    },
    {
      name: "raftmeta_watchers",
      help: "Watchers on this node.",
      type: "gauge",
      samples: [`raftmeta_watchers ${server.watchHub.size}`],
    },
    {
      name: "raftmeta_leases",
      help: "Leases in the store.",
      type: "gauge",
      samples: [`raftmeta_leases ${server.store.leaseCount}`],
    },
    {
      name: "raftmeta_proposals_total",
      help: "Proposals appended by this node as leader.",
      type: "counter",
      samples: [`raftmeta_proposals_total ${c.proposals}`],
    },
    {
      name: "raftmeta_proposals_failed_total",
      help: "Proposals that failed (leadership lost, timeout, refused).",
      type: "counter",
      samples: [`raftmeta_proposals_failed_total ${c.proposalsFailed}`],
    },
    {
      name: "raftmeta_leader_changes_total",
      help: "Leader changes seen by this node.",
      type: "counter",
      samples: [`raftmeta_leader_changes_total ${c.leaderChanges}`],
    },
    {
      name: "raftmeta_auth_failed_logins_total",
      help: "Logins refused for a wrong user name or password (no names or secrets as labels).",
      type: "counter",
      samples: [`raftmeta_auth_failed_logins_total ${server.auth.failedLogins}`],
    },
    {
      name: "raftmeta_forwarded_requests_total",
      help: "Requests forwarded to the leader.",
      type: "counter",
      samples: [`raftmeta_forwarded_requests_total ${c.forwarded}`],
    },
    {
      name: "raftmeta_bad_requests_total",
      help: "Requests answered with a 4xx.",
      type: "counter",
      samples: [`raftmeta_bad_requests_total ${c.badRequests}`],
    },
    {
      name: "raftmeta_http_fast_requests_total",
      help: "etcd gateway calls answered on the client port's fast path (whole small bodies).",
      type: "counter",
      samples: [`raftmeta_http_fast_requests_total ${c.fastRequests}`],
    },
    {
      name: "raftmeta_reads_total",
      help: "Reads served, by kind.",
      type: "counter",
      samples: [
        `raftmeta_reads_total{kind="linearizable"} ${c.readsLinearizable}`,
        `raftmeta_reads_total{kind="serializable"} ${c.readsSerializable}`,
      ],
    },
    {
      name: "raftmeta_wal_saves_total",
      help: "Ready batches saved to the WAL (one fdatasync each).",
      type: "counter",
      samples: [`raftmeta_wal_saves_total ${c.saves}`],
    },
    {
      name: "raftmeta_peer_messages_sent_total",
      help: "Raft messages written to peers.",
      type: "counter",
      samples: [`raftmeta_peer_messages_sent_total ${t?.messagesSent ?? 0}`],
    },
    {
      name: "raftmeta_peer_messages_received_total",
      help: "Raft messages received from peers.",
      type: "counter",
      samples: [`raftmeta_peer_messages_received_total ${t?.messagesReceived ?? 0}`],
    },
    {
      name: "raftmeta_peer_messages_dropped_total",
      help: "Raft messages dropped (slow or unreachable peer).",
      type: "counter",
      samples: [`raftmeta_peer_messages_dropped_total ${t?.messagesDropped ?? 0}`],
    },
    {
      name: "raftmeta_peer_connections_refused_total",
      help: "Peer connections closed for a failed handshake or a malformed frame.",
      type: "counter",
      samples: [`raftmeta_peer_connections_refused_total ${t?.connectionsRefused ?? 0}`],
    },
    {
      name: "raftmeta_peer_connections_over_limit_total",
      help: "Peer connections closed at once: too many were still in their handshake.",
      type: "counter",
      samples: [`raftmeta_peer_connections_over_limit_total ${t?.connectionsOverLimit ?? 0}`],
    },
    {
      name: "raftmeta_event_loop_stall_ms",
      help: "Worst lateness of a 10 ms timer since start, ms: heartbeats waited that long.",
      type: "gauge",
      samples: [`raftmeta_event_loop_stall_ms ${stalls.stallMsMax}`],
    },
    {
      name: "raftmeta_event_loop_stall_recent_ms",
      help: "Worst lateness of a 10 ms timer in the last 10 to 20 s, ms.",
      type: "gauge",
      samples: [`raftmeta_event_loop_stall_recent_ms ${stalls.stallMsRecentMax}`],
    },
    {
      name: "raftmeta_event_loop_stall_ms_total",
      help: "Sum of the lateness of a 10 ms timer since start, ms.",
      type: "counter",
      samples: [`raftmeta_event_loop_stall_ms_total ${stalls.stallMsTotal}`],
    },
    {
      name: "raftmeta_wal_fsync_duration_seconds",
      help: "Latency of WAL saves (one fdatasync each).",
      type: "histogram",
      samples: server.walSyncSeconds.lines("raftmeta_wal_fsync_duration_seconds"),
    },
    {
      name: "raftmeta_http_request_duration_seconds",
      help: "Latency of HTTP requests by route.",
      type: "histogram",
      samples: latency,
    },
  ]);
}
