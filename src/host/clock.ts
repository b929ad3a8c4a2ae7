/**
 * The clock and timers a host runs on, as small interfaces: the real server gets the process's
 * clock and timers (src/net/real_clock.ts), the simulator a {@linkcode VirtualTimers} driven by
 * its virtual clock, so the same server code runs in both and one seed reproduces a run.
 *
 * @module
 */

import { EventHeap } from "./heap.ts";

/** Milliseconds since some fixed start, never going backwards. */
export interface HostClock {
  /** The time now, in milliseconds. */
  nowMs(): number;
}

/** Cancels a timer; calling it again, or after the timer fired, does nothing. */
export type CancelTimer = () => void;

/** The timers a host needs: a periodic tick, one-shot delays and "after this turn". */
export interface HostTimers {
  /** Runs `fire` every `intervalMs` until cancelled. */
  every(intervalMs: number, fire: () => void): CancelTimer;
  /** Runs `fire` once, `delayMs` from now. */
  after(delayMs: number, fire: () => void): CancelTimer;
  /** Runs `fire` soon, after the work of the current turn (a macrotask, not a microtask). */
  nextTurn(fire: () => void): void;
}

interface TimerEvent {
  readonly atMs: number;
  readonly seq: number;
  readonly owner: number;
  readonly epoch: number;
  readonly fire: () => void;
}

/**
 * Timers on a virtual clock for any number of simulated hosts: a heap of events the simulator
 * pops in (time, scheduling order). Each host gets its own view ({@linkcode host}); crashing a
 * host ({@linkcode halt}) drops every timer it set, so a crashed process never runs again.
 */
export class VirtualTimers implements HostClock {
  readonly #heap = new EventHeap<TimerEvent>();
  #nowMs = 0;
  #seq = 0;
  readonly #epochs = new Map<number, number>();
  /** Events of paused hosts that fell due, in order, held until they resume. */
  readonly #held = new Map<number, TimerEvent[]>();

  /** The virtual time now. */
  nowMs(): number {
    return this.#nowMs;
  }

  /** When the next event is due, or undefined when none is scheduled. */
  nextAtMs(): number | undefined {
    return this.#heap.peek()?.atMs;
  }

  /**
   * Moves the clock to the next event and runs it; false (and the clock stays) when none is due
   * at or before `untilMs`. Events of halted hosts are skipped.
   */
  step(untilMs: number): boolean {
    for (;;) {
      const next = this.#heap.peek();
      if (next === undefined || next.atMs > untilMs) return false;
      this.#heap.pop();
      if (this.#epochs.get(next.owner) !== next.epoch) continue;
      const held = this.#held.get(next.owner);
      if (held !== undefined) {
        held.push(next);
        continue;
      }
      this.#nowMs = Math.max(this.#nowMs, next.atMs);
      next.fire();
      return true;
    }
  }

  /** Moves the clock to `atMs` without running anything (nothing may be due before it). */
  advanceTo(atMs: number): void {
    const next = this.#heap.peek();
    if (next !== undefined && next.atMs < atMs) {
      throw new RangeError(`An event is due at ${next.atMs} ms, before ${atMs} ms`);
    }
    this.#nowMs = Math.max(this.#nowMs, atMs);
  }

  /** Schedules `fire` at `delayMs` from now for `owner` (its timers die with it). */
  schedule(owner: number, delayMs: number, fire: () => void): CancelTimer {
    if (!(delayMs >= 0)) throw new RangeError(`Timer delay must be at least 0 ms: ${delayMs}`);
    let live = true;
    const epoch = this.#epochs.get(owner) ?? 0;
    this.#epochs.set(owner, epoch);
    this.#heap.push({
      atMs: this.#nowMs + delayMs,
      seq: ++this.#seq,
      owner,
      epoch,
      fire: () => {
        if (live) fire();
      },
    });
    return () => live = false;
  }

  /** Drops every timer `owner` has set so far (its process crashed). */
  halt(owner: number): void {
    this.#epochs.set(owner, (this.#epochs.get(owner) ?? 0) + 1);
    this.#held.delete(owner);
  }

  /**
   * Stops running `owner`'s timers (its process is paused, as by SIGSTOP): those that fall due
   * are held, in order, until {@linkcode resume}.
   */
  pause(owner: number): void {
    if (!this.#held.has(owner)) this.#held.set(owner, []);
  }

  /** Whether `owner` is paused. */
  paused(owner: number): boolean {
    return this.#held.has(owner);
  }

  /** Runs `owner`'s timers again: those held fire now, in the order they fell due. */
  resume(owner: number): void {
    const held = this.#held.get(owner);
    if (held === undefined) return;
    this.#held.delete(owner);
    for (const e of held) this.#heap.push({ ...e, atMs: this.#nowMs, seq: ++this.#seq });
  }

  /** The timers of one host, `owner`. */
  host(owner: number): HostTimers {
    return timersOn((delayMs, fire) => this.schedule(owner, delayMs, fire));
  }
}

/**
 * A host's timers built on `schedule` (fire once after a delay): `every` re-arms itself before
 * each firing; `nextTurn` is `nextTurn`, by default a delay of 0.
 */
export function timersOn(
  schedule: (delayMs: number, fire: () => void) => CancelTimer,
  nextTurn: (fire: () => void) => void = (fire) => void schedule(0, fire),
): HostTimers {
  return {
    every: (intervalMs, fire) => {
      if (!(intervalMs > 0)) throw new RangeError(`Interval must be positive: ${intervalMs}`);
      let cancel: CancelTimer = () => {};
      let live = true;
      const arm = () => {
        cancel = schedule(intervalMs, () => {
          if (!live) return;
          arm();
          fire();
        });
      };
      arm();
      return () => {
        live = false;
        cancel();
      };
    },
    after: schedule,
    nextTurn,
  };
}
