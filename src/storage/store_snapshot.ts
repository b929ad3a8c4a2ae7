/**
 * The bytes of a {@linkcode MetadataStore} snapshot. One codec for every host — the simulator,
 * the real server and tests — so a snapshot taken by one restores in another.
 *
 * Format 6 (written now) is binary and keeps the auth state and the whole history since the
 * compact revision, each version and each value once: a key whose current version is in the
 * history is written there only. Formats 5 (no auth state), 4 (which wrote such values twice), 2
 * and 3 (binary, the watch history as events) and 1 (UTF-8 JSON of {@linkcode StoreSnapshot}, no
 * history) still load. docs/commands.md describes them.
 * A snapshot is taken from a {@linkcode FrozenStore}, so a host can encode it in slices
 * ({@linkcode encodeStoreSnapshotChunks}) while the store goes on applying entries; the chunks
 * joined are byte for byte what {@linkcode encodeStoreSnapshot} returns for the same state.
 *
 * @example
 * ```ts
 * import { decodeStoreSnapshot, encodeStoreSnapshot } from "./store_snapshot.ts";
 * import { MetadataStore } from "../kv/store.ts";
 * import { encodePut } from "../kv/command.ts";
 * const store = new MetadataStore();
 * store.apply(encodePut("/a", "1"), 1);
 * const again = decodeStoreSnapshot(encodeStoreSnapshot(store));
 * if (again.getString("/a") !== "1" || again.appliedIndex !== 1) throw new Error();
 * ```
 *
 * @module
 */

import {
  type FrozenStore,
  type HistoryItem,
  type KvRecord,
  type KvVersion,
  MetadataStore,
  type MetadataStoreOptions,
  type RevisionEvents,
  type SessionRecord,
  type StoreSnapshot,
  toJsonSafe,
} from "../kv/store.ts";
import type { AlarmMember, AlarmType, KeyValue, KvEvent } from "../kv/types.ts";
import { keyBytes, keyFromBytes } from "../kv/bytes.ts";
import type { AuthSnapshot } from "../kv/auth.ts";

/** First bytes of a binary snapshot: "RMSS" (format 1 starts with `{`). */
const MAGIC = [0x52, 0x4d, 0x53, 0x53] as const;
/**
 * The snapshot format {@linkcode encodeStoreSnapshot} writes: format 6 plus the bytes of keys
 * that are not UTF-8 text.
 */
export const STORE_SNAPSHOT_FORMAT = 7;
/** Format 6 (read only): format 5 plus the auth state; every key UTF-8 text. */
export const STORE_SNAPSHOT_FORMAT_AUTH = 6;
/** Format 5 (read only): alarms, the MVCC history, each value once; no auth state. */
export const STORE_SNAPSHOT_FORMAT_VALUES_ONCE = 5;
/** Format 4 (read only): as 5, but every key's record in full, so current values twice. */
export const STORE_SNAPSHOT_FORMAT_HISTORY = 4;
/** Format 2 (read only): the watch history as events, no alarms. */
export const STORE_SNAPSHOT_FORMAT_EVENTS = 2;
/** Format 2 plus the raised alarms (read only). */
export const STORE_SNAPSHOT_FORMAT_ALARMS = 3;

/** History items (formats 4, 5): a kind byte (end, a version written, a base version), then it. */
const ITEM_END = 0;
const ITEM_WRITE = 1;
const ITEM_BASE = 2;
/** Default size of the chunks {@linkcode encodeStoreSnapshotChunks} yields. */
export const SNAPSHOT_CHUNK_BYTES_DEFAULT = 64 * 1024;

/** Event kinds as stored: bit 0 DELETE (else PUT), bit 1 a prevKv follows. */
const EVENT_DELETE = 1;
const EVENT_PREV = 2;

const utf8Encoder = new TextEncoder();

/**
 * Appends to fixed-size chunks: a chunk that fills up is handed out whole and a new one started,
 * so memory grows by chunks, never by copying what was written.
 */
