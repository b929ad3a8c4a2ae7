/**
 * An ordered map from string keys to values, kept in a B+tree: O(log n) get, set and delete,
 * ordered iteration from any key, and O(log n) rank (how many keys sort before a key), which
 * makes range counts cheap at 1,000,000 keys.
 *
 * Copy-on-write: {@linkcode SortedMap.freeze} hands out a read-only view of the map as it is, in
 * O(1). Every node carries the generation it was made in; after a freeze, a write copies each
 * node on its path that the view may share (path copying, as in persistent B-trees), so the
 * view never changes and the map pays one copy per touched node per freeze.
 *
 * Keys are ordered by their bytes (as etcd orders its byte keys; a key string's bytes are its
 * UTF-8 with escaped bytes, see src/kv/bytes.ts's `keyFromBytes`), not by JavaScript's UTF-16 `<`;
 * the two differ where a character above U+FFFF meets one in U+E000..U+FFFF, and where an escaped
 * byte meets a character outside ASCII.
 *
 * @module
 */

import { writeKeyChar } from "./bytes.ts";

/** Most entries a leaf holds before it splits. */
const LEAF_ENTRIES_MAX = 64;
/** Fewest entries a leaf other than the root holds; below this it borrows or merges. */
const LEAF_ENTRIES_MIN = LEAF_ENTRIES_MAX >> 1;
/** Most children a branch holds before it splits. */
const BRANCH_CHILDREN_MAX = 64;
/** Fewest children a branch other than the root holds. */
const BRANCH_CHILDREN_MIN = BRANCH_CHILDREN_MAX >> 1;

/**
 * Compares two keys by the order of their bytes: negative when `a` sorts first, zero when equal,
 * positive when `b` sorts first. Both must be key strings (src/kv/bytes.ts's `isKeyString`): for
 * well-formed text the bytes are its UTF-8.
 *
 * @example
 * ```ts
 * import { compareKeys } from "./sorted_map.ts";
 * // U+FFFD sorts before U+1F600 in UTF-8, although its UTF-16 unit is larger than a surrogate.
 * if (compareKeys("\uFFFD", "\u{1F600}") >= 0) throw new Error("not UTF-8 order");
 * ```
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = a.length < b.length ? a.length : b.length;
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) {
      // An escaped byte (U+DC80..U+DCFF) against anything but ASCII: compare the bytes (rare).
      if ((x & 0xff80) === 0xdc80 || (y & 0xff80) === 0xdc80) return compareKeyBytesFrom(a, b, i);
      // Surrogates (U+D800..U+DFFF) stand for code points above U+FFFF, which UTF-8 sorts after
      // U+E000..U+FFFF: lift them above that block before comparing.
      if (x >= 0xd800 && y >= 0xd800) return utf8Rank(x) - utf8Rank(y);
      return x - y;
    }
  }
  return a.length - b.length;
}

/**
 * Compares the bytes of two key strings whose UTF-16 units agree before unit `i`, byte by byte
 * from the character that holds unit `i`, without building either byte string.
 */
function compareKeyBytesFrom(a: string, b: string, i: number): number {
  // Units before i agree; a surrogate pair split at i starts one unit earlier in both.
  const prev = i > 0 ? a.charCodeAt(i - 1) : 0;
  const start = prev >= 0xd800 && prev <= 0xdbff ? i - 1 : i;
  const ca = new KeyByteCursor(a, start, BYTES_A);
  const cb = new KeyByteCursor(b, start, BYTES_B);
  for (;;) {
    const x = ca.next();
    const y = cb.next();
    if (x !== y) return x - y; // an ended key (-1) sorts first
    if (x < 0) return 0;
  }
}

const BYTES_A = new Uint8Array(4);
const BYTES_B = new Uint8Array(4);

