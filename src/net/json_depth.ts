/**
 * A guard against deeply nested JSON: the nesting depth of a request body is measured on its bytes
 * before `JSON.parse` builds anything, so a 1 MB body of half a million brackets costs one linear
 * scan and a 400, not a parse, a deep object and recursive walks over it.
 *
 * @module
 */

/** Deepest JSON nesting a request may have; etcd's requests need at most 5 levels. */
export const JSON_DEPTH_MAX = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * The byte offset at which `bytes` (JSON text) nests deeper than `depthMax` arrays and objects,
 * or -1 when it does not. Brackets inside strings do not count; malformed JSON is left for the
 * parser to refuse.
 */
export function jsonTooDeepAt(bytes: Uint8Array, depthMax: number = JSON_DEPTH_MAX): number {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) {
      inString = true;
    } else if (b === OPEN_ARRAY || b === OPEN_OBJECT) {
      if (++depth > depthMax) return i;
    } else if (b === CLOSE_ARRAY || b === CLOSE_OBJECT) {
      depth--;
    }
  }
  return -1;
}
