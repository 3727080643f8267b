import fs from "node:fs";

export const LOG_FILE = "audit.jsonl";
export const LOCK_FILE = "audit.lock";

export interface RawLine {
  /** Byte offset of the first byte of the line. */
  offset: number;
  /** Length in bytes, including the terminating "\n" (absent only when `partial`). */
  length: number;
  text: string;
  /** True for trailing bytes with no "\n": a torn write, or a record being written right now. */
  partial: boolean;
}

/**
 * Reads "\n"-terminated lines of a file synchronously, in chunks, from `start` up to `end`
 * (default: the size when called). Lines are split on bytes, so UTF-8 is never cut in half.
 */
export function* readLines(fd: number, start = 0, end?: number, chunkBytes = 1 << 20): Generator<RawLine> {
  const stop = end ?? fs.fstatSync(fd).size;
  let pos = start;
  let carry: Buffer = Buffer.alloc(0);
  let carryStart = start;
  const buf = Buffer.allocUnsafe(chunkBytes);
  while (pos < stop) {
    const n = fs.readSync(fd, buf, 0, Math.min(chunkBytes, stop - pos), pos);
    if (n <= 0) break;
    pos += n;
    const data = carry.length ? Buffer.concat([carry, buf.subarray(0, n)]) : buf.subarray(0, n);
    let lineStart = 0;
    for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, lineStart)) {
      yield { offset: carryStart + lineStart, length: i + 1 - lineStart, text: data.toString("utf8", lineStart, i), partial: false };
      lineStart = i + 1;
    }
    carry = Buffer.from(data.subarray(lineStart));
    carryStart += lineStart;
  }
  if (carry.length) yield { offset: carryStart, length: carry.length, text: carry.toString("utf8"), partial: true };
}

/** Reads exactly `length` bytes at `offset`. */
export function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, offset + got);
    if (n <= 0) throw new Error(`audit log: unexpected end of file at byte ${offset + got}`);
    got += n;
  }
  return buf;
}

export function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
}

/** Writes a small file so that a crash leaves either the old or the new content, never half. */
export function writeFileAtomic(file: string, data: string, mode = 0o600): void {
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = fs.openSync(tmp, "w", mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * One writer per audit directory: two writers would fork the hash chain. The lock file holds the
 * owner's pid; a lock left by a dead process is taken over.
 */
export function acquireLock(file: string): () => void {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, "wx", 0o600);
      fs.writeSync(fd, String(process.pid));
      fs.closeSync(fd);
      return () => {
        try {
          if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          /* already gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const owner = Number(fs.readFileSync(file, "utf8").trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner)) {
        throw new Error(`audit log directory is in use by process ${owner} (${file})`);
      }
      if (owner === process.pid) throw new Error(`audit log directory is already open in this process (${file})`);
      fs.rmSync(file, { force: true });
    }
  }
  throw new Error(`could not lock ${file}`);
}

export function isLockHeldByLiveProcess(file: string): boolean {
  try {
    const owner = Number(fs.readFileSync(file, "utf8").trim());
    return Number.isInteger(owner) && owner > 0 && pidAlive(owner);
  } catch {
    return false;
  }
}
