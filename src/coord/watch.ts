/**
 * The watch hub of one node: watchers of a key or a prefix, fed from the store's watch history.
 * A watcher starts at a revision (the past comes from the history, then live events follow), and
 * receives every event of its range in revision order, none missing and none twice — the hub
 * keeps, per watcher, the next revision it owes and reads it from the history, so a node that
 * restarts and replays its log, or installs a snapshot, never re-sends or skips anything.
 *
 * Bounded: at most `watchersMax` watchers; an async watcher that falls more than
 * `bufferEventsMax` events behind is cancelled with a reason that says where to resume.
 *
 * @module
 */

import { CompactedError } from "../kv/history.ts";
import type { MetadataStore } from "../kv/store.ts";
import { compareKeys } from "../kv/sorted_map.ts";
import { validateRange } from "../kv/command.ts";
import type { KeyRange, KvEvent } from "../kv/types.ts";

/** What to watch. */
export interface WatchOptions {
  /** Keys to watch: one key, [key, rangeEnd), a prefix, or every key from a key on. */
  readonly range: KeyRange;
  /** First revision to report; omitted or 0: only what happens after the watch starts. */
  readonly startRevision?: number;
  /** Include each event's previous key-value. Default false. */
  readonly prevKv?: boolean;
  /** Receive progress notifications while idle. Default true. */
  readonly progressNotify?: boolean;
}

/**
 * What a watcher receives:
 * - `events`: the matching events of one revision;
 * - `progress`: nothing matched up to `revision` (etcd's progress notification);
 * - `canceled`: the watch ended; `reason` says why and `resumeRevision` where a new watch continues
 *   (absent when it cannot: `compactRevision` then names what is gone).
 */
export type WatchResponse =
  | {
    readonly kind: "events";
    readonly watchId: number;
    readonly revision: number;
    readonly events: readonly KvEvent[];
  }
  | { readonly kind: "progress"; readonly watchId: number; readonly revision: number }
  | {
    readonly kind: "canceled";
    readonly watchId: number;
    readonly reason: string;
    readonly resumeRevision?: number;
    readonly compactRevision?: number;
  };

/** Bounds of a {@linkcode WatchHub}. */
export interface WatchHubOptions {
  /** Most watchers at once. Default 1,000. */
  readonly watchersMax?: number;
  /** Most events an async watcher may have buffered before it is cancelled. Default 10,000. */
  readonly bufferEventsMax?: number;
}

/** A watch refused: too many watchers, or a malformed range. */
export class WatchError extends Error {
  /** Makes the error. */
  constructor(message: string) {
    super(message);
    this.name = "WatchError";
  }
}

/** A synchronous watcher, from {@linkcode WatchHub.subscribe}. */
export interface Watcher {
  /** Id, unique within the hub. */
  readonly id: number;
  /** The next revision this watcher will be told about. */
  readonly nextRevision: number;
  /** Stops the watch (the listener gets no `canceled` response). */
  cancel(): void;
}

/** An async watch, from {@linkcode WatchHub.watch}: iterate it, or cancel it. */
export interface WatchStream extends AsyncIterableIterator<WatchResponse> {
  /** Id, unique within the hub. */
  readonly id: number;
  /** Ends the stream; a pending `next()` returns done. */
  cancel(): void;
}

interface Entry {
  readonly id: number;
  readonly range: KeyRange;
  readonly prevKv: boolean;
  readonly progressNotify: boolean;
  nextRevision: number;
  /** Whether anything was sent since the last progress round. */
  active: boolean;
  readonly listener: (r: WatchResponse) => void;
}

/** Whether `key` lies in `range` (keys in UTF-8 byte order). */
export function inRange(key: string, range: KeyRange): boolean {
  if ("prefix" in range) return key.startsWith(range.prefix);
  if ("fromKey" in range) return compareKeys(key, range.fromKey) >= 0;
  if (range.rangeEnd === undefined) return key === range.key;
  return compareKeys(key, range.key) >= 0 && compareKeys(key, range.rangeEnd) < 0;
}

/**
 * The watchers of one node. The host calls {@linkcode WatchHub.notify} after applying entries and
 * {@linkcode WatchHub.progress} now and then.
 *
 * @example
 * ```ts
 * import { MetadataStore, encodePut } from "../kv/mod.ts";
 * import { WatchHub } from "./watch.ts";
 * const store = new MetadataStore();
 * const hub = new WatchHub(() => store);
 * const seen: string[] = [];
 * hub.subscribe({ range: { prefix: "/svc/" } }, (r) => {
 *   if (r.kind === "events") seen.push(...r.events.map((e) => `${e.type} ${e.kv.key}`));
 * });
 * store.apply(encodePut("/svc/a", "1"), 1);
 * hub.notify();
 * if (seen[0] !== "PUT /svc/a") throw new Error();
 * ```
 */
export class WatchHub {
  /** Most watchers at once. */
  readonly watchersMax: number;
  /** Most events an async watcher may have buffered. */
  readonly bufferEventsMax: number;
  readonly #store: () => MetadataStore;
  #watchers = new Map<number, Entry>();
  #nextId = 1;

  /** A hub over the node's store (a getter: a host may replace the store on restore). */
  constructor(store: () => MetadataStore, options: WatchHubOptions = {}) {
    this.#store = store;
    this.watchersMax = options.watchersMax ?? 1_000;
    this.bufferEventsMax = options.bufferEventsMax ?? 10_000;
  }

