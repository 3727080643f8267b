import { isUtf8 } from "node:buffer";
import { PetriError } from "../errors.js";
import { MAX_COMPONENT_BYTES, MAX_PATH_BYTES, parseRelPath } from "./paths.js";

/**
 * File names on Linux are bytes, not text: sandboxed code can create names that are not valid
 * UTF-8, and JSON cannot carry them. The agreed scheme, used by every JSON object that names a
 * workspace file (listings, run change sets, audit records, sync plans):
 *
 *   - `path`: the name for display, invalid bytes replaced by U+FFFD (lossy, never used to open);
 *   - `path_b64`: base64 of the raw bytes, present only when the name is not valid UTF-8.
 *
 * Wherever the API accepts a path to read or delete a file it also accepts `path_b64`, so every
 * file a run created can be downloaded and removed again.
 *
 * Internally a workspace path is a `WsPath`: an array of components, each a string (valid UTF-8)
 * or a Buffer (raw bytes). Node's fs functions take Buffer paths, so both open the same file.
 */
export type NamePart = string | Buffer;
export type WsPath = NamePart[];

export interface PathFields {
  path: string;
  path_b64?: string;
}

/** Turns a directory entry's raw bytes into the component used internally: a string when it is UTF-8. */
export function nameFromBytes(raw: Buffer): NamePart {
  return isUtf8(raw) ? raw.toString("utf8") : Buffer.from(raw);
}

/** The raw bytes of a path (components joined by "/"). */
export function pathBytes(parts: WsPath): Buffer {
  const bufs: Buffer[] = [];
  parts.forEach((p, i) => {
    if (i > 0) bufs.push(SLASH);
    bufs.push(typeof p === "string" ? Buffer.from(p, "utf8") : p);
  });
  return Buffer.concat(bufs);
}
const SLASH = Buffer.from("/");

/** True when every component is valid UTF-8 (then `path` alone names the file exactly). */
export function isTextPath(parts: WsPath): boolean {
  return parts.every((p) => typeof p === "string");
}

/** `{ path, path_b64? }` for a path given as components or as raw bytes. */
export function pathFields(p: WsPath | Buffer): PathFields {
  if (!Buffer.isBuffer(p) && isTextPath(p)) return { path: (p as string[]).join("/") };
  const raw = Buffer.isBuffer(p) ? p : pathBytes(p);
  if (isUtf8(raw)) return { path: raw.toString("utf8") };
  // toString("utf8") replaces each invalid sequence with U+FFFD: a readable, lossy label.
  return { path: raw.toString("utf8"), path_b64: raw.toString("base64") };
}

/** Display form of a path (lossy for non-UTF-8 names). */
export function displayPath(parts: WsPath): string {
  return pathFields(parts).path;
}

/**
 * A stable string key for a path that is exact for every byte sequence: the display string for
 * UTF-8 paths (so existing maps keyed by `path` keep working) and "\0b64:" + base64 otherwise
 * (NUL never occurs in a real path, so the two forms cannot collide).
 */
export function pathKey(parts: WsPath): string {
  const f = pathFields(parts);
  return f.path_b64 === undefined ? f.path : `\0b64:${f.path_b64}`;
}

/** Inverse of pathKey. */
export function pathFromKey(key: string): WsPath {
  if (key.startsWith("\0b64:")) return splitBytes(Buffer.from(key.slice(5), "base64"));
  return key === "" ? [] : key.split("/");
}

/** Splits raw path bytes at "/" into components (each a string when it is valid UTF-8). */
export function splitBytes(raw: Buffer): WsPath {
  const out: WsPath = [];
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    if (i === raw.length || raw[i] === 0x2f) {
      if (i > start) out.push(nameFromBytes(raw.subarray(start, i)));
      start = i + 1;
    }
  }
  return out;
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Parses a client-supplied `path_b64` with the same rules as parseRelPath: relative, no "..",
 * no NUL or control bytes, bounded lengths. Components that are valid UTF-8 come back as strings.
 */
export function parseRelPathB64(input: unknown, opts: { allowRoot?: boolean } = {}): WsPath {
  if (typeof input !== "string" || !B64.test(input.replace(/-/g, "+").replace(/_/g, "/"))) {
    throw new PetriError("INVALID_PATH", "path_b64 must be base64");
  }
  const raw = Buffer.from(input, "base64");
  if (raw.length > MAX_PATH_BYTES) throw new PetriError("INVALID_PATH", `path is longer than ${MAX_PATH_BYTES} bytes`);
  if (raw[0] === 0x2f) throw new PetriError("INVALID_PATH", "path must be relative to the workspace, not absolute");
  for (const b of raw) {
    if (b === 0) throw new PetriError("INVALID_PATH", "path must not contain NUL bytes");
    if (b < 0x20 || b === 0x7f) throw new PetriError("INVALID_PATH", "path must not contain control characters");
    if (b === 0x5c) throw new PetriError("INVALID_PATH", "path must use / as separator");
  }
  const parts = splitBytes(raw).filter((p) => !(typeof p === "string" && p === "."));
  for (const p of parts) {
    if (typeof p === "string" && p === "..") throw new PetriError("INVALID_PATH", "path must not contain '..'");
    if ((typeof p === "string" ? Buffer.byteLength(p) : p.length) > MAX_COMPONENT_BYTES) {
      throw new PetriError("INVALID_PATH", `path component longer than ${MAX_COMPONENT_BYTES} bytes`);
    }
  }
  if (parts.length === 0 && !opts.allowRoot) throw new PetriError("INVALID_PATH", "path is empty");
  return parts;
}

/**
 * The path a request names: `path_b64` (exact bytes) when given, else `path`. Exactly one of
 * them must be present.
 */
export function parsePathInput(input: { path?: unknown; path_b64?: unknown }, opts: { allowRoot?: boolean } = {}): WsPath {
  if (input.path_b64 !== undefined && input.path_b64 !== null) {
    if (input.path !== undefined && input.path !== null && input.path !== "") {
      throw new PetriError("VALIDATION_ERROR", "give either path or path_b64, not both");
    }
    return parseRelPathB64(input.path_b64, opts);
  }
  return parseRelPath(input.path ?? (opts.allowRoot ? "" : undefined), opts);
}
