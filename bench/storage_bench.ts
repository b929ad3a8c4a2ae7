/**
 * Durable storage figures on this machine's disk: WAL append throughput at batch sizes 1, 16 and
 * 256 (256-byte commands), fdatasync calls per second against a plain write+fdatasync loop (the
 * disk's own limit), recovery time for a 1,000,000-entry log, and snapshot write and load time
 * and size for a 1,000,000-key payload.
 *
 * Run with `deno run -A bench/storage_bench.ts [--dir /path/on/disk] [--entries 1000000]
 * [--keys 1000000] [--seconds 2]`. The temp directory is removed at the end.
 */

import { FileStorage } from "../src/storage/file_storage.ts";
import { RealFs } from "../src/storage/fs.ts";
import { readSnapshotFile, snapshotName } from "../src/storage/snapshot_file.ts";
import type { RaftLogEntry } from "../src/raft/types.ts";

function flag(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

const COMMAND_BYTES = 256;
const secondsPerRun = Number(flag("seconds", "2"));
const recoveryEntries = Number(flag("entries", "1000000"));
const snapshotKeys = Number(flag("keys", "1000000"));
const root = Deno.makeTempDirSync({
  dir: flag("dir", Deno.env.get("TMPDIR") ?? "/tmp"),
  prefix: "raftmeta_bench_",
});

const command = new Uint8Array(COMMAND_BYTES).map((_, i) => (i * 31) & 0xff);
const MiB = 1024 * 1024;
const rows: string[][] = [];

function row(...cells: (string | number)[]): void {
  rows.push(cells.map((c) => (typeof c === "number" ? fmt(c) : c)));
}

function fmt(n: number): string {
  if (n >= 100) return Math.round(n).toLocaleString("en-US");
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function entriesFrom(from: number, count: number, term = 1): RaftLogEntry[] {
  const out: RaftLogEntry[] = [];
  for (let i = 0; i < count; i++) out.push({ index: from + i, term, kind: "command", command });
  return out;
}

function open(dir: string): FileStorage {
  return FileStorage.open(dir, { clusterId: "bench", nodeId: "n1" });
}

// 1. The disk's own limit: append a record-sized write and fdatasync, as fast as possible.
{
  const path = `${root}/plain.log`;
  const f = Deno.openSync(path, { append: true, create: true });
  const bytes = new Uint8Array(COMMAND_BYTES + 26);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < secondsPerRun * 1000) {
    f.writeSync(bytes);
    f.syncDataSync();
    n++;
  }
  const s = (performance.now() - start) / 1000;
  f.close();
  row("plain write+fdatasync loop", "1 write", n / s, "", (n * bytes.length) / s / MiB, n / s);
}

// 2. WAL append throughput by batch size (each save = one write + one fdatasync).
for (const batch of [1, 16, 256]) {
  const dir = `${root}/append-${batch}`;
  const storage = open(dir);
  let next = 1;
  const start = performance.now();
  while (performance.now() - start < secondsPerRun * 1000) {
    storage.save({ term: 1, votedFor: "n1", commitIndex: next - 1 }, entriesFrom(next, batch));
    next += batch;
  }
  const s = (performance.now() - start) / 1000;
  const c = storage.counters;
  storage.close();
  row(
    "WAL save (entries + hard state)",
    `batch ${batch}`,
    (next - 1) / s,
    c.saves / s,
    c.bytesWritten / s / MiB,
    c.dataSyncs / s,
  );
  Deno.removeSync(dir, { recursive: true });
}

// 3. Recovery of a 1,000,000-entry log.
let recoveryFigures = "";
{
  const dir = `${root}/recovery`;
  const storage = open(dir);
  const writeStart = performance.now();
  for (let i = 1; i <= recoveryEntries; i += 1000) {
    const count = Math.min(1000, recoveryEntries - i + 1);
    storage.save({ term: 1, votedFor: "n1", commitIndex: i - 1 }, entriesFrom(i, count));
  }
  const writeS = (performance.now() - writeStart) / 1000;
  const segments = storage.segmentNames.length;
  const bytes = storage.counters.bytesWritten;
  storage.close();
  const start = performance.now();
  const again = open(dir);
  const loaded = again.load();
  const s = (performance.now() - start) / 1000;
  if (loaded.entries.length !== recoveryEntries) throw new Error("Recovery lost entries");
  again.close();
  row(
    "WAL write, batches of 1000",
    `${recoveryEntries} entries`,
    recoveryEntries / writeS,
    "",
    bytes / writeS / MiB,
    "",
  );
  row(
    "recovery (open + load)",
    `${recoveryEntries} entries`,
    recoveryEntries / s,
    "",
    bytes / s / MiB,
    "",
  );
  recoveryFigures = `recovery of ${recoveryEntries.toLocaleString("en-US")} entries ` +
    `(${(bytes / MiB).toFixed(0)} MiB in ${segments} segments): ${s.toFixed(2)} s`;
  Deno.removeSync(dir, { recursive: true });
}

// 4. A snapshot of 1,000,000 keys: faked as length-prefixed key/value records.
let snapshotFigures = "";
{
  const encoder = new TextEncoder();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (let k = 0; k < snapshotKeys; k++) {
    const key = encoder.encode(`/services/key-${k.toString().padStart(7, "0")}`);
    const value = encoder.encode(`value-${k}-10.0.${k % 256}.${(k >> 8) % 256}:5432`);
    const rec = new Uint8Array(2 + key.length + 4 + value.length + 16);
    const v = new DataView(rec.buffer);
    v.setUint16(0, key.length, true);
    rec.set(key, 2);
    v.setUint32(2 + key.length, value.length, true);
    rec.set(value, 6 + key.length);
    // create/mod revision and version (16 bytes), left as zeros.
    parts.push(rec);
    size += rec.length;
  }
  const data = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  const dir = `${root}/snapshot`;
  const storage = open(dir);
  storage.save({ term: 1, votedFor: "n1", commitIndex: 10 }, entriesFrom(1, 10));
  const start = performance.now();
  storage.saveSnapshot({ meta: { index: 10, term: 1, voters: ["n1", "n2", "n3"] }, data });
  const writeS = (performance.now() - start) / 1000;
  storage.close();
  const fileBytes = Deno.statSync(`${dir}/${snapshotName(10)}`).size;
  const loadStart = performance.now();
  const snap = readSnapshotFile(new RealFs(), `${dir}/${snapshotName(10)}`, 10);
  const loadS = (performance.now() - loadStart) / 1000;
  if (snap.data.length !== data.length) throw new Error("Snapshot lost bytes");
  row(
    "snapshot write (tmp, sync, rename)",
    `${snapshotKeys} keys`,
    snapshotKeys / writeS,
    "",
    fileBytes / writeS / MiB,
    "",
  );
  row(
    "snapshot load (read + CRC)",
    `${snapshotKeys} keys`,
    snapshotKeys / loadS,
    "",
    fileBytes / loadS / MiB,
    "",
  );
  snapshotFigures = `snapshot of ${snapshotKeys.toLocaleString("en-US")} keys: ` +
    `${(fileBytes / MiB).toFixed(1)} MiB, write ${writeS.toFixed(2)} s, load ${loadS.toFixed(2)} s`;
  Deno.removeSync(dir, { recursive: true });
}

Deno.removeSync(root, { recursive: true });

const header = ["what", "size", "records/s", "saves/s", "MB/s", "fdatasync/s"];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) =>
  cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
console.log(
  `storage bench: ${Deno.build.os}/${Deno.build.arch}, deno ${Deno.version.deno}, ` +
    `${COMMAND_BYTES}-byte commands, ${secondsPerRun} s per throughput run, dir ${root}`,
);
console.log(line(header));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const r of rows) console.log(line(r));
console.log(recoveryFigures);
console.log(snapshotFigures);
console.log("MB/s counts framed bytes written (records with their 9-byte headers); 1 MB = 1 MiB.");
