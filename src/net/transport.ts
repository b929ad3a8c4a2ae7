/**
 * The peer transport: Raft messages between node processes over TCP. Each node dials every peer
 * once and keeps that connection for all it sends to the peer (so a pair of nodes shares two
 * connections, one per direction, as etcd's streams do). Messages queue per peer, bounded in
 * count and bytes (the oldest are dropped when a peer is slow: Raft tolerates loss), and go out
 * in batches, many messages per frame, without waiting for answers (pipelining). A lost connection
 * is redialed with exponential backoff and jitter.
 *
 * Handshake (both sides prove the cluster secret with HMAC-SHA-256, the secret never travels):
 * acceptor → `challenge {nonce}`; dialer → `hello {clusterId, from, to, nonce, mac}`;
 * acceptor → `welcome {term, commitIndex, seenTerm, mac}` or `refused {error}`. Each MAC covers
 * both nonces (fresh random per connection, one from each side, so no proof can be replayed), both
 * node ids, the cluster id and a label (so a hello is never taken for a welcome), and the welcome's
 * MAC also its fields. Until the dialer has proved the secret, a connection may make this node
 * hold at most one handshake frame ({@linkcode HANDSHAKE_FRAME_BYTES_MAX}), for at most
 * `handshakeTimeoutMs`, and at most `unauthenticatedConnectionsMax` such connections are open.
 * Peers' client URLs are not part of the handshake: they come from configuration.
 * After it, a node rebuilding itself may send `logRequest` instead of messages on a connection of
 * its own; the acceptor then streams its log (src/net/log_transfer.ts) and closes.
 *
 * @module
 */

import { ByteWriter } from "../kv/bytes.ts";
import type { Message, NodeId } from "../raft/types.ts";
import type { ByteConn, ConnListener, TlsConnListener, TlsMaterial } from "./tls.ts";
import {
  decodeJsonFrame,
  decodeMessages,
  encodeJsonFrame,
  encodeMessagesFrame,
  FRAME_BYTES_MAX,
  FrameError,
  FrameKind,
  FrameReader,
  HANDSHAKE_FRAME_BYTES_MAX,
} from "./codec.ts";

/** A host and port. */
export interface Address {
  /** Host name or IP. */
  readonly hostname: string;
  /** TCP port. */
  readonly port: number;
}

/** What a peer told us in its handshake. */
export interface PeerInfo {
  /** The peer's term when it answered. */
  term: number;
  /** The peer's commitIndex when it answered. */
  commitIndex: number;
  /** The highest term in which the peer has seen a message from us (0: never). */
  seenTerm: number;
  /** Whether our outgoing connection to it is up. */
  connected: boolean;
  /** When the last handshake with it succeeded (ms since epoch), 0 if never. */
  handshakeAtMs: number;
}

/** Counters of the transport. */
export interface TransportStats {
  /** Messages written to sockets. */
  messagesSent: number;
  /** Messages received and handed to the node. */
  messagesReceived: number;
  /** Messages dropped because a peer's queue was full or the peer unknown. */
  messagesDropped: number;
  /** Frames written. */
  framesSent: number;
  /** Connections closed because of a malformed frame or a failed handshake. */
  connectionsRefused: number;
  /** Incoming connections closed at once: `unauthenticatedConnectionsMax` were in handshake. */
  connectionsOverLimit: number;
  /** Outgoing connections established. */
  connectsOk: number;
}

