"""Python SDK for Petri, the self-hosted execution engine for untrusted code.

    from jhansi import Sandbox
    with Sandbox(language="python") as sb:
        result = sb.exec("print('hello from isolation')")
        print(result.output)

Connection settings come from ``api_key=`` / ``url=``, else ``PETRI_API_KEY`` / ``PETRI_URL``.
"""

from ._exec import ExecHandle
from ._ignore import DEFAULT_IGNORES, IgnoreMatcher, LocalEntry, list_local_files
from .async_sandbox import AsyncExecHandle, AsyncFiles, AsyncSandbox
from .exceptions import (
    ERROR_CLASSES,
    AuthenticationException,
    ConfigurationException,
    ConflictException,
    ConnectionException,
    DependencyException,
    ExecNotFoundException,
    FileNotFoundException,
    InvalidRequestException,
    NotFoundException,
    PetriException,
    QuotaExceededException,
    SandboxNotFoundException,
    ServerException,
    TimeoutException,
)
from .files import Files
from .models import Artifact, DependencyReport, ErrorSummary, ExecResult, ExecSummary, FileChanges, FileInfo, ImageInfo, Limits, SandboxInfo, SyncResult
from .sandbox import Sandbox

__version__ = "0.1.0"

__all__ = [
    "Sandbox", "AsyncSandbox", "ExecHandle", "AsyncExecHandle", "Files", "AsyncFiles",
    "ExecResult", "DependencyReport", "ExecSummary", "Artifact", "ErrorSummary", "FileChanges", "FileInfo", "ImageInfo", "Limits", "SandboxInfo", "SyncResult",
    "IgnoreMatcher", "DEFAULT_IGNORES", "LocalEntry", "list_local_files", "ERROR_CLASSES",
    "PetriException", "AuthenticationException", "InvalidRequestException", "NotFoundException",
    "SandboxNotFoundException", "FileNotFoundException", "ExecNotFoundException", "ConflictException",
    "DependencyException", "QuotaExceededException", "ServerException", "TimeoutException", "ConnectionException", "ConfigurationException",
]
