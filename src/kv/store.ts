/**
 * The metadata store: the replicated state machine behind every node (the seed's
 * `MetadataStore`), with etcd's revision model and exactly-once writes.
 *
 * Revisions follow etcd: an empty store is at revision 1, and each write transaction that changes
 * something (a put, a delete that deletes a key, a transaction whose chosen list does either)
 * raises it by one; every change of one command shares the new revision. A key's
 * `createRevision` is the revision that created it, `modRevision` the revision of its last change,
 * and `version` counts its puts since creation (1 on create; a delete removes the key, so a later
 * put starts again at version 1).
 *
 * The store is deterministic: it reads no clock and no randomness; its state is a function of the
 * commands applied and their log indexes.
 *
 * @module
 */

import { compareBytes, fromBase64, quote, text, toBase64, utf8Length } from "./bytes.ts";
import {
  CommandError,
  commandLimitError,
  parseCommand,
  splitAuthGuard,
  validateCommand,
  validateKey,
  validateRange,
} from "./command.ts";
import { compareKeys, isNativeOrdered, SortedMap, type SortedMapView } from "./sorted_map.ts";
import {
  type RevisionEvents,
  type Version,
  VERSION_OVERHEAD_BYTES,
  versionBytes,
  VersionLog,
  type VersionLogView,
} from "./history.ts";
import type { AlarmCommand, AlarmMember, AlarmResponse, AlarmType } from "./types.ts";

export { CompactedError, type RevisionEvents, type Version } from "./history.ts";
import { AUTH_OLD_REVISION, type AuthSnapshot, AuthState } from "./auth.ts";
import { CompactedError } from "./history.ts";
import {
  type ClientId,
  type Command,
  type CommandResponse,
  type Compare,
  DEFAULT_KV_LIMITS,
  type DeleteResponse,
  type KeyRange,
  type KeyValue,
  type KvEvent,
  type KvLimits,
  LEASE_ID_MAX,
  type LeaseGrantResponse,
  type LeaseRevokeResponse,
  type PlainCommand,
  type PutResponse,
  type RangeCommand,
  type RangeResponse,
  type SessionCommand,
  type SortOrder,
  type SortTarget,
  type TxnCommand,
  type TxnOp,
  type TxnOpResponse,
  type TxnResponse,
} from "./types.ts";

/** etcd's error for a write refused while the NOSPACE alarm is raised (gRPC ResourceExhausted). */
export const NOSPACE_ERROR = "etcdserver: mvcc: database space exceeded";

/** etcd's error for a read or compaction at a revision compaction dropped (gRPC OutOfRange, 11). */
export const COMPACTED_ERROR = "etcdserver: mvcc: required revision has been compacted";

/** etcd's error for a read or compaction past the current revision (gRPC OutOfRange, 11). */
export const FUTURE_REVISION_ERROR = "etcdserver: mvcc: required revision is a future revision";

/**
 * A range asked for a revision the store cannot serve: compacted or in the future. The message is
 * etcd's ({@linkcode COMPACTED_ERROR} or {@linkcode FUTURE_REVISION_ERROR}).
 */
export class RevisionUnavailableError extends Error {
  /** The revision asked for. */
  readonly revision: number;
  /** Makes the error for a range at `revision`, with etcd's `message`. */
  constructor(message: typeof COMPACTED_ERROR | typeof FUTURE_REVISION_ERROR, revision: number) {
    super(message);
    this.name = "RevisionUnavailableError";
    this.revision = revision;
  }
}

/** Whether `command` adds data, so a NOSPACE alarm refuses it (as etcd's capped applier does). */
export function addsData(command: Command): boolean {
  const c = command.type === "session" ? command.command : command;
  switch (c.type) {
    case "put":
    case "leaseGrant":
      return true;
    case "txn":
      return txnPuts(c);
    default:
      return false;
  }
}

/** Whether `txn` has a put in either list, nested transactions included. */
function txnPuts(txn: TxnCommand): boolean {
  return [...txn.success, ...txn.failure].some((op) =>
    op.type === "put" || (op.type === "txn" && txnPuts(op))
  );
}

/** Whether `txn` only reads: ranges in both lists, nested transactions included (etcd's rule). */
export function txnReadOnly(txn: TxnCommand): boolean {
  return [...txn.success, ...txn.failure].every((op) =>
    op.type === "range" || (op.type === "txn" && txnReadOnly(op))
  );
}

