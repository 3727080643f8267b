import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { PetriError } from "../errors.js";
import { parseRelPath } from "./paths.js";
import type { BlobStore } from "./blobs.js";
import type { StagedFile, SyncEntry, WorkspaceStore } from "./workspaces.js";

export { BlobStore } from "./blobs.js";

export interface ManifestEntry {
  path: string;
  sha256: string;
  size: number;
  mode?: number;
}

export interface Manifest {
  /** Absent in a plan request that only presents `manifest_sha256` (the quick check). */
  files?: ManifestEntry[];
  /**
   * Plan only: `manifestDigest` of the client's manifest. Without `files`: the server answers
   * `up_to_date: true` when the workspace still holds what the last sync with that manifest left
   * (nothing changed it since), else `up_to_date: false` and the client sends the manifest.
   */
  manifest_sha256?: string;
  /** Delete files below `target` that the manifest does not list. Default false. */
  delete_extraneous?: boolean;
  /** Workspace folder the manifest's paths are relative to (default: the workspace root). */
  target?: string;
  /** "tar": apply's file parts named `tar` are tar archives of manifest paths (many files, one part). */
  archive?: "tar";
}

export interface SyncPlan {
  missing: string[];
  reusable: string[];
  unchanged: string[];
  delete: string[];
  /** False when the workspace could not be listed completely (see `reason`). */
  complete: boolean;
  reason?: string;
  /** Nothing to send, reuse, delete or chmod: the workspace already holds the manifest. */
  up_to_date: boolean;
}

export interface ApplyResult {
  uploaded: number;
  reused: number;
  unchanged: number;
  deleted: number;
  bytes_received: number;
}

/** What the multipart reader hands over (the subset of @fastify/multipart's parts we use). */
export type IncomingPart =
  | { type: "field"; fieldname: string; value: unknown }
  | { type: "file"; fieldname: string; file: Readable & { truncated?: boolean } };

export interface ApplyContext {
  tenantId: string;
  sandboxId: string;
  quotaBytes: number;
  maxUploadBytes: number;
  /** The tenant-wide quota check for `incoming` bytes (throws). */
  checkTenantBytes?: (incoming: number) => void;
}

const SHA = /^[0-9a-f]{64}$/;
/** Tar entries up to this size are read into memory and staged in one write. */
const SMALL_ENTRY = 1024 * 1024;
const execBits = (mode: number) => (mode & 0o111 ? 0o755 : 0o644);

/**
 * The digest a client presents instead of its manifest (both SDKs compute it the same way):
 * sha256 over `path \n sha256 \n size \n mode \n` per entry, in the manifest's order, mode empty
 * when absent. Paths cannot hold a newline (paths.ts refuses control bytes), so it is unambiguous.
 */
export function manifestDigest(files: ManifestEntry[]): string {
  const h = createHash("sha256");
  let chunk = "";
  for (const f of files) {
    chunk += `${f.path}\n${f.sha256}\n${f.size}\n${f.mode ?? ""}\n`;
    if (chunk.length > 65536) {
      h.update(chunk);
      chunk = "";
    }
  }
  return h.update(chunk).digest("hex");
}

export function validateManifest(m: Manifest): Map<string, ManifestEntry> {
  const out = new Map<string, ManifestEntry>();
  if (!Array.isArray(m.files)) throw new PetriError("VALIDATION_ERROR", "manifest.files must be an array");
  for (const f of m.files) {
    const rel = parseRelPath(f.path).join("/");
    if (!SHA.test(f.sha256)) throw new PetriError("VALIDATION_ERROR", `sha256 of ${f.path} must be 64 lowercase hex digits`);
    if (!Number.isSafeInteger(f.size) || f.size < 0) throw new PetriError("VALIDATION_ERROR", `size of ${f.path} must be a non-negative integer`);
    if (f.mode !== undefined && (!Number.isInteger(f.mode) || f.mode < 0 || f.mode > 0o7777)) throw new PetriError("VALIDATION_ERROR", `mode of ${f.path} must be an integer 0..0o7777`);
    if (out.has(rel)) throw new PetriError("VALIDATION_ERROR", `path ${rel} appears twice in the manifest`);
    out.set(rel, { ...f, path: rel });
  }
  return out;
}

