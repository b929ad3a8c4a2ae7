/**
 * The client side of etcd's auth for raftmeta's HTTP face: a `fetch` that logs in as a user on
 * each node it talks to (simple tokens are valid only on the node that issued them) and sends the
 * token in the `Authorization` header, logging in again when a token expired. Give it to
 * `connect(endpoints, { fetch })`; the ctl's `--user` uses it.
 *
 * @module
 */

/** etcd's answer to a token the node does not know (expired, or issued by another node). */
const INVALID_TOKEN = "etcdserver: invalid auth token";

/** A `fetch` that authenticates as `user` with `password` on each node (origin) it calls. */
export function authenticatedFetch(
  user: string,
  password: string,
  base: typeof fetch = fetch,
): typeof fetch {
  const tokens = new Map<string, Promise<string>>();
  const tokenFor = (origin: string, signal?: AbortSignal | null): Promise<string> => {
    let t = tokens.get(origin);
    if (t === undefined) {
      t = login(base, origin, user, password, signal ?? undefined);
      tokens.set(origin, t);
      t.catch(() => tokens.delete(origin));
    }
    return t;
  };
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input);
    if (url.pathname === "/v3/auth/authenticate") return base(input, init);
    const send = async () => {
      let token: string;
      try {
        token = await tokenFor(url.origin, init?.signal);
      } catch (e) {
        // A refused login is the answer (a caller must not retry it into the login limit).
        if (!(e instanceof LoginRefused)) throw e;
        return Response.json(e.body, { status: e.status });
      }
      const headers = new Headers(init?.headers);
      headers.set("authorization", token);
      return base(input, { ...init, headers });
    };
    const res = await send();
    // A streamed body cannot be sent again.
    if (res.status !== 401 || init?.body instanceof ReadableStream) return res;
    const text = await res.clone().text();
    if (!text.includes(INVALID_TOKEN)) return res;
    // Expired (or the node restarted): log in again, once.
    tokens.delete(url.origin);
    return send();
  };
}

/** A login the node refused (4xx): its status and JSON answer. */
export class LoginRefused extends Error {
  /** HTTP status. */
  readonly status: number;
  /** The node's answer. */
  readonly body: Record<string, unknown>;
  /** Makes an error. */
  constructor(message: string, status: number, body: Record<string, unknown>) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/**
 * A token from the node at `origin`; throws {@linkcode LoginRefused} with etcd's message when
 * the node refuses (wrong password, too many failures), a plain error when it cannot answer.
 */
export async function login(
  base: typeof fetch,
  origin: string,
  user: string,
  password: string,
  signal?: AbortSignal,
): Promise<string> {
  const res = await base(`${origin}/v3/auth/authenticate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: user, password }),
    signal,
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok || typeof json.token !== "string") {
    const message = `Login as ${JSON.stringify(user)} at ${origin} failed: ${
      json.message ?? `HTTP ${res.status}`
    }`;
    if (res.status >= 400 && res.status < 500) {
      throw new LoginRefused(message, res.status, {
        error: json.message ?? message,
        code: json.code,
        message: json.message ?? message,
      });
    }
    throw new Error(message);
  }
  return json.token;
}
