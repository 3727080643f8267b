import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";

/**
 * A run's change set, read from its overlay after it ended: the upper layer names every entry
 * the run created or changed (whiteouts and opaque directories included), the merged view says
 * what each looks like now, and the lower layer (the workspace) what it looked like before. Cost
 * is in what changed, never in the workspace's size: only directories the run wrote into are
 * listed, only files it wrote or removed are hashed.
 *
 * Names are raw bytes throughout (a name need not be UTF-8); `path` shows invalid bytes as
 * U+FFFD and `path_b64` carries the exact bytes when, and only when, the name is not UTF-8.
 */
export type EntryType = "file" | "dir" | "symlink" | "other";

export interface EntryState {
  type: EntryType;
  size: number;
  sha256?: string;
  mode: number;
  target?: string;
}

export interface ChangeEntry {
  path: string;
  path_b64?: string;
  action: "created" | "modified" | "deleted";
  type: EntryType;
  /** Size after the run (created, modified) or before it (deleted). */
  size: number;
  sha256?: string;
  before_size?: number;
  before_sha256?: string;
  before_type?: EntryType;
  /** Changed in the workspace by someone else (an upload) during the run: the run's change is not applied. */
  conflict?: boolean;
}

type Op =
  | { kind: "delete"; rel: Buffer }
  | { kind: "mkdir"; rel: Buffer; mode: number }
  | { kind: "chmod"; rel: Buffer; mode: number }
  | { kind: "write"; rel: Buffer; type: "file" | "symlink"; mode: number; mtime: Date; target?: Buffer };

export interface ChangeSet {
  /** Every change, sorted by path; directories included. */
  entries: ChangeEntry[];
  /** What committing does to the lower layer's total of regular-file bytes. */
  bytesDelta: number;
  /** Paths the run changed that were also changed by someone else meanwhile (not applied). */
  conflicts: string[];
  ops: Op[];
}

/** The change set holds a path longer than the kernel takes (PATH_MAX): it cannot be read or committed. */
export class ChangesTooDeepError extends Error {
  override name = "ChangesTooDeepError";
}

export interface ScanOptions {
  merged: string;
  upper: string;
  lower: string;
  /** Lower entries whose ctime is later than this (ms) were changed during the run. */
  sinceMs: number;
  /** Files above this are not hashed. */
  hashLimitBytes?: number;
}

const SLASH = Buffer.from("/");
const join = (a: Buffer, b: Buffer): Buffer => (a.length ? Buffer.concat([a, SLASH, b]) : b);
const abs = (root: string, rel: Buffer): Buffer => (rel.length ? Buffer.concat([Buffer.from(root + "/"), rel]) : Buffer.from(root));

export function displayName(raw: Buffer): { path: string; path_b64?: string } {
  const s = raw.toString("utf8");
  return Buffer.from(s, "utf8").equals(raw) ? { path: s } : { path: s, path_b64: raw.toString("base64") };
}

function lstatOrNull(p: Buffer): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw e;
  }
}

function typeOf(st: fs.Stats): EntryType {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  return "other";
}

