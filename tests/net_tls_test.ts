/**
 * TLS on all three ports of real node processes, with certificates made by scripts/certs.ts
 * (openssl): a 3-node cluster with HTTPS, gRPC over TLS and peer TLS, all with client
 * certificates required; forwarding from a follower over https; etcdctl with --cacert/--cert/
 * --key; refusals (no certificate, another CA, expired, plain HTTP); a peer whose certificate is
 * from another CA cannot take part; new certificates after SIGHUP.
 */

import assert from "node:assert/strict";
import { b64, freePort, NodeProcess, until } from "./net_helpers.ts";
import { makeCerts } from "../scripts/certs.ts";
import { runCtl } from "../src/net/ctl.ts";

/** Runs `f` with console.error collected into `lines`. */
async function withStderr<T>(lines: string[], f: () => Promise<T>): Promise<T> {
  const original = console.error;
  console.error = (...a: unknown[]) => lines.push(a.map(String).join(" "));
  try {
    return await f();
  } finally {
    console.error = original;
  }
}

const enc = (s: string) => b64(s);

/** The etcdctl on PATH, or undefined. */
function findEtcdctl(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/etcdctl`).isFile) return `${dir}/etcdctl`;
    } catch { /* not here */ }
  }
  return undefined;
}

interface TlsNode {
  readonly proc: NodeProcess;
  readonly url: string;
  readonly grpc: string;
  /** This node's copies of its certificate and key (replaced by the reload step). */
  readonly certFile: string;
  readonly keyFile: string;
}

/** Starts nodes n1..nN with TLS everywhere; `certOf(i)` names the certificate files to copy. */
function startTlsCluster(
  dir: string,
  certs: string,
  n: number,
  secret: string,
  certOf: (i: number) => { cert: string; key: string; peerCa: string } = (i) => ({
    cert: `n${i + 1}.crt`,
    key: `n${i + 1}.key`,
    peerCa: "ca.crt",
  }),
): TlsNode[] {
  const ids = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  const client = ids.map(() => freePort());
  const peer = ids.map(() => freePort());
  const grpc = ids.map(() => freePort());
  return ids.map((id, i) => {
    const own = `${dir}/${id}-certs`;
    Deno.mkdirSync(own);
    const c = certOf(i);
    Deno.copyFileSync(`${certs}/${c.cert}`, `${own}/node.crt`);
    Deno.copyFileSync(`${certs}/${c.key}`, `${own}/node.key`);
    const others = (f: (j: number) => string) =>
      ids.flatMap((p, j) => j === i ? [] : [`${p}=${f(j)}`]).join(",");
    const args = [
      "--name",
      id,
      "--cluster-id",
      "tls",
      "--data-dir",
      `${dir}/${id}`,
      "--listen-client",
      `127.0.0.1:${client[i]}`,
      "--listen-peer",
      `127.0.0.1:${peer[i]}`,
      "--listen-grpc",
      `127.0.0.1:${grpc[i]}`,
      "--peers",
      others((j) => `127.0.0.1:${peer[j]}`),
      "--peer-client-urls",
      others((j) => `https://127.0.0.1:${client[j]}`),
      "--peer-grpc-urls",
      others((j) => `https://127.0.0.1:${grpc[j]}`),
      "--cert-file",
      `${own}/node.crt`,
      "--key-file",
      `${own}/node.key`,
      "--trusted-ca-file",
      `${certs}/ca.crt`,
      "--client-cert-auth",
      "--peer-cert-file",
      `${own}/node.crt`,
      "--peer-key-file",
      `${own}/node.key`,
      "--peer-trusted-ca-file",
      `${certs}/${c.peerCa}`,
      "--peer-client-cert-auth",
    ];
    const url = `https://127.0.0.1:${client[i]}`;
    return {
      proc: new NodeProcess(id, url, `${dir}/${id}`, args, { RAFTMETA_CLUSTER_SECRET: secret }),
      url,
      grpc: `127.0.0.1:${grpc[i]}`,
      certFile: `${own}/node.crt`,
      keyFile: `${own}/node.key`,
    };
  });
}

/** An HTTP client trusting `ca` files and presenting `identity` (NAME for NAME.crt/.key). */
function clientOf(certs: string, ca: string[], identity?: string): Deno.HttpClient {
  const read = (f: string) => Deno.readTextFileSync(`${certs}/${f}`);
  return Deno.createHttpClient({
    caCerts: ca.map(read),
    ...(identity === undefined
      ? {}
      : { cert: read(`${identity}.crt`), key: read(`${identity}.key`) }),
    poolMaxIdlePerHost: 0,
  });
}

