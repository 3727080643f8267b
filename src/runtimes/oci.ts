import { spawn, type StdioOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { RunCgroup, hostCgroupPlan, prepareCgroupParent, type CgroupPlan } from "./bwrap.js";
import { LABEL_WARM } from "./launcher.js";
import { UnitPool } from "./unit-pool.js";
import { RunOutput, armTimeLimit, connectRun, endRun, feedStdin, readFrames, type ChildUnit } from "./run-io.js";
import { passOverWhileImporting, unitPlan } from "./warm.js";
import { ociConfig } from "./oci-spec.js";
import { RootfsLayers } from "./oci-rootfs.js";
import { petriSeccompProfile } from "./seccomp.js";
import { gvisorHostPidsLimit } from "./gvisor-limits.js";
import { GVISOR_TRACE_DIR, GvisorTraceFollower, gvisorStraceFlags } from "./gvisor-trace.js";
import { sealedCopy } from "../exec/overlay/mount-helper.js";
import { EngineLostError, signalFromExitCode, type CappedBuffer, type RunResult, type RunSpec, type Runtime } from "./types.js";

/**
 * OciRuntime: Docker-class isolation without dockerd in the path. Each run is one call of the
 * OCI runtime itself (`runc run`, `crun run`, `runsc run`) on a bundle Petri writes: the image's
 * root filesystem (read-only, shared through oci-rootfs.ts) and a config.json with the hardening
 * of the Docker path (oci-spec.ts). The runtime runs in the foreground as Petri's child: the
 * container's stdin/stdout/stderr are the pipes Petri gave it, its exit status is the runtime's,
 * and the runtime removes the container (state and cgroup) when the program ends.
 *
 *   node ─spawn→ runc|crun|runsc run --bundle B ID      (stays Petri's child until the end)
 *                  └─ container: tini (pid 1) ─ the program
 *
 * Cgroups: Petri creates the run's cgroup `<parent>/<run>` with the limits (memory without swap,
 * CPU, pids) and gives the runtime `<parent>/<run>/c` as the container's: the counters of
 * `<run>` (peak memory, CPU time, OOM kills) outlive the container, as with Docker's per-run
 * cgroup parent. Leftovers after a crash: every container has its bundle (with the run's labels
 * as annotations) under the instance's state directory, and reap() kills, deletes and removes
 * what it finds there, and every cgroup under the parent.
 */

export type OciKind = "runc" | "crun" | "runsc";

export interface OciRuntimeOptions {
  kind: OciKind;
  /** Name the server offers it under, e.g. "crun-direct". */
  name?: string;
  /** Path of the runtime binary (default: found on PATH). */
  binary?: string;
  /** This instance's state directory for this runtime (bundles, runtime state, root overlays). */
  stateDir: string;
  /** Parent cgroup (relative to each hierarchy's root); must start with "petri-" for the tracer. */
  cgroupParent: string;
  /** Host path of a static init (tini); Docker's docker-init. null: no init (tests only). */
  initSource?: string | null;
  /** Pre-started single-use containers, as for DockerRuntime and BwrapRuntime. */
  warm?: { idleMs: number; images: Set<string> };
  /** Extra global flags for runsc (default: ptrace platform, no network, host Unix sockets open). */
  runscFlags?: string[];
  /**
   * runsc only: trace each run with gVisor's own strace (opens, execs, connects), read into
   * `RunResult.trace` as Docker's runsc-trace does (default true). The host tracer cannot: it
   * would see gVisor's kernel, not the program.
   */
  gvisorTrace?: boolean;
  /** Where each traced run's boot log is written, one directory per run (default /var/log/petri/runsc/direct). */
  traceDir?: string;
  /** What is read of one run's strace; past it the trace is cut and the log emptied as it grows (default 64 MiB). */
  traceMaxBytes?: number;
  cgroupPlan?: CgroupPlan;
  /**
   * Run the runtime from a sealed in-memory copy of its binary made once per server (default: crun
   * only), so it does not copy and re-execute itself on every container start (see sealedBinary).
   */
  sealedBinary?: boolean;
}

/** The run could not be set up by the OCI runtime: nothing of the user's code ran. */
export class OciSetupError extends Error {
  override name = "OciSetupError";
}

const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const INIT_TARGET = "/sbin/docker-init";
/** tini is the container's only helper process inside the run's cgroup. */
const OWN_PIDS = 1;
// --oci-seccomp: the Sentry applies the spec's seccomp profile (Petri's) to the sandboxed tasks.
export const RUNSC_FLAGS = ["--platform=ptrace", "--network=none", "--host-uds=open", "--oci-seccomp"];
const INIT_CANDIDATES = ["/usr/bin/docker-init", "/usr/bin/tini-static", "/usr/libexec/docker/docker-init", "/usr/bin/tini"];

/** A static init binary on this host (docker.io's docker-init is tini-static), or null. */
export function findInit(): string | null {
  for (const c of INIT_CANDIDATES) {
    try {
      const real = fs.realpathSync(c);
      if (fs.statSync(real).isFile()) return real;
    } catch { /* absent */ }
  }
  return null;
}

export function findBinary(kind: OciKind): string | null {
  for (const dir of HOST_PATH.split(":")) {
    const p = path.join(dir, kind);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch { /* not here */ }
  }
  return null;
}

let runSeq = 0;

/** One sealed copy per binary per process, shared by every runtime instance (never more than one held). */
const sealedCopies = new Map<string, Promise<string | null>>();

/**
 * The path to run an OCI runtime from: a sealed in-memory copy of its binary (mount-helper.ts
 * sealedCopy), or null when none can be made here.
 *
 * crun 1.8 (like upstream runc 1.1) guards against CVE-2019-5736 by copying its own binary and
 * executing itself again from the copy on every container start, so the container can never
 * reach and overwrite the host's binary through /proc/<pid>/exe; it skips that when it already
 * runs from a memfd sealed against writes (F_SEAL_SEAL|SHRINK|GROW|WRITE, as runc's
 * cloned_binary.c checks and runc's contrib/memfd-bind relies on; test/oci-direct-sealed counts
 * the re-executions). Same protection, one copy per server instead of an exec and a copy per
 * run. Debian 12's runc
 * 1.1.5 makes no such copy (traced: runc run → runc init → the container's init, no memfd, no
 * re-exec), so it is run as installed unless asked (`sealedBinary: true`).
 */
export function sealedBinary(binary: string): Promise<string | null> {
  let p = sealedCopies.get(binary);
  if (!p) {
    p = sealedCopy(binary, { verifyArgs: ["--version"] });
    sealedCopies.set(binary, p);
  }
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Started extends ChildUnit {
  id: string;
  bundle: string;
  cg: RunCgroup;
}

function labelsMatch(have: Record<string, string>, want: Record<string, string>): boolean {
  return Object.entries(want).every(([k, v]) => have[k] === v);
}

export class OciRuntime implements Runtime {
  readonly name: string;
  readonly kind: OciKind;
  private readonly bin: string;
  /** What `run` executes: the binary, or its sealed copy once made (sealedBinary). */
  private runBin: string;
  /** Resolves once runBin is settled (the sealed copy made, or not to be had). */
  readonly binaryReady: Promise<void>;
  private readonly stateDir: string;
  private readonly stateRoot: string;
  private readonly bundles: string;
  private readonly cgroupParent: string;
  private readonly plan: CgroupPlan;
  private readonly layers: RootfsLayers;
  private readonly initSource: string | null;
  private readonly seccomp;
  private readonly globalFlags: string[];
  /** Runs are traced by gVisor's strace (runsc only). */
  readonly gvisorTrace: boolean;
  private readonly traceDir: string;
  private readonly traceMaxBytes: number | undefined;
  private readonly pool: UnitPool<Started>;
  private readonly live = new Map<string, Started>();
  /** Pre-starts whose container is not up yet, and removals still running (the benchmark waits for both). */
  private readonly preparing = new Set<string>();
  private readonly removing = new Set<Promise<void>>();
  private parentReady = false;

  constructor(opts: OciRuntimeOptions) {
    this.kind = opts.kind;
    this.name = opts.name ?? `${opts.kind}-direct`;
    const bin = opts.binary ?? findBinary(opts.kind);
    if (!bin) throw new Error(`${opts.kind} is not installed`);
    this.bin = bin;
    this.runBin = bin;
    // Until the copy is made (a fraction of a second at start) runs use the binary itself.
    this.binaryReady = opts.kind !== "runsc" && (opts.sealedBinary ?? opts.kind === "crun")
      ? sealedBinary(bin).then((p) => { if (p) this.runBin = p; })
      : Promise.resolve();
    this.stateDir = opts.stateDir;
    this.stateRoot = path.join(opts.stateDir, "state");
    this.bundles = path.join(opts.stateDir, "bundles");
    this.cgroupParent = opts.cgroupParent;
    this.plan = opts.cgroupPlan ?? hostCgroupPlan();
    if (this.plan.missing.includes("memory") || this.plan.missing.includes("pids")) {
      throw new Error(`the ${this.name} runtime needs the memory and pids cgroup controllers; missing: ${this.plan.missing.join(", ")}`);
    }
    this.layers = new RootfsLayers(path.join(opts.stateDir, "rootfs"));
    this.initSource = opts.initSource === undefined ? findInit() : opts.initSource;
    // Under gVisor the Sentry applies the profile itself (runsc --oci-seccomp, in RUNSC_FLAGS).
    this.seccomp = petriSeccompProfile(process.arch, { gvisor: opts.kind === "runsc" });
    this.globalFlags = opts.kind === "runsc" ? (opts.runscFlags ?? RUNSC_FLAGS) : [];
    this.gvisorTrace = opts.kind === "runsc" && opts.gvisorTrace !== false;
    // On disk, not beside the bundle: /run is often a tmpfs, and an open-flooding program's
    // strace would fill memory.
    this.traceDir = opts.traceDir ?? path.join(GVISOR_TRACE_DIR, "direct");
    this.traceMaxBytes = opts.traceMaxBytes;
    this.pool = new UnitPool<Started>(opts.warm, {
      alive: (st) => st.proc.exitCode === null && st.proc.signalCode === null,
      discard: (st) => void this.finish(st),
      importing: (st) => st.frame?.phase === "importing",
      starting: (st) => st.frame !== undefined && st.frame.phase !== "ready",
    });
    fs.mkdirSync(this.stateRoot, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.bundles, { recursive: true, mode: 0o700 });
  }

  get variant(): string {
    return `${this.kind}-direct`;
  }

  /** The path `run` executes (the sealed copy, /proc/<pid>/fd/<n>, once made). */
  get executable(): string {
    return this.runBin;
  }

  private runtimeArgs(...args: string[]): string[] {
    return ["--root", this.stateRoot, ...this.globalFlags, ...args];
  }

  /** A traced run's own log directory: it holds the run's environment values, so it is 0700 and removed with the run. */
  private traceDirOf(id: string): string {
    return path.join(this.traceDir, id);
  }

  /** The run's cgroup, relative to the hierarchy roots (what the audit tracer scopes to). */
  cgroupOf(id: string): string {
    return `${this.cgroupParent}/${id}`;
  }

  /**
   * Host tasks the run's cgroup allows beyond the program's own pids limit: tini under runc and
   * crun; under gVisor the program's limit is RLIMIT_NPROC inside the Sentry and the host cgroup
   * holds a backstop scaled for the Sentry's own threads (gvisor-limits.ts, as on the Docker path).
   */
  private ownPids(spec: RunSpec): number {
    return this.kind === "runsc" ? gvisorHostPidsLimit(spec.limits.pids) - spec.limits.pids : OWN_PIDS;
  }

  private makeCgroup(spec: RunSpec, id: string): RunCgroup {
    if (!this.parentReady) {
      prepareCgroupParent(this.plan, this.cgroupParent);
      this.parentReady = true;
    }
    try {
      return RunCgroup.create(this.plan, this.cgroupParent, id, spec.limits, this.ownPids(spec));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      prepareCgroupParent(this.plan, this.cgroupParent);
      return RunCgroup.create(this.plan, this.cgroupParent, id, spec.limits, this.ownPids(spec));
    }
  }

  /**
   * Writes the bundle and spawns the runtime. A pre-started one runs the plain launcher or a warm
   * interpreter (warm.ts), waiting for the run it will serve.
   */
  private start(spec: RunSpec, warm: boolean): Started {
    const t0 = performance.now();
    if (!spec.rootfs) throw new OciSetupError(`no root filesystem for image ${spec.image}: build it with \`petri images build\``);
    if (spec.uid === 0 || spec.gid === 0) throw new OciSetupError(`the ${this.name} runtime does not run code as root (uid/gid 0)`);
    if (!this.initSource) throw new OciSetupError("no init binary (docker-init / tini-static) on this host: apt-get install tini");
    const id = `r-${process.pid}-${(runSeq++).toString(36)}-${randomBytes(3).toString("hex")}`;
    const labels = { ...spec.labels };
    if (warm) {
      for (const k of Object.keys(labels)) if (k.endsWith(".exec")) delete labels[k];
      labels[LABEL_WARM] = "true";
    }
    const targets = spec.mounts.map((m) => ({ path: m.target, kind: fileOrDir(m.source) }));
    targets.push({ path: INIT_TARGET, kind: "file" });
    const rootfs = this.layers.rootFor(spec.rootfs, targets);
    const cg = this.makeCgroup(spec, id);
    // Before the spawn: the tracer follows only registered cgroups, and the program may exec at once.
    if (!warm) spec.tracer?.attach(this.cgroupOf(id));
    const bundle = path.join(this.bundles, id);
    const plan = warm ? unitPlan(spec, { interpreters: true, fixedCmdline: this.kind === "runsc" }) : undefined;
    const inner = plan ? { ...spec, argv: plan.argv, env: plan.env, cwd: plan.startCwd } : spec;
    try {
      fs.mkdirSync(bundle, { mode: 0o700 });
      const config = ociConfig(inner, {
        rootfs, initPath: INIT_TARGET, initSource: this.initSource, cgroupsPath: `/${this.cgroupOf(id)}/c`,
        annotations: labels, seccomp: this.seccomp, limitsInSpec: this.kind === "runsc",
        ...(this.kind === "runsc" ? {
          specPids: gvisorHostPidsLimit(spec.limits.pids),
          extraRlimits: [{ type: "RLIMIT_NPROC", hard: spec.limits.pids, soft: spec.limits.pids }],
        } : {}),
      });
      fs.writeFileSync(path.join(bundle, "config.json"), JSON.stringify(config));
    } catch (e) {
      fs.rmSync(bundle, { recursive: true, force: true });
      void cg.remove();
      throw e;
    }
    const timings: Record<string, number> = { bundle: performance.now() - t0 };
    const wantsStdin = warm || spec.stdin !== undefined || spec.stdinStream !== undefined;
    const stdio: StdioOptions = [wantsStdin ? "pipe" : "ignore", "pipe", "pipe"];
    const logFile = path.join(bundle, "runtime.log");
    const logArgs = this.kind === "runc" ? ["--log", logFile, "--log-format", "json"] : this.kind === "crun" ? [`--log=file:${logFile}`, "--log-format=json"] : [];
    let traceArgs: string[] = [];
    if (this.gvisorTrace) {
      fs.mkdirSync(this.traceDir, { recursive: true, mode: 0o700 });
      fs.mkdirSync(this.traceDirOf(id), { mode: 0o700 });
      traceArgs = gvisorStraceFlags(this.traceDirOf(id));
    }
    const proc = spawn(this.runBin, [...logArgs, ...this.runtimeArgs(...traceArgs, "run", "--bundle", bundle, id)], { stdio, env: { PATH: HOST_PATH } });
    const st: Started = {
      id, bundle, cg, warm, plan, labels, proc, timings,
      exited: new Promise((resolve) => {
        proc.once("exit", (code, signal) => resolve({ code, signal }));
        proc.once("error", (e) => resolve({ code: null, signal: null, ...{ error: e } }));
      }),
      outputDone: new Promise<void>((resolve) => proc.once("close", () => resolve())),
      sink: { out: () => undefined, err: () => undefined },
      killed: false, onKill: () => undefined, done: undefined as never, markDone: () => undefined,
    };
    st.done = new Promise<void>((r) => { st.markDone = r; });
    readFrames(st);
    proc.stdout!.on("data", (b: Buffer) => st.sink.out(b));
    proc.stderr!.on("data", (b: Buffer) => st.sink.err(b));
    proc.stdin?.on("error", () => undefined);
    st.onKill = () => { st.killed = true; void this.killContainer(st); };
    this.live.set(id, st);
    timings.spawn = performance.now() - t0;
    return st;
  }

  /** Kills the container's whole process tree: pid 1 through the runtime, then the cgroup swept. */
  private async killContainer(st: Started): Promise<void> {
    const alive = st.proc.exitCode === null && st.proc.signalCode === null;
    if (alive) {
      await new Promise<void>((resolve) => {
        const k = spawn(this.bin, this.runtimeArgs("kill", st.id, "KILL"), { stdio: "ignore", env: { PATH: HOST_PATH } });
        k.once("exit", () => resolve());
        k.once("error", () => resolve());
      });
    }
    await sweepCgroup(this.plan, this.cgroupOf(st.id), 2000);
  }

  /** After the runtime process ended: make sure nothing of the run is left, forget it. */
  private async finish(st: Started): Promise<void> {
    this.pool.release(st);
    if (st.proc.exitCode === null && st.proc.signalCode === null) {
      await this.killContainer(st);
      await Promise.race([st.exited, sleep(5000)]);
      if (st.proc.exitCode === null && st.proc.signalCode === null) st.proc.kill("SIGKILL");
    }
    await sweepCgroup(this.plan, this.cgroupOf(st.id), 2000);
    // The runtime deletes its container when it runs in the foreground; one that failed half way
    // (or was killed) may have left its state behind.
    if (fs.existsSync(path.join(this.stateRoot, st.id))) await this.forceDelete(st.id);
    await removeRunCgroups(this.cgroupOf(st.id));
    // Off the event loop (as the cgroups' rmdirs): synchronous, these removals blocked every other
    // request for ~3 ms per run under 8 clients (CPU profile of the server).
    await fs.promises.rm(st.bundle, { recursive: true, force: true });
    if (this.gvisorTrace) await fs.promises.rm(this.traceDirOf(st.id), { recursive: true, force: true });
    this.live.delete(st.id);
    st.markDone();
  }

  private forceDelete(id: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const k = spawn(this.bin, this.runtimeArgs("delete", "--force", id), { stdio: "ignore", env: { PATH: HOST_PATH } });
      k.once("exit", () => resolve());
      k.once("error", () => resolve());
    });
  }

  wantsPrestartAfter(spec: RunSpec): boolean {
    return this.pool.wantsAfter(spec);
  }

  prestart(spec: RunSpec): void {
    this.pool.prestart(spec, (next) => this.startUnit(next));
  }

  /** Keeps one pre-started container of this shape ready for `idleMs`. */
  private replenish(spec: RunSpec): void {
    this.pool.replenish(spec, (next) => this.startUnit(next));
  }

  private startUnit(spec: RunSpec): Started {
    const st = this.start(spec, true);
    void st.exited.then(() => { if (this.pool.release(st)) void this.finish(st); });
    st.onKill = () => {
      this.pool.release(st);
      st.killed = true;
      void this.finish(st);
    };
    this.watchUp(st);
    return st;
  }

  /** Marks a pre-start as preparing until its container's processes exist (or it ended). */
  private watchUp(st: Started): void {
    this.preparing.add(st.id);
    const procs = path.join(this.plan.hierarchies.find((h) => h.roles.includes("pids"))!.mount, this.cgroupOf(st.id), "c", "cgroup.procs");
    const deadline = Date.now() + 10_000;
    const tick = () => {
      let up = false;
      try { up = fs.readFileSync(procs, "utf8").trim().split("\n").length >= 2; } catch { /* not made yet */ }
      if (up || Date.now() > deadline || st.proc.exitCode !== null || st.proc.signalCode !== null) this.preparing.delete(st.id);
      else setTimeout(tick, 5).unref();
    };
    setTimeout(tick, 5).unref();
  }

  /** The pre-started container for this run, now the run's (its labels, its kill), or the reason it was passed over. */
  private take(spec: RunSpec): { st?: Started; passedOver?: string } {
    const { unit: st, passedOver } = this.pool.take(spec, (u) => (u.plan ? passOverWhileImporting(u.plan, u.frame, spec) : null));
    if (!st) return { passedOver };
    st.labels = spec.labels;
    st.onKill = () => { st.killed = true; void this.killContainer(st); };
    return { st };
  }

  /** Pre-started containers waiting, and how often a run found one (metrics). */
  prestartSettled(): Promise<void> {
    return this.pool.settled();
  }

  prestartStats(): ReturnType<UnitPool<Started>["stats"]> {
    return this.pool.stats();
  }

  noPrestartFor(sandboxId: string): () => void {
    return this.pool.gate.quietFor(sandboxId);
  }

  /** runc and crun connect to host Unix sockets natively; runsc is started with --host-uds=open. */
  async hostSockets(): Promise<string | null> {
    if (this.kind !== "runsc") return null;
    return this.globalFlags.some((f) => /^--?host-uds=(open|all)$/.test(f)) ? null : `${this.name} needs runsc's --host-uds=open to reach the vault's brokers`;
  }

  async run(spec: RunSpec): Promise<RunResult> {
    return this.pool.gate.track(() => this.runOnce(spec), spec);
  }

  private async runOnce(spec: RunSpec): Promise<RunResult> {
    const t0 = performance.now();
    const taken = this.take(spec);
    const st = taken.st ?? this.start(spec, false);
    // A pre-started unit is followed from its hand-over on (a cold one since before its spawn).
    // The container's cgroup is <run>/c, level 3 below the petri-… parent.
    spec.tracer?.attach(this.cgroupOf(st.id));
    const timings = st.timings;
    if (st.warm) timings.warm = 1;
    const output = new RunOutput(spec);
    let timedOut = false;
    let timer: { clear: () => void } | undefined;
    const onAbort = () => st.onKill();
    const frame = st.frame;
    // The run's strace is read as it is written (its size on the disk stays bounded). It starts at
    // the exec of the run's own argv (a pre-started launcher's exec) or, in a warm interpreter, at
    // its bootstrap's hand-over mark.
    const follower = this.gvisorTrace ? new GvisorTraceFollower(st.id, {
      dir: this.traceDirOf(st.id), maxBytes: this.traceMaxBytes, startAtExec: st.warm ? 2 : 1, programArgv: spec.auditArgv,
      warmMark: st.warm && (st.plan?.kind === "python" || st.plan?.kind === "node"),
    }) : undefined;
    let result: RunResult;
    try {
      // A pre-started unit's own start (and a warm interpreter's imports) is not the run's CPU time.
      let cpuBefore = st.warm ? st.cg.usage().cpuTimeMs : null;
      connectRun(st, spec, output, (b) => st.proc.stdin!.write(b));
      if (st.proc.stdin) void feedStdin(st.proc.stdin, spec);
      const startedAt = performance.now();
      timings.handover = startedAt - t0;
      // The next run of this shape will find a unit already started (unless the caller does it).
      if (spec.prestart !== false) this.replenish(spec);
      timer = armTimeLimit(frame, spec.timeoutMs, () => { timedOut = true; void this.killContainer(st); }, () => { cpuBefore = st.cg.usage().cpuTimeMs; });
      if (spec.signal) {
        if (spec.signal.aborted) onAbort();
        else spec.signal.addEventListener("abort", onAbort, { once: true });
      }
      const exit = await st.exited;
      const finishedAt = performance.now();
      timer?.clear();
      timings.wait = finishedAt - t0;
      await Promise.race([st.outputDone, sleep(2000)]);
      const fallback = endRun(frame, timings, taken.passedOver);
      const killed = st.killed;
      if ((exit as { error?: Error }).error) throw new OciSetupError(`could not start ${this.bin}: ${(exit as { error?: Error }).error!.message}`);
      const usage = st.cg.usage();
      if (usage.cpuTimeMs !== null && cpuBefore !== null) usage.cpuTimeMs = Math.max(0, usage.cpuTimeMs - cpuBefore);
      // The OOM kill is counted in the container's own cgroup, which the runtime has removed;
      // the kernel's log names the run's cgroup as the one whose limit was hit.
      const died = signalFromExitCode(exit.code) === "SIGKILL" || exit.code === null;
      const oom = (usage.oomKills ?? 0) > 0 || (died && !timedOut && !st.killed && oomLogged(this.cgroupOf(st.id)));
      // The runtime itself is Petri's child, outside the container: a signal death of it that
      // Petri did not cause came from outside, and is not the program's exit.
      if (exit.signal && !timedOut && !killed) {
        throw new EngineLostError(`the ${this.kind} process of this run was killed (${exit.signal}) from outside Petri; the program did not finish on its own`);
      }
      if (!timedOut && !killed && !oom && exit.code !== 0) {
        const failure = this.setupFailure(st, output.stderr);
        if (failure) throw new OciSetupError(failure);
      }
      const code = exit.code;
      const sig = timedOut || killed ? (signalFromExitCode(code) ?? "SIGKILL") : signalFromExitCode(code);
      result = {
        exitCode: sig ? null : code,
        signal: sig,
        timedOut,
        oomKilled: oom,
        killed: killed && !timedOut,
        ...output.fields(),
        durationMs: Math.round(finishedAt - startedAt),
        cpuTimeMs: usage.cpuTimeMs,
        peakMemoryBytes: usage.peakMemoryBytes,
        timings,
        ...fallback,
      };
      // The sandbox's boot process has exited, so its log is complete.
      if (follower) result.trace = (await follower.finish().catch(() => null)) ?? undefined;
    } catch (e) {
      await follower?.abandon();
      await this.finish(st);
      throw e;
    } finally {
      timer?.clear();
      spec.signal?.removeEventListener("abort", onAbort);
    }
    // Every process of the run is gone and its counters are read: the rest of the clean-up does
    // not hold the result back; count(), reap() and close() wait for it.
    const p = this.finish(st).finally(() => this.removing.delete(p));
    this.removing.add(p);
    return result;
  }

  /**
   * Why the runtime failed before the program ran, or null when the exit status is the
   * program's. runc and crun log their own errors (JSON lines, level "error") to the run's log
   * file; runsc prints them on stderr, prefixed with its own name and no program output before.
   */
  private setupFailure(st: Started, stderr: CappedBuffer): string | null {
    if (this.kind === "runsc") {
      const text = stderr.toBuffer().toString("utf8");
      const m = /^(?:running container|creating container|starting container|.*\bboot\b.*): .*$/m.exec(text);
      return m && /^(running|creating|starting) container/.test(text.trimStart()) ? `runsc could not start the run: ${firstLines(text)}` : null;
    }
    let log = "";
    try { log = fs.readFileSync(path.join(st.bundle, "runtime.log"), "utf8"); } catch { return null; }
    const errors: string[] = [];
    for (const line of log.split("\n")) {
      if (!line.trim()) continue;
      try {
        const o = JSON.parse(line) as { level?: string; msg?: string };
        if (o.level === "error" || o.level === "fatal") errors.push(o.msg ?? line);
      } catch {
        if (/error/i.test(line)) errors.push(line);
      }
    }
    return errors.length ? `${this.kind} could not start the run: ${errors.join("; ").slice(0, 600)}` : null;
  }

  async reap(labels: Record<string, string>): Promise<number> {
    await Promise.all(this.removing);
    let n = 0;
    const mine = [...this.live.values()].filter((r) => labelsMatch(r.labels, labels));
    for (const st of mine) this.pool.release(st);
    for (const st of mine) st.onKill();
    await Promise.all(mine.map((st) => st.done));
    n += mine.length;
    // Bundles no live run of this process owns: a previous process of this instance crashed.
    for (const id of safeReaddir(this.bundles)) {
      if (this.live.has(id)) continue;
      let annotations: Record<string, string> = {};
      try {
        annotations = (JSON.parse(fs.readFileSync(path.join(this.bundles, id, "config.json"), "utf8")) as { annotations?: Record<string, string> }).annotations ?? {};
      } catch { /* half-written: whoever wrote it is gone */ }
      if (!labelsMatch(annotations, labels) && fs.existsSync(path.join(this.bundles, id, "config.json"))) continue;
      await this.reapLeftover(id);
      n++;
    }
    // Run cgroups no live run owns (a crash between creating one and writing its bundle).
    for (const dir of parentDirs(this.cgroupParent)) {
      for (const id of safeReaddir(dir)) {
        if (!/^r-\d+-/.test(id) || this.live.has(id)) continue;
        await sweepCgroup(this.plan, this.cgroupOf(id), 5000);
        await removeRunCgroups(this.cgroupOf(id));
      }
    }
    return n;
  }

  /** Kills and removes a container this process does not own (left by a crash). */
  private async reapLeftover(id: string): Promise<void> {
    if (fs.existsSync(path.join(this.stateRoot, id))) {
      await new Promise<void>((resolve) => {
        const k = spawn(this.bin, this.runtimeArgs("kill", id, "KILL"), { stdio: "ignore", env: { PATH: HOST_PATH } });
        k.once("exit", () => resolve());
        k.once("error", () => resolve());
      });
    }
    await sweepCgroup(this.plan, this.cgroupOf(id), 5000);
    await this.forceDelete(id);
    await removeRunCgroups(this.cgroupOf(id));
    fs.rmSync(path.join(this.bundles, id), { recursive: true, force: true });
    fs.rmSync(this.traceDirOf(id), { recursive: true, force: true });
  }

  async count(labels: Record<string, string>): Promise<number> {
    await Promise.all(this.removing);
    let n = 0;
    for (const id of safeReaddir(this.bundles)) {
      const live = this.live.get(id);
      if (live) { if (labelsMatch(live.labels, labels)) n++; continue; }
      try {
        const a = (JSON.parse(fs.readFileSync(path.join(this.bundles, id, "config.json"), "utf8")) as { annotations?: Record<string, string> }).annotations ?? {};
        if (labelsMatch(a, labels)) n++;
      } catch { n++; }
    }
    return n;
  }

  async close(): Promise<void> {
    this.pool.close();
    const all = [...this.live.values()];
    for (const st of all) st.onKill();
    await Promise.all(all.map((st) => st.done));
    await Promise.all(this.removing);
    this.layers.close();
    for (const dir of parentDirs(this.cgroupParent)) {
      try { fs.rmdirSync(dir); } catch { /* busy or absent */ }
    }
    fs.rmSync(this.stateDir, { recursive: true, force: true });
    // The instance's directory, once no other runtime of it has anything there.
    try { fs.rmdirSync(path.dirname(this.stateDir)); } catch { /* not empty, or gone */ }
  }

}

