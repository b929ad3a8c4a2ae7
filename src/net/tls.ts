/**
 * TLS for the client and peer ports: the certificate files a node is given (`--cert-file` and
 * friends), read again on SIGHUP, and a TLS listener that hands out connections with the same
 * read/write/close surface as a `Deno.TcpConn`, so the HTTP/1.1 server and the peer transport
 * run unchanged over it.
 *
 * Why node:tls on the server side: `Deno.listenTls` (Deno 2.9) can neither ask a client for a
 * certificate nor verify one (denoland/deno#26825), so it cannot do etcd's `--client-cert-auth`.
 * Deno's node:tls server can (requestCert, ca, rejectUnauthorized; rustls underneath), and its
 * `setSecureContext` swaps the certificate for new connections without closing the port. The
 * dialing side uses `Deno.connectTls` / `Deno.createHttpClient`, which present a client
 * certificate and trust a given CA.
 *
 * Loaded only when a port has TLS (dynamic imports in server.ts and transport.ts), so that a node
 * without TLS does not load node:tls.
 *
 * @module
 */

import tls from "node:tls";

/** A host and port to listen on or dial. */
export interface Address {
  readonly hostname: string;
  readonly port: number;
}

/** The files of one port's TLS (etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`). */
export interface TlsFiles {
  /** This node's certificate chain (PEM). */
  readonly certFile: string;
  /** Its private key (PEM). */
  readonly keyFile: string;
  /** CA certificates (PEM) that client certificates and other nodes' certificates must chain to. */
  readonly trustedCaFile?: string;
  /** Refuse a connection without a certificate signed by `trustedCaFile`. */
  readonly clientCertAuth: boolean;
  /** Flag names for messages: the prefix, "" for the client port or "peer-" for the peer port. */
  readonly flagPrefix?: string;
}

/** The PEM text of a {@linkcode TlsFiles}, read at one moment. */
export interface TlsMaterial {
  readonly files: TlsFiles;
  readonly cert: string;
  readonly key: string;
  /** Undefined without `trustedCaFile` (then the system's roots are trusted when dialing). */
  readonly ca?: string;
}

function readPem(path: string, flag: string, marker: RegExp, what: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new Error(`Cannot read ${flag} "${path}": ${(e as Error).message}`);
  }
  if (!marker.test(text)) throw new Error(`${flag} "${path}" holds no PEM ${what}`);
  return text;
}

/** Reads the files, failing with the flag and path of the first that is missing or not PEM. */
export function readTlsMaterial(files: TlsFiles): TlsMaterial {
  const p = files.flagPrefix ?? "";
  if (files.clientCertAuth && files.trustedCaFile === undefined) {
    throw new Error(`--${p}client-cert-auth needs --${p}trusted-ca-file`);
  }
  const cert = readPem(
    files.certFile,
    `--${p}cert-file`,
    /-----BEGIN CERTIFICATE-----/,
    "certificate",
  );
  const key = readPem(files.keyFile, `--${p}key-file`, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, "key");
  const ca = files.trustedCaFile === undefined ? undefined : readPem(
    files.trustedCaFile,
    `--${p}trusted-ca-file`,
    /-----BEGIN CERTIFICATE-----/,
    "certificate",
  );
  // node:tls checks that key and certificate belong together; fail at start, not on first use.
  try {
    tls.createSecureContext({ cert, key, ca });
  } catch (e) {
    throw new Error(
      `--${p}cert-file "${files.certFile}" and --${p}key-file "${files.keyFile}" are not a ` +
        `usable pair: ${(e as Error).message}`,
    );
  }
  return { files, cert, key, ca };
}

/**
 * What the server side of a TLS port is configured with; `alpn` lists the application protocols
 * offered (ALPN), e.g. `["h2"]` for the gRPC port (etcd's clients insist on it).
 */
function serverContext(
  m: TlsMaterial,
  alpn: readonly string[] | undefined,
): tls.SecureContextOptions & tls.TlsOptions {
  return {
    cert: m.cert,
    key: m.key,
    ca: m.ca,
    requestCert: m.files.clientCertAuth,
    rejectUnauthorized: m.files.clientCertAuth,
    ...(alpn === undefined ? {} : { ALPNProtocols: [...alpn] }),
  };
}

/** The part of a connection that the HTTP/1.1 server and the peer transport use. */
export interface ByteConn {
  readonly remoteAddr: Deno.NetAddr;
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
}

/** A listener handing out {@linkcode ByteConn}s (a `Deno.TcpListener` is one). */
export interface ConnListener {
  readonly addr: Deno.NetAddr;
  accept(): Promise<ByteConn>;
  close(): void;
}

