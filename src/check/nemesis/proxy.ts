/**
 * The fault proxy of the real-process fault tests: one TCP listener on 127.0.0.1 per directed
 * link (node a → node b), forwarding to b's real port. Node a is configured to dial b through it,
 * so the runner controls every byte a sends to b: cut the link (close its connections and refuse
 * new ones), stall it (stop forwarding, keep the connections open), delay it, or reset its
 * connections at random ("drops": TCP cannot lose single bytes without corrupting the framing).
 *
 * Each peer connection carries one direction of Raft traffic (a dials b to send a's messages), so
 * cutting the link a → b alone is a one-way cut.
 *
 * @module
 */

/** What a link does to the bytes that cross it. */
export interface LinkFaults {
  /** `cut`: connections closed and new ones refused; `stall`: nothing forwarded, nothing closed. */
  mode: "ok" | "cut" | "stall";
  /** Added delay per chunk, in ms (order kept). */
  delayMs: number;
  /** Probability, per chunk forwarded, that the connection is reset instead. */
  resetRate: number;
}

/** A link that forwards everything at once. */
export function healthyLink(): LinkFaults {
  return { mode: "ok", delayMs: 0, resetRate: 0 };
}

/** Most bytes a direction of one connection holds while delayed or stalled before it stops reading. */
const QUEUED_BYTES_MAX = 4 << 20;
const CHUNK_BYTES = 64 << 10;

interface Pair {
  readonly down: Deno.TcpConn;
  readonly up: Deno.TcpConn;
  closed: boolean;
}

/** One directed link: a listener that forwards to `target` under the link's faults. */
export class LinkProxy {
  /** The port node `from` dials instead of `to`'s real one. */
  readonly port: number;
  /** Current faults; change with {@linkcode LinkProxy.set}. */
  faults: LinkFaults = healthyLink();
  /** Connections accepted. */
  accepted = 0;
  /** Connections reset by the `resetRate` fault. */
  resets = 0;
  #listener: Deno.TcpListener | undefined;
  readonly #pairs = new Set<Pair>();
  readonly #random: () => number;
  #wake: (() => void)[] = [];
  #closed = false;

  /** Listens on a free port of 127.0.0.1 and forwards to `target`. */
  constructor(readonly target: { hostname: string; port: number }, random: () => number) {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#random = random;
    this.#accept(this.#listener);
  }

  /** Sets the link's faults; a cut closes the open connections at once. */
  set(faults: LinkFaults): void {
    this.faults = { ...faults };
    if (faults.mode === "cut") { for (const p of [...this.#pairs]) this.#closePair(p); }
    for (const w of this.#wake.splice(0)) w();
  }

  /**
   * The target process is gone: stop listening, so a dialer is refused as it would be by the dead
   * process itself (a listener that accepted and then closed would look like a reset instead).
   */
  targetDown(): void {
    try {
      this.#listener?.close();
    } catch { /* closed */ }
    this.#listener = undefined;
  }

  /** The target process is back: listen again on the same port. */
  targetUp(): void {
    if (this.#listener !== undefined || this.#closed) return;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#accept(this.#listener);
  }

  /** Stops listening and closes every connection. */
  close(): void {
    this.#closed = true;
    this.targetDown();
    for (const p of [...this.#pairs]) this.#closePair(p);
    for (const w of this.#wake.splice(0)) w();
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let down: Deno.TcpConn;
      try {
        down = await listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.faults.mode === "cut" || this.#closed) {
        down.close();
        continue;
      }
      this.accepted++;
      this.#connect(down);
    }
  }

  async #connect(down: Deno.TcpConn): Promise<void> {
    let up: Deno.TcpConn;
    try {
      up = await Deno.connect(this.target);
    } catch {
      down.close(); // the target is down: the dialer sees a closed connection
      return;
    }
    const pair: Pair = { down, up, closed: false };
    this.#pairs.add(pair);
    if (this.faults.mode === "cut") return this.#closePair(pair);
    this.#pump(pair, down, up);
    this.#pump(pair, up, down);
  }

  #closePair(p: Pair): void {
    if (p.closed) return;
    p.closed = true;
    this.#pairs.delete(p);
    for (const c of [p.down, p.up]) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    for (const w of this.#wake.splice(0)) w();
  }

  /** Resolves when the faults change or `ms` pass (whichever first). */
  #changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = this.#wake.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake.push(done);
    });
  }

  /** Forwards `from` → `to`: a reader that queues chunks with their due time, a writer that waits. */
  #pump(p: Pair, from: Deno.TcpConn, to: Deno.TcpConn): void {
    const queue: { data: Uint8Array; dueMs: number }[] = [];
    let queuedBytes = 0;
    let readerDone = false;
    let notify: (() => void) | undefined;
    const kick = () => {
      notify?.();
      notify = undefined;
    };
    const reader = async () => {
      try {
        while (!p.closed) {
          while (
            !p.closed && (queuedBytes > QUEUED_BYTES_MAX || this.faults.mode === "stall")
          ) await this.#changed(50);
          const buf = new Uint8Array(CHUNK_BYTES);
          const n = await from.read(buf);
          if (n === null) break;
          queue.push({ data: buf.subarray(0, n), dueMs: performance.now() + this.faults.delayMs });
          queuedBytes += n;
          kick();
        }
      } catch { /* closed */ }
      readerDone = true;
      kick();
    };
    const writer = async () => {
      try {
        while (!p.closed) {
          if (queue.length === 0) {
            if (readerDone) break;
            await new Promise<void>((r) => notify = r);
            continue;
          }
          const head = queue[0];
          const waitMs = head.dueMs - performance.now();
          if (this.faults.mode === "stall" || waitMs > 0) {
            await this.#changed(this.faults.mode === "stall" ? 50 : waitMs);
            continue;
          }
          if (this.faults.resetRate > 0 && this.#random() < this.faults.resetRate) {
            this.resets++;
            break;
          }
          queue.shift();
          queuedBytes -= head.data.length;
          let off = 0;
          while (off < head.data.length) off += await to.write(head.data.subarray(off));
        }
      } catch { /* closed */ }
      this.#closePair(p);
    };
    reader();
    writer();
  }
}
