// The store-side auth state (src/kv/auth.ts): users, roles, permissions, enable/disable, applied
// through the log and carried in snapshots.
import assert from "node:assert/strict";
import {
  AUTH_OLD_REVISION,
  AuthState,
  commandNeeds,
  INVALID_AUTH_MGMT,
  type PasswordHash,
  PERMISSION_NOT_GRANTED,
  ROLE_NOT_FOUND,
  ROOT_ROLE_NOT_EXIST,
  ROOT_USER_NOT_EXIST,
  USER_ALREADY_EXIST,
  USER_NOT_FOUND,
} from "../src/kv/auth.ts";
import { decodeCommand, encodeAuthGuarded, encodeCommand } from "../src/kv/command.ts";
import { MetadataStore } from "../src/kv/store.ts";
import type { AuthCommand } from "../src/kv/types.ts";
import { decodeStoreSnapshot, encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";

const hash: PasswordHash = {
  algorithm: "pbkdf2-sha256",
  iterations: 1,
  salt: "AA==",
  hash: "AA==",
};

function authOf(...ops: AuthCommand["op"][]): AuthState {
  const a = new AuthState();
  for (const op of ops) assert.equal(a.apply(op), undefined, JSON.stringify(op));
  return a;
}

Deno.test("auth enable needs user root with role root (etcd's errors)", () => {
  const a = new AuthState();
  assert.equal(a.apply({ op: "enable" }), ROOT_USER_NOT_EXIST);
  assert.equal(a.apply({ op: "userAdd", name: "root", password: hash }), undefined);
  assert.equal(a.apply({ op: "enable" }), ROOT_ROLE_NOT_EXIST);
  assert.equal(a.enabled, false);
  assert.equal(a.apply({ op: "userGrantRole", name: "root", role: "root" }), undefined);
  assert.equal(a.apply({ op: "enable" }), undefined);
  assert.equal(a.enabled, true);
  // While enabled, root and its role cannot be taken away.
  assert.equal(a.apply({ op: "userDelete", name: "root" }), INVALID_AUTH_MGMT);
  assert.equal(a.apply({ op: "roleDelete", role: "root" }), INVALID_AUTH_MGMT);
  assert.equal(a.apply({ op: "userRevokeRole", name: "root", role: "root" }), INVALID_AUTH_MGMT);
  assert.equal(a.apply({ op: "disable" }), undefined);
  assert.equal(a.enabled, false);
  assert.equal(a.apply({ op: "userRevokeRole", name: "root", role: "root" }), undefined);
});

Deno.test("user and role errors are etcd's texts; failures leave the auth revision", () => {
  const a = authOf({ op: "userAdd", name: "u", password: hash });
  const rev = a.authRevision;
  assert.equal(a.apply({ op: "userAdd", name: "u", password: hash }), USER_ALREADY_EXIST);
  assert.equal(a.apply({ op: "userDelete", name: "x" }), USER_NOT_FOUND);
  assert.equal(a.apply({ op: "userGrantRole", name: "u", role: "nope" }), ROLE_NOT_FOUND);
  assert.equal(
    a.apply({ op: "roleRevokePermission", role: "nope", range: { key: "a" } }),
    ROLE_NOT_FOUND,
  );
  assert.equal(a.apply({ op: "roleAdd", role: "r" }), undefined);
  assert.equal(
    a.apply({ op: "roleRevokePermission", role: "r", range: { key: "a" } }),
    PERMISSION_NOT_GRANTED,
  );
  assert.equal(a.authRevision, rev + 1);
});

Deno.test("permissions: key, prefix, range and from-key, merged across roles", async (t) => {
  const a = authOf(
    { op: "userAdd", name: "root", password: hash },
    { op: "userGrantRole", name: "root", role: "root" },
    { op: "userAdd", name: "u", password: hash },
    { op: "roleAdd", role: "r1" },
    { op: "roleAdd", role: "r2" },
    {
      op: "roleGrantPermission",
      role: "r1",
      permission: { permType: "READ", range: { key: "/k" } },
    },
    {
      op: "roleGrantPermission",
      role: "r1",
      permission: { permType: "READWRITE", range: { prefix: "/a/" } },
    },
    {
      op: "roleGrantPermission",
      role: "r2",
      permission: { permType: "WRITE", range: { key: "/m", rangeEnd: "/p" } },
    },
    {
      op: "roleGrantPermission",
      role: "r2",
      permission: { permType: "READ", range: { key: "/p", rangeEnd: "/q" } },
    },
    { op: "userGrantRole", name: "u", role: "r1" },
    { op: "userGrantRole", name: "u", role: "r2" },
  );
  await t.step("disabled: everything is permitted", () => {
    assert.equal(a.permitted("nobody", { prefix: "" }, "write"), true);
  });
  assert.equal(a.apply({ op: "enable" }), undefined);
  const cases: [Parameters<AuthState["permitted"]>[1], "read" | "write", boolean][] = [
    [{ key: "/k" }, "read", true],
    [{ key: "/k" }, "write", false],
    [{ key: "/k0" }, "read", false],
    [{ key: "/a/x" }, "write", true],
    [{ prefix: "/a/" }, "read", true],
    [{ prefix: "/a" }, "read", false],
    [{ key: "/a/", rangeEnd: "/a0" }, "write", true],
    [{ key: "/a/", rangeEnd: "/b" }, "write", false],
    [{ fromKey: "/a/" }, "read", false],
    [{ key: "/m" }, "write", true],
    [{ key: "/o\uffff" }, "write", true],
    [{ key: "/p" }, "write", false],
    [{ key: "/m", rangeEnd: "/p" }, "read", false],
    [{ key: "/p", rangeEnd: "/q" }, "read", true],
    [{ prefix: "" }, "read", false],
  ];
  for (const [range, access, want] of cases) {
    await t.step(`${JSON.stringify(range)} ${access}: ${want}`, () => {
      assert.equal(a.permitted("u", range, access), want);
    });
  }
  await t.step("root may do everything, an unknown user nothing", () => {
    assert.equal(a.permitted("root", { prefix: "" }, "write"), true);
    assert.equal(a.permitted("ghost", { key: "/a/x" }, "read"), false);
  });
  await t.step("adjacent permissions of two roles cover a range across both", () => {
    const b = authOf(
      { op: "userAdd", name: "root", password: hash },
      { op: "userGrantRole", name: "root", role: "root" },
      { op: "userAdd", name: "v", password: hash },
      { op: "roleAdd", role: "x" },
      { op: "roleAdd", role: "y" },
      {
        op: "roleGrantPermission",
        role: "x",
        permission: { permType: "READ", range: { key: "a", rangeEnd: "c" } },
      },
      {
        op: "roleGrantPermission",
        role: "y",
        permission: { permType: "READWRITE", range: { key: "c", rangeEnd: "e" } },
      },
      { op: "userGrantRole", name: "v", role: "x" },
      { op: "userGrantRole", name: "v", role: "y" },
      { op: "enable" },
    );
    assert.equal(b.permitted("v", { key: "b", rangeEnd: "d" }, "read"), true);
    assert.equal(b.permitted("v", { key: "b", rangeEnd: "d" }, "write"), false);
    assert.equal(b.permitted("v", { key: "b", rangeEnd: "f" }, "read"), false);
  });
  await t.step("revoking a role's permission and deleting a role take effect", () => {
    assert.equal(
      a.apply({ op: "roleRevokePermission", role: "r1", range: { prefix: "/a/" } }),
      undefined,
    );
    assert.equal(a.permitted("u", { key: "/a/x" }, "read"), false);
    assert.equal(a.apply({ op: "roleDelete", role: "r2" }), undefined);
    assert.deepEqual(a.user("u")!.roles, ["r1"]);
    assert.equal(a.permitted("u", { key: "/m" }, "write"), false);
  });
});

Deno.test("commandNeeds: a txn needs read on compares and both branches, nested too", () => {
  const needs = commandNeeds({
    type: "txn",
    compare: [{ key: "/c", target: "version", result: "equal", value: 0 }],
    success: [{ type: "put", key: "/w", value: new Uint8Array(), prevKv: true }],
    failure: [{
      type: "txn",
      compare: [],
      success: [{ type: "delete", range: { prefix: "/d/" }, prevKv: false }],
      failure: [{
        type: "range",
        range: { key: "/r" },
        limit: 0,
        keysOnly: false,
        countOnly: false,
      }],
    }],
  });
  assert.deepEqual(needs.reads, [{ key: "/c" }, { key: "/w" }, { key: "/r" }]);
  assert.deepEqual(needs.writes, [{ key: "/w" }, { prefix: "/d/" }]);
});

Deno.test("auth commands go through the codec, the store and both snapshot formats", () => {
  const store = new MetadataStore();
  let index = 0;
  const apply = (op: AuthCommand["op"]) => {
    const bytes = encodeCommand({ type: "auth", op });
    assert.deepEqual(decodeCommand(bytes), { type: "auth", op });
    return store.apply(bytes, ++index);
  };
  apply({ op: "userAdd", name: "root", password: hash });
  apply({ op: "userGrantRole", name: "root", role: "root" });
  apply({ op: "roleAdd", role: "r" });
  apply({
    op: "roleGrantPermission",
    role: "r",
    permission: { permType: "READ", range: { prefix: "/x/" } },
  });
  const enable = apply({ op: "enable" });
  assert.equal(enable.status, "applied");
  const refused = apply({ op: "userDelete", name: "root" });
  assert.equal(refused.status, "rejected");
  assert.equal(refused.status === "rejected" && refused.error, INVALID_AUTH_MGMT);
  // Auth changes do not raise the store revision.
  assert.equal(store.revision, 1);
  const binary = decodeStoreSnapshot(encodeStoreSnapshot(store));
  const json = MetadataStore.fromSnapshot(JSON.parse(JSON.stringify(store.snapshot())));
  for (const again of [binary, json]) {
    assert.equal(again.auth.enabled, true);
    assert.deepEqual(again.auth.snapshot(), store.auth.snapshot());
    assert.equal(again.auth.permitted("root", { prefix: "" }, "write"), true);
  }
});

Deno.test("format 6 and 5 snapshots (before byte keys, before auth) still load", () => {
  const store = new MetadataStore();
  store.apply(
    encodeCommand({ type: "put", key: "/a", value: new Uint8Array([1]), prevKv: false }),
    1,
  );
  const v7 = encodeStoreSnapshot(store);
  // Format 7 = format 6 plus the count of byte keys (0 here) right before the keys' text "/a".
  assert.equal(v7[4], 7);
  assert.deepEqual([...v7.subarray(-3)], [0, 0x2f, 0x61]);
  const v6 = new Uint8Array([...v7.subarray(0, 4), 6, ...v7.subarray(5, -3), 0x2f, 0x61]);
  assert.equal(decodeStoreSnapshot(v6).getString("/a"), "\u0001");
  // Format 6 = format 5 plus the auth state right after the (empty) alarm list.
  assert.equal(v6[4], 6);
  assert.equal(v6[5], 0);
  const authBytes = v6[6];
  const v5 = new Uint8Array([...v6.subarray(0, 4), 5, 0, ...v6.subarray(7 + authBytes)]);
  const again = decodeStoreSnapshot(v5);
  assert.equal(again.getString("/a"), "\u0001");
  assert.equal(again.auth.enabled, false);
  assert.deepEqual(again.auth.userNames(), []);
});

Deno.test("a malformed auth op is refused before it reaches the log", () => {
  assert.throws(
    () => encodeCommand({ type: "auth", op: { op: "userAdd", name: 5 } } as never),
    /User name must be a string/,
  );
  assert.throws(
    () =>
      encodeCommand({
        type: "auth",
        op: { op: "roleGrantPermission", role: "r", permission: { permType: "ALL" } },
      } as never),
    /Permission type must be READ, WRITE or READWRITE/,
  );
});

Deno.test("an auth guard refuses a write checked against an older auth state", () => {
  const store = new MetadataStore();
  let index = 0;
  const auth = (op: AuthCommand["op"]) => store.apply(encodeCommand({ type: "auth", op }), ++index);
  auth({ op: "userAdd", name: "root", password: hash });
  auth({ op: "userGrantRole", name: "root", role: "root" });
  auth({ op: "enable" });
  const put = (value: string) =>
    encodeCommand({
      type: "put",
      key: "/k",
      value: new TextEncoder().encode(value),
      prevKv: false,
    });
  const checkedAt = store.auth.authRevision;
  const guarded = encodeAuthGuarded(checkedAt, put("1"));
  assert.deepEqual(decodeCommand(guarded), decodeCommand(put("1")));
  assert.equal(store.apply(guarded, ++index).status, "applied");
  // The auth state changes between the check and the apply: refused, nothing written.
  auth({ op: "roleAdd", role: "r" });
  const stale = store.apply(encodeAuthGuarded(checkedAt, put("2")), ++index);
  assert.equal(stale.status, "rejected");
  assert.equal(stale.status === "rejected" && stale.error, AUTH_OLD_REVISION);
  assert.equal(store.getString("/k"), "1");
  assert.equal(store.appliedIndex, index);
  // Checked again at the new revision: applies. Unguarded entries (older logs) apply as before.
  assert.equal(
    store.apply(encodeAuthGuarded(store.auth.authRevision, put("3")), ++index).status,
    "applied",
  );
  assert.equal(store.apply(put("4"), ++index).status, "applied");
  // With auth disabled the guard does not matter.
  auth({ op: "disable" });
  assert.equal(store.apply(encodeAuthGuarded(0, put("5")), ++index).status, "applied");
  assert.equal(store.getString("/k"), "5");
  assert.throws(
    () => decodeCommand(encodeAuthGuarded(1, encodeAuthGuarded(1, put("x")))),
    /An auth guard cannot wrap an auth guard/,
  );
});

Deno.test("permitted agrees with a key-by-key model on random permissions (seeded)", () => {
  let seed = 12345;
  const next = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const letters = "abcd";
  const word = () => Array.from({ length: 1 + next(2) }, () => letters[next(4)]).join("");
  // Every key of up to 3 letters: the model checks the whole range key by key.
  const universe: string[] = [];
  for (const a of letters) {
    universe.push(a);
    for (const b of letters) {
      universe.push(a + b);
      for (const c of letters) universe.push(a + b + c);
    }
  }
  const inRange = (k: string, r: { key: string; rangeEnd?: string } | { prefix: string }) =>
    "prefix" in r
      ? k.startsWith(r.prefix)
      : r.rangeEnd === undefined
      ? k === r.key
      : k >= r.key && k < r.rangeEnd;
  for (let trial = 0; trial < 200; trial++) {
    const a = authOf(
      { op: "userAdd", name: "root", password: hash },
      { op: "userGrantRole", name: "root", role: "root" },
      { op: "userAdd", name: "u", password: hash },
      { op: "roleAdd", role: "r" },
      { op: "userGrantRole", name: "u", role: "r" },
      { op: "enable" },
    );
    const perms: ({ key: string; rangeEnd?: string } | { prefix: string })[] = [];
    for (let i = 0; i < 1 + next(4); i++) {
      const kind = next(3);
      const w = word();
      const range = kind === 0
        ? { key: w }
        : kind === 1
        ? { prefix: w }
        : { key: w, rangeEnd: word() };
      if (perms.some((p) => JSON.stringify(p) === JSON.stringify(range))) continue;
      const grant = a.apply({
        op: "roleGrantPermission",
        role: "r",
        permission: { permType: "READ", range },
      });
      if ("rangeEnd" in range && range.rangeEnd! <= range.key!) {
        assert.equal(grant, INVALID_AUTH_MGMT, "an empty range is refused");
        continue;
      }
      assert.equal(grant, undefined);
      perms.push(range);
    }
    for (let q = 0; q < 20; q++) {
      const kind = next(3);
      const w = word();
      const range = kind === 0
        ? { key: w }
        : kind === 1
        ? { prefix: w }
        : { key: w, rangeEnd: word() };
      const keys = universe.filter((k) => inRange(k, range));
      const requested = keys.length === 0 && !("prefix" in range) ? [range.key] : keys;
      const model = requested.every((k) => perms.some((p) => inRange(k, p)));
      // The model sees only keys of up to 3 letters; a range the check denies may still be
      // covered for those: only "permitted" must imply the model.
      if (a.permitted("u", range, "read")) {
        assert.ok(model, `${JSON.stringify(range)} under ${JSON.stringify(perms)}`);
      } else if ("prefix" in range ? false : range.rangeEnd === undefined) {
        assert.ok(!model, `${JSON.stringify(range)} under ${JSON.stringify(perms)}`);
      }
    }
  }
});
