// FileStorage's write-ahead log on the simulated disk and on real files: round trips, suffix
// replacement, group commit, segment roll-over, torn tails, corruption and foreign directories.
import assert from "node:assert/strict";
import { DataDirError, WalCorruptionError } from "../src/storage/errors.ts";
import { joinPath } from "../src/storage/fs.ts";
import { RECORD_HEADER_BYTES } from "../src/storage/record.ts";
import { TIP_FILE } from "../src/storage/wal.ts";
import {
  assertEntries,
  type Disk,
  entries,
  hs,
  onBothDisks,
  openStorage,
  realDisk,
  segmentFiles,
  simDisk,
} from "./storage_helpers.ts";

/** The error `fn` throws, which must be a `type`. */
function caught<E extends Error>(fn: () => unknown, type: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e}`);
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${type.name}, nothing was thrown` });
}

Deno.test("WAL round trip", async (t) => {
  await t.step("entries and hard state survive close and reopen", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      assert.deepEqual(s.load(), { hardState: hs(0, undefined, 0), entries: [] });
      s.save(hs(1, "n1", 0), entries(1, 3, 1));
      s.save(undefined, entries(4, 5, 1));
      s.save(hs(2, undefined, 4), []);
      s.save(hs(2, "n2", 5), [{ index: 6, term: 2, kind: "noop", command: new Uint8Array() }]);
      s.close();
      const again = openStorage(disk);
      const loaded = again.load();
      assert.deepEqual(loaded.hardState, hs(2, "n2", 5));
      assertEntries(loaded.entries, [
        ...entries(1, 5, 1),
        { index: 6, term: 2, kind: "noop", command: new Uint8Array() },
      ]);
      assert.equal(loaded.snapshot, undefined);
      assert.equal(again.lastIndex, 6);
      assert.equal(again.tornTail, undefined);
      // A second load reads the disk again and agrees.
      assertEntries(again.load().entries, loaded.entries);
      again.close();
    });
  });

  await t.step(
    "a later entry at a lower index replaces the suffix (follower truncation)",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const s = openStorage(disk);
        s.save(hs(1, "n1", 0), entries(1, 5, 1));
        s.save(hs(2, "n2", 2), entries(3, 4, 2));
        assertEntries(s.load().entries, [...entries(1, 2, 1), ...entries(3, 4, 2)]);
        s.save(undefined, entries(5, 6, 2));
        s.save(undefined, entries(1, 1, 1)); // rewrite from the very start
        s.close();
        const again = openStorage(disk);
        assertEntries(again.load().entries, entries(1, 1, 1));
        assert.equal(again.lastIndex, 1);
        again.close();
      });
    },
  );

  await t.step("a gap after the last entry is refused", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(undefined, entries(1, 2, 1));
      assert.throws(() => s.save(undefined, entries(4, 4, 1)), /gap after 2/);
      s.close();
    });
  });

  await t.step(
    "each save makes everything durable with one fdatasync (group commit)",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const s = openStorage(disk);
        for (const batch of [1, 16, 256]) {
          const before = s.counters;
          const simBefore = disk.sim?.syncs ?? 0;
          s.save(hs(1, "n1", s.lastIndex), entries(s.lastIndex + 1, s.lastIndex + batch, 1));
          const after = s.counters;
          assert.equal(after.dataSyncs - before.dataSyncs, 1, `batch of ${batch}`);
          assert.equal(after.dirSyncs - before.dirSyncs, 0);
          assert.equal(after.records - before.records, batch + 1);
          if (disk.sim !== undefined) assert.equal(disk.sim.syncs - simBefore, 1);
        }
        assert.equal(s.counters.saves, 3);
        s.close();
      });
    },
  );

  await t.step("segments roll over past the size limit and replay in order", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk, { segmentBytesMax: 4096 });
      for (let i = 1; i <= 600; i += 10) s.save(hs(1, "n1", i - 1), entries(i, i + 9, 1, 40));
      // Replace a suffix that spans segments.
      s.save(hs(2, undefined, 300), entries(290, 320, 2, 40));
      const segments = segmentFiles(disk);
      assert.ok(segments.length >= 5, `only ${segments.length} segments`);
      assert.match(segments[0], /^wal-0000000000000001-0000000000000001\.log$/);
      for (const name of segments) assert.ok(disk.fs.size(joinPath(disk.dir, name)) < 4096 + 1024);
      s.close();
      const again = openStorage(disk, { segmentBytesMax: 4096 });
      const loaded = again.load();
      assert.deepEqual(loaded.hardState, hs(2, undefined, 300));
      assertEntries(loaded.entries, [...entries(1, 289, 1, 40), ...entries(290, 320, 2, 40)]);
      // Appending continues in the last segment and survives another reopen.
      again.save(undefined, entries(321, 321, 2, 40));
      again.close();
      const third = openStorage(disk, { segmentBytesMax: 4096 });
      assert.equal(third.load().entries.length, 321);
      third.close();
    });
  });

  await t.step("a roll-over syncs the directory once; the save still syncs data once", () => {
    const disk = simDisk();
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    s.save(undefined, entries(1, 40, 1, 40));
    const before = s.counters;
    s.save(undefined, entries(41, 41, 1, 40));
    assert.equal(s.counters.dataSyncs - before.dataSyncs, 1);
    assert.equal(s.counters.dirSyncs - before.dirSyncs, 1);
    assert.equal(segmentFiles(disk).length, 2);
    assert.match(segmentFiles(disk)[1], /^wal-0000000000000002-0000000000000029\.log$/);
    s.close();
  });
});

