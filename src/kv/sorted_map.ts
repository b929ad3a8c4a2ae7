/**
 * An ordered map from string keys to values, kept in a B+tree: O(log n) get, set and delete,
 * ordered iteration from any key, and O(log n) rank (how many keys sort before a key), which
 * makes range counts cheap at 1,000,000 keys.
 *
 * Keys are ordered by their UTF-8 bytes (as etcd orders its byte keys), not by JavaScript's
 * UTF-16 `<`; the two differ only where a character above U+FFFF meets one in U+E000..U+FFFF.
 *
 * @module
 */

/** Most entries a leaf holds before it splits. */
const LEAF_ENTRIES_MAX = 64;
/** Fewest entries a leaf other than the root holds; below this it borrows or merges. */
const LEAF_ENTRIES_MIN = LEAF_ENTRIES_MAX >> 1;
/** Most children a branch holds before it splits. */
const BRANCH_CHILDREN_MAX = 64;
/** Fewest children a branch other than the root holds. */
const BRANCH_CHILDREN_MIN = BRANCH_CHILDREN_MAX >> 1;

/**
 * Compares two keys by the order of their UTF-8 encodings: negative when `a` sorts first, zero
 * when equal, positive when `b` sorts first. Both must be well-formed UTF-16.
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
      // Surrogates (U+D800..U+DFFF) stand for code points above U+FFFF, which UTF-8 sorts after
      // U+E000..U+FFFF: lift them above that block before comparing.
      if (x >= 0xd800 && y >= 0xd800) return utf8Rank(x) - utf8Rank(y);
      return x - y;
    }
  }
  return a.length - b.length;
}

function utf8Rank(unit: number): number {
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

class Leaf<V> {
  keys: string[];
  values: V[];
  next: Leaf<V> | null = null;
  constructor(keys: string[], values: V[]) {
    this.keys = keys;
    this.values = values;
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
  constructor(keys: string[], children: Node<V>[], size: number) {
    this.keys = keys;
    this.children = children;
    this.size = size;
  }
}

type Node<V> = Leaf<V> | Branch<V>;

/**
 * Matches a UTF-16 unit at or above U+D800. A key without one compares the same under JavaScript's
 * `<` as under UTF-8 order against any other key, so searches for it use the fast native compare.
 */
const HIGH_UNIT = /[\uD800-\uFFFF]/;

