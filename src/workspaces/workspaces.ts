import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform, type Readable } from "node:stream";
import { PetriError } from "../errors.js";
import { fdPath, mapFsError, openDirNoFollow, openFileNoFollow, parseRelPath } from "./paths.js";

export interface FileEntry {
  path: string;
  type: "file" | "directory" | "symlink" | "other";
  size: number;
  sha256?: string;
  mtime: string;
}

export interface SnapshotEntry {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
  type: FileEntry["type"];
}

export type Snapshot = Map<string, SnapshotEntry>;

export interface FileChanges {
  created: string[];
  modified: string[];
  deleted: string[];
}

export interface StagedFile {
  tmpPath: string;
  size: number;
  sha256: string;
}

/** Walk limits, so a workspace with millions of planted entries can't stall the server. */
const MAX_WALK_ENTRIES = 200_000;
const MAX_DEPTH = 64;

function typeOf(st: fs.Stats | fs.BigIntStats): FileEntry["type"] {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  return "other";
}

/**
 * Workspaces are plain directories under PETRI_WORKSPACE_ROOT, one per sandbox, owned by the
 * unprivileged uid the runs use. All access goes through paths.ts (no symlink is ever followed).
 */
export class WorkspaceStore {
  readonly stagingDir: string;
  private readonly hashCache = new Map<string, string>();

  constructor(private readonly opts: { root: string; uid: number; gid: number }) {
    fs.mkdirSync(opts.root, { recursive: true, mode: 0o711 });
    this.stagingDir = path.join(opts.root, ".staging");
    fs.mkdirSync(this.stagingDir, { recursive: true, mode: 0o700 });
  }

  dirFor(sandboxId: string): string {
    return path.join(this.opts.root, sandboxId);
  }

  create(sandboxId: string): void {
    const dir = this.dirFor(sandboxId);
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chownSync(dir, this.opts.uid, this.opts.gid);
  }

  exists(sandboxId: string): boolean {
    return fs.existsSync(this.dirFor(sandboxId));
  }

  destroy(sandboxId: string): void {
    const dir = this.dirFor(sandboxId);
    if (!fs.existsSync(dir)) return;
    const parent = fs.openSync(this.opts.root, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      removeTree(parent, sandboxId);
    } finally {
      fs.closeSync(parent);
    }
  }

