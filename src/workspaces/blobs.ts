import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { StagedFile } from "./workspaces.js";

/**
 * Content-addressed store of synced files, one per tenant: a file that one of the tenant's
 * sandboxes already sent is never sent again to another. Workspaces get their own copy (a
 * copy-on-write clone where the filesystem supports it) because sandboxed code may modify
 * workspace files, and a shared inode would let one sandbox change another's file.
 *
 * It is a cache under a per-tenant quota. Each sandbox that received blobs by sync has a refs
 * file (`<tenant>/refs/<sandbox>`, the sha256s it got); a blob no live sandbox references is
 * removed by `collect()` (run when a sandbox is deleted and when a put would pass the quota).
 * A blob that would still not fit is simply not kept: the sync succeeds, the next one sends it
 * again. Sizes come from the files on disk, never from a client's manifest.
 */
export class BlobStore {
  /** Bytes per tenant, measured from disk on first use. */
  private readonly used = new Map<string, number>();
  /** Prefix directories known to exist (removeTenant forgets them). */
  private readonly dirsMade = new Set<string>();

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
        if (sha.length !== 64) continue; // a temporary file of an unfinished put
        const file = path.join(dir, pre, sha);
        const st = fs.statSync(file, { throwIfNoEntry: false });
        if (st) yield { sha, file, size: st.size };
      }
    }
  }

  /**
   * Keeps a copy of a staged (already hash-verified) file, if the tenant's quota allows it after
   * unreferenced blobs are collected. Returns whether the blob is (now) in the store.
   */
  put(tenantId: string, staged: StagedFile, data?: Buffer): boolean {
    const dest = this.pathOf(tenantId, staged.sha256);
    if (fs.existsSync(dest)) return true;
    const quota = this.quotaBytes(tenantId);
    if (this.usage(tenantId) + staged.size > quota) {
      this.collect(tenantId);
      if (this.usage(tenantId) + staged.size > quota) return false;
    }
    const dir = path.dirname(dest);
    if (!this.dirsMade.has(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      this.dirsMade.add(dir);
    }
    const tmp = `${dest}.${randomBytes(6).toString("hex")}`;
    if (data) fs.writeFileSync(tmp, data, { mode: 0o600 });
    else fs.copyFileSync(staged.tmpPath, tmp, fs.constants.COPYFILE_FICLONE);
    fs.renameSync(tmp, dest);
    this.used.set(tenantId, this.usage(tenantId) + staged.size);
    return true;
  }

  /**
   * Copies a blob into the staging area so it can be committed like an upload. Its size is the
   * blob's own, whatever a manifest claimed.
   */
  materialize(tenantId: string, sha: string, stagingDir: string): StagedFile {
    const tmpPath = path.join(stagingDir, randomBytes(12).toString("hex"));
    fs.copyFileSync(this.pathOf(tenantId, sha), tmpPath, fs.constants.COPYFILE_FICLONE);
    return { tmpPath, sha256: sha, size: fs.statSync(tmpPath).size };
  }

  /** Records that `sandboxId` holds these blobs (its refs keep them from collection). */
  addRefs(tenantId: string, sandboxId: string, shas: Iterable<string>): void {
    const lines = [...new Set(shas)].join("\n");
    if (!lines) return;
    const dir = path.join(this.tenantDir(tenantId), "refs");
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.appendFileSync(path.join(dir, sandboxId), `${lines}\n`, { mode: 0o600 });
  }

  /** Drops a deleted sandbox's refs and collects what nothing references any more. */
  dropSandbox(tenantId: string, sandboxId: string): void {
    fs.rmSync(path.join(this.tenantDir(tenantId), "refs", sandboxId), { force: true });
    this.collect(tenantId);
  }

  /** Removes every blob of the tenant that no sandbox's refs name. Returns bytes freed. */
  collect(tenantId: string): number {
    const refs = new Set<string>();
    const dir = path.join(this.tenantDir(tenantId), "refs");
    let files: string[] = [];
    try {
      files = fs.readdirSync(dir);
    } catch {
      // no refs at all
    }
    for (const f of files) {
      for (const line of fs.readFileSync(path.join(dir, f), "utf8").split("\n")) if (line) refs.add(line);
    }
    let freed = 0;
    for (const b of [...this.blobsOf(tenantId)]) {
      if (refs.has(b.sha)) continue;
      fs.rmSync(b.file, { force: true });
      freed += b.size;
    }
    if (this.used.has(tenantId)) this.used.set(tenantId, Math.max(0, this.used.get(tenantId)! - freed));
    return freed;
  }

  removeTenant(tenantId: string): void {
    fs.rmSync(this.tenantDir(tenantId), { recursive: true, force: true });
    this.used.delete(tenantId);
    this.dirsMade.clear();
  }
}
