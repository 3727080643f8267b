"""The asyncio client: ``AsyncSandbox``, a thin layer over the synchronous one.

Blocking HTTP calls run in worker threads (``asyncio.to_thread``); output callbacks, plain or
``async def``, are always called on the event loop, in order.
"""

import asyncio
import functools
import inspect
import os
from typing import Any, Awaitable, Callable, Iterable, List, Mapping, Optional, Union

from ._exec import ExecHandle
from .files import FileData, Files
from .models import DependencyReport, ExecResult, ExecSummary, FileInfo, ImageInfo, SandboxInfo, SyncResult
from .sandbox import Sandbox

AsyncOutputCallback = Callable[[str], Union[None, Awaitable[None]]]


def _on_loop(cb: Optional[AsyncOutputCallback], loop: asyncio.AbstractEventLoop) -> Optional[Callable[[str], None]]:
    """Turns a callback into one a worker thread can call: it runs on the loop, and the thread waits for it."""
    if cb is None:
        return None

    async def call(data: str) -> None:
        out = cb(data)
        if inspect.isawaitable(out):
            await out

    def from_thread(data: str) -> None:
        asyncio.run_coroutine_threadsafe(call(data), loop).result()

    return from_thread


async def _to_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


class AsyncExecHandle:
    """A background run; see ``ExecHandle``."""

    def __init__(self, handle: ExecHandle) -> None:
        self._h = handle
        self.id = handle.id
        self.sandbox_id = handle.sandbox_id

    def __repr__(self) -> str:
        return f"AsyncExecHandle(id={self.id!r}, sandbox_id={self.sandbox_id!r})"

    async def status(self) -> ExecResult:
        return await _to_thread(self._h.status)

    async def wait(self, timeout: Optional[float] = None) -> ExecResult:
        return await _to_thread(self._h.wait, timeout)

    async def kill(self) -> ExecResult:
        return await _to_thread(self._h.kill)

    async def send_stdin(self, data: str) -> None:
        await _to_thread(self._h.send_stdin, data)

    async def close_stdin(self) -> None:
        await _to_thread(self._h.close_stdin)


class AsyncFiles:
    """``sandbox.files`` of an ``AsyncSandbox``; see ``Files``."""

    def __init__(self, files: Files) -> None:
        self._f = files

    async def write(self, path: str, data: FileData) -> FileInfo:
        return await _to_thread(self._f.write, path, data)

    async def write_many(self, files: Iterable[Any]) -> List[FileInfo]:
        return await _to_thread(self._f.write_many, list(files))

    async def read(self, path: str, format: str = "text") -> Any:
        return await _to_thread(self._f.read, path, format)  # type: ignore[call-overload]

    async def download(self, path: str, local_path: Union[str, "os.PathLike[str]"]) -> None:
        await _to_thread(self._f.download, path, local_path)

    async def list(self, path: str = "", recursive: bool = True, hashes: Optional[bool] = None) -> List[FileInfo]:
        return await _to_thread(self._f.list, path, recursive, hashes)

    async def exists(self, path: str) -> bool:
        return await _to_thread(self._f.exists, path)

    async def remove(self, path: str, recursive: bool = False) -> None:
        await _to_thread(self._f.remove, path, recursive)

    async def upload(self, local_dir: Union[str, "os.PathLike[str]"], remote_dir: str = "", **kwargs: Any) -> List[FileInfo]:
        return await _to_thread(self._f.upload, local_dir, remote_dir, **kwargs)


