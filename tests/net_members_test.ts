// Membership changes on real node processes (issue 19): etcd's Cluster API and MoveLeader on the
// JSON gateway, new members started with --initial-cluster-state existing, removed members that
// stop and whose data directories refuse to start, and a leader that hands over on SIGTERM.
import assert from "node:assert/strict";
import { b64, freePort, type NodeProcess, post, ProcessCluster, until } from "./net_helpers.ts";
import { runCtl } from "../src/net/ctl.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** Starts `name` as a member added to `c` (its ports given), joining from `among`. */
function startMember(
  c: ProcessCluster,
  name: string,
  ports: { client: number; peer: number },
  among: NodeProcess[],
): NodeProcess {
  return c.startNewMember(name, ports, { among });
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
  const c = ProcessCluster.start(3);
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
      // The node table, the status and /metrics show voters, learners and no pending change.
      const status = await (await fetch(`${leader.url}/v1/status`)).json();
      assert.deepEqual(status.voters, ["n1", "n2", "n3"]);
      assert.deepEqual(status.learners, ["n4"]);
      assert.equal(status.pendingChange, null);
      const metrics = await (await fetch(`${leader.url}/metrics`)).text();
      assert.match(metrics, /^raftmeta_learners 1$/m);
      assert.match(metrics, /^raftmeta_voters 3$/m);
      assert.match(metrics, /^raftmeta_membership_change_pending 0$/m);
      const table = await ctl(leader.url, "status");
      assert.equal(table.code, 0, table.out);
      assert.match(table.out, /^learners: n4$/m);
      assert.match(table.out, /\(learner\)/);
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

    await t.step(
      "restarts keep the configuration: the new member and a bootstrap one",
      async () => {
        // n4's log starts at index 1 (no snapshot): its base configuration comes from members.json,
        // not from its --peers; the follower learns n4's address from its own members.json.
        for (const n of [n4, follower]) {
          await n.kill();
          n.restart();
          await put(leader.url, `/restart/${n.id}`, "yes");
          await until(
            `${n.id} back with /restart/${n.id}`,
            async () => (await serializableGet(n.url, `/restart/${n.id}`)) === "yes",
            30_000,
          );
          const row = await n.local();
          assert.deepEqual(row?.voters, ["n1", "n2", "n3", "n4"]);
        }
      },
    );

    await t.step("move-leader hands leadership to n4", async () => {
      // A target that loses its campaign (a peer link still redialing after the restarts) makes
      // one attempt time out with etcd's error: a client tries again, as this does.
      let last: Json;
      await until("move-leader to n4", async () => {
        last = await post(
          `${follower.url}/v3/maintenance/transfer-leadership`,
          JSON.stringify({ targetID: n4Id }),
        );
        if (last.status !== 200) {
          assert.match(last.json.error, /leader transfer took too long|not the leader|no leader/);
        }
        return last.status === 200;
      }, 30_000);
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
      // Until it stops, a read it is sent is answered at once: by the read, or (once it knows it
      // was removed) by etcd's Unavailable error, so the client tries another member.
      await until("the removed node knows it", async () => {
        const g = await post(`${removed.url}/v3/kv/range`, JSON.stringify({ key: b64("/k/1") }));
        if (g.status === 200) return false;
        assert.equal(g.status, 503, JSON.stringify(g.json));
        assert.match(g.json.error, /permanently removed from the cluster/);
        return true;
      });
      const status = await exitedWithin(removed, 20_000);
      assert.notEqual(status, undefined, "the removed node keeps running");
      assert.equal(status?.code, 5, "a removed member exits with code 5");
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
        // Writes sent to the others at once wait for the next leader (they may still take the
        // removed one for the leader for an election timeout), they are not refused.
        const rest = c.nodes.filter((n) => n.id !== "n4" && n !== removed);
        const early = await Promise.all(
          rest.map((n, i) =>
            post(`${n.url}/v3/kv/put`, JSON.stringify({ key: b64(`/early/${i}`), value: "" }))
          ),
        );
        for (const e of early) assert.equal(e.status, 200, JSON.stringify(e.json));
        assert.notEqual(await exitedWithin(n4, 20_000), undefined);
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

/** Runs `deno task ctl` in this process against `endpoints`; returns its exit code and output. */
async function ctl(endpoints: string, ...args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await runCtl(
    ["--endpoints", endpoints, "--timeout-ms", "20000", ...args],
    (l) => lines.push(l),
  );
  return { code, out: lines.join("\n") };
}

Deno.test("net members: replace a node that lost its data (remove the old, add a new) with ctl", async (t) => {
  const c = ProcessCluster.start(3);
  try {
    const leader = await c.waitForLeader();
    for (let i = 0; i < 20; i++) await put(leader.url, `/r/${i}`, `v${i}`);
    const victim = c.nodes.find((n) => n !== leader)!;
    const rest = c.nodes.filter((n) => n !== victim);
    const endpoints = rest.map((n) => n.url).join(",");
    await victim.kill();
    Deno.removeSync(victim.dataDir, { recursive: true });

    await t.step("the wiped node is refused as a new member under its old name", async () => {
      victim.restart(["--initial-cluster-state", "existing"]);
      const s = await exitedWithin(victim, 30_000);
      assert.equal(s?.code, 3, victim.stderr);
      assert.match(victim.stderr, /lost its data, not a new one\. Remove it/);
    });

    await t.step("ctl member list, then member remove", async () => {
      const list = await ctl(endpoints, "member", "list");
      assert.equal(list.code, 0, list.out);
      const line = list.out.split("\n").find((l) => l.includes(`, ${victim.id}, `))!;
      assert.match(line, /^[0-9a-f]+, started, /);
      const id = line.split(",")[0];
      const r = await ctl(endpoints, "member", "remove", id);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(`^Member ${id} removed from cluster [0-9a-f]+$`));
      const again = await ctl(endpoints, "member", "remove", id);
      assert.equal(again.code, 1);
    });

    await t.step("its old name is never given out again", async () => {
      const r = await post(
        `${leader.url}/v3/cluster/member/add`,
        JSON.stringify({ peerURLs: [`http://127.0.0.1:${freePort()}`], name: victim.id }),
      );
      assert.equal(r.status, 412);
      assert.match(r.json.error, /names are never reused/);
    });

    const ports = { client: freePort(), peer: freePort() };
    await t.step("ctl member add, member update, and the new member joins", async () => {
      const added = await ctl(
        endpoints,
        "member",
        "add",
        "n9",
        "--peer-urls",
        `http://127.0.0.1:${freePort()}`,
        "--client-urls",
        `http://127.0.0.1:${ports.client}`,
      );
      assert.equal(added.code, 0, added.out);
      const id = /^Member ([0-9a-f]+) added/.exec(added.out)![1];
      assert.match(added.out, /--initial-cluster-state existing/);
      // It will listen elsewhere: the address changes through the log before it starts.
      const updated = await ctl(
        endpoints,
        "member",
        "update",
        id,
        "--peer-urls",
        `http://127.0.0.1:${ports.peer}`,
      );
      assert.equal(updated.code, 0, updated.out);
      const n9 = startMember(c, "n9", ports, rest);
      await until("n9 has /r/19", async () => (await serializableGet(n9.url, "/r/19")) === "v19");
      // A write through the new member is forwarded to the leader and reaches everyone.
      await put(n9.url, "/r/new", "yes");
      for (const n of [...rest, n9]) {
        await until(
          `${n.id} has /r/new`,
          async () => (await serializableGet(n.url, "/r/new")) === "yes",
        );
      }
      const row = await (await c.waitForLeader({ among: [...rest, n9] })).local();
      assert.deepEqual(row?.voters, [...rest.map((n) => n.id), "n9"].sort());
    });
  } finally {
    await c.stop();
  }
});

Deno.test("net members: a member that installs a snapshot past another's add learns its id and URLs from it", async () => {
  // n3 is down while n4 is added; the leader's snapshots then replace the add entry, so n3 hears
  // of n4 only through the snapshot it installs (its metadata carries the member table).
  const c = ProcessCluster.start(3, ["--snapshot-entries", "20"]);
  try {
    const leader = await c.waitForLeader();
    const laggard = c.nodes.find((n) => n !== leader)!;
    const live = c.nodes.filter((n) => n !== laggard);
    await put(leader.url, "/s/first", "1");
    await until(
      "n3 has /s/first",
      async () => (await serializableGet(laggard.url, "/s/first")) === "1",
    );
    await laggard.kill();
    const ports = { client: freePort(), peer: freePort() };
    const added = await post(
      `${leader.url}/v3/cluster/member/add`,
      JSON.stringify({
        peerURLs: [`http://127.0.0.1:${ports.peer}`],
        isLearner: true,
        name: "n4",
        clientURLs: [`http://127.0.0.1:${ports.client}`],
      }),
    );
    assert.equal(added.status, 200, JSON.stringify(added.json));
    const n4Id = added.json.member.ID;
    const n4 = startMember(c, "n4", ports, live);
    // Past the 1,000 entries a leader keeps below its snapshot for slow followers.
    for (let i = 0; i < 1200; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, j) => put(leader.url, `/s/${i + j}`, `v${i + j}`)),
      );
    }
    await put(leader.url, "/s/last", "yes");
    await until("n4 has /s/last", async () => (await serializableGet(n4.url, "/s/last")) === "yes");
    laggard.restart();
    await until(
      "the restarted member has /s/last",
      async () => (await serializableGet(laggard.url, "/s/last")) === "yes",
    );
    assert.ok(
      laggard.lines.some((l) => l.includes(`"event":"snapshot-installed"`)),
      "the restarted member caught up by a snapshot, not by entries",
    );
    const list = await members(laggard.url);
    const n4Row = list.find((m: Json) => m.name === "n4");
    assert.deepEqual(n4Row, {
      ID: n4Id,
      name: "n4",
      peerURLs: [`http://127.0.0.1:${ports.peer}`],
      clientURLs: [`http://127.0.0.1:${ports.client}`],
      isLearner: true,
    });
    // It keeps them across a restart (members.json), without the entry or --peers naming n4.
    await laggard.kill();
    laggard.restart();
    await until("the member answers again", async () => (await laggard.local()) !== undefined);
    const again = (await members(laggard.url)).find((m: Json) => m.name === "n4");
    assert.deepEqual(again?.peerURLs, [`http://127.0.0.1:${ports.peer}`]);
  } finally {
    await c.stop();
  }
});

