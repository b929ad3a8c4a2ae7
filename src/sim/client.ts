/**
 * `SimClient`: a client of the simulated cluster that behaves like a real one. It finds the leader
 * (following "not the leader" hints), retries on leader changes and timeouts with the same sequence
 * number — so the store applies a retried write once (Raft dissertation §6.3) — and reports an
 * operation whose outcome it cannot know as `unknown`.
 *
 * @module
 */

import { encodeCommand } from "../kv/command.ts";
import type { ApplyResult } from "../kv/store.ts";
import type { CommandResponse, PlainCommand, TxnResponse } from "../kv/types.ts";
import type { NodeId } from "../raft/types.ts";
import type { Cluster, Operation } from "./cluster.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Tunables of a simulated client. */
export interface SimClientOptions {
  /** Give up on an operation after this long. Default 5,000. */
  readonly timeoutMs?: number;
  /** Give up on one attempt (one node) after this long and try again. Default 500. */
  readonly attemptTimeoutMs?: number;
  /** Wait between attempts when no leader is known. Default 50. */
  readonly retryDelayMs?: number;
}

/** What the client asked for. */
export type ClientRequest =
  | { readonly kind: "get"; readonly key: string; readonly serializable?: boolean }
  | { readonly kind: "put"; readonly key: string; readonly value: string }
  | { readonly kind: "delete"; readonly key: string }
  | {
    readonly kind: "cas";
    readonly key: string;
    /** The value the key must hold; null means the key must be absent. */
    readonly expected: string | null;
    readonly value: string;
  };

/** Any command, sent with the client's session envelope; its response comes back. */
export interface CommandRequest {
  /** Discriminant. */
  readonly kind: "command";
  /** A label for descriptions (e.g. the key the command is about). */
  readonly key: string;
  /** The command. */
  readonly command: PlainCommand;
}

/** The outcome of a client request. */
export interface ClientResult {
  /** `ok`: done, with `value`; `failed`: certainly had no effect; `unknown`: may have. */
  readonly status: "ok" | "failed" | "unknown";
  /** For get: the value read (null when absent). For cas: the value found when it failed. */
  readonly value?: string | null;
  /** For cas: whether the swap happened. For other kinds: true when status is ok. */
  readonly succeeded: boolean;
  /** Why it failed or is unknown. */
  readonly error?: string;
  /** Virtual time of the call. */
  readonly callMs: number;
  /** Virtual time of the answer. */
  readonly returnMs: number;
  /** How many attempts it took. */
  readonly attempts: number;
  /** For a command: the store's response. */
  readonly response?: CommandResponse;
}

/** A retrying, exactly-once client of a simulated cluster. */
export class SimClient {
  /** This client's id, carried in every write's session envelope. */
  readonly clientId: string;
  readonly #cluster: Cluster;
  readonly #timeoutMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #retryDelayMs: number;
  #seq = 0;
  #next = 0;
  #leaderHint: NodeId | undefined;
  #busy = false;

  /** Creates a client of `cluster` named `clientId`. */
  constructor(cluster: Cluster, clientId: string, options: SimClientOptions = {}) {
    this.#cluster = cluster;
    this.clientId = clientId;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 500;
    this.#retryDelayMs = options.retryDelayMs ?? 50;
  }

  /** Whether an operation is in progress (a client has one at a time, as sessions require). */
  get busy(): boolean {
    return this.#busy;
  }

