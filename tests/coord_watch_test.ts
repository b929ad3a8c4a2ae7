/**
 * The watch hub on one store: history then live events, prevKv on request, compacted revisions,
 * progress notifications, and its bounds (watchers per node, events buffered per watcher).
 *
 * @module
 */

import assert from "node:assert/strict";
import { CompactedError, type KvEvent, utf8 } from "../src/kv/mod.ts";
import { WatchError, WatchHub, type WatchResponse } from "../src/coord/watch.ts";
import { Harness } from "./kv_helpers.ts";

const put = (key: string, value: string) => ({
  type: "put" as const,
  key,
  value: utf8(value),
  prevKv: false,
});

function line(r: WatchResponse): string {
  if (r.kind === "events") {
    return `${r.revision}: ` +
      r.events.map((e: KvEvent) => `${e.type} ${e.kv.key}${e.prevKv ? " (prev)" : ""}`).join(", ");
  }
  return r.kind === "progress" ? `progress ${r.revision}` : `canceled: ${r.reason}`;
}

Deno.test("watch hub", async (t) => {
  await t.step("history from a revision, then live events, in order, once each", () => {
    const h = new Harness();
    const hub = new WatchHub(() => h.store);
    h.apply(put("/svc/a", "1")); // rev 2
    h.apply(put("/other", "x")); // rev 3
    h.apply(put("/svc/b", "2")); // rev 4
    const seen: string[] = [];
    hub.subscribe({ range: { prefix: "/svc/" }, startRevision: 2 }, (r) => seen.push(line(r)));
    assert.deepEqual(seen, ["2: PUT /svc/a", "4: PUT /svc/b"]);
    h.apply({ type: "delete", range: { prefix: "/svc/" }, prevKv: false }); // rev 5
    hub.notify();
    hub.notify(); // nothing new: nothing twice
    assert.deepEqual(seen.slice(2), ["5: DELETE /svc/a, DELETE /svc/b"]);
  });
  await t.step("prevKv only on request", () => {
    const h = new Harness();
    const hub = new WatchHub(() => h.store);
    const plain: string[] = [];
    const withPrev: string[] = [];
    hub.subscribe({ range: { key: "/k" } }, (r) => plain.push(line(r)));
    hub.subscribe({ range: { key: "/k" }, prevKv: true }, (r) => withPrev.push(line(r)));
    h.apply(put("/k", "1"));
    h.apply(put("/k", "2"));
    hub.notify();
    assert.deepEqual(plain, ["2: PUT /k", "3: PUT /k"]);
    assert.deepEqual(withPrev, ["2: PUT /k", "3: PUT /k (prev)"]);
  });
  await t.step("a compacted start revision fails with the oldest available", () => {
    const h = new Harness({ historyRevisionsMax: 2 });
    for (let i = 0; i < 4; i++) h.apply(put(`/k${i}`, "v"));
    const hub = new WatchHub(() => h.store);
    assert.throws(
      () => hub.subscribe({ range: { prefix: "" }, startRevision: 2 }, () => {}),
      (e: unknown) => e instanceof CompactedError && e.oldestRevision === 4,
    );
  });
  await t.step("a watcher left behind by compaction is cancelled, naming the oldest", () => {
    const h = new Harness({ historyRevisionsMax: 2 });
    const hub = new WatchHub(() => h.store);
    const seen: string[] = [];
    hub.subscribe({ range: { prefix: "" } }, (r) => seen.push(line(r)));
    for (let i = 0; i < 4; i++) h.apply(put(`/k${i}`, "v")); // no notify: the watcher lags
    hub.notify();
    assert.equal(seen.length, 1);
    assert.match(seen[0], /canceled: Revision 2 has been compacted: .* still available is 4/);
    assert.equal(hub.size, 0);
  });
  await t.step("progress notifications tell idle watchers the revision", () => {
    const h = new Harness();
    const hub = new WatchHub(() => h.store);
    const seen: string[] = [];
    hub.subscribe({ range: { key: "/quiet" } }, (r) => seen.push(line(r)));
    h.apply(put("/busy", "1"));
    hub.notify();
    hub.progress();
    assert.deepEqual(seen, ["progress 2"]);
  });
  await t.step("watchers per node are bounded", () => {
    const h = new Harness();
    const hub = new WatchHub(() => h.store, { watchersMax: 2 });
    hub.subscribe({ range: { key: "/a" } }, () => {});
    const w = hub.subscribe({ range: { key: "/a" } }, () => {});
    assert.throws(
      () => hub.subscribe({ range: { key: "/a" } }, () => {}),
      (e: unknown) => e instanceof WatchError && /Too many watchers: 2 \(most 2\)/.test(e.message),
    );
    w.cancel();
    hub.subscribe({ range: { key: "/a" } }, () => {});
  });
  await t.step(
    "an async watcher is an iterator; a slow one is cancelled with a reason",
    async () => {
      const h = new Harness();
      const hub = new WatchHub(() => h.store, { bufferEventsMax: 3 });
      const fast = hub.watch({ range: { prefix: "/" } });
      h.apply(put("/a", "1"));
      hub.notify();
      const first = await fast.next();
      assert.equal(first.done, false);
      assert.equal(line(first.value as WatchResponse), "2: PUT /a");
      fast.cancel();
      assert.equal((await fast.next()).done, true);

      const slow = hub.watch({ range: { prefix: "/" } });
      for (let i = 0; i < 5; i++) {
        h.apply(put(`/s${i}`, "v"));
        hub.notify();
      }
      const r = await slow.next();
      assert.equal(r.value?.kind, "canceled");
      assert.match(
        line(r.value as WatchResponse),
        /Watcher fell behind: more than 3 events buffered; resume from revision 3/,
      );
      assert.equal((await slow.next()).done, true);
      assert.equal(hub.size, 0, "the slow watcher holds nothing");
    },
  );
  await t.step("a store replaced by a restore neither repeats nor skips", () => {
    const h = new Harness();
    let store = h.store;
    const hub = new WatchHub(() => store);
    const seen: string[] = [];
    hub.subscribe({ range: { prefix: "" } }, (r) => seen.push(line(r)));
    h.apply(put("/a", "1"));
    hub.notify();
    // A restarted node replays its log into a fresh store: old revisions are not sent again.
    const replay = new Harness();
    store = replay.store;
    replay.apply(put("/a", "1"));
    hub.notify();
    replay.apply(put("/b", "1"));
    hub.notify();
    assert.deepEqual(seen, ["2: PUT /a", "3: PUT /b"]);
  });
});
