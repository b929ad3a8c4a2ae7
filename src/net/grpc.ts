/**
 * etcd's gRPC API (etcd 3.4's `etcdserverpb` services) on a second client port, so that etcdctl
 * and etcd's client libraries work unchanged. One code path: each gRPC request is turned into the
 * JSON gateway's request (proto-loader's objects with snake_case names and 64-bit integers as
 * decimal strings are the gateway's JSON shape; bytes stay bytes, which the gateway's parsers
 * take as they take base64), answered by the gateway's routes (src/net/http.ts: leader forwarding,
 * linearizable reads, limits and errors included): a unary call hands its decoded message to
 * `etcdCall` and encodes the object it answers with, with no JSON text in between; the streams
 * (Watch, LeaseKeepAlive, Snapshot) go through the node's HTTP handler. Errors carry the gateway's
 * gRPC code and message.
 *
 * Loaded only when a node is started with `--listen-grpc` (src/net/server.ts imports it on
 * demand): its npm packages stay out of mod.ts's import graph.
 *
 * @module
 */

// Full npm: specifiers, as DESIGN.md asks (no import map).
// grpc-js is loaded only with `--grpc-server grpc-js` (a type-only import here is erased).
// deno-lint-ignore no-import-prefix
import type * as GrpcJs from "npm:@grpc/grpc-js@1.14.3";
// deno-lint-ignore no-import-prefix
import * as protoLoader from "npm:@grpc/proto-loader@0.7.15";
// etcd's protos come from npm's etcd3 package (its proto/ folder); importing its package.json puts
// the package in the module graph so that import.meta.resolve finds the folder.
// deno-lint-ignore no-import-prefix
import etcd3Package from "npm:etcd3@1.1.2/package.json" with { type: "json" };
import type { Address } from "./transport.ts";
import type { TlsMaterial } from "./tls.ts";
import type { SecureContextOptions, TlsOptions } from "node:tls";
import { etcdCall, EtcdCallError, header, memberListJson, storeHash } from "./http.ts";
import type { Identity } from "./auth.ts";
import { gatewayJson } from "./etcd.ts";
import { RevisionUnavailableError } from "../kv/store.ts";
import type { HttpHandler, RaftServer } from "./server.ts";
import { type MethodDefinition, type MethodHandler, Status } from "./grpc_h2.ts";

type Json = Record<string, unknown>;

/** Which server speaks HTTP/2 for the gRPC port (`--grpc-server`). */
export type GrpcServerKind = "raftmeta" | "grpc-js";

/** A running gRPC listener. */
export interface GrpcListener {
  /** Its URL, e.g. `http://127.0.0.1:2479` (HTTP/2 cleartext). */
  readonly url: string;
  /** Stops it: open streams are cut. */
  close(): void;
  /** With TLS: new connections get `material`'s certificate, key and CA. */
  reloadTls?(material: TlsMaterial): void;
}

/** Options of {@linkcode startGrpc}. */
export interface GrpcOptions {
  /** Where to listen. */
  readonly listen: Address;
  /** The other members' gRPC URLs, for MemberList's clientURLs. */
  readonly peerGrpcUrls?: ReadonlyMap<string, string>;
  /** Serve TLS with these (the client port's files); `clientCertAuth` refuses clients without one. */
  readonly tls?: TlsMaterial;
  /**
   * The HTTP/2 server: raftmeta's own (src/net/h2.ts and src/net/grpc_h2.ts, the default) or
   * grpc-js on Deno's node:http2.
   */
  readonly server?: GrpcServerKind;
  /**
   * A connection with no call open closes after this long (raftmeta's server only; the node's
   * `--http-idle-timeout-ms`). Default: `H2_LIMITS_DEFAULT.idleTimeoutMs`.
   */
  readonly idleTimeoutMs?: number;
  /** Hears of TLS handshakes refused (raftmeta's server only). */
  readonly onTlsRefused?: (remote: string, reason: string) => void;
}

/** The part of a server call (grpc-js's or src/net/grpc_h2.ts's) that the handlers use. */
export interface Call {
  readonly metadata: { get(key: string): unknown[] };
  getPeer(): string;
  /** The client's host, when the server knows it without parsing getPeer (grpc_h2.ts). */
  readonly peerAddress?: string;
}

/** A unary call. */
interface UnaryCall extends Call {
  readonly request: Json;
}

