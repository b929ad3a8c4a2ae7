/**
 * The coordination recipes over HTTP against real node processes: `Session`, `lock` with fencing
 * tokens, `campaign` / `observe` / `resign` and `fencedPut` on `connect(...).coord()`; a watch
 * that resumes across a leader kill; the streaming lease keep-alive; a slow watcher cancelled;
 * `ctl lock` and `ctl elect`.
 */

import assert from "node:assert/strict";
import { b64, post, ProcessCluster } from "./net_helpers.ts";
import { connect, type HttpCoordClient, RaftmetaError } from "../src/net/client.ts";
import { runCtl } from "../src/net/ctl.ts";
import type { CoordClient } from "../src/coord/client.ts";
import { Session } from "../src/coord/session.ts";
import { campaign, fencedPut, leader, lock, observe } from "../src/coord/lock.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `predicate` until it holds; fails naming `what` after `timeoutMs`. */
async function until(
  what: string,
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `client`, recording the key range of every watch it opens. */
function recording(client: CoordClient, watched: string[]): CoordClient {
  return {
    txn: (t) => client.txn(t),
    range: (r) => client.range(r),
    leaseGrant: (ttlMs) => client.leaseGrant(ttlMs),
    leaseRevoke: (id) => client.leaseRevoke(id),
    leaseKeepAlive: (id) => client.leaseKeepAlive(id),
    sleep: (ms, signal) => client.sleep(ms, signal),
    watch: (options) => {
      watched.push(JSON.stringify(options.range));
      return client.watch(options);
    },
  };
}

/** Whether `promise` has settled (after letting pending callbacks run). */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await sleep(0);
  return done;
}

