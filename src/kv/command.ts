/**
 * The command codec: how the store's commands travel in the Raft log.
 *
 * The seed's two commands keep their UTF-8 text form, byte for byte: `PUT\n<key>\n<value>` and
 * `DEL\n<key>`. Every other command uses a versioned binary form that starts with byte 0xFF, which
 * never occurs in UTF-8 text and so can never begin a seed command. docs/commands.md describes
 * both byte by byte.
 *
 * A command is decoded and fully validated before it is proposed ({@linkcode decodeCommand}), so
 * nothing malformed reaches the log.
 *
 * @module
 */

import {
  ByteWriter,
  isKeyString,
  isUtf8,
  keyByteLength,
  keyFromBytes,
  quote,
  quoteBytes,
  strictText,
  utf8,
  utf8Length,
} from "./bytes.ts";
import {
  type AlarmCommand,
  type AuthCommand,
  type AuthLimits,
  type ClientId,
  type Command,
  type Compare,
  type CompareResult,
  type CompareTarget,
  DEFAULT_AUTH_LIMITS,
  DEFAULT_KV_LIMITS,
  type DeleteCommand,
  type KeyRange,
  type KvLimits,
  LEASE_ID_MAX,
  type LeaseGrantCommand,
  type LeaseRevokeCommand,
  type PermType,
  type PlainCommand,
  type PutCommand,
  type RangeCommand,
  type SortOrder,
  type SortTarget,
  TXN_DEPTH_MAX,
  type TxnCommand,
  type TxnOp,
} from "./types.ts";
import { compareKeys } from "./sorted_map.ts";

/** A command that cannot be encoded or decoded: malformed, unknown, or over a limit. */
export class CommandError extends Error {
  /** Makes an error with `message` (sentence case, offending value quoted). */
  constructor(message: string) {
    super(message);
    this.name = "CommandError";
  }
}

/** First byte of every binary command. 0xFF is never a byte of UTF-8 text. */
export const BINARY_MAGIC = 0xff;
/** The binary format version this build writes and reads. */
export const BINARY_FORMAT_VERSION = 1;

/** Tags of the binary commands (also used for the operations inside a transaction). */
export const CommandTag: {
  readonly put: 0x01;
  readonly delete: 0x02;
  readonly range: 0x03;
  readonly txn: 0x04;
  readonly session: 0x05;
  readonly leaseGrant: 0x06;
  readonly leaseRevoke: 0x07;
  readonly compact: 0x08;
  readonly alarm: 0x09;
  readonly auth: 0x0a;
  readonly authGuard: 0x0b;
} = Object.freeze({
  /** {@linkcode PutCommand} */
  put: 0x01,
  /** {@linkcode DeleteCommand} */
  delete: 0x02,
  /** {@linkcode RangeCommand} */
  range: 0x03,
  /** {@linkcode TxnCommand} */
  txn: 0x04,
  /** {@linkcode SessionCommand} */
  session: 0x05,
  /** {@linkcode LeaseGrantCommand} */
  leaseGrant: 0x06,
  /** {@linkcode LeaseRevokeCommand} */
  leaseRevoke: 0x07,
  /** {@linkcode CompactCommand} */
  compact: 0x08,
  /** {@linkcode AlarmCommand} */
  alarm: 0x09,
  /** {@linkcode AuthCommand}: its op as UTF-8 JSON (src/kv/auth.ts) */
  auth: 0x0a,
  /** The auth guard around a checked command (see {@linkcode encodeAuthGuarded}) */
  authGuard: 0x0b,
});
const ALARM_ACTIONS = ["activate", "deactivate"] as const;
const ALARM_TYPES = ["NOSPACE"] as const;

const RANGE_KIND = { key: 0, keyRange: 1, prefix: 2, fromKey: 3 } as const;
const TARGETS: readonly CompareTarget[] = [
  "value",
  "version",
  "createRevision",
  "modRevision",
  "lease",
];
/** Bit of a compare's target byte: a range end follows the key. */
const COMPARE_RANGE_END = 0x80;
/** Bit of a range's flags byte: sort order, sort target and the four revision filters follow. */
const RANGE_OPTIONS = 0x04;
const SORT_ORDERS: readonly SortOrder[] = ["none", "ascend", "descend"];
const SORT_TARGETS: readonly SortTarget[] = [
  "key",
  "version",
  "createRevision",
  "modRevision",
  "value",
];
const RANGE_FILTERS = [
  "minModRevision",
  "maxModRevision",
  "minCreateRevision",
  "maxCreateRevision",
] as const;

/** etcd's error for two writes to one key in a transaction (gRPC InvalidArgument, 3). */
export const DUPLICATE_KEY_ERROR = "etcdserver: duplicate key given in txn request";
const RESULTS: readonly CompareResult[] = ["equal", "notEqual", "greater", "less"];
const PUT_PREFIX = utf8("PUT\n");
const DEL_PREFIX = utf8("DEL\n");
const NEWLINE = 0x0a;
const U32_MAX = 0xffff_ffff;

// ---------------------------------------------------------------------------------------------
// Validation of command objects (structure; size limits are separate, see commandLimitError).

/**
 * Throws {@linkcode CommandError} unless `key` is a valid key: a non-empty key string (text, or
 * bytes with the non-UTF-8 ones escaped, see src/kv/bytes.ts's `keyFromBytes`).
 */
export function validateKey(key: unknown, what = "Key"): asserts key is string {
  if (typeof key !== "string") throw new CommandError(`${what} must be a string: ${String(key)}`);
  if (key.length === 0) throw new CommandError(`${what} must not be empty: ""`);
  validateKeyText(key, what);
}