Deno.test("net members: SIGTERM on the leader hands leadership over before it stops", async () => {
  const c = ProcessCluster.start(3);
  try {
    const leader = await c.waitForLeader();
    await put(leader.url, "/t", "1");
    leader.signal("SIGTERM");
    await leader.exited;
    const handed = leader.lines.map((l) => JSON.parse(l)).find((e) =>
      e.event === "shutdown-leader-transferred"
    );
    assert.notEqual(handed, undefined, leader.lines.slice(-10).join("\n"));
    const next = await c.waitForLeader({ among: c.nodes.filter((n) => n !== leader) });
    assert.equal(next.id, handed.to);
  } finally {
    await c.stop();
  }
});

/** The etcdctl on PATH, or undefined. */
function findEtcdctl(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/etcdctl`).isFile) return `${dir}/etcdctl`;
    } catch { /* not here */ }
  }
  return undefined;
}

async function etcdctl(bin: string, endpoints: string, ...args: string[]) {
  const out = await new Deno.Command(bin, {
    args: [`--endpoints=${endpoints}`, "--dial-timeout=20s", "--command-timeout=30s", ...args],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    out: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
  };
}

Deno.test("net members: etcdctl member add/promote/remove/list and move-leader over gRPC", async () => {
  const c = ProcessCluster.start(3, [], { grpc: true });
  try {
    const leader = await c.waitForLeader();
    const bin = findEtcdctl();
    if (bin === undefined) {
      console.log(
        "etcdctl is not installed (Debian's etcd-client; .ci/run installs it): the same steps " +
          "run through deno task ctl on the JSON gateway instead",
      );
    }
    const grpcEndpoints = c.nodes.map((n) => n.grpcEndpoint!).join(",");
    const run = (...args: string[]) =>
      bin === undefined
        ? ctl(c.nodes.map((n) => n.url).join(","), ...args)
        : etcdctl(bin, grpcEndpoints, ...args);
    const list = await run("member", "list");
    assert.equal(list.code, 0, list.out);
    assert.equal(list.out.trim().split("\n").length, 3);
    const peer = `http://127.0.0.1:${freePort()}`;
    const added = await run("member", "add", "n4", `--peer-urls=${peer}`, "--learner");
    assert.equal(added.code, 0, added.out);
    // etcdctl prints ids with %16x: a shorter id is padded with spaces.
    const id = /Member\s+([0-9a-f]+) added to cluster/.exec(added.out)![1];
    const listed = await run("member", "list");
    assert.match(listed.out, new RegExp(`^${id}, \\w+, [\\w]*, ${peer}, , true$`, "m"));
    const promote = await run("member", "promote", id);
    assert.notEqual(promote.code, 0);
    assert.match(
      promote.out,
      /etcdserver: can only promote a learner member which is in sync with leader/,
    );
    const removed = await run("member", "remove", id);
    assert.equal(removed.code, 0, removed.out);
    assert.match(removed.out, new RegExp(`Member\\s+${id} removed from cluster`));
    const target = c.nodes.find((n) => n !== leader)!;
    const ids = await members(leader.url);
    const targetId = BigInt(ids.find((m: Json) => m.name === target.id).ID).toString(16);
    const moved = await run("move-leader", targetId);
    assert.equal(moved.code, 0, moved.out);
    assert.match(moved.out, new RegExp(`Leadership transferred from [0-9a-f]+ to ${targetId}`));
    assert.equal((await c.waitForLeader()).id, target.id);
  } finally {
    await c.stop();
  }
});

