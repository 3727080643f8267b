import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { parseTraceLine, type TraceEvent } from "./events.js";
import { BARRIER_BASE, DRAIN_BASE, ID_HI_SPAN, ID_LO_BASE, ID_LO_BITS, REGISTER_BASE, STRLEN, UNREGISTER_BASE, tracerProgram } from "./program.js";
import { DnsCoverage, type Via } from "./dns-coverage.js";
import { RunTraceAggregator, type TraceCaps, type TraceSummary } from "./aggregate.js";

/**
 * The host tracer: one long-lived bpftrace process owned by the server, tracing every run of
 * runc, crun and bwrap (program execs, file opens, connect/bind/sendto attempts, getaddrinfo
 * names) and handing each run its own events, sorted by the run's cgroup. See program.ts for
 * what is traced and how it is scoped, aggregate.ts for what a run's record holds.
 */
/** Entries each open-count map holds (BPFTRACE_MAP_KEYS_MAX); a full map is reported as lost events. */
const MAP_KEYS_MAX = 65_536;
/** While runs are live, the open counts are drained this often (ms), so no map fills up. */
const DRAIN_EVERY_MS = 3000;
const STARTING = "the tracer is compiling its probes";

export interface TracerStatus {
  /** active: tracing; unavailable: this host cannot (reason says why); failed: it could, then stopped. */
  state: "starting" | "active" | "unavailable" | "failed" | "off";
  reason: string | null;
  probes: number;
  /** Events the kernel dropped (ring buffer full) since start. */
  lost_events: number;
  runs_traced: number;
  /** Events of runs this server never registered (another server's): 0 unless scoping broke. */
  foreign_events: number;
}

export interface TracerOptions {
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void; error(o: object, m?: string): void };
  bpftrace?: string;
  /** How long compiling and attaching may take (seconds on an idle host, much more on a busy one). */
  startTimeoutMs?: number;
  /** Directories that may hold a run image's root filesystem, searched for libc (getaddrinfo names). */
  imageRoots?: string[];
  /**
   * The same per image (Docker reference): its root filesystem (bwrap, direct OCI runtimes) and
   * its Docker layers (runc, crun), so each run can say whether its image's libc is probed.
   */
  images?: { ref: string; rootfs: string[]; layers: string[] }[];
  caps?: TraceCaps;
  /** How opens' arguments are had (program.ts, ProgramOptions.opens); by default as the architecture allows. */
  opens?: "exit" | "entry";
  /** How long a run's end waits for its last events, ms. */
  flushTimeoutMs?: number;
}

/** Where the cgroup v2 hierarchy is mounted (hybrid hosts: …/unified), from /proc/self/mountinfo. */
export function cgroup2Mount(mountinfo = safeRead("/proc/self/mountinfo")): string | null {
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep === -1) continue;
    if (line.slice(sep + 3).split(" ")[0] === "cgroup2") return line.split(" ")[4] ?? null;
  }
  return null;
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

const LIBC_PATHS = ["lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libc.so.6", "lib/aarch64-linux-gnu/libc.so.6", "usr/lib/aarch64-linux-gnu/libc.so.6"];

/** Why this host cannot run the tracer, or null when it can (checked before spending a compile). */
export function tracerPrerequisites(bpftrace = "bpftrace"): { ok: true; v2: string } | { ok: false; reason: string } {
  if (process.getuid?.() !== 0) return { ok: false, reason: "the server does not run as root (eBPF tracing needs CAP_BPF and CAP_PERFMON)" };
  const which = spawnSync(bpftrace, ["--version"], { encoding: "utf8", timeout: 10_000 });
  if (which.error || which.status !== 0) return { ok: false, reason: `${bpftrace} is not installed (Debian package bpftrace)` };
  if (!fs.existsSync("/sys/kernel/btf/vmlinux")) return { ok: false, reason: "the kernel has no BTF (/sys/kernel/btf/vmlinux)" };
  if (!fs.existsSync("/sys/kernel/tracing/events/syscalls") && !fs.existsSync("/sys/kernel/debug/tracing/events/syscalls")) {
    return { ok: false, reason: "no syscall tracepoints: tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing) or the kernel lacks CONFIG_FTRACE_SYSCALLS" };
  }
  const v2 = cgroup2Mount();
  if (!v2) return { ok: false, reason: "no cgroup v2 hierarchy is mounted: runs cannot be told apart" };
  return { ok: true, v2 };
}