/** A unary handler's answer. */
type Callback = (error: StatusError | null, value?: Json) => void;

/** A streaming call (server or bidirectional streaming). */
export interface StreamCall extends Call {
  readonly request: Json;
  write(message: Json): boolean;
  end(): void;
  // deno-lint-ignore no-explicit-any
  on(event: string, listener: (...args: any[]) => void): unknown;
  // deno-lint-ignore no-explicit-any
  once(event: string, listener: (...args: any[]) => void): unknown;
  emit(event: string, ...args: unknown[]): boolean;
  /** Stops the client's messages for now (flow control); both servers' calls have it. */
  pause(): unknown;
  /** Lets them come again. */
  resume(): unknown;
}

type Handler = ((call: UnaryCall, callback: Callback) => void) | ((call: StreamCall) => void);

/**
 * Bytes a gRPC message may carry over the request limit, as etcd allows (its
 * `grpcOverheadBytes`): the limit itself applies to the decoded request, as on the JSON side.
 */
const GRPC_OVERHEAD_BYTES = 512 * 1024;

/** Watches one Watch stream may hold at once (etcd has no such limit; the node's watcher limit applies too). */
export const WATCHES_PER_STREAM_MAX = 1000;

/** etcd's services by name (KV, Watch, ...): each method's proto-loader definition. */
type Services = Record<string, Record<string, MethodDefinition>>;

let definition:
  | { services: Services; packageDefinition: protoLoader.PackageDefinition }
  | undefined;

function etcdserverpb(): { services: Services; packageDefinition: protoLoader.PackageDefinition } {
  if (definition !== undefined) return definition;
  const rpc = new URL(import.meta.resolve("npm:etcd3@1.1.2/proto/rpc.proto"));
  if (rpc.protocol !== "file:") {
    throw new Error(
      `etcd's protos (npm:etcd3@${etcd3Package.version}) did not resolve to a file: ${rpc.href}`,
    );
  }
  const packageDefinition = protoLoader.loadSync(decodeURIComponent(rpc.pathname), {
    keepCase: true,
    longs: String,
    // npm's etcd3 renames etcd's enum values (Put, not PUT): numbers are the same on the wire.
    enums: Number,
    // Bytes fields decode to bytes (not base64 text): the gateway's parsers take either.
    defaults: false,
    oneofs: false,
  });
  const services: Services = {};
  for (const [name, def] of Object.entries(packageDefinition)) {
    if (!name.startsWith("etcdserverpb.") || "format" in def) continue;
    services[name.slice("etcdserverpb.".length)] = def as unknown as Record<
      string,
      MethodDefinition
    >;
  }
  definition = { services, packageDefinition };
  return definition;
}

/** A gRPC failure with etcd's code and message. */
interface StatusError {
  code: number;
  details: string;
}

function unimplemented(service: string, method: string): StatusError {
  return {
    code: Status.UNIMPLEMENTED,
    details: `raftmeta does not serve etcdserverpb.${service}/${method} yet ` +
      `(see docs/grpc.md for what is served)`,
  };
}

