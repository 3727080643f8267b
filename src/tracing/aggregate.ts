import os from "node:os";
import type { LibCount, NetOp, OpenEntry, TimedEvent, TraceEvent } from "./events.js";
import { LIBRARY_PREFIXES, STRLEN } from "./program.js";

/**
 * What one run did, from the host tracer's events: programs executed, files opened, network
 * attempts and DNS names asked. Aggregated: one entry per distinct (path, access, outcome) with
 * a count, not one per call. Bounded: past the caps, entries are counted in `dropped`.
 *
 * Petri's own helpers are left out. A process counts as the run's once it (or an ancestor) has
 * executed the run's program — the argv the run was asked to execute; everything before that in
 * the run's cgroup (runc/crun init, docker-init, the pre-start launcher, the broker's forwarder,
 * bwrap's prlimit/setpriv chain) is Petri's, as are siblings those helpers start.
 */
export interface TracedExec {
  path: string; path_b64?: string; argv: string[]; argv_truncated: boolean; count: number; errno: string | null; pid: number; uid: number;
  /** The program was handed to a pre-started interpreter (this path) instead of being executed. */
  warm?: boolean;
}
export interface TracedFile { path: string; path_b64?: string; access: "read" | "write" | "read-write"; flags: string[]; count: number; errno: string | null; pid: number }
export interface TracedNet { op: NetOp; family: "inet" | "inet6" | "unix"; address: string; port: number | null; count: number; errno: string | null; pid: number }
export interface TracedDns { name: string; count: number; pid: number }

export interface TraceSummary {
  source: "ebpf" | "gvisor-strace";
  execs: TracedExec[];
  files: TracedFile[];
  /**
   * Read-only opens of the image's shared libraries and language runtime files, summed up.
   * `distinct_at_least`: some were counted without their path (the host tracer lists a bounded
   * number per drain, LIB_PATHS_PER_DRAIN, and the summary keeps a bounded number of paths), so
   * `distinct` is a lower bound; `count` is exact either way.
   */
  libraries: { count: number; distinct: number; paths: string[]; distinct_at_least?: boolean };
  net: TracedNet[];
  dns: TracedDns[];
  /** Distinct entries beyond the caps, not listed. */
  dropped: number;
  /** Events the kernel could not hand over while this run was live (ring buffer full). */
  lost_events: number;
}

export interface TraceCaps { files: number; execs: number; net: number; dns: number; libraryPaths: number }
export const DEFAULT_CAPS: TraceCaps = { files: 1000, execs: 300, net: 300, dns: 100, libraryPaths: 200 };

/** Events of processes not yet known as the program's, kept per run (see hold). */
const HELD_MAX = 20_000;
/**
 * Timed events kept per run to be put in the kernel's order (see push). Past this, those older than
 * REORDER_NS before the newest (long read from every CPU's buffer) are taken in, sorted, and at
 * least the older half of them, to stay bounded.
 */
const TIMELINE_MAX = 50_000;
const REORDER_NS = 2e9;
/** Distinct (process, path, access, result) open counts kept per run until its summary. */
const MAX_RAW_OPENS = 200_000;

export { LIBRARY_PREFIXES };

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([k, v]) => [v as number, k]));
export function errnoName(ret: number): string | null {
  return ret >= 0 ? null : ERRNO_NAMES.get(-ret) ?? `E${-ret}`;
}

const O_FLAGS: [number, string][] = [
  [0o100, "O_CREAT"], [0o200, "O_EXCL"], [0o1000, "O_TRUNC"], [0o2000, "O_APPEND"], [0o4000, "O_NONBLOCK"],
  [0o200000, "O_DIRECTORY"], [0o400000, "O_NOFOLLOW"], [0o2000000, "O_CLOEXEC"], [0o20000000, "O_TMPFILE"], [0o10000000, "O_PATH"],
];

export function openFlags(flags: number): { access: TracedFile["access"]; names: string[] } {
  const acc = flags & 3;
  const names = [acc === 0 ? "O_RDONLY" : acc === 1 ? "O_WRONLY" : "O_RDWR"];
  for (const [bit, name] of O_FLAGS) if ((flags & bit) === bit && !(name === "O_DIRECTORY" && (flags & 0o20000000))) names.push(name);
  const access = acc === 2 ? "read-write" : acc === 1 || (flags & (0o100 | 0o1000)) !== 0 ? "write" : "read";
  return { access, names };
}

// A run opens thousands of files with a handful of distinct flag values.
const FLAGS_CACHE = new Map<number, ReturnType<typeof openFlags>>();
function cachedFlags(flags: number): ReturnType<typeof openFlags> {
  let f = FLAGS_CACHE.get(flags);
  if (!f) {
    f = openFlags(flags);
    if (FLAGS_CACHE.size < 4096) FLAGS_CACHE.set(flags, f);
  }
  return f;
}