export interface RunTraceSession {
  /** The runtime calls this with the run's cgroup (relative to the hierarchy roots) before the program starts. */
  attach(cgroupRel: string): void;
  /** Waits for the run's last events and returns what it did; null when the trace failed. */
  finish(): Promise<{ summary: TraceSummary; complete: boolean; reason: string | null }>;
}

export class TracerService {
  private proc: ChildProcess | null = null;
  private readonly runs = new Map<string, RunTraceAggregator>();
  private readonly execOwner = new Map<number, RunTraceAggregator>();
  private readonly barriers = new Map<number, () => void>();
  private barrierSeq = 0;
  private draining: Promise<void> = Promise.resolve();
  private drainTimer: NodeJS.Timeout | null = null;
  private st: TracerStatus = { state: "off", reason: null, probes: 0, lost_events: 0, runs_traced: 0, foreign_events: 0 };
  /** Runs registered lately (bounded), so late events of a finished run are not counted as foreign. */
  private readonly ours = new Set<string>();
  private readonly dns = new DnsCoverage();
  private v2 = "";
  private closing = false;
  private started: Promise<TracerStatus> | null = null;
  /**
   * The signal number of this tracer's commands: an invalid signal (≥ 65), so the kernel never
   * delivers anything, and random, so two servers in one process (tests) do not obey each other.
   */
  private readonly tag = 65 + randomInt(1 << 30);

  constructor(private readonly o: TracerOptions) {}

  status(): TracerStatus {
    return { ...this.st };
  }

  get active(): boolean {
    return this.st.state === "active";
  }

  /** Not started on purpose; the reason is what status() and readiness say. */
  markOff(reason: string): void {
    if (this.st.state === "off") this.st = { ...this.st, reason };
  }

  /** Resolves once start() has attached (or given up); the status of a tracer never started otherwise. */
  ready(): Promise<TracerStatus> {
    return this.started ?? Promise.resolve(this.status());
  }

  /** Starts bpftrace and waits until its probes are attached. Never throws: the status says what happened. */
  start(): Promise<TracerStatus> {
    this.started ??= this.startOnce();
    return this.started;
  }

  private async startOnce(): Promise<TracerStatus> {
    this.st = { ...this.st, state: "starting", reason: STARTING };
    const bin = this.o.bpftrace ?? "bpftrace";
    const pre = tracerPrerequisites(bin);
    if (!pre.ok) {
      this.st = { ...this.st, state: "unavailable", reason: pre.reason };
      return this.status();
    }
    this.v2 = pre.v2;
    const libcsIn = (roots: string[]) => roots.flatMap((root) => LIBC_PATHS.map((p) => path.join(root, p))).filter((f) => fs.existsSync(f));
    for (const im of this.o.images ?? []) {
      this.dns.record(im.ref, "rootfs", libcsIn(im.rootfs));
      this.dns.record(im.ref, "layers", libcsIn(im.layers));
    }
    const libcs = libcsIn([...(this.o.imageRoots ?? []), ...(this.o.images ?? []).flatMap((im) => [...im.rootfs, ...im.layers])]);
    return this.launch(bin, tracerProgram({ serverPid: process.pid, tag: this.tag, opens: this.o.opens, libcs: [...new Set(libcs.map((f) => fs.realpathSync(f)))] }));
  }

