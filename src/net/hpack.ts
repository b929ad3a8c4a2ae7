/**
 * HPACK (RFC 7541), the header compression of HTTP/2, for src/net/h2.ts: a decoder with the
 * dynamic table, table size updates and Huffman-coded strings, and an encoder that writes static
 * table indexes and literals without Huffman coding (it never adds to the peer's dynamic table, so
 * the peer's SETTINGS_HEADER_TABLE_SIZE never matters to it).
 *
 * Names and values are handled as Latin-1 strings: one character per byte, so lengths in
 * characters are the byte lengths HPACK counts (gRPC header values are ASCII; binary metadata is
 * base64 text).
 *
 * @module
 */

/** A header block that cannot be decoded: HTTP/2's COMPRESSION_ERROR, for the whole connection. */
export class HpackError extends Error {}

/** A decoded header field. */
export type HeaderField = [name: string, value: string];

/** RFC 7541 Appendix A: the static table, index 1..61 as [name, value] (index 0 unused). */
const STATIC_TABLE: readonly (readonly [string, string])[] = [
  ["", ""],
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * RFC 7541 Appendix B: the Huffman code of each symbol 0..256 (256 is EOS), as bit length and
 * code value (right-aligned), four symbols per line.
 */
// deno-fmt-ignore
const HUFFMAN_CODES: readonly number[] = [
  13, 0x1ff8, 23, 0x7fffd8, 28, 0xfffffe2, 28, 0xfffffe3, // 0
  28, 0xfffffe4, 28, 0xfffffe5, 28, 0xfffffe6, 28, 0xfffffe7, // 4
  28, 0xfffffe8, 24, 0xffffea, 30, 0x3ffffffc, 28, 0xfffffe9, // 8
  28, 0xfffffea, 30, 0x3ffffffd, 28, 0xfffffeb, 28, 0xfffffec, // 12
  28, 0xfffffed, 28, 0xfffffee, 28, 0xfffffef, 28, 0xffffff0, // 16
  28, 0xffffff1, 28, 0xffffff2, 30, 0x3ffffffe, 28, 0xffffff3, // 20
  28, 0xffffff4, 28, 0xffffff5, 28, 0xffffff6, 28, 0xffffff7, // 24
  28, 0xffffff8, 28, 0xffffff9, 28, 0xffffffa, 28, 0xffffffb, // 28
  6, 0x14, 10, 0x3f8, 10, 0x3f9, 12, 0xffa, // 32
  13, 0x1ff9, 6, 0x15, 8, 0xf8, 11, 0x7fa, // 36
  10, 0x3fa, 10, 0x3fb, 8, 0xf9, 11, 0x7fb, // 40
  8, 0xfa, 6, 0x16, 6, 0x17, 6, 0x18, // 44
  5, 0x0, 5, 0x1, 5, 0x2, 6, 0x19, // 48
  6, 0x1a, 6, 0x1b, 6, 0x1c, 6, 0x1d, // 52
  6, 0x1e, 6, 0x1f, 7, 0x5c, 8, 0xfb, // 56
  15, 0x7ffc, 6, 0x20, 12, 0xffb, 10, 0x3fc, // 60
  13, 0x1ffa, 6, 0x21, 7, 0x5d, 7, 0x5e, // 64
  7, 0x5f, 7, 0x60, 7, 0x61, 7, 0x62, // 68
  7, 0x63, 7, 0x64, 7, 0x65, 7, 0x66, // 72
  7, 0x67, 7, 0x68, 7, 0x69, 7, 0x6a, // 76
  7, 0x6b, 7, 0x6c, 7, 0x6d, 7, 0x6e, // 80
  7, 0x6f, 7, 0x70, 7, 0x71, 7, 0x72, // 84
  8, 0xfc, 7, 0x73, 8, 0xfd, 13, 0x1ffb, // 88
  19, 0x7fff0, 13, 0x1ffc, 14, 0x3ffc, 6, 0x22, // 92
  15, 0x7ffd, 5, 0x3, 6, 0x23, 5, 0x4, // 96
  6, 0x24, 5, 0x5, 6, 0x25, 6, 0x26, // 100
  6, 0x27, 5, 0x6, 7, 0x74, 7, 0x75, // 104
  6, 0x28, 6, 0x29, 6, 0x2a, 5, 0x7, // 108
  6, 0x2b, 7, 0x76, 6, 0x2c, 5, 0x8, // 112
  5, 0x9, 6, 0x2d, 7, 0x77, 7, 0x78, // 116
  7, 0x79, 7, 0x7a, 7, 0x7b, 15, 0x7ffe, // 120
  11, 0x7fc, 14, 0x3ffd, 13, 0x1ffd, 28, 0xffffffc, // 124
  20, 0xfffe6, 22, 0x3fffd2, 20, 0xfffe7, 20, 0xfffe8, // 128
  22, 0x3fffd3, 22, 0x3fffd4, 22, 0x3fffd5, 23, 0x7fffd9, // 132
  22, 0x3fffd6, 23, 0x7fffda, 23, 0x7fffdb, 23, 0x7fffdc, // 136
  23, 0x7fffdd, 23, 0x7fffde, 24, 0xffffeb, 23, 0x7fffdf, // 140
  24, 0xffffec, 24, 0xffffed, 22, 0x3fffd7, 23, 0x7fffe0, // 144
  24, 0xffffee, 23, 0x7fffe1, 23, 0x7fffe2, 23, 0x7fffe3, // 148
  23, 0x7fffe4, 21, 0x1fffdc, 22, 0x3fffd8, 23, 0x7fffe5, // 152
  22, 0x3fffd9, 23, 0x7fffe6, 23, 0x7fffe7, 24, 0xffffef, // 156
  22, 0x3fffda, 21, 0x1fffdd, 20, 0xfffe9, 22, 0x3fffdb, // 160
  22, 0x3fffdc, 23, 0x7fffe8, 23, 0x7fffe9, 21, 0x1fffde, // 164
  23, 0x7fffea, 22, 0x3fffdd, 22, 0x3fffde, 24, 0xfffff0, // 168
  21, 0x1fffdf, 22, 0x3fffdf, 23, 0x7fffeb, 23, 0x7fffec, // 172
  21, 0x1fffe0, 21, 0x1fffe1, 22, 0x3fffe0, 21, 0x1fffe2, // 176
  23, 0x7fffed, 22, 0x3fffe1, 23, 0x7fffee, 23, 0x7fffef, // 180
  20, 0xfffea, 22, 0x3fffe2, 22, 0x3fffe3, 22, 0x3fffe4, // 184
  23, 0x7ffff0, 22, 0x3fffe5, 22, 0x3fffe6, 23, 0x7ffff1, // 188
  26, 0x3ffffe0, 26, 0x3ffffe1, 20, 0xfffeb, 19, 0x7fff1, // 192
  22, 0x3fffe7, 23, 0x7ffff2, 22, 0x3fffe8, 25, 0x1ffffec, // 196
  26, 0x3ffffe2, 26, 0x3ffffe3, 26, 0x3ffffe4, 27, 0x7ffffde, // 200
  27, 0x7ffffdf, 26, 0x3ffffe5, 24, 0xfffff1, 25, 0x1ffffed, // 204
  19, 0x7fff2, 21, 0x1fffe3, 26, 0x3ffffe6, 27, 0x7ffffe0, // 208
  27, 0x7ffffe1, 26, 0x3ffffe7, 27, 0x7ffffe2, 24, 0xfffff2, // 212
  21, 0x1fffe4, 21, 0x1fffe5, 26, 0x3ffffe8, 26, 0x3ffffe9, // 216
  28, 0xffffffd, 27, 0x7ffffe3, 27, 0x7ffffe4, 27, 0x7ffffe5, // 220
  20, 0xfffec, 24, 0xfffff3, 20, 0xfffed, 21, 0x1fffe6, // 224
  22, 0x3fffe9, 21, 0x1fffe7, 21, 0x1fffe8, 23, 0x7ffff3, // 228
  22, 0x3fffea, 22, 0x3fffeb, 25, 0x1ffffee, 25, 0x1ffffef, // 232
  24, 0xfffff4, 24, 0xfffff5, 26, 0x3ffffea, 23, 0x7ffff4, // 236
  26, 0x3ffffeb, 27, 0x7ffffe6, 26, 0x3ffffec, 26, 0x3ffffed, // 240
  27, 0x7ffffe7, 27, 0x7ffffe8, 27, 0x7ffffe9, 27, 0x7ffffea, // 244
  27, 0x7ffffeb, 28, 0xffffffe, 27, 0x7ffffec, 27, 0x7ffffed, // 248
  27, 0x7ffffee, 27, 0x7ffffef, 27, 0x7fffff0, 26, 0x3ffffee, // 252
  30, 0x3fffffff, // 256
];

/** Bytes an entry counts in a dynamic table: its name and value and 32 (RFC 7541, 4.1). */
const ENTRY_OVERHEAD = 32;

/**
 * The Huffman decoding tree, built once from {@linkcode HUFFMAN_CODES}: node `n`'s children are at
 * `2n` (bit 0) and `2n + 1` (bit 1); a value ≥ 0 is the next node, `-1 - symbol` a leaf, and
 * `NONE` no code (only EOS's prefix leads there).
 */
const NONE = 0x7fffffff;
const TREE: Int32Array = (() => {
  const tree = new Int32Array(2 * 512).fill(NONE);
  let nodes = 1;
  for (let symbol = 0; symbol <= 256; symbol++) {
    const bits = HUFFMAN_CODES[2 * symbol];
    const code = HUFFMAN_CODES[2 * symbol + 1];
    let node = 0;
    for (let i = bits - 1; i >= 0; i--) {
      const slot = 2 * node + ((code >>> i) & 1);
      if (i === 0) {
        tree[slot] = -1 - symbol;
      } else {
        if (tree[slot] === NONE) tree[slot] = nodes++;
        node = tree[slot];
      }
    }
  }
  return tree;
})();

/** Decodes a Huffman-coded string (RFC 7541, 5.2) to Latin-1 text. */
export function huffmanDecode(bytes: Uint8Array): string {
  let out = "";
  let node = 0;
  // Bits read since the last symbol ended, and whether they were all ones (the only padding).
  let pending = 0;
  let allOnes = true;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    for (let bit = 7; bit >= 0; bit--) {
      const one = (b >>> bit) & 1;
      const next = TREE[2 * node + one];
      pending++;
      if (one === 0) allOnes = false;
      if (next === NONE) throw new HpackError("Invalid Huffman code");
      if (next < 0) {
        const symbol = -1 - next;
        if (symbol === 256) throw new HpackError("Huffman-coded string holds EOS");
        out += String.fromCharCode(symbol);
        node = 0;
        pending = 0;
        allOnes = true;
      } else {
        node = next;
      }
    }
  }
  if (pending > 7) throw new HpackError("Huffman padding longer than 7 bits");
  if (!allOnes) throw new HpackError("Huffman padding is not the prefix of EOS");
  return out;
}

