import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { FileChanges, WorkspaceStore } from "../workspaces/workspaces.js";
import type { Mount } from "../runtimes/types.js";
import { CACHE_DIR } from "./languages.js";
import { WorkspaceView, type ScratchPool } from "./overlay/view.js";
import { ChangesTooDeepError, applyChanges, removeTree, scanChanges, type ChangeEntry, type ChangeSet } from "./overlay/changes.js";

export type CommitMode = "always" | "on_success" | "never";
export const COMMIT_MODES: readonly CommitMode[] = ["always", "on_success", "never"];

/** What a run did to its workspace, once it is over. */
export interface CapturedChanges {
  files: FileChanges;
  /** Every change (directories too) with sizes and hashes: GET …/exec/{id}/changes. */
  entries: ChangeEntry[];
  committed: boolean;
  /** Why the changes were not committed, when they were not. */
  notCommitted: string | null;
  /** Paths also changed by someone else during the run: left as that change made them. */
  conflicts: string[];
  /** Workspace bytes after the run (and its commit, if any). */
  usage: number;
  /** The run hit its write allowance, or its changes would pass the workspace quota. */
  quotaHit: boolean;
}

/**
 * What a run may write beyond its quota before the kernel says ENOSPC: directories cost blocks
 * that the quota (apparent file bytes) does not count, and ext4 allocates large folios (up to
 * 2 MiB) all or nothing, so at exactly the quota a big write could fail far below it. The change
 * set is then held to the quota exactly: over it, nothing is committed.
 */
export function writeMargin(quotaBytes: number): number {
  return 2 * 1024 * 1024 + Math.ceil(quotaBytes / 16);
}

export const NO_CHANGES: CapturedChanges = Object.freeze({
  files: { created: [], modified: [], deleted: [] }, entries: [], committed: false, notCommitted: null, conflicts: [], usage: 0, quotaHit: false,
}) as CapturedChanges;

const sumFiles = (entries: ChangeEntry[], action: ChangeEntry["action"]) =>
  entries.filter((e) => e.action === action && e.type !== "dir").map((e) => e.path).sort();

/** The result's `files`: files and links by change, plus the exact bytes of names that are not UTF-8. */
function filesOf(entries: ChangeEntry[]): FileChanges {
  const out: FileChanges = { created: sumFiles(entries, "created"), modified: sumFiles(entries, "modified"), deleted: sumFiles(entries, "deleted") };
  const raw = entries.filter((e) => e.type !== "dir" && e.path_b64 !== undefined).map((e) => ({ change: e.action, path: e.path, path_b64: e.path_b64! }));
  if (raw.length) out.non_utf8 = raw;
  return out;
}

/**
 * One run's workspace and /cache, through a per-run overlay (overlay/view.ts): the run writes
 * into the view's upper layers, bounded by the kernel; afterwards the change set is read in
 * O(changed files), committed into the workspace or not, and the view removed.
 */
export class RunWorkspace {
  private closed = false;

  private constructor(
    readonly view: WorkspaceView,
    private readonly d: { workspaces: WorkspaceStore; sandboxId: string; cacheDir: string; uid: number; gid: number; quotaBytes: number; pool: ScratchPool },
  ) {}

  static async open(d: {
    root: string; id: string; workspaces: WorkspaceStore; sandboxId: string; cacheDir: string; uid: number; gid: number; quotaBytes: number; pool: ScratchPool;
  }): Promise<RunWorkspace> {
    const view = await WorkspaceView.open({
      root: d.root, id: d.id, lowerWorkspace: d.workspaces.dirFor(d.sandboxId), lowerCache: d.cacheDir,
      limitBytes: d.quotaBytes + writeMargin(d.quotaBytes), uid: d.uid, gid: d.gid,
    }, d.pool);
    return new RunWorkspace(view, d);
  }

  /** The run's mounts with /workspace and /cache pointed at this view. */
  mounts(mounts: Mount[]): Mount[] {
    return mounts.map((m) => m.target === "/workspace" ? { ...m, source: this.view.workspace }
      : m.target === CACHE_DIR ? { ...m, source: this.view.cache } : m);
  }

