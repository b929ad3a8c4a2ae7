/**
 * The vocabulary of the metadata store: key-values with etcd's revisions, key ranges, compares,
 * commands, responses and the limits that bound them. Nothing here has behaviour.
 *
 * @module
 */

/**
 * One key and its value at the store's current revision, as etcd's `mvccpb.KeyValue`.
 * Treat it as read-only; the store hands out copies of its values.
 */
export interface KeyValue {
  /** The key, e.g. `"/services/db/primary"`. */
  readonly key: string;
  /** The value's bytes (empty for keys-only reads and for the `kv` of a DELETE event). */
  readonly value: Uint8Array;
  /** Revision of the write that created the key (since its last delete). */
  readonly createRevision: number;
  /** Revision of the last write to the key. */
  readonly modRevision: number;
  /** Number of puts since the key was created: 1 on create, +1 per put, gone on delete. */
  readonly version: number;
  /** Lease the key is attached to; absent when none. The key is deleted when the lease ends. */
  readonly lease?: number;
}

/**
 * Which keys an operation covers, in UTF-8 byte order of keys:
 * - `{ key }`: that one key;
 * - `{ key, rangeEnd }`: keys in [key, rangeEnd) (empty when rangeEnd <= key);
 * - `{ prefix }`: keys starting with prefix (`""` means every key);
 * - `{ fromKey }`: keys >= fromKey (etcd's range end `"\0"`).
 */
export type KeyRange =
  | { readonly key: string; readonly rangeEnd?: string }
  | { readonly prefix: string }
  | { readonly fromKey: string };

/** The relation a compare checks, `stored <relation> given`. */
export type CompareResult = "equal" | "notEqual" | "greater" | "less";

/** The field of a key a compare reads. */
export type CompareTarget = "value" | "version" | "createRevision" | "modRevision" | "lease";

/**
 * One condition of a transaction, as etcd's `Compare`. On a key that does not exist, `version`,
 * `createRevision`, `modRevision` and `lease` read as 0, and every `value` compare fails (even
 * `notEqual`), exactly as in etcd. With `rangeEnd`, the compare covers the keys in
 * [key, rangeEnd) — `"\u0000"` means every key >= key, as etcd's range end `"\0"` — and holds
 * only if it holds for each of them; with no key in the range it reads the missing key's zeros.
 */
export type Compare =
  | {
    readonly key: string;
    readonly rangeEnd?: string;
    readonly target: "value";
    readonly result: CompareResult;
    readonly value: Uint8Array;
  }
  | {
    readonly key: string;
    readonly rangeEnd?: string;
    readonly target: "version" | "createRevision" | "modRevision" | "lease";
    readonly result: CompareResult;
    readonly value: number;
  };

/** Store `value` under `key`; with `prevKv`, the response carries the key-value it replaced. */
export interface PutCommand {
  /** Discriminant. */
  readonly type: "put";
  /** Key to write. */
  readonly key: string;
  /** New value. */
  readonly value: Uint8Array;
  /** Return the previous key-value in the response. */
  readonly prevKv: boolean;
  /**
   * Attach the key to this lease (it must exist); omitted or 0 detaches the key from any lease,
   * as in etcd.
   */
  readonly lease?: number;
}

/** Delete the keys of `range`; with `prevKv`, the response carries what was deleted. */
export interface DeleteCommand {
  /** Discriminant. */
  readonly type: "delete";
  /** Keys to delete. */
  readonly range: KeyRange;
  /** Return the deleted key-values in the response. */
  readonly prevKv: boolean;
}

/** The field a range sorts its key-values by (etcd's `SortTarget`). */
export type SortTarget = "key" | "version" | "createRevision" | "modRevision" | "value";

/** The order a range sorts in (etcd's `SortOrder`); `"none"` is key order. */
export type SortOrder = "none" | "ascend" | "descend";

/** Read the keys of `range` (inside a transaction, or through the log as a read). */
export interface RangeCommand {
  /** Discriminant. */
  readonly type: "range";
  /** Keys to read. */
  readonly range: KeyRange;
  /** Most key-values to return; 0 means no limit beyond the store's `rangeKvsMax`. */
  readonly limit: number;
  /** Return keys with empty values. */
  readonly keysOnly: boolean;
  /** Return only the count, no key-values. */
  readonly countOnly: boolean;
  /**
   * Sort order; omitted is `"none"`. As etcd, a `sortTarget` other than `"key"` with order
   * `"none"` sorts ascending, and when sorting the limit applies after sorting the whole range.
   */
  readonly sortOrder?: SortOrder;
  /** What to sort by; omitted is `"key"`. Ties keep key order. */
  readonly sortTarget?: SortTarget;
  /** Leave out key-values modified before this revision (0: no bound). `count` is unfiltered. */
  readonly minModRevision?: number;
  /** Leave out key-values modified after this revision (0: no bound). */
  readonly maxModRevision?: number;
  /** Leave out key-values created before this revision (0: no bound). */
  readonly minCreateRevision?: number;
  /** Leave out key-values created after this revision (0: no bound). */
  readonly maxCreateRevision?: number;
}

