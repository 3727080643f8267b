import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform, type Readable } from "node:stream";
import { PetriError } from "../errors.js";
import { fdPath, mapFsError, openDirNoFollow, openFileNoFollow, parseRelPath } from "./paths.js";
import { displayPath, isTextPath, pathFields, pathFromKey, pathKey, splitBytes, type NamePart, type WsPath } from "./names.js";
import { entryPath, walkTree, type WalkResult } from "./walk.js";
import { Trash } from "./trash.js";
import { HashCache } from "./hash-cache.js";
import type { DB } from "../store/db.js";

export interface FileEntry {
  /** For display; see names.ts. */
  path: string;
  /** Base64 of the raw name, only when it is not valid UTF-8. */
  path_b64?: string;
  type: "file" | "directory" | "symlink" | "other";
  size: number;
  /** Permission bits (e.g. 0o644). */
  mode?: number;
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

/** A workspace entry as a sync plan sees it (`WorkspaceStore.syncState`). */
export interface SyncEntry {
  type: FileEntry["type"];
  /** Permission bits. */
  mode: number;
  /** Regular files: the content's sha256 (undefined if it could not be read). */
  sha256?: string;
}

export interface FileChanges {
  created: string[];
  modified: string[];
  deleted: string[];
  /**
   * The changed names that are not UTF-8 (listed above with U+FFFD for display): their exact
   * bytes as `path_b64`, usable with `…/files/?path_b64=` to download or delete them. Absent
   * when every name is UTF-8.
   */
  non_utf8?: { change: "created" | "modified" | "deleted"; path: string; path_b64: string }[];
}

export interface Listing {
  files: FileEntry[];
  /** False when the listing left entries out; `reason` says why. */
  complete: boolean;
  reason?: string;
}

export interface UsageInfo {
  bytes: number;
  /** False after a reconciliation that could not see everything: quotas treat it as over. */
  complete: boolean;
}

/** A path given either as text (API `path`) or as components (possibly raw bytes). */
export type PathArg = string | WsPath;

export interface StagedFile {
  tmpPath: string;
  size: number;
  sha256: string;
  /**
   * A content-store blob (blobs.ts): the commit hard-links it into place when it may (else copies
   * it), and never moves or removes it.
   */
  shared?: boolean;
  /** A shared blob this very sync wrote: its times are already the sync's. */
  fresh?: boolean;
  /** Permission bits the committed file gets (default: as staged, 0o644). */
  mode?: number;
}

/**
 * What the last sync left in a workspace (`WorkspaceStore.markSynced`): while the workspace's
 * generation is still the one recorded, it holds what the manifest with this digest says, so a
 * client presenting the same digest needs no comparison at all (docs/workspace-changes.md).
 */
export interface SyncMark {
  generation: number;
  /** `manifestDigest` of the manifest the workspace matched. */
  digest: string;
  /** The manifest's target folder (`a/b`, "" for the root). */
  target: string;
  /** True when files below the target that the manifest does not list were deleted too. */
  exact: boolean;
}

/** Open parent directories of one commit, least recently used closed first. */
const DIR_CACHE = 256;
class DirCache {
  private readonly fds = new Map<string, number>();
  constructor(private readonly root: string, private readonly owner: { uid: number; gid: number }, private readonly made: WsPath[]) {}

  /** The opened directory (made, owned by the sandbox uid, when `create`); throws errno errors. */
  get(parts: WsPath, create: boolean): number {
    const key = pathKey(parts);
    const hit = this.fds.get(key);
    if (hit !== undefined) {
      this.fds.delete(key);
      this.fds.set(key, hit);
      return hit;
    }
    const fd = openDirNoFollow(this.root, parts, create ? { create: true, owner: this.owner, onCreate: (d) => this.made.push(parts.slice(0, d + 1)) } : {});
    this.fds.set(key, fd);
    if (this.fds.size > DIR_CACHE) {
      const [oldKey, oldFd] = this.fds.entries().next().value as [string, number];
      this.fds.delete(oldKey);
      fs.closeSync(oldFd);
    }
    return fd;
  }

