/**
 * Raft's safety properties (Figure 3), checked by the simulator after every event:
 * election safety, log matching, leader completeness, state machine safety — plus the
 * bookkeeping rules: terms and commit indexes never go backwards, lastApplied ≤ commitIndex,
 * nothing is acknowledged before it is durable, and nothing acknowledged is lost by a crash.
 * Entries compacted into a snapshot have no term on record (`termAt` gives undefined): the checks
 * skip them, having seen them while they were still in some log.
 *
 * @module
 */

import type { NodeStatus } from "../raft/node.ts";
import type { PersistedState } from "../raft/storage.ts";
import type { HardState, Message, NodeId, RaftLogEntry } from "../raft/types.ts";
import { quorumsCanBeDisjoint } from "../raft/quorum.ts";

/** Thrown when a safety property breaks; the message names the property and the evidence. */
export class SafetyViolation extends Error {
  /** The property that broke, e.g. `"election safety"`. */
  readonly property: string;
  /** Creates the error. */
  constructor(property: string, detail: string) {
    super(`Safety violation (${property}): ${detail}`);
    this.name = "SafetyViolation";
    this.property = property;
  }
}

/** What the checker needs to see of a node after an event. */
export interface CheckedNode {
  /** The node's state. */
  readonly status: NodeStatus;
  /** Term of the node's entry at `index` (undefined when it has none). */
  termAt(index: number): number | undefined;
  /** Whether the node is running (crashed nodes keep only their storage). */
  readonly up: boolean;
  /** Incarnation number: raised on every restart. */
  readonly incarnation: number;
  /**
   * What the node's storage holds (kept across crashes). When every node gives it, each commit a
   * leader makes is checked to be durable on a quorum.
   */
  readonly durable?: DurableView;
}

/** What the node's storage holds, to check durability before acknowledgement (rule 2). */
export interface DurableView {
  /** Persisted hard state. */
  readonly hardState: HardState;
  /** Persisted entry at `index`, if any. */
  entry(index: number): RaftLogEntry | undefined;
  /** Index covered by the persisted snapshot (0 or absent when none): durable, without entries. */
  readonly snapshotIndex?: number;
}

interface EntryRecord {
  readonly entry: RaftLogEntry;
  readonly prevTerm: number;
}

/** Tracks a whole cluster's history and throws {@linkcode SafetyViolation} at the first break. */
export class SafetyChecker {
  #leaders = new Map<number, NodeId>();
  #entries = new Map<string, EntryRecord>();
  #committed: number[] = [0]; // committed[i] = term of the committed entry at index i
  #lastCommitted = { index: 0, term: 0 };
  #applied: RaftLogEntry[] = [];
  #commitChecked = new Map<NodeId, number>();
  #last = new Map<
    NodeId,
    {
      term: number;
      durableTerm: number;
      commitIndex: number;
      incarnation: number;
      configIndex: number;
      commitTerm: number | undefined;
    }
  >();
  /** How many times `afterEvent` ran. */
  checks = 0;

  /** Log matching: entries with the same index and term are identical and have equal prefixes. */
  onEntriesPersisted(
    nodeId: NodeId,
    entries: readonly RaftLogEntry[],
    termAt: (i: number) => number | undefined,
  ): void {
    for (const e of entries) {
      const prevTerm = termAt(e.index - 1) ?? -1;
      const key = `${e.index}:${e.term}`;
      const seen = this.#entries.get(key);
      if (seen === undefined) {
        this.#entries.set(key, { entry: e, prevTerm });
        continue;
      }
      if (!sameEntry(seen.entry, e) || seen.prevTerm !== prevTerm) {
        throw new SafetyViolation(
          "log matching",
          `node "${nodeId}" holds a different entry at index ${e.index} term ${e.term} ` +
            `(previous term ${prevTerm} vs ${seen.prevTerm})`,
        );
      }
    }
  }