/**
 * Delta sync: a client sends a manifest (path, sha256, size, mode), learns what the server lacks
 * (`plan`), then sends only that (`apply`), as one tar stream for many small files. What the
 * server compares against is the workspace itself (hashes cached by inode and timestamps, so
 * files written by uploads are known without reading them); quotas count the bytes staged on
 * disk, never a manifest's claims.
 *
 * A sync that leaves the workspace holding a manifest marks it (the manifest's digest and the
 * workspace's generation, which every change bumps: uploads, deletes, run commits, syncs); a
 * client that presents the same digest while the mark holds is told `up_to_date` without sending
 * its manifest or the server walking the workspace. After a restart (marks live in memory, a
 * restored backup is a new process) the full comparison runs once again.
 */
export class SyncService {
  constructor(private readonly ws: WorkspaceStore, private readonly blobs: BlobStore) {}

  /** The quick check: does the workspace still hold what a manifest with this digest says? */
  upToDate(sandboxId: string, m: Pick<Manifest, "manifest_sha256" | "target" | "delete_extraneous">): boolean {
    if (m.manifest_sha256 === undefined || !SHA.test(m.manifest_sha256)) throw new PetriError("VALIDATION_ERROR", "manifest_sha256 must be 64 lowercase hex digits");
    const target = parseRelPath(m.target ?? "", { allowRoot: true }).join("/");
    const mark = this.ws.syncMark(sandboxId);
    return mark !== undefined && mark.digest === m.manifest_sha256 && mark.target === target && (mark.exact || m.delete_extraneous !== true);
  }

  async plan(tenantId: string, sandboxId: string, m: Manifest, wanted = validateManifest(m)): Promise<SyncPlan & { chmod: string[] }> {
    const target = parseRelPath(m.target ?? "", { allowRoot: true });
    // Read before the walk: a change made while it runs bumps past it, so the mark cannot hold.
    const generation = this.ws.generation(sandboxId);
    let current = new Map<string, SyncEntry>();
    const plan: SyncPlan & { chmod: string[] } = { missing: [], reusable: [], unchanged: [], delete: [], chmod: [], complete: true, up_to_date: false };
    try {
      // Names that are not UTF-8 cannot be in a manifest: they are neither matched nor deleted.
      // A file whose size differs from the manifest's cannot be unchanged: it is not read.
      const state = await this.ws.syncState(sandboxId, target, (p, size) => wanted.get(p)?.size === size);
      current = state.entries;
      if (!state.complete) {
        plan.complete = false;
        plan.reason = state.reason;
      }
    } catch (e) {
      if (!(e instanceof PetriError && e.code === "FILE_NOT_FOUND")) throw e;
    }
    for (const [p, f] of wanted) {
      const cur = current.get(p);
      if (cur?.type === "file" && cur.sha256 === f.sha256) {
        plan.unchanged.push(p);
        if (f.mode !== undefined && cur.mode !== undefined && execBits(cur.mode) !== execBits(f.mode)) plan.chmod.push(p);
      } else if (this.blobs.sizeOf(tenantId, f.sha256) === f.size) plan.reusable.push(p);
      else plan.missing.push(p);
    }
    if (m.delete_extraneous === true) {
      for (const [p, e] of current) {
        // Directories stay (a directory in the manifest's way would be replaced by a file).
        if (e.type !== "directory" && !wanted.has(p)) plan.delete.push(p);
      }
      plan.delete.sort();
    }
    plan.up_to_date = plan.missing.length + plan.reusable.length + plan.delete.length + plan.chmod.length === 0;
    if (plan.up_to_date && plan.complete) {
      this.ws.markSynced(sandboxId, { generation, digest: manifestDigest(m.files!), target: target.join("/"), exact: m.delete_extraneous === true });
    }
    return plan;
  }

