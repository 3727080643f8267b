import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { canonicalJson, sha256Hex } from "./canonical.js";
import type { AuditEvent } from "./types.js";

/**
 * What a run did to its workspace, from snapshots taken before and after it (while no sandboxed
 * code runs). Symlinks are recorded, never followed, and files are opened with O_NOFOLLOW, so
 * links the code planted cannot make Petri read outside the workspace.
 */
export interface FileState {
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  /** SHA-256 of a regular file's content; absent above `hashLimitBytes`. */
  sha256?: string;
  /** A symlink's target, as text (never resolved). */
  target?: string;
}

export interface WorkspaceSnapshot {
  /** Relative POSIX path → state. */
  files: Map<string, FileState>;
  /** True when `maxFiles` was reached and the rest was not looked at. */
  truncated: boolean;
  /** SHA-256 over the sorted (path, state) list: "the workspace" as one hash, for exec records. */
  sha256: string;
}

export interface SnapshotOptions {
  /** Stop after this many entries. Default 100000. */
  maxFiles?: number;
  /** Do not hash files larger than this, bytes. Default 64 MiB. */
  hashLimitBytes?: number;
}

async function hashFile(file: string): Promise<string | undefined> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    const h = createHash("sha256");
    const buf = Buffer.allocUnsafe(1 << 16);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest("hex");
  } finally {
    await fh.close();
  }
}

export async function snapshotWorkspace(root: string, opts: SnapshotOptions = {}): Promise<WorkspaceSnapshot> {
  const maxFiles = opts.maxFiles ?? 100_000;
  const hashLimit = opts.hashLimitBytes ?? 64 * 1024 * 1024;
  const files = new Map<string, FileState>();
  let truncated = false;
  const walk = async (rel: string): Promise<void> => {
    let entries: fs.Dirent[];
    try {
      entries = await fs.promises.readdir(path.join(root, rel), { withFileTypes: true });
    } catch {
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (files.size >= maxFiles) {
        truncated = true;
        return;
      }
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = path.join(root, r);
      let st: fs.Stats;
      try {
        st = await fs.promises.lstat(abs);
      } catch {
        continue; // vanished
      }
      if (st.isSymbolicLink()) {
        files.set(r, { type: "symlink", size: st.size, target: (await fs.promises.readlink(abs).catch(() => "")).slice(0, 4096) });
      } else if (st.isDirectory()) {
        files.set(r, { type: "dir", size: 0 });
        await walk(r);
      } else if (st.isFile()) {
        files.set(r, { type: "file", size: st.size, sha256: st.size <= hashLimit ? await hashFile(abs) : undefined });
      } else {
        files.set(r, { type: "other", size: 0 });
      }
    }
  };
  await walk("");
  const list = [...files.entries()].map(([p, s]) => [p, s]);
  return { files, truncated, sha256: sha256Hex(canonicalJson(list)) };
}

export interface WorkspaceChange {
  action: "file.create" | "file.modify" | "file.delete" | "file.rename";
  path: string;
  /** The raw name, base64, when it is not UTF-8 (`path` then shows invalid bytes as U+FFFD). */
  path_b64?: string;
  new_path?: string;
  new_path_b64?: string;
  type: FileState["type"];
  size?: number;
  sha256?: string;
  before_sha256?: string;
}

function same(a: FileState, b: FileState): boolean {
  return a.type === b.type && a.size === b.size && a.sha256 === b.sha256 && a.target === b.target;
}

/**
 * Created, modified, deleted, and renamed entries (a deleted and a created regular file with the
 * same content and size count as one rename). Sorted by path; deletions of a directory's children
 * are all listed.
 */
export function diffSnapshots(before: WorkspaceSnapshot, after: WorkspaceSnapshot): WorkspaceChange[] {
  const created: [string, FileState][] = [];
  const deleted: [string, FileState][] = [];
  const out: WorkspaceChange[] = [];
  for (const [p, a] of after.files) {
    const b = before.files.get(p);
    if (!b) created.push([p, a]);
    else if (!same(a, b)) {
      if (a.type !== b.type) {
        deleted.push([p, b]);
        created.push([p, a]);
      } else if (a.type !== "dir") {
        out.push({ action: "file.modify", path: p, type: a.type, size: a.size, sha256: a.sha256, before_sha256: b.sha256 });
      }
    }
  }
  for (const [p, b] of before.files) if (!after.files.has(p)) deleted.push([p, b]);
  const unmatched = new Set(deleted.map(([p]) => p));
  for (const [p, a] of created) {
    const moved = a.type === "file" && a.sha256 !== undefined
      ? deleted.find(([dp, d]) => unmatched.has(dp) && d.type === "file" && d.sha256 === a.sha256 && d.size === a.size)
      : undefined;
    if (moved) {
      unmatched.delete(moved[0]);
      out.push({ action: "file.rename", path: moved[0], new_path: p, type: a.type, size: a.size, sha256: a.sha256 });
    } else {
      out.push({ action: "file.create", path: p, type: a.type, size: a.size, sha256: a.sha256 });
    }
  }
  for (const [p, d] of deleted) if (unmatched.has(p)) out.push({ action: "file.delete", path: p, type: d.type, size: d.size, before_sha256: d.sha256 });
  return out.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

/** One audit event (kind "file", OCSF 1001) per change, attributed to a run. */
export function fileEvents(
  changes: WorkspaceChange[],
  ctx: Pick<AuditEvent, "tenant_id" | "key_id" | "sandbox_id" | "exec_id" | "request_id">,
): AuditEvent[] {
  return changes.map((c) => ({
    kind: "file",
    action: c.action,
    outcome: "success",
    ...ctx,
    detail: {
      source: "workspace_diff", path: c.path, new_path: c.new_path, type: c.type, size: c.size, sha256: c.sha256, before_sha256: c.before_sha256,
      ...(c.path_b64 ? { path_b64: c.path_b64 } : {}), ...(c.new_path_b64 ? { new_path_b64: c.new_path_b64 } : {}),
    },
  }));
}
