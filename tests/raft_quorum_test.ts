// The quorum arithmetic (src/raft/quorum.ts): worked examples, then properties checked against
// brute-force definitions over thousands of seeded random configs.
import assert from "node:assert/strict";
import { JointConfig, MajorityConfig, quorumsCanBeDisjoint } from "../src/raft/quorum.ts";
import { SeededRng } from "../src/raft/rng.ts";

const m = (...ids: string[]) => new MajorityConfig(ids);
const matches = (o: Record<string, number>) => (id: string) => o[id];
const votes = (o: Record<string, boolean>) => new Map(Object.entries(o));

Deno.test("majority config: examples", async (t) => {
  await t.step("committed index is the quorum-th highest match", () => {
    assert.equal(m("a").committedIndex(matches({ a: 7 })), 7);
    assert.equal(m("a", "b", "c").committedIndex(matches({ a: 5, b: 3, c: 9 })), 5);
    assert.equal(m("a", "b", "c", "d").committedIndex(matches({ a: 5, b: 3, c: 9, d: 4 })), 4);
    // A voter with no known match counts as 0; a non-voter's match is ignored.
    assert.equal(m("a", "b", "c").committedIndex(matches({ a: 5, x: 9 })), 0);
    assert.equal(m().committedIndex(matches({})), Infinity);
  });
  await t.step("votes: won, lost, pending", () => {
    assert.equal(m("a", "b", "c").voteResult(votes({ a: true })), "pending");
    assert.equal(m("a", "b", "c").voteResult(votes({ a: true, b: true })), "won");
    assert.equal(m("a", "b", "c").voteResult(votes({ a: true, b: false })), "pending");
    assert.equal(m("a", "b", "c").voteResult(votes({ a: false, b: false })), "lost");
    assert.equal(
      m("a", "b", "c", "d").voteResult(votes({ a: true, b: true, c: false })),
      "pending",
    );
    assert.equal(m("a", "b", "c", "d").voteResult(votes({ a: false, b: false })), "lost");
    // A learner's (non-voter's) vote never counts.
    assert.equal(m("a", "b", "c").voteResult(votes({ a: true, x: true, y: true })), "pending");
    assert.equal(m().voteResult(votes({})), "won");
  });
});

Deno.test("joint config: needs both halves", () => {
  const j = new JointConfig(["a", "b", "c"], ["c", "d", "e"]);
  assert.equal(j.committedIndex(matches({ a: 9, b: 9, c: 1, d: 2, e: 3 })), 2);
  assert.equal(j.voteResult(votes({ a: true, b: true })), "pending");
  assert.equal(j.voteResult(votes({ a: true, b: true, d: true, e: true })), "won");
  assert.equal(j.voteResult(votes({ a: true, b: true, d: false, e: false })), "lost");
  // With no outgoing half it is the incoming majority.
  const plain = new JointConfig(["a", "b", "c"]);
  assert.equal(plain.committedIndex(matches({ a: 4, b: 6, c: 1 })), 4);
  assert.equal(plain.voteResult(votes({ a: true, c: true })), "won");
});

Deno.test("disjoint quorums: configs one server apart always intersect", () => {
  const s = (...ids: string[]) => new Set(ids);
  assert.equal(quorumsCanBeDisjoint(s("a", "b", "c"), s("a", "b", "c", "d")), false);
  assert.equal(quorumsCanBeDisjoint(s("a", "b", "c", "d"), s("a", "b", "c")), false);
  // Two changes at once (Figure 10's danger): {a,b} and {c,d,e} are quorums of each.
  assert.equal(quorumsCanBeDisjoint(s("a", "b", "c"), s("a", "b", "c", "d", "e")), true);
  assert.equal(quorumsCanBeDisjoint(s("a", "b", "c"), s("b", "c", "d")), true);
  assert.equal(quorumsCanBeDisjoint(s("a"), s("b")), true);
  assert.equal(quorumsCanBeDisjoint(s(), s("b")), false);
});

// ---- Properties against brute force -------------------------------------------------------------

const POOL = ["a", "b", "c", "d", "e", "f", "g"];

function randomSet(rng: SeededRng, allowEmpty: boolean): string[] {
  for (;;) {
    const ids = POOL.filter(() => rng.chance(0.5));
    if (ids.length > 0 || allowEmpty) return ids;
  }
}

function subsets(ids: readonly string[]): string[][] {
  const out: string[][] = [];
  for (let mask = 0; mask < 1 << ids.length; mask++) {
    out.push(ids.filter((_, i) => (mask & (1 << i)) !== 0));
  }
  return out;
}

/** A quorum of a set, by definition: strictly more than half of it. */
function isQuorum(set: readonly string[], part: readonly string[]): boolean {
  return set.length === 0 || part.filter((id) => set.includes(id)).length * 2 > set.length;
}

Deno.test("property: committed index, votes and overlap equal their brute-force definitions", () => {
  const rng = new SeededRng(19);
  for (let run = 0; run < 3000; run++) {
    const incoming = randomSet(rng, false);
    const outgoing = randomSet(rng, true);
    const union = [...new Set([...incoming, ...outgoing])];
    const match: Record<string, number> = {};
    for (const id of union) if (rng.chance(0.9)) match[id] = rng.int(0, 6);
    const vote: Record<string, boolean> = {};
    for (const id of POOL) if (rng.chance(0.7)) vote[id] = rng.chance(0.5);
    const joint = new JointConfig(incoming, outgoing);
    const ctx = JSON.stringify({ incoming, outgoing, match, vote });

    // Committed: the highest i such that the voters holding i form a quorum of each half.
    let want = 0;
    for (let i = 1; i <= 6; i++) {
      const holders = union.filter((id) => (match[id] ?? 0) >= i);
      if (isQuorum(incoming, holders) && isQuorum(outgoing, holders)) want = i;
    }
    assert.equal(joint.committedIndex((id) => match[id]), want, ctx);
    assert.equal(
      new MajorityConfig(incoming).committedIndex((id) => match[id]),
      Math.max(
        0,
        ...[1, 2, 3, 4, 5, 6].filter((i) =>
          isQuorum(incoming, incoming.filter((id) => (match[id] ?? 0) >= i))
        ),
      ),
      ctx,
    );

    // Won: the yes voters are a quorum of both. Lost: even with every missing voter saying yes,
    // they would not be.
    const yes = union.filter((id) => vote[id] === true);
    const possible = union.filter((id) => vote[id] !== false);
    const won = isQuorum(incoming, yes) && isQuorum(outgoing, yes);
    const canWin = isQuorum(incoming, possible) && isQuorum(outgoing, possible);
    const expected = won ? "won" : canWin ? "pending" : "lost";
    assert.equal(joint.voteResult(new Map(Object.entries(vote))), expected, ctx);

    // Overlap: search every pair of subsets of the union.
    const other = randomSet(rng, true);
    const all = [...new Set([...incoming, ...other])];
    let disjoint = false;
    if (other.length > 0) {
      for (const qa of subsets(all)) {
        if (!isQuorum(incoming, qa) || qa.some((id) => !incoming.includes(id))) continue;
        const rest = all.filter((id) => !qa.includes(id) && other.includes(id));
        if (isQuorum(other, rest)) disjoint = true;
      }
    }
    assert.equal(
      quorumsCanBeDisjoint(new Set(incoming), new Set(other)),
      disjoint,
      `${incoming} vs ${other}`,
    );
  }
});