/**
 * Whether the kernel logged an OOM kill charged to this cgroup (or below it). On cgroup v1 the
 * kill is counted only in the victim's own cgroup (the container's, gone with it), but the
 * kernel's "oom-kill:… oom_memcg=/<cgroup>" line names the cgroup whose limit was hit. Read only
 * when a run died of SIGKILL that Petri did not send.
 */
export function oomLogged(rel: string, kmsg = "/dev/kmsg"): boolean {
  const needle = `oom_memcg=/${rel}`;
  let fd: number;
  try {
    fd = fs.openSync(kmsg, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return false;
  }
  const buf = Buffer.alloc(16384);
  let found = false;
  try {
    for (let i = 0; i < 200_000 && !found; i++) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        // EPIPE: a record was overwritten while reading; the next read goes on from the oldest.
        if ((e as NodeJS.ErrnoException).code === "EPIPE") continue;
        break; // EAGAIN: the end of the log
      }
      if (n <= 0) break;
      const rec = buf.toString("latin1", 0, n);
      const at = rec.indexOf(needle);
      if (at !== -1 && /[,/\s]/.test(rec[at + needle.length] ?? ",")) found = true;
    }
  } finally {
    fs.closeSync(fd);
  }
  return found;
}

function fileOrDir(source: string): "file" | "dir" {
  try {
    return fs.statSync(source).isDirectory() ? "dir" : "file";
  } catch {
    return "dir";
  }
}