function validateKeyText(key: string, what: string): void {
  if (!isKeyString(key)) {
    throw new CommandError(
      `${what} must be well-formed Unicode, or bytes with those outside UTF-8 escaped as ` +
        `U+DC80..U+DCFF: ${quote(key)}`,
    );
  }
}

/** A prefix is text: a byte prefix that is not UTF-8 goes as a key and a range end instead. */
function validatePrefix(prefix: string): void {
  if (!prefix.isWellFormed()) {
    throw new CommandError(
      `Prefix must be well-formed Unicode (for bytes outside UTF-8, give a key and a range ` +
        `end): ${quote(prefix)}`,
    );
  }
}

/** Whether the seed's text forms (`PUT\n<key>\n<value>`, `DEL\n<key>`) can carry `key`. */
function seedKey(key: string): boolean {
  return !key.includes("\n") && key.isWellFormed();
}

/** Throws {@linkcode CommandError} unless `range` is a valid {@linkcode KeyRange}. */
export function validateRange(range: unknown): asserts range is KeyRange {
  if (typeof range !== "object" || range === null) {
    throw new CommandError(`Range must be an object: ${String(range)}`);
  }
  const r = range as Record<string, unknown>;
  const forms = ["key", "prefix", "fromKey"].filter((f) => r[f] !== undefined);
  if (forms.length !== 1) {
    throw new CommandError(
      `Range must have exactly one of key, prefix or fromKey: ${quote(forms.join(", "))}`,
    );
  }
  if (r.prefix !== undefined) {
    if (typeof r.prefix !== "string") {
      throw new CommandError(`Prefix must be a string: ${String(r.prefix)}`);
    }
    validatePrefix(r.prefix);
  } else if (r.fromKey !== undefined) {
    validateKey(r.fromKey, "Range start");
  } else {
    validateKey(r.key);
    if (r.rangeEnd !== undefined) validateKey(r.rangeEnd, "Range end");
  }
  if (r.rangeEnd !== undefined && r.key === undefined) {
    throw new CommandError(`Range end needs a key: ${quote(String(r.rangeEnd))}`);
  }
}

function validateFlag(value: unknown, what: string): void {
  if (typeof value !== "boolean") throw new CommandError(`${what} must be a boolean: ${value}`);
}

function validateUint(value: unknown, what: string, min: number, max: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new CommandError(`${what} must be an integer in [${min}, ${max}]: ${value}`);
  }
}

function validateClientId(clientId: unknown): asserts clientId is ClientId {
  if (typeof clientId === "number") {
    validateUint(clientId, "Client id", 0, Number.MAX_SAFE_INTEGER);
  } else if (typeof clientId === "string") {
    if (clientId.length === 0) throw new CommandError(`Client id must not be empty: ""`);
    if (!clientId.isWellFormed()) {
      throw new CommandError(`Client id must be well-formed Unicode: ${quote(clientId)}`);
    }
  } else {
    throw new CommandError(`Client id must be a string or a number: ${String(clientId)}`);
  }
}

function validateCompare(c: unknown): asserts c is Compare {
  if (typeof c !== "object" || c === null) {
    throw new CommandError(`Compare must be an object: ${String(c)}`);
  }
  const cmp = c as Record<string, unknown>;
  validateKey(cmp.key);
  if (cmp.rangeEnd !== undefined) validateKey(cmp.rangeEnd, "Compare range end");
  if (!TARGETS.includes(cmp.target as CompareTarget)) {
    throw new CommandError(`Unknown compare target: ${quote(String(cmp.target))}`);
  }
  if (!RESULTS.includes(cmp.result as CompareResult)) {
    throw new CommandError(`Unknown compare result: ${quote(String(cmp.result))}`);
  }
  if (cmp.target === "value") {
    if (!(cmp.value instanceof Uint8Array)) {
      throw new CommandError(`Value compare needs bytes: ${String(cmp.value)}`);
    }
  } else {
    validateUint(cmp.value, `Compare ${cmp.target}`, 0, Number.MAX_SAFE_INTEGER);
  }
}

/** Whether `range` has any of the sort and filter options (so the codec writes them). */
function hasRangeOptions(range: RangeCommand): boolean {
  return (range.sortOrder ?? "none") !== "none" || (range.sortTarget ?? "key") !== "key" ||
    RANGE_FILTERS.some((f) => (range[f] ?? 0) !== 0);
}

