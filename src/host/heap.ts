/**
 * A binary min-heap ordered by (time, sequence number): events at the same virtual time come out
 * in the order they were scheduled, which keeps a simulation deterministic.
 *
 * @module
 */

/** Something scheduled at a virtual time. */
export interface Scheduled {
  /** When it happens, in virtual milliseconds. */
  readonly atMs: number;
  /** Tie-breaker: scheduling order. */
  readonly seq: number;
}

/** A min-heap of scheduled items. */
export class EventHeap<T extends Scheduled> {
  #items: T[] = [];

  /** Number of items waiting. */
  get size(): number {
    return this.#items.length;
  }

  /** The earliest item without removing it. */
  peek(): T | undefined {
    return this.#items[0];
  }

  /** Adds an item. */
  push(item: T): void {
    const a = this.#items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }

  /** Removes and returns the earliest item. */
  pop(): T | undefined {
    const a = this.#items;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && before(a[l], a[m])) m = l;
        if (r < a.length && before(a[r], a[m])) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }

  /** Removes every item for which `drop` returns true. */
  removeWhere(drop: (item: T) => boolean): void {
    const kept = this.#items.filter((x) => !drop(x));
    this.#items = [];
    for (const x of kept) this.push(x);
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}
