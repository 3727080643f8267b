import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PetriError } from "../errors.js";
import { parseRelPath } from "./paths.js";
import type { StagedFile, WorkspaceStore } from "./workspaces.js";

export interface ManifestEntry {
  path: string;
  sha256: string;
  size: number;
  mode?: number;
}

export interface Manifest {
  files: ManifestEntry[];
  delete_extraneous?: boolean;
}

export interface SyncPlan {
  missing: string[];
  reusable: string[];
  unchanged: string[];
  delete: string[];
}

const SHA = /^[0-9a-f]{64}$/;

/**
 * Content-addressed store of uploaded files, one per tenant: a file that one of the tenant's
 * sandboxes already uploaded is never sent again to another. Workspaces get their own copy
 * (a copy-on-write clone where the filesystem supports it) because sandboxed code may modify
 * workspace files, and a shared inode would let one sandbox change another's file.
 */
export class BlobStore {
  constructor(private readonly root: string) {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  }

  private pathOf(tenantId: string, sha: string): string {
    return path.join(this.root, tenantId, sha.slice(0, 2), sha);
  }

  has(tenantId: string, sha: string): boolean {
    return fs.existsSync(this.pathOf(tenantId, sha));
  }

  /** Keeps a copy of a staged (already hash-verified) file. */
  put(tenantId: string, staged: StagedFile): void {
    const dest = this.pathOf(tenantId, staged.sha256);
    if (fs.existsSync(dest)) return;
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o700 });
    const tmp = `${dest}.${randomBytes(6).toString("hex")}`;
    fs.copyFileSync(staged.tmpPath, tmp, fs.constants.COPYFILE_FICLONE);
    fs.renameSync(tmp, dest);
  }

  /** Copies a blob into the staging area so it can be committed like an upload. */
  materialize(tenantId: string, sha: string, size: number, stagingDir: string): StagedFile {
    const tmpPath = path.join(stagingDir, randomBytes(12).toString("hex"));
    fs.copyFileSync(this.pathOf(tenantId, sha), tmpPath, fs.constants.COPYFILE_FICLONE);
    return { tmpPath, sha256: sha, size };
  }

  removeTenant(tenantId: string): void {
    fs.rmSync(path.join(this.root, tenantId), { recursive: true, force: true });
  }
}

export function validateManifest(m: Manifest): Map<string, ManifestEntry> {
  const out = new Map<string, ManifestEntry>();
  for (const f of m.files) {
    const rel = parseRelPath(f.path).join("/");
    if (!SHA.test(f.sha256)) throw new PetriError("VALIDATION_ERROR", `sha256 of ${f.path} must be 64 lowercase hex digits`);
    if (!Number.isSafeInteger(f.size) || f.size < 0) throw new PetriError("VALIDATION_ERROR", `size of ${f.path} must be a non-negative integer`);
    if (out.has(rel)) throw new PetriError("VALIDATION_ERROR", `path ${rel} appears twice in the manifest`);
    out.set(rel, { ...f, path: rel });
  }
  return out;
}

export async function planSync(ws: WorkspaceStore, blobs: BlobStore, tenantId: string, sandboxId: string, m: Manifest): Promise<SyncPlan> {
  const wanted = validateManifest(m);
  const current = new Map((await ws.list(sandboxId, "", { recursive: true, hashes: true })).map((e) => [e.path, e]));
  const plan: SyncPlan = { missing: [], reusable: [], unchanged: [], delete: [] };
  for (const [p, f] of wanted) {
    const cur = current.get(p);
    if (cur?.type === "file" && cur.sha256 === f.sha256) plan.unchanged.push(p);
    else if (blobs.has(tenantId, f.sha256)) plan.reusable.push(p);
    else plan.missing.push(p);
  }
  if (m.delete_extraneous !== false) {
    for (const [p, e] of current) {
      if (e.type === "directory" || wanted.has(p)) continue;
      // A directory in the manifest's way would be replaced by a file; leave its content alone.
      plan.delete.push(p);
    }
  }
  return plan;
}