  /** Streams a request body into a staging file, refusing it once it passes maxBytes. */
  async stage(source: Readable, maxBytes: number): Promise<StagedFile> {
    const tmpPath = path.join(this.stagingDir, randomBytes(12).toString("hex"));
    const hash = createHash("sha256");
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > maxBytes) {
          cb(new PetriError("PAYLOAD_TOO_LARGE", `upload exceeds the limit of ${maxBytes} bytes`));
          return;
        }
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, counter, fs.createWriteStream(tmpPath, { mode: 0o644 }));
    } catch (e) {
      fs.rmSync(tmpPath, { force: true });
      // Body-limit errors from the HTTP layer surface here too.
      if ((e as { code?: string }).code === "FST_REQ_FILE_TOO_LARGE") {
        throw new PetriError("PAYLOAD_TOO_LARGE", `upload exceeds the limit of ${maxBytes} bytes`);
      }
      throw e;
    }
    return { tmpPath, size, sha256: hash.digest("hex") };
  }

  discard(staged: StagedFile[]): void {
    for (const s of staged) fs.rmSync(s.tmpPath, { force: true });
  }

  /**
   * Moves staged files into the workspace, all or nothing with respect to the quota: the check
   * is done before anything is moved.
   */
  commit(sandboxId: string, files: { parts: string[]; staged: StagedFile }[], quotaBytes: number): FileEntry[] {
    const root = this.dirFor(sandboxId);
    let replaced = 0;
    for (const f of files) replaced += this.sizeIfFile(root, f.parts);
    const incoming = files.reduce((a, f) => a + f.staged.size, 0);
    const used = this.usage(sandboxId);
    if (used - replaced + incoming > quotaBytes) {
      this.discard(files.map((f) => f.staged));
      throw new PetriError("WORKSPACE_QUOTA_EXCEEDED",
        `workspace quota of ${quotaBytes} bytes would be exceeded (in use ${used}, upload ${incoming})`);
    }
    const out: FileEntry[] = [];
    for (const f of files) {
      const rel = f.parts.join("/");
      let dirfd: number;
      try {
        dirfd = openDirNoFollow(root, f.parts.slice(0, -1), { create: true, owner: this.opts });
      } catch (e) {
        this.discard([f.staged]);
        mapFsError(e, rel);
      }
      try {
        fs.chownSync(f.staged.tmpPath, this.opts.uid, this.opts.gid);
        fs.renameSync(f.staged.tmpPath, fdPath(dirfd, f.parts[f.parts.length - 1]));
        const st = fs.lstatSync(fdPath(dirfd, f.parts[f.parts.length - 1]));
        // The upload's hash is known: listings and audit snapshots need not read the file again.
        this.hashCache.set(`${root}\0${rel}\0${st.ino}\0${st.size}\0${st.mtimeMs}\0${st.ctimeMs}`, f.staged.sha256);
        out.push({ path: rel, type: "file", size: f.staged.size, sha256: f.staged.sha256, mtime: st.mtime.toISOString() });
      } catch (e) {
        this.discard([f.staged]);
        mapFsError(e, rel);
      } finally {
        fs.closeSync(dirfd);
      }
    }
    return out;
  }

  private sizeIfFile(root: string, parts: string[]): number {
    try {
      const { fd, stat } = openFileNoFollow(root, parts);
      fs.closeSync(fd);
      return stat.size;
    } catch {
      return 0;
    }
  }

  /** Opens a file for download. The caller streams from the fd and closes it. */
  openRead(sandboxId: string, relPath: string): { fd: number; size: number } {
    const parts = parseRelPath(relPath);
    try {
      const { fd, stat } = openFileNoFollow(this.dirFor(sandboxId), parts);
      return { fd, size: stat.size };
    } catch (e) {
      if (e instanceof PetriError) throw e;
      mapFsError(e, relPath);
    }
  }

  /**
   * Runs `fn` with the opened parent directory of relPath and its last component; errno
   * failures become API errors naming relPath.
   */
  private inParent<T>(sandboxId: string, relPath: string, fn: (dirfd: number, name: string) => T): T {
    const parts = parseRelPath(relPath);
    let dirfd: number;
    try {
      dirfd = openDirNoFollow(this.dirFor(sandboxId), parts.slice(0, -1));
    } catch (e) {
      mapFsError(e, relPath);
    }
    try {
      return fn(dirfd, parts[parts.length - 1]);
    } catch (e) {
      if (e instanceof PetriError) throw e;
      mapFsError(e, relPath);
    } finally {
      fs.closeSync(dirfd);
    }
  }

  remove(sandboxId: string, relPath: string, recursive: boolean): void {
    this.inParent(sandboxId, relPath, (dirfd, name) => {
      const st = fs.lstatSync(fdPath(dirfd, name));
      if (!st.isDirectory()) {
        // unlink never follows: a symlink is removed, not its target.
        fs.unlinkSync(fdPath(dirfd, name));
      } else if (recursive) {
        removeTree(dirfd, name);
      } else {
        fs.rmdirSync(fdPath(dirfd, name));
      }
    });
  }

  /** Sets a file's mode (only the executable bits are a client's choice). */
  chmod(sandboxId: string, relPath: string, mode: 0o755 | 0o644): void {
    this.inParent(sandboxId, relPath, (dirfd, name) => {
      const fd = fs.openSync(fdPath(dirfd, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      try {
        fs.fchmodSync(fd, mode);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  /** Lists entries below relPath without following symlinks (they are listed as symlinks). */
  async list(sandboxId: string, relPath: string, opts: { recursive: boolean; hashes: boolean }): Promise<FileEntry[]> {
    const parts = parseRelPath(relPath, { allowRoot: true });
    const root = this.dirFor(sandboxId);
    let dirfd: number;
    try {
      dirfd = openDirNoFollow(root, parts);
    } catch (e) {
      mapFsError(e, relPath);
    }
    const out: FileEntry[] = [];
    try {
      walk(dirfd, parts.join("/"), opts.recursive ? MAX_DEPTH : 1, (rel, st) => {
        out.push({ path: rel, type: typeOf(st), size: Number(st.size), mtime: new Date(Number(st.mtimeMs)).toISOString() });
      });
    } finally {
      fs.closeSync(dirfd);
    }
    if (opts.hashes) {
      for (const e of out) {
        if (e.type !== "file") continue;
        e.sha256 = await this.hashFile(root, e.path);
      }
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  private async hashFile(root: string, rel: string): Promise<string | undefined> {
    let fd: number;
    let stat: fs.Stats;
    try {
      ({ fd, stat } = openFileNoFollow(root, rel.split("/")));
    } catch {
      return undefined;
    }
    const key = `${root}\0${rel}\0${stat.ino}\0${stat.size}\0${stat.mtimeMs}\0${stat.ctimeMs}`;
    const cached = this.hashCache.get(key);
    if (cached) {
      fs.closeSync(fd);
      return cached;
    }
    const hash = createHash("sha256");
    await pipeline(fs.createReadStream("", { fd, autoClose: true }), hash);
    const hex = hash.digest("hex");
    if (this.hashCache.size > 50_000) this.hashCache.clear();
    this.hashCache.set(key, hex);
    return hex;
  }

  /** Apparent size of all regular files (sparse files count in full: that is what a download costs). */
  usage(sandboxId: string): number {
    let total = 0;
    this.walkRoot(sandboxId, (_rel, st) => { if (st.isFile()) total += Number(st.size); });
    return total;
  }

  snapshot(sandboxId: string): Snapshot {
    const snap: Snapshot = new Map();
    this.walkRoot(sandboxId, (rel, st) => {
      snap.set(rel, { size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, type: typeOf(st) });
    });
    return snap;
  }

  private walkRoot(sandboxId: string, visit: (rel: string, st: fs.BigIntStats) => void): void {
    let dirfd: number;
    try {
      dirfd = openDirNoFollow(this.dirFor(sandboxId), []);
    } catch {
      return;
    }
    try {
      walk(dirfd, "", MAX_DEPTH, visit);
    } finally {
      fs.closeSync(dirfd);
    }
  }
}

export function diffSnapshots(before: Snapshot, after: Snapshot): FileChanges {
  const created: string[] = [];
  const modified: string[] = [];
  const deleted: string[] = [];
  for (const [p, a] of after) {
    if (a.type === "directory") continue;
    const b = before.get(p);
    if (!b || b.type !== a.type) created.push(p);
    else if (b.size !== a.size || b.mtimeNs !== a.mtimeNs || b.ctimeNs !== a.ctimeNs || b.ino !== a.ino) modified.push(p);
  }
  for (const [p, b] of before) {
    if (b.type === "directory") continue;
    const a = after.get(p);
    if (!a || a.type !== b.type) deleted.push(p);
  }
  return { created: created.sort(), modified: modified.sort(), deleted: deleted.sort() };
}

function walk(dirfd: number, prefix: string, depth: number, visit: (rel: string, st: fs.BigIntStats) => void, counter = { n: 0 }): void {
  let names: string[];
  try {
    names = fs.readdirSync(fdPath(dirfd));
  } catch {
    return;
  }
  for (const name of names) {
    if (++counter.n > MAX_WALK_ENTRIES) return;
    const rel = prefix ? `${prefix}/${name}` : name;
    let st: fs.BigIntStats;
    try {
      st = fs.lstatSync(fdPath(dirfd, name), { bigint: true });
    } catch {
      continue;
    }
    visit(rel, st);
    if (st.isDirectory() && depth > 1) {
      let child: number;
      try {
        child = fs.openSync(fdPath(dirfd, name), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
      } catch {
        continue;
      }
      try {
        walk(child, rel, depth - 1, visit, counter);
      } finally {
        fs.closeSync(child);
      }
    }
  }
}

/** Removes dirfd/name recursively, descending only through directories opened with O_NOFOLLOW. */
function removeTree(dirfd: number, name: string): void {
  let child: number;
  try {
    child = fs.openSync(fdPath(dirfd, name), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    if (code === "ELOOP" || code === "ENOTDIR") {
      fs.unlinkSync(fdPath(dirfd, name));
      return;
    }
    throw e;
  }
  try {
    for (const entry of fs.readdirSync(fdPath(child))) removeTree(child, entry);
  } finally {
    fs.closeSync(child);
  }
  fs.rmdirSync(fdPath(dirfd, name));
}
