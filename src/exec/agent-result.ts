import type { Limits } from "../config.js";
import type { RunResult } from "../runtimes/types.js";
import type { WorkspaceStore } from "../workspaces/workspaces.js";
import { collectArtifacts, type Artifact } from "./artifacts.js";
import { explainEnd, summarizeError, type ErrorSummary } from "./explain.js";

/** What a result gains for agents: how it ended in one line, the error, the outputs inline. */
export interface AgentFields {
  explanation: string | null;
  error_summary: ErrorSummary | null;
  artifacts: Artifact[];
  stdout_cut_bytes: number;
  stderr_cut_bytes: number;
}

/** Collects the hosts the HTTP broker refused for not being on the allow-list. */
export class BlockedHosts {
  readonly hosts = new Set<string>();

  observe(ev: { action: string; outcome: string; detail?: Record<string, unknown> }): void {
    if (ev.outcome !== "denied" || ev.detail?.reason !== "host_not_allowed") return;
    const host = ev.detail.host;
    if (typeof host === "string" && host) this.hosts.add(host);
  }
}

export interface AgentFieldsInput {
  language: string;
  raw: RunResult | null;
  error: { code: string; message: string } | null;
  stdout: string;
  stderr: string;
  limits: Limits;
  cancelReason: "cancel" | "quota" | "shutdown" | null;
  quotaHit: boolean;
  /** The run had the HTTP broker (allowed hosts or an http secret). */
  networkAllowed: boolean;
  blocked: BlockedHosts | null;
  workspaces: WorkspaceStore;
  sandboxId: string;
  changed: string[];
  displayDir?: string;
  redact?: (b: Buffer) => Buffer;
}

export function agentFields(i: AgentFieldsInput): AgentFields {
  const raw = i.raw;
  // A quota stop is reported as an error with its own message; only a failure to start is "could not start".
  const startError = raw === null && i.error && i.error.code !== "WORKSPACE_QUOTA_EXCEEDED" ? i.error : null;
  const explanation = explainEnd({
    language: i.language,
    startError,
    exitCode: raw?.exitCode ?? null,
    signal: raw?.signal ?? null,
    timedOut: raw?.timedOut ?? false,
    oomKilled: raw?.oomKilled ?? false,
    cancelled: i.cancelReason,
    quotaExceeded: i.quotaHit,
    timeoutMs: i.limits.timeout_ms,
    memoryMb: i.limits.memory_mb,
    workspaceMb: i.limits.workspace_mb,
    fileSizeMb: Math.min(i.limits.file_size_mb, i.limits.workspace_mb),
    outputLimitBytes: i.limits.output_bytes,
    stdoutCutBytes: raw?.stdoutCutBytes,
    stderrCutBytes: raw?.stderrCutBytes,
    blockedHosts: i.blocked ? [...i.blocked.hosts] : [],
    networkAllowed: i.networkAllowed,
    stdout: i.stdout,
    stderr: i.stderr,
  });
  const failed = raw !== null && raw.exitCode !== 0;
  let artifacts: Artifact[] = [];
  if (raw !== null) {
    try {
      artifacts = collectArtifacts({ workspaces: i.workspaces, sandboxId: i.sandboxId, changed: i.changed, displayDir: i.displayDir, redact: i.redact });
    } catch {
      artifacts = [];
    }
  }
  return {
    explanation,
    error_summary: failed ? summarizeError(i.language, i.stderr, i.stdout) : null,
    artifacts,
    stdout_cut_bytes: raw?.stdoutCutBytes ?? 0,
    stderr_cut_bytes: raw?.stderrCutBytes ?? 0,
  };
}