Deno.test("net members: with auth enabled, member add needs the root role (the same gate covers remove, update, promote and move-leader)", async () => {
  const c = ProcessCluster.start(3, ["--auth-pbkdf2-iterations", "1000"]);
  try {
    const leader = await c.waitForLeader();
    const ok = async (path: string, body: Json, token?: string) => {
      const r = await post(
        `${leader.url}${path}`,
        JSON.stringify(body),
        token === undefined ? {} : { authorization: token },
      );
      assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.json)}`);
      return r.json;
    };
    await ok("/v3/auth/user/add", { name: "root", password: "rootpw" });
    await ok("/v3/auth/user/grant", { user: "root", role: "root" });
    await ok("/v3/auth/user/add", { name: "alice", password: "alicepw" });
    await ok("/v3/auth/enable", {});
    const alice = (await ok("/v3/auth/authenticate", { name: "alice", password: "alicepw" }))
      .token;
    const root = (await ok("/v3/auth/authenticate", { name: "root", password: "rootpw" })).token;
    const add = { peerURLs: [`http://127.0.0.1:${freePort()}`], isLearner: true };
    for (const token of [undefined, alice]) {
      const r = await post(
        `${leader.url}/v3/cluster/member/add`,
        JSON.stringify(add),
        token === undefined ? {} : { authorization: token },
      );
      assert.notEqual(r.status, 200, JSON.stringify(r.json));
      assert.match(r.json.error, /^etcdserver: (user name is empty|permission denied)$/);
    }
    const added = await ok("/v3/cluster/member/add", add, root);
    assert.equal(added.member.isLearner, true);
  } finally {
    await c.stop();
  }
});

