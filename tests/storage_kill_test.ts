// A real process appending to a real directory is killed with SIGKILL in the middle of its
// writes, several times; after each kill the directory is reopened and every index the process
// acknowledged must be there (in the log, or folded into a snapshot).
import assert from "node:assert/strict";
import { FileStorage } from "../src/storage/file_storage.ts";
import { commandFor, plain } from "./storage_helpers.ts";

const ROUNDS = 8;

async function runAndKill(dir: string, acksBeforeKill: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      new URL("./storage_child_writer.ts", import.meta.url).pathname,
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let acked = 0;
  let snapped = 0;
  let acks = 0;
  let killed = false;
  let pending = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      const [word, n] = line.split(" ");
      if (word === "ack") {
        acked = Number(n);
        acks++;
      } else if (word === "snap") snapped = Number(n);
    }
    if (!killed && acks >= acksBeforeKill) {
      child.kill("SIGKILL");
      killed = true;
    }
  }
  const status = await child.status;
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  assert.ok(killed, `the writer stopped by itself: ${stderr}`);
  assert.equal(status.signal, "SIGKILL", stderr);
  return { acked, snapped, acks };
}

Deno.test("a writer killed with SIGKILL loses nothing it acknowledged", async (t) => {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_kill_" });
  const dir = `${root}/data`;
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      await t.step(`round ${round}`, async () => {
        const { acked, snapped, acks } = await runAndKill(dir, 60 + 47 * round);
        assert.ok(acks > 0);
        const storage = FileStorage.open(dir, { clusterId: "kill-test", nodeId: "n1" });
        const loaded = storage.load();
        const snapIndex = loaded.snapshot?.meta.index ?? 0;
        assert.ok(snapIndex >= snapped, `snapshot ${snapIndex} older than acknowledged ${snapped}`);
        assert.equal(
          new TextDecoder().decode(loaded.snapshot?.data ?? new Uint8Array()),
          snapIndex === 0 ? "" : `upto ${snapIndex}`,
        );
        assert.ok(storage.lastIndex >= acked, `last index ${storage.lastIndex} < acked ${acked}`);
        const byIndex = new Map(loaded.entries.map((e) => [e.index, e]));
        for (let i = snapIndex + 1; i <= acked; i++) {
          const e = byIndex.get(i);
          assert.ok(e !== undefined, `acknowledged entry ${i} is missing`);
          assert.deepEqual(plain([e]), plain([{ ...e, command: commandFor(i, e.term, 100) }]));
        }
        // Entries are contiguous and end at the last index.
        loaded.entries.forEach((e, k) => assert.equal(e.index, loaded.entries[0].index + k));
        assert.equal(loaded.entries.at(-1)?.index ?? snapIndex, storage.lastIndex);
        storage.close();
      });
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
