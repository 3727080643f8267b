/**
 * The one table of error codes. Every error a client can see comes from here, with a stable
 * code and its HTTP status. SDKs mirror these codes into typed errors.
 */
export const ERROR_CODES = {
  // 400
  VALIDATION_ERROR: 400,
  INVALID_JSON: 400,
  INVALID_PATH: 400,
  INVALID_ENCODING: 400,
  UNKNOWN_LANGUAGE: 400,
  UNKNOWN_RUNTIME: 400,
  UNKNOWN_IMAGE: 400,
  IMAGE_LACKS_LANGUAGE: 400,
  LIMIT_ABOVE_MAXIMUM: 400,
  NOT_A_FILE: 400,
  NOT_A_DIRECTORY: 400,
  SYMLINK_REFUSED: 400,
  DEPENDENCY_INVALID: 400,
  DEPENDENCY_NOT_FOUND: 400,
  DEPENDENCY_UNRESOLVABLE: 400,
  DEPENDENCY_INSTALL_FAILED: 400,
  DEPENDENCY_EGRESS_BLOCKED: 400,
  DEPENDENCY_INSTALL_TIMEOUT: 400,
  DEPENDENCIES_UNSUPPORTED: 400,
  DEPENDENCY_TOO_LARGE: 413,
  DIRECTORY_NOT_EMPTY: 409,
  // 401 / 403
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  EGRESS_NOT_ALLOWED: 403,
  // 404
  ROUTE_NOT_FOUND: 404,
  SANDBOX_NOT_FOUND: 404,
  FILE_NOT_FOUND: 404,
  EXEC_NOT_FOUND: 404,
  KEY_NOT_FOUND: 404,
  TENANT_NOT_FOUND: 404,
  SECRET_NOT_FOUND: 404,
  IMAGE_NOT_FOUND: 404,
  // 405 / 409 / 413 / 415 / 429
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  EXEC_NOT_RUNNING: 409,
  CHANGES_NOT_COMMITTED: 409,
  PAYLOAD_TOO_LARGE: 413,
  WORKSPACE_QUOTA_EXCEEDED: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  QUOTA_EXCEEDED: 429,
  DEPENDENCY_QUOTA_EXCEEDED: 429,
  TOO_MANY_REQUESTS: 429,
  // 5xx: only for faults of the server or its host, never for bad input
  INTERNAL: 500,
  RUNTIME_UNAVAILABLE: 503,
  IMAGE_MISSING: 503,
  /** PETRI_AUDIT_FAIL=closed and the audit log cannot be written. */
  AUDIT_UNAVAILABLE: 503,
  REGISTRY_UNAVAILABLE: 503,
  /** The container engine (or bwrap's helper) went away during the run: not the program's doing. */
  ENGINE_LOST: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class PetriError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "PetriError";
    this.code = code;
    this.status = ERROR_CODES[code];
    this.details = details;
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

export function isPetriError(e: unknown): e is PetriError {
  return e instanceof PetriError;
}
