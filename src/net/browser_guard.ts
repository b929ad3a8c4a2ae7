/**
 * Defences of the client port against requests a browser makes on a web page's behalf. A page on
 * another site may POST to `http://127.0.0.1:2379` (a "simple" request needs no preflight, and
 * curl-style bodies are valid JSON under any content type), and a page whose domain is rebound to
 * 127.0.0.1 reads the answers. So, as etcd's `--cors` and `--host-whitelist`:
 *
 * - a request with an `Origin` header is refused (403) unless that origin is allowed; etcdctl,
 *   curl and the nodes themselves send none;
 * - CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) get the allow headers only for
 *   an allowed origin, and a 403 otherwise;
 * - a node listening on a loopback address accepts only the Host names of loopback (refused with
 *   421, as etcd), so a rebound domain name is not served.
 *
 * @module
 */

import { HttpError } from "./etcd.ts";

/** Request headers a page may send cross-origin (the session headers of a write). */
const ALLOWED_HEADERS = "content-type, raftmeta-client-id, raftmeta-seq";
/** Response headers a page may read cross-origin. */
const EXPOSED_HEADERS = "raftmeta-leader-url, raftmeta-forwarded-by, raftmeta-duplicate";
/** How long a browser may cache a preflight's answer (seconds). */
const PREFLIGHT_MAX_AGE_S = 600;

/** Host names of loopback that a node listening on loopback accepts by default. */
const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"];

/** Options of {@linkcode BrowserGuard}. */
export interface BrowserGuardOptions {
  /** Origins allowed to make cross-origin requests (`"*"` for any). Default: none. */
  readonly corsOrigins?: readonly string[];
  /**
   * Host names accepted in the Host header (`"*"` for any; the port is not compared). Default:
   * on a loopback listen address, only localhost, 127.0.0.1 and ::1; otherwise any.
   */
  readonly hostWhitelist?: readonly string[];
  /** The host name the client port listens on (always accepted unless a wildcard address). */
  readonly listenHostname: string;
}

/** Whether `hostname` is a loopback address or name. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127(\.\d{1,3}){3}$/.test(hostname);
}

/** The host name of a Host header value (`"[::1]:2379"` → `"::1"`), lower case. */
export function hostnameOf(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? h : h.slice(1, end);
  }
  const colon = h.indexOf(":");
  return colon >= 0 && colon === h.lastIndexOf(":") ? h.slice(0, colon) : h;
}

/** Checks the Host and Origin of client requests and answers CORS preflights. */
export class BrowserGuard {
  /** Allowed origins; `"*"` allows any. */
  readonly corsOrigins: ReadonlySet<string>;
  /** Accepted Host names, or undefined for any. */
  readonly hostWhitelist: ReadonlySet<string> | undefined;

  /** Makes a guard; throws an error naming the value when an origin is not one. */
  constructor(options: BrowserGuardOptions) {
    for (const origin of options.corsOrigins ?? []) {
      let parsed: string | undefined;
      try {
        parsed = new URL(origin).origin;
      } catch { /* refused below */ }
      if (origin !== "*" && origin !== "null" && parsed !== origin) {
        throw new Error(
          `CORS origin must be scheme://host[:port] with no path, "*" or "null": ${
            JSON.stringify(origin)
          }`,
        );
      }
    }
    this.corsOrigins = new Set(options.corsOrigins ?? []);
    const listen = options.listenHostname.toLowerCase();
    const wildcard = listen === "0.0.0.0" || listen === "::" || listen === "";
    const names = options.hostWhitelist ??
      (isLoopback(listen) ? LOOPBACK_NAMES : undefined);
    if (names === undefined || names.includes("*")) {
      this.hostWhitelist = undefined;
    } else {
      const set = new Set(names.map(hostnameOf));
      if (!wildcard) set.add(hostnameOf(listen.includes(":") ? `[${listen}]` : listen));
      this.hostWhitelist = set;
    }
  }

  /** Whether `origin` may make cross-origin requests. */
  allows(origin: string): boolean {
    return this.corsOrigins.has("*") || this.corsOrigins.has(origin);
  }

  /**
   * Refuses a request whose Host is not accepted (421) or whose Origin is not allowed (403).
   * A request without a Host header (HTTP/1.0) comes from no browser and passes.
   */
  check(req: { readonly headers: { get(name: string): string | null } }): void {
    const host = req.headers.get("host");
    if (host !== null && this.hostWhitelist !== undefined) {
      const name = hostnameOf(host);
      if (!this.hostWhitelist.has(name)) {
        throw new HttpError(
          421,
          `Host ${
            JSON.stringify(host)
          } is not accepted by this node (a DNS rebinding defence); add it with --host-whitelist`,
          7,
        );
      }
    }
    const origin = req.headers.get("origin");
    if (origin !== null && !this.allows(origin)) {
      throw new HttpError(
        403,
        `Origin ${
          JSON.stringify(origin)
        } may not make requests to this node (cross-origin); allow it with --cors`,
        7,
      );
    }
  }

  /**
   * Answers an `OPTIONS` request to a path served with `methods`: a CORS preflight from an
   * allowed origin gets the allow headers; without an Origin, the `Allow` list. Call after
   * {@linkcode check}.
   */
  options(req: Request, methods: readonly string[]): Response {
    const headers = new Headers({ allow: [...methods, "OPTIONS"].join(", ") });
    const origin = req.headers.get("origin");
    if (origin !== null) {
      headers.set("access-control-allow-origin", origin);
      headers.set("vary", "Origin");
      headers.set("access-control-allow-methods", methods.join(", "));
      headers.set("access-control-allow-headers", ALLOWED_HEADERS);
      headers.set("access-control-max-age", String(PREFLIGHT_MAX_AGE_S));
    }
    return new Response(null, { status: 204, headers });
  }

  /** Lets the page of an allowed origin read `response` (mutable headers only). */
  decorate(req: Request, response: Response): void {
    const origin = req.headers.get("origin");
    if (origin === null || !this.allows(origin)) return;
    try {
      response.headers.set("access-control-allow-origin", origin);
      if (!/\borigin\b/i.test(response.headers.get("vary") ?? "")) {
        response.headers.append("vary", "Origin");
      }
      response.headers.set("access-control-expose-headers", EXPOSED_HEADERS);
    } catch { /* immutable headers */ }
  }

  /**
   * {@linkcode decorate} for an answer given as header fields (the fast path of src/net/http1.ts):
   * the fields to add for a request from `origin` (none unless the origin is allowed).
   */
  corsFields(origin: string | null): [string, string][] {
    if (origin === null || !this.allows(origin)) return [];
    return [
      ["access-control-allow-origin", origin],
      ["vary", "Origin"],
      ["access-control-expose-headers", EXPOSED_HEADERS],
    ];
  }
}