/**
 * An operation inside a transaction's `success` or `failure` list; a nested transaction's
 * compares are evaluated, as etcd's, against the store before the outermost transaction ran.
 */
export type TxnOp = PutCommand | DeleteCommand | RangeCommand | TxnCommand;

/** Most levels of transactions inside transactions (the outermost is level 1). */
export const TXN_DEPTH_MAX = 64;

/**
 * If every compare holds, apply `success`, else `failure`; atomically, at one revision (raised by
 * one when the chosen list changed anything). Operations run in order and later ones see the
 * writes of earlier ones. No two writes of the chosen lists (nested ones included) may touch the
 * same key (etcd's "duplicate key given in txn request"), checked before proposing.
 */
export interface TxnCommand {
  /** Discriminant. */
  readonly type: "txn";
  /** Conditions, all of which must hold for `success` to run. */
  readonly compare: readonly Compare[];
  /** Operations when every compare holds. */
  readonly success: readonly TxnOp[];
  /** Operations otherwise. */
  readonly failure: readonly TxnOp[];
}

/** Who sent a session command: a string (non-empty) or a non-negative integer. */
export type ClientId = string | number;

/**
 * A command wrapped with its client's id and sequence number, so a retry applies once (Raft
 * dissertation §6.3). A client has one write outstanding at a time and numbers them 1, 2, 3, ...
 * (gaps allowed, never backwards).
 */
export interface SessionCommand {
  /** Discriminant. */
  readonly type: "session";
  /** The client. */
  readonly clientId: ClientId;
  /** The client's sequence number for this command, from 1. */
  readonly seq: number;
  /** The wrapped command (never another session). */
  readonly command: PlainCommand;
}

/**
 * Highest lease id: 2^53 - 1, JavaScript's largest safe integer, so an id is exact in a number, a
 * command and a snapshot. etcd's ids are int64; raftmeta refuses larger ones at the edge.
 */
export const LEASE_ID_MAX: number = Number.MAX_SAFE_INTEGER;

/**
 * Grant a lease of `ttlMs`. With `id` 0 the store picks the id: the lowest unused one after the
 * last id it picked (or the highest id granted since), wrapping from {@linkcode LEASE_ID_MAX} to 1.
 * A chosen id must be unused. Keys put with the lease are deleted when it ends.
 */
export interface LeaseGrantCommand {
  /** Discriminant. */
  readonly type: "leaseGrant";
  /** Lease id (1 to {@linkcode LEASE_ID_MAX}), or 0 to let the store choose. */
  readonly id: number;
  /** Time to live in milliseconds, counted by the leader's clock from each keep-alive. */
  readonly ttlMs: number;
}

/**
 * End a lease and delete its keys, at one revision. `expired` marks a revoke the leader's lease
 * manager proposed because the TTL ran out (the state machine never reads a clock).
 */
export interface LeaseRevokeCommand {
  /** Discriminant. */
  readonly type: "leaseRevoke";
  /** Lease id. */
  readonly id: number;
  /** Proposed by the leader on expiry rather than asked for by a client. */
  readonly expired: boolean;
}

/** Forget watch history up to and including `revision` (etcd's Compact), so watches start later. */
export interface CompactCommand {
  /** Discriminant. */
  readonly type: "compact";
  /** Revisions up to this one are dropped from history; at most the store's revision. */
  readonly revision: number;
}

/** The one kind of alarm raftmeta raises: the store reached its quota (etcd's `NOSPACE`). */
export type AlarmType = "NOSPACE";

/**
 * Raise or clear an alarm (etcd's AlarmRequest). While any `NOSPACE` alarm is raised, writes that
 * add data (put, a transaction with a put, lease grant) are refused at apply; reads, deletes and
 * compaction still run. The leader raises it when a write would take the store over its quota.
 */
export interface AlarmCommand {
  /** Discriminant. */
  readonly type: "alarm";
  /** Raise or clear. */
  readonly action: "activate" | "deactivate";
  /** The member that raised it; `""` on deactivate clears the alarm of every member. */
  readonly memberId: string;
  /** Which alarm. */
  readonly alarm: AlarmType;
}

/** One raised alarm. */
export interface AlarmMember {
  /** The member that raised it. */
  readonly memberId: string;
  /** Which alarm. */
  readonly alarm: AlarmType;
}

