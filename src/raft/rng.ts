/**
 * A small seeded pseudo-random generator, so one seed reproduces a run exactly. The core uses no
 * ambient randomness; hosts pass a `SeededRng` (or their own {@linkcode Rng}).
 *
 * @module
 */

import type { Rng } from "./types.ts";

/**
 * Mulberry32-style generator over 32-bit state: fast, tiny and good enough for timeouts and
 * fault schedules (not for cryptography).
 *
 * @example
 * ```ts
 * import { SeededRng } from "./rng.ts";
 * const a = new SeededRng(42), b = new SeededRng(42);
 * if (a.next() !== b.next()) throw new Error("same seed, same sequence");
 * ```
 */
export class SeededRng implements Rng {
  #state: number;

  /** Starts the sequence for `seed` (any integer; it is folded to 32 bits). */
  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`Seed must be a finite number: ${seed}`);
    this.#state = (Math.trunc(seed) ^ 0x9e3779b9) >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max). */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return p > 0 && this.next() < p;
  }

  /** A new generator whose sequence is fixed by this one's next value (for independent streams). */
  fork(): SeededRng {
    return new SeededRng(Math.floor(this.next() * 4294967296));
  }
}
