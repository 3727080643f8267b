import { ConnectionError, PetriError, TimeoutError } from "./errors.js";
import { encodeSegment, type ApiClient } from "./internal/http.js";
import { artifactFromWire, dependencyReportFromWire, type Artifact, type Dependencies, type DependencyReport, type ErrorSummary, type ExecStatus, type FileChanges, type Limits } from "./types.js";

/** Receives a chunk of a stream's output as text, as soon as the run wrote it. */
export type OutputCallback = (data: string) => unknown;

/** Options of `exec` and `run`. */
export interface RunOptions {
  /** Arguments appended to the command line (the program sees them as argv[1:]). */
  args?: string[];
  /** Text written to the program's stdin, which is then closed. */
  stdin?: string;
  /** Extra environment variables of the run. */
  env?: Record<string, string>;
  /**
   * Wall-clock limit of the run, milliseconds (server `timeout_ms`; default the sandbox's limit).
   * A run that hits it is killed and its result has `timedOut: true`. The client waits this
   * long plus `waitGraceMs` before giving up with a `TimeoutError`.
   */
  timeoutMs?: number;
  /** Limits for this run only (tightening the sandbox's, within the server's maximums). */
  limits?: Limits;
  /** Packages this run needs, installed (or reused) before it starts (server `dependencies`). */
  dependencies?: Dependencies;
  /** Detect the code's imports and install what is missing (server `auto_detect_dependencies`); default the sandbox's / server's. */
  autoDetectDependencies?: boolean;
  /** Streams stdout: called with each chunk while the run lives (uses NDJSON streaming). */
  onStdout?: OutputCallback;
  /** Streams stderr: called with each chunk while the run lives (uses NDJSON streaming). */
  onStderr?: OutputCallback;
  /** Extra time the client waits beyond the run's timeout for container start-up and bookkeeping, ms. Default 60_000. */
  waitGraceMs?: number;
  /** Hosts this run may reach over HTTP(S), in addition to the sandbox's (server `allow_hosts`). */
  allowHosts?: string[];
  /** Vault secrets this run may use, in addition to the sandbox's. */
  secrets?: string[];
  /**
   * Run the program on a pseudo-terminal (server `tty`), for programs that behave differently on
   * one (colours, progress bars, line buffering). stdout and stderr then arrive merged in `stdout`.
   */
  tty?: boolean;
}

/** Options of `start` and `startFile` (background runs). */
export interface StartOptions extends RunOptions {
  /** Keep stdin open so `handle.sendStdin()` can write to it until `closeStdin()`. Default false. */
  stdinOpen?: boolean;
}

export const DEFAULT_WAIT_GRACE_MS = 60_000;

