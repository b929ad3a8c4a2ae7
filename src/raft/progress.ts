/**
 * What a leader knows of each follower: `matchIndex`, `nextIndex`, and how it is replicating to it.
 * In `Probe` the leader sends one AppendEntries at a time until it finds where the logs agree; in
 * `Replicate` it streams optimistically, up to a bounded number of messages in flight. In
 * `Snapshot` the follower needs entries the leader has compacted away, so the leader sends its
 * snapshot in chunks, one in flight at a time (§7), and probes again once the follower has it.
 *
 * Loss is judged by answers, never by a timer, so a slow round trip or fsync costs no re-sends
 * (as in etcd-io/raft): a paused probe resumes when an answer to a later message arrives, and a
 * streaming follower is re-probed only when it answers a heartbeat sent after its oldest
 * in-flight append had already waited a heartbeat interval, without having acknowledged it.
 *
 * @module
 */

import { invariant } from "./log.ts";
import type { Snapshot } from "./types.ts";

/** Replication mode for one follower. */
export type ProgressState = "Probe" | "Replicate" | "Snapshot";

/** A leader's view of one follower (Figure 2's nextIndex/matchIndex, plus flow control). */
export class Progress {
  /** Highest index known to be replicated on the follower. Never goes backwards in a term. */
  matchIndex = 0;
  /** Next index to send. */
  nextIndex: number;
  /** Replication mode. */
  state: ProgressState = "Probe";
  /** In Probe: a probe is outstanding; wait for its reply or the answer to a later heartbeat. */
  probeSent = false;
  /** In Replicate: the last index of each AppendEntries in flight, oldest first. */
  readonly inflight: number[] = [];
  /**
   * In Replicate: the confirmation round the stream started in. A rejection of a message sent
   * before it is stale: the stream restarted from newer knowledge.
   */
  replicateRound = 0;
  /** In Replicate: the oldest in-flight index at the previous heartbeat (0: none). */
  oldestInflightAtHeartbeat = 0;
  /**
   * In Replicate: the confirmation round of a heartbeat sent while the append ending at
   * `stallIndex` had been in flight for a heartbeat interval; 0 when nothing is suspected. An
   * answer from this round or later without that append acknowledged means it was lost.
   */
  stallRound = 0;
  /** In Replicate: the last index of the append suspected lost (see `stallRound`). */
  stallIndex = 0;
  /** Heard from the follower since the last CheckQuorum round. */
  recentActive = false;
  /** Highest read round the follower has acknowledged in this term. */
  readRoundAcked = 0;
  /**
   * The confirmation round started when the follower's log seemed to end below `matchIndex`;
   * 0 when nothing is suspected. Only a reply from this round or later proves the loss.
   */
  lostLogRound = 0;
  /** In Snapshot: the snapshot being sent (kept even if the leader compacts again meanwhile). */
  snapshot: Snapshot | undefined = undefined;
  /** In Snapshot: bytes the follower has acknowledged; the next chunk starts here. */
  snapshotOffset = 0;
  /** In Snapshot: a chunk is in flight. */
  snapshotInflight = false;
  /** In Snapshot: heartbeats since the chunk in flight was sent (resent after two). */
  snapshotHeartbeats = 0;

  /** Starts probing at `nextIndex`. */
  constructor(nextIndex: number) {
    this.nextIndex = nextIndex;
  }

  /** Whether another AppendEntries with entries may be sent now. */
  canSend(inflightMax: number): boolean {
    if (this.state === "Snapshot") return false;
    return this.state === "Probe" ? !this.probeSent : this.inflight.length < inflightMax;
  }

  /** Records a successful reply up to `index`. Returns false for a stale one (rule 4). */
  acknowledge(index: number): boolean {
    if (index <= this.matchIndex) return false;
    this.matchIndex = index;
    this.nextIndex = Math.max(this.nextIndex, index + 1);
    while (this.inflight.length > 0 && this.inflight[0] <= index) this.inflight.shift();
    return true;
  }

  /** Switches to sending `snapshot`, from its first byte. */
  becomeSnapshot(snapshot: Snapshot): void {
    this.state = "Snapshot";
    this.snapshot = snapshot;
    this.snapshotOffset = 0;
    this.snapshotInflight = false;
    this.snapshotHeartbeats = 0;
    this.probeSent = false;
    this.#resetStream();
  }

  /**
   * The follower lost entries it had acknowledged (a damaged disk): forget what it matched beyond
   * its log and probe from `nextIndex`, its last index + 1. The only way matchIndex goes back.
   */
  resetLostLog(nextIndex: number): void {
    invariant(nextIndex >= 1 && nextIndex <= this.matchIndex, () => `reset to ${nextIndex}`);
    this.matchIndex = nextIndex - 1;
    this.lostLogRound = 0;
    this.becomeProbe(nextIndex);
  }

  /**
   * Switches to streaming after a successful probe. `round` is the current confirmation round,
   * raised by the caller so that messages sent from now on carry it.
   */
  becomeReplicate(round: number): void {
    this.snapshot = undefined;
    this.state = "Replicate";
    this.probeSent = false;
    this.nextIndex = this.matchIndex + 1;
    this.#resetStream();
    this.replicateRound = round;
  }

  /** Falls back to probing from `nextIndex` (never below `matchIndex + 1`). */
  becomeProbe(nextIndex: number): void {
    this.snapshot = undefined;
    this.state = "Probe";
    this.probeSent = false;
    this.#resetStream();
    this.nextIndex = Math.max(this.matchIndex + 1, nextIndex);
    invariant(this.nextIndex > this.matchIndex, () => "nextIndex must exceed matchIndex");
  }

  /** Forgets the stream's in-flight window and any suspicion about it. */
  #resetStream(): void {
    this.inflight.length = 0;
    this.replicateRound = 0;
    this.oldestInflightAtHeartbeat = 0;
    this.stallRound = 0;
    this.stallIndex = 0;
  }

  /** Notes that entries up to `lastIndex` were sent. */
  sent(lastIndex: number): void {
    if (this.state === "Replicate") {
      this.inflight.push(lastIndex);
      this.nextIndex = lastIndex + 1;
    } else {
      this.probeSent = true;
    }
  }
}

/**
 * The highest index stored on a majority: sort the match indexes descending and take the one at
 * position ⌊n/2⌋ (a quorum of n is ⌊n/2⌋ + 1 nodes).
 */
export function quorumIndex(matchIndexes: readonly number[]): number {
  invariant(matchIndexes.length > 0, () => "quorumIndex needs at least one voter");
  const sorted = [...matchIndexes].sort((a, b) => b - a);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Number of votes that make a majority of `voters`. */
export function quorumSize(voters: number): number {
  return Math.floor(voters / 2) + 1;
}
