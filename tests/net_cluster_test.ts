/**
 * Three real node processes on 127.0.0.1: kill -9 the leader under write load, pause the leader
 * with SIGSTOP, restart a follower with an empty data directory, and a peer without the secret.
 */

import assert from "node:assert/strict";
import { b64, freePort, post, ProcessCluster } from "./net_helpers.ts";
import { connect, RaftmetaError } from "../src/net/client.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(
  what: string,
  predicate: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    if (await predicate()) return Date.now() - start;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("net: a three-node cluster of processes", async (t) => {
  const cluster = ProcessCluster.start(3, ["--snapshot-entries", "200"]);
  const urls = cluster.nodes.map((n) => n.url);
  try {
    await cluster.waitForLeader();

    await t.step("followers forward writes; every node reads them", async () => {
      for (const n of cluster.nodes) {
        const r = await post(
          `${n.url}/v3/kv/put`,
          JSON.stringify({ key: b64(`/via/${n.id}`), value: b64(n.id) }),
        );
        assert.equal(r.status, 200, JSON.stringify(r.json));
      }
      for (const n of cluster.nodes) {
        const r = await post(`${n.url}/v3/kv/range`, JSON.stringify({ key: b64("/via/n3") }));
        assert.equal(atob(r.json.kvs[0].value), "n3");
      }
    });

    await t.step(
      "kill -9 the leader under write load: new leader within 2 s, nothing acknowledged lost, the node rejoins",
      async () => {
        const leader = await cluster.waitForLeader();
        const before = await leader.local();
        const acked = new Map<string, string>();
        let stop = false;
        const writers = Array.from({ length: 4 }, async (_, w) => {
          const client = connect(urls, { timeoutMs: 8000, attemptTimeoutMs: 1000 });
          for (let j = 0; !stop; j++) {
            const key = `/load/w${w}/${String(j).padStart(5, "0")}`;
            try {
              await client.put(key, `v${j}`);
              acked.set(key, `v${j}`);
            } catch (e) {
              if (!(e instanceof RaftmetaError)) throw e;
            }
          }
        });
        await sleep(1000);
        const ackedBeforeKill = acked.size;
        assert.ok(ackedBeforeKill > 20, `only ${ackedBeforeKill} writes in a second`);
        await leader.kill();
        const killedAt = Date.now();
        const others = cluster.nodes.filter((n) => n !== leader);
        const next = await cluster.waitForLeader({
          among: others,
          minTerm: (before!.term as number) + 1,
          timeoutMs: 5000,
        });
        const electionMs = Date.now() - killedAt;
        assert.ok(electionMs < 2000, `new leader after ${electionMs} ms`);
        await sleep(1000);
        stop = true;
        await Promise.all(writers);
        assert.ok(acked.size > ackedBeforeKill, "writes continued after the kill");

        // No acknowledged write is lost (linearizable read through the new leader).
        const client = connect([next.url]);
        const all = await client.range({ prefix: "/load/" });
        const found = new Map(all.kvs.map((kv) => [kv.key, kv.text]));
        for (const [k, v] of acked) assert.equal(found.get(k), v, `acknowledged ${k} lost`);

        // The killed node restarts from its data directory and catches up.
        leader.restart();
        const target = (await next.local())!.commitIndex as number;
        await waitFor("the killed node to catch up", async () => {
          const s = await leader.local();
          return s !== undefined && (s.lastApplied as number) >= target;
        });
        const local = await connect([leader.url]).range({ prefix: "/load/" }, {
          serializable: true,
        });
        const there = new Map(local.kvs.map((kv) => [kv.key, kv.text]));
        for (const [k, v] of acked) assert.equal(there.get(k), v, `rejoined node lacks ${k}`);
        console.log(
          `  ${acked.size} writes acknowledged, new leader after ${electionMs} ms`,
        );
      },
    );

    await t.step(
      "SIGSTOP the leader: no stale linearizable read from it; after SIGCONT it steps down",
      async () => {
        const leader = await cluster.waitForLeader();
        const term = (await leader.local())!.term as number;
        const key = b64("/paused");
        assert.equal(
          (await post(`${leader.url}/v3/kv/put`, JSON.stringify({ key, value: b64("old") })))
            .status,
          200,
        );
        leader.signal("SIGSTOP");
        const others = cluster.nodes.filter((n) => n !== leader);
        const next = await cluster.waitForLeader({ among: others, minTerm: term + 1 });
        const put = await post(`${next.url}/v3/kv/put`, JSON.stringify({ key, value: b64("new") }));
        assert.equal(put.status, 200);
        // Sent while the old leader is frozen; it answers after SIGCONT.
        const reads = [
          post(`${leader.url}/v3/kv/range`, JSON.stringify({ key })),
          fetch(`${leader.url}/v1/kv//paused`).then(async (r) => ({
            status: r.status,
            json: await r.json(),
          })),
        ];
        await sleep(100);
        leader.signal("SIGCONT");
        const [etcd, rest] = await Promise.all(reads);
        if (etcd.status === 200) assert.equal(atob(etcd.json.kvs[0].value), "new");
        else assert.equal(etcd.status, 503);
        if (rest.status === 200) assert.equal(rest.json.value, "new");
        else assert.equal(rest.status, 503);
        await waitFor("the old leader to step down", async () => {
          const s = await leader.local();
          return s?.role === "Follower" && (s.term as number) > term;
        }, 3000);
        // A read after resuming sees the new value.
        const after = await post(`${leader.url}/v3/kv/range`, JSON.stringify({ key }));
        assert.equal(atob(after.json.kvs[0].value), "new");
      },
    );

    await t.step(
      "a follower restarted with an empty data directory is refused, also with --join; it " +
        "comes back only as a new member",
      async () => {
        const leader = await cluster.waitForLeader();
        const follower = cluster.nodes.find((n) => n !== leader)!;
        await follower.kill();
        Deno.removeSync(follower.dataDir, { recursive: true });
        follower.restart();
        const status = await follower.exited;
        assert.equal(status.code, 3, follower.stderr);
        assert.match(follower.stderr, /lost its data/);
        assert.match(follower.stderr, /member remove/);
        // --join no longer rebuilds a node under its old name: it could forget a vote it cast.
        follower.restart(["--join"]);
        assert.equal((await follower.exited).code, 3, follower.stderr);

        const list = await post(`${leader.url}/v3/cluster/member/list`, "{}");
        const id = list.json.members.find((m: { name: string }) => m.name === follower.id).ID;
        const removed = await post(
          `${leader.url}/v3/cluster/member/remove`,
          JSON.stringify({ ID: id }),
        );
        assert.equal(removed.status, 200, JSON.stringify(removed.json));
        const ports = { client: freePort(), peer: freePort() };
        const added = await post(
          `${leader.url}/v3/cluster/member/add`,
          JSON.stringify({
            name: `${follower.id}b`,
            peerURLs: [`http://127.0.0.1:${ports.peer}`],
            clientURLs: [`http://127.0.0.1:${ports.client}`],
          }),
        );
        assert.equal(added.status, 200, JSON.stringify(added.json));
        const replacement = cluster.startNewMember(`${follower.id}b`, ports, {
          among: cluster.nodes.filter((n) => n !== follower),
          extraArgs: ["--join"],
        });
        const target = (await leader.local())!.commitIndex as number;
        await waitFor("the new member to catch up", async () => {
          const s = await replacement.local();
          return s !== undefined && s.status === "up" && (s.lastApplied as number) >= target;
        }, 15_000);
        const events = replacement.lines.map((l) => JSON.parse(l).event);
        assert.ok(events.includes("join"), events.join(","));
        assert.ok(events.includes("joined"));
        const r = await connect([replacement.url]).get("/paused", { serializable: true });
        assert.equal(r?.text, "new");
      },
    );

    await t.step("a peer without the cluster secret is refused", async () => {
      const intruderDir = Deno.makeTempDirSync({ prefix: "raftmeta-intruder-" });
      const target = await cluster.waitForLeader(); // a node still in the cluster
      const peerPort = Number(/--listen-peer 127\.0\.0\.1:(\d+)/.exec(target.args.join(" "))![1]);
      const p = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../src/net/main.ts", import.meta.url).pathname,
          "--name",
          "n2",
          "--cluster-id",
          "test",
          "--data-dir",
          intruderDir,
          "--listen-client",
          `127.0.0.1:${freePort()}`,
          "--listen-peer",
          `127.0.0.1:${freePort()}`,
          "--peers",
          `n1=127.0.0.1:${peerPort},n3=127.0.0.1:1`,
          "--cluster-secret",
          "wrong",
          "--probe-ms",
          "500",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines: string[] = [];
      const reader = (async () => {
        for await (const chunk of p.stdout.pipeThrough(new TextDecoderStream())) {
          lines.push(...chunk.split("\n"));
        }
      })();
      await waitFor(
        "the refusal",
        () => Promise.resolve(lines.some((l) => l.includes("wrong cluster secret"))),
        5000,
      );
      p.kill("SIGKILL");
      await p.status;
      await reader.catch(() => {});
      await p.stderr.cancel();
      Deno.removeSync(intruderDir, { recursive: true });
      // The cluster is unharmed.
      const r = await post(`${target.url}/v3/kv/range`, JSON.stringify({ key: b64("/paused") }));
      assert.equal(r.status, 200);
    });
  } finally {
    await cluster.stop();
  }
});