Deno.test("net: coordination recipes over HTTP on three node processes", async (t) => {
  const cluster = ProcessCluster.start(3);
  const urls = cluster.nodes.map((n) => n.url);
  const coord = (): HttpCoordClient => connect(urls, { timeoutMs: 15_000 }).coord();
  try {
    await cluster.waitForLeader();

    await t.step(
      "lock: a dead holder's lock passes to the next waiter with a higher token; each waiter watches only its predecessor",
      async () => {
        const name = "/locks/res";
        const [ca, cb, cc] = [coord(), coord(), coord()];
        const watchedB: string[] = [];
        const watchedC: string[] = [];
        const a = await Session.create(ca, { ttlMs: 1_000 });
        const b = await Session.create(recording(cb, watchedB), { ttlMs: 5_000 });
        const c = await Session.create(recording(cc, watchedC), { ttlMs: 5_000 });
        const ha = await lock(a, name);
        assert.equal(await fencedPut(ca, "/res", "from a", ha.fencingToken), true);

        const pb = lock(b, name);
        await until("b to wait", () => watchedB.length > 0);
        const pc = lock(c, name);
        await until("c to wait", () => watchedC.length > 0);
        const keys = (await ca.range({ prefix: `${name}/` })).kvs;
        assert.equal(keys.length, 3);
        const keyOf = (s: Session) => `${name}/${s.lease.toString(16)}`;
        assert.equal(await settled(pb), false, "b must wait while a holds");

        // a stops keeping its session alive (as a crashed or paused client does): its lease
        // expires on the leader, its key is deleted, and b, which watched it, takes the lock.
        a.abandon();
        const hb = await pb;
        assert.ok(hb.fencingToken > ha.fencingToken, `${hb.fencingToken} > ${ha.fencingToken}`);
        assert.equal(hb.key, keyOf(b));
        assert.equal(await settled(pc), false, "c must wait while b holds");
        assert.equal(await fencedPut(cb, "/res", "from b", hb.fencingToken), true);
        // a wakes up and writes with its old token: the fence refuses it.
        assert.equal(await fencedPut(ca, "/res", "late from a", ha.fencingToken), false);
        assert.equal((await cb.client.get("/res"))?.text, "from b");

        // b's lease is revoked (its session dies at once): c takes over.
        await cb.client.leaseRevoke(b.lease);
        const hc = await pc;
        assert.ok(hc.fencingToken > hb.fencingToken, `${hc.fencingToken} > ${hb.fencingToken}`);
        await b.ended();
        assert.equal(b.state, "lost");
        assert.match(b.lostReason!, /not found/);

        // No thundering herd: b watched only a's key, c only b's.
        assert.deepEqual(new Set(watchedB), new Set([JSON.stringify({ key: keyOf(a) })]));
        assert.deepEqual(new Set(watchedC), new Set([JSON.stringify({ key: keyOf(b) })]));

        await hc.unlock();
        assert.equal((await cc.range({ prefix: `${name}/` })).kvs.length, 0);
        await c.close();
      },
    );

    await t.step(
      "election: campaign, observe and resign; a second candidate takes over after a resign and after a session dies",
      async () => {
        const name = "/elections/svc";
        const watcher = coord();
        const leaders = observe(watcher, name);
        assert.equal((await leaders.next()).value, undefined, "nobody leads yet");
        const [sa, sb, sc] = await Promise.all(
          [coord(), coord(), coord()].map((c) => Session.create(c, { ttlMs: 1_000 })),
        );

        const la = await campaign(sa, name, "a");
        assert.deepEqual((await leaders.next()).value, {
          value: "a",
          fencingToken: la.fencingToken,
        });
        const pb = campaign(sb, name, "b");
        await until("b to queue", async () => (await watcher.range({ prefix: name })).count === 2);
        assert.equal(await settled(pb), false);

        await la.resign();
        const lb = await pb;
        assert.ok(lb.fencingToken > la.fencingToken);
        assert.deepEqual((await leaders.next()).value, {
          value: "b",
          fencingToken: lb.fencingToken,
        });
        assert.deepEqual(await leader(watcher, name), {
          value: "b",
          fencingToken: lb.fencingToken,
        });

        const pc = campaign(sc, name, "c");
        await until("c to queue", async () => (await watcher.range({ prefix: name })).count === 2);
        sb.abandon(); // b's process "dies": after its TTL, c leads
        const lc = await pc;
        assert.ok(lc.fencingToken > lb.fencingToken);
        assert.deepEqual((await leaders.next()).value, {
          value: "c",
          fencingToken: lc.fencingToken,
        });

        await lc.resign();
        assert.equal((await leaders.next()).value, undefined, "nobody leads after c resigns");
        await leaders.return(undefined);
        await sa.close();
        await sc.close();
      },
    );

    await t.step("keep-alive stream through a follower is answered by the leader", async () => {
      const leaderNode = await cluster.waitForLeader();
      const follower = cluster.nodes.find((n) => n !== leaderNode)!;
      const client = connect(follower.url);
      const { id } = await client.leaseGrant(7);
      const lines = await KeepAliveLines.open(follower.url);
      for (let i = 0; i < 3; i++) {
        lines.send({ ID: String(id) });
        const answer = await lines.next();
        assert.deepEqual([answer.result.ID, answer.result.TTL], [String(id), "7"]);
      }
      await lines.close();
      await client.leaseRevoke(id);
    });

    await t.step("ctl lock and ctl elect hold, print their token, and let go", async () => {
      const ep = ["--endpoints", urls.join(",")];
      const client = connect(urls);
      const lockOut: string[] = [];
      const stopLock = new AbortController();
      const locking = runCtl(
        [...ep, "lock", "/locks/cli", "--ttl", "5"],
        (l) => lockOut.push(l),
        stopLock.signal,
      );
      await until("ctl lock to hold", () => lockOut.length === 2);
      const [key, token] = lockOut;
      assert.match(key, /^\/locks\/cli\/[0-9a-f]+$/);
      const kv = await client.get(key);
      assert.equal(token, `fencing token ${kv!.createRevision}`);

      // A second locker waits for the first one.
      const secondOut: string[] = [];
      const stopSecond = new AbortController();
      const second = runCtl(
        [...ep, "lock", "/locks/cli", "--ttl", "5", "-w", "json"],
        (l) => secondOut.push(l),
        stopSecond.signal,
      );
      await until(
        "the second locker to queue",
        async () => (await client.range({ prefix: "/locks/cli/" })).count === 2,
      );
      assert.deepEqual(secondOut, []);
      stopLock.abort();
      assert.equal(await locking, 0);
      assert.equal(await client.get(key), undefined, "released on interrupt");
      await until("the second locker to hold", () => secondOut.length === 1);
      const held = JSON.parse(secondOut[0]);
      assert.ok(held.fencingToken > kv!.createRevision);
      stopSecond.abort();
      assert.equal(await second, 0);

      const listenOut: string[] = [];
      const stopListen = new AbortController();
      const listening = runCtl(
        [...ep, "elect", "--listen", "/elections/cli"],
        (l) => listenOut.push(l),
        stopListen.signal,
      );
      await until("the listener to start", () => listenOut.length === 1);
      assert.deepEqual(listenOut, ["(no leader)"]);
      const electOut: string[] = [];
      const stopElect = new AbortController();
      const electing = runCtl(
        [...ep, "elect", "/elections/cli", "n7", "--ttl", "5"],
        (l) => electOut.push(l),
        stopElect.signal,
      );
      await until("ctl elect to lead", () => electOut.length === 3);
      assert.match(electOut[0], /^\/elections\/cli\/[0-9a-f]+$/);
      assert.equal(electOut[1], "n7");
      await until("the listener to see n7", () => listenOut.length === 3);
      assert.deepEqual(listenOut.slice(1), ["n7", electOut[2]]);
      stopElect.abort();
      assert.equal(await electing, 0);
      await until("the listener to see the resign", () => listenOut.length === 4);
      assert.equal(listenOut[3], "(no leader)");
      stopListen.abort();
      assert.equal(await listening, 0);

      // With a command: it runs holding the lock, with the key and token in its environment;
      // the lock is released when it exits, and ctl exits with its code.
      const file = await Deno.makeTempFile();
      const code = `Deno.writeTextFileSync(${JSON.stringify(file)}, ` +
        `Deno.env.get("RAFTMETA_LOCK_KEY") + " " + Deno.env.get("RAFTMETA_LOCK_TOKEN")); ` +
        `Deno.exit(3);`;
      assert.equal(
        await runCtl([...ep, "lock", "/locks/cmd", "--", Deno.execPath(), "eval", code]),
        3,
      );
      const [cmdKey, cmdToken] = (await Deno.readTextFile(file)).split(" ");
      await Deno.remove(file);
      assert.match(cmdKey, /^\/locks\/cmd\/[0-9a-f]+$/);
      assert.ok(Number(cmdToken) > held.fencingToken);
      assert.equal((await client.range({ prefix: "/locks/cmd/" })).count, 0, "released");

      const errors: string[] = [];
      assert.equal(await runCtl([...ep, "elect", "/elections/cli"], (l) => errors.push(l)), 2);
      assert.equal(await runCtl([...ep, "lock", "/x", "--ttl", "0"], (l) => errors.push(l)), 2);
    });

    await t.step(
      "a watch resumes across a leader kill: every committed event once, in revision order",
      async () => {
        const leaderNode = await cluster.waitForLeader();
        const others = cluster.nodes.filter((n) => n !== leaderNode);
        const before = (await leaderNode.local())!;
        // The watch's first endpoint is the leader, so the kill breaks its stream; its requests
        // are recorded to show that it was reopened elsewhere.
        const watchUrls: string[] = [];
        const watchClient = connect([leaderNode.url, ...others.map((n) => n.url)], {
          timeoutMs: 15_000,
          fetch: (input, init) => {
            if (String(input).endsWith("/v3/watch")) watchUrls.push(String(input));
            return fetch(input, init);
          },
        }).coord();
        const start = (await connect(urls).range({ key: "/resume" })).revision + 1;
        const stream = watchClient.watch({ range: { prefix: "/resume/" }, startRevision: start });
        const seen: string[] = [];
        let lastRevision = 0;
        const reading = (async () => {
          for await (const r of stream) {
            if (r.kind === "canceled") throw new Error(`watch canceled: ${r.reason}`);
            if (r.kind !== "events") continue;
            for (const e of r.events) seen.push(`${r.revision} ${e.type} ${e.kv.key}`);
            lastRevision = r.revision;
          }
        })();

        let stop = false;
        let ackedAfterKill = 0;
        let killed = false;
        const writers = Array.from({ length: 3 }, async (_, w) => {
          const client = connect(urls, { timeoutMs: 8_000, attemptTimeoutMs: 1_000 });
          for (let j = 0; !stop; j++) {
            const key = `/resume/w${w}/${String(j).padStart(5, "0")}`;
            try {
              if (j % 5 === 4) {
                await client.delete(`/resume/w${w}/${String(j - 1).padStart(5, "0")}`);
              } else await client.put(key, `v${j}`);
              if (killed) ackedAfterKill++;
            } catch (e) {
              if (!(e instanceof RaftmetaError)) throw e;
            }
          }
        });
        await until("events before the kill", () => seen.length >= 30);
        await leaderNode.kill();
        killed = true;
        await cluster.waitForLeader({ among: others, minTerm: (before.term as number) + 1 });
        await until("writes after the kill", () => ackedAfterKill >= 30, 15_000);
        stop = true;
        await Promise.all(writers);

        // What the cluster committed, read back from a surviving node: the history of /resume/
        // from the start revision (a fresh watch there) and the final state (a range).
        const survivors = connect(others.map((n) => n.url), { timeoutMs: 15_000 });
        const final = await survivors.range({ prefix: "/resume/" });
        await until("the watch to catch up", () => lastRevision >= final.revision, 15_000);
        stream.cancel();
        await reading;
        const history: string[] = [];
        for await (const r of survivors.watch({ prefix: "/resume/" }, { startRevision: start })) {
          for (const e of r.events) history.push(`${r.revision} ${e.type} ${e.key}`);
          if (r.revision >= lastRevision) break;
        }
        assert.deepEqual(seen, history, "the resumed watch saw exactly the committed history");
        // Replaying what the watch saw gives the store's final state.
        const replayed = new Map<string, number>();
        for (const line of seen) {
          const [revision, type, key] = line.split(" ");
          if (type === "PUT") replayed.set(key, Number(revision));
          else replayed.delete(key);
        }
        assert.deepEqual(
          [...replayed].sort(),
          final.kvs.map((kv) => [kv.key, kv.modRevision]).sort(),
        );
        const revisions = seen.map((line) => Number(line.split(" ")[0]));
        for (let i = 1; i < revisions.length; i++) assert.ok(revisions[i] > revisions[i - 1]);
        assert.ok(seen.some((line) => line.includes(" DELETE ")));
        assert.equal(watchUrls[0], `${leaderNode.url}/v3/watch`);
        assert.ok(
          watchUrls.some((u) => !u.startsWith(leaderNode.url)),
          `the watch was reopened on another node: ${watchUrls.join(", ")}`,
        );
      },
    );
  } finally {
    await cluster.stop();
  }
});

