/**
 * Snapshot figures for a real {@linkcode MetadataStore}: build a store of 1,000,000 keys through
 * `apply`, then time each step of taking and restoring a snapshot as the hosts do it — freeze a
 * point-in-time view (`store.freeze`), encode it in chunks as the server's snapshotter does
 * (`encodeStoreSnapshotChunks`, with the longest chunk: the most one step keeps the event loop),
 * serialize at once (`encodeStoreSnapshot`), write durably (`FileStorage.saveSnapshot`: temp file, fdatasync,
 * rename, directory fsync), read back (`FileStorage.open` + `load`, with the CRC check), and
 * restore (`decodeStoreSnapshot`) — with the snapshot's size.
 *
 * Run with `deno run -A bench/snapshot_bench.ts [--keys 1000000] [--dir /path/on/disk]`.
 * The temp directory is removed at the end.
 */

import { MetadataStore } from "../src/kv/store.ts";
import { encodePut } from "../src/kv/command.ts";
import { FileStorage } from "../src/storage/file_storage.ts";
import {
  decodeStoreSnapshot,
  encodeStoreSnapshot,
  encodeStoreSnapshotChunks,
} from "../src/storage/store_snapshot.ts";
import { snapshotName } from "../src/storage/snapshot_file.ts";

function flag(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

const keys = Number(flag("keys", "1000000"));
const root = Deno.makeTempDirSync({
  dir: flag("dir", Deno.env.get("TMPDIR") ?? "/tmp"),
  prefix: "raftmeta_snapbench_",
});
const MiB = 1024 * 1024;

function timed<T>(f: () => T): [T, number] {
  const start = performance.now();
  const out = f();
  return [out, (performance.now() - start) / 1000];
}

try {
  // Keys like /services/svc-000123/instance-7, values like 10.0.1.23:8080 (about 30 + 14 bytes).
  const [store, buildS] = timed(() => {
    const s = new MetadataStore();
    for (let k = 0; k < keys; k++) {
      const key = `/services/svc-${String(k >> 4).padStart(6, "0")}/instance-${k & 15}`;
      s.apply(encodePut(key, `10.0.${(k >> 8) & 255}.${k & 255}:8080`), k + 1);
    }
    return s;
  });
  const [frozen, freezeS] = timed(() => store.freeze());
  let chunks = 0;
  let chunkSMax = 0;
  const [, chunksS] = timed(() => {
    const it = encodeStoreSnapshotChunks(frozen);
    while (true) {
      const [step, s] = timed(() => it.next());
      if (step.done) break;
      chunks++;
      chunkSMax = Math.max(chunkSMax, s);
    }
  });
  frozen.release();
  const [data, encodeS] = timed(() => encodeStoreSnapshot(store));
  const dir = `${root}/n1`;
  const storage = FileStorage.open(dir, { clusterId: "bench", nodeId: "n1" });
  const meta = { index: keys, term: 1, voters: ["n1", "n2", "n3"] };
  const [, writeS] = timed(() => storage.saveSnapshot({ meta, data }));
  storage.close();
  const fileBytes = Deno.statSync(`${dir}/${snapshotName(keys)}`).size;
  const [loaded, loadS] = timed(() => {
    const s = FileStorage.open(dir, { clusterId: "bench", nodeId: "n1" });
    const p = s.load();
    s.close();
    return p;
  });
  const [restored, decodeS] = timed(() => decodeStoreSnapshot(loaded.snapshot!.data));
  if (restored.size !== keys || restored.revision !== store.revision) {
    throw new Error(`Restored ${restored.size} keys at revision ${restored.revision}`);
  }
  const rows = [
    ["build store through apply", buildS],
    ["freeze a point-in-time view (store.freeze)", freezeS],
    [`encode in ${chunks} chunks of 64 KiB (longest ${(chunkSMax * 1000).toFixed(1)} ms)`, chunksS],
    ["serialize at once (encodeStoreSnapshot)", encodeS],
    ["write durably (tmp, fdatasync, rename, dir fsync)", writeS],
    ["read back (open + load, CRC-32C checked)", loadS],
    ["restore store (decodeStoreSnapshot)", decodeS],
  ] as const;
  console.log(`snapshot of a MetadataStore with ${keys.toLocaleString("en-US")} keys`);
  console.log(
    `size: ${(data.byteLength / MiB).toFixed(1)} MiB of data, file ${
      (fileBytes / MiB).toFixed(1)
    } MiB (${(data.byteLength / keys).toFixed(1)} bytes per key)`,
  );
  for (const [what, s] of rows) {
    console.log(`${what.padEnd(56)} ${s.toFixed(3).padStart(8)} s`);
  }
  console.log(
    `take = serialize + write: ${(encodeS + writeS).toFixed(2)} s; ` +
      `restart from it = read back + restore: ${(loadS + decodeS).toFixed(2)} s`,
  );
} finally {
  Deno.removeSync(root, { recursive: true });
}
