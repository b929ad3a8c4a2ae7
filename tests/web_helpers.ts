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
