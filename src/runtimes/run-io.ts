import type { ChildProcess } from "node:child_process";
import type { Writable } from "node:stream";
import { CappedBuffer, type RunResult, type RunSpec } from "./types.js";
import { IMPORT_WAIT_MAX_MS, StatusFrame, handover, type UnitPlan } from "./warm.js";

// A run's input and output as every runtime handles them: the output kept capped for the result
// and passed on live, stdin fed from the spec, and the hand-over to a pre-started unit.

/**
 * A run's stdout and stderr: kept capped for the result, and passed on as they come to the
 * spec's listeners. One place for what every runtime puts in the result's output fields.
 */
export class RunOutput {
  readonly stdout: CappedBuffer;
  readonly stderr: CappedBuffer;

  constructor(private readonly spec: Pick<RunSpec, "outputLimitBytes" | "onStdout" | "onStderr">) {
    this.stdout = new CappedBuffer(spec.outputLimitBytes);
    this.stderr = new CappedBuffer(spec.outputLimitBytes);
  }

  readonly out = (b: Buffer): void => {
    this.stdout.push(b);
    this.spec.onStdout?.(b);
  };

  readonly err = (b: Buffer): void => {
    this.stderr.push(b);
    this.spec.onStderr?.(b);
  };

  /** The result's output fields. */
  fields(): Pick<RunResult, "stdout" | "stderr" | "stdoutTruncated" | "stderrTruncated" | "stdoutCutBytes" | "stderrCutBytes"> {
    return {
      stdout: this.stdout.toBuffer(),
      stderr: this.stderr.toBuffer(),
      stdoutTruncated: this.stdout.truncated,
      stderrTruncated: this.stderr.truncated,
      stdoutCutBytes: this.stdout.cutBytes,
      stderrCutBytes: this.stderr.cutBytes,
    };
  }
}

/** Writes the spec's stdin (bytes or a live stream) to the run, then closes it. */
export async function feedStdin(stdin: Writable, spec: RunSpec): Promise<void> {
  stdin.on("error", () => undefined); // EPIPE when the program exits without reading
  try {
    if (spec.stdinStream) {
      for await (const chunk of spec.stdinStream) {
        if (stdin.destroyed) break;
        if (!stdin.write(chunk)) await new Promise((r) => { stdin.once("drain", r); stdin.once("close", r); });
      }
    } else if (spec.stdin !== undefined && spec.stdin.length > 0) {
      stdin.write(spec.stdin);
    }
  } catch {
    /* the run ended before stdin was consumed */
  } finally {
    stdin.end();
  }
}

/** What runs the spec: a unit's plan (pre-started), its frame reader (warm interpreter), and where its output goes. */
export interface RunUnit {
  plan?: UnitPlan;
  frame?: StatusFrame;
  sink: { out: (b: Buffer) => void; err: (b: Buffer) => void };
}

/** A unit that is a child process of Petri's: a bwrap sandbox, or an OCI runtime run in the foreground. */
export interface ChildUnit extends RunUnit {
  /** Pre-started (a unit of the pool), or started for its run. */
  warm: boolean;
  labels: Record<string, string>;
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  outputDone: Promise<void>;
  killed: boolean;
  onKill: () => void;
  /** Resolved once everything of the unit is removed. */
  done: Promise<void>;
  markDone: () => void;
  timings: Record<string, number>;
}

/** A pre-started warm interpreter's stdout is read from its start: it says when its imports are done (Python) or it is ready (both). */
export function readFrames(u: RunUnit): void {
  if (u.plan?.kind !== "python" && u.plan?.kind !== "node") return;
  const f = (u.frame = new StatusFrame(() => undefined));
  u.sink.out = (b) => f.push(b);
}

/**
 * Connects the run's output to the unit and, for a pre-started one, hands the run over with
 * `write` (its stdin). A warm interpreter's output goes through its frame reader, which passes
 * the run's own output on once the unit's frames are read.
 */
export function connectRun(u: RunUnit, spec: RunSpec, output: RunOutput, write: (b: Buffer) => void): void {
  if (!u.frame) u.sink.out = output.out;
  u.sink.err = output.err;
  if (!u.plan) return;
  const h = handover(u.plan, spec);
  u.frame?.handover(output.out, h.inProcess);
  write(h.bytes);
}

/**
 * After the run: passes on what the frame reader held back, and records in `timings` whether the
 * run ran in the pre-started interpreter (`interp`) and how long it waited for the unit's imports
 * (`importWait`). Returns the result's `warmFallback`: why a warm interpreter handed the run to a
 * cold start, or why the run passed a unit over (`passedOver`).
 */
export function endRun(frame: StatusFrame | undefined, timings: Record<string, number>, passedOver: string | undefined): { warmFallback?: string } {
  frame?.end();
  if (frame?.status) timings.interp = frame.status.warm ? 1 : 0;
  if (frame?.importWaitMs !== undefined) timings.importWait = frame.importWaitMs;
  if (frame?.status && !frame.status.warm) return { warmFallback: frame.status.reason ?? "" };
  return passedOver !== undefined ? { warmFallback: passedOver } : {};
}

/**
 * Arms the run's time limit once it is handed over. A run handed to a warm interpreter still
 * importing starts its program only when the imports are done (`ready`): its limit starts there,
 * as a cold run's starts with its program, and `onProgramStart` is told (CPU time is counted from
 * there too); the wait before is bounded apart (IMPORT_WAIT_MAX_MS). Before, the wait counted
 * against the limit: a 1.5 s run handed to a datascience unit still importing on a loaded machine
 * timed out before its program began (the conformance suite's pre-start-on pass).
 */
export function armTimeLimit(frame: StatusFrame | undefined, timeoutMs: number, onTimeout: () => void, onProgramStart?: () => void): { clear: () => void } {
  let fired = false;
  const fire = () => { fired = true; onTimeout(); };
  const waiting = frame !== undefined && frame.handedOverAt !== undefined && frame.phase !== "ready";
  let timer = setTimeout(fire, timeoutMs + (waiting ? IMPORT_WAIT_MAX_MS : 0));
  if (waiting) {
    frame.onReady = () => {
      if (fired) return;
      clearTimeout(timer);
      timer = setTimeout(fire, timeoutMs);
      onProgramStart?.();
    };
  }
  return {
    clear: () => {
      clearTimeout(timer);
      if (frame) frame.onReady = undefined;
    },
  };
}
