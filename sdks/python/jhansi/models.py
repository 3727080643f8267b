"""Data returned by the SDK. Field names follow the server's JSON (snake_case)."""

import base64
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional


def parse_time(s: Optional[str]) -> Optional[datetime]:
    if not s:
        return None
    # datetime.fromisoformat accepts a trailing "Z" only from Python 3.11 on.
    return datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith("Z") else s)


@dataclass
class Limits:
    """Resource limits of a sandbox or of one run. None means the server's default (capped by its maximums)."""

    timeout_ms: Optional[int] = None
    """Wall-clock limit of one run, milliseconds."""
    memory_mb: Optional[int] = None
    """Memory, MiB, no swap."""
    cpus: Optional[float] = None
    """CPU cores, may be fractional."""
    pids: Optional[int] = None
    """Max processes and threads."""
    open_files: Optional[int] = None
    """Max open files per process."""
    file_size_mb: Optional[int] = None
    """Largest file a run may write, MiB."""
    workspace_mb: Optional[int] = None
    """Workspace size quota, MiB."""
    output_bytes: Optional[int] = None
    """Bytes of each output stream kept in the result."""

    def to_wire(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "Limits":
        return cls(**{f.name: w.get(f.name) for f in fields(cls)})


def limits_to_wire(limits: Any) -> Optional[Dict[str, Any]]:
    if limits is None:
        return None
    if isinstance(limits, Limits):
        return limits.to_wire()
    if isinstance(limits, Mapping):
        return {k: v for k, v in limits.items() if v is not None}
    raise TypeError("limits must be a jhansi.Limits or a dict")


@dataclass
class SandboxInfo:
    id: str
    """``sb_…``"""
    tenant_id: str
    language: str
    runtime: str
    status: str
    """``ready`` (idle, no container) or ``running`` (a run is in flight)."""
    limits: Limits
    metadata: Dict[str, str]
    created_at: Optional[datetime]
    last_active_at: Optional[datetime]
    expires_at: Optional[datetime]
    idle_timeout_ms: int
    """Destroyed after this long without activity, milliseconds."""
    ttl_ms: int
    """Absolute lifetime, milliseconds."""
    allow_hosts: List[str] = field(default_factory=list)
    """Hosts its runs may reach over HTTP(S) through Petri's broker; empty: no network at all."""
    secrets: List[str] = field(default_factory=list)
    """Vault secrets its runs may use (the code sees placeholders, never values)."""
    env: Dict[str, str] = field(default_factory=dict)
    """Environment of every run (a run's ``env`` is layered on top)."""
    image: str = ""
    """The image its runs use (``standard``, ``datascience``, …; see ``Sandbox.images()``)."""

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "SandboxInfo":
        return cls(
            id=w["id"], tenant_id=w.get("tenant_id", ""), language=w.get("language", ""), runtime=w.get("runtime", ""),
            status=w.get("status", ""), limits=Limits.from_wire(w.get("limits") or {}), metadata=dict(w.get("metadata") or {}),
            created_at=parse_time(w.get("created_at")), last_active_at=parse_time(w.get("last_active_at")),
            expires_at=parse_time(w.get("expires_at")), idle_timeout_ms=w.get("idle_timeout_ms", 0), ttl_ms=w.get("ttl_ms", 0),
            allow_hosts=list(w.get("allow_hosts") or []), secrets=list(w.get("secrets") or []), env=dict(w.get("env") or {}),
            image=w.get("image") or "",
        )


@dataclass
class ImageInfo:
    """An image the server offers (``GET /v1/images``): what a sandbox created with ``image=name`` has without installing."""

    name: str
    """What ``Sandbox(image=...)`` takes, e.g. ``datascience``."""
    ref: str
    """Docker reference; its tag is a hash of the recipe."""
    description: str
    built: bool
    """Usable on this server now (otherwise the operator runs ``petri images build NAME``)."""
    custom: bool
    """Declared by the operator (``PETRI_IMAGES_FILE``)."""
    external: bool
    """A Docker reference Petri did not build: its contents are unknown."""
    default_for: List[str]
    """Languages that get this image when a sandbox names none."""
    languages: Dict[str, str]
    """Language → toolchain version, e.g. ``{"python": "3.13.5"}``."""
    tools: Dict[str, str]
    python_packages: Dict[str, str]
    """Importable without installing: Python distribution → version."""
    node_packages: Dict[str, str]
    """Resolvable without installing: Node module → version."""
    size_bytes: Optional[int] = None
    built_at: Optional[datetime] = None

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "ImageInfo":
        return cls(
            name=w["name"], ref=w.get("ref", ""), description=w.get("description", ""), built=bool(w.get("built")),
            custom=bool(w.get("custom")), external=bool(w.get("external")), default_for=list(w.get("default_for") or []),
            languages=dict(w.get("languages") or {}), tools=dict(w.get("tools") or {}),
            python_packages=dict(w.get("python_packages") or {}), node_packages=dict(w.get("node_packages") or {}),
            size_bytes=w.get("size_bytes"), built_at=parse_time(w.get("built_at")),
        )


@dataclass
class FileInfo:
    path: str
    """Path inside the workspace, ``/``-separated."""
    type: str
    """``file``, ``directory``, ``symlink`` or ``other``."""
    size: int
    """Bytes."""
    mtime: Optional[datetime]
    sha256: Optional[str] = None
    """Hex sha256 of a file's content, when asked for."""

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "FileInfo":
        return cls(path=w["path"], type=w.get("type", "file"), size=w.get("size", 0), mtime=parse_time(w.get("mtime")), sha256=w.get("sha256"))


@dataclass
class FileChanges:
    """Workspace paths a run created, modified and deleted."""

    created: List[str] = field(default_factory=list)
    modified: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)


