import assert from "node:assert/strict";
import { encodeCommand, MetadataStore, type PutResponse, text } from "../src/kv/mod.ts";
import { delOp, Harness, putOp, session } from "./kv_helpers.ts";

Deno.test("a retried write applies once and gets the original result", async (t) => {
  const h = new Harness();
  const s = h.store;
  h.ok(putOp("/x", "old"));
  const write = session("c1", 1, putOp("/x", "new", true));

  const first = h.apply(write);
  await t.step("the first delivery applies", () => {
    assert.ok(first.status === "applied");
    assert.equal(first.duplicate, false);
    assert.equal(first.events.length, 1);
    assert.equal(s.revision, 3);
    assert.equal(s.get("/x")!.version, 2);
  });

  await t.step("the same seq again (a retry after a leader change) does not apply", () => {
    h.ok(putOp("/x", "changed by someone else"));
    const again = h.apply(write);
    assert.ok(again.status === "applied");
    assert.equal(again.duplicate, true);
    assert.deepEqual(again.events, []);
    // The original response, including the prevKv it saw then.
    assert.ok(first.status === "applied");
    assert.deepEqual(again.response, first.response);
    assert.equal(text((again.response as PutResponse).prevKv!.value), "old");
    assert.equal(s.revision, 4);
    assert.equal(s.getString("/x"), "changed by someone else");
    assert.equal(s.get("/x")!.version, 3);
  });

  await t.step("the next seq applies", () => {
    const r = h.apply(session("c1", 2, putOp("/x", "mine")));
    assert.ok(r.status === "applied" && !r.duplicate);
    assert.equal(s.revision, 5);
    assert.deepEqual(s.session("c1")!.lastSeq, 2);
  });

  await t.step("an older seq is stale and changes nothing", () => {
    const r = h.apply(session("c1", 1, putOp("/x", "late")));
    assert.deepEqual(r, {
      status: "stale",
      index: 6,
      revision: 5,
      clientId: "c1",
      seq: 1,
      lastSeq: 2,
      error: 'Seq 1 of client "c1" is stale: seq 2 was already applied',
    });
    assert.equal(s.getString("/x"), "mine");
  });

  await t.step("gaps in seq are allowed", () => {
    const r = h.apply(session("c1", 10, delOp("/x")));
    assert.ok(r.status === "applied" && !r.duplicate);
    assert.equal(s.get("/x"), undefined);
  });

  await t.step("an unknown client must start at seq 1", () => {
    const r = h.apply(session("c2", 4, putOp("/y", "1")));
    assert.equal(r.status, "unknownSession");
    assert.ok(r.status === "unknownSession");
    assert.match(
      r.error,
      /Session of client "c2" is unknown or expired, so seq 4 cannot be applied/,
    );
    assert.equal(s.get("/y"), undefined);
    assert.equal(s.session("c2"), undefined);
  });

  await t.step("numeric and string client ids are different clients", () => {
    h.ok(session(1, 1, putOp("/n", "a")));
    h.ok(session("1", 1, putOp("/n", "b")));
    assert.equal(s.get("/n")!.version, 2);
    assert.equal(s.sessionCount, 3);
  });
});

Deno.test("a rejected command is remembered too", () => {
  const h = new Harness({ limits: { valueBytesMax: 2 } });
  const first = h.apply(session("c", 1, putOp("/k", "too big")));
  assert.equal(first.status, "rejected");
  const again = h.apply(session("c", 1, putOp("/k", "too big")));
  assert.deepEqual(again, { ...first, index: 2, duplicate: true });
  assert.equal(h.store.revision, 1);
});

Deno.test("sessions expire by log index, deterministically", async (t) => {
  const run = () => {
    const h = new Harness({ sessionIdleEntriesMax: 10 });
    const out: string[] = [];
    h.ok(session("a", 1, putOp("/a", "1"))); // index 1
    h.ok(session("b", 1, putOp("/b", "1"))); // index 2
    for (let i = 3; i <= 10; i++) h.store.applyNoop(++h.index); // indexes 3..10
    out.push(
      `at 10: a=${h.store.session("a") !== undefined} b=${h.store.session("b") !== undefined}`,
    );
    h.apply(putOp("/tick", "")); // index 11: a (last heard at 1) is 10 entries behind
    out.push(
      `at 11: a=${h.store.session("a") !== undefined} b=${h.store.session("b") !== undefined}`,
    );
    const b = h.apply(session("b", 1, putOp("/b", "1"))); // index 12: b was forgotten at 12
    out.push(`b retry: ${b.status}`);
    return { h, out };
  };
  const { h, out } = run();

  await t.step("a client is forgotten when the applied index reaches lastIndex + N", () => {
    assert.deepEqual(out, [
      "at 10: a=true b=true",
      "at 11: a=false b=true",
      // b's seq 1 is applied again: the documented hole when a client stays silent for N entries.
      "b retry: applied",
    ]);
    assert.equal(h.store.get("/b")!.version, 2);
  });

  await t.step("a forgotten client's later seq is refused, not re-applied", () => {
    const r = h.apply(session("a", 2, putOp("/a", "2")));
    assert.equal(r.status, "unknownSession");
    assert.equal(h.store.getString("/a"), "1");
  });

  await t.step("the same log gives the same sessions", () => {
    assert.deepEqual(run().h.store.snapshot(), run().h.store.snapshot());
  });
});

Deno.test("the number of sessions is bounded; the least recently heard goes first", () => {
  const h = new Harness({ sessionsMax: 3 });
  h.ok(session("a", 1, putOp("/k", "a")));
  h.ok(session("b", 1, putOp("/k", "b")));
  h.ok(session("c", 1, putOp("/k", "c")));
  // Hearing from "a" again (even a duplicate) makes "b" the least recently heard.
  h.apply(session("a", 1, putOp("/k", "a")));
  h.ok(session("d", 1, putOp("/k", "d")));
  assert.equal(h.store.sessionCount, 3);
  assert.equal(h.store.session("b"), undefined);
  assert.deepEqual(
    ["a", "c", "d"].map((c) => h.store.session(c)?.lastIndex),
    [4, 3, 5],
  );
  assert.deepEqual(h.store.snapshot().sessions.map((s) => s.clientId), ["c", "a", "d"]);
});

Deno.test("sessions survive a snapshot round-trip", () => {
  const h = new Harness();
  const write = encodeCommand(session("c", 1, putOp("/k", "v", true)));
  h.ok(write);
  const restored = MetadataStore.fromSnapshot(h.store.snapshot());
  const r = restored.apply(write, 2);
  assert.ok(r.status === "applied");
  assert.equal(r.duplicate, true);
  assert.equal(restored.revision, 2);
});
