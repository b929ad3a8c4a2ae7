// etcd's gRPC API (--listen-grpc), driven by real clients against a 3-node cluster, through the
// leader and through a follower: Debian's etcdctl 3.4 (when installed; .ci/run installs it), npm's
// etcd3 client, and a raw grpc-js client for the Watch stream's protocol details (watch ids per
// stream, progress requests, cancel, a compacted start revision).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// Full npm: specifiers, as DESIGN.md asks (no import map).
// deno-lint-ignore no-import-prefix
import { Etcd3 } from "npm:etcd3@1.1.2";
// deno-lint-ignore no-import-prefix
import * as grpc from "npm:@grpc/grpc-js@1.14.3";
// deno-lint-ignore no-import-prefix
import * as protoLoader from "npm:@grpc/proto-loader@0.7.15";
import { type NodeProcess, ProcessCluster, until } from "./net_helpers.ts";

/** Waits (30 s at most: a loaded CI machine) until `predicate` holds; fails showing `state()`. */
async function eventually(
  predicate: () => boolean,
  state: () => string,
  timeoutMs = 30_000,
): Promise<void> {
  try {
    await until("the condition", predicate, timeoutMs);
  } catch (e) {
    throw new Error(`${(e as Error).message}; state: ${state()}`);
  }
}

