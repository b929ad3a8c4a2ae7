/**
 * `deno task serve`: runs one raftmeta node. With no flags it is a single-node cluster on
 * 127.0.0.1:2379 with its data in ./data. Run with `--help` for the flags.
 *
 * @module
 */

import { PBKDF2_ITERATIONS_MIN } from "./auth.ts";
import { parseArgs } from "node:util";
import type { Address } from "./transport.ts";
import { RaftServer, StartupError } from "./server.ts";
import { etcdFastHandler, handleHttp, type MetricsListener, serveMetrics } from "./http.ts";
import { parseAutoCompaction } from "./auto_compaction.ts";
import type { TlsFiles } from "./tls.ts";

const HELP = `raftmeta node

Usage: deno task serve [flags]
       deno run -A src/net/main.ts [flags]

  --name ID                     node id (default n1)
  --cluster-id ID               cluster id; a data dir of another cluster is refused (default raftmeta)
  --data-dir DIR                data directory (default ./data)
  --repair-wal                  start even if synced WAL records are missing at the end (a cut
                                or deleted last segment): cut there and log it; acknowledged
                                entries may be lost (default: refuse, naming file and offset)
  --listen-client HOST:PORT     client HTTP address (default 127.0.0.1:2379)
  --listen-peer HOST:PORT       peer address (default 127.0.0.1:2380)
  --peers ID=HOST:PORT,...      the other voters and their peer addresses (default: none,
                                a single-node cluster)
  --peer-client-urls ID=URL,... the other voters' client URLs (http://HOST:PORT), to forward
                                requests to the leader; a leader not listed here gets no
                                forwarded requests (503 naming it). Never learned from peers.
  --listen-grpc HOST:PORT       also serve etcd's gRPC API (HTTP/2 cleartext) here, for etcdctl
                                and etcd's client libraries (default: not served); see
                                docs/grpc.md
  --listen-metrics HOST:PORT    also serve /metrics and /health here, plain HTTP and without auth
                                (etcd's --listen-metrics-urls), for a scraper: once auth is on,
                                the client port's /metrics and /v1/status need a user
  --peer-grpc-urls ID=URL,...   the other voters' gRPC URLs (http://HOST:PORT), listed as their
                                client URLs by etcd's MemberList (etcdctl member list)
  --cluster-secret-file PATH    file holding the secret every peer must prove (whitespace at
                                either end ignored; a warning if others may read it). A node
                                with --peers refuses to start without a secret.
                                Default: $RAFTMETA_CLUSTER_SECRET
  --cluster-secret SECRET       the secret on the command line: discouraged, every local user
                                sees it in the process list (a warning is logged)
  --insecure-peers              allow --peers without a secret: anyone who reaches the peer
                                port can then forge entries (a warning is logged)
  --serve-peers                 open the peer port (--listen-peer) even without --peers, so a
                                single-node cluster can grow with member add (needs a cluster
                                secret, as --peers does); default: no peer port without --peers
  --cert-file PATH              HTTPS on the client port and TLS on the gRPC port with this
                                certificate chain (PEM); see docs/security.md
  --key-file PATH               its private key (PEM)
  --trusted-ca-file PATH        CA certificates (PEM) for client certificates; also what this
                                node trusts when it forwards to another node's https client URL
  --client-cert-auth            refuse clients (HTTPS and gRPC) without a certificate signed by
                                --trusted-ca-file
  --peer-cert-file PATH         TLS on the peer port, both ways, with this certificate (the
                                cluster secret is still proved inside TLS)
  --peer-key-file PATH          its private key (PEM)
  --peer-trusted-ca-file PATH   CA certificates (PEM) that other nodes' peer certificates must
                                chain to (default: the system's roots)
  --peer-client-cert-auth       refuse peer connections without a certificate signed by
                                --peer-trusted-ca-file
  --insecure                    allow a client, gRPC or peer address that is not loopback
                                without TLS (a warning is logged); default: refused
                                Certificates are read again on SIGHUP (kill -HUP PID): new
                                connections get the new ones, open ones keep theirs.
  --auth-token simple           etcd's token kind: simple tokens (random, kept on the node that
                                issued them) are the only kind served (default simple)
  --auth-token-ttl SECONDS      a token lives this long after its last use (default 300)
  --auth-pbkdf2-iterations N    PBKDF2-HMAC-SHA-256 iterations of new password hashes
                                (default 210000, at least 1000); see docs/security.md
  --peer-handshake-timeout-ms N time a peer connection has to prove the secret (default 3000);
                                until then it may send at most one 8 KiB frame
  --peer-unauthenticated-max N  most peer connections in handshake at once; more are closed
                                at once (default 64)
  --election-timeout-min-ms N   (default 150)
  --election-timeout-max-ms N   (default 300)
  --heartbeat-interval-ms N     (default 50)
  --tick-ms N                   clock tick of the host loop (default 5)
  --max-request-bytes N         largest HTTP request body (default 1572864, 1.5 MiB)
  --max-response-bytes N        most bytes of key-values one answer may carry (a range, the
                                ranges of a txn, a delete's previous values), counted as
                                base64 key + value + 128 each while they are gathered; beyond,
                                429 with etcd's ResourceExhausted (code 8) (default 67108864,
                                64 MiB; ranges inside a write txn stop at 64 MiB regardless)
  --request-timeout-ms N        longest wait for commit, read index or leader (default 5000)
  --join                        the older name of --initial-cluster-state existing
  --initial-cluster-state STATE new (default): this node and --peers are the cluster's first
                                members. existing: this node was added with \`ctl member add
                                NAME\` (or etcdctl member add; NAME is then the id it printed)
                                and starts with an empty data dir: it copies the leader's
                                snapshot, log and member table from --peers (any current
                                members), then serves. Ignored when the data dir has data.
                                A member whose data was lost must not come back under its old
                                name: remove it and add a new member. A removed member stops
                                (exit code 5) and its data dir refuses to start (exit code 5).
  --shutdown-transfer-ms N      on SIGTERM/SIGINT a leader first hands leadership to the most
                                up-to-date voter, waiting at most N ms (default 2000; 0: off)
  --join-timeout-ms N           how long --join keeps asking for the leader's log before it
                                exits with code 4; also the longest silence within one
                                transfer (default 30000)
  --snapshot-entries N          snapshot and compact the log after at most N applied entries
                                (each node draws N/2..N anew, so nodes do not snapshot at once;
                                default 100000, as etcd's --snapshot-count)
  --snapshot-bytes N            also snapshot once the entries applied since the last snapshot
                                hold N command bytes (default 67108864, 64 MiB)
  --quota-backend-bytes N       store quota (live keys and values plus their history until
                                compacted: every older version's key and value); a write
                                over it is refused and raises the NOSPACE alarm, cleared with
                                \`ctl alarm disarm\` (default 536870912, 512 MiB)
  --auto-compaction-mode MODE   periodic or revision (default periodic), as etcd's
  --auto-compaction-retention R history kept by automatic compaction: in revision mode a number
                                of revisions (checked every 5 minutes), in periodic mode a
                                duration (72h, 30m, 10s) or a number of hours (compacting every
                                tenth of it, at most hourly); 0 (default) turns it off. The
                                leader proposes each compaction through the log.
  --proposals-pending-max N     most writes waiting to be applied on the leader; beyond, 429
                                with Retry-After (default 10000)
  --proposal-bytes-pending-max N  most command bytes waiting to be applied on the leader;
                                beyond, 429 with Retry-After (default 67108864, 64 MiB)
  --http-requests-max N         most HTTP requests handled at once; beyond, 503 with
                                Retry-After (default 512)
  --body-read-timeout-ms N      longest wait for a request body; then 408 (default 10000)
  --http-header-timeout-ms N    longest wait for a complete request head (request line and
                                headers), from its first byte or the connection's opening;
                                then 408 and the connection closes (default 10000)
  --http-idle-timeout-ms N      a client connection with no request in flight closes after
                                N ms; a request in flight (a watch) is never cut (default 60000;
                                gRPC connections too, with GOAWAY)
  --max-connections N           most client connections open at once; beyond, 503 with
                                Retry-After: 1 and the connection closes (default 1024)
  --max-request-head-bytes N    largest request head; beyond, 431 (default 16384)
  --http-server raftmeta|deno   the client port's HTTP server: raftmeta's own (default), or
                                Deno.serve, which has none of the four limits above
  --grpc-server raftmeta|grpc-js
                                the gRPC port's HTTP/2 server: raftmeta's own (default), or
                                grpc-js on Deno's node:http2 (docs/grpc.md)
  --probe-ms N                  how long an empty data dir asks peers about itself (default 2000)
  --watchers-max N              most watchers on this node (default 1000)
  --watch-buffer-events N       events a watcher may leave unread before it is cancelled as
                                slow (default 10000)
  --watch-progress-ms N         progress notification period for idle watchers (default 1000)
  --cors ORIGIN,...             origins whose web pages may call this node, e.g.
                                http://localhost:8080 ("*" any, "null" a page opened from disk;
                                default none: a request with an Origin header is refused with
                                403, so are CORS preflights)
  --host-whitelist NAME,...     Host header names accepted ("*" any; default on a loopback
                                --listen-client: localhost,127.0.0.1,::1, else any); others get
                                421, a defence against DNS rebinding
  -h, --help                    this text

Logs are JSON lines on stdout. Stop with Ctrl-C (SIGINT) or SIGTERM.
`;

