import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { HANDOVER_MODE } from "../tracing/program.js";

/**
 * What a run under gVisor opened and executed, read from the strace gVisor's sentry writes to its
 * boot log when the OCI runtime is registered as `runsc-trace` (scripts/docker-daemon-json.mjs:
 * `--strace --strace-syscalls=open,openat,creat,execve,execveat,connect --debug-log=/var/log/petri/runsc/
 * --debug-command=boot`), or when runsc-direct passes the same flags per run (gvisorStraceFlags). Paths are as the program saw them inside the container. Environment
 * values (printed by gVisor for every execve) never leave this module.
 */
export interface TracedOpen {
  path: string;
  /** As gVisor prints them, e.g. "O_WRONLY|O_CLOEXEC|O_CREAT|O_TRUNC". */
  flags: string;
  /** Opened for writing (or created/truncated). */
  write: boolean;
  /** How many times (same path, same access, same result). */
  count: number;
  /** Why it was refused (errno name), null when it succeeded. Misses (ENOENT) are not recorded. */
  errno?: string | null;
}

export interface TracedExec {
  path: string;
  argv: string[];
  count: number;
  /** The run was handed to a pre-started interpreter (its hand-over mark), not exec'd. */
  warm?: boolean;
}

/** A connect() the program made (only when runsc-trace's --strace-syscalls lists connect). */
export interface TracedConnect {
  family: "inet" | "inet6" | "unix";
  address: string;
  port: number | null;
  errno: string | null;
  count: number;
}

export interface GvisorTrace {
  opens: TracedOpen[];
  execs: TracedExec[];
  connects: TracedConnect[];
  /** More distinct entries than `limit` were seen; the rest were dropped. */
  truncated: boolean;
  /** The log was longer than what is read of it (ReadTraceOptions.maxBytes): its end was not parsed. */
  cut?: string;
}

export interface ParseOptions {
  /** Distinct entries kept per list. */
  limit?: number;
  /**
   * The program starts at this successful execve: 1 when docker-init execs it straight away, 2
   * when a pre-started container's launcher sits in between. What came before is the runtime's
   * own start-up and is left out; that execve itself is the program's first exec record.
   */
  startAtExec?: number;
  /**
   * The program starts at the first successful execve with this argv from the startAtExec-th on
   * (Petri's broker forwarder, the pre-start launcher and docker-init run before it). Processes
   * that executed anything before it (the forwarder's socat, say) stay Petri's and are left out.
   */
  programArgv?: string[];
  /**
   * A pre-started warm interpreter serves the run: the program also starts at its bootstrap's
   * hand-over mark, recorded as the program's exec (the interpreter's path, programArgv, warm):
   * Python's access(<interpreter>, HANDOVER_MODE) refused with EINVAL (warm-python.ts), or Node's
   * openat(<node>, HANDOVER_OPEN_FLAGS) refused with EISDIR under gVisor (warm-node.ts). Only with
   * programArgv, and only for units that are warm interpreters: before the hand-over only Petri's
   * bootstrap runs there, so the program cannot forge the mark to hide anything.
   */
  warmMark?: boolean;
}

export const GVISOR_TRACE_DIR = "/var/log/petri/runsc";
/** What gVisor's strace prints: the syscalls parseGvisorStrace reads (same list as runsc-trace's registration). */
export const GVISOR_STRACE_SYSCALLS = ["open", "openat", "creat", "execve", "execveat", "connect", "access", "faccessat"];

/**
 * runsc's global flags that make a sandbox's boot process write this strace to a log in
 * `logDir` (runc-style runtimes called directly pass them per run, as Docker's runsc-trace does
 * for every container).
 */
export function gvisorStraceFlags(logDir: string): string[] {
  return ["--strace", `--strace-syscalls=${GVISOR_STRACE_SYSCALLS.join(",")}`, `--debug-log=${logDir.replace(/\/*$/, "/")}`, "--debug-command=boot"];
}
const DEFAULT_LIMIT = 1000;

