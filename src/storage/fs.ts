/**
 * The small synchronous file system the storage code does all its I/O through, with two
 * implementations: {@linkcode RealFs} over Deno's sync APIs, and {@linkcode SimFs}, an in-memory
 * disk for the simulator that knows which bytes are durable and loses the rest at `crash()`.
 * One storage code path runs on both (the FoundationDB/TigerBeetle way).
 *
 * @example
 * ```ts
 * import { SimFs } from "./fs.ts";
 * const fs = new SimFs();
 * fs.mkdir("/data");
 * const f = fs.openAppend("/data/a.log");
 * f.write(new Uint8Array([1, 2, 3]));
 * fs.crash(); // the file was never synced, nor its directory: it is gone
 * if (fs.exists("/data/a.log")) throw new Error("Unsynced file survived");
 * ```
 *
 * @module
 */

/** A file opened for appending. */
export interface FsFile {
  /** The path the file was opened at. */
  readonly path: string;
  /** Appends all of `bytes` at the end of the file (not durable until {@linkcode syncData}). */
  write(bytes: Uint8Array): void;
  /** Makes the file's data and size durable (fdatasync). */
  syncData(): void;
  /**
   * Like {@linkcode syncData}, off the caller's thread where the platform allows: resolves once
   * everything written before the call is durable. The file may be written meanwhile; a close
   * waits for it.
   */
  syncDataAsync(): Promise<void>;
  /** Closes the file. */
  close(): void;
}

/** The file-system operations the storage code uses; paths are absolute or relative strings. */
export interface Fs {
  /** Whether a file or directory exists at `path`. */
  exists(path: string): boolean;
  /** Creates the directory `path` and any missing parents; does nothing when it exists. */
  mkdir(path: string): void;
  /** Names of the regular files directly in `dir`, sorted. */
  list(dir: string): string[];
  /** The whole content of the file at `path`. */
  readFile(path: string): Uint8Array;
  /** Size in bytes of the file at `path`. */
  size(path: string): number;
  /** Opens `path` for appending, creating an empty file when it is missing. */
  openAppend(path: string): FsFile;
  /** Cuts the file at `path` to `length` bytes (not durable until synced). */
  truncate(path: string, length: number): void;
  /** Renames `from` to `to`, replacing `to` (not durable until the directory is synced). */
  rename(from: string, to: string): void;
  /** Removes the file at `path` (not durable until the directory is synced). */
  remove(path: string): void;
  /** Makes the directory's entries (creations, renames, removals) durable (fsync on the dir). */
  syncDir(dir: string): void;
}

/** Joins a directory and a file name with one `/`. */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** The directory part of `path` (`"."` when there is none). */
export function parentDir(path: string): string {
  const trimmed = path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
  const slash = trimmed.lastIndexOf("/");
  if (slash < 0) return ".";
  if (slash === 0) return "/";
  return trimmed.slice(0, slash);
}

// ---------------------------------------------------------------------------------------------
// RealFs

class RealFile implements FsFile {
  readonly path: string;
  #file: Deno.FsFile;

  constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  write(bytes: Uint8Array): void {
    // writeSync may write fewer bytes than asked; loop until all are written.
    let done = 0;
    while (done < bytes.length) done += this.#file.writeSync(bytes.subarray(done));
  }

  syncData(): void {
    this.#file.syncDataSync();
  }

  #syncing: Promise<void> | undefined;
  #closeAfterSync = false;

