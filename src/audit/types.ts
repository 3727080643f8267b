export const AUDIT_KINDS = ["api", "auth", "exec", "file", "network", "datastore", "process"] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];
export const AUDIT_OUTCOMES = ["success", "denied", "failure"] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

/** What callers pass to `AuditLog.append`. */
export interface AuditEvent {
  kind: AuditKind;
  /** Dotted verb, e.g. "sandbox.create", "exec.finish", "auth.failure", "file.create", "net.request". */
  action: string;
  outcome: AuditOutcome;
  tenant_id?: string | null;
  key_id?: string | null;
  sandbox_id?: string | null;
  exec_id?: string | null;
  client_ip?: string | null;
  request_id?: string | null;
  error_code?: string | null;
  /** Kind-specific fields (docs/audit.md). Never secret values: see the redaction guard. */
  detail?: Record<string, unknown>;
}

/**
 * A stored record. All optional fields of the event are present (null when absent) so every
 * record has the same shape. Checkpoints are records too, with kind "audit".
 */
export interface AuditRecord {
  id: string;
  seq: number;
  time: string;
  kind: AuditKind | "audit";
  action: string;
  outcome: AuditOutcome;
  tenant_id: string | null;
  key_id: string | null;
  sandbox_id: string | null;
  exec_id: string | null;
  client_ip: string | null;
  request_id: string | null;
  error_code: string | null;
  detail: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

/** Minimal pino-compatible logger. */
export interface AuditLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: AuditLogger = { debug() {}, info() {}, warn() {}, error() {} };

export const CHECKPOINT_ACTION = "audit.checkpoint";