  /**
   * Starts `request`; `done` is called with the outcome, in virtual time, while the cluster runs.
   * One request at a time.
   */
  start(request: ClientRequest | CommandRequest, done: (result: ClientResult) => void): void {
    if (this.#busy) throw new Error(`Client "${this.clientId}" already has a request in progress`);
    this.#busy = true;
    const c = this.#cluster;
    const callMs = c.nowMs;
    const deadline = callMs + this.#timeoutMs;
    const seq = request.kind === "get" ? 0 : ++this.#seq;
    const command = request.kind === "get" ? undefined : encodeCommand({
      type: "session",
      clientId: this.clientId,
      seq,
      command: toCommand(request),
    });
    let attempts = 0;
    let mayHaveApplied = false;
    let finished = false;

    const finish = (r: Omit<ClientResult, "callMs" | "returnMs" | "attempts">) => {
      if (finished) return;
      finished = true;
      this.#busy = false;
      done({ ...r, callMs, returnMs: c.nowMs, attempts });
    };

    const giveUp = (why: string) =>
      finish({
        status: mayHaveApplied ? "unknown" : "failed",
        succeeded: false,
        error: `${why} (after ${attempts} attempts)`,
      });

    const attempt = () => {
      if (finished) return;
      if (c.nowMs >= deadline) return giveUp(`no answer within ${this.#timeoutMs} ms`);
      attempts++;
      const via = this.#pickNode();
      const op = request.kind === "get"
        ? c.get(request.key, { via, serializable: request.serializable })
        : c.propose(command!, { via });
      if (op.kind !== "get" && op.index !== undefined) mayHaveApplied = true;
      let attemptOver = false;
      const onDone = (o: Operation) => {
        if (attemptOver) return;
        attemptOver = true;
        handle(o);
      };
      if (op.status !== "pending") return onDone(op);
      op.onDone = onDone;
      c.schedule(this.#attemptTimeoutMs, () => {
        if (attemptOver) return;
        attemptOver = true;
        c.abandon(op, "the client stopped waiting");
        this.#leaderHint = undefined;
        attempt();
      });
    };

    const retry = (delayMs: number) => {
      if (c.nowMs + delayMs >= deadline) return giveUp(`no answer within ${this.#timeoutMs} ms`);
      c.schedule(delayMs, attempt);
    };

    const handle = (op: Operation) => {
      if (op.status === "ok") {
        if (request.kind === "get") {
          this.#leaderHint = op.via;
          return finish({ status: "ok", value: op.result ?? null, succeeded: true });
        }
        return this.#settleWrite(request, op.applyResult as ApplyResult, finish);
      }
      // failed: the attempt certainly had no effect; unknown: it may still apply — retry, the
      // session makes a second application impossible.
      this.#leaderHint = op.leaderHint;
      retry(op.leaderHint !== undefined ? 0 : this.#retryDelayMs);
    };

    attempt();
  }

  /** Runs `request` to completion, advancing the cluster's clock; returns the outcome. */
  run(request: ClientRequest | CommandRequest): ClientResult {
    let result: ClientResult | undefined;
    this.start(request, (r) => result = r);
    this.#cluster.runUntil(() => result !== undefined, {
      timeoutMs: this.#timeoutMs + this.#attemptTimeoutMs + 1,
      description: `client "${this.clientId}" ${request.kind} ${request.key}`,
    });
    return result!;
  }

  #pickNode(): NodeId {
    if (this.#leaderHint !== undefined) return this.#leaderHint;
    const ids = this.#cluster.ids;
    return ids[this.#next++ % ids.length];
  }

  #settleWrite(
    request: ClientRequest | CommandRequest,
    result: ApplyResult,
    finish: (r: Omit<ClientResult, "callMs" | "returnMs" | "attempts">) => void,
  ): void {
    switch (result.status) {
      case "applied": {
        if (request.kind === "command") {
          return finish({ status: "ok", succeeded: true, response: result.response });
        }
        if (request.kind !== "cas") return finish({ status: "ok", succeeded: true });
        const txn = result.response as TxnResponse;
        if (txn.succeeded) return finish({ status: "ok", succeeded: true, value: request.value });
        const found = txn.responses[0];
        const kv = found?.type === "range" ? found.kvs[0] : undefined;
        return finish({
          status: "ok",
          succeeded: false,
          value: kv === undefined ? null : decoder.decode(kv.value),
        });
      }
      case "rejected":
        return finish({ status: "failed", succeeded: false, error: result.error });
      case "stale":
      case "unknownSession":
        return finish({ status: "unknown", succeeded: false, error: result.error });
    }
  }
}

function toCommand(
  request: Exclude<ClientRequest | CommandRequest, { kind: "get" }>,
): PlainCommand {
  switch (request.kind) {
    case "command":
      return request.command;
    case "put":
      return { type: "put", key: request.key, value: encoder.encode(request.value), prevKv: false };
    case "delete":
      return { type: "delete", range: { key: request.key }, prevKv: false };
    case "cas":
      return {
        type: "txn",
        compare: [
          request.expected === null
            ? { key: request.key, target: "version", result: "equal", value: 0 }
            : {
              key: request.key,
              target: "value",
              result: "equal",
              value: encoder.encode(request.expected),
            },
        ],
        success: [{
          type: "put",
          key: request.key,
          value: encoder.encode(request.value),
          prevKv: false,
        }],
        failure: [{
          type: "range",
          range: { key: request.key },
          limit: 1,
          keysOnly: false,
          countOnly: false,
        }],
      };
  }
}
