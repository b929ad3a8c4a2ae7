// Crashes on the simulated disk: at every step of the persist path, at every step of a
// snapshot, and at random points of seeded random workloads checked against a model. After a
// crash the storage must hold everything acknowledged (every save that returned), and at most
// a prefix of the one save in flight.
import assert from "node:assert/strict";
import type { PersistedState, Snapshot } from "../src/raft/storage.ts";
import type { HardState, RaftLogEntry } from "../src/raft/types.ts";
import type { FileStorage } from "../src/storage/file_storage.ts";
import { randomTornTail, type TornTailChooser } from "../src/storage/fs.ts";
import {
  assertEntries,
  commandFor,
  type Disk,
  entries,
  hs,
  openStorage,
  plain,
  seeded,
  simDisk,
} from "./storage_helpers.ts";

const TORN_TAILS: [string, TornTailChooser | undefined][] = [
  ["no torn tail", undefined],
  ["all unsynced bytes kept", (_p, n) => n],
  ["half kept", (_p, n) => Math.floor(n / 2)],
  ["one byte kept", (_p, n) => Math.min(1, n)],
];

/** Counts the mutating file-system operations `fn` makes. */
function countOps(disk: Disk, fn: () => void): number {
  let ops = 0;
  disk.sim!.faultHook = () => {
    ops++;
  };
  fn();
  disk.sim!.faultHook = undefined;
  return ops;
}

/** Makes operation number `k` (from 0) of the simulated disk throw. */
function failAt(disk: Disk, k: number): void {
  let ops = 0;
  disk.sim!.faultHook = (op, path) => {
    if (ops++ === k) throw new Error(`Power cut before ${op} of ${path}`);
  };
}

function crashAndReopen(
  disk: Disk,
  s: FileStorage,
  tornTail: TornTailChooser | undefined,
  options = {},
): { storage: FileStorage; loaded: PersistedState } {
  disk.sim!.faultHook = undefined;
  disk.sim!.crash({ tornTail });
  s.close();
  const storage = openStorage(disk, options);
  return { storage, loaded: storage.load() };
}

/** Applies `batch` to `log` the way the WAL does (replacing the suffix). */
function applied(log: readonly RaftLogEntry[], batch: readonly RaftLogEntry[]): RaftLogEntry[] {
  if (batch.length === 0) return [...log];
  const first = log[0]?.index ?? batch[0].index;
  return [...log.slice(0, Math.max(0, batch[0].index - first)), ...batch];
}

Deno.test("crash at every step of the persist path", async (t) => {
  for (const roll of [false, true]) {
    const options = { segmentBytesMax: 1024 };
    // Before: entries 1..n of term 1 (n chosen so that the next save does or does not roll).
    const n = roll ? 30 : 10;
    const oldState = hs(1, "n1", 5);
    const newState = hs(2, "n2", n);
    const batch = entries(n - 2, n + 3, 2, 40);
    const setup = () => {
      const disk = simDisk();
      const s = openStorage(disk, options);
      s.save(oldState, entries(1, n, 1, 40));
      return { disk, s };
    };
    const probe = setup();
    const segmentsBefore = probe.s.segmentNames.length;
    const ops = countOps(probe.disk, () => probe.s.save(newState, batch));
    assert.equal(probe.s.segmentNames.length - segmentsBefore, roll ? 1 : 0);
    assert.equal(ops, roll ? 5 : 3); // [create,] write, syncData[, syncDir], tip write

    for (const [tornName, tornTail] of TORN_TAILS) {
      await t.step(`${roll ? "with" : "without"} a roll-over, ${tornName}`, () => {
        for (let k = 0; k <= ops; k++) {
          const { disk, s } = setup();
          const oldLog = entries(1, n, 1, 40);
          if (k < ops) {
            failAt(disk, k);
            assert.throws(() => s.save(newState, batch), /Power cut/);
          } else {
            s.save(newState, batch); // returned: acknowledged
          }
          const { storage, loaded } = crashAndReopen(disk, s, tornTail, options);
          const candidates: { hardState: HardState; log: RaftLogEntry[] }[] = [];
          if (k < ops) {
            for (let m = 0; m <= batch.length; m++) {
              candidates.push({ hardState: oldState, log: applied(oldLog, batch.slice(0, m)) });
            }
          }
          candidates.push({ hardState: newState, log: applied(oldLog, batch) });
          const seen = { hardState: loaded.hardState, log: plain(loaded.entries) };
          assert.ok(
            candidates.some((c) =>
              JSON.stringify(c.hardState) === JSON.stringify(seen.hardState) &&
              JSON.stringify(plain(c.log)) === JSON.stringify(seen.log)
            ),
            `crash before op ${k}: unexpected state ${JSON.stringify(seen)}`,
          );
          // The recovered storage takes new saves.
          storage.save(undefined, entries(storage.lastIndex + 1, storage.lastIndex + 1, 3, 40));
          storage.close();
        }
      });
    }
  }
});

