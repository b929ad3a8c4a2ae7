/**
 * The live demo's scene without a browser: the controller the page draws, driven in Deno. Also the
 * URL round trip (a shared link replays a scene exactly) and the static build's self-containment.
 */

import assert from "node:assert/strict";
import { NODES_EVER_MAX, parseScene, sceneHash, SimController } from "../src/web/controller.ts";
import { liveTableHtml } from "../src/web/live.ts";
import { handleWeb, isLoopback } from "../src/web/serve.ts";
import { siteFiles } from "../src/web/build.ts";
import { playMembershipScene, playScene } from "./web_helpers.ts";

Deno.test("web controller: leader, crash, new leader at a higher term, key on every node", () => {
  const c = new SimController({ seed: 1, nodes: 5, speed: 1 });
  playScene(c);
  const v = c.view();
  assert.equal(v.error, undefined);
  assert.ok(v.ops[0].status === "ok" && v.ops[0].text.startsWith("PUT /services/db=10.0.0.7"));
  // Every committed entry is marked, and the node table shows the key.
  for (const n of v.nodes) {
    for (const e of n.log) assert.equal(e.committed, e.index <= n.commitIndex);
  }
  assert.match(c.tableHtml(), /\/services\/db=10\.0\.0\.7/);
});

Deno.test("web controller: a scene's URL replays it exactly", () => {
  const c = new SimController({ seed: 7, nodes: 3, speed: 0.1 });
  playScene(c);
  c.partition(["n1"]);
  c.advance(400);
  c.heal();
  c.get("/services/db");
  c.delete("/x y:z;%");
  c.advance(600);
  const hash = c.hash();
  const parsed = parseScene(`http://127.0.0.1:8080/${hash}`);
  assert.deepEqual(parsed.problems, []);
  assert.deepEqual(parsed.settings, { seed: 7, nodes: 3, speed: 0.1 });
  assert.equal(sceneHash(parsed.settings, parsed.actions), hash);
  const again = new SimController(parsed.settings, { actions: parsed.actions });
  again.advance(c.cluster.nowMs);
  assert.equal(again.tableText(), c.tableText());
  assert.equal(again.cluster.stats.sent, c.cluster.stats.sent);
  // Replay from time 0 gives the same run again.
  c.replay();
  c.advance(again.cluster.nowMs);
  assert.equal(c.tableText(), again.tableText());
});

Deno.test("web controller: add a learner, promote it, remove the leader, transfer leadership", () => {
  const c = new SimController({ seed: 1, nodes: 3, speed: 1 });
  const { removed, target } = playMembershipScene(c);
  assert.deepEqual(c.applied.map((a) => a.kind), ["add", "promote", "remove", "transfer"]);
  // The URL replays the membership changes exactly, as any other action.
  const parsed = parseScene(`http://x/${c.hash()}`);
  assert.deepEqual(parsed.problems, []);
  assert.match(
    c.hash(),
    new RegExp(
      `actions=\\d+:add:learner;\\d+:promote:n4;\\d+:remove:${removed};\\d+:transfer:${target}$`,
    ),
  );
  const again = new SimController(parsed.settings, { actions: parsed.actions });
  again.advance(c.cluster.nowMs);
  assert.equal(again.notice, undefined);
  assert.equal(again.tableText(), c.tableText());
  assert.equal(again.view().leader, target);
});

Deno.test("web controller: membership refusals say why (last voter, a second learner, no leader)", () => {
  const c = new SimController({ seed: 2, nodes: 3, speed: 1 });
  const leader = c.runUntilLeader()!;
  // Just elected: its no-op is not committed yet, so the page waits (as the core would refuse).
  assert.match(c.membershipRefusal("add")!, /has not yet committed an entry of its term/);
  c.advance(100);
  assert.match(c.membershipRefusal("remove")!, /Select one node/);
  assert.match(c.membershipRefusal("promote", "n2")!, /already a voter/);
  assert.match(c.membershipRefusal("promote", "n9")!, /No node "n9"/);
  c.addNode();
  c.advance(200);
  assert.match(c.membershipRefusal("add")!, /too many learner members/);
  assert.throws(() => c.addNode(), /too many learner members/);
  assert.equal(c.cluster.ids.length, 4, "a refused add starts no node");
  // Shrink to the leader alone; the last voter cannot go.
  for (const id of ["n1", "n2", "n3", "n4"].filter((id) => id !== leader)) {
    c.removeNode(id);
    for (let i = 0; i < 100 && c.view().pendingChange !== undefined; i++) c.advance(5);
  }
  assert.deepEqual([c.view().voters, c.view().learners], [[leader], []]);
  assert.match(c.membershipRefusal("remove", leader)!, /last voter/);
  assert.throws(() => c.removeNode(leader), /Cannot remove "n\d": it is the last voter/);
  assert.match(c.tableHtml(), /<div class="membership-lines"><div>voters: n\d<\/div>/);
  // Without a leader nothing goes through.
  c.toggleCrash(leader);
  assert.match(c.membershipRefusal("add")!, /No leader/);
  assert.throws(() => c.transferLeader("n1"), /No leader/);
});

