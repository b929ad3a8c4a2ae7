/**
 * `deno task ctl`: an etcdctl-like command line for a raftmeta cluster.
 *
 * ```
 * deno task ctl put /services/db 10.0.0.7
 * deno task ctl get /services/ --prefix -w table
 * deno task ctl txn --compare-value /leader=n1 --put /leader=n2
 * deno task ctl status
 * deno task ctl watch /services/ --prefix
 * deno task ctl lease grant 10
 * deno task ctl lock /locks/db
 * deno task ctl elect /elections/scheduler n1
 * deno task ctl snapshot save backup.snap
 * deno task ctl snapshot restore backup.snap --data-dir data/n1 --name n1 --initial-cluster n1,n2,n3
 * ```
 *
 * @module
 */

import { AUTH_HELP, AuthUsageError, readSecretLine, runAuthCommand } from "./ctl_auth.ts";
import { authenticatedFetch } from "./auth_client.ts";
import { parseArgs } from "node:util";
import { type NodeRow, NodeTable, type ProgressRow } from "../observe/table.ts";
import { type Compare, LEASE_ID_MAX, type TxnOp } from "../kv/types.ts";
import { Session } from "../coord/session.ts";
import { campaign, lock, type LockHandle, LockLostError, observe } from "../coord/lock.ts";
import { type ClientKeyValue, connect, type RaftmetaClient, RaftmetaError } from "./client.ts";
import { decodeStoreSnapshot } from "../storage/store_snapshot.ts";
import { FileStorage } from "../storage/file_storage.ts";
import { unframeSnapshotFile } from "./etcd.ts";

const HELP = `raftmeta ctl: an etcdctl-like client

Usage: deno task ctl [global flags] <command> [args]

Commands:
  put KEY VALUE [--lease ID]      store VALUE under KEY (prints OK); with --lease the key is
                                  deleted when the lease ends
  get KEY [--prefix]              read KEY, or every key starting with KEY
        [--serializable]          read locally on the node, possibly stale
        [--limit N] [--keys-only] [--count-only]
  del KEY [--prefix]              delete KEY, or every key starting with KEY
  txn [compares] [ops]            compare-and-swap; compares (all must hold):
        --compare-value KEY=VALUE       value equals VALUE
        --compare-version KEY=N         version equals N (0: key absent)
        --compare-create KEY=REV        createRevision equals REV
        --compare-mod KEY=REV           modRevision equals REV
      then, when they hold:   --put KEY=VALUE   --del KEY
      else:                   --else-put KEY=VALUE   --else-del KEY
      prints SUCCESS or FAILURE
  status                          the node table of the cluster (same columns as the notebooks)
  watch KEY [--prefix] [--rev N]  print changes to KEY (or every key starting with KEY) as they
        [--prev-kv]               happen, from revision N if given, until Ctrl-C: per event
                                  its type, key and value lines (and the previous value)
  lease grant TTL                 grant a lease of TTL seconds (prints its id)
  lease revoke ID                 end lease ID now: its keys are deleted
  lease keep-alive ID [--once]    keep lease ID alive (every TTL/3) until Ctrl-C
  lease timetolive ID             remaining TTL and keys of lease ID
  lease list                      every lease id
  alarm list                      the raised alarms (NOSPACE: the store reached its quota)
  alarm disarm                    clear the NOSPACE alarm (free space first: del, compaction)
  lock NAME [--ttl S]             take lock NAME (waiting for earlier holders), print its key and
                                  fencing token, hold it until Ctrl-C, SIGTERM or the end of
                                  stdin, then release it (--ttl: session TTL, default 60)
  lock NAME [--ttl S] -- CMD ...  run CMD while holding the lock (env RAFTMETA_LOCK_KEY and
                                  RAFTMETA_LOCK_TOKEN), release when it exits, exit with its code
                                  (needs --allow-run)
  elect NAME PROPOSAL [--ttl S]   campaign in election NAME; once leader, print the key, the
                                  proposal and the fencing token, lead until Ctrl-C, SIGTERM or
                                  the end of stdin, then resign
  elect --listen NAME             print the leader's value and fencing token each time the
                                  leadership changes, until Ctrl-C
  member list                     the members: id (hex), started or unstarted, name, peer URLs,
                                  client URLs, whether a learner (as etcdctl member list)
  member add NAME --peer-urls URL [--learner] [--client-urls URL] [--grpc-urls URL]
                                  add member NAME (a voter, or a learner with --learner: at most
                                  one at a time); prints its id and the flags to start it with
  member remove ID                remove member ID (hex): it stops, and its data directory
                                  refuses to start again; the leader may remove itself
  member promote ID               make learner ID a voter (refused until it has caught up)
  member update ID --peer-urls URL  change member ID's peer URL
  move-leader ID                  hand leadership to voter ID (hex) and wait until it leads
  snapshot save FILE              write the first endpoint's store snapshot to FILE (raftmeta's
                                  own format; etcdctl snapshot save over gRPC writes the same)
  snapshot restore FILE --data-dir DIR --name ID --initial-cluster ID,ID,...
        [--cluster-id CID]        make DIR (absent or empty) the data directory of member ID of
                                  a new cluster whose store is FILE's; run it for every member,
                                  then start each with serve (same --name, --cluster-id, peers)

${AUTH_HELP}

Global flags:
  --endpoints URL,URL,...         client URLs (default http://127.0.0.1:2379,
                                  or $RAFTMETA_ENDPOINTS)
  --user NAME                     log in as NAME (when auth is enabled); the password comes from
                                  $RAFTMETA_PASSWORD, else a line of stdin. NAME:PASSWORD works
                                  too (as etcdctl) but shows it in the process list (warned)
  --cacert FILE                   trust the CA certificates in FILE (PEM) for https endpoints
                                  (a cluster with --cert-file and a private CA; as etcdctl)
  --cert FILE, --key FILE         present this client certificate and key (PEM) to https
                                  endpoints (a cluster with --client-cert-auth)
  -w, --write-out simple|table|json   output format (default simple)
  --timeout-ms N                  give up after N ms (default 10000)
  -h, --help                      this text

Exit codes: 0 done, 1 refused or failed, 2 usage error.
`;

