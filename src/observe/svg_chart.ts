/**
 * Cumulative distribution charts in SVG (as in Figure 16 of the Raft paper: the share of trials
 * finished by each time), with a text table of the same data for terminals.
 *
 * @module
 */

import { JUPYTER_DISPLAY } from "./table.ts";

/** One curve: a label and its samples (milliseconds). */
export interface CdfSeries {
  /** Legend text, e.g. `150–155 ms`. */
  readonly label: string;
  /** The samples; `Infinity` counts as "never" (the curve stays below 100%). */
  readonly valuesMs: readonly number[];
}

/** Options for {@linkcode cdfChart}. */
export interface CdfChartOptions {
  /** Title above the chart. */
  readonly title?: string;
  /** Left end of the (logarithmic) time axis. Default 10. */
  readonly xMinMs?: number;
  /** Right end of the time axis. Default 10,000. */
  readonly xMaxMs?: number;
}

/** Summary numbers of one series. */
export interface CdfSummary {
  /** Legend text. */
  readonly label: string;
  /** Number of samples. */
  readonly count: number;
  /** Median. */
  readonly medianMs: number;
  /** Mean of the finite samples. */
  readonly meanMs: number;
  /** 90th percentile. */
  readonly p90Ms: number;
  /** Largest sample. */
  readonly maxMs: number;
}

const COLORS = [
  "#1565c0",
  "#c62828",
  "#2e7d32",
  "#e08a00",
  "#6a1b9a",
  "#00838f",
  "#5d4037",
  "#ad1457",
  "#455a64",
  "#9e9d24",
];

