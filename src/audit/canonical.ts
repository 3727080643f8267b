import { createHash } from "node:crypto";

/**
 * Canonical JSON: object keys sorted by UTF-16 code unit order (JSON.stringify's own order for
 * arrays and primitives), no whitespace. Two equal values always give the same bytes, so a hash
 * over it is stable across processes and Node versions.
 *
 * Only JSON values are accepted; records are normalized (see redact.ts) before they get here.
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("canonicalJson: non-finite number");
      return JSON.stringify(value);
    case "object": {
      // Plain loops: a traced run appends a thousand records, each serialized here.
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) out += (i ? "," : "") + canonicalJson(value[i]);
        return out + "]";
      }
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).sort();
      let out = "{";
      let first = true;
      for (const k of keys) {
        const v = obj[k];
        if (v === undefined) continue;
        out += (first ? "" : ",") + JSON.stringify(k) + ":" + canonicalJson(v);
        first = false;
      }
      return out + "}";
    }
    default:
      throw new TypeError(`canonicalJson: unsupported type ${typeof value}`);
  }
}

/**
 * A record's canonical JSON and its hash, serializing it once: the hash is over the canonical
 * JSON without `hash` (as recordHash), and the line is the same with `hash` in its sorted place.
 */
export function hashedRecordJson(unhashed: Record<string, unknown>): { hash: string; json: string } {
  const keys = Object.keys(unhashed).filter((k) => k !== "hash" && unhashed[k] !== undefined).sort();
  const parts = keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(unhashed[k]));
  const hash = sha256Hex("{" + parts.join(",") + "}");
  let at = keys.findIndex((k) => k > "hash");
  if (at === -1) at = keys.length;
  parts.splice(at, 0, `"hash":${JSON.stringify(hash)}`);
  return { hash, json: "{" + parts.join(",") + "}" };
}

export function sha256Hex(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The hash of a record is over its canonical JSON without the `hash` field itself. */
export function recordHash(record: Record<string, unknown>): string {
  const { hash: _omit, ...rest } = record;
  return sha256Hex(canonicalJson(rest));
}

export const GENESIS_HASH = "0".repeat(64);