/** A streaming `POST /v3/lease/keepalive`: request lines written, answer lines read. */
class KeepAliveLines {
  readonly #send: (line: string) => void;
  readonly #end: () => void;
  readonly #reader: ReadableStreamDefaultReader<string>;
  readonly #abort: AbortController;
  #rest = "";
  #lines: Json[] = [];

  private constructor(
    send: (line: string) => void,
    end: () => void,
    reader: ReadableStreamDefaultReader<string>,
    abort: AbortController,
  ) {
    this.#send = send;
    this.#end = end;
    this.#reader = reader;
    this.#abort = abort;
  }

  static async open(url: string): Promise<KeepAliveLines> {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
    const encoder = new TextEncoder();
    const abort = new AbortController();
    controller.enqueue(encoder.encode("\n")); // a blank line is allowed and ignored
    const res = await fetch(`${url}/v3/lease/keepalive`, {
      method: "POST",
      body,
      signal: abort.signal,
    });
    assert.equal(res.status, 200);
    return new KeepAliveLines(
      (line) => controller.enqueue(encoder.encode(line + "\n")),
      () => controller.close(),
      res.body!.pipeThrough(new TextDecoderStream()).getReader(),
      abort,
    );
  }

  send(request: unknown): void {
    this.#send(typeof request === "string" ? request : JSON.stringify(request));
  }