Deno.test("crash at every step of saving a snapshot", async (t) => {
  const options = { segmentBytesMax: 1024, retainEntries: 5, snapshotsRetained: 1 };
  const snap = (index: number, term: number): Snapshot => ({
    meta: { index, term, voters: ["n1"] },
    data: new TextEncoder().encode(`upto ${index}`),
  });
  for (const [name, target] of [["matching the log", snap(30, 1)], ["beyond it", snap(45, 2)]]) {
    const s0 = target as Snapshot;
    const setup = () => {
      const disk = simDisk();
      const s = openStorage(disk, options);
      s.save(hs(1, "n1", 40), entries(1, 40, 1, 40));
      s.saveSnapshot(snap(10, 1));
      return { disk, s };
    };
    const probe = setup();
    const ops = countOps(probe.disk, () => probe.s.saveSnapshot(s0));
    assert.ok(ops >= 8, `${ops} operations`);
    await t.step(`a snapshot ${name} (${ops} steps)`, () => {
      for (const [, tornTail] of TORN_TAILS) {
        for (let k = 0; k <= ops; k++) {
          const { disk, s } = setup();
          if (k < ops) {
            failAt(disk, k);
            assert.throws(() => s.saveSnapshot(s0), /Power cut/);
          } else {
            s.saveSnapshot(s0);
          }
          const { storage, loaded } = crashAndReopen(disk, s, tornTail, options);
          const index = loaded.snapshot?.meta.index;
          assert.ok(index === 10 || index === s0.meta.index, `snapshot at ${index}`);
          if (index === 10 || s0.meta.index === 30) {
            // The log 1..40 stays, perhaps minus segments below the trailing window.
            const first = loaded.entries[0].index;
            assert.ok(first <= Math.max(index!, 10) - 5 + 1, `first entry ${first} (k=${k})`);
            assertEntries(loaded.entries, entries(first, 40, 1, 40));
          } else {
            assert.deepEqual(loaded.entries, []);
            assert.equal(storage.lastIndex, 45);
          }
          if (k === ops) assert.equal(index, s0.meta.index);
          storage.close();
        }
      }
    });
  }
});

// A model of what must be stored: the acknowledged hard state, snapshot and log.
interface Model {
  hardState: HardState;
  snap: { index: number; term: number } | undefined;
  // index -> entry, for every index from the log's first to `last`.
  log: Map<number, RaftLogEntry>;
  last: number;
}

function cloneModel(m: Model): Model {
  return { hardState: m.hardState, snap: m.snap, log: new Map(m.log), last: m.last };
}

function modelSave(m: Model, hardState: HardState | undefined, batch: RaftLogEntry[]): Model {
  const next = cloneModel(m);
  if (batch.length > 0) {
    for (let i = batch[0].index; i <= next.last; i++) next.log.delete(i);
    for (const e of batch) next.log.set(e.index, e);
    next.last = batch[batch.length - 1].index;
  }
  if (hardState !== undefined) next.hardState = hardState;
  return next;
}

function modelSnapshot(m: Model, index: number, term: number): Model {
  const next = cloneModel(m);
  if (next.log.get(index)?.term !== term) {
    next.log.clear();
    next.last = index;
  }
  next.snap = { index, term };
  return next;
}

/** Whether what was loaded is what `m` says must be there. */
function matches(m: Model, loaded: PersistedState, lastIndex: number): boolean {
  const snapIndex = loaded.snapshot?.meta.index;
  if (snapIndex !== m.snap?.index || loaded.snapshot?.meta.term !== m.snap?.term) return false;
  if (JSON.stringify(loaded.hardState) !== JSON.stringify(m.hardState)) return false;
  if (lastIndex !== m.last) return false;
  const byIndex = new Map(loaded.entries.map((e) => [e.index, e]));
  // Entries kept below the snapshot (the trailing window) must be the model's.
  for (const e of loaded.entries) {
    const want = m.log.get(e.index);
    if (want === undefined || plain([want])[0] !== plain([e])[0]) return false;
  }
  // Every entry after the snapshot must be there.
  for (let i = (snapIndex ?? 0) + 1; i <= m.last; i++) if (!byIndex.has(i)) return false;
  return true;
}