Deno.test("WAL torn tail", async (t) => {
  await t.step(
    "cut at every byte of the last record: the rest recovered, the bytes kept aside",
    async (t) => {
      await onBothDisks(t, (disk) => {
        const s = openStorage(disk);
        s.save(hs(1, "n1", 0), entries(1, 3, 1));
        s.save(hs(1, "n1", 3), []);
        const segment = segmentFiles(disk)[0];
        const path = joinPath(disk.dir, segment);
        const lastStart = disk.fs.size(path);
        const tip = tipBytes(disk);
        s.save(undefined, entries(4, 4, 1));
        const full = disk.fs.readFile(path);
        s.close();
        setTipBytes(disk, tip); // as if the last save's fdatasync never returned
        const recordBytes = full.length - lastStart;
        assert.equal(recordBytes, RECORD_HEADER_BYTES + 17 + 24);
        for (let keep = 0; keep < recordBytes; keep++) {
          disk.cut(segment, lastStart + keep);
          setTipBytes(disk, tip);
          const r = openStorage(disk);
          const loaded = r.load();
          assertEntries(loaded.entries, entries(1, 3, 1));
          assert.deepEqual(loaded.hardState, hs(1, "n1", 3));
          if (keep === 0) {
            assert.equal(r.tornTail, undefined);
          } else {
            assert.equal(r.tornTail?.offset, lastStart, `keep ${keep}`);
            assert.equal(r.tornTail?.file, path);
            const side = `${path}.torn-${lastStart}`;
            assert.equal(r.tornTail?.sideFile, side);
            assert.deepEqual(disk.fs.readFile(side), full.subarray(lastStart, lastStart + keep));
            disk.fs.remove(side);
          }
          assert.equal(disk.fs.size(path), lastStart);
          r.close();
          // The repair is durable: the next open finds nothing to cut.
          const clean = openStorage(disk);
          assert.equal(clean.tornTail, undefined);
          clean.close();
          // Put the whole record back for the next cut.
          const f = disk.fs.openAppend(path);
          f.write(full.subarray(lastStart));
          f.syncData();
          f.close();
        }
      });
    },
  );

  await t.step("a bad checksum on the final record only is a torn tail", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 0), entries(1, 3, 1));
      const segment = segmentFiles(disk)[0];
      const lastStart = disk.fs.size(joinPath(disk.dir, segment));
      const tip = tipBytes(disk);
      s.save(undefined, entries(4, 4, 1));
      s.close();
      setTipBytes(disk, tip); // as if the last save's fdatasync never returned
      disk.flip(segment, lastStart + RECORD_HEADER_BYTES + 20);
      const r = openStorage(disk);
      assertEntries(r.load().entries, entries(1, 3, 1));
      assert.equal(r.tornTail?.offset, lastStart);
      assert.match(r.tornTail?.reason ?? "", /checksum mismatch/);
      // New saves go where the torn record was.
      r.save(undefined, entries(4, 5, 2));
      r.close();
      const again = openStorage(disk);
      assertEntries(again.load().entries, [...entries(1, 3, 1), ...entries(4, 5, 2)]);
      again.close();
    });
  });

  await t.step("a new segment torn inside its header is removed; the old one carries on", () => {
    const disk = simDisk();
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    s.save(hs(1, "n1", 0), entries(1, 40, 1, 40));
    // The roll-over save reaches the new file but never its sync.
    disk.sim!.faultHook = (op) => {
      if (op === "syncData") throw new Error("Power cut");
    };
    assert.throws(() => s.save(undefined, entries(41, 41, 1, 40)), /Power cut/);
    disk.sim!.faultHook = undefined;
    // The new file's name was never synced either, so keep it as if the directory had been.
    disk.fs.syncDir(disk.dir);
    disk.sim!.crash({ tornTail: () => 5 });
    const r = openStorage(disk, { segmentBytesMax: 1024 });
    assertEntries(r.load().entries, entries(1, 40, 1, 40));
    assert.equal(r.tornTail?.offset, 0);
    assert.equal(segmentFiles(disk).length, 1);
    r.save(undefined, entries(41, 41, 1, 40));
    r.close();
    const again = openStorage(disk, { segmentBytesMax: 1024 });
    assert.equal(again.load().entries.length, 41);
    assert.equal(segmentFiles(disk).length, 2);
    again.close();
  });
});