// deno-lint-ignore no-explicit-any
async function call(client: Deno.HttpClient, url: string, body: unknown): Promise<any> {
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    client,
    signal: AbortSignal.timeout(15_000),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function localRow(
  client: Deno.HttpClient,
  node: TlsNode,
): Promise<Record<string, unknown> | undefined> {
  try {
    const res = await fetch(`${node.url}/v1/status?local=1`, {
      client,
      signal: AbortSignal.timeout(2000),
    });
    return (await res.json()).node;
  } catch {
    return undefined;
  }
}

async function waitForLeader(client: Deno.HttpClient, among: TlsNode[]): Promise<TlsNode> {
  let leader: TlsNode | undefined;
  await until("a leader over https", async () => {
    const rows = await Promise.all(among.map((n) => localRow(client, n)));
    const i = rows.findIndex((r) => r?.role === "Leader");
    leader = i >= 0 ? among[i] : undefined;
    return leader !== undefined;
  }, 60_000);
  return leader!;
}

/** Whether a request with `client` to `url` fails (the TLS handshake is refused). */
async function refused(client: Deno.HttpClient, url: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${url}/v1/status?local=1`, {
      client,
      signal: AbortSignal.timeout(10_000),
    });
    await res.body?.cancel();
    return undefined;
  } catch (e) {
    const cause = (e as Error).cause;
    return `${(e as Error).message}: ${cause instanceof Error ? cause.message : String(cause)}`;
  }
}

/** Sends GET `path` on an open connection; returns the response head and body read so far. */
async function rawGet(conn: Deno.Conn, path: string): Promise<string> {
  await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`));
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  const deadline = Date.now() + 15_000;
  // The head and a content-length body: enough for /health.
  while (Date.now() < deadline) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += new TextDecoder().decode(buf.subarray(0, n));
    const head = text.indexOf("\r\n\r\n");
    const length = /content-length: (\d+)/i.exec(text);
    if (head >= 0 && length !== null && text.length >= head + 4 + Number(length[1])) break;
  }
  return text;
}

