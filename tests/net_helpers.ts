/**
 * Helpers for process-level tests: start node processes on free 127.0.0.1 ports with temporary
 * data directories, find the leader, and clean everything up.
 *
 * @module
 */

import { NodeAuth } from "../src/net/auth.ts";

const MAIN = new URL("../src/net/main.ts", import.meta.url).pathname;

/** Ports handed out by this process, never handed out again. */
const portsGiven = new Set<number>();

/**
 * A free TCP port on 127.0.0.1 (bound then released), from 20000–32767: below Linux's ephemeral
 * range (32768–60999), so an outgoing connection's source port cannot take it between this check
 * and the node's bind, nor while a killed node waits to bind it again. Never the same port twice
 * in one test process.
 */
export function freePort(): number {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_768);
    if (portsGiven.has(port)) continue;
    try {
      const l = Deno.listen({ hostname: "127.0.0.1", port });
      l.close();
    } catch {
      continue; // taken
    }
    portsGiven.add(port);
    return port;
  }
  throw new Error("No free port in 20000-32767 after 1000 tries");
}

/** One node process. */
export class NodeProcess {
  readonly id: string;
  readonly url: string;
  readonly args: string[];
  readonly dataDir: string;
  /** Environment given to the process (the cluster secret travels here, not in `args`). */
  readonly env: Record<string, string>;
  readonly lines: string[] = [];
  /** `127.0.0.1:PORT` of etcd's gRPC API when started with `--listen-grpc`, else undefined. */
  grpcEndpoint: string | undefined;
  process: Deno.ChildProcess;
  exited: Promise<Deno.CommandStatus>;
  stderr = "";

  constructor(
    id: string,
    url: string,
    dataDir: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    this.id = id;
    this.url = url;
    this.dataDir = dataDir;
    this.args = args;
    this.env = env;
    this.process = this.#spawn();
    this.exited = this.process.status;
  }

  #spawn(): Deno.ChildProcess {
    const p = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", MAIN, ...this.args],
      env: this.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    collectLines(p.stdout, (l) => {
      if (this.lines.length < 10_000) this.lines.push(l);
    });
    collectLines(p.stderr, (l) => this.stderr += l + "\n");
    return p;
  }

  /** Starts the process again with the same arguments (plus `extra`). */
  restart(extra: string[] = []): void {
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", MAIN, ...this.args, ...extra],
      env: this.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const p = this.process;
    collectLines(p.stdout, (l) => {
      if (this.lines.length < 10_000) this.lines.push(l);
    });
    collectLines(p.stderr, (l) => this.stderr += l + "\n");
    this.exited = p.status;
  }

  /** Sends `signal` to the process. */
  signal(signal: Deno.Signal): void {
    try {
      this.process.kill(signal);
    } catch { /* already exited */ }
  }

  /** SIGKILL and wait for the exit. */
  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.exited;
  }

  /**
   * This node's own status row. With auth on, `/v1/status` needs a user: the request comes as
   * "root", signed with the cluster secret as a forwarding member signs it.
   */
  async local(): Promise<Record<string, unknown> | undefined> {
    try {
      const res = await fetch(`${this.url}/v1/status?local=1`, {
        signal: AbortSignal.timeout(500),
        headers: signedAs("root", this.env.RAFTMETA_CLUSTER_SECRET, "/v1/status?local=1"),
      });
      return (await res.json()).node;
    } catch {
      return undefined;
    }
  }
}

/** Hands each line of `stream` to `on` (the last one even without a newline), until it ends. */
export async function collectLines(
  stream: ReadableStream<Uint8Array>,
  on: (line: string) => void,
): Promise<void> {
  let rest = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      parts.forEach(on);
    }
  } catch { /* process gone */ }
  if (rest !== "") on(rest);
}