/** Parses `host:port`. */
export function parseAddress(text: string, what: string): Address {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text);
  if (m === null || Number(m[2]) > 65535) {
    throw new Error(`${what} must be HOST:PORT: ${JSON.stringify(text)}`);
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}

/** Parses `n2=127.0.0.1:2380,n3=...`. */
export function parsePeers(text: string): Map<string, Address> {
  const out = new Map<string, Address>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`--peers entry must be ID=HOST:PORT: ${JSON.stringify(part)}`);
    const id = part.slice(0, eq);
    if (out.has(id)) throw new Error(`--peers lists "${id}" twice`);
    out.set(id, parseAddress(part.slice(eq + 1), `--peers entry for "${id}"`));
  }
  return out;
}

/** Parses `n2=http://127.0.0.1:2479,n3=...` (the flag `--peer-client-urls`, or `flag`). */
export function parsePeerClientUrls(
  text: string,
  flag = "--peer-client-urls",
): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const eq = part.indexOf("=");
    if (eq <= 0) {
      throw new Error(`${flag} entry must be ID=URL: ${JSON.stringify(part)}`);
    }
    const id = part.slice(0, eq);
    if (out.has(id)) throw new Error(`${flag} lists "${id}" twice`);
    out.set(id, part.slice(eq + 1));
  }
  return out;
}

