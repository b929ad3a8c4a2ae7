/**
 * A follower's WAL damaged behind its back on real node processes (issue 14 item 7): its last
 * segment cut to half, or deleted. It must refuse to start, naming file and offset; started with
 * `--repair-wal` it logs the cut and the leader catches it up at once, without a leader change.
 */

import assert from "node:assert/strict";
import { b64, type NodeProcess, post, ProcessCluster } from "./net_helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(
  what: string,
  predicate: () => Promise<boolean>,
  timeoutMs: number,
): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    if (await predicate()) return Date.now() - start;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** The WAL segments of `node`, oldest first. */
function segments(node: NodeProcess): string[] {
  return [...Deno.readDirSync(node.dataDir)]
    .map((e) => e.name)
    .filter((n) => /^wal-.*\.log$/.test(n))
    .sort();
}

/** The keys under `/d/` that `node` holds, read locally (serializable). */
async function localKeys(node: NodeProcess): Promise<string[]> {
  const r = await post(
    `${node.url}/v3/kv/range`,
    JSON.stringify({ key: b64("/d/"), range_end: b64("/d0"), serializable: true }),
  );
  assert.equal(r.status, 200, JSON.stringify(r.json));
  // deno-lint-ignore no-explicit-any
  return (r.json.kvs ?? []).map((kv: any) => atob(kv.key));
}

Deno.test("net: a follower whose last WAL segment was cut or deleted refuses to start, then is repaired with --repair-wal", async (t) => {
  const cluster = ProcessCluster.start(3);
  try {
    const leader = await cluster.waitForLeader();
    const follower = cluster.nodes.find((n) => n !== leader)!;
    const term = (await leader.local())!.term as number;
    const written: string[] = [];

    const writeAndSettle = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const key = `/d/${String(written.length).padStart(4, "0")}`;
        const r = await post(
          `${leader.url}/v3/kv/put`,
          JSON.stringify({ key: b64(key), value: b64("v") }),
        );
        assert.equal(r.status, 200, JSON.stringify(r.json));
        written.push(key);
      }
      // The follower holds (and synced) every acknowledged write before it is damaged.
      const target = (await leader.local())!.commitIndex as number;
      await waitFor("the follower to apply every write", async () => {
        const s = await follower.local();
        return s !== undefined && (s.lastApplied as number) >= target;
      }, 10_000);
    };

    const refuseThenRepair = async (damage: () => string, expect: RegExp) => {
      await follower.kill();
      const file = damage();
      follower.restart();
      // A node that starts despite the damage must not hang the test: it fails here.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        follower.exited,
        new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), 15_000)),
      ]);
      clearTimeout(timer);
      assert.ok(status !== undefined, `the damaged node started: ${follower.lines.join("\n")}`);
      assert.notEqual(status.code, 0, follower.stderr);
      assert.ok(follower.stderr.includes(file), `${file} not in: ${follower.stderr}`);
      assert.match(follower.stderr, /at byte \d+/);
      assert.match(follower.stderr, expect);

      const linesBefore = follower.lines.length;
      follower.restart(["--repair-wal"]);
      const target = (await leader.local())!.commitIndex as number;
      const ms = await waitFor("the repaired follower to catch up", async () => {
        const s = await follower.local();
        return s !== undefined && s.status === "up" && (s.lastApplied as number) >= target;
      }, 10_000);
      console.log(`caught up ${ms} ms after the restart with --repair-wal`);
      const events = follower.lines.slice(linesBefore).map((l) => JSON.parse(l));
      const repaired = events.find((e) => e.event === "wal-repaired");
      assert.ok(repaired !== undefined, events.map((e) => e.event).join(","));
      assert.ok(String(repaired.damage).includes(file), JSON.stringify(repaired));
      assert.deepEqual(await localKeys(follower), written);
      // The leader repaired it; nobody held an election over it.
      const now = (await leader.local())!;
      assert.equal(now.role, "Leader");
      assert.equal(now.term, term);
    };

    await t.step("last segment cut to half", async () => {
      await writeAndSettle(60);
      await refuseThenRepair(() => {
        const name = segments(follower).at(-1)!;
        const path = `${follower.dataDir}/${name}`;
        Deno.truncateSync(path, Math.floor(Deno.statSync(path).size / 2));
        return name;
      }, /synced records are missing/);
    });

    await t.step("last segment deleted", async () => {
      await writeAndSettle(20);
      await refuseThenRepair(() => {
        const name = segments(follower).at(-1)!;
        Deno.removeSync(`${follower.dataDir}/${name}`);
        // With no segment left the error names the pattern of the missing files.
        return segments(follower).length === 0 ? "wal-*.log" : segments(follower).at(-1)!;
      }, /synced segments are missing/);
    });
  } finally {
    await cluster.stop();
  }
});