// glog header, then gVisor's strace "exit" line: [pid:tid] comm X syscall(args) = rv (0x..) [errno=..] (duration)
const GLOG = /^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+(\d+) (\S+)\] (.*)$/;
const STRACE_EXIT = /^\[\s*(\d+):\s*\d+\] .*? X (open|openat|creat|execve|execveat|connect|access|faccessat)\((.*)\) = (-?\d+) \(0x[0-9a-f]+\)( errno=(\d+)[^)]*\))? \([0-9.hmµns]+\)$/;
// gVisor prints a socket address as {Family: AF_INET, Addr: 10.0.0.1, Port: 80} (AF_UNIX: Addr: "path").
const CONNECT_ARGS = /^0x[0-9a-f]+ \S+, 0x[0-9a-f]+ \{Family: (AF_INET6?|AF_UNIX), Addr: (.*?)(?:, Port: (\d+))?\}, (?:0x)?[0-9a-f]+$/;
const FLAGS = String.raw`((?:[A-Z][A-Z0-9_]*|0x[0-9a-f]+)(?:\|(?:[A-Z][A-Z0-9_]*|0x[0-9a-f]+))*)`;
const OPENAT_ARGS = new RegExp(String.raw`^(\S+) (.*?), 0x[0-9a-f]+ (.*), ${FLAGS}, 0o[0-7]+$`);
const OPEN_ARGS = new RegExp(String.raw`^0x[0-9a-f]+ (.*), ${FLAGS}, 0o[0-7]+$`);
const CREAT_ARGS = /^0x[0-9a-f]+ (.*), 0o[0-7]+$/;
const WRITE_FLAGS = /(^|\|)(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND)(\||$)/;

/** Joins a path relative to an *at() directory whose path gVisor printed ("AT_FDCWD /workspace"). */
function resolveAt(dir: string, p: string): string {
  if (p.startsWith("/") || !dir.startsWith("/")) return p;
  return path.posix.join(dir, p);
}

/** Decodes the Go-quoted strings of an argv array starting at `s[i]` ('[' already consumed). */
function goStrings(s: string, i: number): string[] | null {
  const out: string[] = [];
  for (;;) {
    if (s[i] === "]") return out;
    if (s[i] !== '"') return null;
    const bytes: number[] = [];
    i++;
    for (;;) {
      if (i >= s.length) return null;
      const c = s[i];
      if (c === '"') { i++; break; }
      if (c !== "\\") {
        const cp = s.codePointAt(i)!;
        bytes.push(...Buffer.from(String.fromCodePoint(cp), "utf8"));
        i += cp > 0xffff ? 2 : 1;
        continue;
      }
      const e = s[i + 1];
      const simple: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, "\\": 92, '"': 34, "'": 39 };
      if (e in simple) { bytes.push(simple[e]); i += 2; }
      else if (e === "x") { bytes.push(parseInt(s.slice(i + 2, i + 4), 16)); i += 4; }
      else if (e === "u" || e === "U") {
        const n = e === "u" ? 4 : 8;
        bytes.push(...Buffer.from(String.fromCodePoint(parseInt(s.slice(i + 2, i + 2 + n), 16)), "utf8"));
        i += 2 + n;
      } else if (/[0-7]/.test(e)) { bytes.push(parseInt(s.slice(i + 1, i + 4), 8)); i += 4; }
      else return null;
    }
    out.push(Buffer.from(bytes).toString("utf8"));
    if (s.startsWith("...", i)) i += 3; // gVisor marks a string cut at --strace-log-size
    if (s.startsWith(", ", i)) i += 2;
  }
}