/** Where the cluster secret came from, and what to warn about. */
export interface SecretChoice {
  /** The secret ("" when none was given). */
  readonly secret: string;
  /** Warnings to log (never containing the secret). */
  readonly warnings: { event: string; warning: string }[];
}

/**
 * Picks the cluster secret: `--cluster-secret-file`, else `--cluster-secret` (discouraged: the
 * process list shows it), else `$RAFTMETA_CLUSTER_SECRET`, else none.
 */
export function chooseSecret(
  options: { file?: string; flag?: string; env?: string },
): SecretChoice {
  const warnings: { event: string; warning: string }[] = [];
  if (options.file !== undefined && options.flag !== undefined) {
    throw new Error("Give --cluster-secret-file or --cluster-secret, not both");
  }
  if (options.file !== undefined) {
    const path = options.file;
    let text: string;
    let mode: number | null;
    try {
      text = Deno.readTextFileSync(path);
      mode = Deno.statSync(path).mode;
    } catch (e) {
      throw new Error(`Cannot read --cluster-secret-file "${path}": ${(e as Error).message}`);
    }
    const secret = text.trim();
    if (secret === "") throw new Error(`--cluster-secret-file "${path}" is empty`);
    if (mode !== null && (mode & 0o077) !== 0) {
      warnings.push({
        event: "cluster-secret-file-permissions",
        warning: `Cluster secret file "${path}" may be read by other users (mode ${
          (mode & 0o777).toString(8)
        }). Run: chmod 600 "${path}"`,
      });
    }
    return { secret, warnings };
  }
  if (options.flag !== undefined) {
    if (options.flag === "") throw new Error("--cluster-secret must not be empty");
    warnings.push({
      event: "cluster-secret-on-command-line",
      warning: "The cluster secret given with --cluster-secret is visible in the process list; " +
        "use --cluster-secret-file or $RAFTMETA_CLUSTER_SECRET",
    });
    return { secret: options.flag, warnings };
  }
  return { secret: options.env ?? "", warnings };
}

