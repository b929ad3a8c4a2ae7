// Membership changes on real node processes (issue 19): etcd's Cluster API and MoveLeader on the
// JSON gateway, new members started with --initial-cluster-state existing, removed members that
// stop and whose data directories refuse to start, and a leader that hands over on SIGTERM.
import assert from "node:assert/strict";
import { b64, freePort, NodeProcess, post, type ProcessCluster, until } from "./net_helpers.ts";
import { ProcessCluster as Cluster } from "./net_helpers.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** The flag values of the cluster's current nodes, for a new member's --peers. */
function peersOf(c: ProcessCluster, among: NodeProcess[] = c.nodes): {
  peers: string;
  clientUrls: string;
} {
  const flag = (n: NodeProcess, name: string) => n.args[n.args.indexOf(name) + 1];
  return {
    peers: among.map((n) => `${n.id}=${flag(n, "--listen-peer")}`).join(","),
    clientUrls: among.map((n) => `${n.id}=${n.url}`).join(","),
  };
}

/** Starts `name` as a member added to `c` (its ports given), joining from `among`. */
function startMember(
  c: ProcessCluster,
  name: string,
  ports: { client: number; peer: number },
  among: NodeProcess[],
  extra: string[] = [],
): NodeProcess {
  const { peers, clientUrls } = peersOf(c, among);
  const node = new NodeProcess(name, `http://127.0.0.1:${ports.client}`, `${c.dir}/${name}`, [
    "--name",
    name,
    "--cluster-id",
    "test",
    "--data-dir",
    `${c.dir}/${name}`,
    "--listen-client",
    `127.0.0.1:${ports.client}`,
    "--listen-peer",
    `127.0.0.1:${ports.peer}`,
    "--peers",
    peers,
    "--peer-client-urls",
    clientUrls,
    "--initial-cluster-state",
    "existing",
    ...extra,
  ], { RAFTMETA_CLUSTER_SECRET: c.secret });
  c.nodes.push(node);
  return node;
}

async function members(url: string): Promise<Json[]> {
  const r = await post(`${url}/v3/cluster/member/list`, "{}");
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.members;
}

async function put(url: string, key: string, value: string): Promise<void> {
  const r = await post(`${url}/v3/kv/put`, JSON.stringify({ key: b64(key), value: b64(value) }));
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

async function serializableGet(url: string, key: string): Promise<string | undefined> {
  const r = await post(
    `${url}/v3/kv/range`,
    JSON.stringify({ key: b64(key), serializable: true }),
  );
  if (r.status !== 200) return undefined;
  const kv = r.json.kvs?.[0];
  return kv === undefined ? undefined : atob(kv.value);
}

async function exitedWithin(n: NodeProcess, ms: number): Promise<Deno.CommandStatus | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([
    n.exited,
    new Promise<undefined>((res) => timer = setTimeout(() => res(undefined), ms)),
  ]);
  clearTimeout(timer);
  return r;
}

