/**
 * `deno task serve` refuses flag values that would make a node useless or spin: zero periods and
 * sizes, and waits longer than a timer can take (Deno fires those at once).
 */

import assert from "node:assert/strict";
import { freePort } from "./net_helpers.ts";
import { checkPlaintextListen } from "../src/net/main.ts";

const MAIN = new URL("../src/net/main.ts", import.meta.url).pathname;

Deno.test("serve: bad numeric flags are refused before the node starts, naming the flag", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--tick-ms", "0"], /--tick-ms must be a positive integer: 0/],
    [["--request-timeout-ms", "0"], /--request-timeout-ms must be a positive integer: 0/],
    [["--max-request-bytes", "0"], /--max-request-bytes must be a positive integer: 0/],
    [["--snapshot-entries", "0"], /--snapshot-entries must be a positive integer: 0/],
    [["--request-timeout-ms", "2147483648"], /--request-timeout-ms must be at most 2147483647/],
    [["--tick-ms", "9".repeat(30)], /--tick-ms must be at most 2147483647/],
    [["--quota-backend-bytes", "9007199254740992"], /must be at most 9007199254740991/],
    [["--watchers-max=-1"], /--watchers-max must be a non-negative integer: -1/],
    [["--listen-grpc", "2479"], /--listen-grpc must be HOST:PORT/],
    [["--peer-grpc-urls", "n2=http://127.0.0.1:1"], /--peer-grpc-urls names "n2", which --peers/],
    [["--peer-grpc-urls", "n2"], /--peer-grpc-urls entry must be ID=URL: "n2"/],
    [["--cert-file", "/nonexistent/n1.crt"], /--cert-file needs --key-file/],
    [["--peer-key-file", "/nonexistent/n1.key"], /--peer-key-file needs --peer-cert-file/],
    [["--client-cert-auth"], /--client-cert-auth needs --cert-file/],
    [
      ["--cert-file", "/nonexistent/n1.crt", "--key-file", "/nonexistent/n1.key"],
      /Cannot read --cert-file "\/nonexistent\/n1\.crt"/,
    ],
    [
      ["--peer-cert-file", MAIN, "--peer-key-file", MAIN],
      /--peer-cert-file ".*main\.ts" holds no PEM certificate/,
    ],
    [
      ["--listen-client", "0.0.0.0:1"],
      /--listen-client 0\.0\.0\.0:1 is not a loopback address.*--insecure/,
    ],
    [
      ["--listen-peer", "0.0.0.0:1"],
      /--listen-peer 0\.0\.0\.0:1 is not a loopback.*--peer-cert-file/,
    ],
    [["--listen-grpc", "10.0.0.1:1"], /--listen-grpc 10\.0\.0\.1:1 is not a loopback address/],
  ];
  for (const [flags, expected] of cases) {
    await t.step(flags.join(" ").slice(0, 60), async () => {
      const dir = Deno.makeTempDirSync({ prefix: "raftmeta-flags-" });
      try {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            MAIN,
            "--data-dir",
            dir,
            "--listen-client",
            `127.0.0.1:${freePort()}`,
            "--listen-peer",
            `127.0.0.1:${freePort()}`,
            ...flags,
          ],
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(20_000),
        }).output();
        const stderr = new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 2, `exit ${out.code}: ${stderr}`);
        assert.match(stderr, expected);
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
    });
  }
});

Deno.test("serve: --insecure lets a plaintext non-loopback address through with a warning", () => {
  const at = (hostname: string) => ({ hostname, port: 2379 });
  assert.deepEqual(
    checkPlaintextListen([
      { flag: "--listen-client", address: at("127.0.0.1"), tls: false },
      { flag: "--listen-peer", address: at("localhost"), tls: false },
      { flag: "--listen-grpc", address: at("0.0.0.0"), tls: true },
    ], false),
    [],
  );
  assert.throws(
    () => checkPlaintextListen([{ flag: "--listen-peer", address: at("::"), tls: false }], false),
    /--listen-peer :::2379 is not a loopback address/,
  );
  assert.deepEqual(
    checkPlaintextListen([{ flag: "--listen-client", address: at("0.0.0.0"), tls: false }], true),
    ["--listen-client 0.0.0.0:2379 is not a loopback address and is served without TLS (--insecure)"],
  );
  // The metrics port has no TLS and no auth at all: only loopback, unless --insecure.
  assert.throws(
    () =>
      checkPlaintextListen(
        [{ flag: "--listen-metrics", address: at("0.0.0.0"), tls: false }],
        false,
      ),
    /--listen-metrics 0\.0\.0\.0:2379 is not a loopback address: it is served without TLS or auth/,
  );
  assert.deepEqual(
    checkPlaintextListen([{ flag: "--listen-metrics", address: at("::1"), tls: false }], false),
    [],
  );
});
