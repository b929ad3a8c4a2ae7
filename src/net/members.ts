/**
 * Cluster members on a server: who they are (a unique 64-bit id, a name that is the Raft node id)
 * and where they are (peer, client and gRPC URLs). The core knows only node ids; the addresses
 * travel in the context of each membership change (etcd's ConfChange.Context) and every node keeps
 * them, with the members removed so far, in `members.json` in its data directory.
 *
 * Ids: a member of the bootstrap configuration (`--name` and `--peers`) has the id raftmeta always
 * gave it, the FNV-1a hash of `<cluster id>/<name>`; a member added later gets 64 random bits
 * (never 0), as etcd's ids are opaque. A removed member's name and id are never used again.
 *
 * @module
 */

import type { NodeId } from "../raft/types.ts";
import type { ConfChange, Membership } from "../raft/membership.ts";
import type { Address } from "./transport.ts";
import { HttpError, id64 } from "./etcd.ts";

/** The file in the data directory. */
export const MEMBERS_FILE = "members.json";

/** Most members (voters and learners) a cluster may have. */
export const MEMBERS_MAX = 64;
/** Most learners at once (etcd 3.4 allows one). */
export const LEARNERS_MAX = 1;

/** What a node knows of one member. */
export interface MemberInfo {
  /** The member's id (uint64). */
  readonly id: bigint;
  /** Where it listens for peers, `http://host:port`; undefined when unknown here. */
  readonly peerUrl?: string;
  /** Its client URL, when known. */
  readonly clientUrl?: string;
  /** Its gRPC URL, when known. */
  readonly grpcUrl?: string;
}

/** etcd's errors for the Cluster API, with its texts and codes (checked against etcd 3.4.23). */
export const MemberErrors = {
  notFound: () => new HttpError(404, "etcdserver: member not found", 5),
  badUrls: (why: string) =>
    new HttpError(400, `etcdserver: given member URLs are invalid (${why})`, 3),
  peerUrlExists: () => new HttpError(412, "etcdserver: Peer URLs already exists", 9),
  idExists: () => new HttpError(412, "etcdserver: member ID already exist", 9),
  notLearner: () => new HttpError(412, "etcdserver: can only promote a learner member", 9),
  learnerNotReady: (why: string) =>
    new HttpError(
      412,
      `etcdserver: can only promote a learner member which is in sync with leader (${why})`,
      9,
    ),
  tooManyLearners: () => new HttpError(412, "etcdserver: too many learner members in cluster", 9),
  notEnoughStarted: (why: string) =>
    new HttpError(
      412,
      `etcdserver: re-configuration failed due to not enough started members (${why})`,
      9,
    ),
  badTransferee: () => new HttpError(412, "etcdserver: bad leader transferee", 9),
  transferTimeout: () =>
    new HttpError(503, "etcdserver: request timed out, leader transfer took too long", 14),
};

/**
 * Parses a peer URL as `member add` takes it: `http://host:port` or `https://host:port`, nothing
 * after the port. Throws etcd's "given member URLs are invalid" naming what is wrong.
 */
export function parsePeerUrl(url: unknown): { url: string; address: Address } {
  if (typeof url !== "string") throw MemberErrors.badUrls(`not a string: ${JSON.stringify(url)}`);
  const m = /^(https?):\/\/(\[[^\]]+\]|[^:/\[\]]+):(\d{1,5})\/?$/.exec(url);
  if (m === null || Number(m[3]) < 1 || Number(m[3]) > 65535) {
    throw MemberErrors.badUrls(`${JSON.stringify(url)} is not http(s)://HOST:PORT`);
  }
  const hostname = m[2].replace(/^\[|\]$/g, "");
  return { url: `${m[1]}://${m[2]}:${Number(m[3])}`, address: { hostname, port: Number(m[3]) } };
}

/** The address of a peer URL made by {@linkcode parsePeerUrl} (or `http://` + an address). */
export function addressOfPeerUrl(url: string): Address {
  return parsePeerUrl(url).address;
}

/** A random member id: 64 bits, never 0 (etcd's "no member"). */
export function newMemberId(): bigint {
  for (;;) {
    const [hi, lo] = crypto.getRandomValues(new Uint32Array(2));
    const id = (BigInt(hi) << 32n) | BigInt(lo);
    if (id !== 0n) return id;
  }
}

/** The context a server puts in a membership change: the member's id and URLs, as JSON. */
export function encodeMemberContext(info: MemberInfo): string {
  const out: Record<string, string> = { id: info.id.toString() };
  if (info.peerUrl !== undefined) out.peerURL = info.peerUrl;
  if (info.clientUrl !== undefined) out.clientURL = info.clientUrl;
  if (info.grpcUrl !== undefined) out.grpcURL = info.grpcUrl;
  return JSON.stringify(out);
}

