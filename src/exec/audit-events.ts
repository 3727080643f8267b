import { createHash } from "node:crypto";
import type { AuditEvent } from "../audit/types.js";
import { diffSnapshots as contentDiff, fileEvents, type FileState, type WorkspaceChange, type WorkspaceSnapshot } from "../audit/workspace-diff.js";
import { canonicalJson, sha256Hex } from "../audit/canonical.js";
import type { ChangeEntry } from "./overlay/changes.js";
import type { Limits } from "../config.js";
import type { GvisorTrace } from "../runtimes/gvisor-trace.js";
import type { Runtime } from "../runtimes/types.js";
import type { TracerService } from "../tracing/tracer.js";
import { DEFAULT_CAPS, LIBRARY_PREFIXES, type TracedNet, type TraceSummary } from "../tracing/aggregate.js";

/**
 * Builds the audit records of a run: what ran (argv, entry hash, env names, limits, image), what
 * it did to the workspace (hashes before/after, one record per file change) and how it ended.
 * Environment values never enter a record: only names.
 */
/**
 * The audit's view of a change set: the touched entries before and after the run, keyed by path
 * (plus the raw name in base64 after a NUL when the name is not UTF-8), so the audit's diff finds
 * creations, modifications, deletions and renames among exactly what changed.
 */
export function toAuditChanges(entries: ChangeEntry[]): { changes: WorkspaceChange[]; sha256: string } {
  const before = new Map<string, FileState>();
  const after = new Map<string, FileState>();
  for (const e of entries) {
    const key = e.path_b64 ? `${e.path}\0${e.path_b64}` : e.path;
    const t = (x: string) => (x === "dir" ? "dir" : x) as FileState["type"];
    if (e.action !== "created" || e.before_type) {
      before.set(key, { type: t(e.before_type ?? e.type), size: e.before_size ?? e.size, ...(e.before_sha256 ? { sha256: e.before_sha256 } : {}) });
    }
    if (e.action !== "deleted") after.set(key, { type: t(e.type), size: e.size, ...(e.sha256 ? { sha256: e.sha256 } : {}) });
  }
  const snap = (files: Map<string, FileState>): WorkspaceSnapshot => ({ files, truncated: false, sha256: "" });
  const changes = contentDiff(snap(before), snap(after)).map((c) => {
    const [p, b64] = c.path.split("\0");
    const out: WorkspaceChange = { ...c, path: p, ...(b64 ? { path_b64: b64 } : {}) };
    if (c.new_path) {
      const [np, nb64] = c.new_path.split("\0");
      out.new_path = np;
      if (nb64) out.new_path_b64 = nb64;
    }
    return out;
  });
  return { changes, sha256: sha256Hex(canonicalJson(entries.map((e) => [e.path, e.path_b64 ?? null, e.action, e.type, e.size, e.sha256 ?? null, e.before_sha256 ?? null]))) };
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
  auditLevel: AuditLevel;
  /** PETRI_AUDIT_FAIL, in each run's record: what would have happened had the log failed. */
  auditFailMode?: "closed" | "open";
}

/**
 * How much of a run the audit sees, said in each run's record:
 *   ebpf            programs executed, files opened, network attempts and DNS names (host tracer)
 *   gvisor-strace   programs executed, files opened, connections (gVisor's own strace: runsc-trace, runsc-direct)
 *   workspace-diff  only what changed in the workspace: the reason says why nothing more
 */
export interface AuditLevel {
  level: "ebpf" | "gvisor-strace" | "workspace-diff";
  reason: string | null;
}