/**
 * The fetch the ctl sends with: the global one, or, with `--cacert` and/or `--cert`/`--key`, one
 * whose HTTP client trusts that CA and presents that certificate (etcdctl's flags).
 */
function httpsFetch(
  cacert: string | undefined,
  cert: string | undefined,
  key: string | undefined,
): typeof fetch {
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError("--cert and --key go together: give both or neither");
  }
  if (cacert === undefined && cert === undefined) return fetch;
  const read = (path: string, flag: string) => {
    try {
      return Deno.readTextFileSync(path);
    } catch (e) {
      throw new UsageError(`${flag}: cannot read ${path}: ${(e as Error).message}`);
    }
  };
  const client = Deno.createHttpClient({
    ...(cacert === undefined ? {} : { caCerts: [read(cacert, "--cacert")] }),
    ...(cert === undefined ? {} : { cert: read(cert, "--cert"), key: read(key!, "--key") }),
  });
  return (input, init) => fetch(input, { ...init, client });
}

function splitPair(text: string, flag: string): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new UsageError(`${flag} needs KEY=VALUE: ${JSON.stringify(text)}`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

class UsageError extends Error {}

/** A command that cannot be done (exit code 1), e.g. a file that is not a snapshot. */
class Failed extends Error {}

/** Largest integer the API takes: 2^53 - 1 (docs/api.md, "Integer fields"). */
const INT_MAX = Number.MAX_SAFE_INTEGER;
/** Longest lease TTL, as etcd's: 9,000,000,000 seconds. */
const LEASE_TTL_SECONDS_MAX = 9_000_000_000;

function kvRow(kv: ClientKeyValue): Record<string, unknown> {
  return {
    key: kv.key,
    value: kv.text,
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
    version: kv.version,
  };
}

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = "+" + widths.map((w) => "-".repeat(w + 2)).join("+") + "+";
  const fmt = (r: string[]) => "| " + r.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  return [line, fmt(header), line, ...rows.map(fmt), line].join("\n");
}

/**
 * `text` as a whole decimal number from `min` to `max`; `max` is at most 2^53 - 1, so the number
 * sent is exactly the one typed (a longer one used to be rounded).
 */
function decimal(text: string | undefined, what: string, min: number, max: number): number {
  const n = text !== undefined && /^\d{1,16}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new UsageError(`${what} needs a whole number from ${min} to ${max}: ${text}`);
  }
  return n;
}

function leaseId(text: string | undefined, what: string): number {
  return decimal(text, `${what} (a lease id)`, 1, LEASE_ID_MAX);
}

/**
 * Runs the CLI with `args`; returns the exit code. Output goes to `out`. `signal` ends the
 * commands that run until interrupted (`watch`, `lease keep-alive`); by default Ctrl-C does.
 */
