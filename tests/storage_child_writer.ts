// A writer for the kill -9 test: appends entries to a FileStorage on the real disk and prints
// `ack <lastIndex>` after each save returns (and `snap <index>` after each snapshot). The parent
// kills it with SIGKILL at an arbitrary moment and checks that every acknowledged index survived.
//
// Usage: deno run --allow-read --allow-write tests/storage_child_writer.ts <dir>
import { FileStorage } from "../src/storage/file_storage.ts";
import type { RaftLogEntry } from "../src/raft/types.ts";
import { commandFor } from "./storage_helpers.ts";

/** Entries between snapshots. */
const SNAPSHOT_EVERY = 100;

function say(line: string): void {
  const bytes = new TextEncoder().encode(line + "\n");
  let done = 0;
  while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
}

function main(dir: string): void {
  const storage = FileStorage.open(dir, {
    clusterId: "kill-test",
    nodeId: "n1",
    segmentBytesMax: 16 * 1024,
    retainEntries: 50,
  });
  const loaded = storage.load();
  // Each life of the process is a new term, as after a restart and an election.
  const term = loaded.hardState.term + 1;
  let sinceSnapshot = 0;
  say(`ready ${storage.lastIndex}`);
  for (let round = 0;; round++) {
    const from = storage.lastIndex + 1;
    const batch: RaftLogEntry[] = [];
    for (let k = 0; k < 1 + (round % 7); k++) {
      batch.push({
        index: from + k,
        term,
        kind: "command",
        command: commandFor(from + k, term, 100),
      });
    }
    storage.save({ term, votedFor: "n1", commitIndex: from - 1 }, batch);
    say(`ack ${storage.lastIndex}`);
    sinceSnapshot += batch.length;
    if (sinceSnapshot >= SNAPSHOT_EVERY) {
      const index = storage.lastIndex;
      storage.saveSnapshot({
        meta: { index, term, voters: ["n1"] },
        data: new TextEncoder().encode(`upto ${index}`),
      });
      say(`snap ${index}`);
      sinceSnapshot = 0;
    }
  }
}

if (import.meta.main) main(Deno.args[0]);
