import assert from "node:assert/strict";
import { RaftNode } from "../src/raft/node.ts";
import { SeededRng } from "../src/raft/rng.ts";
import type { RaftLogEntry } from "../src/raft/types.ts";
import { encodeJsonFrame, FrameKind, FrameReader } from "../src/net/codec.ts";
import { logTransferFrames, LogTransferReceiver } from "../src/net/log_transfer.ts";
import { PeerTransport } from "../src/net/transport.ts";
import { freePort, post, ProcessCluster } from "./net_helpers.ts";

/** A one-voter leader holding a snapshot of `snapshotBytes` and `entries` entries after it. */
function leaderWithLog(snapshotBytes: number, entries: number): RaftNode {
  const data = new Uint8Array(snapshotBytes);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  const log: RaftLogEntry[] = Array.from({ length: entries }, (_, i) => ({
    index: 11 + i,
    term: 1,
    kind: "command",
    command: new TextEncoder().encode(`PUT\n/k${i}\nv${i}`),
  }));
  const node = new RaftNode({
    id: "n1",
    voters: ["n1"],
    rng: new SeededRng(1),
    hardState: { term: 1, votedFor: "n1", commitIndex: 10 + entries },
    snapshot: { meta: { index: 10, term: 1, voters: ["n1"] }, data },
    entries: log,
  });
  for (let now = 0; node.role !== "Leader" && now < 10_000; now += 10) {
    node.tick(now);
    while (node.hasReady()) {
      const r = node.takeReady();
      const last = r.entries[r.entries.length - 1];
      if (last !== undefined) node.stableTo(last.index, last.term);
    }
  }
  assert.equal(node.role, "Leader");
  return node;
}

Deno.test("net log transfer: streamed in bounded frames on the peer port, after the handshake only", async (t) => {
  const ports = [freePort(), freePort(), freePort()];
  const logs: string[] = [];
  const leader = leaderWithLog(3 * 1024 * 1024 + 17, 700);
  let served = 0;
  const make = (id: string, port: number, peers: [string, number][], secret: string) =>
    new PeerTransport({
      nodeId: id,
      clusterId: "c",
      secret,
      listen: { hostname: "127.0.0.1", port },
      peers: new Map(peers.map(([p, pp]) => [p, { hostname: "127.0.0.1", port: pp }])),
      onMessages: () => {},
      localState: () => ({ term: 5, commitIndex: 9 }),
      seenTermOf: () => 2,
      log: (event, fields) => logs.push(`${id} ${event} ${JSON.stringify(fields)}`),
      logTransfer: id === "n1"
        ? (peer) => {
          served++;
          return logTransferFrames(leader, peer);
        }
        : () => {
          throw new Error(`Node "${id}" is not the leader in term 5 (no leader is known)`);
        },
    });
  const a = make("n1", ports[0], [["n2", ports[1]], ["n3", ports[2]]], "s");
  const b = make("n2", ports[1], [["n1", ports[0]], ["n3", ports[2]]], "s");
  const intruder = make("n3", ports[2], [["n1", ports[0]], ["n2", ports[1]]], "wrong");
  try {
    a.start();
    b.start();
    intruder.start();

    await t.step(
      "a peer that proved the secret gets the whole log, in bounded frames",
      async () => {
        const receiver = new LogTransferReceiver("n1", "n2");
        let frames = 0;
        let largest = 0;
        await b.fetchLog("n1", (payload) => {
          frames++;
          largest = Math.max(largest, payload.length);
          return receiver.push(payload);
        }, 5000);
        const got = receiver.result!;
        assert.deepEqual(got.snapshot!.meta, leader.snapshot!.meta);
        assert.deepEqual(got.snapshot!.data, leader.snapshot!.data);
        assert.equal(got.entries.length, leader.log.lastIndex - 10);
        assert.deepEqual(got.entries.at(-1), leader.log.entry(leader.log.lastIndex));
        assert.equal(got.leaderCommit, leader.commitIndex);
        // 4 snapshot chunks of at most 1 MiB, 3 batches of at most 256 entries, the end.
        assert.equal(frames, 4 + 3 + 1);
        assert.ok(largest <= leader.config.snapshotChunkBytesMax + 1024, `frame of ${largest}`);
      },
    );

    await t.step("a node that is not the leader refuses, and says why", async () => {
      await assert.rejects(
        a.fetchLog("n2", () => true, 5000),
        /peer "n2" refused the log transfer: Node "n2" is not the leader in term 5/,
      );
    });

    await t.step("a peer with the wrong secret gets nothing", async () => {
      const before = served;
      await assert.rejects(intruder.fetchLog("n1", () => true, 5000), /wrong cluster secret/);
      assert.equal(served, before);
    });

    await t.step("a log request without the handshake gets nothing", async () => {
      const before = served;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: ports[0] });
      await conn.write(encodeJsonFrame(FrameKind.logRequest, {}));
      const reader = new FrameReader();
      const kinds: number[] = [];
      const buf = new Uint8Array(64 * 1024);
      while (true) {
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        reader.push(buf.slice(0, n));
        for (let f = reader.next(); f !== undefined; f = reader.next()) kinds.push(f[0]);
      }
      try {
        conn.close();
      } catch { /* closed by the peer */ }
      assert.deepEqual(kinds, [FrameKind.challenge]);
      assert.equal(served, before);
      assert.ok(logs.some((l) => l.includes("Unexpected frame kind 6")), logs.join("\n"));
    });
  } finally {
    a.close();
    b.close();
    intruder.close();
    await new Promise((r) => setTimeout(r, 50));
  }
});