/** Headers vouching for `user` on a GET of `target`, signed with `secret` (none without one). */
export function signedAs(
  user: string,
  secret: string | undefined,
  target: string,
): Record<string, string> {
  if (secret === undefined || secret === "") return {};
  const auth = new NodeAuth({ nowMs: () => 0, secret, logEvent: () => {} });
  return auth.vouchFor(user, "GET", target, new Uint8Array()) ?? {};
}

/** A cluster of node processes in a temporary directory. */
export class ProcessCluster {
  readonly dir: string;
  readonly nodes: NodeProcess[] = [];
  /** The cluster secret, random per cluster; the nodes get it in their environment. */
  readonly secret: string = crypto.randomUUID();

  // A hung test must not leave processes behind: kill them all after two minutes (or watchdogMs).
  #watchdog: ReturnType<typeof setTimeout>;

  private constructor(dir: string, watchdogMs: number) {
    this.dir = dir;
    this.#watchdog = setTimeout(() => {
      for (const n of this.nodes) n.signal("SIGKILL");
    }, watchdogMs);
  }

  /**
   * Starts `n` nodes (n1..nN) with free ports; with `grpc`, each also serves etcd's gRPC API
   * (`--listen-grpc`, `--peer-grpc-urls`) at its `grpcEndpoint`.
   */
  static start(
    n: number,
    extraArgs: string[] = [],
    options: { grpc?: boolean; watchdogMs?: number } = {},
  ): ProcessCluster {
    const dir = Deno.makeTempDirSync({ prefix: "raftmeta-net-" });
    const c = new ProcessCluster(dir, options.watchdogMs ?? 120_000);
    const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
    const clientPorts = ids.map(() => freePort());
    const peerPorts = ids.map(() => freePort());
    const grpcPorts = ids.map(() => options.grpc ? freePort() : 0);
    for (const [i, id] of ids.entries()) {
      const peers = ids.flatMap((p, j) => j === i ? [] : [`${p}=127.0.0.1:${peerPorts[j]}`]);
      const peerClientUrls = ids.flatMap((p, j) =>
        j === i ? [] : [`${p}=http://127.0.0.1:${clientPorts[j]}`]
      );
      const dataDir = `${dir}/${id}`;
      const args = [
        "--name",
        id,
        "--cluster-id",
        "test",
        "--data-dir",
        dataDir,
        "--listen-client",
        `127.0.0.1:${clientPorts[i]}`,
        "--listen-peer",
        `127.0.0.1:${peerPorts[i]}`,
        ...(peers.length > 0
          ? ["--peers", peers.join(","), "--peer-client-urls", peerClientUrls.join(",")]
          : []),
        ...(options.grpc
          ? [
            "--listen-grpc",
            `127.0.0.1:${grpcPorts[i]}`,
            ...(n > 1
              ? [
                "--peer-grpc-urls",
                ids.flatMap((p, j) => j === i ? [] : [`${p}=http://127.0.0.1:${grpcPorts[j]}`])
                  .join(","),
              ]
              : []),
          ]
          : []),
        ...extraArgs,
      ];
      const node = new NodeProcess(id, `http://127.0.0.1:${clientPorts[i]}`, dataDir, args, {
        RAFTMETA_CLUSTER_SECRET: c.secret,
      });
      if (options.grpc) node.grpcEndpoint = `127.0.0.1:${grpcPorts[i]}`;
      c.nodes.push(node);
    }
    return c;
  }

  /** The node `id`. */
  node(id: string): NodeProcess {
    const n = this.nodes.find((x) => x.id === id);
    if (n === undefined) throw new Error(`no node ${id}`);
    return n;
  }

  /** Waits until one of `among` (default all) reports itself leader; returns it. */
  async waitForLeader(
    options: { among?: NodeProcess[]; timeoutMs?: number; minTerm?: number } = {},
  ): Promise<NodeProcess> {
    const among = options.among ?? this.nodes;
    const deadline = Date.now() + (options.timeoutMs ?? 15_000);
    while (Date.now() < deadline) {
      const rows = await Promise.all(among.map((n) => n.local()));
      const i = rows.findIndex((r) =>
        r?.role === "Leader" && (r.term as number) >= (options.minTerm ?? 0)
      );
      if (i >= 0) return among[i];
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no leader among ${among.map((n) => n.id).join(",")} in time`);
  }

  /**
   * Starts `name` as a member added with `member add` (--initial-cluster-state existing, an empty
   * data directory) on free ports (or `ports`), copying the log from `among` (default: every
   * node still running); it takes the other flags of the first node. Its peer URL, to give
   * `member add`, is `http://127.0.0.1:<ports.peer>`.
   */
  startNewMember(
    name: string,
    ports: { client: number; peer: number },
    options: { among?: NodeProcess[]; extraArgs?: string[] } = {},
  ): NodeProcess {
    const among = options.among ?? this.nodes;
    const flag = (n: NodeProcess, f: string) => n.args[n.args.indexOf(f) + 1];
    const template = this.nodes[0].args;
    const replaced = new Set([
      "--name",
      "--data-dir",
      "--listen-client",
      "--listen-peer",
      "--peers",
      "--peer-client-urls",
      "--listen-grpc",
      "--peer-grpc-urls",
    ]);
    const kept: string[] = [];
    for (let i = 0; i < template.length; i++) {
      if (replaced.has(template[i])) i++;
      else kept.push(template[i]);
    }
    const dataDir = `${this.dir}/${name}`;
    const node = new NodeProcess(name, `http://127.0.0.1:${ports.client}`, dataDir, [
      ...kept,
      "--name",
      name,
      "--data-dir",
      dataDir,
      "--listen-client",
      `127.0.0.1:${ports.client}`,
      "--listen-peer",
      `127.0.0.1:${ports.peer}`,
      "--peers",
      among.map((n) => `${n.id}=${flag(n, "--listen-peer")}`).join(","),
      "--peer-client-urls",
      among.map((n) => `${n.id}=${n.url}`).join(","),
      "--initial-cluster-state",
      "existing",
      ...(options.extraArgs ?? []),
    ], { RAFTMETA_CLUSTER_SECRET: this.secret });
    this.nodes.push(node);
    return node;
  }

  /** Kills every process and removes the directory. */
  async stop(): Promise<void> {
    clearTimeout(this.#watchdog);
    for (const n of this.nodes) n.signal("SIGCONT");
    await Promise.all(this.nodes.map((n) => n.kill()));
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** base64 of a UTF-8 string. */
export function b64(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

/** POSTs `body` (a JSON string, sent as is) to `url`; returns status and parsed JSON. */
export async function post(
  url: string,
  body: string,
  headers: Record<string, string> = {},
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; json: any }> {
  const res = await fetch(url, {
    method: "POST",
    body,
    headers,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/**
 * Polls `predicate` every 20 ms until it holds; fails naming `what` (and the last failure the
 * predicate threw, if any) after `timeoutMs`. Tests wait on conditions, never on fixed sleeps:
 * CI runs on two loaded cores.
 */
export async function until(
  what: string,
  predicate: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (true) {
    try {
      if (await predicate()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The first of `count` consecutive free ports on 127.0.0.1 in 20000–32767 (below Linux's
 * ephemeral range, as {@linkcode freePort}), none handed out before by this process; all of them
 * are then marked as handed out.
 */
export function freePortRun(count: number): number {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (12_768 - count));
    const ports = Array.from({ length: count }, (_, i) => base + i);
    if (ports.some((p) => portsGiven.has(p))) continue;
    const held: Deno.Listener[] = [];
    try {
      for (const port of ports) held.push(Deno.listen({ hostname: "127.0.0.1", port }));
    } catch {
      continue; // one is taken
    } finally {
      for (const l of held) l.close();
    }
    for (const p of ports) portsGiven.add(p);
    return base;
  }
  throw new Error(`No ${count} consecutive free ports in 20000-32767 after 1000 tries`);
}