  async apply(ctx: ApplyContext, parts: AsyncIterable<IncomingPart>): Promise<ApplyResult> {
    const { ws, blobs } = this;
    let manifest: Manifest | undefined;
    let wanted: Map<string, ManifestEntry> | undefined;
    const received = new Map<string, StagedFile>();
    /** Every blob this apply pinned (released at the end, whatever happens). */
    const pinned: StagedFile[] = [];
    let bytes = 0;
    let pendingPath: string | undefined;
    const limit = () => Math.min(ctx.maxUploadBytes, Math.max(0, ctx.quotaBytes - bytes));
    const modeOf = (e: ManifestEntry) => execBits(e.mode ?? 0o644);
    const tooBig = () => new PetriError("WORKSPACE_QUOTA_EXCEEDED", `sync would exceed the workspace quota of ${ctx.quotaBytes} bytes`);
    const accept = async (rel: string, source: Readable | Buffer) => {
      const entry = wanted!.get(rel);
      if (!entry) throw new PetriError("VALIDATION_ERROR", `file ${rel} is not in the manifest`);
      const mismatch = () => new PetriError("VALIDATION_ERROR", `content of ${rel} does not match its manifest entry (sha256/size)`);
      let staged: StagedFile;
      if (Buffer.isBuffer(source)) {
        // A small file in memory: verified, then written once, as the blob the commit links.
        if (source.length > limit()) throw limit() < ctx.maxUploadBytes ? tooBig() : new PetriError("PAYLOAD_TOO_LARGE", `upload exceeds the limit of ${limit()} bytes`);
        const sha = createHash("sha256").update(source).digest("hex");
        if (sha !== entry.sha256 || source.length !== entry.size) throw mismatch();
        const blob = blobs.write(ctx.tenantId, sha, source, ws.owner, modeOf(entry));
        if (blob) pinned.push(blob);
        staged = blob ?? { ...ws.stageBuffer(source), mode: modeOf(entry) };
      } else {
        try {
          staged = await ws.stage(source, limit());
        } catch (e) {
          if (e instanceof PetriError && e.code === "PAYLOAD_TOO_LARGE" && limit() < ctx.maxUploadBytes) throw tooBig();
          throw e;
        }
        staged.mode = modeOf(entry);
        if (staged.sha256 !== entry.sha256 || staged.size !== entry.size) {
          ws.discard([staged]);
          throw mismatch();
        }
        blobs.put(ctx.tenantId, staged, ws.owner, modeOf(entry));
      }
      const prev = received.get(rel);
      if (prev) {
        ws.discard([prev]);
        bytes -= prev.size;
      }
      received.set(rel, staged);
      bytes += staged.size;
    };
    const toCommit: { parts: string[]; staged: StagedFile }[] = [];
    try {
      for await (const part of parts) {
        if (part.type === "field") {
          // A `path` field names the next file part (for names a field name cannot carry).
          if (part.fieldname === "path") { pendingPath = String(part.value); continue; }
          if (part.fieldname !== "manifest") continue;
          try {
            manifest = JSON.parse(String(part.value)) as Manifest;
          } catch {
            throw new PetriError("INVALID_JSON", "the manifest field is not valid JSON");
          }
          if (!manifest || typeof manifest !== "object" || !Array.isArray(manifest.files)) throw new PetriError("VALIDATION_ERROR", "manifest.files must be an array");
          if (manifest.archive !== undefined && manifest.archive !== "tar") throw new PetriError("VALIDATION_ERROR", `manifest.archive must be "tar"`);
          wanted = validateManifest(manifest);
          continue;
        }
        if (!wanted || !manifest) throw new PetriError("VALIDATION_ERROR", "the manifest field must come before the files");
        // With `archive: "tar"`, parts named "tar" are archives; others still carry one file.
        if (manifest.archive === "tar" && part.fieldname === "tar" && pendingPath === undefined) {
          await this.readTar(part.file, accept);
          continue;
        }
        const rel = parseRelPath(pendingPath ?? part.fieldname).join("/");
        pendingPath = undefined;
        await accept(rel, part.file);
        if (part.file.truncated) throw new PetriError("PAYLOAD_TOO_LARGE", `file ${rel} exceeds the upload limit of ${ctx.maxUploadBytes} bytes`);
      }
      if (!manifest || !wanted) throw new PetriError("VALIDATION_ERROR", "missing the manifest field");
      // Each change below bumps the workspace's generation once; any other bump from here on (a
      // run's commit, an upload) means the workspace is not just this manifest: no mark then.
      const generation = ws.generation(ctx.sandboxId);
      let ownBumps = 0;
      const plan = await this.plan(ctx.tenantId, ctx.sandboxId, manifest, wanted);
      const stillMissing = plan.missing.filter((p) => !received.has(p));
      if (stillMissing.length) {
        throw new PetriError("VALIDATION_ERROR", `missing content for ${stillMissing.length} file(s), e.g. ${stillMissing.slice(0, 5).join(", ")}`, { missing: stillMissing.slice(0, 100) });
      }
      const target = parseRelPath(manifest.target ?? "", { allowRoot: true });
      let uploaded = 0;
      for (const p of [...plan.missing, ...plan.reusable]) {
        const e = wanted.get(p)!;
        let staged = received.get(p);
        if (staged) uploaded++;
        else {
          // The blob's real size, whatever the manifest claimed (it was checked in plan, and the
          // blob may have been replaced since): the quota counts bytes on disk.
          staged = blobs.use(ctx.tenantId, e.sha256, modeOf(e));
          if (staged) pinned.push(staged);
          if (staged?.size !== e.size) throw new PetriError("VALIDATION_ERROR", `size of ${p} does not match its content`);
        }
        received.delete(p);
        toCommit.push({ parts: [...target, ...p.split("/")], staged });
      }
      ws.discard([...received.values()]);
      received.clear();
      ctx.checkTenantBytes?.(toCommit.reduce((a, f) => a + f.staged.size, 0));
      if (toCommit.length) {
        ownBumps++;
        ws.commit(ctx.sandboxId, toCommit.splice(0), ctx.quotaBytes);
      }
      for (const p of plan.chmod) {
        ownBumps++;
        await ws.chmod(ctx.sandboxId, [...target, ...p.split("/")], execBits(wanted.get(p)!.mode!));
      }
      for (const p of plan.delete) {
        ownBumps++;
        try {
          await ws.remove(ctx.sandboxId, [...target, ...p.split("/")], false);
        } catch (e) {
          if (!(e instanceof PetriError && e.code === "FILE_NOT_FOUND")) throw e;
        }
      }
      if (plan.complete && ws.generation(ctx.sandboxId) === generation + ownBumps) {
        ws.markSynced(ctx.sandboxId, { generation: generation + ownBumps, digest: manifestDigest(manifest.files!), target: target.join("/"), exact: manifest.delete_extraneous === true });
      }
      blobs.addRefs(ctx.tenantId, ctx.sandboxId, [...plan.missing, ...plan.reusable].map((p) => wanted!.get(p)!.sha256));
      return { uploaded, reused: plan.missing.length + plan.reusable.length - uploaded, unchanged: plan.unchanged.length, deleted: plan.delete.length, bytes_received: bytes };
    } finally {
      ws.discard([...received.values(), ...toCommit.map((f) => f.staged)]);
      blobs.unpin(ctx.tenantId, pinned);
    }
  }