/** Starts etcd's gRPC services for `server`, answering through `handler` (the HTTP routes). */
export async function startGrpc(
  server: RaftServer,
  handler: HttpHandler,
  options: GrpcOptions,
): Promise<GrpcListener> {
  const { services, packageDefinition } = etcdserverpb();
  const host = options.listen.hostname.includes(":")
    ? `[${options.listen.hostname}]`
    : options.listen.hostname;
  const receiveBytesMax = server.requestBytesMax + GRPC_OVERHEAD_BYTES;
  const started = (options.server ?? "raftmeta") === "grpc-js"
    ? await listenGrpcJs(options, host, receiveBytesMax, packageDefinition)
    : await listenH2(options, receiveBytesMax);
  const port = started.port;
  const url = `${options.tls === undefined ? "http" : "https"}://${host}:${port}`;
  const gw = new Gateway(server, handler, `http://${host}:${port}`);
  const peerGrpcUrls = options.peerGrpcUrls ?? new Map<string, string>();

  const unary = (path: string, adapt: (json: Json) => Json = (j) => j) =>
  (
    call: UnaryCall,
    callback: Callback,
  ) => {
    gw.call(path, call.request, identityOf(call)).then(
      (json) => callback(null, adapt(json)),
      (e) => callback(toStatus(e)),
    );
  };

  const implementations: Record<string, Record<string, Handler>> = {
    KV: {
      Range: unary("/v3/kv/range"),
      Put: unary("/v3/kv/put"),
      DeleteRange: unary("/v3/kv/deleterange"),
      Txn: unary("/v3/kv/txn"),
      Compact: unary("/v3/kv/compaction"),
    },
    Lease: {
      LeaseGrant: unary("/v3/lease/grant"),
      LeaseRevoke: unary("/v3/lease/revoke"),
      LeaseTimeToLive: unary("/v3/lease/timetolive"),
      LeaseLeases: unary("/v3/lease/leases"),
      LeaseKeepAlive: (call: StreamCall) => keepAlive(server, gw, call),
    },
    Watch: {
      Watch: (call: StreamCall) => watch(server, gw, call),
    },
    Maintenance: {
      Status: unary("/v3/maintenance/status", statusJson),
      Alarm: unary("/v3/maintenance/alarm", alarmJson),
      Hash: unary("/v3/maintenance/hash"),
      HashKV: (call: UnaryCall, callback: Callback) => {
        try {
          const revision = Number(call.request.revision ?? 0);
          if (!Number.isSafeInteger(revision) || revision < 0) {
            throw new GatewayError(
              Status.INVALID_ARGUMENT,
              `Field "revision" of HashKVRequest must be a non-negative integer: ${revision}`,
            );
          }
          const h = storeHash(server.store, revision);
          callback(null, {
            header: header(server),
            hash: h.hash,
            compact_revision: String(h.compactRevision),
          });
        } catch (e) {
          callback(
            e instanceof RevisionUnavailableError
              ? etcdError(Status.OUT_OF_RANGE, e.message)
              : toStatus(e),
          );
        }
      },
      Defragment: unary("/v3/maintenance/defragment"),
      MoveLeader: unary("/v3/maintenance/transfer-leadership"),
      Snapshot: (call: StreamCall) => snapshot(gw, call),
    },
    Auth: {
      AuthEnable: unary("/v3/auth/enable"),
      AuthDisable: unary("/v3/auth/disable"),
      AuthStatus: unary("/v3/auth/status"),
      Authenticate: unary("/v3/auth/authenticate"),
      UserAdd: unary("/v3/auth/user/add"),
      UserGet: unary("/v3/auth/user/get"),
      UserList: unary("/v3/auth/user/list"),
      UserDelete: unary("/v3/auth/user/delete"),
      UserChangePassword: unary("/v3/auth/user/changepw"),
      UserGrantRole: unary("/v3/auth/user/grant"),
      UserRevokeRole: unary("/v3/auth/user/revoke"),
      RoleAdd: unary("/v3/auth/role/add"),
      RoleGet: unary("/v3/auth/role/get", roleJson),
      RoleList: unary("/v3/auth/role/list"),
      RoleDelete: unary("/v3/auth/role/delete"),
      RoleGrantPermission: unary("/v3/auth/role/grant"),
      RoleRevokePermission: unary("/v3/auth/role/revoke"),
    },
    Cluster: {
      MemberAdd: unary("/v3/cluster/member/add"),
      MemberRemove: unary("/v3/cluster/member/remove"),
      MemberUpdate: unary("/v3/cluster/member/update"),
      MemberPromote: unary("/v3/cluster/member/promote"),
      // Linearizable as the gateway's route (etcd 3.5's default): that route waits for the read
      // barrier (and checks the request); the list is then built here with the gRPC URLs. It
      // used to answer at once, so etcdctl's list right after a member add sent to another member
      // could miss the new member.
      MemberList: (call: UnaryCall, callback: Callback) => {
        gw.call("/v3/cluster/member/list", call.request, identityOf(call)).then(
          () =>
            callback(
              null,
              memberListJson(
                server,
                (m) =>
                  m.id === server.nodeId
                    ? [url]
                    : peerGrpcUrls.has(m.id)
                    ? [peerGrpcUrls.get(m.id)!]
                    : m.grpcUrl === null
                    ? []
                    : [m.grpcUrl],
              ),
            ),
          (e) => callback(toStatus(e)),
        );
      },
    },
  };
  const served: { service: string; method: string; def: MethodDefinition; handler: Handler }[] = [];
  for (const service of ["KV", "Lease", "Watch", "Maintenance", "Cluster", "Auth"]) {
    for (const [method, def] of Object.entries(services[service])) {
      let handler = implementations[service][method];
      if (handler === undefined) {
        const error = unimplemented(service, method);
        handler = def.responseStream
          ? (call: StreamCall) => call.emit("error", error)
          : (_call: UnaryCall, callback: Callback) => callback(error);
      }
      served.push({ service, method, def, handler });
    }
  }
  started.serve(served);
  return { url, close: started.close, reloadTls: started.reloadTls };
}

