/**
 * The metadata store (src/kv): the replicated state machine with etcd's revision model, its
 * command codec, and the ordered map beneath it.
 *
 * @example
 * ```ts
 * import { encodeCommand, MetadataStore, utf8 } from "./mod.ts";
 * const store = new MetadataStore();
 * const cas = encodeCommand({
 *   type: "txn",
 *   compare: [{ key: "/leader", target: "createRevision", result: "equal", value: 0 }],
 *   success: [{ type: "put", key: "/leader", value: utf8("n1"), prevKv: false }],
 *   failure: [],
 * });
 * const result = store.apply(cas, 1);
 * if (result.status !== "applied" || result.response.type !== "txn") throw new Error();
 * if (!result.response.succeeded || store.getString("/leader") !== "n1") throw new Error();
 * ```
 *
 * @module
 */

export * from "./types.ts";
export * from "./bytes.ts";
export * from "./command.ts";
export * from "./sorted_map.ts";
export * from "./store.ts";
export * from "./auth.ts";