/** Reads a context made by {@linkcode encodeMemberContext}; undefined for none or a bad one. */
export function decodeMemberContext(context: string | undefined): MemberInfo | undefined {
  if (context === undefined) return undefined;
  try {
    return memberRecordOf(JSON.parse(context));
  } catch {
    return undefined;
  }
}

/** One member of a members file or snapshot context, checked; undefined if malformed. */
function memberRecordOf(m: unknown): MemberInfo | undefined {
  if (m === null || typeof m !== "object") return undefined;
  const o = m as Record<string, unknown>;
  if (typeof o.id !== "string" || !/^\d{1,20}$/.test(o.id)) return undefined;
  const url = (v: unknown) => typeof v === "string" ? v : undefined;
  return {
    id: BigInt(o.id),
    peerUrl: url(o.peerURL),
    clientUrl: url(o.clientURL),
    grpcUrl: url(o.grpcURL),
  };
}

/** What `members.json` holds. */
interface MembersFile {
  version: 1;
  /** The configuration at index 0 (a node that joined learns it from the leader). */
  bootstrap?: { voters: NodeId[]; learners: NodeId[] };
  members: Record<NodeId, { id: string; peerURL?: string; clientURL?: string; grpcURL?: string }>;
  removed: Record<NodeId, string>;
  /** Set once this node learned it was removed: its data directory must not serve again. */
  removedSelf?: { reason: string };
}

/** Thrown at start for the data directory of a removed member. */
export class RemovedMemberError extends Error {}

/**
 * The members a node knows: ids and URLs from the bootstrap flags and from every membership change
 * it applied, and the names removed so far. Saved to `members.json` after every change.
 */
export class MemberTable {
  readonly #dir: string | undefined;
  readonly #clusterId: string;
  readonly #self: NodeId;
  readonly #info = new Map<NodeId, MemberInfo>();
  readonly #removed = new Map<NodeId, bigint>();
  #bootstrap: Membership | undefined;
  #removedSelf: string | undefined;