/** A listening gRPC server, before its methods are given. */
interface Started {
  readonly port: number;
  serve(
    methods: { service: string; method: string; def: MethodDefinition; handler: Handler }[],
  ): void;
  close(): void;
  reloadTls?(material: TlsMaterial): void;
}

/** raftmeta's own HTTP/2 server (src/net/h2.ts), TLS through src/net/tls.ts with ALPN "h2". */
async function listenH2(
  options: GrpcOptions,
  receiveBytesMax: number,
): Promise<Started> {
  const { GrpcH2Server } = await import("./grpc_h2.ts");
  const tlsListener = options.tls === undefined
    ? undefined
    : await (await import("./tls.ts")).TlsConnListener.listen(
      options.listen,
      options.tls,
      (remote, reason) => options.onTlsRefused?.(remote, reason),
      { alpnProtocols: ["h2"] },
    );
  // The methods come with `serve`, in the same turn as listening (no stream can arrive before).
  const g = new GrpcH2Server({
    hostname: options.listen.hostname,
    port: options.listen.port,
    listener: tlsListener,
    receiveBytesMax,
    methods: [],
    ...(options.idleTimeoutMs !== undefined
      ? { limits: { idleTimeoutMs: options.idleTimeoutMs } }
      : {}),
  });
  return {
    port: g.addr.port,
    serve: (served) => {
      g.setMethods(
        served.map((m) => ({ definition: m.def, handler: m.handler as MethodHandler })),
      );
    },
    close: () => {
      g.close().catch(() => {});
    },
    reloadTls: tlsListener === undefined ? undefined : (m) => tlsListener.reload(m),
  };
}

/** grpc-js on Deno's node:http2 (`--grpc-server grpc-js`). */
async function listenGrpcJs(
  options: GrpcOptions,
  host: string,
  receiveBytesMax: number,
  packageDefinition: protoLoader.PackageDefinition,
): Promise<Started> {
  // deno-lint-ignore no-import-prefix
  const grpc = await import("npm:@grpc/grpc-js@1.14.3");
  /**
   * Server credentials whose certificate, key and CA can be swapped for new connections (grpc-js
   * calls setSecureContext on its server when they change). Not grpc-js's certificate providers:
   * under Deno the server they build negotiates no ALPN, and etcdctl insists on h2.
   */
  class ReloadableCredentials extends grpc.ServerCredentials {
    constructor(material: TlsMaterial) {
      const auth = material.files.clientCertAuth;
      super(
        { requestCert: auth, rejectUnauthorized: auth },
        ReloadableCredentials.context(material),
      );
    }

    static context(m: TlsMaterial): SecureContextOptions & TlsOptions {
      return { cert: m.cert, key: m.key, ca: m.ca, ALPNProtocols: ["h2"] };
    }

    reload(material: TlsMaterial): void {
      this.updateSecureContextOptions(ReloadableCredentials.context(material));
    }

    override _equals(other: InstanceType<typeof grpc.ServerCredentials>): boolean {
      return this === other;
    }
  }
  const g = new grpc.Server({
    "grpc.max_receive_message_length": receiveBytesMax,
    "grpc.max_send_message_length": -1,
    // Channelz (per-call and per-socket statistics for a debug service) is not served here:
    // its bookkeeping on every call is saved.
    "grpc.enable_channelz": 0,
  });
  const reloadable = options.tls === undefined ? undefined : new ReloadableCredentials(options.tls);
  const credentials = reloadable ?? grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) => {
    g.bindAsync(
      `${host}:${options.listen.port}`,
      credentials,
      (e, p) => e === null ? resolve(p) : reject(e),
    );
  });
  return {
    port,
    serve: (served) => {
      const byService = new Map<string, Record<string, GrpcJs.UntypedHandleCall>>();
      for (const m of served) {
        if (!byService.has(m.service)) byService.set(m.service, {});
        byService.get(m.service)![m.method] = m.handler as unknown as GrpcJs.UntypedHandleCall;
      }
      for (const [service, impl] of byService) {
        g.addService(
          packageDefinition[`etcdserverpb.${service}`] as unknown as GrpcJs.ServiceDefinition,
          impl,
        );
      }
    },
    close: () => g.forceShutdown(),
    reloadTls: reloadable === undefined ? undefined : (m) => reloadable.reload(m),
  };
}

