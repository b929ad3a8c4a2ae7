/**
 * The peer port against strangers: a node with peers needs a secret (or an explicit
 * --insecure-peers); a stranger without it gets nothing into the log; a peer's client URL comes
 * from configuration, never from what a connection claims; a connection that has not proved the
 * secret can make the node hold only one small frame, and only a bounded number of them may wait.
 */

import assert from "node:assert/strict";
import { chooseSecret } from "../src/net/main.ts";
import { RaftServer, StartupError } from "../src/net/server.ts";
import { handleHttp } from "../src/net/http.ts";
import { PeerTransport, type TransportOptions } from "../src/net/transport.ts";
import { encodeCommand } from "../src/kv/command.ts";
import type { Message } from "../src/raft/types.ts";
import { b64, freePort, post } from "./net_helpers.ts";

const MAIN = new URL("../src/net/main.ts", import.meta.url).pathname;
const local = (port: number) => ({ hostname: "127.0.0.1", port });

/** Polls `check` every 10 ms until it holds, failing after `ms` with `what`. */
async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A transport posing as `id` towards `target` (its other options as given). */
function stranger(
  id: string,
  target: { id: string; port: number },
  options: Partial<TransportOptions> & Record<string, unknown>,
): PeerTransport {
  return new PeerTransport({
    nodeId: id,
    clusterId: "test",
    secret: "",
    listen: local(freePort()),
    peers: new Map([[target.id, local(target.port)]]),
    onMessages: () => {},
    localState: () => ({ term: 0, commitIndex: 0 }),
    seenTermOf: () => 0,
    log: () => {},
    ...options,
  });
}

type Entries = Extract<Message, { type: "AppendEntries" }>["entries"];

/** An AppendEntries from `from` to n1 at `term`, starting the log with `entries`. */
function heartbeat(from: string, term: number, entries: Entries = []): Message {
  return {
    type: "AppendEntries",
    from,
    to: "n1",
    term,
    prevLogIndex: 0,
    prevLogTerm: 0,
    entries,
    leaderCommit: entries.length,
    readRound: 0,
  };
}

