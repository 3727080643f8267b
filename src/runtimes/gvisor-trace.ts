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
   * The program starts at the first successful execve with this argv (Petri's broker forwarder,
   * the pre-start launcher and docker-init run before it). Processes that executed anything
   * before it (the forwarder's socat, say) stay Petri's and are left out. Wins over startAtExec.
   */
  programArgv?: string[];
  /**
   * A pre-started warm interpreter serves the run: the program also starts at its bootstrap's
   * hand-over mark, access(<interpreter>, HANDOVER_MODE) refused with EINVAL (warm-python.ts),
   * recorded as the program's exec (the interpreter's path, programArgv, warm). Only with
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
  const limit = opts.limit ?? DEFAULT_LIMIT;
  const startAt = opts.startAtExec ?? 1;
  const want = opts.programArgv;
  const opens = new Map<string, TracedOpen>();
  const execs = new Map<string, TracedExec>();
  const connects = new Map<string, TracedConnect>();
  const helperPids = new Set<string>();
  let started = false;
  let truncated = false;
  let execsSeen = 0;
  let pid: string | undefined;
  // The warm hand-over's record, and its process: a later exec of the run's argv there (the
  // bootstrap went cold after all) is the record instead, as with the host tracer.
  let mark: { pid: string; exec: TracedExec } | undefined;
  const markMode = "0o" + HANDOVER_MODE.toString(8);
  const add = <T extends { count: number }>(map: Map<string, T>, key: string, v: T) => {
    const e = map.get(key);
    if (e) { e.count++; return; }
    if (map.size >= limit) { truncated = true; return; }
    map.set(key, v);
  };
  for (const line of text.split("\n")) {
    const g = GLOG.exec(line);
    if (!g) continue;
    pid ??= g[1];
    if (g[1] !== pid || !g[2].startsWith("strace.go:")) continue;
    const m = STRACE_EXIT.exec(g[3]);
    if (!m) continue;
    const [, sandboxPid, name, args, rv, failed, errnoNum] = m;
    if (name === "access" || name === "faccessat") {
      if (started || !want || !opts.warmMark || Number(errnoNum) !== EINVAL) continue;
      const a = name === "access" ? /^0x[0-9a-f]+ (.*), (0o[0-7]+)$/.exec(args) : /^\S+ (?:\S*), 0x[0-9a-f]+ (.*), (0o[0-7]+)(?:, \S+)?$/.exec(args);
      if (!a || a[2] !== markMode) continue;
      started = true;
      helperPids.delete(sandboxPid);
      mark = { pid: sandboxPid, exec: { path: a[1], argv: [...want], count: 1, warm: true } };
      continue;
    }
    if (name === "connect") {
      if (!started || helperPids.has(sandboxPid)) continue;
      const c = parseConnect(args, failed ? Number(errnoNum) : Number(rv) < 0 ? -Number(rv) : 0);
      if (c) add(connects, JSON.stringify([c.family, c.address, c.port, c.errno]), c);
      continue;
    }
    const err = failed ? Number(errnoNum) : Number(rv) < 0 ? -Number(rv) : 0;
    if (err && !(name === "open" || name === "openat" || name === "creat")) continue;
    if (name === "execve" || name === "execveat") {
      const ex = parseExec(name, args);
      if (!ex) continue;
      execsSeen++;
      if (!started) {
        started = want ? sameArgv(ex.argv, want) : execsSeen >= startAt;
        if (!started) { helperPids.add(sandboxPid); continue; }
        helperPids.delete(sandboxPid);
      } else if (helperPids.has(sandboxPid)) continue;
      if (mark && mark.pid === sandboxPid && sameArgv(ex.argv, want ?? [])) mark = undefined;
      add(execs, ex.path + "\0" + JSON.stringify(ex.argv), ex);
    } else if (started && !helperPids.has(sandboxPid)) {
      // A refused open is an attempt worth recording (EACCES on /etc/shadow); a miss is a lookup.
      if (err === ENOENT) continue;
      const op = parseOpen(name, args);
      if (op) {
        op.errno = err ? ERRNO_NAMES.get(err) ?? `E${err}` : null;
        add(opens, op.path + "\0" + String(op.write) + "\0" + String(op.errno), op);
      }
    }
  }
  return { opens: [...opens.values()], execs: [...(mark ? [mark.exec] : []), ...execs.values()], connects: [...connects.values()], truncated };
}

/** gVisor cuts long strings (and marks them "..."): a cut argument matches what it starts. */
function sameArgv(seen: string[], want: string[]): boolean {
  if (seen.length !== want.length) return false;
  return seen.every((a, i) => a === want[i] || (a.length >= 32 && want[i].startsWith(a)));
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v as number, k]));
const ENOENT = os.constants.errno.ENOENT;
const EINVAL = os.constants.errno.EINVAL;

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
  /** Boot logs bigger than this are read only this far. */
  maxBytes?: number;
}

/**
 * Finds the boot log of `containerId` (this runsc names logs by time only, so by the container id
 * in the log's opening lines), parses it and deletes it: it holds the run's environment values.
 * Logs left behind by crashed runs are deleted once an hour old. Null when there is no log.
 */
export async function readGvisorTrace(containerId: string, opts: ReadTraceOptions = {}): Promise<GvisorTrace | null> {
  const dir = opts.dir ?? GVISOR_TRACE_DIR;
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return null;
  }
  let found: string | undefined;
  for (const name of names) {
    if (!name.endsWith(".txt")) continue;
    const file = path.join(dir, name);
    try {
      const fh = await fs.promises.open(file, "r");
      try {
        const st = await fh.stat();
        if (!found) {
          const head = Buffer.alloc(Math.min(st.size, 16 * 1024));
          await fh.read(head, 0, head.length, 0);
          if (head.toString("latin1").includes(containerId)) { found = file; continue; }
        }
        if (Date.now() - st.mtimeMs > 3600_000) await fs.promises.rm(file, { force: true });
      } finally {
        await fh.close();
      }
    } catch {
      /* removed by a concurrent reader */
    }
  }
  if (!found) return null;
  try {
    const fh = await fs.promises.open(found, "r");
    let text: string;
    let size: number;
    try {
      const st = await fh.stat();
      size = st.size;
      const buf = Buffer.alloc(Math.min(st.size, maxBytes));
      await fh.read(buf, 0, buf.length, 0);
      text = buf.toString("utf8");
    } finally {
      await fh.close();
    }
    const t = parseGvisorStrace(text, opts);
    // A run whose strace outgrew the read must not look completely traced.
    if (size > maxBytes) t.cut = `gVisor's strace of this run was ${size} bytes; only the first ${maxBytes} were read`;
    return t;
  } finally {
    await fs.promises.rm(found, { force: true });
  }
}