  /** Ends the request body. */
  end(): void {
    this.#end();
  }

  /** The next answer line, or undefined when the answer stream ends. */
  async next(): Promise<Json | undefined> {
    while (this.#lines.length === 0) {
      const r = await this.#reader.read();
      if (r.done) return undefined;
      const parts = (this.#rest + r.value).split("\n");
      this.#rest = parts.pop()!;
      for (const p of parts) if (p.trim() !== "") this.#lines.push(JSON.parse(p));
    }
    return this.#lines.shift();
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#reader.cancel().catch(() => {});
  }
}

/** The `raftmeta_watchers` gauge of a node. */
async function watchers(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = /^raftmeta_watchers (\d+)$/m.exec(text);
  assert.ok(m !== null, "raftmeta_watchers is in /metrics");
  return Number(m[1]);
}

Deno.test("net: the keep-alive stream and a slow watcher on one node process", async (t) => {
  const cluster = ProcessCluster.start(1, ["--watch-buffer-events", "8"]);
  try {
    const node = await cluster.waitForLeader();
    const u = node.url;
    const client = connect(u);

    await t.step(
      "a streamed keep-alive body is answered line by line, as etcd's gateway does",
      async () => {
        const { id } = await client.leaseGrant(9);
        const lines = await KeepAliveLines.open(u);
        lines.send({ ID: String(id) });
        const first = await lines.next();
        assert.equal(first.result.ID, String(id));
        assert.equal(first.result.TTL, "9");
        assert.match(first.result.header.revision, /^\d+$/);
        lines.send({ ID: id }); // a number works too
        assert.equal((await lines.next()).result.TTL, "9");
        // Unknown: TTL 0 (etcd's answer; its gateway leaves the zero out), and the stream goes on.
        lines.send({ ID: "987654" });
        const unknown = await lines.next();
        assert.deepEqual([unknown.result.ID, unknown.result.TTL], ["987654", undefined]);
        lines.send({ ID: String(id) });
        assert.equal((await lines.next()).result.TTL, "9");
        lines.end(); // the answers end with the requests
        assert.equal(await lines.next(), undefined);

        // A malformed line: one error line in grpc-gateway's shape, then the stream ends.
        const bad = await KeepAliveLines.open(u);
        bad.send('{"ID": "x"}');
        const error = await bad.next();
        assert.equal(error.error.http_code, 400);
        assert.equal(error.error.grpc_code, 3);
        assert.match(error.error.message, /Field "ID" of LeaseKeepAliveRequest must be an integer/);
        assert.equal(await bad.next(), undefined);
        await bad.close();

        // Several lines in a body of declared length: one answer line each.
        const two = await post(`${u}/v3/lease/keepalive`, `{"ID": "${id}"}\n{"ID": "${id}"}\n`);
        assert.equal(two.status, 200);
        const answers = String(two.json).trim().split("\n").map((l) => JSON.parse(l));
        assert.deepEqual(answers.map((a) => a.result.TTL), ["9", "9"]);
        // One object (curl's form), even pretty-printed: one answer, and 404 when the lease is gone.
        const one = await post(`${u}/v3/lease/keepalive`, `{\n  "ID": "${id}"\n}`);
        assert.equal(one.json.result.TTL, "9");

        // The client's streaming keep-alive.
        const ttls: number[] = [];
        for await (const r of client.leaseKeepAlives(id, { intervalMs: 20 })) {
          ttls.push(r.ttl);
          if (ttls.length === 3) break;
        }
        assert.deepEqual(ttls, [9, 9, 9]);
        const printed: string[] = [];
        const ctl = ["--endpoints", u, "lease", "keep-alive", String(id), "--once"];
        assert.equal(await runCtl(ctl, (l) => printed.push(l)), 0);
        assert.deepEqual(printed, [`lease ${id} keepalived with TTL(9)`]);
        await client.leaseRevoke(id);
        // As etcd: answered, with TTL 0 (left out); the client reports the lease gone (404).
        const gone = await post(`${u}/v3/lease/keepalive`, `{"ID": "${id}"}`);
        assert.equal(gone.status, 200);
        assert.equal(gone.json.result.TTL, undefined);
        await assert.rejects(
          () => client.leaseKeepAlive(id),
          (e) => e instanceof RaftmetaError && e.status === 404 && /not found/.test(e.message),
        );
        await assert.rejects(
          async () => {
            for await (const _ of client.leaseKeepAlives(id)) { /* never */ }
          },
          (e) => e instanceof RaftmetaError && e.status === 404 && /not found/.test(e.message),
        );
      },
    );

    await t.step(
      "a watcher that does not read is cancelled with its reason; the node stays healthy",
      async () => {
        const abort = new AbortController();
        const res = await fetch(`${u}/v3/watch`, {
          method: "POST",
          body: JSON.stringify({
            create_request: { key: b64("/slow/"), range_end: b64("/slow0") },
          }),
          signal: abort.signal,
        });
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let text = (await reader.read()).value!;
        assert.match(text, /"created":true/);
        assert.equal(await watchers(u), 1);
        // Large values fill the socket's buffers; then events wait in the watcher's buffer, and
        // past 8 of them the node cancels the watcher rather than hold more.
        const value = "x".repeat(256 * 1024);
        let puts = 0;
        while (await watchers(u) > 0) {
          assert.ok(puts < 200, "the slow watcher was never cancelled");
          await client.put(`/slow/${puts++}`, value);
        }
        // The node still answers.
        assert.equal((await client.put("/after", "ok")).revision > 0, true);
        assert.equal((await client.get("/after"))?.text, "ok");
        assert.equal((await fetch(`${u}/health`)).status, 200);
        const other = connect(u).watch({ key: "/after" }, { startRevision: 1 });
        assert.equal((await other.next()).value?.events[0].kv.text, "ok");
        await other.return(undefined);
        // The slow reader, reading at last, finds its events and then the reason it was cut off.
        for (;;) {
          const r = await reader.read();
          if (r.done) break;
          text = (text + r.value).slice(-4096);
        }
        const last = JSON.parse(text.trim().split("\n").pop()!);
        assert.equal(last.result.canceled, true);
        assert.match(
          last.result.cancel_reason,
          /^Watcher fell behind: more than 8 events buffered; resume from revision \d+$/,
        );
        abort.abort();
      },
    );
  } finally {
    await cluster.stop();
  }
});
