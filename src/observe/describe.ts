/**
 * Short human-readable renderings of commands and store contents, for node tables and logs.
 *
 * @module
 */

import { decodeCommand } from "../kv/command.ts";
import type { MetadataStore } from "../kv/store.ts";
import type { Command, KeyRange } from "../kv/types.ts";

const decoder = new TextDecoder();

function short(text: string, max = 24): string {
  const oneLine = text.replaceAll("\n", "\\n");
  return oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine;
}

function rangeText(r: KeyRange): string {
  if ("prefix" in r) return `${short(r.prefix)}*`;
  if ("fromKey" in r) return `${short(r.fromKey)}..`;
  return r.rangeEnd === undefined ? short(r.key) : `[${short(r.key)}, ${short(r.rangeEnd)})`;
}

function commandText(c: Command): string {
  switch (c.type) {
    case "put":
      return `PUT ${short(c.key)}=${short(decoder.decode(c.value), 16)}`;
    case "delete":
      return `DEL ${rangeText(c.range)}`;
    case "range":
      return `RANGE ${rangeText(c.range)}`;
    case "txn":
      return `TXN ${c.compare.length} compare(s)`;
    case "session":
      return `${commandText(c.command)} (${c.clientId}#${c.seq})`;
    default:
      return (c as { type: string }).type.toUpperCase();
  }
}

/** A command's bytes as e.g. `PUT /a=1`; undecodable bytes as `<12 bytes>`. */
export function describeCommand(bytes: Uint8Array): string {
  try {
    return commandText(decodeCommand(bytes));
  } catch {
    return `<${bytes.byteLength} bytes>`;
  }
}

/** Every key of a store with its value as text, in key order. */
export function storeStrings(store: MetadataStore): [string, string][] {
  const out: [string, string][] = [];
  for (const kv of store.entries()) out.push([kv.key, decoder.decode(kv.value)]);
  return out;
}