Deno.test({
  name:
    "net members: gRPC MemberList is linearizable (a member cut off from a quorum answers no list)",
  ignore: findEtcdctl() === undefined, // etcdctl is the gRPC client here (.ci/run installs it)
  async fn() {
    const c = ProcessCluster.start(3, [], { grpc: true });
    try {
      const leader = await c.waitForLeader();
      const [alone, other] = c.nodes.filter((n) => n !== leader);
      const bin = findEtcdctl()!;
      const before = await etcdctl(bin, alone.grpcEndpoint!, "member", "list");
      assert.equal(before.code, 0, before.out);
      assert.equal(before.out.trim().split("\n").length, 3);
      // Freeze the two others: the last member cannot confirm with a quorum that its member
      // table is current, so it must not answer with it (it answered at once before).
      leader.signal("SIGSTOP");
      other.signal("SIGSTOP");
      try {
        const cut = await etcdctl(
          bin,
          alone.grpcEndpoint!,
          "--command-timeout=2s",
          "member",
          "list",
        );
        assert.notEqual(cut.code, 0, `answered without a quorum:\n${cut.out}`);
      } finally {
        leader.signal("SIGCONT");
        other.signal("SIGCONT");
      }
      await until(
        "the list answered again",
        async () => (await etcdctl(bin, alone.grpcEndpoint!, "member", "list")).code === 0,
      );
    } finally {
      await c.stop();
    }
  },
});
