import { createHash } from "node:crypto";
import fs from "node:fs";
import type { LocalFile } from "./walk.js";

interface CacheEntry {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  hashedAt: number;
  sha256: string;
}

/**
 * Remembers the sha256 of local files by (size, mtime, ctime, inode), so a re-sync of an
 * unchanged project reads no file contents. As in git's index, an entry is trusted only if the
 * file had not been modified within the clock's granularity of being hashed ("racily clean"
 * files are hashed again), so a same-size rewrite in the same instant is never missed.
 */
const cache = new Map<string, CacheEntry>();
/** Filesystems with whole-second timestamps need a wider racy window than nanosecond ones. */
const racyWindowMs = (mtimeMs: number) => (mtimeMs % 1000 === 0 ? 2_000 : 50);

/**
 * Files up to this size are read whole, synchronously: a 1 MiB stream buffer, or a thread-pool
 * round trip, per small file cost more than reading and hashing it (5,000 files: 3.3 s before).
 */
const READ_WHOLE = 1 << 20;

async function hashFile(abs: string, size: number): Promise<string> {
  const h = createHash("sha256");
  if (size <= READ_WHOLE) return h.update(fs.readFileSync(abs)).digest("hex");
  const stream = fs.createReadStream(abs, { highWaterMark: 1 << 20 });
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The remembered sha256 of an unchanged file, or undefined. */
function cached(f: LocalFile): string | undefined {
  const c = cache.get(f.abs);
  if (c && c.size === f.size && c.mtimeMs === f.mtimeMs && c.ctimeMs === f.ctimeMs && c.ino === f.ino && f.mtimeMs < c.hashedAt - racyWindowMs(f.mtimeMs)) {
    return c.sha256;
  }
  return undefined;
}

export async function sha256Of(f: LocalFile): Promise<string> {
  const c = cached(f);
  if (c !== undefined) return c;
  const hashedAt = Date.now();
  const sha256 = f.size === 0 ? createHash("sha256").digest("hex") : await hashFile(f.abs, f.size);
  cache.set(f.abs, { size: f.size, mtimeMs: f.mtimeMs, ctimeMs: f.ctimeMs, ino: f.ino, hashedAt, sha256 });
  return sha256;
}

/** Hashes many files with bounded concurrency, keeping their order. */
export async function hashAll(files: LocalFile[], concurrency = 16): Promise<string[]> {
  const out = new Array<string>(files.length);
  // Remembered ones first, without a promise each (a re-sync of 50,000 unchanged files).
  const todo: number[] = [];
  for (let i = 0; i < files.length; i++) {
    const c = cached(files[i]);
    if (c === undefined) todo.push(i);
    else out[i] = c;
  }
  let next = 0;
  const worker = async () => {
    while (next < todo.length) {
      const i = todo[next++];
      out[i] = await sha256Of(files[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, todo.length) }, worker));
  return out;
}