def dependencies_to_wire(deps: Mapping[str, Any]) -> Dict[str, List[str]]:
    """``{"python": ["pandas>=2"]}`` as the server takes it (lists of strings per ecosystem)."""
    if isinstance(deps, (str, bytes)) or not isinstance(deps, Mapping):
        raise TypeError('dependencies must be a mapping like {"python": ["pandas>=2"]}')
    return {str(k): [str(p) for p in v] for k, v in deps.items()}


@dataclass
class DependencyReport:
    """What a run (or ``install()``) got: detected imports, the requirements and the environment used."""

    ecosystem: str
    """``python``, ``node`` or ``go``."""
    detected: List[str] = field(default_factory=list)
    """Third-party imports detected in the code and the workspace modules it imports."""
    requirements: List[str] = field(default_factory=list)
    """Requirements that applied (declared, from workspace manifests, detected)."""
    status: str = "none"
    """``installed`` (this call installed the environment), ``reused`` or ``none``."""
    environment: Optional[str] = None
    packages: List[Dict[str, str]] = field(default_factory=list)
    """``{"name", "version", "hash"}`` per package; hash ``sha256:…`` (wheels), ``sha512-…`` (npm), ``h1:…`` (Go)."""
    install_ms: float = 0
    """Time spent installing for this call, milliseconds (0 when reused)."""
    skipped: List[Dict[str, str]] = field(default_factory=list)
    """Detected imports not installed, ``{"name", "reason"}``."""

    @classmethod
    def from_wire(cls, w: Optional[Mapping[str, Any]]) -> Optional["DependencyReport"]:
        if not w:
            return None
        return cls(
            ecosystem=w.get("ecosystem", ""), detected=list(w.get("detected") or []), requirements=list(w.get("requirements") or []),
            status=w.get("status") or "none", environment=w.get("environment"), packages=list(w.get("packages") or []),
            install_ms=w.get("install_ms") or 0, skipped=list(w.get("skipped") or []),
        )


@dataclass
class Artifact:
    """An image or data file a run produced, returned inline (PNG/JPEG/SVG/CSV/JSON, within size caps)."""

    path: str
    """Workspace path, or ``display/figure-N.png`` for a figure shown with plt.show()/display()."""
    mime_type: str
    size: int
    data: Optional[bytes] = None
    """The content, or None when it was too large to return inline (see ``omitted``)."""
    omitted: Optional[str] = None
    """Why the content is not inline."""

    @property
    def text(self) -> Optional[str]:
        """The content as text for CSV, JSON and SVG; None otherwise."""
        if self.data is None or not (self.mime_type.startswith("text/") or self.mime_type in ("application/json", "image/svg+xml")):
            return None
        return self.data.decode("utf-8", "replace")

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "Artifact":
        raw = w.get("data")
        data: Optional[bytes] = None
        if isinstance(raw, str):
            data = base64.b64decode(raw) if w.get("encoding") == "base64" else raw.encode("utf-8")
        return cls(path=w.get("path", ""), mime_type=w.get("mime_type", ""), size=w.get("size", 0), data=data, omitted=w.get("omitted"))


@dataclass
class ErrorSummary:
    """The error a failed run's traceback ends with (Python, Node, Go)."""

    type: str
    """e.g. ``ZeroDivisionError``, ``TypeError``, ``panic``, ``compile error``."""
    message: str
    file: Optional[str] = None
    """Workspace-relative path, e.g. ``main.py``."""
    line: Optional[int] = None

    @classmethod
    def from_wire(cls, w: Optional[Mapping[str, Any]]) -> "Optional[ErrorSummary]":
        if not w:
            return None
        return cls(type=w.get("type", ""), message=w.get("message", ""), file=w.get("file"), line=w.get("line"))


