// Snapshots in the consensus core (§7, rule 8), driving RaftNodes by hand: compaction with a
// trailing window, InstallSnapshot in bounded chunks, the follower's rules for installing, and a
// restart from a persisted snapshot.
import assert from "node:assert/strict";
import {
  type InstallSnapshot,
  type InstallSnapshotReply,
  LogApplier,
  MemoryStorage,
  type Message,
  type RaftConfig,
  type RaftLogEntry,
  RaftNode,
  SeededRng,
  type Snapshot,
} from "../mod.ts";
import { drainReady, maybeSnapshot } from "../src/raft/host.ts";
import { RaftLog } from "../src/raft/log.ts";

const VOTERS = ["n1", "n2", "n3"];
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A state machine that remembers the commands it applied; its snapshot is their JSON. */
class ListMachine {
  items: string[] = [];
  apply(command: Uint8Array): string {
    const s = dec.decode(command);
    this.items.push(s);
    return s;
  }
}

/** One node with its host: storage, applier, machine, and an outbox of sent messages. */
class Host {
  machine = new ListMachine();
  applier = new LogApplier(this.machine);
  readonly storage = new MemoryStorage();
  readonly outbox: Message[] = [];
  readonly installed: Snapshot[] = [];
  node: RaftNode;

  constructor(readonly id: string, config: Partial<RaftConfig> = {}) {
    this.node = new RaftNode({ id, voters: VOTERS, rng: new SeededRng(id.charCodeAt(1)), config });
  }

  drain(): void {
    // deno-lint-ignore no-this-alias
    const host = this;
    drainReady(this.node, {
      storage: this.storage,
      get applier() {
        return host.applier;
      },
      send: (m) => this.outbox.push(m),
      restore: (s) => {
        this.installed.push(s);
        this.machine = new ListMachine();
        this.machine.items = JSON.parse(dec.decode(s.data));
        this.applier = new LogApplier(this.machine, s.meta.index);
      },
    });
  }

  snapshotNow(): Snapshot {
    const s = maybeSnapshot(this.node, {
      storage: this.storage,
      applier: this.applier,
      capture: () => enc.encode(JSON.stringify(this.machine.items)),
    }, { snapshotEntries: 1 });
    assert.ok(s !== undefined);
    return s;
  }

  take(): Message[] {
    this.drain();
    return this.outbox.splice(0);
  }
}

/** Delivers messages among `hosts` until none is left; `tap` sees each one first (false drops it). */
function pump(hosts: Host[], tap: (m: Message) => boolean = () => true): number {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  let delivered = 0;
  for (let round = 0; round < 10_000; round++) {
    const ms = hosts.flatMap((h) => h.take());
    if (ms.length === 0) return delivered;
    for (const m of ms) {
      const to = byId.get(m.to);
      if (to === undefined || !tap(m)) continue;
      to.node.step(m);
      delivered++;
    }
  }
  throw new Error("pump did not settle");
}

/** n1 leads n2 (n3 is cut off), with `commands` committed and applied on both. */
function leaderWithLog(commands: number, config: Partial<RaftConfig> = {}): Host[] {
  const hosts = VOTERS.map((id) => new Host(id, config));
  const [n1, n2, n3] = hosts;
  n1.node.tick(n1.node.nextDeadlineMs());
  pump([n1, n2]);
  assert.equal(n1.node.role, "Leader");
  for (let i = 1; i <= commands; i++) n1.node.propose(enc.encode(`c${i}`));
  pump([n1, n2]);
  n1.node.tick(n1.node.nowMs + 60); // a heartbeat carries the final commitIndex
  pump([n1, n2]);
  assert.equal(n2.node.commitIndex, commands + 1);
  assert.equal(n3.node.log.lastIndex, 0);
  return hosts;
}

function entry(index: number, term: number): RaftLogEntry {
  return { index, term, kind: "command", command: enc.encode(`c${index}`) };
}

function chunk(fields: Partial<InstallSnapshot> & { data: Uint8Array }): InstallSnapshot {
  return {
    type: "InstallSnapshot",
    from: "n2",
    to: "n1",
    term: 1,
    meta: { index: 6, term: 1, voters: VOTERS },
    totalBytes: fields.data.byteLength,
    offset: 0,
    done: true,
    ...fields,
  };
}

/** A follower n1 at term 1 holding `entries`, committed up to `commitIndex`, led by n2. */
function follower(entries: RaftLogEntry[], commitIndex: number): Host {
  const h = new Host("n1");
  h.node = new RaftNode({
    id: "n1",
    voters: VOTERS,
    rng: new SeededRng(1),
    hardState: { term: 1, votedFor: undefined, commitIndex },
    entries,
    lastApplied: commitIndex,
  });
  h.storage.save({ term: 1, votedFor: undefined, commitIndex }, entries);
  return h;
}