  /** Rule 2: a vote or an append is acknowledged only once it is durable. */
  onSend(nodeId: NodeId, m: Message, durable: DurableView): void {
    // PreVote and its granted reply name a future term without adopting it (§9.6).
    const futureTerm = m.type === "PreVote" || m.type === "PreVoteReply";
    if (!futureTerm && durable.hardState.term < m.term) {
      throw new SafetyViolation(
        "durability",
        `node "${nodeId}" sent ${m.type} in term ${m.term} with term ${durable.hardState.term} on disk`,
      );
    }
    if (m.type === "RequestVoteReply" && m.granted && durable.hardState.votedFor !== m.to) {
      throw new SafetyViolation(
        "durability",
        `node "${nodeId}" granted a vote to "${m.to}" in term ${m.term} before persisting it`,
      );
    }
    const acked = (m.type === "AppendEntriesReply" && m.success) ||
        (m.type === "InstallSnapshotReply" && m.done)
      ? m.matchIndex
      : 0;
    if (acked > (durable.snapshotIndex ?? 0)) {
      if (durable.entry(acked) === undefined) {
        throw new SafetyViolation(
          "durability",
          `node "${nodeId}" acknowledged index ${acked} (${m.type}) before persisting it`,
        );
      }
    }
  }

  /**
   * Crash durability: what a restarted node reads back holds everything its storage acknowledged
   * (every save that returned) — term, vote, commitIndex, snapshot and entries. A save cut short by
   * the crash may have replaced a suffix of the log; that shows as a differing entry and is fine.
   * `acked` is a record of every save that returned, with `lastIndex` the last entry saved.
   */
  onRecovered(
    nodeId: NodeId,
    loaded: PersistedState,
    acked: DurableView & { readonly lastIndex: number },
  ): void {
    const lost = (what: string): never => {
      throw new SafetyViolation("durability", `node "${nodeId}" lost ${what} in a crash`);
    };
    const hs = loaded.hardState;
    const was = acked.hardState;
    if (hs.term < was.term) lost(`term ${was.term} (read back ${hs.term})`);
    if (hs.term === was.term && was.votedFor !== undefined && hs.votedFor !== was.votedFor) {
      lost(`its vote for "${was.votedFor}" in term ${was.term} (read back ${hs.votedFor})`);
    }
    const loadedSnap = loaded.snapshot?.meta.index ?? 0;
    const ackedSnap = acked.snapshotIndex ?? 0;
    if (loadedSnap < ackedSnap) {
      lost(`the snapshot at index ${ackedSnap} (read back ${loadedSnap})`);
    }
    if (Math.max(hs.commitIndex, loadedSnap) < was.commitIndex) {
      lost(`commitIndex ${was.commitIndex} (read back ${hs.commitIndex})`);
    }
    const first = loaded.entries.length > 0 ? loaded.entries[0].index : loadedSnap + 1;
    const termOf = (i: number) => loaded.entries[i - first]?.term;
    // A newer snapshot than acknowledged (its save was cut short) may have dropped the log.
    if (loadedSnap > ackedSnap && acked.entry(loadedSnap)?.term !== loaded.snapshot!.meta.term) {
      return;
    }
    for (let i = Math.max(loadedSnap, ackedSnap) + 1; i <= acked.lastIndex; i++) {
      const want = acked.entry(i);
      if (want === undefined) continue;
      const got = termOf(i);
      if (got === undefined) lost(`acknowledged entry ${i} (term ${want.term})`);
      if (got !== want.term) return; // a later save replaced the log from here
    }
  }

  /** State machine safety: no two nodes apply different entries at one index. */
  onApplied(nodeId: NodeId, e: RaftLogEntry): void {
    const seen = this.#applied[e.index];
    if (seen === undefined) {
      this.#applied[e.index] = e;
    } else if (!sameEntry(seen, e)) {
      throw new SafetyViolation(
        "state machine safety",
        `node "${nodeId}" applied ${describe(e)} at index ${e.index}, another node ${
          describe(seen)
        }`,
      );
    }
  }

