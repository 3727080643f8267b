import type { Limits } from "../config.js";
import type { FileChanges } from "../workspaces/workspaces.js";
import type { DeclaredDependencies } from "../deps/specs.js";
import type { DependencySummary } from "../deps/service.js";
import type { Artifact } from "./artifacts.js";
import type { ErrorSummary } from "./explain.js";

export interface ExecRequest {
  filename?: string;
  code?: string;
  args?: string[];
  stdin?: string;
  env?: Record<string, string>;
  timeout_ms?: number;
  limits?: Partial<Limits>;
  /** Vault secrets this run may use, in addition to the sandbox's. */
  secrets?: string[];
  /** Hosts this run may reach through the HTTP broker, in addition to the sandbox's. */
  allow_hosts?: string[];
  /** Packages this run needs, in addition to the sandbox's and the workspace's manifests (src/deps). */
  dependencies?: DeclaredDependencies;
  /** Detect and install what the code imports; default: the sandbox's setting, else the server's. */
  auto_detect_dependencies?: boolean;
  /** Run the program on a pseudo-terminal (stdout and stderr arrive merged on stdout). */
  tty?: boolean;
  /**
   * When the run's workspace changes are kept: "always" (default), "on_success" (exit 0, no
   * timeout, kill or OOM) or "never" (a dry run: the changes are reported, not kept).
   */
  commit?: "always" | "on_success" | "never";
}

export type ExecStatus = "running" | "completed" | "failed" | "cancelled";

export interface ExecResult {
  id: string;
  sandbox_id: string;
  status: ExecStatus;
  language: string;
  runtime: string;
  entry: string;
  exit_code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  truncated: boolean;
  duration_ms: number;
  timed_out: boolean;
  oom_killed: boolean;
  cancelled: boolean;
  cpu_time_ms: number | null;
  peak_memory_bytes: number | null;
  files: FileChanges;
  /** The commit mode the run used, and whether its changes are now in the workspace. */
  commit: "always" | "on_success" | "never";
  committed: boolean;
  /** Why the changes were not kept (commit mode, quota, a failed start), or null. */
  not_committed_reason: string | null;
  /** Paths the run changed that an upload changed too while it ran: the upload's version stays. */
  conflicts: string[];
  workspace_bytes: number;
  workspace_quota_bytes: number;
  workspace_quota_exceeded: boolean;
  /** Names of secrets whose value was found in the output and replaced by [REDACTED:name]. */
  redactions: string[];
  /** What was detected, installed or reused for this run (null: the language has no packages). */
  dependencies: DependencySummary | null;
  error: { code: string; message: string } | null;
  created_at: string;
  finished_at: string | null;
  /** For agents (agent-result.ts): how an abnormal run ended, its error, its images and data files. */
  explanation?: string | null;
  error_summary?: ErrorSummary | null;
  artifacts?: Artifact[];
  stdout_cut_bytes?: number;
  stderr_cut_bytes?: number;
}

