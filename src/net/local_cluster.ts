/**
 * `deno task cluster`: starts a local cluster of node processes (3 by default) on 127.0.0.1, each
 * with its own ports and data directory, prints their endpoints and the leader, and then reads
 * commands on stdin: `add` grows the cluster by one member (a learner first, promoted once caught
 * up), `remove NAME|ID` shrinks it, `members` lists it. Ctrl-C or SIGTERM stops every node; the
 * end of stdin only ends the commands. The membership (names, ports, data directories) is kept in `<dir>/cluster.json`, so a
 * restart with the same `--dir` brings back the cluster as it was grown or shrunk. With `--tls`
 * every node serves client, gRPC and peer TLS with client certificates required, from a test CA
 * made into `<dir>/certs`. Node logs go to `<dir>/<name>.log`. The cluster secret is random for
 * each run and reaches the nodes in their environment, never on a command line (which every user
 * can see) nor on disk.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeCerts, makeNodeCert } from "../../scripts/certs.ts";

const HELP = `raftmeta local cluster

Usage: deno task cluster [flags]

  --nodes N          number of nodes of a new cluster (default 3)
  --dir DIR          parent of the data directories and cluster.json (default ./data/cluster)
  --client-port P    first client port; node nK uses P+K-1 (default 2379, so 2379..2381)
  --peer-port P      first peer port (default 12380)
  --grpc-port P      first port of etcd's gRPC API (--listen-grpc; default 2479, so 2479..2481),
                     for etcdctl --endpoints=127.0.0.1:2479
  --tls              client, gRPC and peer TLS on every node, client certificates required:
                     a test CA and certificates are made into DIR/certs (openssl)
  --cluster-secret-file PATH
                     file with the cluster secret, passed on to the nodes (default: a random
                     secret for this run, given to the nodes in $RAFTMETA_CLUSTER_SECRET)
  --verbose          also print the nodes' log lines
  -h, --help         this text

${commandsHelp()}
The membership is saved in DIR/cluster.json: run the script again with the same --dir and the
cluster comes back as it was last grown or shrunk (with --tls if it had it). --nodes and the
port flags then must match what cluster.json recorded, or be left out.
`;

function commandsHelp(): string {
  return `Commands on stdin, one a line:
  add                adds a member nK: a learner through the Cluster API, started with an empty
                     data dir, --initial-cluster-state existing and the next free ports, promoted
                     to a voter once it has caught up; prints its endpoints
  remove NAME|ID     removes a member (by name, or by its id in hex as 'members' prints it) and
                     stops its process; a leader first hands leadership to another voter. Its
                     data dir stays on disk but never serves again. The last member cannot go.
  members            the members: name, id, role (leader, follower, learner), URLs, pid
  help               this list
Ctrl-C (or SIGTERM) stops every node. At the end of input (Ctrl-D, or a background run whose stdin
is /dev/null) the script takes no more commands and the nodes keep running.
`;
}

/** One member as `<dir>/cluster.json` keeps it. */
export interface MemberRecord {
  /** Node name (its `--name`, the Raft node id), nK. */
  readonly name: string;
  /** Client port on 127.0.0.1. */
  readonly clientPort: number;
  /** Peer port on 127.0.0.1. */
  readonly peerPort: number;
  /** gRPC port on 127.0.0.1. */
  readonly grpcPort: number;
  /** Data directory, relative to the cluster's directory. */
  readonly dataDir: string;
  /** Added to a running cluster (started with `--initial-cluster-state existing`). */
  readonly added: boolean;
}

/** The contents of `<dir>/cluster.json`. */
export interface ClusterFile {
  /** Format version, 1. */
  readonly version: 1;
  /** The nodes' `--cluster-id`. */
  readonly clusterId: string;
  /** Whether every node serves TLS (certificates in `<dir>/certs`). */
  readonly tls: boolean;
  /** The flags the cluster was first started with. */
  readonly initial: { nodes: number; clientPort: number; peerPort: number; grpcPort: number };
  /** The current members. */
  members: MemberRecord[];
  /** Names of removed members (never given out again). */
  removed: string[];
  /** The number K of the next member's name nK. */
  nextNumber: number;
}