/** etcd's StatusResponse names its fields in camelCase; the gateway's answer may use either. */
function statusJson(json: Json): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(json)) {
    out[k === "header" ? k : k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  }
  return out;
}

/** etcd's WatchCreateRequest.FilterType values by number. */
const FILTER_TYPES = ["NOPUT", "NODELETE"];
/** etcd's Event.EventType values: the gateway names them, the encoder wants numbers. */
const EVENT_TYPES: Record<string, number> = { PUT: 0, DELETE: 1 };
/** etcd's AlarmType values. */
const ALARM_TYPES: Record<string, number> = { NONE: 0, NOSPACE: 1, CORRUPT: 2 };

/** The gateway's events with their types as numbers. */
function eventsOut(events: Json[]): Json[] {
  return events.map((e) =>
    typeof e.type === "string" ? { ...e, type: EVENT_TYPES[e.type] ?? e.type } : e
  );
}

/** An alarm answer with its alarm types as numbers. */
function alarmJson(json: Json): Json {
  const alarms = json.alarms as Json[] | undefined;
  if (alarms === undefined) return json;
  return {
    ...json,
    alarms: alarms.map((a) =>
      typeof a.alarm === "string" ? { ...a, alarm: ALARM_TYPES[a.alarm] ?? a.alarm } : a
    ),
  };
}

/** Thrown for a gateway answer that is an error: etcd's gRPC code and message. */
class GatewayError extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * etcd's error descriptions with their gRPC codes. etcd's Go client recognizes an error only by
 * its exact text (and then retries, or prints it plainly), so a gateway message that starts with
 * one of these is sent as exactly that text; the detail after it stays on the JSON side.
 */
const ETCD_ERRORS: readonly (readonly [string, number])[] = [
  ["etcdserver: key is not provided", Status.INVALID_ARGUMENT],
  ["etcdserver: key not found", Status.INVALID_ARGUMENT],
  ["etcdserver: value is provided", Status.INVALID_ARGUMENT],
  ["etcdserver: lease is provided", Status.INVALID_ARGUMENT],
  ["etcdserver: too many operations in txn request", Status.INVALID_ARGUMENT],
  ["etcdserver: duplicate key given in txn request", Status.INVALID_ARGUMENT],
  ["etcdserver: mvcc: required revision has been compacted", Status.OUT_OF_RANGE],
  ["etcdserver: mvcc: required revision is a future revision", Status.OUT_OF_RANGE],
  ["etcdserver: mvcc: database space exceeded", Status.RESOURCE_EXHAUSTED],
  ["etcdserver: requested lease not found", Status.NOT_FOUND],
  ["etcdserver: lease already exists", Status.FAILED_PRECONDITION],
  ["etcdserver: too large lease TTL", Status.OUT_OF_RANGE],
  ["etcdserver: request is too large", Status.INVALID_ARGUMENT],
  ["etcdserver: too many requests", Status.RESOURCE_EXHAUSTED],
  ["etcdserver: no leader", Status.UNAVAILABLE],
  ["etcdserver: not leader", Status.FAILED_PRECONDITION],
  ["etcdserver: leader changed", Status.UNAVAILABLE],
  ["etcdserver: server stopped", Status.UNAVAILABLE],
  ["etcdserver: request timed out", Status.UNAVAILABLE],
];

/**
 * raftmeta's own messages for what etcd reports with one of its errors: a write or read that did
 * not complete in time, a leader change that dropped a write, a node that is stopping. Sent as
 * etcd's text and code (Unavailable), so an etcd client retries (or gives up) as it does on etcd.
 */
const RAFTMETA_ERRORS: readonly (readonly [RegExp, string])[] = [
  [/^Entry \d+ was not applied within /, "etcdserver: request timed out"],
  [/^No leader could take the request in time/, "etcdserver: request timed out"],
  [/^The read could not be confirmed by a leader in time/, "etcdserver: request timed out"],
  [/^No leader confirmed the read within /, "etcdserver: request timed out"],
  [/^The leader \S+ failed while handling the forwarded write/, "etcdserver: request timed out"],
  [/^Leadership changed; entry \d+ was replaced/, "etcdserver: leader changed"],
  [/^Node is stopping/, "etcdserver: server stopped"],
];