export function runAuditLevel(runtimeName: string, runtime: Runtime, tracer?: TracerService): AuditLevel {
  const variant = (runtime as { variant?: string }).variant;
  if (runtimeName === "runsc-direct" || variant === "runsc-direct") {
    // The host tracer would see gVisor's kernel, not the program: gVisor's own strace, per run.
    return (runtime as { gvisorTrace?: boolean }).gvisorTrace
      ? { level: "gvisor-strace", reason: null }
      : { level: "workspace-diff", reason: "gVisor's strace did not work with runsc-direct at start: its runs are not traced" };
  }
  if (runtimeName === "runsc" || variant === "runsc" || variant === "runsc-trace") {
    return variant === "runsc-trace"
      ? { level: "gvisor-strace", reason: null }
      : { level: "workspace-diff", reason: "runsc-trace is not registered with Docker or did not work at start: gVisor runs are not traced" };
  }
  if (tracer?.active) return { level: "ebpf", reason: null };
  const st = tracer?.status();
  return { level: "workspace-diff", reason: st?.reason ?? "the host tracer is off (PETRI_AUDIT_TRACE=off)" };
}

/** What the tracer saw of a run: the host tracer's summary, or gVisor's strace. */
export type RunTrace = { summary: TraceSummary | null; complete: boolean; reason: string | null } | { gvisor: GvisorTrace };

