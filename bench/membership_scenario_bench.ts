/**
 * Membership changes under load with real processes (issue 19, point 6): one node grows to 5 and
 * shrinks to 3 on 127.0.0.1, each node a `src/net/main.ts` process with its own data directory,
 * while `--writers` clients put distinct keys and a reader does linearizable gets. The steps:
 *
 *   1. start one node (`--serve-peers`), preload `--preload-keys`, grow 1→3: `member add` a
 *      learner, start it with `--initial-cluster-state existing`, wait until it has applied the
 *      leader's commit index, `member promote` (twice);
 *   2. grow 3→5 the same way;
 *   3. SIGKILL a follower, then replace it: `member remove` the dead member, add a new member
 *      under a new name with an empty data directory, catch up, promote;
 *   4. move the leadership to a chosen follower (`/v3/maintenance/transfer-leadership`);
 *   5. remove the leader (the rest elect a new one);
 *   6. remove one more follower (5→3 with step 5).
 *
 * Clients use only the public HTTP/JSON API. A writer sends each put to one member and, on any
 * error or timeout, sends the same key and value to the next member (round robin over the members
 * as `member list` shows them). A put answered 200 is acknowledged; 504 or a broken or timed-out
 * request leaves its outcome unknown (neither acknowledged nor lost); any other answer is a
 * refusal. The reader asks for the key most recently acknowledged (before the read was sent) and
 * expects to see it. Per step the table gives its duration and parts, the longest window in which
 * no writer got an acknowledgement, the failed requests and the slowest get (requests are counted
 * in the step in which they end); at the end every acknowledged write is read back, linearizably,
 * from every remaining member. Exit code 1 on a lost write or a stale
 * read, 2 on a step that fails or hangs. Every process it starts is killed at the end.
 *
 *   deno run -A bench/membership_scenario_bench.ts --writers 6 --value-bytes 100 --preload-keys 20000
 *
 * @module
 */

import { parseArgs } from "node:util";
import { b64, freePort, NodeProcess } from "../tests/net_helpers.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    writers: { type: "string", default: "6" },
    "value-bytes": { type: "string", default: "100" },
    "preload-keys": { type: "string", default: "20000" },
    "steady-ms": { type: "string", default: "2000" },
    "client-timeout-ms": { type: "string", default: "2000" },
    "snapshot-entries": { type: "string" },
    "timeout-s": { type: "string", default: "600" },
    "keep-dir": { type: "boolean", default: false },
  },
});
const writerCount = Number(flags.writers);
const valueBytes = Number(flags["value-bytes"]);
const preloadKeys = Number(flags["preload-keys"]);
const steadyMs = Number(flags["steady-ms"]);
const clientTimeoutMs = Number(flags["client-timeout-ms"]);

// deno-lint-ignore no-explicit-any
type Json = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

/** A failure of a step (it did not finish, or finished wrong): exit code 2. */
class StepFailed extends Error {}

// ---- Nodes --------------------------------------------------------------------------------------

interface Member {
  name: string;
  /** etcd's member id, decimal. */
  id: string;
  node: NodeProcess;
  peer: string;
}

const dir = Deno.makeTempDirSync({ prefix: "raftmeta-membership-scenario-" });
const secret = crypto.randomUUID();
const started: NodeProcess[] = [];
/** The members of the configuration, as the bench knows it (a killed one stays until removed). */
const members: Member[] = [];

/** Starts node `name`; `peers` are the current members it copies the log from (none: a new cluster). */
function spawn(name: string, client: number, peer: number, peers: Member[]): NodeProcess {
  const args = [
    "--name",
    name,
    "--cluster-id",
    "scenario",
    "--data-dir",
    `${dir}/${name}`,
    "--listen-client",
    `127.0.0.1:${client}`,
    "--listen-peer",
    `127.0.0.1:${peer}`,
    // A node with no --peers opens its peer port all the same, so a one-node cluster can grow.
    "--serve-peers",
    ...(flags["snapshot-entries"] === undefined
      ? []
      : ["--snapshot-entries", flags["snapshot-entries"]]),
    ...(peers.length === 0 ? [] : [
      "--peers",
      peers.map((m) => `${m.name}=${m.peer}`).join(","),
      "--peer-client-urls",
      peers.map((m) => `${m.name}=${m.node.url}`).join(","),
      "--initial-cluster-state",
      "existing",
    ]),
  ];
  const node = new NodeProcess(name, `http://127.0.0.1:${client}`, `${dir}/${name}`, args, {
    RAFTMETA_CLUSTER_SECRET: secret,
  });
  started.push(node);
  return node;
}

