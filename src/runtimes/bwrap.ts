import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { readNumber } from "./cgroups.js";
import { LABEL_WARM } from "./launcher.js";
import { UnitPool } from "./unit-pool.js";
import { RunOutput, armTimeLimit, connectRun, endRun, feedStdin, readFrames, type ChildUnit } from "./run-io.js";
import { passOverWhileImporting, unitPlan } from "./warm.js";
import { EngineLostError, signalFromExitCode, type RunLimits, type RunResult, type RunSpec, type Runtime } from "./types.js";

/**
 * BwrapRuntime: each run is a bubblewrap sandbox (new user/pid/net/ipc/uts/mount/cgroup
 * namespaces, the image's root filesystem read-only, a seccomp deny-list) inside its own
 * cgroup. No daemon, so a run costs a few milliseconds over the bare interpreter.
 *
 * How one run is started (all pids stay the same through the execs):
 *
 *   node ─spawn→ sh          sets RLIMIT_NOFILE / RLIMIT_FSIZE / RLIMIT_CORE=0 (its own ulimit;
 *                            prlimit only for a file size that is not whole 512-byte blocks) and
 *                            writes its own pid into the run's cgroup(s): everything it execs or
 *                            forks is born inside the cgroup, so there is no window in which a
 *                            fork escapes the limits
 *        ─exec→  setpriv     drops to the sandbox uid/gid with no supplementary groups, so the
 *                            user namespace bwrap creates maps the sandbox uid to the *same* host
 *                            uid (files written to the workspace belong to it, and root-owned host
 *                            files stay root-owned to it). Running bwrap as root would map the
 *                            sandbox user onto host root.
 *        ─exec→  bwrap       namespaces, mounts, --disable-userns, seccomp, no capabilities,
 *                            no_new_privs; pid 1 of the new pid namespace is bwrap's reaper.
 *
 * Killing: SIGKILL to the outer bwrap takes down the namespace's pid 1 (--die-with-parent sets
 * PDEATHSIG), and the kernel then kills every process of the pid namespace. The cgroup is swept
 * as well (cgroup.kill on v2, kill-every-pid on v1) so nothing survives the run.
 */