/** The outcome of one run. `output` is stdout; nothing is thrown for a non-zero exit. */
export class ExecResult {
  /** `ex_…` */
  readonly id: string;
  readonly sandboxId: string;
  /** `running`, `completed` (the program ended, whatever its exit code), `failed` (the run could not start or finish), `cancelled`. */
  readonly status: ExecStatus;
  /** The file that ran, or `<snippet>`. */
  readonly entry: string;
  readonly exitCode: number | null;
  /** Name of the signal that ended the program (e.g. `SIGKILL`), if any. */
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  /** Either stream was cut at `limits.outputBytes`. */
  readonly truncated: boolean;
  /** Wall-clock duration, ms. */
  readonly durationMs: number;
  readonly timedOut: boolean;
  readonly oomKilled: boolean;
  readonly cancelled: boolean;
  /** CPU time used, ms, when the runtime measured it. */
  readonly cpuTimeMs: number | null;
  /** Peak memory, bytes, when the runtime measured it. */
  readonly peakMemoryBytes: number | null;
  /** Workspace files the run created, modified and deleted. */
  readonly files: FileChanges;
  readonly workspaceQuotaExceeded: boolean;
  /** Detected, installed or reused packages (null when the language has none). */
  readonly dependencies: DependencyReport | null;
  /** Why the run failed or was stopped (e.g. `WORKSPACE_QUOTA_EXCEEDED`), else null. */
  readonly error: { code: string; message: string } | null;
  /**
   * One line saying how an abnormal run ended, for a person or a model: `killed: exceeded the
   * 30 s time limit`, `killed: out of memory (512 MB limit)`, `no network in this sandbox: allow
   * the host with allow_hosts`, `exited with code 1: ZeroDivisionError: division by zero
   * (main.py:3)`. Null when the run simply succeeded.
   */
  readonly explanation: string | null;
  /** The error the traceback of a failed run ends with (Python, Node, Go), else null. */
  readonly errorSummary: ErrorSummary | null;
  /** Images and small data files the run created or showed (plt.show()), inline. */
  readonly artifacts: Artifact[];
  /** Bytes cut from the middle of stdout / stderr when they exceeded the output limit (head and tail are kept). */
  readonly stdoutCutBytes: number;
  readonly stderrCutBytes: number;
  readonly createdAt: Date | null;
  readonly finishedAt: Date | null;
  /** The result as the server sent it (snake_case). */
  readonly raw: Readonly<Record<string, unknown>>;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  constructor(raw: Record<string, any>) {
    this.raw = Object.freeze({ ...raw });
    this.id = raw.id;
    this.sandboxId = raw.sandbox_id;
    this.status = raw.status;
    this.entry = raw.entry ?? "";
    this.exitCode = raw.exit_code ?? null;
    this.signal = raw.signal ?? null;
    this.stdout = raw.stdout ?? "";
    this.stderr = raw.stderr ?? "";
    this.stdoutTruncated = Boolean(raw.stdout_truncated);
    this.stderrTruncated = Boolean(raw.stderr_truncated);
    this.truncated = Boolean(raw.truncated);
    this.durationMs = raw.duration_ms ?? 0;
    this.timedOut = Boolean(raw.timed_out);
    this.oomKilled = Boolean(raw.oom_killed);
    this.cancelled = Boolean(raw.cancelled);
    this.cpuTimeMs = raw.cpu_time_ms ?? null;
    this.peakMemoryBytes = raw.peak_memory_bytes ?? null;
    this.files = { created: raw.files?.created ?? [], modified: raw.files?.modified ?? [], deleted: raw.files?.deleted ?? [] };
    this.workspaceQuotaExceeded = Boolean(raw.workspace_quota_exceeded);
    this.dependencies = dependencyReportFromWire(raw.dependencies);
    this.error = raw.error ?? null;
    this.explanation = raw.explanation ?? null;
    this.errorSummary = raw.error_summary ?? null;
    this.artifacts = Array.isArray(raw.artifacts) ? raw.artifacts.map(artifactFromWire) : [];
    this.stdoutCutBytes = raw.stdout_cut_bytes ?? 0;
    this.stderrCutBytes = raw.stderr_cut_bytes ?? 0;
    this.createdAt = raw.created_at ? new Date(raw.created_at) : null;
    this.finishedAt = raw.finished_at ? new Date(raw.finished_at) : null;
  }

  /** stdout of the run (the E2B-style name). */
  get output(): string {
    return this.stdout;
  }

  /** True when the program ran to its end and exited 0. */
  get ok(): boolean {
    return this.status === "completed" && this.exitCode === 0 && !this.timedOut && !this.oomKilled;
  }

  toJSON(): Record<string, unknown> {
    return { ...this.raw };
  }
}

type StreamEvent =
  | { type: "start"; id: string; sandbox_id?: string }
  | { type: "stdout"; data: string }
  | { type: "stderr"; data: string }
  | { type: "result"; result: Record<string, unknown> };

/**
 * Reads an NDJSON exec stream, calling the callbacks in order. Resolves with the final result,
 * or undefined if the stream ended without one (connection lost).
 */