Deno.test("seeded random workloads with crashes match the model", async (t) => {
  const seeds = 24;
  const steps = 250;
  const tally = { crashes: 0, snapshots: 0, installs: 0, tornTails: 0, faults: 0 };
  for (let seed = 1; seed <= seeds; seed++) {
    await t.step(`seed ${seed}`, () => {
      const rng = seeded(seed);
      const int = (lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
      const disk = simDisk();
      const options = {
        segmentBytesMax: 1024 * int(1, 4),
        retainEntries: int(0, 30),
        snapshotsRetained: int(1, 2),
      };
      let s = openStorage(disk, options);
      let model: Model = {
        hardState: hs(0, undefined, 0),
        snap: undefined,
        log: new Map(),
        last: 0,
      };
      let term = 1;
      let crashes = 0;
      for (let step = 0; step < steps; step++) {
        const roll = rng();
        let candidates: Model[];
        const armed = rng() < 0.15;
        if (armed) failAt(disk, int(0, 6));
        let failed = false;
        try {
          if (roll < 0.75) {
            if (rng() < 0.1) term++;
            const floor = Math.max(model.snap?.index ?? 0, 0) + 1;
            const from = Math.max(floor, model.last + 1 - int(0, 3));
            const count = int(0, 8);
            const batch: RaftLogEntry[] = [];
            for (let i = 0; i < count; i++) {
              batch.push({
                index: from + i,
                term,
                kind: rng() < 0.1 ? "noop" : "command",
                command: commandFor(from + i, term, int(0, 120)),
              });
            }
            const hardState = rng() < 0.5
              ? hs(term, rng() < 0.5 ? "n2" : undefined, step)
              : undefined;
            candidates = [];
            for (let m = 0; m <= batch.length; m++) {
              candidates.push(modelSave(model, undefined, batch.slice(0, m)));
            }
            const done = modelSave(model, hardState, batch);
            candidates.push(done);
            try {
              s.save(hardState, batch);
            } catch (e) {
              failed = true;
              if (!/Power cut/.test(String(e))) throw e;
            }
            if (!failed) candidates = [done];
          } else if (roll < 0.85 && model.last > (model.snap?.index ?? 0)) {
            // A snapshot of the node's own log, or (rarely) one installed from a leader.
            let index: number;
            let snapTerm: number;
            if (rng() < 0.2) {
              tally.installs++;
              term++;
              index = model.last + int(1, 5);
              snapTerm = term;
            } else {
              index = int((model.snap?.index ?? 0) + 1, model.last);
              snapTerm = model.log.get(index)?.term ?? term;
            }
            const done = modelSnapshot(model, index, snapTerm);
            candidates = [model, done];
            try {
              s.saveSnapshot({
                meta: { index, term: snapTerm, voters: ["n1", "n2", "n3"] },
                data: new TextEncoder().encode(`upto ${index}`),
              });
            } catch (e) {
              failed = true;
              if (!/Power cut/.test(String(e))) throw e;
            }
            if (!failed) candidates = [done];
            tally.snapshots++;
          } else {
            candidates = [model];
          }
        } finally {
          disk.sim!.faultHook = undefined;
        }
        if (failed || rng() < 0.05) {
          crashes++;
          tally.crashes++;
          if (failed) tally.faults++;
          const tornTail = rng() < 0.5 ? randomTornTail(rng) : undefined;
          const r = crashAndReopen(disk, s, tornTail, options);
          s = r.storage;
          if (s.tornTail !== undefined) tally.tornTails++;
          const found = candidates.find((c) => matches(c, r.loaded, s.lastIndex));
          assert.ok(
            found !== undefined,
            `seed ${seed} step ${step}: recovered state matches no candidate: ` +
              JSON.stringify({
                snap: r.loaded.snapshot?.meta,
                hardState: r.loaded.hardState,
                first: r.loaded.entries[0]?.index,
                last: s.lastIndex,
                modelLast: model.last,
              }),
          );
          model = found;
        } else {
          model = candidates[candidates.length - 1];
        }
      }
      // A final clean reopen agrees with the model too.
      s.close();
      const end = openStorage(disk, options);
      assert.ok(matches(model, end.load(), end.lastIndex), `seed ${seed}: final state`);
      assert.ok(crashes > 0);
      end.close();
    });
  }
  // The workloads reach every path they are meant to.
  for (const [what, count] of Object.entries(tally)) assert.ok(count > 20, `${what}: ${count}`);
  console.log(`random workloads: ${JSON.stringify(tally)}`);
});
