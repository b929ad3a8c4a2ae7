/**
 * Lease ids and every integer field (issue 14, item 1): a value is either refused at the edge
 * (a 400 from the JSON API, a CommandError from the codec) or it goes the whole way: apply,
 * snapshot, restore, and apply more. Automatic lease ids always terminate and stay encodable.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  type Command,
  CommandError,
  CompactedError,
  decodeCommand,
  encodeCommand,
  MetadataStore,
  utf8,
} from "../src/kv/mod.ts";
import { decodeStoreSnapshot, encodeStoreSnapshot } from "../src/storage/store_snapshot.ts";
import { LeaseManager } from "../src/coord/lease_manager.ts";
import {
  HttpError,
  parseAlarm,
  parseCompaction,
  parseLeaseGrant,
  parseLeaseId,
  parsePut,
  parseRange,
  parseTxn,
  parseWatchCreate,
  requestedRevision,
} from "../src/net/etcd.ts";

const MAX = Number.MAX_SAFE_INTEGER;
const KEY = btoa("/k");

/** Applies `commands` (objects or encoded bytes) to a new store at indexes 1, 2, ... */
function storeOf(commands: (Command | Uint8Array)[]): MetadataStore {
  const store = new MetadataStore();
  let index = 0;
  for (const c of commands) store.apply(c instanceof Uint8Array ? c : encodeCommand(c), ++index);
  return store;
}

/** What an apply result says, without the parts that differ by identity. */
function outcome(store: MetadataStore, command: Command, index: number): string {
  return JSON.stringify(
    store.apply(encodeCommand(command), index),
    (_k, v) => v instanceof Uint8Array ? [...v] : v,
  );
}

/**
 * The whole cycle: apply, snapshot, restore, and then more commands (an automatic grant, a put
 * with that lease, a revoke of it) give the same results on the original and the restored store.
 */
function wholeCycle(commands: (Command | Uint8Array)[]): void {
  const store = storeOf(commands);
  const restored = decodeStoreSnapshot(encodeStoreSnapshot(store));
  assert.deepEqual(restored.snapshot(), store.snapshot());
  let index = store.appliedIndex;
  const grant = { type: "leaseGrant", id: 0, ttlMs: 1000 } as const;
  const a = outcome(store, grant, ++index);
  assert.equal(outcome(restored, grant, index), a);
  const id = (JSON.parse(a).response?.id ?? 1) as number;
  assert.ok(Number.isSafeInteger(id) && id >= 1 && id <= MAX, `automatic id ${id}`);
  for (
    const more of [
      { type: "put", key: "/more", value: utf8("v"), prevKv: false, lease: id },
      { type: "leaseRevoke", id, expired: true },
    ] as const
  ) {
    index++;
    assert.equal(outcome(restored, more, index), outcome(store, more, index));
  }
  assert.deepEqual(restored.snapshot(), store.snapshot());
}

