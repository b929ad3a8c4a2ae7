/**
 * Request timeouts on a real node: a leader that lost its quorum answers a write with 504 (outcome
 * unknown) and a linearizable read with 503 once their deadlines pass (fired by the clock tick).
 */

import assert from "node:assert/strict";
import { RaftServer } from "../src/net/server.ts";
import { handleHttp } from "../src/net/http.ts";
import { HttpError } from "../src/net/etcd.ts";
import { freePort } from "./net_helpers.ts";

Deno.test("net: a leader without a quorum times writes out with 504 and reads with 503", async () => {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_timeouts_" });
  const ids = ["n1", "n2", "n3"];
  const peerPorts = ids.map(() => freePort());
  const servers: RaftServer[] = [];
  try {
    for (const [i, id] of ids.entries()) {
      servers.push(
        await RaftServer.start({
          nodeId: id,
          dataDir: `${root}/${id}`,
          clientListen: { hostname: "127.0.0.1", port: freePort() },
          peerListen: { hostname: "127.0.0.1", port: peerPorts[i] },
          peers: new Map(
            ids.flatMap((p, j) =>
              j === i ? [] : [[p, { hostname: "127.0.0.1", port: peerPorts[j] }] as const]
            ),
          ),
          secret: "timeouts-test-secret",
          // Shorter than the election timeout: the deadline fires before CheckQuorum steps down.
          requestTimeoutMs: 60,
          log: () => {},
        }, handleHttp),
      );
    }
    let leader: RaftServer | undefined;
    for (let i = 0; i < 300 && leader === undefined; i++) {
      leader = servers.find((s) => s.node.role === "Leader");
      if (leader === undefined) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(leader, "a leader within 3 s");
    await leader.propose({ type: "put", key: "/a", value: new Uint8Array([1]), prevKv: false });
    for (const s of servers) if (s !== leader) await s.close();

    // Both start now; their rejections are collected at once (none is left unhandled).
    let guard: ReturnType<typeof setTimeout> | undefined;
    const [write, read] = await Promise.race([
      Promise.allSettled([
        leader.propose({ type: "put", key: "/b", value: new Uint8Array([2]), prevKv: false }),
        leader.readBarrier(40),
      ]),
      new Promise<never>((_, reject) => {
        guard = setTimeout(() => reject(new Error("no timeout fired within 3 s")), 3000);
      }),
    ]).finally(() => clearTimeout(guard));
    assert.equal(write.status, "rejected");
    assert.ok(write.reason instanceof HttpError);
    assert.equal(write.reason.status, 504);
    assert.match(
      write.reason.message,
      /Entry \d+ was not applied within 60 ms; its outcome is unknown/,
    );
    assert.equal(read.status, "rejected");
    assert.ok(read.reason instanceof HttpError);
    assert.equal(read.reason.status, 503);
    assert.match(read.reason.message, /No leader confirmed the read within 40 ms/);
    assert.equal(leader.counters.proposalsFailed, 1);
  } finally {
    for (const s of servers) await s.close();
    Deno.removeSync(root, { recursive: true });
  }
});
