import fs from "node:fs";
import path from "node:path";
import { scanGoImports, isGoStdlib } from "./go-imports.js";
import { isNodeBuiltin, packageOf, scanJsImports } from "./js-imports.js";
import { scanPythonImports, topLevel } from "./python-imports.js";
import { isPythonStdlib } from "./python-names.js";
import type { Ecosystem } from "./specs.js";

/**
 * Reads workspace files for detection. Implementations must never follow a symlink that
 * sandboxed code planted (the server's WorkspaceStore opens every component O_NOFOLLOW).
 */
export interface SourceReader {
  /** The file's text, or null when it is absent, not a regular file, or larger than maxBytes. */
  read(relPath: string, maxBytes: number): string | null;
  /** True when relPath is a regular file (not through a symlink). */
  isFile(relPath: string): boolean;
  /** True when relPath is a directory (not through a symlink). */
  isDir(relPath: string): boolean;
}

export interface Detected {
  /** Third-party top-level names the code imports: Python modules, npm packages, Go import paths. */
  imports: string[];
  /** Workspace files read (the entry and the local modules it imports). */
  files: string[];
  /** True when the scan stopped at its file limit. */
  truncated: boolean;
}

const MAX_FILES = 200;
const MAX_FILE_BYTES = 2 * 1024 * 1024;

/**
 * Detects what the entry (a workspace file, or a snippet with `entry` null) imports, following
 * the workspace modules it imports, so `main.py` → `lib/util.py` → `import requests` is found.
 */
export function detectImports(eco: Ecosystem, reader: SourceReader, entry: { file: string | null; code?: string }): Detected {
  if (eco === "python") return detectPython(reader, entry);
  if (eco === "node") return detectJs(reader, entry);
  return detectGo(reader, entry);
}

function detectPython(reader: SourceReader, entry: { file: string | null; code?: string }): Detected {
  const found = new Set<string>();
  const files: string[] = [];
  const queue: { rel: string | null; text: string }[] = [];
  const seen = new Set<string>();
  let truncated = false;
  const enqueue = (rel: string) => {
    if (seen.has(rel)) return;
    seen.add(rel);
    if (seen.size > MAX_FILES) {
      truncated = true;
      return;
    }
    const text = reader.read(rel, MAX_FILE_BYTES);
    if (text !== null) queue.push({ rel, text });
  };
  // Where absolute imports can come from inside the workspace: the script's directory (sys.path[0]) and /workspace (PYTHONPATH).
  const entryDir = entry.file ? path.posix.dirname(entry.file) : ".";
  const roots = [...new Set([entryDir, "."])];
  /** The workspace file(s) a dotted module resolves to, or null if it is not in the workspace. */
  const local = (dotted: string, base: string[]): string[] | null => {
    const parts = dotted.split(".");
    for (const root of base) {
      const rel = path.posix.join(root, ...parts);
      const top = path.posix.join(root, parts[0]);
      if (reader.isDir(top) || reader.isFile(`${top}.py`)) {
        const out: string[] = [];
        if (reader.isFile(`${rel}.py`)) out.push(`${rel}.py`);
        if (reader.isFile(`${rel}/__init__.py`)) out.push(`${rel}/__init__.py`);
        if (parts.length > 1 && reader.isFile(`${top}/__init__.py`)) out.push(`${top}/__init__.py`);
        return out;
      }
    }
    return null;
  };
  if (entry.file) enqueue(entry.file);
  else queue.push({ rel: null, text: entry.code ?? "" });
  while (queue.length) {
    const { rel, text } = queue.shift()!;
    if (rel) files.push(rel);
    const r = scanPythonImports(text);
    for (const m of r.modules) {
      const top = topLevel(m);
      if (isPythonStdlib(top)) continue;
      const files = local(m, roots);
      if (files) files.forEach(enqueue);
      else found.add(top);
    }
    for (const rimp of r.relative) {
      if (!rel) continue;
      let dir = path.posix.dirname(rel);
      for (let i = 1; i < rimp.level; i++) dir = path.posix.dirname(dir);
      const base = rimp.module ? path.posix.join(dir, ...rimp.module.split(".")) : dir;
      for (const cand of [`${base}.py`, `${base}/__init__.py`, ...rimp.names.map((n) => `${base}/${n}.py`)]) {
        if (!cand.startsWith("..") && reader.isFile(cand)) enqueue(path.posix.normalize(cand));
      }
    }
  }
  return { imports: [...found].sort(), files, truncated };
}