/** The TLS flags of one port (`prefix` "" for the client port, "peer-" for the peer port). */
export function tlsFilesOf(
  values: Record<string, string | boolean | undefined>,
  prefix: "" | "peer-",
): TlsFiles | undefined {
  const cert = values[`${prefix}cert-file`] as string | undefined;
  const key = values[`${prefix}key-file`] as string | undefined;
  const ca = values[`${prefix}trusted-ca-file`] as string | undefined;
  const auth = values[`${prefix}client-cert-auth`] === true;
  if (cert !== undefined && key === undefined) {
    throw new Error(`--${prefix}cert-file needs --${prefix}key-file`);
  }
  if (key !== undefined && cert === undefined) {
    throw new Error(`--${prefix}key-file needs --${prefix}cert-file`);
  }
  if (cert === undefined) {
    if (auth) throw new Error(`--${prefix}client-cert-auth needs --${prefix}cert-file`);
    if (ca !== undefined) throw new Error(`--${prefix}trusted-ca-file needs --${prefix}cert-file`);
    return undefined;
  }
  return {
    certFile: cert,
    keyFile: key!,
    trustedCaFile: ca,
    clientCertAuth: auth,
    flagPrefix: prefix,
  };
}

/** Whether `hostname` can be reached only from this machine. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Refuses a plaintext port on an address other machines may reach, unless `insecure`; returns
 * the warnings to log when `insecure` lets one through.
 */
export function checkPlaintextListen(
  ports: { flag: string; address: Address | undefined; tls: boolean }[],
  insecure: boolean,
): string[] {
  const warnings: string[] = [];
  for (const { flag, address, tls } of ports) {
    if (address === undefined || tls || isLoopback(address.hostname)) continue;
    const what = `${flag} ${address.hostname}:${address.port} is not a loopback address`;
    if (!insecure) {
      if (flag === "--listen-metrics") {
        throw new Error(
          `${what}: it is served without TLS or auth. Bind it to a loopback address, or give ` +
            `--insecure to accept the risk`,
        );
      }
      const tlsFlags = flag === "--listen-peer"
        ? "--peer-cert-file and --peer-key-file"
        : "--cert-file and --key-file";
      throw new Error(
        `${what}: without TLS anyone on the network could read the traffic and forge requests. ` +
          `Give ${tlsFlags}, or --insecure to accept the risk`,
      );
    }
    warnings.push(`${what} and is served without TLS (--insecure)`);
  }
  return warnings;
}

/** Longest wait a timer can take (Deno fires a longer setTimeout at once). */
const TIMER_MS_MAX = 2 ** 31 - 1;

function int(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new Error(`${what} must be a non-negative integer: ${v}`);
  const n = Number(v);
  // A flag in milliseconds becomes a timer; any other count must stay exact.
  const max = what.endsWith("-ms") ? TIMER_MS_MAX : Number.MAX_SAFE_INTEGER;
  if (n > max) throw new Error(`${what} must be at most ${max}: ${v}`);
  return n;
}