async function killAll(): Promise<void> {
  for (const n of started) n.signal("SIGKILL");
  await Promise.all(started.map((n) => n.exited));
}

/** Resolves with the exit status, or undefined after `ms`. */
async function exitWithin(n: NodeProcess, ms: number): Promise<Deno.CommandStatus | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([
    n.exited,
    new Promise<undefined>((res) => timer = setTimeout(() => res(undefined), ms)),
  ]);
  clearTimeout(timer);
  return r;
}

// ---- Requests -----------------------------------------------------------------------------------

type Outcome =
  | { kind: "ok"; json: Json }
  | { kind: "refused"; status: number; error: string }
  | { kind: "unknown"; error: string };

/**
 * POSTs `body` to `url`. 200 is "ok"; 504 (etcd's "outcome unknown"), a timeout or a connection
 * that broke after the request went out is "unknown"; any other status, or a connection that was
 * never made, is "refused" (the request did not take effect).
 */
async function send(url: string, body: unknown, timeoutMs = clientTimeoutMs): Promise<Outcome> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    const error = (e as Error).message;
    if (/Connection refused|os error 111/i.test(error)) {
      return { kind: "refused", status: 0, error };
    }
    return { kind: "unknown", error };
  }
  let text: string;
  try {
    text = await res.text();
  } catch (e) {
    return res.status === 200
      ? { kind: "unknown", error: (e as Error).message }
      : { kind: "refused", status: res.status, error: (e as Error).message };
  }
  let json: Json;
  try {
    json = JSON.parse(text);
  } catch {
    json = { error: text };
  }
  if (res.status === 200) return { kind: "ok", json };
  const error = String(json?.error ?? text).slice(0, 300);
  if (res.status === 504) return { kind: "unknown", error };
  return { kind: "refused", status: res.status, error };
}

async function localStatus(m: Member): Promise<Record<string, Json> | undefined> {
  try {
    const res = await fetch(`${m.node.url}/v1/status?local=1`, {
      signal: AbortSignal.timeout(1000),
    });
    return (await res.json()).node;
  } catch {
    return undefined;
  }
}

/** The member that reports itself leader (highest term), polling for up to `ms`. */
async function findLeader(among: Member[], ms = 20_000): Promise<Member> {
  const deadline = now() + ms;
  while (now() < deadline) {
    const rows = await Promise.all(among.map(localStatus));
    let best: { m: Member; term: number } | undefined;
    rows.forEach((r, i) => {
      if (r?.role === "Leader" && (best === undefined || r.term > best.term)) {
        best = { m: among[i], term: r.term };
      }
    });
    if (best !== undefined) return best.m;
    await sleep(20);
  }
  throw new StepFailed(`no leader among ${among.map((m) => m.name).join(",")} in ${ms} ms`);
}

/** `member list` from any answering member. */
async function memberList(among: Member[]): Promise<Json[]> {
  for (let attempt = 0; attempt < 100; attempt++) {
    for (const m of among) {
      const r = await send(`${m.node.url}/v3/cluster/member/list`, {}, 3000);
      if (r.kind === "ok") return r.json.members;
    }
    await sleep(50);
  }
  throw new StepFailed("no member answers member list");
}

/**
 * Sends a membership request to the leader of `among` until it is answered 200 or `settled`
 * (checked with `member list` after an unknown outcome or a refusal) holds. Returns the time of
 * the answered request and the number of requests sent.
 */
async function change(
  what: string,
  among: Member[],
  path: string,
  body: unknown,
  settled: (list: Json[]) => boolean,
  ms = 60_000,
): Promise<{ ms: number; attempts: number; json: Json }> {
  const t0 = now();
  let last = "";
  for (let attempt = 1; now() - t0 < ms; attempt++) {
    const leader = await findLeader(among);
    const r = await send(`${leader.node.url}${path}`, body, 20_000);
    if (r.kind === "ok") return { ms: now() - t0, attempts: attempt, json: r.json };
    last = `${r.kind}${r.kind === "refused" ? ` ${r.status}` : ""}: ${r.error}`;
    const alive = among.filter((m) => m !== leader);
    if (settled(await memberList(alive.length > 0 ? alive : among))) {
      return { ms: now() - t0, attempts: attempt, json: undefined };
    }
    await sleep(50);
  }
  throw new StepFailed(`${what} not done in ${ms} ms; last answer ${last}`);
}