/** One running node process. */
export interface LocalNode {
  /** Node id. */
  readonly id: string;
  /** Client URL. */
  readonly clientUrl: string;
  /** URL of etcd's gRPC API. */
  readonly grpcUrl: string;
  /** The process. */
  readonly process: Deno.ChildProcess;
}

const MAIN = new URL("./main.ts", import.meta.url);
const CLUSTER_ID = "local";
/** Longest wait for an added member to catch up before it is promoted. */
const CATCH_UP_MS_MAX = 60_000;
/** Longest wait for a removed member's process to stop by itself before it gets SIGTERM. */
const REMOVED_EXIT_MS_MAX = 20_000;

// deno-lint-ignore no-explicit-any
type Json = any;

/** A cluster of node processes that this script runs and changes. */
class LocalCluster {
  readonly dir: string;
  readonly state: ClusterFile;
  readonly nodes = new Map<string, LocalNode>();
  readonly #env: Record<string, string>;
  readonly #secretArgs: string[];
  readonly #verbose: boolean;
  readonly #client: Deno.HttpClient | undefined;
  /** Names whose process exit is expected (removed, or stopping). */
  readonly #expectedExit = new Set<string>();
  stopping = false;
  onAllExited: () => void = () => {};

  constructor(
    dir: string,
    state: ClusterFile,
    options: { secretFile?: string; verbose: boolean },
  ) {
    this.dir = dir;
    this.state = state;
    this.#verbose = options.verbose;
    // Every node restarts with this script, so a fresh secret per run is enough, and none is stored.
    this.#secretArgs = options.secretFile === undefined
      ? []
      : ["--cluster-secret-file", options.secretFile];
    this.#env = options.secretFile === undefined ? { RAFTMETA_CLUSTER_SECRET: randomSecret() } : {};
    const certs = this.certDir;
    this.#client = state.tls
      ? Deno.createHttpClient({
        caCerts: [Deno.readTextFileSync(`${certs}/ca.crt`)],
        cert: Deno.readTextFileSync(`${certs}/client.crt`),
        key: Deno.readTextFileSync(`${certs}/client.key`),
      })
      : undefined;
  }

  get certDir(): string {
    return `${this.dir}/certs`;
  }

  get scheme(): string {
    return this.state.tls ? "https" : "http";
  }

  clientUrlOf(m: MemberRecord): string {
    return `${this.scheme}://127.0.0.1:${m.clientPort}`;
  }

  grpcUrlOf(m: MemberRecord): string {
    return `${this.scheme}://127.0.0.1:${m.grpcPort}`;
  }

  peerUrlOf(m: MemberRecord): string {
    return `${this.scheme}://127.0.0.1:${m.peerPort}`;
  }