class ChunkWriter {
  readonly #chunkBytes: number;
  #buf: Uint8Array;
  #pos = 0;
  /** Chunks filled and not yet taken. */
  readonly full: Uint8Array[] = [];

  constructor(chunkBytes: number) {
    this.#chunkBytes = chunkBytes;
    this.#buf = new Uint8Array(chunkBytes);
  }

  /** Makes room for `n` more bytes in the current chunk. */
  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    if (this.#pos > 0) this.full.push(this.#buf.subarray(0, this.#pos));
    this.#buf = new Uint8Array(Math.max(this.#chunkBytes, n));
    this.#pos = 0;
  }

  /** An unsigned integer up to 2^53 - 1 as LEB128 (7 bits a byte, low first). */
  uint(v: number): void {
    this.#room(8);
    const buf = this.#buf;
    let p = this.#pos;
    while (v >= 0x80) {
      buf[p++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[p++] = v;
    this.#pos = p;
  }

  u8(v: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = v;
  }

  /** `bytes` with their length before them. */
  bytes(bytes: Uint8Array): void {
    const n = bytes.length;
    this.uint(n);
    this.raw(bytes);
  }

  /** `bytes` as they are. */
  raw(bytes: Uint8Array): void {
    const n = bytes.length;
    this.#room(n);
    const buf = this.#buf;
    const p = this.#pos;
    // A short copy by hand beats the call into TypedArray.prototype.set.
    if (n < 32) { for (let i = 0; i < n; i++) buf[p + i] = bytes[i]; }
    else buf.set(bytes, p);
    this.#pos = p + n;
  }

  /** `text` as UTF-8 of `bytes` bytes, without its length (the caller wrote it). */
  utf8(text: string, bytes: number): void {
    this.#room(bytes);
    const buf = this.#buf;
    const p = this.#pos;
    if (bytes === text.length) {
      for (let i = 0; i < bytes; i++) buf[p + i] = text.charCodeAt(i);
    } else {
      utf8Encoder.encodeInto(text, buf.subarray(p, p + bytes));
    }
    this.#pos = p + bytes;
  }

  /** `text` as UTF-8, its length not written: ASCII by hand, anything else by the encoder. */
  text(text: string): void {
    const n = text.length;
    this.#room(3 * n);
    const buf = this.#buf;
    const p = this.#pos;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x80) {
        this.#pos = p + utf8Encoder.encodeInto(text, buf.subarray(p, p + 3 * n)).written;
        return;
      }
      buf[p + i] = c;
    }
    this.#pos = p + n;
  }

  /** Bytes written since the last full chunk. */
  get pending(): number {
    return this.#pos;
  }