  /**
   * Reads the change set and, when `commit` says so and it fits the quota, applies it to the
   * workspace; /cache changes are always kept. `usageBefore`: the workspace's bytes at the start.
   */
  async finish(o: { commit: boolean; whyNot: string; usageBefore: number }): Promise<CapturedChanges & { cacheDelta: number; tooDeep?: boolean }> {
    const { workspaces, sandboxId, uid, gid, quotaBytes } = this.d;
    // The kernel stops writes at the quota plus a margin (writeMargin); whether the change set
    // fits the quota is decided exactly, in apparent bytes like uploads, before committing.
    const full = this.view.freeBytes() < 64 * 1024;
    let cs: ChangeSet;
    try {
      cs = await scanChanges({ merged: this.view.workspace, upper: this.view.workspaceUpper, lower: workspaces.dirFor(sandboxId), sinceMs: this.view.mountedAtMs });
    } catch (e) {
      if (!(e instanceof ChangesTooDeepError)) throw e;
      // What cannot be read cannot be committed: the workspace stays as it was, and the result says why.
      return { ...NO_CHANGES, usage: o.usageBefore, notCommitted: e.message, tooDeep: true, cacheDelta: 0 };
    }
    const after = this.d.quotaBytes >= 0 ? o.usageBefore + cs.bytesDelta : o.usageBefore;
    const overQuota = after > Math.max(quotaBytes, o.usageBefore);
    let committed = false;
    let notCommitted: string | null = o.commit ? null : o.whyNot;
    if (o.commit && overQuota) {
      notCommitted = `the changes would grow the workspace to ${after} bytes, beyond its quota of ${quotaBytes} bytes`;
    } else if (o.commit && cs.ops.length) {
      applyChanges(cs, { merged: this.view.workspace, lower: workspaces.dirFor(sandboxId), uid, gid });
      workspaces.bumpGeneration(sandboxId);
      committed = true;
    } else if (o.commit) {
      committed = true;
    }
    let cacheDelta = 0;
    try {
      const cache = await scanChanges({ merged: this.view.cache, upper: this.view.cacheUpper, lower: this.d.cacheDir, sinceMs: this.view.mountedAtMs });
      applyChanges(cache, { merged: this.view.cache, lower: this.d.cacheDir, uid, gid });
      cacheDelta = cache.bytesDelta;
    } catch (e) {
      if (!(e instanceof ChangesTooDeepError)) throw e; // a cache nested too deep is simply not kept
    }
    return {
      files: filesOf(cs.entries),
      entries: cs.entries,
      committed,
      notCommitted,
      conflicts: cs.conflicts,
      usage: committed ? after : o.usageBefore,
      quotaHit: full || overQuota,
      cacheDelta,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.view.close(this.d.pool);
  }
}

/** Bounds /cache: past `maxBytes` a sandbox's cache is emptied before its next run (it is only a cache). */
export class CacheBook {
  private readonly bytes = new Map<string, number>();

  /** Before a run: measures a cache not seen since start-up, empties one that grew too large. */
  prepare(sandboxId: string, dir: string, o: { uid: number; gid: number; maxBytes: number }): void {
    const { uid, gid } = o;
    let b = this.bytes.get(sandboxId);
    if (b === undefined) b = measure(dir);
    if (b > o.maxBytes) {
      removeTree(Buffer.from(dir));
      b = 0;
    }
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.chownSync(dir, uid, gid);
    this.bytes.set(sandboxId, b);
  }

  add(sandboxId: string, delta: number): void {
    this.bytes.set(sandboxId, Math.max(0, (this.bytes.get(sandboxId) ?? 0) + delta));
  }

  forget(sandboxId: string): void {
    this.bytes.delete(sandboxId);
  }
}

function measure(dir: string): number {
  let total = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let names: fs.Dirent[];
    try { names = fs.readdirSync(d, { withFileTypes: true }); } catch { continue; }
    for (const n of names) {
      const p = path.join(d, n.name);
      if (n.isDirectory()) stack.push(p);
      else if (n.isFile()) { try { total += fs.lstatSync(p).size; } catch { /* gone */ } }
    }
  }
  return total;
}

/** SHA-256 of an opened file (closed after): the audit's record of the entry file that ran. */
export function sha256OfFd(fd: number): string {
  try {
    const h = createHash("sha256");
    const buf = Buffer.allocUnsafe(1 << 16);
    let n: number;
    while ((n = fs.readSync(fd, buf)) > 0) h.update(buf.subarray(0, n));
    return h.digest("hex");
  } finally {
    fs.closeSync(fd);
  }
}