  /** A table for `self`, loaded from `dir`'s `members.json` if there is one (none: no file). */
  constructor(options: { dir?: string; clusterId: string; self: NodeId }) {
    this.#dir = options.dir;
    this.#clusterId = options.clusterId;
    this.#self = options.self;
    if (this.#dir === undefined) return;
    let text: string;
    try {
      text = Deno.readTextFileSync(`${this.#dir}/${MEMBERS_FILE}`);
    } catch {
      return;
    }
    let f: MembersFile;
    try {
      f = JSON.parse(text);
      if (f.version !== 1) throw new Error(`version ${JSON.stringify(f.version)} is unknown`);
    } catch (e) {
      throw new Error(`Cannot read "${this.#dir}/${MEMBERS_FILE}": ${(e as Error).message}`);
    }
    if (f.bootstrap !== undefined) {
      this.#bootstrap = { voters: f.bootstrap.voters, learners: f.bootstrap.learners };
    }
    for (const [node, m] of Object.entries(f.members ?? {})) {
      this.#info.set(node, {
        id: BigInt(m.id),
        peerUrl: m.peerURL,
        clientUrl: m.clientURL,
        grpcUrl: m.grpcURL,
      });
    }
    for (const [node, id] of Object.entries(f.removed ?? {})) this.#removed.set(node, BigInt(id));
    this.#removedSelf = f.removedSelf?.reason;
  }

  /** The configuration at index 0 that this directory recorded, if any. */
  get bootstrap(): Membership | undefined {
    return this.#bootstrap;
  }

  /** Records the configuration at index 0 (once, at a first start or a join). */
  setBootstrap(m: Membership): void {
    this.#bootstrap = { voters: [...m.voters], learners: [...m.learners] };
    this.save();
  }

  /** Why this node's data directory must not serve again, if it was removed. */
  get removedSelf(): string | undefined {
    return this.#removedSelf;
  }

  /** Records that this node was removed (and why), durably. */
  markRemovedSelf(reason: string): void {
    if (this.#removedSelf !== undefined) return;
    this.#removedSelf = reason;
    this.#removed.set(this.#self, this.idOf(this.#self));
    this.save();
  }

  /** The member id of `node`: the one recorded, else the bootstrap hash of its name. */
  idOf(node: NodeId): bigint {
    return this.#info.get(node)?.id ?? this.#removed.get(node) ??
      id64(`${this.#clusterId}/${node}`);
  }

  /** What is known of `node` (its id always). */
  infoOf(node: NodeId): MemberInfo {
    return this.#info.get(node) ?? { id: this.idOf(node) };
  }

  /** Whether `node` was removed from the cluster (its name may never come back). */
  isRemoved(node: NodeId): boolean {
    return this.#removed.has(node);
  }

  /** Whether `id` belonged to a removed member. */
  isRemovedId(id: bigint): boolean {
    return [...this.#removed.values()].includes(id);
  }

  /** Fills in what the flags say of a bootstrap member, unless a change recorded it already. */
  seed(node: NodeId, info: Omit<MemberInfo, "id">): void {
    if (this.#info.has(node) || this.#removed.has(node)) return;
    this.#info.set(node, { id: this.idOf(node), ...info });
  }

  /** Takes one applied (or, on a joining node, copied) membership change into account. */
  apply(change: ConfChange): void {
    const info = decodeMemberContext(change.context);
    if (change.type === "remove") {
      this.#removed.set(change.node, this.idOf(change.node));
      this.#info.delete(change.node);
    } else if (info !== undefined) {
      const old = this.#info.get(change.node);
      this.#info.set(change.node, {
        id: info.id,
        peerUrl: info.peerUrl ?? old?.peerUrl,
        clientUrl: info.clientUrl ?? old?.clientUrl,
        grpcUrl: info.grpcUrl ?? old?.grpcUrl,
      });
    }
    this.save();
  }

  /** The table as JSON, for a joining node (see {@linkcode MemberTable.adopt}). */
  toJSON(): MembersFile {
    const members: MembersFile["members"] = {};
    for (const [node, m] of this.#info) {
      const o: MembersFile["members"][string] = { id: m.id.toString() };
      if (m.peerUrl !== undefined) o.peerURL = m.peerUrl;
      if (m.clientUrl !== undefined) o.clientURL = m.clientUrl;
      if (m.grpcUrl !== undefined) o.grpcURL = m.grpcUrl;
      members[node] = o;
    }
    const removed: MembersFile["removed"] = {};
    for (const [node, id] of this.#removed) removed[node] = id.toString();
    const out: MembersFile = { version: 1, members, removed };
    if (this.#bootstrap !== undefined) {
      out.bootstrap = {
        voters: [...this.#bootstrap.voters],
        learners: [...this.#bootstrap.learners],
      };
    }
    if (this.#removedSelf !== undefined) out.removedSelf = { reason: this.#removedSelf };
    return out;
  }

  /** Takes over the leader's table (a joining node, before it starts). */
  adopt(json: unknown, bootstrap: Membership | undefined): void {
    const f = json as MembersFile;
    for (const [node, m] of Object.entries(f?.members ?? {})) {
      const parsed = memberRecordOf(m);
      if (parsed !== undefined) this.#info.set(node, parsed);
    }
    for (const [node, id] of Object.entries(f?.removed ?? {})) {
      if (typeof id === "string" && /^\d{1,20}$/.test(id)) this.#removed.set(node, BigInt(id));
    }
    if (bootstrap !== undefined) this.#bootstrap = bootstrap;
    this.save();
  }

  /**
   * The table as a snapshot carries it (`SnapshotMeta.context`): every member's id and URLs and the
   * names removed, as of the index the snapshot covers. Not this node's bootstrap or own fate.
   */
  snapshotContext(): string {
    const { members, removed } = this.toJSON();
    return JSON.stringify({ version: 1, members, removed });
  }

  /**
   * Takes in the table a snapshot installed from the leader carries ({@linkcode snapshotContext}):
   * the snapshot covers entries this node never applied (a member's `add`, a URL update), so its
   * records replace this node's. Returns whether `text` was a table (else nothing changes).
   */
  adoptSnapshotContext(text: string): boolean {
    let f: { version?: unknown; members?: unknown; removed?: unknown };
    try {
      f = JSON.parse(text);
    } catch {
      return false;
    }
    if (f === null || typeof f !== "object" || f.version !== 1) return false;
    if (typeof f.members !== "object" || f.members === null) return false;
    if (typeof f.removed !== "object" || f.removed === null) return false;
    const info = new Map<NodeId, MemberInfo>();
    for (const [node, m] of Object.entries(f.members as Record<string, unknown>)) {
      const parsed = memberRecordOf(m);
      if (parsed === undefined) return false;
      info.set(node, parsed);
    }
    const removed = new Map<NodeId, bigint>();
    for (const [node, id] of Object.entries(f.removed as Record<string, unknown>)) {
      if (typeof id !== "string" || !/^\d{1,20}$/.test(id)) return false;
      removed.set(node, BigInt(id));
    }
    for (const [node, m] of info) this.#info.set(node, m);
    for (const [node, id] of removed) {
      this.#removed.set(node, id);
      this.#info.delete(node);
    }
    this.save();
    return true;
  }

  /** Every member recorded (added ones, and bootstrap ones whose URLs a change set). */
  known(): [NodeId, MemberInfo][] {
    return [...this.#info];
  }

  /** Writes `members.json` (temp file, then rename). */
  save(): void {
    if (this.#dir === undefined) return;
    const path = `${this.#dir}/${MEMBERS_FILE}`;
    const tmp = `${path}.tmp`;
    const f = Deno.openSync(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(this.toJSON(), null, 1) + "\n");
      for (let done = 0; done < bytes.length;) done += f.writeSync(bytes.subarray(done));
      f.syncSync();
    } finally {
      f.close();
    }
    Deno.renameSync(tmp, path);
  }
}
