/**
 * Typed errors. Every error the server sends carries a stable `code` from its one error table
 * (src/errors.ts of the server); this module maps each code to one class. The Python SDK
 * mirrors the table: `SandboxNotFoundError` ↔ `SandboxNotFoundException`, and so on.
 */

export interface PetriErrorOptions {
  /** Server error code (`SANDBOX_NOT_FOUND`…), or a client-side one (`TIMEOUT`, `CONNECTION`, `CONFIGURATION`). */
  code?: string;
  /** HTTP status, when the error came from a response. */
  status?: number;
  details?: Record<string, unknown>;
  cause?: unknown;
}

/** Base of every error this SDK throws. */
export class PetriError extends Error {
  /** Stable error code: one of the server's codes, or `TIMEOUT`, `CONNECTION`, `CONFIGURATION`. */
  readonly code: string;
  /** HTTP status of the response, or undefined for client-side errors. */
  readonly status?: number;
  readonly details?: Record<string, unknown>;

  constructor(message: string, opts: PetriErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? "UNKNOWN";
    this.status = opts.status;
    this.details = opts.details;
  }
}

/** The API key is missing, unknown or revoked (401), or lacks the right (403). */
export class AuthenticationError extends PetriError {}
/** The request was refused as malformed: validation, bad path, unknown language… (400, 405, 415). */
export class InvalidRequestError extends PetriError {}
/** Something the request names does not exist (404). */
export class NotFoundError extends PetriError {}
/** No sandbox with this id for this API key (it may have expired or been killed). */
export class SandboxNotFoundError extends NotFoundError {}
/** No such file or directory in the sandbox's workspace. */
export class FileNotFoundError extends NotFoundError {}
/** No run with this id in this sandbox. */
export class ExecNotFoundError extends NotFoundError {}
/** The request conflicts with the current state: directory not empty, run no longer live (409). */
export class ConflictError extends PetriError {}
/** A dependency was refused or could not be installed (`DEPENDENCY_*`): nothing ran. */
export class DependencyError extends InvalidRequestError {}
/** A size or count quota was hit: payload too large, workspace quota, sandbox quota, rate limit (413, 429). */
export class QuotaExceededError extends PetriError {}
/** The server failed or cannot run the request now (5xx): runtime unavailable, image missing… */
export class ServerError extends PetriError {}
/** A client-side deadline passed before the server answered (`requestTimeoutMs`, `timeoutMs`). */
export class TimeoutError extends PetriError {}
/** The server could not be reached (refused, reset, DNS). */
export class ConnectionError extends PetriError {}
/** The client is not configured: no API key or URL given and none in the environment. */
export class ConfigurationError extends PetriError {}

type ErrorClass = new (message: string, opts?: PetriErrorOptions) => PetriError;

/** The one table: server error code → class. Codes not listed fall back on the HTTP status. */
export const ERROR_CLASSES: Readonly<Record<string, ErrorClass>> = Object.freeze({
  VALIDATION_ERROR: InvalidRequestError,
  INVALID_JSON: InvalidRequestError,
  INVALID_PATH: InvalidRequestError,
  INVALID_ENCODING: InvalidRequestError,
  UNKNOWN_LANGUAGE: InvalidRequestError,
  UNKNOWN_RUNTIME: InvalidRequestError,
  UNKNOWN_IMAGE: InvalidRequestError,
  IMAGE_LACKS_LANGUAGE: InvalidRequestError,
  LIMIT_ABOVE_MAXIMUM: InvalidRequestError,
  NOT_A_FILE: InvalidRequestError,
  NOT_A_DIRECTORY: InvalidRequestError,
  SYMLINK_REFUSED: InvalidRequestError,
  METHOD_NOT_ALLOWED: InvalidRequestError,
  UNSUPPORTED_MEDIA_TYPE: InvalidRequestError,
  UNAUTHORIZED: AuthenticationError,
  FORBIDDEN: AuthenticationError,
  SANDBOX_NOT_FOUND: SandboxNotFoundError,
  FILE_NOT_FOUND: FileNotFoundError,
  EXEC_NOT_FOUND: ExecNotFoundError,
  ROUTE_NOT_FOUND: NotFoundError,
  KEY_NOT_FOUND: NotFoundError,
  TENANT_NOT_FOUND: NotFoundError,
  SECRET_NOT_FOUND: NotFoundError,
  IMAGE_NOT_FOUND: NotFoundError,
  DIRECTORY_NOT_EMPTY: ConflictError,
  CONFLICT: ConflictError,
  EXEC_NOT_RUNNING: ConflictError,
  CHANGES_NOT_COMMITTED: ConflictError,
  PAYLOAD_TOO_LARGE: QuotaExceededError,
  WORKSPACE_QUOTA_EXCEEDED: QuotaExceededError,
  QUOTA_EXCEEDED: QuotaExceededError,
  TOO_MANY_REQUESTS: QuotaExceededError,
  INTERNAL: ServerError,
  RUNTIME_UNAVAILABLE: ServerError,
  IMAGE_MISSING: ServerError,
  DEPENDENCY_INVALID: DependencyError,
  DEPENDENCY_NOT_FOUND: DependencyError,
  DEPENDENCY_UNRESOLVABLE: DependencyError,
  DEPENDENCY_INSTALL_FAILED: DependencyError,
  DEPENDENCY_EGRESS_BLOCKED: DependencyError,
  DEPENDENCY_INSTALL_TIMEOUT: DependencyError,
  DEPENDENCIES_UNSUPPORTED: DependencyError,
  DEPENDENCY_TOO_LARGE: QuotaExceededError,
  DEPENDENCY_QUOTA_EXCEEDED: QuotaExceededError,
  REGISTRY_UNAVAILABLE: ServerError,
});

function classForStatus(status: number): ErrorClass {
  if (status === 401 || status === 403) return AuthenticationError;
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 413 || status === 429) return QuotaExceededError;
  if (status >= 500) return ServerError;
  if (status >= 400) return InvalidRequestError;
  return PetriError;
}

/** Builds the typed error for an error response (`{"error": {"code", "message", "details"}}`). */
export function errorFromResponse(status: number, body: unknown): PetriError {
  const err = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
  const code = typeof err?.code === "string" ? err.code : `HTTP_${status}`;
  const message = typeof err?.message === "string" ? err.message : `the server answered HTTP ${status}`;
  const details = err?.details && typeof err.details === "object" ? (err.details as Record<string, unknown>) : undefined;
  const Cls = ERROR_CLASSES[code] ?? classForStatus(status);
  return new Cls(message, { code, status, details });
}
