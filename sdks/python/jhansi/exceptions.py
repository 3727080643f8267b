"""Typed exceptions, mirrored from the TypeScript SDK's errors.

Every error the server sends carries a stable ``code`` from its one error table; this module maps
each code to one class. TypeScript ↔ Python: ``SandboxNotFoundError`` ↔ ``SandboxNotFoundException``,
and so on (``PetriError`` ↔ ``PetriException``).
"""

from typing import Any, Dict, Optional, Type


class PetriException(Exception):
    """Base of every exception this SDK raises."""

    def __init__(self, message: str, *, code: str = "UNKNOWN", status: Optional[int] = None,
                 details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        #: Stable error code: one of the server's codes, or ``TIMEOUT``, ``CONNECTION``, ``CONFIGURATION``.
        self.code = code
        #: HTTP status of the response, or None for client-side errors.
        self.status = status
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class AuthenticationException(PetriException):
    """The API key is missing, unknown or revoked (401), or lacks the right (403)."""


class InvalidRequestException(PetriException):
    """The request was refused as malformed: validation, bad path, unknown language… (400, 405, 415)."""


class NotFoundException(PetriException):
    """Something the request names does not exist (404)."""


class SandboxNotFoundException(NotFoundException):
    """No sandbox with this id for this API key (it may have expired or been killed)."""


class FileNotFoundException(NotFoundException):
    """No such file or directory in the sandbox's workspace."""


class ExecNotFoundException(NotFoundException):
    """No run with this id in this sandbox."""


class ConflictException(PetriException):
    """The request conflicts with the current state: directory not empty, run no longer live (409)."""


class DependencyException(InvalidRequestException):
    """A dependency was refused or could not be installed (``DEPENDENCY_*``): nothing ran. Twin of ``DependencyError``."""


class QuotaExceededException(PetriException):
    """A size or count quota was hit: payload too large, workspace quota, sandbox quota, rate limit (413, 429)."""


class ServerException(PetriException):
    """The server failed or cannot run the request now (5xx): runtime unavailable, image missing…"""


class TimeoutException(PetriException):
    """A client-side deadline passed before the server answered (``request_timeout``, ``timeout``)."""


class ConnectionException(PetriException):
    """The server could not be reached (refused, reset, DNS)."""


class ConfigurationException(PetriException):
    """The client is not configured: no API key or URL given and none in the environment."""


#: The one table: server error code → class. Codes not listed fall back on the HTTP status.
ERROR_CLASSES: Dict[str, Type[PetriException]] = {
    "VALIDATION_ERROR": InvalidRequestException,
    "INVALID_JSON": InvalidRequestException,
    "INVALID_PATH": InvalidRequestException,
    "INVALID_ENCODING": InvalidRequestException,
    "UNKNOWN_LANGUAGE": InvalidRequestException,
    "UNKNOWN_RUNTIME": InvalidRequestException,
    "UNKNOWN_IMAGE": InvalidRequestException,
    "IMAGE_LACKS_LANGUAGE": InvalidRequestException,
    "LIMIT_ABOVE_MAXIMUM": InvalidRequestException,
    "NOT_A_FILE": InvalidRequestException,
    "NOT_A_DIRECTORY": InvalidRequestException,
    "SYMLINK_REFUSED": InvalidRequestException,
    "METHOD_NOT_ALLOWED": InvalidRequestException,
    "UNSUPPORTED_MEDIA_TYPE": InvalidRequestException,
    "UNAUTHORIZED": AuthenticationException,
    "FORBIDDEN": AuthenticationException,
    "SANDBOX_NOT_FOUND": SandboxNotFoundException,
    "FILE_NOT_FOUND": FileNotFoundException,
    "EXEC_NOT_FOUND": ExecNotFoundException,
    "ROUTE_NOT_FOUND": NotFoundException,
    "KEY_NOT_FOUND": NotFoundException,
    "TENANT_NOT_FOUND": NotFoundException,
    "SECRET_NOT_FOUND": NotFoundException,
    "IMAGE_NOT_FOUND": NotFoundException,
    "DIRECTORY_NOT_EMPTY": ConflictException,
    "CONFLICT": ConflictException,
    "EXEC_NOT_RUNNING": ConflictException,
    "CHANGES_NOT_COMMITTED": ConflictException,
    "PAYLOAD_TOO_LARGE": QuotaExceededException,
    "WORKSPACE_QUOTA_EXCEEDED": QuotaExceededException,
    "QUOTA_EXCEEDED": QuotaExceededException,
    "TOO_MANY_REQUESTS": QuotaExceededException,
    "INTERNAL": ServerException,
    "RUNTIME_UNAVAILABLE": ServerException,
    "IMAGE_MISSING": ServerException,
    "DEPENDENCY_INVALID": DependencyException,
    "DEPENDENCY_NOT_FOUND": DependencyException,
    "DEPENDENCY_UNRESOLVABLE": DependencyException,
    "DEPENDENCY_INSTALL_FAILED": DependencyException,
    "DEPENDENCY_EGRESS_BLOCKED": DependencyException,
    "DEPENDENCY_INSTALL_TIMEOUT": DependencyException,
    "DEPENDENCIES_UNSUPPORTED": DependencyException,
    "DEPENDENCY_TOO_LARGE": QuotaExceededException,
    "DEPENDENCY_QUOTA_EXCEEDED": QuotaExceededException,
    "REGISTRY_UNAVAILABLE": ServerException,
}


def _class_for_status(status: int) -> Type[PetriException]:
    if status in (401, 403):
        return AuthenticationException
    if status == 404:
        return NotFoundException
    if status == 409:
        return ConflictException
    if status in (413, 429):
        return QuotaExceededException
    if status >= 500:
        return ServerException
    if status >= 400:
        return InvalidRequestException
    return PetriException


def error_from_response(status: int, body: Any) -> PetriException:
    """Builds the typed exception for an error response (``{"error": {"code", "message", "details"}}``)."""
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code") if isinstance(err.get("code"), str) else f"HTTP_{status}"
    message = err.get("message") if isinstance(err.get("message"), str) else f"the server answered HTTP {status}"
    details = err.get("details") if isinstance(err.get("details"), dict) else None
    cls = ERROR_CLASSES.get(code) or _class_for_status(status)
    return cls(message, code=code, status=status, details=details)