  /** Number of watchers. */
  get size(): number {
    return this.#watchers.size;
  }

  /**
   * Starts a watch whose responses go to `listener`, synchronously: the retained history from
   * `startRevision` at once, then live events on each {@linkcode notify}. Throws
   * {@linkcode CompactedError} when `startRevision` is older than the history, and
   * {@linkcode WatchError} when the hub is full.
   */
  subscribe(options: WatchOptions, listener: (r: WatchResponse) => void): Watcher {
    validateRange(options.range);
    if (this.#watchers.size >= this.watchersMax) {
      throw new WatchError(`Too many watchers: ${this.#watchers.size} (most ${this.watchersMax})`);
    }
    const store = this.#store();
    const start = options.startRevision ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) {
      throw new WatchError(`Start revision must be a non-negative integer: ${start}`);
    }
    if (start > 0 && start < store.oldestRevision) {
      throw new CompactedError(start, store.oldestRevision);
    }
    const entry: Entry = {
      id: this.#nextId++,
      range: options.range,
      prevKv: options.prevKv ?? false,
      progressNotify: options.progressNotify ?? true,
      nextRevision: start > 0 ? start : store.revision + 1,
      active: false,
      listener,
    };
    this.#watchers.set(entry.id, entry);
    this.#deliver(entry);
    const watchers = this.#watchers;
    return {
      id: entry.id,
      get nextRevision() {
        return entry.nextRevision;
      },
      cancel: () => watchers.delete(entry.id),
    };
  }

  /**
   * Starts a watch read as an async iterator. Responses wait in a buffer; when more than
   * `bufferEventsMax` events wait, the buffer is dropped and the stream ends with a `canceled`
   * response naming the revision to resume from.
   */
  watch(options: WatchOptions): WatchStream {
    const queue: WatchResponse[] = [];
    let buffered = 0;
    let ended = false;
    let wake: (() => void) | undefined;
    const max = this.bufferEventsMax;
    let watcher: Watcher | undefined = undefined;
    const push = (r: WatchResponse) => {
      if (ended) return;
      if (r.kind === "events") {
        buffered += r.events.length;
        if (buffered > max) {
          const first = queue.find((q) => q.kind === "events") ?? r;
          const resume = first.kind === "events" ? first.revision : r.revision;
          queue.length = 0;
          buffered = 0;
          watcher?.cancel();
          r = {
            kind: "canceled",
            watchId: r.watchId,
            reason:
              `Watcher fell behind: more than ${max} events buffered; resume from revision ${resume}`,
            resumeRevision: resume,
          };
        }
      }
      queue.push(r);
      if (r.kind === "canceled") ended = true;
      wake?.();
    };
    watcher = this.subscribe(options, push);
    if (ended) watcher.cancel();
    let closed = false;
    const stream: WatchStream = {
      id: watcher.id,
      cancel() {
        closed = true;
        watcher!.cancel();
        wake?.();
      },
      async next(): Promise<IteratorResult<WatchResponse>> {
        while (queue.length === 0) {
          if (closed || ended) return { done: true, value: undefined };
          await new Promise<void>((r) => wake = r);
          wake = undefined;
        }
        if (closed) return { done: true, value: undefined };
        const r = queue.shift()!;
        if (r.kind === "events") buffered -= r.events.length;
        return { done: false, value: r };
      },
      return(): Promise<IteratorResult<WatchResponse>> {
        stream.cancel();
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]() {
        return stream;
      },
    };
    return stream;
  }

  /** Delivers what the store applied since the last call to every watcher. */
  notify(): void {
    for (const w of [...this.#watchers.values()]) this.#deliver(w);
  }

  /** Tells each idle watcher (nothing sent since the last round) the store's current revision. */
  progress(): void {
    const revision = this.#store().revision;
    for (const w of [...this.#watchers.values()]) {
      this.#deliver(w);
      if (!this.#watchers.has(w.id)) continue;
      if (!w.active && w.progressNotify && w.nextRevision > revision) {
        w.listener({ kind: "progress", watchId: w.id, revision });
      }
      w.active = false;
    }
  }

  /** Cancels every watcher with `reason` (the node stops); each may resume elsewhere. */
  cancelAll(reason: string): void {
    const all = [...this.#watchers.values()];
    this.#watchers.clear();
    for (const w of all) {
      w.listener({ kind: "canceled", watchId: w.id, reason, resumeRevision: w.nextRevision });
    }
  }

  #deliver(w: Entry): void {
    const store = this.#store();
    if (store.revision < w.nextRevision) return;
    let revisions;
    try {
      revisions = store.history(w.nextRevision);
    } catch (e) {
      if (!(e instanceof CompactedError)) throw e;
      this.#watchers.delete(w.id);
      w.listener({
        kind: "canceled",
        watchId: w.id,
        reason: e.message,
        compactRevision: e.oldestRevision - 1,
      });
      return;
    }
    for (const r of revisions) {
      if (!this.#watchers.has(w.id)) return;
      const events = r.events.filter((e) => inRange(e.kv.key, w.range)).map((e) =>
        w.prevKv || e.prevKv === undefined ? e : { type: e.type, kv: e.kv }
      );
      w.nextRevision = r.revision + 1;
      if (events.length === 0) continue;
      w.active = true;
      w.listener({ kind: "events", watchId: w.id, revision: r.revision, events });
    }
    w.nextRevision = Math.max(w.nextRevision, store.revision + 1);
  }
}