const VALUE_BYTES = 1024 * 1024;
/** Keys of 1 MiB: together a store (and so a snapshot) over the old 64 MiB message limit. */
const BIG_KEYS = 70;

function bigValue(i: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(VALUE_BYTES).fill(65 + (i % 26));
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

Deno.test("net --join: a new member replacing a lost one joins from a snapshot over 64 MiB; the log is not on the client port; a failed join says why", async (t) => {
  const cluster = ProcessCluster.start(3, [
    "--snapshot-entries",
    "60",
    "--max-request-bytes",
    String(2 * VALUE_BYTES),
  ]);
  try {
    let leader = await cluster.waitForLeader();

    await t.step("GET /v1/raft/log on the client port is 404", async () => {
      const res = await fetch(`${leader.url}/v1/raft/log?for=n2`);
      assert.equal(res.status, 404);
      assert.match((await res.json()).error, /Unknown path/);
    });

    await t.step("a follower is rebuilt from a 70 MiB snapshot and serves every key", async () => {
      // A write that meets a leader change (503: this machine may be loaded) goes to the new one.
      // A put is idempotent here, so a refused, shed (429) or cut attempt is simply sent again,
      // for up to 30 s.
      const put = async (path: string, body: string | Uint8Array<ArrayBuffer>) => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          const at = await cluster.waitForLeader();
          let status = 0;
          let text = "";
          try {
            const res = await fetch(`${at.url}${path}`, {
              method: "PUT",
              body,
              signal: AbortSignal.timeout(10_000),
            });
            status = res.status;
            text = await res.text();
          } catch (e) {
            text = String(e);
          }
          if (status === 200) return;
          if (Date.now() > deadline) assert.fail(`PUT ${path}: ${status} ${text}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      for (let i = 0; i < BIG_KEYS; i++) await put(`/v1/kv/big/${i}`, bigValue(i));
      // Small writes until every node has a snapshot that holds every big key: the join streams
      // the newest snapshot of whichever node it reaches, and each node snapshots on its own
      // schedule (one node's older snapshot may hold only some of the big keys).
      const largestSnapshot = (n: (typeof cluster.nodes)[number]) =>
        Math.max(
          0,
          ...n.lines.map((l) => JSON.parse(l)).filter((e) => e.event === "snapshot-taken").map(
            (e) => e.bytes as number,
          ),
        );
      const smallestSnapshot = () => Math.min(...cluster.nodes.map(largestSnapshot));
      for (let i = 0; smallestSnapshot() < BIG_KEYS * VALUE_BYTES; i++) {
        assert.ok(i < 500, "not every node took a snapshot holding the big keys");
        await put(`/v1/kv/small/${i}`, "x");
      }
      assert.ok(smallestSnapshot() > 64 * 1024 * 1024);
      leader = await cluster.waitForLeader();

      // A node that lost its data comes back only as a new member: remove the old, add the new.
      const lost = cluster.nodes.find((n) => n !== leader)!;
      await lost.kill();
      Deno.removeSync(lost.dataDir, { recursive: true });
      const members = await post(`${leader.url}/v3/cluster/member/list`, "{}");
      const lostId = members.json.members.find((m: { name: string }) => m.name === lost.id).ID;
      const removed = await post(
        `${leader.url}/v3/cluster/member/remove`,
        JSON.stringify({ ID: lostId }),
      );
      assert.equal(removed.status, 200, JSON.stringify(removed.json));
      const ports = { client: freePort(), peer: freePort() };
      const added = await post(
        `${leader.url}/v3/cluster/member/add`,
        JSON.stringify({
          name: `${lost.id}b`,
          peerURLs: [`http://127.0.0.1:${ports.peer}`],
          clientURLs: [`http://127.0.0.1:${ports.client}`],
        }),
      );
      assert.equal(added.status, 200, JSON.stringify(added.json));
      const follower = cluster.startNewMember(`${lost.id}b`, ports, {
        among: cluster.nodes.filter((n) => n !== lost),
        extraArgs: ["--join"],
      });
      // The highest commit index any surviving node reports (the leader may change meanwhile).
      let target = 0;
      await waitFor("a commit index from the surviving nodes", async () => {
        const rows = await Promise.all(
          cluster.nodes.filter((n) => n !== follower && n !== lost).map((n) => n.local()),
        );
        target = Math.max(0, ...rows.map((r) => (r?.commitIndex as number | undefined) ?? 0));
        return target > 0;
      });
      await waitFor("the rebuilt node to catch up", async () => {
        const s = await follower.local();
        return s !== undefined && s.status === "up" && (s.lastApplied as number) >= target;
      }, 60_000);
      const join = follower.lines.map((l) => JSON.parse(l)).find((e) => e.event === "join");
      assert.ok(join.snapshotBytes > 64 * 1024 * 1024, JSON.stringify(join));
      for (let i = 0; i < BIG_KEYS; i++) {
        const res = await fetch(`${follower.url}/v1/kv/big/${i}?serializable`);
        assert.equal(res.status, 200);
        const { value } = await res.json();
        assert.equal(value, new TextDecoder().decode(bigValue(i)), `key big/${i}`);
      }
    });

    await t.step(
      "a join that finds no leader exits with code 4 and names each peer's reason",
      async () => {
        // A member is added while a quorum is up; then the leader is left alone, steps down
        // (CheckQuorum), and no leader can be elected: the new member's join finds none.
        const witness = await cluster.waitForLeader();
        const running = cluster.nodes.filter((n) => n.lines.length > 0 && n !== witness);
        const ports = { client: freePort(), peer: freePort() };
        const added = await post(
          `${witness.url}/v3/cluster/member/add`,
          JSON.stringify({
            name: "late",
            peerURLs: [`http://127.0.0.1:${ports.peer}`],
            isLearner: true,
          }),
        );
        assert.equal(added.status, 200, JSON.stringify(added.json));
        const alive = await Promise.all(running.map(async (n) => (await n.local()) !== undefined));
        const others = running.filter((_, i) => alive[i]);
        for (const n of others) await n.kill();
        await waitFor("the leader to step down", async () => {
          const s = await witness.local();
          return s !== undefined && s.role !== "Leader";
        });
        const gone = others[0];
        const rebuilt = cluster.startNewMember("late", ports, {
          among: [witness, gone],
          extraArgs: ["--join", "--join-timeout-ms", "1000"],
        });
        const lines = 0;
        const status = await rebuilt.exited;
        assert.equal(status.code, 4, rebuilt.stderr);
        assert.match(
          rebuilt.stderr,
          /Cannot rebuild "late": no leader sent its log within 1000 ms/,
        );
        const id = witness.id;
        assert.match(
          rebuilt.stderr,
          new RegExp(
            `${id}: peer "${id}" refused the log transfer: Node "${id}" is not the leader`,
          ),
        );
        assert.match(rebuilt.stderr, new RegExp(`${gone.id}: Connection refused`));
        const failed = rebuilt.lines.slice(lines).map((l) => JSON.parse(l)).filter((e) =>
          e.event === "join-attempt-failed"
        );
        assert.ok(failed.some((e) => e.peer === id), JSON.stringify(failed));
      },
    );
  } finally {
    await cluster.stop();
  }
});

Deno.test("net log transfer: entries committed while the transfer runs do not break its end", () => {
  // The leader's commit index may pass the last index the transfer began with (a writer keeps
  // writing); the end frame must still fit the entries sent.
  const leader = leaderWithLog(1024, 300);
  const lastAtStart = leader.log.lastIndex;
  const frames = logTransferFrames(leader, "n2");
  const receiver = new LogTransferReceiver("n1", "n2");
  let first = true;
  for (const frame of frames) {
    if (first) {
      first = false;
      // One voter: each proposal commits once it is stable.
      for (let i = 0; i < 5; i++) leader.propose(new TextEncoder().encode(`PUT\n/late${i}\nv`));
      while (leader.hasReady()) {
        const r = leader.takeReady();
        const last = r.entries[r.entries.length - 1];
        if (last !== undefined) leader.stableTo(last.index, last.term);
      }
      assert.equal(leader.commitIndex, lastAtStart + 5);
    }
    const reader = new FrameReader();
    reader.push(frame);
    for (let f = reader.next(); f !== undefined; f = reader.next()) receiver.push(f);
  }
  const result = receiver.result!;
  assert.equal(result.entries[result.entries.length - 1].index, lastAtStart);
  assert.equal(result.leaderCommit, lastAtStart);
});