/** An entry that must never fail to apply did (it does not decode, or its index is out of order). */
export class ApplyError extends Error {
  /** Makes an error with `message`; `cause` is the underlying error, if any. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ApplyError";
  }
}

/**
 * Versions a compaction frees per step (see {@linkcode MetadataStore.compactStep}): about 10 ms
 * of work at most (bench/kv_history_bench.ts), so freeing millions of versions never holds a
 * node's event loop for long.
 */
export const COMPACT_BATCH_VERSIONS = 5_000;

/** Default bound on the bytes of key-values one answer may carry: 64 MiB. */
export const RESPONSE_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;

/**
 * Default bound on the bytes the ranges of one write transaction gather at apply: 8 MiB. Smaller
 * than an answer's bound, because every node gathers them in one turn of its event loop (64 MiB
 * held followers' heartbeats about 130 ms).
 */
export const APPLY_RESPONSE_BYTES_MAX_DEFAULT = 8 * 1024 * 1024;

/**
 * The bytes a key-value adds to an answer, as etcd's JSON gateway renders it: base64 key and value,
 * and 128 for the field names and revisions. Counted before the key-value is built.
 */
export function kvResponseBytes(key: string, valueBytes: number): number {
  return 4 * Math.ceil(utf8Length(key) / 3) + 4 * Math.ceil(valueBytes / 3) + 128;
}

/** An answer would carry more than its bound of bytes (etcd's ResourceExhausted). */
export class ResponseTooLargeError extends Error {
  /** The bound that was exceeded, in bytes (see {@linkcode kvResponseBytes}). */
  readonly bytesMax: number;
  /** Makes the error. */
  constructor(bytesMax: number) {
    super(`Response is too large: its key-values would exceed ${bytesMax} bytes`);
    this.name = "ResponseTooLargeError";
    this.bytesMax = bytesMax;
  }
}

/**
 * What an answer may still carry; ranges stop early once it is used up. The key-values a range
 * picks are not copied at once: {@linkcode MetadataStore} copies them only after the whole answer
 * is known to fit, so an answer over its bound costs a walk over the keys, never copies of up to
 * the bound in bytes (64 MiB by default) that are then thrown away.
 */
interface ResponseBudget {
  bytesLeft: number;
  exceeded: boolean;
  /** The key-value lists of the answer, each holding {@linkcode Picked}s until they are copied. */
  readonly lists: KeyValue[][];
  /** Whether the answer takes the store's value arrays as they are (see `shareValues`). */
  readonly shareValues: boolean;
}

/** A key-value a range picked, standing in its list until the answer is known to fit. */
interface Picked {
  readonly key: string;
  // Safe to copy later: a write replaces a key's version object, never changes one.
  readonly v: Versioned;
  readonly keysOnly: boolean;
}

/** A budget of `bytesMax` bytes. */
function responseBudget(bytesMax: number, shareValues = false): ResponseBudget {
  return { bytesLeft: bytesMax, exceeded: false, lists: [], shareValues };
}

/** Configuration of a {@linkcode MetadataStore}; every node of a cluster must use the same. */
export interface MetadataStoreOptions {
  /** Bounds on commands (merged over {@linkcode DEFAULT_KV_LIMITS}). */
  readonly limits?: Partial<KvLimits>;
  /** Most key-values one range returns; a longer range says `more`. Default 10,000. */
  readonly rangeKvsMax?: number;
  /**
   * Most bytes (see {@linkcode kvResponseBytes}) the ranges of one write transaction may gather
   * when it is applied; beyond, the writes still apply and the answer says `responseTooLarge`
   * instead of carrying the key-values. Default {@linkcode APPLY_RESPONSE_BYTES_MAX_DEFAULT}.
   */
  readonly applyResponseBytesMax?: number;
  /** Most client sessions remembered; the least recently heard is forgotten first. Default 10,000. */
  readonly sessionsMax?: number;
  /**
   * A client whose last command is this many log entries behind the entry being applied is
   * forgotten (log-driven, never wall-clock). Default 100,000.
   */
  readonly sessionIdleEntriesMax?: number;
  /**
   * Most revisions of history kept (for watches and for ranges at old revisions). Beyond it the
   * oldest are compacted automatically: the compact revision advances, so ranges and watches there
   * fail as compacted. The trim depends only on applied commands and these options, so every node
   * (with the same options) compacts at the same revision. Default: no bound, as etcd: history is
   * kept until a compaction (explicit or a server's automatic one), and its bytes count toward
   * the storage quota ({@linkcode MetadataStore.backendBytes}).
   */
  readonly historyRevisionsMax?: number;
  /** Most leases at once; a grant beyond is rejected. Default 10,000. */
  readonly leasesMax?: number;
  /**
   * Test-only fault point `"apply-retry-twice"`: apply a retried write again instead of returning
   * the remembered result, to prove the checks catch it. Never set in production.
   */
  readonly faultPoints?: ReadonlySet<string>;
}

/** Options of {@linkcode MetadataStore.range}. */
export interface RangeOptions {
  /** Most key-values to return; 0 or omitted means up to the store's `rangeKvsMax`. */
  readonly limit?: number;
  /** Return keys with empty values. */
  readonly keysOnly?: boolean;
  /** Return only the count. */
  readonly countOnly?: boolean;
  /** Sort order (see {@linkcode RangeCommand.sortOrder}); omitted is `"none"`. */
  readonly sortOrder?: SortOrder;
  /** What to sort by; omitted is `"key"`. */
  readonly sortTarget?: SortTarget;
  /** Leave out key-values modified before this revision (0: no bound). */
  readonly minModRevision?: number;
  /** Leave out key-values modified after this revision (0: no bound). */
  readonly maxModRevision?: number;
  /** Leave out key-values created before this revision (0: no bound). */
  readonly minCreateRevision?: number;
  /** Leave out key-values created after this revision (0: no bound). */
  readonly maxCreateRevision?: number;
  /**
   * The revision to read at; 0 or omitted means the current one. At least the compact revision
   * and at most the current one, else {@linkcode RevisionUnavailableError}.
   */
  readonly revision?: number;
  /**
   * Most bytes of key-values (see {@linkcode kvResponseBytes}) to gather; beyond, the range stops
   * and throws {@linkcode ResponseTooLargeError}. Default: no bound but `rangeKvsMax`.
   */
  readonly responseBytesMax?: number;
  /**
   * Answer with the store's own value arrays instead of copies, to be read and never written
   * (the node's read path encodes an answer and drops it). Only with `responseBytesMax`.
   * Saves the copy: 40 MB of values were copied in 130–150 ms of one event-loop turn.
   */
  readonly shareValues?: boolean;
}

/** Fields every {@linkcode ApplyResult} carries. */
export interface ApplyResultBase {
  /** Log index of the entry applied. */
  readonly index: number;
  /** Store revision after the entry. */
  readonly revision: number;
}

/**
 * What applying one log entry produced:
 * - `applied`: the command ran (or, with `duplicate`, had already run for this client and seq:
 *   `response` is the original one and nothing changed now);
 * - `rejected`: the command broke a limit and changed nothing (remembered like `applied`);
 * - `stale`: the client already sent a later seq; nothing changed;
 * - `unknownSession`: the client is not remembered (new clients start at seq 1; an expired
 *   client must start over with a new id); nothing changed, and the outcome of its earlier
 *   command is unknown.
 */
export type ApplyResult =
  | ApplyResultBase & {
    readonly status: "applied";
    readonly response: CommandResponse;
    /** Changes made now, in order, for watchers (empty for a duplicate or a read). */
    readonly events: readonly KvEvent[];
    readonly duplicate: boolean;
  }
  | ApplyResultBase & {
    readonly status: "rejected";
    readonly error: string;
    readonly duplicate: boolean;
  }
  | ApplyResultBase & {
    readonly status: "stale";
    readonly error: string;
    readonly clientId: ClientId;
    readonly seq: number;
    /** The client's latest applied seq. */
    readonly lastSeq: number;
  }
  | ApplyResultBase & {
    readonly status: "unknownSession";
    readonly error: string;
    readonly clientId: ClientId;
    readonly seq: number;
  };

/** What a session remembers of its last command. */
export type SessionOutcome =
  | { readonly status: "applied"; readonly response: CommandResponse }
  | { readonly status: "rejected"; readonly error: string };

/** A client's session as the store remembers it. */
export interface SessionInfo {
  /** The client. */
  readonly clientId: ClientId;
  /** Its latest applied sequence number. */
  readonly lastSeq: number;
  /** Log index at which it was last heard from. */
  readonly lastIndex: number;
  /** Outcome of its latest applied command, returned again to a retry. */
  readonly outcome: SessionOutcome;
}

/** A JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | {
  [key: string]: JsonValue;
};

/**
 * The store's whole state as plain JSON-safe data (values in base64), from
 * {@linkcode MetadataStore.snapshot}.
 */
export interface StoreSnapshot {
  /** Snapshot format; 1. */
  readonly format: 1;
  /** Log index of the last entry applied. */
  readonly appliedIndex: number;
  /** Store revision. */
  readonly revision: number;
  /**
   * Key-values in key order: key, base64 value, createRevision, modRevision, version, and the
   * lease id when the key has one.
   */
  readonly kvs: readonly (readonly [string, string, number, number, number, number?])[];
  /** Leases as [id, ttlMs], by id; absent in snapshots from before leases (none). */
  readonly leases?: readonly (readonly [number, number])[];
  /** The lease id the automatic choice continues after. */
  readonly leaseIdLast?: number;
  /** The auth state; absent in snapshots from before auth, or when it is empty. */
  readonly auth?: AuthSnapshot;
  /** Sessions from least to most recently heard; outcomes with bytes as `{"$base64": ...}`. */
  readonly sessions: readonly {
    readonly clientId: ClientId;
    readonly lastSeq: number;
    readonly lastIndex: number;
    readonly outcome: JsonValue;
  }[];
}

/** A bounded summary of the store for node tables and logs, from {@linkcode MetadataStore.view}. */
export interface StoreView {
  /** Log index of the last entry applied. */
  readonly appliedIndex: number;
  /** Store revision. */
  readonly revision: number;
  /** Number of keys. */
  readonly keys: number;
  /** Number of client sessions. */
  readonly sessions: number;
  /** The first keys with their values as text. */
  readonly kvs: Readonly<Record<string, string>>;
  /** Whether keys were left out of `kvs`. */
  readonly more: boolean;
}

/** A key's current version inside the store; never handed out (callers get copies). */
type Stored = Version;

/**
 * A key's record as the store holds it, read from a {@linkcode FrozenStore} or given to
 * {@linkcode MetadataStore.restore}. The value's bytes are the store's own: read, never write.
 */
export interface KvRecord {
  /** The value. */
  readonly value: Uint8Array;
  /** Revision of the write that created the key. */
  readonly createRevision: number;
  /** Revision of the key's last write. */
  readonly modRevision: number;
  /** Puts since creation (1 on create). */
  readonly version: number;
  /** Lease id, 0 for none. */
  readonly lease: number;
}

/** A client session as a snapshot holds it: the outcome as JSON-safe data (see {@linkcode toJsonSafe}). */
export interface SessionRecord {
  /** The client. */
  readonly clientId: ClientId;
  /** Its latest applied sequence number. */
  readonly lastSeq: number;
  /** Log index at which it was last heard from. */
  readonly lastIndex: number;
  /** Outcome of its latest applied command, with bytes as `{"$base64": ...}`. */
  readonly outcome: JsonValue;
}

/**
 * Everything a store is made of, for {@linkcode MetadataStore.restore}: the form snapshot
 * decoders produce. Keys in strictly increasing UTF-8 order, `records[i]` being `keys[i]`'s.
 */
export interface StoreParts {
  /** Log index of the last entry applied. */
  readonly appliedIndex: number;
  /** Store revision. */
  readonly revision: number;
  /** Leases as [id, ttlMs], in the order they were granted. */
  readonly leases: readonly (readonly [number, number])[];
  /** The lease id the automatic choice continues after. */
  readonly leaseIdLast: number;
  /** Keys, strictly increasing. */
  readonly keys: readonly string[];
  /** Their records. */
  readonly records: readonly KvRecord[];
  /** Sessions from least to most recently heard. */
  readonly sessions: readonly SessionRecord[];
  /** Alarms raised (absent in snapshots from before alarms: none). */
  readonly alarms?: readonly AlarmMember[];
  /** The auth state (absent in snapshots from before auth: disabled, no users, no roles). */
  readonly auth?: AuthSnapshot;
  /**
   * History: absent for a snapshot that did not keep it (the store then has history from
   * `revision` on only). Either every version since `compactRevision` (`versions`, see
   * {@linkcode FrozenStore.history}), or, from older snapshots, every revision in
   * (compactRevision, revision] with its events.
   */
  readonly history?: {
    readonly compactRevision: number;
    readonly revisions?: readonly RevisionEvents[];
    readonly versions?: readonly HistoryItem[];
  };
}

/** A key's version as a snapshot holds it (see {@linkcode Version}; tombstones have version 0). */
export type KvVersion = Omit<Version, "prev">;

/**
 * One item of a store's history as a snapshot holds it: the versions written after the compact
 * revision in the order they were written, each preceded (`base`) by its key's version at the
 * compact revision when that one is kept (a live key changed since).
 */
export interface HistoryItem {
  /** Whether this is a key's version at the compact revision rather than a later write. */
  readonly base: boolean;
  /** The version. */
  readonly version: KvVersion;
}

/**
 * The store's state at one applied index, from {@linkcode MetadataStore.freeze}: taken in O(1)
 * for the keys (the B+tree is shared copy-on-write) and O(sessions + leases + history revisions)
 * for the rest, all bounded. Later applies do not change it, so a host can encode it bit by bit
 * while the store goes on. {@linkcode release} it when done, so the store writes in place again.
 */
export class FrozenStore {
  /** Log index of the last entry applied. */
  readonly appliedIndex: number;
  /** Store revision. */
  readonly revision: number;
  /** The lease id the automatic choice continues after. */
  readonly leaseIdLast: number;
  /** Leases as [id, ttlMs], in the order they were granted. */
  readonly leases: readonly (readonly [number, number])[];
  /** Sessions from least to most recently heard. */
  readonly sessions: readonly SessionInfo[];
  /** The compact revision: ranges may read at it and after, watches start after it. */
  readonly compactRevision: number;
  /** Alarms raised. */
  readonly alarms: readonly AlarmMember[];
  /** The auth state (a copy). */
  readonly auth: AuthSnapshot;
  readonly #kvs: SortedMapView<Stored>;
  readonly #log: VersionLogView;

  /** Use {@linkcode MetadataStore.freeze}. */
  constructor(
    state: Omit<FrozenStore, "size" | "entries" | "batches" | "release" | "history">,
    kvs: unknown,
    log: unknown,
  ) {
    this.appliedIndex = state.appliedIndex;
    this.revision = state.revision;
    this.leaseIdLast = state.leaseIdLast;
    this.leases = state.leases;
    this.sessions = state.sessions;
    this.compactRevision = state.compactRevision;
    this.alarms = state.alarms;
    this.auth = state.auth;
    this.#kvs = kvs as SortedMapView<Stored>;
    this.#log = log as VersionLogView;
  }

  /**
   * The history (see {@linkcode HistoryItem}), lazily: O(1) per item, so a host can encode it
   * bit by bit. The store defers freeing compacted versions while a frozen store is unreleased,
   * so the chains read here stay whole.
   */
  *history(): Generator<HistoryItem, void, undefined> {
    const log = this.#log;
    const c = this.compactRevision;
    for (let i = 0; i < log.size; i++) {
      const v = log.at(i);
      if (v.modRevision <= c) continue;
      const p = v.prev;
      if (p !== undefined && p.modRevision <= c && p.version !== 0) {
        yield { base: true, version: p };
      }
      yield { base: false, version: v };
    }
  }

  /** Number of keys. */
  get size(): number {
    return this.#kvs.size;
  }

  /** Every key with its record, in key order. */
  entries(): IterableIterator<[string, KvRecord]> {
    return this.#kvs.entries();
  }

  /**
   * Every key with its record, in key order, a few dozen at a time: `keys[i]` has `records[i]`.
   * Read only. Faster than {@linkcode entries} for a whole scan (nothing allocated per key).
   */
  batches(): IterableIterator<[readonly string[], readonly KvRecord[]]> {
    return this.#kvs.leaves();
  }