  /** Hands out the current chunk (when it holds anything). */
  flush(): void {
    if (this.#pos > 0) this.full.push(this.#buf.subarray(0, this.#pos));
    this.#buf = new Uint8Array(this.#chunkBytes);
    this.#pos = 0;
  }
}

/** Length of `text` in UTF-8 (its length when it is ASCII). */
function utf8Length(text: string): number {
  const n = text.length;
  for (let i = 0; i < n; i++) {
    if (text.charCodeAt(i) >= 0x80) return utf8Encoder.encode(text).length;
  }
  return n;
}

function writeKeyValue(w: ChunkWriter, kv: KeyValue): void {
  if (kv.key.isWellFormed()) {
    const n = utf8Length(kv.key);
    w.uint(n);
    w.utf8(kv.key, n);
  } else w.bytes(keyBytes(kv.key));
  w.bytes(kv.value);
  w.uint(kv.createRevision);
  w.uint(kv.modRevision);
  w.uint(kv.version);
  w.uint(kv.lease ?? 0);
}

/** Options of {@linkcode encodeStoreSnapshotChunks}. */
export interface SnapshotChunkOptions {
  /** Size of each chunk but the last (a larger value gets a chunk of its own). Default 64 KiB. */
  readonly chunkBytes?: number;
}

/**
 * The snapshot of `frozen` (format 5) as a sequence of chunks, each about `chunkBytes`: a few
 * hundred keys of work. Pull as many as a slice of the event loop allows; the store may apply
 * entries between pulls, since `frozen` does not change. The chunks joined equal
 * {@linkcode encodeStoreSnapshot} of the same state. Each chunk is a new buffer the caller keeps.
 *
 * @example
 * ```ts
 * import {
 *   encodeStoreSnapshot,
 *   encodeStoreSnapshotChunks,
 *   joinChunks,
 * } from "./store_snapshot.ts";
 * import { MetadataStore } from "../kv/store.ts";
 * import { encodePut } from "../kv/command.ts";
 * const store = new MetadataStore();
 * store.apply(encodePut("/a", "1"), 1);
 * const frozen = store.freeze();
 * const chunks = [];
 * for (const chunk of encodeStoreSnapshotChunks(frozen)) {
 *   chunks.push(chunk);
 *   store.apply(encodePut("/a", "later"), store.appliedIndex + 1); // not in the snapshot
 * }
 * frozen.release();
 * const joined = joinChunks(chunks);
 * const again = new MetadataStore();
 * again.apply(encodePut("/a", "1"), 1);
 * if (joined.join() !== encodeStoreSnapshot(again).join()) throw new Error();
 * ```
 */
export function* encodeStoreSnapshotChunks(
  frozen: FrozenStore,
  options: SnapshotChunkOptions = {},
): Generator<Uint8Array, void, undefined> {
  const chunkBytes = options.chunkBytes ?? SNAPSHOT_CHUNK_BYTES_DEFAULT;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 64) {
    throw new RangeError(`chunkBytes must be an integer of at least 64: ${chunkBytes}`);
  }
  const w = new ChunkWriter(chunkBytes);
  // Yields every chunk filled so far; called after each item, so a slice is about one chunk.
  function* take(): Generator<Uint8Array, void, undefined> {
    while (w.full.length > 0) yield w.full.shift()!;
  }
  for (const b of MAGIC) w.u8(b);
  const alarms = frozen.alarms ?? [];
  w.uint(STORE_SNAPSHOT_FORMAT);
  w.uint(alarms.length);
  for (const a of alarms) {
    w.bytes(utf8Encoder.encode(a.memberId));
    w.bytes(utf8Encoder.encode(a.alarm));
  }
  // Format 6: the auth state as UTF-8 JSON (bounded by the auth limits).
  w.bytes(utf8Encoder.encode(JSON.stringify(frozen.auth)));
  w.uint(frozen.appliedIndex);
  w.uint(frozen.revision);
  w.uint(frozen.leaseIdLast);
  w.uint(frozen.leases.length);
  w.uint(frozen.size);
  w.uint(frozen.sessions.length);
  w.uint(frozen.compactRevision);
  for (const [id, ttlMs] of frozen.leases) {
    w.uint(id);
    w.uint(ttlMs);
  }
  let n = 0;
  for (const s of frozen.sessions) {
    const json = JSON.stringify(
      {
        clientId: s.clientId,
        lastSeq: s.lastSeq,
        lastIndex: s.lastIndex,
        outcome: toJsonSafe(s.outcome),
      } satisfies SessionRecord,
    );
    w.bytes(utf8Encoder.encode(json));
    if ((++n & 63) === 0) yield* take();
  }
  for (const item of frozen.history()) {
    w.u8(item.base ? ITEM_BASE : ITEM_WRITE);
    writeKeyValue(w, item.version);
    if ((++n & 63) === 0) yield* take();
  }
  w.u8(ITEM_END);
  // Keys last: first each key's length (UTF-16 units) and record, then the keys' UTF-8 back to
  // back to the end, which a decoder turns into text with one decode and slices. A key changed
  // after the compact revision has its current version as its last item in the history above, so
  // its record is only a mark (length·2 + 1); one unchanged since is written in full (length·2).
  const c = frozen.compactRevision;
  // Format 7: keys that are not text (bytes outside UTF-8, held escaped) by their place and bytes;
  // in the text below, each escape of theirs reads as U+FFFD (one unit, so the slices stay put).
  const byteKeys: [number, Uint8Array][] = [];
  let place = 0;
  for (const [keys, records] of frozen.batches()) {
    for (let i = 0; i < keys.length; i++, place++) {
      if (!keys[i].isWellFormed()) byteKeys.push([place, keyBytes(keys[i])]);
      const r = records[i];
      if (r.modRevision > c) {
        w.uint(keys[i].length * 2 + 1);
        continue;
      }
      w.uint(keys[i].length * 2);
      w.bytes(r.value);
      w.uint(r.createRevision);
      w.uint(r.modRevision);
      w.uint(r.version);
      w.uint(r.lease);
    }
    yield* take();
  }
  w.uint(byteKeys.length);
  for (const [at, bytes] of byteKeys) {
    w.uint(at);
    w.bytes(bytes);
  }
  for (const [keys] of frozen.batches()) {
    for (let i = 0; i < keys.length; i++) w.text(keys[i]);
    yield* take();
  }
  w.flush();
  yield* take();
}

