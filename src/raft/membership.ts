/**
 * Cluster membership: who votes (voters), who only receives the log (learners), and the changes
 * that move between configurations one server at a time (Raft dissertation §4.1). A change is a
 * log entry of kind `"config"`; every node uses the newest configuration in its log, committed or
 * not, and falls back to the previous one when that entry is truncated. {@linkcode ConfigHistory}
 * keeps the configurations of the log's uncompacted part for exactly that.
 *
 * @module
 */

import { invariant } from "./log.ts";
import type { NodeId, RaftLogEntry } from "./types.ts";

/** A configuration: the voters, and the learners that receive the log without voting. */
export interface Membership {
  /** Members whose votes and acknowledgements count, sorted. */
  readonly voters: readonly NodeId[];
  /** Non-voting members, sorted; disjoint from `voters`. */
  readonly learners: readonly NodeId[];
}

/**
 * One membership change. `add-learner` adds a non-voter, `add-voter` a voter, `promote` turns a
 * learner into a voter, `remove` drops a voter or learner, `update` changes only the member's
 * `context` (its addresses, kept by the host). Each changes the voters by at most one.
 */
export interface ConfChange {
  /** What to do. */
  readonly type: "add-learner" | "add-voter" | "promote" | "remove" | "update";
  /** The member it concerns. */
  readonly node: NodeId;
  /**
   * What the host records with the change (a server: the member's id and URLs as JSON), opaque
   * to the core, as etcd's ConfChange.Context. One line: no newline.
   */
  readonly context?: string;
}

const CHANGE_TYPES: readonly ConfChange["type"][] = [
  "add-learner",
  "add-voter",
  "promote",
  "remove",
  "update",
];

/** Most bytes of a change's context. */
export const CONF_CHANGE_CONTEXT_BYTES_MAX = 4096;

/** Most bytes of a node id in a change (the storage's bound on ids). */
export const CONF_CHANGE_NODE_ID_BYTES_MAX = 255;

/**
 * Encodes a change as an entry's bytes: `CONF\n<type>\n<node>` in UTF-8, then `\n<context>` when
 * it has one.
 */
export function encodeConfChange(c: ConfChange): Uint8Array {
  validateNodeId(c.node);
  if (!CHANGE_TYPES.includes(c.type)) throw new RangeError(`Unknown membership change "${c.type}"`);
  if (c.context === undefined) return new TextEncoder().encode(`CONF\n${c.type}\n${c.node}`);
  validateContext(c.context);
  return new TextEncoder().encode(`CONF\n${c.type}\n${c.node}\n${c.context}`);
}

function validateContext(context: string): void {
  const bytes = new TextEncoder().encode(context).byteLength;
  if (bytes > CONF_CHANGE_CONTEXT_BYTES_MAX || context.includes("\n")) {
    throw new RangeError(
      `Membership change context must be at most ${CONF_CHANGE_CONTEXT_BYTES_MAX} bytes ` +
        `without newline (${bytes} bytes)`,
    );
  }
}

/** Decodes an entry's bytes made by {@linkcode encodeConfChange}; throws on anything else. */
export function decodeConfChange(bytes: Uint8Array): ConfChange {
  const parts = new TextDecoder().decode(bytes).split("\n");
  const type = parts[1] as ConfChange["type"];
  if (
    (parts.length !== 3 && parts.length !== 4) || parts[0] !== "CONF" ||
    !CHANGE_TYPES.includes(type)
  ) {
    throw new RangeError(`Not a membership change entry (${bytes.byteLength} bytes)`);
  }
  validateNodeId(parts[2]);
  if (parts.length === 3) return { type, node: parts[2] };
  validateContext(parts[3]);
  return { type, node: parts[2], context: parts[3] };
}

function validateNodeId(id: string): void {
  const bytes = new TextEncoder().encode(id).byteLength;
  if (bytes === 0 || bytes > CONF_CHANGE_NODE_ID_BYTES_MAX || /[\n,]/.test(id)) {
    throw new RangeError(
      `Node id must be 1 to ${CONF_CHANGE_NODE_ID_BYTES_MAX} bytes without newline or comma: ${
        JSON.stringify(id)
      }`,
    );
  }
}

/** Builds a membership, sorted and checked (voters and learners distinct and disjoint). */
export function membership(voters: Iterable<NodeId>, learners: Iterable<NodeId> = []): Membership {
  const v = [...new Set(voters)].sort();
  const l = [...new Set(learners)].sort();
  const both = l.filter((id) => v.includes(id));
  if (both.length > 0) throw new RangeError(`Nodes both voter and learner: ${both.join(",")}`);
  return Object.freeze({ voters: Object.freeze(v), learners: Object.freeze(l) });
}

