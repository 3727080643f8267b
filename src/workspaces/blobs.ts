import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { StagedFile } from "./workspaces.js";
import { yieldToLoop } from "./walk.js";

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
/** A temporary blob (`<sha>.<random>`) older than this was left by a crash: `collect` removes it. */
const STALE_TMP_MS = 60 * 60 * 1000;
const SLICE_MS = 8;
/** Per-tenant folder where blobs are written before they get their name. */
const INCOMING = "incoming";

export interface BlobOwner {
  uid: number;
  gid: number;
}

/**
 * Content-addressed store of synced files, one per tenant: a file that one of the tenant's
 * sandboxes already sent is never sent again to another.
 *
 * A blob written by a sync is created owned and moded like a workspace file, so the commit can
 * hard-link it into the workspace: one file creation per synced file instead of a staged copy, a
 * store copy and two renames. Sharing an inode is safe because nothing writes a workspace file in
 * place (runs write into their overlay's upper layer, commits and uploads rename new files over
 * old ones), and because a blob is linked into **at most one** workspace (the commit links only a
 * blob whose link count is 1, else copies it): sandboxes never share an inode, so one sandbox's
 * chmod, or the ctime a link or unlink changes, never reaches another sandbox's files (a run's
 * conflict check compares the lower layer's ctime).
 *
 * It is a cache under a per-tenant quota. Each sandbox that received blobs by sync has a refs
 * file (`<tenant>/refs/<sandbox>`, the sha256s it got); a blob no live sandbox references (and no
 * sync in flight uses) is removed by `collect()` (run when a sandbox is deleted and when a write
 * would pass the quota). A blob that would still not fit is simply not kept: the sync succeeds,
 * the next one sends it again. Sizes come from the files on disk, never from a client's manifest.
 */
export class BlobStore {
  /** Bytes per tenant, measured from disk on first use. */
  private readonly used = new Map<string, number>();
  /** Prefix directories known to exist (removeTenant forgets them). */
  private readonly dirsMade = new Set<string>();
  private readonly quotas = new Map<string, { bytes: number; at: number }>();
  /** Blobs in use by syncs in flight (`tenant/sha` → count): `collect` leaves them. */
  private readonly pinned = new Map<string, number>();
  /**
   * Tenants whose last collection left them over quota: nothing more can be freed until a
   * sandbox's refs are dropped or a pin released, so a sync of 5,000 files that do not fit runs
   * one collection, not 5,000.
   */
  private readonly exhausted = new Set<string>();

  constructor(private readonly root: string, private readonly quotaBytes: (tenantId: string) => number = () => Infinity) {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  }

  private tenantDir(tenantId: string): string {
    return path.join(this.root, tenantId);
  }

  private pathOf(tenantId: string, sha: string): string {
    return path.join(this.root, tenantId, sha.slice(0, 2), sha);
  }

  /** The blob's size on disk, or undefined when the store lacks it. */
  sizeOf(tenantId: string, sha: string): number | undefined {
    return fs.statSync(this.pathOf(tenantId, sha), { throwIfNoEntry: false })?.size;
  }

  has(tenantId: string, sha: string): boolean {
    return this.sizeOf(tenantId, sha) !== undefined;
  }

  /** Bytes the tenant's blobs take. */
  usage(tenantId: string): number {
    let u = this.used.get(tenantId);
    if (u === undefined) {
      u = 0;
      for (const { size } of this.blobsOf(tenantId)) u += size;
      this.used.set(tenantId, u);
    }
    return u;
  }

  private *blobsOf(tenantId: string): Generator<{ sha: string; file: string; size: number }> {
    const dir = this.tenantDir(tenantId);
    let prefixes: string[];
    try {
      prefixes = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const pre of prefixes) {
      if (pre.length !== 2) continue; // "refs"
      let names: string[];
      try {
        names = fs.readdirSync(path.join(dir, pre));
      } catch {
        continue;
      }
      for (const sha of names) {
        if (sha.length !== 64) continue; // a temporary file of an unfinished write
        const file = path.join(dir, pre, sha);
        const st = fs.statSync(file, { throwIfNoEntry: false });
        if (st) yield { sha, file, size: st.size };
      }
    }
  }