/**
 * Serializes the whole store (keys, revisions, leases, sessions, watch history, applied index)
 * to bytes, at once: {@linkcode encodeStoreSnapshotChunks} of its state now, joined.
 */
export function encodeStoreSnapshot(store: MetadataStore): Uint8Array {
  const frozen = store.freeze();
  try {
    return joinChunks([...encodeStoreSnapshotChunks(frozen, { chunkBytes: 1024 * 1024 })]);
  } finally {
    frozen.release();
  }
}

/** `chunks` in one buffer. */
export function joinChunks(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  let total = 0;
  for (const c of chunks) total += c.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Restores a store from bytes made by {@linkcode encodeStoreSnapshot} (format 2, or format 1 of
 * older versions). Throws with a clear message when they are not such a snapshot.
 */
export function decodeStoreSnapshot(
  bytes: Uint8Array,
  options: MetadataStoreOptions = {},
): MetadataStore {
  if (MAGIC.every((b, i) => bytes[i] === b)) return decodeFormat2(bytes, options);
  let parsed: StoreSnapshot;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new Error(
      `Snapshot is invalid: neither format 2 nor UTF-8 JSON (${bytes.byteLength} bytes): ${
        (e as Error).message
      }`,
    );
  }
  return MetadataStore.fromSnapshot(parsed, options);
}

/** Reads format 2 fields from a buffer; a read past its end throws. */
class Reader {
  readonly buf: Uint8Array;
  pos: number;
  constructor(buf: Uint8Array, pos: number) {
    this.buf = buf;
    this.pos = pos;
  }

  #short(what: string): never {
    throw new RangeError(`it ends inside ${what} at byte ${this.pos} of ${this.buf.length}`);
  }

  uint(): number {
    const buf = this.buf;
    let p = this.pos;
    let v = 0;
    let scale = 1;
    while (true) {
      if (p >= buf.length) this.#short("a number");
      const b = buf[p++];
      v += (b & 0x7f) * scale;
      if (b < 0x80) break;
      scale *= 0x80;
      if (scale > 2 ** 49) throw new RangeError(`number too long at byte ${this.pos}`);
    }
    // Eight bytes hold 56 bits: a number above 2^53 - 1 would not be exact.
    if (v > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`number above 2^53 - 1 at byte ${this.pos}`);
    }
    this.pos = p;
    return v;
  }

  u8(): number {
    if (this.pos >= this.buf.length) this.#short("an event");
    return this.buf[this.pos++];
  }

  /** `n` bytes as a view (no copy). */
  view(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) this.#short(`${n} bytes`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  bytes(): Uint8Array {
    return this.view(this.uint());
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function readKeyValue(r: Reader): KeyValue {
  const key = keyFromBytes(r.view(r.uint()));
  const value = r.bytes();
  const createRevision = r.uint();
  const modRevision = r.uint();
  const version = r.uint();
  const lease = r.uint();
  const kv: KeyValue = { key, value, createRevision, modRevision, version };
  return lease === 0 ? kv : { ...kv, lease };
}