  /** Checks every node after one simulated event. */
  afterEvent(nodes: readonly CheckedNode[]): void {
    this.checks++;
    for (const n of nodes) {
      const s = n.status;
      const last = this.#last.get(s.id);
      // Within a process the term never falls; across a crash it never falls below what was
      // durable (a term adopted in memory and lost with an unsynced write was never acted on).
      const floor = last === undefined
        ? 0
        : last.incarnation === n.incarnation
        ? last.term
        : last.durableTerm;
      if (last !== undefined && s.term < floor) {
        throw new SafetyViolation(
          "monotonic term",
          `node "${s.id}" went from term ${floor} to ${s.term}`,
        );
      }
      if (!n.up) continue;
      if (
        last !== undefined && last.incarnation === n.incarnation && s.commitIndex < last.commitIndex
      ) {
        throw new SafetyViolation(
          "monotonic commitIndex",
          `node "${s.id}" went from commitIndex ${last.commitIndex} to ${s.commitIndex}`,
        );
      }
      // Figure 8: a leader advances commitIndex only by counting replicas of an entry of its term.
      if (
        s.role === "Leader" && last !== undefined && last.incarnation === n.incarnation &&
        s.commitIndex > last.commitIndex && n.termAt(s.commitIndex) !== s.term
      ) {
        throw new SafetyViolation(
          "leader commit rule",
          `leader "${s.id}" of term ${s.term} committed index ${s.commitIndex} of term ${
            n.termAt(s.commitIndex)
          } by counting replicas`,
        );
      }
      if (
        s.role === "Leader" && last !== undefined && last.incarnation === n.incarnation &&
        s.commitIndex > last.commitIndex
      ) this.#checkCommitDurable(n, nodes);
      // Dissertation §4.1 and its 2015 erratum: a leader appends a membership change only when the
      // previous one is committed and it has committed an entry of its own term.
      if (
        s.role === "Leader" && last !== undefined && last.incarnation === n.incarnation &&
        last.term === s.term && s.configIndex > last.configIndex &&
        n.termAt(s.configIndex) === s.term
      ) {
        if (last.commitIndex < last.configIndex) {
          throw new SafetyViolation(
            "membership change rule",
            `leader "${s.id}" of term ${s.term} appended a change at ${s.configIndex} while the ` +
              `change at ${last.configIndex} was uncommitted (commitIndex ${last.commitIndex})`,
          );
        }
        // (The term as it was then: a snapshot of this same event may have compacted the entry.)
        if (last.commitTerm !== s.term) {
          throw new SafetyViolation(
            "membership change rule",
            `leader "${s.id}" appended a change at ${s.configIndex} before committing an entry ` +
              `of its term ${s.term} (commitIndex ${last.commitIndex})`,
          );
        }
      }
      this.#last.set(s.id, {
        term: s.term,
        durableTerm: n.durable?.hardState.term ?? s.term,
        commitIndex: s.commitIndex,
        incarnation: n.incarnation,
        configIndex: s.configIndex,
        commitTerm: n.termAt(s.commitIndex),
      });
      if (s.lastApplied > s.commitIndex) {
        throw new SafetyViolation(
          "applied ≤ committed",
          `node "${s.id}" applied ${s.lastApplied} but commitIndex is ${s.commitIndex}`,
        );
      }
      this.#recordCommitted(n);
      if (s.role === "Leader") this.#checkLeader(n);
    }
    this.#checkConfigOverlap(nodes);
  }

  /** Highest index known committed anywhere. */
  get committedIndex(): number {
    return this.#committed.length - 1;
  }

  #recordCommitted(n: CheckedNode): void {
    const s = n.status;
    // The newest committed entry anywhere (its term is known even when compacted: the snapshot's).
    const term = n.termAt(s.commitIndex);
    if (s.commitIndex > this.#lastCommitted.index && term !== undefined) {
      this.#lastCommitted = { index: s.commitIndex, term };
    }
    // Committed entries never change on a node, so only the newly committed part needs a look.
    let i = Math.min(this.#commitChecked.get(s.id) ?? 0, s.commitIndex) + 1;
    for (; i <= s.commitIndex; i++) {
      const t = n.termAt(i);
      if (t === undefined) continue; // compacted into a snapshot
      const known = this.#committed[i];
      if (known === undefined) {
        if (i === this.#committed.length) this.#committed.push(t);
      } else if (known !== t) {
        throw new SafetyViolation(
          "state machine safety",
          `node "${s.id}" committed index ${i} at term ${t}, but term ${known} was committed there`,
        );
      }
    }
    this.#commitChecked.set(s.id, s.commitIndex);
  }

  /**
   * A commit is a promise that a quorum holds the entry on disk: a leader that counted a copy it
   * could still lose (its own unwritten entry, §10.2.1) breaks it even if nothing crashes.
   */
  #checkCommitDurable(leader: CheckedNode, nodes: readonly CheckedNode[]): void {
    const s = leader.status;
    const index = s.commitIndex;
    const term = leader.termAt(index);
    if (term === undefined) return;
    // The quorum is that of the configuration in force: the newest in the leader's log (a change
    // takes effect when appended), whatever configuration the leader may have counted with.
    const voters = new Set(s.voters);
    let holders = 0;
    for (const n of nodes) {
      const d = n.durable;
      if (d === undefined) return; // a host that does not show its storage
      if (!voters.has(n.status.id)) continue;
      if ((d.snapshotIndex ?? 0) >= index || d.entry(index)?.term === term) holders++;
    }
    if (holders < Math.floor(voters.size / 2) + 1) {
      throw new SafetyViolation(
        "commit durability",
        `leader "${s.id}" of term ${s.term} committed index ${index}, which only ${holders} of ` +
          `the ${voters.size} voters of its configuration (${s.voters.join(",")}) hold on disk`,
      );
    }
  }

  /**
   * Configuration overlap: the configurations of any two running nodes that could still win an
   * election — whose logs are at least as up to date as the last committed entry — must have
   * intersecting quorums, or two leaders could be elected in one term (the paper's Figure 10).
   * One change at a time, each appended after the previous one committed and after the leader
   * committed in its term, keeps this; two changes in flight, or the 2015 single-server bug,
   * break it.
   */
  #checkConfigOverlap(nodes: readonly CheckedNode[]): void {
    const { index: lastIndex, term: lastTerm } = this.#lastCommitted;
    const candidates = nodes.filter((n) =>
      n.up && (n.status.lastLogTerm > lastTerm ||
        (n.status.lastLogTerm === lastTerm && n.status.lastLogIndex >= lastIndex))
    );
    // One representative per distinct voter set (usually one or two of them).
    const distinct = new Map<string, CheckedNode["status"]>();
    for (const n of candidates) {
      const key = n.status.voters.join(",");
      if (!distinct.has(key)) distinct.set(key, n.status);
    }
    const configs = [...distinct.values()];
    for (let i = 0; i < configs.length; i++) {
      for (let j = i + 1; j < configs.length; j++) {
        const a = configs[i];
        const b = configs[j];
        if (quorumsCanBeDisjoint(new Set(a.voters), new Set(b.voters))) {
          throw new SafetyViolation(
            "configuration overlap",
            `"${a.id}" uses voters ${a.voters.join(",")} (entry ${a.configIndex}) and "${b.id}" ` +
              `uses ${b.voters.join(",")} (entry ${b.configIndex}): they have disjoint quorums`,
          );
        }
      }
    }
  }

  #checkLeader(n: CheckedNode): void {
    const s = n.status;
    const other = this.#leaders.get(s.term);
    if (other === undefined) {
      this.#leaders.set(s.term, s.id);
      // Leader completeness: a new leader holds every entry committed before its term.
      for (let i = 1; i < this.#committed.length; i++) {
        const t = n.termAt(i);
        if (t !== undefined && t !== this.#committed[i]) {
          throw new SafetyViolation(
            "leader completeness",
            `leader "${s.id}" of term ${s.term} has term ${t} at committed index ${i} (expected ${
              this.#committed[i]
            })`,
          );
        }
        if (t === undefined && i > s.lastLogIndex) {
          throw new SafetyViolation(
            "leader completeness",
            `leader "${s.id}" of term ${s.term} lacks committed index ${i} (its last is ${s.lastLogIndex})`,
          );
        }
      }
    } else if (other !== s.id) {
      throw new SafetyViolation(
        "election safety",
        `two leaders in term ${s.term}: "${other}" and "${s.id}"`,
      );
    }
  }
}

function sameEntry(a: RaftLogEntry, b: RaftLogEntry): boolean {
  if (a === b) return true;
  if (a.index !== b.index || a.term !== b.term || a.kind !== b.kind) return false;
  if (a.command.byteLength !== b.command.byteLength) return false;
  for (let i = 0; i < a.command.byteLength; i++) if (a.command[i] !== b.command[i]) return false;
  return true;
}

function describe(e: RaftLogEntry): string {
  return `${e.index}:${e.term} ${e.kind} (${e.command.byteLength} bytes)`;
}
