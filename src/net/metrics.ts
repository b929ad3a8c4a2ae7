/**
 * A few Prometheus metrics (counters, gauges, histograms) rendered in the text exposition format.
 * Bounded: label sets are fixed by the code, never taken from requests.
 *
 * @module
 */

/** Upper bounds (seconds) for latency histograms: 0.5 ms to 10 s. */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.0005,
  0.001,
  0.002,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** A cumulative histogram with fixed buckets. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** A histogram over `bounds` (ascending upper bounds). */
  constructor(bounds: readonly number[] = LATENCY_BUCKETS_S) {
    this.#bounds = bounds;
    this.#counts = bounds.map(() => 0);
  }

  /** Records one observation. */
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.#bounds.length; i++) {
      if (value <= this.#bounds[i]) {
        this.#counts[i]++;
        break;
      }
    }
  }

  /** Number of observations. */
  get count(): number {
    return this.#count;
  }

  /** The value below which `q` (0..1) of observations fall, by bucket upper bound. */
  quantile(q: number): number {
    const target = q * this.#count;
    let seen = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      seen += this.#counts[i];
      if (seen >= target && this.#count > 0) return this.#bounds[i];
    }
    return Infinity;
  }

  /** Prometheus lines for this histogram as `name{labels}`. */
  lines(name: string, labels = ""): string[] {
    const out: string[] = [];
    let cumulative = 0;
    const sep = labels === "" ? "" : ",";
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i];
      out.push(`${name}_bucket{${labels}${sep}le="${this.#bounds[i]}"} ${cumulative}`);
    }
    out.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${this.#count}`);
    const l = labels === "" ? "" : `{${labels}}`;
    out.push(`${name}_sum${l} ${this.#sum}`);
    out.push(`${name}_count${l} ${this.#count}`);
    return out;
  }
}

/** Renders metric families: each with help, type and sample lines. */
export function renderMetrics(
  families: readonly {
    name: string;
    help: string;
    type: "counter" | "gauge" | "histogram";
    samples: readonly string[];
  }[],
): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`);
    out.push(`# TYPE ${f.name} ${f.type}`);
    out.push(...f.samples);
  }
  return out.join("\n") + "\n";
}
