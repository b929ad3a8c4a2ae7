// `deno task cluster` driven through its stdin (issues 19 and 20): the real script and its real
// node processes grow and shrink (the leader removed once), every acknowledged write stays
// readable on every remaining member, the membership comes back after a restart from
// DIR/cluster.json, and a --tls cluster refuses plain HTTP but answers the printed certificates.
import assert from "node:assert/strict";
import { b64, collectLines, freePortRun, until } from "./net_helpers.ts";
import { runCtl } from "../src/net/ctl.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** One member row as the script's `members` command prints it. */
interface Row {
  readonly name: string;
  readonly id: string;
  readonly role: string;
  readonly url: string;
  readonly pid: number;
}

const ROW =
  /^ {2}(n\d+)\s+([0-9a-f]+)\s+(leader|follower|learner|unreachable)\s+(https?:\/\/\S+)\s+gRPC \S+\s+pid (\d+)$/;

/** A running `deno task cluster` whose stdout lines are collected and whose stdin takes commands. */
class ClusterScript {
  readonly lines: string[] = [];
  readonly stderr: string[] = [];
  readonly process: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  /** Set once the script has exited. */
  exited = false;

  constructor(args: string[]) {
    this.process = new Deno.Command(Deno.execPath(), {
      args: ["task", "cluster", ...args],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stdin = this.process.stdin.getWriter();
    this.process.status.then(() => this.exited = true);
    collectLines(this.process.stdout, (l) => this.lines.push(l));
    collectLines(this.process.stderr, (l) => this.stderr.push(l));
  }

  /** Waits for a line matching `pattern` at or after line `from`; returns it. */
  async waitFor(pattern: RegExp, from = 0, timeoutMs = 60_000): Promise<string> {
    let found: string | undefined;
    await until(`a line matching ${pattern}; got:\n${this.tail()}`, () => {
      found = this.lines.slice(from).find((l) => pattern.test(l));
      return found !== undefined;
    }, timeoutMs);
    return found!;
  }

  tail(): string {
    return [...this.lines.slice(-30), ...this.stderr.slice(-10)].join("\n");
  }

  /** Sends `command`; returns the lines it printed, or fails with the script's error line. */
  async run(command: string, timeoutMs = 60_000): Promise<string[]> {
    const from = this.lines.length;
    await this.#stdin.write(new TextEncoder().encode(command + "\n"));
    const escaped = command.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const end = await this.waitFor(new RegExp(`^(ok|error): ${escaped}`), from, timeoutMs);
    const out = this.lines.slice(from);
    assert.ok(end.startsWith("ok: "), `${command} failed: ${out.join("\n")}`);
    return out.slice(0, out.indexOf(end));
  }

  /** The `members` command's rows. */
  async members(): Promise<Row[]> {
    const rows: Row[] = [];
    for (const line of await this.run("members")) {
      const m = ROW.exec(line);
      if (m !== null) rows.push({ name: m[1], id: m[2], role: m[3], url: m[4], pid: +m[5] });
    }
    return rows;
  }

  /** Ends its stdin (the script then takes no more commands; the nodes run on). */
  async endInput(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#stdin.close().catch(() => {});
  }

  /** Ctrl-C to the script (it stops every node) and waits for its exit code. */
  async close(): Promise<number> {
    await this.endInput();
    // The script itself, below `deno task`.
    for (const pid of descendantsOf(this.process.pid)) {
      const cmdline = (() => {
        try {
          return Deno.readTextFileSync(`/proc/${pid}/cmdline`);
        } catch {
          return "";
        }
      })();
      if (cmdline.includes("local_cluster.ts")) {
        try {
          Deno.kill(pid, "SIGINT");
        } catch { /* gone */ }
      }
    }
    const guard = setTimeout(() => this.kill(), 30_000);
    const status = await this.process.status;
    clearTimeout(guard);
    return status.code;
  }

  /** While the script runs: SIGKILL to it and every process under it (`deno task`, nodes). */
  kill(): void {
    if (this.exited) return;
    for (const pid of [this.process.pid, ...descendantsOf(this.process.pid)]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}

/** Pids of every process below `pid` (children, their children, …), from /proc. */
function descendantsOf(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      parentOf.set(Number(e.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const below = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push(child);
        below(child);
      }
    }
  };
  below(pid);
  return out;
}

/** Whether process `pid` still runs. */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function call(
  url: string,
  path: string,
  body: unknown,
  client?: Deno.HttpClient,
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    body: JSON.stringify(body),
    client,
    signal: AbortSignal.timeout(15_000),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`${url}${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** Writes that were acknowledged, and checks that every member can read them. */
class Writes {
  readonly acknowledged = new Map<string, string>();
  #n = 0;

  async put(url: string, count: number, client?: Deno.HttpClient): Promise<void> {
    for (let i = 0; i < count; i++) {
      const key = `/k/${this.#n++}`;
      const value = `v-${key}`;
      await call(url, "/v3/kv/put", { key: b64(key), value: b64(value) }, client);
      this.acknowledged.set(key, value);
    }
  }

  /** Every acknowledged write, read locally (serializable) on each of `rows`. */
  async readableOn(rows: Row[], client?: Deno.HttpClient): Promise<void> {
    for (const row of rows) {
      await until(`${row.name} has every acknowledged write`, async () => {
        const r = await call(row.url, "/v3/kv/range", {
          key: b64("/k/"),
          range_end: b64("/k0"),
          serializable: true,
        }, client);
        const got = new Map<string, string>(
          (r.kvs ?? []).map((kv: { key: string; value: string }) => [atob(kv.key), atob(kv.value)]),
        );
        const missing = [...this.acknowledged].filter(([k, v]) => got.get(k) !== v);
        if (missing.length > 0) throw new Error(`missing ${missing.map(([k]) => k).join(",")}`);
        return true;
      }, 30_000);
    }
  }
}

/** The member list from a node's Cluster API: names and whether each is a learner. */
async function apiMembers(url: string, client?: Deno.HttpClient): Promise<string[]> {
  const r = await call(url, "/v3/cluster/member/list", {}, client);
  return r.members.map((m: { name: string; isLearner?: boolean }) =>
    m.isLearner ? `${m.name} (learner)` : m.name
  ).sort();
}

function portArgs(): string[] {
  return [
    "--client-port",
    String(freePortRun(6)),
    "--peer-port",
    String(freePortRun(6)),
    "--grpc-port",
    String(freePortRun(6)),
  ];
}

Deno.test("net local cluster: grow 3→4, remove a follower and the leader, restart from cluster.json", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-local-cluster-" });
  const ports = portArgs();
  let script = new ClusterScript(["--dir", dir, "--nodes", "3", ...ports]);
  const writes = new Writes();
  try {
    await script.waitFor(/^Commands on stdin: /);
    let rows = await script.members();
    assert.deepEqual(rows.map((r) => r.name), ["n1", "n2", "n3"]);
    await writes.put(rows[0].url, 20);
    await writes.readableOn(rows);

    await t.step("add: a fourth voter, caught up, with its endpoints printed", async () => {
      const out = await script.run("add");
      assert.match(out.join("\n"), /^n4 \(member [0-9a-f]+\) added as a learner/m);
      assert.match(out.join("\n"), /^added n4 \(member [0-9a-f]+\) as a voter: client http:/m);
      rows = await script.members();
      assert.deepEqual(rows.map((r) => r.name), ["n1", "n2", "n3", "n4"]);
      assert.equal(rows.filter((r) => r.role === "leader").length, 1, rows.join("\n"));
      assert.equal(rows.filter((r) => r.role === "learner").length, 0);
      // The new member lists members as it has applied them: the promotion reaches it a moment
      // after the leader has applied it.
      await until("n4 has applied its promotion", async () => {
        assert.deepEqual(await apiMembers(rows[3].url), ["n1", "n2", "n3", "n4"]);
        const status = await (await fetch(`${rows[3].url}/v1/status?local=1`)).json();
        assert.deepEqual(status.node.voters, ["n1", "n2", "n3", "n4"]);
        return true;
      }, 5_000);
      await writes.put(rows[3].url, 10);
      await writes.readableOn(rows);
    });

    await t.step("remove a follower: three members, its process stopped", async () => {
      const follower = rows.find((r) => r.role === "follower")!;
      const out = await script.run(`remove ${follower.name}`);
      assert.match(out.join("\n"), new RegExp(`^removed ${follower.name} \\(member`, "m"));
      assert.ok(!alive(follower.pid), `${follower.name} (pid ${follower.pid}) still runs`);
      rows = await script.members();
      assert.equal(rows.length, 3);
      assert.ok(!rows.some((r) => r.name === follower.name));
      await until("the removal applied on the first member", async () => {
        assert.deepEqual(await apiMembers(rows[0].url), rows.map((r) => r.name).sort());
        return true;
      }, 5_000);
      await writes.put(rows[0].url, 10);
      await writes.readableOn(rows);
    });

    await t.step(
      "remove the leader (by its id): two members, a new leader, writes go on",
      async () => {
        const leader = rows.find((r) => r.role === "leader")!;
        const out = await script.run(`remove ${leader.id}`);
        assert.match(
          out.join("\n"),
          new RegExp(`^removed ${leader.name} \\(member ${leader.id}\\)`, "m"),
        );
        assert.ok(!alive(leader.pid), `${leader.name} (pid ${leader.pid}) still runs`);
        await until("a new leader", async () => {
          rows = await script.members();
          return rows.some((r) => r.role === "leader");
        });
        assert.equal(rows.length, 2);
        assert.ok(!rows.some((r) => r.name === leader.name));
        await writes.put(rows[1].url, 10);
        await writes.readableOn(rows);
      },
    );

    const kept = rows.map((r) => r.name);
    await t.step(
      "the end of stdin ends the commands, not the nodes; Ctrl-C stops them",
      async () => {
        const from = script.lines.length;
        await script.endInput();
        await script.waitFor(/^End of input: no more commands/, from);
        for (const r of rows) assert.ok(alive(r.pid), `${r.name} stopped at the end of input`);
        assert.equal(await script.close(), 0, script.tail());
        for (const r of rows) assert.ok(!alive(r.pid), `${r.name} still runs`);
        const saved = JSON.parse(Deno.readTextFileSync(`${dir}/cluster.json`));
        assert.deepEqual(saved.members.map((m: { name: string }) => m.name), kept);
        assert.equal(Deno.statSync(`${dir}/cluster.json`).mode! & 0o077, 0);
      },
    );

    await t.step("flags that disagree with cluster.json are refused, naming both", async () => {
      const wrong = new ClusterScript(["--dir", dir, "--nodes", "5"]);
      assert.equal(await wrong.close(), 2);
      assert.match(
        wrong.stderr.join("\n"),
        /cluster\.json disagrees with the flags: --nodes 5 \(it was first started with --nodes 3\)/,
      );
    });

    await t.step(
      "a restart with the same --dir brings back the shrunk and grown cluster",
      async () => {
        script = new ClusterScript(["--dir", dir]);
        await script.waitFor(/^Commands on stdin: /);
        assert.ok(script.lines.some((l) => /restarted from .*cluster\.json/.test(l)));
        await until("a leader after the restart", async () => {
          rows = await script.members();
          return rows.some((r) => r.role === "leader");
        }, 30_000);
        assert.deepEqual(rows.map((r) => r.name), kept);
        assert.ok(kept.includes("n4"), `the added member is back: ${kept}`);
        await writes.readableOn(rows);
        await writes.put(rows[0].url, 5);
        await writes.readableOn(rows);
        assert.equal(await script.close(), 0, script.tail());
      },
    );
  } finally {
    script.kill();
    await script.close().catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("net local cluster: --tls from one node grows to two; plain HTTP refused, the printed certificates work", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-local-cluster-tls-" });
  const script = new ClusterScript(["--dir", dir, "--nodes", "1", "--tls", ...portArgs()]);
  const writes = new Writes();
  try {
    await script.waitFor(/^Commands on stdin: /);
    const tlsLine = await script.waitFor(/^TLS: CA /);
    const [, ca, cert, key] = /^TLS: CA (\S+), client certificate (\S+), key (\S+) /.exec(tlsLine)!;
    for (const f of [ca, cert, key]) {
      assert.equal(Deno.statSync(f).mode! & 0o077, 0, `${f} is open to others`);
    }
    const client = Deno.createHttpClient({
      caCerts: [Deno.readTextFileSync(ca)],
      cert: Deno.readTextFileSync(cert),
      key: Deno.readTextFileSync(key),
    });
    let rows = await script.members();
    assert.equal(rows.length, 1);
    assert.match(rows[0].url, /^https:\/\/127\.0\.0\.1:\d+$/);

    await t.step("plain HTTP is refused; https with the printed certificates answers", async () => {
      const plain = rows[0].url.replace("https:", "http:");
      let served = false;
      try {
        const res = await fetch(`${plain}/v1/status?local=1`, {
          signal: AbortSignal.timeout(10_000),
        });
        await res.body?.cancel();
        served = res.ok;
      } catch { /* refused */ }
      assert.equal(served, false, "plain HTTP was served by the TLS client port");
      const noCert = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(ca)] });
      let withoutCert = false;
      try {
        const res = await fetch(`${rows[0].url}/v1/status?local=1`, {
          client: noCert,
          signal: AbortSignal.timeout(10_000),
        });
        await res.body?.cancel();
        withoutCert = res.ok;
      } catch { /* refused */ }
      noCert.close();
      assert.equal(withoutCert, false, "a client without a certificate was served");
      await writes.put(rows[0].url, 5, client);
    });

    await t.step("add: a one-node TLS cluster grows to two voters", async () => {
      const out = await script.run("add");
      assert.match(out.join("\n"), /^added n2 \(member [0-9a-f]+\) as a voter: client https:/m);
      rows = await script.members();
      assert.deepEqual(rows.map((r) => r.name), ["n1", "n2"]);
      await until("n2 has applied its promotion", async () => {
        assert.deepEqual(await apiMembers(rows[1].url, client), ["n1", "n2"]);
        return true;
      }, 5_000);
      await writes.put(rows[1].url, 5, client);
      await writes.readableOn(rows, client);
    });

    await t.step("the printed deno task ctl command works", async () => {
      const printed = await script.waitFor(/^ {5}deno task ctl /);
      const args = printed.trim().split(/\s+/).slice(3, -1); // drop "deno task ctl", "status"
      const lines: string[] = [];
      const code = await runCtl([...args, "get", "/k/0"], (l) => lines.push(l));
      assert.equal(code, 0, lines.join("\n"));
      assert.deepEqual(lines, ["/k/0", "v-/k/0"]);
    });
    client.close();
    assert.equal(await script.close(), 0, script.tail());
  } finally {
    script.kill();
    await script.close().catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});
