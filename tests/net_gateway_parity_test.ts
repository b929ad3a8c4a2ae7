// The JSON gateway and the gRPC Maintenance service as etcd 3.4 answers them (issue 18, item 3
// and the Maintenance part of item 1). Each expectation is checked against raftmeta and, when
// `etcd` 3.4 is on PATH, against a real etcd started on 127.0.0.1 with the same request: the
// expectation is etcd's behaviour, not ours. Without etcd the etcd half is ignored with a message
// saying so (as tests/etcd_diff_test.ts does). The gRPC half uses the real etcdctl when present.
import assert from "node:assert/strict";
// Full npm: specifiers, as DESIGN.md asks (no import map).
// deno-lint-ignore no-import-prefix
import * as grpc from "npm:@grpc/grpc-js@1.14.3";
// deno-lint-ignore no-import-prefix
import * as protoLoader from "npm:@grpc/proto-loader@0.7.15";
import { b64, freePort, NodeProcess, ProcessCluster, until } from "./net_helpers.ts";
import { runCtl } from "../src/net/ctl.ts";

type Json = Record<string, unknown>;
interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  json: any;
  text: string;
}

async function call(url: string, body?: string, method = "POST"): Promise<Answer> {
  const res = await fetch(url, {
    method,
    body,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

function onPath(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function etcdIs34(): Promise<boolean> {
  if (onPath("etcd") === undefined) return false;
  const out = await new Deno.Command("etcd", { args: ["--version"], stdout: "piped" }).output();
  return out.success && new TextDecoder().decode(out.stdout).includes("etcd Version: 3.4");
}

/**
 * A real etcd on free 127.0.0.1 ports. Heartbeat 50 ms and election timeout 300 ms give it a
 * minimum lease TTL of 1 s (1.5 × 6 ticks × 50 ms, rounded up), raftmeta's with its defaults.
 */
async function startEtcd(dir: string): Promise<{ url: string; process: Deno.ChildProcess }> {
  const client = `http://127.0.0.1:${freePort()}`;
  const peer = `http://127.0.0.1:${freePort()}`;
  const process = new Deno.Command("etcd", {
    args: [
      ...["--name", "parity", "--data-dir", `${dir}/etcd`],
      ...["--listen-client-urls", client, "--advertise-client-urls", client],
      ...["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer],
      ...["--initial-cluster", `parity=${peer}`],
      ...["--heartbeat-interval", "50", "--election-timeout", "300", "--log-level", "error"],
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await until("etcd to answer", async () => {
    return (await call(`${client}/v3/kv/range`, '{"key":"AA=="}')).status === 200;
  }, 30_000);
  return { url: client, process };
}

async function startRaftmeta(dir: string): Promise<NodeProcess> {
  const port = freePort();
  const node = new NodeProcess("n1", `http://127.0.0.1:${port}`, `${dir}/n1`, [
    ...["--name", "n1", "--cluster-id", "parity", "--data-dir", `${dir}/n1`],
    ...["--listen-client", `127.0.0.1:${port}`, "--listen-peer", `127.0.0.1:${freePort()}`],
  ], { RAFTMETA_CLUSTER_SECRET: crypto.randomUUID() });
  await until("raftmeta to lead", async () => (await node.local())?.role === "Leader", 30_000);
  return node;
}

const MIB = 1024 * 1024;

Deno.test("JSON gateway as etcd 3.4's (checked against a real etcd when installed)", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-parity-" });
  const withEtcd = await etcdIs34();
  if (!withEtcd) {
    console.log(
      "etcd 3.4 is not installed (Debian's etcd-server; .ci/run installs it): the etcd half of " +
        "each check is ignored, raftmeta is checked against etcd's recorded behaviour only",
    );
  }
  const node = await startRaftmeta(dir);
  const etcd = withEtcd ? await startEtcd(dir) : undefined;
  // Runs `check` on raftmeta's base URL, then on etcd's.
  const both = async (name: string, check: (base: string, who: string) => Promise<void>) => {
    await t.step(name, async () => {
      await check(node.url, "raftmeta");
      if (etcd !== undefined) await check(etcd.url, "etcd");
    });
  };
  try {
    await both("/v3/maintenance/status: camelCase fields, dbSize in bytes", async (u, who) => {
      const before = await call(`${u}/v3/maintenance/status`, "{}");
      assert.equal(before.status, 200, who);
      for (const f of ["version", "dbSize", "leader", "raftIndex", "raftTerm", "dbSizeInUse"]) {
        assert.equal(typeof before.json[f], "string", `${who}: ${f} in ${before.text}`);
      }
      for (const f of ["db_size", "raft_index", "raft_term", "raft_applied_index"]) {
        assert.equal(before.json[f], undefined, `${who}: ${f} in ${before.text}`);
      }
      // A 100 KB value: the size grows by at least its bytes (a key count would grow by 1).
      const put = await call(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("status/big"), value: btoa("x".repeat(100_000)) }),
      );
      assert.equal(put.status, 200, `${who}: ${put.text}`);
      // etcd's bolt file grows in pages, once its batch commits: wait for the growth.
      let after = before;
      await until(`${who}'s dbSize to grow by the value's bytes`, async () => {
        after = await call(`${u}/v3/maintenance/status`, "{}");
        return Number(after.json.dbSize) - Number(before.json.dbSize) >= 100_000;
      }, 30_000);
      assert.equal(typeof after.json.dbSizeInUse, "string", who);
      if (who === "raftmeta") assert.equal(after.json.version, "3.4.0-raftmeta");
      else assert.match(after.json.version, /^3\.4\./);
    });

    await both("/v3/cluster/member/list", async (u, who) => {
      const r = await call(`${u}/v3/cluster/member/list`, "{}");
      assert.equal(r.status, 200, `${who}: ${r.text}`);
      assert.deepEqual(Object.keys(r.json.header).sort(), ["cluster_id", "member_id", "raft_term"]);
      assert.equal(r.json.members.length, 1, who);
      const m = r.json.members[0];
      assert.deepEqual(Object.keys(m).sort(), ["ID", "clientURLs", "name", "peerURLs"], who);
      assert.equal(m.ID, r.json.header.member_id, who);
      assert.deepEqual(m.clientURLs, [u], who);
    });

    await both("/v3/maintenance/hash: a uint32 that changes with a write", async (u, who) => {
      const h1 = await call(`${u}/v3/maintenance/hash`, "{}");
      assert.equal(h1.status, 200, `${who}: ${h1.text}`);
      assert.ok(Number.isInteger(h1.json.hash) && h1.json.hash >= 0, `${who}: ${h1.text}`);
      assert.ok(h1.json.hash < 2 ** 32, who);
      const again = await call(`${u}/v3/maintenance/hash`, "{}");
      assert.equal(again.json.hash, h1.json.hash, `${who}: same state, same hash`);
      await call(`${u}/v3/kv/put`, JSON.stringify({ key: b64("hash/k"), value: b64("v") }));
      const h2 = await call(`${u}/v3/maintenance/hash`, "{}");
      assert.notEqual(h2.json.hash, h1.json.hash, who);
    });

    await both("GET /version", async (u, who) => {
      const r = await call(`${u}/version`, undefined, "GET");
      assert.equal(r.status, 200, `${who}: ${r.text}`);
      assert.deepEqual(Object.keys(r.json).sort(), ["etcdcluster", "etcdserver"], who);
      assert.match(r.json.etcdserver, /^3\.4\./, who);
      assert.equal(r.json.etcdcluster, "3.4.0", who);
      const post = await call(`${u}/version`, "{}");
      assert.equal(post.status, 405, who);
    });

    await both("/v3alpha/ is not served; /v3beta/ is", async (u, who) => {
      const alpha = await call(`${u}/v3alpha/kv/range`, JSON.stringify({ key: b64("a") }));
      assert.equal(alpha.status, 404, `${who}: ${alpha.text}`);
      const beta = await call(`${u}/v3beta/kv/range`, JSON.stringify({ key: b64("a") }));
      assert.equal(beta.status, 200, `${who}: ${beta.text}`);
    });

    await both("the request limit applies to the decoded request", async (u, who) => {
      // 1.5 MiB less 64 bytes of value: its base64 JSON is about 2 MiB, and it passes.
      const fits = await call(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("big"), value: btoa("y".repeat(1.5 * MIB - 64)) }),
      );
      assert.equal(fits.status, 200, `${who}: ${fits.text.slice(0, 300)}`);
      const over = await call(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("big"), value: btoa("y".repeat(1.5 * MIB)) }),
      );
      assert.equal(over.status, 400, `${who}: ${over.text.slice(0, 300)}`);
      assert.equal(over.json.code, 3, who);
      assert.equal(over.json.message, "etcdserver: request is too large", who);
      if (who === "raftmeta") {
        // Still bounded: a body over 4/3 × (1.5 MiB + 512 KiB) is refused unread.
        const huge = await call(
          `${u}/v3/kv/put`,
          `{"key":"YQ==","value":"${"A".repeat(3 * MIB)}"}`,
        );
        assert.equal(huge.status, 413, huge.text);
      }
    });

    await both("a lease TTL of 0 or less gets the minimum TTL (1 s here)", async (u, who) => {
      for (const ttl of [0, -5, 1]) {
        const r = await call(`${u}/v3/lease/grant`, JSON.stringify({ TTL: ttl }));
        assert.equal(r.status, 200, `${who} TTL ${ttl}: ${r.text}`);
        assert.equal(r.json.TTL, "1", `${who} TTL ${ttl}: ${r.text}`);
      }
      const big = await call(`${u}/v3/lease/grant`, JSON.stringify({ TTL: "9000000001" }));
      assert.equal(big.status, 400, `${who}: ${big.text}`);
      assert.equal(big.json.code, 11, who);
      assert.equal(big.json.message, "etcdserver: too large lease TTL", who);
    });

    await both("leases that do not exist: keep-alive TTL 0, time-to-live -1", async (u, who) => {
      const ka = await call(`${u}/v3/lease/keepalive`, '{"ID":"12345"}');
      assert.equal(ka.status, 200, `${who}: ${ka.text}`);
      assert.equal(ka.json.result.ID, "12345", who);
      assert.equal(ka.json.result.TTL, undefined, `${who}: TTL 0 is left out: ${ka.text}`);
      const zero = await call(`${u}/v3/lease/keepalive`, '{"ID":0}');
      assert.equal(zero.status, 200, `${who}: ${zero.text}`);
      assert.deepEqual(Object.keys(zero.json.result), ["header"], who);
      const ttl = await call(`${u}/v3/lease/timetolive`, '{"ID":"12345"}');
      assert.equal(ttl.status, 200, `${who}: ${ttl.text}`);
      assert.equal(ttl.json.TTL, "-1", who);
      const revoke = await call(`${u}/v3/lease/revoke`, '{"ID":"12345"}');
      assert.equal(revoke.status, 404, `${who}: ${revoke.text}`);
      assert.equal(revoke.json.code, 5, who);
      assert.match(revoke.json.message, /^etcdserver: requested lease not found/, who);
    });

    await both("unknown fields are ignored, as grpc-gateway ignores them", async (u, who) => {
      const put = await call(
        `${u}/v3/kv/put`,
        JSON.stringify({ key: b64("u"), value: b64("v"), colour: "red", nested: { x: [1] } }),
      );
      assert.equal(put.status, 200, `${who}: ${put.text}`);
      const range = await call(`${u}/v3/kv/range`, JSON.stringify({ key: b64("u"), bogus: 1 }));
      assert.equal(range.status, 200, `${who}: ${range.text}`);
      assert.equal(range.json.kvs[0].value, b64("v"), who);
      const status = await call(`${u}/v3/maintenance/status`, '{"x":1}');
      assert.equal(status.status, 200, `${who}: ${status.text}`);
      const leases = await call(`${u}/v3/lease/leases`, '{"x":1}');
      assert.equal(leases.status, 200, `${who}: ${leases.text}`);
    });

    await both(
      "/v3/maintenance/snapshot streams the store, defragment answers {}",
      async (u, who) => {
        const r = await call(`${u}/v3/maintenance/snapshot`, "{}");
        assert.equal(r.status, 200, who);
        const messages = r.text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
        assert.ok(messages.length >= 1, who);
        let bytes = 0;
        for (const m of messages) bytes += atob(m.result.blob).length;
        // As etcd's: a size 32 more than a multiple of 512 (etcdctl checks it).
        assert.equal(bytes % 512, 32, `${who}: ${bytes} bytes`);
        // remaining_bytes counts the bytes before the SHA-256, which comes alone, last.
        const first = messages[0].result;
        assert.equal(Number(first.remaining_bytes) + atob(first.blob).length, bytes - 32, who);
        assert.equal(atob(messages.at(-1).result.blob).length, 32, who);
        const defrag = await call(`${u}/v3/maintenance/defragment`, "{}");
        assert.equal(defrag.status, 200, `${who}: ${defrag.text}`);
        assert.deepEqual(defrag.json, {}, who);
      },
    );
  } finally {
    await node.kill();
    etcd?.process.kill("SIGKILL");
    await etcd?.process.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Runs etcdctl (API 3) against `endpoints`, with generous timeouts for a loaded machine. */
async function etcdctl(
  bin: string,
  endpoints: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(bin, {
    args: [`--endpoints=${endpoints}`, "--dial-timeout=20s", "--command-timeout=30s", ...args],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** The raw gRPC stubs of etcd's protos. */
function etcdserverpb() {
  const rpc = new URL(import.meta.resolve("npm:etcd3@1.1.2/proto/rpc.proto")).pathname;
  const def = protoLoader.loadSync(decodeURIComponent(rpc), {
    keepCase: true,
    longs: String,
    enums: Number,
    bytes: String,
    defaults: false,
    oneofs: false,
  });
  // deno-lint-ignore no-explicit-any
  return (grpc.loadPackageDefinition(def) as any).etcdserverpb;
}

function unary(
  // deno-lint-ignore no-explicit-any
  client: any,
  method: string,
  req: Json,
): Promise<Json> {
  return new Promise((resolve, reject) =>
    client[method](
      req,
      { deadline: Date.now() + 60_000 },
      (e: Error | null, r: Json) => e === null ? resolve(r) : reject(e),
    )
  );
}

Deno.test("gRPC Maintenance: Hash/HashKV equal on every node, Snapshot saved by etcdctl restores into a new cluster", async (t) => {
  const cluster = ProcessCluster.start(3, [], { grpc: true, watchdogMs: 300_000 });
  const restoreDir = Deno.makeTempDirSync({ prefix: "raftmeta-restore-" });
  const pb = etcdserverpb();
  const bin = onPath("etcdctl");
  if (bin === undefined) {
    console.log(
      "etcdctl is not installed (Debian's etcd-client; .ci/run installs it): the snapshot is " +
        "saved with a raw gRPC client instead",
    );
  }
  try {
    const leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
    const follower = cluster.nodes.find((n) => n !== leader)!;
    const keys = 200;
    for (let i = 0; i < keys; i++) {
      const r = await call(
        `${leader.url}/v3/kv/put`,
        JSON.stringify({ key: b64(`/backup/${i}`), value: b64(`value ${i}`) }),
      );
      assert.equal(r.status, 200, r.text);
    }
    const del = await call(
      `${leader.url}/v3/kv/deleterange`,
      JSON.stringify({ key: b64("/backup/7") }),
    );
    assert.equal(del.status, 200);
    const revision = Number(del.json.header.revision);

    await t.step("Hash and HashKV agree on every node at the same revision", async () => {
      await until("every node to apply the last write", async () => {
        const revs = await Promise.all(
          cluster.nodes.map(async (n) =>
            Number(
              (await call(
                `${n.url}/v3/kv/range`,
                JSON.stringify({ key: b64("x"), serializable: true }),
              )).json.header.revision,
            )
          ),
        );
        return revs.every((r) => r === revision);
      }, 30_000);
      const hashes = await Promise.all(cluster.nodes.map(async (n) => {
        const m = new pb.Maintenance(n.grpcEndpoint!, grpc.credentials.createInsecure());
        try {
          const h = await unary(m, "Hash", {});
          const kv = await unary(m, "HashKV", { revision: String(revision) });
          const older = await unary(m, "HashKV", { revision: String(revision - 1) });
          const json = await call(`${n.url}/v3/maintenance/hash`, "{}");
          assert.equal(json.json.hash, h.hash, "the gateway and gRPC give one hash");
          return [h.hash, kv.hash, older.hash];
        } finally {
          m.close();
        }
      }));
      for (const h of hashes) assert.deepEqual(h, hashes[0], JSON.stringify(hashes));
      assert.notEqual(
        hashes[0][1],
        hashes[0][2],
        "the revision before the delete hashes otherwise",
      );
      if (bin !== undefined) {
        const r = await etcdctl(bin, cluster.nodes.map((n) => n.grpcEndpoint).join(","), [
          "endpoint",
          "hashkv",
          "-w",
          "json",
        ]);
        assert.equal(r.code, 0, r.stderr);
        const got = JSON.parse(r.stdout) as { HashKV: { hash: number } }[];
        assert.equal(got.length, 3);
        for (const g of got) assert.equal(g.HashKV.hash, got[0].HashKV.hash, r.stdout);
      }
    });

    await t.step("a future revision is refused as etcd refuses it", async () => {
      const m = new pb.Maintenance(leader.grpcEndpoint!, grpc.credentials.createInsecure());
      try {
        await assert.rejects(
          unary(m, "HashKV", { revision: String(revision + 1000) }),
          (e: grpc.ServiceError) => {
            assert.equal(e.code, grpc.status.OUT_OF_RANGE);
            assert.equal(e.details, "etcdserver: mvcc: required revision is a future revision");
            return true;
          },
        );
      } finally {
        m.close();
      }
    });

    await t.step("Defragment answers success (a no-op: the store is in memory)", async () => {
      if (bin !== undefined) {
        const r = await etcdctl(bin, follower.grpcEndpoint!, ["defrag"]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /Finished defragmenting etcd member/);
      } else {
        const m = new pb.Maintenance(follower.grpcEndpoint!, grpc.credentials.createInsecure());
        await unary(m, "Defragment", {});
        m.close();
      }
    });

    const file = `${restoreDir}/backup.snap`;
    await t.step("snapshot save through a follower", async () => {
      if (bin !== undefined) {
        const r = await etcdctl(bin, follower.grpcEndpoint!, ["snapshot", "save", file]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /Snapshot saved at/);
      } else {
        const m = new pb.Maintenance(follower.grpcEndpoint!, grpc.credentials.createInsecure());
        const parts: Uint8Array[] = [];
        await new Promise<void>((resolve, reject) => {
          const s = m.Snapshot({});
          s.on(
            "data",
            (r: Json) =>
              parts.push(Uint8Array.from(atob(String(r.blob ?? "")), (c) => c.charCodeAt(0))),
          );
          s.on("end", resolve);
          s.on("error", reject);
        });
        m.close();
        const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of parts) {
          out.set(p, at);
          at += p.length;
        }
        Deno.writeFileSync(file, out);
      }
      // The ctl's own save (over the gateway) of the same state is the same file.
      const again = `${restoreDir}/again.snap`;
      const lines: string[] = [];
      assert.equal(
        await runCtl(
          ["--endpoints", follower.url, "snapshot", "save", again],
          (l) => lines.push(l),
        ),
        0,
      );
      assert.deepEqual(Deno.readFileSync(again), Deno.readFileSync(file));
    });

    await t.step("restore refuses what it cannot use", async () => {
      Deno.writeFileSync(`${restoreDir}/bogus.snap`, new Uint8Array(544));
      assert.equal(
        await runCtl([
          ...["snapshot", "restore", `${restoreDir}/bogus.snap`],
          ...["--data-dir", `${restoreDir}/x`, "--name", "n1", "--initial-cluster", "n1"],
        ], () => {}),
        1,
      );
      assert.equal(
        await runCtl([
          ...["snapshot", "restore", file, "--data-dir", `${restoreDir}/y`],
          ...["--name", "n4", "--initial-cluster", "n1,n2,n3"],
        ], () => {}),
        2,
      );
    });

    await t.step("the saved file restores into a new 3-node cluster with every key", async () => {
      await cluster.stop().catch(() => {});
      const fresh = ProcessCluster.start(3, [], { watchdogMs: 120_000 });
      try {
        // The new cluster's nodes are stopped, their data directories replaced by restores of
        // the file, and started again.
        await Promise.all(fresh.nodes.map((n) => n.kill()));
        for (const n of fresh.nodes) {
          try {
            Deno.removeSync(n.dataDir, { recursive: true });
          } catch (e) {
            if (!(e instanceof Deno.errors.NotFound)) throw e;
          }
          const code = await runCtl([
            ...["snapshot", "restore", file, "--data-dir", n.dataDir, "--name", n.id],
            ...["--cluster-id", "test", "--initial-cluster", "n1,n2,n3"],
          ], () => {});
          assert.equal(code, 0);
        }
        for (const n of fresh.nodes) n.restart();
        const newLeader = await fresh.waitForLeader({ timeoutMs: 30_000 });
        const r = await call(
          `${newLeader.url}/v3/kv/range`,
          JSON.stringify({ key: b64("/backup/"), range_end: b64("/backup0"), count_only: true }),
        );
        assert.equal(r.json.count, String(keys - 1), r.text);
        const one = await call(
          `${newLeader.url}/v3/kv/range`,
          JSON.stringify({ key: b64("/backup/42") }),
        );
        assert.equal(atob(one.json.kvs[0].value), "value 42");
        assert.equal(Number(one.json.header.revision), revision, "the revision carries over");
        const put = await call(
          `${newLeader.url}/v3/kv/put`,
          JSON.stringify({ key: b64("/after"), value: b64("x") }),
        );
        assert.equal(put.status, 200, put.text);
        assert.equal(Number(put.json.header.revision), revision + 1);
        const other = fresh.nodes.find((n) => n !== newLeader)!;
        await until("a follower of the new cluster to hold the new key", async () => {
          const g = await call(
            `${other.url}/v3/kv/range`,
            JSON.stringify({ key: b64("/after"), serializable: true }),
          );
          return g.json.count === "1";
        }, 30_000);
      } finally {
        await fresh.stop();
      }
    });
  } finally {
    await cluster.stop().catch(() => {});
    Deno.removeSync(restoreDir, { recursive: true });
  }
});

Deno.test("gRPC: a write that cannot commit in time fails with etcd's text and code", async () => {
  const cluster = ProcessCluster.start(3, ["--request-timeout-ms", "1500"], {
    grpc: true,
    watchdogMs: 120_000,
  });
  const pb = etcdserverpb();
  try {
    const leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
    for (const n of cluster.nodes) if (n !== leader) await n.kill();
    const kv = new pb.KV(leader.grpcEndpoint!, grpc.credentials.createInsecure());
    try {
      await assert.rejects(
        unary(kv, "Put", { key: b64("lost"), value: b64("v") }),
        (e: grpc.ServiceError) => {
          assert.equal(e.code, grpc.status.UNAVAILABLE, e.details);
          assert.ok(
            ["etcdserver: request timed out", "etcdserver: leader changed"].includes(e.details),
            e.details,
          );
          return true;
        },
      );
      await assert.rejects(unary(kv, "Range", { key: b64("lost") }), (e: grpc.ServiceError) => {
        assert.equal(e.code, grpc.status.UNAVAILABLE, e.details);
        assert.equal(e.details, "etcdserver: request timed out");
        return true;
      });
    } finally {
      kv.close();
    }
  } finally {
    await cluster.stop();
  }
});
