/**
 * etcd's authentication model as replicated state: users (with password hashes made before the
 * command is proposed), roles with READ/WRITE/READWRITE permissions on a key, a prefix or a
 * [key, rangeEnd) range, the root user and role, and whether auth is enabled. Every change is an
 * {@linkcode AuthCommand} that goes through the Raft log; applying one is cheap and deterministic
 * (no hashing, no clock). The permission check ({@linkcode AuthState.permitted}) and what a
 * command needs ({@linkcode commandNeeds}) live here too, so every face asks the same question.
 *
 * @module
 */

import { CommandError, validateAuthOp } from "./command.ts";
import { compareKeys } from "./sorted_map.ts";
import { keyBytes, keyFromBytes } from "./bytes.ts";
import {
  type AuthLimits,
  type AuthOp,
  type AuthRole,
  type AuthSnapshot,
  type AuthUser,
  type Compare,
  DEFAULT_AUTH_LIMITS,
  type KeyRange,
  type PasswordHash,
  type Permission,
  type PlainCommand,
  type TxnCommand,
} from "./types.ts";

export {
  type AuthCommand,
  type AuthLimits,
  type AuthOp,
  type AuthResponse,
  type AuthRole,
  type AuthSnapshot,
  type AuthUser,
  DEFAULT_AUTH_LIMITS,
  type PasswordHash,
  type Permission,
  type PermType,
} from "./types.ts";
export { validateAuthOp } from "./command.ts";

// etcd 3.4's error texts (etcdserver/api/v3rpc/rpctypes), checked against a real etcd 3.4.
/** Refused `auth enable`: there is no user "root". */
export const ROOT_USER_NOT_EXIST = "etcdserver: root user does not exist";
/** Refused `auth enable`: user "root" lacks role "root" (etcdctl then grants it and retries). */
export const ROOT_ROLE_NOT_EXIST = "etcdserver: root user does not have root role";
/** A user name that is not known. */
export const USER_NOT_FOUND = "etcdserver: user name not found";
/** A user name that is taken. */
export const USER_ALREADY_EXIST = "etcdserver: user name already exists";
/** An empty user name (also: a request without a token while auth is enabled). */
export const USER_EMPTY = "etcdserver: user name is empty";
/** A role name that is not known. */
export const ROLE_NOT_FOUND = "etcdserver: role name not found";
/** A role name that is taken. */
export const ROLE_ALREADY_EXIST = "etcdserver: role name already exists";
/** An empty role name. */
export const ROLE_EMPTY = "etcdserver: role name is empty";
/** Revoking a role the user does not have. */
export const ROLE_NOT_GRANTED = "etcdserver: role is not granted to the user";
/** Revoking a permission the role does not have. */
export const PERMISSION_NOT_GRANTED = "etcdserver: permission is not granted to the role";
/** Deleting root or its role, or taking root's role away, while auth is enabled. */
export const INVALID_AUTH_MGMT = "etcdserver: invalid auth management";
/** Wrong user name or password (the same text for both, as etcd). */
export const AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password";
/** The user may not do this. */
export const PERMISSION_DENIED = "etcdserver: permission denied";
/** A token this node did not issue, or one that expired. */
export const INVALID_AUTH_TOKEN = "etcdserver: invalid auth token";
/** A token of a user deleted or whose password changed after it was issued. */
export const AUTH_OLD_REVISION = "etcdserver: revision of auth store is old";
/** Authenticate while auth is disabled. */
export const AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled";

/** The name of the user and of the role that may do everything. */
export const ROOT = "root";

// ---- Key intervals ----------------------------------------------------------------------------

/** Keys [start, end) in UTF-8 order; `end` undefined: no upper bound. */
interface Interval {
  readonly start: string;
  readonly end: string | undefined;
}

/**
 * The smallest key after every key that starts with `prefix` (undefined: none), in byte order:
 * the prefix's bytes with the last one below 0xFF raised (etcd's prefix end).
 */
function prefixEnd(prefix: string): string | undefined {
  const end = keyBytes(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return keyFromBytes(end.subarray(0, i + 1));
    }
  }
  return undefined;
}

/** The keys of `range` as an interval. An empty [key, rangeEnd) counts as its key alone. */
function intervalOf(range: KeyRange): Interval {
  if ("prefix" in range) return { start: range.prefix, end: prefixEnd(range.prefix) };
  if ("fromKey" in range) return { start: range.fromKey, end: undefined };
  const { key, rangeEnd } = range;
  if (rangeEnd === "\u0000") return { start: key, end: undefined };
  if (rangeEnd === undefined || compareKeys(rangeEnd, key) <= 0) {
    return { start: key, end: key + "\u0000" };
  }
  return { start: key, end: rangeEnd };
}

