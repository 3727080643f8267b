import os from "node:os";
import type { GvisorTrace } from "./gvisor-trace.js";

/**
 * The Runtime contract: one fully described run in, one result out. A runtime knows nothing of
 * sandboxes, tenants or HTTP. Every implementation passes the same conformance suite
 * (src/runtimes/conformance.ts).
 */
export interface Mount {
  /** Absolute host path. */
  source: string;
  /** Absolute path inside the run. */
  target: string;
  readonly: boolean;
}

export interface RunLimits {
  memoryBytes: number;
  /** CPU cores, may be fractional. */
  cpus: number;
  pids: number;
  openFiles: number;
  /** Largest file a process may write (RLIMIT_FSIZE). */
  fileSizeBytes: number;
  /** Size of the private writable /tmp. */
  tmpfsBytes: number;
}

export interface RunSpec {
  /** Docker image reference (docker runtime) — also names the rootfs for rootfs-based runtimes. */
  image: string;
  /** Root filesystem directory for runtimes that run straight from one (bwrap). */
  rootfs?: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  mounts: Mount[];
  limits: RunLimits;
  timeoutMs: number;
  /** Bytes fed to stdin, then stdin is closed. Ignored when `stdinStream` is given. */
  stdin?: Buffer | string;
  /** Live stdin (streaming runs): each chunk is written, end() closes stdin. */
  stdinStream?: AsyncIterable<Buffer | string>;
  /** Bytes kept per output stream; the rest is dropped and the stream marked truncated. */
  outputLimitBytes: number;
  uid: number;
  gid: number;
  /** Labels put on everything the runtime creates, so a reaper can find leftovers. */
  labels: Record<string, string>;
  /** Aborting kills the whole run (its process tree) and the result says `killed`. */
  signal?: AbortSignal;
  /**
   * The interpreter this run starts, for pre-started units (warm.ts, docs/warm.md): a unit of this
   * run's shape may start it ahead with `preload` (modules of the image) imported, and run the
   * next run's program in that fresh process when the semantics are guaranteed to be a cold
   * start's. With a preload, a run goes warm only if its source imports one of the loaded
   * modules' top-level packages or a `triggers` package (else the imports only cost memory).
   */
  interpreter?: InterpreterHint;
  /**
   * false: the runtime does not pre-start a unit of this run's shape on its own (the caller
   * does, through Runtime.prestart, e.g. once the next run's mounts exist).
   */
  prestart?: boolean;
  /** Called with output as it is produced (before truncation is applied to the result). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /**
   * The audit tracer (src/tracing/): told the run's cgroup (relative to the hierarchy roots)
   * before any process of the run can start the program (a cold run: before its spawn; a
   * pre-started unit: before its hand-over). The probes follow only cgroups registered so.
   */
  tracer?: { attach(cgroupRel: string): void };
  /** The argv the run was asked for, before Petri's wrappers: where a trace's program starts. */
  auditArgv?: string[];
}

export interface InterpreterHint {
  /** "node": Node and TypeScript runs (warm-node.ts); the unit takes the form of the run it follows. */
  kind: "python" | "node";
  preload?: string[];
  triggers?: string[];
  /**
   * Modules the preloaded stack imports lazily on first use (pandas' plotting backend, matplotlib's
   * Agg canvas): imported after `preload`, only when it loaded, and never triggers. Only modules
   * whose import changes nothing but `sys.modules` belong here (docs/warm.md, "First use").
   */
  firstUse?: string[];
  /**
   * After the whole preload and `firstUse` loaded without a warning: collect, then `gc.freeze()`
   * what the unit holds, so neither the run's collections nor the interpreter's exit walk the
   * stack's objects (~190 ms of CPU at exit after pandas and matplotlib). A documented
   * difference a program can observe (docs/warm.md, "The frozen stack").
   */
  freeze?: boolean;
}

export interface RunResult {
  exitCode: number | null;
  /** Name of the signal that ended the main process, e.g. "SIGKILL". */
  signal: string | null;
  timedOut: boolean;
  oomKilled: boolean;
  /** The run was stopped by its AbortSignal (cancel, quota). */
  killed: boolean;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Bytes cut from the middle of each stream (0 when nothing was cut). */
  stdoutCutBytes?: number;
  stderrCutBytes?: number;
  durationMs: number;
  cpuTimeMs: number | null;
  peakMemoryBytes: number | null;
  /** Where the time went, for benchmarks (create/start/wait/remove…). */
  timings?: Record<string, number>;
  /**
   * Set when a pre-started interpreter was offered the run but handed it to a cold start (exec),
   * or the run passed over a unit still importing and started cold at once, with the reason
   * (docs/warm.md); `timings.interp` is 1 when the run ran in that interpreter, and
   * `timings.importWait` the ms it waited for the unit's imports.
   */
  warmFallback?: string;
  /** What the program opened and executed, when the runtime traces it (gVisor as runsc-trace). */
  trace?: GvisorTrace;
}

export interface RuntimeInfo {
  name: string;
  /** e.g. the OCI runtime behind Docker. */
  variant?: string;
  available: boolean;
  reason?: string;
}