  /** Lets the store write in place again; reading after this is still safe. */
  release(): void {
    this.#kvs.release();
  }
}

interface Lease {
  readonly id: number;
  readonly ttlMs: number;
  /** Keys attached, in the order they were attached. */
  readonly keys: Set<string>;
}

/** A lease as {@linkcode MetadataStore.lease} reports it. */
export interface LeaseInfo {
  /** Lease id. */
  readonly id: number;
  /** Granted time to live, in milliseconds. */
  readonly ttlMs: number;
  /** Keys attached, in key order. */
  readonly keys: readonly string[];
}

interface Session {
  readonly clientId: ClientId;
  lastSeq: number;
  lastIndex: number;
  outcome: SessionOutcome;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What a range reads besides its keys, as a {@linkcode RangeCommand} carries it. */
type RangeSpec = Omit<RangeCommand, "type" | "range">;

/** A key's fields as a range reads them, from the map or from history. */
interface Versioned {
  readonly value: Uint8Array;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
  readonly lease?: number;
}

/**
 * Whether a range must see its whole key range before it answers: it sorts or filters, so, as
 * etcd, the limit applies afterwards.
 */
function sortsOrFilters(s: RangeSpec): boolean {
  return (s.sortOrder ?? "none") !== "none" || (s.sortTarget ?? "key") !== "key" ||
    (s.minModRevision ?? 0) !== 0 || (s.maxModRevision ?? 0) !== 0 ||
    (s.minCreateRevision ?? 0) !== 0 || (s.maxCreateRevision ?? 0) !== 0;
}

/**
 * Which list of a transaction runs, and of each nested transaction in it: decided from every
 * compare before anything is written, as etcd's compareToPath.
 */
interface TxnPath {
  readonly succeeded: boolean;
  /** For each op of the chosen list: its path when it is a transaction. */
  readonly nested: readonly (TxnPath | undefined)[];
}

/** `r` with the key-values of its ranges (nested ones too) left out. */
function withoutKvs(r: Mutable<TxnOpResponse>): Mutable<TxnOpResponse> {
  if (r.type === "range") return { ...r, kvs: [] };
  if (r.type === "txn") return { ...r, responses: r.responses.map(withoutKvs) };
  return r;
}

/** The one empty value: a zero-length array has no bytes to change, and freezing it is allowed. */
const EMPTY: Uint8Array = Object.freeze(new Uint8Array(0)) as Uint8Array;

function invariant(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new Error(`Invariant violated: ${message()}`);
}

function sessionKey(clientId: ClientId): string {
  return typeof clientId === "number" ? `n:${clientId}` : `s:${clientId}`;
}

/** Values up to this size are copied into a shared chunk; larger ones get their own buffer. */
const COPY_CHUNK_VALUE_BYTES_MAX = 1024;
const COPY_CHUNK_BYTES = 64 * 1024;

/**
 * Hands out copies of stored values. Allocating a typed array costs far more than a view into an
 * existing buffer, so small copies are carved out of 64 KiB chunks; each copy is a disjoint view,
 * so a caller who writes to one changes neither the store nor any other copy.
 */
class ValueCopier {
  #chunk = new Uint8Array(0);
  #used = 0;

  copy(value: Uint8Array): Uint8Array {
    const n = value.length;
    if (n === 0) return EMPTY;
    if (n > COPY_CHUNK_VALUE_BYTES_MAX) return value.slice();
    if (this.#used + n > this.#chunk.length) {
      this.#chunk = new Uint8Array(COPY_CHUNK_BYTES);
      this.#used = 0;
    }
    const out = this.#chunk.subarray(this.#used, this.#used + n);
    out.set(value);
    this.#used += n;
    return out;
  }
}

/**
 * The metadata state machine. Writes arrive only through {@linkcode MetadataStore.apply}, once
 * per committed log entry, in log order; reads are methods.
 *
 * @example
 * ```ts
 * import { MetadataStore } from "./store.ts";
 * import { encodePut } from "./command.ts";
 * const store = new MetadataStore();
 * const result = store.apply(encodePut("/services/db/primary", "10.0.0.7"), 1);
 * if (result.status !== "applied" || store.revision !== 2) throw new Error();
 * if (store.getString("/services/db/primary") !== "10.0.0.7") throw new Error();
 * ```
 */
export class MetadataStore {
  /** Bounds on commands; pass them to `decodeCommand` before proposing. */
  readonly limits: KvLimits;
  /** Most key-values one range returns. */
  readonly rangeKvsMax: number;
  /** Most bytes of key-values the ranges of one write transaction gather at apply. */
  readonly applyResponseBytesMax: number;
  /** Most client sessions remembered. */
  readonly sessionsMax: number;
  /** Log entries after which a silent client is forgotten. */
  readonly sessionIdleEntriesMax: number;
  /** Most leases at once. */
  readonly leasesMax: number;

  #map = new SortedMap<Stored>();
  #applyRetryTwice: boolean;
  #revision = 1;
  #appliedIndex = 0;
  /** In order of last contact, least recent first (log indexes only grow, so also by lastIndex). */
  #sessions = new Map<string, Session>();
  #copier = new ValueCopier();
  #rangeValueBytesCopied = 0;
  /** Every version written after the compact revision, in revision order (see history.ts). */
  #log = new VersionLog();
  /** Keys deleted whose history is still kept, each with its newest version, a tombstone. */
  #dead = new SortedMap<Version>();
  /** Ranges may read at this revision and later; watches start after it. */
  #compactRevision = 0;
  /** The compaction whose versions are being freed, a batch at a time; 0 when none. */
  #compactPending = 0;
  /** Keys whose chains the pending compaction has cut already. */
  #compactDone = new Set<string>();
  /** Chains cut off whose bytes are not yet taken off the count (a batch at a time too). */
  #detached: Version[] = [];
  /** Bytes (see {@linkcode versionBytes}) of the versions kept that are not current. */
  #historyBytes = 0;
  #historyCount = 0;
  readonly #historyRevisionsMax: number;
  #leases = new Map<number, Lease>();
  #leaseIdLast = 0;
  /** Bytes of the live keys and values (UTF-16 units for keys), for the quota. */
  #liveBytes = 0;
  /** Raised alarms by member id. */
  #alarms = new Map<string, AlarmType>();
  /** Users, roles and whether auth is on (src/kv/auth.ts); changed only by applying entries. */
  readonly auth: AuthState = new AuthState();

  /** An empty store at revision 1, applied index 0. */
  constructor(options: MetadataStoreOptions = {}) {
    this.limits = Object.freeze({ ...DEFAULT_KV_LIMITS, ...options.limits });
    this.rangeKvsMax = options.rangeKvsMax ?? 10_000;
    this.applyResponseBytesMax = options.applyResponseBytesMax ??
      APPLY_RESPONSE_BYTES_MAX_DEFAULT;
    this.sessionsMax = options.sessionsMax ?? 10_000;
    this.sessionIdleEntriesMax = options.sessionIdleEntriesMax ?? 100_000;
    this.leasesMax = options.leasesMax ?? 10_000;
    this.#historyRevisionsMax = options.historyRevisionsMax ?? Infinity;
    const hrm = this.#historyRevisionsMax;
    if (!(hrm === Infinity || (Number.isSafeInteger(hrm) && hrm >= 1))) {
      throw new RangeError(`historyRevisionsMax must be a positive integer: ${hrm}`);
    }
    this.#applyRetryTwice = options.faultPoints?.has("apply-retry-twice") ?? false;
    for (const [name, v] of Object.entries({ ...this.limits, rangeKvsMax: this.rangeKvsMax })) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new RangeError(`${name} must be a positive integer: ${v}`);
      }
    }
    for (
      const [name, v] of Object.entries({
        sessionsMax: this.sessionsMax,
        applyResponseBytesMax: this.applyResponseBytesMax,
        sessionIdleEntriesMax: this.sessionIdleEntriesMax,
        leasesMax: this.leasesMax,
      })
    ) {
      if (!Number.isSafeInteger(v) || v < 1) {
        throw new RangeError(`${name} must be a positive integer: ${v}`);
      }
    }
  }

  /** The store's revision: 1 when empty, +1 per write transaction that changed something. */
  get revision(): number {
    return this.#revision;
  }

  /** Log index of the last entry applied (0 before any). */
  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /** Number of keys. */
  get size(): number {
    return this.#map.size;
  }

  /** Number of client sessions remembered. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Number of leases. */
  get leaseCount(): number {
    return this.#leases.size;
  }

  /** The oldest revision a watch may start at (older ones are compacted). */
  get oldestRevision(): number {
    return this.#compactRevision + 1;
  }

  /** The compact revision: ranges may read at it and later (0 when nothing was compacted). */
  get compactRevision(): number {
    return this.#compactRevision;
  }

  /**
   * Bytes of values copied into the answers of ranges (alone or in a txn) since the store was
   * made; an answer refused as too large adds none.
   */
  get rangeValueBytesCopied(): number {
    return this.#rangeValueBytesCopied;
  }

  /** Number of versions kept that are not current (older versions and tombstones). */
  get historyVersions(): number {
    return this.#historyCount;
  }

  /** Bytes of the versions kept that are not current (key and value of each). */
  get historyBytes(): number {
    return this.#historyBytes;
  }

  /**
   * The store's size as the quota counts it (etcd's backend size): the keys and values of every
   * kept version, current or older, plus {@linkcode VERSION_OVERHEAD_BYTES} per version for the
   * heap it costs; deletes free space only once a compaction drops their history.
   */
  get backendBytes(): number {
    return this.#liveBytes + this.#historyBytes +
      VERSION_OVERHEAD_BYTES * (this.#map.size + this.#historyCount);
  }

  /** The alarms raised, by member id. */
  get alarms(): AlarmMember[] {
    return [...this.#alarms].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map((
      [memberId, alarm],
    ) => ({ memberId, alarm }));
  }

  /** Most revisions the history keeps (Infinity: until compacted). */
  get historyRevisionsMax(): number {
    return this.#historyRevisionsMax;
  }

  /**
   * The events of every revision from `revision` up to the current one, oldest first. Throws
   * {@linkcode CompactedError} when `revision` is older than {@linkcode oldestRevision}.
   */
  history(revision: number): RevisionEvents[] {
    if (revision <= this.#compactRevision) {
      throw new CompactedError(revision, this.oldestRevision);
    }
    const out: RevisionEvents[] = [];
    const log = this.#log;
    let events: KvEvent[] = [];
    for (let i = log.indexOf(revision); i < log.size; i++) {
      const v = log.at(i);
      if (events.length > 0 && events[0].kv.modRevision !== v.modRevision) {
        out.push({ revision: events[0].kv.modRevision, events });
        events = [];
      }
      events.push(this.#eventOf(v));
    }
    if (events.length > 0) out.push({ revision: events[0].kv.modRevision, events });
    return out;
  }

  /** The watch event that wrote `v`, with the key's previous version when it had one. */
  #eventOf(v: Version): KvEvent {
    const p = v.prev;
    const prevKv = p === undefined || p.version === 0 ? undefined : this.#export(p.key, p);
    if (v.version === 0) {
      const kv = {
        key: v.key,
        value: EMPTY,
        createRevision: 0,
        modRevision: v.modRevision,
        version: 0,
      };
      return prevKv === undefined ? { type: "DELETE", kv } : { type: "DELETE", kv, prevKv };
    }
    const kv = this.#export(v.key, v);
    return prevKv === undefined ? { type: "PUT", kv } : { type: "PUT", kv, prevKv };
  }