function endBefore(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined) return false;
  if (b === undefined) return true;
  return compareKeys(a, b) < 0;
}

/** The union of `intervals` as disjoint intervals in key order (touching ones joined). */
function merge(intervals: readonly Interval[]): Interval[] {
  const sorted = [...intervals].sort((a, b) => compareKeys(a.start, b.start));
  const out: { start: string; end: string | undefined }[] = [];
  for (const iv of sorted) {
    const last = out.at(-1);
    if (last !== undefined && (last.end === undefined || compareKeys(iv.start, last.end) <= 0)) {
      if (endBefore(last.end, iv.end)) last.end = iv.end;
    } else {
      out.push({ ...iv });
    }
  }
  return out;
}

/** Whether `inner` lies inside one of `merged` (from {@linkcode merge}): a binary search. */
function covered(inner: Interval, merged: readonly Interval[]): boolean {
  // The last interval starting at or before inner.start is the only candidate.
  let lo = 0;
  let hi = merged.length - 1;
  let at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (compareKeys(merged[mid].start, inner.start) <= 0) {
      at = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return at >= 0 && !endBefore(merged[at].end, inner.end);
}

function sameRange(a: KeyRange, b: KeyRange): boolean {
  const x = intervalOf(a);
  const y = intervalOf(b);
  return x.start === y.start && x.end === y.end;
}

// ---- What a command needs ---------------------------------------------------------------------

/** The key ranges a request reads and writes, for the permission check. */
export interface Needs {
  /** Ranges read (a range, a compare, a prevKv). */
  readonly reads: KeyRange[];
  /** Ranges written (a put, a delete). */
  readonly writes: KeyRange[];
}

function compareRange(c: Compare): KeyRange {
  return c.rangeEnd === undefined ? { key: c.key } : { key: c.key, rangeEnd: c.rangeEnd };
}

/**
 * The ranges `command` reads and writes, as etcd checks them: a put writes its key (and reads it
 * with prevKv); a delete writes its range (and reads it with prevKv); a range reads; a
 * transaction needs read on every compare and both branches' needs, nested ones included.
 */
export function commandNeeds(command: PlainCommand, out: Needs = { reads: [], writes: [] }): Needs {
  switch (command.type) {
    case "put":
      out.writes.push({ key: command.key });
      if (command.prevKv) out.reads.push({ key: command.key });
      break;
    case "delete":
      out.writes.push(command.range);
      if (command.prevKv) out.reads.push(command.range);
      break;
    case "range":
      out.reads.push(command.range);
      break;
    case "txn":
      txnNeeds(command, out);
      break;
    default:
      break;
  }
  return out;
}

function txnNeeds(txn: TxnCommand, out: Needs): void {
  for (const c of txn.compare) out.reads.push(compareRange(c));
  for (const op of [...txn.success, ...txn.failure]) commandNeeds(op, out);
}

// ---- The state ----------------------------------------------------------------------------------

interface MutableUser {
  name: string;
  password?: PasswordHash;
  roles: string[];
}

/** The replicated auth state of one store. */
export class AuthState {
  /** Bounds in force. */
  readonly limits: AuthLimits;
  #enabled = false;
  #enabledAt = 0;
  #authRevision = 0;
  readonly #users = new Map<string, MutableUser>();
  readonly #roles = new Map<string, Permission[]>();
  /** Each user's merged intervals per access, rebuilt after any change (bounded by users × 2). */
  readonly #merged = new Map<string, Interval[]>();

  /** An empty state: auth disabled, no users, no roles. */
  constructor(limits: Partial<AuthLimits> = {}) {
    this.limits = { ...DEFAULT_AUTH_LIMITS, ...limits };
  }

  /** Whether auth is enabled. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * The auth revision of the last `enable` (after it is applied): a token issued before it was
   * issued under an earlier enabling and is void, as etcd drops its tokens on disable.
   */
  get enabledAt(): number {
    return this.#enabledAt;
  }

  /** Raised by every applied change. */
  get authRevision(): number {
    return this.#authRevision;
  }

  /** User `name`, or undefined. */
  user(name: string): AuthUser | undefined {
    const u = this.#users.get(name);
    return u === undefined ? undefined : { ...u, roles: [...u.roles] };
  }

  /** Role `name`, or undefined. */
  role(name: string): AuthRole | undefined {
    const p = this.#roles.get(name);
    return p === undefined ? undefined : { name, permissions: [...p] };
  }

  /** User names, sorted. */
  userNames(): string[] {
    return [...this.#users.keys()].sort(compareKeys);
  }

  /** Role names, sorted. */
  roleNames(): string[] {
    return [...this.#roles.keys()].sort(compareKeys);
  }

  /** Whether `user` holds the root role (etcd's admin: every permission, every operation). */
  isRoot(user: string): boolean {
    return this.#users.get(user)?.roles.includes(ROOT) ?? false;
  }

  /**
   * Whether `user` may read (or write) every key of `range`: auth disabled, root, or one of the
   * user's roles' permissions (merged, as etcd merges them) covers the whole range.
   */
  permitted(user: string, range: KeyRange, access: "read" | "write"): boolean {
    if (!this.#enabled) return true;
    const u = this.#users.get(user);
    if (u === undefined) return false;
    if (u.roles.includes(ROOT)) return true;
    const cacheKey = `${access}\n${user}`;
    let merged = this.#merged.get(cacheKey);
    if (merged === undefined) {
      const intervals: Interval[] = [];
      for (const r of u.roles) {
        for (const p of this.#roles.get(r) ?? []) {
          if (
            p.permType === "READWRITE" || p.permType === (access === "read" ? "READ" : "WRITE")
          ) {
            intervals.push(intervalOf(p.range));
          }
        }
      }
      merged = merge(intervals);
      this.#merged.set(cacheKey, merged);
    }
    return covered(intervalOf(range), merged);
  }

  /** Whether `user` may do everything `needs` lists. */
  permits(user: string, needs: Needs): boolean {
    return needs.reads.every((r) => this.permitted(user, r, "read")) &&
      needs.writes.every((r) => this.permitted(user, r, "write"));
  }

  /**
   * Applies `op`: undefined when it changed the state (the auth revision then rises by one), or
   * etcd's error text when it is refused (nothing changed). Deterministic: no clock, no hashing.
   */
  apply(op: AuthOp): string | undefined {
    const wasEnabled = this.#enabled;
    const error = this.#apply(op);
    if (error === undefined) {
      this.#authRevision++;
      if (op.op === "enable" && !wasEnabled) this.#enabledAt = this.#authRevision;
      this.#merged.clear();
    }
    return error;
  }

  #apply(op: AuthOp): string | undefined {
    const limits = this.limits;
    switch (op.op) {
      case "enable": {
        if (this.#enabled) return undefined;
        const root = this.#users.get(ROOT);
        if (root === undefined) return ROOT_USER_NOT_EXIST;
        if (!root.roles.includes(ROOT)) return ROOT_ROLE_NOT_EXIST;
        this.#enabled = true;
        return undefined;
      }
      case "disable":
        this.#enabled = false;
        return undefined;
      case "userAdd":
        if (op.name === "") return USER_EMPTY;
        if (this.#users.has(op.name)) return USER_ALREADY_EXIST;
        if (this.#users.size >= limits.usersMax) {
          return `Too many users: ${this.#users.size} (most ${limits.usersMax})`;
        }
        this.#users.set(op.name, { name: op.name, password: op.password, roles: [] });
        return undefined;
      case "userDelete":
        if (this.#enabled && op.name === ROOT) return INVALID_AUTH_MGMT;
        if (!this.#users.delete(op.name)) return USER_NOT_FOUND;
        return undefined;
      case "userChangePassword": {
        const u = this.#users.get(op.name);
        if (u === undefined) return USER_NOT_FOUND;
        u.password = op.password;
        return undefined;
      }
      case "userGrantRole": {
        const u = this.#users.get(op.name);
        if (u === undefined) return USER_NOT_FOUND;
        // etcd: the root role need not be added before it is granted.
        if (op.role !== ROOT && !this.#roles.has(op.role)) return ROLE_NOT_FOUND;
        if (u.roles.includes(op.role)) return undefined;
        if (u.roles.length >= limits.rolesPerUserMax) {
          return `Too many roles for user "${op.name}": ${u.roles.length} (most ${limits.rolesPerUserMax})`;
        }
        u.roles = [...u.roles, op.role].sort(compareKeys);
        if (op.role === ROOT && !this.#roles.has(ROOT)) this.#roles.set(ROOT, []);
        return undefined;
      }
      case "userRevokeRole": {
        const u = this.#users.get(op.name);
        if (u === undefined) return USER_NOT_FOUND;
        if (this.#enabled && op.name === ROOT && op.role === ROOT) return INVALID_AUTH_MGMT;
        if (!u.roles.includes(op.role)) return ROLE_NOT_GRANTED;
        u.roles = u.roles.filter((r) => r !== op.role);
        return undefined;
      }
      case "roleAdd":
        if (op.role === "") return ROLE_EMPTY;
        if (this.#roles.has(op.role)) return ROLE_ALREADY_EXIST;
        if (this.#roles.size >= limits.rolesMax) {
          return `Too many roles: ${this.#roles.size} (most ${limits.rolesMax})`;
        }
        this.#roles.set(op.role, []);
        return undefined;
      case "roleDelete":
        if (this.#enabled && op.role === ROOT) return INVALID_AUTH_MGMT;
        if (!this.#roles.delete(op.role)) return ROLE_NOT_FOUND;
        // As etcd: the role is taken from every user that had it.
        for (const u of this.#users.values()) {
          if (u.roles.includes(op.role)) u.roles = u.roles.filter((r) => r !== op.role);
        }
        return undefined;
      case "roleGrantPermission": {
        const perms = this.#roles.get(op.role);
        if (perms === undefined) return ROLE_NOT_FOUND;
        // As etcd 3.5's isValidPermissionRange: an empty [key, rangeEnd) grants nothing.
        const r = op.permission.range;
        if (
          "key" in r && r.rangeEnd !== undefined && r.rangeEnd !== "\u0000" &&
          compareKeys(r.rangeEnd, r.key) <= 0
        ) {
          return INVALID_AUTH_MGMT;
        }
        const i = perms.findIndex((p) => sameRange(p.range, op.permission.range));
        if (i >= 0) {
          perms[i] = op.permission;
          return undefined;
        }
        if (perms.length >= limits.permissionsPerRoleMax) {
          return `Too many permissions for role "${op.role}": ${perms.length} (most ${limits.permissionsPerRoleMax})`;
        }
        perms.push(op.permission);
        return undefined;
      }
      case "roleRevokePermission": {
        const perms = this.#roles.get(op.role);
        if (perms === undefined) return ROLE_NOT_FOUND;
        const i = perms.findIndex((p) => sameRange(p.range, op.range));
        if (i < 0) return PERMISSION_NOT_GRANTED;
        perms.splice(i, 1);
        return undefined;
      }
    }
  }

  /** The state as JSON-safe data. */
  snapshot(): AuthSnapshot {
    return {
      enabled: this.#enabled,
      enabledAt: this.#enabledAt,
      authRevision: this.#authRevision,
      users: this.userNames().map((n) => this.user(n)!),
      roles: this.roleNames().map((n) => this.role(n)!),
    };
  }

  /** Replaces the state with `snapshot`'s (validated; throws {@linkcode CommandError}). */
  restore(snapshot: AuthSnapshot): void {
    const s = snapshot as unknown as Record<string, unknown>;
    if (typeof s !== "object" || s === null || typeof s.enabled !== "boolean") {
      throw new CommandError(`Auth snapshot must be an object with "enabled"`);
    }
    if (!Number.isSafeInteger(s.authRevision) || (s.authRevision as number) < 0) {
      throw new CommandError(`Auth snapshot revision must be a non-negative integer`);
    }
    if (!Array.isArray(s.users) || !Array.isArray(s.roles)) {
      throw new CommandError(`Auth snapshot users and roles must be arrays`);
    }
    const unbounded = { ...this.limits, usersMax: Infinity, rolesMax: Infinity };
    this.#users.clear();
    this.#roles.clear();
    this.#merged.clear();
    for (const r of s.roles as AuthRole[]) {
      validateAuthOp({ op: "roleAdd", role: r.name }, unbounded);
      if (!Array.isArray(r.permissions)) throw new CommandError(`Role permissions must be a list`);
      for (const p of r.permissions) {
        validateAuthOp({ op: "roleGrantPermission", role: r.name, permission: p }, unbounded);
      }
      this.#roles.set(r.name, [...r.permissions]);
    }
    for (const u of s.users as AuthUser[]) {
      validateAuthOp({ op: "userAdd", name: u.name, password: u.password }, unbounded);
      if (!Array.isArray(u.roles)) throw new CommandError(`User roles must be a list`);
      for (const r of u.roles) validateAuthOp({ op: "roleAdd", role: r }, unbounded);
      this.#users.set(u.name, { name: u.name, password: u.password, roles: [...u.roles] });
    }
    this.#enabled = s.enabled as boolean;
    const enabledAt = s.enabledAt ?? 0;
    if (!Number.isSafeInteger(enabledAt) || (enabledAt as number) < 0) {
      throw new CommandError(`Auth snapshot enabledAt must be a non-negative integer`);
    }
    this.#enabledAt = enabledAt as number;
    this.#authRevision = s.authRevision as number;
    this.#merged.clear();
  }
}
