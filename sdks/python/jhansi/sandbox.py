"""The synchronous client: ``Sandbox``."""

import os
import threading
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, TypeVar, Union

from ._exec import (
    DEFAULT_WAIT_GRACE,
    CallbackFailed,
    ExecHandle,
    OutputCallback,
    read_exec_stream,
    wrap_stream_error,
)
from ._http import ApiClient, encode_path
from ._sync import sync_directory
from .exceptions import ConnectionException, SandboxNotFoundException
from .files import Files
from .models import DependencyReport, ExecResult, ExecSummary, ImageInfo, Limits, SandboxInfo, SyncResult, dependencies_to_wire, limits_to_wire

S = TypeVar("S", bound="Sandbox")


def _ms(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(round(seconds * 1000))


class Sandbox:
    """A sandbox: a workspace that survives between runs, and a language to run code in.

    Each run gets a fresh, hardened container. ``Sandbox(language="python")`` creates one on the
    server; use it as a context manager (``with Sandbox(...) as sb:``) or call ``kill()``.

    Connection: ``api_key`` (default env ``PETRI_API_KEY``), ``url`` (default env ``PETRI_URL``),
    ``request_timeout`` (seconds an API call that does not wait for a run may take; default 30).
    """

    id: str
    """``sb_…``"""
    files: Files
    """The sandbox's workspace."""

    def __init__(
        self,
        language: str,
        *,
        image: Optional[str] = None,
        runtime: Optional[str] = None,
        timeout: Optional[float] = None,
        limits: Union[Limits, Mapping[str, Any], None] = None,
        ttl: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        metadata: Optional[Mapping[str, str]] = None,
        dependencies: Optional[Mapping[str, Iterable[str]]] = None,
        auto_detect_dependencies: Optional[bool] = None,
        allow_hosts: Optional[Iterable[str]] = None,
        secrets: Optional[Iterable[str]] = None,
        env: Optional[Mapping[str, str]] = None,
        api_key: Optional[str] = None,
        url: Optional[str] = None,
        request_timeout: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Creates a sandbox. Starts no container: that happens per run.

        :param language: ``python``, ``node``, ``typescript``, ``go`` or ``bash``.
        :param image: the image its runs use, by name (server ``image``), e.g. ``datascience`` for pandas,
            numpy and matplotlib; ``Sandbox.images()`` says what each holds. Default: the language's default image.
        :param runtime: one of the runtimes the server allows (``GET /v1/runtimes``); default the server's.
        :param timeout: default wall-clock limit of each run, seconds (``limits.timeout_ms``).
        :param limits: resource limits of the sandbox's runs (``Limits`` or a dict of server field names).
        :param ttl: absolute lifetime of the sandbox, seconds (server ``ttl_ms``).
        :param idle_timeout: the sandbox is destroyed after this many seconds without activity.
        :param metadata: up to 32 string labels kept with the sandbox.
        :param dependencies: packages every run gets, e.g. ``{"python": ["pandas>=2"], "node": ["lodash@4"]}``,
            from the server's registries (installed in the background, reused by runs).
        :param auto_detect_dependencies: detect each run's imports and install what is missing.
        :param allow_hosts: hosts the runs may reach over HTTP(S), e.g. ``["api.github.com", "*.example.com"]``;
            without any there is no network at all.
        :param secrets: vault secrets the runs may use (``PUT /v1/secrets/{name}`` first); the code sees placeholders.
        :param env: environment of every run; a run's ``env`` is layered on top (PYTHONPATH, NODE_PATH, PATH
            are prepended to, not replaced).
        """
        client = ApiClient(api_key, url, request_timeout, headers)
        wire_limits = dict(limits_to_wire(limits) or {})
        if timeout is not None:
            wire_limits["timeout_ms"] = _ms(timeout)
        body: Dict[str, Any] = {"language": language}
        if image is not None:
            body["image"] = image
        if runtime is not None:
            body["runtime"] = runtime
        if wire_limits:
            body["limits"] = wire_limits
        if ttl is not None:
            body["ttl_ms"] = _ms(ttl)
        if idle_timeout is not None:
            body["idle_timeout_ms"] = _ms(idle_timeout)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if dependencies is not None:
            body["dependencies"] = dependencies_to_wire(dependencies)
        if auto_detect_dependencies is not None:
            body["auto_detect_dependencies"] = bool(auto_detect_dependencies)
        body.update(_agent_options(allow_hosts, secrets, False))
        if env is not None:
            body["env"] = dict(env)
        self._init(client, client.json("POST", "/v1/sandboxes", json=body))

    def _init(self, client: ApiClient, wire: Mapping[str, Any]) -> None:
        self._client = client
        self._info = SandboxInfo.from_wire(wire)
        self.id = self._info.id
        self.files = Files(client, self.id)

    @classmethod
    def create(cls: Type[S], language: str, **kwargs: Any) -> S:
        """Same as ``Sandbox(language, ...)``."""
        return cls(language, **kwargs)

    @classmethod
    def connect(cls: Type[S], sandbox_id: str, *, api_key: Optional[str] = None, url: Optional[str] = None,
                request_timeout: Optional[float] = None, headers: Optional[Mapping[str, str]] = None) -> S:
        """Attaches to an existing sandbox; ``SandboxNotFoundException`` if there is none with this id for this key."""
        client = ApiClient(api_key, url, request_timeout, headers)
        sb = cls.__new__(cls)
        sb._init(client, client.json("GET", f"/v1/sandboxes/{encode_path(sandbox_id)}"))
        return sb

    @staticmethod
    def list(*, limit: Optional[int] = None, api_key: Optional[str] = None, url: Optional[str] = None,
             request_timeout: Optional[float] = None, headers: Optional[Mapping[str, str]] = None) -> List[SandboxInfo]:
        """Lists the sandboxes of the API key's tenant, oldest first (all pages, up to ``limit``)."""
        client = ApiClient(api_key, url, request_timeout, headers)
        out: List[SandboxInfo] = []
        cursor: Optional[str] = None
        while True:
            want = 1000 if limit is None else min(1000, limit - len(out))
            page = client.json("GET", "/v1/sandboxes", query={"limit": want, "cursor": cursor})
            out.extend(SandboxInfo.from_wire(w) for w in page["items"])
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and len(out) >= limit):
                break
        return out if limit is None else out[:limit]

    @staticmethod
    def images(*, api_key: Optional[str] = None, url: Optional[str] = None,
               request_timeout: Optional[float] = None, headers: Optional[Mapping[str, str]] = None) -> List[ImageInfo]:
        """The images the server offers and what each contains (languages, versions, packages); pass a name as ``image=``."""
        client = ApiClient(api_key, url, request_timeout, headers)
        return [ImageInfo.from_wire(w) for w in client.json("GET", "/v1/images")["images"]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, language={self.language!r})"

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    @property
    def language(self) -> str:
        return self._info.language

    @property
    def info(self) -> SandboxInfo:
        """The sandbox as last fetched (see ``get_info()`` for a fresh copy)."""
        return self._info

    def get_info(self) -> SandboxInfo:
        """Fetches the sandbox's current state."""
        self._info = SandboxInfo.from_wire(self._client.json("GET", f"/v1/sandboxes/{encode_path(self.id)}"))
        return self._info

    def kill(self) -> bool:
        """Deletes the sandbox, cancelling its runs. Returns False if it was already gone."""
        try:
            self._client.json("DELETE", f"/v1/sandboxes/{encode_path(self.id)}", timeout=self._client.request_timeout + DEFAULT_WAIT_GRACE)
            return True
        except SandboxNotFoundException:
            return False

    # Runs -----------------------------------------------------------------------------------

    def exec(self, code: str, *, args: Optional[Iterable[str]] = None, stdin: Optional[str] = None,
             env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
             limits: Union[Limits, Mapping[str, Any], None] = None, on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None, wait_grace: float = DEFAULT_WAIT_GRACE,
             dependencies: Optional[Mapping[str, Iterable[str]]] = None,
             auto_detect_dependencies: Optional[bool] = None, allow_hosts: Optional[Iterable[str]] = None,
             secrets: Optional[Iterable[str]] = None, tty: bool = False) -> ExecResult:
        """Runs a snippet of the sandbox's language and waits for its result.

        :param args: arguments appended to the command line.
        :param stdin: text written to the program's stdin, which is then closed.
        :param env: extra environment variables of the run.
        :param timeout: wall-clock limit of the run, seconds (default the sandbox's). A run that hits
            it is killed and its result has ``timed_out=True``; the client waits this long plus
            ``wait_grace`` seconds before raising ``TimeoutException``.
        :param on_stdout: called with each chunk of stdout while the run lives (streams NDJSON).
        :param on_stderr: called with each chunk of stderr while the run lives.
        :param dependencies: packages this run needs, e.g. ``{"python": ["pandas>=2"]}``, installed (or
            reused) from the server's registries before it starts; URLs, paths and installer options
            raise ``DependencyException``.
        :param auto_detect_dependencies: detect the code's imports and install what is missing
            (default: the sandbox's setting, else the server's).
        :param allow_hosts: hosts this run may reach over HTTP(S), in addition to the sandbox's.
        :param secrets: vault secrets this run may use, in addition to the sandbox's.
        :param tty: run the program on a pseudo-terminal (for programs that behave differently on one);
            stdout and stderr then arrive merged in ``stdout``.
        """
        body = self._body({"code": code}, args, stdin, env, timeout, limits, False, dependencies, auto_detect_dependencies)
        body.update(_agent_options(allow_hosts, secrets, tty))
        return self._run_to_end(body, timeout, limits, on_stdout, on_stderr, wait_grace)

    def run(self, filename: str, *, args: Optional[Iterable[str]] = None, stdin: Optional[str] = None,
            env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
            limits: Union[Limits, Mapping[str, Any], None] = None, on_stdout: Optional[OutputCallback] = None,
            on_stderr: Optional[OutputCallback] = None, wait_grace: float = DEFAULT_WAIT_GRACE,
             dependencies: Optional[Mapping[str, Iterable[str]]] = None,
             auto_detect_dependencies: Optional[bool] = None, allow_hosts: Optional[Iterable[str]] = None,
             secrets: Optional[Iterable[str]] = None, tty: bool = False) -> ExecResult:
        """Runs a workspace file (e.g. ``main.py``) with ``args`` and waits for its result; options as ``exec``."""
        body = self._body({"filename": filename}, args, stdin, env, timeout, limits, False, dependencies, auto_detect_dependencies)
        body.update(_agent_options(allow_hosts, secrets, tty))
        return self._run_to_end(body, timeout, limits, on_stdout, on_stderr, wait_grace)

    def start(self, code: str, *, args: Optional[Iterable[str]] = None, stdin: Optional[str] = None,
              stdin_open: bool = False, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
              limits: Union[Limits, Mapping[str, Any], None] = None, on_stdout: Optional[OutputCallback] = None,
              on_stderr: Optional[OutputCallback] = None, wait_grace: float = DEFAULT_WAIT_GRACE,
              dependencies: Optional[Mapping[str, Iterable[str]]] = None,
              auto_detect_dependencies: Optional[bool] = None, allow_hosts: Optional[Iterable[str]] = None,
              secrets: Optional[Iterable[str]] = None, tty: bool = False) -> ExecHandle:
        """Starts a snippet in the background; the handle can ``wait()``, ``kill()`` and ``send_stdin()``.

        :param stdin_open: keep stdin open so ``handle.send_stdin()`` can write to it until ``close_stdin()``.
        :param on_stdout: if given (or ``on_stderr``), output is streamed to it from a background thread.
        """
        body = self._body({"code": code}, args, stdin, env, timeout, limits, stdin_open, dependencies, auto_detect_dependencies)
        body.update(_agent_options(allow_hosts, secrets, tty))
        return self._start(body, timeout, limits, on_stdout, on_stderr, wait_grace)

    def start_file(self, filename: str, *, args: Optional[Iterable[str]] = None, stdin: Optional[str] = None,
                   stdin_open: bool = False, env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                   limits: Union[Limits, Mapping[str, Any], None] = None, on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None, wait_grace: float = DEFAULT_WAIT_GRACE,
              dependencies: Optional[Mapping[str, Iterable[str]]] = None,
              auto_detect_dependencies: Optional[bool] = None, allow_hosts: Optional[Iterable[str]] = None,
              secrets: Optional[Iterable[str]] = None, tty: bool = False) -> ExecHandle:
        """Starts a workspace file in the background; see ``start``."""
        body = self._body({"filename": filename}, args, stdin, env, timeout, limits, stdin_open, dependencies, auto_detect_dependencies)
        body.update(_agent_options(allow_hosts, secrets, tty))
        return self._start(body, timeout, limits, on_stdout, on_stderr, wait_grace)

    def get_exec(self, exec_id: str) -> ExecHandle:
        """A handle on an earlier run of this sandbox, e.g. one started detached by another process."""
        h = ExecHandle(self._client, self.id, exec_id, default_wait=self._wait_for(None, None, DEFAULT_WAIT_GRACE))
        h.status()  # ExecNotFoundException now rather than at wait()
        return h

    def install(self, dependencies: Optional[Mapping[str, Iterable[str]]] = None, *, python: Optional[Iterable[str]] = None,
                node: Optional[Iterable[str]] = None, go: Optional[Iterable[str]] = None,
                timeout: float = 600) -> DependencyReport:
        """Installs packages now, from the server's registries, and keeps them for the sandbox's runs.

        ``sb.install(python=["pandas>=2"])`` or ``sb.install({"node": ["lodash@4"]})``. Returns what
        was installed or reused; a package the registry lacks, or a spec that is a URL or a path,
        raises ``DependencyException``.
        """
        wire: Dict[str, Any] = dependencies_to_wire(dependencies or {})
        for eco, pkgs in (("python", python), ("node", node), ("go", go)):
            if pkgs is not None:
                wire[eco] = [str(p) for p in pkgs]
        r = self._client.json("POST", f"/v1/sandboxes/{encode_path(self.id)}/dependencies", json=wire, timeout=timeout)
        return DependencyReport.from_wire(r)

    def history(self, limit: Optional[int] = None) -> List[ExecSummary]:
        """Past runs of the sandbox, newest first."""
        r = self._client.json("GET", f"/v1/sandboxes/{encode_path(self.id)}/exec", query={"limit": limit})
        return [ExecSummary.from_wire(w) for w in r["items"]]

    def sync(self, local_dir: Union[str, "os.PathLike[str]"], target: str = "", *, delete_extraneous: bool = False,
             default_ignores: bool = True, ignore: Optional[Iterable[str]] = None) -> SyncResult:
        """Brings a local directory's files into the workspace, sending only content the server lacks.

        Honours ``.petriignore`` (gitignore syntax) and skips ``.git``, ``node_modules``,
        ``__pycache__``, ``.venv`` unless ``default_ignores=False``.

        :param target: workspace folder to sync into (default the workspace root).
        :param delete_extraneous: also delete files below ``target`` that the local directory does
            not have (default False: files a run wrote, or ``files.upload`` put there, survive).
        :param ignore: extra gitignore-syntax patterns, applied after ``.petriignore``.
        """
        return sync_directory(self._client, self.id, os.fspath(local_dir), target=target, delete_extraneous=delete_extraneous,
                              default_ignores=default_ignores, ignore=ignore)

    # Internals ------------------------------------------------------------------------------

    @property
    def _exec_path(self) -> str:
        return f"/v1/sandboxes/{encode_path(self.id)}/exec"

    def _wait_for(self, timeout: Optional[float], limits: Any, grace: float) -> float:
        if timeout is not None:
            run = timeout
        else:
            lw = limits_to_wire(limits) or {}
            ms = lw.get("timeout_ms") or self._info.limits.timeout_ms or 0
            run = ms / 1000
        return run + grace

    @staticmethod
    def _body(target: Dict[str, Any], args: Optional[Iterable[str]], stdin: Optional[str], env: Optional[Mapping[str, str]],
              timeout: Optional[float], limits: Any, stdin_open: bool,
              dependencies: Optional[Mapping[str, Iterable[str]]] = None,
              auto_detect_dependencies: Optional[bool] = None) -> Dict[str, Any]:
        body = dict(target)
        if dependencies is not None:
            body["dependencies"] = dependencies_to_wire(dependencies)
        if auto_detect_dependencies is not None:
            body["auto_detect_dependencies"] = bool(auto_detect_dependencies)
        if args is not None:
            body["args"] = [str(a) for a in args]
        if stdin is not None:
            body["stdin"] = stdin
        if env is not None:
            body["env"] = dict(env)
        if timeout is not None:
            body["timeout_ms"] = _ms(timeout)
        lw = limits_to_wire(limits)
        if lw:
            body["limits"] = lw
        if stdin_open:
            body["stdin_open"] = True
        return body

    def _run_to_end(self, body: Dict[str, Any], timeout: Optional[float], limits: Any, on_stdout: Optional[OutputCallback],
                    on_stderr: Optional[OutputCallback], grace: float) -> ExecResult:
        wait = self._wait_for(timeout, limits, grace)
        if on_stdout is None and on_stderr is None:
            return ExecResult.from_wire(self._client.json("POST", self._exec_path, json=body, timeout=wait))
        deadline = time.monotonic() + wait
        r = self._client.open("POST", self._exec_path, json={**body, "stream": True},
                              headers={"Accept": "application/x-ndjson"}, timeout=wait)
        exec_id = r.headers.get("x-petri-exec-id") or "?"
        handle = ExecHandle(self._client, self.id, exec_id, default_wait=wait)
        try:
            result = read_exec_stream(r, on_stdout, on_stderr, deadline, exec_id)
        except CallbackFailed as e:
            # The caller's callback failed: stop the run rather than leave it going unobserved.
            r.close()
            try:
                handle.kill()
            except Exception:
                pass
            raise e.error
        except ConnectionException:
            r.close()
            if exec_id == "?":
                raise
            return handle.wait(max(0.0, deadline - time.monotonic()))
        finally:
            r.close()
        if result is None:
            if exec_id == "?":
                raise ConnectionException("the output stream ended before the run's result", code="CONNECTION")
            return handle.wait(max(0.0, deadline - time.monotonic()))
        return result

    def _start(self, body: Dict[str, Any], timeout: Optional[float], limits: Any, on_stdout: Optional[OutputCallback],
               on_stderr: Optional[OutputCallback], grace: float) -> ExecHandle:
        wait = self._wait_for(timeout, limits, grace)
        if on_stdout is None and on_stderr is None:
            r = self._client.json("POST", self._exec_path, json={**body, "detach": True})
            return ExecHandle(self._client, self.id, r["id"], default_wait=wait)
        deadline = time.monotonic() + wait
        resp = self._client.open("POST", self._exec_path, json={**body, "stream": True},
                                 headers={"Accept": "application/x-ndjson"}, timeout=wait)
        exec_id = resp.headers.get("x-petri-exec-id")
        if not exec_id:
            resp.close()
            raise ConnectionException("the server did not name the run it started", code="CONNECTION")
        box: Dict[str, Any] = {}
        handle_ref: Dict[str, ExecHandle] = {}

        def pump() -> None:
            try:
                box["result"] = read_exec_stream(resp, on_stdout, on_stderr, deadline, exec_id)
            except BaseException as e:  # noqa: B902 - handed to wait()
                box["error"] = wrap_stream_error(e, exec_id)
                if isinstance(e, CallbackFailed) and "h" in handle_ref:
                    try:
                        handle_ref["h"].kill()
                    except Exception:
                        pass
            finally:
                resp.close()

        thread = threading.Thread(target=pump, name=f"jhansi-stream-{exec_id}", daemon=True)
        handle = ExecHandle(self._client, self.id, exec_id, default_wait=wait, stream_thread=thread, stream_box=box)
        handle_ref["h"] = handle
        thread.start()
        return handle


def _agent_options(allow_hosts: Optional[Iterable[str]], secrets: Optional[Iterable[str]], tty: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if allow_hosts is not None:
        out["allow_hosts"] = list(allow_hosts)
    if secrets is not None:
        out["secrets"] = list(secrets)
    if tty:
        out["tty"] = True
    return out