  /** Room for `size` more bytes under the tenant's quota, collecting unreferenced blobs if needed. */
  private fits(tenantId: string, size: number): boolean {
    const quota = this.quotaOf(tenantId);
    if (this.usage(tenantId) + size <= quota) return true;
    if (this.exhausted.has(tenantId)) return false;
    this.collect(tenantId);
    if (this.usage(tenantId) + size <= quota) return true;
    this.exhausted.add(tenantId);
    return false;
  }

  /**
   * The tenant's quota, read at most once a second: a sync of 5,000 files asks 5,000 times, and
   * the answer is a database lookup.
   */
  private quotaOf(tenantId: string): number {
    const now = Date.now();
    const c = this.quotas.get(tenantId);
    if (c && now - c.at < 1000) return c.bytes;
    const bytes = this.quotaBytes(tenantId);
    this.quotas.set(tenantId, { bytes, at: now });
    return bytes;
  }

  /** Makes `dir` (mode 0700) once per process. */
  private ensureDir(dir: string): void {
    if (this.dirsMade.has(dir)) return;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.dirsMade.add(dir);
  }

  /**
   * A fresh temporary name in the tenant's `incoming/` folder, and the blob's prefix folder made.
   * New files are created in one folder, then renamed to `<aa>/<sha>`: creating them straight in
   * 256 prefix folders touches 256 inode tables and costs about three times the kernel time
   * (measured on ext4), while a rename is cheap.
   */
  private tmpFor(tenantId: string, dest: string): string {
    this.ensureDir(path.dirname(dest));
    const incoming = path.join(this.tenantDir(tenantId), INCOMING);
    this.ensureDir(incoming);
    return path.join(incoming, randomBytes(8).toString("hex"));
  }

  /**
   * Stores bytes already in memory and hash-verified (`sha`) as a blob owned by `owner` with
   * permission bits `mode`, ready to be linked into a workspace: one file creation. Returns the
   * blob as a shared staged file (pinned until `unpin`), or undefined when the tenant's quota
   * has no room for it (the caller stages it in the workspace area instead). A blob already in
   * the store is used as it is.
   */
  write(tenantId: string, sha: string, data: Buffer, owner: BlobOwner, mode: number): StagedFile | undefined {
    const dest = this.pathOf(tenantId, sha);
    const have = fs.statSync(dest, { throwIfNoEntry: false });
    if (have?.size === data.length) return this.pin(tenantId, { tmpPath: dest, size: have.size, sha256: sha, shared: true, mode });
    if (!this.fits(tenantId, data.length)) return undefined;
    const tmp = this.tmpFor(tenantId, dest);
    const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    try {
      for (let off = 0; off < data.length;) off += fs.writeSync(fd, data, off);
      fs.fchownSync(fd, owner.uid, owner.gid);
      // The process umask may have taken bits off the mode given to open.
      fs.fchmodSync(fd, mode);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, dest);
    this.used.set(tenantId, this.usage(tenantId) - (have?.size ?? 0) + data.length);
    return this.pin(tenantId, { tmpPath: dest, size: data.length, sha256: sha, shared: true, fresh: true, mode });
  }