class AsyncSandbox:
    """asyncio twin of ``Sandbox``.

    ``sb = await AsyncSandbox.create(language="python")``, or
    ``async with AsyncSandbox(language="python") as sb:`` (created on enter, killed on exit).
    Options as ``Sandbox``.
    """

    def __init__(self, language: Optional[str] = None, **kwargs: Any) -> None:
        self._create_args = (language, kwargs)
        self._sb: Optional[Sandbox] = None
        self._files: Optional[AsyncFiles] = None

    @classmethod
    def _wrap(cls, sb: Sandbox) -> "AsyncSandbox":
        out = cls.__new__(cls)
        out._create_args = (None, {})
        out._sb = sb
        out._files = AsyncFiles(sb.files)
        return out

    @classmethod
    async def create(cls, language: str, **kwargs: Any) -> "AsyncSandbox":
        """Creates a sandbox on the server."""
        return cls._wrap(await _to_thread(Sandbox, language, **kwargs))

    @classmethod
    async def connect(cls, sandbox_id: str, **kwargs: Any) -> "AsyncSandbox":
        """Attaches to an existing sandbox; ``SandboxNotFoundException`` if there is none."""
        return cls._wrap(await _to_thread(Sandbox.connect, sandbox_id, **kwargs))

    @staticmethod
    async def list(**kwargs: Any) -> List[SandboxInfo]:
        """Lists the sandboxes of the API key's tenant, oldest first."""
        return await _to_thread(Sandbox.list, **kwargs)

    @staticmethod
    async def images(**kwargs: Any) -> List[ImageInfo]:
        """The images the server offers and what each contains; see ``Sandbox.images``."""
        return await _to_thread(Sandbox.images, **kwargs)

    async def __aenter__(self) -> "AsyncSandbox":
        if self._sb is None:
            language, kwargs = self._create_args
            if language is None:
                raise TypeError("AsyncSandbox(language=...) is needed to create a sandbox")
            self._sb = await _to_thread(Sandbox, language, **kwargs)
            self._files = AsyncFiles(self._sb.files)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.kill()

    @property
    def sync_sandbox(self) -> Sandbox:
        """The underlying synchronous ``Sandbox``."""
        if self._sb is None:
            raise RuntimeError("the sandbox is not created yet: use `await AsyncSandbox.create(...)` or `async with`")
        return self._sb

    @property
    def id(self) -> str:
        return self.sync_sandbox.id

    @property
    def language(self) -> str:
        return self.sync_sandbox.language

    @property
    def info(self) -> SandboxInfo:
        return self.sync_sandbox.info

    @property
    def files(self) -> AsyncFiles:
        self.sync_sandbox
        assert self._files is not None
        return self._files

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self._sb.id if self._sb else None!r})"

    async def get_info(self) -> SandboxInfo:
        return await _to_thread(self.sync_sandbox.get_info)

    async def kill(self) -> bool:
        if self._sb is None:
            return False
        return await _to_thread(self._sb.kill)

    async def exec(self, code: str, *, on_stdout: Optional[AsyncOutputCallback] = None,
                   on_stderr: Optional[AsyncOutputCallback] = None, **kwargs: Any) -> ExecResult:
        """Runs a snippet and waits for its result; options as ``Sandbox.exec`` (callbacks may be ``async``)."""
        loop = asyncio.get_running_loop()
        return await _to_thread(self.sync_sandbox.exec, code, on_stdout=_on_loop(on_stdout, loop),
                                on_stderr=_on_loop(on_stderr, loop), **kwargs)

    async def run(self, filename: str, *, on_stdout: Optional[AsyncOutputCallback] = None,
                  on_stderr: Optional[AsyncOutputCallback] = None, **kwargs: Any) -> ExecResult:
        """Runs a workspace file and waits for its result; options as ``Sandbox.run``."""
        loop = asyncio.get_running_loop()
        return await _to_thread(self.sync_sandbox.run, filename, on_stdout=_on_loop(on_stdout, loop),
                                on_stderr=_on_loop(on_stderr, loop), **kwargs)

    async def start(self, code: str, *, on_stdout: Optional[AsyncOutputCallback] = None,
                    on_stderr: Optional[AsyncOutputCallback] = None, **kwargs: Any) -> AsyncExecHandle:
        """Starts a snippet in the background; options as ``Sandbox.start``."""
        loop = asyncio.get_running_loop()
        h = await _to_thread(self.sync_sandbox.start, code, on_stdout=_on_loop(on_stdout, loop),
                             on_stderr=_on_loop(on_stderr, loop), **kwargs)
        return AsyncExecHandle(h)

    async def start_file(self, filename: str, *, on_stdout: Optional[AsyncOutputCallback] = None,
                         on_stderr: Optional[AsyncOutputCallback] = None, **kwargs: Any) -> AsyncExecHandle:
        loop = asyncio.get_running_loop()
        h = await _to_thread(self.sync_sandbox.start_file, filename, on_stdout=_on_loop(on_stdout, loop),
                             on_stderr=_on_loop(on_stderr, loop), **kwargs)
        return AsyncExecHandle(h)

    async def get_exec(self, exec_id: str) -> AsyncExecHandle:
        return AsyncExecHandle(await _to_thread(self.sync_sandbox.get_exec, exec_id))

    async def install(self, dependencies: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> DependencyReport:
        """Installs packages now and keeps them for the sandbox's runs; see ``Sandbox.install``."""
        return await _to_thread(self.sync_sandbox.install, dependencies, **kwargs)

    async def history(self, limit: Optional[int] = None) -> List[ExecSummary]:
        return await _to_thread(self.sync_sandbox.history, limit)

    async def sync(self, local_dir: Union[str, "os.PathLike[str]"], **kwargs: Any) -> SyncResult:
        """Delta sync of a local directory; options as ``Sandbox.sync``."""
        return await _to_thread(self.sync_sandbox.sync, local_dir, **kwargs)
