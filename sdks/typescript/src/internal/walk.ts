import fs from "node:fs";
import path from "node:path";
import { DEFAULT_IGNORES, IGNORE_FILE, IgnoreMatcher } from "./ignore.js";

export interface LocalFile {
  /** Path relative to the walked directory, `/`-separated. */
  path: string;
  abs: string;
  size: number;
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
}

export interface WalkOptions {
  /** Apply `.git`, `node_modules`, `__pycache__`, `.venv` skipping (default true). */
  defaultIgnores?: boolean;
  /** Extra gitignore-syntax patterns, applied after `.petriignore`. */
  ignore?: string[];
}

/** Builds the matcher for a local directory: defaults, then its `.petriignore`, then extra patterns. */
export function matcherFor(root: string, opts: WalkOptions = {}): IgnoreMatcher {
  const base = opts.defaultIgnores === false ? [] : [...DEFAULT_IGNORES];
  let text = "";
  try {
    text = fs.readFileSync(path.join(root, IGNORE_FILE), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  return new IgnoreMatcher([...base, ...text.split("\n"), ...(opts.ignore ?? [])]);
}

/** A local file as `sync` and `files.upload` would send it. */
export interface LocalEntry {
  /** Path relative to the directory, `/`-separated. */
  path: string;
  /** Bytes. */
  size: number;
}

/** The files `sandbox.sync(localDir)` and `files.upload(localDir)` would send, after the ignore rules. */
export function listLocalFiles(localDir: string, opts: WalkOptions = {}): LocalEntry[] {
  return walkLocal(localDir, opts).map((f) => ({ path: f.path, size: f.size }));
}

/**
 * Lists the regular files under `root` that the ignore rules keep, sorted by path. Symlinks are
 * skipped (following them could send files from outside the project); empty directories are not
 * represented, as in git.
 */
export function walkLocal(root: string, opts: WalkOptions = {}): LocalFile[] {
  const st = fs.statSync(root);
  if (!st.isDirectory()) throw new Error(`${root} is not a directory`);
  const matcher = matcherFor(root, opts);
  const out: LocalFile[] = [];
  const visit = (dirAbs: string, dirRel: string) => {
    for (const ent of fs.readdirSync(dirAbs, { withFileTypes: true })) {
      const rel = dirRel ? `${dirRel}/${ent.name}` : ent.name;
      const abs = path.join(dirAbs, ent.name);
      if (ent.isDirectory()) {
        if (!matcher.ignores(rel, true)) visit(abs, rel);
      } else if (ent.isFile()) {
        if (matcher.ignores(rel, false)) continue;
        const s = fs.statSync(abs);
        out.push({ path: rel, abs, size: s.size, mode: s.mode & 0o7777, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, ino: s.ino });
      }
    }
  };
  visit(root, "");
  out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return out;
}