  /**
   * Keeps a copy of a staged (already hash-verified) file too big to hold in memory, if the
   * tenant's quota allows it after unreferenced blobs are collected. Returns whether the blob
   * is (now) in the store. The staged file itself is committed as it is.
   */
  put(tenantId: string, staged: StagedFile, owner: BlobOwner, mode: number): boolean {
    const dest = this.pathOf(tenantId, staged.sha256);
    if (fs.existsSync(dest)) return true;
    if (!this.fits(tenantId, staged.size)) return false;
    const tmp = this.tmpFor(tenantId, dest);
    fs.copyFileSync(staged.tmpPath, tmp, fs.constants.COPYFILE_FICLONE);
    // Owned and moded like a workspace file, so a later sync can link it.
    fs.chownSync(tmp, owner.uid, owner.gid);
    fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, dest);
    this.used.set(tenantId, this.usage(tenantId) + staged.size);
    return true;
  }

  /**
   * A blob already in the store, as a shared staged file to commit (pinned until `unpin`), or
   * undefined if it is gone. Its size is the blob's own, whatever a manifest claimed.
   */
  use(tenantId: string, sha: string, mode: number): StagedFile | undefined {
    const st = fs.statSync(this.pathOf(tenantId, sha), { throwIfNoEntry: false });
    if (!st) return undefined;
    return this.pin(tenantId, { tmpPath: this.pathOf(tenantId, sha), size: st.size, sha256: sha, shared: true, mode });
  }

  private pin(tenantId: string, f: StagedFile): StagedFile {
    const k = `${tenantId}/${f.sha256}`;
    this.pinned.set(k, (this.pinned.get(k) ?? 0) + 1);
    return f;
  }

  /** Releases blobs `write` or `use` returned (a sync's end, committed or not). */
  unpin(tenantId: string, files: Iterable<StagedFile>): void {
    for (const f of files) {
      if (!f.shared) continue;
      const k = `${tenantId}/${f.sha256}`;
      const n = (this.pinned.get(k) ?? 1) - 1;
      if (n > 0) this.pinned.set(k, n);
      else {
        this.pinned.delete(k);
        this.exhausted.delete(tenantId);
      }
    }
  }

  /** Records that `sandboxId` holds these blobs (its refs keep them from collection). */
  addRefs(tenantId: string, sandboxId: string, shas: Iterable<string>): void {
    const lines = [...new Set(shas)].join("\n");
    if (!lines) return;
    const dir = path.join(this.tenantDir(tenantId), "refs");
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.appendFileSync(path.join(dir, sandboxId), `${lines}\n`, { mode: 0o600 });
  }

  /** Drops a deleted sandbox's refs and collects what nothing references any more (yielding to other requests). */
  async dropSandbox(tenantId: string, sandboxId: string): Promise<void> {
    fs.rmSync(path.join(this.tenantDir(tenantId), "refs", sandboxId), { force: true });
    this.exhausted.delete(tenantId);
    let last = performance.now();
    const it = this.collecting(tenantId);
    for (let r = it.next(); !r.done; r = it.next()) {
      if (performance.now() - last < SLICE_MS) continue;
      await yieldToLoop();
      last = performance.now();
    }
  }

  /** Removes every blob of the tenant that no sandbox's refs name. Returns bytes freed. */
  collect(tenantId: string): number {
    const it = this.collecting(tenantId);
    for (let r = it.next(); ; r = it.next()) if (r.done) return r.value;
  }

  /**
   * The collection, as steps (one per blob looked at): only the blobs it removes are stat'ed, so
   * a store of 50,000 referenced blobs costs a directory read per prefix, not 50,000 stats.
   */
  private *collecting(tenantId: string): Generator<void, number> {
    const refs = new Set<string>();
    const tdir = this.tenantDir(tenantId);
    const rdir = path.join(tdir, "refs");
    let files: string[] = [];
    try {
      files = fs.readdirSync(rdir);
    } catch {
      // no refs at all
    }
    for (const f of files) {
      for (const line of fs.readFileSync(path.join(rdir, f), "utf8").split("\n")) if (line) refs.add(line);
    }
    let prefixes: string[] = [];
    try {
      prefixes = fs.readdirSync(tdir).filter((p) => p.length === 2 || p === INCOMING); // not "refs"
    } catch {
      return 0;
    }
    const cutoff = Date.now() - STALE_TMP_MS;
    let freed = 0;
    for (const pre of prefixes) {
      let names: string[] = [];
      try {
        names = fs.readdirSync(path.join(tdir, pre));
      } catch {
        continue;
      }
      for (const name of names) {
        yield;
        const file = path.join(tdir, pre, name);
        if (pre === INCOMING || name.length !== 64) {
          // A temporary file: an unfinished write's, or one a crash left (then old).
          const st = fs.lstatSync(file, { throwIfNoEntry: false });
          if (st && st.mtimeMs < cutoff) fs.rmSync(file, { force: true });
          continue;
        }
        if (refs.has(name) || this.pinned.has(`${tenantId}/${name}`)) continue;
        const st = fs.lstatSync(file, { throwIfNoEntry: false });
        if (!st) continue;
        fs.rmSync(file, { force: true });
        freed += st.size;
      }
    }
    if (this.used.has(tenantId)) this.used.set(tenantId, Math.max(0, this.used.get(tenantId)! - freed));
    return freed;
  }

  removeTenant(tenantId: string): void {
    fs.rmSync(this.tenantDir(tenantId), { recursive: true, force: true });
    this.used.delete(tenantId);
    this.quotas.delete(tenantId);
    this.exhausted.delete(tenantId);
    this.dirsMade.clear();
  }
}