function isWhiteout(st: fs.Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

async function hashFile(p: Buffer): Promise<string> {
  const h = createHash("sha256");
  const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(1 << 17);
    for (;;) {
      const n = await new Promise<number>((res, rej) => fs.read(fd, buf, 0, buf.length, null, (e, b) => (e ? rej(e) : res(b))));
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

async function stateOf(p: Buffer, st: fs.Stats, hashLimit: number): Promise<EntryState> {
  const type = typeOf(st);
  const s: EntryState = { type, size: type === "dir" ? 0 : st.size, mode: st.mode & 0o7777 };
  if (type === "file" && st.size <= hashLimit) s.sha256 = await hashFile(p);
  if (type === "symlink") s.target = fs.readlinkSync(p, { encoding: "buffer" }).toString("utf8");
  return s;
}

const byName = (names: Buffer[]) => new Map(names.map((n) => [n.toString("latin1"), n]));

export async function scanChanges(o: ScanOptions): Promise<ChangeSet> {
  try {
    return await scan(o);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENAMETOOLONG") {
      throw new ChangesTooDeepError("the run's changes reach paths longer than 4096 bytes (directories nested too deep)");
    }
    throw e;
  }
}

async function scan(o: ScanOptions): Promise<ChangeSet> {
  const hashLimit = o.hashLimitBytes ?? 64 * 1024 * 1024;
  const entries: ChangeEntry[] = [];
  const ops: Op[] = [];
  const conflicts: string[] = [];
  let bytesDelta = 0;
  const changedMeanwhile = (st: fs.Stats | null) => st !== null && st.ctimeMs > o.sinceMs;

  const record = (rel: Buffer, e: Omit<ChangeEntry, "path" | "path_b64">) => {
    const d = displayName(rel);
    const entry: ChangeEntry = { ...d, ...e };
    entries.push(entry);
    return entry;
  };

  /** Records the removal of a lower entry (a whole tree for a directory). */
  const deleteLower = async (rel: Buffer, st: fs.Stats): Promise<void> => {
    const found: { rel: Buffer; st: fs.Stats }[] = [];
    const stack = [{ rel, st }];
    let conflict = false;
    while (stack.length) {
      const cur = stack.pop()!;
      found.push(cur);
      if (changedMeanwhile(cur.st)) conflict = true;
      if (!cur.st.isDirectory()) continue;
      for (const n of fs.readdirSync(abs(o.lower, cur.rel), { encoding: "buffer" })) {
        const r = join(cur.rel, n);
        const s = lstatOrNull(abs(o.lower, r));
        if (s) stack.push({ rel: r, st: s });
      }
    }
    for (const f of found) {
      const before = await stateOf(abs(o.lower, f.rel), f.st, hashLimit);
      const e = record(f.rel, { action: "deleted", type: before.type, size: before.size, before_size: before.size, before_sha256: before.sha256, before_type: before.type });
      if (conflict) e.conflict = true;
      else if (before.type === "file") bytesDelta -= before.size;
    }
    if (conflict) conflicts.push(displayName(rel).path);
    else ops.push({ kind: "delete", rel });
  };

  const stack: Buffer[] = [Buffer.alloc(0)];
  while (stack.length) {
    const rel = stack.pop()!;
    const merged = byName(fs.readdirSync(abs(o.merged, rel), { encoding: "buffer" }));
    const lowerDir = lstatOrNull(abs(o.lower, rel));
    const lowerNames = lowerDir?.isDirectory() ? fs.readdirSync(abs(o.lower, rel), { encoding: "buffer" }) : [];
    for (const n of lowerNames) {
      if (merged.has(n.toString("latin1"))) continue;
      const r = join(rel, n);
      const st = lstatOrNull(abs(o.lower, r));
      if (st) await deleteLower(r, st);
    }
    const upperNames = fs.readdirSync(abs(o.upper, rel), { encoding: "buffer" }).sort(Buffer.compare);
    for (const n of upperNames) {
      if (!merged.has(n.toString("latin1"))) continue; // a whiteout: handled as a deletion above
      const r = join(rel, n);
      const ust = fs.lstatSync(abs(o.upper, r));
      if (isWhiteout(ust)) continue;
      const mst = fs.lstatSync(abs(o.merged, r));
      let lst = lowerDir?.isDirectory() ? lstatOrNull(abs(o.lower, r)) : null;
      const now = await stateOf(abs(o.merged, r), mst, hashLimit);
      if (now.type === "dir") {
        if (lst && !lst.isDirectory()) { await deleteLower(r, lst); lst = null; }
        if (!lst) {
          if (changedMeanwhile(lstatOrNull(abs(o.lower, r)))) { conflicts.push(displayName(r).path); continue; }
          record(r, { action: "created", type: "dir", size: 0 });
          ops.push({ kind: "mkdir", rel: r, mode: now.mode });
        } else if ((lst.mode & 0o7777) !== now.mode) {
          ops.push({ kind: "chmod", rel: r, mode: now.mode });
        }
        stack.push(r);
        continue;
      }
      if (lst && lst.isDirectory()) { await deleteLower(r, lst); lst = null; }
      const before = lst ? await stateOf(abs(o.lower, r), lst, hashLimit) : null;
      if (before && before.type === now.type && before.size === now.size && before.mode === now.mode && before.target === now.target
        && (now.type !== "file" || (before.sha256 !== undefined && before.sha256 === now.sha256))) {
        continue; // opened for writing, or touched, but the same as before
      }
      if (now.type === "other") {
        // Pipes and sockets a run made are not carried over (and devices cannot be made).
        record(r, { action: before ? "modified" : "created", type: "other", size: 0, conflict: true });
        continue;
      }
      const e = before && before.type === now.type
        ? record(r, { action: "modified", type: now.type, size: now.size, sha256: now.sha256, before_size: before.size, before_sha256: before.sha256, before_type: before.type })
        : record(r, { action: "created", type: now.type, size: now.size, sha256: now.sha256, ...(before ? { before_size: before.size, before_sha256: before.sha256, before_type: before.type } : {}) });
      if (changedMeanwhile(lst) || (!lst && changedMeanwhile(lstatOrNull(abs(o.lower, r))))) {
        e.conflict = true;
        conflicts.push(e.path);
        continue;
      }
      if (now.type === "file") bytesDelta += now.size;
      if (before?.type === "file") bytesDelta -= before.size;
      ops.push({
        kind: "write", rel: r, type: now.type, mode: now.mode, mtime: mst.mtime,
        ...(now.type === "symlink" ? { target: fs.readlinkSync(abs(o.merged, r), { encoding: "buffer" }) } : {}),
      });
    }
  }
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : (a.path_b64 ?? "") < (b.path_b64 ?? "") ? -1 : 1));
  return { entries, bytesDelta, conflicts, ops };
}

