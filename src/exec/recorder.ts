import type { DB } from "../store/db.js";
import { PetriError } from "../errors.js";
import type { AuditEvent } from "../audit/types.js";
import { EngineLostError, type RunResult } from "../runtimes/types.js";
import type { CapturedChanges } from "./capture.js";
import type { ChangeEntry } from "./overlay/changes.js";
import { runFinishEvents, runStartEvent, type RunAuditContext, type RunTrace } from "./audit-events.js";
import type { ExecResult } from "./types.js";

type Log = { error: (o: object, m?: string) => void };

/** Everything a run's result is made of; `buildResult` is a pure function of it. */
export interface ResultInput {
  execId: string;
  sandboxId: string;
  language: string;
  runtime: string;
  entry: string;
  /** The runtime's result; null when the run never started (then `error` says why). */
  raw: RunResult | null;
  cancelled: boolean;
  /** Output after redaction. */
  stdout: Buffer;
  stderr: Buffer;
  redactions: string[];
  dependencies: ExecResult["dependencies"];
  changes: CapturedChanges;
  commit: ExecResult["commit"];
  quotaBytes: number;
  error: ExecResult["error"];
  createdAt: number;
  finishedAt: number;
}

export function buildResult(i: ResultInput): ExecResult {
  const raw = i.raw;
  return {
    id: i.execId,
    sandbox_id: i.sandboxId,
    status: i.cancelled ? "cancelled" : raw === null ? "failed" : "completed",
    language: i.language,
    runtime: i.runtime,
    entry: i.entry,
    exit_code: raw?.exitCode ?? null,
    signal: raw?.signal ?? null,
    stdout: i.stdout.toString("utf8"),
    stderr: i.stderr.toString("utf8"),
    stdout_truncated: raw?.stdoutTruncated ?? false,
    stderr_truncated: raw?.stderrTruncated ?? false,
    truncated: Boolean(raw?.stdoutTruncated || raw?.stderrTruncated),
    duration_ms: raw?.durationMs ?? 0,
    timed_out: raw?.timedOut ?? false,
    oom_killed: raw?.oomKilled ?? false,
    cancelled: i.cancelled,
    cpu_time_ms: raw?.cpuTimeMs ?? null,
    peak_memory_bytes: raw?.peakMemoryBytes ?? null,
    files: i.changes.files,
    commit: i.commit,
    committed: i.changes.committed,
    not_committed_reason: i.changes.committed ? null : i.changes.notCommitted,
    conflicts: i.changes.conflicts,
    workspace_bytes: i.changes.usage,
    workspace_quota_bytes: i.quotaBytes,
    workspace_quota_exceeded: i.changes.quotaHit,
    redactions: [...i.redactions].sort(),
    dependencies: i.dependencies,
    error: i.error,
    created_at: new Date(i.createdAt).toISOString(),
    finished_at: new Date(i.finishedAt).toISOString(),
  };
}

/** Maps a runtime's failure to start a run to the error a client sees (details go to the log). */
export function startFailure(e: unknown, image: string): NonNullable<ExecResult["error"]> {
  const msg = (e as Error)?.message ?? String(e);
  // A run lost to the engine says so, with its own code: it is neither the program's exit nor a start-up failure.
  if (e instanceof PetriError || e instanceof EngineLostError) return { code: e.code, message: e.message };
  return /No such image|not found/i.test(msg)
    ? { code: "IMAGE_MISSING", message: `image ${image} is not available; run \`petri images build\`` }
    // The real cause, on one line: the agent (or person) reading the result can often fix it.
    : { code: "RUNTIME_UNAVAILABLE", message: `the runtime could not start this run: ${msg.replace(/\s+/g, " ").trim().slice(0, 500)}` };
}

/**
 * Records a run: its row in the store (running, then its result) and its audit events (start,
 * finish, one per file change). Recording never fails a run: a failure is logged.
 */
export class RunRecorder {
  /** Runs whose result is out and whose audit records wait for their trace. */
  private readonly pending = new Set<Promise<void>>();
  private readonly pendingBySandbox = new Map<string, Promise<void>>();

  constructor(private readonly d: {
    db: DB;
    audit?: { append(ev: AuditEvent): unknown; appendMany?(evs: AuditEvent[]): unknown; appendDurable?(evs: AuditEvent[]): Promise<unknown> };
    log: Log;
  }) {}

