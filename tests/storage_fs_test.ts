// The simulated disk keeps exactly what was synced; the real one does what the interface says.
import assert from "node:assert/strict";
import { type Fs, parentDir, randomTornTail, RealFs, SimFs } from "../src/storage/fs.ts";
import { seeded } from "./storage_helpers.ts";

const bytes = (...xs: number[]) => new Uint8Array(xs);

Deno.test("SimFs", async (t) => {
  await t.step("a write without sync is gone after a crash; a synced one is kept", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(1, 2, 3));
    f.syncData();
    fs.syncDir("/d");
    f.write(bytes(4, 5));
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2, 3, 4, 5));
    fs.crash();
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2, 3));
    assert.equal(fs.crashes, 1);
  });

  await t.step("a created file is lost at a crash unless its directory was synced", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(1));
    f.syncData();
    fs.crash();
    assert.equal(fs.exists("/d/a"), false);
    const g = fs.openAppend("/d/b");
    g.write(bytes(1));
    g.syncData();
    fs.syncDir("/d");
    fs.crash();
    assert.deepEqual(fs.readFile("/d/b"), bytes(1));
  });

  await t.step("an unsynced rename or removal is undone by a crash", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(7));
    f.syncData();
    fs.syncDir("/d");
    fs.rename("/d/a", "/d/b");
    assert.deepEqual(fs.list("/d"), ["b"]);
    fs.crash();
    assert.deepEqual(fs.list("/d"), ["a"]);
    fs.rename("/d/a", "/d/b");
    fs.syncDir("/d");
    fs.remove("/d/b");
    fs.crash();
    assert.deepEqual(fs.list("/d"), ["b"]);
    fs.remove("/d/b");
    fs.syncDir("/d");
    fs.crash();
    assert.deepEqual(fs.list("/d"), []);
  });

  await t.step("a torn tail keeps the chosen prefix of the unsynced bytes", () => {
    for (let keep = 0; keep <= 4; keep++) {
      const fs = new SimFs();
      fs.mkdir("/d");
      const f = fs.openAppend("/d/a");
      f.write(bytes(1, 2));
      f.syncData();
      fs.syncDir("/d");
      f.write(bytes(3, 4, 5, 6));
      fs.crash({ tornTail: () => keep });
      assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2, 3, 4, 5, 6).subarray(0, 2 + keep));
    }
  });

  await t.step("a truncate is not durable until synced, and then leaves no torn tail", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(1, 2, 3, 4));
    f.syncData();
    fs.syncDir("/d");
    fs.truncate("/d/a", 2);
    fs.crash({ tornTail: (_, n) => n });
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2, 3, 4));
    fs.truncate("/d/a", 2);
    fs.openAppend("/d/a").syncData();
    fs.crash();
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2));
  });

  await t.step("handles opened before a crash refuse to work after it", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    fs.crash();
    assert.throws(() => f.write(bytes(1)), /open at a crash/);
  });

  await t.step("counters count syncs and bytes; the fault hook stops an operation", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(1, 2, 3));
    f.syncData();
    fs.syncDir("/d");
    assert.deepEqual([fs.syncs, fs.dirSyncs, fs.bytesWritten], [1, 1, 3]);
    fs.faultHook = (op) => {
      if (op === "write") throw new Error("Injected fault");
    };
    assert.throws(() => f.write(bytes(9)), /Injected fault/);
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 2, 3));
  });

  await t.step("randomTornTail draws within bounds from the injected generator", () => {
    const choose = randomTornTail(seeded(7));
    for (let i = 0; i < 100; i++) {
      const k = choose("/x", 10);
      assert.ok(k >= 0 && k <= 10);
    }
  });

  await t.step("corrupt flips a byte in both what is read and what survives", () => {
    const fs = new SimFs();
    fs.mkdir("/d");
    const f = fs.openAppend("/d/a");
    f.write(bytes(1, 2, 3));
    f.syncData();
    fs.syncDir("/d");
    fs.corrupt("/d/a", 1);
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 0xfd, 3));
    fs.crash();
    assert.deepEqual(fs.readFile("/d/a"), bytes(1, 0xfd, 3));
  });
});

Deno.test("parentDir", () => {
  assert.equal(parentDir("/a/b"), "/a");
  assert.equal(parentDir("/a"), "/");
  assert.equal(parentDir("a"), ".");
  assert.equal(parentDir("/a/b/"), "/a");
});

Deno.test("RealFs does what the Fs interface says", () => {
  const root = Deno.makeTempDirSync({ prefix: "raftmeta_fs_" });
  try {
    const fs: Fs = new RealFs();
    const dir = `${root}/x/y`;
    assert.equal(fs.exists(dir), false);
    fs.mkdir(dir);
    fs.mkdir(dir);
    const f = fs.openAppend(`${dir}/a`);
    f.write(bytes(1, 2, 3));
    f.syncData();
    f.close();
    fs.syncDir(dir);
    assert.equal(fs.size(`${dir}/a`), 3);
    fs.truncate(`${dir}/a`, 1);
    assert.deepEqual(fs.readFile(`${dir}/a`), bytes(1));
    fs.rename(`${dir}/a`, `${dir}/b`);
    assert.deepEqual(fs.list(dir), ["b"]);
    fs.remove(`${dir}/b`);
    assert.deepEqual(fs.list(dir), []);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