Deno.test("WAL corruption", async (t) => {
  await t.step("a flipped byte in the middle of a segment names the file and offset", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 0), entries(1, 3, 1));
      const segment = segmentFiles(disk)[0];
      const secondSave = disk.fs.size(joinPath(disk.dir, segment));
      s.save(hs(1, "n1", 3), entries(4, 6, 1));
      s.save(hs(1, "n1", 6), entries(7, 9, 1));
      s.close();
      // Entry 5's payload: skip entry 4's record, then into entry 5's command.
      const entryBytes = RECORD_HEADER_BYTES + 17 + 24;
      const target = secondSave + entryBytes;
      disk.flip(segment, target + RECORD_HEADER_BYTES + 20);
      const e = caught(() => openStorage(disk), WalCorruptionError);
      assert.equal(e.file, joinPath(disk.dir, segment));
      assert.equal(e.offset, target);
      assert.match(e.message, new RegExp(`"${joinPath(disk.dir, segment)}" at byte ${target}`));
      assert.match(e.message, /checksum mismatch/);
    });
  });

  await t.step("an impossible length in the middle is corruption, not a torn tail", async (t) => {
    await onBothDisks(t, (disk) => {
      const s = openStorage(disk);
      s.save(hs(1, "n1", 0), entries(1, 3, 1));
      const segment = segmentFiles(disk)[0];
      const at = disk.fs.size(joinPath(disk.dir, segment));
      s.save(hs(1, "n1", 3), entries(4, 60, 1));
      s.close();
      disk.flip(segment, at + 3); // the length's high byte: about 4 GiB
      assert.throws(
        () => openStorage(disk),
        (e) =>
          e instanceof WalCorruptionError && e.offset === at &&
          /length \d+ exceeds the maximum/.test(e.message),
      );
    });
  });

  await t.step("damage at the end of a segment that is not the last is corruption", () => {
    const disk = simDisk();
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    s.save(hs(1, "n1", 0), entries(1, 40, 1, 40));
    s.save(undefined, entries(41, 41, 1, 40));
    s.close();
    const [first] = segmentFiles(disk);
    const size = disk.fs.size(joinPath(disk.dir, first));
    disk.flip(first, size - 1);
    assert.throws(() => openStorage(disk, { segmentBytesMax: 1024 }), WalCorruptionError);
    disk.flip(first, size - 1);
    disk.cut(first, size - 1);
    assert.throws(
      () => openStorage(disk, { segmentBytesMax: 1024 }),
      (e) => e instanceof WalCorruptionError && /runs past the end/.test(e.message),
    );
  });

  await t.step("a missing segment in the sequence is corruption", () => {
    const disk = simDisk();
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    for (let i = 1; i <= 120; i += 20) s.save(undefined, entries(i, i + 19, 1, 40));
    s.close();
    const segments = segmentFiles(disk);
    assert.ok(segments.length >= 3);
    disk.fs.remove(joinPath(disk.dir, segments[1]));
    assert.throws(
      () => openStorage(disk, { segmentBytesMax: 1024 }),
      (e) => e instanceof WalCorruptionError && /segments between are missing/.test(e.message),
    );
  });
});