/** path and argv of an execve/execveat; the envp array after argv is never looked at. */
function parseExec(name: string, args: string): TracedExec | null {
  let dir = "";
  let rest = args;
  if (name === "execveat") {
    const m = /^(\S+) (.*?), (0x[0-9a-f]+ .*)$/.exec(args);
    if (!m) return null;
    dir = m[2];
    rest = m[3];
  }
  const m = /^0x[0-9a-f]+ (.*?), 0x[0-9a-f]+ \[/.exec(rest);
  if (!m) return null;
  const argv = goStrings(rest, m[0].length);
  if (!argv) return null;
  const p = m[1] === "" && dir ? dir : resolveAt(dir, m[1]);
  return { path: p, argv, count: 1 };
}

function parseOpen(name: string, args: string): TracedOpen | null {
  let p: string;
  let flags: string;
  if (name === "openat") {
    const m = OPENAT_ARGS.exec(args);
    if (!m) return null;
    p = resolveAt(m[2], m[3]);
    flags = m[4];
  } else if (name === "open") {
    const m = OPEN_ARGS.exec(args);
    if (!m) return null;
    p = m[1];
    flags = m[2];
  } else {
    const m = CREAT_ARGS.exec(args);
    if (!m) return null;
    p = m[1];
    flags = "O_WRONLY|O_CREAT|O_TRUNC";
  }
  flags = flags.split("|").filter((f) => f !== "0x0").join("|");
  return { path: p, flags, write: WRITE_FLAGS.test(flags), count: 1 };
}

/**
 * Turns a gVisor boot log into the opens and execs of the program. Execs count when they
 * succeed; opens also when refused (with the errno), except misses (ENOENT).
 * A line counts only if its log header carries the boot process's own host pid (taken from the
 * log's first line): paths are printed unquoted, so a program could otherwise forge a line by
 * opening a file whose name holds a newline and a fake log line.
 */
export function parseGvisorStrace(text: string, opts: ParseOptions = {}): GvisorTrace {
  const p = new GvisorStraceParser(opts);
  p.push(Buffer.from(text, "utf8"));
  return p.result();
}

/** Longest line kept while waiting for its end (gVisor cuts strings at 1 KiB; a line is far shorter). */
const MAX_LINE = 1024 * 1024;

/**
 * parseGvisorStrace fed piece by piece as the log grows (GvisorTraceFollower): lines may be split
 * across pieces; what it keeps is bounded by `limit`, however long the log.
 */
export class GvisorStraceParser {
  private readonly limit: number;
  private readonly startAt: number;
  private readonly want?: string[];
  private readonly opens = new Map<string, TracedOpen>();
  private readonly execs = new Map<string, TracedExec>();
  private readonly connects = new Map<string, TracedConnect>();
  private readonly helperPids = new Set<string>();
  private started = false;
  private truncated = false;
  private execsSeen = 0;
  private pid: string | undefined;
  // The warm hand-over's record, and its process: a later exec of the run's argv there (the
  // bootstrap went cold after all) is the record instead, as with the host tracer.
  private mark: { pid: string; exec: TracedExec } | undefined;
  private rest: Buffer = Buffer.alloc(0);

  constructor(private readonly opts: ParseOptions = {}) {
    this.limit = opts.limit ?? DEFAULT_LIMIT;
    this.startAt = opts.startAtExec ?? 1;
    this.want = opts.programArgv;
  }

  /** The next bytes of the log. */
  push(chunk: Buffer): void {
    let buf = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    const end = buf.lastIndexOf(0x0a);
    if (end < 0) {
      this.rest = buf.length > MAX_LINE ? Buffer.alloc(0) : Buffer.from(buf);
      return;
    }
    for (const line of buf.toString("utf8", 0, end).split("\n")) this.line(line);
    buf = buf.subarray(end + 1);
    this.rest = buf.length > MAX_LINE ? Buffer.alloc(0) : Buffer.from(buf);
  }

  /** What was parsed; `complete` false: a last line without its end (the log was cut there) is left out. */
  result(complete = true): GvisorTrace {
    if (complete && this.rest.length) this.line(this.rest.toString("utf8"));
    this.rest = Buffer.alloc(0);
    return {
      opens: [...this.opens.values()], execs: [...(this.mark ? [this.mark.exec] : []), ...this.execs.values()],
      connects: [...this.connects.values()], truncated: this.truncated,
    };
  }

  private add<T extends { count: number }>(map: Map<string, T>, key: string, v: T): void {
    const e = map.get(key);
    if (e) { e.count++; return; }
    if (map.size >= this.limit) { this.truncated = true; return; }
    map.set(key, v);
  }

  private line(line: string): void {
    const g = GLOG.exec(line);
    if (!g) return;
    this.pid ??= g[1];
    if (g[1] !== this.pid || !g[2].startsWith("strace.go:")) return;
    const m = STRACE_EXIT.exec(g[3]);
    if (!m) return;
    const [, sandboxPid, name, args, rv, failed, errnoNum] = m;
    const want = this.want;
    const err = failed ? Number(errnoNum) : Number(rv) < 0 ? -Number(rv) : 0;
    if (name === "access" || name === "faccessat") {
      if (this.started || !want || !this.opts.warmMark || err !== EINVAL) return;
      const a = name === "access" ? /^0x[0-9a-f]+ (.*), (0o[0-7]+)$/.exec(args) : /^\S+ (?:\S*), 0x[0-9a-f]+ (.*), (0o[0-7]+)(?:, \S+)?$/.exec(args);
      if (a && a[2] === MARK_MODE) this.handOver(sandboxPid, a[1]);
      return;
    }
    if (name === "connect") {
      if (!this.started || this.helperPids.has(sandboxPid)) return;
      const c = parseConnect(args, err);
      if (c) this.add(this.connects, JSON.stringify([c.family, c.address, c.port, c.errno]), c);
      return;
    }
    const isOpen = name === "open" || name === "openat" || name === "creat";
    if (err && !isOpen) return;
    if (name === "execve" || name === "execveat") {
      const ex = parseExec(name, args);
      if (!ex) return;
      this.execsSeen++;
      if (!this.started) {
        // Execs before startAtExec are the unit's own start, even one with the run's argv (a Node
        // unit under gVisor starts with the command line of the run it expects: warm-node.ts).
        this.started = this.execsSeen >= this.startAt && (!want || sameArgv(ex.argv, want));
        if (!this.started) { this.helperPids.add(sandboxPid); return; }
        this.helperPids.delete(sandboxPid);
      } else if (this.helperPids.has(sandboxPid)) return;
      if (this.mark && this.mark.pid === sandboxPid && sameArgv(ex.argv, want ?? [])) this.mark = undefined;
      this.add(this.execs, ex.path + "\0" + JSON.stringify(ex.argv), ex);
      return;
    }
    if (!this.started) {
      // Node's hand-over mark (warm-node.ts): an open refused before anything is touched (gVisor
      // says EISDIR where Linux says EINVAL, or EEXIST before 6.4).
      if (want && this.opts.warmMark && (err === EINVAL || err === EEXIST || err === EISDIR) && name !== "creat") {
        const op = parseOpen(name, args);
        if (op && isOpenMark(op.flags)) this.handOver(sandboxPid, op.path);
      }
      return;
    }
    if (this.helperPids.has(sandboxPid)) return;
    // A refused open is an attempt worth recording (EACCES on /etc/shadow); a miss is a lookup.
    if (err === ENOENT) return;
    const op = parseOpen(name, args);
    if (op) {
      op.errno = err ? ERRNO_NAMES.get(err) ?? `E${err}` : null;
      this.add(this.opens, op.path + "\0" + String(op.write) + "\0" + String(op.errno), op);
    }
  }

  /** A warm interpreter's hand-over mark: its process is the run's program from here on. */
  private handOver(pid: string, interpreter: string): void {
    this.started = true;
    this.helperPids.delete(pid);
    this.mark = { pid, exec: { path: interpreter, argv: [...this.want!], count: 1, warm: true } };
  }
}

const MARK_MODE = "0o" + HANDOVER_MODE.toString(8);
/** HANDOVER_OPEN_FLAGS by name, as gVisor prints them; O_CLOEXEC (libuv adds it) and O_LARGEFILE aside. */
const MARK_OPEN_FLAGS = ["O_CREAT", "O_DIRECTORY", "O_EXCL", "O_TRUNC", "O_WRONLY"].join("|");
function isOpenMark(flags: string): boolean {
  return flags.split("|").filter((f) => f !== "O_CLOEXEC" && f !== "O_LARGEFILE").sort().join("|") === MARK_OPEN_FLAGS;
}

/** gVisor cuts long strings (and marks them "..."): a cut argument matches what it starts. */
function sameArgv(seen: string[], want: string[]): boolean {
  if (seen.length !== want.length) return false;
  return seen.every((a, i) => a === want[i] || (a.length >= 32 && want[i].startsWith(a)));
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v as number, k]));
const ENOENT = os.constants.errno.ENOENT;
const EINVAL = os.constants.errno.EINVAL;
const EEXIST = os.constants.errno.EEXIST;
const EISDIR = os.constants.errno.EISDIR;

