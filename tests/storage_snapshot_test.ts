// Snapshots: save and load, compaction with a trailing window, installing a snapshot that does
// or does not match the log, damage, and a crash between the snapshot file and its WAL marker.
import assert from "node:assert/strict";
import type { Snapshot } from "../src/raft/storage.ts";
import { SnapshotCorruptionError } from "../src/storage/errors.ts";
import { joinPath } from "../src/storage/fs.ts";
import { listSnapshots, SnapshotFrame, snapshotName } from "../src/storage/snapshot_file.ts";
import {
  assertEntries,
  entries,
  hs,
  onBothDisks,
  openStorage,
  segmentFiles,
  simDisk,
} from "./storage_helpers.ts";

function snapshot(index: number, term: number, text = `state up to ${index}`): Snapshot {
  return {
    meta: { index, term, voters: ["n1", "n2", "n3"] },
    data: new TextEncoder().encode(text),
  };
}

function text(bytes: Uint8Array | undefined): string {
  return new TextDecoder().decode(bytes);
}

Deno.test("snapshots", async (t) => {
  await t.step("the host's context and the learners survive save and load", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 80), entries(1, 100, 1));
      const context = JSON.stringify({ version: 1, members: { n4: { id: "7" } }, note: "é" });
      const withContext = { ...snapshot(60, 1), meta: { ...snapshot(60, 1).meta, context } };
      s.saveSnapshot(withContext);
      s.close();
      const loaded = openStorage(disk).load();
      assert.deepEqual(loaded.snapshot?.meta, withContext.meta);
      assert.equal(text(loaded.snapshot?.data), "state up to 60");
      const s2 = openStorage(disk);
      const learners = { ...snapshot(70, 1), meta: { ...snapshot(70, 1).meta, learners: ["n4"] } };
      s2.saveSnapshot(learners);
      s2.close();
      assert.deepEqual(openStorage(disk).load().snapshot?.meta, learners.meta);
    });
  });

  await t.step("save and load round trip, the log kept after it", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 80), entries(1, 100, 1));
      s.saveSnapshot(snapshot(60, 1));
      const first = s.load();
      assert.deepEqual(first.snapshot?.meta, { index: 60, term: 1, voters: ["n1", "n2", "n3"] });
      s.close();
      const again = openStorage(disk);
      const loaded = again.load();
      assert.deepEqual(loaded.snapshot?.meta, { index: 60, term: 1, voters: ["n1", "n2", "n3"] });
      assert.equal(text(loaded.snapshot?.data), "state up to 60");
      // The default trailing window (10,000) keeps every entry.
      assertEntries(loaded.entries, entries(1, 100, 1));
      assert.deepEqual(loaded.hardState, hs(1, "n1", 80));
      assert.ok(disk.fs.exists(joinPath(disk.dir, snapshotName(60))));
      again.close();
    });
  });

  await t.step(
    "a snapshot carries its learners (format version 2); one without stays version 1",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const s = openStorage(disk);
        s.save(hs(1, "n1", 80), entries(1, 100, 1));
        const meta = { index: 70, term: 1, voters: ["n1", "n2", "n3"], learners: ["n4", "n5"] };
        s.saveSnapshot({ meta, data: new TextEncoder().encode("with learners") });
        s.close();
        const again = openStorage(disk);
        const loaded = again.load();
        assert.deepEqual(loaded.snapshot?.meta, meta);
        assert.equal(text(loaded.snapshot?.data), "with learners");
        again.close();
      });
    },
  );

  await t.step(
    "old segments go, keeping the trailing window; two snapshots are kept",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const options = { segmentBytesMax: 1024, retainEntries: 50 };
        const s = openStorage(disk, options);
        for (let i = 1; i <= 500; i += 10) s.save(hs(1, "n1", i + 9), entries(i, i + 9, 1, 40));
        const segmentsBefore = segmentFiles(disk).length;
        s.saveSnapshot(snapshot(200, 1));
        s.saveSnapshot(snapshot(300, 1));
        s.saveSnapshot(snapshot(400, 1));
        assert.ok(s.counters.snapshotsSaved === 3);
        const segmentsAfter = segmentFiles(disk).length;
        assert.ok(segmentsAfter < segmentsBefore, `${segmentsAfter} < ${segmentsBefore}`);
        assert.deepEqual(listSnapshots(disk.fs, disk.dir).map((x) => x.index), [300, 400]);
        s.close();
        const again = openStorage(disk, options);
        const loaded = again.load();
        assert.equal(loaded.snapshot?.meta.index, 400);
        const first = loaded.entries[0].index;
        // Entries from 301 on are kept (after the previous snapshot, the fallback should 400 be
        // corrupt); a segment holds ~20 entries, so little more is.
        assert.ok(first <= 301 && first > 250, `first kept entry ${first}`);
        assertEntries(loaded.entries, entries(first, 500, 1, 40));
        again.save(undefined, entries(501, 510, 1, 40));
        again.close();
        const third = openStorage(disk, options);
        assert.equal(third.load().entries.at(-1)?.index, 510);
        third.close();
      });
    },
  );

  await t.step("a snapshot beyond the log replaces it; the log continues after it", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 5), entries(1, 10, 1));
      s.saveSnapshot(snapshot(50, 3));
      assert.equal(s.lastIndex, 50);
      assert.deepEqual(s.load().entries, []);
      s.save(hs(3, undefined, 50), entries(51, 55, 3));
      s.close();
      const again = openStorage(disk);
      const loaded = again.load();
      assert.equal(loaded.snapshot?.meta.index, 50);
      assertEntries(loaded.entries, entries(51, 55, 3));
      again.close();
    });
  });

  await t.step("a snapshot whose entry has another term drops the log (Raft §7)", () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.save(undefined, [...entries(1, 5, 1), ...entries(6, 10, 2)]);
    s.saveSnapshot(snapshot(8, 3));
    s.close();
    const again = openStorage(disk);
    assert.deepEqual(again.load().entries, []);
    assert.equal(again.lastIndex, 8);
    again.close();
  });

  await t.step("a snapshot whose entry matches keeps the entries after it (Raft §7)", () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.save(undefined, [...entries(1, 5, 1), ...entries(6, 10, 2)]);
    s.saveSnapshot(snapshot(8, 2));
    s.close();
    const again = openStorage(disk);
    assertEntries(again.load().entries, [...entries(1, 5, 1), ...entries(6, 10, 2)]);
    again.close();
  });

  await t.step("an older snapshot is refused; the same one again does nothing", () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.save(undefined, entries(1, 10, 1));
    s.saveSnapshot(snapshot(8, 1));
    const syncs = s.counters.fsyncs;
    s.saveSnapshot(snapshot(8, 1));
    assert.equal(s.counters.fsyncs, syncs);
    assert.throws(() => s.saveSnapshot(snapshot(5, 1)), /does not follow the stored snapshot/);
    s.close();
  });

  await t.step("a damaged snapshot file stops recovery with its name", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(undefined, entries(1, 10, 1));
      s.saveSnapshot(snapshot(8, 1));
      s.close();
      disk.flip(snapshotName(8), 30);
      assert.throws(
        () => openStorage(disk),
        (e) =>
          e instanceof SnapshotCorruptionError &&
          e.file === joinPath(disk.dir, snapshotName(8)) && /checksum mismatch/.test(e.message),
      );
    });
  });

  await t.step(
    "a corrupt newest snapshot falls back to the older one while the WAL covers the gap",
    async (t) => {
      await onBothDisks(t, (disk) => {
        // Small segments and window: compaction after the snapshot at 80 would reach past 40.
        const options = { segmentBytesMax: 1024, retainEntries: 10 };
        const s = openStorage(disk, options);
        for (let i = 1; i <= 100; i += 10) s.save(hs(2, "n1", i + 9), entries(i, i + 9, 2, 40));
        s.saveSnapshot(snapshot(40, 2));
        s.saveSnapshot(snapshot(80, 2));
        s.close();
        const before = openStorage(disk, options);
        const expected = before.load();
        before.close();
        assert.equal(expected.snapshot?.meta.index, 80);

        disk.flip(snapshotName(80), 30);
        const again = openStorage(disk, options);
        const loaded = again.load();
        assert.deepEqual(again.snapshotFallback, {
          corrupt: joinPath(disk.dir, snapshotName(80)),
          movedTo: joinPath(disk.dir, snapshotName(80)) + ".corrupt",
          used: joinPath(disk.dir, snapshotName(40)),
          reason: again.snapshotFallback?.reason,
        });
        assert.match(again.snapshotFallback!.reason, /^at byte 0: checksum mismatch/);
        assert.equal(loaded.snapshot?.meta.index, 40);
        assert.equal(text(loaded.snapshot?.data), "state up to 40");
        // The same log from 41 on, the same hard state: applying 41..80 rebuilds snapshot 80.
        assert.ok(loaded.entries[0].index <= 41, `first entry ${loaded.entries[0].index}`);
        assertEntries(loaded.entries.filter((e) => e.index > 40), entries(41, 100, 2, 40));
        assert.deepEqual(loaded.hardState, expected.hardState);
        // The corrupt file is set aside, so the next start goes on from 40 without a fallback.
        assert.deepEqual(listSnapshots(disk.fs, disk.dir).map((x) => x.index), [40]);
        assert.ok(disk.fs.exists(joinPath(disk.dir, snapshotName(80) + ".corrupt")));
        again.save(undefined, entries(101, 105, 2, 40));
        again.saveSnapshot(snapshot(90, 2));
        again.close();
        const third = openStorage(disk, options);
        assert.equal(third.snapshotFallback, undefined);
        const last = third.load();
        assert.equal(last.snapshot?.meta.index, 90);
        assertEntries(last.entries.filter((e) => e.index > 90), entries(91, 105, 2, 40));
        third.close();
      });
    },
  );

  await t.step(
    "a corrupt newest snapshot is refused, naming it, when the WAL no longer covers the gap",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const s = openStorage(disk);
        s.save(hs(1, "n1", 10), entries(1, 10, 1));
        s.saveSnapshot(snapshot(8, 1));
        // A snapshot installed from the leader, beyond the log: the entries after 8 are gone.
        s.saveSnapshot(snapshot(50, 3));
        s.save(hs(3, undefined, 55), entries(51, 55, 3));
        s.close();
        disk.flip(snapshotName(50), 30);
        assert.throws(
          () => openStorage(disk),
          (e) =>
            e instanceof SnapshotCorruptionError &&
            e.file === joinPath(disk.dir, snapshotName(50)) &&
            /checksum mismatch.*the older snapshot "snap-0000000000000008\.snap" cannot stand in: the WAL starts at index 51/
              .test(e.message),
        );
        // Nothing was set aside: the operator finds the files as they were.
        assert.deepEqual(listSnapshots(disk.fs, disk.dir).map((x) => x.index), [8, 50]);
        // Both corrupt: each is named.
        disk.flip(snapshotName(8), 30);
        assert.throws(
          () => openStorage(disk),
          /snap-0000000000000032\.snap" at byte 0: checksum mismatch.*"snap-0000000000000008\.snap" is corrupt too \(checksum mismatch/,
        );
      });
    },
  );

  await t.step("a crash after the snapshot file but before its WAL marker", () => {
    for (const matching of [true, false]) {
      const disk = simDisk();
      const s = openStorage(disk);
      s.save(hs(1, "n1", 10), entries(1, 10, 1));
      // Everything up to the rename and directory sync happens; the WAL write does not.
      disk.sim!.faultHook = (op, path) => {
        if (op === "write" && path.endsWith(".log")) throw new Error("Power cut");
      };
      const snap = matching ? snapshot(10, 1) : snapshot(12, 2);
      assert.throws(() => s.saveSnapshot(snap), /Power cut/);
      disk.sim!.faultHook = undefined;
      disk.sim!.crash();
      const again = openStorage(disk);
      const loaded = again.load();
      assert.equal(loaded.snapshot?.meta.index, matching ? 10 : 12);
      // Recovery applies the snapshot as if its marker had been written: entry 10 of term 1
      // matches (10, 1) and the log stays; nothing matches (12, 2) and the log is dropped.
      assertEntries(loaded.entries, matching ? entries(1, 10, 1) : []);
      again.save(undefined, entries(again.lastIndex + 1, again.lastIndex + 2, 2));
      again.close();
      // Recovery wrote the missing marker, so the new entries are not dropped next time.
      const third = openStorage(disk);
      assert.equal(third.load().entries.length, matching ? 12 : 2);
      third.close();
    }
  });

  await t.step(
    "in two halves: the file written (async on a real disk), then adopted",
    async (t) => {
      await onBothDisks(t, async (disk) => {
        const s = openStorage(disk);
        s.save(hs(1, "n1", 80), entries(1, 100, 1));
        const snap = snapshot(60, 1, "x".repeat(100_000));
        // The frame head built chunk by chunk, as the snapshotter does.
        const frame = new SnapshotFrame(snap.meta);
        for (let at = 0; at < snap.data.length; at += 4096) {
          frame.add(snap.data.subarray(at, at + 4096));
        }
        await s.writeSnapshotFile(snap, frame.head());
        // Written but not adopted: the WAL does not know it yet.
        assert.equal(s.snapshotIndex, 0);
        assert.ok(disk.fs.exists(joinPath(disk.dir, snapshotName(60))));
        assert.equal(s.adoptSnapshot(snap), true);
        assert.equal(s.snapshotIndex, 60);
        s.close();
        const again = openStorage(disk);
        const loaded = again.load();
        assert.deepEqual(loaded.snapshot?.meta, snap.meta);
        assert.equal(text(loaded.snapshot?.data), "x".repeat(100_000));
        // One superseded by a newer snapshot saved meanwhile is not adopted, and its file goes.
        const older = snapshot(70, 1);
        await again.writeSnapshotFile(older);
        again.saveSnapshot(snapshot(80, 1));
        assert.equal(again.adoptSnapshot(older), false);
        // (Retention at 80 counted the unadopted 70 among the newest two, so 60 went already.)
        assert.deepEqual(listSnapshots(disk.fs, disk.dir).map((x) => x.index), [80]);
        assert.throws(() => again.adoptSnapshot(snapshot(90, 1)), /is missing/);
        again.close();
      });
    },
  );

  await t.step("leftover temp files are removed at open", () => {
    const disk = simDisk();
    openStorage(disk).close();
    const f = disk.fs.openAppend(joinPath(disk.dir, `${snapshotName(9)}.tmp`));
    f.write(new Uint8Array(10));
    f.close();
    const s = openStorage(disk);
    assert.deepEqual(disk.fs.list(disk.dir).filter((n) => n.endsWith(".tmp")), []);
    assert.equal(s.load().snapshot, undefined);
    s.close();
  });
});