const JS_EXTENSIONS = ["", ".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".tsx", ".jsx", ".json"];

function detectJs(reader: SourceReader, entry: { file: string | null; code?: string }): Detected {
  const found = new Set<string>();
  const files: string[] = [];
  const seen = new Set<string>();
  const queue: { rel: string | null; text: string }[] = [];
  let truncated = false;
  if (entry.file) {
    seen.add(entry.file);
    const t = reader.read(entry.file, MAX_FILE_BYTES);
    if (t !== null) queue.push({ rel: entry.file, text: t });
  } else queue.push({ rel: null, text: entry.code ?? "" });
  while (queue.length) {
    const { rel, text } = queue.shift()!;
    if (rel) files.push(rel);
    if (rel?.endsWith(".json")) continue;
    const r = scanJsImports(text, rel ?? "snippet.mjs");
    for (const spec of r.bare) {
      if (isNodeBuiltin(spec)) continue;
      const pkg = packageOf(spec);
      if (!pkg) continue;
      // A package the workspace ships in its own node_modules is not installed again.
      if (reader.isDir(`node_modules/${pkg}`)) continue;
      found.add(pkg);
    }
    const dir = rel ? path.posix.dirname(rel) : ".";
    for (const spec of r.relative) {
      const base = path.posix.normalize(path.posix.join(dir, spec));
      if (base.startsWith("..")) continue;
      const cands = [...JS_EXTENSIONS.map((e) => base + e), ...JS_EXTENSIONS.slice(1).map((e) => `${base}/index${e}`)];
      // TypeScript sources import "./x.js" meaning "./x.ts".
      if (/\.[cm]?js$/.test(base)) cands.push(base.replace(/\.([cm]?)js$/, ".$1ts"), base.replace(/\.js$/, ".tsx"));
      for (const c of cands) {
        if (seen.has(c)) break;
        const t = reader.read(c, MAX_FILE_BYTES);
        if (t === null) continue;
        seen.add(c);
        if (seen.size > MAX_FILES) truncated = true;
        else queue.push({ rel: c, text: t });
        break;
      }
    }
  }
  return { imports: [...found].sort(), files, truncated };
}

function detectGo(reader: SourceReader, entry: { file: string | null; code?: string }): Detected {
  const found = new Set<string>();
  const files: string[] = [];
  const texts: string[] = [];
  if (entry.file) {
    const t = reader.read(entry.file, MAX_FILE_BYTES);
    if (t !== null) {
      texts.push(t);
      files.push(entry.file);
    }
  } else texts.push(entry.code ?? "");
  // Packages of the workspace's own module are local, not downloads.
  const gomod = reader.read("go.mod", 1024 * 1024);
  const own = gomod ? /^\s*module\s+(\S+)/m.exec(gomod)?.[1] : undefined;
  for (const t of texts) {
    for (const imp of scanGoImports(t)) {
      if (isGoStdlib(imp)) continue;
      if (own && (imp === own || imp.startsWith(own + "/"))) continue;
      found.add(imp);
    }
  }
  return { imports: [...found].sort(), files, truncated: false };
}

/** A SourceReader over a plain directory, for tests and tools (no symlink is followed). */
export function directoryReader(root: string): SourceReader {
  const safe = (rel: string): string | null => {
    const norm = path.posix.normalize(rel);
    if (norm.startsWith("..") || path.isAbsolute(norm)) return null;
    let cur = root;
    for (const part of norm.split("/").filter((p) => p && p !== ".")) {
      cur = path.join(cur, part);
      try {
        if (fs.lstatSync(cur).isSymbolicLink()) return null;
      } catch {
        return null;
      }
    }
    return cur;
  };
  return {
    read(rel, maxBytes) {
      const p = safe(rel);
      if (!p) return null;
      try {
        const st = fs.statSync(p);
        if (!st.isFile() || st.size > maxBytes) return null;
        return fs.readFileSync(p, "utf8");
      } catch {
        return null;
      }
    },
    isFile(rel) {
      const p = safe(rel);
      try {
        return p !== null && fs.statSync(p).isFile();
      } catch {
        return false;
      }
    },
    isDir(rel) {
      const p = safe(rel);
      try {
        return p !== null && fs.statSync(p).isDirectory();
      } catch {
        return false;
      }
    },
  };
}
