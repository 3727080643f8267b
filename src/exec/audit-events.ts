import { createHash } from "node:crypto";
import type { AuditEvent } from "../audit/types.js";
import { diffSnapshots as contentDiff, fileEvents, type FileState, type WorkspaceSnapshot } from "../audit/workspace-diff.js";
import { canonicalJson, sha256Hex } from "../audit/canonical.js";
import type { FileEntry } from "../workspaces/workspaces.js";
import type { Limits } from "../config.js";
import type { GvisorTrace } from "../runtimes/gvisor-trace.js";

/**
 * Builds the audit records of a run: what ran (argv, entry hash, env names, limits, image), what
 * it did to the workspace (hashes before/after, one record per file change) and how it ended.
 * Environment values never enter a record: only names.
 */
export function toAuditSnapshot(entries: FileEntry[]): WorkspaceSnapshot {
  const files = new Map<string, FileState>();
  for (const e of entries) {
    const type = e.type === "directory" ? "dir" : e.type;
    files.set(e.path, { type, size: e.type === "directory" ? 0 : e.size, ...(e.sha256 ? { sha256: e.sha256 } : {}) });
  }
  const list = [...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return { files, truncated: false, sha256: sha256Hex(canonicalJson(list)) };
}

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

/** Long argv entries (snippets) are cut in the record; the full snippet's hash is kept. */
function clip(argv: string[]): string[] {
  return argv.map((a) => (a.length > 512 ? `${a.slice(0, 512)}…[${a.length} bytes]` : a));
}

export interface RunAuditContext {
  tenant_id: string;
  key_id: string;
  sandbox_id: string;
  exec_id: string;
  language: string;
  runtime: string;
  image: string;
  argv: string[];
  entry: string;
  code?: string;
  entrySha256?: string;
  envNames: string[];
  limits: Limits;
}

export function runStartEvent(c: RunAuditContext, before: WorkspaceSnapshot): AuditEvent {
  return {
    kind: "exec", action: "exec.start", outcome: "success",
    tenant_id: c.tenant_id, key_id: c.key_id, sandbox_id: c.sandbox_id, exec_id: c.exec_id,
    detail: {
      language: c.language, runtime: c.runtime, image: c.image, argv: clip(c.argv), entry: c.entry,
      code_sha256: c.code !== undefined ? sha(c.code) : c.entrySha256 ?? null,
      env_names: c.envNames, limits: c.limits, workspace_sha256_before: before.sha256,
    },
  };
}

export interface RunOutcome {
  status: string;
  exit_code: number | null;
  signal: string | null;
  timed_out: boolean;
  oom_killed: boolean;
  cancelled: boolean;
  duration_ms: number;
  cpu_time_ms: number | null;
  peak_memory_bytes: number | null;
  stdout: Buffer;
  stderr: Buffer;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  error: { code: string; message: string } | null;
}

export function runFinishEvents(c: RunAuditContext, before: WorkspaceSnapshot, after: WorkspaceSnapshot, o: RunOutcome, trace?: GvisorTrace): AuditEvent[] {
  const changes = contentDiff(before, after);
  const ctx = { tenant_id: c.tenant_id, key_id: c.key_id, sandbox_id: c.sandbox_id, exec_id: c.exec_id };
  const finish: AuditEvent = {
    kind: "exec", action: "exec.finish",
    outcome: o.status === "completed" && !o.error ? "success" : "failure",
    error_code: o.error?.code ?? (o.timed_out ? "TIMEOUT" : o.oom_killed ? "OOM_KILLED" : null),
    ...ctx,
    detail: {
      language: c.language, runtime: c.runtime, image: c.image, argv: clip(c.argv), entry: c.entry,
      code_sha256: c.code !== undefined ? sha(c.code) : c.entrySha256 ?? null,
      env_names: c.envNames, limits: c.limits,
      status: o.status, exit_code: o.exit_code, signal: o.signal, timed_out: o.timed_out, oom_killed: o.oom_killed, cancelled: o.cancelled,
      duration_ms: o.duration_ms, cpu_time_ms: o.cpu_time_ms, peak_memory_bytes: o.peak_memory_bytes,
      stdout_sha256: sha(o.stdout), stdout_bytes: o.stdout.length, stdout_truncated: o.stdout_truncated,
      stderr_sha256: sha(o.stderr), stderr_bytes: o.stderr.length, stderr_truncated: o.stderr_truncated,
      workspace_sha256_before: before.sha256, workspace_sha256_after: after.sha256,
      files_changed: changes.length,
    },
  };
  return [finish, ...fileEvents(changes, ctx), ...(trace ? traceEvents(trace, ctx) : [])];
}

/**
 * One record per distinct file the program opened and program it executed, as gVisor's strace
 * saw them (paths inside the container; argv only, never the environment).
 */
function traceEvents(t: GvisorTrace, ctx: Pick<AuditEvent, "tenant_id" | "key_id" | "sandbox_id" | "exec_id">): AuditEvent[] {
  const source = t.truncated ? "gvisor-strace (truncated)" : "gvisor-strace";
  return [
    ...t.execs.map((e): AuditEvent => ({ kind: "process", action: "process.exec", outcome: "success", ...ctx,
      detail: { path: e.path, argv: clip(e.argv), source } })),
    ...t.opens.map((o): AuditEvent => ({ kind: "file", action: "file.open", outcome: "success", ...ctx,
      detail: { path: o.path, flags: o.flags, write: o.write, source } })),
  ];
}
