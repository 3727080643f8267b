import { EventEmitter } from "node:events";
import { PetriError } from "../errors.js";
import type { ExecResult } from "./types.js";
import type { DependencySummary } from "../deps/service.js";

export interface ExecEvents {
  stdout: [Buffer];
  stderr: [Buffer];
  done: [ExecResult];
}

/** A run in flight: its output can be followed, stdin written, and it can be cancelled. */
export class RunHandle extends EventEmitter<ExecEvents> {
  readonly abort = new AbortController();
  private readonly stdinQueue: (Buffer | null)[] = [];
  private stdinWake: (() => void) | null = null;
  stdinOpen: boolean;
  result: ExecResult | null = null;
  readonly done: Promise<ExecResult>;
  resolveDone!: (r: ExecResult) => void;
  cancelReason: "cancel" | "quota" | "shutdown" | null = null;
  dependencies: DependencySummary | null = null;
  private redactors: { push(b: Buffer): Buffer; end(): Buffer; redactions: string[] }[] = [];

  trackRedactors(out: RunHandle["redactors"][number], err: RunHandle["redactors"][number]): void {
    this.redactors = [out, err];
  }

  /** Flushes what stream redaction held back (a possible secret prefix) and names what it hid. */
  get streamRedactions(): string[] {
    const [out, err] = this.redactors;
    if (out) { const t = out.end(); if (t.length) this.emit("stdout", t); }
    if (err) { const t = err.end(); if (t.length) this.emit("stderr", t); }
    return this.redactors.flatMap((r) => r.redactions);
  }

  constructor(readonly id: string, readonly sandboxId: string, readonly tenantId: string, interactiveStdin: boolean) {
    super();
    this.stdinOpen = interactiveStdin;
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  writeStdin(data: Buffer): void {
    if (!this.stdinOpen) throw new PetriError("EXEC_NOT_RUNNING", "stdin of this run is closed");
    this.stdinQueue.push(data);
    this.stdinWake?.();
  }

  closeStdin(): void {
    if (!this.stdinOpen) return;
    this.stdinOpen = false;
    this.stdinQueue.push(null);
    this.stdinWake?.();
  }

  async *stdinIterator(): AsyncGenerator<Buffer> {
    for (;;) {
      while (this.stdinQueue.length) {
        const c = this.stdinQueue.shift()!;
        if (c === null) return;
        yield c;
      }
      await new Promise<void>((r) => (this.stdinWake = r));
      this.stdinWake = null;
    }
  }

  /** Ends the run for its followers: the first result given wins, later ones are ignored. */
  settle(result: ExecResult): boolean {
    if (this.result) return false;
    this.result = result;
    this.closeStdin();
    this.resolveDone(result);
    this.emit("done", result);
    return true;
  }

  cancel(reason: "cancel" | "quota" | "shutdown"): void {
    this.cancelReason ??= reason;
    this.abort.abort();
  }
}