  closeAll(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }
}

/** Files up to this size are hashed from one read. */
const READ_WHOLE = 256n * 1024n;
/** Paths longer than PATH_MAX cannot be named through the API; listings say they left them out. */
export const MAX_LISTED_PATH_BYTES = 4096;
/** Default cap of one listing's entries (a walk past it says `complete: false`). */
export const DEFAULT_LIST_LIMIT = 200_000;

function typeOf(st: fs.Stats | fs.BigIntStats): FileEntry["type"] {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  return "other";
}

const toParts = (p: PathArg, allowRoot = false): WsPath => (typeof p === "string" ? parseRelPath(p, { allowRoot }) : p);
const SLASH = Buffer.from("/");
const byPath = (a: FileEntry, b: FileEntry) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/**
 * Workspaces are plain directories under PETRI_WORKSPACE_ROOT, one per sandbox, owned by the
 * unprivileged uid the runs use. All access goes through paths.ts (no symlink is ever followed).
 *
 * Each workspace has a byte counter (apparent size of its regular files) kept up to date by
 * whoever changes it: uploads, deletes and sync here, run commits through `adjustUsage`. Reading
 * it is O(1); a full walk happens only as a reconciliation (`reconcile`), which also says whether
 * it saw everything.
 */
export class WorkspaceStore {
  readonly stagingDir: string;
  readonly trash: Trash;
  private readonly hashes: HashCache;
  private readonly syncMarks = new Map<string, SyncMark>();
  private readonly counters = new Map<string, UsageInfo>();
  private readonly generations = new Map<string, number>();
  /** False once a link from the content store failed with EXDEV (another filesystem): copy from then on. */
  private linkable = true;

  /** `db`: where the hash cache is kept across restarts (without it, in memory only). */
  constructor(private readonly opts: { root: string; uid: number; gid: number; db?: DB }) {
    this.hashes = new HashCache(opts.db);
    fs.mkdirSync(opts.root, { recursive: true, mode: 0o711 });
    this.stagingDir = path.join(opts.root, ".staging");
    fs.mkdirSync(this.stagingDir, { recursive: true, mode: 0o700 });
    this.trash = new Trash(opts.root);
  }

  /**
   * Bumped by every change made to a workspace from outside a run (upload, delete, chmod, a
   * run's commit): a run's view prepared ahead of time is usable only if nothing changed since
   * (an overlay's lower layer must not change under it).
   */
  generation(sandboxId: string): number {
    return this.generations.get(sandboxId) ?? 0;
  }

  bumpGeneration(sandboxId: string): number {
    const g = this.generation(sandboxId) + 1;
    this.generations.set(sandboxId, g);
    return g;
  }

  /** Records what a sync left in the workspace at `mark.generation` (see SyncMark). */
  markSynced(sandboxId: string, mark: SyncMark): void {
    if (mark.generation === this.generation(sandboxId)) this.syncMarks.set(sandboxId, mark);
  }

  /** The last sync's mark, only while nothing has changed the workspace since. */
  syncMark(sandboxId: string): SyncMark | undefined {
    const m = this.syncMarks.get(sandboxId);
    return m && m.generation === this.generation(sandboxId) ? m : undefined;
  }

  /** Files whose content was read to hash it since start (hash cache misses). */
  get filesHashed(): number {
    return this.hashes.filesHashed;
  }

  /** Writes what the hash cache has not written yet (before the store closes). */
  flush(): void {
    this.hashes.flush();
  }

  /** Owner of workspace files and directories (the sandbox uid). */
  get owner(): { uid: number; gid: number } {
    return { uid: this.opts.uid, gid: this.opts.gid };
  }

  dirFor(sandboxId: string): string {
    return path.join(this.opts.root, sandboxId);
  }

  create(sandboxId: string): void {
    const dir = this.dirFor(sandboxId);
    fs.mkdirSync(dir, { mode: 0o755 });
    fs.chownSync(dir, this.opts.uid, this.opts.gid);
    this.counters.set(sandboxId, { bytes: 0, complete: true });
  }

  exists(sandboxId: string): boolean {
    return fs.existsSync(this.dirFor(sandboxId));
  }

