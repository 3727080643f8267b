export { Sandbox, type SandboxCreateOptions, type SandboxListOptions } from "./sandbox.js";
export { ExecHandle, ExecResult, type OutputCallback, type RunOptions, type StartOptions } from "./exec.js";
export { Files, type FileData, type UploadOptions, type WriteEntry } from "./files.js";
export type { SyncOptions, SyncResult } from "./sync.js";
export type { ConnectionOptions } from "./internal/http.js";
export type { Artifact, Dependencies, DependencyReport, ErrorSummary, ExecStatus, ExecSummary, FileChanges, FileInfo, ImageInfo, Language, Limits, SandboxInfo } from "./types.js";
export { IgnoreMatcher, DEFAULT_IGNORES } from "./internal/ignore.js";
export { listLocalFiles, type LocalEntry, type WalkOptions } from "./internal/walk.js";
export {
  PetriError,
  AuthenticationError,
  InvalidRequestError,
  NotFoundError,
  SandboxNotFoundError,
  FileNotFoundError,
  ExecNotFoundError,
  ConflictError,
  DependencyError,
  QuotaExceededError,
  ServerError,
  TimeoutError,
  ConnectionError,
  ConfigurationError,
  ERROR_CLASSES,
  type PetriErrorOptions,
} from "./errors.js";
