/**
 * `deno task ctl`: an etcdctl-like command line for a raftmeta cluster.
 *
 * ```
 * deno task ctl put /services/db 10.0.0.7
 * deno task ctl get /services/ --prefix -w table
 * deno task ctl txn --compare-value /leader=n1 --put /leader=n2
 * deno task ctl status
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type NodeRow, NodeTable, type ProgressRow } from "../observe/table.ts";
import type { Compare, TxnOp } from "../kv/types.ts";
import { type ClientKeyValue, connect, RaftmetaError } from "./client.ts";

const HELP = `raftmeta ctl: an etcdctl-like client

Usage: deno task ctl [global flags] <command> [args]

Commands:
  put KEY VALUE                   store VALUE under KEY (prints OK)
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

Global flags:
  --endpoints URL,URL,...         client URLs (default http://127.0.0.1:2379,
                                  or $RAFTMETA_ENDPOINTS)
  -w, --write-out simple|table|json   output format (default simple)
  --timeout-ms N                  give up after N ms (default 10000)
  -h, --help                      this text

Exit codes: 0 done, 1 refused or failed, 2 usage error.
`;

function splitPair(text: string, flag: string): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new UsageError(`${flag} needs KEY=VALUE: ${JSON.stringify(text)}`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

class UsageError extends Error {}

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

/** Runs the CLI with `args`; returns the exit code. Output goes to `out`. */
export async function runCtl(
  args: string[],
  out: (line: string) => void = console.log,
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
  const client = connect(endpoints, { timeoutMs: Number(v["timeout-ms"]) });
  const [command, ...rest] = positionals;
  const need = (n: number, usage: string) => {
    if (rest.length !== n) throw new UsageError(`usage: ${usage}`);
  };
  try {
    switch (command) {
      case "put": {
        need(2, "put KEY VALUE");
        const r = await client.put(rest[0], rest[1]);
        out(format === "json" ? JSON.stringify(r) : "OK");
        return 0;
      }
      case "get": {
        need(1, "get KEY [--prefix]");
        const r = await client.range(v.prefix ? { prefix: rest[0] } : { key: rest[0] }, {
          serializable: v.serializable,
          limit: v.limit === undefined ? undefined : Number(v.limit),
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
            if (!/^\d+$/.test(n)) throw new UsageError(`--${flag} needs a number: ${c}`);
            compare.push({ key, target, result: "equal", value: Number(n) });
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
          status: r.status,
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
        return 0;
      }
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)} (see --help)`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`ctl: ${e.message}`);
      return 2;
    }
    if (e instanceof RaftmetaError) {
      console.error(`ctl: ${e.message}${e.maybeApplied ? " (it may have been applied)" : ""}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await runCtl(Deno.args));
}