  save(): void {
    const path = `${this.dir}/cluster.json`;
    const tmp = `${path}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(this.state, null, 2) + "\n", { mode: 0o600 });
    Deno.renameSync(tmp, path);
  }

  /** Starts the process of member `m`, listing every other current member as its peer. */
  spawn(m: MemberRecord): LocalNode {
    const others = this.state.members.filter((p) => p.name !== m.name);
    const list = (f: (p: MemberRecord) => string) =>
      others.map((p) => `${p.name}=${f(p)}`).join(",");
    const peerArgs = others.length === 0 ? [] : [
      "--peers",
      list((p) => `127.0.0.1:${p.peerPort}`),
      "--peer-client-urls",
      list((p) => this.clientUrlOf(p)),
      "--peer-grpc-urls",
      list((p) => this.grpcUrlOf(p)),
    ];
    const certs = this.certDir;
    const tlsArgs = this.state.tls
      ? [
        "--cert-file",
        `${certs}/${m.name}.crt`,
        "--key-file",
        `${certs}/${m.name}.key`,
        "--trusted-ca-file",
        `${certs}/ca.crt`,
        "--client-cert-auth",
        "--peer-cert-file",
        `${certs}/${m.name}.crt`,
        "--peer-key-file",
        `${certs}/${m.name}.key`,
        "--peer-trusted-ca-file",
        `${certs}/ca.crt`,
        "--peer-client-cert-auth",
      ]
      : [];
    const args = [
      "run",
      "--allow-all",
      MAIN.href,
      "--name",
      m.name,
      "--cluster-id",
      this.state.clusterId,
      "--data-dir",
      `${this.dir}/${m.dataDir}`,
      "--listen-client",
      `127.0.0.1:${m.clientPort}`,
      "--listen-peer",
      `127.0.0.1:${m.peerPort}`,
      "--listen-grpc",
      `127.0.0.1:${m.grpcPort}`,
      // A node with no --peers opens its peer port all the same, so a one-node cluster can grow.
      "--serve-peers",
      ...peerArgs,
      ...tlsArgs,
      // Ignored once the data directory has data: the same command line restarts it.
      ...(m.added ? ["--initial-cluster-state", "existing"] : []),
      ...this.#secretArgs,
    ];
    const process = new Deno.Command(Deno.execPath(), {
      args,
      env: this.#env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const node: LocalNode = {
      id: m.name,
      clientUrl: this.clientUrlOf(m),
      grpcUrl: this.grpcUrlOf(m),
      process,
    };
    this.nodes.set(m.name, node);
    // One handle per stream: each closes its own when its stream ends.
    const log = () =>
      Deno.openSync(`${this.dir}/${m.name}.log`, { create: true, append: true, mode: 0o600 });
    pipeLines(process.stdout, m.name, log(), this.#verbose);
    pipeLines(process.stderr, m.name, log(), true);
    process.status.then((s) => {
      if (this.nodes.get(m.name) === node) this.nodes.delete(m.name);
      if (!this.stopping && !this.#expectedExit.has(m.name)) {
        console.log(`${m.name} exited with code ${s.code}; its log: ${this.dir}/${m.name}.log`);
      }
      if (this.nodes.size === 0) this.onAllExited();
    });
    return node;
  }

  /** POSTs `body` to `path` on the first node that answers, `first` (a name) tried first. */
  async api(path: string, body: Json, first?: string): Promise<{ status: number; json: Json }> {
    const names = [...this.nodes.keys()].sort((a, b) =>
      a === first ? -1 : b === first ? 1 : a.localeCompare(b)
    );
    const errors: string[] = [];
    for (const name of names) {
      const url = this.nodes.get(name)?.clientUrl;
      if (url === undefined) continue;
      try {
        const res = await fetch(`${url}${path}`, {
          method: "POST",
          body: JSON.stringify(body),
          client: this.#client,
          signal: AbortSignal.timeout(10_000),
        });
        const text = await res.text();
        let json: Json;
        try {
          json = JSON.parse(text);
        } catch {
          json = { error: text };
        }
        return { status: res.status, json };
      } catch (e) {
        errors.push(`${name}: ${(e as Error).message}`);
      }
    }
    throw new Error(`No node answered ${path}: ${errors.join("; ") || "no node is running"}`);
  }

  /** The status row of each running node (undefined where it does not answer). */
  async localRows(): Promise<Map<string, Json>> {
    const out = new Map<string, Json>();
    await Promise.all([...this.nodes].map(async ([name, node]) => {
      try {
        const res = await fetch(`${node.clientUrl}/v1/status?local=1`, {
          client: this.#client,
          signal: AbortSignal.timeout(1000),
        });
        out.set(name, (await res.json())?.node);
      } catch { /* not up */ }
    }));
    return out;
  }

  /** The leader's name, as the running node with the highest term that leads reports it. */
  async leader(): Promise<string | undefined> {
    let best: { name: string; term: number } | undefined;
    for (const [name, row] of await this.localRows()) {
      if (row?.role === "Leader" && (best === undefined || row.term > best.term)) {
        best = { name, term: row.term };
      }
    }
    return best?.name;
  }

  async waitForLeader(timeoutMs: number): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leader = await this.leader();
      if (leader !== undefined) return leader;
      await sleep(100);
    }
    return undefined;
  }

  /** The member list as the Cluster API reports it. */
  async memberList(): Promise<Json[]> {
    const r = await this.api("/v3/cluster/member/list", {}, await this.leader());
    if (r.status !== 200) {
      throw new Error(`member list failed: ${r.status} ${r.json?.error ?? JSON.stringify(r.json)}`);
    }
    return r.json.members;
  }

  /** Picks the next name nK whose three ports (base + K - 1) are free; K is never reused. */
  nextMember(): MemberRecord {
    const used = new Set(
      this.state.members.flatMap((m) => [m.clientPort, m.peerPort, m.grpcPort]),
    );
    const { clientPort, peerPort, grpcPort } = this.state.initial;
    for (let tries = 0; tries < 100; tries++) {
      const k = this.state.nextNumber;
      this.state.nextNumber++;
      const name = `n${k}`;
      const ports = [clientPort + k - 1, peerPort + k - 1, grpcPort + k - 1];
      if (ports.some((p) => used.has(p) || p > 65535 || !portFree(p))) continue;
      return {
        name,
        clientPort: ports[0],
        peerPort: ports[1],
        grpcPort: ports[2],
        dataDir: name,
        added: true,
      };
    }
    throw new Error("No free ports for a new member after 100 tries");
  }

  /** `add`: a learner through the Cluster API, started, caught up, promoted. */
  async add(): Promise<void> {
    const m = this.nextMember();
    this.save(); // nextNumber: the name is used up even if what follows fails
    if (this.state.tls) {
      await makeNodeCert(this.certDir, m.name);
      chmodFiles(this.certDir);
    }
    const leader = await this.leader();
    const added = await this.api("/v3/cluster/member/add", {
      peerURLs: [this.peerUrlOf(m)],
      isLearner: true,
      name: m.name,
      clientURLs: [this.clientUrlOf(m)],
      grpcURLs: [this.grpcUrlOf(m)],
    }, leader);
    if (added.status !== 200) {
      throw new Error(
        `member add ${m.name} refused: ${added.status} ${
          added.json?.error ?? JSON.stringify(added.json)
        }`,
      );
    }
    const id = BigInt(added.json.member.ID);
    const hex = id.toString(16);
    this.state.members.push(m);
    this.save();
    console.log(`${m.name} (member ${hex}) added as a learner; starting it`);
    const node = this.spawn(m);
    let exited: Deno.CommandStatus | undefined;
    node.process.status.then((s) => exited = s);
    const deadline = Date.now() + CATCH_UP_MS_MAX;
    let last = "";
    while (true) {
      if (exited !== undefined) {
        throw new Error(
          `${m.name} exited with code ${exited.code} before it caught up; its log: ` +
            `${this.dir}/${m.name}.log. It is still a learner member: remove it with 'remove ${hex}'`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(
          `${m.name} did not catch up within ${CATCH_UP_MS_MAX} ms (${last}); it stays a learner: ` +
            `promote it later with deno task ctl member promote ${hex}, or 'remove ${hex}'`,
        );
      }
      const r = await this.api(
        "/v3/cluster/member/promote",
        { ID: id.toString() },
        await this.leader(),
      ).catch((e) => ({ status: 0, json: { error: (e as Error).message } }));
      if (r.status === 200) break;
      last = r.json?.error ?? `status ${r.status}`;
      await sleep(200);
    }
    console.log(
      `added ${m.name} (member ${hex}) as a voter: client ${this.clientUrlOf(m)}  gRPC ${
        this.grpcUrlOf(m)
      }  peer ${this.peerUrlOf(m)}  pid ${node.process.pid}`,
    );
  }

  /** `remove NAME|ID`: leadership handed over first when it leads, then removed and stopped. */
  async remove(which: string): Promise<void> {
    const list = await this.memberList();
    const target = list.find((x) =>
      x.name === which || BigInt(x.ID).toString(16) === which.toLowerCase().replace(/^0+/, "")
    );
    if (target === undefined) {
      throw new Error(
        `No member ${JSON.stringify(which)}; the members are ${
          list.map((x) => `${x.name} (${BigInt(x.ID).toString(16)})`).join(", ")
        }`,
      );
    }
    const name: string = target.name;
    const hex = BigInt(target.ID).toString(16);
    let leader = await this.leader();
    if (leader === name) {
      const voters = list.filter((x) => x.name !== name && !x.isLearner && this.nodes.has(x.name));
      for (const to of voters) {
        const r = await this.api(
          "/v3/maintenance/transfer-leadership",
          { targetID: to.ID },
          name,
        ).catch((e) => ({ status: 0, json: { error: (e as Error).message } }));
        if (r.status === 200) {
          console.log(`leadership moved from ${name} to ${to.name}`);
          leader = to.name;
          break;
        }
        console.log(`moving leadership to ${to.name} failed: ${r.json?.error ?? r.status}`);
      }
      // If no transfer worked, the removed leader steps down once the change commits and the
      // others elect a new one.
    }
    this.#expectedExit.add(name);
    const r = await this.api(
      "/v3/cluster/member/remove",
      { ID: target.ID },
      leader === name ? undefined : leader,
    );
    if (r.status !== 200) {
      this.#expectedExit.delete(name);
      throw new Error(
        `member remove ${name} refused: ${r.status} ${r.json?.error ?? JSON.stringify(r.json)}`,
      );
    }
    this.state.members = this.state.members.filter((x) => x.name !== name);
    this.state.removed.push(name);
    this.save();
    const node = this.nodes.get(name);
    if (node !== undefined) {
      // A removed member stops by itself; one that has not heard of its removal is stopped.
      const stopped = await Promise.race([
        node.process.status.then(() => true),
        sleep(REMOVED_EXIT_MS_MAX).then(() => false),
      ]);
      if (!stopped) {
        try {
          node.process.kill("SIGTERM");
        } catch { /* gone */ }
        await node.process.status;
      }
    }
    console.log(
      `removed ${name} (member ${hex}); its process stopped; its data dir ${this.dir}/${name} ` +
        `is kept but never serves again. Members: ${
          this.state.members.map((x) => x.name).join(", ")
        }`,
    );
  }

  /** `members`: one line per member with its role, then the leader, voters and learners. */
  async members(): Promise<void> {
    const list = await this.memberList();
    const rows = await this.localRows();
    const leader = await this.leader();
    for (const x of list) {
      const rec = this.state.members.find((m) => m.name === x.name);
      const role = x.isLearner
        ? "learner"
        : x.name === leader
        ? "leader"
        : rows.get(x.name) === undefined
        ? "unreachable"
        : "follower";
      const pid = this.nodes.get(x.name)?.process.pid;
      console.log(
        `  ${x.name.padEnd(4)} ${BigInt(x.ID).toString(16).padStart(16)}  ${role.padEnd(11)} ${
          rec === undefined ? x.clientURLs?.[0] ?? "-" : this.clientUrlOf(rec)
        }  gRPC ${rec === undefined ? "-" : this.grpcUrlOf(rec)}  pid ${pid ?? "-"}`,
      );
    }
    const learners = list.filter((x) => x.isLearner).map((x) => x.name);
    console.log(
      `leader: ${leader ?? "none"}; voters: ${
        list.filter((x) => !x.isLearner).map((x) => x.name).join(",")
      }; learners: ${learners.length === 0 ? "none" : learners.join(",")}`,
    );
  }

  /** SIGTERM to every node; resolves once all have exited (SIGKILL after 10 s). */
  async stop(): Promise<void> {
    this.stopping = true;
    const nodes = [...this.nodes.values()];
    for (const node of nodes) {
      try {
        node.process.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    const guard = setTimeout(() => {
      for (const node of nodes) {
        try {
          node.process.kill("SIGKILL");
        } catch { /* gone */ }
      }
    }, 10_000);
    await Promise.all(nodes.map((n) => n.process.status));
    clearTimeout(guard);
  }

  /** How to reach the cluster, printed once it is up. */
  printUsage(): void {
    const urls = [...this.nodes.values()].map((x) => x.clientUrl);
    const grpc = [...this.nodes.values()].map((x) => x.grpcUrl.replace(/^https?:\/\//, ""));
    const c = this.certDir;
    const curlTls = this.state.tls
      ? ` --cacert ${c}/ca.crt --cert ${c}/client.crt --key ${c}/client.key`
      : "";
    const ctlTls = this.state.tls
      ? ` --cacert ${c}/ca.crt --cert ${c}/client.crt --key ${c}/client.key`
      : "";
    console.log(
      `try: curl${curlTls} -L ${urls[0]}/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'`,
    );
    console.log(`     deno task ctl --endpoints ${urls.join(",")}${ctlTls} status`);
    console.log(
      `     ETCDCTL_API=3 etcdctl --endpoints=${grpc.join(",")}${ctlTls} put foo bar`,
    );
  }
}