/** etcd's exact error for a gateway message that starts with one of its descriptions. */
function etcdError(code: number, message: string): StatusError {
  for (const [desc, etcdCode] of ETCD_ERRORS) {
    if (message === desc || (message.startsWith(desc) && /^[ :;(]/.test(message[desc.length]))) {
      return { code: etcdCode, details: desc };
    }
  }
  for (const [pattern, desc] of RAFTMETA_ERRORS) {
    if (pattern.test(message)) return { code: Status.UNAVAILABLE, details: desc };
  }
  return { code, details: message };
}

function toStatus(e: unknown): StatusError {
  if (e instanceof GatewayError) return etcdError(e.code, e.message);
  return { code: Status.INTERNAL, details: `Internal error: ${(e as Error)?.message ?? e}` };
}

/** The call's token: etcd's clients send it as the `token` metadata key. */
function tokenOf(call: Call): string | undefined {
  const v = call.metadata.get("token")[0];
  return v === undefined ? undefined : String(v);
}

/** Who made a unary call: its token and its address (`ipv4:127.0.0.1:5000` → `127.0.0.1`). */
function identityOf(call: Call): Identity {
  if (call.peerAddress !== undefined) return { token: tokenOf(call), address: call.peerAddress };
  const peer = call.getPeer();
  const address = peer.replace(/^ipv[46]:/, "").replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return { token: tokenOf(call), address };
}

/** etcd's Permission.Type values by name (the gateway names them, the encoder wants numbers). */
const PERM_TYPES: Record<string, number> = { READ: 0, WRITE: 1, READWRITE: 2 };

/** A RoleGet answer with its permission types as numbers. */
function roleJson(json: Json): Json {
  const perm = json.perm as Json[] | undefined;
  if (perm === undefined) return json;
  return {
    ...json,
    perm: perm.map((p) => ({ ...p, permType: PERM_TYPES[p.permType as string] ?? p.permType })),
  };
}

/** Sends gateway requests to the node's HTTP handler, in process. */
class Gateway {
  readonly #server: RaftServer;
  readonly #handler: HttpHandler;
  readonly #base: string;
  readonly #info: Deno.ServeHandlerInfo<Deno.NetAddr>;

  constructor(server: RaftServer, handler: HttpHandler, base: string) {
    this.#server = server;
    this.#handler = handler;
    this.#base = base;
    this.#info = {
      remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 0 },
      completed: new Promise(() => {}),
    };
  }

  /** The handler's raw answer to a gateway request for `path` with `body` (and the call's token). */
  send(path: string, body: unknown, token?: string): Promise<Response> {
    const bytes = new TextEncoder().encode(gatewayJson(body));
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "content-length": String(bytes.length),
    };
    if (token !== undefined) headers.authorization = token;
    const req = new Request(this.#base + path, { method: "POST", headers, body: bytes });
    return this.#handler(this.#server, req, this.#info);
  }

  /**
   * A unary call: the gateway's answer, or a {@linkcode GatewayError}. The route gets the decoded
   * message as its parsed body and answers with an object, so nothing is written as JSON text
   * unless the call is forwarded to the leader.
   */
  async call(path: string, body: Json, identity?: Identity): Promise<Json> {
    let answer;
    try {
      answer = await etcdCall(this.#server, path, body, identity);
    } catch (e) {
      if (e instanceof EtcdCallError) throw new GatewayError(e.code, e.message);
      throw e;
    }
    return answer instanceof Response ? await answerOf(answer) : answer.json;
  }
}

async function answerOf(res: Response): Promise<Json> {
  let json: Json;
  try {
    json = await res.json();
  } catch (e) {
    throw new GatewayError(
      Status.INTERNAL,
      `The node's answer (HTTP ${res.status}) is not JSON: ${(e as Error).message}`,
    );
  }
  if (!res.ok) {
    const code = typeof json.code === "number" ? json.code : Status.UNKNOWN;
    throw new GatewayError(code, String(json.message ?? json.error ?? `HTTP ${res.status}`));
  }
  return json;
}

/**
 * Messages of a bidirectional stream received and not yet handled above which the client is asked
 * to wait (its stream window stays shut: it may send at most one window more, 1 MiB).
 */