export function runStartEvent(c: RunAuditContext): AuditEvent {
  return {
    kind: "exec", action: "exec.start", outcome: "success",
    tenant_id: c.tenant_id, key_id: c.key_id, sandbox_id: c.sandbox_id, exec_id: c.exec_id,
    detail: {
      language: c.language, runtime: c.runtime, image: c.image, argv: clip(c.argv), entry: c.entry,
      code_sha256: c.code !== undefined ? sha(c.code) : c.entrySha256 ?? null,
      env_names: c.envNames, limits: c.limits,
      audit_level: c.auditLevel.level, audit_level_reason: c.auditLevel.reason, audit_fail_mode: c.auditFailMode ?? null,
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

/**
 * Success means the program ran and exited 0. Everything else is a failure with its reason: an
 * error of Petri's (e.g. WORKSPACE_QUOTA_EXCEEDED), CANCELLED, TIMEOUT, OOM_KILLED,
 * KILLED_BY_SIGNAL or NONZERO_EXIT (docs/audit.md, "Run outcomes").
 */
export function runOutcome(o: RunOutcome): { outcome: "success" | "failure"; code: string | null; reason: string | null } {
  if (o.error) return { outcome: "failure", code: o.error.code, reason: o.error.message };
  if (o.cancelled || o.status === "cancelled") return { outcome: "failure", code: "CANCELLED", reason: "the run was cancelled" };
  if (o.timed_out) return { outcome: "failure", code: "TIMEOUT", reason: `the run exceeded its time limit` };
  if (o.oom_killed) return { outcome: "failure", code: "OOM_KILLED", reason: "the run exceeded its memory limit and was killed" };
  if (o.signal) return { outcome: "failure", code: "KILLED_BY_SIGNAL", reason: `the program was killed by ${o.signal}` };
  if (o.exit_code !== 0) return { outcome: "failure", code: "NONZERO_EXIT", reason: o.exit_code === null ? "the program's exit status is unknown" : `the program exited with code ${o.exit_code}` };
  if (o.status !== "completed") return { outcome: "failure", code: "RUN_FAILED", reason: `the run ended as ${o.status}` };
  return { outcome: "success", code: null, reason: null };
}

/** `committed`: whether the run's changes were applied to the workspace (commit mode, quota, failure). */
export function runFinishEvents(c: RunAuditContext, cs: { entries: ChangeEntry[]; committed: boolean }, o: RunOutcome, trace?: RunTrace): AuditEvent[] {
  const { changes, sha256: changesSha } = toAuditChanges(cs.entries);
  const ctx = { tenant_id: c.tenant_id, key_id: c.key_id, sandbox_id: c.sandbox_id, exec_id: c.exec_id };
  const result = runOutcome(o);
  const traced = trace && "gvisor" in trace
    ? { summary: gvisorSummary(trace.gvisor), complete: !trace.gvisor.truncated && !trace.gvisor.cut,
      reason: trace.gvisor.cut ?? (trace.gvisor.truncated ? "gVisor's trace held more distinct entries than are kept" : null) }
    : trace;
  const level = c.auditLevel.level !== "workspace-diff" && !traced
    ? { level: "workspace-diff" as const, reason: "the run was not traced (it did not start, or the tracer had no record of it)" }
    : c.auditLevel;
  const s = traced?.summary ?? null;
  const finish: AuditEvent = {
    kind: "exec", action: "exec.finish",
    outcome: result.outcome,
    error_code: result.code,
    ...ctx,
    detail: {
      language: c.language, runtime: c.runtime, image: c.image, argv: clip(c.argv), entry: c.entry,
      code_sha256: c.code !== undefined ? sha(c.code) : c.entrySha256 ?? null,
      env_names: c.envNames, limits: c.limits,
      status: o.status, exit_code: o.exit_code, signal: o.signal, timed_out: o.timed_out, oom_killed: o.oom_killed, cancelled: o.cancelled,
      duration_ms: o.duration_ms, cpu_time_ms: o.cpu_time_ms, peak_memory_bytes: o.peak_memory_bytes,
      stdout_sha256: sha(o.stdout), stdout_bytes: o.stdout.length, stdout_truncated: o.stdout_truncated,
      stderr_sha256: sha(o.stderr), stderr_bytes: o.stderr.length, stderr_truncated: o.stderr_truncated,
      changes_sha256: changesSha, changes_committed: cs.committed,
      files_changed: changes.length,
      reason: result.reason,
      audit_level: level.level, audit_level_reason: level.reason ?? traced?.reason ?? null, audit_fail_mode: c.auditFailMode ?? null,
      trace_complete: traced ? traced.complete && s !== null : null,
      trace_counts: s ? {
        programs: s.execs.length, files: s.files.length, library_opens: s.libraries.count, network: s.net.length, dns: s.dns.length,
        dropped: s.dropped, lost_events: s.lost_events,
      } : null,
    },
  };
  const files = fileEvents(changes, ctx);
  // A change set that was not committed is still recorded: what the run did, marked as not kept.
  if (!cs.committed) for (const f of files) f.detail = { ...f.detail, committed: false };
  return [finish, ...files, ...(s ? traceEvents(s, ctx) : [])];
}

// Errors that mean the sandbox's policy stopped the attempt (no network, seccomp), not the peer.
const DENIED_ERRNOS = new Set(["ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM", "EADDRNOTAVAIL"]);

function netOutcome(n: TracedNet): "success" | "denied" | "failure" {
  if (n.errno === null || n.errno === "EINPROGRESS") return "success";
  return DENIED_ERRNOS.has(n.errno) ? "denied" : "failure";
}

const NET_ACTION: Record<TracedNet["op"], string> = { connect: "net.connect", bind: "net.bind", sendto: "net.send" };

/**
 * One record per distinct program executed, file opened (path and access), network attempt and
 * DNS name, each with its count; reads of shared libraries in one record. Paths are as the
 * program saw them inside the sandbox; argv only, never the environment.
 */
function traceEvents(t: TraceSummary, ctx: Pick<AuditEvent, "tenant_id" | "key_id" | "sandbox_id" | "exec_id">): AuditEvent[] {
  const source = t.source;
  const out: AuditEvent[] = [];
  for (const e of t.execs) {
    out.push({ kind: "process", action: "process.exec", outcome: e.errno ? "failure" : "success", error_code: e.errno, ...ctx,
      detail: { path: e.path, path_b64: e.path_b64, argv: clip(e.argv), argv_truncated: e.argv_truncated || undefined, warm: e.warm || undefined, count: e.count, pid: e.pid || undefined, uid: source === "ebpf" ? e.uid : undefined, source } });
  }
  for (const f of t.files) {
    out.push({ kind: "file", action: "file.open", outcome: f.errno ? (f.errno === "EACCES" || f.errno === "EPERM" || f.errno === "EROFS" ? "denied" : "failure") : "success",
      error_code: f.errno, ...ctx,
      detail: { path: f.path, path_b64: f.path_b64, access: f.access, flags: f.flags.join("|"), count: f.count, pid: f.pid || undefined, source } });
  }
  if (t.libraries.count > 0) {
    out.push({ kind: "file", action: "file.open", outcome: "success", ...ctx,
      detail: { path: "[shared libraries]", access: "read", count: t.libraries.count, distinct: t.libraries.distinct, distinct_at_least: t.libraries.distinct_at_least, paths: t.libraries.paths, source } });
  }
  for (const n of t.net) {
    const outcome = netOutcome(n);
    out.push({ kind: "network", action: NET_ACTION[n.op], outcome, error_code: n.errno, ...ctx,
      detail: {
        ...(n.family === "unix" ? { socket_path: n.address } : { ip: n.address, port: n.port }),
        family: n.family, protocol: n.op === "sendto" ? "udp" : undefined, count: n.count, pid: n.pid || undefined, source,
        reason: outcome === "denied" ? `refused inside the sandbox (${n.errno}): the run has no network route there` : undefined,
      } });
  }
  for (const d of t.dns) {
    out.push({ kind: "network", action: "dns.query", outcome: "success", ...ctx, detail: { hostname: d.name, count: d.count, pid: d.pid || undefined, source } });
  }
  return out;
}

/**
 * gVisor's strace, in the host tracer's shape and with the same aggregation: successful
 * read-only opens of shared libraries and runtime files summed in one record. gVisor's strace
 * has no host pids, uids or DNS names.
 */
function gvisorSummary(g: GvisorTrace): TraceSummary {
  const files: TraceSummary["files"] = [];
  const libs = new Set<string>();
  let libCount = 0;
  for (const o of g.opens) {
    const errno = o.errno ?? null;
    if (!o.write && errno === null && LIBRARY_PREFIXES.some((x) => o.path.startsWith(x))) {
      libCount += o.count ?? 1;
      libs.add(o.path);
      continue;
    }
    files.push({ path: o.path, access: o.write ? "write" : "read", flags: o.flags.split("|"), count: o.count ?? 1, errno, pid: 0 });
  }
  return {
    source: "gvisor-strace",
    execs: g.execs.map((e) => ({ path: e.path, argv: e.argv, argv_truncated: false, count: e.count ?? 1, errno: null, pid: 0, uid: 0, ...(e.warm ? { warm: true } : {}) })),
    files,
    libraries: { count: libCount, distinct: libs.size, paths: [...libs].slice(0, DEFAULT_CAPS.libraryPaths) },
    net: (g.connects ?? []).map((n) => ({ op: "connect", family: n.family, address: n.address, port: n.port, count: n.count, errno: n.errno, pid: 0 })),
    dns: [],
    dropped: 0,
    lost_events: 0,
  };
}

/**
 * A broker's event as an audit record, with the names docs/audit.md documents: actions
 * `net.request` / `net.connect` (HTTP broker) and `db.connect` / `db.query` / `db.disconnect` /
 * `db.cancel` (PostgreSQL broker); fields in snake case (`secret_name`, `bytes_out`,
 * `duration_ms`, `query`). Values never include a secret: the brokers only report names.
 */
export function brokerAuditEvent(ev: { kind: "network" | "datastore"; action: string; outcome: AuditEvent["outcome"]; detail: Record<string, unknown> },
  ctx: Pick<AuditEvent, "tenant_id" | "key_id" | "sandbox_id" | "exec_id">): AuditEvent {
  const prefix = ev.kind === "network" ? "net" : "db";
  const verb = ev.action === "http_request" ? "request" : ev.action.replace(/^(net|db)\./, "");
  const rename: Record<string, string> = {
    secret: "secret_name", bytesSent: "bytes_out", bytesReceived: "bytes_in", durationMs: "duration_ms",
    statement: "query", connection: "connection_id", bytesFromClient: "bytes_out", bytesFromServer: "bytes_in",
  };
  const detail: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev.detail)) detail[rename[k] ?? k] = v;
  if (ev.kind === "datastore") detail.engine ??= "postgresql";
  const reason = typeof detail.reason === "string" ? detail.reason : null;
  return {
    kind: ev.kind, action: `${prefix}.${verb}`, outcome: ev.outcome, ...ctx,
    error_code: ev.outcome === "success" ? null : (reason ?? "").toUpperCase().replace(/[^A-Z0-9_]/g, "_").slice(0, 64) || (ev.outcome === "denied" ? "DENIED" : "FAILED"),
    detail,
  };
}
