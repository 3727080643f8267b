"""The workspace of a sandbox: a plain directory that survives between runs."""

import os
import shutil
from typing import Iterable, List, Literal, Optional, Sequence, Tuple, TypeVar, Union, overload

from ._http import ApiClient, Multipart, encode_path
from ._ignore import LocalFile, walk_local
from .exceptions import NotFoundException
from .models import FileInfo

FileData = Union[str, bytes, bytearray, memoryview]

BATCH_MAX_FILES = 500
"""Uploads are split into requests of at most this many files (the server caps parts per request)."""
BATCH_MAX_BYTES = 64 * 1024 * 1024
"""… and at most this many bytes (a bigger file goes alone)."""

T = TypeVar("T")


def batches(items: Sequence[T], sizes: Sequence[int], max_files: int = BATCH_MAX_FILES, max_bytes: int = BATCH_MAX_BYTES) -> List[List[T]]:
    out: List[List[T]] = []
    cur: List[T] = []
    total = 0
    for it, size in zip(items, sizes):
        if cur and (len(cur) >= max_files or total + size > max_bytes):
            out.append(cur)
            cur, total = [], 0
        cur.append(it)
        total += size
    if cur:
        out.append(cur)
    return out


def upload_timeout(client: ApiClient, nbytes: int) -> float:
    """A request deadline that grows with the bytes sent (at least 1 MB/s)."""
    return client.request_timeout + nbytes / 1_000_000


def _to_bytes(data: FileData) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


class Files:
    """``sandbox.files``: read, write, list and remove workspace files; upload local directories."""

    def __init__(self, client: ApiClient, sandbox_id: str) -> None:
        self._client = client
        self._sandbox_id = sandbox_id

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{encode_path(self._sandbox_id)}/files"

    def write(self, path: str, data: FileData) -> FileInfo:
        """Writes one file (text is UTF-8 encoded; parents are created) and returns its entry."""
        body = _to_bytes(data)
        w = self._client.json("PUT", f"{self._base}/{encode_path(path)}", body=body,
                              timeout=upload_timeout(self._client, len(body)))
        return FileInfo.from_wire(w)

    def write_many(self, files: Iterable[Tuple[str, FileData]]) -> List[FileInfo]:
        """Writes several ``(path, data)`` files in one request; all are stored, or none."""
        items = [(p, _to_bytes(d)) for p, d in files]
        out: List[FileInfo] = []
        for batch in batches(items, [len(d) for _, d in items]):
            form = Multipart()
            for p, d in batch:
                form.field("path", p)
                form.file("file", "upload", d)
            r = self._client.json("POST", self._base, body=form, timeout=upload_timeout(self._client, len(form)))
            out.extend(FileInfo.from_wire(f) for f in r["files"])
        return out

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str: ...
    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        """Reads a file as UTF-8 text (default), or as bytes with ``format="bytes"``."""
        data = self._client.bytes("GET", f"{self._base}/{encode_path(path)}")
        return data if format == "bytes" else data.decode("utf-8")

    def download(self, path: str, local_path: Union[str, "os.PathLike[str]"]) -> None:
        """Streams a workspace file to a local path (parents are created)."""
        r = self._client.open("GET", f"{self._base}/{encode_path(path)}")
        try:
            parent = os.path.dirname(os.path.abspath(local_path))
            os.makedirs(parent, exist_ok=True)
            with open(local_path, "wb") as f:
                shutil.copyfileobj(r.resp, f, 1 << 20)
        finally:
            r.close()

    def list(self, path: str = "", recursive: bool = True, hashes: Optional[bool] = None) -> List[FileInfo]:
        """Lists entries under a directory (default the root), recursively by default.

        :param hashes: include each file's sha256 (server default True; costs a read of every file).
        """
        r = self._client.json("GET", self._base, query={"path": path or None, "recursive": recursive, "hashes": hashes})
        return [FileInfo.from_wire(f) for f in r["files"]]

    def exists(self, path: str) -> bool:
        """True when a file or directory exists at ``path``."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return True
        name = parts.pop()
        try:
            entries = self.list("/".join(parts), recursive=False, hashes=False)
        except NotFoundException:
            return False
        full = "/".join([*parts, name])
        return any(e.path == full for e in entries)

    def remove(self, path: str, recursive: bool = False) -> None:
        """Deletes a file, or a directory (``recursive=True`` for a non-empty one). ``FileNotFoundException`` if absent."""
        self._client.json("DELETE", f"{self._base}/{encode_path(path)}", query={"recursive": True if recursive else None})

    def upload(self, local_dir: Union[str, "os.PathLike[str]"], remote_dir: str = "", *, default_ignores: bool = True,
               ignore: Optional[Iterable[str]] = None) -> List[FileInfo]:
        """Uploads a local directory's files into the workspace, keeping their relative paths.

        Honours ``.petriignore`` and skips ``.git``, ``node_modules``, ``__pycache__``, ``.venv``.
        Files are sent whatever the workspace holds; ``sandbox.sync()`` sends only what changed.
        """
        local = walk_local(os.fspath(local_dir), default_ignores, ignore)
        prefix = "/".join(p for p in remote_dir.split("/") if p)
        out: List[FileInfo] = []
        for batch in batches(local, [f.size for f in local]):
            form = Multipart()
            for f in batch:
                form.field("path", f"{prefix}/{f.path}" if prefix else f.path)
                form.file("file", os.path.basename(f.abs), f.abs, f.size)
            r = self._client.json("POST", self._base, body=form, timeout=upload_timeout(self._client, len(form)))
            out.extend(FileInfo.from_wire(x) for x in r["files"])
        return out


def append_local_file(form: Multipart, field: str, f: LocalFile) -> None:
    form.file(field, os.path.basename(f.abs), f.abs, f.size)