export const STREAM_MESSAGES_PENDING_MAX = 64;

/**
 * Runs each message of a bidirectional stream after the previous one was handled, so answers go
 * out in request order (clients match a watch's `created` to their requests in order). A client
 * that sends faster than the handler keeps up is paused past
 * {@linkcode STREAM_MESSAGES_PENDING_MAX} messages waiting, and resumed when they are down to a
 * quarter of that.
 */
export function inOrder(
  call: StreamCall,
  handle: (message: Json) => Promise<void>,
  onEnd: () => void,
): void {
  let chain = Promise.resolve();
  let ended = false;
  let pending = 0;
  let paused = false;
  const end = () => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  call.on("data", (message: Json) => {
    if (++pending > STREAM_MESSAGES_PENDING_MAX && !paused) {
      paused = true;
      call.pause();
    }
    chain = chain.then(() => ended ? undefined : handle(message)).catch((e) => {
      end();
      call.emit("error", toStatus(e));
    }).finally(() => {
      if (--pending <= STREAM_MESSAGES_PENDING_MAX / 4 && paused) {
        paused = false;
        call.resume();
      }
    });
  });
  call.on("end", () => {
    chain = chain.then(() => {
      end();
      call.end();
    });
  });
  call.on("cancelled", end);
  call.on("error", end);
  call.on("close", end);
}

// ---- Lease keep-alive ----------------------------------------------------------------------------

function keepAlive(server: RaftServer, gw: Gateway, call: StreamCall) {
  inOrder(call, async (req) => {
    const res = await gw.send("/v3/lease/keepalive", { ID: req.ID ?? "0" }, tokenOf(call));
    if (res.status === 404) {
      // As etcd: a keep-alive of an unknown or expired lease is answered with TTL 0.
      await res.body?.cancel();
      call.write({ header: header(server), ID: String(req.ID ?? "0"), TTL: "0" });
      return;
    }
    const json = await answerOf(res);
    call.write((json.result ?? json) as Json);
  }, () => {});
}

// ---- Snapshot ------------------------------------------------------------------------------------

/**
 * Maintenance.Snapshot: the gateway's `/v3/maintenance/snapshot` messages, each sent once the
 * previous one was taken by the transport (a slow reader holds the stream, not memory here).
 */
async function snapshot(gw: Gateway, call: StreamCall): Promise<void> {
  let lines: NdjsonReader | undefined;
  let cancelled = false;
  call.on("cancelled", () => {
    cancelled = true;
    lines?.cancel();
  });
  try {
    const res = await gw.send("/v3/maintenance/snapshot", {}, tokenOf(call));
    if (!res.ok || res.body === null) await answerOf(res);
    lines = new NdjsonReader(res.body!);
    for (;;) {
      const next = await lines.next();
      if (next === undefined || cancelled) break;
      const result = (next.result ?? {}) as Json;
      if (!call.write(result)) await new Promise((r) => call.once("drain", r));
    }
    if (!cancelled) call.end();
  } catch (e) {
    if (!cancelled) call.emit("error", toStatus(e));
  }
}

// ---- Watch ---------------------------------------------------------------------------------------

interface WatchState {
  /** Stops reading the gateway's stream (cancels the watch on the node). */
  stop(): void;
}