/** A command without a session envelope. */
export type PlainCommand =
  | PutCommand
  | DeleteCommand
  | RangeCommand
  | TxnCommand
  | LeaseGrantCommand
  | LeaseRevokeCommand
  | CompactCommand
  | AlarmCommand
  | AuthCommand;

/** Everything that can be put in the Raft log for the store. */
export type Command = PlainCommand | SessionCommand;

/** Response to a put. */
export interface PutResponse {
  /** Discriminant. */
  readonly type: "put";
  /** Store revision after the command (inside a transaction: the revision the put wrote). */
  readonly revision: number;
  /** The key-value before the put, when asked for and the key existed. */
  readonly prevKv?: KeyValue;
}

/** Response to a delete. */
export interface DeleteResponse {
  /** Discriminant. */
  readonly type: "delete";
  /**
   * Store revision after the command (inside a transaction, as etcd: the transaction's new
   * revision once it changed anything, else the revision before it).
   */
  readonly revision: number;
  /** Number of keys deleted. */
  readonly deleted: number;
  /** The deleted key-values, when asked for. */
  readonly prevKvs?: readonly KeyValue[];
}

/** Response to a range read. */
export interface RangeResponse {
  /** Discriminant. */
  readonly type: "range";
  /**
   * Store revision the read saw (inside a transaction: the new revision once an earlier
   * operation changed something, else the revision before it).
   */
  readonly revision: number;
  /** Key-values in key order (empty for count-only). */
  readonly kvs: readonly KeyValue[];
  /** Whether keys in the range were left out because of the limit. */
  readonly more: boolean;
  /** Number of keys in the range, regardless of the limit. */
  readonly count: number;
}

/** Response to a transaction. */
export interface TxnResponse {
  /** Discriminant. */
  readonly type: "txn";
  /**
   * Store revision after the command; 0 for a nested transaction, whose header etcd leaves
   * empty.
   */
  readonly revision: number;
  /** Whether every compare held (so `success` ran). */
  readonly succeeded: boolean;
  /** One response per operation of the list that ran, in order. */
  readonly responses: readonly TxnOpResponse[];
  /**
   * Set when its ranges would have gathered more than the store's `applyResponseBytesMax`: the writes
   * applied, and the ranges carry no key-values (the client gets etcd's ResourceExhausted).
   */
  readonly responseTooLarge?: true;
}

/** The response to one operation of a transaction. */
export type TxnOpResponse = PutResponse | DeleteResponse | RangeResponse | TxnResponse;

/** Response to a lease grant. */
export interface LeaseGrantResponse {
  /** Discriminant. */
  readonly type: "leaseGrant";
  /** Store revision after the command (a grant does not raise it). */
  readonly revision: number;
  /** The lease's id. */
  readonly id: number;
  /** Its TTL in milliseconds. */
  readonly ttlMs: number;
}

/** Response to a lease revoke. */
export interface LeaseRevokeResponse {
  /** Discriminant. */
  readonly type: "leaseRevoke";
  /** Store revision after the command. */
  readonly revision: number;
  /** Whether the lease existed (a revoke of an unknown lease changes nothing). */
  readonly found: boolean;
  /** Keys deleted with the lease. */
  readonly deleted: number;
}

/** Response to a compaction. */
export interface CompactResponse {
  /** Discriminant. */
  readonly type: "compact";
  /** Store revision after the command (unchanged). */
  readonly revision: number;
  /** The oldest revision still in the history afterwards. */
  readonly oldestRevision: number;
}

/** Response to an alarm command. */
export interface AlarmResponse {
  /** Discriminant. */
  readonly type: "alarm";
  /** Store revision after the command (unchanged). */
  readonly revision: number;
  /** The alarms raised after the command. */
  readonly alarms: readonly AlarmMember[];
}

/** Response to any command. */
export type CommandResponse =
  | PutResponse
  | DeleteResponse
  | RangeResponse
  | TxnResponse
  | LeaseGrantResponse
  | LeaseRevokeResponse
  | CompactResponse
  | AlarmResponse
  | AuthResponse;

/** A change a write made, for watchers (etcd's `mvccpb.Event`). */
export interface KvEvent {
  /** `"PUT"` for a create or update, `"DELETE"` for a deletion. */
  readonly type: "PUT" | "DELETE";
  /**
   * The key-value after the change; for a DELETE, the key with an empty value, version 0 and
   * `modRevision` the deleting revision.
   */
  readonly kv: KeyValue;
  /** The key-value before the change, when the key existed. */
  readonly prevKv?: KeyValue;
}

/**
 * Bounds on what one command may carry. Defaults follow etcd where it has one
 * (`--max-request-bytes` 1.5 MiB, `--max-txn-ops` 128).
 */