function isLibrary(p: string): boolean {
  for (const x of LIBRARY_PREFIXES) if (p.startsWith(x)) return true;
  return false;
}

/** Display text and, when the bytes are not UTF-8, the bytes themselves (the agreed path/path_b64 scheme). */
export function displayPath(b: Buffer): { path: string; path_b64?: string } {
  const s = b.toString("utf8");
  return Buffer.from(s, "utf8").equals(b) ? { path: s } : { path: s, path_b64: b.toString("base64") };
}

interface PendingExec { path: Buffer; uid: number; args: Buffer[]; more: boolean }
/** An exec entry with its argv, which follows it (same CPU, same probe) but carries no clock. */
type ExecEntry = Extract<TraceEvent, { t: "exec" }> & { args: Buffer[]; more: boolean };
type Timed = Exclude<TimedEvent, { t: "exec" }> | ExecEntry;

export class RunTraceAggregator {
  /** Processes of the program: pid → the first exec id (self_exec_id) whose activity counts. */
  private readonly user = new Map<number, number>();
  /** Kernel open counts, attributed when the summary is made (every fork and exec known by then). */
  private readonly rawOpens: OpenEntry[] = [];
  private readonly pending = new Map<number, PendingExec>();
  private readonly execs = new Map<string, TracedExec>();
  private readonly files = new Map<string, TracedFile>();
  private readonly libs = new Map<string, number>();
  private libCount = 0;
  /** Library opens counted without their path (see TraceSummary.libraries), attributed at the summary. */
  private readonly rawLibCounts: LibCount[] = [];
  private libsCut = false;
  private readonly net = new Map<string, TracedNet>();
  private readonly dns = new Map<string, TracedDns>();
  private dropped = 0;
  /** Warm hand-overs not followed by an exec of the program: each is the program's exec record. */
  private readonly handedOver = new Map<number, TracedExec>();
  private readonly held = new Map<number, (() => void)[]>();
  private heldCount = 0;
  /** Timed events not yet taken in, in the order read (which is not the order they happened). */
  private timeline: Timed[] = [];
  /** Each thread's latest exec entry read, for the argv records that follow it. */
  private readonly lastExec = new Map<number, ExecEntry>();
  /** The clock of the latest event taken in: one older than it arriving later could not be ordered. */
  private appliedUpTo = -Infinity;
  private late = 0;
  /** Exec returns read with no entry before them: a sign events were lost. */
  private orphanReturns = 0;
  /** Opens the probes saw but could not read the arguments of (not counted). */
  private unreadable = 0;
  /** The run's program was seen to start (its exec, tried or done, or a warm hand-over). */
  private programSeen = false;
  lost = 0;

  constructor(private readonly programArgv: string[], private readonly caps: TraceCaps = DEFAULT_CAPS) {}

  private add<T extends { count: number }>(map: Map<string, T>, cap: number, key: string, make: () => T, n = 1): void {
    const e = map.get(key);
    if (e) { e.count += n; return; }
    if (map.size >= cap) { this.dropped++; return; }
    const v = make();
    v.count = n;
    map.set(key, v);
  }

  /** The program's argv as the kernel saw it, cut the way bpftrace cuts it, equals the run's. */
  private isProgram(args: Buffer[]): boolean {
    if (args.length === 0 || args.length > this.programArgv.length) return false;
    if (args.length < this.programArgv.length && args.length < 12) return false;
    return args.every((a, i) => {
      const want = Buffer.from(this.programArgv[i], "utf8");
      return a.equals(want) || (a.length >= STRLEN - 2 && want.subarray(0, a.length).equals(a));
    });
  }

  /**
   * Takes one event in. The kernel hands events over per CPU and bpftrace reads the buffers one
   * after the other, so the order read is not the order they happened: an exec's return can come
   * before its entry (execve moves the task to another CPU), a process's connect before the
   * exec that made it the program. Whether a process is the program's depends on that order, so
   * the timed events are kept and taken in sorted by the kernel's clock when the summary is made
   * (or, for very busy runs, once they are old: TIMELINE_MAX). The argv records carry no clock:
   * they follow their exec entry in its CPU's buffer and join it here.
   */
  push(ev: TraceEvent): void {
    switch (ev.t) {
      case "exec": {
        const e: ExecEntry = { ...ev, args: [], more: false };
        this.lastExec.set(ev.tid, e);
        this.queue(e);
        return;
      }
      case "arg": {
        const e = this.lastExec.get(ev.tid);
        if (e && ev.i === e.args.length) e.args.push(ev.arg);
        return;
      }
      case "more_args": {
        const e = this.lastExec.get(ev.tid);
        if (e) e.more = true;
        return;
      }
      case "fork":
      case "exec_ret":
      case "net":
      case "unix":
      case "dns":
      case "handover":
        this.queue(ev);
        return;
      case "open":
        // One open printed as it happened (an O record); the kernel's counts come without a clock.
        if (ev.ts !== undefined) this.queue(ev as Timed);
        else this.apply(ev);
        return;
      default:
        this.apply(ev);
    }
  }