function replies(h: Host): InstallSnapshotReply[] {
  return h.take().filter((m): m is InstallSnapshotReply => m.type === "InstallSnapshotReply");
}

Deno.test("compaction drops entries up to the snapshot but the configured trailing window", () => {
  const [n1] = leaderWithLog(30, { snapshotTrailingEntries: 5 });
  const s = n1.snapshotNow();
  assert.equal(s.meta.index, 31);
  assert.equal(n1.node.log.snapshotIndex, 31);
  assert.equal(n1.node.log.firstIndex, 27); // 26 is the base: its term is remembered
  assert.equal(n1.node.log.term(26), 1);
  assert.equal(n1.node.log.term(25), undefined);
  assert.equal(n1.storage.snapshotIndex, 31);
  assert.throws(
    () =>
      new RaftNode({
        id: "n1",
        voters: VOTERS,
        rng: new SeededRng(1),
        config: { snapshotTrailingEntries: 2_000_000 },
      }),
    /snapshotTrailingEntries/,
  );
});

Deno.test("rule 8: a snapshot at or below commitIndex is never installed; the reply lets the leader move on", () => {
  const h = follower([1, 2, 3, 4, 5, 6, 7, 8].map((i) => entry(i, 1)), 8);
  h.node.step(chunk({ meta: { index: 6, term: 1, voters: VOTERS }, data: enc.encode("[]") }));
  const ready = h.node.takeReady();
  assert.equal(ready.snapshot, undefined);
  const [r] = ready.messages as InstallSnapshotReply[];
  assert.equal(r.type, "InstallSnapshotReply");
  assert.equal(r.done, true);
  assert.equal(r.matchIndex, 8);
  assert.equal(h.node.log.lastIndex, 8);
  assert.equal(h.node.log.snapshotIndex, 0);
});