/** How to build a {@linkcode PeerTransport}. */
export interface TransportOptions {
  /** This node. */
  readonly nodeId: NodeId;
  /** The cluster every peer must belong to. */
  readonly clusterId: string;
  /** The cluster secret every peer must prove. */
  readonly secret: string;
  /** Where to listen for peers. */
  readonly listen: Address;
  /** Every other voter and where it listens for peers. */
  readonly peers: ReadonlyMap<NodeId, Address>;
  /** Receives messages from a peer, already validated. */
  onMessages(from: NodeId, messages: Message[]): void;
  /** This node's term and commitIndex, told to dialers in the welcome. */
  localState(): { term: number; commitIndex: number };
  /** Highest term in which this node has seen a message from `peer`. */
  seenTermOf(peer: NodeId): number;
  /** Structured log. */
  log(event: string, fields: Record<string, unknown>): void;
  /**
   * The frames of this node's log for `peer`, which is rebuilding itself (`--join`); throws when
   * this node cannot send it (not the leader). Without it, log requests are refused.
   */
  logTransfer?(peer: NodeId): Iterable<Uint8Array>;
  /** Most messages queued per peer. Default 4096. */
  readonly queueMessagesMax?: number;
  /** Most bytes of entries queued per peer. Default 64 MiB. */
  readonly queueBytesMax?: number;
  /** First redial delay. Default 50. */
  readonly backoffMinMs?: number;
  /** Longest redial delay. Default 1000. */
  readonly backoffMaxMs?: number;
  /**
   * Peer TLS (`--peer-cert-file` and friends): listen and dial over TLS with these. The secret
   * handshake still runs inside TLS. Swap with {@linkcode PeerTransport.reloadTls}.
   */
  readonly tls?: TlsMaterial;
  /** Time allowed for a handshake (a stranger holds a connection at most this long). Default 3000. */
  readonly handshakeTimeoutMs?: number;
  /** Most incoming connections that have not completed their handshake yet. Default 64. */
  readonly unauthenticatedConnectionsMax?: number;
  /**
   * Whether `node` was removed from the cluster: its handshake is refused saying so, so that it
   * stops (see src/net/members.ts). Default: no node was.
   */
  isRemoved?(node: NodeId): boolean;
  /** A peer refused this node because it was removed from the cluster. */
  onRemoved?(by: NodeId, reason: string): void;
}

/** The text a node's handshake is refused with once it was removed from the cluster. */
export const REMOVED_REFUSAL = "was removed from the cluster";

const encoder = new TextEncoder();
const MESSAGES_PER_FRAME_MAX = 1024;
const FRAME_TARGET_BYTES = 4 * 1024 * 1024;
/** A peer connection's frame buffer starts this size… */
const WRITER_INITIAL_BYTES = 64 * 1024;
/** …and is dropped after a frame that grew it past this (a snapshot chunk, a long catch-up). */
const WRITER_KEPT_BYTES_MAX = 1024 * 1024;
/** Bytes read from a socket at once once the peer has authenticated. */
const READ_BYTES = 64 * 1024;
const NONCE_PATTERN = /^[0-9a-f]{32}$/;

