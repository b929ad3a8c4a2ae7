/**
 * Integer edges on the client side (issue 14, item 1): `ctl` refuses numbers it could not send
 * exactly, and the client's waits longer than a timer can hold do not fire at once.
 *
 * @module
 */

import assert from "node:assert/strict";
import { runCtl } from "../src/net/ctl.ts";
import { connect, HttpCoordClient } from "../src/net/client.ts";
import { freePort } from "./net_helpers.ts";

Deno.test("ctl refuses numbers it could not send exactly, before any request", async (t) => {
  // Nothing listens here: a request would fail with exit code 1, a usage error exits with 2.
  const endpoints = `http://127.0.0.1:${freePort()}`;
  const cases: [string[], RegExp][] = [
    [["put", "/k", "v", "--lease", "9999999999999999"], /--lease \(a lease id\) needs a whole/],
    [["put", "/k", "v", "--lease", "0"], /--lease \(a lease id\) needs a whole/],
    [["lease", "revoke", "9007199254740992"], /lease revoke \(a lease id\) needs/],
    [["lease", "grant", "9000000001"], /lease grant TTL \(seconds\) needs a whole number/],
    [["get", "/k", "--limit", "1e3"], /--limit needs a whole number from 0/],
    [["get", "/k", "--limit=-1"], /--limit needs a whole number from 0/],
    [["txn", "--compare-version", "/k=99999999999999999999"], /--compare-version \/k needs/],
    [["watch", "/k", "--rev", "9999999999999999"], /--rev needs a whole number/],
    [["get", "/k", "--timeout-ms", "2147483648"], /--timeout-ms needs a whole number/],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), async () => {
      const errors: string[] = [];
      const error = console.error;
      console.error = (line: string) => errors.push(line);
      let code: number;
      try {
        code = await runCtl(["--endpoints", endpoints, "--timeout-ms", "300", ...args], () => {});
      } finally {
        console.error = error;
      }
      assert.equal(code, 2, errors.join("\n"));
      assert.match(errors.join("\n"), message);
    });
  }
});

Deno.test("a client wait longer than 2^31 - 1 ms does not fire at once", async () => {
  const coord = new HttpCoordClient(connect(`http://127.0.0.1:${freePort()}`));
  const stop = new AbortController();
  let fired = false;
  const waiting = coord.sleep(2 ** 31 + 10, stop.signal).then(() => fired = true);
  // A timer given more than 2^31 - 1 ms fires after 1 ms; 200 ms is far beyond that.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(fired, false, "the wait ended at once");
  stop.abort();
  await waiting;
  assert.equal(fired, true);
});
