import fs from "node:fs";
import path from "node:path";
import type { WorkspaceStore } from "../workspaces/workspaces.js";

/**
 * Rich outputs: images and small data files a run created come back inline in its result, so
 * an agent sees its chart without a second call. Figures shown with plt.show() / display() are
 * written by the in-sandbox helpers (agent-files.ts) to a per-run directory and collected too.
 */
export interface Artifact {
  /** Workspace path, or "display/figure-1.png" for something shown rather than saved. */
  path: string;
  mime_type: string;
  size: number;
  /** "base64" (images) or "utf8" (text data); absent when the bytes are not inline. */
  encoding?: "base64" | "utf8";
  data?: string;
  /** Why the bytes are not inline (too large, over the per-run budget). */
  omitted?: string;
}

export const ARTIFACT_TYPES: Readonly<Record<string, string>> = Object.freeze({
  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp", ".svg": "image/svg+xml",
  ".csv": "text/csv", ".json": "application/json",
});

export interface ArtifactLimits {
  /** Largest image returned inline. */
  imageBytes: number;
  /** Largest CSV/JSON returned inline. */
  dataBytes: number;
  /** All inline bytes of one run together. */
  totalBytes: number;
  /** At most this many artifacts are listed. */
  count: number;
}

export const DEFAULT_ARTIFACT_LIMITS: ArtifactLimits = Object.freeze({ imageBytes: 2 * 1024 * 1024, dataBytes: 256 * 1024, totalBytes: 8 * 1024 * 1024, count: 20 });

const TEXTUAL = new Set(["text/csv", "application/json", "image/svg+xml"]);

function mimeOf(p: string): string | undefined {
  return ARTIFACT_TYPES[path.extname(p).toLowerCase()];
}

class Budget {
  used = 0;
  constructor(readonly limits: ArtifactLimits) {}

  /** Decides whether `size` bytes of this type go inline; returns the reason when not. */
  refuse(mime: string, size: number): string | undefined {
    const cap = mime.startsWith("image/") ? this.limits.imageBytes : this.limits.dataBytes;
    if (size > cap) return `larger than the ${cap} bytes returned inline; download the file`;
    if (this.used + size > this.limits.totalBytes) return `the run's inline budget of ${this.limits.totalBytes} bytes is used up; download the file`;
    this.used += size;
    return undefined;
  }
}

function toArtifact(p: string, mime: string, data: Buffer | null, size: number, omitted?: string): Artifact {
  if (!data || omitted) return { path: p, mime_type: mime, size, omitted: omitted ?? "could not be read" };
  return TEXTUAL.has(mime)
    ? { path: p, mime_type: mime, size, encoding: "utf8", data: data.toString("utf8") }
    : { path: p, mime_type: mime, size, encoding: "base64", data: data.toString("base64") };
}

/** Reads at most `max` bytes of a regular file the sandbox could have planted: no symlinks, no FIFOs. */
function readPlanted(file: string, max: number): Buffer | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.size > max) return null;
    const buf = Buffer.alloc(st.size);
    const n = fs.readSync(fd, buf, 0, st.size, 0);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

export interface CollectInput {
  workspaces: WorkspaceStore;
  sandboxId: string;
  /** Workspace files the run created or modified. */
  changed: string[];
  /** Host directory the run's display helpers wrote figures to (mounted at DISPLAY_DIR). */
  displayDir?: string;
  limits?: ArtifactLimits;
  /** Applied to every inline byte (secret values never leave through an artifact). */
  redact?: (b: Buffer) => Buffer;
}

export function collectArtifacts(input: CollectInput): Artifact[] {
  const limits = input.limits ?? DEFAULT_ARTIFACT_LIMITS;
  const budget = new Budget(limits);
  const out: Artifact[] = [];
  const redact = input.redact ?? ((b: Buffer) => b);
  const add = (p: string, mime: string, read: (max: number) => { data: Buffer | null; size: number } | null) => {
    if (out.length >= limits.count) return;
    const cap = mime.startsWith("image/") ? limits.imageBytes : limits.dataBytes;
    const got = read(cap);
    if (!got) return;
    const { data, size } = got;
    const omitted = data ? budget.refuse(mime, size) : size > cap ? `larger than the ${cap} bytes returned inline; download the file` : undefined;
    out.push(toArtifact(p, mime, data && !omitted ? redact(data) : null, size, omitted));
  };

  if (input.displayDir) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(input.displayDir).sort(naturalOrder);
    } catch {
      names = [];
    }
    for (const name of names) {
      const mime = mimeOf(name);
      if (!mime) continue;
      add(`display/${name}`, mime, (max) => {
        const file = path.join(input.displayDir!, name);
        let st: fs.Stats;
        try {
          st = fs.lstatSync(file);
        } catch {
          return null;
        }
        if (!st.isFile()) return null;
        return { data: readPlanted(file, max), size: st.size };
      });
    }
  }

  for (const p of [...input.changed].sort()) {
    const mime = mimeOf(p);
    if (!mime) continue;
    add(p, mime, (max) => {
      try {
        const { fd, size } = input.workspaces.openRead(input.sandboxId, p);
        try {
          if (size > max) return { data: null, size };
          const buf = Buffer.alloc(size);
          const n = fs.readSync(fd, buf, 0, size, 0);
          return { data: buf.subarray(0, n), size };
        } finally {
          fs.closeSync(fd);
        }
      } catch {
        // Gone again, a symlink, not a regular file: nothing to show.
        return null;
      }
    });
  }
  return out;
}

function naturalOrder(a: string, b: string): number {
  return a.localeCompare(b, "en", { numeric: true });
}