function decodeFormat2(data: Uint8Array, options: MetadataStoreOptions): MetadataStore {
  // One copy, so the store's values (views into it) never share the caller's buffer.
  const r = new Reader(data.slice(), MAGIC.length);
  let parts;
  try {
    const format = r.uint();
    if (
      format !== STORE_SNAPSHOT_FORMAT && format !== STORE_SNAPSHOT_FORMAT_AUTH &&
      format !== STORE_SNAPSHOT_FORMAT_VALUES_ONCE &&
      format !== STORE_SNAPSHOT_FORMAT_HISTORY && format !== STORE_SNAPSHOT_FORMAT_ALARMS &&
      format !== STORE_SNAPSHOT_FORMAT_EVENTS
    ) {
      throw new RangeError(`unknown format ${format}`);
    }
    const alarms: AlarmMember[] = [];
    const alarmCount = format === STORE_SNAPSHOT_FORMAT_EVENTS ? 0 : r.uint();
    if (alarmCount > 16) throw new RangeError(`${alarmCount} alarms`);
    for (let i = 0; i < alarmCount; i++) {
      const memberId = strictUtf8.decode(r.bytes());
      alarms.push({ memberId, alarm: strictUtf8.decode(r.bytes()) as AlarmType });
    }
    const auth = format === STORE_SNAPSHOT_FORMAT || format === STORE_SNAPSHOT_FORMAT_AUTH
      ? JSON.parse(strictUtf8.decode(r.bytes())) as AuthSnapshot
      : undefined;
    // Formats 4 to 7 keep the history as versions; 2 and 3 as events.
    const withHistory = format === STORE_SNAPSHOT_FORMAT || format === STORE_SNAPSHOT_FORMAT_AUTH ||
      format === STORE_SNAPSHOT_FORMAT_VALUES_ONCE || format === STORE_SNAPSHOT_FORMAT_HISTORY;
    const appliedIndex = r.uint();
    const revision = r.uint();
    const leaseIdLast = r.uint();
    const leaseCount = r.uint();
    const keyCount = r.uint();
    const sessionCount = r.uint();
    const compactRevision = r.uint();
    const revisionCount = withHistory ? 0 : r.uint();
    // Counts bound allocations: each item takes at least one byte.
    const left = r.buf.length - r.pos;
    if (leaseCount + keyCount + sessionCount + revisionCount > left) {
      throw new RangeError(`counts exceed its ${left} remaining bytes`);
    }
    const leases: [number, number][] = [];
    for (let i = 0; i < leaseCount; i++) leases.push([r.uint(), r.uint()]);
    const sessions: SessionRecord[] = [];
    for (let i = 0; i < sessionCount; i++) {
      sessions.push(JSON.parse(strictUtf8.decode(r.bytes())) as SessionRecord);
    }
    const versions: HistoryItem[] = [];
    // Formats 5 to 7: each key's last item, the current version of a key marked as in the
    // history.
    const lastItem = format === STORE_SNAPSHOT_FORMAT || format === STORE_SNAPSHOT_FORMAT_AUTH ||
        format === STORE_SNAPSHOT_FORMAT_VALUES_ONCE
      ? new Map<string, KvVersion>()
      : undefined;
    while (withHistory) {
      const kind = r.u8();
      if (kind === ITEM_END) break;
      if (kind !== ITEM_WRITE && kind !== ITEM_BASE) throw new RangeError(`history item ${kind}`);
      const { lease, ...kv } = readKeyValue(r);
      const version = { ...kv, lease: lease ?? 0 };
      versions.push({ base: kind === ITEM_BASE, version });
      lastItem?.set(version.key, version);
    }
    const revisions: RevisionEvents[] = [];
    for (let i = 0; i < revisionCount; i++) {
      const revision = r.uint();
      const eventCount = r.uint();
      if (eventCount > r.buf.length - r.pos) throw new RangeError(`${eventCount} events`);
      const events: KvEvent[] = [];
      for (let j = 0; j < eventCount; j++) {
        const kind = r.u8();
        if (kind > 3) throw new RangeError(`event kind ${kind}`);
        const kv = readKeyValue(r);
        const type = kind & EVENT_DELETE ? "DELETE" : "PUT";
        events.push(kind & EVENT_PREV ? { type, kv, prevKv: readKeyValue(r) } : { type, kv });
      }
      revisions.push({ revision, events });
    }
    const keyUnits: number[] = new Array(keyCount);
    const records: (KvRecord | undefined)[] = new Array(keyCount);
    for (let i = 0; i < keyCount; i++) {
      keyUnits[i] = r.uint();
      if (lastItem !== undefined) {
        const inHistory = keyUnits[i] % 2 === 1;
        keyUnits[i] = Math.floor(keyUnits[i] / 2);
        if (inHistory) continue; // filled in from the history once the key's text is read
      }
      const value = r.bytes();
      const createRevision = r.uint();
      const modRevision = r.uint();
      const version = r.uint();
      const lease = r.uint();
      records[i] = { value, createRevision, modRevision, version, lease };
    }
    // Format 7: the bytes of the keys that are not text, by place.
    const byteKeys = new Map<number, string>();
    const byteKeyCount = format === STORE_SNAPSHOT_FORMAT ? r.uint() : 0;
    if (byteKeyCount > keyCount) throw new RangeError(`${byteKeyCount} byte keys`);
    for (let i = 0; i < byteKeyCount; i++) {
      const at = r.uint();
      if (at >= keyCount) throw new RangeError(`byte key at ${at} of ${keyCount}`);
      byteKeys.set(at, keyFromBytes(r.bytes()));
    }
    // The rest is the keys' text: one decode (which also checks the UTF-8), then a slice each.
    const text = strictUtf8.decode(r.view(r.buf.length - r.pos));
    const keys: string[] = new Array(keyCount);
    let at = 0;
    for (let i = 0; i < keyCount; i++) {
      const end = at + keyUnits[i];
      keys[i] = text.slice(at, end);
      at = end;
    }
    for (const [i, key] of byteKeys) {
      if (key.length !== keys[i].length) {
        throw new RangeError(`byte key ${i} has ${key.length} units, not ${keys[i].length}`);
      }
      keys[i] = key;
    }
    if (at !== text.length) {
      throw new RangeError(`its key text holds ${text.length} characters, not ${at}`);
    }
    if (lastItem !== undefined) {
      for (let i = 0; i < keyCount; i++) {
        if (records[i] !== undefined) continue;
        const v = lastItem.get(keys[i]);
        if (v === undefined || v.version === 0 || v.modRevision <= compactRevision) {
          throw new RangeError(
            `key ${JSON.stringify(keys[i])} has no current version in the history`,
          );
        }
        const { value, createRevision, modRevision, version, lease } = v;
        records[i] = { value, createRevision, modRevision, version, lease };
      }
    }
    parts = {
      appliedIndex,
      revision,
      leaseIdLast,
      leases,
      keys,
      records: records as KvRecord[],
      sessions,
      history: withHistory ? { compactRevision, versions } : { compactRevision, revisions },
      alarms,
      auth,
    };
  } catch (e) {
    throw new Error(`Snapshot is invalid: ${(e as Error).message}`, { cause: e });
  }
  return MetadataStore.restore(parts, options);
}
