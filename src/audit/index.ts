/**
 * The Audit Layer: a tamper-evident local log of what Petri did, streamed to SIEMs.
 * See docs/audit.md for the record format, the sink configuration and the OCSF mapping.
 */
export { AuditLog, type AuditLogOptions, type AuditQuery, type AuditHealth } from "./log.js";
export { verifyAuditLog, runAuditVerifyCli, type VerifyOptions, type VerifyResult, type VerifyCliOptions } from "./verify.js";
export {
  parseSinkConfig, normalizeSinkConfig, describeSink,
  type SinkConfig, type SinkConfigInput, type SinkFormat,
  type FileSinkConfig, type SyslogSinkConfig, type WebhookSinkConfig, type SplunkSinkConfig,
} from "./sinks/config.js";
export type { SinkStatus } from "./sinks/worker.js";
export { webhookSignature, verifyWebhookRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER, type WebhookCheck } from "./sinks/http.js";
export { toOcsf, OCSF_VERSION } from "./ocsf.js";
export { sanitizeDetail, REDACTED } from "./redact.js";
export {
  AUDIT_KINDS, AUDIT_OUTCOMES,
  type AuditEvent, type AuditRecord, type AuditKind, type AuditOutcome, type AuditLogger,
} from "./types.js";
export {
  snapshotWorkspace, diffSnapshots, fileEvents,
  type WorkspaceSnapshot, type WorkspaceChange, type FileState, type SnapshotOptions,
} from "./workspace-diff.js";
