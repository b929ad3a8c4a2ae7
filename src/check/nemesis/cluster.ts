/**
 * The cluster of the real-process fault tests: N node processes (src/net/main.ts) whose peer
 * traffic, and the client requests followers forward to the leader, pass through one
 * {@linkcode LinkProxy} per directed link. Nodes can be killed (SIGKILL), paused (SIGSTOP),
 * resumed and restarted; with `diskBytes` each data directory is a tmpfs of that size, so a
 * filler file can fill the disk.
 *
 * @module
 */

import { LinkProxy } from "./proxy.ts";

const MAIN = new URL("../../net/main.ts", import.meta.url).pathname;

const portsGiven = new Set<number>();

/**
 * A free port from 20000–32767, below Linux's ephemeral range, so that no outgoing connection's
 * source port takes it while a killed node waits to bind it again; never the same twice.
 */
function freePort(): number {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    if (portsGiven.has(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch {
      continue; // taken
    }
    portsGiven.add(port);
    return port;
  }
  throw new Error("No free port in 20000-32767 after 1000 tries");
}

/** One node's row of `GET /v1/status?local=1`, the fields the runner reads. */
export interface NodeRow {
  /** Raft role. */
  role: string;
  /** Current term. */
  term: number;
  /** Commit index. */
  commitIndex: number;
  /** Index applied to the store. */
  lastApplied: number;
  /** Store revision. */
  revision: number;
}

/** One node process (restartable). */
export class NemesisNode {
  /** `up`: running; `paused`: SIGSTOPped; `down`: killed or exited. */
  state: "up" | "paused" | "down" = "down";
  /** Times the process exited without being killed by the runner (e.g. a full disk). */
  selfExits = 0;
  #process: Deno.ChildProcess | undefined;
  #log: Deno.FsFile;
  #logChain: Promise<unknown> = Promise.resolve();
  #killing = false;
  /** Called with each change between running (`true`) and gone (`false`). */
  onRunning: (running: boolean) => void = () => {};

  constructor(
    readonly id: string,
    readonly url: string,
    readonly dataDir: string,
    readonly args: string[],
    readonly env: Record<string, string>,
    logPath: string,
  ) {
    this.#log = Deno.openSync(logPath, { append: true, create: true });
  }

  /** Starts the process (it must be down). */
  start(): void {
    if (this.state !== "down") throw new Error(`Node ${this.id} is ${this.state}, not down`);
    this.onRunning(true);
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", MAIN, ...this.args],
      env: this.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#process = p;
    this.state = "up";
    this.#copy(p.stdout);
    this.#copy(p.stderr);
    p.status.then(() => {
      if (this.#process !== p) return;
      if (!this.#killing) this.selfExits++;
      this.state = "down";
      this.onRunning(false);
    });
  }

  async #copy(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream) {
        this.#logChain = this.#logChain.then(() => this.#log.write(chunk)).catch(() => {});
      }
    } catch { /* process gone */ }
  }

  /** Sends `signal`; ignored when the process is gone. */
  signal(signal: Deno.Signal): void {
    try {
      this.#process?.kill(signal);
    } catch { /* exited */ }
  }

  /** SIGKILL and wait for the exit. */
  async kill(): Promise<void> {
    const p = this.#process;
    if (p === undefined || this.state === "down") return;
    this.#killing = true;
    this.signal("SIGCONT");
    this.signal("SIGKILL");
    await p.status;
    this.#killing = false;
    // The exit handler has usually run already (its callback was registered first).
    if ((this.state as NemesisNode["state"]) !== "down") {
      this.state = "down";
      this.onRunning(false);
    }
  }

  /** SIGSTOP. */
  pause(): void {
    if (this.state !== "up") return;
    this.signal("SIGSTOP");
    this.state = "paused";
  }

  /** SIGCONT. */
  resume(): void {
    if (this.state !== "paused") return;
    this.signal("SIGCONT");
    this.state = "up";
  }

  /** This node's status row, or undefined when it does not answer within `timeoutMs`. */
  async row(timeoutMs = 500): Promise<NodeRow | undefined> {
    if (this.state !== "up") return undefined;
    try {
      const res = await fetch(`${this.url}/v1/status?local=1`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      return (await res.json()).node as NodeRow;
    } catch {
      return undefined;
    }
  }

  /** Closes the log file (after the process is gone). */
  async closeLog(): Promise<void> {
    await this.#logChain;
    try {
      this.#log.close();
    } catch { /* closed */ }
  }
}

/** How to build a {@linkcode NemesisCluster}. */
export interface NemesisClusterOptions {
  /** Number of nodes. */
  readonly nodes: number;
  /** Working directory: data, logs. Must exist. */
  readonly dir: string;
  /** Random source of the proxies' connection resets. */
  readonly random: () => number;
  /** Size of each node's tmpfs data directory; 0: plain directories (no disk-full fault). */
  readonly diskBytes: number;
  /** Extra flags for every node. */
  readonly extraArgs?: readonly string[];
}

/** N nodes wired through fault proxies. */
export class NemesisCluster {
  /** The nodes n1..nN. */
  readonly nodes: NemesisNode[] = [];
  /** `links.get("n1>n2")`: peer traffic n1 sends to n2. */
  readonly links = new Map<string, LinkProxy>();
  /** `forwards.get("n1>n2")`: client requests n1 forwards to n2. */
  readonly forwards = new Map<string, LinkProxy>();
  /** Client URL of each forward proxy → the node's real client URL (for clients that follow hints). */
  readonly realUrl = new Map<string, string>();
  /** The tmpfs mounts made (unmounted by `stop`). */
  readonly mounts: string[] = [];
  /** The cluster secret, random per run, given to nodes in their environment. */
  readonly secret: string = crypto.randomUUID();

  /** Clusters started and not yet stopped, so an interrupted runner can stop them. */
  static readonly live = new Set<NemesisCluster>();

  private constructor(readonly options: NemesisClusterOptions) {}

  /**
   * Builds the cluster and starts every node. With `diskBytes` > 0 it mounts a tmpfs per node
   * and throws if it cannot (the caller decides whether to go on without the disk fault).
   */
  static async start(options: NemesisClusterOptions): Promise<NemesisCluster> {
    const c = new NemesisCluster(options);
    const ids = Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
    const clientPorts = ids.map(() => freePort());
    const peerPorts = ids.map(() => freePort());
    for (const a of ids) {
      for (const [j, b] of ids.entries()) {
        if (a === b) continue;
        c.links.set(
          `${a}>${b}`,
          new LinkProxy({ hostname: "127.0.0.1", port: peerPorts[j] }, options.random),
        );
        const f = new LinkProxy({ hostname: "127.0.0.1", port: clientPorts[j] }, options.random);
        c.forwards.set(`${a}>${b}`, f);
        c.realUrl.set(`http://127.0.0.1:${f.port}`, `http://127.0.0.1:${clientPorts[j]}`);
      }
    }
    await Deno.mkdir(`${options.dir}/logs`, { recursive: true });
    for (const [i, id] of ids.entries()) {
      const home = `${options.dir}/${id}`;
      await Deno.mkdir(home, { recursive: true });
      if (options.diskBytes > 0) {
        await mountTmpfs(home, options.diskBytes);
        c.mounts.push(home);
      }
      const others = ids.filter((p) => p !== id);
      const peers = others.map((p) => `${p}=127.0.0.1:${c.links.get(`${id}>${p}`)!.port}`);
      const urls = others.map((p) => `${p}=http://127.0.0.1:${c.forwards.get(`${id}>${p}`)!.port}`);
      const args = [
        ["--name", id],
        ["--cluster-id", "nemesis"],
        ["--data-dir", `${home}/data`],
        ["--listen-client", `127.0.0.1:${clientPorts[i]}`],
        ["--listen-peer", `127.0.0.1:${peerPorts[i]}`],
        ["--peers", peers.join(",")],
        ["--peer-client-urls", urls.join(",")],
      ].flat();
      c.nodes.push(
        new NemesisNode(
          id,
          `http://127.0.0.1:${clientPorts[i]}`,
          `${home}/data`,
          [...args, ...(options.extraArgs ?? [])],
          { RAFTMETA_CLUSTER_SECRET: c.secret },
          `${options.dir}/logs/${id}.log`,
        ),
      );
    }
    for (const n of c.nodes) {
      // A dead node refuses connections; so do the proxies in front of it.
      const into = c.allLinks().filter((l) =>
        l.target.port === Number(new URL(n.url).port) ||
        l.target.port === peerPorts[ids.indexOf(n.id)]
      );
      n.onRunning = (running) => {
        for (const l of into) running ? l.targetUp() : l.targetDown();
      };
      n.start();
    }
    NemesisCluster.live.add(c);
    return c;
  }

  /** The node `id`. */
  node(id: string): NemesisNode {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`No node ${JSON.stringify(id)}`);
    return n;
  }

  /** The link proxies (peer and forward) that carry traffic from `a` to `b`. */
  linksOf(a: string, b: string): LinkProxy[] {
    return [this.links.get(`${a}>${b}`)!, this.forwards.get(`${a}>${b}`)!];
  }

  /** Every proxy. */
  allLinks(): LinkProxy[] {
    return [...this.links.values(), ...this.forwards.values()];
  }

  /** The leader of the highest term among the nodes that answer, with its term, if any. */
  async leader(): Promise<{ node: NemesisNode; term: number } | undefined> {
    const rows = await Promise.all(this.nodes.map((n) => n.row()));
    let best: { node: NemesisNode; term: number } | undefined;
    rows.forEach((r, i) => {
      if (r?.role === "Leader" && (best === undefined || r.term > best.term)) {
        best = { node: this.nodes[i], term: r.term };
      }
    });
    return best;
  }

  /** Fills node `id`'s tmpfs with a filler file until it is full; returns the bytes written. */
  async fillDisk(id: string): Promise<number> {
    const file = await Deno.open(`${this.options.dir}/${id}/filler`, {
      create: true,
      write: true,
      append: true,
    });
    const chunk = new Uint8Array(1 << 20);
    let written = 0;
    try {
      for (;;) written += await file.write(chunk);
    } catch { /* ENOSPC: full */ }
    // The last partial megabyte: fill byte by byte chunks so nothing is left.
    for (const size of [65536, 4096, 512, 1]) {
      try {
        for (;;) written += await file.write(chunk.subarray(0, size));
      } catch { /* full at this granularity */ }
    }
    file.close();
    return written;
  }

  /** Removes node `id`'s filler file. */
  async freeDisk(id: string): Promise<void> {
    await Deno.remove(`${this.options.dir}/${id}/filler`).catch(() => {});
  }

  /** Kills every node, closes the proxies and unmounts the tmpfs directories. */
  async stop(): Promise<void> {
    NemesisCluster.live.delete(this);
    await Promise.all(this.nodes.map((n) => n.kill()));
    for (const l of this.allLinks()) l.close();
    for (const n of this.nodes) await n.closeLog();
    for (const m of this.mounts) await unmountTmpfs(m);
  }
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} failed: ${err || `exit ${out.code}`}`);
  }
}

/** Mounts a tmpfs of `bytes` at `dir` (needs root or CAP_SYS_ADMIN). */
export async function mountTmpfs(dir: string, bytes: number): Promise<void> {
  await run("mount", ["-t", "tmpfs", "-o", `size=${bytes}`, "tmpfs", dir]);
}

/** Unmounts `dir`, ignoring errors (already gone). */
export async function unmountTmpfs(dir: string): Promise<void> {
  await run("umount", [dir]).catch(() => {});
}