/** The etcdctl on PATH, or undefined. */
function findEtcdctl(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/etcdctl`).isFile) return `${dir}/etcdctl`;
    } catch { /* not here */ }
  }
  return undefined;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs etcdctl (API 3) against `endpoint`, with generous timeouts for a loaded machine. */
async function etcdctl(
  bin: string,
  endpoint: string,
  args: string[],
  stdin?: string,
): Promise<Run> {
  const child = new Deno.Command(bin, {
    args: [`--endpoints=${endpoint}`, "--dial-timeout=20s", "--command-timeout=30s", ...args],
    env: { ETCDCTL_API: "3" },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l !== "");
}

/** A long-running etcdctl (watch) whose stdout lines are collected as they come. */
class Background {
  readonly lines: string[] = [];
  readonly child: Deno.ChildProcess;
  readonly done: Promise<void>;
  stderr = "";

  constructor(bin: string, endpoint: string, args: string[]) {
    this.child = new Deno.Command(bin, {
      args: [`--endpoints=${endpoint}`, "--dial-timeout=20s", ...args],
      env: { ETCDCTL_API: "3" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const collect = async (s: ReadableStream<Uint8Array>, on: (t: string) => void) => {
      let rest = "";
      for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        parts.forEach(on);
      }
      if (rest !== "") on(rest);
    };
    this.done = Promise.all([
      collect(this.child.stdout, (l) => this.lines.push(l)),
      collect(this.child.stderr, (l) => this.stderr += l + "\n"),
    ]).then(() => {});
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.child.status;
    await this.done;
  }
}

/** etcdctl's scripted session against `node`, on keys under `p`. */
async function etcdctlSession(
  t: Deno.TestContext,
  bin: string,
  node: NodeProcess,
  p: string,
  cluster: ProcessCluster,
): Promise<void> {
  const ep = node.grpcEndpoint!;
  const ok = async (args: string[], stdin?: string): Promise<string> => {
    const r = await etcdctl(bin, ep, args, stdin);
    assert.equal(r.code, 0, `etcdctl ${args.join(" ")} failed:\n${r.stderr}`);
    return r.stdout;
  };
  const fails = async (args: string[]): Promise<string> => {
    const r = await etcdctl(bin, ep, args);
    assert.notEqual(r.code, 0, `etcdctl ${args.join(" ")} should fail:\n${r.stdout}`);
    return r.stderr;
  };
  const revisionNow = async () =>
    Number(JSON.parse(await ok(["get", `${p}none`, "-w", "json"])).header.revision);

  await t.step(
    "put and get: --prefix, --limit, --keys-only, --print-value-only, -w json",
    async () => {
      for (const i of [1, 2, 3]) assert.equal(await ok(["put", `${p}k${i}`, `v${i}`]), "OK\n");
      assert.deepEqual(lines(await ok(["get", "--prefix", `${p}k`])), [
        `${p}k1`,
        "v1",
        `${p}k2`,
        "v2",
        `${p}k3`,
        "v3",
      ]);
      assert.deepEqual(lines(await ok(["get", "--prefix", "--limit", "2", `${p}k`])), [
        `${p}k1`,
        "v1",
        `${p}k2`,
        "v2",
      ]);
      assert.deepEqual(lines(await ok(["get", "--prefix", "--keys-only", `${p}k`])), [
        `${p}k1`,
        `${p}k2`,
        `${p}k3`,
      ]);
      assert.equal(await ok(["get", "--print-value-only", `${p}k2`]), "v2\n");
      const json = JSON.parse(await ok(["get", `${p}k1`, "-w", "json"]));
      assert.equal(json.count, 1);
      assert.equal(atob(json.kvs[0].key), `${p}k1`);
      assert.equal(atob(json.kvs[0].value), "v1");
      assert.equal(json.kvs[0].version, 1);
      assert.ok(json.header.revision >= json.kvs[0].mod_revision);
    },
  );

  await t.step("get --rev reads an older revision", async () => {
    const before = await revisionNow();
    await ok(["put", `${p}k1`, "v1-new"]);
    assert.equal(await ok(["get", "--print-value-only", `${p}k1`]), "v1-new\n");
    assert.equal(
      await ok(["get", "--print-value-only", "--rev", String(before), `${p}k1`]),
      "v1\n",
    );
  });

  await t.step("txn -i: a compare, then the success or the failure branch", async () => {
    await ok(["put", `${p}tx`, "x"]);
    const yes = await ok(
      ["txn", "-i"],
      `value("${p}tx") = "x"\n\nput ${p}tx y\n\nput ${p}tx z\n\n`,
    );
    assert.match(yes, /SUCCESS\s+OK/);
    assert.equal(await ok(["get", "--print-value-only", `${p}tx`]), "y\n");
    const no = await ok(
      ["txn", "-i"],
      `value("${p}tx") = "x"\n\nput ${p}tx y2\n\nput ${p}tx z\n\n`,
    );
    assert.match(no, /FAILURE\s+OK/);
    assert.equal(await ok(["get", "--print-value-only", `${p}tx`]), "z\n");
  });

  await t.step(
    "watch --prefix --prev-kv --rev sees puts and deletes with previous values",
    async () => {
      const from = (await revisionNow()) + 1;
      const w = new Background(bin, ep, [
        "watch",
        "--prefix",
        "--prev-kv",
        "--rev",
        String(from),
        `${p}w`,
      ]);
      try {
        await ok(["put", `${p}w1`, "a"]);
        await ok(["put", `${p}w1`, "b"]);
        await ok(["del", `${p}w1`]);
        const want = [
          "PUT",
          `${p}w1`,
          "a",
          "PUT",
          `${p}w1`,
          "a",
          `${p}w1`,
          "b",
          "DELETE",
          `${p}w1`,
          "b",
          `${p}w1`,
        ];
        await eventually(
          () => w.lines.filter((l) => l !== "").length >= want.length,
          () => `watch printed ${JSON.stringify(w.lines)}; stderr ${w.stderr}`,
        );
        assert.deepEqual(w.lines.filter((l) => l !== ""), want);
      } finally {
        await w.stop();
      }
    },
  );

  await t.step("del --prefix prints the count", async () => {
    assert.equal(await ok(["del", "--prefix", `${p}k`]), "3\n");
    assert.equal(await ok(["get", "--prefix", `${p}k`]), "");
  });

  await t.step(
    "lease grant, put --lease, timetolive, list, keep-alive --once, revoke",
    async () => {
      const grant = await ok(["lease", "grant", "600"]);
      const m = grant.match(/^lease ([0-9a-f]+) granted with TTL\(600s\)$/m);
      assert.ok(m, grant);
      const id = m[1];
      await ok(["put", `--lease=${id}`, `${p}leased`, "v"]);
      const ttl = await ok(["lease", "timetolive", "--keys", id]);
      assert.match(
        ttl,
        new RegExp(
          `lease ${id} granted with TTL\\(600s\\), remaining\\(\\d+s\\), attached keys\\(\\[${p}leased\\]\\)`,
        ),
      );
      assert.match(await ok(["lease", "list"]), new RegExp(`^${id}$`, "m"));
      assert.equal(
        await ok(["lease", "keep-alive", "--once", id]),
        `lease ${id} keepalived with TTL(600)\n`,
      );
      assert.equal(await ok(["lease", "revoke", id]), `lease ${id} revoked\n`);
      assert.equal(await ok(["get", `${p}leased`]), "");
      // etcd's message for an unknown lease.
      assert.match(
        await fails(["lease", "revoke", id]),
        /^Error: failed to revoke lease \(etcdserver: requested lease not found\)$/m,
      );
      assert.match(
        await ok(["lease", "timetolive", id]),
        new RegExp(`lease ${id} already expired`),
      );
      assert.match(
        await fails(["lease", "keep-alive", "--once", id]),
        /^Error: etcdserver: requested lease not found$/m,
      );
    },
  );

  await t.step("compaction; a compacted revision is refused as etcd refuses it", async () => {
    await ok(["put", `${p}c`, "1"]);
    const old = await revisionNow();
    await ok(["put", `${p}c`, "2"]);
    const rev = await revisionNow();
    assert.equal(await ok(["compaction", String(rev)]), `compacted revision ${rev}\n`);
    const err = await fails(["get", "--rev", String(old), `${p}c`]);
    assert.match(err, /Error: etcdserver: mvcc: required revision has been compacted/);
    const w = await etcdctl(bin, ep, ["watch", "--rev", String(old), `${p}c`]);
    assert.match(w.stdout + w.stderr, /required revision has been compacted/);
  });

  await t.step(
    "lock runs its command holding the lock; elect campaigns, elect -l observes",
    async () => {
      assert.equal(await ok(["lock", `${p}lock`, "echo", "got-lock"]), "got-lock\n");
      const candidate = new Background(bin, ep, ["elect", `${p}elec`, "cand1"]);
      const observer = new Background(bin, ep, ["elect", "-l", `${p}elec`]);
      try {
        // Each prints the leader's key (NAME/LEASE) and its proposal once cand1 leads.
        for (const [who, b] of [["candidate", candidate], ["observer", observer]] as const) {
          await eventually(
            () => b.lines.includes("cand1"),
            () => `${who} printed ${JSON.stringify(b.lines)}; stderr ${b.stderr}`,
          );
          assert.match(b.lines[b.lines.indexOf("cand1") - 1], new RegExp(`^${p}elec/[0-9a-f]+$`));
        }
      } finally {
        await observer.stop();
        await candidate.stop();
      }
    },
  );

  await t.step("endpoint status -w json, endpoint health, member list, alarm list", async () => {
    const status = JSON.parse(await ok(["endpoint", "status", "-w", "json"]));
    assert.equal(status.length, 1);
    const s = status[0].Status;
    assert.equal(s.version, "3.4.0-raftmeta");
    assert.ok(s.raftIndex > 0 && s.raftAppliedIndex > 0 && s.raftTerm > 0, JSON.stringify(s));
    assert.ok(s.leader > 0, JSON.stringify(s));
    // etcdctl 3.4 prints the health line on stderr, for etcd too.
    const health = await etcdctl(bin, ep, ["endpoint", "health"]);
    assert.equal(health.code, 0, health.stderr);
    assert.match(
      health.stderr,
      new RegExp(`^${ep} is healthy: successfully committed proposal`, "m"),
    );
    const members = lines(await ok(["member", "list"])).map((l) => l.split(", "));
    assert.deepEqual(members.map((m) => m[2]).sort(), ["n1", "n2", "n3"]);
    for (const m of members) {
      const n = cluster.node(m[2]);
      assert.equal(m[4], `http://${n.grpcEndpoint}`, `client URL of ${m[2]}`);
      assert.match(m[3], /^http:\/\/127\.0\.0\.1:\d+$/);
    }
    // Every node names the same leader.
    const leaderIds = new Set<string>();
    for (const n of cluster.nodes) {
      const r = await etcdctl(bin, n.grpcEndpoint!, ["endpoint", "status", "-w", "json"]);
      if (r.code === 0) leaderIds.add(String(JSON.parse(r.stdout)[0].Status.leader));
    }
    assert.ok(leaderIds.size >= 1);
    assert.equal(await ok(["alarm", "list"]), "");
  });
}