Deno.test("lease ids", async (t) => {
  await t.step("automatic grants after id 2^53 - 1 terminate with distinct safe ids", async () => {
    // The bug made the third grant loop forever: run it in a worker the test can terminate.
    const worker = new Worker(new URL("./kv_lease_grant_worker.ts", import.meta.url).href, {
      type: "module",
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const answer = await Promise.race([
        new Promise<Record<string, unknown>>((resolve) => {
          worker.onmessage = (e) => resolve(e.data);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("automatic lease grants did not finish in 60 s (a loop?)")),
            60_000,
          );
        }),
      ]);
      assert.equal(answer.error, undefined, String(answer.error));
      const ids = answer.ids as number[];
      const after = answer.after as number[];
      assert.equal(ids[0], MAX);
      for (const id of [...ids, ...after]) {
        assert.ok(Number.isSafeInteger(id) && id >= 1 && id <= MAX, `lease id ${id}`);
      }
      assert.equal(new Set(ids).size, ids.length, `ids repeat: ${ids}`);
      // The choice wraps to the lowest free id; the restored store chooses the same next one.
      assert.deepEqual(ids, [MAX, 1, 2, 3]);
      assert.deepEqual(after, [4, 4]);
      assert.deepEqual(answer.leases, [1, 2, 3, 4, MAX]);
    } finally {
      clearTimeout(timer);
      worker.terminate();
    }
  });

  await t.step("a snapshot taken after a grant of 2^53 - 1 and an automatic one restores", () => {
    const store = storeOf([
      { type: "leaseGrant", id: MAX, ttlMs: 1000 },
      { type: "leaseGrant", id: 0, ttlMs: 1000 },
    ]);
    const restored = decodeStoreSnapshot(encodeStoreSnapshot(store));
    assert.deepEqual(restored.leases().map((l) => l.id), [1, MAX]);
    wholeCycle([
      { type: "leaseGrant", id: MAX, ttlMs: 1000 },
      { type: "leaseGrant", id: 0, ttlMs: 1000 },
    ]);
  });

  // Each grant is checked before the next: before the fix, an automatic grant after an id above
  // 2^53 - 1 never returned, and these steps run in the test's own thread.
  const granter = (store: MetadataStore) => {
    let index = store.appliedIndex;
    return (id: number) => {
      const r = store.apply(encodeCommand({ type: "leaseGrant", id, ttlMs: 1 }), ++index);
      if (r.status !== "applied") return r;
      assert.ok(r.response.type === "leaseGrant" && r.response.id <= MAX, JSON.stringify(r));
      return r;
    };
  };

  await t.step("the automatic choice continues after the last id and skips taken ones", () => {
    const store = new MetadataStore();
    const grant = granter(store);
    grant(0); // 1
    grant(3);
    grant(0); // 4: after the highest id
    store.apply(encodeCommand({ type: "leaseRevoke", id: 1, expired: false }), 4);
    const again = granter(store);
    again(MAX - 1);
    again(0); // MAX
    again(0); // wraps: 1 is free again
    again(0); // 2
    again(0); // 3 and 4 are taken: 5
    assert.deepEqual(store.leases().map((l) => l.id), [1, 2, 3, 4, 5, MAX - 1, MAX]);
  });

  await t.step("after the choice wraps, leasesMax still bounds the grants", () => {
    const store = new MetadataStore({ leasesMax: 3 });
    const grant = granter(store);
    for (const id of [MAX, 0, 0]) assert.equal(grant(id).status, "applied");
    const r = grant(0);
    assert.equal(r.status, "rejected");
    assert.match((r as { error: string }).error, /Too many leases: 3 \(most 3\)/);
  });
});

Deno.test("lease manager", async (t) => {
  const host = (store: MetadataStore, propose: (c: Uint8Array) => void) => {
    const h = { now: 0, leading: true };
    const manager = new LeaseManager({
      nowMs: () => h.now,
      store: () => store,
      leaderTerm: () => h.leading ? 1 : undefined,
      propose,
    });
    return { h, manager };
  };

  await t.step("expires every lease, also one granted after id 2^53 - 1", () => {
    const store = storeOf([
      { type: "leaseGrant", id: MAX, ttlMs: 1000 },
      { type: "leaseGrant", id: 0, ttlMs: 1000 },
    ]);
    const proposed: Uint8Array[] = [];
    const { h, manager } = host(store, (c) => proposed.push(c));
    manager.tick();
    h.now = 1000;
    const ids = manager.tick();
    assert.deepEqual(ids.sort((a, b) => a - b), store.leases().map((l) => l.id));
    let index = store.appliedIndex;
    for (const c of proposed) {
      assert.equal(decodeCommand(c).type, "leaseRevoke");
      assert.equal(store.apply(c, ++index).status, "applied");
    }
    assert.equal(store.leaseCount, 0);
  });

  await t.step("a failed expiry while still leading is not swallowed", () => {
    const store = storeOf([{ type: "leaseGrant", id: 0, ttlMs: 10 }]);
    const { h, manager } = host(store, () => {
      throw new Error("Proposal refused: the log is full");
    });
    manager.tick();
    h.now = 10;
    assert.throws(() => manager.tick(), /log is full/);
  });

  await t.step("a failed expiry after losing leadership waits for the next tick", () => {
    const store = storeOf([{ type: "leaseGrant", id: 0, ttlMs: 10 }]);
    const { h, manager } = host(store, () => {
      h.leading = false;
      throw new Error("not the leader");
    });
    manager.tick();
    h.now = 10;
    assert.deepEqual(manager.tick(), []);
  });
});

