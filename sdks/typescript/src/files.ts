import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { NotFoundError } from "./errors.js";
import { encodePath, type ApiClient, encodeSegment } from "./internal/http.js";
import { walkLocal, type LocalFile, type WalkOptions } from "./internal/walk.js";
import { fileInfoFromWire, type FileInfo } from "./types.js";

export type FileData = string | Uint8Array | ArrayBuffer | Blob;

export interface WriteEntry {
  /** Path inside the workspace; parent directories are created. */
  path: string;
  data: FileData;
}

export interface UploadOptions extends WalkOptions {
  /** Workspace directory to upload into (default the workspace root). */
  remoteDir?: string;
}

/** Uploads are split into requests of at most this many files and bytes (the server caps parts per request). */
export const BATCH_MAX_FILES = 500;
export const BATCH_MAX_BYTES = 64 * 1024 * 1024;

function toBlob(data: FileData): Blob {
  return data instanceof Blob ? data : new Blob([data as Uint8Array]);
}

/** Splits files into batches bounded by count and bytes (a file bigger than the byte bound goes alone). */
export function batches<T extends { size: number }>(items: T[], maxFiles = BATCH_MAX_FILES, maxBytes = BATCH_MAX_BYTES): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    if (cur.length && (cur.length >= maxFiles || bytes + it.size > maxBytes)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(it);
    bytes += it.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Appends a local file to a form without reading it into memory. */
export async function appendLocalFile(form: FormData, field: string, f: LocalFile): Promise<void> {
  const blob = await fs.openAsBlob(f.abs);
  form.append(field, blob, path.basename(f.abs));
}

/** The workspace of a sandbox: a plain directory that survives between runs. */
export class Files {
  private readonly client: ApiClient;
  private readonly sandboxId: string;

  /** @internal */
  constructor(client: ApiClient, sandboxId: string) {
    this.client = client;
    this.sandboxId = sandboxId;
  }

  private get base(): string {
    return `/v1/sandboxes/${encodeSegment(this.sandboxId)}/files`;
  }

  /** Writes one file (parents are created) and returns its entry. */
  async write(path: string, data: FileData): Promise<FileInfo> {
    const w = await this.client.json<Record<string, unknown>>("PUT", `${this.base}/${encodePath(path)}`, {
      body: toBlob(data),
      headers: { "content-type": "application/octet-stream" },
    });
    return fileInfoFromWire(w);
  }

  /** Writes several files in one request; all are stored, or none. */
  async writeMany(files: WriteEntry[]): Promise<FileInfo[]> {
    const out: FileInfo[] = [];
    const blobs = files.map((f) => {
      const blob = toBlob(f.data);
      return { path: f.path, blob, size: blob.size };
    });
    for (const batch of batches(blobs)) {
      const form = new FormData();
      for (const f of batch) {
        form.append("path", f.path);
        form.append("file", f.blob, "upload");
      }
      const r = await this.client.json<{ files: Record<string, unknown>[] }>("POST", this.base, { body: form });
      out.push(...r.files.map(fileInfoFromWire));
    }
    return out;
  }

  /** Reads a file as UTF-8 text (default), or as bytes with `{ format: "bytes" }`. */
  async read(path: string, opts?: { format?: "text" }): Promise<string>;
  async read(path: string, opts: { format: "bytes" }): Promise<Uint8Array>;
  async read(path: string, opts: { format?: "text" | "bytes" } = {}): Promise<string | Uint8Array> {
    const bytes = await this.client.bytes("GET", `${this.base}/${encodePath(path)}`);
    return opts.format === "bytes" ? bytes : new TextDecoder().decode(bytes);
  }

  /** Streams a workspace file to a local path (parents are created). */
  async download(path: string, localPath: string): Promise<void> {
    const { response, done } = await this.client.open("GET", `${this.base}/${encodePath(path)}`, { timeoutMs: Infinity });
    try {
      fs.mkdirSync(pathDir(localPath), { recursive: true });
      await pipeline(Readable.fromWeb(response.body as import("node:stream/web").ReadableStream), fs.createWriteStream(localPath));
    } finally {
      done();
    }
  }

  /**
   * Lists entries under a directory (default the root), recursively by default.
   * @param opts.hashes include each file's sha256 (default true; costs a read of every file).
   */
  async list(path = "", opts: { recursive?: boolean; hashes?: boolean } = {}): Promise<FileInfo[]> {
    const r = await this.client.json<{ files: Record<string, unknown>[] }>("GET", this.base, {
      query: { path: path || undefined, recursive: opts.recursive ?? true, hashes: opts.hashes },
    });
    return r.files.map(fileInfoFromWire);
  }

  /** True when a file or directory exists at `path`. */
  async exists(path: string): Promise<boolean> {
    const parts = path.split("/").filter(Boolean);
    const name = parts.pop();
    if (name === undefined) return true;
    try {
      const entries = await this.list(parts.join("/"), { recursive: false, hashes: false });
      const full = [...parts, name].join("/");
      return entries.some((e) => e.path === full);
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  /** Deletes a file, or a directory (`recursive: true` for a non-empty one). `FileNotFoundError` if absent. */
  async remove(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    await this.client.json("DELETE", `${this.base}/${encodePath(path)}`, { query: { recursive: opts.recursive ? true : undefined } });
  }

  /**
   * Uploads a local directory's files into the workspace (keeping their relative paths), honouring
   * `.petriignore` and skipping `.git`, `node_modules`, `__pycache__`, `.venv`. Files are sent
   * whatever the workspace holds; `sandbox.sync()` sends only what changed.
   */
  async upload(localDir: string, opts: UploadOptions = {}): Promise<FileInfo[]> {
    const files = walkLocal(localDir, opts);
    const prefix = (opts.remoteDir ?? "").split("/").filter(Boolean).join("/");
    const out: FileInfo[] = [];
    for (const batch of batches(files)) {
      const form = new FormData();
      for (const f of batch) {
        form.append("path", prefix ? `${prefix}/${f.path}` : f.path);
        await appendLocalFile(form, "file", f);
      }
      const r = await this.client.json<{ files: Record<string, unknown>[] }>("POST", this.base, { body: form, timeoutMs: uploadTimeout(this.client, batch) });
      out.push(...r.files.map(fileInfoFromWire));
    }
    return out;
  }
}

function pathDir(p: string): string {
  return path.dirname(path.resolve(p));
}

/** A request deadline that grows with the bytes sent (at least 1 MB/s). */
export function uploadTimeout(client: ApiClient, files: { size: number }[]): number {
  const bytes = files.reduce((n, f) => n + f.size, 0);
  return client.requestTimeoutMs + Math.ceil(bytes / 1_000);
}