function firstLines(text: string): string {
  return text.trim().split("\n").slice(0, 3).join(" ").slice(0, 600);
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Every cgroup hierarchy of the host: v1 controllers, named ones (name=systemd, where runc and
 * crun make the container's cgroup too) and v2. Read once: the host's cgroup mounts do not change
 * under a running server, and the mount table grows with the runs in flight (every run's views),
 * so reading it after every run cost more than the removal itself.
 */
let hierarchies: string[] | null = null;
function allHierarchies(): string[] {
  if (!hierarchies || hierarchies.length === 0) hierarchies = readHierarchies();
  return hierarchies;
}

function readHierarchies(): string[] {
  let mi = "";
  try { mi = fs.readFileSync("/proc/self/mountinfo", "utf8"); } catch { return []; }
  const out: string[] = [];
  for (const line of mi.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(" ")[0];
    if (fstype === "cgroup" || fstype === "cgroup2") out.push((line.slice(0, sep).split(" ")[4] ?? "").replace(/\\040/g, " "));
  }
  return [...new Set(out.filter(Boolean))];
}

function parentDirs(parent: string): string[] {
  return allHierarchies().map((m) => path.join(m, parent)).filter((d) => fs.existsSync(d));
}

/** Pids in a cgroup and every cgroup below it. */
function pidsBelow(dir: string): number[] {
  const out: number[] = [];
  const walk = (d: string) => {
    try {
      for (const p of fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n")) if (p) out.push(Number(p));
    } catch { return; }
    // The file types come with the listing: a cgroup holds dozens of control files, and a stat
    // of each, twice per run, was most of this walk.
    let entries: fs.Dirent[] = [];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { /* gone */ }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  walk(dir);
  return out;
}

/** Kills every process of the run (container included) until none is left, or the time is up. */
async function sweepCgroup(plan: CgroupPlan, rel: string, timeoutMs: number): Promise<boolean> {
  const dirs = plan.hierarchies.filter((h) => h.roles.includes("pids") || h.roles.includes("memory")).map((h) => path.join(h.mount, rel));
  const deadline = Date.now() + timeoutMs;
  for (let round = 0; ; round++) {
    const pids = [...new Set(dirs.flatMap(pidsBelow))];
    if (pids.length === 0) return true;
    if (Date.now() > deadline) return false;
    for (const pid of pids) {
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
    await sleep(round < 10 ? 2 : 20);
  }
}

/**
 * Removes the run's cgroup in every hierarchy: the runtime made `<run>/c` in each (not only
 * in the ones Petri limits), and removes only the container's own level.
 */
async function removeRunCgroups(rel: string): Promise<void> {
  const dirs = allHierarchies().map((m) => path.join(m, rel));
  for (let i = 0; i < 50; i++) {
    let left = 0;
    for (const d of dirs) {
      for (const sub of [path.join(d, "c"), d]) {
        // One at a time, on the thread pool: ~22 cgroup rmdirs per run held the event loop ~4 ms.
        try { await fs.promises.rmdir(sub); } catch (e) { if ((e as NodeJS.ErrnoException).code !== "ENOENT") left++; }
      }
    }
    if (left === 0) return;
    await sleep(i < 10 ? 2 : 20);
  }
}