/** bwrap's own processes (outer monitor + pid 1 of the namespace) count against pids.max. */
const BWRAP_OWN_PIDS = 2;
const CPU_PERIOD_US = 100_000;
const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The entry script: open files and file size (512-byte blocks: POSIX `ulimit -f`, dash and bash
// as sh alike) to set, soft and hard, with no core dumps; then arguments up to "--" are
// cgroup.procs files to join; the rest is exec'd. The shell's own ulimit spares an exec of
// prlimit on every run.
const ENTER_SCRIPT = 'n=$1 f=$2; shift 2; ulimit -n "$n" && ulimit -f "$f" && ulimit -c 0 || exit 126; ' +
  'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"';

// ---------------------------------------------------------------------------------------------
// cgroups (v1, v2 and hybrid)
// ---------------------------------------------------------------------------------------------

export type CgroupRole = "memory" | "pids" | "cpu" | "cpuacct";

export interface CgroupHierarchy {
  version: 1 | 2;
  /** Where the hierarchy is mounted. */
  mount: string;
  /** Controllers this hierarchy offers (v1: bound to the mount; v2: cgroup.controllers). */
  controllers: string[];
}

export interface CgroupPlan {
  /** Hierarchies a run's cgroup is created in, each with the roles it serves. */
  hierarchies: Array<CgroupHierarchy & { roles: CgroupRole[] }>;
  /** Roles no hierarchy can serve. memory and pids are required for a run to be contained. */
  missing: CgroupRole[];
}

/**
 * Finds the cgroup hierarchies from /proc/self/mountinfo. A pure function of its inputs so the
 * hybrid/v1/v2 layouts can be tested without the host having them.
 */
export function parseCgroupMounts(mountinfo: string, readV2Controllers: (mount: string) => string[]): CgroupHierarchy[] {
  const out: CgroupHierarchy[] = [];
  const seen = new Set<string>();
  for (const line of mountinfo.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const [fstype, , superOpts = ""] = line.slice(sep + 3).split(" ");
    const devId = pre[2];
    const mount = (pre[4] ?? "").replace(/\\040/g, " ");
    if (!mount || seen.has(devId)) continue;
    if (fstype === "cgroup") {
      const controllers = superOpts.split(",").filter((o) => o !== "rw" && o !== "ro" && !o.includes("="));
      if (controllers.length === 0) continue;
      seen.add(devId);
      out.push({ version: 1, mount, controllers });
    } else if (fstype === "cgroup2") {
      seen.add(devId);
      out.push({ version: 2, mount, controllers: readV2Controllers(mount) });
    }
  }
  return out;
}

/**
 * Decides where each role lives. v1 wins for a controller bound to a v1 hierarchy (on a hybrid
 * host the v2 mount usually holds nothing we need); CPU accounting on v2 comes with cpu.stat in
 * every cgroup, controller or not.
 */
export function planCgroups(hierarchies: CgroupHierarchy[]): CgroupPlan {
  const roles: CgroupRole[] = ["memory", "pids", "cpu", "cpuacct"];
  const byMount = new Map<string, CgroupHierarchy & { roles: CgroupRole[] }>();
  const missing: CgroupRole[] = [];
  const v2 = hierarchies.find((h) => h.version === 2);
  for (const role of roles) {
    let h: CgroupHierarchy | undefined = hierarchies.find((x) => x.version === 1 && x.controllers.includes(role));
    if (!h && v2 && (role === "cpuacct" || v2.controllers.includes(role))) h = v2;
    if (!h) { missing.push(role); continue; }
    const entry = byMount.get(h.mount) ?? { ...h, roles: [] };
    entry.roles.push(role);
    byMount.set(h.mount, entry);
  }
  // The run also joins the v2 hierarchy when it has none of its roles (hybrid hosts): its v2
  // cgroup is how the audit tracer tells this run's processes from every other's.
  if (v2 && !byMount.has(v2.mount)) byMount.set(v2.mount, { ...v2, roles: [] });
  return { hierarchies: [...byMount.values()], missing };
}

function readKey(file: string, key: string): number | null {
  try {
    const m = new RegExp(`^${key} (\\d+)$`, "m").exec(fs.readFileSync(file, "utf8"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

function writeIfPresent(file: string, value: string): void {
  try {
    fs.writeFileSync(file, value);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

function pidsIn(dir: string): number[] {
  try {
    return fs.readFileSync(path.join(dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try { process.kill(pid, "SIGKILL"); } catch { /* already gone */ }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One run's cgroup, created in every hierarchy of the plan. */
export class RunCgroup {
  private constructor(private readonly dirs: Array<{ dir: string; version: 1 | 2; roles: CgroupRole[] }>) {}

  /**
   * Creates the cgroup and writes the limits. Throws (and removes what it made) on failure.
   * `ownPids`: helper processes of the runtime inside the cgroup, added to the pids limit.
   */
  static create(plan: CgroupPlan, parent: string, name: string, limits: RunLimits, ownPids = BWRAP_OWN_PIDS): RunCgroup {
    const cg = new RunCgroup(plan.hierarchies.map((h) => ({ dir: path.join(h.mount, parent, name), version: h.version, roles: h.roles })));
    try {
      for (const d of cg.dirs) {
        fs.mkdirSync(d.dir);
        if (d.version === 1) writeV1Limits(d.dir, d.roles, limits, ownPids);
        else writeV2Limits(d.dir, d.roles, limits, ownPids);
      }
    } catch (e) {
      cg.removeNow();
      throw e;
    }
    return cg;
  }

  /** Re-attaches to a cgroup found on disk (reaping leftovers of a crashed process). */
  static existing(plan: CgroupPlan, rel: string): RunCgroup {
    return new RunCgroup(plan.hierarchies.map((h) => ({ dir: path.join(h.mount, rel), version: h.version, roles: h.roles })));
  }

  get procsFiles(): string[] {
    return this.dirs.map((d) => path.join(d.dir, "cgroup.procs"));
  }

  pids(): number[] {
    const all = new Set<number>();
    for (const d of this.dirs) for (const p of pidsIn(d.dir)) all.add(p);
    return [...all];
  }

  /** Kills every process in the cgroup and waits (bounded) until it is empty. */
  async killAll(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (let round = 0; ; round++) {
      const pids = this.pids();
      if (pids.length === 0) return true;
      if (Date.now() > deadline) return false;
      for (const d of this.dirs) if (d.version === 2) writeIfPresent(path.join(d.dir, "cgroup.kill"), "1");
      killPids(pids);
      await sleep(round < 10 ? 2 : 20);
    }
  }

  usage(): { peakMemoryBytes: number | null; cpuTimeMs: number | null; oomKills: number | null } {
    let peakMemoryBytes: number | null = null;
    let cpuTimeMs: number | null = null;
    let oomKills: number | null = null;
    for (const d of this.dirs) {
      if (d.version === 1) {
        if (d.roles.includes("memory")) {
          peakMemoryBytes = readNumber(path.join(d.dir, "memory.max_usage_in_bytes"));
          oomKills = readKey(path.join(d.dir, "memory.oom_control"), "oom_kill");
        }
        if (d.roles.includes("cpuacct")) {
          const ns = readNumber(path.join(d.dir, "cpuacct.usage"));
          if (ns !== null) cpuTimeMs = Math.round(ns / 1e6);
        }
      } else {
        if (d.roles.includes("memory")) {
          peakMemoryBytes = readNumber(path.join(d.dir, "memory.peak"));
          oomKills = readKey(path.join(d.dir, "memory.events"), "oom_kill");
        }
        if (d.roles.includes("cpuacct")) {
          const us = readKey(path.join(d.dir, "cpu.stat"), "usage_usec");
          if (us !== null) cpuTimeMs = Math.round(us / 1000);
        }
      }
    }
    return { peakMemoryBytes, cpuTimeMs, oomKills };
  }

  /** Removes the cgroup; retries briefly since the last exits can lag behind the reaped bwrap. */
  async remove(): Promise<boolean> {
    for (let i = 0; i < 50; i++) {
      if (this.removeNow()) return true;
      await sleep(i < 10 ? 2 : 20);
    }
    return false;
  }

  private removeNow(): boolean {
    let ok = true;
    for (const d of this.dirs) {
      try {
        fs.rmdirSync(d.dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") ok = false;
      }
    }
    return ok;
  }
}

function writeV1Limits(dir: string, roles: CgroupRole[], limits: RunLimits, ownPids: number): void {
  if (roles.includes("memory")) {
    fs.writeFileSync(path.join(dir, "memory.limit_in_bytes"), String(limits.memoryBytes));
    // memsw = memory + swap; equal to the memory limit means no swap. Absent without swap accounting.
    writeIfPresent(path.join(dir, "memory.memsw.limit_in_bytes"), String(limits.memoryBytes));
    writeIfPresent(path.join(dir, "memory.swappiness"), "0");
  }
  if (roles.includes("pids")) fs.writeFileSync(path.join(dir, "pids.max"), String(limits.pids + ownPids));
  if (roles.includes("cpu")) {
    fs.writeFileSync(path.join(dir, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
    fs.writeFileSync(path.join(dir, "cpu.cfs_quota_us"), String(cpuQuotaUs(limits.cpus)));
  }
}

function writeV2Limits(dir: string, roles: CgroupRole[], limits: RunLimits, ownPids: number): void {
  if (roles.includes("memory")) {
    fs.writeFileSync(path.join(dir, "memory.max"), String(limits.memoryBytes));
    writeIfPresent(path.join(dir, "memory.swap.max"), "0");
  }
  if (roles.includes("pids")) fs.writeFileSync(path.join(dir, "pids.max"), String(limits.pids + ownPids));
  if (roles.includes("cpu")) fs.writeFileSync(path.join(dir, "cpu.max"), `${cpuQuotaUs(limits.cpus)} ${CPU_PERIOD_US}`);
}

function cpuQuotaUs(cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
}

/**
 * Creates the parent cgroup in every hierarchy; on v2 also delegates the controllers to it
 * (subtree_control of the root and of the parent), which v2 needs before a child can use them.
 */
export function prepareCgroupParent(plan: CgroupPlan, parent: string): void {
  for (const h of plan.hierarchies) {
    const dir = path.join(h.mount, parent);
    fs.mkdirSync(dir, { recursive: true });
    if (h.version !== 2) continue;
    const want = h.roles.filter((r) => r !== "cpuacct").map((r) => `+${r}`);
    if (want.length === 0) continue;
    // Enable from the top down: each level can only hand on what its parent enabled.
    const parts = parent.split("/").filter(Boolean);
    let cur = h.mount;
    for (const part of parts) {
      fs.writeFileSync(path.join(cur, "cgroup.subtree_control"), want.join(" "));
      cur = path.join(cur, part);
    }
    fs.writeFileSync(path.join(cur, "cgroup.subtree_control"), want.join(" "));
  }
}

/** The host's cgroup plan, read from /proc/self/mountinfo. */
export function hostCgroupPlan(): CgroupPlan {
  let mountinfo = "";
  try {
    mountinfo = fs.readFileSync("/proc/self/mountinfo", "utf8");
  } catch { /* no procfs: no cgroups */ }
  return planCgroups(parseCgroupMounts(mountinfo, (m) => {
    try {
      return fs.readFileSync(path.join(m, "cgroup.controllers"), "utf8").trim().split(/\s+/).filter(Boolean);
    } catch {
      return [];
    }
  }));
}

// ---------------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------------

/**
 * Syscalls the sandbox gets EPERM for: the kernel-attack-surface part of Docker's default
 * profile (keyrings, bpf, perf, io_uring, userfaultfd, module/kexec, mount API, namespaces,
 * clock/swap/reboot). Unprivileged user namespaces expose these to the sandbox otherwise.
 */
const DENIED_SYSCALLS: Record<string, { arch: number; nrs: number[] }> = {
  x64: {
    arch: 0xc000003e, // AUDIT_ARCH_X86_64
    nrs: [
      163, 248, 321, 305, 227, 174, 176, 313, 175, 177, 178, 320, 246, 250, 249, 212, 165, 166, 429, 428, 430, 431,
      432, 433, 442, 155, 303, 304, 180, 298, 179, 443, 169, 308, 272, 164, 167, 168, 139, 156, 134, 323, 136, 172,
      173, 103, 425, 426, 427, 312,
    ],
  },
  arm64: {
    arch: 0xc00000b7, // AUDIT_ARCH_AARCH64
    nrs: [
      89, 217, 280, 266, 112, 106, 273, 105, 294, 104, 219, 218, 18, 40, 39, 429, 428, 430, 431, 432, 433, 442, 41,
      264, 265, 42, 241, 60, 443, 142, 268, 97, 170, 224, 225, 282, 116, 425, 426, 427, 272,
    ],
  },
};

/**
 * A classic-BPF seccomp program (struct sock_filter[]) as bwrap's --seccomp expects it. Foreign
 * architectures (e.g. 32-bit int 0x80 on x86_64) are killed, x32 syscalls refused. Returns null
 * on an architecture we have no table for.
 */
export function seccompProgram(arch: string = process.arch): Buffer | null {
  const t = DENIED_SYSCALLS[arch];
  if (!t) return null;
  const LD_W_ABS = 0x20, JEQ_K = 0x15, JGE_K = 0x35, RET_K = 0x06;
  const ALLOW = 0x7fff0000, KILL_PROCESS = 0x80000000, ERRNO_EPERM = 0x00050000 | 1;
  const ins: Array<[number, number, number, number]> = [
    [LD_W_ABS, 0, 0, 4], // seccomp_data.arch
    [JEQ_K, 1, 0, t.arch],
    [RET_K, 0, 0, KILL_PROCESS],
    [LD_W_ABS, 0, 0, 0], // seccomp_data.nr
  ];
  if (arch === "x64") ins.push([JGE_K, 0, 1, 0x40000000], [RET_K, 0, 0, ERRNO_EPERM]);
  for (const nr of t.nrs) ins.push([JEQ_K, 0, 1, nr], [RET_K, 0, 0, ERRNO_EPERM]);
  ins.push([RET_K, 0, 0, ALLOW]);
  const buf = Buffer.alloc(ins.length * 8);
  ins.forEach(([code, jt, jf, k], i) => {
    buf.writeUInt16LE(code, i * 8);
    buf.writeUInt8(jt, i * 8 + 2);
    buf.writeUInt8(jf, i * 8 + 3);
    buf.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return buf;
}

// ---------------------------------------------------------------------------------------------
// the runtime
// ---------------------------------------------------------------------------------------------

export interface BwrapRuntimeOptions {
  /** Defaults to /usr/bin/bwrap. */
  bwrapPath?: string;
  /** Parent cgroup (relative to each hierarchy's root) under which every run gets its own. */
  cgroupParent?: string;
  /**
   * Pre-started single-use sandboxes, as for DockerRuntime: after a run one sandbox of the same
   * shape is started, blocked in the launcher, kept for `idleMs`, used once.
   */
  warm?: { idleMs: number; images: Set<string> };
  /**
   * Run with rlimits only when the host offers no usable memory+pids cgroups. Off by default:
   * without cgroups a memory hog or fork bomb is not contained.
   */
  allowWithoutCgroups?: boolean;
  /** Hierarchies to use instead of the host's (tests). */
  cgroupPlan?: CgroupPlan;
}

/** Thrown when the sandbox could not be set up (nothing of the user's code ran). */
export class BwrapSetupError extends Error {
  override name = "BwrapSetupError";
}

interface LiveRun {
  labels: Record<string, string>;
  kill: () => void;
  done: Promise<unknown>;
}

/** A spawned sandbox, before and during the run it serves. */
interface Started extends ChildUnit {
  runName: string;
  cg: RunCgroup | null;
  /** bwrap's --json-status-fd output. */
  status: string;
  killTree: () => void;
}

let runSeq = 0;

function labelsMatch(have: Record<string, string>, want: Record<string, string>): boolean {
  return Object.entries(want).every(([k, v]) => have[k] === v);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class BwrapRuntime implements Runtime {
  readonly name = "bwrap";
  private readonly bwrap: string;
  private readonly cgroupParent: string;
  private readonly plan: CgroupPlan;
  private readonly useCgroups: boolean;
  private parentReady = false;
  private readonly live = new Map<string, LiveRun>();
  private readonly seccomp = seccompProgram();
  private readonly rootEntries = new Map<string, fs.Dirent[]>();
  private readonly pool: UnitPool<Started>;

  constructor(opts: BwrapRuntimeOptions = {}) {
    this.bwrap = opts.bwrapPath ?? "/usr/bin/bwrap";
    this.cgroupParent = opts.cgroupParent ?? "petri-bwrap";
    this.plan = opts.cgroupPlan ?? hostCgroupPlan();
    const contained = !this.plan.missing.includes("memory") && !this.plan.missing.includes("pids");
    if (!contained && !opts.allowWithoutCgroups) {
      throw new Error(`bwrap runtime needs the memory and pids cgroup controllers; missing: ${this.plan.missing.join(", ")}`);
    }
    this.useCgroups = contained;
    this.pool = new UnitPool<Started>(opts.warm, {
      alive: (st) => st.proc.exitCode === null && st.proc.signalCode === null,
      discard: (st) => void this.finish(st),
      importing: (st) => st.frame?.phase === "importing",
      starting: (st) => st.frame !== undefined && st.frame.phase !== "ready",
    });
  }

  /** Where the limits come from, for logs and `petri doctor`. */
  get variant(): string {
    if (!this.useCgroups) return "rlimits-only";
    const versions = new Set(this.plan.hierarchies.map((h) => h.version));
    return versions.size > 1 ? "cgroup-hybrid" : `cgroup-v${[...versions][0]}`;
  }

  private makeCgroup(spec: RunSpec, runName: string): RunCgroup | null {
    if (!this.useCgroups) return null;
    if (!this.parentReady) {
      prepareCgroupParent(this.plan, this.cgroupParent);
      this.parentReady = true;
    }
    try {
      return RunCgroup.create(this.plan, this.cgroupParent, runName, spec.limits);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      // Someone removed our parent cgroup (e.g. a host cleanup): make it again, once.
      prepareCgroupParent(this.plan, this.cgroupParent);
      return RunCgroup.create(this.plan, this.cgroupParent, runName, spec.limits);
    }
  }

  /**
   * Spawns the sandbox for `spec`. A warm one runs the launcher with stdin open, waiting for
   * the argv of the run it will serve (see launcher.ts); limits, mounts and user are already set.
   */
  private start(spec: RunSpec, warm: boolean): Started {
    const t0 = performance.now();
    const runName = `r-${process.pid}-${(runSeq++).toString(36)}-${randomBytes(3).toString("hex")}`;
    const cg = this.makeCgroup(spec, runName);
    // Before the spawn: the tracer follows only registered cgroups, and the program may exec at once.
    if (cg && !warm) spec.tracer?.attach(`${this.cgroupParent}/${runName}`);
    const created = performance.now() - t0;
    const labels = { ...spec.labels };
    if (warm) {
      for (const k of Object.keys(labels)) if (k.endsWith(".exec")) delete labels[k];
      labels[LABEL_WARM] = "true";
    }
    const st: Started = {
      runName, cg, warm, labels, proc: undefined as unknown as ChildProcess, exited: undefined as never, outputDone: undefined as never,
      sink: { out: () => undefined, err: () => undefined }, status: "", done: undefined as never, markDone: () => undefined,
      killed: false, onKill: () => undefined, timings: { cgroup: created },
      killTree: () => {
        try { st.proc?.kill("SIGKILL"); } catch { /* gone */ }
        if (cg) void cg.killAll(1000);
      },
    };
    st.done = new Promise<void>((r) => { st.markDone = r; });
    try {
      const wantsStdin = warm || spec.stdin !== undefined || spec.stdinStream !== undefined;
      const stdio: StdioOptions = [wantsStdin ? "pipe" : "ignore", "pipe", "pipe", "pipe", this.seccomp ? "pipe" : "ignore"];
      if (warm) st.plan = unitPlan(spec, { interpreters: true });
      readFrames(st);
      const inner = st.plan ? { ...spec, argv: st.plan.argv, env: st.plan.env, cwd: st.plan.startCwd } : spec;
      // A file size that is not whole 512-byte blocks is set exactly by prlimit after the shell's
      // (rounded down) one.
      const fsize = spec.limits.fileSizeBytes;
      const exact = fsize % 512 === 0 ? [] : ["prlimit", `--fsize=${fsize}`, "--"];
      const args = [
        "-c", ENTER_SCRIPT, "petri-enter", String(spec.limits.openFiles), String(Math.floor(fsize / 512)), ...(cg?.procsFiles ?? []), "--",
        ...exact,
        "setpriv", `--reuid=${spec.uid}`, `--regid=${spec.gid}`, "--clear-groups", "--",
        this.bwrap, ...this.bwrapArgs(inner), "--", ...inner.argv,
      ];
      const proc = spawn("/bin/sh", args, { stdio, env: { PATH: HOST_PATH } });
      st.proc = proc;
      st.exited = new Promise((resolve, reject) => {
        proc.once("exit", (code, signal) => resolve({ code, signal }));
        proc.once("error", reject);
      });
      st.exited.catch(() => undefined);
      st.outputDone = new Promise<void>((resolve) => proc.once("close", () => resolve()));
      proc.stdout!.on("data", (b: Buffer) => st.sink.out(b));
      proc.stderr!.on("data", (b: Buffer) => st.sink.err(b));
      const statusPipe = proc.stdio[3] as Readable;
      statusPipe.setEncoding("utf8");
      statusPipe.on("data", (x: string) => { st.status += x; });
      // bwrap may die before reading the filter (setup failure): that error is reported from its stderr.
      statusPipe.on("error", () => undefined);
      if (this.seccomp) (proc.stdio[4] as Writable).on("error", () => undefined).end(this.seccomp);
      proc.stdin?.on("error", () => undefined); // EPIPE when the program exits without reading
    } catch (e) {
      if (cg) void cg.killAll().then(() => cg.remove());
      throw e;
    }
    st.timings.spawn = performance.now() - t0;
    // A reaped run ends like an aborted one: the result says killed.
    this.live.set(runName, { labels: st.labels, kill: () => st.onKill(), done: st.done });
    st.onKill = () => { st.killed = true; st.killTree(); };
    return st;
  }

  /** Removes a sandbox that was never used, or is done: kill, sweep the cgroup, forget it. */
  private async finish(st: Started): Promise<void> {
    this.pool.release(st);
    if (st.proc && st.proc.exitCode === null && st.proc.signalCode === null) st.killTree();
    if (st.cg) {
      await st.cg.killAll();
      await st.cg.remove();
    }
    this.live.delete(st.runName);
    st.markDone();
  }

  wantsPrestartAfter(spec: RunSpec): boolean {
    return this.pool.wantsAfter(spec);
  }

  prestart(spec: RunSpec): void {
    this.pool.prestart(spec, (next) => this.startUnit(next));
  }

  /** Keeps one pre-started sandbox of this shape ready for `idleMs`. */
  private replenish(spec: RunSpec): void {
    this.pool.replenish(spec, (next) => this.startUnit(next));
  }

  private startUnit(spec: RunSpec): Started {
    const st = this.start(spec, true);
    // A pre-started sandbox that dies on its own (setup failure) is simply dropped.
    void st.exited.then(() => { if (this.pool.release(st)) void this.finish(st); }, () => undefined);
    st.onKill = () => {
      this.pool.release(st);
      st.killed = true;
      st.killTree();
      void this.finish(st);
    };
    return st;
  }

  /** The pre-started sandbox for this run, now the run's (its labels, its kill), or the reason it was passed over. */
  private take(spec: RunSpec): { st?: Started; passedOver?: string } {
    const { unit: st, passedOver } = this.pool.take(spec, (u) => (u.plan ? passOverWhileImporting(u.plan, u.frame, spec) : null));
    if (!st) return { passedOver };
    st.labels = spec.labels;
    this.live.set(st.runName, { labels: spec.labels, kill: () => st.onKill(), done: st.done });
    st.onKill = () => { st.killed = true; st.killTree(); };
    return { st };
  }

  /** Pre-started sandboxes waiting, and how often a run found one (metrics). */
  prestartSettled(): Promise<void> {
    return this.pool.settled();
  }

  prestartStats(): ReturnType<UnitPool<Started>["stats"]> {
    return this.pool.stats();
  }

  noPrestartFor(sandboxId: string): () => void {
    return this.pool.gate.quietFor(sandboxId);
  }

  async run(spec: RunSpec): Promise<RunResult> {
    return this.pool.gate.track(() => this.runOnce(spec), spec);
  }

  private async runOnce(spec: RunSpec): Promise<RunResult> {
    const t0 = performance.now();
    if (!spec.rootfs) throw new BwrapSetupError(`no root filesystem for image ${spec.image}: build it with \`petri images build\``);
    if (spec.uid === 0 || spec.gid === 0) throw new BwrapSetupError("the bwrap runtime does not run code as root (uid/gid 0)");

    const taken = this.take(spec);
    const st = taken.st ?? this.start(spec, false);
    // A pre-started unit is followed from its hand-over on (a cold one since before its spawn):
    // what it did before, the interpreter's start and imports, was Petri's, not the run's.
    if (st.cg) spec.tracer?.attach(`${this.cgroupParent}/${st.runName}`);
    const timings = st.timings;
    if (st.warm) timings.warm = 1;
    const output = new RunOutput(spec);
    let timedOut = false;
    let timer: { clear: () => void } | undefined;
    const onAbort = () => st.onKill();
    const frame = st.frame;

    let result: RunResult;
    try {
      // A pre-started unit's own start (and a warm interpreter's imports) is not the run's CPU time.
      let cpuBefore = st.warm ? st.cg?.usage().cpuTimeMs ?? null : null;
      connectRun(st, spec, output, (b) => st.proc.stdin!.write(b));
      if (st.proc.stdin) void feedStdin(st.proc.stdin, spec);
      const startedAt = performance.now();
      timings.handover = startedAt - t0;
      // The next run of this shape will find a sandbox already started.
      if (spec.prestart !== false) this.replenish(spec);

      timer = armTimeLimit(frame, spec.timeoutMs, () => { timedOut = true; st.killTree(); }, () => { cpuBefore = st.cg?.usage().cpuTimeMs ?? null; });
      if (spec.signal) {
        if (spec.signal.aborted) onAbort();
        else spec.signal.addEventListener("abort", onAbort, { once: true });
      }

      const { code, signal: exitSignal } = await st.exited;
      const finishedAt = performance.now();
      timer?.clear();
      timings.wait = finishedAt - t0;
      // pid 1 of the namespace is gone, so the kernel is killing the rest; make sure of it.
      if (st.cg) await st.cg.killAll();
      await Promise.race([st.outputDone, sleep(2000)]);
      const fallback = endRun(frame, timings, taken.passedOver);

      const killed = st.killed;
      const status = parseStatus(st.status);
      const errText = output.stderr.toBuffer().toString("utf8").trim();
      if (!exitSignal && !timedOut && !killed) {
        if (status.childPid === undefined) {
          throw new BwrapSetupError(`sandbox setup failed (exit ${code}): ${errText || "no message"}`);
        }
        // No exit-code report: bwrap failed in the sandbox before the program ran (mount, chdir, exec).
        if (status.exitCode === undefined) throw new BwrapSetupError(withHint(errText || `bwrap exited with ${code}`));
      }
      const exitCode = exitSignal ? null : (status.exitCode ?? code ?? null);
      const sigFromCode = signalFromExitCode(exitCode);
      const usage = st.cg?.usage() ?? { peakMemoryBytes: null, cpuTimeMs: null, oomKills: null };
      if (usage.cpuTimeMs !== null && cpuBefore !== null) usage.cpuTimeMs = Math.max(0, usage.cpuTimeMs - cpuBefore);
      // The outer bwrap (the sandbox's helper) is outside the program's pid namespace, so the
      // program cannot signal it: a signal death of it that Petri did not cause (timeout,
      // cancel) nor the OOM killer came from outside, and is not the program's exit.
      if (exitSignal && !timedOut && !killed && !((usage.oomKills ?? 0) > 0)) {
        throw new EngineLostError(`the sandbox's bwrap helper was killed (${exitSignal}) from outside Petri; the program did not finish on its own`);
      }
      result = {
        exitCode: exitSignal || sigFromCode ? null : exitCode,
        signal: exitSignal ?? sigFromCode,
        timedOut,
        oomKilled: (usage.oomKills ?? 0) > 0,
        killed: killed && !timedOut,
        ...output.fields(),
        durationMs: Math.round(finishedAt - startedAt),
        cpuTimeMs: usage.cpuTimeMs,
        peakMemoryBytes: usage.peakMemoryBytes,
        timings,
        ...fallback,
      };
    } finally {
      timer?.clear();
      spec.signal?.removeEventListener("abort", onAbort);
      const tr = performance.now();
      await this.finish(st);
      timings.cleanup = performance.now() - tr;
    }
    return result;
  }

  private bwrapArgs(spec: RunSpec): string[] {
    const a: string[] = [
      "--unshare-all", "--unshare-user", "--disable-userns",
      "--die-with-parent", "--new-session",
      "--uid", String(spec.uid), "--gid", String(spec.gid),
      "--hostname", "sandbox",
      "--cap-drop", "ALL",
    ];
    const shadow = this.shadowDirs(spec);
    a.push(...this.rootArgs(spec, shadow));
    // /dev is a tmpfs owned by the sandbox user: make it read-only, with its own sized /dev/shm.
    const size = String(spec.limits.tmpfsBytes);
    a.push("--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev", "--size", size, "--tmpfs", "/tmp");
    for (const m of spec.mounts) a.push(m.readonly ? "--ro-bind" : "--bind", m.source, m.target);
    // Each tmpfs made for mount points is its own mount: every one is made read-only.
    for (const dir of shadow) a.push("--remount-ro", dir);
    a.push("--clearenv");
    for (const [k, v] of Object.entries(spec.env)) a.push("--setenv", k, v);
    a.push("--chdir", spec.cwd, "--json-status-fd", "3");
    if (this.seccomp) a.push("--seccomp", "4");
    return a;
  }

  /**
   * Image directories that must become a tmpfs so that missing mount points can be created: for
   * each missing target, the deepest directory of the image on the way down to it (e.g. /petri
   * for /petri/snippet when the image has an empty /petri; "/" only when the target's first
   * component is missing). Empty when every target exists.
   */
  private shadowDirs(spec: RunSpec): Set<string> {
    const rootfs = spec.rootfs!;
    const shadow = new Set<string>();
    for (const m of spec.mounts) {
      if (fs.existsSync(path.join(rootfs, m.target))) continue;
      const parts = m.target.split("/").filter(Boolean);
      let deepest = "/";
      // Down to the target's parent: below the first component the image lacks (or that is not
      // a directory there), bwrap creates the directories itself inside the tmpfs above it.
      for (let i = 1; i < parts.length; i++) {
        const dir = "/" + parts.slice(0, i).join("/");
        let st: fs.Stats;
        try { st = fs.lstatSync(path.join(rootfs, dir)); } catch { break; }
        if (!st.isDirectory()) break;
        deepest = dir;
      }
      shadow.add(deepest);
    }
    return shadow;
  }

  /**
   * The image read-only as /. Where a mount target is missing from the image, the deepest image
   * directory on the way to it (shadowDirs) is a tmpfs holding read-only binds of that
   * directory's entries instead, so the mount points can be created in it; each such tmpfs is
   * remounted read-only once everything is in place (see bwrapArgs). Only that directory, not
   * the whole root: each bind is a mount bwrap makes and remounts for every run (a tmpfs / with
   * the image's ~20 top-level entries bound into it cost a cold run ~7 ms of CPU in bwrap).
   */
  private rootArgs(spec: RunSpec, shadow: Set<string>): string[] {
    const rootfs = spec.rootfs!;
    const a: string[] = [];
    const emit = (dir: string) => {
      a.push("--tmpfs", dir);
      for (const e of this.entriesOf(rootfs, dir)) {
        if (dir === "/" && ["proc", "dev", "tmp"].includes(e.name)) continue;
        const inImage = path.join(rootfs, dir, e.name);
        const target = path.posix.join(dir, e.name);
        if (shadow.has(target)) emit(target);
        else if (e.isSymbolicLink()) a.push("--symlink", fs.readlinkSync(inImage), target);
        else a.push("--ro-bind", inImage, target);
      }
    };
    if (shadow.has("/")) {
      emit("/");
      return a;
    }
    a.push("--ro-bind", rootfs, "/");
    // Outermost first: a shadowed directory inside another is emitted by its parent's emit.
    const within = (d: string, p: string) => d.startsWith(p + "/");
    for (const dir of [...shadow].sort()) {
      if (![...shadow].some((p) => p !== dir && within(dir, p))) emit(dir);
    }
    return a;
  }

  private entriesOf(rootfs: string, dir: string): fs.Dirent[] {
    const key = path.join(rootfs, dir);
    let entries = this.rootEntries.get(key);
    if (!entries) {
      entries = fs.readdirSync(key, { withFileTypes: true });
      this.rootEntries.set(key, entries);
    }
    return entries;
  }

  async reap(labels: Record<string, string>): Promise<number> {
    let n = 0;
    const mine = [...this.live.values()].filter((r) => labelsMatch(r.labels, labels));
    for (const r of mine) r.kill();
    await Promise.all(mine.map((r) => r.done));
    n += mine.length;
    // Cgroups left by a process that died (its runs died with it through --die-with-parent, but
    // their cgroups stay). They carry no labels; whoever owned them is gone, so any reap takes them.
    if (this.useCgroups) {
      const liveNames = new Set(this.live.keys());
      for (const name of this.staleRunNames()) {
        if (liveNames.has(name)) continue;
        // Counted only when processes were still in it: an empty leftover is bookkeeping, not a leak.
        const cg = RunCgroup.existing(this.plan, `${this.cgroupParent}/${name}`);
        const hadProcesses = cg.pids().length > 0;
        await cg.killAll();
        if ((await cg.remove()) && hadProcesses) n++;
      }
    }
    return n;
  }

  async count(labels: Record<string, string>): Promise<number> {
    return [...this.live.values()].filter((r) => labelsMatch(r.labels, labels)).length;
  }

  /** Run cgroups under our parent whose owner process is no longer alive (or is us, but forgotten). */
  private staleRunNames(): string[] {
    const names = new Set<string>();
    for (const h of this.plan.hierarchies) {
      let list: string[] = [];
      try { list = fs.readdirSync(path.join(h.mount, this.cgroupParent)); } catch { continue; }
      for (const n of list) {
        const m = /^r-(\d+)-/.exec(n);
        if (!m) continue;
        const owner = Number(m[1]);
        if (owner === process.pid ? !this.live.has(n) : !processAlive(owner)) names.add(n);
      }
    }
    return [...names];
  }

  async close(): Promise<void> {
    this.pool.close();
    for (const r of this.live.values()) r.kill();
    await Promise.all([...this.live.values()].map((r) => r.done));
    // The parent cgroup is this instance's; once its runs are gone it is empty bookkeeping.
    for (const h of this.plan.hierarchies) {
      try { fs.rmdirSync(path.join(h.mount, this.cgroupParent)); } catch { /* busy or absent */ }
    }
  }
}

function parseStatus(text: string): { childPid?: number; exitCode?: number } {
  const out: { childPid?: number; exitCode?: number } = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (typeof o["child-pid"] === "number") out.childPid = o["child-pid"];
      if (typeof o["exit-code"] === "number") out.exitCode = o["exit-code"];
    } catch { /* partial line */ }
  }
  return out;
}

function withHint(msg: string): string {
  if (/Can't find source path .*Permission denied/.test(msg)) {
    return `${msg} (bwrap runs as the sandbox uid: every directory above a mount source must be searchable by it, e.g. chmod o+x)`;
  }
  return msg;
}