export async function readExecStream(response: Response, callbacks: { onStdout?: OutputCallback; onStderr?: OutputCallback }): Promise<ExecResult | undefined> {
  if (!response.body) return undefined;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let result: ExecResult | undefined;
  const handle = async (line: string) => {
    if (!line.trim()) return;
    const ev = JSON.parse(line) as StreamEvent;
    if (ev.type === "stdout") await callbacks.onStdout?.(ev.data);
    else if (ev.type === "stderr") await callbacks.onStderr?.(ev.data);
    else if (ev.type === "result") result = new ExecResult(ev.result);
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        await handle(line);
      }
    }
    buffered += decoder.decode();
    await handle(buffered);
  } finally {
    reader.releaseLock();
  }
  return result;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A run started in the background (`sandbox.start`/`startFile`, or `sandbox.getExec`). No HTTP
 * connection has to stay open: `wait()` polls the run's status unless output is being streamed.
 */
export class ExecHandle {
  /** `ex_…` */
  readonly id: string;
  readonly sandboxId: string;
  private readonly client: ApiClient;
  private readonly streamed?: Promise<ExecResult>;
  private readonly defaultWaitMs: number;

  /** @internal */
  constructor(client: ApiClient, sandboxId: string, id: string, opts: { streamed?: Promise<ExecResult>; defaultWaitMs: number }) {
    this.client = client;
    this.sandboxId = sandboxId;
    this.id = id;
    this.streamed = opts.streamed;
    this.defaultWaitMs = opts.defaultWaitMs;
    // A stream that fails while nobody waits must not crash the process as an unhandled rejection.
    this.streamed?.catch(() => undefined);
  }

  private get path(): string {
    return `/v1/sandboxes/${encodeSegment(this.sandboxId)}/exec/${encodeSegment(this.id)}`;
  }

  /** The run's current state; `status` is `running` while it lives (output fields are then empty). */
  async status(): Promise<ExecResult> {
    return new ExecResult(await this.client.json("GET", this.path));
  }

  /**
   * Waits until the run ends and returns its result.
   * @param opts.timeoutMs how long to wait, ms (default: the run's timeout plus the grace period); a `TimeoutError` leaves the run going.
   */
  async wait(opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? this.defaultWaitMs;
    const deadline = Date.now() + timeoutMs;
    if (this.streamed) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`run ${this.id} did not end within ${timeoutMs} ms`, { code: "TIMEOUT" })), timeoutMs);
      });
      try {
        return await Promise.race([this.streamed, timeout]);
      } catch (e) {
        // The stream broke (not a timeout): the run may well go on, so fall back to polling.
        if (!(e instanceof ConnectionError)) throw e;
      } finally {
        clearTimeout(timer);
      }
    }
    let interval = 50;
    for (;;) {
      const r = await this.status();
      if (r.status !== "running") return r;
      if (Date.now() + interval > deadline) throw new TimeoutError(`run ${this.id} did not end within ${timeoutMs} ms`, { code: "TIMEOUT" });
      await sleep(interval);
      interval = Math.min(Math.round(interval * 1.5), 1_000);
    }
  }

  /** Cancels the run, killing its whole process tree, and returns its final result (`cancelled: true`). */
  async kill(): Promise<ExecResult> {
    return new ExecResult(await this.client.json("DELETE", this.path, { timeoutMs: this.defaultWaitMs }));
  }

  /** Writes text to the run's stdin (needs `stdinOpen: true`); `ConflictError` once the run or its stdin has ended. */
  async sendStdin(data: string): Promise<void> {
    await this.client.json("POST", `${this.path}/stdin`, { json: { data } });
  }

  /** Closes the run's stdin (the program reads end-of-file). */
  async closeStdin(): Promise<void> {
    await this.client.json("POST", `${this.path}/stdin`, { json: { close: true } });
  }
}

/** Wraps errors raised while reading a stream into the SDK's types. */
export function streamError(e: unknown, execId: string | undefined): PetriError {
  if (e instanceof PetriError) return e;
  if ((e as Error)?.name === "AbortError") return new TimeoutError(`run ${execId ?? ""} did not end in time`.replace("  ", " "), { code: "TIMEOUT", cause: e });
  if (e instanceof SyntaxError) return new ConnectionError(`malformed event in the output stream of run ${execId ?? "?"}: ${e.message}`, { code: "CONNECTION", cause: e });
  return new ConnectionError(`the output stream of run ${execId ?? "?"} broke: ${(e as Error)?.message ?? String(e)}`, { code: "CONNECTION", cause: e });
}