  /**
   * Removes the workspace. It disappears at once (moved into the trash); the returned promise
   * settles when its bytes are gone. If the process dies in between, `trash.drain()` finishes.
   */
  async destroy(sandboxId: string): Promise<void> {
    this.bumpGeneration(sandboxId);
    this.counters.delete(sandboxId);
    this.syncMarks.delete(sandboxId);
    this.hashes.drop(sandboxId);
    let job: string;
    try {
      job = this.trash.moveInPath(this.dirFor(sandboxId));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    await this.trash.removeJob(job);
  }

  // ---- usage -------------------------------------------------------------------------------

  /**
   * Bytes in the workspace, O(1). A workspace not yet measured since start-up is measured once
   * here (synchronously; `reconcile` at start-up makes that rare).
   */
  usage(sandboxId: string): number {
    return this.usageInfo(sandboxId).bytes;
  }

  usageInfo(sandboxId: string): UsageInfo {
    let u = this.counters.get(sandboxId);
    if (!u) {
      u = this.measureSync(sandboxId);
      this.counters.set(sandboxId, u);
    }
    return { ...u };
  }

  /** True when the workspace holds more than `limitBytes`, or its size is not fully known. */
  exceeds(sandboxId: string, limitBytes: number): boolean {
    const u = this.usageInfo(sandboxId);
    return !u.complete || u.bytes > limitBytes;
  }

  /** Records a change in the workspace's size made outside this class (e.g. a run's commit). */
  adjustUsage(sandboxId: string, deltaBytes: number): void {
    const u = this.counters.get(sandboxId);
    if (!u) return; // unknown: the next read measures it
    u.bytes = Math.max(0, u.bytes + deltaBytes);
  }

  /** Walks the whole workspace (asynchronously, any depth) and resets its counter. */
  async reconcile(sandboxId: string): Promise<UsageInfo & { reason?: string }> {
    let bytes = 0;
    let r: WalkResult;
    try {
      r = await walkTree(this.dirFor(sandboxId), [], (e) => { if (e.st.isFile()) bytes += Number(e.st.size); });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { bytes: 0, complete: true };
      throw e;
    }
    const u = { bytes, complete: r.complete };
    if (fs.existsSync(this.dirFor(sandboxId))) this.counters.set(sandboxId, { ...u });
    return { ...u, ...(r.reason ? { reason: r.reason } : {}) };
  }

  /** Reconciles every workspace on disk (start-up). */
  async reconcileAll(): Promise<void> {
    for (const name of fs.readdirSync(this.opts.root)) {
      if (name.startsWith(".")) continue;
      await this.reconcile(name).catch(() => undefined);
    }
  }

  /**
   * Iterative synchronous measure, for a workspace read before `reconcileAll` reached it.
   * Paths past PATH_MAX cannot be opened by name: they make the result incomplete, not silent.
   */
  private measureSync(sandboxId: string): UsageInfo {
    let bytes = 0;
    let complete = true;
    const stack: Buffer[] = [Buffer.from(this.dirFor(sandboxId))];
    let first = true;
    while (stack.length) {
      const dir = stack.pop()!;
      let names: Buffer[];
      try {
        names = fs.readdirSync(dir, { encoding: "buffer" });
      } catch (e) {
        if (first && (e as NodeJS.ErrnoException).code === "ENOENT") return { bytes: 0, complete: true };
        complete = false;
        continue;
      }
      first = false;
      for (const n of names) {
        const p = Buffer.concat([dir, SLASH, n]);
        const st = fs.lstatSync(p, { throwIfNoEntry: false });
        if (!st) continue;
        if (st.isFile()) bytes += st.size;
        else if (st.isDirectory()) {
          if (p.length > 4000) complete = false;
          else stack.push(p);
        }
      }
    }
    return { bytes, complete };
  }

  // ---- uploads -----------------------------------------------------------------------------

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

  /** Stages bytes already in memory (a small tar entry): one write, no stream machinery. */
  stageBuffer(data: Buffer): StagedFile {
    const tmpPath = path.join(this.stagingDir, randomBytes(12).toString("hex"));
    fs.writeFileSync(tmpPath, data, { mode: 0o644, flag: "wx" });
    return { tmpPath, size: data.length, sha256: createHash("sha256").update(data).digest("hex") };
  }

  discard(staged: StagedFile[]): void {
    for (const s of staged) if (!s.shared) fs.rmSync(s.tmpPath, { force: true });
  }

  /**
   * Puts a staged file at `target` (free: the commit moved any old file aside). A shared blob is
   * hard-linked when nothing else links it and its owner and mode are right (see blobs.ts: no
   * two workspaces ever share an inode), its times set to now as a copy's would be (build tools
   * compare them); otherwise it is copied. A file staged for this commit is moved.
   */
  private place(s: StagedFile, target: string | Buffer): void {
    const { uid, gid } = this.opts;
    if (s.shared) {
      const mode = s.mode ?? 0o644;
      const bst = fs.lstatSync(s.tmpPath);
      if (this.linkable && bst.nlink === 1 && bst.uid === uid && bst.gid === gid && (bst.mode & 0o7777) === mode) {
        try {
          fs.linkSync(s.tmpPath, target);
          if (!s.fresh) {
            const now = new Date();
            fs.utimesSync(s.tmpPath, now, now);
          }
          return;
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === "EXDEV") this.linkable = false;
          else if (code !== "EMLINK" && code !== "EPERM") throw e;
        }
      }
      const copy = path.join(this.stagingDir, randomBytes(12).toString("hex"));
      fs.copyFileSync(s.tmpPath, copy, fs.constants.COPYFILE_FICLONE);
      try {
        fs.chownSync(copy, uid, gid);
        fs.chmodSync(copy, mode);
        fs.renameSync(copy, target);
      } catch (e) {
        fs.rmSync(copy, { force: true });
        throw e;
      }
      return;
    }
    fs.chownSync(s.tmpPath, uid, gid);
    if (s.mode !== undefined) fs.chmodSync(s.tmpPath, s.mode);
    fs.renameSync(s.tmpPath, target);
  }