async function etcdctl(bin: string, args: string[]): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command(bin, {
    args: ["--dial-timeout=20s", "--command-timeout=30s", ...args],
    env: { ETCDCTL_API: "3" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, out: d.decode(out.stdout) + d.decode(out.stderr) };
}

async function stopAll(nodes: TlsNode[], dir: string): Promise<void> {
  for (const n of nodes) n.proc.signal("SIGKILL");
  await Promise.all(nodes.map((n) => n.proc.exited));
  Deno.removeSync(dir, { recursive: true });
}

// The certificates come from the openssl CLI: without it these tests show as ignored (.ci/run
// installs it), never as passed.
async function opensslAvailable(): Promise<boolean> {
  try {
    return (await new Deno.Command("openssl", { args: ["version"], stdout: "null" }).output())
      .success;
  } catch {
    return false; // not on PATH
  }
}
const hasOpenssl = await opensslAvailable();
if (!hasOpenssl) {
  console.error("openssl is MISSING: the TLS tests are ignored (apt-get install -y openssl)");
}

Deno.test({
  name: "TLS: a 3-node cluster with HTTPS, gRPC TLS and peer TLS, client certificates required",
  ignore: !hasOpenssl,
}, async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-tls-" });
  const certs = `${dir}/certs`;
  await makeCerts(certs, { extras: true });
  const nodes = startTlsCluster(dir, certs, 3, crypto.randomUUID());
  const watchdog = setTimeout(() => nodes.forEach((n) => n.proc.signal("SIGKILL")), 600_000);
  const good = clientOf(certs, ["ca.crt"], "client");
  try {
    const leader = await waitForLeader(good, nodes);
    const followers = nodes.filter((n) => n !== leader);

    await t.step(
      "puts and gets over https through a follower (forwarded to the leader)",
      async () => {
        const put = await call(good, `${followers[0].url}/v3/kv/put`, {
          key: enc("tls/a"),
          value: enc("1"),
        });
        assert.ok(Number(put.header.revision) >= 2);
        const got = await call(good, `${followers[1].url}/v3/kv/range`, { key: enc("tls/a") });
        assert.equal(got.kvs?.[0]?.value, enc("1"));
      },
    );

    await t.step(
      "client-cert-auth: no certificate, another CA's, an expired one: refused",
      async () => {
        for (
          const [what, client] of [
            ["no certificate", clientOf(certs, ["ca.crt"])],
            ["another CA's certificate", clientOf(certs, ["ca.crt"], "other-client")],
            ["an expired certificate", clientOf(certs, ["ca.crt"], "expired-client")],
          ] as const
        ) {
          const why = await refused(client, followers[0].url);
          client.close();
          assert.ok(why !== undefined, `${what}: served, should be refused`);
        }
        const lines = () => followers[0].proc.lines.join("\n");
        await until("the refusals logged", () => /"client-tls-refused"/.test(lines()));
        assert.match(
          lines(),
          /peer sent no certificates|CertificateRequired|certificate required/i,
        );
      },
    );

    await t.step(
      "a server certificate from an unknown CA is not trusted by the client",
      async () => {
        const client = clientOf(certs, ["other-ca.crt"], "client");
        const why = await refused(client, leader.url);
        client.close();
        assert.match(why ?? "served", /UnknownIssuer|certificate|invalid peer/i);
      },
    );

    await t.step("plain HTTP to the TLS client port fails, and the node says why", async () => {
      const plainUrl = leader.url.replace("https:", "http:");
      const why = await refused(Deno.createHttpClient({}), plainUrl);
      assert.ok(why !== undefined, "plain HTTP was served by a TLS port");
      await until(
        "the plain-HTTP refusal logged",
        () =>
          leader.proc.lines.some((l) =>
            /client-tls-refused.*(wrong version|corrupt|http)/i.test(l)
          ),
      );
    });

    await t.step("etcdctl over gRPC TLS with --cacert --cert --key", async () => {
      const bin = findEtcdctl();
      if (bin === undefined) {
        console.log(
          "etcdctl is not installed (Debian's etcd-client; .ci/run installs it): the gRPC TLS " +
            "step checks only that the port answers TLS",
        );
        const conn = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: Number(followers[0].grpc.split(":")[1]),
          caCerts: [Deno.readTextFileSync(`${certs}/ca.crt`)],
          cert: Deno.readTextFileSync(`${certs}/client.crt`),
          key: Deno.readTextFileSync(`${certs}/client.key`),
          alpnProtocols: ["h2"],
        });
        const info = await conn.handshake();
        conn.close();
        assert.equal(info.alpnProtocol, "h2");
        return;
      }
      const tls = [
        `--cacert=${certs}/ca.crt`,
        `--cert=${certs}/client.crt`,
        `--key=${certs}/client.key`,
      ];
      const ep = `--endpoints=https://${followers[0].grpc}`;
      const put = await etcdctl(bin, [...tls, ep, "put", "tls/grpc", "yes"]);
      assert.equal(put.code, 0, put.out);
      const get = await etcdctl(bin, [
        ...tls,
        `--endpoints=https://${leader.grpc}`,
        "get",
        "tls/a",
      ]);
      assert.equal(get.code, 0, get.out);
      assert.deepEqual(get.out.trim().split("\n"), ["tls/a", "1"]);
      const bad = await etcdctl(bin, [
        `--cacert=${certs}/ca.crt`,
        ep,
        "--dial-timeout=3s",
        "--command-timeout=5s",
        "get",
        "tls/a",
      ]);
      assert.notEqual(bad.code, 0, `etcdctl without a client certificate was served:\n${bad.out}`);
    });

    await t.step(
      "ctl with --cacert --cert --key; without them it is refused and says why",
      async () => {
        const tls = [
          "--cacert",
          `${certs}/ca.crt`,
          "--cert",
          `${certs}/client.crt`,
          "--key",
          `${certs}/client.key`,
        ];
        const ep = ["--endpoints", followers[0].url];
        const lines: string[] = [];
        assert.equal(
          await runCtl([...ep, ...tls, "put", "tls/ctl", "v1"], (l) => lines.push(l)),
          0,
        );
        assert.equal(await runCtl([...ep, ...tls, "get", "tls/ctl"], (l) => lines.push(l)), 0);
        assert.deepEqual(lines.slice(-2), ["tls/ctl", "v1"]);
        // A snapshot save goes through the same client.
        const file = `${dir}/ctl.snapshot`;
        assert.equal(await runCtl([...ep, ...tls, "snapshot", "save", file], () => {}), 0);
        assert.ok(Deno.statSync(file).size > 0);
        // Without the CA the server is not trusted; without a certificate the node refuses.
        for (
          const args of [
            [...ep, "get", "tls/ctl"],
            [...ep, "--cacert", `${certs}/ca.crt`, "get", "tls/ctl"],
          ]
        ) {
          const errors: string[] = [];
          const code = await withStderr(
            errors,
            () => runCtl([...args, "--timeout-ms", "3000"], () => {}),
          );
          assert.equal(code, 1, `${args.join(" ")}: exit ${code}`);
          assert.match(
            errors.join("\n"),
            /certificate|tls|handshake|UnknownIssuer/i,
            args.join(" "),
          );
        }
        // Flags that do not make sense are usage errors (exit 2), named.
        const errors: string[] = [];
        const code = await withStderr(
          errors,
          () => runCtl([...ep, "--cert", `${certs}/client.crt`, "get", "x"], () => {}),
        );
        assert.equal(code, 2);
        assert.match(errors.join("\n"), /--cert and --key go together/);
        const missing: string[] = [];
        assert.equal(
          await withStderr(
            missing,
            () => runCtl([...ep, "--cacert", `${dir}/nope.crt`, "get", "x"], () => {}),
          ),
          2,
        );
        assert.match(missing.join("\n"), /--cacert: cannot read/);
      },
    );

    await t.step(
      "SIGHUP: new connections get the new certificate, open ones keep theirs",
      async () => {
        const target = followers[1];
        const read = (f: string) => Deno.readTextFileSync(`${certs}/${f}`);
        // A connection opened before the reload, used before and after it.
        const open = await Deno.connectTls({
          hostname: "127.0.0.1",
          port: Number(new URL(target.url).port),
          caCerts: [read("ca.crt")],
          cert: read("client.crt"),
          key: read("client.key"),
        });
        assert.match(await rawGet(open, "/health"), /^HTTP\/1\.1 200/);
        const before = target.proc.lines.length;
        // The node's certificate is now one from the other CA.
        Deno.copyFileSync(`${certs}/other-server.crt`, target.certFile);
        Deno.copyFileSync(`${certs}/other-server.key`, target.keyFile);
        target.proc.signal("SIGHUP");
        await until(
          "tls-reloaded logged",
          () => target.proc.lines.slice(before).some((l) => l.includes('"tls-reloaded"')),
          30_000,
        );
        const old = clientOf(certs, ["ca.crt"], "client");
        const why = await refused(old, target.url);
        old.close();
        assert.match(
          why ?? "served with the old certificate",
          /UnknownIssuer|certificate|invalid/i,
        );
        const fresh = clientOf(certs, ["other-ca.crt"], "client");
        try {
          assert.equal(await refused(fresh, target.url), undefined);
        } finally {
          fresh.close();
        }
        try {
          assert.match(await rawGet(open, "/health"), /^HTTP\/1\.1 200/);
        } finally {
          open.close();
        }
      },
    );
  } finally {
    clearTimeout(watchdog);
    good.close();
    await stopAll(nodes, dir);
  }
});

