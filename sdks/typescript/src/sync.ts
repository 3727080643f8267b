import fs from "node:fs";
import { FileNotFoundError } from "./errors.js";
import { BATCH_MAX_BYTES, BATCH_MAX_FILES, appendLocalFile, uploadTimeout } from "./files.js";
import { hashAll } from "./internal/hash.js";
import { encodePath, encodeSegment, type ApiClient } from "./internal/http.js";
import { walkLocal, type LocalFile, type WalkOptions } from "./internal/walk.js";

export interface SyncOptions extends WalkOptions {
  /** Delete workspace files that the local directory does not have (default true). */
  deleteExtraneous?: boolean;
}

export interface SyncResult {
  /** Files whose content was sent. */
  uploaded: number;
  /** Files the server filled from content it already had (same key owner, any sandbox). */
  reused: number;
  /** Workspace files deleted because the local directory no longer has them. */
  deleted: number;
  /** Files already up to date. */
  unchanged: number;
  /** Bytes of file content sent (manifests and multipart framing not counted). */
  bytesSent: number;
  /** Wall-clock time of the whole sync, ms. */
  durationMs: number;
  uploadedPaths: string[];
  reusedPaths: string[];
  deletedPaths: string[];
}

interface ManifestEntry {
  path: string;
  sha256: string;
  size: number;
  mode: number;
}

const UNNAMEABLE = /["\r\n]/;

/** The server reads the `manifest` field of sync/apply up to 64 KiB; stay under it with room to spare. */
export const MANIFEST_FIELD_MAX = 60 * 1024;

/** Splits manifest entries into batches bounded by file count, bytes to send, and manifest size. */
function manifestBatches(entries: ManifestEntry[], sentSize: (e: ManifestEntry) => number | undefined): ManifestEntry[][] {
  const out: ManifestEntry[][] = [];
  let cur: ManifestEntry[] = [];
  let files = 0;
  let bytes = 0;
  let json = 64;
  for (const e of entries) {
    const sent = sentSize(e);
    const size = sent ?? 0;
    const entryJson = Buffer.byteLength(JSON.stringify(e)) + 1;
    if (cur.length && (files + (sent === undefined ? 0 : 1) > BATCH_MAX_FILES || bytes + size > BATCH_MAX_BYTES || json + entryJson > MANIFEST_FIELD_MAX)) {
      out.push(cur);
      cur = [];
      files = 0;
      bytes = 0;
      json = 64;
    }
    cur.push(e);
    if (sent !== undefined) files += 1;
    bytes += size;
    json += entryJson;
  }
  if (cur.length) out.push(cur);
  return out;
}

interface Plan {
  missing: string[];
  delete: string[];
  reusable: string[];
  unchanged?: string[];
}

/**
 * Delta sync: hash the local files, ask the server what it lacks (`sync/plan`), then send only
 * those files in one multipart request (`sync/apply`), which also applies the deletions.
 */
export async function syncDirectory(client: ApiClient, sandboxId: string, localDir: string, opts: SyncOptions = {}): Promise<SyncResult> {
  const started = performance.now();
  const base = `/v1/sandboxes/${encodeSegment(sandboxId)}/sync`;
  const local = walkLocal(localDir, opts);
  const hashes = await hashAll(local);
  const manifest: ManifestEntry[] = local.map((f, i) => ({ path: f.path, sha256: hashes[i], size: f.size, mode: f.mode }));
  const deleteExtraneous = opts.deleteExtraneous ?? true;
  const plan = await client.json<Plan>("POST", `${base}/plan`, { json: { files: manifest, delete_extraneous: deleteExtraneous } });
  const result: SyncResult = {
    uploaded: 0, reused: 0, deleted: 0, unchanged: plan.unchanged?.length ?? manifest.length - plan.missing.length - plan.reusable.length,
    bytesSent: 0, durationMs: 0, uploadedPaths: [], reusedPaths: plan.reusable, deletedPaths: plan.delete,
  };
  if (plan.missing.length === 0 && plan.reusable.length === 0 && plan.delete.length === 0) {
    result.durationMs = performance.now() - started;
    return result;
  }
  const byPath = new Map<string, LocalFile>(local.map((f) => [f.path, f]));
  const entryOf = new Map<string, ManifestEntry>(manifest.map((m) => [m.path, m]));
  const missing = new Set(plan.missing);
  const fullManifest = JSON.stringify({ files: manifest, delete_extraneous: deleteExtraneous });
  const apply = async (manifestJson: string, files: LocalFile[]) => {
    const form = new FormData();
    form.append("manifest", manifestJson);
    for (const f of files) await appendLocalFile(form, f.path, f);
    const r = await client.json<{ uploaded: number; reused: number; deleted: number; unchanged: number; bytes_received: number }>(
      "POST", `${base}/apply`, { body: form, timeoutMs: uploadTimeout(client, files) },
    );
    result.bytesSent += files.reduce((n, f) => n + f.size, 0);
    result.uploadedPaths.push(...files.map((f) => f.path));
    result.reused += r.reused;
    result.deleted += r.deleted;
  };
  let toSend = plan.missing.map((p) => byPath.get(p)).filter((f): f is LocalFile => f !== undefined);
  // A multipart field name cannot carry `"`, CR or LF (FormData percent-encodes them), so such
  // files go first by PUT; the apply step then finds them unchanged.
  const unnameable = toSend.filter((f) => UNNAMEABLE.test(f.path));
  for (const f of unnameable) {
    await client.json("PUT", `/v1/sandboxes/${encodeSegment(sandboxId)}/files/${encodePath(f.path)}`, {
      body: await fs.openAsBlob(f.abs), headers: { "content-type": "application/octet-stream" }, timeoutMs: uploadTimeout(client, [f]),
    });
    result.bytesSent += f.size;
    result.uploadedPaths.push(f.path);
    missing.delete(f.path);
  }
  toSend = toSend.filter((f) => !UNNAMEABLE.test(f.path));
  if (Buffer.byteLength(fullManifest) <= MANIFEST_FIELD_MAX && toSend.length <= BATCH_MAX_FILES && toSend.reduce((n, f) => n + f.size, 0) <= BATCH_MAX_BYTES) {
    // The usual case: one request carries the whole manifest and the missing files, and the
    // server applies deletions in the same step.
    await apply(fullManifest, toSend);
  } else {
    // Too big for one request (the server caps parts, and the manifest field at 64 KiB): send
    // the changed entries in batches with partial manifests that delete nothing, then delete.
    const changed = [...plan.missing, ...plan.reusable].map((p) => entryOf.get(p)!).filter(Boolean);
    for (const group of manifestBatches(changed, (e) => (missing.has(e.path) ? byPath.get(e.path)!.size : undefined))) {
      await apply(JSON.stringify({ files: group, delete_extraneous: false }), group.filter((e) => missing.has(e.path)).map((e) => byPath.get(e.path)!));
    }
    if (plan.delete.length) {
      if (Buffer.byteLength(fullManifest) <= MANIFEST_FIELD_MAX) {
        await apply(fullManifest, []);
      } else {
        for (const p of plan.delete) {
          try {
            await client.json("DELETE", `/v1/sandboxes/${encodeSegment(sandboxId)}/files/${encodePath(p)}`);
            result.deleted += 1;
          } catch (e) {
            if (!(e instanceof FileNotFoundError)) throw e;
          }
        }
      }
    }
  }
  result.uploaded = result.uploadedPaths.length;
  result.durationMs = performance.now() - started;
  return result;
}
