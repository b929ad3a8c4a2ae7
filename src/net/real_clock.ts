/**
 * The process's own clock and timers behind the host interfaces (src/host/clock.ts): what a
 * {@linkcode RaftServer} runs on outside the simulator.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { HostClock, HostTimers } from "../host/clock.ts";

/** Milliseconds since this clock was made, from `performance.now()` (monotonic). */
export class RealClock implements HostClock {
  readonly #t0 = performance.now();

  /** Milliseconds since the clock was made (fractional). */
  nowMs(): number {
    return performance.now() - this.#t0;
  }
}

/** The event loop's timers. */
export const REAL_TIMERS: HostTimers = {
  every(intervalMs, fire) {
    const id = setInterval(fire, intervalMs);
    return () => clearInterval(id);
  },
  after(delayMs, fire) {
    const id = setTimeout(fire, delayMs);
    return () => clearTimeout(id);
  },
  // A macrotask, not a microtask: requests that arrive in the same turn join the next batch. Not
  // setTimeout(0): Deno clamps it to 1 ms and more (about 2 ms measured), once per hop.
  nextTurn(fire) {
    setImmediate(fire);
  },
};