  /** The lease `id`, or `undefined`. */
  lease(id: number): LeaseInfo | undefined {
    const l = this.#leases.get(id);
    return l === undefined
      ? undefined
      : { id, ttlMs: l.ttlMs, keys: [...l.keys].sort(compareKeys) };
  }

  /** Every lease, by id. */
  leases(): LeaseInfo[] {
    return [...this.#leases.keys()].sort((a, b) => a - b).map((id) => this.lease(id)!);
  }

  // -------------------------------------------------------------------------------------------
  // Applying log entries.

  /**
   * Applies the committed log entry at `index` holding `command`. Called exactly once per entry,
   * in log order; `index` must be above {@linkcode appliedIndex} (gaps are allowed for entries
   * that carry no command, see {@linkcode applyNoop}). Throws {@linkcode ApplyError} when the
   * index is out of order or the bytes do not decode — the node must stop rather than diverge.
   * A command that merely fails (a compare, a limit) is a result, not a throw.
   */
  apply(command: Uint8Array, index: number): ApplyResult {
    this.#checkIndex(index);
    let decoded: Command;
    let guard: number | undefined;
    try {
      const guarded = splitAuthGuard(command);
      if (guarded !== undefined) {
        guard = guarded.authRevision;
        command = guarded.command;
      }
      decoded = parseCommand(command);
    } catch (e) {
      const why = e instanceof CommandError ? e.message : String(e);
      throw new ApplyError(`Entry ${index} does not decode, so it cannot be applied: ${why}`, {
        cause: e,
      });
    }
    this.#expireSessions(index);
    if (guard !== undefined && this.auth.enabled && guard < this.auth.authRevision) {
      // Checked against an older auth state: refused whole, for the node to check again.
      this.#appliedIndex = index;
      return {
        status: "rejected",
        index,
        revision: this.#revision,
        error: AUTH_OLD_REVISION,
        duplicate: false,
      };
    }
    const result = decoded.type === "session"
      ? this.#applySession(decoded, command.length, index)
      : this.#resultOf(this.#execute(decoded, decoded, command.length), index, false);
    this.#appliedIndex = index;
    return result;
  }

  /** Marks the entry at `index` applied without a command (a leader's no-op, a config change). */
  applyNoop(index: number): void {
    this.#checkIndex(index);
    this.#expireSessions(index);
    this.#appliedIndex = index;
  }

  #checkIndex(index: number): void {
    if (!Number.isSafeInteger(index) || index <= this.#appliedIndex) {
      throw new ApplyError(
        `Log index must increase: ${index} after applied index ${this.#appliedIndex}`,
      );
    }
  }

