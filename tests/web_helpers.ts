/** The scene the web tests play, in the browser and (without one) through the controller. */

import assert from "node:assert/strict";
import type { SimController } from "../src/web/controller.ts";

/** The scene the browser test plays: leader, crash it, new leader, restart, put, key everywhere. */
export function playScene(c: SimController): { first: string; second: string } {
  const first = c.runUntilLeader();
  assert.ok(first !== undefined, "a leader within 5 s");
  const firstTerm = c.cluster.node(first).raft.term;
  c.toggleCrash(first);
  assert.equal(c.view().nodes.find((n) => n.id === first)!.state, "crashed");
  const second = c.runUntilLeader();
  assert.ok(second !== undefined && second !== first, "a new leader");
  assert.ok(c.cluster.node(second).raft.term > firstTerm, "at a higher term");
  c.toggleCrash(first); // restart
  c.put("/services/db", "10.0.0.7");
  for (let i = 0; i < 200 && !c.view().nodes.every((n) => hasKey(n.keys)); i++) c.advance(10);
  for (const n of c.view().nodes) assert.ok(hasKey(n.keys), `${n.id} has the key`);
  return { first, second };
}

function hasKey(keys: readonly (readonly [string, string])[]): boolean {
  return keys.some(([k, v]) => k === "/services/db" && v === "10.0.0.7");
}

/**
 * The membership scene, through the controller (the browser test clicks the same steps): add n4
 * as a learner, see promotion refused while the add is pending and while n4 is behind, promote it
 * once caught up, remove the leader, then hand leadership to a chosen voter.
 */
export function playMembershipScene(c: SimController): { removed: string; target: string } {
  const first = c.runUntilLeader();
  assert.ok(first !== undefined, "a leader within 5 s");
  c.advance(100); // the leader commits an entry of its term first (the 2015 erratum)
  assert.equal(c.membershipRefusal("add"), undefined);
  const before = c.applied.length;
  c.addNode();
  let v = c.view();
  assert.deepEqual([v.voters, v.learners], [["n1", "n2", "n3"], ["n4"]]);
  assert.equal(v.pendingChange, "add-learner n4");
  assert.equal(v.nodes.find((n) => n.id === "n4")?.member, "learner");
  assert.match(c.tableText(), /\nn4 +Follower .* up \(learner\)\n/);
  assert.match(c.tableText(), /\nlearners: n4\npending membership change: add-learner n4$/);

  // A second change while one is pending: refused, and nothing recorded.
  assert.match(c.membershipRefusal("promote", "n4")!, /pending \(add-learner n4\)/);
  assert.throws(() => c.promote("n4"), /one change at a time/);
  assert.equal(c.applied.length, before + 1);
  for (let i = 0; i < 100 && c.view().pendingChange !== undefined; i++) c.advance(1);
  assert.equal(c.view().pendingChange, undefined, "the add commits");

  // Committed, but n4 has not yet acknowledged the log (two round trips): the core refuses.
  assert.equal(c.membershipRefusal("promote", "n4"), undefined, "the page lets it try");
  assert.throws(
    () => c.promote("n4"),
    /^Error: etcdserver: can only promote a learner member which is in sync with leader \("n4" is \d+ entries behind/,
  );
  const leaderRaft = () => c.cluster.node(c.cluster.leader()!).raft;
  for (let i = 0; i < 100; i++) {
    const l = leaderRaft();
    if (l.status().progress.get("n4")?.matchIndex === l.log.lastIndex) break;
    c.advance(5);
  }
  c.promote("n4");
  assert.deepEqual(c.view().voters, ["n1", "n2", "n3", "n4"]);
  assert.equal(c.view().pendingChange, "promote n4");
  for (let i = 0; i < 100 && c.view().pendingChange !== undefined; i++) c.advance(5);
  assert.match(c.membershipRefusal("promote", "n4")!, /already a voter/);
  assert.throws(() => c.promote("n4"), /already a voter/);

  // Remove the leader: it steps down once the change commits, and another voter leads.
  const removed = c.cluster.leader()!;
  c.removeNode(removed);
  assert.equal(c.view().pendingChange, `remove ${removed}`);
  for (let i = 0; i < 400; i++) {
    const l = c.cluster.leader();
    if (l !== undefined && l !== removed && c.view().pendingChange === undefined) break;
    c.advance(5);
  }
  v = c.view();
  assert.ok(v.leader !== undefined && v.leader !== removed, `a new leader, not ${removed}`);
  assert.deepEqual(v.voters, ["n1", "n2", "n3", "n4"].filter((id) => id !== removed));
  assert.deepEqual(v.learners, []);
  assert.equal(v.nodes.find((n) => n.id === removed)?.member, "removed");
  assert.match(c.tableText(), new RegExp(`\\n${removed} .* up \\(removed\\)\\n`));
  assert.match(c.membershipRefusal("transfer", removed)!, /not a voter/);

  // Hand leadership to the voter with the highest id that does not lead.
  const target = v.voters.filter((id) => id !== v.leader).at(-1)!;
  assert.match(c.membershipRefusal("transfer", v.leader)!, /already leads/);
  c.transferLeader(target);
  for (let i = 0; i < 200 && c.cluster.leader() !== target; i++) c.advance(5);
  v = c.view();
  assert.equal(v.leader, target);
  assert.equal(v.transferee, undefined);
  assert.equal(v.error, undefined);
  return { removed, target };
}
