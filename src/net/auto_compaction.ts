/**
 * Automatic compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`:
 *
 * - `revision`: every 5 minutes, compact at the current revision minus the retention (when that
 *   is above the compact revision);
 * - `periodic`: keep the history of the last retention period (a duration such as `72h`, `30m`,
 *   `90s`, or a bare number of hours): the current revision is sampled every tenth of the
 *   retention (at most every hour), and each sample is compacted at once it is a retention old.
 *
 * The decision reads the time it is given (the server passes its clock's, so the simulator's
 * virtual clock drives it alike); the leader proposes the compaction through the log, so every
 * node compacts at the same revision.
 *
 * @module
 */

/** What `--auto-compaction-mode` names. */
export type AutoCompactionMode = "periodic" | "revision";

/** Automatic compaction settings; see the module doc. */
export interface AutoCompactionConfig {
  /** The mode. */
  readonly mode: AutoCompactionMode;
  /** Revisions kept (`revision`) or milliseconds of history kept (`periodic`); positive. */
  readonly retention: number;
  /** How often `revision` mode looks (default 300,000: etcd's 5 minutes). */
  readonly checkIntervalMs?: number;
}

/** etcd's check period of revision mode: 5 minutes. */
export const REVISION_CHECK_INTERVAL_MS = 5 * 60 * 1000;
/** Longest sampling period of periodic mode: 1 hour. */
export const PERIODIC_INTERVAL_MS_MAX = 60 * 60 * 1000;

const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/**
 * Parses `--auto-compaction-mode` and `--auto-compaction-retention` as etcd does: retention `0`
 * (the default) turns it off; in periodic mode a bare number counts hours, or a duration such as
 * `1h30m`, `10m`, `30s`, `500ms`; in revision mode a number of revisions. Throws naming the flag.
 */
export function parseAutoCompaction(
  mode: string,
  retention: string,
): AutoCompactionConfig | undefined {
  if (mode !== "periodic" && mode !== "revision") {
    throw new Error(
      `--auto-compaction-mode must be "periodic" or "revision": ${JSON.stringify(mode)}`,
    );
  }
  const bad = () =>
    new Error(
      `--auto-compaction-retention must be ${
        mode === "revision" ? "a number of revisions" : "a duration (72h, 30m, 10s) or hours"
      }: ${JSON.stringify(retention)}`,
    );
  if (/^0+$/.test(retention)) return undefined;
  if (mode === "revision") {
    if (!/^\d+$/.test(retention) || !Number.isSafeInteger(Number(retention))) throw bad();
    return { mode, retention: Number(retention) };
  }
  let ms: number;
  if (/^\d+$/.test(retention)) ms = Number(retention) * UNIT_MS.h;
  else {
    const parts = [...retention.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)];
    if (parts.length === 0 || parts.map((p) => p[0]).join("") !== retention) throw bad();
    ms = parts.reduce((sum, p) => sum + Number(p[1]) * UNIT_MS[p[2]], 0);
  }
  ms = Math.round(ms);
  if (!Number.isSafeInteger(ms) || ms < 1) throw bad();
  return { mode, retention: ms };
}

/** Decides when to compact; the host calls {@linkcode poll} on its ticks. */
export class AutoCompactor {
  /** The settings. */
  readonly config: AutoCompactionConfig;
  /** Sampling (periodic) or checking (revision) period. */
  readonly intervalMs: number;
  /** Set by the host while its proposal is in flight: no new one meanwhile. */
  proposing = false;
  #nextMs: number | undefined;
  /** Periodic mode: [time, revision] samples not yet compacted, oldest first. */
  #samples: [number, number][] = [];

  /** A compactor with `config` (validated). */
  constructor(config: AutoCompactionConfig) {
    if (!Number.isSafeInteger(config.retention) || config.retention < 1) {
      throw new RangeError(`retention must be a positive integer: ${config.retention}`);
    }
    this.config = config;
    this.intervalMs = config.mode === "revision"
      ? config.checkIntervalMs ?? REVISION_CHECK_INTERVAL_MS
      : Math.max(1, Math.min(PERIODIC_INTERVAL_MS_MAX, Math.floor(config.retention / 10)));
  }

  /**
   * The revision to compact at now, or `undefined`. `nowMs` is the host's clock; `revision` and
   * `compactRevision` the store's; only a `leader` gets an answer (others keep sampling, so a
   * new leader has the history of samples too).
   */
  poll(
    nowMs: number,
    revision: number,
    compactRevision: number,
    leader: boolean,
  ): number | undefined {
    if (this.#nextMs === undefined) this.#nextMs = nowMs;
    let target: number | undefined;
    if (nowMs >= this.#nextMs) {
      this.#nextMs = nowMs + this.intervalMs;
      if (this.config.mode === "revision") {
        target = revision - this.config.retention;
      } else {
        this.#samples.push([nowMs, revision]);
        if (this.#samples.length > 64) this.#samples.shift();
      }
    }
    if (this.config.mode === "periodic") {
      // The newest sample at least a retention old.
      while (this.#samples.length > 1 && nowMs - this.#samples[1][0] >= this.config.retention) {
        this.#samples.shift();
      }
      const s = this.#samples[0];
      if (s !== undefined && nowMs - s[0] >= this.config.retention) target = s[1];
    }
    if (target === undefined || target <= compactRevision || !leader || this.proposing) {
      return undefined;
    }
    return target;
  }
}