Deno.test("net members: grow 3→4 with a learner, promote, move-leader, remove a follower and the leader", async (t) => {
  const c = Cluster.start(3);
  try {
    const leader = await c.waitForLeader();
    const follower = c.nodes.find((n) => n !== leader)!;
    for (let i = 0; i < 150; i++) await put(leader.url, `/k/${i}`, `v${i}`);
    const ports = { client: freePort(), peer: freePort() };
    let n4Id = "";

    await t.step("member add (sent to a follower, forwarded) adds a learner", async () => {
      const r = await post(
        `${follower.url}/v3/cluster/member/add`,
        JSON.stringify({
          peerURLs: [`http://127.0.0.1:${ports.peer}`],
          isLearner: true,
          name: "n4",
          clientURLs: [`http://127.0.0.1:${ports.client}`],
        }),
      );
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.member.name, "n4");
      assert.equal(r.json.member.isLearner, true);
      assert.match(r.json.member.ID, /^\d+$/);
      n4Id = r.json.member.ID;
      assert.equal(r.json.members.length, 4);
      const list = await members(leader.url);
      assert.deepEqual(list.filter((m: Json) => m.isLearner).map((m: Json) => m.name), ["n4"]);
    });

    await t.step(
      "etcd's refusals: same peer URL, a second learner, a lagging learner",
      async () => {
        const same = await post(
          `${leader.url}/v3/cluster/member/add`,
          JSON.stringify({ peerURLs: [`http://127.0.0.1:${ports.peer}`] }),
        );
        assert.equal(same.status, 412);
        assert.equal(same.json.error, "etcdserver: Peer URLs already exists");
        const second = await post(
          `${leader.url}/v3/cluster/member/add`,
          JSON.stringify({ peerURLs: [`http://127.0.0.1:${freePort()}`], isLearner: true }),
        );
        assert.equal(second.status, 412);
        assert.equal(second.json.error, "etcdserver: too many learner members in cluster");
        const bad = await post(
          `${leader.url}/v3/cluster/member/add`,
          JSON.stringify({ peerURLs: ["nope"] }),
        );
        assert.equal(bad.status, 400);
        assert.match(bad.json.error, /^etcdserver: given member URLs are invalid/);
        const lagging = await post(
          `${leader.url}/v3/cluster/member/promote`,
          JSON.stringify({ ID: n4Id }),
        );
        assert.equal(lagging.status, 412, JSON.stringify(lagging.json));
        assert.match(
          lagging.json.error,
          /^etcdserver: can only promote a learner member which is in sync with leader/,
        );
        const missing = await post(
          `${leader.url}/v3/cluster/member/remove`,
          JSON.stringify({ ID: "12345" }),
        );
        assert.equal(missing.status, 404);
        assert.equal(missing.json.error, "etcdserver: member not found");
      },
    );

    const n4 = startMember(c, "n4", ports, c.nodes.slice(0, 3));
    await t.step("the new member copies the leader's log and catches up", async () => {
      await until(
        "n4 has /k/149",
        async () => (await serializableGet(n4.url, "/k/149")) === "v149",
      );
      await put(leader.url, "/after-join", "yes");
      await until(
        "n4 has /after-join",
        async () => (await serializableGet(n4.url, "/after-join")) === "yes",
      );
      const row = await n4.local();
      assert.deepEqual(row?.learners, ["n4"]);
    });

    await t.step("promote makes it a voter; the status shows it", async () => {
      await until("promotion accepted", async () => {
        const r = await post(
          `${leader.url}/v3/cluster/member/promote`,
          JSON.stringify({ ID: n4Id }),
        );
        return r.status === 200;
      });
      const list = await members(leader.url);
      assert.equal(list.filter((m: Json) => m.isLearner).length, 0);
      const row = await leader.local();
      assert.deepEqual(row?.voters, ["n1", "n2", "n3", "n4"]);
      const again = await post(
        `${leader.url}/v3/cluster/member/promote`,
        JSON.stringify({ ID: n4Id }),
      );
      assert.equal(again.json.error, "etcdserver: can only promote a learner member");
    });

    await t.step("move-leader hands leadership to n4", async () => {
      const r = await post(
        `${follower.url}/v3/maintenance/transfer-leadership`,
        JSON.stringify({ targetID: n4Id }),
      );
      assert.equal(r.status, 200, JSON.stringify(r.json));
      const now = await c.waitForLeader();
      assert.equal(now.id, "n4");
      const bad = await post(
        `${leader.url}/v3/maintenance/transfer-leadership`,
        JSON.stringify({ targetID: "1" }),
      );
      assert.equal(bad.json.error, "etcdserver: bad leader transferee");
    });

    const removed = c.nodes.find((n) => n.id !== "n4" && n !== follower)!;
    await t.step("removing a follower stops it; its data directory then refuses", async () => {
      const list = await members(n4.url);
      const id = list.find((m: Json) => m.name === removed.id).ID;
      const r = await post(`${n4.url}/v3/cluster/member/remove`, JSON.stringify({ ID: id }));
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.members.length, 3);
      const status = await exitedWithin(removed, 20_000);
      assert.notEqual(status, undefined, "the removed node keeps running");
      removed.restart();
      const again = await exitedWithin(removed, 20_000);
      assert.equal(again?.code, 5);
      assert.match(removed.stderr, /was removed from the cluster/);
      await put(n4.url, "/after-remove", "yes");
    });

    await t.step(
      "removing the leader: it steps down and stops, the rest elect and write",
      async () => {
        const list = await members(n4.url);
        const r = await post(
          `${n4.url}/v3/cluster/member/remove`,
          JSON.stringify({ ID: list.find((m: Json) => m.name === "n4").ID }),
        );
        assert.equal(r.status, 200, JSON.stringify(r.json));
        assert.notEqual(await exitedWithin(n4, 20_000), undefined);
        const rest = c.nodes.filter((n) => n.id !== "n4" && n !== removed);
        const next = await c.waitForLeader({ among: rest });
        await put(next.url, "/after-leader-removed", "yes");
        assert.deepEqual(
          (await members(next.url)).map((m: Json) => m.name).sort(),
          rest.map((n) => n.id).sort(),
        );
      },
    );
  } finally {
    await c.stop();
  }
});