  /**
   * Moves staged files into the workspace, all or nothing: every target is checked and every
   * parent directory made before the first file moves; a file a part replaces is kept aside
   * until all parts are in, and put back (and new directories removed) if any part fails.
   * The quota is checked against the workspace's byte counter before anything moves.
   */
  commit(sandboxId: string, files: { parts: WsPath; staged: StagedFile }[], quotaBytes: number): FileEntry[] {
    const root = this.dirFor(sandboxId);
    this.bumpGeneration(sandboxId);
    // A later part for the same path wins; the earlier one is dropped.
    const byKey = new Map<string, { parts: WsPath; staged: StagedFile }>();
    for (const f of files) {
      const k = pathFields(f.parts).path_b64 ?? displayPath(f.parts);
      const prev = byKey.get(k);
      if (prev) this.discard([prev.staged]);
      byKey.set(k, f);
    }
    const list = [...byKey.values()];
    const fail: (e: unknown, rel: string) => never = (e, rel) => {
      this.discard(list.map((f) => f.staged));
      mapFsError(e, rel);
    };
    // A file and a directory of the same name in one upload cannot both exist.
    const keys = new Set(byKey.keys());
    for (const k of keys) {
      for (let i = k.indexOf("/"); i > 0; i = k.indexOf("/", i + 1)) {
        if (keys.has(k.slice(0, i))) fail(new PetriError("CONFLICT", `upload has both a file ${k.slice(0, i)} and a path below it`), k);
      }
    }
    // Parent directories are opened once per commit (many files share few directories), at most
    // DIR_CACHE of them at a time; an evicted one is opened again by path when needed.
    const made: WsPath[] = [];
    const dirs = new DirCache(root, this.opts, made);
    const undoDirs = () => {
      dirs.closeAll();
      for (const m of made.reverse()) {
        try {
          const fd = openDirNoFollow(root, m.slice(0, -1));
          try { fs.rmdirSync(fdPath(fd, m[m.length - 1])); } finally { fs.closeSync(fd); }
        } catch { /* not empty or gone: leave it */ }
      }
    };
    // Phase 1: open (making) every parent, check no target is a directory, count what is replaced.
    const prepared: { parent: WsPath; name: NamePart; rel: string; f: { parts: WsPath; staged: StagedFile }; exists: boolean }[] = [];
    let replaced = 0;
    for (const f of list) {
      const rel = displayPath(f.parts);
      const parent = f.parts.slice(0, -1);
      const name = f.parts[f.parts.length - 1];
      let st: fs.Stats | undefined;
      try {
        st = fs.lstatSync(fdPath(dirs.get(parent, true), name), { throwIfNoEntry: false });
      } catch (e) {
        undoDirs();
        fail(e, rel);
      }
      if (st?.isDirectory()) {
        undoDirs();
        fail(Object.assign(new Error("is a directory"), { code: "EISDIR" }), rel);
      }
      if (st?.isFile()) replaced += st.size;
      prepared.push({ parent, name, rel, f, exists: st !== undefined });
    }
    const incoming = list.reduce((a, f) => a + f.staged.size, 0);
    const used = this.usageInfo(sandboxId);
    if (!used.complete || used.bytes - replaced + incoming > quotaBytes) {
      undoDirs();
      this.discard(list.map((f) => f.staged));
      throw new PetriError("WORKSPACE_QUOTA_EXCEEDED", used.complete
        ? `workspace quota of ${quotaBytes} bytes would be exceeded (in use ${used.bytes}, upload ${incoming})`
        : `workspace quota of ${quotaBytes} bytes: the workspace's size could not be fully measured, so it counts as over`);
    }
    // Phase 2: move in, keeping replaced files aside so a failure can put them back.
    const moved: { parent: WsPath; name: NamePart; backup?: string }[] = [];
    const out: FileEntry[] = [];
    try {
      for (const p of prepared) {
        const dirfd = dirs.get(p.parent, false);
        const target = fdPath(dirfd, p.name);
        let backup: string | undefined;
        if (p.exists) {
          backup = path.join(this.stagingDir, `old-${randomBytes(12).toString("hex")}`);
          try {
            fs.renameSync(target, backup);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
            backup = undefined;
          }
        }
        moved.push({ parent: p.parent, name: p.name, backup });
        this.place(p.f.staged, target);
        const st = fs.lstatSync(target, { bigint: true });
        this.hashes.set(sandboxId, st, p.f.staged.sha256);
        out.push({ ...pathFields(p.f.parts), type: "file", size: p.f.staged.size, mode: Number(st.mode & 0o7777n), sha256: p.f.staged.sha256, mtime: new Date(Number(st.mtimeMs)).toISOString() });
      }
    } catch (e) {
      for (const m of moved.reverse()) {
        try {
          const target = fdPath(dirs.get(m.parent, false), m.name);
          if (m.backup) fs.renameSync(m.backup, target);
          else fs.unlinkSync(target);
        } catch { /* best effort: the running code may have changed the directory */ }
      }
      undoDirs();
      fail(e, prepared[moved.length - 1]?.rel ?? "");
    }
    for (const m of moved) if (m.backup) fs.rmSync(m.backup, { force: true });
    dirs.closeAll();
    this.adjustUsage(sandboxId, incoming - replaced);
    return out;
  }

