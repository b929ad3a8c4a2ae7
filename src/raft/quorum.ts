/**
 * The arithmetic of quorums, in one place: which index a set of voters has committed, and whether
 * a set of votes won, lost or is still open. Commit, elections (RequestVote and PreVote),
 * CheckQuorum and ReadIndex confirmation all ask these two questions.
 *
 * A {@linkcode MajorityConfig} is one set of voters: a quorum is more than half of it. A
 * {@linkcode JointConfig} is two sets at once (C_old,new of the Raft paper §6): a quorum needs a
 * majority of each. raftmeta changes membership one server at a time, so the node runs with an
 * empty outgoing half; the joint form is here, and tested, for the joint-consensus path.
 *
 * @module
 */

import type { NodeId } from "./types.ts";

/** The outcome of a vote count: enough yes votes, enough no votes, or not yet either. */
export type VoteResult = "won" | "lost" | "pending";

/** Anything that can answer the two quorum questions. */
export interface QuorumConfig {
  /** Every voter, each once. */
  readonly voters: ReadonlySet<NodeId>;
  /**
   * The highest index a quorum holds, given each voter's match index (a voter `match` does not
   * know counts as 0). An empty config returns `Infinity`: it places no constraint.
   */
  committedIndex(match: (id: NodeId) => number | undefined): number;
  /**
   * Won when a quorum said yes, lost when no quorum can say yes any more, pending otherwise.
   * Votes of non-voters are ignored; a voter missing from `votes` has not answered.
   */
  voteResult(votes: ReadonlyMap<NodeId, boolean>): VoteResult;
}

/** One set of voters; a quorum is ⌊n/2⌋ + 1 of them. */
export class MajorityConfig implements QuorumConfig {
  /** The voters. */
  readonly voters: ReadonlySet<NodeId>;

  /** Creates the config; duplicates are folded. */
  constructor(voters: Iterable<NodeId>) {
    this.voters = new Set(voters);
  }

  /** Votes that make a quorum of this config (0 for an empty one). */
  get quorum(): number {
    return this.voters.size === 0 ? 0 : Math.floor(this.voters.size / 2) + 1;
  }

  /**
   * Sort the match indexes from high to low; the quorum-th one is held by at least a quorum (and
   * no higher index is): the "median" rule.
   */
  committedIndex(match: (id: NodeId) => number | undefined): number {
    if (this.voters.size === 0) return Infinity;
    const indexes: number[] = [];
    for (const id of this.voters) indexes.push(match(id) ?? 0);
    indexes.sort((a, b) => b - a);
    return indexes[this.quorum - 1];
  }

  /** Counts yes and no among the voters. An empty config wins (it constrains nothing). */
  voteResult(votes: ReadonlyMap<NodeId, boolean>): VoteResult {
    if (this.voters.size === 0) return "won";
    let yes = 0;
    let missing = 0;
    for (const id of this.voters) {
      const v = votes.get(id);
      if (v === undefined) missing++;
      else if (v) yes++;
    }
    if (yes >= this.quorum) return "won";
    if (yes + missing >= this.quorum) return "pending";
    return "lost";
  }

  /** The voters, sorted, for messages and tables. */
  toString(): string {
    return [...this.voters].sort().join(",");
  }
}

/**
 * Two sets of voters in force together (joint consensus, §6): a decision needs a quorum of the
 * incoming and of the outgoing set. With an empty outgoing set it is the incoming majority.
 */
export class JointConfig implements QuorumConfig {
  /** The new set. */
  readonly incoming: MajorityConfig;
  /** The old set; empty outside a joint change. */
  readonly outgoing: MajorityConfig;

  /** Creates the config. */
  constructor(incoming: Iterable<NodeId>, outgoing: Iterable<NodeId> = []) {
    this.incoming = new MajorityConfig(incoming);
    this.outgoing = new MajorityConfig(outgoing);
  }

  /** Every voter of either half. */
  get voters(): ReadonlySet<NodeId> {
    return new Set([...this.incoming.voters, ...this.outgoing.voters]);
  }

  /** The lower of the two halves' committed indexes. */
  committedIndex(match: (id: NodeId) => number | undefined): number {
    return Math.min(this.incoming.committedIndex(match), this.outgoing.committedIndex(match));
  }

  /** Won when both halves won; lost when either lost; pending otherwise. */
  voteResult(votes: ReadonlyMap<NodeId, boolean>): VoteResult {
    const a = this.incoming.voteResult(votes);
    const b = this.outgoing.voteResult(votes);
    if (a === "won" && b === "won") return "won";
    if (a === "lost" || b === "lost") return "lost";
    return "pending";
  }
}

/**
 * Whether some quorum of `a` and some quorum of `b` can be disjoint: then two leaders, one per
 * config, could be elected in one term. Majorities of configs that differ by one server always
 * intersect; this is what a membership change must preserve. Empty configs have no quorum.
 */
export function quorumsCanBeDisjoint(a: ReadonlySet<NodeId>, b: ReadonlySet<NodeId>): boolean {
  if (a.size === 0 || b.size === 0) return false;
  let shared = 0;
  for (const id of a) if (b.has(id)) shared++;
  // Each side takes its own members first and needs shared ones only for the rest.
  const needA = Math.max(0, Math.floor(a.size / 2) + 1 - (a.size - shared));
  const needB = Math.max(0, Math.floor(b.size / 2) + 1 - (b.size - shared));
  return needA + needB <= shared;
}
