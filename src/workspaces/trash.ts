import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import { fdPath } from "./paths.js";
import { yieldToLoop } from "./walk.js";

/**
 * Deletion that cannot half-happen. What is deleted is first renamed into `<root>/.trash/<job>/`
 * (one atomic rename: the sandbox and the API stop seeing it at once, and no running code can
 * reach it any more), then removed there at leisure. A crash in between leaves a trash job on
 * disk, which the next `drain()` (at start-up and from the janitor) finishes.
 *
 * Removal is iterative and needs two file descriptors whatever the depth: each directory's
 * sub-directories are renamed up to the job's top level, so a 30,000-level chain becomes 30,000
 * flat directories; nothing recurses and nothing holds one fd per level. Names are handled as
 * raw bytes, so names that are not UTF-8 are removed like any other.
 */

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = fs.constants;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
const SLICE_MS = 8;

export interface RemoveResult {
  /** Apparent size of the regular files removed (what the workspace counter loses). */
  bytes: number;
  entries: number;
}

export class Trash {
  readonly dir: string;
  private draining: Promise<void> | null = null;
  /** Jobs being removed now (a deletion finishing in the background): `drain` leaves them to it. */
  private readonly active = new Set<string>();

  constructor(root: string) {
    this.dir = path.join(root, ".trash");
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  /** A fresh job directory: what is moved into it is gone for everyone else. */
  newJob(): string {
    const job = path.join(this.dir, `${Date.now()}-${randomBytes(6).toString("hex")}`);
    fs.mkdirSync(job, { mode: 0o700 });
    return job;
  }

  /**
   * Moves `dirfd`/`name` (any type; a symlink is moved, not followed) into a new trash job and
   * returns the job. ENOENT is thrown as is.
   */
  moveIn(dirfd: number, name: string | Buffer): string {
    const job = this.newJob();
    try {
      fs.renameSync(fdPath(dirfd, name), path.join(job, "x"));
    } catch (e) {
      fs.rmdirSync(job);
      throw e;
    }
    return job;
  }

  /** Moves an absolute path (a whole workspace) into a new trash job. */
  moveInPath(p: string): string {
    const job = this.newJob();
    try {
      fs.renameSync(p, path.join(job, "x"));
    } catch (e) {
      fs.rmdirSync(job);
      throw e;
    }
    return job;
  }

  /** Moves an absolute path into the trash and removes it; a missing path is nothing to do. */
  async removeJobFor(p: string): Promise<void> {
    let job: string;
    try {
      job = this.moveInPath(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    await this.removeJob(job);
  }

  /** Removes a job completely; safe to call again after a crash. */
  async removeJob(job: string, onProgress?: (freedBytes: number) => void): Promise<RemoveResult> {
    this.active.add(job);
    try {
      const res = await emptyFlat(job, onProgress);
      fs.rmdirSync(job);
      return res;
    } finally {
      this.active.delete(job);
    }
  }

  /** Finishes every job left on disk (by a crash, or by deletions still under way). */
  async drain(): Promise<void> {
    if (this.draining) return this.draining;
    this.draining = (async () => {
      for (const j of fs.readdirSync(this.dir)) {
        if (this.active.has(path.join(this.dir, j))) continue;
        try {
          await this.removeJob(path.join(this.dir, j));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        }
      }
    })().finally(() => { this.draining = null; });
    return this.draining;
  }
}

/**
 * Empties `top` (which stays): every entry of every directory below it is unlinked, and every
 * sub-directory is first renamed up into `top` so that no level is ever deeper than two.
 */
async function emptyFlat(top: string, onProgress?: (freedBytes: number) => void): Promise<RemoveResult> {
  const res: RemoveResult = { bytes: 0, entries: 0 };
  const topFd = fs.openSync(top, DIR_FLAGS);
  let seq = 0;
  let lastYield = performance.now();
  let pendingBytes = 0;
  const tick = async () => {
    if ((++res.entries & 127) !== 0 || performance.now() - lastYield < SLICE_MS) return;
    if (pendingBytes) {
      onProgress?.(pendingBytes);
      pendingBytes = 0;
    }
    await yieldToLoop();
    lastYield = performance.now();
  };
  try {
    // Directories still to empty, as names in `top`. A fresh name per rename: "d<seq>".
    let queue: Buffer[] = fs.readdirSync(fdPath(topFd), { encoding: "buffer" });
    while (queue.length > 0) {
      const next: Buffer[] = [];
      for (const name of queue) {
        const st = fs.lstatSync(fdPath(topFd, name), { throwIfNoEntry: false });
        if (!st) continue;
        if (!st.isDirectory()) {
          fs.unlinkSync(fdPath(topFd, name));
          if (st.isFile()) { res.bytes += st.size; pendingBytes += st.size; }
          await tick();
          continue;
        }
        const d = fs.openSync(fdPath(topFd, name), DIR_FLAGS);
        try {
          // The directory may be huge: read its names off the event loop.
          const children = await fs.promises.readdir(fdPath(d), { encoding: "buffer" });
          for (const c of children) {
            const cst = fs.lstatSync(fdPath(d, c), { throwIfNoEntry: false });
            if (!cst) continue;
            if (cst.isDirectory()) {
              const flat = `d${seq++}-${randomBytes(4).toString("hex")}`;
              fs.renameSync(fdPath(d, c), fdPath(topFd, flat));
              next.push(Buffer.from(flat));
            } else {
              fs.unlinkSync(fdPath(d, c));
              if (cst.isFile()) { res.bytes += cst.size; pendingBytes += cst.size; }
            }
            await tick();
          }
        } finally {
          fs.closeSync(d);
        }
        fs.rmdirSync(fdPath(topFd, name));
        await tick();
      }
      queue = next;
    }
  } finally {
    fs.closeSync(topFd);
  }
  if (pendingBytes) onProgress?.(pendingBytes);
  return res;
}