  /** Reads one tar archive: regular files only, each named by its manifest path. */
  private async readTar(source: Readable, accept: (rel: string, s: Readable | Buffer) => Promise<void>): Promise<void> {
    const ex = tar.extract();
    source.on("error", (e) => ex.destroy(e));
    source.pipe(ex);
    try {
      for await (const entry of ex) {
        const h = entry.header;
        if (h.type === "directory") {
          entry.resume();
          continue;
        }
        if (h.type !== "file" && h.type !== "contiguous-file") {
          entry.resume();
          throw new PetriError("VALIDATION_ERROR", `tar entry ${h.name} is a ${h.type}: sync takes regular files only`);
        }
        const rel = parseRelPath(h.name).join("/");
        if ((h.size ?? 0) <= SMALL_ENTRY) {
          // Most project files are small: read them whole, no per-file stream or async write.
          const chunks: Buffer[] = [];
          for await (const c of entry) chunks.push(c as Buffer);
          await accept(rel, Buffer.concat(chunks));
        } else {
          // tar-stream's entries are streamx streams: wrap for Node's pipeline.
          await accept(rel, Readable.from(entry));
        }
      }
    } catch (e) {
      if ((source as { truncated?: boolean }).truncated) throw new PetriError("PAYLOAD_TOO_LARGE", "the tar archive exceeds the upload limit");
      if (e instanceof PetriError) throw e;
      throw new PetriError("VALIDATION_ERROR", `the tar archive could not be read: ${(e as Error).message}`);
    }
    if ((source as { truncated?: boolean }).truncated) throw new PetriError("PAYLOAD_TOO_LARGE", "the tar archive exceeds the upload limit");
  }
}
