/**
 * Authentication and authorization on a node, as etcd's: password hashes (PBKDF2, made on the
 * node that proposes the change), simple tokens with a TTL that live on the node that issued
 * them, failed logins rate-limited and logged, the one permission check every face calls
 * ({@linkcode NodeAuth.require}), the `/v3/auth/*` routes, and the signed user name a follower
 * sends along with a request it forwards to the leader. The replicated state (users, roles,
 * permissions) is src/kv/auth.ts.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import {
  AUTH_FAILED,
  AUTH_NOT_ENABLED,
  type AuthOp,
  type AuthState,
  commandNeeds,
  INVALID_AUTH_MGMT,
  INVALID_AUTH_TOKEN,
  type Needs,
  type PasswordHash,
  PERMISSION_DENIED,
  type PermType,
  ROLE_EMPTY,
  ROLE_NOT_FOUND,
  USER_EMPTY,
  USER_NOT_FOUND,
} from "../kv/auth.ts";
import type { KeyRange, PlainCommand } from "../kv/types.ts";
import { keyBytes } from "../kv/bytes.ts";
import { badRequest, encodeBase64, Fields, HttpError, keyRange } from "./etcd.ts";

/** etcd's `--auth-token-ttl` default: a simple token lives 300 s after its last use. */
export const AUTH_TOKEN_TTL_SECONDS_DEFAULT = 300;
/** PBKDF2-HMAC-SHA-256 iterations for new password hashes (`--auth-pbkdf2-iterations`). */
export const PBKDF2_ITERATIONS_DEFAULT = 210_000;
/** The fewest iterations `--auth-pbkdf2-iterations` accepts (lower only makes sense in tests). */
export const PBKDF2_ITERATIONS_MIN = 1_000;
/** Most tokens a node holds; the least recently used goes first. */
export const TOKENS_MAX = 100_000;
/** Failed logins of one user name within {@linkcode LOGIN_WINDOW_MS} before logins are refused. */
export const LOGIN_FAILURES_PER_USER_MAX = 5;
/** Failed logins from one address within {@linkcode LOGIN_WINDOW_MS} before it is refused. */
export const LOGIN_FAILURES_PER_ADDRESS_MAX = 20;
/** The window failed logins are counted in. */
export const LOGIN_WINDOW_MS = 60_000;
/** Most user names and addresses the login limiter tracks (the oldest are forgotten). */
export const LOGIN_TRACKED_MAX = 10_000;
/** Longest password accepted, in UTF-8 bytes (etcd has none; bcrypt reads 72). */
export const PASSWORD_BYTES_MAX = 1024;

/** Header a follower puts on a request it forwards: the user it checked the request for. */
export const FORWARDED_USER_HEADER = "raftmeta-forwarded-user";
/** Header with the HMAC (over the cluster secret) of the forwarded user, method, path and body. */
export const FORWARDED_SIGNATURE_HEADER = "raftmeta-forwarded-signature";

/** Attempts of a request whose write met a newer auth state (checked again each time). */
export const AUTH_RECHECKS_MAX = 3;

/** etcd's "too many requests" with the reason: gRPC ResourceExhausted, HTTP 429. */
const TOO_MANY_REQUESTS = "etcdserver: too many requests";

// ---- Password hashes ----------------------------------------------------------------------------

function derive(password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    pbkdf2(password, salt, iterations, 32, "sha256", (e, key) => e ? reject(e) : resolve(key))
  );
}

/** A new hash of `password` with a random 16-byte salt (runs off the event loop). */
export async function hashPassword(password: string, iterations: number): Promise<PasswordHash> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, iterations);
  return {
    algorithm: "pbkdf2-sha256",
    iterations,
    salt: salt.toString("base64"),
    hash: hash.toString("base64"),
  };
}

/** Whether `password` matches `hash` (compared in constant time). */
export async function verifyPassword(password: string, hash: PasswordHash): Promise<boolean> {
  const want = Buffer.from(hash.hash, "base64");
  const got = await derive(password, Buffer.from(hash.salt, "base64"), hash.iterations);
  return got.length === want.length && timingSafeEqual(got, want);
}