/** Whether `key` can be compared with the native `<` (see {@linkcode HIGH_UNIT}). */
function isNativeOrdered(key: string): boolean {
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

/**
 * An ordered map over string keys in UTF-8 byte order, backed by a B+tree whose leaves are
 * linked for ordered scans. Not safe to mutate while iterating.
 *
 * @example
 * ```ts
 * import { SortedMap } from "./sorted_map.ts";
 * const map = new SortedMap<number>();
 * map.set("/b", 2);
 * map.set("/a", 1);
 * const keys = [...map.entries()].map(([key]) => key);
 * if (keys.join() !== "/a,/b") throw new Error("not sorted");
 * ```
 */
export class SortedMap<V> {
  #root: Node<V> = new Leaf<V>([], []);
  // Out-parameters of the recursive insert, so a split allocates no result object.
  #splitKey = "";
  #splitNode: Node<V> | null = null;
  #inserted = false;
  #removed = false;

  /** Number of entries. */
  get size(): number {
    return this.#root.size;
  }

  /** The value stored under `key`, or `undefined`. */
  get(key: string): V | undefined {
    const native = isNativeOrdered(key);
    let node = this.#root;
    while (node instanceof Branch) node = node.children[upperBound(node.keys, key, native)];
    const i = lowerBound(node.keys, key, native);
    return i < node.keys.length && node.keys[i] === key ? node.values[i] : undefined;
  }

  /** Whether `key` is present. */
  has(key: string): boolean {
    const native = isNativeOrdered(key);
    let node = this.#root;
    while (node instanceof Branch) node = node.children[upperBound(node.keys, key, native)];
    const i = lowerBound(node.keys, key, native);
    return i < node.keys.length && node.keys[i] === key;
  }

  /** Stores `value` under `key`; returns true when the key was new. */
  set(key: string, value: V): boolean {
    this.#inserted = false;
    this.#splitNode = null;
    this.#insert(this.#root, key, value, isNativeOrdered(key));
    const right = this.#splitNode as Node<V> | null;
    if (right !== null) {
      const left = this.#root;
      const size = left.size + right.size;
      this.#root = new Branch<V>([this.#splitKey], [left, right], size);
      this.#splitNode = null;
    }
    return this.#inserted;
  }

  /** Removes `key`; returns true when it was present. */
  delete(key: string): boolean {
    this.#removed = false;
    this.#remove(this.#root, key, isNativeOrdered(key));
    const root = this.#root;
    if (root instanceof Branch && root.children.length === 1) this.#root = root.children[0];
    return this.#removed;
  }

  /** Removes every entry. */
  clear(): void {
    this.#root = new Leaf<V>([], []);
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
  *entries(start?: string, end?: string): IterableIterator<[string, V]> {
    let node = this.#root;
    if (start === undefined) {
      while (node instanceof Branch) node = node.children[0];
    } else {
      const native = isNativeOrdered(start);
      while (node instanceof Branch) node = node.children[upperBound(node.keys, start, native)];
    }
    let leaf: Leaf<V> | null = node;
    let i = start === undefined ? 0 : lowerBound(leaf.keys, start, isNativeOrdered(start));
    const endNative = end !== undefined && isNativeOrdered(end);
    while (leaf !== null) {
      const keys = leaf.keys;
      for (; i < keys.length; i++) {
        const key = keys[i];
        if (end !== undefined && (endNative ? key >= end : compareKeys(key, end) >= 0)) return;
        yield [key, leaf.values[i]];
      }
      leaf = leaf.next;
      i = 0;
    }
  }

  /** The smallest key, or `undefined` when empty. */
  firstKey(): string | undefined {
    let node = this.#root;
    while (node instanceof Branch) node = node.children[0];
    return node.keys[0];
  }

  /**
   * Checks the tree's structure (order, fill, separators, sizes, leaf links) and throws on the
   * first broken rule. For tests; O(n).
   */
  assertValid(): void {
    const leaves: Leaf<V>[] = [];
    const depth = (node: Node<V>, isRoot: boolean, low?: string, high?: string): number => {
      const fail = (what: string) => {
        throw new Error(`B+tree invariant violated: ${what}`);
      };
      for (let i = 1; i < node.keys.length; i++) {
        if (compareKeys(node.keys[i - 1], node.keys[i]) >= 0) fail(`keys out of order`);
      }
      for (const k of node.keys) {
        if (low !== undefined && compareKeys(k, low) < 0) fail(`key ${JSON.stringify(k)} < bound`);
        if (high !== undefined && compareKeys(k, high) >= 0) {
          fail(`key ${JSON.stringify(k)} >= bound`);
        }
      }
      if (node instanceof Leaf) {
        if (node.values.length !== node.keys.length) fail("leaf keys and values differ in length");
        if (!isRoot && node.keys.length < LEAF_ENTRIES_MIN) fail("leaf underfull");
        if (node.keys.length > LEAF_ENTRIES_MAX) fail("leaf overfull");
        leaves.push(node);
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
    for (let i = 0; i < leaves.length; i++) {
      if (leaves[i].next !== (leaves[i + 1] ?? null)) {
        throw new Error("B+tree invariant violated: leaf links broken");
      }
    }
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
        const right = new Leaf<V>(node.keys.splice(mid), node.values.splice(mid));
        right.next = node.next;
        node.next = right;
        this.#splitKey = right.keys[0];
        this.#splitNode = right;
      }
      return;
    }
    const ci = upperBound(node.keys, key, native);
    this.#insert(node.children[ci], key, value, native);
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
      this.#splitNode = new Branch<V>(keys, children, size);
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
    const child = node.children[ci];
    this.#remove(child, key, native);
    if (!this.#removed) return;
    node.size--;
    const underfull = child instanceof Leaf
      ? child.keys.length < LEAF_ENTRIES_MIN
      : child.children.length < BRANCH_CHILDREN_MIN;
    if (underfull) this.#rebalance(node, ci);
  }

  /** Refills `parent.children[ci]` from a sibling, or merges it with one. */
  #rebalance(parent: Branch<V>, ci: number): void {
    const child = parent.children[ci];
    const left = ci > 0 ? parent.children[ci - 1] : undefined;
    const right = ci + 1 < parent.children.length ? parent.children[ci + 1] : undefined;
    if (child instanceof Leaf) {
      const l = left as Leaf<V> | undefined;
      const r = right as Leaf<V> | undefined;
      if (l !== undefined && l.keys.length > LEAF_ENTRIES_MIN) {
        child.keys.unshift(l.keys.pop()!);
        child.values.unshift(l.values.pop()!);
        parent.keys[ci - 1] = child.keys[0];
      } else if (r !== undefined && r.keys.length > LEAF_ENTRIES_MIN) {
        child.keys.push(r.keys.shift()!);
        child.values.push(r.values.shift()!);
        parent.keys[ci] = r.keys[0];
      } else if (l !== undefined) {
        this.#mergeLeaves(parent, ci - 1);
      } else {
        this.#mergeLeaves(parent, ci);
      }
      return;
    }
    const l = left as Branch<V> | undefined;
    const r = right as Branch<V> | undefined;
    if (l !== undefined && l.children.length > BRANCH_CHILDREN_MIN) {
      const moved = l.children.pop()!;
      child.children.unshift(moved);
      child.keys.unshift(parent.keys[ci - 1]);
      parent.keys[ci - 1] = l.keys.pop()!;
      l.size -= moved.size;
      child.size += moved.size;
    } else if (r !== undefined && r.children.length > BRANCH_CHILDREN_MIN) {
      const moved = r.children.shift()!;
      child.children.push(moved);
      child.keys.push(parent.keys[ci]);
      parent.keys[ci] = r.keys.shift()!;
      r.size -= moved.size;
      child.size += moved.size;
    } else if (l !== undefined) {
      this.#mergeBranches(parent, ci - 1);
    } else {
      this.#mergeBranches(parent, ci);
    }
  }

  /** Moves `children[i + 1]` (a leaf) into `children[i]` and drops it. */
  #mergeLeaves(parent: Branch<V>, i: number): void {
    const l = parent.children[i] as Leaf<V>;
    const r = parent.children[i + 1] as Leaf<V>;
    for (let j = 0; j < r.keys.length; j++) {
      l.keys.push(r.keys[j]);
      l.values.push(r.values[j]);
    }
    l.next = r.next;
    parent.keys.splice(i, 1);
    parent.children.splice(i + 1, 1);
  }

  /** Moves `children[i + 1]` (a branch) into `children[i]`, pulling their separator down. */
  #mergeBranches(parent: Branch<V>, i: number): void {
    const l = parent.children[i] as Branch<V>;
    const r = parent.children[i + 1] as Branch<V>;
    l.keys.push(parent.keys[i]);
    for (const k of r.keys) l.keys.push(k);
    for (const c of r.children) l.children.push(c);
    l.size += r.size;
    parent.keys.splice(i, 1);
    parent.children.splice(i + 1, 1);
  }
}
