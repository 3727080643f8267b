import fs from "node:fs";
import { openDirNoFollow, openFileNoFollow, parseRelPath } from "../workspaces/paths.js";
import type { SourceReader } from "./detect.js";

/**
 * Detection's view of a workspace: every component opened O_NOFOLLOW from the workspace root
 * (src/workspaces/paths.ts), so a symlink the sandboxed code planted never makes the server
 * read outside the workspace; FIFOs and devices are refused without blocking.
 */
export function workspaceReader(root: string): SourceReader {
  const parts = (rel: string): string[] | null => {
    try {
      return parseRelPath(rel);
    } catch {
      return null;
    }
  };
  return {
    read(rel, maxBytes) {
      const p = parts(rel);
      if (!p) return null;
      let fd: number;
      let size: number;
      try {
        const o = openFileNoFollow(root, p);
        fd = o.fd;
        size = o.stat.size;
      } catch {
        return null;
      }
      try {
        if (size > maxBytes) return null;
        const buf = Buffer.alloc(size);
        let off = 0;
        while (off < size) {
          const n = fs.readSync(fd, buf, off, size - off, off);
          if (n === 0) break;
          off += n;
        }
        return buf.subarray(0, off).toString("utf8");
      } catch {
        return null;
      } finally {
        fs.closeSync(fd);
      }
    },
    isFile(rel) {
      const p = parts(rel);
      if (!p) return false;
      try {
        const { fd } = openFileNoFollow(root, p);
        fs.closeSync(fd);
        return true;
      } catch {
        return false;
      }
    },
    isDir(rel) {
      const p = parts(rel);
      if (!p) return false;
      try {
        fs.closeSync(openDirNoFollow(root, p));
        return true;
      } catch {
        return false;
      }
    },
  };
}