export interface KvLimits {
  /** Most bytes in one encoded command. */
  readonly commandBytesMax: number;
  /** Most UTF-8 bytes in one key (also range ends, prefixes and compare keys). */
  readonly keyBytesMax: number;
  /** Most bytes in one value. */
  readonly valueBytesMax: number;
  /** Most entries in each of a transaction's compare, success and failure lists. */
  readonly txnOpsMax: number;
  /** Most UTF-8 bytes in a string client id. */
  readonly clientIdBytesMax: number;
}

/** The default {@linkcode KvLimits}. */
export const DEFAULT_KV_LIMITS: KvLimits = Object.freeze({
  commandBytesMax: 1.5 * 1024 * 1024,
  keyBytesMax: 4096,
  valueBytesMax: 1.5 * 1024 * 1024,
  txnOpsMax: 128,
  clientIdBytesMax: 128,
});

// ---- Auth (src/kv/auth.ts has the behaviour) ----------------------------------------------------

/** Bounds on the auth state, all explicit (docs/security.md lists them). */
export interface AuthLimits {
  /** Most users. */
  readonly usersMax: number;
  /** Most roles. */
  readonly rolesMax: number;
  /** Most permissions one role holds. */
  readonly permissionsPerRoleMax: number;
  /** Most roles one user holds. */
  readonly rolesPerUserMax: number;
  /** Longest user or role name, in UTF-8 bytes. */
  readonly nameBytesMax: number;
}

/** The defaults of {@linkcode AuthLimits}. */
export const DEFAULT_AUTH_LIMITS: AuthLimits = Object.freeze({
  usersMax: 10_000,
  rolesMax: 10_000,
  permissionsPerRoleMax: 1_000,
  rolesPerUserMax: 100,
  nameBytesMax: 256,
});

/** etcd's permission types. */
export type PermType = "READ" | "WRITE" | "READWRITE";

/** A permission of a role: `permType` on the keys of `range`. */
export interface Permission {
  /** What it allows. */
  readonly permType: PermType;
  /** Which keys. */
  readonly range: KeyRange;
}

/** A password hash, made by the node that received the request (src/net/auth.ts). */
export interface PasswordHash {
  /** The KDF: PBKDF2 with HMAC-SHA-256. */
  readonly algorithm: "pbkdf2-sha256";
  /** Its iteration count. */
  readonly iterations: number;
  /** Random salt, base64. */
  readonly salt: string;
  /** Derived key (32 bytes), base64. */
  readonly hash: string;
}

/** A user: a password hash (none: the user cannot log in, etcd's `--no-password`) and roles. */
export interface AuthUser {
  /** Name. */
  readonly name: string;
  /** Password hash; absent for a user without a password. */
  readonly password?: PasswordHash;
  /** Roles, sorted. */
  readonly roles: readonly string[];
}

/** A role and its permissions (in the order granted; a re-grant of a range replaces its type). */
export interface AuthRole {
  /** Name. */
  readonly name: string;
  /** Permissions. */
  readonly permissions: readonly Permission[];
}

/** One change to the auth state. */
export type AuthOp =
  | { readonly op: "enable" }
  | { readonly op: "disable" }
  | { readonly op: "userAdd"; readonly name: string; readonly password?: PasswordHash }
  | { readonly op: "userDelete"; readonly name: string }
  | { readonly op: "userChangePassword"; readonly name: string; readonly password: PasswordHash }
  | { readonly op: "userGrantRole"; readonly name: string; readonly role: string }
  | { readonly op: "userRevokeRole"; readonly name: string; readonly role: string }
  | { readonly op: "roleAdd"; readonly role: string }
  | { readonly op: "roleDelete"; readonly role: string }
  | { readonly op: "roleGrantPermission"; readonly role: string; readonly permission: Permission }
  | { readonly op: "roleRevokePermission"; readonly role: string; readonly range: KeyRange };

/** An auth change as a command of the log (binary tag 0x0a, docs/commands.md). */
export interface AuthCommand {
  /** Discriminant. */
  readonly type: "auth";
  /** The change. */
  readonly op: AuthOp;
}

/** Response to an {@linkcode AuthCommand}. */
export interface AuthResponse {
  /** Discriminant. */
  readonly type: "auth";
  /** Store revision (unchanged: auth changes do not raise it, as in etcd). */
  readonly revision: number;
  /** The auth revision after the change. */
  readonly authRevision: number;
}

/** The auth state as JSON-safe data, for snapshots. */
export interface AuthSnapshot {
  /** Whether auth is enabled. */
  readonly enabled: boolean;
  /** The auth revision auth was last enabled at (tokens from before it are void); absent: 0. */
  readonly enabledAt?: number;
  /** Raised by every change. */
  readonly authRevision: number;
  /** Users by name. */
  readonly users: readonly AuthUser[];
  /** Roles by name. */
  readonly roles: readonly AuthRole[];
}