Deno.test("net peers: a node with peers refuses to start without a secret unless --insecure-peers", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        MAIN,
        "--data-dir",
        `${dir}/n1`,
        "--listen-client",
        `127.0.0.1:${freePort()}`,
        "--listen-peer",
        `127.0.0.1:${freePort()}`,
        "--peers",
        `n2=127.0.0.1:${freePort()}`,
      ],
      env: { RAFTMETA_CLUSTER_SECRET: "" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Old code started here and ran on: give up after 30 s rather than hang.
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const out = await child.output().finally(() => clearTimeout(guard));
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 2, stderr);
    assert.match(stderr, /Node "n1" has peers but no cluster secret/);
    assert.match(stderr, /--insecure-peers/);

    const lines: string[] = [];
    const server = await RaftServer.start({
      dataDir: `${dir}/n1`,
      clientListen: local(0),
      peerListen: local(0),
      peers: new Map([["n2", local(freePort())]]),
      insecurePeers: true,
      probeMs: 10,
      log: (l) => lines.push(l),
    }, handleHttp);
    await server.close();
    assert.ok(lines.some((l) => JSON.parse(l).event === "insecure-peers"), lines.join("\n"));
    await assert.rejects(
      RaftServer.start({
        dataDir: `${dir}/n1`,
        clientListen: local(0),
        peerListen: local(0),
        peers: new Map([["n2", local(freePort())]]),
        log: () => {},
      }, handleHttp),
      (e) => e instanceof StartupError && /no cluster secret/.test(e.message),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net peers: a stranger without the secret gets no AppendEntries applied", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  const peerPort = freePort();
  const server = await RaftServer.start({
    dataDir: `${dir}/n1`,
    clusterId: "test",
    clientListen: local(0),
    peerListen: local(peerPort),
    peers: new Map([["n2", local(freePort())], ["n3", local(freePort())]]),
    secret: "the-real-secret",
    probeMs: 10,
    raftConfig: { electionTimeoutMinMs: 60_000, electionTimeoutMaxMs: 60_001 },
    log: () => {},
  }, handleHttp);
  const put = encodeCommand({ type: "put", key: "/x", value: new Uint8Array([1]), prevKv: false });
  const intruder = stranger("n2", { id: "n1", port: peerPort }, { secret: "" });
  try {
    intruder.start();
    intruder.send(heartbeat("n2", 100, [{ index: 1, term: 100, kind: "command", command: put }]));
    await until("the handshake is refused", () => server.transport!.stats.connectionsRefused > 0);
    assert.equal(server.node.term, 0);
    assert.equal(server.transport!.stats.messagesReceived, 0);
    assert.equal(server.store.size, 0);
  } finally {
    intruder.close();
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net peers: a client URL claimed in a handshake never redirects forwarding", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  const hits = { configured: 0, impostor: 0 };
  const recorder = (name: keyof typeof hits) =>
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      await req.body?.cancel();
      hits[name]++;
      return Response.json({ header: {} });
    });
  const configured = recorder("configured");
  const impostorHttp = recorder("impostor");
  const impostorUrl = `http://127.0.0.1:${impostorHttp.addr.port}`;
  const peerPort = freePort();
  const lines: string[] = [];
  const server = await RaftServer.start({
    dataDir: `${dir}/n1`,
    clusterId: "test",
    clientListen: local(0),
    peerListen: local(peerPort),
    peers: new Map([["n2", local(freePort())], ["n3", local(freePort())]]),
    peerClientUrls: new Map([["n2", `http://127.0.0.1:${configured.addr.port}`]]),
    // The attack of issue 14: no secret, so anyone completes the handshake.
    insecurePeers: true,
    probeMs: 10,
    raftConfig: { electionTimeoutMinMs: 60_000, electionTimeoutMaxMs: 60_001 },
    log: (l) => lines.push(l),
  }, handleHttp);
  // Before this change the handshake carried the dialer's client URL; it is offered here the
  // way the old transport took it (a transport now has no such option and the wire no field).
  const claim = { clientUrl: impostorUrl };
  const asN2 = stranger("n2", { id: "n1", port: peerPort }, { ...claim });
  const asN3 = stranger("n3", { id: "n1", port: peerPort }, { ...claim });
  const write = () =>
    post(`${server.clientUrl}/v3/kv/put`, JSON.stringify({ key: b64("/k"), value: b64("v") }));
  try {
    asN2.start();
    asN3.start();
    await t.step("a leader with a configured client URL gets the forwarded write", async () => {
      asN2.send(heartbeat("n2", 5));
      await until("n1 follows n2", () => server.node.leaderId === "n2");
      const r = await write();
      assert.deepEqual(hits, { configured: 1, impostor: 0 });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(server.clientUrlOf("n2"), `http://127.0.0.1:${configured.addr.port}`);
    });
    await t.step("a leader with no configured client URL: 503 naming it", async () => {
      asN3.send(heartbeat("n3", 6));
      await until("n1 follows n3", () => server.node.leaderId === "n3");
      const r = await write();
      assert.deepEqual(hits, { configured: 1, impostor: 0 });
      assert.equal(r.status, 503, JSON.stringify(r.json));
      assert.match(r.json.error, /the leader is "n3", whose client URL is unknown here/);
      assert.equal(server.clientUrlOf("n3"), undefined);
      const status = await (await fetch(`${server.clientUrl}/v1/status`)).json();
      assert.ok(!JSON.stringify(status).includes(impostorUrl), JSON.stringify(status));
    });
    await t.step("data files are 0600 and directories 0700", async () => {
      // Term 6 was seen from n2 and n3: the seen-terms file exists too.
      await until("net-peers-seen.json", () => exists(`${dir}/n1/net-peers-seen.json`));
      await server.close();
      const modes = modesUnder(`${dir}/n1`);
      assert.ok(modes.some(([p]) => p.endsWith("net-peers-seen.json")), JSON.stringify(modes));
      assert.ok(modes.some(([p]) => /wal-.*\.log$/.test(p)), JSON.stringify(modes));
      for (const [path, mode, isDir] of modes) {
        assert.equal(mode.toString(8), isDir ? "700" : "600", path);
      }
    });
    assert.ok(lines.some((l) => JSON.parse(l).event === "insecure-peers"));
  } finally {
    asN2.close();
    asN3.close();
    await server.close();
    await configured.shutdown();
    await impostorHttp.shutdown();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net peers: a snapshot file is created 0600", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  const server = await RaftServer.start({
    dataDir: `${dir}/n1`,
    clientListen: local(0),
    snapshotEntries: 20,
    log: () => {},
  }, handleHttp);
  try {
    assert.ok(await server.waitForLeader(5000));
    for (let i = 0; i < 40; i++) {
      await server.propose({
        type: "put",
        key: `/k${i}`,
        value: new Uint8Array([i]),
        prevKv: false,
      });
    }
    await until(
      "a snapshot",
      () => server.node.log.snapshotIndex > 0 || server.snapshotInFlight !== undefined,
    );
    await server.snapshotInFlight;
    await server.close();
    const modes = modesUnder(`${dir}/n1`);
    assert.ok(modes.some(([p]) => /snap-.*\.snap$/.test(p)), JSON.stringify(modes));
    for (const [path, mode, isDir] of modes) {
      assert.equal(mode.toString(8), isDir ? "700" : "600", path);
    }
  } finally {
    await server.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net peers: before the handshake a connection may send one small frame, and only so many may wait", async (t) => {
  const port = freePort();
  const got: Message[] = [];
  const node = new PeerTransport({
    nodeId: "n1",
    clusterId: "test",
    secret: "s",
    listen: local(port),
    peers: new Map([["n2", local(freePort())]]),
    onMessages: (_from, ms) => got.push(...ms),
    localState: () => ({ term: 0, commitIndex: 0 }),
    seenTermOf: () => 0,
    log: () => {},
    // Long enough that only the size limit can close the connections below.
    handshakeTimeoutMs: 60_000,
    unauthenticatedConnectionsMax: 3,
  });
  node.start();
  const open: Deno.Conn[] = [];
  const connect = async () => {
    const c = await Deno.connect(local(port));
    open.push(c);
    return c;
  };
  try {
    await t.step("a frame announced larger than 8 KiB closes the connection", async () => {
      const c = await connect();
      await readChallenge(c);
      const head = new Uint8Array(4);
      new DataView(head.buffer).setUint32(0, 64 * 1024 * 1024 - 1);
      await c.write(head);
      await c.write(new Uint8Array(16 * 1024).fill(7)).catch(() => 0);
      assert.equal(await closedWithin(c, 10_000), true);
      assert.ok(node.stats.connectionsRefused >= 1);
    });
    await t.step("a frame of 8 KiB + 1 is refused as well", async () => {
      const c = await connect();
      await readChallenge(c);
      const head = new Uint8Array(4);
      new DataView(head.buffer).setUint32(0, 8 * 1024 + 1);
      await c.write(head);
      assert.equal(await closedWithin(c, 10_000), true);
    });
    await t.step("beyond 3 connections in handshake, more are closed at once", async () => {
      const waiting = [await connect(), await connect(), await connect()];
      for (const c of waiting) await readChallenge(c);
      const extra = await connect();
      assert.equal(await closedWithin(extra, 10_000), true);
      assert.equal(node.stats.connectionsOverLimit, 1);
      // A slot frees when one of them goes.
      waiting[0].close();
      open.splice(open.indexOf(waiting[0]), 1);
      let answered = false;
      for (let i = 0; i < 100 && !answered; i++) {
        const again = await connect();
        answered = await readChallenge(again).then(() => true, () => false);
        if (!answered) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(answered, "a connection gets its challenge once a slot is free");
    });
    assert.equal(got.length, 0);
  } finally {
    for (const c of open) {
      try {
        c.close();
      } catch { /* closed by the node */ }
    }
    node.close();
  }
});