  private queue(ev: Timed): void {
    if (!(ev.ts > this.appliedUpTo)) {
      // Older than what was already taken in (or without a clock): taken in as it comes.
      this.late++;
      this.apply(ev);
      return;
    }
    this.timeline.push(ev);
    if (this.timeline.length >= TIMELINE_MAX) this.takeIn(REORDER_NS);
  }

  /** Takes in the queued events (those older than `window` ns before the newest), oldest first. */
  private takeIn(window = 0): void {
    if (this.timeline.length === 0) return;
    // Stable: events of one instant keep the order they were read in.
    const sorted = this.timeline.sort((a, b) => a.ts - b.ts);
    let n = sorted.length;
    if (window > 0) {
      const cut = sorted[sorted.length - 1].ts - window;
      n = Math.max(sorted.length >> 1, sorted.findIndex((e) => e.ts >= cut));
    }
    this.timeline = sorted.slice(n);
    for (const ev of sorted.slice(0, n)) {
      this.appliedUpTo = ev.ts;
      this.apply(ev);
    }
  }

  private apply(ev: TraceEvent | ExecEntry): void {
    switch (ev.t) {
      case "fork":
        if (this.user.has(ev.parent)) this.adopt(ev.child);
        else this.hold(ev.parent, () => this.apply(ev));
        return;
      case "exec":
        // The entry's argv array itself: records of it read later still land in it.
        this.pending.set(ev.tid, "args" in ev ? { path: ev.path, uid: ev.uid, args: ev.args, more: ev.more } : { path: ev.path, uid: ev.uid, args: [], more: false });
        return;
      case "arg":
      case "more_args":
        // Only through push (joined to their exec entry there).
        return;
      case "exec_ret": {
        const p = this.pending.get(ev.tid);
        this.pending.delete(ev.tid);
        if (!p) { this.orphanReturns++; return; }
        if (this.isProgram(p.args)) this.programSeen = true;
        // The process: a thread other than the leader that executes a program becomes the leader
        // (its pid is the process's from then on); a failed exec leaves it one thread of the process.
        const proc = ev.pid ?? ev.tid;
        if (!this.user.has(proc)) {
          if (ev.ret !== 0 || !this.isProgram(p.args)) {
            this.hold(proc, () => { this.pending.set(ev.tid, p); this.apply(ev); });
            return;
          }
          this.user.set(proc, (ev.execId ?? 0) * 2);
        }
        // A warm interpreter that went cold after its mark execs the program: that exec is the record.
        if (ev.ret === 0) this.handedOver.delete(proc);
        // A PATH search tries directories until one has the program: those misses are not attempts.
        if (ev.ret === -2) return;
        const argv = p.args.map((a) => a.toString("utf8"));
        const errno = errnoName(ev.ret);
        this.add(this.execs, this.caps.execs, JSON.stringify([p.path.toString("latin1"), argv, errno]), () => ({
          ...displayPath(p.path), argv, argv_truncated: p.more || p.args.some((a) => a.length >= STRLEN - 1), count: 1, errno, pid: proc, uid: p.uid,
        }));
        return;
      }
      case "open_map":
        for (const e of ev.entries) this.apply(e);
        return;
      case "lib_map":
        for (const e of ev.entries) this.apply(e);
        return;
      case "lib_count":
        if (this.rawLibCounts.length < MAX_RAW_OPENS) this.rawLibCounts.push(ev);
        else this.dropped++;
        return;
      case "open": {
        if (ev.execId !== undefined) {
          if (this.rawOpens.length < MAX_RAW_OPENS) this.rawOpens.push(ev as OpenEntry);
          else this.dropped++;
          return;
        }
        if (!this.user.has(ev.pid)) return;
        this.countOpen(ev, 1);
        return;
      }
      case "net":
      case "unix": {
        if (!this.user.has(ev.pid)) { this.hold(ev.pid, () => this.apply(ev)); return; }
        const errno = errnoName(ev.ret);
        const address = ev.t === "net" ? ev.address : displayPath(ev.path).path;
        const port = ev.t === "net" ? ev.port : null;
        const family = ev.t === "net" ? ev.family : "unix";
        this.add(this.net, this.caps.net, JSON.stringify([ev.op, family, address, port, errno]), () => ({ op: ev.op, family, address, port, count: 1, errno, pid: ev.pid }));
        return;
      }
      case "dns": {
        if (!this.user.has(ev.pid)) { this.hold(ev.pid, () => this.apply(ev)); return; }
        const name = ev.name.toString("utf8");
        this.add(this.dns, this.caps.dns, name, () => ({ name, count: 1, pid: ev.pid }));
        return;
      }
      case "handover": {
        // A warm interpreter took over the run (its bootstrap's mark, program.ts): from the mark on,
        // this process is the program, as if it had executed the run's argv then.
        this.programSeen = true;
        if (this.user.has(ev.pid)) return;
        this.user.set(ev.pid, ev.execId * 2 + 1);
        this.handedOver.set(ev.pid, { ...displayPath(ev.path), argv: [...this.programArgv], argv_truncated: false, count: 1, errno: null, pid: ev.pid, uid: ev.uid, warm: true });
        return;
      }
      case "lost":
        this.lost += ev.count;
        return;
      case "unreadable":
        this.unreadable++;
        return;
      default:
        return;
    }
  }