/** Huffman-codes Latin-1 text (for tests and peers; the encoder below writes plain literals). */
export function huffmanEncode(text: string): Uint8Array {
  const out: number[] = [];
  let acc = 0;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const s = text.charCodeAt(i) & 0xff;
    const bits = HUFFMAN_CODES[2 * s];
    const code = HUFFMAN_CODES[2 * s + 1];
    for (let k = bits - 1; k >= 0; k--) {
      acc = (acc << 1) | ((code >>> k) & 1);
      if (++n === 8) {
        out.push(acc & 0xff);
        acc = 0;
        n = 0;
      }
    }
  }
  if (n > 0) out.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) & 0xff);
  return Uint8Array.from(out);
}

/** Latin-1 text of `bytes` (one character per byte). */
function latin1(bytes: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(
      null,
      bytes.subarray(i, Math.min(end, i + 4096)) as unknown as number[],
    );
  }
  return s;
}

/** What {@linkcode HpackDecoder.decode} found in a header block. */
export interface DecodedBlock {
  /** The fields, in order (all of them, or those before the list grew too large). */
  readonly fields: HeaderField[];
  /** The fields' size (names, values and 32 per field) passed the decoder's limit. */
  readonly tooLarge: boolean;
}

/**
 * Decodes header blocks of one connection in order (the dynamic table carries from one to the
 * next). Any error is a connection error (COMPRESSION_ERROR): the table is no longer in step.
 */