function parseConnect(args: string, errno: number): TracedConnect | null {
  const m = CONNECT_ARGS.exec(args);
  if (!m) return null;
  const family = m[1] === "AF_UNIX" ? "unix" : m[1] === "AF_INET6" ? "inet6" : "inet";
  let address = m[2];
  if (family === "unix") {
    const q = goStrings(address + "]", address.startsWith('"') ? 0 : -1);
    address = q?.[0] ?? address.replace(/^"|"$/g, "");
  }
  return { family, address, port: m[3] ? Number(m[3]) : null, errno: errno ? ERRNO_NAMES.get(errno) ?? `E${errno}` : null, count: 1 };
}

export interface ReadTraceOptions extends ParseOptions {
  dir?: string;
  /**
   * What is parsed of a run's log (default 64 MiB). Past it the trace is cut (GvisorTrace.cut), and
   * what gVisor goes on writing is emptied from the disk as it comes (GvisorTraceFollower).
   */
  maxBytes?: number;
  /** How often a followed log is read while the run lasts (default 250 ms). */
  intervalMs?: number;
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const HEAD_BYTES = 16 * 1024;
const CHUNK = 4 * 1024 * 1024;

/**
 * Follows the boot log of one run while it runs: read and parsed as it grows, so what stays on
 * the disk is bounded however long the program goes on opening files. gVisor writes the log with
 * O_APPEND; once `maxBytes` were parsed, each look empties the file (ftruncate to 0) and only
 * counts what it held, so a run that would write gigabytes of strace leaves at most `maxBytes`
 * plus what gVisor writes between two looks on the disk, and its trace says it was cut.
 * The log holds the run's environment values: it is removed when the follower ends.
 */
export class GvisorTraceFollower {
  private readonly dir: string;
  private readonly maxBytes: number;
  private readonly parser: GvisorStraceParser;
  private file: string | undefined;
  private fh: fs.promises.FileHandle | undefined;
  /** Where the next read starts in the file as it is now (0 after each emptying). */
  private offset = 0;
  private parsed = 0;
  private emptied = 0;
  private busy: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private scanned = false;
  private readonly notOurs = new Set<string>();
  private ended = false;