/** Sorted copy and the summary of a sample. */
export function summarize(label: string, valuesMs: readonly number[]): CdfSummary {
  if (valuesMs.length === 0) throw new RangeError(`Series "${label}" has no samples`);
  const xs = [...valuesMs].sort((a, b) => a - b);
  const finite = xs.filter(Number.isFinite);
  const q = (p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
  return {
    label,
    count: xs.length,
    medianMs: q(0.5),
    meanMs: finite.reduce((s, x) => s + x, 0) / Math.max(1, finite.length),
    p90Ms: q(0.9),
    maxMs: xs[xs.length - 1],
  };
}

/** A CDF chart: SVG for Jupyter and a summary table as text. */
export class CdfChart {
  /** Title. */
  readonly title: string | undefined;
  /** The curves. */
  readonly series: readonly CdfSeries[];
  /** Axis range. */
  readonly xMinMs: number;
  /** Axis range. */
  readonly xMaxMs: number;

  /** @internal Built by {@linkcode cdfChart}. */
  constructor(series: readonly CdfSeries[], options: CdfChartOptions) {
    this.series = series;
    this.title = options.title;
    this.xMinMs = options.xMinMs ?? 10;
    this.xMaxMs = options.xMaxMs ?? 10_000;
    if (!(this.xMinMs > 0 && this.xMaxMs > this.xMinMs)) {
      throw new RangeError(`Bad axis range: ${this.xMinMs}–${this.xMaxMs} ms`);
    }
  }

  /** Median, mean, 90th percentile and maximum per series. */
  summaries(): CdfSummary[] {
    return this.series.map((s) => summarize(s.label, s.valuesMs));
  }

  /** A text table of the summaries. */
  toString(): string {
    const rows = [["series", "trials", "median", "mean", "p90", "max"]];
    for (const s of this.summaries()) {
      rows.push([
        s.label,
        String(s.count),
        fmt(s.medianMs),
        fmt(s.meanMs),
        fmt(s.p90Ms),
        fmt(s.maxMs),
      ]);
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    const lines = rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join("  ").trimEnd());
    if (this.title !== undefined) lines.unshift(`-- ${this.title} (times in ms) --`);
    return lines.join("\n");
  }

  /** The chart as a standalone SVG document. */
  toSvg(): string {
    const w = 640;
    const h = 340;
    const left = 56;
    const right = 150;
    const top = this.title === undefined ? 16 : 36;
    const bottom = 44;
    const pw = w - left - right;
    const ph = h - top - bottom;
    const lx0 = Math.log10(this.xMinMs);
    const lx1 = Math.log10(this.xMaxMs);
    const xOf = (ms: number) =>
      left +
      pw * (Math.log10(Math.min(Math.max(ms, this.xMinMs), this.xMaxMs)) - lx0) / (lx1 - lx0);
    const yOf = (frac: number) => top + ph * (1 - frac);
    const out: string[] = [];
    out.push(
      `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" ` +
        `font-family="sans-serif" font-size="11">`,
      `<rect width="${w}" height="${h}" fill="white"/>`,
    );
    if (this.title !== undefined) {
      out.push(
        `<text x="${left}" y="20" font-size="13" font-weight="bold">${esc(this.title)}</text>`,
      );
    }
    // Grid: decades and their 2x/5x marks on x, 0–100% on y.
    for (let d = Math.floor(lx0); d <= Math.ceil(lx1); d++) {
      for (const m of [1, 2, 5]) {
        const ms = m * 10 ** d;
        if (ms < this.xMinMs || ms > this.xMaxMs) continue;
        const x = r1(xOf(ms));
        out.push(
          `<line x1="${x}" y1="${top}" x2="${x}" y2="${top + ph}" stroke="${
            m === 1 ? "#ccc" : "#eee"
          }"/>`,
          `<text x="${x}" y="${top + ph + 14}" text-anchor="middle" fill="#555">${ms}</text>`,
        );
      }
    }
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const y = r1(yOf(f));
      out.push(
        `<line x1="${left}" y1="${y}" x2="${left + pw}" y2="${y}" stroke="#ddd"/>`,
        `<text x="${left - 6}" y="${Number(y) + 4}" text-anchor="end" fill="#555">${
          f * 100
        }%</text>`,
      );
    }
    out.push(
      `<text x="${left + pw / 2}" y="${
        h - 8
      }" text-anchor="middle">time without leader (ms)</text>`,
      `<text x="14" y="${top + ph / 2}" text-anchor="middle" transform="rotate(-90 14 ${
        top + ph / 2
      })">cumulative percent</text>`,
      `<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
    );
    this.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const xs = [...s.valuesMs].sort((a, b) => a - b);
      // A step function: at each distinct sample the share jumps to (count <= x) / n.
      let d = `M${r1(xOf(this.xMinMs))},${r1(yOf(0))}`;
      for (let k = 0; k < xs.length; k++) {
        if (!Number.isFinite(xs[k])) break;
        if (k + 1 < xs.length && xs[k + 1] === xs[k]) continue;
        const x = r1(xOf(xs[k]));
        d += ` H${x} V${r1(yOf((k + 1) / xs.length))}`;
      }
      d += ` H${r1(xOf(this.xMaxMs))}`;
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
      const ly = top + 8 + i * 16;
      out.push(
        `<line x1="${left + pw + 10}" y1="${ly}" x2="${left + pw + 30}" y2="${ly}" ` +
          `stroke="${color}" stroke-width="2"/>`,
        `<text x="${left + pw + 34}" y="${ly + 4}">${esc(s.label)}</text>`,
      );
    });
    out.push(`</svg>`);
    return out.join("\n");
  }

  /** Deno's Jupyter kernel calls this to draw the chart (the table as text fallback). */
  [JUPYTER_DISPLAY](): Record<string, string> {
    return { "image/svg+xml": this.toSvg(), "text/plain": this.toString() };
  }
}

/** Builds a CDF chart of `series`. */
export function cdfChart(series: readonly CdfSeries[], options: CdfChartOptions = {}): CdfChart {
  return new CdfChart(series, options);
}

function fmt(ms: number): string {
  return Number.isFinite(ms) ? String(Math.round(ms * 10) / 10) : "never";
}

function r1(x: number): string {
  return String(Math.round(x * 10) / 10);
}

function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
