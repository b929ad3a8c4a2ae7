// A node's auth machinery with an injected clock (src/net/auth.ts): token expiry, the login
// limiter, password hashes, and the signature of a forwarded user.
import assert from "node:assert/strict";
import { AuthState } from "../src/kv/auth.ts";
import {
  FORWARDED_SIGNATURE_HEADER,
  FORWARDED_USER_HEADER,
  hashPassword,
  LOGIN_FAILURES_PER_USER_MAX,
  LOGIN_WINDOW_MS,
  NodeAuth,
  TokenKeeper,
  verifyPassword,
} from "../src/net/auth.ts";
import type { HttpError } from "../src/net/etcd.ts";

async function stateWith(user: string, password: string): Promise<AuthState> {
  const s = new AuthState();
  const hash = await hashPassword(password, 1000);
  for (
    const op of [
      { op: "userAdd", name: "root", password: hash },
      { op: "userGrantRole", name: "root", role: "root" },
      { op: "userAdd", name: user, password: hash },
      { op: "enable" },
    ] as const
  ) {
    assert.equal(s.apply(op), undefined);
  }
  return s;
}

Deno.test("a token lives its TTL after its last use, then is gone", () => {
  let now = 1_000;
  const keeper = new TokenKeeper(300_000, () => now);
  const token = keeper.issue("u", "salt");
  assert.match(token, /^[A-Za-z]{16}\.1$/);
  now += 299_999;
  assert.deepEqual(keeper.use(token), {
    user: "u",
    salt: "salt",
    authRevision: 0,
    expiresMs: now + 300_000,
  });
  now += 299_999; // renewed by the use above
  assert.notEqual(keeper.use(token), undefined);
  now += 300_000;
  assert.equal(keeper.use(token), undefined);
  assert.equal(keeper.use(token), undefined);
  assert.equal(keeper.use("nonsense"), undefined);
});

Deno.test("password hashes: PBKDF2 with a per-user salt, verified in constant time", async () => {
  const a = await hashPassword("pw", 1000);
  const b = await hashPassword("pw", 1000);
  assert.notEqual(a.salt, b.salt);
  assert.notEqual(a.hash, b.hash);
  assert.equal(await verifyPassword("pw", a), true);
  assert.equal(await verifyPassword("pW", a), false);
  assert.ok(!JSON.stringify(a).includes("pw"));
});

Deno.test("failed logins: limited per user within the window, logged without the password", async () => {
  let now = 0;
  const lines: string[] = [];
  const auth = new NodeAuth({
    nowMs: () => now,
    pbkdf2Iterations: 1000,
    logEvent: (event, fields) => lines.push(JSON.stringify({ event, ...fields })),
  });
  const state = await stateWith("u", "right");
  for (let i = 0; i < LOGIN_FAILURES_PER_USER_MAX; i++) {
    await assert.rejects(
      auth.authenticate(state, "u", `wrong-${i}`, "10.0.0.1"),
      (e: HttpError) =>
        e.message === "etcdserver: authentication failed, invalid user ID or password",
    );
  }
  await assert.rejects(
    auth.authenticate(state, "u", "right", "10.0.0.2"),
    (e: HttpError) =>
      e.status === 429 && /^etcdserver: too many requests \(5 failed/.test(e.message),
  );
  // Another user is not locked out by u's failures.
  assert.match(await auth.authenticate(state, "root", "right", "10.0.0.3"), /\.\d+$/);
  now += LOGIN_WINDOW_MS;
  const token = await auth.authenticate(state, "u", "right", "10.0.0.1");
  assert.equal(auth.userOf({ token, address: "x" }, state), "u");
  assert.equal(lines.filter((l) => l.includes('"auth-failed"')).length, 5);
  assert.ok(lines.every((l) => !l.includes("wrong-") && !l.includes("right")), lines.join("\n"));
});

Deno.test("a new password ends the user's tokens; a deleted user's too", async () => {
  const auth = new NodeAuth({ nowMs: () => 0, pbkdf2Iterations: 1000, logEvent: () => {} });
  const state = await stateWith("u", "pw");
  const token = await auth.authenticate(state, "u", "pw", "a");
  assert.equal(auth.userOf({ token, address: "a" }, state), "u");
  state.apply({ op: "userChangePassword", name: "u", password: await hashPassword("new", 1000) });
  assert.throws(
    () => auth.userOf({ token, address: "a" }, state),
    /etcdserver: invalid auth token/,
  );
  const again = await auth.authenticate(state, "u", "new", "a");
  state.apply({ op: "userDelete", name: "u" });
  assert.throws(() => auth.userOf({ token: again, address: "a" }, state), /invalid auth token/);
});

Deno.test("a forwarded user is believed only with the cluster secret's signature", () => {
  const follower = new NodeAuth({ nowMs: () => 0, secret: "s3cret", logEvent: () => {} });
  const leader = new NodeAuth({ nowMs: () => 0, secret: "s3cret", logEvent: () => {} });
  const other = new NodeAuth({ nowMs: () => 0, secret: "other", logEvent: () => {} });
  const body = new TextEncoder().encode('{"key":"YQ=="}');
  const headers = new Headers({
    [FORWARDED_USER_HEADER]: "alice",
    [FORWARDED_SIGNATURE_HEADER]: follower.sign("alice", "POST", "/v3/kv/put", body)!,
  });
  assert.equal(leader.forwardedUser(headers, "POST", "/v3/kv/put", body), "alice");
  for (
    const [auth, path, b] of [
      [other, "/v3/kv/put", body],
      [leader, "/v3/kv/deleterange", body],
      [leader, "/v3/kv/put", new TextEncoder().encode('{"key":"Yg=="}')],
    ] as const
  ) {
    assert.throws(() => auth.forwardedUser(headers, "POST", path, b), /invalid auth token/);
  }
  const noSecret = new NodeAuth({ nowMs: () => 0, logEvent: () => {} });
  assert.equal(noSecret.sign("alice", "POST", "/", body), undefined);
  assert.throws(() => noSecret.forwardedUser(headers, "POST", "/v3/kv/put", body), /invalid/);
  assert.equal(leader.forwardedUser(new Headers(), "POST", "/", body), undefined);
});

Deno.test("auth disabled and enabled again voids the tokens issued before", async () => {
  const auth = new NodeAuth({ nowMs: () => 0, pbkdf2Iterations: 1000, logEvent: () => {} });
  const state = await stateWith("u", "pw");
  const token = await auth.authenticate(state, "u", "pw", "a");
  state.apply({ op: "roleAdd", role: "unrelated" });
  assert.equal(auth.userOf({ token, address: "a" }, state), "u", "other changes keep it");
  state.apply({ op: "disable" });
  state.apply({ op: "enable" });
  assert.throws(() => auth.userOf({ token, address: "a" }, state), /invalid auth token/);
  const fresh = await auth.authenticate(state, "u", "pw", "a");
  assert.equal(auth.userOf({ token: fresh, address: "a" }, state), "u");
  // The enabling is part of the replicated state: a restored copy voids the same tokens.
  const copy = new AuthState();
  copy.restore(JSON.parse(JSON.stringify(state.snapshot())));
  assert.equal(copy.enabledAt, state.enabledAt);
  assert.throws(() => auth.userOf({ token, address: "a" }, copy), /invalid auth token/);
});