// ---- Load ---------------------------------------------------------------------------------------

/** Client endpoints: the members' client URLs as the clients know them (from member list). */
let endpoints: string[] = [];
let loadRunning = true;

/** Acknowledgement times (performance.now()), in order. */
const ackTimes: number[] = [];
/** Every acknowledged write: key → value. */
const acked = new Map<string, string>();
/** Writes never acknowledged whose outcome is unknown (some request for them got no answer). */
const unknownKeys = new Map<string, string>();
/** Request events for the per-step counts. */
const events: {
  t: number;
  kind: "refused" | "unknown" | "read-ok" | "read-failed";
  /** A read's latency. */
  ms?: number;
}[] = [];
const errorTexts = new Map<string, number>();
let lastAck: { key: string; value: string } | undefined;
const staleReads: string[] = [];
let putMsMax = 0;

function noteError(o: Outcome): void {
  if (o.kind === "ok") return;
  const text = `${o.kind}${o.kind === "refused" ? ` ${o.status}` : ""}: ${o.error}`
    .replace(/\d{3,}/g, "N").slice(0, 200);
  errorTexts.set(text, (errorTexts.get(text) ?? 0) + 1);
}

function valueOf(prefix: string): string {
  return prefix.length >= valueBytes ? prefix : prefix + "x".repeat(valueBytes - prefix.length);
}

async function writer(w: number): Promise<void> {
  let at = w;
  for (let seq = 0; loadRunning; seq++) {
    const key = `/w/${w}/${seq}`;
    const value = valueOf(`${w}.${seq}.`);
    const body = { key: b64(key), value: b64(value) };
    let unknown = false;
    // The same key and value until acknowledged; at the end, give up after a while.
    for (let attempt = 0;; attempt++) {
      if (!loadRunning && attempt >= 20) {
        if (unknown) unknownKeys.set(key, value);
        break;
      }
      const url = endpoints[at % endpoints.length];
      const t = now();
      const r = await send(`${url}/v3/kv/put`, body);
      if (r.kind === "ok") {
        const done = now();
        ackTimes.push(done);
        acked.set(key, value);
        lastAck = { key, value };
        putMsMax = Math.max(putMsMax, done - t);
        break;
      }
      if (r.kind === "unknown") unknown = true;
      events.push({ t: now(), kind: r.kind });
      noteError(r);
      at++;
      await sleep(10);
    }
  }
}

async function reader(): Promise<void> {
  let at = 0;
  while (loadRunning) {
    const expect = lastAck;
    if (expect === undefined) {
      await sleep(10);
      continue;
    }
    const url = endpoints[at % endpoints.length];
    const sent = now();
    const r = await send(`${url}/v3/kv/range`, { key: b64(expect.key) });
    if (r.kind === "ok") {
      events.push({ t: now(), kind: "read-ok", ms: now() - sent });
      const kv = r.json.kvs?.[0];
      const got = kv === undefined ? undefined : atob(kv.value);
      if (got !== expect.value) {
        staleReads.push(`${url}: ${expect.key} read ${JSON.stringify(got)}`);
      }
    } else {
      events.push({ t: now(), kind: "read-failed", ms: now() - sent });
      noteError(r);
      at++;
      await sleep(10);
    }
  }
}

/** Waits until some write is acknowledged after `t`; returns that time. */
async function ackAfter(t: number, ms = 30_000): Promise<number> {
  const deadline = now() + ms;
  while (now() < deadline) {
    const last = ackTimes[ackTimes.length - 1];
    if (last !== undefined && last > t) return ackTimes.find((x) => x > t)!;
    await sleep(5);
  }
  throw new StepFailed(`no write acknowledged within ${ms} ms`);
}

// ---- Steps --------------------------------------------------------------------------------------