function messageBytes(m: Message): number {
  let n = 64;
  if (m.type === "AppendEntries") { for (const e of m.entries) n += 24 + e.command.length; }
  if (m.type === "InstallSnapshot") n += m.data.length;
  return n;
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function randomNonce(): string {
  return hex(crypto.getRandomValues(new Uint8Array(16)).buffer);
}

function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Reads frames from a connection; `next` resolves with a payload or throws when it closes. It
 * starts limited to handshake frames; {@linkcode FrameStream.authenticated} lifts the limit.
 */
class FrameStream {
  readonly #conn: ByteConn;
  readonly #reader = new FrameReader(HANDSHAKE_FRAME_BYTES_MAX);
  #buf = new Uint8Array(HANDSHAKE_FRAME_BYTES_MAX + 4);

  constructor(conn: ByteConn) {
    this.#conn = conn;
  }

  /** The peer proved the secret: accept full-size frames from now on. */
  authenticated(): void {
    this.#reader.frameBytesMax = FRAME_BYTES_MAX;
    this.#buf = new Uint8Array(READ_BYTES);
  }

  async next(): Promise<Uint8Array> {
    while (true) {
      const frame = this.#reader.next();
      if (frame !== undefined) return frame;
      const n = await this.#conn.read(this.#buf);
      if (n === null) throw new Error("connection closed");
      // A copy of what arrived: a trickle of small reads must not pin a whole read buffer each.
      this.#reader.push(this.#buf.slice(0, n));
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function writeAll(conn: ByteConn, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await conn.write(bytes.subarray(done));
}

/** One outgoing link: the queue for a peer and the loop that dials it and drains the queue. */
class PeerLink {
  readonly id: NodeId;
  readonly address: Address;
  /** Set when the peer left the configuration: the dial loop ends. */
  dropped = false;
  queue: Message[] = [];
  queueBytes = 0;
  #wake: (() => void) | undefined;
  conn: ByteConn | undefined;

  constructor(id: NodeId, address: Address) {
    this.id = id;
    this.address = address;
  }

  notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  waitForWork(): Promise<void> {
    return new Promise((resolve) => this.#wake = resolve);
  }
}

/** Carries Raft messages between this node and its peers. */
export class PeerTransport {
  readonly #o: TransportOptions;
  readonly #links = new Map<NodeId, PeerLink>();
  readonly #inbound = new Set<ByteConn>();
  /** Authenticated incoming connections by peer, closed when the peer is removed. */
  readonly #inboundOf = new Map<NodeId, Set<ByteConn>>();
  #started = false;
  readonly #queueMessagesMax: number;
  readonly #queueBytesMax: number;
  readonly #handshakeTimeoutMs: number;
  readonly #unauthenticatedConnectionsMax: number;
  #unauthenticated = 0;
  #listener: ConnListener | undefined;
  #tlsListener: TlsConnListener | undefined;
  #tls: TlsMaterial | undefined;
  #key: Promise<CryptoKey>;
  #closed = false;
  /** What each peer told us in its handshake. */
  readonly peerInfo = new Map<NodeId, PeerInfo>();
  /** Counters. */
  readonly stats: TransportStats = {
    messagesSent: 0,
    messagesReceived: 0,
    messagesDropped: 0,
    framesSent: 0,
    connectionsRefused: 0,
    connectionsOverLimit: 0,
    connectsOk: 0,
  };

  /** A transport; call {@linkcode PeerTransport.start} to listen and dial. */
  constructor(options: TransportOptions) {
    this.#o = options;
    this.#tls = options.tls;
    this.#queueMessagesMax = options.queueMessagesMax ?? 4096;
    this.#queueBytesMax = options.queueBytesMax ?? 64 * 1024 * 1024;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? 3000;
    this.#unauthenticatedConnectionsMax = options.unauthenticatedConnectionsMax ?? 64;
    this.#key = crypto.subtle.importKey(
      "raw",
      encoder.encode(`raftmeta-cluster-secret\n${options.secret}`),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    for (const [id, address] of options.peers) {
      this.#links.set(id, new PeerLink(id, address));
      this.peerInfo.set(id, {
        term: 0,
        commitIndex: 0,
        seenTerm: 0,
        connected: false,
        handshakeAtMs: 0,
      });
    }
  }

  /** The address the peer listener is bound to (after start). */
  get listenAddress(): Address | undefined {
    const a = this.#listener?.addr as Deno.NetAddr | undefined;
    return a === undefined ? undefined : { hostname: a.hostname, port: a.port };
  }

  /**
   * Starts listening for peers and dialing them. Without TLS the port is bound before this
   * returns; with TLS once the promise settles.
   */
  async start(): Promise<void> {
    if (this.#tls === undefined) {
      this.#listener = Deno.listen({
        hostname: this.#o.listen.hostname,
        port: this.#o.listen.port,
        transport: "tcp",
      });
    } else {
      const { TlsConnListener } = await import("./tls.ts");
      const tls = await TlsConnListener.listen(this.#o.listen, this.#tls, (remote, reason) => {
        this.stats.connectionsRefused++;
        this.#o.log("peer-tls-refused", { remote, reason });
      });
      this.#tlsListener = tls;
      this.#listener = tls;
    }
    this.#acceptLoop(this.#listener);
    this.#started = true;
    for (const link of this.#links.values()) this.#dialLoop(link);
  }

  /** The peers this transport talks to, with their addresses. */
  peers(): Map<NodeId, Address> {
    return new Map([...this.#links].map(([id, link]) => [id, link.address]));
  }

  /**
   * Starts talking to `id` at `address` (a member added or updated); a link to another address
   * is replaced. Its queued messages are kept.
   */
  addPeer(id: NodeId, address: Address): void {
    if (id === this.#o.nodeId || this.#closed) return;
    const old = this.#links.get(id);
    if (
      old !== undefined && old.address.hostname === address.hostname &&
      old.address.port === address.port
    ) return;
    if (old !== undefined) this.#dropLink(old);
    const link = new PeerLink(id, address);
    if (old !== undefined) {
      link.queue = old.queue;
      link.queueBytes = old.queueBytes;
    }
    this.#links.set(id, link);
    if (!this.peerInfo.has(id)) {
      this.peerInfo.set(id, {
        term: 0,
        commitIndex: 0,
        seenTerm: 0,
        connected: false,
        handshakeAtMs: 0,
      });
    }
    if (this.#started) this.#dialLoop(link);
  }

  /** Stops talking to `id` (a member removed): closes its connections both ways. */
  removePeer(id: NodeId): void {
    const link = this.#links.get(id);
    if (link !== undefined) {
      this.#links.delete(id);
      this.#dropLink(link);
    }
    this.peerInfo.delete(id);
    for (const c of this.#inboundOf.get(id) ?? []) closeQuietly(c);
  }

  #dropLink(link: PeerLink): void {
    link.dropped = true;
    if (link.conn !== undefined) closeQuietly(link.conn);
    link.notify();
  }

  /** New peer connections, both ways, use `material` (open ones keep theirs). */
  reloadTls(material: TlsMaterial): void {
    this.#tls = material;
    this.#tlsListener?.reload(material);
  }

  /** Opens a connection to `address`: TCP, or TLS with the handshake done. */
  async #connect(address: Address): Promise<ByteConn> {
    if (this.#tls === undefined) {
      return await Deno.connect({ hostname: address.hostname, port: address.port });
    }
    const { connectTlsWith } = await import("./tls.ts");
    const conn = await connectTlsWith(address, this.#tls);
    try {
      await conn.handshake();
    } catch (e) {
      closeQuietly(conn);
      throw new Error(
        `TLS handshake with ${address.hostname}:${address.port}: ${(e as Error).message}`,
      );
    }
    return conn;
  }

  /** Queues `m` for its receiver; drops the oldest queued message when the queue is full. */
  send(m: Message): void {
    const link = this.#links.get(m.to);
    if (link === undefined || this.#closed) {
      this.stats.messagesDropped++;
      return;
    }
    link.queue.push(m);
    link.queueBytes += messageBytes(m);
    while (
      link.queue.length > this.#queueMessagesMax ||
      (link.queueBytes > this.#queueBytesMax && link.queue.length > 1)
    ) {
      const dropped = link.queue.shift()!;
      link.queueBytes -= messageBytes(dropped);
      this.stats.messagesDropped++;
    }
    link.notify();
  }

  /** Number of messages waiting for `peer`. */
  queued(peer: NodeId): number {
    return this.#links.get(peer)?.queue.length ?? 0;
  }

  /** Stops listening, closes every connection and ends the dial loops. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener?.close();
    } catch { /* already closed */ }
    for (const c of this.#inbound) closeQuietly(c);
    for (const link of this.#links.values()) {
      if (link.conn !== undefined) closeQuietly(link.conn);
      link.notify();
    }
  }

  async #mac(text: string): Promise<string> {
    return hex(await crypto.subtle.sign("HMAC", await this.#key, encoder.encode(text)));
  }

  // ---- Outgoing ----------------------------------------------------------------------------------

  async #dialLoop(link: PeerLink): Promise<void> {
    const min = this.#o.backoffMinMs ?? 50;
    const max = this.#o.backoffMaxMs ?? 1000;
    let backoffMs = min;
    let lastError = "";
    while (!this.#closed && !link.dropped) {
      let conn: ByteConn | undefined;
      try {
        conn = await withTimeout(
          this.#connect(link.address),
          this.#handshakeTimeoutMs,
          "connect",
        );
        conn.setNoDelay?.(true);
        const frames = await withTimeout(
          this.#dialHandshake(conn, link.id),
          this.#handshakeTimeoutMs,
          "handshake",
        );
        watchForClose(conn, frames);
        link.conn = conn;
        this.stats.connectsOk++;
        const connected = this.peerInfo.get(link.id);
        if (connected !== undefined) connected.connected = true;
        this.#o.log("peer-connected", { peer: link.id });
        backoffMs = min;
        lastError = "";
        await this.#writeLoop(link, conn);
      } catch (e) {
        const why = (e as Error).message;
        if (why !== lastError && !this.#closed) {
          this.#o.log("peer-unreachable", { peer: link.id, error: why });
          lastError = why;
        }
      } finally {
        if (conn !== undefined) closeQuietly(conn);
        link.conn = undefined;
        const info = this.peerInfo.get(link.id);
        if (info !== undefined && info.connected) {
          info.connected = false;
          this.#o.log("peer-disconnected", { peer: link.id });
        }
      }
      if (this.#closed || link.dropped) return;
      // Messages queued while the link was down are mostly stale heartbeats: keep the newest few.
      if (link.queue.length > 256) {
        const drop = link.queue.splice(0, link.queue.length - 256);
        for (const m of drop) link.queueBytes -= messageBytes(m);
        this.stats.messagesDropped += drop.length;
      }
      await new Promise((r) => setTimeout(r, backoffMs * (0.5 + Math.random() / 2)));
      backoffMs = Math.min(max, backoffMs * 2);
    }
  }

  async #dialHandshake(conn: ByteConn, peer: NodeId): Promise<FrameStream> {
    const frames = new FrameStream(conn);
    const challenge = decodeJsonFrame(await frames.next(), [FrameKind.challenge]).body;
    if (typeof challenge.nonce !== "string" || !NONCE_PATTERN.test(challenge.nonce)) {
      throw new FrameError("Challenge has no nonce of 32 hex digits");
    }
    const { clusterId, nodeId } = this.#o;
    const nonces = `${challenge.nonce}\n${randomNonce()}`;
    const myNonce = nonces.slice(33);
    const mac = await this.#mac(`hello\n${clusterId}\n${nodeId}\n${peer}\n${nonces}`);
    await writeAll(
      conn,
      encodeJsonFrame(FrameKind.hello, { clusterId, from: nodeId, to: peer, nonce: myNonce, mac }),
    );
    const answer = decodeJsonFrame(await frames.next(), [FrameKind.welcome, FrameKind.refused]);
    if (answer.kind === FrameKind.refused) {
      const why = String(answer.body.error);
      const proof = await this.#mac(`removed\n${clusterId}\n${peer}\n${nodeId}\n${nonces}`);
      if (
        why.includes(REMOVED_REFUSAL) && typeof answer.body.mac === "string" &&
        constantTimeEqual(answer.body.mac, proof)
      ) this.#o.onRemoved?.(peer, why);
      throw new Error(`peer "${peer}" refused us: ${why}`);
    }
    const w = answer.body;
    if (!isCount(w.term) || !isCount(w.commitIndex) || !isCount(w.seenTerm)) {
      throw new FrameError("Welcome has malformed fields");
    }
    const expected = await this.#mac(
      `welcome\n${clusterId}\n${peer}\n${nodeId}\n${nonces}\n${w.term}\n${w.commitIndex}\n${w.seenTerm}`,
    );
    if (typeof w.mac !== "string" || !constantTimeEqual(w.mac, expected)) {
      throw new Error(`peer "${peer}" did not prove the cluster secret`);
    }
    const info = this.peerInfo.get(peer);
    if (info === undefined) throw new Error(`peer "${peer}" is no longer a member`);
    info.term = w.term;
    info.commitIndex = w.commitIndex;
    info.seenTerm = w.seenTerm;
    info.handshakeAtMs = Date.now();
    return frames;
  }

  /**
   * Fetches `peer`'s log on a connection of its own, after the handshake, handing each frame to
   * `onFrame` until it returns true (the transfer is complete). Throws with the reason when the
   * peer refuses (e.g. it is not the leader), sends nothing for `idleMs`, or the link fails.
   */
  async fetchLog(
    peer: NodeId,
    onFrame: (payload: Uint8Array) => boolean,
    idleMs: number,
  ): Promise<void> {
    const link = this.#links.get(peer);
    if (link === undefined) throw new Error(`Unknown peer "${peer}"`);
    const conn = await withTimeout(
      this.#connect(link.address),
      this.#handshakeTimeoutMs,
      "connect",
    );
    try {
      const frames = await withTimeout(
        this.#dialHandshake(conn, peer),
        this.#handshakeTimeoutMs,
        "handshake",
      );
      frames.authenticated(); // the welcome proved the secret: log frames may be full-size
      await writeAll(conn, encodeJsonFrame(FrameKind.logRequest, {}));
      while (true) {
        const payload = await withTimeout(frames.next(), idleMs, "log transfer");
        if (payload[0] === FrameKind.refused) {
          const why = decodeJsonFrame(payload, [FrameKind.refused]).body.error;
          throw new Error(`peer "${peer}" refused the log transfer: ${String(why)}`);
        }
        if (onFrame(payload)) return;
      }
    } finally {
      closeQuietly(conn);
    }
  }

  async #writeLoop(link: PeerLink, conn: ByteConn): Promise<void> {
    // One buffer per connection, reused frame after frame (each write is awaited before the next
    // frame is encoded); a frame that grew it past WRITER_KEPT_BYTES_MAX does not keep it.
    let writer = new ByteWriter(WRITER_INITIAL_BYTES);
    while (!this.#closed) {
      if (link.queue.length === 0) {
        await link.waitForWork();
        continue;
      }
      // Many messages per frame, bounded in count and (roughly) bytes.
      let n = 0;
      let bytes = 0;
      while (
        n < link.queue.length && n < MESSAGES_PER_FRAME_MAX &&
        (n === 0 || bytes + messageBytes(link.queue[n]) <= FRAME_TARGET_BYTES)
      ) {
        bytes += messageBytes(link.queue[n]);
        n++;
      }
      const batch = link.queue.splice(0, n);
      link.queueBytes -= bytes;
      await writeAll(conn, encodeMessagesFrame(batch, writer));
      if (writer.capacity > WRITER_KEPT_BYTES_MAX) writer = new ByteWriter(WRITER_INITIAL_BYTES);
      this.stats.framesSent++;
      this.stats.messagesSent += batch.length;
    }
  }

  // ---- Incoming ----------------------------------------------------------------------------------

  async #acceptLoop(listener: ConnListener): Promise<void> {
    while (!this.#closed) {
      let conn: ByteConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (this.#closed) return;
        this.#o.log("peer-accept-error", { error: (e as Error).message });
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (this.#unauthenticated >= this.#unauthenticatedConnectionsMax) {
        // Strangers must not be able to hold more than a bounded amount of this node's memory.
        this.stats.connectionsOverLimit++;
        closeQuietly(conn);
        continue;
      }
      this.#serveInbound(conn);
    }
  }

  async #serveInbound(conn: ByteConn): Promise<void> {
    this.#inbound.add(conn);
    this.#unauthenticated++;
    let unauthenticated = true;
    const frames = new FrameStream(conn);
    let peer: NodeId | undefined;
    try {
      conn.setNoDelay?.(true);
      peer = await withTimeout(
        this.#acceptHandshake(conn, frames),
        this.#handshakeTimeoutMs,
        "handshake",
      );
      this.#unauthenticated--;
      unauthenticated = false;
      frames.authenticated();
      let mine = this.#inboundOf.get(peer);
      if (mine === undefined) this.#inboundOf.set(peer, mine = new Set());
      mine.add(conn);
      const me = this.#o.nodeId;
      while (!this.#closed) {
        const frame = await frames.next();
        // Only after the handshake: the log goes to no one who has not proved the secret.
        if (frame[0] === FrameKind.logRequest) return await this.#sendLog(conn, peer);
        const messages = decodeMessages(frame);
        for (const m of messages) {
          if (m.from !== peer || m.to !== me) {
            throw new FrameError(`Message from "${m.from}" to "${m.to}" on ${peer}'s connection`);
          }
        }
        this.stats.messagesReceived += messages.length;
        this.#o.onMessages(peer, messages);
      }
    } catch (e) {
      if (e instanceof FrameError || (e as Error).message.includes("refused")) {
        this.stats.connectionsRefused++;
        this.#o.log("peer-connection-refused", {
          peer: peer ?? null,
          remote: remoteOf(conn),
          error: (e as Error).message,
        });
      }
    } finally {
      if (unauthenticated) this.#unauthenticated--;
      this.#inbound.delete(conn);
      if (peer !== undefined) this.#inboundOf.get(peer)?.delete(conn);
      closeQuietly(conn);
    }
  }

  /** Streams this node's log to `peer` frame by frame; a failure is sent as `refused`. */
  async #sendLog(conn: ByteConn, peer: NodeId): Promise<void> {
    const startMs = Date.now();
    let frames = 0;
    let bytes = 0;
    try {
      if (this.#o.logTransfer === undefined) throw new Error("this node serves no log transfers");
      // One frame at a time: the next is encoded only when the last one is written.
      for (const frame of this.#o.logTransfer(peer)) {
        await writeAll(conn, frame);
        frames++;
        bytes += frame.length;
      }
      this.#o.log("log-transfer-sent", { peer, frames, bytes, ms: Date.now() - startMs });
    } catch (e) {
      const error = (e as Error).message;
      this.#o.log("log-transfer-failed", { peer, frames, bytes, error });
      await writeAll(conn, encodeJsonFrame(FrameKind.refused, { error })).catch(() => {});
    }
  }

  /** Checks the dialer's hello; returns its id or throws (after telling it why). */
  async #acceptHandshake(conn: ByteConn, frames: FrameStream): Promise<NodeId> {
    const nonce = randomNonce();
    await writeAll(conn, encodeJsonFrame(FrameKind.challenge, { nonce }));
    // Read under the handshake limit (FrameStream): at most one small frame from a stranger.
    const hello = decodeJsonFrame(await frames.next(), [FrameKind.hello]).body;
    const { clusterId, nodeId } = this.#o;
    const refuse = async (why: string): Promise<never> => {
      await writeAll(conn, encodeJsonFrame(FrameKind.refused, { error: why })).catch(() => {});
      throw new FrameError(`Handshake refused: ${why}`);
    };
    const from = hello.from;
    if (typeof from !== "string") return await refuse(`unknown node ${JSON.stringify(from)}`);
    if (typeof hello.nonce !== "string" || !NONCE_PATTERN.test(hello.nonce)) {
      return await refuse("no nonce of 32 hex digits");
    }
    // The secret first: a stranger learns nothing of who is or was a member.
    const nonces = `${nonce}\n${hello.nonce}`;
    const mac = await this.#mac(`hello\n${clusterId}\n${from}\n${nodeId}\n${nonces}`);
    if (typeof hello.mac !== "string" || !constantTimeEqual(hello.mac, mac)) {
      return await refuse("wrong cluster secret");
    }
    if (this.#o.isRemoved?.(from)) {
      // A refusal the removed node can check (it proves the secret too), so it stops for good.
      const error = `node "${from}" ${REMOVED_REFUSAL}`;
      const proof = await this.#mac(`removed\n${clusterId}\n${nodeId}\n${from}\n${nonces}`);
      await writeAll(conn, encodeJsonFrame(FrameKind.refused, { error, mac: proof }))
        .catch(() => {});
      throw new FrameError(`Handshake refused: ${error}`);
    }
    if (!this.#links.has(from)) return await refuse(`unknown node ${JSON.stringify(from)}`);
    if (hello.clusterId !== clusterId) {
      return await refuse(`wrong cluster id ${JSON.stringify(hello.clusterId)}`);
    }
    if (hello.to !== nodeId) return await refuse(`this is node "${nodeId}", not ${hello.to}`);
    const { term, commitIndex } = this.#o.localState();
    const seenTerm = this.#o.seenTermOf(from);
    await writeAll(
      conn,
      encodeJsonFrame(FrameKind.welcome, {
        term,
        commitIndex,
        seenTerm,
        mac: await this.#mac(
          `welcome\n${clusterId}\n${nodeId}\n${from}\n${nonces}\n${term}\n${commitIndex}\n${seenTerm}`,
        ),
      }),
    );
    return from;
  }
}

/** Closes `conn` when the peer closes it (a dialer never expects bytes after the welcome). */
function watchForClose(conn: ByteConn, frames: FrameStream): void {
  (async () => {
    try {
      await frames.next();
    } catch { /* closed */ }
    closeQuietly(conn);
  })();
}

function closeQuietly(conn: ByteConn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

function remoteOf(conn: ByteConn): string {
  const a = conn.remoteAddr as Deno.NetAddr;
  return `${a.hostname}:${a.port}`;
}
