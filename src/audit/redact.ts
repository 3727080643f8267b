import { canonicalJson } from "./canonical.js";

/**
 * The redaction guard. Callers are expected to pass only names of environment variables and
 * secrets, never their values; this is the defensive second line in case one forgets:
 *
 * - `env` / `environment` / `env_vars`: only names survive. An array keeps each string up to its
 *   first "=" ("FOO=bar" → "FOO"); an object keeps its sorted keys; anything else is dropped.
 * - A key whose name ends in value(s), password, passwd, passphrase, secret(s), token(s),
 *   api_key, private_key, credential(s), authorization or cookie (snake, kebab or camel case,
 *   any depth) has its value replaced by "[REDACTED]". `secret_name`, `token_count`, `key_id`
 *   are kept: they do not end in one of those words.
 * - A string that looks like a credential ("Bearer …", "Basic …", "Splunk …", a PEM private key)
 *   is replaced by "[REDACTED]", and the password part of a URL ("https://u:pw@host") by "***".
 *
 * Every replaced path is listed in `detail.redacted_paths` so a reviewer sees that something was there.
 */
export const REDACTED = "[REDACTED]";

const ENV_KEYS = new Set(["env", "environment", "env_vars", "env_names"]);
const SECRET_KEY =
  /(?:^|_)(?:values?|password|passwd|passphrase|secrets?|tokens?|api_?key|private_?key|credentials?|authorization|cookie|set_cookie)$/;
const SECRET_STRING = /^\s*(?:bearer|basic|splunk|token)\s+\S{6,}|-----BEGIN [A-Z ]*PRIVATE KEY-----/i;
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s/:@]*):[^\s/@]+@/gi;

const MAX_DEPTH = 32;
const MAX_STRING = 64 * 1024;
/** Canonical size of `detail` above which its largest values are dropped (listed in `dropped_for_size`). */
export const MAX_DETAIL_BYTES = 512 * 1024;

function snake(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/[-.\s]/g, "_").toLowerCase();
}

export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(snake(key));
}

function envNames(v: unknown): string[] | undefined {
  if (Array.isArray(v)) {
    return v.filter((x): x is string => typeof x === "string").map((s) => s.split("=")[0]!.slice(0, 256));
  }
  if (v !== null && typeof v === "object") return Object.keys(v).sort();
  return undefined;
}

function cleanString(s: string, path: string, redacted: string[]): string {
  if (SECRET_STRING.test(s)) {
    redacted.push(path);
    return REDACTED;
  }
  let out = s;
  if (out.includes("@") && out.includes("://")) {
    const replaced = out.replace(URL_PASSWORD, "$1:***@");
    if (replaced !== out) redacted.push(path);
    out = replaced;
  }
  return out.length > MAX_STRING ? out.slice(0, MAX_STRING) + "…[truncated]" : out;
}

/** Turns any value into plain JSON (no undefined, no NaN, no cycles), redacting on the way. */
function clean(v: unknown, path: string, depth: number, redacted: string[], seen: Set<object>): unknown {
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case "string":
      return cleanString(v, path, redacted);
    case "number":
      return Number.isFinite(v) ? v : null;
    case "boolean":
      return v;
    case "bigint":
      return v.toString();
    case "object":
      break;
    default:
      return null;
  }
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? null : v.toISOString();
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `[${v.byteLength} bytes]`;
  if (depth >= MAX_DEPTH || seen.has(v as object)) return "[omitted]";
  seen.add(v as object);
  try {
    if (Array.isArray(v)) return v.map((x, i) => clean(x, `${path}[${i}]`, depth + 1, redacted, seen));
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (x === undefined || typeof x === "function" || typeof x === "symbol") continue;
      const p = path ? `${path}.${k}` : k;
      if (ENV_KEYS.has(k.toLowerCase())) {
        const names = envNames(x);
        const hadValues = Array.isArray(x)
          ? x.some((e) => typeof e !== "string" || e.includes("="))
          : names === undefined ? x !== null : names.length > 0;
        if (hadValues) redacted.push(p);
        if (names !== undefined) out[k] = names;
        continue;
      }
      if (isSecretKey(k)) {
        if (x !== null && x !== "") {
          out[k] = REDACTED;
          redacted.push(p);
        } else out[k] = null;
        continue;
      }
      out[k] = clean(x, p, depth + 1, redacted, seen);
    }
    return out;
  } finally {
    seen.delete(v as object);
  }
}

/**
 * Normalizes and redacts an event's `detail`. Returns a fresh object; the caller's is untouched.
 * Also bounds its size: if canonical JSON exceeds MAX_DETAIL_BYTES the largest top-level values are
 * dropped (their names and sizes listed in `dropped_for_size`) rather than losing the whole record.
 */
export function sanitizeDetail(detail: unknown): Record<string, unknown> {
  if (detail === undefined || detail === null) return {};
  if (typeof detail !== "object" || Array.isArray(detail)) throw new TypeError("audit detail must be a plain object");
  const redacted: string[] = [];
  const out = clean(detail, "", 0, redacted, new Set()) as Record<string, unknown>;
  if (redacted.length) out.redacted_paths = [...new Set(redacted)];
  let size = Buffer.byteLength(canonicalJson(out));
  if (size > MAX_DETAIL_BYTES) {
    const bySize = Object.keys(out)
      .filter((k) => k !== "redacted_paths")
      .map((k) => ({ k, n: Buffer.byteLength(canonicalJson(out[k])) }))
      .sort((a, b) => b.n - a.n);
    const dropped: Record<string, number> = {};
    for (const { k, n } of bySize) {
      if (size <= MAX_DETAIL_BYTES) break;
      delete out[k];
      dropped[k] = n;
      size -= n;
    }
    out.dropped_for_size = dropped;
  }
  return out;
}