interface Row {
  step: string;
  members: number;
  ms: number;
  parts: string;
  gapMs: number;
  acks: number;
  refused: number;
  unknown: number;
  reads: number;
  readsFailed: number;
  readMsMax: number;
}
const rows: Row[] = [];

/**
 * Runs one step: `body` does it and returns its parts; the step's window runs from its start to
 * the first acknowledgement after it finished (so a stall at its end counts in full).
 */
async function step(name: string, body: () => Promise<string>): Promise<void> {
  console.error(`step: ${name}`);
  const t0 = now();
  const parts = await body();
  const done = now();
  const end = await ackAfter(done);
  const inWindow = [t0, ...ackTimes.filter((t) => t > t0 && t <= end)];
  let gapMs = 0;
  for (let i = 1; i < inWindow.length; i++) {
    gapMs = Math.max(gapMs, inWindow[i] - inWindow[i - 1]);
  }
  const count = (kind: string) =>
    events.filter((e) => e.t > t0 && e.t <= end && e.kind === kind).length;
  rows.push({
    step: name,
    members: members.length,
    ms: done - t0,
    parts,
    gapMs,
    acks: inWindow.length - 1,
    refused: count("refused"),
    unknown: count("unknown"),
    reads: count("read-ok"),
    readsFailed: count("read-failed"),
    readMsMax: Math.max(
      0,
      ...events.filter((e) => e.t > t0 && e.t <= end && e.ms !== undefined).map((e) => e.ms!),
    ),
  });
}

function syncEndpoints(): void {
  endpoints = members.map((m) => m.node.url);
}

/** Adds `name` as a learner, starts it, waits until it caught up, promotes it. */
async function grow(name: string): Promise<string> {
  const client = freePort();
  const peer = freePort();
  const peerUrl = `http://127.0.0.1:${peer}`;
  const before = [...members];
  const added = await change(
    `member add ${name}`,
    before,
    "/v3/cluster/member/add",
    { name, peerURLs: [peerUrl], clientURLs: [`http://127.0.0.1:${client}`], isLearner: true },
    (list) => list.some((m) => m.name === name),
  );
  const id: string = added.json?.member?.ID ??
    (await memberList(before)).find((m: Json) => m.name === name).ID;
  const t1 = now();
  const node = spawn(name, client, peer, before);
  const m: Member = { name, id, node, peer: `127.0.0.1:${peer}` };
  const leader = await findLeader(before);
  const target = Number((await localStatus(leader))?.commitIndex ?? 0);
  for (;;) {
    const s = await localStatus(m);
    if (s !== undefined && s.status === "up" && Number(s.lastApplied) >= target) break;
    if (await exitWithin(node, 0) !== undefined) {
      throw new StepFailed(`${name} exited while joining:\n${node.stderr.slice(-2000)}`);
    }
    if (now() - t1 > 120_000) throw new StepFailed(`${name} did not catch up in 120 s`);
    await sleep(20);
  }
  const catchUpMs = now() - t1;
  members.push(m);
  const promoted = await change(
    `member promote ${name}`,
    before,
    "/v3/cluster/member/promote",
    { ID: id },
    (list) => list.some((x) => x.name === name && x.isLearner !== true),
  );
  syncEndpoints();
  return `add ${added.ms.toFixed(0)} ms, caught up to index ${target} in ` +
    `${(catchUpMs / 1000).toFixed(2)} s, promote ${promoted.ms.toFixed(0)} ms` +
    (promoted.attempts > 1 ? ` (${promoted.attempts} requests)` : "");
}

/** Removes member `m` (sent to the leader); returns the parts of the step. */
async function remove(m: Member, dead = false): Promise<string> {
  const rest = members.filter((x) => x !== m);
  const wasLeader = !dead && (await localStatus(m))?.role === "Leader";
  const r = await change(
    `member remove ${m.name}`,
    wasLeader ? members : rest,
    "/v3/cluster/member/remove",
    { ID: m.id },
    (list) => !list.some((x) => x.ID === m.id),
  );
  members.splice(members.indexOf(m), 1);
  syncEndpoints();
  const t = now();
  let parts = `remove ${r.ms.toFixed(0)} ms`;
  if (wasLeader) {
    const next = await findLeader(rest);
    parts += `, ${next.name} leads ${(now() - t).toFixed(0)} ms later`;
  }
  if (!dead) {
    const status = await exitWithin(m.node, 20_000);
    if (status === undefined) throw new StepFailed(`removed ${m.name} still runs after 20 s`);
    parts += `, ${m.name} exited (code ${status.code}) ${(now() - t).toFixed(0)} ms later`;
  }
  return parts;
}