@dataclass
class ExecResult:
    """The outcome of one run. ``output`` is stdout; nothing is raised for a non-zero exit."""

    id: str
    """``ex_…``"""
    sandbox_id: str
    status: str
    """``running``, ``completed`` (the program ended, whatever its exit code), ``failed``, ``cancelled``."""
    entry: str = ""
    """The file that ran, or ``<snippet>``."""
    exit_code: Optional[int] = None
    signal: Optional[str] = None
    """Name of the signal that ended the program (e.g. ``SIGKILL``), if any."""
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    truncated: bool = False
    """Either stream was cut at ``limits.output_bytes``."""
    duration_ms: float = 0
    """Wall-clock duration, milliseconds."""
    timed_out: bool = False
    oom_killed: bool = False
    cancelled: bool = False
    cpu_time_ms: Optional[float] = None
    peak_memory_bytes: Optional[int] = None
    files: FileChanges = field(default_factory=FileChanges)
    workspace_quota_exceeded: bool = False
    dependencies: Optional[DependencyReport] = None
    """Detected, installed or reused packages (None when the language has none)."""
    error: Optional[Dict[str, str]] = None
    """Why the run failed or was stopped (``{"code", "message"}``), else None."""
    explanation: Optional[str] = None
    """One line saying how an abnormal run ended, for a person or a model (``killed: exceeded the 30 s
    time limit``, ``no network in this sandbox: allow the host with allow_hosts``, ``exited with code 1:
    ZeroDivisionError: division by zero (main.py:3)``); None when the run simply succeeded."""
    error_summary: Optional[ErrorSummary] = None
    """The error the traceback of a failed run ends with, else None."""
    artifacts: List[Artifact] = field(default_factory=list)
    """Images and small data files the run created or showed (plt.show()), inline."""
    stdout_cut_bytes: int = 0
    """Bytes cut from the middle of stdout when it exceeded the output limit (head and tail are kept)."""
    stderr_cut_bytes: int = 0
    created_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)
    """The result as the server sent it."""

    @property
    def output(self) -> str:
        """stdout of the run (the E2B-style name)."""
        return self.stdout

    @property
    def ok(self) -> bool:
        """True when the program ran to its end and exited 0."""
        return self.status == "completed" and self.exit_code == 0 and not self.timed_out and not self.oom_killed

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "ExecResult":
        files = w.get("files") or {}
        return cls(
            id=w["id"], sandbox_id=w.get("sandbox_id", ""), status=w.get("status", ""), entry=w.get("entry") or "",
            exit_code=w.get("exit_code"), signal=w.get("signal"), stdout=w.get("stdout") or "", stderr=w.get("stderr") or "",
            stdout_truncated=bool(w.get("stdout_truncated")), stderr_truncated=bool(w.get("stderr_truncated")),
            truncated=bool(w.get("truncated")), duration_ms=w.get("duration_ms") or 0, timed_out=bool(w.get("timed_out")),
            oom_killed=bool(w.get("oom_killed")), cancelled=bool(w.get("cancelled")), cpu_time_ms=w.get("cpu_time_ms"),
            peak_memory_bytes=w.get("peak_memory_bytes"),
            files=FileChanges(list(files.get("created") or []), list(files.get("modified") or []), list(files.get("deleted") or [])),
            workspace_quota_exceeded=bool(w.get("workspace_quota_exceeded")), error=w.get("error"),
            dependencies=DependencyReport.from_wire(w.get("dependencies")),
            explanation=w.get("explanation"), error_summary=ErrorSummary.from_wire(w.get("error_summary")),
            artifacts=[Artifact.from_wire(a) for a in (w.get("artifacts") or [])],
            stdout_cut_bytes=w.get("stdout_cut_bytes") or 0, stderr_cut_bytes=w.get("stderr_cut_bytes") or 0,
            created_at=parse_time(w.get("created_at")), finished_at=parse_time(w.get("finished_at")), raw=dict(w),
        )


@dataclass
class ExecSummary:
    """One line of a sandbox's run history."""

    id: str
    status: str
    entry: str
    """The file that ran, or ``<snippet>``."""
    exit_code: Optional[int]
    timed_out: bool
    oom_killed: bool
    duration_ms: Optional[float]
    created_at: Optional[datetime]
    finished_at: Optional[datetime]

    @classmethod
    def from_wire(cls, w: Mapping[str, Any]) -> "ExecSummary":
        return cls(
            id=w["id"], status=w.get("status", ""), entry=w.get("entry", ""), exit_code=w.get("exit_code"),
            timed_out=bool(w.get("timed_out")), oom_killed=bool(w.get("oom_killed")), duration_ms=w.get("duration_ms"),
            created_at=parse_time(w.get("created_at")), finished_at=parse_time(w.get("finished_at")),
        )


@dataclass
class SyncResult:
    uploaded: int
    """Files whose content was sent."""
    reused: int
    """Files the server filled from content it already had (same key owner, any sandbox)."""
    deleted: int
    """Workspace files deleted because the local directory no longer has them."""
    unchanged: int
    """Files already up to date."""
    bytes_sent: int
    """Bytes of file content sent (manifests and multipart framing not counted)."""
    duration_ms: float
    uploaded_paths: List[str] = field(default_factory=list)
    reused_paths: List[str] = field(default_factory=list)
    deleted_paths: List[str] = field(default_factory=list)