  constructor(private readonly containerId: string, opts: ReadTraceOptions = {}) {
    this.dir = opts.dir ?? GVISOR_TRACE_DIR;
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.parser = new GvisorStraceParser(opts);
    const interval = opts.intervalMs ?? 250;
    if (interval > 0) {
      this.timer = setInterval(() => this.look(), interval);
      this.timer.unref();
    }
  }

  /** Reads what was written since the last look (one look at a time; looks never overlap). */
  look(): Promise<void> {
    if (this.ended) return this.busy;
    this.busy = this.busy.then(() => this.catchUp()).catch(() => undefined);
    return this.busy;
  }

  /**
   * The run has ended (its boot process exited, so the log is complete): the rest is read, the
   * log removed, the trace returned. Null when there never was a log.
   */
  async finish(): Promise<GvisorTrace | null> {
    await this.look();
    this.stop();
    await this.busy;
    try {
      if (!this.fh) return null;
      const cut = this.emptied > 0;
      const t = this.parser.result(!cut);
      // A run whose strace outgrew what is parsed must not look completely traced.
      if (cut) {
        t.cut = `gVisor's strace of this run was ${this.parsed + this.emptied} bytes; only the first ${this.parsed} were read `
          + "(the rest was emptied from the disk as it was written)";
      }
      return t;
    } finally {
      await this.close();
    }
  }