Deno.test("web controller: a URL's adds make room for the ids they create, up to the limit", () => {
  const p = parseScene("http://x/#nodes=3&actions=5:add:learner;6:promote:n4;7:promote:n5;8:add:x");
  assert.deepEqual(p.actions.map((a) => a.kind), ["add", "promote"]);
  assert.equal(p.problems.length, 2);
  const many = Array.from({ length: 10 }, (_, i) => `${i}:add:voter`).join(";");
  const q = parseScene(`http://x/#nodes=7&actions=${many};20:remove:n9;21:remove:n10`);
  assert.equal(NODES_EVER_MAX, 9);
  assert.deepEqual(q.problems, ['Ignored action "21:remove:n10"']);
});

Deno.test("web controller: bad URL values fall back to defaults and say so", () => {
  const p = parseScene("http://x/?seed=3#nodes=12&speed=9&actions=5:crash:n9;x:heal;10:heal");
  assert.deepEqual(p.settings, { seed: 3, nodes: 5, speed: 0.1 });
  assert.equal(p.actions.length, 1);
  assert.equal(p.problems.length, 4);
});

Deno.test("web controller: step runs to the next event; messages move between nodes", () => {
  const c = new SimController({ seed: 1, nodes: 3, speed: 0.1 });
  c.step(); // the first election timer fires
  assert.ok(c.cluster.nowMs > 0);
  const v = c.view();
  assert.ok(v.messages.length > 0, "vote requests in flight");
  assert.ok(v.messages.every((m) => m.progress >= 0 && m.progress <= 1 && m.label !== ""));
  const t = c.cluster.nowMs;
  c.step();
  assert.ok(c.cluster.nowMs >= t);
});

Deno.test("web live view: status table rendering and the proxy's loopback rule", async () => {
  const html = liveTableHtml({
    clusterId: "c1",
    answeredBy: "n1",
    leader: "n1",
    rows: [
      {
        id: "n1",
        role: "Leader",
        term: 2,
        status: "up",
        keys: 1,
        clientUrl: "http://127.0.0.1:2379",
      },
      { id: "n2", status: "unreachable", clientUrl: "<b>" },
    ],
    progress: [{ leader: "n1", follower: "n2", nextIndex: 3, matchIndex: 0, state: "Probe" }],
  });
  assert.match(html, /<tr class="leader"><td>n1<\/td><td>Leader<\/td><td>2<\/td>/);
  assert.match(html, /<tr class="down">/);
  assert.ok(html.includes("&lt;b&gt;") && !html.includes("<b>"));
  assert.ok(isLoopback("127.0.0.1") && isLoopback("localhost") && !isLoopback("example.com"));
  const files = new Map([["index.html", "<p>hi</p>"]]);
  const refused = await handleWeb(
    files,
    new Request("http://127.0.0.1/proxy?to=" + encodeURIComponent("http://example.com/")),
  );
  assert.equal(refused.status, 403);
  await refused.body?.cancel();
  const page = await handleWeb(files, new Request("http://127.0.0.1/"));
  assert.equal(await page.text(), "<p>hi</p>");
});

/** Hosts a built page may name: loopback (the live view's default node) and XML namespaces. */
const ALLOWED_HOSTS = new Set(["127.0.0.1", "localhost", "www.w3.org"]);

Deno.test("web build: the static site is self-contained (no http(s) references to other hosts)", async () => {
  const files = await siteFiles();
  assert.deepEqual([...files.keys()].sort(), ["app.js", "index.html", "style.css"]);
  const external: string[] = [];
  for (const [name, text] of files) {
    // A URL with a host name (a bare "http://" in a message names none).
    for (const m of text.matchAll(/https?:\/\/([a-zA-Z0-9][a-zA-Z0-9.\-]*|\[[0-9a-fA-F:]+\])/g)) {
      if (!ALLOWED_HOSTS.has(m[1])) external.push(`${name}: ${m[0]}`);
    }
    // Anything the page loads must be relative: no src/href to another origin, no CDN, no @import.
    for (const m of text.matchAll(/(?:src|href)="([^"]*)"/g)) {
      if (/^[a-z]+:/i.test(m[1]) && !m[1].startsWith("data:")) external.push(`${name}: ${m[0]}`);
    }
    assert.ok(!/@import|fonts\.googleapis|cdn\./.test(text), `${name} loads nothing remote`);
  }
  assert.deepEqual(external, []);
  assert.match(files.get("index.html")!, /<script src="app.js"><\/script>/);
  // The bundle carries the real core, not a copy: the RaftNode class and the simulator.
  assert.match(files.get("app.js")!, /\bRaftNode = class\b/);
  assert.match(files.get("app.js")!, /\bCluster = class\b/);
});