// ---- The JSON API's integer fields ---------------------------------------------------------------

/** JSON texts for the boundary values: numbers and decimal strings, and text that is neither. */
const BOUNDARY = [
  "0",
  "1",
  "2147483648",
  "4294967295",
  "4294967296",
  "9007199254740991",
  "9007199254740992",
  "9223372036854775807",
  "9223372036854775808",
  "18446744073709551616",
  "-1",
  "-9223372036854775808",
  "-0",
  "1e3",
  "1.5",
  "9".repeat(400),
];
const JSON_VALUES = [
  ...BOUNDARY,
  ...BOUNDARY.map((b) => JSON.stringify(b)),
  '" 1"',
  '"1 "',
  '"+1"',
  '"0x10"',
  '""',
  '"1_000"',
  JSON.stringify("9".repeat(100_000)),
  "true",
  "[]",
  "{}",
];

/** How a field's parsed value turns into commands, or a check for a field that is only read. */
interface FieldCase {
  readonly name: string;
  readonly body: (v: string) => string;
  readonly use: (body: unknown) => (Command | Uint8Array)[];
  /** Values that must be accepted (a case that refused everything would pass trivially). */
  readonly accepts: readonly string[];
}

const grantOf = (id: number, ttlMs = 1000): Command => ({ type: "leaseGrant", id, ttlMs });

const FIELDS: readonly FieldCase[] = [
  {
    name: "LeaseGrantRequest.ID",
    body: (v) => `{"TTL": 10, "ID": ${v}}`,
    use: (b) => {
      const g = parseLeaseGrant(b);
      // One automatic grant here and one in the cycle: before the fix, a third one never ended.
      return [grantOf(g.id, g.ttlSeconds * 1000), grantOf(0)];
    },
    accepts: ["0", "1", "9007199254740991", '"9007199254740991"'],
  },
  {
    name: "LeaseGrantRequest.TTL",
    body: (v) => `{"TTL": ${v}}`,
    use: (b) => [grantOf(0, parseLeaseGrant(b).ttlSeconds * 1000)],
    accepts: ["1", "2147483648", '"4294967296"'],
  },
  {
    name: "PutRequest.lease",
    body: (v) => `{"key": "${KEY}", "lease": ${v}}`,
    use: (b) => {
      const put = parsePut(b);
      return put.lease === undefined ? [put] : [grantOf(put.lease), put];
    },
    accepts: ["0", "1", "9007199254740991"],
  },
  {
    name: "LeaseRevokeRequest.ID",
    body: (v) => `{"ID": ${v}}`,
    use: (b) => {
      const { id } = parseLeaseId(b, "LeaseRevokeRequest");
      return [grantOf(id), { type: "leaseRevoke", id, expired: false }];
    },
    accepts: ["1", "9007199254740991"],
  },
  {
    name: "LeaseTimeToLiveRequest.ID",
    body: (v) => `{"ID": ${v}, "keys": true}`,
    use: (b) => [grantOf(parseLeaseId(b, "LeaseTimeToLiveRequest", true).id)],
    accepts: ["1", "9007199254740991"],
  },
  {
    name: "RangeRequest.limit (in a txn and alone)",
    body: (v) => `{"key": "${KEY}", "limit": ${v}}`,
    use: (b) => {
      const r = parseRange(b);
      storeOf([]).range(r.command.range, { limit: r.command.limit });
      return [{ type: "txn", compare: [], success: [r.command], failure: [] }];
    },
    accepts: ["0", "1", "4294967296", "9007199254740991"],
  },
  {
    name: "RangeRequest.revision",
    body: (v) => `{"key": "${KEY}", "revision": ${v}}`,
    use: (b) => {
      const revision = requestedRevision(parseRange(b));
      assert.ok(Number.isSafeInteger(revision) && revision >= 0);
      return [];
    },
    accepts: ["0", "9007199254740991"],
  },
  ...["min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"].map(
    (field): FieldCase => ({
      name: `RangeRequest.${field}`,
      body: (v) => `{"key": "${KEY}", "${field}": ${v}}`,
      use: (b) => [parseRange(b).command],
      accepts: ["0"],
    }),
  ),
  ...[["VERSION", "version"], ["CREATE", "create_revision"], ["MOD", "mod_revision"]].map((
    [target, field],
  ): FieldCase => ({
    name: `Compare.${field}`,
    body: (v) =>
      `{"compare": [{"key": "${KEY}", "target": "${target}", "${field}": ${v}}], "success": [{"request_put": {"key": "${KEY}"}}]}`,
    use: (b) => [parseTxn(b).command],
    accepts: ["0", "9007199254740991"],
  })),
  {
    name: "CompactionRequest.revision",
    body: (v) => `{"revision": ${v}}`,
    use: (b) => [{ type: "compact", revision: parseCompaction(b) }],
    accepts: ["1", "9007199254740991"],
  },
  {
    name: "WatchCreateRequest.start_revision",
    body: (v) => `{"create_request": {"key": "${KEY}", "start_revision": ${v}}}`,
    use: (b) => {
      const { startRevision } = parseWatchCreate(b);
      assert.ok(Number.isSafeInteger(startRevision) && startRevision! >= 0);
      try {
        storeOf([]).history(startRevision!);
      } catch (e) {
        if (!(e instanceof CompactedError)) throw e;
      }
      return [];
    },
    accepts: ["0", "1", "9007199254740991"],
  },
  {
    name: "AlarmRequest.memberID (a uint64, kept as text)",
    body: (v) => `{"action": "DEACTIVATE", "alarm": "NOSPACE", "memberID": ${v}}`,
    use: (b) => {
      const { memberId } = parseAlarm(b);
      assert.ok(memberId >= 0n && memberId < 1n << 64n);
      return [];
    },
    accepts: ["0", "9007199254740991", '"18446744073709551615"'],
  },
  {
    name: "RangeRequest.sort_order",
    body: (v) => `{"key": "${KEY}", "sort_order": ${v}}`,
    use: (b) => [parseRange(b).command],
    accepts: ["0", "1"],
  },
];