  /** Stops without a result (the run failed): the log is removed all the same. */
  async abandon(): Promise<void> {
    this.stop();
    await this.busy;
    await this.close();
  }

  private stop(): void {
    this.ended = true;
    if (this.timer) clearInterval(this.timer);
  }

  private async close(): Promise<void> {
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
    if (this.file) await fs.promises.rm(this.file, { force: true });
  }

  private async catchUp(): Promise<void> {
    if (!this.fh) await this.locate();
    const fh = this.fh;
    if (!fh) return;
    for (;;) {
      const size = (await fh.stat()).size;
      if (size <= this.offset) {
        // Smaller than where we are: only an emptying does that, and it was ours.
        if (size < this.offset) this.offset = size;
        return;
      }
      if (this.parsed >= this.maxBytes) {
        // Past what is parsed: the log is emptied, so the disk holds no more than one look's worth.
        // gVisor appends (O_APPEND), so its next line lands at the new end, not past a hole.
        await fh.truncate(0);
        this.emptied += size - this.offset;
        this.offset = 0;
        return;
      }
      const n = Math.min(size - this.offset, this.maxBytes - this.parsed, CHUNK);
      const buf = Buffer.allocUnsafe(n);
      const { bytesRead } = await fh.read(buf, 0, n, this.offset);
      if (bytesRead === 0) return;
      this.parser.push(buf.subarray(0, bytesRead));
      this.offset += bytesRead;
      this.parsed += bytesRead;
    }
  }

  /**
   * Finds the run's log: this runsc names logs by time only, so by the container id in the log's
   * opening lines. Logs left behind by crashed runs are deleted once an hour old (first look only).
   */
  private async locate(): Promise<void> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch {
      return;
    }
    const sweep = !this.scanned;
    this.scanned = true;
    for (const name of names) {
      if (!name.endsWith(".txt") || this.notOurs.has(name)) continue;
      const file = path.join(this.dir, name);
      let keep = false;
      let fh: fs.promises.FileHandle | undefined;
      try {
        fh = await fs.promises.open(file, "r+");
        const st = await fh.stat();
        if (!this.fh) {
          const head = Buffer.alloc(Math.min(st.size, HEAD_BYTES));
          await fh.read(head, 0, head.length, 0);
          if (head.toString("latin1").includes(this.containerId)) {
            this.fh = fh;
            this.file = file;
            keep = true;
            if (!sweep) return;
            continue;
          }
          // A head not yet complete may still name us; a complete one never will.
          if (st.size >= HEAD_BYTES) this.notOurs.add(name);
        }
        if (sweep && Date.now() - st.mtimeMs > 3600_000) { await fs.promises.rm(file, { force: true }); this.notOurs.add(name); }
      } catch {
        /* removed by a concurrent reader */
      } finally {
        if (!keep) await fh?.close().catch(() => undefined);
      }
    }
  }
}

/**
 * Finds the boot log of `containerId`, parses it and deletes it (a run that ended without being
 * followed). Null when there is no log.
 */
export async function readGvisorTrace(containerId: string, opts: ReadTraceOptions = {}): Promise<GvisorTrace | null> {
  return new GvisorTraceFollower(containerId, { ...opts, intervalMs: 0 }).finish();
}
