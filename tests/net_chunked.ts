/**
 * A raw HTTP/1.1 client that reads the chunked transfer encoding itself and hands back each chunk
 * as it came on the wire, so a test can see the framing a fetch() would hide: etcd's gateway
 * writes one JSON message per chunk, and clients that parse chunk by chunk depend on it.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A streamed HTTP response read chunk by chunk. */
export class ChunkedResponse {
  /** Status code. */
  readonly status: number;
  /** Header names in lower case. */
  readonly headers: Map<string, string>;
  readonly #conn: Deno.TcpConn;
  #buf: Uint8Array;

  private constructor(
    conn: Deno.TcpConn,
    status: number,
    headers: Map<string, string>,
    rest: Uint8Array,
  ) {
    this.#conn = conn;
    this.status = status;
    this.headers = headers;
    this.#buf = rest;
  }

  /**
   * Sends `POST path` to `url` with `body` (a string sent with a content-length), or, when `body`
   * is an array, as a chunked request body of those pieces (the connection stays open for more
   * with {@linkcode ChunkedResponse.send}).
   */
  static async post(url: string, path: string, body: string | string[]): Promise<ChunkedResponse> {
    const u = new URL(url);
    const conn = await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
    let head = `POST ${path} HTTP/1.1\r\nHost: ${u.host}\r\ncontent-type: application/json\r\n`;
    if (typeof body === "string") {
      head += `content-length: ${encoder.encode(body).length}\r\n\r\n${body}`;
      await writeAll(conn, encoder.encode(head));
    } else {
      head += "transfer-encoding: chunked\r\n\r\n";
      await writeAll(conn, encoder.encode(head));
      for (const piece of body) await writeAll(conn, chunkOf(piece));
    }
    let buf: Uint8Array = new Uint8Array(0);
    let end = -1;
    while ((end = indexOf(buf, "\r\n\r\n")) < 0) {
      const more = await readSome(conn);
      if (more === null) throw new Error("Connection closed before the response head");
      buf = concat(buf, more);
    }
    const lines = decoder.decode(buf.subarray(0, end)).split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const i = line.indexOf(":");
      headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    return new ChunkedResponse(conn, status, headers, buf.subarray(end + 4));
  }

  /** Sends one more piece of a chunked request body. */
  async send(piece: string): Promise<void> {
    await writeAll(this.#conn, chunkOf(piece));
  }

  /** The whole body of a response sent with a content-length (not chunked). */
  async whole(): Promise<string> {
    const length = Number(this.headers.get("content-length"));
    while (this.#buf.length < length) {
      const more = await readSome(this.#conn);
      if (more === null) break;
      this.#buf = concat(this.#buf, more);
    }
    return decoder.decode(this.#buf.subarray(0, length));
  }

  /** The next chunk's payload as text, or null after the last chunk (or a closed connection). */
  async chunk(): Promise<string | null> {
    if (this.headers.get("transfer-encoding") !== "chunked") {
      throw new Error(`The response is not chunked: ${JSON.stringify([...this.headers])}`);
    }
    let eol: number;
    while ((eol = indexOf(this.#buf, "\r\n")) < 0) {
      if (!await this.#fill()) return null;
    }
    const size = parseInt(decoder.decode(this.#buf.subarray(0, eol)), 16);
    if (!Number.isInteger(size)) throw new Error("Malformed chunk size");
    if (size === 0) return null;
    while (this.#buf.length < eol + 2 + size + 2) {
      if (!await this.#fill()) return null;
    }
    const payload = decoder.decode(this.#buf.subarray(eol + 2, eol + 2 + size));
    this.#buf = this.#buf.subarray(eol + 2 + size + 2);
    return payload;
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  async #fill(): Promise<boolean> {
    const more = await readSome(this.#conn);
    if (more === null) return false;
    this.#buf = concat(this.#buf, more);
    return true;
  }
}

function chunkOf(piece: string): Uint8Array {
  const bytes = encoder.encode(piece);
  return concat(
    concat(encoder.encode(`${bytes.length.toString(16)}\r\n`), bytes),
    encoder.encode("\r\n"),
  );
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let o = 0;
  while (o < bytes.length) o += await conn.write(bytes.subarray(o));
}

async function readSome(conn: Deno.Conn): Promise<Uint8Array | null> {
  const b = new Uint8Array(64 * 1024);
  const n = await conn.read(b);
  return n === null ? null : b.subarray(0, n);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function indexOf(buf: Uint8Array, text: string): number {
  const needle = encoder.encode(text);
  outer: for (let i = 0; i + needle.length <= buf.length; i++) {
    for (let j = 0; j < needle.length; j++) if (buf[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