/** Reads the node's challenge frame (a few dozen bytes); throws if the connection closes first. */
async function readChallenge(c: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(256);
  let have = 0;
  while (have < 4 || have < 4 + new DataView(buf.buffer).getUint32(0)) {
    const n = await c.read(buf.subarray(have));
    if (n === null) throw new Error("closed before the challenge");
    have += n;
  }
  assert.equal(buf[4], 1, "a challenge frame");
}

/** Whether the node closes `c` within `ms` (reads until end of stream or an error). */
async function closedWithin(c: Deno.Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  const closed = (async () => {
    const buf = new Uint8Array(1024);
    try {
      while ((await c.read(buf)) !== null) { /* the refusal frame, if any */ }
    } catch { /* reset */ }
    return true as const;
  })();
  try {
    return await Promise.race([closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Every file and directory under `root` (itself included): path, permission bits, is a dir. */
function modesUnder(root: string): [string, number, boolean][] {
  const out: [string, number, boolean][] = [[root, Deno.statSync(root).mode! & 0o777, true]];
  for (const e of Deno.readDirSync(root)) {
    const path = `${root}/${e.name}`;
    if (e.isDirectory) out.push(...modesUnder(path));
    else out.push([path, Deno.statSync(path).mode! & 0o777, false]);
  }
  return out;
}

Deno.test("net peers: `deno task cluster` keeps its secret off command lines, disk, logs and HTTP", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  const [clientPort, peerPort] = [freePorts(3), freePorts(3)];
  const cluster = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../src/net/local_cluster.ts", import.meta.url).pathname,
      "--dir",
      `${dir}/cluster`,
      "--client-port",
      String(clientPort),
      "--peer-port",
      String(peerPort),
    ],
    // The end of its stdin stops the cluster: keep it open for the test.
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const nodePids: number[] = [];
  try {
    const leaderLine = await firstLine(cluster.stdout, /^(leader: |no leader yet)/, 60_000);
    assert.match(leaderLine, /^leader: n\d/);
    nodePids.push(...childrenOf(cluster.pid));
    assert.equal(nodePids.length, 3);
    const secrets = new Set<string>();
    for (const pid of [cluster.pid, ...nodePids]) {
      const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
      assert.ok(!cmdline.some((a) => a.startsWith("--cluster-secret")), cmdline.join(" "));
      if (pid === cluster.pid) continue;
      const environ = Deno.readTextFileSync(`/proc/${pid}/environ`).split("\0");
      const secret = environ.find((e) => e.startsWith("RAFTMETA_CLUSTER_SECRET="))?.slice(24);
      assert.ok(secret !== undefined && secret.length >= 32, "the node got a secret");
      assert.ok(!cmdline.some((a) => a.includes(secret)));
      secrets.add(secret);
    }
    assert.equal(secrets.size, 1, "one secret for the cluster");
    const [secret] = secrets;
    const url = `http://127.0.0.1:${clientPort}`;
    for (const path of ["/metrics", "/v1/status"]) {
      const text = await (await fetch(`${url}${path}`)).text();
      assert.ok(!text.includes(secret), path);
    }
    for (const [path, mode, isDir] of modesUnder(`${dir}/cluster`)) {
      assert.equal(mode & 0o077, 0, `${path} is open to others: ${mode.toString(8)}`);
      if (!isDir) assert.ok(!Deno.readTextFileSync(path).includes(secret), `${path} holds it`);
    }
  } finally {
    cluster.kill("SIGTERM");
    const guard = setTimeout(() => {
      for (const pid of nodePids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      cluster.kill("SIGKILL");
    }, 10_000);
    await cluster.status;
    clearTimeout(guard);
    await cluster.stdin.close().catch(() => {});
    await cluster.stdout.cancel().catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net peers: the secret comes from a file (warned about when others may read it)", () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-peers-" });
  try {
    const file = `${dir}/secret`;
    Deno.writeTextFileSync(file, "  from-the-file\n", { mode: 0o600 });
    Deno.chmodSync(file, 0o600);
    assert.deepEqual(chooseSecret({ file, env: "from-env" }), {
      secret: "from-the-file",
      warnings: [],
    });
    Deno.chmodSync(file, 0o644);
    const shared = chooseSecret({ file });
    assert.equal(shared.secret, "from-the-file");
    assert.match(shared.warnings[0].warning, /may be read by other users \(mode 644\)/);
    assert.ok(!JSON.stringify(shared.warnings).includes("from-the-file"));
    const argv = chooseSecret({ flag: "on-argv", env: "from-env" });
    assert.equal(argv.secret, "on-argv");
    assert.match(argv.warnings[0].warning, /visible in the process list/);
    assert.deepEqual(chooseSecret({ env: "from-env" }), { secret: "from-env", warnings: [] });
    assert.deepEqual(chooseSecret({}), { secret: "", warnings: [] });
    Deno.writeTextFileSync(file, "\n");
    assert.throws(() => chooseSecret({ file }), /--cluster-secret-file ".*" is empty/);
    assert.throws(() => chooseSecret({ file, flag: "x" }), /not both/);
    assert.throws(() => chooseSecret({ file: `${dir}/none` }), /Cannot read --cluster-secret-file/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** The first of `n` consecutive free ports on 127.0.0.1. */
function freePorts(n: number): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    const held: Deno.Listener[] = [];
    try {
      for (let i = 0; i < n; i++) held.push(Deno.listen({ hostname: "127.0.0.1", port: base + i }));
      return base;
    } catch {
      /* taken: try another */
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`No ${n} consecutive free ports`);
}

/** Pids of the processes whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Reads lines from `stream` until one matches `pattern`; returns it. */
async function firstLine(
  stream: ReadableStream<Uint8Array>,
  pattern: RegExp,
  ms: number,
): Promise<string> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const deadline = Date.now() + ms;
  let text = "";
  try {
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const line = text.split("\n").find((l) => pattern.test(l));
      if (line !== undefined) return line;
    }
  } finally {
    reader.releaseLock();
  }
  throw new Error(`No line matching ${pattern} in: ${text}`);
}