Deno.test("data directory identity", async (t) => {
  await t.step("another cluster's or node's directory is refused", async (t) => {
    await onBothDisks(t, (disk) => {
      openStorage(disk).close();
      assert.throws(
        () => openStorage(disk, { clusterId: "c2" }),
        (e) =>
          e instanceof DataDirError &&
          e.message === `Data directory "${disk.dir}" refused: it belongs to cluster "c1", ` +
              `not to cluster "c2"`,
      );
      assert.throws(
        () => openStorage(disk, { nodeId: "n2" }),
        (e) =>
          e instanceof DataDirError && /belongs to node "n1", not to node "n2"/.test(e.message),
      );
      openStorage(disk).close();
    });
  });

  await t.step("WAL files without meta.json are refused", () => {
    const disk = simDisk();
    openStorage(disk).close();
    disk.fs.remove(joinPath(disk.dir, "meta.json"));
    assert.throws(() => openStorage(disk), /holds "wal-.*" but no meta\.json/);
  });

  await t.step("a garbled meta.json is refused with its path", () => {
    const disk = simDisk();
    openStorage(disk).close();
    disk.flip("meta.json", 0);
    assert.throws(() => openStorage(disk), /meta\.json" is not valid JSON/);
  });

  await t.step("ids are checked", () => {
    assert.throws(() => openStorage(simDisk(), { nodeId: "" }), /Node id must be a non-empty/);
  });
});

Deno.test("WAL writes without a sync (a leader's own write, §10.2.1)", async (t) => {
  await t.step("written records are lost at a crash until sync resolves", async () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.save(hs(1, "n1", 0), entries(1, 2, 1));
    s.write(undefined, entries(3, 4, 1));
    disk.sim!.crash();
    const lost = openStorage(disk);
    assertEntries(lost.load().entries, entries(1, 2, 1));
    lost.write(undefined, entries(3, 4, 1));
    const syncs = lost.counters.dataSyncs;
    await lost.sync();
    assert.equal(lost.counters.dataSyncs - syncs, 1);
    await lost.sync();
    assert.equal(lost.counters.dataSyncs - syncs, 1, "nothing written since: no second sync");
    disk.sim!.crash();
    assertEntries(openStorage(disk).load().entries, entries(1, 4, 1));
  });
  await t.step("a later save makes earlier writes durable with it", () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.write(hs(1, "n1", 0), entries(1, 3, 1));
    s.save(undefined, entries(4, 4, 1));
    disk.sim!.crash();
    const again = openStorage(disk).load();
    assert.deepEqual(again.hardState, hs(1, "n1", 0));
    assertEntries(again.entries, entries(1, 4, 1));
  });
  await t.step("a roll-over syncs what was written into the old segment first", () => {
    const disk = simDisk();
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    s.save(undefined, entries(1, 10, 1, 40)); // under the limit
    s.write(undefined, entries(11, 30, 1, 40)); // now past it, unsynced
    assert.equal(segmentFiles(disk).length, 1);
    s.write(undefined, entries(31, 31, 1, 40)); // rolls to a new segment
    assert.equal(segmentFiles(disk).length, 2);
    disk.sim!.crash();
    assertEntries(
      openStorage(disk, { segmentBytesMax: 1024 }).load().entries,
      entries(1, 31, 1, 40),
    );
  });
  await t.step("on the real disk, writes go on while a sync runs", async () => {
    const disk = realDisk();
    try {
      const s = openStorage(disk);
      s.write(hs(1, "n1", 0), entries(1, 100, 1));
      const first = s.sync();
      s.write(undefined, entries(101, 200, 1));
      await first;
      await s.sync();
      s.close();
      const again = openStorage(disk);
      assertEntries(again.load().entries, entries(1, 200, 1));
      again.close();
    } finally {
      disk.cleanup();
    }
  });
});

/** The WAL tip file's bytes (what the WAL recorded as synced). */
function tipBytes(disk: Disk): Uint8Array {
  return disk.fs.readFile(joinPath(disk.dir, TIP_FILE));
}

/** Puts back an earlier tip: the saves after it count as never synced (a torn write). */
function setTipBytes(disk: Disk, bytes: Uint8Array): void {
  const path = joinPath(disk.dir, TIP_FILE);
  disk.fs.truncate(path, 0);
  const f = disk.fs.openAppend(path);
  f.write(bytes);
  f.close();
}