Deno.test("JSON API integer fields: refused at the edge, or apply, snapshot and restore work", async (t) => {
  for (const field of FIELDS) {
    await t.step(field.name, () => {
      for (const v of JSON_VALUES) {
        let commands: (Command | Uint8Array)[];
        try {
          // What the server does: parse the field, then encode the command it proposes.
          commands = field.use(JSON.parse(field.body(v))).map((c) =>
            c instanceof Uint8Array ? c : decodeCommand(encodeCommand(c))
          );
        } catch (e) {
          const refused = (e instanceof HttpError && e.status === 400) || e instanceof CommandError;
          assert.ok(refused, `${field.name} = ${v.slice(0, 40)}: ${(e as Error).stack}`);
          assert.ok((e as Error).message.length < 400, "the error quotes a bounded part");
          assert.ok(
            !field.accepts.includes(v),
            `${field.name} = ${v} must be accepted: ${(e as Error).message}`,
          );
          continue;
        }
        wholeCycle(commands);
      }
    });
  }

  await t.step("refusals name the field and quote the value", () => {
    assert.throws(
      () => parseLeaseGrant(JSON.parse(`{"TTL": 10, "ID": "9007199254740992"}`)),
      /Field "ID" of LeaseGrantRequest is out of range: "9007199254740992" \(at most 2\^53 - 1 = 9007199254740991\)/,
    );
    assert.throws(
      () => parseLeaseGrant(JSON.parse(`{"TTL": 10, "ID": 1.5}`)),
      /Field "ID" of LeaseGrantRequest must be an integer \(number or decimal string\): 1.5/,
    );
    assert.throws(
      () => parsePut(JSON.parse(`{"key": "${KEY}", "lease": " 1"}`)),
      /Field "lease" of PutRequest must be an integer \(number or decimal string\): " 1"/,
    );
  });

  await t.step("a limit beyond every key the store returns means no limit", () => {
    const r = parseRange(JSON.parse(`{"key": "${KEY}", "limit": "9007199254740991"}`));
    assert.ok(r.command.limit <= 0xffff_ffff);
    assert.ok(r.command.limit > 0);
  });
});

// ---- The command codec's integer fields ---------------------------------------------------------