/** Reads a key string's bytes one at a time (UTF-8, escapes as their byte), from a unit index. */
class KeyByteCursor {
  #s: string;
  #at: number;
  #buf: Uint8Array;
  #n = 0;
  #p = 0;
  constructor(s: string, at: number, buf: Uint8Array) {
    this.#s = s;
    this.#at = at;
    this.#buf = buf;
  }
  /** The next byte, or -1 at the end. */
  next(): number {
    if (this.#p < this.#n) return this.#buf[this.#p++];
    if (this.#at >= this.#s.length) return -1;
    this.#n = writeKeyChar(this.#s, this.#at, this.#buf, 0);
    this.#at += this.#n === 4 ? 2 : 1; // only a surrogate pair takes four bytes
    this.#p = 1;
    return this.#buf[0];
  }
}

function utf8Rank(unit: number): number {
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

/** Fill of the nodes {@linkcode SortedMap.fromSorted} builds: room for inserts without a split. */
const BUILD_FILL = 48;

// Leaves are not linked to their neighbours: a link would make path copying copy every leaf to
// the left of a written one. Ordered scans walk down the tree instead (a stack per iterator).
class Leaf<V> {
  keys: string[];
  values: V[];
  /** Generation the node was made in; below the map's `sharedBelow`, a view may share it. */
  gen: number;
  constructor(keys: string[], values: V[], gen: number) {
    this.keys = keys;
    this.values = values;
    this.gen = gen;
  }
  get size(): number {
    return this.keys.length;
  }
}

class Branch<V> {
  /** `keys[i]` separates `children[i]` (all keys < it) from `children[i + 1]` (all keys >= it). */
  keys: string[];
  children: Node<V>[];
  /** Number of entries in this subtree. */
  size: number;
  /** Generation the node was made in (see {@linkcode Leaf.gen}). */
  gen: number;
  constructor(keys: string[], children: Node<V>[], size: number, gen: number) {
    this.keys = keys;
    this.children = children;
    this.size = size;
    this.gen = gen;
  }
}

type Node<V> = Leaf<V> | Branch<V>;

/**
 * Matches a UTF-16 unit outside ASCII. A key without one (all ASCII) compares the same under
 * JavaScript's `<` as in byte order against any other key, so searches for it use the fast native
 * compare. (A key with other characters below U+D800 would not: an escaped byte such as U+DC80,
 * byte 0x80, sorts before "é", bytes C3 A9, yet its unit is larger.)
 */
const HIGH_UNIT = /[\u0080-\uFFFF]/;

/** Whether `key` is all ASCII, so it compares under JavaScript's `<` as in byte order. */
export function isNativeOrdered(key: string): boolean {
  return !HIGH_UNIT.test(key);
}

/** First index `i` with `keys[i] >= key` (keys.length when none). */
function lowerBound(keys: readonly string[], key: string, native: boolean): number {
  let lo = 0;
  let hi = keys.length;
  if (native) {
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(keys[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index `i` with `keys[i] > key`: the child of a branch that may hold `key`. */
function upperBound(keys: readonly string[], key: string, native: boolean): number {
  let lo = 0;
  let hi = keys.length;
  if (native) {
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (keys[mid] <= key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(keys[mid], key) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Number of leading keys for which `before` holds (`before` must be true, then false). */
function partitionPoint(keys: readonly string[], before: (key: string) => boolean): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (before(keys[mid])) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Entries of the subtree `root` in key order from the first key `>= start` up to `end`. */
function* walk<V>(
  root: Node<V>,
  start: string | undefined,
  end: string | undefined,
): Generator<[string, V]> {
  // The path from the root to the current leaf: each branch and the child taken in it.
  const branches: Branch<V>[] = [];
  const taken: number[] = [];
  const startNative = start !== undefined && isNativeOrdered(start);
  let node = root;
  while (node instanceof Branch) {
    const ci = start === undefined ? 0 : upperBound(node.keys, start, startNative);
    branches.push(node);
    taken.push(ci);
    node = node.children[ci];
  }
  let leaf: Leaf<V> = node;
  let i = start === undefined ? 0 : lowerBound(leaf.keys, start, startNative);
  const endNative = end !== undefined && isNativeOrdered(end);
  while (true) {
    const keys = leaf.keys;
    for (; i < keys.length; i++) {
      const key = keys[i];
      if (end !== undefined && (endNative ? key >= end : compareKeys(key, end) >= 0)) return;
      yield [key, leaf.values[i]];
    }
    // Up to the nearest branch with a child right of the one taken, then down its leftmost path.
    let d = branches.length - 1;
    while (d >= 0 && taken[d] + 1 >= branches[d].children.length) d--;
    if (d < 0) return;
    taken[d]++;
    branches.length = d + 1;
    taken.length = d + 1;
    let next = branches[d].children[taken[d]];
    while (next instanceof Branch) {
      branches.push(next);
      taken.push(0);
      next = next.children[0];
    }
    leaf = next;
    i = 0;
  }
}

/** The leaf of `root`'s subtree that may hold `key`. */
function leafFor<V>(root: Node<V>, key: string, native: boolean): Leaf<V> {
  let node = root;
  while (node instanceof Branch) node = node.children[upperBound(node.keys, key, native)];
  return node;
}

/** The value under `key` in the subtree `root`, or `undefined`. */
function lookup<V>(root: Node<V>, key: string): V | undefined {
  const native = isNativeOrdered(key);
  const leaf = leafFor(root, key, native);
  const i = lowerBound(leaf.keys, key, native);
  return i < leaf.keys.length && leaf.keys[i] === key ? leaf.values[i] : undefined;
}

/**
 * Sizes of the groups `n` items split into when each group takes `min` to `max` of them, as
 * near `BUILD_FILL` as those bounds allow (one group when `n <= max`).
 */
function groupSizes(n: number, min: number, max: number): number[] {
  if (n <= max) return [n];
  const groups = Math.min(
    Math.max(Math.round(n / BUILD_FILL), Math.ceil(n / max)),
    Math.floor(n / min),
  );
  const base = Math.floor(n / groups);
  const extra = n % groups;
  return Array.from({ length: groups }, (_, g) => base + (g < extra ? 1 : 0));
}

/**
 * A read-only view of a {@linkcode SortedMap} as it was when {@linkcode SortedMap.freeze} made
 * it; later writes to the map do not show. Call {@linkcode release} when done, so the map can
 * write in place again.
 */
export class SortedMapView<V> {
  readonly #root: Node<V>;
  #release: (() => void) | undefined;

  /** Use {@linkcode SortedMap.freeze}. */
  constructor(root: unknown, release: () => void) {
    this.#root = root as Node<V>;
    this.#release = release;
  }

  /** Number of entries. */
  get size(): number {
    return this.#root.size;
  }

  /** The value stored under `key`, or `undefined`. */
  get(key: string): V | undefined {
    return lookup(this.#root, key);
  }

  /** Entries in key order from the first key `>= start` up to, not including, `end`. */
  entries(start?: string, end?: string): IterableIterator<[string, V]> {
    return walk(this.#root, start, end);
  }

  /**
   * Every entry in key order, a leaf at a time: the keys and values arrays of each leaf of the
   * tree, read only. For scans over the whole map that allocate per leaf, not per entry.
   */
  *leaves(): Generator<[readonly string[], readonly V[]], void, undefined> {
    const stack: Node<V>[] = [this.#root];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node instanceof Leaf) {
        if (node.keys.length > 0) yield [node.keys, node.values];
        continue;
      }
      for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]);
    }
  }

  /** Tells the map this view is no longer read. Further reads are still safe; calls after the first do nothing. */
  release(): void {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }
}

/**
 * An ordered map over string keys in UTF-8 byte order, backed by a B+tree. Not safe to mutate
 * while iterating; {@linkcode freeze} gives a view that is.
 *
 * @example
 * ```ts
 * import { SortedMap } from "./sorted_map.ts";
 * const map = new SortedMap<number>();
 * map.set("/b", 2);
 * map.set("/a", 1);
 * const keys = [...map.entries()].map(([key]) => key);
 * if (keys.join() !== "/a,/b") throw new Error("not sorted");
 * const view = map.freeze();
 * map.set("/a", 10);
 * if (view.get("/a") !== 1 || map.get("/a") !== 10) throw new Error("view changed");
 * view.release();
 * ```
 */
export class SortedMap<V> {
  /** Generation of the nodes this map makes now. */
  #gen = 0;
  /** Nodes of a generation below this may be shared with an open view: copy before writing. */
  #sharedBelow = 0;
  /** Views handed out and not yet released. */
  #viewsOpen = 0;
  #root: Node<V> = new Leaf<V>([], [], 0);
  // Out-parameters of the recursive insert, so a split allocates no result object.
  #splitKey = "";
  #splitNode: Node<V> | null = null;
  #inserted = false;
  #removed = false;

  /**
   * A map holding `keys` (strictly increasing in UTF-8 order) with `values`, built bottom-up in
   * O(n): no search and no split per key, as when restoring a snapshot. Throws a RangeError when
   * the keys are not strictly increasing, unless `ordered` says the caller has checked that.
   */
  static fromSorted<V>(
    keys: readonly string[],
    values: readonly V[],
    options: { readonly ordered?: boolean } = {},
  ): SortedMap<V> {
    const n = keys.length;
    if (values.length !== n) {
      throw new RangeError(`${n} keys but ${values.length} values`);
    }
    for (let i = 1; i < n && options.ordered !== true; i++) {
      const a = keys[i - 1];
      const b = keys[i];
      // `<` agrees with byte order between ASCII keys; compareKeys decides otherwise.
      const ordered = HIGH_UNIT.test(a) || HIGH_UNIT.test(b) ? compareKeys(a, b) < 0 : a < b;
      if (!ordered) {
        throw new RangeError(
          `Keys must be strictly increasing: ${JSON.stringify(b)} after ${JSON.stringify(a)}`,
        );
      }
    }
    const map = new SortedMap<V>();
    if (n === 0) return map;
    let level: Node<V>[] = [];
    // The smallest key of each node of `level`: the separator before it in its parent.
    let lows: string[] = [];
    let at = 0;
    for (const size of groupSizes(n, LEAF_ENTRIES_MIN, LEAF_ENTRIES_MAX)) {
      level.push(new Leaf<V>(keys.slice(at, at + size), values.slice(at, at + size), 0));
      lows.push(keys[at]);
      at += size;
    }
    while (level.length > 1) {
      const up: Node<V>[] = [];
      const upLows: string[] = [];
      at = 0;
      for (const size of groupSizes(level.length, BRANCH_CHILDREN_MIN, BRANCH_CHILDREN_MAX)) {
        const children = level.slice(at, at + size);
        let total = 0;
        for (const c of children) total += c.size;
        up.push(new Branch<V>(lows.slice(at + 1, at + size), children, total, 0));
        upLows.push(lows[at]);
        at += size;
      }
      level = up;
      lows = upLows;
    }
    map.#root = level[0];
    return map;
  }

  /** Number of entries. */
  get size(): number {
    return this.#root.size;
  }

  /** The value stored under `key`, or `undefined`. */
  get(key: string): V | undefined {
    return lookup(this.#root, key);
  }

  /** Whether `key` is present. */
  has(key: string): boolean {
    const native = isNativeOrdered(key);
    const leaf = leafFor(this.#root, key, native);
    const i = lowerBound(leaf.keys, key, native);
    return i < leaf.keys.length && leaf.keys[i] === key;
  }

  /** Stores `value` under `key`; returns true when the key was new. */
  set(key: string, value: V): boolean {
    this.#inserted = false;
    this.#splitNode = null;
    this.#root = this.#own(this.#root);
    this.#insert(this.#root, key, value, isNativeOrdered(key));
    const right = this.#splitNode as Node<V> | null;
    if (right !== null) {
      const left = this.#root;
      const size = left.size + right.size;
      this.#root = new Branch<V>([this.#splitKey], [left, right], size, this.#gen);
      this.#splitNode = null;
    }
    return this.#inserted;
  }

  /**
   * Replaces the value under `key` by `next(old)` and returns the old value; does nothing and
   * returns `undefined` when `key` is absent. One descent when no view is open.
   */
  replace(key: string, next: (old: V) => V): V | undefined {
    if (this.#sharedBelow > 0) {
      const old = this.get(key);
      if (old !== undefined) this.set(key, next(old));
      return old;
    }
    const native = isNativeOrdered(key);
    const leaf = leafFor(this.#root, key, native);
    const i = lowerBound(leaf.keys, key, native);
    if (i >= leaf.keys.length || leaf.keys[i] !== key) return undefined;
    const old = leaf.values[i];
    leaf.values[i] = next(old);
    return old;
  }

  /** Removes `key`; returns true when it was present. */
  delete(key: string): boolean {
    // While a view is open, a miss must not copy the path it searched.
    if (this.#sharedBelow > 0 && !this.has(key)) return false;
    this.#removed = false;
    this.#root = this.#own(this.#root);
    this.#remove(this.#root, key, isNativeOrdered(key));
    const root = this.#root;
    if (root instanceof Branch && root.children.length === 1) this.#root = root.children[0];
    return this.#removed;
  }

  /** Removes every entry. */
  clear(): void {
    this.#root = new Leaf<V>([], [], this.#gen);
  }

  /**
   * A read-only view of the map as it is now, in O(1); later writes do not change it (they copy
   * the nodes they would change instead). Release it when done.
   */
  freeze(): SortedMapView<V> {
    // Every node made so far is of a generation below the new one, so the view may share it.
    this.#gen++;
    this.#sharedBelow = this.#gen;
    this.#viewsOpen++;
    return new SortedMapView<V>(this.#root, () => {
      this.#viewsOpen--;
      if (this.#viewsOpen === 0) this.#sharedBelow = 0;
    });
  }

  /** Number of views handed out by {@linkcode freeze} and not yet released. */
  get viewsOpen(): number {
    return this.#viewsOpen;
  }

  /** Number of keys that sort strictly before `key`. */
  rank(key: string): number {
    if (isNativeOrdered(key)) return this.countWhile((k) => k < key);
    return this.countWhile((k) => compareKeys(k, key) < 0);
  }

  /**
   * Number of keys, from the smallest, for which `before` holds. `before` must hold for a leading
   * run of keys and for none after it (e.g. "sorts before x", or "sorts before p or starts with
   * p"); the count is found in O(log n) without visiting the keys.
   */
  countWhile(before: (key: string) => boolean): number {
    let node = this.#root;
    let count = 0;
    while (node instanceof Branch) {
      const ci = partitionPoint(node.keys, before);
      for (let i = 0; i < ci; i++) count += node.children[i].size;
      node = node.children[ci];
    }
    return count + partitionPoint(node.keys, before);
  }

  /**
   * Entries in key order from the first key `>= start` (the smallest when omitted) up to, not
   * including, `end` (to the last key when omitted).
   */
  entries(start?: string, end?: string): IterableIterator<[string, V]> {
    return walk(this.#root, start, end);
  }

  /** The smallest key, or `undefined` when empty. */
  firstKey(): string | undefined {
    let node = this.#root;
    while (node instanceof Branch) node = node.children[0];
    return node.keys[0];
  }

  /**
   * Checks the tree's structure (order, fill, separators, sizes, generations) and throws on the
   * first broken rule. For tests; O(n).
   */
  assertValid(): void {
    const fail = (what: string): never => {
      throw new Error(`B+tree invariant violated: ${what}`);
    };
    const depth = (node: Node<V>, isRoot: boolean, low?: string, high?: string): number => {
      for (let i = 1; i < node.keys.length; i++) {
        if (compareKeys(node.keys[i - 1], node.keys[i]) >= 0) fail(`keys out of order`);
      }
      for (const k of node.keys) {
        if (low !== undefined && compareKeys(k, low) < 0) fail(`key ${JSON.stringify(k)} < bound`);
        if (high !== undefined && compareKeys(k, high) >= 0) {
          fail(`key ${JSON.stringify(k)} >= bound`);
        }
      }
      if (node.gen > this.#gen) fail(`node of generation ${node.gen} > ${this.#gen}`);
      if (node instanceof Leaf) {
        if (node.values.length !== node.keys.length) fail("leaf keys and values differ in length");
        if (!isRoot && node.keys.length < LEAF_ENTRIES_MIN) fail("leaf underfull");
        if (node.keys.length > LEAF_ENTRIES_MAX) fail("leaf overfull");
        return 1;
      }
      const n = node.children.length;
      if (node.keys.length !== n - 1) fail("branch separators do not match children");
      if (!isRoot && n < BRANCH_CHILDREN_MIN) fail("branch underfull");
      if (isRoot && n < 2) fail("root branch with one child");
      if (n > BRANCH_CHILDREN_MAX) fail("branch overfull");
      let size = 0;
      let d = -1;
      for (let i = 0; i < n; i++) {
        const child = node.children[i];
        const cd = depth(
          child,
          false,
          i === 0 ? low : node.keys[i - 1],
          i === n - 1 ? high : node.keys[i],
        );
        if (d !== -1 && cd !== d) fail("leaves at different depths");
        d = cd;
        size += child.size;
      }
      if (size !== node.size) fail(`branch size ${node.size} but children hold ${size}`);
      return d + 1;
    };
    depth(this.#root, true);
  }

  /** `node` itself when this map may write to it, else a copy of it of the current generation. */
  #own<N extends Node<V>>(node: N): N {
    if (node.gen >= this.#sharedBelow) return node;
    const copy = node instanceof Leaf
      ? new Leaf<V>(node.keys.slice(), node.values.slice(), this.#gen)
      : new Branch<V>(
        node.keys.slice(),
        (node as Branch<V>).children.slice(),
        node.size,
        this.#gen,
      );
    return copy as N;
  }

  /** `parent.children[i]` made writable (`parent` must be). */
  #ownChild(parent: Branch<V>, i: number): Node<V> {
    const child = parent.children[i];
    if (child.gen >= this.#sharedBelow) return child;
    return parent.children[i] = this.#own(child);
  }

  #insert(node: Node<V>, key: string, value: V, native: boolean): void {
    if (node instanceof Leaf) {
      const i = lowerBound(node.keys, key, native);
      if (i < node.keys.length && node.keys[i] === key) {
        node.values[i] = value;
        return;
      }
      node.keys.splice(i, 0, key);
      node.values.splice(i, 0, value);
      this.#inserted = true;
      if (node.keys.length > LEAF_ENTRIES_MAX) {
        const mid = node.keys.length >> 1;
        const right = new Leaf<V>(node.keys.splice(mid), node.values.splice(mid), this.#gen);
        this.#splitKey = right.keys[0];
        this.#splitNode = right;
      }
      return;
    }
    const ci = upperBound(node.keys, key, native);
    this.#insert(this.#ownChild(node, ci), key, value, native);
    if (this.#inserted) node.size++;
    const grown = this.#splitNode;
    if (grown === null) return;
    node.keys.splice(ci, 0, this.#splitKey);
    node.children.splice(ci + 1, 0, grown);
    this.#splitNode = null;
    if (node.children.length > BRANCH_CHILDREN_MAX) {
      const mid = node.children.length >> 1;
      const children = node.children.splice(mid);
      const keys = node.keys.splice(mid);
      // The separator between the halves moves up; it belongs to neither half.
      const up = node.keys.pop()!;
      let size = 0;
      for (const c of children) size += c.size;
      node.size -= size;
      this.#splitKey = up;
      this.#splitNode = new Branch<V>(keys, children, size, this.#gen);
    }
  }

  #remove(node: Node<V>, key: string, native: boolean): void {
    if (node instanceof Leaf) {
      const i = lowerBound(node.keys, key, native);
      if (i < node.keys.length && node.keys[i] === key) {
        this.#removed = true;
        node.keys.splice(i, 1);
        node.values.splice(i, 1);
      }
      return;
    }
    const ci = upperBound(node.keys, key, native);
    const child = this.#ownChild(node, ci);
    this.#remove(child, key, native);
    if (!this.#removed) return;
    node.size--;
    const underfull = child instanceof Leaf
      ? child.keys.length < LEAF_ENTRIES_MIN
      : child.children.length < BRANCH_CHILDREN_MIN;
    if (underfull) this.#rebalance(node, ci);
  }

  /** Refills `parent.children[ci]` from a sibling, or merges it with one (all made writable). */
  #rebalance(parent: Branch<V>, ci: number): void {
    const child = parent.children[ci];
    const hasLeft = ci > 0;
    const hasRight = ci + 1 < parent.children.length;
    const left = hasLeft ? parent.children[ci - 1] : undefined;
    const right = hasRight ? parent.children[ci + 1] : undefined;
    if (child instanceof Leaf) {
      if (left !== undefined && left.keys.length > LEAF_ENTRIES_MIN) {
        const l = this.#ownChild(parent, ci - 1) as Leaf<V>;
        child.keys.unshift(l.keys.pop()!);
        child.values.unshift(l.values.pop()!);
        parent.keys[ci - 1] = child.keys[0];
      } else if (right !== undefined && right.keys.length > LEAF_ENTRIES_MIN) {
        const r = this.#ownChild(parent, ci + 1) as Leaf<V>;
        child.keys.push(r.keys.shift()!);
        child.values.push(r.values.shift()!);
        parent.keys[ci] = r.keys[0];
      } else if (hasLeft) {
        this.#mergeLeaves(parent, ci - 1);
      } else {
        this.#mergeLeaves(parent, ci);
      }
      return;
    }
    if (left instanceof Branch && left.children.length > BRANCH_CHILDREN_MIN) {
      const l = this.#ownChild(parent, ci - 1) as Branch<V>;
      const moved = l.children.pop()!;
      child.children.unshift(moved);
      child.keys.unshift(parent.keys[ci - 1]);
      parent.keys[ci - 1] = l.keys.pop()!;
      l.size -= moved.size;
      child.size += moved.size;
    } else if (right instanceof Branch && right.children.length > BRANCH_CHILDREN_MIN) {
      const r = this.#ownChild(parent, ci + 1) as Branch<V>;
      const moved = r.children.shift()!;
      child.children.push(moved);
      child.keys.push(parent.keys[ci]);
      parent.keys[ci] = r.keys.shift()!;
      r.size -= moved.size;
      child.size += moved.size;
    } else if (hasLeft) {
      this.#mergeBranches(parent, ci - 1);
    } else {
      this.#mergeBranches(parent, ci);
    }
  }

  /** Moves `children[i + 1]` (a leaf) into `children[i]` and drops it. */
  #mergeLeaves(parent: Branch<V>, i: number): void {
    const l = this.#ownChild(parent, i) as Leaf<V>;
    const r = parent.children[i + 1] as Leaf<V>;
    for (let j = 0; j < r.keys.length; j++) {
      l.keys.push(r.keys[j]);
      l.values.push(r.values[j]);
    }
    parent.keys.splice(i, 1);
    parent.children.splice(i + 1, 1);
  }

  /** Moves `children[i + 1]` (a branch) into `children[i]`, pulling their separator down. */
  #mergeBranches(parent: Branch<V>, i: number): void {
    const l = this.#ownChild(parent, i) as Branch<V>;
    const r = parent.children[i + 1] as Branch<V>;
    l.keys.push(parent.keys[i]);
    for (const k of r.keys) l.keys.push(k);
    for (const c of r.children) l.children.push(c);
    l.size += r.size;
    parent.keys.splice(i, 1);
    parent.children.splice(i + 1, 1);
  }
}
