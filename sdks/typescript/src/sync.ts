import { createHash } from "node:crypto";
import fs from "node:fs";
import tar from "tar-stream";
import { InvalidRequestError } from "./errors.js";
import { BATCH_MAX_BYTES, BATCH_MAX_FILES, appendLocalFile, batches, uploadTimeout } from "./files.js";
import { hashAll } from "./internal/hash.js";
import { encodeSegment, type ApiClient } from "./internal/http.js";
import { walkLocal, type LocalFile, type WalkOptions } from "./internal/walk.js";

export interface SyncOptions extends WalkOptions {
  /**
   * Delete files below `target` that the local directory does not have (default false: files a
   * run wrote, or that `files.upload` put there, survive a re-sync).
   */
  deleteExtraneous?: boolean;
  /** Workspace folder to sync into (default the workspace root); created if missing. */
  target?: string;
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

/** Files up to this size travel inside a tar part; bigger ones as their own part, streamed from disk. */
export const TAR_MAX_FILE = 8 * 1024 * 1024;

interface Plan {
  missing: string[];
  delete: string[];
  reusable: string[];
  unchanged?: string[];
  up_to_date?: boolean;
}

/**
 * The digest the server compares with what the last sync left (`manifest_sha256`): sha256 over
 * `path \n sha256 \n size \n mode \n` per entry, in the order sent. Same in the Python SDK.
 */
export function manifestDigest(files: ManifestEntry[]): string {
  const h = createHash("sha256");
  let chunk = "";
  for (const f of files) {
    chunk += `${f.path}\n${f.sha256}\n${f.size}\n${f.mode}\n`;
    if (chunk.length > 65536) {
      h.update(chunk);
      chunk = "";
    }
  }
  return h.update(chunk).digest("hex");
}

/** A tar archive of small files, in memory (each is at most TAR_MAX_FILE, a batch at most BATCH_MAX_BYTES). */
async function tarOf(files: LocalFile[]): Promise<Blob> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => { for await (const c of pack) chunks.push(c as Buffer); })();
  for (const f of files) {
    // Synchronously: each is small (≤ TAR_MAX_FILE), and an async read per file is a thread-pool round trip.
    const data = fs.readFileSync(f.abs);
    // The file may have changed since it was hashed: the server then refuses the batch (sha256).
    await new Promise<void>((resolve, reject) => pack.entry({ name: f.path, size: data.length, mode: f.mode & 0o777 }, data, (e) => (e ? reject(e) : resolve())));
  }
  pack.finalize();
  await collected;
  return new Blob(chunks);
}

/** Splits the files to send into requests bounded by count and bytes. */
function sendBatches(files: LocalFile[]): LocalFile[][] {
  return batches(files, BATCH_MAX_FILES * 20, BATCH_MAX_BYTES);
}

/**
 * Delta sync: hash the local files, ask the server what it lacks (`sync/plan`), then send only
 * those files (`sync/apply`): small ones packed into one tar part, big ones streamed as their own
 * parts. Deletions (only with `deleteExtraneous`) are applied by the last request.
 */
export async function syncDirectory(client: ApiClient, sandboxId: string, localDir: string, opts: SyncOptions = {}): Promise<SyncResult> {
  const started = performance.now();
  const base = `/v1/sandboxes/${encodeSegment(sandboxId)}/sync`;
  const local = walkLocal(localDir, opts);
  const hashes = await hashAll(local);
  const manifest: ManifestEntry[] = local.map((f, i) => ({ path: f.path, sha256: hashes[i], size: f.size, mode: f.mode }));
  const deleteExtraneous = opts.deleteExtraneous ?? false;
  const target = (opts.target ?? "").split("/").filter(Boolean).join("/");
  const common = { ...(target ? { target } : {}), archive: "tar" as const };
  const where = { delete_extraneous: deleteExtraneous, ...(target ? { target } : {}) };
  // The quick check: if nothing changed the workspace since it last took this very manifest,
  // the server says so without the manifest (7 MB for 50,000 files) or a walk of its own.
  let quick: Plan | undefined;
  try {
    quick = await client.json<Plan>("POST", `${base}/plan`, { json: { manifest_sha256: manifestDigest(manifest), ...where } });
  } catch (e) {
    // A server from before the quick check refuses the field: the full plan works with any.
    if (!(e instanceof InvalidRequestError)) throw e;
  }
  if (quick?.up_to_date === true) {
    return {
      uploaded: 0, reused: 0, deleted: 0, unchanged: manifest.length, bytesSent: 0, durationMs: performance.now() - started,
      uploadedPaths: [], reusedPaths: [], deletedPaths: [],
    };
  }
  // The server may have to read every file whose hash it does not know yet (files written outside
  // Petri, or its first plan of a workspace): the deadline grows with the manifest, 1 ms a file.
  const planTimeoutMs = client.requestTimeoutMs + manifest.length;
  const plan = await client.json<Plan>("POST", `${base}/plan`, { json: { files: manifest, ...where }, timeoutMs: planTimeoutMs });
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
  const apply = async (entries: ManifestEntry[], files: LocalFile[], del: boolean) => {
    const form = new FormData();
    form.append("manifest", JSON.stringify({ files: entries, delete_extraneous: del, ...common }));
    const small = files.filter((f) => f.size <= TAR_MAX_FILE);
    if (small.length) form.append("tar", await tarOf(small), "files.tar");
    for (const f of files.filter((x) => x.size > TAR_MAX_FILE)) {
      form.append("path", f.path);
      await appendLocalFile(form, "file", f);
    }
    const r = await client.json<{ uploaded: number; reused: number; deleted: number; unchanged: number; bytes_received: number }>(
      "POST", `${base}/apply`, { body: form, timeoutMs: uploadTimeout(client, files) },
    );
    result.bytesSent += files.reduce((n, f) => n + f.size, 0);
    result.uploadedPaths.push(...files.map((f) => f.path));
    result.reused += r.reused;
    result.deleted += r.deleted;
  };
  const toSend = plan.missing.map((p) => byPath.get(p)).filter((f): f is LocalFile => f !== undefined);
  const groups = sendBatches(toSend);
  if (groups.length <= 1) {
    // The usual case: one request carries the whole manifest and every missing file.
    await apply(manifest, groups[0] ?? [], deleteExtraneous);
  } else {
    // Each batch names only its own files (and the first one the reusable ones); the last
    // request repeats the whole manifest, now all unchanged, to apply deletions.
    for (const [i, group] of groups.entries()) {
      const entries = [...group.map((f) => entryOf.get(f.path)!), ...(i === 0 ? plan.reusable.map((p) => entryOf.get(p)!) : [])];
      await apply(entries, group, false);
    }
    if (plan.delete.length) await apply(manifest, [], deleteExtraneous);
    // Each batch left the server a mark of its own part only: one plan of the whole manifest
    // (all unchanged now) marks it, so the next sync of an unchanged tree is one quick check.
    else await client.json<Plan>("POST", `${base}/plan`, { json: { files: manifest, ...where }, timeoutMs: planTimeoutMs });
  }
  result.uploaded = result.uploadedPaths.length;
  result.durationMs = performance.now() - started;
  return result;
}
