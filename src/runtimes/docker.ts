import { Duplex } from "node:stream";
import Docker from "dockerode";
import { LABEL_WARM, shapeKey } from "./launcher.js";
import { UnitPool } from "./unit-pool.js";
import { RunOutput, armTimeLimit, connectRun, endRun, readFrames, type RunUnit } from "./run-io.js";
import { IMPORT_WAIT_MAX_MS, passOverWhileImporting, unitPlan, type StatusFrame, type UnitPlan } from "./warm.js";
import { EngineLostError, signalFromExitCode, type RunResult, type RunSpec, type Runtime } from "./types.js";
import { seccompSecurityOpt } from "./seccomp.js";
import { GvisorTraceFollower } from "./gvisor-trace.js";
import { gvisorHostPidsLimit, isGvisor } from "./gvisor-limits.js";
import { detectCgroupLayout, readUsage, removeCgroup, type CgroupLayout } from "./cgroups.js";

export interface DockerRuntimeOptions {
  docker: Docker;
  /** OCI runtime Docker should use: runc, crun, runsc. */
  ociRuntime: string;
  /** Cgroup parent (relative, no leading slash) under which each run gets its own cgroup. */
  cgroupParent?: string;
  /**
   * Pre-started single-use containers. After a run, one container with the same shape (image,
   * mounts, limits, labels) is created and started, blocked in a launcher until the next run
   * hands it an argv; it is used once and removed. Kept for `idleMs`, then removed, so an idle
   * sandbox runs nothing. Only for images known to have `launcher[0]`.
   */
  warm?: { idleMs: number; images: Set<string> };
  /** The OCI runtime is runsc-trace: read each run's gVisor strace into `RunResult.trace`. */
  trace?: boolean;
  /**
   * runsc-trace's strace records access() (detect.ts gvisorStraceSeesHandover), so a warm
   * interpreter's hand-over mark is in the log: traced units may then be warm interpreters too.
   */
  traceSeesHandover?: boolean;
  /** What is read of one run's strace; past it the trace is cut and the log emptied as it grows (default 64 MiB). */
  traceMaxBytes?: number;
  /** Told when a run or pre-started container is lost to the engine ("run_lost", "prestart_dead"). */
  onEngineFault?: (kind: string) => void;
}



let runCounter = 0;
const HARD_DEADLINE_GRACE_MS = 15_000;

/**
 * Demultiplexes Docker's attach stream (8-byte header: stream type, 3 zero bytes, big-endian
 * length). Hand-written because the framing is trivial and we need per-chunk callbacks with no
 * extra stream plumbing on the hot path.
 */
function demux(stream: NodeJS.ReadableStream, sink: { out: (b: Buffer) => void; err: (b: Buffer) => void }): Promise<void> {
  let buf: Buffer = Buffer.alloc(0);
  return new Promise((resolve) => {
    stream.on("data", (chunk: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      while (buf.length >= 8) {
        const len = buf.readUInt32BE(4);
        if (buf.length < 8 + len) break;
        const payload = buf.subarray(8, 8 + len);
        if (buf[0] === 2) sink.err(payload);
        else sink.out(payload);
        buf = buf.subarray(8 + len);
      }
    });
    stream.on("end", () => resolve());
    stream.on("close", () => resolve());
    stream.on("error", () => resolve());
  });
}

/** A container created and attached (and, when warm, started), not yet given to a run. */
interface Prepared {
  container: Docker.Container;
  /** A wait registered ahead (warm): Docker answers a wait only after it is registered. */
  exited?: Promise<{ StatusCode: number }>;
  stream: Duplex;
  outputDone: Promise<void>;
  sink: { out: (b: Buffer) => void; err: (b: Buffer) => void };
  cgroupRel: string;
  warm: boolean;
  /** What a pre-started container runs (launcher or warm interpreter). */
  plan?: UnitPlan;
  /** A warm interpreter's frames on stdout (warm.ts). */
  frame?: StatusFrame;
  timings: Record<string, number>;
  /** The attach stream ended: the container's process is gone (it died with the engine). */
  ended: boolean;
}