  /**
   * Events of a process not (yet) known as the program's, kept in case it turns out to be: events
   * taken in out of order (late ones, see queue) can put a child's exec before its parent's fork.
   * Replayed when a fork from a process of the program is taken in (everything a child does
   * follows its fork); never for a process that becomes the program by executing it (before that,
   * it was Petri's launcher). Bounded: past HELD_MAX, held events are dropped and counted.
   */
  private hold(pid: number, replay: () => void): void {
    if (this.heldCount >= HELD_MAX) { this.dropped++; return; }
    this.heldCount++;
    const list = this.held.get(pid);
    if (list) list.push(replay);
    else this.held.set(pid, [replay]);
  }

  private adopt(pid: number): void {
    if (this.user.has(pid)) return;
    this.user.set(pid, 0);
    const list = this.held.get(pid);
    if (!list) return;
    this.held.delete(pid);
    this.heldCount -= list.length;
    for (const replay of list) replay();
  }

  private countOpen(ev: Extract<TraceEvent, { t: "open" }>, n: number): void {
    const { access, names } = cachedFlags(ev.flags);
    const errno = errnoName(ev.ret);
    const p = ev.path.toString("latin1");
    if (access === "read" && errno === null && isLibrary(p)) {
      this.libCount += n;
      if (this.libs.size < this.caps.libraryPaths * 50) this.libs.set(p, 1);
      else if (!this.libs.has(p)) this.libsCut = true;
      return;
    }
    this.add(this.files, this.caps.files, `${access}\0${errno}\0${p}`, () => ({ ...displayPath(ev.path), access, flags: names, count: 1, errno, pid: ev.pid }), n);
  }

  /**
   * Why this run's record cannot be trusted to be whole, or null. The program's start is what
   * everything else is attributed from: a run whose start was never seen would be recorded as
   * having done nothing.
   */
  doubt(): string | null {
    this.takeIn();
    if (!this.programSeen) return "the tracer did not see the program start (neither its exec nor a warm hand-over)";
    if (this.unreadable > 0) return `${this.unreadable} opens could not be read (the kernel's saved registers are not where the tracer looks for them): they are not counted`;
    if (this.orphanReturns > 0) return `${this.orphanReturns} exec returns were traced without their exec: trace events were lost`;
    if (this.late > 0) return `${this.late} trace events came too late to be put in order`;
    return null;
  }

  summary(): TraceSummary {
    this.takeIn();
    for (const e of this.handedOver.values()) {
      this.add(this.execs, this.caps.execs, JSON.stringify([e.path, e.argv, null, "warm"]), () => e);
    }
    this.handedOver.clear();
    for (const e of this.rawOpens.splice(0)) {
      const since = this.user.get(e.pid);
      if (since !== undefined && e.execId >= since) this.countOpen(e, e.count);
    }
    for (const e of this.rawLibCounts.splice(0)) {
      const since = this.user.get(e.pid);
      if (since !== undefined && e.execId >= since) { this.libCount += e.count; this.libsCut = true; }
    }
    const libPaths = [...this.libs.keys()];
    return {
      source: "ebpf",
      execs: [...this.execs.values()],
      files: [...this.files.values()],
      libraries: { count: this.libCount, distinct: libPaths.length, paths: libPaths.slice(0, this.caps.libraryPaths), ...(this.libsCut ? { distinct_at_least: true } : {}) },
      net: [...this.net.values()],
      dns: [...this.dns.values()],
      dropped: this.dropped,
      lost_events: this.lost,
    };
  }
}