export class HpackDecoder {
  /** Dynamic table, newest first. */
  readonly #table: HeaderField[] = [];
  #size = 0;
  /** The size the peer may use: our SETTINGS_HEADER_TABLE_SIZE. */
  readonly #maxAllowed: number;
  /** The size the peer chose (a table size update), at most `#maxAllowed`. */
  #max: number;
  readonly #listBytesMax: number;

  /**
   * @param tableBytesMax our SETTINGS_HEADER_TABLE_SIZE (default 4096)
   * @param listBytesMax most bytes of a decoded header list (names, values, 32 per field)
   */
  constructor(tableBytesMax = 4096, listBytesMax = 16 * 1024) {
    this.#maxAllowed = tableBytesMax;
    this.#max = tableBytesMax;
    this.#listBytesMax = listBytesMax;
  }

  /** Entries in the dynamic table (for tests). */
  get tableLength(): number {
    return this.#table.length;
  }

  /** Bytes the dynamic table holds (for tests). */
  get tableBytes(): number {
    return this.#size;
  }

  #evict(room: number): void {
    while (this.#size + room > this.#max && this.#table.length > 0) {
      const [n, v] = this.#table.pop()!;
      this.#size -= n.length + v.length + ENTRY_OVERHEAD;
    }
  }

  #add(name: string, value: string): void {
    const bytes = name.length + value.length + ENTRY_OVERHEAD;
    if (bytes > this.#max) {
      // An entry larger than the table empties it and is not added (RFC 7541, 4.4).
      this.#table.length = 0;
      this.#size = 0;
      return;
    }
    this.#evict(bytes);
    this.#table.unshift([name, value]);
    this.#size += bytes;
  }

  #field(index: number): HeaderField {
    if (index === 0) throw new HpackError("Header index 0");
    if (index < STATIC_TABLE.length) return STATIC_TABLE[index] as HeaderField;
    const e = this.#table[index - STATIC_TABLE.length];
    if (e === undefined) throw new HpackError(`Header index ${index} is past the tables`);
    return e;
  }

  /** Decodes one complete header block. */
  decode(block: Uint8Array): DecodedBlock {
    const fields: HeaderField[] = [];
    let listBytes = 0;
    let tooLarge = false;
    let pos = 0;
    let fieldSeen = false;
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let v = block[pos++] & mask;
      if (v < mask) return v;
      let shift = 0;
      for (;;) {
        if (pos >= block.length) throw new HpackError("Truncated integer");
        // Past 5 continuation bytes no value fits 31 bits (and 2 ** shift would reach Infinity,
        // making 0 · Infinity a NaN that passes every comparison).
        if (shift > 28) throw new HpackError("Integer too long");
        const b = block[pos++];
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if (v > 0x7fffffff) throw new HpackError("Integer too large");
        if ((b & 0x80) === 0) return v;
      }
    };
    const str = (): string => {
      if (pos >= block.length) throw new HpackError("Truncated string");
      const huffman = (block[pos] & 0x80) !== 0;
      const len = int(7);
      if (pos + len > block.length) throw new HpackError("String runs past the block");
      const start = pos;
      pos += len;
      return huffman ? huffmanDecode(block.subarray(start, pos)) : latin1(block, start, pos);
    };
    const emit = (name: string, value: string) => {
      fieldSeen = true;
      if (tooLarge) return;
      listBytes += name.length + value.length + ENTRY_OVERHEAD;
      if (listBytes > this.#listBytesMax) tooLarge = true;
      else fields.push([name, value]);
    };
    while (pos < block.length) {
      const b = block[pos];
      if (b & 0x80) {
        // Indexed field.
        const [n, v] = this.#field(int(7));
        emit(n, v);
      } else if (b & 0x40) {
        // Literal with incremental indexing.
        const index = int(6);
        const name = index === 0 ? str() : this.#field(index)[0];
        const value = str();
        this.#add(name, value);
        emit(name, value);
      } else if (b & 0x20) {
        // Dynamic table size update: only at the start of a block.
        if (fieldSeen) throw new HpackError("Table size update after a field");
        const size = int(5);
        if (size > this.#maxAllowed) {
          throw new HpackError(`Table size update to ${size}, over ${this.#maxAllowed}`);
        }
        this.#max = size;
        this.#evict(0);
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = int(4);
        const name = index === 0 ? str() : this.#field(index)[0];
        emit(name, str());
      }
    }
    return { fields, tooLarge };
  }
}