async function steady(): Promise<string> {
  await sleep(steadyMs);
  return `${steadyMs} ms of load, no change`;
}

// ---- The scenario -------------------------------------------------------------------------------

const watchdog = setTimeout(async () => {
  console.error(`watchdog: not done in ${flags["timeout-s"]} s; killing every node`);
  await killAll();
  Deno.exit(2);
}, Number(flags["timeout-s"]) * 1000);
const onSigint = async () => {
  await killAll();
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onSigint);

let exitCode = 0;
const loadTasks: Promise<void>[] = [];
try {
  const t0 = now();
  const c1 = freePort();
  const p1 = freePort();
  const n1 = spawn("n1", c1, p1, []);
  const first: Member = { name: "n1", id: "", node: n1, peer: `127.0.0.1:${p1}` };
  members.push(first);
  await findLeader(members);
  first.id = (await memberList(members))[0].ID;
  syncEndpoints();

  // Preload, in transactions of 128 puts, so a new member has a log to copy.
  const tLoad = now();
  for (let next = 0; next < preloadKeys;) {
    const success = [];
    const batch = new Map<string, string>();
    for (let j = 0; j < 128 && next < preloadKeys; j++, next++) {
      const key = `/p/${next}`;
      const value = valueOf(`p.${next}.`);
      batch.set(key, value);
      success.push({ requestPut: { key: b64(key), value: b64(value) } });
    }
    const r = await send(`${n1.url}/v3/kv/txn`, { success }, 20_000);
    if (r.kind !== "ok") throw new StepFailed(`preload: ${JSON.stringify(r)}`);
    for (const [k, v] of batch) acked.set(k, v);
  }
  console.error(
    `preloaded ${preloadKeys} keys of ${valueBytes} bytes in ${
      ((now() - tLoad) / 1000).toFixed(1)
    } s (node up ${((tLoad - t0) / 1000).toFixed(1)} s after start)`,
  );

  for (let w = 0; w < writerCount; w++) loadTasks.push(writer(w));
  loadTasks.push(reader());
  await ackAfter(now());

  await step("0. baseline, 1 node", steady);
  await step("1a. grow 1→2 (n2)", () => grow("n2"));
  await step("1b. grow 2→3 (n3)", () => grow("n3"));
  await step("2a. grow 3→4 (n4)", () => grow("n4"));
  await step("2b. grow 4→5 (n5)", () => grow("n5"));
  await step("baseline, 5 nodes", steady);

  // A follower dies: the oldest member that does not lead.
  let leader = await findLeader(members);
  const victim = members.find((m) => m !== leader)!;
  await step(`3a. SIGKILL follower ${victim.name}`, async () => {
    await victim.node.kill();
    await sleep(1000);
    return `killed ${victim.name}, then 1000 ms of load with ${
      members.length - 1
    } of ${members.length} up`;
  });
  await step(`3b. replace ${victim.name} by n6`, async () => {
    const removed = await remove(victim, true);
    const grown = await grow("n6");
    return `${removed}; ${grown}`;
  });

  const target = members.find((m) => m.name === "n6")!;
  await step(`4. move-leader to ${target.name}`, async () => {
    leader = await findLeader(members);
    if (leader === target) return `${target.name} already leads`;
    const from = leader.name;
    const r = await change(
      "move-leader",
      members,
      "/v3/maintenance/transfer-leadership",
      { targetID: target.id },
      () => false,
    );
    const leading = await findLeader(members);
    if (leading !== target) {
      throw new StepFailed(`move-leader answered, but ${leading.name} leads`);
    }
    return `${from} → ${target.name} in ${r.ms.toFixed(0)} ms` +
      (r.attempts > 1 ? ` (${r.attempts} requests)` : "");
  });

  leader = await findLeader(members);
  const removedLeader = leader;
  await step(`5. remove the leader (${removedLeader.name})`, () => remove(removedLeader));

  leader = await findLeader(members);
  const follower = members.find((m) => m !== leader)!;
  await step(`6. remove follower ${follower.name}`, () => remove(follower));

  // Stop the load; every writer finishes (or gives up) its current key.
  loadRunning = false;
  await Promise.all(loadTasks);
  loadTasks.length = 0;

  // Read every acknowledged write back from every remaining member.
  const lost = new Map<string, string[]>();
  let unknownApplied = 0;
  for (const m of members) {
    const seen = new Map<string, string>();
    for (const prefix of ["/p/", "/w/"]) {
      const end = prefix.slice(0, -1) +
        String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
      let from = prefix;
      for (;;) {
        const r = await send(
          `${m.node.url}/v3/kv/range`,
          { key: b64(from), range_end: b64(end), limit: 5000 },
          30_000,
        );
        if (r.kind !== "ok") throw new StepFailed(`read back from ${m.name}: ${JSON.stringify(r)}`);
        const kvs: Json[] = r.json.kvs ?? [];
        for (const kv of kvs) seen.set(atob(kv.key), atob(kv.value));
        if (r.json.more !== true || kvs.length === 0) break;
        from = atob(kvs[kvs.length - 1].key) + "\0";
      }
    }
    const missing: string[] = [];
    for (const [k, v] of acked) if (seen.get(k) !== v) missing.push(k);
    if (missing.length > 0) lost.set(m.name, missing);
    if (m === members[0]) { for (const k of unknownKeys.keys()) if (seen.has(k)) unknownApplied++; }
  }

  const table = [
    "| step | members after | step time | parts | longest window with no write acknowledged | " +
    "puts acknowledged | requests refused | outcome unknown | linearizable gets (failed) | " +
    "slowest get |",
    "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((r) =>
      `| ${r.step} | ${r.members} | ${(r.ms / 1000).toFixed(2)} s | ${r.parts} | ` +
      `${r.gapMs.toFixed(0)} ms | ${r.acks} | ${r.refused} | ${r.unknown} | ` +
      `${r.reads} (${r.readsFailed}) | ${r.readMsMax.toFixed(0)} ms |`
    ),
  ];
  console.log(table.join("\n"));
  console.log();
  if (errorTexts.size > 0) {
    console.log("failed requests (puts and gets) by answer:");
    for (const [text, n] of [...errorTexts].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
      console.log(`  ${n} × ${text}`);
    }
  }
  const writes = acked.size - preloadKeys;
  for (const [name, keys] of lost) {
    console.log(`LOST on ${name}: ${keys.length} acknowledged writes, e.g. ${keys.slice(0, 5)}`);
  }
  for (const s of staleReads.slice(0, 10)) console.log(`STALE READ ${s}`);
  const lostTotal = [...lost.values()].reduce((a, k) => a + k.length, 0);
  console.log(
    `summary: ${acked.size} acknowledged writes (${preloadKeys} preloaded, ${writes} by ` +
      `${writerCount} writers; slowest acknowledged put ${
        putMsMax.toFixed(0)
      } ms) read back from ` +
      `each of ${members.map((m) => m.name).join(", ")}: ${lostTotal} lost; ` +
      `${unknownKeys.size} writes never acknowledged with an unknown outcome ` +
      `(${unknownApplied} of them applied); ` +
      `${events.filter((e) => e.kind === "unknown").length} requests with an unknown outcome; ` +
      `${events.filter((e) => e.kind === "read-ok").length} linearizable gets, ` +
      `${staleReads.length} stale; total ${((now() - t0) / 1000).toFixed(1)} s`,
  );
  if (lostTotal > 0 || staleReads.length > 0) exitCode = 1;
} catch (e) {
  exitCode = 2;
  console.error(`FAILED: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  for (const n of started) {
    const tail = n.stderr.trim().split("\n").slice(-15).join("\n");
    if (tail !== "") console.error(`--- ${n.id} stderr (last lines):\n${tail}`);
  }
  if (rows.length > 0) console.error(JSON.stringify(rows, null, 1));
} finally {
  loadRunning = false;
  clearTimeout(watchdog);
  Deno.removeSignalListener("SIGINT", onSigint);
  await killAll();
  await Promise.allSettled(loadTasks);
  if (flags["keep-dir"]) console.error(`data directories kept in ${dir}`);
  else Deno.removeSync(dir, { recursive: true });
}
Deno.exit(exitCode);