  // ---- single files ------------------------------------------------------------------------

  /** Opens a file for download. The caller streams from the fd and closes it. */
  openRead(sandboxId: string, p: PathArg): { fd: number; size: number } {
    const parts = toParts(p);
    try {
      const { fd, stat } = openFileNoFollow(this.dirFor(sandboxId), parts);
      return { fd, size: stat.size };
    } catch (e) {
      mapFsError(e, displayPath(parts));
    }
  }

  /**
   * Runs `fn` with the opened parent directory of the path and its last component; errno
   * failures become API errors naming the path.
   */
  private async inParent<T>(sandboxId: string, p: PathArg, fn: (dirfd: number, name: NamePart) => T | Promise<T>): Promise<T> {
    const parts = toParts(p);
    const rel = displayPath(parts);
    let dirfd: number;
    try {
      dirfd = openDirNoFollow(this.dirFor(sandboxId), parts.slice(0, -1));
    } catch (e) {
      mapFsError(e, rel);
    }
    try {
      return await fn(dirfd, parts[parts.length - 1]);
    } catch (e) {
      mapFsError(e, rel);
    } finally {
      fs.closeSync(dirfd);
    }
  }

  /**
   * Deletes a file or directory. A directory (recursive) is moved into the trash in one rename,
   * then emptied there, however deep; the promise settles when its bytes are gone.
   */
  async remove(sandboxId: string, p: PathArg, recursive: boolean): Promise<void> {
    this.bumpGeneration(sandboxId);
    let job: string | undefined;
    await this.inParent(sandboxId, p, (dirfd, name) => {
      const st = fs.lstatSync(fdPath(dirfd, name));
      if (!st.isDirectory()) {
        // unlink never follows: a symlink is removed, not its target.
        fs.unlinkSync(fdPath(dirfd, name));
        if (st.isFile()) this.adjustUsage(sandboxId, -st.size);
      } else if (recursive) {
        job = this.trash.moveIn(dirfd, name);
      } else {
        fs.rmdirSync(fdPath(dirfd, name));
      }
    });
    if (job) await this.trash.removeJob(job, (freed) => this.adjustUsage(sandboxId, -freed));
  }