/** Bytes read from a TLS socket but not yet taken; above it the socket pauses. */
const READ_BUFFER_BYTES_MAX = 256 * 1024;
/** Longest a TLS handshake may take before the connection is dropped. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/** A node:tls socket seen as a {@linkcode ByteConn}. */
class NodeTlsConn implements ByteConn {
  readonly remoteAddr: Deno.NetAddr;
  readonly #socket: tls.TLSSocket;
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "",
      port: socket.remotePort ?? 0,
    };
    const wake = () => {
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    };
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > READ_BUFFER_BYTES_MAX) socket.pause();
      wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (e: Error) => {
      this.#error = e;
      wake();
    });
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) throw new Deno.errors.ConnectionReset(this.#error.message);
      if (this.#ended) return null;
      await new Promise<void>((r) => this.#wake = r);
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const c = this.#chunks[0];
      const take = Math.min(c.length, p.length - n);
      p.set(c.subarray(0, take), n);
      n += take;
      if (take === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    this.#buffered -= n;
    if (this.#buffered <= READ_BUFFER_BYTES_MAX / 2 && this.#socket.isPaused()) {
      this.#socket.resume();
    }
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#socket.destroyed || this.#error !== undefined) {
      return Promise.reject(new Deno.errors.BrokenPipe("TLS connection is closed"));
    }
    // Resolves once node has handed the bytes on, so the caller may reuse `p` (as with Deno.Conn).
    return new Promise((resolve, reject) => {
      this.#socket.write(
        p,
        (e) => e ? reject(new Deno.errors.BrokenPipe(e.message)) : resolve(p.length),
      );
    });
  }

  closeWrite(): Promise<void> {
    this.#socket.end();
    return Promise.resolve();
  }

  close(): void {
    this.#socket.destroy();
  }

  setNoDelay(noDelay = true): void {
    this.#socket.setNoDelay(noDelay);
  }
}

/** A TLS port: a node:tls server whose certificate can be swapped for new connections. */
export class TlsConnListener implements ConnListener {
  readonly addr: Deno.NetAddr;
  readonly #server: tls.Server;
  readonly #ready: ByteConn[] = [];
  readonly #alpn: readonly string[] | undefined;
  #waiter: { resolve: (c: ByteConn) => void; reject: (e: Error) => void } | undefined;
  #closed = false;

  private constructor(server: tls.Server, addr: Deno.NetAddr, alpn: readonly string[] | undefined) {
    this.#server = server;
    this.addr = addr;
    this.#alpn = alpn;
  }

  /**
   * Listens on `address` with `material`; `onRefused` hears of each connection whose handshake
   * failed (no certificate, an unknown CA, an expired certificate, plain HTTP). With
   * `alpnProtocols`, those protocols are offered by ALPN (`["h2"]` for the gRPC port).
   */
  static async listen(
    address: Address,
    material: TlsMaterial,
    onRefused: (remote: string, reason: string) => void,
    options: { alpnProtocols?: readonly string[] } = {},
  ): Promise<TlsConnListener> {
    const server = tls.createServer({
      ...serverContext(material, options.alpnProtocols),
      handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS,
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (e: Error & { code?: string }) => {
        reject(e.code === "EADDRINUSE" ? new Deno.errors.AddrInUse(e.message) : e);
      });
      server.listen(address.port, address.hostname, () => resolve());
    });
    const a = server.address() as { address: string; port: number };
    const l = new TlsConnListener(
      server,
      { transport: "tcp", hostname: a.address, port: a.port },
      options.alpnProtocols,
    );
    server.on("error", () => {/* a listener error after start: accept() sees the close */});
    server.on("secureConnection", (socket: tls.TLSSocket) => {
      if (l.#closed) {
        socket.destroy();
        return;
      }
      const conn = new NodeTlsConn(socket);
      const w = l.#waiter;
      l.#waiter = undefined;
      if (w !== undefined) w.resolve(conn);
      else l.#ready.push(conn);
    });
    server.on("tlsClientError", (e: Error, socket: tls.TLSSocket) => {
      const remote = socket?.remoteAddress === undefined
        ? "unknown"
        : `${socket.remoteAddress}:${socket.remotePort}`;
      onRefused(remote, e.message);
      socket.destroy();
    });
    return l;
  }

  accept(): Promise<ByteConn> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Listener is closed"));
    const c = this.#ready.shift();
    if (c !== undefined) return Promise.resolve(c);
    return new Promise((resolve, reject) => this.#waiter = { resolve, reject });
  }

  /** New connections get `material`'s certificate, key and CA; open ones keep theirs. */
  reload(material: TlsMaterial): void {
    this.#server.setSecureContext(serverContext(material, this.#alpn));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const c of this.#ready.splice(0)) c.close();
    this.#waiter?.reject(new Deno.errors.BadResource("Listener is closed"));
    this.#waiter = undefined;
  }
}

/** Dials `address` over TLS, trusting `material`'s CA and presenting its certificate. */
export function connectTlsWith(address: Address, material: TlsMaterial): Promise<Deno.TlsConn> {
  return Deno.connectTls({
    hostname: address.hostname,
    port: address.port,
    caCerts: material.ca === undefined ? undefined : [material.ca],
    cert: material.cert,
    key: material.key,
  });
}

/** An HTTP client for https URLs of other nodes: trusts the CA, presents the certificate. */
export function httpClientWith(
  material: TlsMaterial,
  options: { pooled?: boolean } = {},
): Deno.HttpClient {
  return Deno.createHttpClient({
    ...(options.pooled === false ? { poolMaxIdlePerHost: 0 } : {}),
    caCerts: material.ca === undefined ? undefined : [material.ca],
    cert: material.cert,
    key: material.key,
  });
}