  get auditing(): boolean {
    return Boolean(this.d.audit);
  }

  /** The run's row, status running. Throws (nothing recorded) when the store refuses it. */
  insert(r: { execId: string; sandboxId: string; tenantId: string; request: object; createdAt: number }): void {
    this.d.db.prepare("INSERT INTO execs(id, sandbox_id, tenant_id, status, request_json, created_at) VALUES (?, ?, ?, 'running', ?, ?)")
      .run(r.execId, r.sandboxId, r.tenantId, JSON.stringify(r.request), r.createdAt);
  }

  /**
   * The run's exec.start record, placed in the log now (its order is fixed); resolves once it is
   * durable (the caller starts the program only then), never rejects (a failure is logged).
   */
  started(ctx: RunAuditContext): Promise<void> {
    if (!this.d.audit) return Promise.resolve();
    return this.appendDurable([runStartEvent(ctx)]);
  }

  /**
   * Stores the result and the change set; appends the finish, per-file and trace audit events.
   * The trace may still be on its way (the host tracer catching up with the run's end): then the
   * result is stored now and the records follow, all at once, when the trace has arrived — a run's
   * exec.finish is written once, complete. The promise settles when they are appended (never
   * rejects); `recordsSettled` waits for every run's.
   */
  finished(result: ExecResult, changes: ChangeEntry[], audit: { ctx: RunAuditContext; stdout: Buffer; stderr: Buffer; trace?: RunTrace | Promise<RunTrace | undefined> } | null): Promise<void> {
    try {
      this.d.db.prepare("UPDATE execs SET status = ?, result_json = ?, changes_json = ?, finished_at = ? WHERE id = ?")
        .run(result.status, JSON.stringify(result), JSON.stringify(changes), Date.now(), result.id);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, exec: result.id }, "could not record run result");
    }
    if (!audit || !this.d.audit) return Promise.resolve();
    const record = (trace: RunTrace | undefined) => {
      try {
        const cs = { entries: changes, committed: result.committed };
        const evs = runFinishEvents(audit.ctx, cs, { ...result, stdout: audit.stdout, stderr: audit.stderr }, trace);
        // One write and one sync for all of them (a traced run can have a thousand records); the
        // sync is a group commit that the result does not wait for (the request's own record,
        // written after these, is durable before its answer, so these are too).
        return this.appendDurable(evs, result.id);
      } catch (e) {
        this.d.log.error({ err: (e as Error).message, exec: result.id }, "could not record the run in the audit log");
      }
    };
    const sb = result.sandbox_id;
    const p = (audit.trace instanceof Promise
      ? audit.trace.then(record, (e: Error) => record({ summary: null, complete: false, reason: `the trace failed: ${e.message}` }))
      : Promise.resolve(record(audit.trace)))
      .finally(() => {
        this.pending.delete(p);
        if (this.pendingBySandbox.get(sb) === p) this.pendingBySandbox.delete(sb);
      });
    this.pending.add(p);
    this.pendingBySandbox.set(sb, p);
    return p;
  }

  /**
   * Resolves once the sandbox's previous run is in the audit log: a run's exec.start waits for
   * it, so one sandbox's records stay in the order of its runs.
   */
  recordedFor(sandboxId: string): Promise<void> {
    return this.pendingBySandbox.get(sandboxId) ?? Promise.resolve();
  }

  /**
   * Resolves once the records of every run that has a result now are in the audit log (runs
   * finishing meanwhile are not waited for, so a busy server cannot keep a reader waiting).
   */
  async recordsSettled(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  append(ev: AuditEvent): void {
    try {
      this.d.audit?.append(ev);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, action: ev.action }, "audit append failed");
    }
  }

  /** Appends in one group commit when the log has them (else synchronously); never rejects. */
  private async appendDurable(evs: AuditEvent[], exec?: string): Promise<void> {
    const audit = this.d.audit;
    if (!audit) return;
    try {
      if (audit.appendDurable) await audit.appendDurable(evs);
      else if (audit.appendMany) audit.appendMany(evs);
      else for (const ev of evs) audit.append(ev);
    } catch (e) {
      this.d.log.error({ err: (e as Error).message, exec: exec ?? evs[0]?.exec_id, action: evs.length === 1 ? evs[0]!.action : undefined }, "audit append failed");
    }
  }
}