function list(v: string | undefined): string[] | undefined {
  return v?.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function positive(v: string | undefined, what: string): number | undefined {
  const n = int(v, what);
  if (n !== undefined && (n < 1 || !Number.isSafeInteger(n))) {
    throw new Error(`${what} must be a positive integer: ${v}`);
  }
  return n;
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: "string", default: "n1" },
      "cluster-id": { type: "string", default: "raftmeta" },
      "data-dir": { type: "string", default: "./data" },
      "listen-client": { type: "string", default: "127.0.0.1:2379" },
      "listen-peer": { type: "string", default: "127.0.0.1:2380" },
      peers: { type: "string", default: "" },
      "peer-client-urls": { type: "string", default: "" },
      "listen-grpc": { type: "string" },
      "listen-metrics": { type: "string" },
      "peer-grpc-urls": { type: "string", default: "" },
      "cluster-secret": { type: "string" },
      "cluster-secret-file": { type: "string" },
      "insecure-peers": { type: "boolean", default: false },
      "serve-peers": { type: "boolean", default: false },
      "cert-file": { type: "string" },
      "key-file": { type: "string" },
      "trusted-ca-file": { type: "string" },
      "client-cert-auth": { type: "boolean", default: false },
      "peer-cert-file": { type: "string" },
      "peer-key-file": { type: "string" },
      "peer-trusted-ca-file": { type: "string" },
      "peer-client-cert-auth": { type: "boolean", default: false },
      insecure: { type: "boolean", default: false },
      "peer-handshake-timeout-ms": { type: "string" },
      "peer-unauthenticated-max": { type: "string" },
      "auth-token": { type: "string", default: "simple" },
      "auth-token-ttl": { type: "string" },
      "auth-pbkdf2-iterations": { type: "string" },
      "election-timeout-min-ms": { type: "string" },
      "election-timeout-max-ms": { type: "string" },
      "heartbeat-interval-ms": { type: "string" },
      "tick-ms": { type: "string" },
      "max-request-bytes": { type: "string" },
      "max-response-bytes": { type: "string" },
      "request-timeout-ms": { type: "string" },
      join: { type: "boolean", default: false },
      "initial-cluster-state": { type: "string", default: "new" },
      "shutdown-transfer-ms": { type: "string" },
      "repair-wal": { type: "boolean", default: false },
      "probe-ms": { type: "string" },
      "join-timeout-ms": { type: "string" },
      "snapshot-entries": { type: "string" },
      "snapshot-bytes": { type: "string" },
      "quota-backend-bytes": { type: "string" },
      "auto-compaction-mode": { type: "string", default: "periodic" },
      "auto-compaction-retention": { type: "string", default: "0" },
      "proposals-pending-max": { type: "string" },
      "proposal-bytes-pending-max": { type: "string" },
      "http-requests-max": { type: "string" },
      "body-read-timeout-ms": { type: "string" },
      "http-header-timeout-ms": { type: "string" },
      "http-idle-timeout-ms": { type: "string" },
      "max-connections": { type: "string" },
      "max-request-head-bytes": { type: "string" },
      "http-server": { type: "string", default: "raftmeta" },
      "grpc-server": { type: "string", default: "raftmeta" },
      "watchers-max": { type: "string" },
      "watch-buffer-events": { type: "string" },
      "watch-progress-ms": { type: "string" },
      cors: { type: "string" },
      "host-whitelist": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const raftConfig: Record<string, number> = {};
  const min = int(values["election-timeout-min-ms"], "--election-timeout-min-ms");
  const max = int(values["election-timeout-max-ms"], "--election-timeout-max-ms");
  const hb = int(values["heartbeat-interval-ms"], "--heartbeat-interval-ms");
  if (min !== undefined) raftConfig.electionTimeoutMinMs = min;
  if (max !== undefined) raftConfig.electionTimeoutMaxMs = max;
  if (hb !== undefined) raftConfig.heartbeatIntervalMs = hb;
  const { secret, warnings } = chooseSecret({
    file: values["cluster-secret-file"],
    flag: values["cluster-secret"],
    env: Deno.env.get("RAFTMETA_CLUSTER_SECRET"),
  });
  for (const { event, warning } of warnings) {
    console.log(
      JSON.stringify({ ts: new Date().toISOString(), node: values.name, event, warning }),
    );
  }
  const clientTls = tlsFilesOf(values, "");
  const peerTls = tlsFilesOf(values, "peer-");
  const clientListen = parseAddress(values["listen-client"]!, "--listen-client");
  const peerListen = parseAddress(values["listen-peer"]!, "--listen-peer");
  const grpcListen = values["listen-grpc"] === undefined
    ? undefined
    : parseAddress(values["listen-grpc"], "--listen-grpc");
  const metricsListen = values["listen-metrics"] === undefined
    ? undefined
    : parseAddress(values["listen-metrics"], "--listen-metrics");
  const plaintextWarnings = checkPlaintextListen([
    { flag: "--listen-client", address: clientListen, tls: clientTls !== undefined },
    { flag: "--listen-grpc", address: grpcListen, tls: clientTls !== undefined },
    { flag: "--listen-metrics", address: metricsListen, tls: false },
    { flag: "--listen-peer", address: peerListen, tls: peerTls !== undefined },
  ], values.insecure);
  for (const warning of plaintextWarnings) {
    console.log(
      JSON.stringify({
        ts: new Date().toISOString(),
        node: values.name,
        event: "insecure-listen",
        warning,
      }),
    );
  }
  const responseBytesMax = positive(values["max-response-bytes"], "--max-response-bytes");
  if (values["auth-token"] !== "simple") {
    throw new Error(
      `--auth-token must be "simple" (raftmeta has no JWT tokens): ${
        JSON.stringify(values["auth-token"])
      }`,
    );
  }
  const authTokenTtlSeconds = positive(values["auth-token-ttl"], "--auth-token-ttl");
  const authPbkdf2Iterations = positive(
    values["auth-pbkdf2-iterations"],
    "--auth-pbkdf2-iterations",
  );
  if (authPbkdf2Iterations !== undefined && authPbkdf2Iterations < PBKDF2_ITERATIONS_MIN) {
    throw new Error(
      `--auth-pbkdf2-iterations must be at least ${PBKDF2_ITERATIONS_MIN}: ${authPbkdf2Iterations}`,
    );
  }
  const httpServer = values["http-server"];
  if (httpServer !== "raftmeta" && httpServer !== "deno") {
    throw new Error(`--http-server must be raftmeta or deno: ${JSON.stringify(httpServer)}`);
  }
  const grpcServer = values["grpc-server"];
  if (grpcServer !== "raftmeta" && grpcServer !== "grpc-js") {
    throw new Error(`--grpc-server must be raftmeta or grpc-js: ${JSON.stringify(grpcServer)}`);
  }
  const initialClusterState = values["initial-cluster-state"];
  if (initialClusterState !== "new" && initialClusterState !== "existing") {
    throw new Error(
      `--initial-cluster-state must be new or existing: ${JSON.stringify(initialClusterState)}`,
    );
  }
  const shutdownTransferMs = int(values["shutdown-transfer-ms"], "--shutdown-transfer-ms") ??
    2000;
  const server = await RaftServer.start(
    {
      nodeId: values.name,
      clusterId: values["cluster-id"],
      dataDir: values["data-dir"],
      clientListen,
      peerListen,
      peers: parsePeers(values.peers!),
      peerClientUrls: parsePeerClientUrls(values["peer-client-urls"]!),
      grpcListen,
      clientTls,
      peerTls,
      peerGrpcUrls: parsePeerClientUrls(values["peer-grpc-urls"]!, "--peer-grpc-urls"),
      secret,
      insecurePeers: values["insecure-peers"],
      servePeers: values["serve-peers"],
      authTokenTtlMs: authTokenTtlSeconds === undefined ? undefined : authTokenTtlSeconds * 1000,
      authPbkdf2Iterations,
      peerHandshakeTimeoutMs: positive(
        values["peer-handshake-timeout-ms"],
        "--peer-handshake-timeout-ms",
      ),
      peerUnauthenticatedMax: positive(
        values["peer-unauthenticated-max"],
        "--peer-unauthenticated-max",
      ),
      raftConfig,
      tickMs: positive(values["tick-ms"], "--tick-ms"),
      requestBytesMax: positive(values["max-request-bytes"], "--max-request-bytes"),
      responseBytesMax,
      requestTimeoutMs: positive(values["request-timeout-ms"], "--request-timeout-ms"),
      join: values.join,
      initialClusterState,
      repairWal: values["repair-wal"],
      probeMs: positive(values["probe-ms"], "--probe-ms"),
      joinTimeoutMs: positive(values["join-timeout-ms"], "--join-timeout-ms"),
      snapshotEntries: positive(values["snapshot-entries"], "--snapshot-entries"),
      snapshotBytes: positive(values["snapshot-bytes"], "--snapshot-bytes"),
      quotaBackendBytes: positive(values["quota-backend-bytes"], "--quota-backend-bytes"),
      autoCompaction: parseAutoCompaction(
        values["auto-compaction-mode"]!,
        values["auto-compaction-retention"]!,
      ),
      proposalsPendingMax: positive(values["proposals-pending-max"], "--proposals-pending-max"),
      proposalBytesPendingMax: positive(
        values["proposal-bytes-pending-max"],
        "--proposal-bytes-pending-max",
      ),
      httpRequestsMax: positive(values["http-requests-max"], "--http-requests-max"),
      bodyReadTimeoutMs: positive(values["body-read-timeout-ms"], "--body-read-timeout-ms"),
      httpServer,
      grpcServer,
      httpHeadTimeoutMs: positive(values["http-header-timeout-ms"], "--http-header-timeout-ms"),
      httpIdleTimeoutMs: positive(values["http-idle-timeout-ms"], "--http-idle-timeout-ms"),
      httpConnectionsMax: positive(values["max-connections"], "--max-connections"),
      httpHeadBytesMax: positive(values["max-request-head-bytes"], "--max-request-head-bytes"),
      watchersMax: int(values["watchers-max"], "--watchers-max"),
      watchBufferEventsMax: positive(values["watch-buffer-events"], "--watch-buffer-events"),
      watchProgressMs: positive(values["watch-progress-ms"], "--watch-progress-ms"),
      corsOrigins: list(values.cors),
      hostWhitelist: list(values["host-whitelist"]),
    },
    handleHttp,
    etcdFastHandler,
  );
  let metrics: MetricsListener | undefined;
  if (metricsListen !== undefined) {
    try {
      metrics = await serveMetrics(server, metricsListen);
    } catch (e) {
      server.close();
      throw new Error(`Cannot listen for metrics: ${(e as Error).message}`);
    }
    server.logEvent("listening-metrics", { metricsUrl: metrics.url });
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    metrics?.close();
    server.logEvent("stopping", {});
    // A leader hands over first, so the cluster does not wait out an election timeout.
    await server.transferLeadershipAway(shutdownTransferMs);
    server.close();
    // Whatever still holds the event loop, the process ends soon after a stop signal.
    setTimeout(() => Deno.exit(0), 2000);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", () => {
    try {
      server.reloadTls();
    } catch (e) {
      server.logEvent("tls-reload-failed", {
        error: (e as Error).message,
        note: "the certificates in use are kept",
      });
    }
  });
  await server.stopped;
  await metrics?.close();
  // Removed from the cluster: the same code its data directory gives at the next start.
  if (server.memberTable.removedSelf !== undefined) return 5;
  return server.fatal === undefined ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    const code = e instanceof StartupError ? e.exitCode : 2;
    console.error(`raftmeta: ${(e as Error).message}`);
    Deno.exit(code);
  }
}