// ---- Tokens -------------------------------------------------------------------------------------

interface TokenInfo {
  readonly user: string;
  /** The auth revision it was issued at: void once auth is enabled again after it. */
  readonly authRevision: number;
  /** The user's password salt when the token was issued: a new password ends the token. */
  readonly salt: string;
  expiresMs: number;
}

/**
 * etcd's simple tokens: random text, kept on this node only, each valid until `ttlMs` after its
 * last use (etcd resets the TTL on use too). At most {@linkcode TOKENS_MAX}.
 */
export class TokenKeeper {
  readonly #tokens = new Map<string, TokenInfo>();
  readonly #ttlMs: number;
  readonly #nowMs: () => number;
  #issued = 0;

  /** A keeper whose tokens live `ttlMs`, timed by `nowMs`. */
  constructor(ttlMs: number, nowMs: () => number) {
    this.#ttlMs = ttlMs;
    this.#nowMs = nowMs;
  }

  /** Number of live tokens (expired ones are dropped when met). */
  get size(): number {
    return this.#tokens.size;
  }

  /** A new token for `user`, issued at `authRevision`. */
  issue(user: string, salt: string, authRevision = 0): string {
    while (this.#tokens.size >= TOKENS_MAX) {
      this.#tokens.delete(this.#tokens.keys().next().value!);
    }
    // As etcd's simple token: 16 random letters, a dot, a counter.
    const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const random = randomBytes(16);
    let token = "";
    for (const b of random) token += letters[b % letters.length];
    token += `.${++this.#issued}`;
    this.#tokens.set(token, { user, salt, authRevision, expiresMs: this.#nowMs() + this.#ttlMs });
    return token;
  }

  /** The token's user, salt and revision, its TTL renewed; undefined when unknown or expired. */
  use(token: string): { user: string; salt: string; authRevision: number } | undefined {
    const info = this.#tokens.get(token);
    if (info === undefined) return undefined;
    const now = this.#nowMs();
    this.#tokens.delete(token);
    if (now >= info.expiresMs) return undefined;
    info.expiresMs = now + this.#ttlMs;
    this.#tokens.set(token, info); // most recently used last
    return info;
  }

  /** Forgets every token (auth disabled). */
  clear(): void {
    this.#tokens.clear();
  }
}

// ---- Failed logins ------------------------------------------------------------------------------

/** Counts failed logins per key (a user name, an address) in a sliding window, bounded. */
class FailureCounter {
  readonly #failures = new Map<string, number[]>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }

  /** Failures of `key` within the window ending at `nowMs`. */
  count(key: string, nowMs: number): number {
    const list = this.#failures.get(key);
    if (list === undefined) return 0;
    while (list.length > 0 && list[0] <= nowMs - LOGIN_WINDOW_MS) list.shift();
    if (list.length === 0) this.#failures.delete(key);
    return list.length;
  }