/** `depth`: 0 outside a transaction, else the level of the transaction holding the command. */
function validatePlain(command: unknown, depth: number): asserts command is PlainCommand {
  if (typeof command !== "object" || command === null) {
    throw new CommandError(`Command must be an object: ${String(command)}`);
  }
  const c = command as Record<string, unknown>;
  switch (c.type) {
    case "put":
      validateKey(c.key);
      if (!(c.value instanceof Uint8Array)) {
        throw new CommandError(`Put value must be bytes: ${String(c.value)}`);
      }
      validateFlag(c.prevKv, "prevKv");
      if (c.lease !== undefined) validateUint(c.lease, "Lease id", 0, LEASE_ID_MAX);
      return;
    case "delete":
      validateRange(c.range);
      validateFlag(c.prevKv, "prevKv");
      return;
    case "range":
      validateRange(c.range);
      validateUint(c.limit, "Limit", 0, U32_MAX);
      validateFlag(c.keysOnly, "keysOnly");
      validateFlag(c.countOnly, "countOnly");
      if (c.sortOrder !== undefined && !SORT_ORDERS.includes(c.sortOrder as SortOrder)) {
        throw new CommandError(`Unknown sort order: ${quote(String(c.sortOrder))}`);
      }
      if (c.sortTarget !== undefined && !SORT_TARGETS.includes(c.sortTarget as SortTarget)) {
        throw new CommandError(`Unknown sort target: ${quote(String(c.sortTarget))}`);
      }
      for (const f of RANGE_FILTERS) {
        if (c[f] !== undefined) {
          validateUint(c[f], f, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
        }
      }
      return;
    case "txn":
      if (depth >= TXN_DEPTH_MAX) {
        throw new CommandError(
          `Transactions nest too deep: more than ${TXN_DEPTH_MAX} levels`,
        );
      }
      for (const list of ["compare", "success", "failure"]) {
        if (!Array.isArray(c[list])) {
          throw new CommandError(`Transaction ${list} must be an array: ${String(c[list])}`);
        }
      }
      for (const cmp of c.compare as unknown[]) validateCompare(cmp);
      for (const op of [...(c.success as unknown[]), ...(c.failure as unknown[])]) {
        const t = (op as Record<string, unknown> | null)?.type;
        if (
          t === "leaseGrant" || t === "leaseRevoke" || t === "compact" || t === "session" ||
          t === "alarm" || t === "auth"
        ) {
          throw new CommandError(
            `A transaction may hold only put, delete and range: ${quote(String(t))}`,
          );
        }
        validatePlain(op, depth + 1);
      }
      return;
    case "leaseGrant":
      validateUint(c.id, "Lease id", 0, LEASE_ID_MAX);
      validateUint(c.ttlMs, "Lease TTL (ms)", 1, Number.MAX_SAFE_INTEGER);
      return;
    case "leaseRevoke":
      validateUint(c.id, "Lease id", 1, LEASE_ID_MAX);
      validateFlag(c.expired, "expired");
      return;
    case "compact":
      validateUint(c.revision, "Compact revision", 1, Number.MAX_SAFE_INTEGER);
      return;
    case "alarm":
      if (!ALARM_ACTIONS.includes(c.action as "activate")) {
        throw new CommandError(
          `Alarm action must be "activate" or "deactivate": ${quote(String(c.action))}`,
        );
      }
      if (!ALARM_TYPES.includes(c.alarm as "NOSPACE")) {
        throw new CommandError(`Alarm must be "NOSPACE": ${quote(String(c.alarm))}`);
      }
      if (typeof c.memberId !== "string" || c.memberId.length > 256) {
        throw new CommandError(
          `Alarm member id must be a string of at most 256 characters: ${
            quote(String(c.memberId))
          }`,
        );
      }
      if (c.memberId === "" && c.action === "activate") {
        throw new CommandError(`An alarm is raised by a member: member id must not be empty`);
      }
      return;
    case "auth":
      validateAuthOp(c.op);
      return;
    default:
      throw new CommandError(`Unknown command type: ${quote(String(c.type))}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Validation of auth ops (src/kv/auth.ts), here so the codec can check them before they are logged.

const PERM_TYPES: readonly PermType[] = ["READ", "WRITE", "READWRITE"];

function validateName(value: unknown, what: string, limits: AuthLimits): void {
  if (typeof value !== "string") throw new CommandError(`${what} must be a string: ${value}`);
  if (!value.isWellFormed()) throw new CommandError(`${what} must be well-formed Unicode`);
  const n = new TextEncoder().encode(value).length;
  if (n > limits.nameBytesMax) {
    throw new CommandError(`${what} is too long: ${n} bytes (most ${limits.nameBytesMax})`);
  }
}

function validateText(value: unknown, what: string): asserts value is string {
  if (typeof value !== "string" || !value.isWellFormed()) {
    throw new CommandError(`${what} must be a well-formed string: ${value}`);
  }
}

function validatePassword(p: unknown): void {
  const h = p as Record<string, unknown> | null;
  if (typeof h !== "object" || h === null || h.algorithm !== "pbkdf2-sha256") {
    throw new CommandError(`Password hash must be a pbkdf2-sha256 object`);
  }
  if (
    typeof h.iterations !== "number" || !Number.isSafeInteger(h.iterations) || h.iterations < 1
  ) {
    throw new CommandError(`Password hash iterations must be a positive integer: ${h.iterations}`);
  }
  validateText(h.salt, "Password salt");
  validateText(h.hash, "Password hash");
}

function validateKeyRange(r: unknown): void {
  const o = r as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) throw new CommandError(`Range must be an object`);
  const forms = ["key", "prefix", "fromKey"].filter((f) => o[f] !== undefined);
  if (forms.length !== 1) {
    throw new CommandError(`Range must have exactly one of key, prefix or fromKey`);
  }
  for (const f of ["key", "fromKey", "rangeEnd"]) {
    const v = o[f];
    if (v !== undefined && (typeof v !== "string" || !isKeyString(v))) {
      throw new CommandError(`Range ${f} must be a key string: ${quote(String(v))}`);
    }
  }
  if (o.prefix !== undefined) validateText(o.prefix, "Range prefix");
  if (o.rangeEnd !== undefined && o.key === undefined) {
    throw new CommandError(`Range end needs a key`);
  }
}

/** Throws {@linkcode CommandError} unless `op` is a well-formed {@linkcode AuthOp}. */
export function validateAuthOp(op: unknown, limits: AuthLimits = DEFAULT_AUTH_LIMITS): void {
  const o = op as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null) throw new CommandError(`Auth op must be an object`);
  const keys = Object.keys(o);
  const allow = (...names: string[]) => {
    for (const k of keys) {
      if (k !== "op" && !names.includes(k)) {
        throw new CommandError(`Auth op ${JSON.stringify(o.op)} has an unknown field: "${k}"`);
      }
    }
  };
  switch (o.op) {
    case "enable":
    case "disable":
      return allow();
    case "userAdd":
      allow("name", "password");
      validateName(o.name, "User name", limits);
      if (o.password !== undefined) validatePassword(o.password);
      return;
    case "userDelete":
      allow("name");
      return validateName(o.name, "User name", limits);
    case "userChangePassword":
      allow("name", "password");
      validateName(o.name, "User name", limits);
      return validatePassword(o.password);
    case "userGrantRole":
    case "userRevokeRole":
      allow("name", "role");
      validateName(o.name, "User name", limits);
      return validateName(o.role, "Role name", limits);
    case "roleAdd":
    case "roleDelete":
      allow("role");
      return validateName(o.role, "Role name", limits);
    case "roleGrantPermission": {
      allow("role", "permission");
      validateName(o.role, "Role name", limits);
      const p = o.permission as Record<string, unknown> | null;
      if (typeof p !== "object" || p === null || !PERM_TYPES.includes(p.permType as PermType)) {
        throw new CommandError(`Permission type must be READ, WRITE or READWRITE`);
      }
      return validateKeyRange(p.range);
    }
    case "roleRevokePermission":
      allow("role", "range");
      validateName(o.role, "Role name", limits);
      return validateKeyRange(o.range);
    default:
      throw new CommandError(`Unknown auth op: ${JSON.stringify(o.op)}`);
  }
}

/** Throws {@linkcode CommandError} unless `command` is a well-formed {@linkcode Command}. */
export function validateCommand(command: unknown): asserts command is Command {
  const c = command as Record<string, unknown> | null;
  if (typeof c === "object" && c !== null && c.type === "session") {
    validateClientId(c.clientId);
    validateUint(c.seq, "Sequence number", 1, Number.MAX_SAFE_INTEGER);
    const inner = c.command as Record<string, unknown> | null;
    if (typeof inner === "object" && inner !== null && inner.type === "session") {
      throw new CommandError(`A session command cannot wrap a session command: "session"`);
    }
    validatePlain(inner, 0);
    return;
  }
  validatePlain(command, 0);
}

/**
 * Why `command` (encoded in `commandBytes` bytes) breaks `limits`, or `undefined` when it does
 * not. The store turns a message into a rejected result; {@linkcode decodeCommand} throws it.
 */
export function commandLimitError(
  command: Command,
  commandBytes: number,
  limits: KvLimits,
): string | undefined {
  if (commandBytes > limits.commandBytesMax) {
    return `Command is too large: ${commandBytes} bytes (most ${limits.commandBytesMax})`;
  }
  const keyError = (key: string, what: string) => {
    const n = keyByteLength(key);
    return n > limits.keyBytesMax
      ? `${what} is too large: ${n} bytes (most ${limits.keyBytesMax}): ${quote(key)}`
      : undefined;
  };
  const rangeError = (r: KeyRange) =>
    "prefix" in r
      ? keyError(r.prefix, "Prefix")
      : "fromKey" in r
      ? keyError(r.fromKey, "Range start")
      : keyError(r.key, "Key") ??
        (r.rangeEnd === undefined ? undefined : keyError(r.rangeEnd, "Range end"));
  const opError = (op: PlainCommand, txnOpsMax = limits.txnOpsMax): string | undefined => {
    switch (op.type) {
      case "put":
        if (op.value.length > limits.valueBytesMax) {
          return `Value is too large: ${op.value.length} bytes (most ${limits.valueBytesMax}) for key ${
            quote(op.key)
          }`;
        }
        return keyError(op.key, "Key");
      case "delete":
      case "range":
        return rangeError(op.range);
      case "txn": {
        for (const list of ["compare", "success", "failure"] as const) {
          if (op[list].length > txnOpsMax) {
            return `Transaction has too many ${list} entries: ${
              op[list].length
            } (most ${txnOpsMax})`;
          }
        }
        // As etcd's checkTxnRequest: a nested transaction gets what this level's longest list
        // left of the budget.
        const innerOpsMax = txnOpsMax -
          Math.max(op.compare.length, op.success.length, op.failure.length);
        for (const c of op.compare) {
          const e = keyError(c.key, "Key") ??
            (c.rangeEnd === undefined ? undefined : keyError(c.rangeEnd, "Range end")) ??
            (c.target === "value" && c.value.length > limits.valueBytesMax
              ? `Compare value is too large: ${c.value.length} bytes (most ${limits.valueBytesMax})`
              : undefined);
          if (e !== undefined) return e;
        }
        for (const o of [...op.success, ...op.failure]) {
          const e = opError(o, innerOpsMax);
          if (e !== undefined) return e;
        }
        return undefined;
      }
      case "leaseGrant":
      case "leaseRevoke":
      case "compact":
      case "alarm":
      case "auth":
        return undefined;
    }
  };
  if (command.type === "session") {
    if (typeof command.clientId === "string") {
      const n = utf8Length(command.clientId);
      if (n > limits.clientIdBytesMax) {
        return `Client id is too large: ${n} bytes (most ${limits.clientIdBytesMax}): ${
          quote(command.clientId)
        }`;
      }
    }
    return opError(command.command);
  }
  return opError(command);
}

/**
 * {@linkcode DUPLICATE_KEY_ERROR} when two writes of `txn` may touch the same key, as etcd's
 * checkIntervals decides it before proposing: within each of `success` and `failure` (with the
 * nested transactions of each), no key is put twice, and no put falls in a delete's range; the
 * two branches of one nested transaction may put the same key (only one runs). Deletes may
 * overlap each other. As in etcd 3.4, a delete to the end of the key space (range end `"\0"`)
 * conflicts with nothing. `undefined` when the transaction is fine.
 */
export function txnDuplicateKeyError(txn: TxnCommand): string | undefined {
  try {
    checkWrites(txn.success);
    checkWrites(txn.failure);
    return undefined;
  } catch (e) {
    if (e === DUPLICATE) return DUPLICATE_KEY_ERROR;
    throw e;
  }
}

const DUPLICATE = Symbol("duplicate key");

/** Whether a delete of `range` covers `key`, with etcd 3.4's interval rules (see above). */
function deleteCovers(range: KeyRange, key: string): boolean {
  // etcd compares the range end "\0" as a key, below every key: the interval is empty.
  if ("fromKey" in range) return false;
  if ("prefix" in range) return range.prefix !== "" && key.startsWith(range.prefix);
  if (range.rangeEnd === undefined) return key === range.key;
  return compareKeys(key, range.key) >= 0 && compareKeys(key, range.rangeEnd) < 0;
}

/** The keys `ops` put and the ranges they delete; throws DUPLICATE on a conflict. */
function checkWrites(ops: readonly TxnOp[]): { puts: Set<string>; dels: KeyRange[] } {
  const dels: KeyRange[] = [];
  for (const op of ops) if (op.type === "delete") dels.push(op.range);
  const covered = (key: string) => dels.some((r) => deleteCovers(r, key));
  const puts = new Set<string>();
  for (const op of ops) {
    if (op.type !== "txn") continue;
    const then = checkWrites(op.success);
    const otherwise = checkWrites(op.failure);
    for (const key of then.puts) {
      if (puts.has(key) || covered(key)) throw DUPLICATE;
      puts.add(key);
    }
    for (const key of otherwise.puts) {
      if ((puts.has(key) && !then.puts.has(key)) || covered(key)) throw DUPLICATE;
      puts.add(key);
    }
    // Deletes of nested transactions count for the puts checked after them, as in etcd.
    dels.push(...then.dels, ...otherwise.dels);
  }
  for (const op of ops) {
    if (op.type !== "put") continue;
    if (puts.has(op.key) || covered(op.key)) throw DUPLICATE;
    puts.add(op.key);
  }
  return { puts, dels };
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/**
 * The seed's encoding of a put: `PUT\n<key>\n<value>` as UTF-8.
 *
 * @example
 * ```ts
 * import { encodePut } from "./command.ts";
 * const bytes = encodePut("/services/db", "10.0.0.1\nport 5432");
 * if (new TextDecoder().decode(bytes) !== "PUT\n/services/db\n10.0.0.1\nport 5432") throw new Error();
 * ```
 */
export function encodePut(key: string, value: string): Uint8Array {
  validateKey(key);
  if (typeof value !== "string" || !value.isWellFormed()) {
    throw new CommandError(`Value must be well-formed Unicode: ${quote(String(value))}`);
  }
  // A key the text form cannot carry (a newline, escaped bytes) takes the binary form.
  if (!seedKey(key)) return encodeValid({ type: "put", key, value: utf8(value), prevKv: false });
  return utf8(`PUT\n${key}\n${value}`);
}

/** The seed's encoding of a delete: `DEL\n<key>` as UTF-8 (binary when the key needs it). */
export function encodeDelete(key: string): Uint8Array {
  validateKey(key);
  if (!seedKey(key)) return encodeValid({ type: "delete", range: { key }, prevKv: false });
  return utf8(`DEL\n${key}`);
}

/**
 * Encodes `command`, choosing the seed's text form when the command fits it (a put without
 * `prevKv` whose value is UTF-8 text, or a one-key delete without `prevKv`) and the binary form
 * otherwise. Throws {@linkcode CommandError} on a malformed command.
 *
 * @example
 * ```ts
 * import { decodeCommand, encodeCommand } from "./command.ts";
 * const bytes = encodeCommand({ type: "delete", range: { prefix: "/jobs/" }, prevKv: false });
 * if (bytes[0] !== 0xff || decodeCommand(bytes).type !== "delete") throw new Error();
 * ```
 */
export function encodeCommand(command: Command): Uint8Array {
  validateCommand(command);
  return encodeValid(command);
}

function encodeValid(command: Command): Uint8Array {
  if (
    command.type === "put" && !command.prevKv && !command.lease && seedKey(command.key) &&
    isUtf8(command.value)
  ) {
    const head = utf8(`PUT\n${command.key}\n`);
    const out = new Uint8Array(head.length + command.value.length);
    out.set(head);
    out.set(command.value, head.length);
    return out;
  }
  if (
    command.type === "delete" && !command.prevKv && "key" in command.range &&
    command.range.rangeEnd === undefined && seedKey(command.range.key)
  ) {
    return utf8(`DEL\n${command.range.key}`);
  }
  const w = new ByteWriter();
  w.u8(BINARY_MAGIC);
  w.u8(BINARY_FORMAT_VERSION);
  if (command.type === "session") {
    w.u8(CommandTag.session);
    if (typeof command.clientId === "string") {
      w.u8(0);
      w.str(command.clientId);
    } else {
      w.u8(1);
      w.u53(command.clientId);
    }
    w.u53(command.seq);
    w.bytes(encodeValid(command.command));
  } else {
    writeOp(w, command);
  }
  return w.finish();
}

function writeOp(w: ByteWriter, op: PlainCommand): void {
  w.u8(CommandTag[op.type]);
  switch (op.type) {
    case "put":
      w.key(op.key);
      w.bytes(op.value);
      // Bit 1: a lease id follows (format 1 readers before leases refuse the unknown bit).
      w.u8((op.prevKv ? 1 : 0) | (op.lease ? 2 : 0));
      if (op.lease) w.u53(op.lease);
      return;
    case "delete":
      writeRange(w, op.range);
      w.u8(op.prevKv ? 1 : 0);
      return;
    case "range": {
      writeRange(w, op.range);
      w.u32(op.limit);
      // Bit 2: sort and filter options follow (readers before them refuse the unknown bit).
      const options = hasRangeOptions(op);
      w.u8((op.keysOnly ? 1 : 0) | (op.countOnly ? 2 : 0) | (options ? RANGE_OPTIONS : 0));
      if (options) {
        w.u8(SORT_ORDERS.indexOf(op.sortOrder ?? "none"));
        w.u8(SORT_TARGETS.indexOf(op.sortTarget ?? "key"));
        // Bit i: filter i is negative (etcd's filters are int64; a negative one is allowed).
        let negative = 0;
        RANGE_FILTERS.forEach((f, i) => negative |= (op[f] ?? 0) < 0 ? 1 << i : 0);
        w.u8(negative);
        for (const f of RANGE_FILTERS) w.u53(Math.abs(op[f] ?? 0));
      }
      return;
    }
    case "txn":
      w.u32(op.compare.length);
      for (const c of op.compare) {
        w.key(c.key);
        w.u8(TARGETS.indexOf(c.target) | (c.rangeEnd === undefined ? 0 : COMPARE_RANGE_END));
        w.u8(RESULTS.indexOf(c.result));
        if (c.rangeEnd !== undefined) w.key(c.rangeEnd);
        if (c.target === "value") w.bytes(c.value);
        else w.u53(c.value);
      }
      w.u32(op.success.length);
      for (const o of op.success) writeOp(w, o);
      w.u32(op.failure.length);
      for (const o of op.failure) writeOp(w, o);
      return;
    case "leaseGrant":
      w.u53(op.id);
      w.u53(op.ttlMs);
      return;
    case "leaseRevoke":
      w.u53(op.id);
      w.u8(op.expired ? 1 : 0);
      return;
    case "compact":
      w.u53(op.revision);
      return;
    case "alarm":
      w.u8(ALARM_ACTIONS.indexOf(op.action));
      w.u8(ALARM_TYPES.indexOf(op.alarm));
      w.str(op.memberId);
      return;
    case "auth":
      w.str(JSON.stringify(op.op));
      return;
  }
}

function writeRange(w: ByteWriter, range: KeyRange): void {
  if ("prefix" in range) {
    w.u8(RANGE_KIND.prefix);
    w.key(range.prefix);
  } else if ("fromKey" in range) {
    w.u8(RANGE_KIND.fromKey);
    w.key(range.fromKey);
  } else if (range.rangeEnd === undefined) {
    w.u8(RANGE_KIND.key);
    w.key(range.key);
  } else {
    w.u8(RANGE_KIND.keyRange);
    w.key(range.key);
    w.key(range.rangeEnd);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/** Options for {@linkcode decodeCommand}. */
export interface DecodeOptions {
  /** Bounds the command must respect; {@linkcode DEFAULT_KV_LIMITS} when omitted. */
  readonly limits?: KvLimits;
}

/**
 * Decodes and fully validates a command: structure, keys, and `limits`. Throws
 * {@linkcode CommandError} on anything it would not apply; call it before proposing, with the
 * store's `limits`, so nothing malformed reaches the log.
 *
 * @example
 * ```ts
 * import { CommandError, decodeCommand } from "./command.ts";
 * const cmd = decodeCommand(new TextEncoder().encode("PUT\n/a\nhello"));
 * if (cmd.type !== "put" || cmd.key !== "/a") throw new Error();
 * try {
 *   decodeCommand(new TextEncoder().encode("GET\n/a"));
 *   throw new Error("should refuse");
 * } catch (e) {
 *   if (!(e instanceof CommandError)) throw e;
 * }
 * ```
 */
export function decodeCommand(bytes: Uint8Array, options: DecodeOptions = {}): Command {
  const limits = options.limits ?? DEFAULT_KV_LIMITS;
  if (bytes.length > limits.commandBytesMax) {
    throw new CommandError(
      `Command is too large: ${bytes.length} bytes (most ${limits.commandBytesMax})`,
    );
  }
  const command = parseCommand(bytes);
  const error = commandLimitError(command, bytes.length, limits);
  if (error !== undefined) throw new CommandError(error);
  // Checked before proposing, as etcd does, not at apply: entries logged before the check
  // existed still apply as they did.
  const plain = command.type === "session" ? command.command : command;
  const duplicate = plain.type === "txn" ? txnDuplicateKeyError(plain) : undefined;
  if (duplicate !== undefined) throw new CommandError(duplicate);
  return command;
}

/**
 * Decodes a command and validates its structure, but not the size limits (the store checks those
 * itself, so that breaking a limit is a result, not a crash). Throws {@linkcode CommandError}.
 */
export function parseCommand(bytes: Uint8Array): Command {
  if (!(bytes instanceof Uint8Array)) {
    throw new CommandError(`Command must be bytes: ${String(bytes)}`);
  }
  if (bytes.length === 0) throw new CommandError(`Command must not be empty: ""`);
  if (bytes[0] === BINARY_MAGIC) return parseBinary(bytes);
  if (startsWith(bytes, PUT_PREFIX)) {
    requireText(bytes);
    const end = bytes.indexOf(NEWLINE, PUT_PREFIX.length);
    if (end < 0) {
      throw new CommandError(
        `Put command needs a newline between key and value: ${quoteBytes(bytes)}`,
      );
    }
    const key = strictText(bytes.subarray(PUT_PREFIX.length, end))!;
    validateKey(key);
    return { type: "put", key, value: bytes.slice(end + 1), prevKv: false };
  }
  if (startsWith(bytes, DEL_PREFIX)) {
    requireText(bytes);
    const key = strictText(bytes.subarray(DEL_PREFIX.length))!;
    validateKey(key);
    return { type: "delete", range: { key }, prevKv: false };
  }
  throw new CommandError(
    `Unknown command (expected "PUT\\n", "DEL\\n" or byte 0xff first): ${quoteBytes(bytes)}`,
  );
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

function requireText(bytes: Uint8Array): void {
  if (!isUtf8(bytes)) {
    throw new CommandError(`Command is not valid UTF-8: ${quoteBytes(bytes)}`);
  }
}

/**
 * `command` (encoded) wrapped in an auth guard: the auth revision its permissions were checked
 * at. The store refuses it ("revision of auth store is old") when auth is enabled and the auth
 * state changed since, so a permission taken away between the check and the apply is never
 * used; the node checks again and proposes anew, as etcd does. Bytes: 0xFF, version, tag 0x0b,
 * authRevision u53, then the command's own bytes.
 */
export function encodeAuthGuarded(authRevision: number, command: Uint8Array): Uint8Array {
  if (!Number.isSafeInteger(authRevision) || authRevision < 0) {
    throw new CommandError(`Auth revision must be a non-negative integer: ${authRevision}`);
  }
  const out = new Uint8Array(11 + command.length);
  out[0] = BINARY_MAGIC;
  out[1] = BINARY_FORMAT_VERSION;
  out[2] = CommandTag.authGuard;
  const view = new DataView(out.buffer);
  view.setUint32(3, Math.floor(authRevision / 0x1_0000_0000));
  view.setUint32(7, authRevision >>> 0);
  out.set(command, 11);
  return out;
}

/** The auth revision and the command inside an auth guard, or undefined for other bytes. */
export function splitAuthGuard(
  bytes: Uint8Array,
): { authRevision: number; command: Uint8Array } | undefined {
  if (bytes.length < 3 || bytes[0] !== BINARY_MAGIC || bytes[2] !== CommandTag.authGuard) {
    return undefined;
  }
  if (bytes[1] !== BINARY_FORMAT_VERSION) return undefined; // parseBinary names the version
  if (bytes.length < 12) throw new CommandError(`Auth guard is truncated: ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hi = view.getUint32(3);
  if (hi > 0x1f_ffff) throw new CommandError(`Auth guard revision is above 2^53 - 1`);
  const command = bytes.subarray(11);
  if (splitAuthGuard(command) !== undefined) {
    throw new CommandError(`An auth guard cannot wrap an auth guard`);
  }
  return { authRevision: hi * 0x1_0000_0000 + view.getUint32(7), command };
}

function parseBinary(bytes: Uint8Array): Command {
  const guarded = splitAuthGuard(bytes);
  if (guarded !== undefined) return parseCommand(guarded.command);
  const r = new Reader(bytes);
  r.u8(); // magic
  const version = r.u8();
  if (version !== BINARY_FORMAT_VERSION) {
    throw new CommandError(
      `Unsupported command format version: ${version} (this build reads ${BINARY_FORMAT_VERSION})`,
    );
  }
  const tag = r.u8();
  let command: Command;
  if (tag === CommandTag.session) {
    const kind = r.u8();
    let clientId: ClientId;
    if (kind === 0) clientId = r.str("Client id");
    else if (kind === 1) clientId = r.u53("Client id");
    else throw new CommandError(`Unknown client id kind: ${kind}`);
    const seq = r.u53("Sequence number");
    const innerBytes = r.bytes();
    let inner: Command;
    try {
      inner = parseCommand(innerBytes);
    } catch (e) {
      if (e instanceof CommandError) throw new CommandError(`Session command: ${e.message}`);
      throw e;
    }
    if (inner.type === "session") {
      throw new CommandError(`A session command cannot wrap a session command: "session"`);
    }
    command = { type: "session", clientId, seq, command: inner };
  } else {
    command = readOp(r, tag, 0);
  }
  r.end();
  validateCommand(command);
  return command;
}

/** `depth`: 0 outside a transaction, else the level of the transaction holding the op. */
function readOp(r: Reader, tag: number, depth: number): PlainCommand {
  const inTxn = depth > 0;
  switch (tag) {
    case CommandTag.put: {
      const key = r.key();
      const value = r.bytes().slice();
      const flags = r.flags(3, "Put");
      const prevKv = (flags & 1) !== 0;
      if ((flags & 2) === 0) return { type: "put", key, value, prevKv } satisfies PutCommand;
      const lease = r.u53("Lease id");
      if (lease === 0) throw new CommandError(`Put lease flag set with lease id 0`);
      return { type: "put", key, value, prevKv, lease } satisfies PutCommand;
    }
    case CommandTag.delete: {
      const range = readRange(r);
      const prevKv = r.flags(1, "Delete") === 1;
      return { type: "delete", range, prevKv } satisfies DeleteCommand;
    }
    case CommandTag.range: {
      const range = readRange(r);
      const limit = r.u32();
      const flags = r.flags(3 | RANGE_OPTIONS, "Range");
      const command: RangeCommand = {
        type: "range",
        range,
        limit,
        keysOnly: (flags & 1) !== 0,
        countOnly: (flags & 2) !== 0,
      };
      if ((flags & RANGE_OPTIONS) === 0) return command;
      const sortOrder = SORT_ORDERS[r.u8()];
      const sortTarget = SORT_TARGETS[r.u8()];
      if (sortOrder === undefined || sortTarget === undefined) {
        throw new CommandError(`Unknown range sort order or target`);
      }
      const negative = r.flags(0x0f, "Range filter sign");
      const options: Record<string, number> = {};
      RANGE_FILTERS.forEach((f, i) => {
        const v = r.u53(f);
        if (v !== 0) options[f] = negative & (1 << i) ? -v : v;
      });
      return { ...command, sortOrder, sortTarget, ...options } satisfies RangeCommand;
    }
    case CommandTag.txn: {
      if (depth >= TXN_DEPTH_MAX) {
        throw new CommandError(`Transactions nest too deep: more than ${TXN_DEPTH_MAX} levels`);
      }
      const compare: Compare[] = [];
      const nCompare = r.count("compare");
      for (let i = 0; i < nCompare; i++) {
        const key = r.key();
        const t = r.u8();
        const result = RESULTS[r.u8()];
        const target = TARGETS[t & ~COMPARE_RANGE_END];
        if (target === undefined) throw new CommandError(`Unknown compare target: ${t}`);
        if (result === undefined) throw new CommandError(`Unknown compare result in compare ${i}`);
        const rangeEnd = t & COMPARE_RANGE_END ? { rangeEnd: r.key() } : {};
        compare.push(
          target === "value"
            ? { key, ...rangeEnd, target, result, value: r.bytes().slice() }
            : { key, ...rangeEnd, target, result, value: r.u53(`Compare ${target}`) },
        );
      }
      const ops = (list: string) => {
        const out: TxnOp[] = [];
        const n = r.count(list);
        for (let i = 0; i < n; i++) out.push(readOp(r, r.u8(), depth + 1) as TxnOp);
        return out;
      };
      const success = ops("success");
      const failure = ops("failure");
      return { type: "txn", compare, success, failure };
    }
    case CommandTag.alarm: {
      if (inTxn) {
        throw new CommandError(`A transaction may hold only put, delete and range: tag 0x09`);
      }
      const action = ALARM_ACTIONS[r.u8()];
      const alarm = ALARM_TYPES[r.u8()];
      if (action === undefined || alarm === undefined) {
        throw new CommandError(`Unknown alarm action or type`);
      }
      return {
        type: "alarm",
        action,
        alarm,
        memberId: r.str("Alarm member id"),
      } satisfies AlarmCommand;
    }
    case CommandTag.auth: {
      if (inTxn) {
        throw new CommandError(`A transaction may hold only put, delete and range: tag 0x0a`);
      }
      let op: unknown;
      try {
        op = JSON.parse(r.str("Auth op"));
      } catch (e) {
        if (e instanceof CommandError) throw e;
        throw new CommandError(`Auth op is not JSON: ${(e as Error).message}`);
      }
      validateAuthOp(op);
      return { type: "auth", op } as AuthCommand;
    }
    case CommandTag.leaseGrant:
    case CommandTag.leaseRevoke:
    case CommandTag.compact:
      if (inTxn) {
        throw new CommandError(
          `A transaction may hold only put, delete and range: tag 0x0${tag.toString(16)}`,
        );
      }
      if (tag === CommandTag.leaseGrant) {
        const id = r.u53("Lease id");
        return { type: "leaseGrant", id, ttlMs: r.u53("Lease TTL") } satisfies LeaseGrantCommand;
      }
      if (tag === CommandTag.leaseRevoke) {
        const id = r.u53("Lease id");
        const expired = r.flags(1, "Lease revoke") === 1;
        return { type: "leaseRevoke", id, expired } satisfies LeaseRevokeCommand;
      }
      return { type: "compact", revision: r.u53("Compact revision") };
    default:
      throw new CommandError(`Unknown command tag: 0x${tag.toString(16).padStart(2, "0")}`);
  }
}

function readRange(r: Reader): KeyRange {
  const kind = r.u8();
  switch (kind) {
    case RANGE_KIND.key:
      return { key: r.key() };
    case RANGE_KIND.keyRange:
      return { key: r.key(), rangeEnd: r.key() };
    case RANGE_KIND.prefix:
      return { prefix: r.key() };
    case RANGE_KIND.fromKey:
      return { fromKey: r.key() };
    default:
      throw new CommandError(`Unknown range kind: ${kind}`);
  }
}

class Reader {
  #bytes: Uint8Array;
  #view: DataView;
  #pos = 0;
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  #need(n: number): void {
    if (this.#pos + n > this.#bytes.length) {
      throw new CommandError(
        `Command is truncated: needs ${n} bytes at offset ${this.#pos} but ${
          this.#bytes.length - this.#pos
        } remain`,
      );
    }
  }
  u8(): number {
    this.#need(1);
    return this.#bytes[this.#pos++];
  }
  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#pos);
    this.#pos += 4;
    return v;
  }
  u53(what: string): number {
    this.#need(8);
    const hi = this.#view.getUint32(this.#pos);
    const lo = this.#view.getUint32(this.#pos + 4);
    if (hi > 0x1f_ffff) {
      throw new CommandError(`${what} is above 2^53 - 1 at offset ${this.#pos}`);
    }
    this.#pos += 8;
    return hi * 0x1_0000_0000 + lo;
  }
  /** A count of list entries; each takes at least one byte, so a count above that is refused. */
  count(list: string): number {
    const n = this.u32();
    if (n > this.#bytes.length - this.#pos) {
      throw new CommandError(`Transaction ${list} count is larger than the command: ${n}`);
    }
    return n;
  }
  flags(allowed: number, what: string): number {
    const f = this.u8();
    if ((f & ~allowed) !== 0) {
      throw new CommandError(
        `${what} flags have unknown bits: 0x${f.toString(16).padStart(2, "0")}`,
      );
    }
    return f;
  }
  bytes(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const out = this.#bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }
  /** A key: any bytes, as their key string. */
  key(): string {
    return keyFromBytes(this.bytes());
  }
  str(what: string): string {
    const b = this.bytes();
    const s = strictText(b);
    if (s === undefined) throw new CommandError(`${what} is not valid UTF-8: ${quoteBytes(b)}`);
    return s;
  }
  end(): void {
    if (this.#pos !== this.#bytes.length) {
      throw new CommandError(
        `Command has ${this.#bytes.length - this.#pos} trailing bytes at offset ${this.#pos}`,
      );
    }
  }
}
