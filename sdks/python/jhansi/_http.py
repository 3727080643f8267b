"""HTTP plumbing over the standard library's http.client (no third-party dependencies)."""

import http.client
import json as jsonlib
import os
import socket
import ssl
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, urlencode, urlsplit

from .exceptions import (
    ConfigurationException,
    ConnectionException,
    InvalidRequestException,
    PetriException,
    TimeoutException,
    error_from_response,
)

DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds an API call that does not wait for a run may take."""

_CHUNK = 1 << 20


def encode_path(p: str) -> str:
    """Encodes a workspace path (or an id) for a URL, one segment at a time (slashes stay slashes).

    Dot segments are refused here with the error the server gives them, as the TypeScript SDK
    must (URL normalisation there would turn ``a/../b`` into another route).
    """
    segments = p.split("/")
    for s in segments:
        if s in (".", ".."):
            raise InvalidRequestException(
                f'path segment "{s}" is not allowed: workspace paths are relative and stay inside the workspace',
                code="INVALID_PATH",
            )
    return "/".join(quote(s, safe="") for s in segments)


class Multipart:
    """A multipart/form-data body streamed from memory and local files, with a known length."""

    def __init__(self) -> None:
        self.boundary = "----jhansi" + uuid.uuid4().hex
        self._parts: List[Tuple[bytes, Union[bytes, str], int]] = []

    @staticmethod
    def _quote(name: str) -> str:
        # As browsers and Node's FormData do (the server's parser does not unescape backslashes).
        return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    def field(self, name: str, value: str) -> None:
        head = f'--{self.boundary}\r\nContent-Disposition: form-data; name="{self._quote(name)}"\r\n\r\n'.encode("utf-8")
        data = value.encode("utf-8")
        self._parts.append((head, data, len(data)))

    def file(self, name: str, filename: str, content: Union[bytes, str], size: Optional[int] = None) -> None:
        """Adds a file part; ``content`` is bytes, or a local path read when the body is sent."""
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{self._quote(name)}"; '
            f'filename="{self._quote(filename)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode("utf-8")
        if isinstance(content, bytes):
            size = len(content)
        elif size is None:
            size = os.path.getsize(content)
        self._parts.append((head, content, size))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        tail = len(f"--{self.boundary}--\r\n")
        return sum(len(h) + n + 2 for h, _, n in self._parts) + tail

    def __iter__(self) -> Iterator[bytes]:
        for head, content, size in self._parts:
            yield head
            if isinstance(content, bytes):
                yield content
            else:
                sent = 0
                with open(content, "rb") as f:
                    while True:
                        chunk = f.read(_CHUNK)
                        if not chunk:
                            break
                        sent += len(chunk)
                        yield chunk
                if sent != size:
                    raise PetriException(f"{content} changed size while being sent", code="CONFLICT")
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode("utf-8")


def resolve_connection(api_key: Optional[str], url: Optional[str]) -> Tuple[str, str]:
    """Explicit arguments first, then PETRI_API_KEY / PETRI_URL; else an error naming both."""
    key = api_key if api_key is not None else os.environ.get("PETRI_API_KEY", "")
    base = url if url is not None else os.environ.get("PETRI_URL", "")
    missing = [name for name, v in (("PETRI_API_KEY", key), ("PETRI_URL", base)) if not v]
    if missing:
        raise ConfigurationException(
            "Petri needs an API key and a server URL: pass api_key= and url= or set the PETRI_API_KEY and "
            f"PETRI_URL environment variables (missing: {', '.join(missing)})",
            code="CONFIGURATION",
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationException(f"PETRI_URL / url is not a valid http(s) URL: {base!r}", code="CONFIGURATION")
    return key, base.rstrip("/")


Body = Union[None, bytes, Multipart]


class Response:
    """An open response whose body the caller reads; ``close()`` when done."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, what: str) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self._what = what

    def read(self) -> bytes:
        try:
            return self.resp.read()
        except socket.timeout as e:
            raise TimeoutException(f"{self._what} did not finish in time", code="TIMEOUT") from e
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionException(f"{self._what}: the connection broke: {e}", code="CONNECTION") from e

    def read1(self, n: int = 65536) -> bytes:
        try:
            return self.resp.read1(n)
        except socket.timeout as e:
            raise TimeoutException(f"{self._what} did not finish in time", code="TIMEOUT") from e
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionException(f"{self._what}: the connection broke: {e}", code="CONNECTION") from e

    def set_timeout(self, seconds: Optional[float]) -> None:
        if self.conn.sock is not None:
            self.conn.sock.settimeout(seconds)

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            self.conn.close()


class ApiClient:
    """Talks to one Petri server with one API key. One connection per request keeps it thread-safe."""

    def __init__(self, api_key: Optional[str] = None, url: Optional[str] = None,
                 request_timeout: Optional[float] = None, headers: Optional[Mapping[str, str]] = None) -> None:
        self.api_key, self.url = resolve_connection(api_key, url)
        self.request_timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout
        self.headers: Dict[str, str] = dict(headers or {})
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")

    def connection_kwargs(self) -> Dict[str, Any]:
        return {"api_key": self.api_key, "url": self.url, "request_timeout": self.request_timeout, "headers": dict(self.headers)}

    def _connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def open(self, method: str, path: str, *, query: Optional[Mapping[str, Any]] = None, json: Any = None,
             body: Body = None, headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None) -> Response:
        """Sends a request and leaves the body to the caller; raises typed exceptions for 4xx/5xx."""
        target = self._prefix + path
        q = {k: ("true" if v is True else "false" if v is False else v) for k, v in (query or {}).items() if v is not None}
        if q:
            target += "?" + urlencode(q)
        hdrs = {**self.headers, "Authorization": f"Bearer {self.api_key}", "User-Agent": "jhansi-python/0.1.0", **(headers or {})}
        payload: Any = None
        if json is not None:
            payload = jsonlib.dumps(json).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, Multipart):
            hdrs["Content-Type"] = body.content_type
            hdrs["Content-Length"] = str(len(body))
            payload = iter(body)
        elif body is not None:
            payload = body
            hdrs.setdefault("Content-Type", "application/octet-stream")
        if payload is None and method in ("POST", "PUT", "PATCH"):
            hdrs["Content-Length"] = "0"
        timeout = self.request_timeout if timeout is None else timeout
        what = f"{method} {path}"
        conn = self._connect(timeout)
        try:
            conn.request(method, target, body=payload, headers=hdrs)
            resp = conn.getresponse()
        except PetriException:
            conn.close()
            raise
        except socket.timeout as e:
            conn.close()
            raise TimeoutException(f"{what} did not finish within {timeout} s", code="TIMEOUT") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ConnectionException(f"cannot reach the Petri server at {self.url} ({what}): {e}", code="CONNECTION") from e
        r = Response(conn, resp, what)
        if resp.status >= 400:
            try:
                raw = r.read()
            finally:
                r.close()
            try:
                parsed = jsonlib.loads(raw.decode("utf-8")) if raw else None
            except ValueError:
                parsed = None
            raise error_from_response(resp.status, parsed)
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """Sends a request and reads the whole body as JSON (None for 204)."""
        r = self.open(method, path, **kw)
        try:
            raw = r.read()
        finally:
            r.close()
        if r.status == 204 or not raw:
            return None
        return jsonlib.loads(raw.decode("utf-8"))

    def bytes(self, method: str, path: str, **kw: Any) -> bytes:
        r = self.open(method, path, **kw)
        try:
            return r.read()
        finally:
            r.close()
