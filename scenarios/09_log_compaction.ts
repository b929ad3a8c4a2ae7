/**
 * Chapter 9 — log compaction and InstallSnapshot (Raft paper §7, Figure 12 and 13): a leader
 * folds its applied log into a snapshot of the store and discards the entries; a follower that was
 * down meanwhile needs entries the leader no longer has, so the leader sends the snapshot in
 * chunks, the follower installs it and replication resumes. And the two rules of installing
 * (DESIGN.md rule 8): never a snapshot older than the commit index, and keep the log after the
 * snapshot only when the entry at its index matches.
 *
 * Run it: `deno run -A scenarios/09_log_compaction.ts [--seed N] [--nodes N]`.
 *
 * @module
 */

import { Cluster } from "../src/sim/cluster.ts";
import { claim } from "../src/scenario/scenario.ts";
import { RaftLog } from "../src/raft/log.ts";
import type { NodeId, RaftLogEntry } from "../src/raft/types.ts";
import { storeStrings } from "../src/observe/describe.ts";
import { type Chapter, type ChapterContext, note, runChapterCli, type Step } from "./_chapter.ts";

/** A host snapshots its store after this many applied entries (small, to see it happen). */
export const SNAPSHOT_ENTRIES = 20;
/** Entries a compacted log keeps below its snapshot, for followers only slightly behind. */
export const TRAILING_ENTRIES = 5;
/** Most snapshot bytes per InstallSnapshot message (small, to see the chunks). */
export const CHUNK_BYTES_MAX = 256;

/** State carried from step to step. */
export interface CompactionContext extends ChapterContext {
  /** The leader. */
  leader?: NodeId;
  /** The follower that falls behind. */
  laggard?: NodeId;
  /** The laggard's last log index when it went down. */
  laggardLastIndex?: number;
  /** InstallSnapshot messages sent before the laggard came back. */
  chunksBefore?: number;
}

/** A cluster whose hosts snapshot every 20 applied entries and send snapshots in 256-byte chunks. */
export function compactionContext(seed = 1, nodes = 3): CompactionContext {
  return {
    cluster: new Cluster({
      nodes,
      seed,
      snapshotEntries: SNAPSHOT_ENTRIES,
      config: { snapshotTrailingEntries: TRAILING_ENTRIES, snapshotChunkBytesMax: CHUNK_BYTES_MAX },
    }),
  };
}

function keysOf(c: Cluster, id: NodeId): string {
  return JSON.stringify(storeStrings(c.node(id).store));
}

function writes(c: Cluster, from: number, count: number): void {
  for (let i = from; i < from + count; i++) {
    // Values long enough that the snapshot spans several chunks.
    const op = c.complete(c.put(`/config/item${i % 12}`, `value ${i}`));
    claim(op.status === "ok", `PUT /config/item${i % 12} commits (${op.status})`);
  }
}

function entry(index: number, term: number): RaftLogEntry {
  return { index, term, kind: "command", command: new Uint8Array() };
}

