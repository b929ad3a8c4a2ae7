/**
 * What a failed `fetch` says about its request. Deno 2.9 throws `TypeError("fetch failed")` and
 * puts the detail in the `cause` chain, e.g. "client error (Connect): tcp connect error:
 * Connection refused (os error 111)", so the top-level message alone never tells.
 *
 * Only relative imports: the client imports this and can be imported from a URL.
 *
 * @module
 */

/** The error and its `cause` chain, outermost first (at most 8 deep, cycles cut). */
export function errorChain(e: unknown): unknown[] {
  const out: unknown[] = [];
  for (let c = e; c !== undefined && c !== null && out.length < 8 && !out.includes(c);) {
    out.push(c);
    c = (c as { cause?: unknown }).cause;
  }
  return out;
}

// hyper's connect phase (TCP connect, DNS, TLS handshake) ends before any byte of the request.
const CONNECT_FAILED =
  /client error \(Connect\)|tcp connect error|connection refused|ECONNREFUSED|os error 111\b/i;

/**
 * Whether a failed `fetch` never reached its target: no connection was made (refused, no route,
 * DNS), so not a byte of the request was sent and it may safely go elsewhere. False for a reset
 * or closed connection, a timeout or an abort: the target may have handled the request.
 */
export function neverSent(e: unknown): boolean {
  const refusedClass = (globalThis as { Deno?: { errors?: { ConnectionRefused?: unknown } } })
    .Deno?.errors?.ConnectionRefused as (new () => Error) | undefined;
  return errorChain(e).some((c) => {
    if (refusedClass !== undefined && c instanceof refusedClass) return true;
    if ((c as { code?: unknown }).code === "ECONNREFUSED") return true;
    const message = (c as { message?: unknown }).message;
    return typeof message === "string" && CONNECT_FAILED.test(message);
  });
}

/** The message of a failed `fetch` with the detail of its causes, for an error text. */
export function fetchErrorText(e: unknown): string {
  const messages = errorChain(e).map((c) => String((c as { message?: unknown }).message ?? c));
  return messages.filter((m, i) => m !== "" && messages.indexOf(m) === i).join(": ");
}
