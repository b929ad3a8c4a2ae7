/**
 * `deno task web`: builds the live demo and serves it on 127.0.0.1 (default port 8080), with a
 * same-origin proxy (`/proxy?to=<url>`) through which the page's live view talks to a running
 * node without the node sending CORS headers. The proxy only forwards to loopback addresses.
 *
 * ```sh
 * deno run -A src/web/serve.ts [--port 8080] [--hostname 127.0.0.1]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { siteFiles } from "./build.ts";

/** Default port of the demo server. */
export const PORT_DEFAULT = 8080;
/** Largest request body the proxy forwards (keys and values are small). */
const PROXY_BODY_BYTES_MAX = 1 << 20;
/** How long the proxy waits for a node. */
const PROXY_TIMEOUT_MS = 5_000;

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
};

/** Whether `host` (a URL's hostname) is a loopback address. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "[::1]" || host === "::1" ||
    /^127(\.\d{1,3}){3}$/.test(host);
}

/** Answers one request: a site file, the proxy, or 404. */
export async function handleWeb(
  files: ReadonlyMap<string, string>,
  req: Request,
): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/proxy/ping") return Response.json({ proxy: true });
  if (url.pathname === "/proxy") return await proxy(req, url);
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response(`Method ${req.method} not allowed\n`, { status: 405 });
  }
  const name = url.pathname === "/" ? "index.html" : url.pathname.slice(1);
  const text = files.get(name);
  if (text === undefined) {
    return new Response(`No file ${JSON.stringify(url.pathname)}\n`, { status: 404 });
  }
  const ext = name.slice(name.lastIndexOf(".") + 1);
  return new Response(req.method === "HEAD" ? null : text, {
    headers: {
      "content-type": TYPES[ext] ?? "application/octet-stream",
      "cache-control": "no-cache",
    },
  });
}

async function proxy(req: Request, url: URL): Promise<Response> {
  const to = url.searchParams.get("to");
  let target: URL;
  try {
    target = new URL(to ?? "");
  } catch {
    return Response.json({ error: `Query parameter "to" must be a URL: ${JSON.stringify(to)}` }, {
      status: 400,
    });
  }
  if (target.protocol !== "http:" || !isLoopback(target.hostname)) {
    return Response.json({
      error: `The proxy forwards only to http:// loopback addresses: ${JSON.stringify(to)}`,
    }, { status: 403 });
  }
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
  if (body !== undefined && body.byteLength > PROXY_BODY_BYTES_MAX) {
    return Response.json({ error: `Body larger than ${PROXY_BODY_BYTES_MAX} bytes` }, {
      status: 413,
    });
  }
  try {
    const res = await fetch(target, {
      method: req.method,
      body,
      headers: { "content-type": req.headers.get("content-type") ?? "application/octet-stream" },
      redirect: "manual",
      signal: AbortSignal.timeout(PROXY_TIMEOUT_MS),
    });
    return new Response(await res.arrayBuffer(), {
      status: res.status,
      headers: { "content-type": res.headers.get("content-type") ?? "text/plain" },
    });
  } catch (e) {
    return Response.json({ error: `No answer from ${target.origin}: ${(e as Error).message}` }, {
      status: 502,
    });
  }
}

/** Builds the site and serves it; resolves to the server once it listens. */
export async function serveWeb(
  options: { port?: number; hostname?: string; onListen?: (url: string) => void } = {},
): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const files = await siteFiles();
  const hostname = options.hostname ?? "127.0.0.1";
  return Deno.serve({
    port: options.port ?? PORT_DEFAULT,
    hostname,
    onListen: (addr) => {
      const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
      (options.onListen ?? ((u) => console.log(`raftmeta web demo on ${u}`)))(
        `http://${host}:${addr.port}/`,
      );
    },
  }, (req) => handleWeb(files, req));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string", short: "p", default: String(PORT_DEFAULT) },
      hostname: { type: "string", default: "127.0.0.1" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "Usage: deno task web [--port 8080 (0 for any free port)] [--hostname 127.0.0.1]",
    );
    Deno.exit(0);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be 0 to 65535: ${JSON.stringify(values.port)}`);
    Deno.exit(2);
  }
  await serveWeb({ port, hostname: values.hostname });
}