export interface Runtime {
  readonly name: string;
  run(spec: RunSpec): Promise<RunResult>;
  /**
   * Pre-starts one single-use unit of this shape (mounts, limits, labels), kept for the runtime's
   * idle time, for the next run of that shape. A no-op when pre-starting is off or does not pay.
   */
  prestart?(spec: RunSpec): void;
  /**
   * Called once per run whose spec says `prestart: false`, as it starts: records the run for the
   * pre-start policy (launcher.ts PrestartGate) and says whether a unit should follow it, so the
   * caller mounts nothing for a sandbox that will get no pre-started unit.
   */
  wantsPrestartAfter?(spec: RunSpec): boolean;
  /** Removes everything carrying these labels (crash leftovers). Returns how many were removed. */
  reap(labels: Record<string, string>): Promise<number>;
  /** How many live units (containers/processes) carry these labels. */
  count(labels: Record<string, string>): Promise<number>;
  close?(): Promise<void>;
  /**
   * Whether code in a run can connect to a host Unix socket bind-mounted into it (the vault's
   * brokers are reached that way): null if it can, else why not and how to fix it.
   */
  hostSockets?(): Promise<string | null>;
  /**
   * Pre-started units waiting now (of which still importing; of which not yet ready: still starting
   * or importing), and runs that found one ready (hits), none (misses), or passed one over while it
   * imported (docs/warm.md).
   */
  prestartStats?(): { ready: number; hits: number; misses: number; passedOver?: number; importing?: number; starting?: number };
  /** Resolves once no pre-started unit is still being started (tests wait for the unit a run left). */
  prestartSettled?(): Promise<void>;
  /**
   * Until the returned function is called, runs of this sandbox leave nothing pre-started behind
   * (a throw-away sandbox of a one-request run has no next run to serve).
   */
  noPrestartFor?(sandboxId: string): () => void;
  /**
   * Removes units carrying these labels that no run or pre-start of this process owns (left by
   * an engine fault). Safe while runs are in flight, unlike `reap`. Returns how many.
   */
  reapOrphans?(labels: Record<string, string>): Promise<number>;
}

/**
 * A run lost to the container engine or sandbox helper (the engine stopped or restarted, the
 * helper was killed): not the program's doing, so it is never reported as the program's exit.
 */
export class EngineLostError extends Error {
  readonly code = "ENGINE_LOST";
  constructor(message: string) {
    super(message);
    this.name = "EngineLostError";
  }
}

const SIGNAL_NAMES = new Map(Object.entries(os.constants.signals).map(([name, n]) => [n as number, name]));

/**
 * The signal that ended a process whose shell-style exit status is `code` (128 + signal number),
 * or null. Both runtimes report status this way (docker-init and the bwrap wrapper do).
 */
export function signalFromExitCode(code: number | null): string | null {
  if (code === null || code <= 128 || code >= 160) return null;
  return SIGNAL_NAMES.get(code - 128) ?? `SIG${code - 128}`;
}

/**
 * Keeps at most `limit` bytes of a stream: the first half and the last half. When more came,
 * `toBuffer()` joins them with a one-line marker saying how many bytes were cut, because the
 * end of a flood (the answer, the traceback) matters at least as much as its start.
 */
export class CappedBuffer {
  private readonly headLimit: number;
  private readonly tailLimit: number;
  private head: Buffer[] = [];
  private headSize = 0;
  private tail: Buffer[] = [];
  private tailSize = 0;
  /** Bytes seen in total. */
  total = 0;

  constructor(private readonly limit: number) {
    this.headLimit = Math.ceil(limit / 2);
    this.tailLimit = limit - this.headLimit;
  }

  get truncated(): boolean {
    return this.total > this.limit;
  }

  /** Bytes dropped from the middle. */
  get cutBytes(): number {
    return Math.max(0, this.total - this.limit);
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.total += chunk.length;
    const room = this.headLimit - this.headSize;
    if (room > 0) {
      const take = chunk.subarray(0, room);
      this.head.push(take);
      this.headSize += take.length;
      chunk = chunk.subarray(take.length);
      if (chunk.length === 0) return;
    }
    if (this.tailLimit === 0) return;
    if (chunk.length >= this.tailLimit) {
      this.tail = [chunk.subarray(chunk.length - this.tailLimit)];
      this.tailSize = this.tailLimit;
      return;
    }
    this.tail.push(chunk);
    this.tailSize += chunk.length;
    while (this.tailSize - this.tail[0].length >= this.tailLimit) this.tailSize -= this.tail.shift()!.length;
    if (this.tailSize > this.tailLimit) {
      const over = this.tailSize - this.tailLimit;
      this.tail[0] = this.tail[0].subarray(over);
      this.tailSize -= over;
    }
  }

  toBuffer(): Buffer {
    const head = Buffer.concat(this.head, this.headSize);
    const tail = Buffer.concat(this.tail, this.tailSize);
    if (!this.truncated) return Buffer.concat([head, tail]);
    return Buffer.concat([head, Buffer.from(cutMarker(this.cutBytes)), tail]);
  }
}

/** The line put where output was cut; clients and tests can rely on its shape. */
export function cutMarker(bytes: number): string {
  return `\n[petri: ${bytes} bytes cut from the middle of this output]\n`;
}
