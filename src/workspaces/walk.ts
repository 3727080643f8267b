import fs from "node:fs";
import { performance } from "node:perf_hooks";
import { fdPath, openDirNoFollow } from "./paths.js";
import { nameFromBytes, type NamePart, type WsPath } from "./names.js";

/**
 * The one workspace scanner. It is iterative (any depth: no recursion, one directory fd open at a
 * time, climbing back up through "..", checked against the inode it left), reads names as raw
 * bytes (names that are not UTF-8 are walked like any other), yields to the event loop every few
 * milliseconds (a workspace of 200,000 files never stalls the server), and says whether it saw
 * everything: a walk that stops early reports `complete: false` with the reason, never silently.
 */

export interface WalkFrame {
  readonly parent: WalkFrame | null;
  /** Name of this directory in its parent (unused for the start frame). */
  readonly name: NamePart;
  readonly depth: number;
  /** Byte length of this directory's path below the walk's start ("" = 0). */
  readonly pathBytes: number;
}

export interface WalkEntry {
  frame: WalkFrame;
  name: NamePart;
  st: fs.BigIntStats;
  /** Depth of the entry: 1 for the start directory's children. */
  depth: number;
  /** Byte length of the entry's path below the start. */
  pathBytes: number;
}

export interface WalkOptions {
  /** 1 lists the start directory's children only. Default: unlimited. */
  maxDepth?: number;
  /** Stop (complete: false) after this many entries. Default: unlimited. */
  maxEntries?: number;
  signal?: AbortSignal;
}

export interface WalkResult {
  complete: boolean;
  entries: number;
  /** Why the walk is incomplete, for the API and the logs. */
  reason?: string;
}

/** Path of an entry relative to the walk's start, as components (O(depth): call only when needed). */
export function entryPath(e: { frame: WalkFrame; name: NamePart }): WsPath {
  const out: NamePart[] = [e.name];
  for (let f: WalkFrame | null = e.frame; f && f.parent; f = f.parent) out.push(f.name);
  return out.reverse();
}

interface Frame extends WalkFrame {
  dev: bigint;
  ino: bigint;
  names: Buffer[];
  i: number;
}

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW } = fs.constants;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
const SLICE_MS = 8;

/** Lets other requests run; setImmediate, not a timer, so an idle server loses nothing. */
export const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Visits every entry below `root`/`start` (not the start itself), parents before children.
 * Symlinks are reported, never followed. The start directory must exist: errors opening it are
 * thrown (errno codes, for the caller to map); everything below is best effort, and any entry it
 * could not read makes the result incomplete. `visit` may return false to stop the walk early
 * (reported as incomplete with reason "stopped").
 */
export async function walkTree(root: string, start: WsPath, visit: (e: WalkEntry) => void | boolean, opts: WalkOptions = {}): Promise<WalkResult> {
  const maxDepth = opts.maxDepth ?? Infinity;
  const maxEntries = opts.maxEntries ?? Infinity;
  let cur = openDirNoFollow(root, start);
  const result: WalkResult = { complete: true, entries: 0 };
  const incomplete = (reason: string) => {
    if (result.complete) {
      result.complete = false;
      result.reason = reason;
    }
  };
  let lastYield = performance.now();
  let ops = 0;
  const maybeYield = async () => {
    if ((++ops & 127) !== 0) return;
    if (performance.now() - lastYield < SLICE_MS) return;
    await yieldToLoop();
    lastYield = performance.now();
  };
  const readNames = async (fd: number): Promise<Buffer[] | null> => {
    try {
      // Off the event loop: one directory may hold hundreds of thousands of names.
      return await fs.promises.readdir(fdPath(fd), { encoding: "buffer" });
    } catch {
      return null;
    }
  };
  /** Re-opens a frame's directory from the root by its components (when ".." was not it). */
  const reopen = (f: Frame): number | null => {
    const parts: NamePart[] = [];
    for (let x: WalkFrame | null = f; x && x.parent; x = x.parent) parts.push(x.name);
    try {
      const fd = openDirNoFollow(root, [...start, ...parts.reverse()]);
      const st = fs.fstatSync(fd, { bigint: true });
      if (st.ino === f.ino && st.dev === f.dev) return fd;
      fs.closeSync(fd);
    } catch {
      // fall through: the directory moved or went away while we were below it
    }
    return null;
  };

  const st0 = fs.fstatSync(cur, { bigint: true });
  const names0 = await readNames(cur);
  if (!names0) {
    fs.closeSync(cur);
    incomplete("the start directory could not be read");
    return result;
  }
  const stack: Frame[] = [{ parent: null, name: "", depth: 0, pathBytes: 0, dev: st0.dev, ino: st0.ino, names: names0, i: 0 }];
  try {
    while (stack.length > 0) {
      if (opts.signal?.aborted) {
        incomplete("aborted");
        break;
      }
      const top = stack[stack.length - 1];
      if (top.i >= top.names.length || cur < 0) {
        stack.pop();
        const parent = stack[stack.length - 1];
        if (!parent) break;
        let up = -1;
        if (cur >= 0) {
          try {
            up = fs.openSync(fdPath(cur, ".."), DIR_FLAGS);
            const st = fs.fstatSync(up, { bigint: true });
            if (st.ino !== parent.ino || st.dev !== parent.dev) {
              fs.closeSync(up);
              up = -1;
            }
          } catch {
            up = -1;
          }
          fs.closeSync(cur);
          cur = -1;
        }
        if (up < 0) up = reopen(parent) ?? -1;
        if (up < 0) {
          incomplete("a directory was moved or removed during the walk");
          parent.i = parent.names.length;
        }
        cur = up;
        await maybeYield();
        continue;
      }
      const raw = top.names[top.i++];
      if (result.entries >= maxEntries) {
        incomplete(`more than ${maxEntries} entries`);
        break;
      }
      let st: fs.BigIntStats;
      try {
        st = fs.lstatSync(fdPath(cur, raw), { bigint: true });
      } catch (e) {
        // Gone between readdir and lstat: it no longer exists, nothing was missed.
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") incomplete(`could not stat an entry: ${(e as NodeJS.ErrnoException).code}`);
        continue;
      }
      result.entries++;
      const name = nameFromBytes(raw);
      const depth = top.depth + 1;
      const pathBytes = top.pathBytes + (top.depth > 0 ? 1 : 0) + raw.length;
      if (visit({ frame: top, name, st, depth, pathBytes }) === false) {
        incomplete("stopped");
        break;
      }
      await maybeYield();
      if (!st.isDirectory() || depth >= maxDepth) continue;
      let child: number;
      try {
        child = fs.openSync(fdPath(cur, raw), DIR_FLAGS);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") incomplete(`could not open a directory: ${(e as NodeJS.ErrnoException).code}`);
        continue;
      }
      const cst = fs.fstatSync(child, { bigint: true });
      const names = await readNames(child);
      if (!names || cst.ino !== st.ino) {
        fs.closeSync(child);
        incomplete("a directory changed during the walk");
        continue;
      }
      fs.closeSync(cur);
      cur = child;
      stack.push({ parent: top, name, depth, pathBytes, dev: cst.dev, ino: cst.ino, names, i: 0 });
    }
  } finally {
    if (cur >= 0) fs.closeSync(cur);
  }
  return result;
}