/** Whether `port` can be bound on 127.0.0.1 now. */
function portFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Makes every file under `dir` readable by its owner only, and `dir` itself 0700. */
function chmodFiles(dir: string): void {
  Deno.chmodSync(dir, 0o700);
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile) Deno.chmodSync(`${dir}/${e.name}`, 0o600);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function portFlag(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw new Error(`${flag} must be 1..65535: ${v}`);
  return n;
}

/**
 * The cluster to run: `<dir>/cluster.json` when it exists (flags given must agree with it), else
 * a new one from the flags.
 */
export function loadOrCreate(
  dir: string,
  flags: {
    nodes?: number;
    clientPort?: number;
    peerPort?: number;
    grpcPort?: number;
    tls: boolean;
  },
): { state: ClusterFile; fresh: boolean } {
  const path = `${dir}/cluster.json`;
  let text: string | undefined;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (text === undefined) {
    const nodes = flags.nodes ?? 3;
    const initial = {
      nodes,
      clientPort: flags.clientPort ?? 2379,
      peerPort: flags.peerPort ?? 12380,
      grpcPort: flags.grpcPort ?? 2479,
    };
    const members = Array.from({ length: nodes }, (_, i): MemberRecord => ({
      name: `n${i + 1}`,
      clientPort: initial.clientPort + i,
      peerPort: initial.peerPort + i,
      grpcPort: initial.grpcPort + i,
      dataDir: `n${i + 1}`,
      added: false,
    }));
    return {
      state: {
        version: 1,
        clusterId: CLUSTER_ID,
        tls: flags.tls,
        initial,
        members,
        removed: [],
        nextNumber: nodes + 1,
      },
      fresh: true,
    };
  }
  let state: ClusterFile;
  try {
    state = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path} is not JSON: ${(e as Error).message}`);
  }
  if (state?.version !== 1 || !Array.isArray(state.members) || state.members.length === 0) {
    throw new Error(`${path} is not a cluster file of version 1 with members`);
  }
  const saved = state.initial;
  const disagree: string[] = [];
  const check = (flag: string, given: number | undefined, was: number) => {
    if (given !== undefined && given !== was) {
      disagree.push(`${flag} ${given} (it was first started with ${flag} ${was})`);
    }
  };
  check("--nodes", flags.nodes, saved.nodes);
  check("--client-port", flags.clientPort, saved.clientPort);
  check("--peer-port", flags.peerPort, saved.peerPort);
  check("--grpc-port", flags.grpcPort, saved.grpcPort);
  if (flags.tls && !state.tls) disagree.push("--tls (it holds a cluster without TLS)");
  if (disagree.length > 0) {
    throw new Error(
      `${path} disagrees with the flags: ${disagree.join(", ")}. It holds the cluster of ` +
        `members ${state.members.map((m) => m.name).join(", ")}: leave those flags out to ` +
        `restart it, or give another --dir for a new cluster`,
    );
  }
  return { state, fresh: false };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      nodes: { type: "string" },
      dir: { type: "string", default: "./data/cluster" },
      "client-port": { type: "string" },
      "peer-port": { type: "string" },
      "grpc-port": { type: "string" },
      tls: { type: "boolean", default: false },
      "cluster-secret-file": { type: "string" },
      verbose: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const nodes = values.nodes === undefined ? undefined : Number(values.nodes);
  if (nodes !== undefined && (!Number.isInteger(nodes) || nodes < 1 || nodes > 9)) {
    throw new Error(`--nodes must be 1..9: ${values.nodes}`);
  }
  const dir = values.dir!;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { state, fresh } = loadOrCreate(dir, {
    nodes,
    clientPort: portFlag(values["client-port"], "--client-port"),
    peerPort: portFlag(values["peer-port"], "--peer-port"),
    grpcPort: portFlag(values["grpc-port"], "--grpc-port"),
    tls: values.tls,
  });
  for (const m of state.members) {
    for (
      const [what, port] of [["client", m.clientPort], ["peer", m.peerPort], ["gRPC", m.grpcPort]]
    ) {
      if (!portFree(port as number)) {
        throw new Error(`The ${what} port ${port} of ${m.name} is in use on 127.0.0.1`);
      }
    }
  }
  if (state.tls) {
    const certs = `${dir}/certs`;
    let have = false;
    try {
      have = Deno.statSync(`${certs}/ca.crt`).isFile;
    } catch { /* none yet */ }
    if (!have) await makeCerts(certs, { names: state.members.map((m) => m.name) });
    for (const m of state.members) {
      try {
        Deno.statSync(`${certs}/${m.name}.crt`);
      } catch {
        await makeNodeCert(certs, m.name);
      }
    }
    chmodFiles(certs);
  }
  const cluster = new LocalCluster(dir, state, {
    secretFile: values["cluster-secret-file"],
    verbose: values.verbose,
  });
  cluster.save();

  let done: () => void = () => {};
  const finished = new Promise<void>((r) => done = r);
  let exitCode = 0;
  const stop = async () => {
    if (cluster.stopping) return;
    console.log("\nstopping all nodes…");
    await cluster.stop();
    done();
  };
  cluster.onAllExited = () => {
    if (cluster.stopping) return;
    console.log("every node has exited");
    exitCode = 1;
    cluster.stopping = true;
    done();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);

  for (const m of state.members) cluster.spawn(m);
  console.log(
    `raftmeta local cluster "${state.clusterId}" of ${state.members.length} nodes` +
      `${fresh ? "" : ` (restarted from ${dir}/cluster.json)`}${
        state.tls ? ", TLS with client certificates" : ""
      }; data in ${dir}`,
  );
  for (const m of state.members) {
    const node = cluster.nodes.get(m.name)!;
    console.log(`  ${m.name}  ${node.clientUrl}  gRPC ${node.grpcUrl}  pid ${node.process.pid}`);
  }
  const leader = await cluster.waitForLeader(30_000);
  console.log(leader === undefined ? "no leader yet" : `leader: ${leader}`);
  if (state.tls) {
    const c = cluster.certDir;
    console.log(
      `TLS: CA ${c}/ca.crt, client certificate ${c}/client.crt, key ${c}/client.key ` +
        `(plain HTTP is refused)`,
    );
  }
  cluster.printUsage();
  console.log(
    "Commands on stdin: add, remove NAME|ID, members, help. Ctrl-C stops every node.",
  );
  readCommands(cluster).then(() => {
    if (!cluster.stopping) {
      console.log("End of input: no more commands; the nodes run on until Ctrl-C or SIGTERM.");
    }
  }, (e) => {
    console.error(`cluster: reading stdin failed: ${(e as Error).message}`);
    stop();
  });
  await finished;
  return exitCode;
}

/** Runs the commands read from stdin one after another, until its end. */
async function readCommands(cluster: LocalCluster): Promise<void> {
  let rest = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      if (cluster.stopping) return;
      await runCommand(cluster, line.trim());
    }
  }
  if (rest.trim() !== "" && !cluster.stopping) await runCommand(cluster, rest.trim());
}

async function runCommand(cluster: LocalCluster, line: string): Promise<void> {
  const [command, ...args] = line.split(/\s+/);
  try {
    if (command === "") return;
    if (command === "add" && args.length === 0) await cluster.add();
    else if (command === "remove" && args.length === 1) await cluster.remove(args[0]);
    else if (command === "members" && args.length === 0) await cluster.members();
    else if (command === "help") console.log(commandsHelp());
    else {
      console.log(`error: unknown command ${JSON.stringify(line)}; try help`);
      return;
    }
    if (command !== "help") console.log(`ok: ${line}`);
  } catch (e) {
    console.log(`error: ${line}: ${(e as Error).message}`);
  }
}

/** 32 random bytes as hex. */
function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function pipeLines(
  stream: ReadableStream<Uint8Array>,
  id: string,
  log: Deno.FsFile,
  print: boolean,
): Promise<void> {
  const encoder = new TextEncoder();
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      log.writeSync(encoder.encode(line + "\n"));
      if (print) console.log(`[${id}] ${line}`);
    }
  }
  log.close();
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`cluster: ${(e as Error).message}`);
    Deno.exit(2);
  }
}