/** Engine-initiated kills (docker stop/kill, daemon shutdown) of our containers, by container id. */
const KILL_MEMORY_MS = 120_000;


export class DockerRuntime implements Runtime {
  readonly name = "docker";
  private readonly docker: Docker;
  private readonly ociRuntime: string;
  private readonly cgroupParent: string;
  private readonly layout: CgroupLayout;
  private readonly pool: UnitPool<Prepared>;
  private readonly removing = new Set<Promise<void>>();
  private closed = false;
  private readonly trace: boolean;
  private readonly traceSeesHandover: boolean;
  private readonly traceMaxBytes: number | undefined;
  private readonly onEngineFault: (kind: string) => void;
  /** Containers this process owns (pool, preparing, running, being removed): never orphans. */
  private readonly owned = new Set<string>();
  /** Containers we killed ourselves (timeout, cancel, quota), so their kill event is ours. */
  private readonly selfKilled = new Set<string>();
  private readonly foreignKills = new Map<string, { signal: string; at: number }>();
  /** Containers the engine reported an OOM event for (State.OOMKilled can miss it, see run()). */
  private readonly oomEvents = new Map<string, number>();
  private events: NodeJS.ReadableStream | null = null;
  private eventsRetry: NodeJS.Timeout | undefined;
  private readonly seccomp: string;

  constructor(opts: DockerRuntimeOptions) {
    this.docker = opts.docker;
    this.ociRuntime = opts.ociRuntime;
    this.seccomp = seccompSecurityOpt(process.arch, { gvisor: isGvisor(opts.ociRuntime) });
    this.cgroupParent = opts.cgroupParent ?? "petri";
    this.layout = detectCgroupLayout();
    this.pool = new UnitPool<Prepared>(opts.warm, {
      // A pre-started container that died (with the engine, or killed) cannot run anything.
      alive: (prep) => !prep.ended && !this.foreignKills.has(prep.container.id),
      discard: (prep, why) => {
        if (why === "dead") this.onEngineFault("prestart_dead");
        if (why === "expired") void this.dispose(prep);
        else this.removeLater(prep);
      },
      importing: (prep) => prep.frame?.phase === "importing",
      starting: (prep) => prep.frame !== undefined && prep.frame.phase !== "ready",
    });
    this.trace = opts.trace ?? false;
    this.traceSeesHandover = opts.traceSeesHandover ?? false;
    this.traceMaxBytes = opts.traceMaxBytes;
    this.onEngineFault = opts.onEngineFault ?? (() => undefined);
  }