/** 64-bit patterns for a u53 field: in range, and above it. */
const U64_PATTERNS: readonly [number, number][] = [
  [0, 0],
  [0, 1],
  [0, 0xffff_ffff],
  [0x1f_ffff, 0xffff_ffff], // 2^53 - 1
  [0x20_0000, 0], // 2^53
  [0x7fff_ffff, 0xffff_ffff], // 2^63 - 1
  [0x8000_0000, 0], // 2^63
  [0xffff_ffff, 0xffff_ffff], // 2^64 - 1
];

/** `bytes` with the 8 bytes at `offset` (from the end when negative) set to `hi`:`lo`. */
function patch(bytes: Uint8Array, offset: number, [hi, lo]: [number, number]): Uint8Array {
  const out = bytes.slice();
  const at = offset < 0 ? out.length + offset : offset;
  const view = new DataView(out.buffer);
  view.setUint32(at, hi);
  view.setUint32(at + 4, lo);
  return out;
}

Deno.test("command codec integer fields: refused by decode, or apply, snapshot and restore work", async (t) => {
  const put = { type: "put", key: "/k", value: utf8("v"), prevKv: false } as const;
  const cases: { name: string; bytes: Uint8Array; offset: number; before?: Command[] }[] = [
    { name: "leaseGrant id", bytes: encodeCommand(grantOf(7)), offset: 3 },
    { name: "leaseGrant ttlMs", bytes: encodeCommand(grantOf(7)), offset: 11 },
    {
      name: "leaseRevoke id",
      bytes: encodeCommand({ type: "leaseRevoke", id: 7, expired: false }),
      offset: 3,
      before: [grantOf(MAX), grantOf(0xffff_ffff)],
    },
    { name: "compact revision", bytes: encodeCommand({ type: "compact", revision: 1 }), offset: 3 },
    {
      name: "put lease",
      bytes: encodeCommand({ ...put, lease: 7 }),
      offset: -8,
      before: [grantOf(1), grantOf(MAX)],
    },
    {
      name: "session client id and seq",
      bytes: encodeCommand({ type: "session", clientId: 7, seq: 1, command: put }),
      offset: 4,
    },
    {
      name: "session seq",
      bytes: encodeCommand({ type: "session", clientId: 7, seq: 1, command: put }),
      offset: 12,
    },
    {
      name: "compare value",
      bytes: encodeCommand({
        type: "txn",
        compare: [{ key: "/k", target: "version", result: "equal", value: 0 }],
        success: [],
        failure: [],
      }),
      // magic, version, tag, count(4), key (4 + 2), target, result: then the value.
      offset: 3 + 4 + 6 + 2,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      let accepted = 0;
      for (const pattern of U64_PATTERNS) {
        const bytes = patch(c.bytes, c.offset, pattern);
        try {
          decodeCommand(bytes);
        } catch (e) {
          assert.ok(e instanceof CommandError, String(e));
          const zero = pattern[0] === 0 && pattern[1] === 0;
          assert.ok(pattern[0] > 0x1f_ffff || zero, `${pattern} refused: ${e.message}`);
          assert.match(e.message, /above 2\^53 - 1|must be an integer|at least|lease id 0/);
          continue;
        }
        accepted++;
        wholeCycle([...(c.before ?? []), bytes]);
      }
      assert.ok(accepted >= 3, "values up to 2^53 - 1 pass");
    });
  }

  await t.step("a range limit: every u32 applies", () => {
    const bytes = encodeCommand({
      type: "range",
      range: { key: "/k" },
      limit: 0xffff_ffff,
      keysOnly: false,
      countOnly: false,
    });
    wholeCycle([put, bytes]);
  });
});

Deno.test("a snapshot with a number above 2^53 - 1 is refused naming it", () => {
  const store = storeOf([grantOf(5)]);
  const bytes = encodeStoreSnapshot(store);
  // Format 6: magic, format, alarm count, auth state (length, JSON), appliedIndex, revision,
  // leaseIdLast (5): make it 2^56 - 1.
  const authBytes = new TextEncoder().encode(JSON.stringify(store.freeze().auth)).length;
  assert.ok(authBytes < 128);
  const at = 4 + 2 + 1 + authBytes + 2;
  assert.equal(bytes[at], 5);
  const bad = new Uint8Array([
    ...bytes.subarray(0, at),
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ...bytes.subarray(at + 1),
  ]);
  assert.throws(() => decodeStoreSnapshot(bad), /Snapshot is invalid: .*2\^53/);
});