export async function runCtl(
  args: string[],
  out: (line: string) => void = console.log,
  signal?: AbortSignal,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        endpoints: { type: "string" },
        "write-out": { type: "string", short: "w", default: "simple" },
        "timeout-ms": { type: "string", default: "10000" },
        prefix: { type: "boolean", default: false },
        serializable: { type: "boolean", default: false },
        limit: { type: "string" },
        "keys-only": { type: "boolean", default: false },
        "count-only": { type: "boolean", default: false },
        "compare-value": { type: "string", multiple: true },
        "compare-version": { type: "string", multiple: true },
        "compare-create": { type: "string", multiple: true },
        "compare-mod": { type: "string", multiple: true },
        put: { type: "string", multiple: true },
        del: { type: "string", multiple: true },
        "else-put": { type: "string", multiple: true },
        "else-del": { type: "string", multiple: true },
        lease: { type: "string" },
        rev: { type: "string" },
        "prev-kv": { type: "boolean", default: false },
        once: { type: "boolean", default: false },
        ttl: { type: "string", default: "60" },
        listen: { type: "boolean", default: false },
        "data-dir": { type: "string" },
        name: { type: "string" },
        "initial-cluster": { type: "string" },
        "cluster-id": { type: "string", default: "raftmeta" },
        "peer-urls": { type: "string" },
        "client-urls": { type: "string" },
        "grpc-urls": { type: "string" },
        learner: { type: "boolean", default: false },
        user: { type: "string" },
        cacert: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        "no-password": { type: "boolean", default: false },
        "from-key": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    console.error(`ctl: ${(e as Error).message}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  if (v.help || positionals.length === 0) {
    out(HELP);
    return v.help ? 0 : 2;
  }
  const format = v["write-out"];
  if (!["simple", "table", "json"].includes(format!)) {
    console.error(`ctl: -w must be simple, table or json: ${format}`);
    return 2;
  }
  const endpoints = v.endpoints ?? Deno.env.get("RAFTMETA_ENDPOINTS") ?? "http://127.0.0.1:2379";
  const [command, ...rest] = positionals;
  const need = (n: number, usage: string) => {
    if (rest.length !== n) throw new UsageError(`usage: ${usage}`);
  };
  try {
    // Timers take at most 2^31 - 1 ms; a longer one would fire at once.
    const timeoutMs = decimal(v["timeout-ms"], "--timeout-ms", 1, 2 ** 31 - 1);
    const tlsFetch = httpsFetch(v.cacert, v.cert, v.key);
    let authFetch: typeof fetch = tlsFetch;
    if (v.user !== undefined) {
      const colon = v.user.indexOf(":");
      let name = v.user;
      let password = Deno.env.get("RAFTMETA_PASSWORD");
      if (colon >= 0) {
        console.error(
          "ctl: warning: a password in --user is visible in the process list; " +
            "use --user NAME with $RAFTMETA_PASSWORD",
        );
        name = v.user.slice(0, colon);
        password = v.user.slice(colon + 1);
      }
      password ??= await readSecretLine(`Password of ${name}: `);
      authFetch = authenticatedFetch(name, password, tlsFetch);
    }
    const client = connect(endpoints, { timeoutMs, fetch: authFetch });
    if (command === "user" || command === "role" || command === "auth") {
      return await runAuthCommand(command, rest, {
        endpoints: endpoints.split(",").map((e) => e.trim()).filter((e) => e !== ""),
        fetch: authFetch,
        out,
        json: format === "json",
        timeoutMs,
        prefix: v.prefix!,
        fromKey: v["from-key"]!,
        noPassword: v["no-password"]!,
        newPassword: async (user) =>
          Deno.env.get("RAFTMETA_NEW_PASSWORD") ??
            await readSecretLine(`Password of new user ${user}: `),
      });
    }
    switch (command) {
      case "put": {
        need(2, "put KEY VALUE [--lease ID]");
        const lease = v.lease === undefined ? undefined : leaseId(v.lease, "--lease");
        const r = await client.put(rest[0], rest[1], { lease });
        out(format === "json" ? JSON.stringify(r) : "OK");
        return 0;
      }
      case "get": {
        need(1, "get KEY [--prefix]");
        const r = await client.range(v.prefix ? { prefix: rest[0] } : { key: rest[0] }, {
          serializable: v.serializable,
          limit: v.limit === undefined ? undefined : decimal(v.limit, "--limit", 0, INT_MAX),
          keysOnly: v["keys-only"],
          countOnly: v["count-only"],
        });
        if (format === "json") {
          out(JSON.stringify({ ...r, kvs: r.kvs.map(kvRow) }));
        } else if (format === "table") {
          out(table(
            ["key", "value", "createRevision", "modRevision", "version"],
            r.kvs.map((kv) => [
              kv.key,
              kv.text,
              String(kv.createRevision),
              String(kv.modRevision),
              String(kv.version),
            ]),
          ));
        } else if (v["count-only"]) {
          out(String(r.count));
        } else {
          for (const kv of r.kvs) {
            out(kv.key);
            if (!v["keys-only"]) out(kv.text);
          }
        }
        return 0;
      }
      case "del": {
        need(1, "del KEY [--prefix]");
        const r = await client.delete(v.prefix ? { prefix: rest[0] } : rest[0]);
        out(format === "json" ? JSON.stringify(r) : String(r.deleted));
        return 0;
      }
      case "txn": {
        need(0, "txn --compare-value KEY=VALUE ... --put KEY=VALUE ...");
        const enc = new TextEncoder();
        const compare: Compare[] = [];
        for (const c of v["compare-value"] ?? []) {
          const [key, value] = splitPair(c, "--compare-value");
          compare.push({ key, target: "value", result: "equal", value: enc.encode(value) });
        }
        const numeric = [
          ["compare-version", "version"],
          ["compare-create", "createRevision"],
          ["compare-mod", "modRevision"],
        ] as const;
        for (const [flag, target] of numeric) {
          for (const c of v[flag] ?? []) {
            const [key, n] = splitPair(c, `--${flag}`);
            const value = decimal(n, `--${flag} ${key}`, 0, INT_MAX);
            compare.push({ key, target, result: "equal", value });
          }
        }
        const ops = (puts: string[] = [], dels: string[] = []): TxnOp[] => [
          ...puts.map((p): TxnOp => {
            const [key, value] = splitPair(p, "--put");
            return { type: "put", key, value: enc.encode(value), prevKv: false };
          }),
          ...dels.map((key): TxnOp => ({ type: "delete", range: { key }, prevKv: false })),
        ];
        const r = await client.txn({
          compare,
          success: ops(v.put, v.del),
          failure: ops(v["else-put"], v["else-del"]),
        });
        out(format === "json" ? JSON.stringify(r) : r.succeeded ? "SUCCESS" : "FAILURE");
        return r.succeeded ? 0 : 1;
      }
      case "alarm": {
        need(1, "alarm list|disarm");
        if (rest[0] !== "list" && rest[0] !== "disarm") {
          throw new UsageError(`alarm needs "list" or "disarm": ${JSON.stringify(rest[0])}`);
        }
        const alarms = await client.alarm(rest[0]);
        if (format === "json") out(JSON.stringify(alarms));
        else for (const a of alarms) out(`memberID:${a.memberID} alarm:${a.alarm}`);
        return 0;
      }
      case "member":
        return await memberCommand(client, rest, v, format!, out);
      case "move-leader": {
        need(1, "move-leader ID");
        const target = hexId(rest[0]);
        const before = await client.status();
        const r = await client.cluster("/v3/maintenance/transfer-leadership", {
          targetID: target.toString(),
        });
        if (format === "json") out(JSON.stringify(r));
        else {
          // deno-lint-ignore no-explicit-any
          const rows = (before.rows ?? []) as any[];
          const leader = rows.find((x) => x.role === "Leader")?.id ?? before.leader;
          const members = (await client.cluster("/v3/cluster/member/list")).members ?? [];
          // deno-lint-ignore no-explicit-any
          const from = members.find((m: any) => m.name === leader)?.ID;
          out(
            `Leadership transferred from ${
              from === undefined ? "?" : BigInt(from).toString(16)
            } to ${target.toString(16)}`,
          );
        }
        return 0;
      }
      case "status": {
        need(0, "status");
        const s = await client.status();
        if (format === "json") {
          out(JSON.stringify(s, null, 2));
          return 0;
        }
        // deno-lint-ignore no-explicit-any
        const rows: NodeRow[] = (s.rows as any[]).map((r) => ({
          id: r.id,
          role: r.role ?? "-",
          term: r.term ?? 0,
          votedFor: r.votedFor ?? undefined,
          leader: r.leader ?? undefined,
          lastLogIndex: r.lastLogIndex ?? 0,
          lastLogTerm: r.lastLogTerm ?? 0,
          commitIndex: r.commitIndex ?? 0,
          lastApplied: r.lastApplied ?? 0,
          // A learner gets the log but never votes: the table says so.
          status: (s.learners as string[] | undefined)?.includes(r.id)
            ? `${r.status} (learner)`
            : r.status,
        }));
        const t = new NodeTable({
          title: `cluster ${s.clusterId} as seen by ${s.answeredBy}`,
          atMs: Date.now(),
          rows,
          progress: s.progress as ProgressRow[],
          logs: new Map(),
          keys: new Map(),
        });
        out(format === "table" ? t.toString() : t.toString().split("\n").slice(1).join("\n"));
        if (Array.isArray(s.voters)) {
          out(`voters: ${s.voters.join(",")}`);
          // deno-lint-ignore no-explicit-any
          const learners = s.learners as any[];
          out(`learners: ${learners.length === 0 ? "none" : learners.join(",")}`);
          if (s.pendingChange !== null) out(`pending membership change: ${s.pendingChange}`);
        }
        // Where etcd's gRPC API is served (--listen-grpc), for etcdctl --endpoints.
        // deno-lint-ignore no-explicit-any
        for (const r of s.rows as any[]) {
          if (typeof r.grpcUrl === "string") out(`${r.id} gRPC ${r.grpcUrl}`);
        }
        return 0;
      }
      case "watch": {
        need(1, "watch KEY [--prefix] [--rev N] [--prev-kv]");
        const startRevision = v.rev === undefined ? undefined : decimal(v.rev, "--rev", 0, INT_MAX);
        const stop = interruptible(signal);
        try {
          const stream = client.watch(v.prefix ? { prefix: rest[0] } : { key: rest[0] }, {
            startRevision,
            prevKv: v["prev-kv"],
            signal: stop.signal,
          });
          for await (const r of stream) {
            for (const e of r.events) {
              if (format === "json") {
                out(JSON.stringify({ revision: r.revision, ...e, kv: kvRow(e.kv) }));
                continue;
              }
              out(e.type);
              out(e.key);
              if (e.prevKv !== undefined) out(e.prevKv.text);
              out(e.kv.text);
            }
          }
        } finally {
          stop.dispose();
        }
        return 0;
      }
      case "lease": {
        const [sub, arg] = rest;
        switch (sub) {
          case "grant": {
            need(2, "lease grant TTL");
            const r = await client.leaseGrant(ttlSeconds(arg, "lease grant TTL"));
            out(
              format === "json" ? JSON.stringify(r) : `lease ${r.id} granted with TTL(${r.ttl}s)`,
            );
            return 0;
          }
          case "revoke": {
            need(2, "lease revoke ID");
            const id = leaseId(arg, "lease revoke");
            await client.leaseRevoke(id);
            out(format === "json" ? JSON.stringify({ id, revoked: true }) : `lease ${id} revoked`);
            return 0;
          }
          case "timetolive": {
            need(2, "lease timetolive ID");
            const r = await client.leaseTimeToLive(leaseId(arg, "lease timetolive"));
            if (format === "json") out(JSON.stringify(r));
            else if (r.ttl < 0) out(`lease ${r.id} already expired`);
            else {
              out(
                `lease ${r.id} granted with TTL(${r.grantedTtl}s), remaining(${r.ttl}s), ` +
                  `attached keys(${JSON.stringify(r.keys)})`,
              );
            }
            return 0;
          }
          case "list": {
            need(1, "lease list");
            const ids = await client.leases();
            if (format === "json") out(JSON.stringify({ leases: ids }));
            else {
              out(`found ${ids.length} leases`);
              for (const id of ids) out(String(id));
            }
            return 0;
          }
          case "keep-alive": {
            need(2, "lease keep-alive ID [--once]");
            const id = leaseId(arg, "lease keep-alive");
            const stop = interruptible(signal);
            try {
              // One streaming request (etcd's LeaseKeepAlive stream), reopened if a node fails.
              for await (const r of client.leaseKeepAlives(id, { signal: stop.signal })) {
                out(`lease ${id} keepalived with TTL(${r.ttl})`);
                if (v.once) break;
              }
            } finally {
              stop.dispose();
            }
            return 0;
          }
          default:
            throw new UsageError(
              `usage: lease grant TTL | revoke ID | keep-alive ID | timetolive ID | list`,
            );
        }
      }
      case "lock": {
        if (rest.length < 1) throw new UsageError("usage: lock NAME [--ttl S] [-- COMMAND ...]");
        return await lockCommand(client, rest[0], rest.slice(1), ttlSeconds(v.ttl!), {
          out,
          json: format === "json",
          signal,
        });
      }
      case "snapshot": {
        if (rest[0] === "save") {
          need(2, "snapshot save FILE");
          const bytes = await snapshotSave(endpoints.split(",")[0], rest[1], timeoutMs, authFetch);
          out(
            format === "json"
              ? JSON.stringify({ path: rest[1], bytes })
              : `Snapshot saved at ${rest[1]}`,
          );
          return 0;
        }
        if (rest[0] === "restore") {
          need(2, "snapshot restore FILE --data-dir DIR --name ID --initial-cluster ID,ID,...");
          const r = await snapshotRestore(rest[1], {
            dataDir: v["data-dir"],
            name: v.name,
            initialCluster: v["initial-cluster"],
            clusterId: v["cluster-id"]!,
          });
          out(
            format === "json"
              ? JSON.stringify(r)
              : `Restored ${rest[1]} into ${v["data-dir"]}: revision ${r.revision}, ` +
                `${r.keys} keys, log index ${r.index}, voters ${r.voters.join(",")}`,
          );
          return 0;
        }
        throw new UsageError(`snapshot needs "save" or "restore": ${JSON.stringify(rest[0])}`);
      }
      case "elect": {
        if (v.listen) {
          need(1, "elect --listen NAME");
          return await listenCommand(client, rest[0], { out, json: format === "json", signal });
        }
        need(2, "elect NAME PROPOSAL [--ttl S] (or elect --listen NAME)");
        return await electCommand(client, rest[0], rest[1], ttlSeconds(v.ttl!), {
          out,
          json: format === "json",
          signal,
        });
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)} (see --help)`);
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof AuthUsageError) {
      console.error(`ctl: ${e.message}`);
      return 2;
    }
    if (e instanceof RaftmetaError) {
      console.error(`ctl: ${e.message}${e.maybeApplied ? " (it may have been applied)" : ""}`);
      return 1;
    }
    if (e instanceof LockLostError || e instanceof Failed) {
      console.error(`ctl: ${e.message}`);
      return 1;
    }
    if (command === "user" || command === "role" || command === "auth" || v.user !== undefined) {
      console.error(`ctl: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

/**
 * Saves the store snapshot of the node at `endpoint` (its `/v3/maintenance/snapshot` stream) to
 * `path`: written to `path.part`, synced, then renamed, as etcdctl does. Returns its size.
 */
/** A member id as etcdctl prints it: hex, at most 16 digits. */
function hexId(text: string): bigint {
  if (!/^[0-9a-fA-F]{1,16}$/.test(text)) {
    throw new UsageError(`Member ID must be hexadecimal (as member list prints it): ${text}`);
  }
  return BigInt(`0x${text}`);
}

// deno-lint-ignore no-explicit-any
function memberLine(m: any): string {
  const started = m.clientURLs?.length > 0 || m.name !== "" ? "started" : "unstarted";
  return [
    BigInt(m.ID).toString(16),
    started,
    m.name ?? "",
    (m.peerURLs ?? []).join(","),
    (m.clientURLs ?? []).join(","),
    String(m.isLearner === true),
  ].join(", ");
}

/** `ctl member list|add|remove|promote|update`. */
async function memberCommand(
  client: RaftmetaClient,
  rest: string[],
  v: Record<string, unknown>,
  format: string,
  out: (line: string) => void,
): Promise<number> {
  const [sub, ...args] = rest;
  const one = (usage: string) => {
    if (args.length !== 1) throw new UsageError(`usage: member ${usage}`);
    return args[0];
  };
  const urls = (flag: string) => {
    const text = v[flag] as string | undefined;
    return text === undefined ? undefined : text.split(",").map((s) => s.trim()).filter(Boolean);
  };
  const print = (r: Record<string, unknown>, line: string) =>
    out(format === "json" ? JSON.stringify(r) : line);
  const clusterHex = (r: Record<string, unknown>) =>
    // deno-lint-ignore no-explicit-any
    BigInt((r.header as any)?.cluster_id ?? "0").toString(16);
  switch (sub) {
    case "list": {
      if (args.length !== 0) throw new UsageError("usage: member list");
      const r = await client.cluster("/v3/cluster/member/list");
      if (format === "json") out(JSON.stringify(r));
      else if (format === "table") {
        out(table(
          ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"],
          (r.members ?? []).map((m: unknown) => memberLine(m).split(", ")),
        ));
      } else for (const m of r.members ?? []) out(memberLine(m));
      return 0;
    }
    case "add": {
      const name = one("add NAME --peer-urls URL [--learner] [--client-urls URL]");
      const peerURLs = urls("peer-urls");
      if (peerURLs === undefined) throw new UsageError("member add needs --peer-urls URL");
      const body: Record<string, unknown> = { name, peerURLs, isLearner: v.learner === true };
      const clientURLs = urls("client-urls");
      if (clientURLs !== undefined) body.clientURLs = clientURLs;
      const grpcURLs = urls("grpc-urls");
      if (grpcURLs !== undefined) body.grpcURLs = grpcURLs;
      const r = await client.cluster("/v3/cluster/member/add", body);
      const id = BigInt(r.member.ID).toString(16);
      // deno-lint-ignore no-explicit-any
      const others = (r.members as any[]).filter((m) => m.name !== name);
      const hostPort = (u: string) => u.replace(/^https?:\/\//, "");
      print(
        r,
        [
          `Member ${id} added to cluster ${clusterHex(r)}`,
          "",
          "Start it with an empty data directory:",
          `  deno task serve --name ${name} --listen-peer ${hostPort(peerURLs[0])} ` +
          (clientURLs === undefined ? "" : `--listen-client ${hostPort(clientURLs[0])} `) +
          `--peers ${others.map((m) => `${m.name}=${hostPort(m.peerURLs[0] ?? "")}`).join(",")} ` +
          `--initial-cluster-state existing`,
        ].join("\n"),
      );
      return 0;
    }
    case "remove": {
      const id = hexId(one("remove ID"));
      const r = await client.cluster("/v3/cluster/member/remove", { ID: id.toString() });
      print(r, `Member ${id.toString(16)} removed from cluster ${clusterHex(r)}`);
      return 0;
    }
    case "promote": {
      const id = hexId(one("promote ID"));
      const r = await client.cluster("/v3/cluster/member/promote", { ID: id.toString() });
      print(r, `Member ${id.toString(16)} promoted in cluster ${clusterHex(r)}`);
      return 0;
    }
    case "update": {
      const id = hexId(one("update ID --peer-urls URL"));
      const peerURLs = urls("peer-urls");
      if (peerURLs === undefined) throw new UsageError("member update needs --peer-urls URL");
      const r = await client.cluster("/v3/cluster/member/update", {
        ID: id.toString(),
        peerURLs,
      });
      print(r, `Member ${id.toString(16)} updated in cluster ${clusterHex(r)}`);
      return 0;
    }
  }
  throw new UsageError(`member needs list, add, remove, promote or update: ${JSON.stringify(sub)}`);
}

async function snapshotSave(
  endpoint: string,
  path: string,
  timeoutMs: number,
  fetch: typeof globalThis.fetch,
): Promise<number> {
  let res: Response;
  try {
    res = await fetch(`${endpoint.replace(/\/$/, "")}/v3/maintenance/snapshot`, {
      method: "POST",
      body: "{}",
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new RaftmetaError(`Cannot reach ${endpoint}: ${(e as Error).message}`, 0);
  }
  if (!res.ok || res.body === null) {
    const text = await res.text();
    throw new RaftmetaError(`Snapshot refused by ${endpoint}: ${text}`, res.status);
  }
  const part = `${path}.part`;
  const file = await Deno.open(part, { write: true, create: true, truncate: true, mode: 0o600 });
  let bytes = 0;
  try {
    let rest = "";
    const write = async (line: string) => {
      if (line.trim() === "") return;
      const message = JSON.parse(line);
      if (message.error !== undefined) {
        throw new RaftmetaError(`Snapshot broke off: ${JSON.stringify(message.error)}`, 0);
      }
      const blob = Uint8Array.from(atob(message.result?.blob ?? ""), (c) => c.charCodeAt(0));
      bytes += blob.length;
      for (let at = 0; at < blob.length;) at += await file.write(blob.subarray(at));
    };
    for await (const text of res.body.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) await write(line);
    }
    await write(rest);
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(part, path);
  return bytes;
}

/** What {@linkcode snapshotRestore} made. */
interface Restored {
  readonly dataDir: string;
  readonly index: number;
  readonly revision: number;
  readonly keys: number;
  readonly voters: string[];
}

/**
 * Makes `dataDir` the data directory of member `name` of a new cluster whose store is the
 * snapshot in `file` (raftmeta's store snapshot format, from `snapshot save` or etcdctl's
 * `snapshot save` against raftmeta): the store becomes a Raft snapshot at its applied index, term 1,
 * with the voters of `--initial-cluster`. Every member restores the same file, so all start equal.
 */
async function snapshotRestore(
  file: string,
  o: { dataDir?: string; name?: string; initialCluster?: string; clusterId: string },
): Promise<Restored> {
  if (o.dataDir === undefined || o.name === undefined || o.initialCluster === undefined) {
    throw new UsageError(
      "usage: snapshot restore FILE --data-dir DIR --name ID --initial-cluster ID,ID,...",
    );
  }
  // etcd's form "n1=http://...,n2=..." is accepted: the ids are what counts.
  const voters = o.initialCluster.split(",").map((m) => m.split("=")[0].trim()).filter((m) =>
    m !== ""
  ).sort();
  if (new Set(voters).size !== voters.length) {
    throw new UsageError(`--initial-cluster names a member twice: ${o.initialCluster}`);
  }
  if (!voters.includes(o.name)) {
    throw new UsageError(
      `--initial-cluster must include --name ${JSON.stringify(o.name)}: ${o.initialCluster}`,
    );
  }
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(o.dataDir)];
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (entries.length > 0) {
    throw new Failed(`Data directory "${o.dataDir}" is not empty: restore into a new one`);
  }
  let data: Uint8Array;
  try {
    data = Deno.readFileSync(file);
  } catch (e) {
    throw new Failed(`Cannot read ${file}: ${(e as Error).message}`);
  }
  let store;
  try {
    data = (await unframeSnapshotFile(data)).slice();
    store = decodeStoreSnapshot(data);
  } catch (e) {
    throw new Failed(`Cannot restore ${file}: ${(e as Error).message}`);
  }
  const index = store.appliedIndex;
  if (index < 1) {
    throw new Failed(`${file} holds a store that applied no entry: nothing to restore`);
  }
  const storage = FileStorage.open(o.dataDir, { clusterId: o.clusterId, nodeId: o.name });
  try {
    storage.saveSnapshot({ meta: { index, term: 1, voters }, data });
    storage.save({ term: 1, votedFor: undefined, commitIndex: index }, []);
  } finally {
    storage.close();
  }
  return { dataDir: o.dataDir, index, revision: store.revision, keys: store.size, voters };
}

function ttlSeconds(text: string | undefined, what = "--ttl"): number {
  return decimal(text, `${what} (seconds)`, 1, LEASE_TTL_SECONDS_MAX);
}

/** Where a holding command writes and what ends it. */
interface HoldOptions {
  readonly out: (line: string) => void;
  readonly json: boolean;
  readonly signal?: AbortSignal;
}

/**
 * Resolves, with why, when the holder should let go: `signal` when given; otherwise Ctrl-C,
 * SIGTERM or (with `stdin`) the end of stdin.
 */
function released(
  signal: AbortSignal | undefined,
  stdin: boolean,
): { done: Promise<string>; dispose(): void } {
  const stop = interruptible(signal);
  const cleanups: (() => void)[] = [stop.dispose];
  const done = new Promise<string>((resolve) => {
    if (stop.signal.aborted) return resolve("interrupted");
    stop.signal.addEventListener("abort", () => resolve("interrupted"), { once: true });
    if (signal !== undefined) return; // driven by the caller only
    const onTerm = () => resolve("terminated");
    Deno.addSignalListener("SIGTERM", onTerm);
    cleanups.push(() => Deno.removeSignalListener("SIGTERM", onTerm));
    if (!stdin) return;
    // The end of stdin (Ctrl-D, or a supervising process that died) lets go too. Deno cannot
    // tell a pipe from /dev/null without read permission, so `< /dev/null` lets go at once.
    (async () => {
      try {
        for await (const _ of Deno.stdin.readable) { /* discard */ }
      } catch { /* closed */ }
      resolve("stdin closed");
    })();
  });
  return { done, dispose: () => cleanups.forEach((c) => c()) };
}

/** `ctl lock NAME [-- COMMAND ...]`. */
async function lockCommand(
  client: RaftmetaClient,
  name: string,
  command: string[],
  ttl: number,
  options: HoldOptions,
): Promise<number> {
  if (command.length > 0 && Deno.permissions.querySync({ name: "run" }).state !== "granted") {
    throw new UsageError(
      `lock with a command needs permission to run it: deno run --allow-net --allow-env ` +
        `--allow-run src/net/ctl.ts lock ${name} -- ${command.join(" ")}`,
    );
  }
  const coord = client.coord();
  const session = await Session.create(coord, { ttlMs: ttl * 1000 });
  // A command inherits stdin: its end is the command's business, not a reason to let go.
  const stop = released(options.signal, command.length === 0);
  let held: LockHandle | undefined;
  try {
    // Ctrl-C while waiting gives up the place in the queue: the session's key goes with it.
    const pending = lock(session, name);
    pending.catch(() => {}); // given up on below: its LockLostError is expected
    const got = await Promise.race([pending, stop.done]);
    if (typeof got === "string") return 0;
    held = got;
    if (command.length === 0) {
      if (options.json) {
        options.out(JSON.stringify({ key: held.key, fencingToken: held.fencingToken }));
      } else {
        options.out(held.key);
        options.out(`fencing token ${held.fencingToken}`);
      }
      const why = await Promise.race([stop.done, session.ended().then(() => "lost")]);
      if (why === "lost") {
        console.error(`ctl: lost the lock ${JSON.stringify(held.key)}: ${session.lostReason}`);
        return 1;
      }
      return 0;
    }
    const child = new Deno.Command(command[0], {
      args: command.slice(1),
      env: { RAFTMETA_LOCK_KEY: held.key, RAFTMETA_LOCK_TOKEN: String(held.fencingToken) },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const why = await Promise.race([
      child.status.then(() => "exited"),
      stop.done,
      session.ended().then(() => "lost"),
    ]);
    if (why !== "exited") {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    const status = await child.status;
    if (why === "lost") {
      console.error(`ctl: lost the lock ${JSON.stringify(held.key)}: ${session.lostReason}`);
      return 1;
    }
    return status.code;
  } finally {
    stop.dispose();
    // Revoking the session deletes the lock key with it; a lost session has nothing to release.
    if (session.state === "alive") await session.close().catch(() => {});
  }
}

/** `ctl elect NAME PROPOSAL`. */
async function electCommand(
  client: RaftmetaClient,
  name: string,
  proposal: string,
  ttl: number,
  options: HoldOptions,
): Promise<number> {
  const session = await Session.create(client.coord(), { ttlMs: ttl * 1000 });
  const stop = released(options.signal, true);
  try {
    const pending = campaign(session, name, proposal);
    pending.catch(() => {}); // given up on below: its LockLostError is expected
    const won = await Promise.race([pending, stop.done]);
    if (typeof won === "string") return 0;
    if (options.json) {
      options.out(
        JSON.stringify({ key: won.key, value: proposal, fencingToken: won.fencingToken }),
      );
    } else {
      options.out(won.key);
      options.out(proposal);
      options.out(`fencing token ${won.fencingToken}`);
    }
    const why = await Promise.race([stop.done, session.ended().then(() => "lost")]);
    if (why === "lost") {
      console.error(`ctl: lost the leadership of ${JSON.stringify(name)}: ${session.lostReason}`);
      return 1;
    }
    await won.resign();
    return 0;
  } finally {
    stop.dispose();
    if (session.state === "alive") await session.close().catch(() => {});
  }
}

/** `ctl elect --listen NAME`. */
async function listenCommand(
  client: RaftmetaClient,
  name: string,
  options: HoldOptions,
): Promise<number> {
  const stop = released(options.signal, true);
  const coord = client.coord();
  const leaders = observe(coord, name);
  try {
    for (;;) {
      const next = await Promise.race([leaders.next(), stop.done]);
      if (typeof next === "string" || next.done) return 0;
      const l = next.value;
      if (options.json) options.out(JSON.stringify(l ?? null));
      else if (l === undefined) options.out("(no leader)");
      else {
        options.out(l.value);
        options.out(`fencing token ${l.fencingToken}`);
      }
    }
  } finally {
    stop.dispose();
    coord.close(); // ends the watch the observer waits on, so it can return
    await leaders.return(undefined);
  }
}

/** An abort signal that fires on `signal`, or on Ctrl-C when none is given. */
function interruptible(signal?: AbortSignal): { signal: AbortSignal; dispose: () => void } {
  if (signal !== undefined) return { signal, dispose: () => {} };
  const abort = new AbortController();
  const onInt = () => abort.abort();
  Deno.addSignalListener("SIGINT", onInt);
  return { signal: abort.signal, dispose: () => Deno.removeSignalListener("SIGINT", onInt) };
}

if (import.meta.main) {
  Deno.exit(await runCtl(Deno.args));
}