  /**
   * Follows the engine's kill events for Petri's containers. A kill we did not send is the
   * engine stopping the container (daemon shutdown or restart, an operator's docker stop): the
   * program did not end by itself, so its run must not be reported as the program's exit. When
   * the event stream breaks the engine went away: every pre-started container is presumed dead.
   */
  private watchEngine(): void {
    if (this.events || this.closed) return;
    const since = Math.floor(Date.now() / 1000) - 1;
    this.docker.getEvents({ since, filters: { type: ["container"], event: ["kill", "oom"], label: ["io.jhansi.petri.managed=true"] } }).then((stream) => {
      if (this.closed) { (stream as unknown as { destroy?: () => void }).destroy?.(); return; }
      this.events = stream;
      // Following the engine never keeps the process alive by itself.
      (stream as unknown as { socket?: { unref?: () => void } }).socket?.unref?.();
      let buf = "";
      stream.on("data", (chunk: Buffer) => {
        buf += chunk.toString("utf8");
        let nl: number;
        while ((nl = buf.indexOf("\n")) !== -1) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const ev = JSON.parse(line) as { id?: string; Action?: string; status?: string; Actor?: { Attributes?: Record<string, string> } };
            if (!ev.id) continue;
            if ((ev.Action ?? ev.status) === "oom") this.oomEvents.set(ev.id, Date.now());
            else if (!this.selfKilled.has(ev.id)) this.foreignKills.set(ev.id, { signal: ev.Actor?.Attributes?.signal ?? "?", at: Date.now() });
          } catch { /* a partial or foreign line */ }
        }
        const old = Date.now() - KILL_MEMORY_MS;
        for (const [id, k] of this.foreignKills) if (k.at < old) this.foreignKills.delete(id);
        for (const [id, at] of this.oomEvents) if (at < old) this.oomEvents.delete(id);
      });
      const lost = () => {
        if (this.events !== stream) return;
        this.events = null;
        this.dropPool("engine event stream closed");
        if (!this.closed) { this.eventsRetry = setTimeout(() => this.watchEngine(), 1000); this.eventsRetry.unref(); }
      };
      stream.on("end", lost);
      stream.on("close", lost);
      stream.on("error", lost);
    }, () => {
      if (!this.closed) { this.eventsRetry = setTimeout(() => this.watchEngine(), 1000); this.eventsRetry.unref(); }
    });
  }

  /** Discards every pre-started container (they do not survive the engine going away). */
  private dropPool(why: string): void {
    for (const [, prep] of this.pool.waiting()) {
      this.pool.release(prep);
      this.onEngineFault("prestart_dead");
      void why;
      this.removeLater(prep);
    }
  }

  /** Pre-started containers waiting, and how often a run found one. */
  prestartSettled(): Promise<void> {
    return this.pool.settled();
  }

  prestartStats(): ReturnType<UnitPool<Prepared>["stats"]> {
    return this.pool.stats();
  }

  /** Shapes whose pre-started container is being created (the benchmark and tests wait for them). */
  get preparing(): Map<string, Promise<void>> {
    return this.pool.preparing;
  }

  get variant(): string {
    return this.ociRuntime;
  }

  /** Creates and attaches a container for `spec`; a warm one runs the launcher and is started. */
  private async prepare(spec: RunSpec, warm: boolean): Promise<Prepared> {
    const t0 = performance.now();
    const timings: Record<string, number> = {};
    const cgroupRel = `${this.cgroupParent}/run-${process.pid}-${Date.now().toString(36)}-${(runCounter++).toString(36)}`;
    const withStdin = warm || spec.stdin !== undefined || spec.stdinStream !== undefined;
    const labels = { ...spec.labels };
    if (warm) {
      for (const k of Object.keys(labels)) if (k.endsWith(".exec")) delete labels[k];
      labels[LABEL_WARM] = "true";
    }
    // gVisor: the guest's limit is RLIMIT_NPROC, the host cgroup's a backstop (gvisor-limits.ts).
    const gvisor = isGvisor(this.ociRuntime);
    // Under runsc-trace the audit trace starts at the program's exec, or at a warm interpreter's
    // hand-over mark when the strace records it (the unit's imports are not the run's); with an
    // older registration that does not, units stay plain launchers (re-run scripts/setup.sh).
    const plan = warm ? unitPlan(spec, { interpreters: !this.trace || this.traceSeesHandover, fixedCmdline: gvisor }) : undefined;
    const container = await this.docker.createContainer({
      Image: spec.image,
      Cmd: plan ? plan.argv : spec.argv,
      Env: Object.entries(plan ? plan.env : spec.env).map(([k, v]) => `${k}=${v}`),
      WorkingDir: plan ? plan.startCwd : spec.cwd,
      User: `${spec.uid}:${spec.gid}`,
      Labels: labels,
      AttachStdin: withStdin,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: withStdin,
      StdinOnce: withStdin,
      Tty: false,
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: "none",
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": `rw,exec,nosuid,nodev,size=${spec.limits.tmpfsBytes}` },
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges", this.seccomp],
        Memory: spec.limits.memoryBytes,
        MemorySwap: spec.limits.memoryBytes,
        NanoCpus: Math.round(spec.limits.cpus * 1e9),
        PidsLimit: gvisor ? gvisorHostPidsLimit(spec.limits.pids) : spec.limits.pids,
        Ulimits: [
          ...(gvisor ? [{ Name: "nproc", Soft: spec.limits.pids, Hard: spec.limits.pids }] : []),
          { Name: "nofile", Soft: spec.limits.openFiles, Hard: spec.limits.openFiles },
          { Name: "fsize", Soft: spec.limits.fileSizeBytes, Hard: spec.limits.fileSizeBytes },
          { Name: "core", Soft: 0, Hard: 0 },
        ],
        Mounts: spec.mounts.map((m) => ({ Type: "bind" as const, Source: m.source, Target: m.target, ReadOnly: m.readonly })),
        // Output is streamed to us through attach; a logging driver would copy every byte of an
        // output flood to the host disk.
        LogConfig: { Type: "none", Config: {} },
        Runtime: this.ociRuntime,
        CgroupParent: this.layout.kind === "none" ? undefined : `/${cgroupRel}`,
        IpcMode: "private",
        // A minimal init (docker-init) as pid 1 reaps orphans and lets the program's own
        // signals take effect (pid 1 ignores default-action signals).
        Init: true,
        AutoRemove: false,
      },
    });
    timings.create = performance.now() - t0;
    this.owned.add(container.id);
    let attached: Duplex | undefined;
    try {
      const stream = (await container.attach({ stream: true, stdin: withStdin, stdout: true, stderr: true, hijack: withStdin })) as unknown as Duplex;
      attached = stream;
      const sink = { out: (_b: Buffer) => undefined as void, err: (_b: Buffer) => undefined as void };
      // Before the start: a warm interpreter's first frame ("importing") can come at once.
      const io: RunUnit = { plan, sink };
      readFrames(io);
      const outputDone = demux(stream, { out: (b) => sink.out(b), err: (b) => sink.err(b) });
      const prepared = { ended: false };
      void outputDone.then(() => { prepared.ended = true; });
      timings.attach = performance.now() - t0;
      let exited: Promise<{ StatusCode: number }> | undefined;
      if (warm) {
        await container.start();
        // Registering the wait costs a round trip to dockerd; done now, it is off the run's path.
        exited = container.wait({ condition: "next-exit" }) as Promise<{ StatusCode: number }>;
        exited.catch(() => undefined);
        timings.start = performance.now() - t0;
      }
      return Object.assign(prepared, { container, stream, outputDone, sink, cgroupRel, warm, plan, frame: io.frame, timings, exited });
    } catch (e) {
      // The attach stream is a socket to the engine: left open it would outlive its container.
      attached?.destroy();
      await container.remove({ force: true, v: true }).then(() => this.owned.delete(container.id), () => this.owned.delete(container.id));
      removeCgroup(this.layout, cgroupRel);
      throw e;
    }
  }

  wantsPrestartAfter(spec: RunSpec): boolean {
    return this.pool.wantsAfter(spec);
  }

  prestart(spec: RunSpec): void {
    this.pool.prestart(spec, (next) => this.prepare(next, true));
  }

  /** Keeps one pre-started container of this shape ready, for `idleMs`. */
  private replenish(spec: RunSpec): void {
    this.pool.replenish(spec, (next) => this.prepare(next, true));
  }

  private async dispose(prep: Prepared): Promise<void> {
    this.pool.release(prep);
    prep.stream.destroy();
    // Whether or not the engine answers, the container is no longer ours to keep: one that could
    // not be removed now (engine down) is an orphan for reapOrphans().
    await prep.container.remove({ force: true, v: true }).catch(() => undefined);
    this.owned.delete(prep.container.id);
    this.selfKilled.delete(prep.container.id);
    this.foreignKills.delete(prep.container.id);
    removeCgroup(this.layout, prep.cgroupRel);
  }

  private hostSocketsCheck?: Promise<string | null>;

  /**
   * gVisor refuses connect() to host Unix sockets unless runsc runs with --host-uds=open (or
   * the older --fsgofer-host-uds); the daemon's registration of the runtime says whether it does.
   */
  hostSockets(): Promise<string | null> {
    if (!this.ociRuntime.startsWith("runsc")) return Promise.resolve(null);
    this.hostSocketsCheck ??= this.docker.info().then((info: { Runtimes?: Record<string, { runtimeArgs?: string[] }> }) => {
      const args = info.Runtimes?.[this.ociRuntime]?.runtimeArgs ?? [];
      const ok = args.some((a) => /^--?host-uds=(open|all)$/.test(a) || /^--?fsgofer-host-uds(=true)?$/.test(a));
      return ok ? null : `secrets and allowed hosts need the OCI runtime ${this.ociRuntime} registered with --host-uds=open (re-run scripts/setup.sh, which adds it to /etc/docker/daemon.json and reloads dockerd)`;
    }, (e: Error) => `could not ask Docker how ${this.ociRuntime} is registered: ${e.message}`);
    return this.hostSocketsCheck;
  }

  noPrestartFor(sandboxId: string): () => void {
    return this.pool.gate.quietFor(sandboxId);
  }

  async run(spec: RunSpec): Promise<RunResult> {
    return this.pool.gate.track(() => this.runOnce(spec), spec);
  }

  private async runOnce(spec: RunSpec): Promise<RunResult> {
    this.watchEngine();
    const t0 = performance.now();
    const passOver = (u: Prepared) => (u.plan ? passOverWhileImporting(u.plan, u.frame, spec) : null);
    let taken = this.pool.take(spec, passOver);
    // One being pre-started for this very shape (on the next run's workspace view) is nearer to ready than a new one.
    const starting = taken.unit || taken.passedOver ? undefined : this.pool.preparing.get(shapeKey(spec));
    if (starting) {
      await starting;
      taken = this.pool.take(spec, passOver);
    }
    const prep = taken.unit ?? await this.prepare(spec, false);
    const { container, stream, timings } = prep;
    if (prep.warm) timings.warm = 1;
    spec.tracer?.attach(prep.cgroupRel);
    const output = new RunOutput(spec);
    const frame = prep.frame;
    let cpuBefore: number | null = null;
    let timedOut = false;
    let killed = false;
    let timer: { clear: () => void } | undefined;
    const kill = () => {
      this.selfKilled.add(container.id);
      return container.kill({ signal: "SIGKILL" }).catch(() => undefined);
    };
    const onAbort = () => { killed = true; void kill(); };
    // The run's strace is read as it is written (its size on the disk stays bounded). A pre-started
    // container's launcher execs the program: its exec is the second one; a warm interpreter's
    // hand-over mark starts it.
    const follower = this.trace ? new GvisorTraceFollower(container.id, {
      maxBytes: this.traceMaxBytes, startAtExec: prep.warm ? 2 : 1, programArgv: spec.auditArgv, warmMark: prep.warm && (prep.plan?.kind === "python" || prep.plan?.kind === "node"),
    }) : undefined;
    let result: RunResult;

    try {
      const waitP = prep.exited ?? (container.wait({ condition: "next-exit" }) as Promise<{ StatusCode: number }>);
      // A pre-started container's own start (and a warm interpreter's imports) is not the run's CPU time.
      cpuBefore = prep.warm ? readUsage(this.layout, prep.cgroupRel).cpuTimeMs : null;
      connectRun(prep, spec, output, (b) => stream.write(b));
      if (!prep.plan) await container.start();
      const startedAt = performance.now();
      timings.start = startedAt - t0;
      timer = armTimeLimit(frame, spec.timeoutMs, () => { timedOut = true; void kill(); }, () => {
        cpuBefore = readUsage(this.layout, prep.cgroupRel).cpuTimeMs;
      });
      // If the engine never reports the exit (a wedged OCI runtime), the run still ends: well
      // after the timeout it is given up on and its container force-removed.
      let giveUp: NodeJS.Timeout | undefined;
      const lost = new Promise<{ StatusCode: number }>((resolve) => {
        giveUp = setTimeout(() => {
          timedOut = true;
          resolve({ StatusCode: 137 });
        }, spec.timeoutMs + (frame ? IMPORT_WAIT_MAX_MS : 0) + HARD_DEADLINE_GRACE_MS);
      });
      void waitP.finally(() => clearTimeout(giveUp));
      if (spec.signal) {
        if (spec.signal.aborted) onAbort();
        else spec.signal.addEventListener("abort", onAbort, { once: true });
      }
      if (prep.warm || spec.stdin !== undefined || spec.stdinStream !== undefined) void this.feedStdin(stream, spec);
      // The next run of this shape will find a container already started.
      if (spec.prestart !== false) this.replenish(spec);

      let waited: { StatusCode?: number };
      try {
        waited = await Promise.race([waitP, lost]);
      } catch (e) {
        // The wait's connection broke: the engine went away while the program ran.
        this.onEngineFault("run_lost");
        throw new EngineLostError(`the Docker engine went away during the run (${(e as Error).message}); the program's outcome is unknown`);
      }
      clearTimeout(giveUp);
      const finishedAt = performance.now();
      timer?.clear();
      timings.wait = finishedAt - t0;
      // Output can trail the exit by a moment; don't let a stuck stream hold the result.
      await Promise.race([prep.outputDone, new Promise((r) => setTimeout(r, 2000))]);
      stream.destroy();
      const fallback = endRun(frame, timings, taken.passedOver);

      const info = await Promise.race([
        container.inspect().catch(() => null),
        new Promise<null>((r) => setTimeout(() => r(null), 5000)),
      ]);
      const exitCode = info?.State?.ExitCode ?? waited.StatusCode;
      const signal = signalFromExitCode(exitCode ?? null);
      // State.OOMKilled races the exit on cgroup v1 (the engine can record the exit before it
      // hears of the OOM): the engine's own "oom" event, which can trail the exit by a moment, counts too.
      let oomKilled = Boolean(info?.State?.OOMKilled) || this.oomEvents.has(container.id);
      if (!oomKilled && signal === "SIGKILL" && !timedOut && !killed && this.events) {
        for (let i = 0; i < 10 && !this.oomEvents.has(container.id); i++) await new Promise((r) => setTimeout(r, 20));
        oomKilled = this.oomEvents.has(container.id);
      }
      this.oomEvents.delete(container.id);
      if (!timedOut && !killed) {
        const engineKill = await this.engineKilled(container.id, signal, typeof exitCode === "number");
        if (engineKill) {
          this.onEngineFault("run_lost");
          throw new EngineLostError(`the Docker engine stopped this run's container (${engineKill}); the program did not finish on its own`);
        }
      }
      result = {
        exitCode: signal ? null : exitCode!,
        signal,
        timedOut,
        oomKilled,
        killed: killed && !timedOut,
        ...output.fields(),
        durationMs: Math.round(finishedAt - startedAt),
        cpuTimeMs: null,
        peakMemoryBytes: null,
        timings,
        ...fallback,
      };
    } catch (e) {
      void follower?.abandon();
      this.removeLater(prep);
      throw e;
    } finally {
      timer?.clear();
      spec.signal?.removeEventListener("abort", onAbort);
    }
    // Every process of the run is gone, so the parent cgroup's counters are final (cgroups.ts).
    const usage = readUsage(this.layout, prep.cgroupRel);
    result.cpuTimeMs = usage.cpuTimeMs !== null && cpuBefore !== null ? Math.max(0, usage.cpuTimeMs - cpuBefore) : usage.cpuTimeMs;
    result.peakMemoryBytes = usage.peakMemoryBytes;
    // Last resort when neither the engine's state nor its event said OOM: a SIGKILL we did not
    // send, with the run's memory at its limit, is the kernel's OOM killer.
    if (!result.oomKilled && result.signal === "SIGKILL" && !result.timedOut && !result.killed && usage.peakMemoryBytes !== null
      && usage.peakMemoryBytes >= spec.limits.memoryBytes * 0.98) result.oomKilled = true;
    if (follower) result.trace = (await follower.finish().catch(() => null)) ?? undefined;
    // Removal does not hold the result back; count(), reap() and close() wait for it.
    this.removeLater(prep);
    return result;
  }

  /**
   * Why the engine, not the program, ended this container, or null. A kill event we did not send
   * says so; the event can trail the exit by a moment, so a signal death waits briefly for it.
   * No exit status at all, or an event stream that broke, means the engine went away.
   */
  private async engineKilled(id: string, signal: string | null, hasStatus: boolean): Promise<string | null> {
    const seen = () => this.foreignKills.get(id);
    if (!hasStatus) return "no exit status: the engine did not report how the program ended";
    if (!signal) return null;
    for (let i = 0; i < 10 && !seen() && this.events; i++) await new Promise((r) => setTimeout(r, 20));
    const k = seen();
    if (k) return `signal ${k.signal} sent by the engine, e.g. while shutting down or restarting`;
    if (!this.events) {
      const up = await Promise.race([this.docker.ping().then(() => true, () => false), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))]);
      if (!up) return `${signal} while the engine stopped answering`;
    }
    return null;
  }

  async reapOrphans(labels: Record<string, string>): Promise<number> {
    const list = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
    // A dead one (exited with the engine) is an orphan at once; a live one only after a minute,
    // as it may belong to a create call of ours still in flight.
    const old = Date.now() / 1000 - 60;
    const orphans = list.filter((c) => !this.owned.has(c.Id) && (c.State === "exited" || c.State === "dead" || c.Created < old));
    let n = 0;
    for (const c of orphans) {
      await this.docker.getContainer(c.Id).remove({ force: true, v: true }).then(() => { n++; }, () => undefined);
    }
    return n;
  }

  private removeLater(prep: Prepared): void {
    const p = this.dispose(prep).finally(() => this.removing.delete(p));
    this.removing.add(p);
  }

  private async feedStdin(stream: Duplex, spec: RunSpec): Promise<void> {
    try {
      if (spec.stdinStream) {
        for await (const chunk of spec.stdinStream) {
          if (!stream.write(chunk)) await new Promise((r) => stream.once("drain", r));
        }
      } else if (spec.stdin !== undefined && spec.stdin.length > 0) {
        stream.write(spec.stdin);
      }
    } catch {
      /* the run ended before stdin was consumed */
    } finally {
      stream.end();
    }
  }

  async reap(labels: Record<string, string>): Promise<number> {
    const matches = (key: string) => Object.entries(labels).every(([k, v]) => key.includes(JSON.stringify(k) + ":" + JSON.stringify(v)));
    // A unit still being created would land in the pool (and live on) after this reap: wait for it.
    await Promise.all([...this.pool.preparing].filter(([key]) => matches(key)).map(([, p]) => p));
    await Promise.all(this.removing);
    // Waiting units are disposed of (attach stream, container, cgroup), not just forgotten.
    for (const [key, prep] of this.pool.waiting()) {
      if (matches(key) && this.pool.release(prep)) this.removeLater(prep);
    }
    await Promise.all(this.removing);
    const list = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
    await Promise.all(list.map((c) => this.docker.getContainer(c.Id).remove({ force: true, v: true }).then(() => this.owned.delete(c.Id), () => undefined)));
    return list.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.eventsRetry);
    (this.events as unknown as { destroy?: () => void } | null)?.destroy?.();
    this.events = null;
    const all = this.pool.close();
    await Promise.all(this.pool.preparing.values());
    await Promise.all(this.removing);
    await Promise.all(all.map((p) => this.dispose(p)));
    await Promise.all(this.removing);
    // The per-instance parent cgroup is empty once every run's container is gone.
    removeCgroup(this.layout, this.cgroupParent);
  }

  async count(labels: Record<string, string>): Promise<number> {
    await Promise.all(this.removing);
    const list = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
    return list.length;
  }
}