Deno.test({
  name: "TLS: a peer whose certificate is from another CA cannot take part",
  ignore: !hasOpenssl,
}, async () => {
  const dir = Deno.makeTempDirSync({ prefix: "raftmeta-tls-peer-" });
  const certs = `${dir}/certs`;
  await makeCerts(certs, { extras: true });
  // n3 knows the secret but holds a certificate of another CA (and trusts only that CA).
  const nodes = startTlsCluster(
    dir,
    certs,
    3,
    crypto.randomUUID(),
    (i) =>
      i < 2
        ? { cert: `n${i + 1}.crt`, key: `n${i + 1}.key`, peerCa: "ca.crt" }
        : { cert: "other-server.crt", key: "other-server.key", peerCa: "other-ca.crt" },
  );
  const watchdog = setTimeout(() => nodes.forEach((n) => n.proc.signal("SIGKILL")), 300_000);
  const good = clientOf(certs, ["ca.crt"], "client");
  try {
    const leader = await waitForLeader(good, nodes.slice(0, 2));
    const put = await call(good, `${leader.url}/v3/kv/put`, { key: enc("p"), value: enc("1") });
    const revision = Number(put.header.revision);
    await until(
      "n1 or n2 refusing n3's TLS",
      () =>
        nodes.slice(0, 2).some((n) => n.proc.lines.some((l) => l.includes('"peer-tls-refused"'))),
      30_000,
    );
    // n3 never joins in: it neither learns the leader nor gets the write.
    const other = clientOf(certs, ["other-ca.crt"], "client");
    try {
      const row = await localRow(other, nodes[2]);
      assert.ok(row !== undefined, "n3 answers on its own client port");
      assert.notEqual(row.leader, leader.proc.id);
      const got = await call(other, `${nodes[2].url}/v3/kv/range`, {
        key: enc("p"),
        serializable: true,
      }).catch((e) => ({ error: (e as Error).message }));
      assert.ok(
        !("kvs" in got) || got.kvs === undefined || Number(got.header?.revision) < revision,
        `n3 has the write: ${JSON.stringify(got)}`,
      );
    } finally {
      other.close();
    }
  } finally {
    clearTimeout(watchdog);
    good.close();
    await stopAll(nodes, dir);
  }
});