  /** When `key`'s oldest counted failure leaves the window. */
  retryAtMs(key: string): number {
    return (this.#failures.get(key)?.[0] ?? 0) + LOGIN_WINDOW_MS;
  }

  add(key: string, nowMs: number): void {
    let list = this.#failures.get(key);
    if (list === undefined) {
      while (this.#failures.size >= LOGIN_TRACKED_MAX) {
        this.#failures.delete(this.#failures.keys().next().value!);
      }
      list = [];
      this.#failures.set(key, list);
    }
    list.push(nowMs);
    if (list.length > this.#max) list.shift();
  }
}

// ---- Identity -----------------------------------------------------------------------------------

/**
 * Who sent a request: the token it carries (the `Authorization` header, gRPC's `token`
 * metadata), or the user a follower vouched for when it forwarded the request, and the address it
 * came from (for the login limiter and the logs).
 */
export interface Identity {
  /** The token, if any. */
  readonly token?: string;
  /** The user a follower checked the request for (its signature verified). */
  readonly forwardedUser?: string;
  /** The client's address, e.g. `127.0.0.1`. */
  readonly address: string;
  /** The user once resolved (set by {@linkcode NodeAuth.userOf}). */
  user?: string;
  /**
   * The auth revision the last check ran at (set by {@linkcode NodeAuth.require} once the
   * cluster has any auth state): writes carry it in an auth guard, so the store refuses them if
   * the auth state changed before they applied.
   */
  checkedAuthRevision?: number;
}

/** What an operation needs. */
export type Access =
  /** Nothing: open to anyone even with auth on (as etcd: status, member list, leases). */
  | { readonly kind: "open" }
  /** Read and write permissions on key ranges. */
  | { readonly kind: "keys"; readonly needs: Needs }
  /** Any authenticated user: the operations endpoints (`/metrics`, `/v1/status`). */
  | { readonly kind: "user" }
  /** The root role (compaction, maintenance, member changes, auth changes). */
  | { readonly kind: "root" };

/** Options of {@linkcode NodeAuth}. */
export interface NodeAuthOptions {
  /** The clock (ms). */
  readonly nowMs: () => number;
  /** Token TTL in ms (default {@linkcode AUTH_TOKEN_TTL_SECONDS_DEFAULT} s). */
  readonly tokenTtlMs?: number;
  /** PBKDF2 iterations for new hashes (default {@linkcode PBKDF2_ITERATIONS_DEFAULT}). */
  readonly pbkdf2Iterations?: number;
  /** The cluster secret: the key of forwarded users' signatures ("" or absent: none). */
  readonly secret?: string;
  /** Logs an event (never given a password or a token). */
  readonly logEvent: (event: string, fields: Record<string, unknown>) => void;
}

/** A node's auth machinery: its tokens, its login limiter, the checks. */
export class NodeAuth {
  /** This node's tokens. */
  readonly tokens: TokenKeeper;
  /** Iterations of new password hashes. */
  readonly pbkdf2Iterations: number;
  /** Failed logins, counted. */
  failedLogins = 0;
  readonly #nowMs: () => number;
  readonly #signKey: Buffer | undefined;
  readonly #log: NodeAuthOptions["logEvent"];
  readonly #perUser = new FailureCounter(LOGIN_FAILURES_PER_USER_MAX);
  readonly #perAddress = new FailureCounter(LOGIN_FAILURES_PER_ADDRESS_MAX);
  /** Hashed against for an unknown user, so its answer takes as long as a wrong password's. */
  #dummy: Promise<PasswordHash> | undefined;

  /** Auth for one node. */
  constructor(options: NodeAuthOptions) {
    const ttlMs = options.tokenTtlMs ?? AUTH_TOKEN_TTL_SECONDS_DEFAULT * 1000;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) {
      throw new RangeError(`Auth token TTL must be a positive integer of ms: ${ttlMs}`);
    }
    this.pbkdf2Iterations = options.pbkdf2Iterations ?? PBKDF2_ITERATIONS_DEFAULT;
    if (
      !Number.isSafeInteger(this.pbkdf2Iterations) ||
      this.pbkdf2Iterations < PBKDF2_ITERATIONS_MIN
    ) {
      throw new RangeError(
        `PBKDF2 iterations must be an integer of at least ${PBKDF2_ITERATIONS_MIN}: ${this.pbkdf2Iterations}`,
      );
    }
    this.#nowMs = options.nowMs;
    this.tokens = new TokenKeeper(ttlMs, options.nowMs);
    this.#log = options.logEvent;
    this.#signKey = options.secret
      ? createHmac("sha256", options.secret).update("raftmeta forwarded user v1").digest()
      : undefined;
  }

  /**
   * The user `identity` stands for, under `state`; throws etcd's error when there is none:
   * no token ("user name is empty"), a token unknown here or expired, or whose user is gone or
   * has a new password ("invalid auth token").
   */
  userOf(identity: Identity, state: AuthState): string {
    if (identity.user !== undefined) return identity.user;
    let user: string;
    if (identity.forwardedUser !== undefined) {
      user = identity.forwardedUser;
      if (state.user(user) === undefined) throw new HttpError(401, INVALID_AUTH_TOKEN, 16);
    } else {
      if (identity.token === undefined || identity.token === "") {
        throw new HttpError(400, USER_EMPTY, 3);
      }
      const info = this.tokens.use(identity.token);
      const u = info === undefined ? undefined : state.user(info.user);
      if (
        info === undefined || u === undefined || (u.password?.salt ?? "") !== info.salt ||
        info.authRevision < state.enabledAt
      ) {
        throw new HttpError(401, INVALID_AUTH_TOKEN, 16);
      }
      user = info.user;
    }
    identity.user = user;
    return user;
  }

  /** Throws etcd's error unless `identity` may do what `access` says under `state`. */
  require(identity: Identity, state: AuthState, access: Access): void {
    if (state.authRevision > 0) identity.checkedAuthRevision = state.authRevision;
    if (!state.enabled || access.kind === "open") return;
    const user = this.userOf(identity, state);
    const ok = access.kind === "user" ||
      (access.kind === "root" ? state.isRoot(user) : state.permits(user, access.needs));
    if (!ok) throw new HttpError(403, PERMISSION_DENIED, 7);
  }

  /** {@linkcode require} for a key-value command (put, delete, range, txn). */
  requireCommand(identity: Identity, state: AuthState, command: PlainCommand): void {
    if (!state.enabled) return;
    this.require(identity, state, { kind: "keys", needs: commandNeeds(command) });
  }

  /**
   * A token for `name` if `password` is its password. Refused without hashing while the user
   * name or the address has too many recent failures; every failure is logged (name, address,
   * reason; never the password).
   */
  async authenticate(
    state: AuthState,
    name: string,
    password: string,
    address: string,
  ): Promise<string> {
    if (!state.enabled) throw new HttpError(400, AUTH_NOT_ENABLED, 9);
    if (name === "") throw new HttpError(400, USER_EMPTY, 3);
    const now = this.#nowMs();
    for (
      const [counter, key, what] of [
        [this.#perUser, name, `user ${JSON.stringify(name)}`],
        [this.#perAddress, address, `address ${address}`],
      ] as const
    ) {
      const max = counter === this.#perUser
        ? LOGIN_FAILURES_PER_USER_MAX
        : LOGIN_FAILURES_PER_ADDRESS_MAX;
      if (counter.count(key, now) >= max) {
        const retrySeconds = Math.max(1, Math.ceil((counter.retryAtMs(key) - now) / 1000));
        this.#log("auth-login-refused", { user: name, address, reason: "rate-limited" });
        throw new HttpError(
          429,
          `${TOO_MANY_REQUESTS} (${max} failed logins for ${what} within ${
            LOGIN_WINDOW_MS / 1000
          } s; try again in ${retrySeconds} s)`,
          8,
          retrySeconds,
        );
      }
    }
    const user = state.user(name);
    let ok = false;
    if (user?.password !== undefined && utf8Bytes(password) <= PASSWORD_BYTES_MAX) {
      ok = await verifyPassword(password, user.password);
    } else {
      this.#dummy ??= hashPassword("", this.pbkdf2Iterations);
      await verifyPassword(password.slice(0, PASSWORD_BYTES_MAX), await this.#dummy);
    }
    // The user may have changed while the hash ran: the token names the salt checked.
    const now2 = this.#nowMs();
    if (!ok || state.user(name)?.password?.salt !== user?.password?.salt) {
      this.failedLogins++;
      this.#perUser.add(name, now2);
      this.#perAddress.add(address, now2);
      this.#log("auth-failed", {
        user: name,
        address,
        reason: user === undefined
          ? "unknown user"
          : user.password === undefined
          ? "user has no password"
          : "wrong password",
      });
      throw new HttpError(400, AUTH_FAILED, 3);
    }
    return this.tokens.issue(name, user!.password!.salt, state.authRevision);
  }

  /**
   * The headers that vouch for `user` on a request this node sends to another member (its
   * name and signature), or undefined without a cluster secret.
   */
  vouchFor(
    user: string,
    method: string,
    target: string,
    body: Uint8Array,
  ): Record<string, string> | undefined {
    const signature = this.sign(user, method, target, body);
    if (signature === undefined) return undefined;
    return {
      [FORWARDED_USER_HEADER]: encodeURIComponent(user),
      [FORWARDED_SIGNATURE_HEADER]: signature,
    };
  }

  /** The signature of a request forwarded for `user`, or undefined without a cluster secret. */
  sign(user: string, method: string, target: string, body: Uint8Array): string | undefined {
    if (this.#signKey === undefined) return undefined;
    const bodyHash = createHash("sha256").update(body).digest("hex");
    return createHmac("sha256", this.#signKey)
      .update(`${user}\n${method} ${target}\n${bodyHash}`)
      .digest("base64");
  }

  /**
   * The user a forwarding follower vouched for in `headers`, or undefined when there is none.
   * Throws "invalid auth token" when the signature does not verify (or there is no secret).
   */
  forwardedUser(
    headers: { get(name: string): string | null },
    method: string,
    target: string,
    body: Uint8Array,
  ): string | undefined {
    const encoded = headers.get(FORWARDED_USER_HEADER);
    if (encoded === null) return undefined;
    let user: string;
    try {
      user = decodeURIComponent(encoded);
    } catch {
      throw new HttpError(401, INVALID_AUTH_TOKEN, 16);
    }
    const want = this.sign(user, method, target, body);
    const got = headers.get(FORWARDED_SIGNATURE_HEADER) ?? "";
    if (
      want === undefined || got.length !== want.length ||
      !timingSafeEqual(Buffer.from(got), Buffer.from(want))
    ) {
      this.#log("auth-forward-refused", { user, reason: "bad signature" });
      throw new HttpError(401, INVALID_AUTH_TOKEN, 16);
    }
    return user;
  }
}

function utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).length;
}

// ---- The /v3/auth/* routes ----------------------------------------------------------------------

/** The Auth service's gateway paths (etcd 3.4, plus 3.5's status). */
export const AUTH_ROUTES: readonly string[] = [
  "/v3/auth/enable",
  "/v3/auth/disable",
  "/v3/auth/status",
  "/v3/auth/authenticate",
  "/v3/auth/user/add",
  "/v3/auth/user/get",
  "/v3/auth/user/list",
  "/v3/auth/user/delete",
  "/v3/auth/user/changepw",
  "/v3/auth/user/grant",
  "/v3/auth/user/revoke",
  "/v3/auth/role/add",
  "/v3/auth/role/get",
  "/v3/auth/role/list",
  "/v3/auth/role/delete",
  "/v3/auth/role/grant",
  "/v3/auth/role/revoke",
];

/** etcd's gRPC code (and the gateway's HTTP status) for each error an auth change may end in. */
const AUTH_ERROR_CODES: Record<string, [number, number]> = {
  [USER_EMPTY]: [400, 3],
  [ROLE_EMPTY]: [400, 3],
  [INVALID_AUTH_MGMT]: [400, 3],
};

/** The error an auth change was refused with, as the gateway answers it. */
export function authRejected(error: string): HttpError {
  const [status, code] = AUTH_ERROR_CODES[error] ??
    (error.startsWith("etcdserver: ") ? [400, 9] : [400, 3]);
  return new HttpError(status, error, code);
}

const PERM_NAMES: Record<string, PermType> = {
  READ: "READ",
  WRITE: "WRITE",
  READWRITE: "READWRITE",
  "0": "READ",
  "1": "WRITE",
  "2": "READWRITE",
};

/** etcd's permission key and range end as bytes (the gateway's base64 or the gRPC face's). */
function permissionRange(f: Fields): KeyRange {
  const key = f.bytes("key");
  if (key === undefined || key.length === 0) throw badRequest('Field "key" is not provided');
  return keyRange(f);
}

function rangeJson(range: KeyRange): Record<string, string> {
  const enc = (s: string) => encodeBase64(keyBytes(s));
  if ("prefix" in range) {
    const bytes = new TextEncoder().encode(range.prefix);
    if (bytes.length === 0) return { key: enc("\u0000"), range_end: enc("\u0000") };
    const end = bytes.slice();
    let i = end.length - 1;
    while (i >= 0 && end[i] === 0xff) i--;
    end[i]++;
    return { key: enc(range.prefix), range_end: encodeBase64(end.subarray(0, i + 1)) };
  }
  if ("fromKey" in range) return { key: enc(range.fromKey), range_end: enc("\u0000") };
  return range.rangeEnd === undefined
    ? { key: enc(range.key) }
    : { key: enc(range.key), range_end: enc(range.rangeEnd) };
}

/** How the auth routes reach the log: propose an op made (and hashed) at the leader. */
export interface AuthRouteContext {
  /** The request's identity. */
  readonly identity: Identity;
  /** Runs `make` at the leader (forwarding if needed), proposes its op, answers `{header}`. */
  write(make: () => Promise<AuthOp>): Promise<Record<string, unknown>>;
  /** Waits until a linearizable read may be served here. */
  linearizable(): Promise<void>;
  /** The response header. */
  header(): Record<string, unknown>;
}

function stringField(f: Fields, name: string): string {
  const v = f.get(name);
  if (v === undefined) return "";
  if (typeof v !== "string") throw badRequest(`Field "${name}" must be a string`);
  return v;
}

/**
 * Serves one `/v3/auth/*` request. Who may: anyone for authenticate and status, the user itself
 * for its own user get and for the roles it holds, root for the rest — everyone while auth is
 * disabled (as etcd).
 */
export async function authAnswer(
  auth: NodeAuth,
  state: () => AuthState,
  path: string,
  body: unknown,
  ctx: AuthRouteContext,
): Promise<Record<string, unknown>> {
  const f = new Fields(body, path);
  const root = () => auth.require(ctx.identity, state(), { kind: "root" });
  const nameOf = (field: string, empty: string) => {
    const name = stringField(f, field);
    if (name === "") throw new HttpError(400, empty, 3);
    return name;
  };
  switch (path) {
    case "/v3/auth/authenticate": {
      await ctx.linearizable();
      const name = stringField(f, "name");
      const password = stringField(f, "password");
      const token = await auth.authenticate(state(), name, password, ctx.identity.address);
      return { header: ctx.header(), token };
    }
    case "/v3/auth/status": {
      await ctx.linearizable();
      const s = state();
      return { header: ctx.header(), enabled: s.enabled, authRevision: String(s.authRevision) };
    }
    case "/v3/auth/enable":
      root();
      return await ctx.write(() => Promise.resolve({ op: "enable" }));
    case "/v3/auth/disable":
      root();
      return await ctx.write(() => Promise.resolve({ op: "disable" }));
    case "/v3/auth/user/add": {
      root();
      const name = nameOf("name", USER_EMPTY);
      const password = stringField(f, "password");
      const options = f.get("options") as Record<string, unknown> | undefined;
      const noPassword = options?.no_password === true || options?.noPassword === true;
      if (!noPassword && password === "") {
        throw badRequest(`A user needs a password (or options.no_password): "${name}"`);
      }
      if (utf8Bytes(password) > PASSWORD_BYTES_MAX) {
        throw badRequest(`Password is too long: most ${PASSWORD_BYTES_MAX} bytes`);
      }
      return await ctx.write(async () =>
        noPassword
          ? { op: "userAdd", name }
          : { op: "userAdd", name, password: await hashPassword(password, auth.pbkdf2Iterations) }
      );
    }
    case "/v3/auth/user/changepw": {
      root();
      const name = nameOf("name", USER_EMPTY);
      const password = stringField(f, "password");
      if (password === "" || utf8Bytes(password) > PASSWORD_BYTES_MAX) {
        throw badRequest(`Password must have 1 to ${PASSWORD_BYTES_MAX} bytes`);
      }
      if (state().user(name) === undefined) throw authRejected(USER_NOT_FOUND);
      return await ctx.write(async () => ({
        op: "userChangePassword",
        name,
        password: await hashPassword(password, auth.pbkdf2Iterations),
      }));
    }
    case "/v3/auth/user/delete":
      root();
      return await ctx.write(() =>
        Promise.resolve({ op: "userDelete", name: nameOf("name", USER_EMPTY) })
      );
    case "/v3/auth/user/grant":
      root();
      return await ctx.write(() =>
        Promise.resolve({
          op: "userGrantRole",
          name: nameOf("user", USER_EMPTY),
          role: nameOf("role", ROLE_EMPTY),
        })
      );
    case "/v3/auth/user/revoke":
      root();
      return await ctx.write(() =>
        Promise.resolve({
          op: "userRevokeRole",
          name: nameOf("name", USER_EMPTY),
          role: nameOf("role", ROLE_EMPTY),
        })
      );
    case "/v3/auth/role/add":
      root();
      return await ctx.write(() =>
        Promise.resolve({ op: "roleAdd", role: nameOf("name", ROLE_EMPTY) })
      );
    case "/v3/auth/role/delete":
      root();
      return await ctx.write(() =>
        Promise.resolve({ op: "roleDelete", role: nameOf("role", ROLE_EMPTY) })
      );
    case "/v3/auth/role/grant": {
      root();
      const role = nameOf("name", ROLE_EMPTY);
      const perm = new Fields(f.get("perm") ?? {}, "Permission");
      const permType = PERM_NAMES[String(perm.get("permType") ?? perm.get("perm_type") ?? "0")];
      if (permType === undefined) {
        throw badRequest(`Field "permType" must be READ, WRITE or READWRITE`);
      }
      const range = permissionRange(perm);
      return await ctx.write(() =>
        Promise.resolve({ op: "roleGrantPermission", role, permission: { permType, range } })
      );
    }
    case "/v3/auth/role/revoke": {
      root();
      const role = nameOf("role", ROLE_EMPTY);
      const range = permissionRange(f);
      return await ctx.write(() => Promise.resolve({ op: "roleRevokePermission", role, range }));
    }
    case "/v3/auth/user/get": {
      await ctx.linearizable();
      const name = nameOf("name", USER_EMPTY);
      const s = state();
      if (s.enabled && auth.userOf(ctx.identity, s) !== name) root();
      const user = s.user(name);
      if (user === undefined) throw authRejected(USER_NOT_FOUND);
      const out: Record<string, unknown> = { header: ctx.header() };
      if (user.roles.length > 0) out.roles = [...user.roles];
      return out;
    }
    case "/v3/auth/role/get": {
      await ctx.linearizable();
      const name = nameOf("role", ROLE_EMPTY);
      const s = state();
      if (s.enabled && !(s.user(auth.userOf(ctx.identity, s))?.roles.includes(name) ?? false)) {
        root();
      }
      const role = s.role(name);
      if (role === undefined) throw authRejected(ROLE_NOT_FOUND);
      const out: Record<string, unknown> = { header: ctx.header() };
      if (role.permissions.length > 0) {
        out.perm = role.permissions.map((p) => ({ permType: p.permType, ...rangeJson(p.range) }));
      }
      return out;
    }
    case "/v3/auth/user/list": {
      root();
      await ctx.linearizable();
      const users = state().userNames();
      return users.length > 0 ? { header: ctx.header(), users } : { header: ctx.header() };
    }
    case "/v3/auth/role/list": {
      root();
      await ctx.linearizable();
      const roles = state().roleNames();
      return roles.length > 0 ? { header: ctx.header(), roles } : { header: ctx.header() };
    }
    default:
      throw new HttpError(404, `Unknown path ${JSON.stringify(path)}`, 5);
  }
}
