/**
 * The bytes of a {@linkcode MetadataStore} snapshot: the store's {@linkcode StoreSnapshot} as
 * UTF-8 JSON (format 1). One codec for every host — the simulator, the real server and tests —
 * so a snapshot taken by one restores in another.
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

import { MetadataStore, type MetadataStoreOptions, type StoreSnapshot } from "../kv/store.ts";

/** Serializes the whole store (keys, revisions, sessions, applied index) to bytes. */
export function encodeStoreSnapshot(store: MetadataStore): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(store.snapshot()));
}

/**
 * Restores a store from bytes made by {@linkcode encodeStoreSnapshot}. Throws with a clear message
 * when they are not such a snapshot.
 */
export function decodeStoreSnapshot(
  bytes: Uint8Array,
  options: MetadataStoreOptions = {},
): MetadataStore {
  let parsed: StoreSnapshot;
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new Error(
      `Snapshot is invalid: not UTF-8 JSON (${bytes.byteLength} bytes): ${(e as Error).message}`,
    );
  }
  return MetadataStore.fromSnapshot(parsed, options);
}
