/**
 * How long the event loop was kept from running timers: a node whose loop stalls longer than the
 * election timeout misses heartbeats and is deposed, whatever the request that stalled it. A
 * periodic timer measures how late it fires.
 *
 * @module
 */

/** Worst and total event-loop stalls, in milliseconds. */
export interface LoopStalls {
  /** Worst lateness of the timer since the node started. */
  readonly stallMsMax: number;
  /** Worst lateness in the last one to two windows (see {@linkcode LoopStallMeter}). */
  readonly stallMsRecentMax: number;
  /** Sum of all lateness since the node started. */
  readonly stallMsTotal: number;
}

/** Measures event-loop stalls with a timer every `periodMs` (default 10). */
export class LoopStallMeter {
  /** Timer period. */
  readonly periodMs: number;
  /** Length of one window of {@linkcode LoopStalls.stallMsRecentMax}. */
  readonly windowMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastMs = 0;
  #max = 0;
  #total = 0;
  #windowStartMs = 0;
  #windowMax = 0;
  #previousWindowMax = 0;

  /** A stopped meter. */
  constructor(options: { periodMs?: number; windowMs?: number } = {}) {
    this.periodMs = options.periodMs ?? 10;
    this.windowMs = options.windowMs ?? 10_000;
  }

  /** Starts measuring. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#lastMs = this.#windowStartMs = performance.now();
    this.#timer = setInterval(() => this.#fired(), this.periodMs);
  }

  /** Stops measuring. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** The figures so far. */
  get stalls(): LoopStalls {
    return {
      stallMsMax: round(this.#max),
      stallMsRecentMax: round(Math.max(this.#windowMax, this.#previousWindowMax)),
      stallMsTotal: round(this.#total),
    };
  }

  #fired(): void {
    const now = performance.now();
    const lateMs = Math.max(0, now - this.#lastMs - this.periodMs);
    this.#lastMs = now;
    this.#total += lateMs;
    if (lateMs > this.#max) this.#max = lateMs;
    if (now - this.#windowStartMs >= this.windowMs) {
      this.#previousWindowMax = this.#windowMax;
      this.#windowMax = 0;
      this.#windowStartMs = now;
    }
    if (lateMs > this.#windowMax) this.#windowMax = lateMs;
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