  async syncDataAsync(): Promise<void> {
    // Deno runs it on its blocking-task pool; the event loop goes on meanwhile.
    const p = this.#file.syncData();
    this.#syncing = p;
    try {
      await p;
    } finally {
      if (this.#syncing === p) {
        this.#syncing = undefined;
        if (this.#closeAfterSync) this.#file.close();
      }
    }
  }

  close(): void {
    if (this.#syncing !== undefined) this.#closeAfterSync = true;
    else this.#file.close();
  }
}

/** Mode of new data files: they hold every key and value, so only their owner reads them. */
export const FILE_MODE = 0o600;
/** Mode of new data directories. */
export const DIR_MODE = 0o700;

/** The real disk, through Deno's synchronous file APIs. Needs `--allow-read --allow-write`. */
export class RealFs implements Fs {
  /** Whether a file or directory exists at `path`. */
  exists(path: string): boolean {
    try {
      Deno.statSync(path);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }

  /** Creates the directory `path` and any missing parents, for this user only (0700). */
  mkdir(path: string): void {
    Deno.mkdirSync(path, { recursive: true, mode: DIR_MODE });
  }

  /** Names of the regular files directly in `dir`, sorted. */
  list(dir: string): string[] {
    const names: string[] = [];
    for (const e of Deno.readDirSync(dir)) if (e.isFile) names.push(e.name);
    return names.sort();
  }

  /** The whole content of the file at `path`. */
  readFile(path: string): Uint8Array {
    // Reading into one buffer of the file's size is about twice as fast as Deno.readFileSync
    // for segment-sized files, which matters for recovery time.
    const f = Deno.openSync(path, { read: true });
    try {
      const size = f.statSync().size;
      const buf = new Uint8Array(size);
      let done = 0;
      while (done < size) {
        const n = f.readSync(buf.subarray(done));
        if (n === null || n === 0) break;
        done += n;
      }
      return done === size ? buf : buf.subarray(0, done);
    } finally {
      f.close();
    }
  }

  /** Size in bytes of the file at `path`. */
  size(path: string): number {
    return Deno.statSync(path).size;
  }

  /** Opens `path` for appending, creating it (0600) when missing. */
  openAppend(path: string): FsFile {
    return new RealFile(path, Deno.openSync(path, { append: true, create: true, mode: FILE_MODE }));
  }

  /** Cuts the file at `path` to `length` bytes. */
  truncate(path: string, length: number): void {
    Deno.truncateSync(path, length);
  }

  /** Renames `from` to `to`, replacing `to`. */
  rename(from: string, to: string): void {
    Deno.renameSync(from, to);
  }

  /** Removes the file at `path`. */
  remove(path: string): void {
    Deno.removeSync(path);
  }

  /**
   * Makes the directory's entries durable. Deno 2.9 on Linux and macOS opens a directory
   * read-only and `syncSync` fsyncs it; Windows cannot open a directory this way and its
   * NTFS metadata journal makes the call unnecessary, so a refusal there is ignored.
   */
  syncDir(dir: string): void {
    let handle: Deno.FsFile;
    try {
      handle = Deno.openSync(dir, { read: true });
    } catch (e) {
      if (Deno.build.os === "windows" && e instanceof Deno.errors.PermissionDenied) return;
      throw e;
    }
    try {
      handle.syncSync();
    } finally {
      handle.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SimFs

/** The operations of {@linkcode SimFs} that a {@linkcode SimFs.faultHook} sees. */
export type SimFsOp =
  | "create"
  | "write"
  | "syncData"
  | "truncate"
  | "rename"
  | "remove"
  | "syncDir";

/**
 * Chooses, at a crash, how many of a file's unsynced appended bytes survive (a torn tail):
 * a number from 0 to `unsyncedBytes`.
 */
export type TornTailChooser = (path: string, unsyncedBytes: number) => number;

/** One unsynced append: `length` bytes written at byte `offset` of the file. */
export interface UnsyncedWrite {
  /** Byte offset of the write. */
  readonly offset: number;
  /** Bytes written. */
  readonly length: number;
}

/**
 * Chooses, at a crash, which of a file's unsynced appends survive — any subset, as a disk that
 * writes pages back in any order leaves them: one flag per write, oldest first.
 */
export type KeptWritesChooser = (path: string, writes: readonly UnsyncedWrite[]) => boolean[];

/** Options of {@linkcode SimFs.crash}. */
export interface CrashOptions {
  /** How many unsynced appended bytes of each file survive; by default none do. */
  readonly tornTail?: TornTailChooser;
  /**
   * Which unsynced appends survive (instead of `tornTail`'s prefix): the file keeps its length
   * up to the end of the last kept write, and a lost write before it reads as zeros (a hole).
   */
  readonly keptWrites?: KeptWritesChooser;
}

/** A kept-writes chooser keeping each unsynced append with chance 1/2, drawing from `rng`. */
export function randomKeptWrites(rng: () => number): KeptWritesChooser {
  return (_path, writes) => writes.map(() => rng() < 0.5);
}

/** A torn-tail chooser drawing from `rng` (a function returning floats in [0, 1)). */
export function randomTornTail(rng: () => number): TornTailChooser {
  return (_path, unsyncedBytes) => Math.floor(rng() * (unsyncedBytes + 1));
}

// One file's content: what the program sees (`data[0, length)`) and what a crash would leave.
class Inode {
  data: Uint8Array = new Uint8Array(64);
  length = 0;
  durable: Uint8Array = new Uint8Array(0);
  // True while the only changes since the last sync are appends, so a crash may leave a prefix
  // of the appended bytes (a torn tail). A truncate after the sync clears it.
  appendOnly = true;
  // The appends since the last sync, while `appendOnly` holds.
  writes: UnsyncedWrite[] = [];

  content(): Uint8Array {
    return this.data.subarray(0, this.length);
  }

  append(bytes: Uint8Array): void {
    if (this.length + bytes.length > this.data.length) {
      let capacity = this.data.length;
      while (capacity < this.length + bytes.length) capacity *= 2;
      const grown = new Uint8Array(capacity);
      grown.set(this.content());
      this.data = grown;
    }
    this.data.set(bytes, this.length);
    if (bytes.length > 0) this.writes.push({ offset: this.length, length: bytes.length });
    this.length += bytes.length;
  }

  reset(content: Uint8Array): void {
    this.data = new Uint8Array(Math.max(64, content.length));
    this.data.set(content);
    this.length = content.length;
    this.durable = content.slice();
    this.appendOnly = true;
    this.writes = [];
  }
}

// The durable bytes, then each kept unsynced write in place, lost ones before the last kept as zeros.
function keptContent(inode: Inode, kept: readonly boolean[]): Uint8Array {
  const writes = inode.writes;
  if (kept.length !== writes.length) {
    throw new RangeError(
      `Kept writes must flag each of ${writes.length} writes, got ${kept.length}`,
    );
  }
  const lastKept = kept.lastIndexOf(true);
  const base = inode.durable.length;
  const end = lastKept < 0 ? base : writes[lastKept].offset + writes[lastKept].length;
  const out = new Uint8Array(end);
  out.set(inode.durable);
  for (let k = 0; k <= lastKept; k++) {
    const w = writes[k];
    if (kept[k]) out.set(inode.data.subarray(w.offset, w.offset + w.length), w.offset);
  }
  return out;
}

/**
 * An in-memory disk with fault injection, for the simulator and tests. It has no clock or
 * randomness of its own: torn tails are chosen by an injected function.
 *
 * The model: file data is durable only once `syncData` is called on the file; a file's name
 * (creation, rename, removal) is durable only once its directory is synced. `crash()` rolls the
 * namespace back to the last directory sync and each file back to its last data sync, optionally
 * keeping a prefix of the unsynced appended bytes, or any subset of the unsynced appends (lost
 * ones before a kept one read as zeros). Directories themselves are durable as soon as
 * they are made.
 */
export class SimFs implements Fs {
  #live = new Map<string, Inode>();
  #durable = new Map<string, Inode>();
  #dirs = new Set<string>(["/", "."]);
  #epoch = 0;
  /** Calls of `syncData` so far. */
  syncs = 0;
  /** Calls of `syncDir` so far. */
  dirSyncs = 0;
  /** Bytes passed to `write` so far. */
  bytesWritten = 0;
  /** Crashes so far. */
  crashes = 0;
  /**
   * Called before every mutating operation with its name and path; if it throws, the operation
   * does not happen and the error reaches the caller. Use it to crash at a chosen step.
   */
  faultHook: ((op: SimFsOp, path: string) => void) | undefined = undefined;
  /**
   * A fault for tests: `syncData` returns without making anything durable, as if the storage
   * code forgot to fsync (or the disk lied). A crash then loses "acknowledged" data, which the
   * simulator's checks must notice.
   */
  ignoreSyncData = false;

  #norm(path: string): string {
    let p = path.replace(/\/+/g, "/");
    if (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1);
    return p;
  }

  #fault(op: SimFsOp, path: string): void {
    this.faultHook?.(op, path);
  }

  #inode(path: string): Inode {
    const inode = this.#live.get(this.#norm(path));
    if (inode === undefined) throw new Deno.errors.NotFound(`No such file: "${path}"`);
    return inode;
  }

  #requireDir(path: string): void {
    const dir = parentDir(this.#norm(path));
    if (!this.#dirs.has(dir)) throw new Deno.errors.NotFound(`No such directory: "${dir}"`);
  }

  /** Whether a file or directory exists at `path`. */
  exists(path: string): boolean {
    const p = this.#norm(path);
    return this.#live.has(p) || this.#dirs.has(p);
  }

  /** Creates the directory `path` and any missing parents (durably, see the class notes). */
  mkdir(path: string): void {
    let p = this.#norm(path);
    while (!this.#dirs.has(p)) {
      if (this.#live.has(p)) throw new Deno.errors.AlreadyExists(`A file is in the way: "${p}"`);
      this.#dirs.add(p);
      p = parentDir(p);
    }
  }

  /** Names of the files directly in `dir`, sorted. */
  list(dir: string): string[] {
    const d = this.#norm(dir);
    if (!this.#dirs.has(d)) throw new Deno.errors.NotFound(`No such directory: "${dir}"`);
    const names: string[] = [];
    for (const p of this.#live.keys()) {
      if (parentDir(p) === d) names.push(p.slice(p.lastIndexOf("/") + 1));
    }
    return names.sort();
  }

  /** A copy of the whole content of the file at `path`. */
  readFile(path: string): Uint8Array {
    return this.#inode(path).content().slice();
  }

  /** Size in bytes of the file at `path`. */
  size(path: string): number {
    return this.#inode(path).length;
  }

  /** Opens `path` for appending, creating it when missing. */
  openAppend(path: string): FsFile {
    const p = this.#norm(path);
    let inode = this.#live.get(p);
    if (inode === undefined) {
      this.#requireDir(p);
      this.#fault("create", p);
      inode = new Inode();
      this.#live.set(p, inode);
    }
    return this.#handle(p, inode);
  }

  #handle(path: string, inode: Inode): FsFile {
    const epoch = this.#epoch;
    let closed = false;
    const check = () => {
      if (closed) throw new Deno.errors.BadResource(`File is closed: "${path}"`);
      if (epoch !== this.#epoch) {
        throw new Deno.errors.BadResource(`File was open at a crash: "${path}"`);
      }
    };
    return {
      path,
      write: (bytes: Uint8Array) => {
        check();
        this.#fault("write", path);
        inode.append(bytes);
        this.bytesWritten += bytes.length;
      },
      syncData: () => {
        check();
        this.#fault("syncData", path);
        if (this.ignoreSyncData) return;
        inode.durable = inode.content().slice();
        inode.appendOnly = true;
        inode.writes = [];
        this.syncs++;
      },
      // The simulated disk has no threads: the sync happens at the call.
      syncDataAsync() {
        try {
          this.syncData();
          return Promise.resolve();
        } catch (e) {
          return Promise.reject(e);
        }
      },
      close: () => {
        check();
        closed = true;
      },
    };
  }

  /** Cuts the file at `path` to `length` bytes. */
  truncate(path: string, length: number): void {
    const inode = this.#inode(path);
    this.#fault("truncate", this.#norm(path));
    if (length < inode.length) {
      inode.length = length;
      inode.appendOnly = false;
      inode.writes = [];
    } else if (length > inode.length) {
      inode.append(new Uint8Array(length - inode.length));
    }
  }

  /** Renames `from` to `to`, replacing `to`. */
  rename(from: string, to: string): void {
    const inode = this.#inode(from);
    const t = this.#norm(to);
    this.#requireDir(t);
    this.#fault("rename", this.#norm(from));
    this.#live.delete(this.#norm(from));
    this.#live.set(t, inode);
  }

  /** Removes the file at `path`. */
  remove(path: string): void {
    this.#inode(path);
    this.#fault("remove", this.#norm(path));
    this.#live.delete(this.#norm(path));
  }

  /** Makes the names of the files in `dir` durable. */
  syncDir(dir: string): void {
    const d = this.#norm(dir);
    if (!this.#dirs.has(d)) throw new Deno.errors.NotFound(`No such directory: "${dir}"`);
    this.#fault("syncDir", d);
    for (const p of [...this.#durable.keys()]) {
      if (parentDir(p) === d && !this.#live.has(p)) this.#durable.delete(p);
    }
    for (const [p, inode] of this.#live) if (parentDir(p) === d) this.#durable.set(p, inode);
    this.dirSyncs++;
  }

  /**
   * Loses everything not yet durable, as a power cut would: names roll back to the last
   * directory sync, contents to the last data sync (plus a torn tail when `tornTail` keeps
   * some unsynced appended bytes). Files open before the crash can no longer be used.
   */
  crash(options: CrashOptions = {}): void {
    const survivors = new Map<string, Inode>();
    const seen = new Set<Inode>();
    for (const [p, inode] of this.#durable) {
      if (!seen.has(inode)) {
        seen.add(inode);
        let content = inode.durable;
        const unsynced = inode.length - inode.durable.length;
        if (options.keptWrites !== undefined && inode.appendOnly && unsynced > 0) {
          content = keptContent(inode, options.keptWrites(p, inode.writes));
        } else if (options.tornTail !== undefined && inode.appendOnly && unsynced > 0) {
          const keep = options.tornTail(p, unsynced);
          if (!Number.isInteger(keep) || keep < 0 || keep > unsynced) {
            throw new RangeError(`Torn tail must keep 0 to ${unsynced} bytes, got ${keep}`);
          }
          content = inode.content().slice(0, inode.durable.length + keep);
        }
        inode.reset(content);
      }
      survivors.set(p, inode);
    }
    this.#live = survivors;
    this.#durable = new Map(survivors);
    this.#epoch++;
    this.crashes++;
  }

  /** Flips bits of the byte at `offset` of `path`, on disk and in what reads see (a bad sector). */
  corrupt(path: string, offset: number, xor = 0xff): void {
    const inode = this.#inode(path);
    if (offset < 0 || offset >= inode.length) {
      throw new RangeError(`Offset ${offset} is outside "${path}" of ${inode.length} bytes`);
    }
    inode.data[offset] ^= xor;
    if (offset < inode.durable.length) inode.durable[offset] ^= xor;
  }

  /** Bytes of `path` that would survive a crash without a torn tail (empty if its name would not). */
  durableContent(path: string): Uint8Array {
    const inode = this.#durable.get(this.#norm(path));
    return inode === undefined ? new Uint8Array(0) : inode.durable.slice();
  }
}
