/**
 * `LogApplier` (the seed's name): hands committed entries to the state machine in log order,
 * each exactly once.
 *
 * @module
 */

import { invariant } from "./log.ts";
import type { RaftLogEntry } from "./types.ts";

/** A deterministic state machine driven by committed commands. */
export interface StateMachine<R = unknown> {
  /** Applies one committed command at log `index` and returns its result. */
  apply(command: Uint8Array, index: number): R;
}

/** Applies committed entries in order, exactly once; no-ops advance the index only. */
export class LogApplier<R = unknown> {
  #lastApplied: number;
  readonly #machine: StateMachine<R>;

  /** Starts after `lastApplied` (0 for an empty state machine). */
  constructor(machine: StateMachine<R>, lastApplied = 0) {
    this.#machine = machine;
    this.#lastApplied = lastApplied;
  }

  /** Index of the last entry applied. */
  get lastApplied(): number {
    return this.#lastApplied;
  }

  /**
   * Applies `entries`, which must continue exactly at `lastApplied + 1`, calling `onApplied` with
   * each entry and its result (undefined for a no-op).
   */
  apply(
    entries: readonly RaftLogEntry[],
    onApplied?: (entry: RaftLogEntry, result: R | undefined) => void,
  ): void {
    for (const e of entries) {
      invariant(
        e.index === this.#lastApplied + 1,
        () => `entry ${e.index} applied out of order (last applied ${this.#lastApplied})`,
      );
      const result = e.kind === "command" ? this.#machine.apply(e.command, e.index) : undefined;
      this.#lastApplied = e.index;
      onApplied?.(e, result);
    }
  }
}