/** Static-table indexes by name (the first of each name). */
const STATIC_NAME = new Map<string, number>();
/** Static-table indexes by `name\0value`. */
const STATIC_PAIR = new Map<string, number>();
for (let i = STATIC_TABLE.length - 1; i >= 1; i--) {
  STATIC_NAME.set(STATIC_TABLE[i][0], i);
  STATIC_PAIR.set(`${STATIC_TABLE[i][0]}\0${STATIC_TABLE[i][1]}`, i);
}

/** Appends HPACK's integer with an N-bit prefix (the first byte's high bits are `first`). */
function pushInt(out: number[], first: number, prefixBits: number, v: number): void {
  const mask = (1 << prefixBits) - 1;
  if (v < mask) {
    out.push(first | v);
    return;
  }
  out.push(first | mask);
  v -= mask;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function pushString(out: number[], s: string): void {
  pushInt(out, 0, 7, s.length);
  for (let i = 0; i < s.length; i++) out.push(s.charCodeAt(i) & 0xff);
}

/**
 * Encodes header fields (names in lower case, Latin-1 values): a static-table index where name
 * and value match, else a literal without indexing (with the static name's index when there is
 * one). No Huffman coding, no dynamic table.
 */
export function encodeHeaders(fields: readonly (readonly [string, string])[]): Uint8Array {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const pair = STATIC_PAIR.get(`${name}\0${value}`);
    if (pair !== undefined) {
      pushInt(out, 0x80, 7, pair);
      continue;
    }
    const index = STATIC_NAME.get(name);
    if (index !== undefined) pushInt(out, 0x00, 4, index);
    else {
      out.push(0x00);
      pushString(out, name);
    }
    pushString(out, value);
  }
  return Uint8Array.from(out);
}