  private launch(bin: string, program: string): Promise<TracerStatus> {
    const proc = spawn(bin, ["-B", "line", "-f", "json", "-e", program], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", BPFTRACE_STRLEN: String(STRLEN), BPFTRACE_PERF_RB_PAGES: "1024", BPFTRACE_MAP_KEYS_MAX: String(MAP_KEYS_MAX) },
    });
    this.proc = proc;
    let stderr = "";
    proc.stderr!.setEncoding("utf8");
    proc.stderr!.on("data", (s: string) => { if (stderr.length < 8192) stderr += s; });
    const attached = new Promise<TracerStatus>((resolve) => {
      const timer = setTimeout(() => {
        this.st = { ...this.st, state: "unavailable", reason: `bpftrace did not attach within ${this.o.startTimeoutMs ?? 120_000} ms` };
        proc.kill("SIGKILL");
        resolve(this.status());
      }, this.o.startTimeoutMs ?? 120_000);
      // A drained map is one line of megabytes: its chunks are joined once, when its end comes.
      let parts: Buffer[] = [];
      proc.stdout!.on("data", (chunk: Buffer) => {
        let start = 0;
        let nl: number;
        while ((nl = chunk.indexOf(0x0a, start)) !== -1) {
          parts.push(chunk.subarray(start, nl));
          const line = (parts.length === 1 ? parts[0] : Buffer.concat(parts)).toString("latin1");
          parts = [];
          start = nl + 1;
          const ev = parseTraceLine(line);
          if (!ev) continue;
          if (ev.t === "attached") {
            // bpftrace says so as it begins attaching, not when it is done: the tracer is active
            // once a barrier comes back through the probe on kill(), which is attached last.
            // A run registered before that would be lost for good.
            const probes = ev.probes;
            const poll = setInterval(() => { void this.barrier(1000).then((ok) => {
              if (!ok || this.st.state !== "starting") return;
              clearInterval(poll);
              clearTimeout(timer);
              this.st = { ...this.st, state: "active", reason: null, probes };
              resolve(this.status());
            }); }, 200);
            proc.once("exit", () => clearInterval(poll));
          } else this.dispatch(ev);
        }
        if (start < chunk.length) parts.push(chunk.subarray(start));
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        const why = stderr.split("\n").filter((l) => l && !/RLIMIT_MEMLOCK|available_filter_functions|WARNING|^\s/.test(l)).slice(0, 5).join("; ");
        if (this.closing) {
          // close() already said so
        } else if (this.st.state === "active") {
          this.st = { ...this.st, state: "failed", reason: `bpftrace exited (${signal ?? code})${why ? `: ${why}` : ""}` };
          this.o.log.error({ reason: this.st.reason }, "audit tracer stopped: runs are no longer traced");
        } else {
          // The reason of a timeout stands; "compiling" does not (it was never null while starting).
          const had = this.st.reason !== STARTING ? this.st.reason : null;
          this.st = { ...this.st, state: "unavailable", reason: had ?? `bpftrace could not attach (${signal ?? code})${why ? `: ${why}` : ""}` };
        }
        for (const r of this.barriers.values()) r();
        resolve(this.status());
      });
    });
    return attached;
  }

  private dispatch(ev: TraceEvent): void {
    switch (ev.t) {
      case "barrier":
        this.barriers.get(ev.n)?.();
        return;
      case "lost":
        this.st.lost_events += ev.count;
        for (const a of this.runs.values()) a.push(ev);
        return;
      case "open_map":
        // A full map refused new entries: the runs live meanwhile lost opens, and must say so.
        if (ev.size >= MAP_KEYS_MAX) for (const a of this.runs.values()) a.lost++;
        for (const e of ev.entries) {
          const agg = this.runs.get(e.run);
          if (agg) agg.push(e);
          else if (!this.ours.has(e.run)) this.st.foreign_events++;
        }
        return;
      case "lib_map":
        for (const e of ev.entries) {
          const agg = this.runs.get(e.run);
          if (agg) agg.push(e);
          else if (!this.ours.has(e.run)) this.st.foreign_events++;
        }
        return;
      case "arg":
      case "more_args":
        this.execOwner.get(ev.tid)?.push(ev);
        return;
      case "attached":
        return;
      default: {
        const agg = this.runs.get(ev.run);
        if (!agg) {
          if (!this.ours.has(ev.run)) this.st.foreign_events++;
          return;
        }
        // Kept past the exec's return (forgotten when the run ends): the return can be read before
        // the entry and its argv, which come from another CPU's buffer.
        if (ev.t === "exec") this.execOwner.set(ev.tid, agg);
        agg.push(ev);
      }
    }
  }

  /**
   * Hands the kernel's open counts over: the probes switch to the other map and the one they
   * left is printed and cleared. One at a time (runs ending together queue up); each run's end
   * does it, and a timer every few seconds while runs are live keeps the maps small.
   */
  private drainOpens(timeoutMs: number): Promise<boolean> {
    const next = this.draining.then(() => this.barrier(timeoutMs, DRAIN_BASE));
    this.draining = next.then(() => undefined, () => undefined);
    return next;
  }

  /** A round trip through the kernel: every event emitted before it has been read once it returns. */
  private barrier(timeoutMs: number, base = 0): Promise<boolean> {
    const n = base + (++this.barrierSeq % DRAIN_BASE);
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.barriers.delete(n); resolve(false); }, timeoutMs);
      this.barriers.set(n, () => { clearTimeout(timer); this.barriers.delete(n); resolve(true); });
      try {
        process.kill(-(BARRIER_BASE + n), this.tag);
      } catch { /* ESRCH, as intended: only the tracepoint matters */ }
    });
  }

  /**
   * Tells the probes to follow (or stop following) the run whose cgroup has this id. The probe on
   * kill() runs inside the syscall, so the run is followed once this returns. Only this server's
   * process can do it (the probe checks the caller's pid): a run cannot register or hide itself.
   */
  private scope(id: number, on: boolean): void {
    const lo = id % 2 ** ID_LO_BITS;
    const hi = Math.floor(id / 2 ** ID_LO_BITS);
    if (hi >= ID_HI_SPAN) throw new Error(`cgroup id ${id} is beyond what the tracer can register`);
    // Two calls, one after the other on this one thread: the probe keeps the low half until the high one comes.
    for (const n of [ID_LO_BASE + lo, (on ? REGISTER_BASE : UNREGISTER_BASE) + hi]) {
      try {
        process.kill(-(BARRIER_BASE + n), this.tag);
      } catch { /* ESRCH or EINVAL, as intended: only the tracepoint matters */ }
    }
  }

  /** Starts collecting for one run; `programArgv` is the argv the run executes (before any Petri wrapper). */
  begin(programArgv: string[], opts: { image?: string; via?: Via } = {}): RunTraceSession | null {
    if (!this.active) return null;
    const dnsGap = opts.image && opts.via && this.o.images ? this.dns.gap(opts.image, opts.via) : null;
    const agg = new RunTraceAggregator(programArgv, this.o.caps);
    let key: string | null = null;
    let attachError: string | null = null;
    return {
      attach: (rel) => {
        if (key !== null) return;
        try {
          const dir = path.join(this.v2, rel);
          fs.mkdirSync(dir, { recursive: true });
          const ino = fs.statSync(dir).ino;
          key = String(ino);
          this.runs.set(key, agg);
          this.ours.add(key);
          if (this.ours.size > 10_000) this.ours.delete(this.ours.values().next().value!);
          this.scope(ino, true);
          this.drainTimer ??= setInterval(() => {
            if (this.runs.size === 0 || !this.active) { clearInterval(this.drainTimer!); this.drainTimer = null; return; }
            void this.drainOpens(this.o.flushTimeoutMs ?? 5000);
          }, DRAIN_EVERY_MS).unref();
        } catch (e) {
          attachError = `cannot watch the run's cgroup: ${(e as Error).message}`;
        }
      },
      finish: async () => {
        let complete = key !== null && this.active;
        let reason = attachError ?? (key === null ? "the runtime did not report the run's cgroup" : this.active ? null : this.st.reason);
        if (key !== null && this.active) {
          const t = this.o.flushTimeoutMs ?? 5000;
          // The drain is the second barrier: events of other CPUs' buffers may be read just after the first.
          const ok = (await this.barrier(t)) && (await this.drainOpens(t));
          if (!ok) { complete = false; reason = "the tracer did not catch up with the run's end in time"; }
        }
        if (key !== null) {
          this.runs.delete(key);
          if (this.active) this.scope(Number(key), false);
        }
        for (const [tid, a] of this.execOwner) if (a === agg) this.execOwner.delete(tid);
        // Fail closed: a record the events cannot vouch for is not called complete.
        const doubt = key !== null ? agg.doubt() : null;
        if (doubt && complete) { complete = false; reason ??= doubt; }
        const summary = agg.summary();
        if (dnsGap && complete) { complete = false; reason ??= dnsGap; }
        if (summary.lost_events > 0) {
          complete = false;
          reason ??= `the kernel dropped ${summary.lost_events} trace events while this run was live`;
        }
        this.st.runs_traced++;
        return { summary, complete, reason };
      },
    };
  }

  /**
   * Stops bpftrace. Detaching its probes takes the kernel seconds on a busy host; nothing waits
   * for that beyond a second: the process has been told to go and no run is traced any more.
   */
  async close(): Promise<void> {
    this.closing = true;
    if (this.drainTimer) clearInterval(this.drainTimer);
    const p = this.proc;
    this.st = { ...this.st, state: "off", reason: "closed" };
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once("exit", () => resolve()));
    const kill = setTimeout(() => p.kill("SIGKILL"), 10_000);
    kill.unref();
    void exited.then(() => clearTimeout(kill));
    p.kill("SIGTERM");
    await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 1000).unref())]);
    p.unref();
    (p.stdout as { unref?: () => void } | null)?.unref?.();
    (p.stderr as { unref?: () => void } | null)?.unref?.();
  }
}
