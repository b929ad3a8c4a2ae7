/**
 * The accept step both client-port servers share (src/net/http1.ts, src/net/h2.ts).
 *
 * @module
 */

import type { ByteConn, ConnListener } from "./tls.ts";

/**
 * The next connection of `listener`, with TCP_NODELAY set, for a server's accept loop; undefined
 * once the server stops or the listener is closed. A failed accept (out of file descriptors, say)
 * goes to `onError` and is retried after 50 ms rather than spun on.
 */
export async function acceptNext(
  listener: ConnListener,
  stopping: () => boolean,
  onError?: (e: unknown) => void,
): Promise<ByteConn | undefined> {
  while (!stopping()) {
    let conn: ByteConn;
    try {
      conn = await listener.accept();
    } catch (e) {
      if (stopping() || e instanceof Deno.errors.BadResource) return undefined;
      onError?.(e);
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    try {
      conn.setNoDelay?.(true);
    } catch { /* closed already */ }
    return conn;
  }
  return undefined;
}