/** npm's etcd3 client against `node`, on keys under `p`. */
async function npmClientSession(t: Deno.TestContext, node: NodeProcess, p: string) {
  const client = new Etcd3({ hosts: node.grpcEndpoint!, dialTimeout: 20_000 });
  try {
    await t.step("put, get, getAll, delete", async () => {
      await client.put(`${p}a`).value("1");
      await client.put(`${p}b`).value("2");
      assert.equal(await client.get(`${p}a`).string(), "1");
      assert.deepEqual(await client.getAll().prefix(p).strings(), {
        [`${p}a`]: "1",
        [`${p}b`]: "2",
      });
      await client.delete().key(`${p}b`);
      assert.equal(await client.get(`${p}b`).string(), null);
    });
    await t.step(
      "keys are bytes: keys outside UTF-8 round trip, a byte prefix ranges them",
      async () => {
        // A prefix of bytes that are not UTF-8 (0xFF, 0xFE), then a truncated "€" and a newline.
        const base = [...new TextEncoder().encode(p), 0xff, 0xfe];
        const keys = [[0xe2, 0x82], [0x0a, 0x00], [0xe2, 0x82, 0xac]].map((tail) =>
          Buffer.from([...base, ...tail])
        );
        for (const [i, key] of keys.entries()) await client.put(key).value(`b${i}`);
        for (const [i, key] of keys.entries()) {
          assert.equal(await client.get(key).string(), `b${i}`);
        }
        const listed = await client.getAll().prefix(Buffer.from(base)).keyBuffers();
        const sorted = [...keys].sort(Buffer.compare);
        assert.deepEqual(listed.map((k) => [...k]), sorted.map((k) => [...k]));
        // The byte prefix 0xE2 takes both the truncated and the whole "€".
        const euro = await client.getAll().prefix(Buffer.from([...base, 0xe2])).count();
        assert.equal(euro, 2);
        await client.delete().prefix(Buffer.from(base));
        assert.equal(await client.getAll().prefix(Buffer.from(base)).count(), 0);
      },
    );
    await t.step("txn", async () => {
      const yes = await client.if(`${p}a`, "Value", "==", "1").then(client.put(`${p}a`).value("2"))
        .else(client.put(`${p}a`).value("x")).commit();
      assert.equal(yes.succeeded, true);
      const no = await client.if(`${p}a`, "Value", "==", "1").then(client.put(`${p}a`).value("3"))
        .else(client.put(`${p}a`).value("x")).commit();
      assert.equal(no.succeeded, false);
      assert.equal(await client.get(`${p}a`).string(), "x");
    });
    await t.step("lease: put with a lease, revoke removes the key", async () => {
      const lease = client.lease(600);
      await lease.put(`${p}leased`).value("v");
      assert.ok(Number(await lease.grant()) > 0);
      assert.equal(await client.get(`${p}leased`).string(), "v");
      await lease.revoke();
      assert.equal(await client.get(`${p}leased`).string(), null);
    });
    await t.step("watch: two watches on one stream, one canceled", async () => {
      const seen: string[] = [];
      const w1 = await client.watch().prefix(`${p}w1`).create();
      const w2 = await client.watch().prefix(`${p}w2`).create();
      w1.on("put", (kv) => seen.push(`w1 put ${kv.key}=${kv.value}`));
      w1.on("delete", (kv) => seen.push(`w1 delete ${kv.key}`));
      w2.on("put", (kv) => seen.push(`w2 put ${kv.key}=${kv.value}`));
      await client.put(`${p}w1x`).value("a");
      await client.put(`${p}w2x`).value("b");
      await eventually(() => seen.length >= 2, () => JSON.stringify(seen));
      await w2.cancel();
      await client.put(`${p}w2x`).value("c");
      await client.delete().key(`${p}w1x`);
      await eventually(() => seen.includes(`w1 delete ${p}w1x`), () => JSON.stringify(seen));
      assert.deepEqual(seen.sort(), [`w1 delete ${p}w1x`, `w1 put ${p}w1x=a`, `w2 put ${p}w2x=b`]);
      await w1.cancel();
    });
    await t.step("lock", async () => {
      const lock = client.lock(`${p}lock`);
      await lock.acquire();
      await lock.release();
    });
  } finally {
    client.close();
  }
}