Deno.test("rule 8: after installing, the log after the snapshot is kept only when the entry there matches", async (t) => {
  await t.step("matching entry: the suffix stays, no re-send needed", () => {
    const h = follower([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((i) => entry(i, 1)), 2);
    h.node.step(chunk({ data: enc.encode(JSON.stringify(["x"])) }));
    const ready = h.node.takeReady();
    assert.equal(ready.snapshot?.meta.index, 6);
    assert.equal(ready.committedEntries.length, 0);
    assert.equal(h.node.log.firstIndex, 7);
    assert.equal(h.node.log.lastIndex, 10);
    assert.equal(h.node.commitIndex, 6);
    assert.equal(h.node.lastApplied, 6);
    const r = ready.messages[0] as InstallSnapshotReply;
    assert.deepEqual([r.done, r.matchIndex], [true, 6]);
  });
  await t.step("conflicting entry: the whole log goes, it continues after the snapshot", () => {
    const h = follower([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((i) => entry(i, 1)), 2);
    h.node.step(
      chunk({ term: 2, meta: { index: 6, term: 2, voters: VOTERS }, data: enc.encode("[]") }),
    );
    h.drain();
    assert.equal(h.node.log.lastIndex, 6);
    assert.equal(h.node.log.lastTerm, 2);
    assert.equal(h.node.log.term(7), undefined);
    assert.equal(h.storage.lastIndex, 6);
    assert.equal(h.storage.snapshotIndex, 6);
    assert.equal(h.storage.hardState.commitIndex, 6);
    assert.equal(h.installed.length, 1);
    assert.equal(h.applier.lastApplied, 6);
  });
  await t.step("a log too short for the snapshot index is replaced", () => {
    const h = follower([entry(1, 1), entry(2, 1)], 2);
    h.node.step(chunk({ data: enc.encode("[]") }));
    h.drain();
    assert.deepEqual([h.node.log.firstIndex, h.node.log.lastIndex], [7, 6]);
  });
});

Deno.test("chunks arrive in order or are asked for again; a duplicate changes nothing", () => {
  const h = follower([entry(1, 1)], 1);
  const data = enc.encode(JSON.stringify(["a", "b", "c", "d"]));
  const part = (offset: number, end: number) =>
    chunk({
      data: data.subarray(offset, end),
      offset,
      totalBytes: data.byteLength,
      done: end === data.byteLength,
    });
  h.node.step(part(0, 8));
  assert.deepEqual(replies(h).map((r) => [r.offset, r.done]), [[8, false]]);
  h.node.step(part(16, data.byteLength)); // a gap: ask for 8 again
  assert.deepEqual(replies(h).map((r) => [r.offset, r.done]), [[8, false]]);
  h.node.step(part(0, 8)); // a duplicate of the first restarts the transfer harmlessly
  h.node.step(part(8, 16));
  h.node.step(part(8, 16)); // duplicate: out of order now
  assert.deepEqual(replies(h).map((r) => [r.offset, r.done]), [[8, false], [16, false], [
    16,
    false,
  ]]);
  h.node.step(part(16, data.byteLength));
  const [r] = replies(h);
  assert.deepEqual([r.done, r.matchIndex], [true, 6]);
  assert.deepEqual(h.machine.items, ["a", "b", "c", "d"]);
});

Deno.test("the leader falls back to InstallSnapshot for a follower behind its compacted log", () => {
  const [n1, n2, n3] = leaderWithLog(40, { snapshotTrailingEntries: 3, snapshotChunkBytesMax: 16 });
  const s = n1.snapshotNow();
  assert.equal(s.meta.index, 41);
  n1.node.propose(enc.encode("after"));
  pump([n1, n2]);
  // n3 joins: it rejects the probe, the leader cannot go below its log, so it sends the snapshot.
  const chunks: InstallSnapshot[] = [];
  let inflight = 0;
  let inflightMax = 0;
  // The first chunk went to n3 while it was cut off; it is sent again after two heartbeats.
  assert.equal(n1.node.status().progress.get("n3")!.state, "Snapshot");
  for (let beat = 0; beat < 4; beat++) {
    n1.node.tick(n1.node.nowMs + 50);
    pump([n1, n2, n3], (m) => {
      if (m.type === "InstallSnapshot") {
        chunks.push(m);
        inflightMax = Math.max(inflightMax, ++inflight);
      }
      if (m.type === "InstallSnapshotReply") inflight--;
      return true;
    });
  }
  assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
  assert.ok(chunks.every((c) => c.data.byteLength <= 16), "chunks are bounded");
  assert.equal(inflightMax, 1, "one chunk in flight at a time");
  assert.deepEqual(chunks.map((c) => c.offset), chunks.map((_, i) => i * 16));
  assert.equal(n3.installed.length, 1);
  assert.deepEqual(n3.installed[0].data, s.data); // reassembled byte for byte
  assert.equal(n3.node.log.lastIndex, n1.node.log.lastIndex);
  assert.equal(n3.node.commitIndex, n1.node.commitIndex);
  assert.deepEqual(n3.machine.items, n1.machine.items);
  const pr = n1.node.status().progress.get("n3")!;
  assert.deepEqual([pr.state, pr.matchIndex], ["Replicate", n1.node.log.lastIndex]);
});

Deno.test("a lost chunk is sent again after two heartbeats", () => {
  const [n1, n2, n3] = leaderWithLog(20, { snapshotTrailingEntries: 0, snapshotChunkBytesMax: 8 });
  n1.snapshotNow();
  let dropped = 0;
  pump([n1, n2, n3], (m) => !(m.type === "InstallSnapshot" && m.offset === 8 && dropped++ === 0));
  assert.equal(dropped, 1);
  assert.equal(n3.installed.length, 0);
  for (let i = 0; i < 3; i++) {
    n1.node.tick(n1.node.nowMs + 50);
    pump([n1, n2, n3]);
  }
  assert.equal(n3.installed.length, 1);
  assert.deepEqual(n3.machine.items, n1.machine.items);
});

Deno.test("a node restarted from a persisted snapshot starts its log after it, committed and applied to it", () => {
  const [n1] = leaderWithLog(30, { snapshotTrailingEntries: 4 });
  n1.snapshotNow();
  const persisted = n1.storage.load();
  assert.equal(persisted.snapshot?.meta.index, 31);
  // Storage may keep more entries below the snapshot than the trailing window: the node trims.
  const node = new RaftNode({
    id: "n1",
    voters: VOTERS,
    rng: new SeededRng(3),
    config: { snapshotTrailingEntries: 4 },
    hardState: { ...persisted.hardState, commitIndex: 0 },
    entries: [...Array(31).keys()].map((i) => entry(i + 1, 1)),
    snapshot: persisted.snapshot,
  });
  assert.equal(node.commitIndex, 31);
  assert.equal(node.lastApplied, 31);
  assert.equal(node.log.snapshotIndex, 31);
  assert.equal(node.log.firstIndex, 28);
  assert.equal(node.log.lastIndex, 31);
  assert.equal(node.takeReady().committedEntries.length, 0);
  // A log that disagrees with the snapshot is dropped: it continues right after it.
  const log = new RaftLog([entry(1, 1), entry(2, 1), entry(3, 1)], {
    snapshotIndex: 2,
    snapshotTerm: 2,
  });
  assert.deepEqual([log.firstIndex, log.lastIndex, log.lastTerm], [3, 2, 2]);
});