  /** Sets a file's mode (only the executable bits are a client's choice). */
  async chmod(sandboxId: string, p: PathArg, mode: 0o755 | 0o644): Promise<void> {
    this.bumpGeneration(sandboxId);
    await this.inParent(sandboxId, p, (dirfd, name) => {
      const fd = fs.openSync(fdPath(dirfd, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
      try {
        fs.fchmodSync(fd, mode);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  // ---- listings ----------------------------------------------------------------------------

  /**
   * Lists entries below a directory without following symlinks (they are listed as symlinks),
   * any depth, never blocking the event loop. `complete: false` says entries were left out.
   */
  async listing(sandboxId: string, p: PathArg, opts: { recursive: boolean; hashes: boolean; limit?: number }): Promise<Listing> {
    const parts = toParts(p, true);
    const root = this.dirFor(sandboxId);
    const out: FileEntry[] = [];
    const rawStats: fs.BigIntStats[] = [];
    let tooLong = 0;
    const prefixBytes = parts.length ? Buffer.byteLength(displayPath(parts)) + 1 : 0;
    let r: WalkResult;
    try {
      r = await walkTree(root, parts, (e) => {
        if (prefixBytes + e.pathBytes > MAX_LISTED_PATH_BYTES) {
          tooLong++;
          return;
        }
        out.push({ ...pathFields([...parts, ...entryPath(e)]), type: typeOf(e.st), size: Number(e.st.size), mode: Number(e.st.mode & 0o7777n), mtime: new Date(Number(e.st.mtimeMs)).toISOString() });
        rawStats.push(e.st);
      }, { maxDepth: opts.recursive ? Infinity : 1, maxEntries: opts.limit ?? DEFAULT_LIST_LIMIT });
    } catch (e) {
      mapFsError(e, displayPath(parts));
    }
    if (opts.hashes) {
      for (let i = 0; i < out.length; i++) {
        if (out[i].type !== "file") continue;
        out[i].sha256 = await this.hashFile(sandboxId, [...parts, ...this.partsOf(out[i])].slice(parts.length), rawStats[i]);
      }
    }
    const listing: Listing = { files: out.sort(byPath), complete: r.complete && tooLong === 0 };
    if (!r.complete) listing.reason = r.reason;
    else if (tooLong) listing.reason = `${tooLong} entries have paths longer than ${MAX_LISTED_PATH_BYTES} bytes`;
    return listing;
  }

  /**
   * What a sync plan compares a manifest against: every entry below `start` whose path is UTF-8
   * (a manifest cannot name others), by path relative to `start`, files with their sha256 (from
   * the hash cache when inode, size and times match, else read). Like `listing`, but without its
   * per-entry formatting, dates and sorting: a no-change sync of 50,000 files runs this.
   * `wantHash(path, size)`: whether a file's hash matters (a file whose size differs from the
   * manifest's cannot be unchanged: it is not read); by default every file's does.
   */
  async syncState(sandboxId: string, start: WsPath, wantHash?: (path: string, size: number) => boolean): Promise<{ entries: Map<string, SyncEntry>; complete: boolean; reason?: string }> {
    const root = this.dirFor(sandboxId);
    const entries = new Map<string, SyncEntry>();
    const unhashed: { e: SyncEntry; parts: WsPath; st: fs.BigIntStats }[] = [];
    const prefixBytes = start.length ? Buffer.byteLength(displayPath(start)) + 1 : 0;
    const known = this.hashes.lookup(sandboxId);
    // A walk of the whole workspace sees every file the cache may know: the others are gone.
    const seen = start.length === 0 ? new Set<string>() : undefined;
    let tooLong = 0;
    let r: WalkResult;
    try {
      r = await walkTree(root, start, (w) => {
        if (seen && w.st.isFile()) seen.add(HashCache.fileId(w.st));
        if (prefixBytes + w.pathBytes > MAX_LISTED_PATH_BYTES) {
          tooLong++;
          return;
        }
        const parts = entryPath(w);
        if (!isTextPath(parts)) return;
        const e: SyncEntry = { type: typeOf(w.st), mode: Number(w.st.mode & 0o7777n) };
        if (e.type === "file") {
          e.sha256 = known(w.st);
          if (e.sha256 === undefined) {
            const key = parts.join("/");
            if (!wantHash || wantHash(key, Number(w.st.size))) unhashed.push({ e, parts, st: w.st });
          }
        }
        entries.set(parts.join("/"), e);
      });
    } catch (e) {
      mapFsError(e, displayPath(start));
    }
    if (seen && r.complete) this.hashes.prune(sandboxId, seen);
    for (const u of unhashed) u.e.sha256 = await this.hashFile(sandboxId, [...start, ...u.parts], u.st);
    const out: { entries: Map<string, SyncEntry>; complete: boolean; reason?: string } = { entries, complete: r.complete && tooLong === 0 };
    if (!r.complete) out.reason = r.reason;
    else if (tooLong) out.reason = `${tooLong} entries have paths longer than ${MAX_LISTED_PATH_BYTES} bytes`;
    return out;
  }

  /** The listing's files only (callers that need not know about completeness use `listing`). */
  async list(sandboxId: string, p: PathArg, opts: { recursive: boolean; hashes: boolean }): Promise<FileEntry[]> {
    return (await this.listing(sandboxId, p, opts)).files;
  }

  private partsOf(e: FileEntry): WsPath {
    if (e.path_b64 === undefined) return e.path.split("/");
    return splitB64(e.path_b64);
  }

  private async hashFile(sandboxId: string, fullParts: WsPath, known?: fs.BigIntStats): Promise<string | undefined> {
    const root = this.dirFor(sandboxId);
    // The walk's lstat identifies the content (inode, size, mtime and ctime to the nanosecond):
    // a hit needs no open at all, which is what makes a no-change sync of 50,000 files cheap.
    if (known) {
      const hit = this.hashes.get(sandboxId, known);
      if (hit) return hit;
    }
    let fd: number;
    try {
      ({ fd } = openFileNoFollow(root, fullParts));
    } catch {
      return undefined;
    }
    const stat = fs.fstatSync(fd, { bigint: true });
    const cached = this.hashes.get(sandboxId, stat);
    if (cached) {
      fs.closeSync(fd);
      return cached;
    }
    this.hashes.filesHashed++;
    const hash = createHash("sha256");
    if (stat.size <= READ_WHOLE) {
      // A stream (1 MiB buffer, a thread-pool round trip per chunk) costs more than a small file's read.
      try {
        hash.update(fs.readFileSync(fd));
      } finally {
        fs.closeSync(fd);
      }
    } else {
      await pipeline(fs.createReadStream("", { fd, autoClose: true }), hash);
    }
    const hex = hash.digest("hex");
    this.hashes.set(sandboxId, stat, hex);
    return hex;
  }

  /** Metadata of every entry (any depth), for a run's before/after comparison. */
  async snapshot(sandboxId: string): Promise<Snapshot> {
    const snap: Snapshot = new Map();
    try {
      await walkTree(this.dirFor(sandboxId), [], (e) => {
        if (e.pathBytes > MAX_LISTED_PATH_BYTES) return;
        // Exact keys (pathKey): names that differ only in bytes that are not UTF-8 stay apart.
        snap.set(pathKey(entryPath(e)), { size: Number(e.st.size), mtimeNs: e.st.mtimeNs, ctimeNs: e.st.ctimeNs, ino: e.st.ino, type: typeOf(e.st) });
      });
    } catch {
      // no workspace: empty snapshot
    }
    return snap;
  }
}

function splitB64(b64: string): WsPath {
  return splitBytes(Buffer.from(b64, "base64"));
}

export function diffSnapshots(before: Snapshot, after: Snapshot): FileChanges {
  const keys = { created: [] as string[], modified: [] as string[], deleted: [] as string[] };
  for (const [p, a] of after) {
    if (a.type === "directory") continue;
    const b = before.get(p);
    if (!b || b.type !== a.type) keys.created.push(p);
    else if (b.size !== a.size || b.mtimeNs !== a.mtimeNs || b.ctimeNs !== a.ctimeNs || b.ino !== a.ino) keys.modified.push(p);
  }
  for (const [p, b] of before) {
    if (b.type === "directory") continue;
    const a = after.get(p);
    if (!a || a.type !== b.type) keys.deleted.push(p);
  }
  const out: FileChanges = { created: [], modified: [], deleted: [] };
  const raw: NonNullable<FileChanges["non_utf8"]> = [];
  for (const change of ["created", "modified", "deleted"] as const) {
    for (const k of keys[change].sort()) {
      const f = pathFields(pathFromKey(k));
      out[change].push(f.path);
      if (f.path_b64 !== undefined) raw.push({ change, path: f.path, path_b64: f.path_b64 });
    }
    out[change].sort();
  }
  if (raw.length) out.non_utf8 = raw;
  return out;
}