  #applySession(command: SessionCommand, commandBytes: number, index: number): ApplyResult {
    const { clientId, seq } = command;
    const key = sessionKey(clientId);
    const session = this.#sessions.get(key);
    if (session === undefined) {
      if (seq !== 1) {
        return {
          status: "unknownSession",
          index,
          revision: this.#revision,
          clientId,
          seq,
          error: `Session of client ${
            quote(String(clientId))
          } is unknown or expired, so seq ${seq} cannot be applied exactly once; start a new client id`,
        };
      }
      const outcome = this.#execute(command.command, command, commandBytes);
      while (this.#sessions.size >= this.sessionsMax) {
        this.#sessions.delete(this.#sessions.keys().next().value!);
      }
      this.#sessions.set(key, {
        clientId,
        lastSeq: seq,
        lastIndex: index,
        outcome: outcome.remembered,
      });
      return this.#resultOf(outcome, index, false);
    }
    // Heard from: move to the most recent end.
    this.#sessions.delete(key);
    session.lastIndex = index;
    this.#sessions.set(key, session);
    if (seq === session.lastSeq && !this.#applyRetryTwice) {
      return this.#resultOf({ remembered: session.outcome, events: [] }, index, true);
    }
    if (seq < session.lastSeq) {
      return {
        status: "stale",
        index,
        revision: this.#revision,
        clientId,
        seq,
        lastSeq: session.lastSeq,
        error: `Seq ${seq} of client ${
          quote(String(clientId))
        } is stale: seq ${session.lastSeq} was already applied`,
      };
    }
    const outcome = this.#execute(command.command, command, commandBytes);
    session.lastSeq = seq;
    session.outcome = outcome.remembered;
    return this.#resultOf(outcome, index, false);
  }

  #resultOf(
    outcome: { remembered: SessionOutcome; events: KvEvent[] },
    index: number,
    duplicate: boolean,
  ): ApplyResult {
    const o = outcome.remembered;
    return o.status === "applied"
      ? {
        status: "applied",
        index,
        revision: this.#revision,
        response: o.response,
        events: outcome.events,
        duplicate,
      }
      : { status: "rejected", index, revision: this.#revision, error: o.error, duplicate };
  }

  /** Forgets clients not heard from within `sessionIdleEntriesMax` entries before `index`. */
  #expireSessions(index: number): void {
    for (const [key, session] of this.#sessions) {
      if (session.lastIndex + this.sessionIdleEntriesMax > index) break;
      this.#sessions.delete(key);
    }
  }

  /** `stored` as a {@linkcode KeyValue} with a copy of its value. */
  #export(key: string, stored: Stored): KeyValue {
    const kv: KeyValue = {
      key,
      value: this.#copier.copy(stored.value),
      createRevision: stored.createRevision,
      modRevision: stored.modRevision,
      version: stored.version,
    };
    return stored.lease === 0 ? kv : { ...kv, lease: stored.lease };
  }

  /** Runs `command` atomically at one revision; a broken limit changes nothing. */
  #execute(
    command: PlainCommand,
    whole: Command,
    commandBytes: number,
  ): { remembered: SessionOutcome; events: KvEvent[] } {
    if (this.#compactPending !== 0) this.compactStep();
    const error = commandLimitError(whole, commandBytes, this.limits);
    if (error !== undefined) return { remembered: { status: "rejected", error }, events: [] };
    // A raised NOSPACE alarm refuses what adds data, decided from replicated state only.
    if (this.#alarms.size > 0 && addsData(command)) {
      return { remembered: { status: "rejected", error: NOSPACE_ERROR }, events: [] };
    }
    const revision = this.#revision + 1;
    const events: KvEvent[] = [];
    let response: Mutable<CommandResponse>;
    const rejected = (error: string) => ({
      remembered: { status: "rejected", error } as SessionOutcome,
      events: [],
    });
    if (command.type === "txn") {
      const path = this.#decide(command);
      // Checked before anything changes, so a missing lease leaves the store as it was.
      const e = this.#pathLeaseMissing(command, path);
      if (e !== undefined) return rejected(e);
      // Every node applies the writes alike; ranges past the budget give up their key-values.
      const budget = responseBudget(this.applyResponseBytesMax);
      const txn = this.#runTxn(command, path, revision, events, budget);
      this.#copyPicked(budget);
      response = budget.exceeded
        ? { ...txn, responses: txn.responses.map(withoutKvs), responseTooLarge: true }
        : txn;
    } else if (command.type === "leaseGrant") {
      const r = this.#grant(command.id, command.ttlMs);
      if (typeof r === "string") return rejected(r);
      response = r;
    } else if (command.type === "leaseRevoke") {
      response = this.#revoke(command.id, revision, events);
    } else if (command.type === "alarm") {
      response = this.#alarm(command);
    } else if (command.type === "auth") {
      // As etcd: an auth change does not raise the store revision.
      const e = this.auth.apply(command.op);
      if (e !== undefined) return rejected(e);
      response = { type: "auth", revision: 0, authRevision: this.auth.authRevision };
    } else if (command.type === "compact") {
      // As etcd's store.Compact: at or below the compact revision, or past the current one, fails.
      if (command.revision > this.#revision) return rejected(FUTURE_REVISION_ERROR);
      if (command.revision <= this.#compactRevision) return rejected(COMPACTED_ERROR);
      this.#compact(command.revision);
      response = { type: "compact", revision: 0, oldestRevision: this.oldestRevision };
    } else {
      const e = this.#leaseMissing(command);
      if (e !== undefined) return rejected(e);
      response = this.#op(command, revision, events);
    }
    if (events.length > 0) {
      this.#revision = revision;
      // The optional trim: at most historyRevisionsMax revisions after the compact revision.
      if (revision - Math.max(this.#compactRevision, 1) > this.#historyRevisionsMax) {
        this.#compact(revision - this.#historyRevisionsMax);
      }
    }
    // The response reports the revision after the command, as etcd's header does (a
    // transaction's inner responses keep the revisions #runTxn gave them).
    response.revision = this.#revision;
    return { remembered: { status: "applied", response }, events };
  }

  #alarm(command: AlarmCommand): Mutable<AlarmResponse> {
    if (command.action === "activate") this.#alarms.set(command.memberId, command.alarm);
    else {
      for (const [member, alarm] of [...this.#alarms]) {
        if ((command.memberId === "" || member === command.memberId) && alarm === command.alarm) {
          this.#alarms.delete(member);
        }
      }
    }
    return { type: "alarm", revision: 0, alarms: this.alarms };
  }

  #op(
    op: Exclude<TxnOp, TxnCommand>,
    revision: number,
    events: KvEvent[],
    budget?: ResponseBudget,
  ): Mutable<PutResponse | DeleteResponse | RangeResponse> {
    switch (op.type) {
      case "put":
        return this.#put(op.key, op.value, op.prevKv, op.lease ?? 0, revision, events);
      case "delete":
        return this.#delete(op.range, op.prevKv, revision, events);
      case "range":
        return this.#range(op.range, op, budget);
    }
  }

  /** Evaluates the compares of `txn` and of the nested transactions that will run. */
  #decide(txn: TxnCommand): TxnPath {
    const succeeded = txn.compare.every((c) => this.#compare(c));
    const ops = succeeded ? txn.success : txn.failure;
    return {
      succeeded,
      nested: ops.map((op) => op.type === "txn" ? this.#decide(op) : undefined),
    };
  }

  /** Why the ops `path` chooses in `txn` cannot run: a put names a missing lease. */
  #pathLeaseMissing(txn: TxnCommand, path: TxnPath): string | undefined {
    const ops = path.succeeded ? txn.success : txn.failure;
    for (const [i, op] of ops.entries()) {
      const e = op.type === "txn"
        ? this.#pathLeaseMissing(op, path.nested[i]!)
        : this.#leaseMissing(op);
      if (e !== undefined) return e;
    }
    return undefined;
  }

  /**
   * Runs the ops `path` chooses in `txn` at `revision`. Each inner response carries the revision
   * etcd reports for it: a put the new revision; a delete or range the new one once the
   * transaction changed something (for a delete: itself included), else the one before; a nested
   * transaction 0 (etcd leaves its header empty).
   */
  #runTxn(
    txn: TxnCommand,
    path: TxnPath,
    revision: number,
    events: KvEvent[],
    budget: ResponseBudget,
  ): Mutable<TxnResponse> {
    const ops = path.succeeded ? txn.success : txn.failure;
    const responses = ops.map((op, i): Mutable<TxnOpResponse> => {
      if (op.type === "txn") return this.#runTxn(op, path.nested[i]!, revision, events, budget);
      const r = this.#op(op, revision, events, budget);
      r.revision = op.type === "put" || events.length > 0 ? revision : this.#revision;
      return r;
    });
    return { type: "txn", revision: 0, succeeded: path.succeeded, responses };
  }

  /** Why `op` cannot run: it puts with a lease that does not exist. */
  #leaseMissing(op: Exclude<TxnOp, TxnCommand> | PlainCommand): string | undefined {
    if (op.type !== "put" || !op.lease || this.#leases.has(op.lease)) return undefined;
    return `Lease ${op.lease} not found (put of ${quote(op.key)})`;
  }

  #grant(id: number, ttlMs: number): Mutable<LeaseGrantResponse> | string {
    if (this.#leases.size >= this.leasesMax) {
      return `Too many leases: ${this.#leases.size} (most ${this.leasesMax})`;
    }
    if (id === 0) {
      // The next free id after the last, wrapping from LEASE_ID_MAX to 1: fewer than leasesMax
      // ids are taken, so the search ends within leasesMax steps, and every id stays exact.
      id = this.#leaseIdLast;
      do id = id >= LEASE_ID_MAX ? 1 : id + 1; while (this.#leases.has(id));
      this.#leaseIdLast = id;
    } else if (this.#leases.has(id)) {
      return `Lease ${id} already exists`;
    } else {
      this.#leaseIdLast = Math.max(this.#leaseIdLast, id);
    }
    invariant(
      Number.isSafeInteger(id) && id >= 1 && id <= LEASE_ID_MAX,
      () => `lease id ${id} out of range`,
    );
    this.#leases.set(id, { id, ttlMs, keys: new Set() });
    return { type: "leaseGrant", revision: 0, id, ttlMs };
  }

  /** Ends lease `id`: its keys are deleted, in key order, as ordinary DELETE events. */
  #revoke(id: number, revision: number, events: KvEvent[]): Mutable<LeaseRevokeResponse> {
    const lease = this.#leases.get(id);
    if (lease === undefined) return { type: "leaseRevoke", revision: 0, found: false, deleted: 0 };
    const keys = [...lease.keys].sort(compareKeys);
    for (const key of keys) this.#delete({ key }, false, revision, events);
    invariant(lease.keys.size === 0, () => `lease ${id} kept keys after its revoke`);
    this.#leases.delete(id);
    return { type: "leaseRevoke", revision: 0, found: true, deleted: keys.length };
  }

  /** Moves `key` from lease `from` to lease `to` (0: none). */
  #attach(key: string, from: number, to: number): void {
    if (from === to) return;
    if (from !== 0) this.#leases.get(from)?.keys.delete(key);
    if (to !== 0) {
      const lease = this.#leases.get(to);
      invariant(lease !== undefined, () => `key ${quote(key)} put with missing lease ${to}`);
      lease.keys.add(key);
    }
  }

  #put(
    key: string,
    value: Uint8Array,
    prevKv: boolean,
    lease: number,
    revision: number,
    events: KvEvent[],
  ): Mutable<PutResponse> {
    // The new version replaces the current one in the tree (one descent); the old one stays,
    // chained from the new one, as history until a compaction.
    let now: Version | undefined;
    const stored = this.#map.replace(key, (old) => {
      invariant(old.modRevision <= revision, () => `key ${quote(key)} modified in the future`);
      now = {
        key: old.key,
        value,
        createRevision: old.createRevision,
        modRevision: revision,
        version: old.version + 1,
        lease,
        prev: old,
      };
      return now;
    });
    if (stored === undefined) {
      // A deleted key keeps its tombstone (and older versions) as history behind the new one.
      const tomb = this.#dead.size === 0 ? undefined : this.#dead.get(key);
      if (tomb !== undefined) this.#dead.delete(key);
      const created: Stored = {
        key,
        value,
        createRevision: revision,
        modRevision: revision,
        version: 1,
        lease,
        prev: tomb,
      };
      this.#map.set(key, created);
      this.#log.push(created);
      this.#liveBytes += key.length + value.length;
      this.#attach(key, 0, lease);
      events.push({ type: "PUT", kv: this.#export(key, created) });
      return { type: "put", revision: 0 };
    }
    this.#log.push(now!);
    this.#historyBytes += versionBytes(stored);
    this.#historyCount++;
    const prev = this.#export(key, stored);
    this.#liveBytes += value.length - stored.value.length;
    this.#attach(key, stored.lease, lease);
    events.push({ type: "PUT", kv: this.#export(key, now!), prevKv: prev });
    return prevKv ? { type: "put", revision: 0, prevKv: prev } : { type: "put", revision: 0 };
  }

  #delete(
    range: KeyRange,
    prevKv: boolean,
    revision: number,
    events: KvEvent[],
  ): Mutable<DeleteResponse> {
    const doomed = [...this.#scan(range)];
    const prevKvs: KeyValue[] = [];
    for (const [key, stored] of doomed) {
      const removed = this.#map.delete(key);
      invariant(removed, () => `key ${quote(key)} vanished during its delete`);
      const tomb: Version = {
        key: stored.key,
        value: EMPTY,
        createRevision: 0,
        modRevision: revision,
        version: 0,
        lease: 0,
        prev: stored,
      };
      this.#dead.set(key, tomb);
      this.#log.push(tomb);
      this.#historyBytes += versionBytes(stored) + versionBytes(tomb);
      this.#historyCount += 2;
      this.#liveBytes -= key.length + stored.value.length;
      this.#attach(key, stored.lease, 0);
      const prev = this.#export(key, stored);
      if (prevKv) prevKvs.push(prev);
      events.push({
        type: "DELETE",
        kv: { key, value: EMPTY, createRevision: 0, modRevision: revision, version: 0 },
        prevKv: prev,
      });
    }
    return prevKv
      ? { type: "delete", revision: 0, deleted: doomed.length, prevKvs }
      : { type: "delete", revision: 0, deleted: doomed.length };
  }

  /**
   * Compacts at `revision` (above the compact revision, at most the current one): reads below
   * it fail from now on; the versions only they could see are freed in batches of
   * {@linkcode COMPACT_BATCH_VERSIONS}, one now and one at each later apply or
   * {@linkcode compactStep} (so a large compaction never stalls a node for long), none while a
   * frozen store is open (a snapshot being written reads them).
   */
  #compact(revision: number): void {
    invariant(
      revision > this.#compactRevision && revision <= this.#revision,
      () => `compaction at ${revision} with compact revision ${this.#compactRevision}`,
    );
    this.#compactRevision = revision;
    if (this.#compactPending !== revision) this.#compactDone.clear();
    this.#compactPending = revision;
    this.compactStep();
  }

  /** Whether a compaction still has versions to free (see {@linkcode compactStep}). */
  get compactPending(): boolean {
    return this.#compactPending !== 0 || this.#detached.length > 0;
  }

  /**
   * Frees up to `versionsMax` more versions of the pending compaction (none while a frozen store
   * is open); returns whether it is done. Applies call it; a host may call it when idle so an
   * idle node frees its memory too. Changes nothing a read can see.
   */
  compactStep(versionsMax: number = COMPACT_BATCH_VERSIONS): boolean {
    if (!this.compactPending) return true;
    if (this.#map.viewsOpen > 0) return false;
    // Cuts, and the count of what they cut off, within one budget of versions.
    let budget = versionsMax;
    const detached = this.#detached;
    while (budget > 0) {
      while (budget > 0 && detached.length > 0) {
        let d: Version | undefined = detached.pop();
        for (; d !== undefined && budget > 0; d = d.prev, budget--) {
          this.#historyBytes -= versionBytes(d);
          this.#historyCount--;
        }
        if (d !== undefined) detached.push(d);
      }
      if (budget === 0 || this.#compactPending === 0) break;
      const size = this.#log.size;
      if (this.#free(this.#compactPending, budget)) {
        this.#compactPending = 0;
        this.#compactDone.clear();
      }
      budget -= size - this.#log.size;
    }
    invariant(this.#historyCount >= 0, () => `history count below 0`);
    return !this.compactPending;
  }

  /**
   * Frees what a compaction at `revision` left unreachable, for the keys of the next
   * `versionsMax` versions of the log up to it: every version older than the key's version at
   * `revision`, and that one too when it is a tombstone (a key deleted then has nothing to show
   * at `revision` or later). O(versions freed + the keys' versions after `revision`).
   */
  #free(revision: number, versionsMax: number): boolean {
    const done = this.#compactDone;
    return this.#log.dropThrough(revision, versionsMax, (written) => {
      const key = written.key;
      if (done.has(key)) return;
      done.add(key);
      const head = this.#map.get(key) ?? this.#dead.get(key);
      invariant(head !== undefined, () => `key ${quote(key)} in the history has no head`);
      let above: Version | undefined;
      let at: Version | undefined = head;
      while (at !== undefined && at.modRevision > revision) {
        above = at;
        at = at.prev;
      }
      let drop = at;
      if (at !== undefined && at.version !== 0) {
        drop = at.prev;
        at.prev = undefined;
      } else if (above !== undefined) above.prev = undefined;
      else this.#dead.delete(key);
      // Unreachable now; its bytes come off the count in later steps.
      if (drop !== undefined) this.#detached.push(drop);
    });
  }

  #range(range: KeyRange, spec: RangeSpec, budget?: ResponseBudget): Mutable<RangeResponse> {
    const count = this.#count(range);
    if (spec.countOnly) {
      return { type: "range", revision: this.#revision, kvs: [], more: false, count };
    }
    if (sortsOrFilters(spec)) return this.#sortFilter(this.#scan(range), count, spec, budget);
    const { limit, keysOnly } = spec;
    const kvsMax = limit > 0 && limit < this.rangeKvsMax ? limit : this.rangeKvsMax;
    const kvs: KeyValue[] = [];
    for (const [key, stored] of this.#scan(range)) {
      if (kvs.length >= kvsMax || budget?.exceeded) break;
      if (!this.#pick(kvs, key, stored, keysOnly, budget)) break;
    }
    return { type: "range", revision: this.#revision, kvs, more: count > kvs.length, count };
  }

  /**
   * Adds `key` at `v` to a range's `kvs`: copied at once without a budget; with one, charged to it
   * and copied by {@linkcode MetadataStore.#copyPicked} later. False when the budget ran out.
   */
  #pick(
    kvs: KeyValue[],
    key: string,
    v: Versioned,
    keysOnly: boolean,
    budget: ResponseBudget | undefined,
  ): boolean {
    if (budget === undefined) {
      kvs.push(this.#exportRead(key, v, keysOnly));
      return true;
    }
    budget.bytesLeft -= kvResponseBytes(key, keysOnly ? 0 : v.value.length);
    if (budget.bytesLeft < 0) {
      budget.exceeded = true;
      return false;
    }
    // Each range answers in a list of its own: its first pick enrols it.
    if (kvs.length === 0) budget.lists.push(kvs);
    const picked: Picked = { key, v, keysOnly };
    kvs.push(picked as unknown as KeyValue);
    return true;
  }

  /** Copies what `budget`'s ranges picked into their answers, unless the answer is over it. */
  #copyPicked(budget: ResponseBudget): void {
    if (!budget.exceeded) {
      for (const kvs of budget.lists) {
        for (let i = 0; i < kvs.length; i++) {
          const p = kvs[i] as unknown as Picked;
          kvs[i] = this.#exportRead(p.key, p.v, p.keysOnly, budget.shareValues);
        }
      }
    }
    budget.lists.length = 0;
  }

  /** `v` as a {@linkcode KeyValue} for a range: a copy of its value, none when `keysOnly`. */
  #exportRead(key: string, v: Versioned, keysOnly: boolean, share = false): KeyValue {
    if (!keysOnly && !share) this.#rangeValueBytesCopied += v.value.length;
    const kv: KeyValue = {
      key,
      // etcd's keys_only drops only the value: revisions, version and lease stay. A shared value
      // is safe to hand out for reading: a write replaces a key's value array, never changes one.
      value: keysOnly ? EMPTY : share ? v.value : this.#copier.copy(v.value),
      createRevision: v.createRevision,
      modRevision: v.modRevision,
      version: v.version,
    };
    return v.lease ? { ...kv, lease: v.lease } : kv;
  }

  /**
   * A range that sorts or filters, as etcd's Range: every key of the range is read, the revision
   * filters drop key-values (`count` stays the unfiltered count), the rest is sorted (ties keep
   * key order), and only then does the limit cut, with `more` when it left some out. One quirk
   * of etcd kept: a target other than KEY with order NONE (no filter) sorts ascending only the
   * first limit + 1 keys in key order, not the whole range.
   */
  #sortFilter(
    entries: Iterable<readonly [string, Versioned]>,
    count: number,
    spec: RangeSpec,
    budget?: ResponseBudget,
  ): Mutable<RangeResponse> {
    const minMod = spec.minModRevision ?? 0;
    const maxMod = spec.maxModRevision ?? 0;
    const minCreate = spec.minCreateRevision ?? 0;
    const maxCreate = spec.maxCreateRevision ?? 0;
    const kept: (readonly [string, Versioned])[] = [];
    const { limit, keysOnly } = spec;
    const whole = (spec.sortOrder ?? "none") !== "none" || minMod !== 0 || maxMod !== 0 ||
      minCreate !== 0 || maxCreate !== 0;
    const readMax = whole || limit === 0 ? Infinity : limit + 1;
    for (const entry of entries) {
      if (kept.length >= readMax) break;
      const v = entry[1];
      if (maxMod !== 0 && v.modRevision > maxMod) continue;
      if (minMod !== 0 && v.modRevision < minMod) continue;
      if (maxCreate !== 0 && v.createRevision > maxCreate) continue;
      if (minCreate !== 0 && v.createRevision < minCreate) continue;
      kept.push([entry[0], v]);
    }
    const target = spec.sortTarget ?? "key";
    let order = spec.sortOrder ?? "none";
    if (target !== "key" && order === "none") order = "ascend";
    if (order === "descend" || target !== "key") {
      const sign = order === "descend" ? -1 : 1;
      // Array.prototype.sort is stable, so equal targets stay in key order.
      kept.sort(
        target === "key"
          ? (a, b) => sign * compareKeys(a[0], b[0])
          : target === "value"
          ? (a, b) => sign * compareBytes(a[1].value, b[1].value)
          : (a, b) => sign * (a[1][target] - b[1][target]),
      );
    }
    const kvsMax = limit > 0 && limit < this.rangeKvsMax ? limit : this.rangeKvsMax;
    const kvs: KeyValue[] = [];
    for (const [key, v] of kept) {
      if (kvs.length >= kvsMax) break;
      if (!this.#pick(kvs, key, v, keysOnly, budget)) break;
    }
    return { type: "range", revision: this.#revision, kvs, more: kept.length > kvs.length, count };
  }

  /**
   * `#range` at an older `revision`, the cheaper of two ways: walk every key of the range (with a
   * current version or a kept tombstone), each read at `revision` through its chain, in
   * O(keys in the range + their versions after `revision`); or start from the current keys and
   * undo the writes made after `revision` (found in the log), in O(those writes + log n + limit).
   */
  #rangeAt(
    revision: number,
    range: KeyRange,
    spec: RangeSpec,
    budget?: ResponseBudget,
  ): Mutable<RangeResponse> {
    if (revision > this.#revision) {
      throw new RevisionUnavailableError(FUTURE_REVISION_ERROR, revision);
    }
    // etcd serves the compact revision itself.
    if (revision < this.#compactRevision) {
      throw new RevisionUnavailableError(COMPACTED_ERROR, revision);
    }
    const writesAfter = this.#log.size - this.#log.indexOf(revision + 1);
    if (writesAfter < this.#count(range) + this.#countIn(this.#dead, range)) {
      return this.#rangeUndoing(revision, range, spec, budget);
    }
    if (spec.countOnly) {
      let count = 0;
      for (const _ of this.#scanAt(revision, range)) count++;
      return { type: "range", revision: this.#revision, kvs: [], more: false, count };
    }
    if (sortsOrFilters(spec)) {
      const all = [...this.#scanAt(revision, range)];
      return this.#sortFilter(all, all.length, spec, budget);
    }
    const { limit, keysOnly } = spec;
    const kvsMax = limit > 0 && limit < this.rangeKvsMax ? limit : this.rangeKvsMax;
    const kvs: KeyValue[] = [];
    let count = 0;
    for (const [key, v] of this.#scanAt(revision, range)) {
      count++;
      if (kvs.length >= kvsMax || budget?.exceeded) continue;
      if (!this.#pick(kvs, key, v, keysOnly, budget)) continue;
    }
    return { type: "range", revision: this.#revision, kvs, more: count > kvs.length, count };
  }

  /**
   * `#rangeAt` from the current keys: each key written after `revision` reads as the previous
   * version of its first write after it (none when that write created the key).
   */
  #rangeUndoing(
    revision: number,
    range: KeyRange,
    spec: RangeSpec,
    budget?: ResponseBudget,
  ): Mutable<RangeResponse> {
    const then = new Map<string, Version | undefined>();
    const log = this.#log;
    for (let i = log.indexOf(revision + 1); i < log.size; i++) {
      const v = log.at(i);
      if (then.has(v.key) || !inRange(v.key, range)) continue;
      const p = v.prev;
      invariant(p === undefined || p.modRevision <= revision, () => `chain of ${quote(v.key)}`);
      then.set(v.key, p === undefined || p.version === 0 ? undefined : p);
    }
    let count = this.#count(range);
    const olds: Version[] = [];
    for (const [key, v] of then) {
      if (this.#map.has(key)) count--;
      if (v !== undefined) {
        count++;
        olds.push(v);
      }
    }
    if (spec.countOnly) {
      return { type: "range", revision: this.#revision, kvs: [], more: false, count };
    }
    olds.sort((a, b) => compareKeys(a.key, b.key));
    const merged = this.#mergeAt(range, then, olds);
    if (sortsOrFilters(spec)) return this.#sortFilter(merged, count, spec, budget);
    const { limit, keysOnly } = spec;
    const kvsMax = limit > 0 && limit < this.rangeKvsMax ? limit : this.rangeKvsMax;
    const kvs: KeyValue[] = [];
    for (const [key, v] of merged) {
      if (kvs.length >= kvsMax || budget?.exceeded) break;
      if (!this.#pick(kvs, key, v, keysOnly, budget)) break;
    }
    return { type: "range", revision: this.#revision, kvs, more: count > kvs.length, count };
  }

  /**
   * The keys of `range` as they were: the current ones not in `then` (written since), merged in
   * key order with `olds` (their versions then, sorted).
   */
  *#mergeAt(
    range: KeyRange,
    then: ReadonlyMap<string, Version | undefined>,
    olds: readonly Version[],
  ): Generator<readonly [string, Version]> {
    let i = 0;
    for (const [key, stored] of this.#scan(range)) {
      while (i < olds.length && compareKeys(olds[i].key, key) < 0) {
        yield [olds[i].key, olds[i]];
        i++;
      }
      if (!then.has(key)) yield [key, stored];
    }
    for (; i < olds.length; i++) yield [olds[i].key, olds[i]];
  }

  /** The keys of `range` that had a version at `revision`, with it, in key order. */
  *#scanAt(revision: number, range: KeyRange): Generator<[string, Version]> {
    const live = this.#scanIn(this.#map, range);
    const dead = this.#dead.size === 0 ? undefined : this.#scanIn(this.#dead, range);
    let a = live.next();
    let b = dead?.next();
    while (!a.done || (b !== undefined && !b.done)) {
      let head: Version;
      if (b === undefined || b.done || (!a.done && compareKeys(a.value[0], b.value[0]) < 0)) {
        head = a.value![1];
        a = live.next();
      } else {
        head = b.value[1];
        b = dead!.next();
      }
      let v: Version | undefined = head;
      while (v !== undefined && v.modRevision > revision) v = v.prev;
      if (v !== undefined && v.version !== 0) yield [v.key, v];
    }
  }

  /** Entries of `range` in key order. */
  #scan(range: KeyRange): Generator<[string, Stored]> {
    return this.#scanIn(this.#map, range);
  }

  /** Entries of `map` in `range`, in key order. */
  *#scanIn(map: SortedMap<Version>, range: KeyRange): Generator<[string, Version]> {
    if ("prefix" in range) {
      const prefix = range.prefix;
      for (const entry of map.entries(prefix)) {
        if (!entry[0].startsWith(prefix)) return;
        yield entry;
      }
    } else if ("fromKey" in range) {
      yield* map.entries(range.fromKey);
    } else if (range.rangeEnd === undefined) {
      const stored = map.get(range.key);
      if (stored !== undefined) yield [range.key, stored];
    } else {
      yield* map.entries(range.key, range.rangeEnd);
    }
  }

  /** Number of keys in `range`, in O(log n). */
  #count(range: KeyRange): number {
    return this.#countIn(this.#map, range);
  }

  /** Number of keys of `map` in `range`, in O(log n). */
  #countIn(map: SortedMap<Version>, range: KeyRange): number {
    if ("prefix" in range) {
      const p = range.prefix;
      if (p === "") return map.size;
      return map.countWhile((k) => k.startsWith(p) || compareKeys(k, p) < 0) - map.rank(p);
    }
    if ("fromKey" in range) return map.size - map.rank(range.fromKey);
    if (range.rangeEnd === undefined) return map.has(range.key) ? 1 : 0;
    return Math.max(0, map.rank(range.rangeEnd) - map.rank(range.key));
  }

  /**
   * Evaluates one compare as etcd's `applyCompare` does: over a range, it must hold for every key
   * in it; a range with no key reads as one missing key.
   */
  #compare(c: Compare): boolean {
    if (c.rangeEnd === undefined) return this.#holds(c, this.#map.get(c.key));
    // etcd's range end "\0": every key >= key.
    const range: KeyRange = c.rangeEnd === "\u0000"
      ? { fromKey: c.key }
      : { key: c.key, rangeEnd: c.rangeEnd };
    let any = false;
    for (const [, stored] of this.#scan(range)) {
      if (!this.#holds(c, stored)) return false;
      any = true;
    }
    return any || this.#holds(c, undefined);
  }

  /** Whether compare `c` holds for `stored` (undefined: a missing key). */
  #holds(c: Compare, stored: Stored | undefined): boolean {
    let order: number;
    if (c.target === "value") {
      // etcd: a value compare on a missing key always fails, even notEqual.
      if (stored === undefined) return false;
      order = compareBytes(stored.value, c.value);
    } else {
      const actual = stored === undefined ? 0 : stored[c.target];
      order = actual - c.value;
    }
    switch (c.result) {
      case "equal":
        return order === 0;
      case "notEqual":
        return order !== 0;
      case "greater":
        return order > 0;
      case "less":
        return order < 0;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Reads (local: the caller decides whether the node may serve them, e.g. after ReadIndex).

  /** The key-value under `key`, or `undefined`. */
  get(key: string): KeyValue | undefined {
    validateKey(key);
    const stored = this.#map.get(key);
    return stored === undefined ? undefined : this.#export(key, stored);
  }

  /** The value under `key` as text (malformed UTF-8 shown as U+FFFD), or `undefined`. */
  getString(key: string): string | undefined {
    validateKey(key);
    const stored = this.#map.get(key);
    return stored === undefined ? undefined : text(stored.value);
  }

  /**
   * The keys of `range` in key order, with etcd's `count` (all keys in the range) and `more`
   * (some were left out by the limit). Throws {@linkcode CommandError} on a malformed range.
   *
   * @example
   * ```ts
   * import { MetadataStore } from "./store.ts";
   * import { encodePut } from "./command.ts";
   * const store = new MetadataStore();
   * store.apply(encodePut("/svc/a", "1"), 1);
   * store.apply(encodePut("/svc/b", "2"), 2);
   * const { kvs, more, count } = store.range({ prefix: "/svc/" }, { limit: 1 });
   * if (kvs[0].key !== "/svc/a" || !more || count !== 2) throw new Error();
   * ```
   */
  range(range: KeyRange, options: RangeOptions = {}): RangeResponse {
    validateRange(range);
    if (options.sortOrder !== undefined || options.sortTarget !== undefined) {
      // The command validator knows the names; a range command carries the same options.
      validateCommand({
        type: "range",
        range,
        limit: 0,
        keysOnly: false,
        countOnly: false,
        sortOrder: options.sortOrder,
        sortTarget: options.sortTarget,
      });
    }
    for (
      const f of [
        "minModRevision",
        "maxModRevision",
        "minCreateRevision",
        "maxCreateRevision",
      ] as const
    ) {
      const v = options[f] ?? 0;
      if (!Number.isSafeInteger(v)) throw new CommandError(`${f} must be a safe integer: ${v}`);
    }
    const limit = options.limit ?? 0;
    if (!Number.isSafeInteger(limit) || limit < 0) {
      throw new CommandError(`Limit must be a non-negative integer: ${limit}`);
    }
    const budget = options.responseBytesMax === undefined
      ? undefined
      : responseBudget(options.responseBytesMax, options.shareValues === true);
    const revision = options.revision ?? 0;
    if (!Number.isSafeInteger(revision) || revision < 0) {
      throw new CommandError(`Revision must be a non-negative integer: ${revision}`);
    }
    const spec: RangeSpec = {
      ...options,
      limit,
      keysOnly: options.keysOnly ?? false,
      countOnly: options.countOnly ?? false,
    };
    const r = revision === 0 || revision === this.#revision
      ? this.#range(range, spec, budget)
      : this.#rangeAt(revision, range, spec, budget);
    if (budget !== undefined) this.#copyPicked(budget);
    if (budget?.exceeded) throw new ResponseTooLargeError(options.responseBytesMax!);
    return r;
  }

  /**
   * Evaluates a read-only transaction (ranges only, in both lists) here, without the log and
   * without changing anything, as etcd serves one on its read path: the caller decides whether
   * the node may answer (ReadIndex, or serializable). Throws {@linkcode CommandError} for a
   * transaction that writes or breaks a limit, {@linkcode ResponseTooLargeError} past
   * `responseBytesMax` bytes of key-values over all its ranges.
   */
  txnRead(
    txn: TxnCommand,
    options: { readonly responseBytesMax?: number; readonly shareValues?: boolean } = {},
  ): TxnResponse {
    validateCommand(txn);
    const error = commandLimitError(txn, 0, this.limits);
    if (error !== undefined) throw new CommandError(error);
    if (!txnReadOnly(txn)) throw new CommandError(`A read-only txn cannot write`);
    const budget = responseBudget(options.responseBytesMax ?? Infinity, options.shareValues);
    const r = this.#runTxn(txn, this.#decide(txn), this.#revision + 1, [], budget);
    this.#copyPicked(budget);
    if (budget.exceeded) throw new ResponseTooLargeError(options.responseBytesMax!);
    return { ...r, revision: this.#revision };
  }

  /** Every key-value of `range` (all keys when omitted) in key order, unbounded. */
  *entries(range: KeyRange = { prefix: "" }): IterableIterator<KeyValue> {
    validateRange(range);
    for (const [key, stored] of this.#scan(range)) yield this.#export(key, stored);
  }

  /** What the store remembers of `clientId`, or `undefined`. */
  session(clientId: ClientId): SessionInfo | undefined {
    const s = this.#sessions.get(sessionKey(clientId));
    return s === undefined ? undefined : { ...s };
  }

  /** A bounded summary for node tables: counters and the first `kvsMax` keys as text. */
  view(options: { kvsMax?: number } = {}): StoreView {
    const kvsMax = options.kvsMax ?? 100;
    const kvs: Record<string, string> = {};
    let n = 0;
    for (const [key, stored] of this.#map.entries()) {
      if (n++ >= kvsMax) break;
      kvs[key] = text(stored.value);
    }
    return {
      appliedIndex: this.#appliedIndex,
      revision: this.#revision,
      keys: this.#map.size,
      sessions: this.#sessions.size,
      kvs,
      more: this.#map.size > kvsMax,
    };
  }

  /** The {@linkcode view} with defaults, so `JSON.stringify(store)` prints a summary. */
  toJSON(): StoreView {
    return this.view();
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots.

  /** The whole state (keys, revision, applied index, sessions) as JSON-safe data. */
  snapshot(): StoreSnapshot {
    const kvs: [string, string, number, number, number, number?][] = [];
    for (const [key, s] of this.#map.entries()) {
      const row: [string, string, number, number, number, number?] = [
        key,
        toBase64(s.value),
        s.createRevision,
        s.modRevision,
        s.version,
      ];
      if (s.lease !== 0) row.push(s.lease);
      kvs.push(row);
    }
    const sessions = [...this.#sessions.values()].map((s) => ({
      clientId: s.clientId,
      lastSeq: s.lastSeq,
      lastIndex: s.lastIndex,
      outcome: toJsonSafe(s.outcome),
    }));
    return {
      format: 1,
      appliedIndex: this.#appliedIndex,
      revision: this.#revision,
      kvs,
      leases: [...this.#leases.values()].map((l) => [l.id, l.ttlMs] as const),
      leaseIdLast: this.#leaseIdLast,
      ...(this.auth.authRevision === 0 ? {} : { auth: this.auth.snapshot() }),
      sessions,
    };
  }

  /**
   * The store's state now, kept apart from later applies: O(1) for the keys (copy-on-write) and
   * bounded work for sessions, leases and watch history. For snapshots taken bit by bit (see
   * `encodeStoreSnapshotChunks`); {@linkcode FrozenStore.release} it when done.
   */
  freeze(): FrozenStore {
    return new FrozenStore(
      {
        appliedIndex: this.#appliedIndex,
        revision: this.#revision,
        leaseIdLast: this.#leaseIdLast,
        leases: [...this.#leases.values()].map((l) => [l.id, l.ttlMs] as const),
        sessions: [...this.#sessions.values()].map((s) => ({ ...s })),
        compactRevision: this.#compactRevision,
        alarms: this.alarms,
        auth: this.auth.snapshot(),
      },
      this.#map.freeze(),
      this.#log.view(),
    );
  }

  /**
   * Rebuilds the history from a snapshot's (see {@linkcode StoreParts.history}) over the current
   * `versions` (of `keys`): the log, each key's chain, the tombstones of deleted keys, the bytes.
   */
  #restoreHistory(
    history: StoreParts["history"],
    keys: readonly string[],
    versions: Version[],
    fail: (why: string) => never,
  ): void {
    const revision = this.#revision;
    if (history === undefined) {
      // Without history in the snapshot (format 1), history starts at the snapshot's revision.
      this.#compactRevision = revision;
      return;
    }
    const c = history.compactRevision;
    if (!Number.isSafeInteger(c) || c < 0 || c > revision) {
      fail(`history: compact revision ${c} at revision ${revision}`);
    }
    this.#compactRevision = c;
    const items = history.versions ?? itemsOfRevisions(history.revisions ?? [], fail);
    const current = new Map<string, Version>();
    for (let i = 0; i < keys.length; i++) {
      if (versions[i].modRevision > c) current.set(keys[i], versions[i]);
    }
    const last = new Map<string, Version>();
    let lastRevision = c;
    for (const { base, version: x } of items) {
      const key = x.key;
      const prev = last.get(key);
      const tomb = x.version === 0;
      if (
        !Number.isSafeInteger(x.modRevision) || x.modRevision > revision ||
        (base ? x.modRevision > c || tomb || prev !== undefined : x.modRevision <= c) ||
        (!base && x.modRevision < lastRevision) ||
        (tomb && (x.createRevision !== 0 || x.value.length !== 0 || prev?.version === 0)) ||
        !(x.value instanceof Uint8Array)
      ) {
        fail(`history: version of ${quote(key)} at revision ${x.modRevision}`);
      }
      if (!base) lastRevision = x.modRevision;
      const now = current.get(key);
      let v: Version;
      if (now !== undefined && now.modRevision === x.modRevision && !tomb) {
        current.delete(key);
        v = now;
      } else {
        v = {
          key,
          value: x.value,
          createRevision: x.createRevision,
          modRevision: x.modRevision,
          version: x.version,
          lease: x.lease,
          prev: undefined,
        };
        this.#historyBytes += versionBytes(v);
        this.#historyCount++;
      }
      v.prev = prev;
      last.set(key, v);
      if (!base) this.#log.push(v);
    }
    if (current.size > 0) {
      fail(`history: no version of ${quote(current.keys().next().value!)} after ${c}`);
    }
    const dead: string[] = [];
    for (const [key, v] of last) {
      if (this.#map.get(key) === v) continue;
      if (v.version !== 0) fail(`history: ${quote(key)} ends with a version not current`);
      dead.push(key);
    }
    dead.sort(compareKeys);
    this.#dead = SortedMap.fromSorted(dead, dead.map((k) => last.get(k)!), { ordered: true });
  }

  /**
   * A store restored from `snapshot`, exactly: it applies the following entries as the original
   * would. Throws when the snapshot is malformed or inconsistent.
   */
  static fromSnapshot(snapshot: StoreSnapshot, options: MetadataStoreOptions = {}): MetadataStore {
    if (snapshot?.format !== 1) {
      throw new Error(`Snapshot is invalid: unknown format ${quote(String(snapshot?.format))}`);
    }
    const keys: string[] = [];
    const records: KvRecord[] = [];
    for (const entry of snapshot.kvs ?? []) {
      const [key, value, createRevision, modRevision, version] = entry;
      keys.push(key);
      records.push({
        value: fromBase64(value),
        createRevision,
        modRevision,
        version,
        lease: entry[5] ?? 0,
      });
    }
    return MetadataStore.restore({
      appliedIndex: snapshot.appliedIndex,
      revision: snapshot.revision,
      leases: snapshot.leases ?? [],
      leaseIdLast: snapshot.leaseIdLast ?? 0,
      keys,
      records,
      sessions: snapshot.sessions ?? [],
      auth: snapshot.auth,
    }, options);
  }

  /**
   * A store made of `parts` (what a snapshot decoder read), exactly: it applies the following
   * entries as the original would. Checks every part and throws `Snapshot is invalid: ...` when
   * one is malformed or inconsistent. The records (and their values) become the store's own:
   * do not use them afterwards.
   */
  static restore(parts: StoreParts, options: MetadataStoreOptions = {}): MetadataStore {
    const fail = (why: string): never => {
      throw new Error(`Snapshot is invalid: ${why}`);
    };
    const isCount = (v: unknown, min: number) => Number.isSafeInteger(v) && (v as number) >= min;
    const { appliedIndex, revision, keys, records } = parts;
    if (!isCount(appliedIndex, 0)) fail(`appliedIndex ${appliedIndex}`);
    if (!isCount(revision, 1)) fail(`revision ${revision}`);
    if (keys.length !== records.length) fail(`${keys.length} keys but ${records.length} records`);
    const store = new MetadataStore(options);
    const versions: Version[] = new Array(keys.length);
    store.#appliedIndex = appliedIndex;
    store.#revision = revision;
    for (const [id, ttlMs] of parts.leases) {
      if (!isCount(id, 1) || id > LEASE_ID_MAX || !isCount(ttlMs, 1) || store.#leases.has(id)) {
        fail(`lease ${id}`);
      }
      store.#leases.set(id, { id, ttlMs, keys: new Set() });
    }
    store.#leaseIdLast = parts.leaseIdLast;
    if (!isCount(store.#leaseIdLast, 0) || store.#leaseIdLast > LEASE_ID_MAX) {
      fail(`leaseIdLast ${parts.leaseIdLast}`);
    }
    let previous: string | undefined;
    let previousNative = false;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      const r = records[i];
      try {
        validateKey(key);
      } catch (e) {
        fail((e as Error).message);
      }
      const native = isNativeOrdered(key);
      if (
        previous !== undefined &&
        !(native && previousNative ? previous < key : compareKeys(previous, key) < 0)
      ) {
        fail(`keys out of order at ${quote(key)}`);
      }
      previous = key;
      previousNative = native;
      const { createRevision, modRevision, version, lease } = r;
      if (
        !isCount(createRevision, 2) || !isCount(modRevision, createRevision) ||
        modRevision > revision || !isCount(version, 1)
      ) {
        fail(`revisions of ${quote(key)}: ${createRevision}, ${modRevision}, version ${version}`);
      }
      if (!(r.value instanceof Uint8Array)) fail(`value of ${quote(key)} is not bytes`);
      store.#liveBytes += key.length + r.value.length;
      versions[i] = {
        key,
        value: r.value,
        createRevision,
        modRevision,
        version,
        lease,
        prev: undefined,
      };
      if (lease !== 0) {
        const l = store.#leases.get(lease);
        if (l === undefined) fail(`key ${quote(key)} has unknown lease ${lease}`);
        l!.keys.add(key);
      }
    }
    store.#map = SortedMap.fromSorted(keys, versions, { ordered: true });
    store.#restoreHistory(parts.history, keys, versions, fail);
    if (revision - Math.max(store.#compactRevision, 1) > store.#historyRevisionsMax) {
      store.#compact(revision - store.#historyRevisionsMax);
    }
    let lastIndex = 0;
    for (const s of parts.sessions) {
      if (
        !isCount(s.lastSeq, 1) || !isCount(s.lastIndex, lastIndex) || s.lastIndex > appliedIndex
      ) {
        fail(`session of client ${quote(String(s.clientId))}`);
      }
      lastIndex = s.lastIndex;
      const key = sessionKey(s.clientId);
      if (store.#sessions.has(key)) fail(`client ${quote(String(s.clientId))} appears twice`);
      store.#sessions.set(key, {
        clientId: s.clientId,
        lastSeq: s.lastSeq,
        lastIndex: s.lastIndex,
        outcome: fromJsonSafe(s.outcome) as SessionOutcome,
      });
    }
    for (const a of parts.alarms ?? []) {
      if (typeof a?.memberId !== "string" || a.memberId === "" || a.alarm !== "NOSPACE") {
        fail(`alarm ${JSON.stringify(a)}`);
      }
      store.#alarms.set(a.memberId, a.alarm);
    }
    if (parts.auth !== undefined) {
      try {
        store.auth.restore(parts.auth);
      } catch (e) {
        fail(`auth: ${(e as Error).message}`);
      }
    }
    return store;
  }
}

/**
 * `value` with every Uint8Array replaced by `{"$base64": ...}`, so JSON can carry it (how
 * snapshots hold session outcomes).
 */
export function toJsonSafe(value: unknown): JsonValue {
  if (value instanceof Uint8Array) return { $base64: toBase64(value) };
  if (Array.isArray(value)) return value.map(toJsonSafe);
  if (typeof value === "object" && value !== null) {
    const out: Record<string, JsonValue> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = toJsonSafe(v);
    return out;
  }
  return value as JsonValue;
}

/** The inverse of {@linkcode toJsonSafe}. */
export function fromJsonSafe(value: JsonValue): unknown {
  if (Array.isArray(value)) return value.map(fromJsonSafe);
  if (typeof value === "object" && value !== null) {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$base64" && typeof value.$base64 === "string") {
      return fromBase64(value.$base64);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = fromJsonSafe(v);
    return out;
  }
  return value;
}

/** History items (see {@linkcode HistoryItem}) of events as snapshots of format 2 and 3 held them. */
function itemsOfRevisions(
  revisions: readonly RevisionEvents[],
  fail: (why: string) => never,
): HistoryItem[] {
  const items: HistoryItem[] = [];
  const seen = new Set<string>();
  let last = 0;
  for (const r of revisions) {
    if (!(r?.revision > last) || !Array.isArray(r.events) || r.events.length === 0) {
      fail(`watch history: revision ${r?.revision} after ${last}`);
    }
    last = r.revision;
    for (const e of r.events) {
      const key = e.kv.key;
      if (!seen.has(key) && e.prevKv !== undefined) {
        items.push({ base: true, version: { lease: 0, ...e.prevKv, key } });
      }
      seen.add(key);
      items.push({
        base: false,
        version: e.type === "DELETE"
          ? { key, value: EMPTY, createRevision: 0, modRevision: r.revision, version: 0, lease: 0 }
          : { lease: 0, ...e.kv, key },
      });
    }
  }
  return items;
}

/** Whether `key` lies in `range` (the order of {@linkcode compareKeys}, as the map's). */
function inRange(key: string, range: KeyRange): boolean {
  if ("prefix" in range) return key.startsWith(range.prefix);
  if ("fromKey" in range) return compareKeys(key, range.fromKey) >= 0;
  if (range.rangeEnd === undefined) return key === range.key;
  return compareKeys(key, range.key) >= 0 && compareKeys(key, range.rangeEnd) < 0;
}