function watch(server: RaftServer, gw: Gateway, call: StreamCall) {
  const watches = new Map<number, WatchState>();
  let nextId = 0;
  let closed = false;
  const stopAll = () => {
    closed = true;
    for (const w of watches.values()) w.stop();
    watches.clear();
  };
  const send = (message: Json) => {
    if (!closed) call.write(message);
  };
  inOrder(call, async (req) => {
    const create = req.create_request as Json | undefined;
    const cancel = req.cancel_request as Json | undefined;
    if (create !== undefined) {
      await createWatch(create);
    } else if (cancel !== undefined) {
      const id = Number(cancel.watch_id ?? 0);
      const w = watches.get(id);
      // As etcd: canceling an unknown watch is answered with nothing.
      if (w === undefined) return;
      watches.delete(id);
      w.stop();
      send({ header: header(server), watch_id: String(id), canceled: true });
    } else if (req.progress_request !== undefined) {
      // As etcd 3.4: one progress notification for the whole stream, watch_id -1.
      send({ header: header(server), watch_id: "-1" });
    }
  }, stopAll);

  async function createWatch(create: Json): Promise<void> {
    let id = Number(create.watch_id ?? 0);
    if (id === 0) {
      // As etcd: ids count up from 0 per stream, skipping ids the client chose.
      while (watches.has(nextId)) nextId++;
      id = nextId++;
    } else if (watches.has(id)) {
      send({
        header: header(server),
        watch_id: "-1",
        created: true,
        canceled: true,
        cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream",
      });
      return;
    }
    if (watches.size >= WATCHES_PER_STREAM_MAX) {
      send({
        header: header(server),
        watch_id: "-1",
        created: true,
        canceled: true,
        cancel_reason: `Too many watches on this stream: ${WATCHES_PER_STREAM_MAX} ` +
          `(cancel one, or open another stream)`,
      });
      return;
    }
    const filters = new Set(
      ((create.filters ?? []) as number[]).map((f) => FILTER_TYPES[f] ?? String(f)),
    );
    const body: Json = {};
    for (const name of ["key", "range_end", "start_revision", "progress_notify", "prev_kv"]) {
      if (create[name] !== undefined) body[name] = create[name];
    }
    const res = await gw.send("/v3/watch", { create_request: body }, tokenOf(call));
    if (!res.ok || res.body === null) {
      let reason = `HTTP ${res.status}`;
      try {
        const json = await res.json();
        reason = String(json.message ?? json.error ?? reason);
      } catch { /* keep the status */ }
      send({
        header: header(server),
        watch_id: "-1",
        created: true,
        canceled: true,
        cancel_reason: reason,
      });
      return;
    }
    const lines = new NdjsonReader(res.body);
    const first = await lines.next();
    if (first === undefined) {
      send({
        header: header(server),
        watch_id: "-1",
        created: true,
        canceled: true,
        cancel_reason: "The node ended the watch before creating it",
      });
      return;
    }
    const watchId = String(id);
    let stopped = false;
    const state: WatchState = {
      stop: () => {
        stopped = true;
        lines.cancel();
      },
    };
    watches.set(id, state);
    if (closed) {
      // The stream ended while the watch was being created.
      stopAll();
      return;
    }
    const created = (first.result ?? {}) as Json;
    send({ ...created, watch_id: watchId });
    if (created.canceled === true) {
      watches.delete(id);
      return;
    }
    // Pump the watch's messages until it ends or is canceled; runs beside the request loop.
    (async () => {
      try {
        for (;;) {
          const next = await lines.next();
          if (next === undefined || stopped) break;
          const result = (next.result ?? {}) as Json;
          const message: Json = { ...result, watch_id: watchId };
          let events = result.events as Json[] | undefined;
          if (events !== undefined) message.events = events = eventsOut(events);
          if (events !== undefined && filters.size > 0) {
            const kept = events.filter((e) =>
              !(filters.has(e.type === EVENT_TYPES.DELETE ? "NODELETE" : "NOPUT"))
            );
            // As etcd: a response whose events were all filtered out is not sent.
            if (kept.length === 0) continue;
            message.events = kept;
          }
          send(message);
          if (result.canceled === true) {
            watches.delete(id);
            return;
          }
        }
      } catch { /* the node's stream broke: told below */ }
      if (!stopped && watches.get(id) === state) {
        watches.delete(id);
        send({
          header: header(server),
          watch_id: watchId,
          canceled: true,
          cancel_reason: "The node ended the watch",
        });
      }
    })();
  }
}

/** Reads the `{"result": …}` objects of the gateway's newline-delimited watch stream. */
class NdjsonReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  readonly #ready: Json[] = [];
  #rest = "";

  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next object, or undefined at the end (or once canceled). */
  async next(): Promise<Json | undefined> {
    while (this.#ready.length === 0) {
      const r = await this.#reader.read();
      if (r.done) {
        const last = this.#rest.trim();
        this.#rest = "";
        return last === "" ? undefined : JSON.parse(last);
      }
      const parts = (this.#rest + r.value).split("\n");
      this.#rest = parts.pop()!;
      for (const line of parts) if (line.trim() !== "") this.#ready.push(JSON.parse(line));
    }
    return this.#ready.shift();
  }

  /** Stops reading: the node's watch is canceled, a pending {@linkcode next} ends. */
  cancel(): void {
    this.#reader.cancel().catch(() => {});
  }
}