type Json = Record<string, unknown>;

/** A raw Watch stream, to see etcd's protocol fields as they are sent. */
async function rawWatchSession(t: Deno.TestContext, node: NodeProcess, p: string) {
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
  const pb = (grpc.loadPackageDefinition(def) as any).etcdserverpb;
  const kv = new pb.KV(node.grpcEndpoint!, grpc.credentials.createInsecure());
  const watcher = new pb.Watch(node.grpcEndpoint!, grpc.credentials.createInsecure());
  const unary = (method: string, req: Json): Promise<Json> =>
    new Promise((resolve, reject) =>
      kv[method](req, (e: Error | null, r: Json) => e === null ? resolve(r) : reject(e))
    );
  const b64 = (s: string) => btoa(s);
  const stream = watcher.Watch();
  const got: Json[] = [];
  stream.on("data", (m: Json) => got.push(m));
  stream.on("error", () => {});
  const waitFor = (what: string, pred: (m: Json) => boolean) =>
    eventually(() => got.some(pred), () => `${what}; got ${JSON.stringify(got)}`);
  try {
    await t.step(
      "watch ids count from 0 per stream; created answers in request order",
      async () => {
        stream.write({ create_request: { key: b64(`${p}a`) } });
        stream.write({ create_request: { key: b64(`${p}b`), prev_kv: true } });
        await eventually(
          () => got.filter((m) => m.created).length === 2,
          () => JSON.stringify(got),
        );
        assert.deepEqual(
          got.filter((m) => m.created).map((m) => m.watch_id),
          ["0", "1"],
        );
      },
    );
    await t.step("events carry the watch's id; a DELETE event is typed", async () => {
      await unary("Put", { key: b64(`${p}b`), value: b64("1") });
      await unary("DeleteRange", { key: b64(`${p}b`) });
      await waitFor(
        "the delete event",
        (m) => (m.events as Json[] | undefined)?.some((e) => e.type === 1) === true,
      );
      const events = got.filter((m) => m.events !== undefined);
      assert.ok(events.every((m) => m.watch_id === "1"), JSON.stringify(events));
      const del = events.flatMap((m) => m.events as Json[]).find((e) => e.type === 1)!;
      assert.equal(atob((del.prev_kv as Json).value as string), "1");
    });
    await t.step("a progress request is answered with watch_id -1", async () => {
      stream.write({ progress_request: {} });
      await waitFor("the progress answer", (m) => m.watch_id === "-1" && m.events === undefined);
    });
    await t.step("cancel answers canceled; a new watch takes the next id", async () => {
      stream.write({ cancel_request: { watch_id: "0" } });
      await waitFor("the cancel", (m) => m.watch_id === "0" && m.canceled === true);
      stream.write({ create_request: { key: b64(`${p}c`), filters: [0] } });
      await waitFor("watch 2", (m) => m.watch_id === "2" && m.created === true);
      // Filter NOPUT: the put is not sent, the delete is.
      await unary("Put", { key: b64(`${p}c`), value: b64("x") });
      await unary("DeleteRange", { key: b64(`${p}c`) });
      await waitFor("the delete on watch 2", (m) => m.watch_id === "2" && m.events !== undefined);
      const two = got.filter((m) => m.watch_id === "2" && m.events !== undefined);
      assert.deepEqual(two.flatMap((m) => (m.events as Json[]).map((e) => e.type ?? 0)), [1]);
    });
    await t.step(
      "a compacted start revision: created, then canceled with compact_revision",
      async () => {
        const r1 = await unary("Put", { key: b64(`${p}d`), value: b64("1") });
        const r2 = await unary("Put", { key: b64(`${p}d`), value: b64("2") });
        const rev = Number((r2.header as Json).revision);
        await unary("Compact", { revision: String(rev) });
        // A linearizable read through this node: it has applied the compaction when it answers.
        await unary("Range", { key: b64(`${p}d`) });
        stream.write({
          create_request: { key: b64(`${p}d`), start_revision: (r1.header as Json).revision },
        });
        await waitFor("the compacted cancel", (m) => m.watch_id === "3" && m.canceled === true);
        const c = got.find((m) => m.watch_id === "3" && m.canceled === true)!;
        assert.ok(Number(c.compact_revision) >= rev - 1, JSON.stringify(c));
      },
    );
    await t.step("MoveLeader is served: a bad target gets etcd's error", async () => {
      // Every method of etcd 3.4's rpc.proto is served now (MoveLeader came last, with the
      // membership changes); an unserved one would answer Unimplemented.
      const m = new pb.Maintenance(node.grpcEndpoint!, grpc.credentials.createInsecure());
      const e = await new Promise<grpc.ServiceError>((resolve) =>
        m.MoveLeader({ targetID: "1" }, (e: grpc.ServiceError) => resolve(e))
      );
      assert.equal(e.code, grpc.status.FAILED_PRECONDITION, e.details);
      assert.equal(e.details, "etcdserver: bad leader transferee");
      m.close();
    });
    await t.step(
      "a decoded message nested deeper than 64 levels is refused as the JSON side refuses a body",
      async () => {
        // Each nested txn is three levels (the txn, its success list, the op); 30 txns are 90,
        // fewer than the 64 txns TXN_DEPTH_MAX allows.
        let txn: Json = { success: [{ request_put: { key: b64(`${p}deep`), value: b64("v") } }] };
        for (let i = 1; i < 30; i++) txn = { success: [{ request_txn: txn }] };
        const e = await unary("Txn", txn).then(() => undefined, (e) => e as grpc.ServiceError);
        assert.ok(e !== undefined, "the nested txn was accepted");
        assert.equal(e.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(e.details, "Request nests deeper than 64 levels of messages and lists");
        const r = await unary("Range", { key: b64(`${p}deep`) });
        assert.equal(r.kvs, undefined);
      },
    );
  } finally {
    stream.end();
    kv.close();
    watcher.close();
  }
}

Deno.test("gRPC: etcdctl 3.4, npm's etcd3 and a raw client against a 3-node cluster", async (t) => {
  const cluster = ProcessCluster.start(3, [], { grpc: true, watchdogMs: 900_000 });
  try {
    const leader = await cluster.waitForLeader({ timeoutMs: 30_000 });
    const follower = cluster.nodes.find((n) => n !== leader)!;
    const bin = findEtcdctl();
    if (bin === undefined) {
      console.log(
        "etcdctl is not installed (Debian's etcd-client; .ci/run installs it): " +
          "only npm's etcd3 client and the raw gRPC client run here",
      );
    } else {
      for (const [role, node] of [["leader", leader], ["follower", follower]] as const) {
        await t.step(`etcdctl through the ${role} (${node.id})`, async (t) => {
          await etcdctlSession(t, bin, node, `/etcdctl-${role}/`, cluster);
        });
      }
      // 60 s of puts of random byte keys from 50 clients (etcdctl's "s" load), every endpoint.
      // Every put must be answered; check perf's own PASS or FAIL judges speed on this machine,
      // which a test does not assert (it is printed for the record).
      await t.step(
        "etcdctl check perf --load=s: every put of a random byte key answered",
        async () => {
          const endpoints = cluster.nodes.map((n) => n.grpcEndpoint!).join(",");
          const r = await etcdctl(bin, endpoints, ["check", "perf", "--load=s"]);
          const lines = (r.stdout + "\n" + r.stderr).split(/[\r\n]+/);
          const verdict = lines.filter((l) => /^(PASS|FAIL)/.test(l));
          console.log(`check perf: ${verdict.join("; ")}`);
          assert.ok(
            verdict.some((l) => /^(PASS|FAIL): Throughput is \d+ writes\/s/.test(l)),
            `no throughput line:\n${r.stdout.slice(-500)}\n${r.stderr.slice(-500)}`,
          );
          const errors = lines.filter((l) => /rpc error|^Error|etcdserver:/.test(l));
          assert.deepEqual(errors, [], "check perf saw errors");
        },
      );
    }
    for (const [role, node] of [["leader", leader], ["follower", follower]] as const) {
      await t.step(`npm's etcd3 client through the ${role} (${node.id})`, async (t) => {
        await npmClientSession(t, node, `/npm-${role}/`);
      });
    }
    await t.step("ctl status lists each node's gRPC URL", async () => {
      const p = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL("../src/net/ctl.ts", import.meta.url).pathname, "status"],
        env: { RAFTMETA_ENDPOINTS: follower.url, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(p.stdout);
      assert.equal(p.code, 0, new TextDecoder().decode(p.stderr));
      for (const n of cluster.nodes) {
        assert.match(text, new RegExp(`^${n.id} gRPC http://${n.grpcEndpoint}$`, "m"));
      }
    });
    await t.step(`raw Watch stream through the follower (${follower.id})`, async (t) => {
      await rawWatchSession(t, follower, "/raw/");
    });
  } finally {
    await cluster.stop();
  }
});
