// Shared helpers for the storage tests: one test body runs on the simulated disk and on real
// files in a temp directory.
import assert from "node:assert/strict";
import type { HardState, RaftLogEntry } from "../src/raft/types.ts";
import { FileStorage, type FileStorageOptions } from "../src/storage/file_storage.ts";
import { type Fs, joinPath, RealFs, SimFs } from "../src/storage/fs.ts";
import { LogApplier, MetadataStore, RaftNode, SeededRng } from "../mod.ts";
import { decodeStoreSnapshot } from "../src/storage/store_snapshot.ts";

/** A disk to run a test on. */
export interface Disk {
  readonly name: "sim" | "real";
  readonly fs: Fs;
  /** The data directory (not created yet). */
  readonly dir: string;
  /** The simulated disk, when this is one. */
  readonly sim: SimFs | undefined;
  /** Flips the byte at `offset` of the file `name` in the data directory. */
  flip(name: string, offset: number): void;
  /** Cuts the file `name` in the data directory to `length` bytes. */
  cut(name: string, length: number): void;
  /** Removes the temp directory (real disks). */
  cleanup(): void;
}

/** A fresh simulated disk. */
export function simDisk(): Disk {
  const sim = new SimFs();
  const dir = "/data/n1";
  return {
    name: "sim",
    fs: sim,
    dir,
    sim,
    flip: (name, offset) => sim.corrupt(joinPath(dir, name), offset),
    cut: (name, length) => {
      sim.truncate(joinPath(dir, name), length);
      const f = sim.openAppend(joinPath(dir, name));
      f.syncData();
      f.close();
    },
    cleanup: () => {},
  };
}

/** A fresh temp directory on the real disk. */
export function realDisk(): Disk {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_storage_" });
  const dir = `${root}/data`;
  return {
    name: "real",
    fs: new RealFs(),
    dir,
    sim: undefined,
    flip: (name, offset) => {
      const path = joinPath(dir, name);
      const bytes = Deno.readFileSync(path);
      bytes[offset] ^= 0xff;
      Deno.writeFileSync(path, bytes);
    },
    cut: (name, length) => Deno.truncateSync(joinPath(dir, name), length),
    cleanup: () => Deno.removeSync(root, { recursive: true }),
  };
}

/** Runs `body` as one step per disk kind, cleaning up after each. */
export async function onBothDisks(
  t: Deno.TestContext,
  body: (disk: Disk) => void | Promise<void>,
): Promise<void> {
  for (const make of [simDisk, realDisk]) {
    const disk = make();
    await t.step(disk.name, async () => {
      try {
        await body(disk);
      } finally {
        disk.cleanup();
      }
    });
  }
}

/** Opens FileStorage on `disk` as node n1 of cluster c1, with `options` on top. */
export function openStorage(
  disk: Disk,
  options: Partial<FileStorageOptions> = {},
): FileStorage {
  return FileStorage.open(disk.dir, { fs: disk.fs, clusterId: "c1", nodeId: "n1", ...options });
}

const encoder = new TextEncoder();

/** The command bytes of entry `index` in `term` (deterministic, `size` bytes). */
export function commandFor(index: number, term: number, size = 24): Uint8Array {
  const text = `put k${index} v${term}:`.padEnd(size, ".").slice(0, size);
  return encoder.encode(text);
}

/** Entries `from` to `to` inclusive, all in `term`. */
export function entries(from: number, to: number, term: number, size = 24): RaftLogEntry[] {
  const out: RaftLogEntry[] = [];
  for (let i = from; i <= to; i++) {
    out.push({ index: i, term, kind: "command", command: commandFor(i, term, size) });
  }
  return out;
}

/** A hard state. */
export function hs(term: number, votedFor: string | undefined, commitIndex: number): HardState {
  return { term, votedFor, commitIndex };
}

/** Entries as comparable plain values (index, term, kind, command text). */
export function plain(es: readonly RaftLogEntry[]): string[] {
  const dec = new TextDecoder();
  return es.map((e) => `${e.index}/${e.term}/${e.kind}/${dec.decode(e.command)}`);
}

/** Asserts two entry lists are equal, showing them as text on failure. */
export function assertEntries(actual: readonly RaftLogEntry[], expected: readonly RaftLogEntry[]) {
  assert.deepEqual(plain(actual), plain(expected));
}

/** The WAL segment file names in the data directory. */
export function segmentFiles(disk: Disk): string[] {
  return disk.fs.list(disk.dir).filter((n) => /^wal-.*\.log$/.test(n));
}

/** A small seeded generator (mulberry32), returning floats in [0, 1). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A one-node Raft node on a real data directory, with its store and applier. */
export interface RunningNode {
  node: RaftNode;
  storage: FileStorage;
  store: MetadataStore;
  applier: LogApplier;
}

/**
 * Opens `dir` as node n1 of cluster c1 and resumes from what it holds: the store from the newest
 * snapshot, the log after it (keeping 3 entries below a snapshot).
 */
export function startNode(dir: string, seed = 1): RunningNode {
  const storage = FileStorage.open(dir, { clusterId: "c1", nodeId: "n1" });
  const p = storage.load();
  const node = new RaftNode({
    id: "n1",
    voters: ["n1"],
    rng: new SeededRng(seed),
    hardState: p.hardState,
    entries: p.entries,
    snapshot: p.snapshot,
    config: { snapshotTrailingEntries: 3 },
  });
  const store = p.snapshot === undefined
    ? new MetadataStore()
    : decodeStoreSnapshot(p.snapshot.data);
  return { node, storage, store, applier: new LogApplier(store, p.snapshot?.meta.index ?? 0) };
}