/** Removes a tree without recursion (any depth) and without following symlinks. */
export function removeTree(p: Buffer): void {
  const st = lstatOrNull(p);
  if (!st) return;
  if (!st.isDirectory()) { fs.unlinkSync(p); return; }
  const stack: { p: Buffer; listed: boolean }[] = [{ p, listed: false }];
  while (stack.length) {
    const top = stack[stack.length - 1];
    if (!top.listed) {
      top.listed = true;
      for (const n of fs.readdirSync(top.p, { encoding: "buffer" })) {
        const c = Buffer.concat([top.p, SLASH, n]);
        const cs = lstatOrNull(c);
        if (!cs) continue;
        if (cs.isDirectory()) stack.push({ p: c, listed: false });
        else fs.unlinkSync(c);
      }
      continue;
    }
    fs.rmdirSync(top.p);
    stack.pop();
  }
}

/**
 * Applies a change set to the lower layer (the workspace), from the merged view: parents before
 * children, each file written beside its final name and renamed over it, so a reader never sees
 * half a file. Runs only while no sandboxed code runs in this sandbox.
 */
export function applyChanges(cs: ChangeSet, o: { merged: string; lower: string; uid: number; gid: number }): void {
  // Permission bits and sticky only: no set-id bit is carried into the workspace.
  const PERM = 0o1777;
  for (const op of cs.ops) {
    const dst = abs(o.lower, op.rel);
    if (op.kind === "delete") {
      removeTree(dst);
    } else if (op.kind === "mkdir") {
      const st = lstatOrNull(dst);
      if (st && !st.isDirectory()) fs.unlinkSync(dst);
      if (!st || !st.isDirectory()) fs.mkdirSync(dst, { mode: op.mode & 0o777 });
      fs.chownSync(dst, o.uid, o.gid);
      fs.chmodSync(dst, op.mode & PERM);
    } else if (op.kind === "chmod") {
      fs.chmodSync(dst, op.mode & PERM);
    } else {
      const slash = op.rel.lastIndexOf(0x2f);
      const parentRel = slash < 0 ? Buffer.alloc(0) : op.rel.subarray(0, slash);
      const tmp = Buffer.concat([abs(o.lower, parentRel), Buffer.from(`/.petri-commit-${randomBytes(6).toString("hex")}`)]);
      const old = lstatOrNull(dst);
      if (old?.isDirectory()) removeTree(dst);
      if (op.type === "symlink") {
        fs.symlinkSync(op.target!, tmp);
        fs.lchownSync(tmp, o.uid, o.gid);
      } else {
        fs.copyFileSync(abs(o.merged, op.rel), tmp, fs.constants.COPYFILE_EXCL);
        fs.chownSync(tmp, o.uid, o.gid);
        fs.chmodSync(tmp, op.mode & PERM);
        fs.utimesSync(tmp, op.mtime, op.mtime);
      }
      fs.renameSync(tmp, dst);
    }
  }
}