Deno.test("WAL damage past what was synced is refused with file and offset, or repaired on request", async (t) => {
  // Three segments of acknowledged (synced) entries, 1..n.
  const setup = (disk: Disk) => {
    const s = openStorage(disk, { segmentBytesMax: 1024 });
    for (let i = 1; i <= 60; i++) s.save(hs(1, "n1", i - 1), entries(i, i, 1, 40));
    const names = s.segmentNames;
    s.close();
    assert.ok(names.length >= 3, `segments: ${names.length}`);
    return names;
  };
  await t.step("a last segment truncated to half", async (t) => {
    await onBothDisks(t, (disk) => {
      const names = setup(disk);
      const last = names[names.length - 1];
      const path = joinPath(disk.dir, last);
      const half = Math.floor(disk.fs.size(path) / 2);
      disk.cut(last, half);
      const e = caught(() => openStorage(disk, { segmentBytesMax: 1024 }), WalCorruptionError);
      assert.equal(e.file, path);
      assert.ok(e.offset <= half && e.offset > 0, `offset ${e.offset}`);
      assert.match(e.message, /synced records are missing/);
      // With repair the node starts, cuts what is left of the torn record, and says so.
      const r = openStorage(disk, { segmentBytesMax: 1024, repairWal: true });
      assert.equal(r.repaired.length, 1);
      assert.match(r.repaired[0], new RegExp(`at byte ${e.offset}: .*synced records are missing`));
      const lastIndex = r.lastIndex;
      assert.ok(lastIndex < 60 && lastIndex > 0);
      r.save(undefined, entries(lastIndex + 1, lastIndex + 1, 1, 40));
      r.close();
      // The repair is done: the next start is clean.
      const again = openStorage(disk, { segmentBytesMax: 1024 });
      assert.equal(again.lastIndex, lastIndex + 1);
      assert.deepEqual(again.repaired, []);
      again.close();
    });
  });
  await t.step("a deleted last segment", async (t) => {
    await onBothDisks(t, (disk) => {
      const names = setup(disk);
      const before = names[names.length - 2];
      disk.fs.remove(joinPath(disk.dir, names[names.length - 1]));
      const e = caught(() => openStorage(disk, { segmentBytesMax: 1024 }), WalCorruptionError);
      assert.equal(e.file, joinPath(disk.dir, before));
      assert.equal(e.offset, disk.fs.size(joinPath(disk.dir, before)));
      assert.match(e.message, /synced segments are missing/);
      const r = openStorage(disk, { segmentBytesMax: 1024, repairWal: true });
      assert.match(r.repaired[0], /synced segments are missing/);
      assert.ok(r.lastIndex < 60);
      r.close();
    });
  });
  await t.step("corruption inside the last segment is cut only with repair", async (t) => {
    await onBothDisks(t, (disk) => {
      const names = setup(disk);
      const last = names[names.length - 1];
      disk.flip(last, 40); // inside the records after the header
      caught(() => openStorage(disk, { segmentBytesMax: 1024 }), WalCorruptionError);
      const r = openStorage(disk, { segmentBytesMax: 1024, repairWal: true });
      assert.equal(r.tornTail?.file, joinPath(disk.dir, last));
      assert.ok(r.repaired.length === 1);
      r.close();
    });
  });
});

Deno.test("a crash that keeps any subset of unsynced writes: replay cuts at the first lost one", async (t) => {
  // A disk writes pages back in any order: a later unsynced write may survive while an earlier one
  // reads as zeros. Those records were never synced, so the WAL is cut at the hole, not refused.
  for (const kept of [[false, true, false], [false, false, true], [true, false, true]]) {
    await t.step(`kept ${kept.map((k) => k ? "1" : "0").join("")}`, () => {
      const disk = simDisk();
      const s = openStorage(disk);
      s.save(hs(1, "n1", 0), entries(1, 3, 1));
      s.write(undefined, entries(4, 4, 1));
      s.write(undefined, entries(5, 5, 1));
      s.write(hs(1, "n1", 5), []);
      disk.sim!.crash({
        keptWrites: (path, writes) => path.endsWith(".log") ? kept : writes.map(() => true),
      });
      const r = openStorage(disk);
      const loaded = r.load();
      const survive = kept.indexOf(false); // the first lost write: nothing from it on is replayed
      assertEntries(loaded.entries, entries(1, 3 + survive, 1));
      assert.notEqual(r.tornTail, undefined);
      assert.match(r.tornTail?.reason ?? "", /zeros/);
      r.close();
      const clean = openStorage(disk);
      assert.equal(clean.tornTail, undefined);
      assertEntries(clean.load().entries, entries(1, 3 + survive, 1));
      clean.close();
    });
  }
  await t.step("a zeroed record before synced records is still corruption", () => {
    const disk = simDisk();
    const s = openStorage(disk);
    s.save(hs(1, "n1", 0), entries(1, 3, 1));
    const segment = segmentFiles(disk)[0];
    const path = joinPath(disk.dir, segment);
    const at = disk.fs.size(path);
    s.save(undefined, entries(4, 4, 1));
    s.save(undefined, entries(5, 5, 1));
    s.close();
    const buf = disk.fs.readFile(path);
    for (let k = 0; k < RECORD_HEADER_BYTES; k++) {
      if (buf[at + k] !== 0) disk.sim!.corrupt(path, at + k, buf[at + k]);
    }
    const e = caught(() => openStorage(disk), WalCorruptionError);
    assert.match(e.message, /synced/);
  });
});