/** The chapter's steps. */
export const compactionSteps: readonly Step<CompactionContext>[] = [
  {
    name: "a follower goes down and falls behind",
    explain: "A leader is elected and a few writes commit everywhere. Then a follower crashes: " +
      "its log stops where it was, while the others carry on.",
    run(ctx) {
      const c = ctx.cluster;
      ctx.leader = c.waitForLeader();
      writes(c, 0, 5);
      c.advance(100);
      const laggard = c.ids.find((id) => id !== ctx.leader)!;
      ctx.laggard = laggard;
      ctx.laggardLastIndex = c.node(laggard).raft.log.lastIndex;
      claim(ctx.laggardLastIndex === 6, `${laggard} holds the no-op and 5 writes`);
      c.crash(laggard);
      claim(c.node(laggard).state === "crashed", `${laggard} is down`);
    },
  },
  {
    name: "the leader snapshots its store and compacts its log",
    explain: `Every ${SNAPSHOT_ENTRIES} applied entries, each node serializes its store (the ` +
      "state machine) together with the index and term of the last entry it covers, saves it, " +
      "and discards the log up to there (§7, Figure 12). raftmeta keeps the last " +
      `${TRAILING_ENTRIES} entries below the snapshot, as etcd does, so a follower only slightly ` +
      "behind still gets entries. A log that only grows would fill the disk and make a restart " +
      "replay everything.",
    run(ctx) {
      const c = ctx.cluster;
      writes(c, 5, 45);
      const log = c.node(ctx.leader!).raft.log;
      const snap = c.node(ctx.leader!).raft.snapshot;
      claim(
        snap !== undefined && log.snapshotIndex >= 40,
        `leader snapshot at ${log.snapshotIndex}`,
      );
      claim(
        log.baseIndex === log.snapshotIndex - TRAILING_ENTRIES,
        `the log keeps ${TRAILING_ENTRIES} entries below the snapshot (base ${log.baseIndex})`,
      );
      claim(
        log.firstIndex > ctx.laggardLastIndex! + 1,
        `the leader no longer holds index ${ctx.laggardLastIndex! + 1}, the laggard's next entry`,
      );
      ctx.chunksBefore = c.stats.sentByType.get("InstallSnapshot") ?? 0;
      note(
        ctx,
        `leader ${ctx.leader}: snapshot covers 1..${snap.meta.index} (term ${snap.meta.term}), ` +
          `${snap.data.byteLength} bytes; log holds ${log.firstIndex}..${log.lastIndex}`,
      );
    },
  },
  {
    name: "InstallSnapshot, in chunks",
    explain: "The laggard restarts and answers the leader's AppendEntries: it needs the entry " +
      "after its log's end, which the leader has discarded. So the leader sends its snapshot " +
      `instead, in chunks of at most ${CHUNK_BYTES_MAX} bytes, one at a time, each at its offset ` +
      "(Figure 13). Figure 13's reply carries only the term; raftmeta's also names the offset " +
      "the follower wants next, so a lost chunk costs one resend. With the " +
      "last chunk the follower replaces its store with the snapshot and its log starts after it.",
    run(ctx) {
      const c = ctx.cluster;
      const id = ctx.laggard!;
      const leaderSnap = c.node(ctx.leader!).raft.snapshot!;
      c.restart(id);
      c.runUntil(() => c.node(id).raft.log.snapshotIndex >= leaderSnap.meta.index, {
        description: `${id} to install the leader's snapshot`,
        timeoutMs: 3000,
      });
      const chunks = (c.stats.sentByType.get("InstallSnapshot") ?? 0) - ctx.chunksBefore!;
      claim(
        leaderSnap.data.byteLength > CHUNK_BYTES_MAX && chunks >= 2,
        `the ${leaderSnap.data.byteLength}-byte snapshot went in ${chunks} chunks`,
      );
      note(ctx, `${chunks} InstallSnapshot chunks of at most ${CHUNK_BYTES_MAX} bytes`);
      claim(c.snapshotStats.installed === 1, "one snapshot installed from a leader");
      const n = c.node(id);
      claim(n.raft.commitIndex >= leaderSnap.meta.index, "the snapshot counts as committed");
      claim(
        n.raft.log.baseIndex === n.raft.log.snapshotIndex,
        `${id}'s log starts right after the snapshot: its old entries 1..${ctx.laggardLastIndex} ` +
          `are gone`,
      );
      claim(n.store.getString("/config/item0") !== undefined, "its store came with the snapshot");
    },
  },
  {
    name: "the follower resumes with AppendEntries",
    explain: "After the snapshot the leader probes from the index after it and sends the entries " +
      "that followed, then new writes as usual. The follower's store now equals the others'.",
    run(ctx) {
      const c = ctx.cluster;
      const id = ctx.laggard!;
      writes(c, 50, 3);
      c.runUntil(() => keysOf(c, id) === keysOf(c, ctx.leader!), {
        description: `${id} to catch up`,
        timeoutMs: 2000,
      });
      claim(
        c.node(id).raft.log.lastIndex === c.node(ctx.leader!).raft.log.lastIndex,
        `${id}'s log reaches the leader's last index`,
      );
      claim(
        c.node(id).store.getString("/config/item2") === "value 50",
        "it holds the latest write",
      );
    },
  },
  {
    name: "rule: never install a snapshot older than the commit index",
    explain:
      "A snapshot that arrives late (a duplicate, or a chunk the network delayed) may cover less " +
      "than the follower has already committed. Installing it would throw committed entries and " +
      "their effects away, so the follower answers 'done' with its commitIndex and changes " +
      "nothing (DESIGN.md rule 8; Figure 13's receiver rules do not spell this check out).",
    run(ctx) {
      const c = ctx.cluster;
      const id = ctx.laggard!;
      const n = c.node(id);
      const old = c.node(ctx.leader!).raft.snapshot!;
      const before = {
        commitIndex: n.raft.commitIndex,
        snapshotIndex: n.raft.log.snapshotIndex,
        lastIndex: n.raft.log.lastIndex,
        keys: keysOf(c, id),
      };
      claim(old.meta.index <= before.commitIndex, "the stale snapshot is below commitIndex");
      // Delivered by hand, as a duplicate of a chunk the network held back would be.
      n.raft.step({
        type: "InstallSnapshot",
        from: ctx.leader!,
        to: id,
        term: n.raft.term,
        meta: { ...old.meta, index: Math.max(1, n.raft.log.snapshotIndex - 10) },
        totalBytes: old.data.byteLength,
        offset: 0,
        data: old.data,
        done: true,
      });
      c.advance(100);
      claim(n.raft.commitIndex >= before.commitIndex, "commitIndex did not move back");
      claim(n.raft.log.snapshotIndex >= before.snapshotIndex, "the snapshot did not move back");
      claim(n.raft.log.lastIndex >= before.lastIndex, "no entry was discarded");
      claim(keysOf(c, id) === before.keys, "the store is unchanged");
    },
  },
  {
    name: "rule: keep the log after the snapshot only if the entry at its index matches",
    explain: "A follower may already hold entries past a snapshot's index. If its entry at that " +
      "index has the snapshot's term, the entries after it continue the same history (the Log " +
      "Matching property) and are kept, so the leader need not send them again. If the terms " +
      "differ, the whole log is discarded and the log restarts after the snapshot (§7). Shown on " +
      "two copies of one follower log, 1..30 with term 2 from index 21.",
    run(ctx) {
      const entries = Array.from({ length: 30 }, (_, i) => entry(i + 1, i < 20 ? 1 : 2));
      const matching = new RaftLog(entries);
      const kept = matching.installSnapshot(25, 2);
      claim(kept && matching.firstIndex === 26 && matching.lastIndex === 30, "26..30 are kept");
      const other = new RaftLog(entries);
      const keptOther = other.installSnapshot(25, 3);
      claim(!keptOther && other.lastIndex === 25, "a term mismatch discards the log after 25");
      note(ctx, "snapshot 25:2 over log 1..30 (term 2 at 25): keeps 26..30, the log is 26..30");
      note(ctx, "snapshot 25:3 over the same log: keeps nothing, the log is empty after 25");
    },
  },
];

/** Chapter 9 as a script and a notebook. */
export const chapter: Chapter<CompactionContext> = {
  number: 9,
  name: "09_log_compaction",
  title: "Log compaction and InstallSnapshot",
  summary: "snapshots, compaction, InstallSnapshot in chunks, the two install rules",
  intro: "A Raft log grows with every write. **Log compaction** (§7 of the paper) folds the " +
    "applied prefix of the log into a **snapshot** of the state machine and discards it. A " +
    "follower that falls so far behind that the leader no longer has the entries it needs gets " +
    "the snapshot instead, sent in chunks by **InstallSnapshot** (Figure 13). In the log grid " +
    "below each table, the column `snapshot` shows the last index each node's snapshot covers, and `s` marks indexes a node has compacted away.",
  defaultNodes: 3,
  nodesRange: [3, 5],
  context: (seed, nodes) => compactionContext(seed, nodes),
  steps: compactionSteps,
};

if (import.meta.main) {
  Deno.exit(runChapterCli(chapter, Deno.args));
}