/**
 * The configuration after `change`, or an error naming what is wrong. Removing the last voter is
 * refused: no quorum could ever commit again.
 */
export function applyConfChange(m: Membership, change: ConfChange): Membership {
  const { type, node } = change;
  const isVoter = m.voters.includes(node);
  const isLearner = m.learners.includes(node);
  switch (type) {
    case "add-learner":
    case "add-voter":
      if (isVoter || isLearner) {
        throw new Error(`Member "${node}" is already in the cluster (membership: peerURL exists)`);
      }
      return type === "add-voter"
        ? membership([...m.voters, node], m.learners)
        : membership(m.voters, [...m.learners, node]);
    case "promote":
      if (isVoter) {
        throw new Error(`Member "${node}" is already a voter (membership: member not learner)`);
      }
      if (!isLearner) throw new Error(`Member "${node}" not found (membership: member not found)`);
      return membership([...m.voters, node], m.learners.filter((id) => id !== node));
    case "update":
      if (!isVoter && !isLearner) {
        throw new Error(`Member "${node}" not found (membership: member not found)`);
      }
      return m;
    case "remove":
      if (!isVoter && !isLearner) {
        throw new Error(`Member "${node}" not found (membership: member not found)`);
      }
      if (isVoter && m.voters.length === 1) {
        throw new Error(`Cannot remove "${node}": it is the last voter`);
      }
      return membership(
        m.voters.filter((id) => id !== node),
        m.learners.filter((id) => id !== node),
      );
  }
}

/** Whether two memberships are the same. */
export function sameMembership(a: Membership, b: Membership): boolean {
  return a.voters.join(",") === b.voters.join(",") && a.learners.join(",") === b.learners.join(",");
}

/** The membership a config entry leads to from `m` (entries of other kinds leave it). */
export function membershipAfter(m: Membership, e: RaftLogEntry): Membership {
  return e.kind === "config" ? applyConfChange(m, decodeConfChange(e.command)) : m;
}

/**
 * The configurations of a log: the one in force at `baseIndex` (from a snapshot, or the bootstrap
 * configuration at 0) and one per config entry after it. The newest is in force; truncating the
 * log drops the configs of the entries it removes, which restores the previous one.
 */
export class ConfigHistory {
  #items: { index: number; membership: Membership }[];

  /** Starts with `base` in force from `baseIndex`. */
  constructor(base: Membership, baseIndex: number) {
    this.#items = [{ index: baseIndex, membership: base }];
  }

  /** The configuration in force: the newest in the log. */
  get current(): Membership {
    return this.#items[this.#items.length - 1].membership;
  }

  /** Index of the entry that made the current configuration (the base index for the base). */
  get currentIndex(): number {
    return this.#items[this.#items.length - 1].index;
  }

  /** The configuration in force at `index` (the newest made at or before it). */
  at(index: number): Membership {
    for (let i = this.#items.length - 1; i > 0; i--) {
      if (this.#items[i].index <= index) return this.#items[i].membership;
    }
    return this.#items[0].membership;
  }

  /** The index of the config entry in force at `index` (the base index when none is newer). */
  indexAt(index: number): number {
    for (let i = this.#items.length - 1; i > 0; i--) {
      if (this.#items[i].index <= index) return this.#items[i].index;
    }
    return this.#items[0].index;
  }

  /** Records the config entries among `entries`, appended after everything recorded so far. */
  appended(entries: readonly RaftLogEntry[]): void {
    for (const e of entries) {
      if (e.kind !== "config") continue;
      invariant(
        e.index > this.currentIndex,
        () => `config entry ${e.index} appended at or before ${this.currentIndex}`,
      );
      this.#items.push({ index: e.index, membership: membershipAfter(this.current, e) });
    }
  }

  /** The log lost its entries from `index` on: their configurations are no longer in force. */
  truncatedFrom(index: number): void {
    invariant(index > this.#items[0].index, () => `truncation at ${index} reaches the base config`);
    while (this.#items.length > 1 && this.#items[this.#items.length - 1].index >= index) {
      this.#items.pop();
    }
  }

  /**
   * The log is compacted up to `index`: the configuration there becomes the base. It keeps the
   * index of the entry that made it (compaction changes no configuration).
   */
  compacted(index: number): void {
    const base = { index: this.indexAt(index), membership: this.at(index) };
    this.#items = [base, ...this.#items.filter((c) => c.index > index)];
  }
}
