/**
 * The live view's talk with a running node (`deno task serve` / `deno task cluster`): its status
 * table from `GET /v1/status`, and keys through `/v1/kv/<key>`. No DOM here; `fetch` is injected so
 * the page can go directly (the node must then send CORS headers) or through the demo server's
 * same-origin proxy (`/proxy?to=<url>`), and tests can run it in Deno.
 *
 * @module
 */

import { NODE_TABLE_COLUMNS } from "../observe/table.ts";

/** The default node address: `deno task serve`'s client port. */
export const DEFAULT_NODE_URL = "http://127.0.0.1:2379";

/** How long one request to a node may take. */
export const LIVE_TIMEOUT_MS = 3_000;

/** Columns of the live node table, in order (the node table's, plus what the server adds). */
export const LIVE_COLUMNS: readonly string[] = [
  ...NODE_TABLE_COLUMNS.filter((c) => c !== "status"),
  "revision",
  "keys",
  "status",
  "clientUrl",
];

/** `fetch`, or a stand-in with its shape. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Talks to one node, directly or through a proxy. */
export class LiveClient {
  readonly #base: string;
  readonly #fetch: FetchLike;
  readonly #proxy: string | undefined;

  /**
   * `base` is the node's client URL, e.g. `http://127.0.0.1:2379`. With `proxy` (the demo server's
   * `/proxy` URL), requests go there with the target in `?to=`.
   */
  constructor(base: string, options: { fetch?: FetchLike; proxy?: string } = {}) {
    const u = new URL(base);
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new Error(`Node address must start with http:// or https://: ${JSON.stringify(base)}`);
    }
    this.#base = u.origin;
    this.#fetch = options.fetch ?? ((i, init) => fetch(i, init));
    this.#proxy = options.proxy;
  }

  /** The node's origin, e.g. `http://127.0.0.1:2379`. */
  get base(): string {
    return this.#base;
  }

  async #request(path: string, init: RequestInit = {}): Promise<Response> {
    const target = this.#base + path;
    const url = this.#proxy === undefined
      ? target
      : `${this.#proxy}?to=${encodeURIComponent(target)}`;
    return await this.#fetch(url, { ...init, signal: AbortSignal.timeout(LIVE_TIMEOUT_MS) });
  }

  /** `GET /v1/status`: the cluster's node table as the node sees it. */
  async status(): Promise<LiveStatus> {
    const res = await this.#request("/v1/status");
    const body = await res.json();
    if (!res.ok) throw new Error(`GET /v1/status: ${res.status} ${errorText(body)}`);
    return body as LiveStatus;
  }

  /** `PUT /v1/kv/<key>`: returns the response body as text (JSON with the new revision). */
  async put(key: string, value: string): Promise<string> {
    return await this.#kv("PUT", key, value);
  }

  /** `GET /v1/kv/<key>`: the key's JSON, or the 404 error. */
  async get(key: string): Promise<string> {
    return await this.#kv("GET", key);
  }

  /** `DELETE /v1/kv/<key>`. */
  async delete(key: string): Promise<string> {
    return await this.#kv("DELETE", key);
  }

  async #kv(method: string, key: string, body?: string): Promise<string> {
    if (key === "") throw new Error("Key must not be empty");
    const res = await this.#request(`/v1/kv/${encodeURIComponent(key)}`, { method, body });
    return `${method} ${key}: ${res.status} ${await res.text()}`;
  }
}

/** What `GET /v1/status` returns (the fields the page uses). */
export interface LiveStatus {
  /** The cluster id. */
  readonly clusterId?: string;
  /** The node that answered. */
  readonly answeredBy?: string;
  /** The leader it knows. */
  readonly leader?: string | null;
  /** One row per member. */
  readonly rows: readonly Record<string, unknown>[];
  /** The leader's view of each follower. */
  readonly progress?: readonly Record<string, unknown>[];
}

function errorText(body: unknown): string {
  const b = body as { error?: unknown; message?: unknown } | null;
  return String(b?.message ?? b?.error ?? JSON.stringify(body));
}

const ROLE_CLASS: Record<string, string> = {
  Leader: "leader",
  Candidate: "candidate",
  PreCandidate: "candidate",
  Follower: "follower",
};

/** The status as an HTML table (one row per member), plus the leader's progress lines. */
export function liveTableHtml(status: LiveStatus): string {
  const head = LIVE_COLUMNS.map((c) => `<th scope="col">${esc(c)}</th>`).join("");
  const body = status.rows.map((r) => {
    const cells = LIVE_COLUMNS.map((c) => {
      const v = c === "node" ? r.id : r[c];
      return `<td>${esc(v === undefined || v === null ? "-" : String(v))}</td>`;
    }).join("");
    const up = r.status === "up";
    const cls = up ? ROLE_CLASS[String(r.role)] ?? "" : "down";
    return `<tr class="${cls}">${cells}</tr>`;
  }).join("");
  const progress = (status.progress ?? []).map((p) =>
    `<li>${esc(String(p.leader))} → ${esc(String(p.follower))}: nextIndex=${
      esc(String(p.nextIndex))
    } matchIndex=${esc(String(p.matchIndex))} (${esc(String(p.state))})</li>`
  ).join("");
  const caption = `cluster ${esc(String(status.clusterId ?? "?"))}, answered by ${
    esc(String(status.answeredBy ?? "?"))
  }, leader ${esc(String(status.leader ?? "none"))}`;
  return `<table class="node-table"><caption>${caption}</caption><thead><tr>${head}</tr></thead>` +
    `<tbody>${body}</tbody></table>${
      progress === "" ? "" : `<ul class="progress">${progress}</ul>`
    }`;
}

/** Escapes text for HTML. */
export function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}
