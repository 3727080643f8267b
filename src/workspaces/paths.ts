import fs from "node:fs";
import { PetriError } from "../errors.js";
import { displayPath, type NamePart, type WsPath } from "./names.js";

/**
 * The one place where client-supplied workspace paths are checked and resolved.
 *
 * Sandboxed code can plant symlinks (and swap directories for symlinks while the server works),
 * so resolution never goes through a path string the kernel would re-walk from the root: every
 * component is opened relative to the already-opened parent directory, through the parent's
 * /proc/self/fd/N magic link, with O_NOFOLLOW. That is openat(2) semantics, which Node's fs API
 * lacks, and it means no symlink anywhere in the path is ever followed.
 */

export const MAX_PATH_BYTES = 1024;
export const MAX_COMPONENT_BYTES = 255;

const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;

/** Splits and validates a relative workspace path. Returns its components. */
export function parseRelPath(input: unknown, opts: { allowRoot?: boolean } = {}): string[] {
  if (typeof input !== "string") throw new PetriError("INVALID_PATH", "path must be a string");
  if (input.includes("\0")) throw new PetriError("INVALID_PATH", "path must not contain NUL bytes");
  if (Buffer.byteLength(input) > MAX_PATH_BYTES) throw new PetriError("INVALID_PATH", `path is longer than ${MAX_PATH_BYTES} bytes`);
  if (input.startsWith("/")) throw new PetriError("INVALID_PATH", "path must be relative to the workspace, not absolute");
  if (input.includes("\\")) throw new PetriError("INVALID_PATH", "path must use / as separator");
  const parts = input.split("/").filter((p) => p !== "" && p !== ".");
  for (const p of parts) {
    if (p === "..") throw new PetriError("INVALID_PATH", "path must not contain '..'");
    if (Buffer.byteLength(p) > MAX_COMPONENT_BYTES) throw new PetriError("INVALID_PATH", `path component longer than ${MAX_COMPONENT_BYTES} bytes`);
    // Control characters in names only serve to confuse logs and terminals.
    if (/[\x00-\x1f\x7f]/.test(p)) throw new PetriError("INVALID_PATH", "path must not contain control characters");
  }
  if (parts.length === 0 && !opts.allowRoot) throw new PetriError("INVALID_PATH", "path is empty");
  return parts;
}

/**
 * The path of `name` inside the opened directory `fd`. A Buffer name (not valid UTF-8) gives a
 * Buffer path, which Node's fs functions pass to the kernel byte for byte.
 */
export function fdPath(fd: number, name?: string): string;
export function fdPath(fd: number, name: NamePart): string | Buffer;
export function fdPath(fd: number, name?: NamePart): string | Buffer {
  if (name === undefined) return `/proc/self/fd/${fd}`;
  if (typeof name === "string") return `/proc/self/fd/${fd}/${name}`;
  return Buffer.concat([Buffer.from(`/proc/self/fd/${fd}/`), name]);
}

/** Maps errno codes met while resolving a client path to stable API errors. */
export function mapFsError(e: unknown, relPath: string): never {
  if (e instanceof PetriError) throw e;
  const code = (e as NodeJS.ErrnoException)?.code;
  switch (code) {
    case "ENOENT":
      throw new PetriError("FILE_NOT_FOUND", `no such file in the workspace: ${relPath}`);
    case "ELOOP":
      throw new PetriError("SYMLINK_REFUSED", `refusing to follow a symbolic link: ${relPath}`);
    case "ENOTDIR":
      throw new PetriError("NOT_A_DIRECTORY", `a component of the path is not a directory: ${relPath}`);
    case "EISDIR":
      throw new PetriError("NOT_A_FILE", `path is a directory: ${relPath}`);
    case "ENAMETOOLONG":
      throw new PetriError("INVALID_PATH", `path too long: ${relPath}`);
    case "ENOTEMPTY":
      throw new PetriError("DIRECTORY_NOT_EMPTY", `directory is not empty: ${relPath}`);
    case "EEXIST":
      throw new PetriError("CONFLICT", `path exists with another type: ${relPath}`);
    default:
      throw e;
  }
}

/**
 * Opens the directory `parts` below the workspace root without following any symlink.
 * With `create`, missing directories are made (owned by `owner`). Caller closes the fd.
 */
export function openDirNoFollow(root: string, parts: WsPath, opts: { create?: boolean; owner?: { uid: number; gid: number }; onCreate?: (depth: number) => void } = {}): number {
  let fd = fs.openSync(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    for (const [depth, part] of parts.entries()) {
      let next: number;
      try {
        next = fs.openSync(fdPath(fd, part), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOTDIR" && fs.lstatSync(fdPath(fd, part), { throwIfNoEntry: false })?.isSymbolicLink()) {
          // Linux answers ENOTDIR for O_DIRECTORY|O_NOFOLLOW on a symlink; say what it is.
          throw Object.assign(new Error(`symbolic link: ${String(part)}`), { code: "ELOOP" });
        }
        if ((e as NodeJS.ErrnoException).code !== "ENOENT" || !opts.create) throw e;
        let made = false;
        try {
          fs.mkdirSync(fdPath(fd, part), { mode: 0o755 });
          made = true;
          opts.onCreate?.(depth);
        } catch (me) {
          if ((me as NodeJS.ErrnoException).code !== "EEXIST") throw me;
        }
        next = fs.openSync(fdPath(fd, part), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        // chown the directory we opened, never a path: between mkdir and chown, running code may
        // have swapped the new directory for a symlink to a host path, which chown would follow.
        if (made && opts.owner) {
          try {
            fs.fchownSync(next, opts.owner.uid, opts.owner.gid);
          } catch (ce) {
            fs.closeSync(next);
            throw ce;
          }
        }
      }
      fs.closeSync(fd);
      fd = next;
    }
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Opens a regular file for reading, refusing symlinks, FIFOs, sockets and devices. */
export function openFileNoFollow(root: string, parts: WsPath): { fd: number; stat: fs.Stats } {
  const dirfd = openDirNoFollow(root, parts.slice(0, -1));
  try {
    // O_NONBLOCK so a FIFO planted by sandboxed code cannot hang the server on open.
    const fd = fs.openSync(fdPath(dirfd, parts[parts.length - 1]), O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) {
      fs.closeSync(fd);
      if (stat.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      throw new PetriError("NOT_A_FILE", `not a regular file: ${displayPath(parts)}`);
    }
    return { fd, stat };
  } finally {
    fs.closeSync(dirfd);
  }
}

export const WRITE_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
