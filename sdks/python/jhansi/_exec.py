"""Runs: streamed output, and handles on background runs."""

import codecs
import json
import threading
import time
from typing import Any, Callable, Dict, Optional

from ._http import ApiClient, Response, encode_path
from .exceptions import ConnectionException, PetriException, TimeoutException
from .models import ExecResult

OutputCallback = Callable[[str], Any]
"""Receives a chunk of a stream's output as text, as soon as the run wrote it."""

DEFAULT_WAIT_GRACE = 60.0
"""Seconds the client waits beyond a run's timeout for container start-up and bookkeeping."""


class CallbackFailed(Exception):
    """Carries an exception raised by the caller's on_stdout/on_stderr out of the stream reader."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def read_exec_stream(r: Response, on_stdout: Optional[OutputCallback], on_stderr: Optional[OutputCallback],
                     deadline: float, exec_id: str) -> Optional[ExecResult]:
    """Reads NDJSON events, calling the callbacks in order; the final result, or None if the stream broke off."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    buffered = ""
    result: Optional[ExecResult] = None

    def handle(line: str) -> None:
        nonlocal result
        if not line.strip():
            return
        try:
            ev = json.loads(line)
        except ValueError as e:
            raise ConnectionException(f"malformed event in the output stream of run {exec_id}: {e}", code="CONNECTION") from e
        kind = ev.get("type")
        cb = on_stdout if kind == "stdout" else on_stderr if kind == "stderr" else None
        if cb is not None:
            try:
                cb(ev.get("data", ""))
            except BaseException as e:  # noqa: B902 - re-raised by the caller as-is
                raise CallbackFailed(e) from e
        elif kind == "result":
            result = ExecResult.from_wire(ev["result"])

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutException(f"run {exec_id} did not end in time", code="TIMEOUT")
        r.set_timeout(remaining)
        chunk = r.read1(65536)
        if not chunk:
            break
        buffered += decoder.decode(chunk)
        while "\n" in buffered:
            line, buffered = buffered.split("\n", 1)
            handle(line)
    buffered += decoder.decode(b"", final=True)
    handle(buffered)
    return result


class ExecHandle:
    """A run started in the background (``start``/``start_file``, or ``get_exec``).

    No HTTP connection has to stay open: ``wait()`` polls the run's status unless output is
    being streamed to callbacks.
    """

    def __init__(self, client: ApiClient, sandbox_id: str, exec_id: str, *, default_wait: float,
                 stream_thread: Optional[threading.Thread] = None, stream_box: Optional[Dict[str, Any]] = None) -> None:
        self.id = exec_id
        """``ex_…``"""
        self.sandbox_id = sandbox_id
        self._client = client
        self._default_wait = default_wait
        self._thread = stream_thread
        self._box = stream_box

    def __repr__(self) -> str:
        return f"ExecHandle(id={self.id!r}, sandbox_id={self.sandbox_id!r})"

    @property
    def _path(self) -> str:
        return f"/v1/sandboxes/{encode_path(self.sandbox_id)}/exec/{encode_path(self.id)}"

    def status(self) -> ExecResult:
        """The run's current state; ``status`` is ``running`` while it lives (output fields are then empty)."""
        return ExecResult.from_wire(self._client.json("GET", self._path))

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Waits until the run ends and returns its result.

        :param timeout: seconds to wait (default: the run's timeout plus the grace period); a
            ``TimeoutException`` leaves the run going.
        """
        timeout = self._default_wait if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self._thread is not None and self._box is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutException(f"run {self.id} did not end within {timeout} s", code="TIMEOUT")
            err = self._box.get("error")
            if isinstance(err, CallbackFailed):
                raise err.error
            if self._box.get("result") is not None:
                return self._box["result"]
            if err is not None and not isinstance(err, ConnectionException):
                raise err
            # The stream broke off: the run may well go on, so fall back to polling.
        interval = 0.05
        while True:
            r = self.status()
            if r.status != "running":
                return r
            if time.monotonic() + interval > deadline:
                raise TimeoutException(f"run {self.id} did not end within {timeout} s", code="TIMEOUT")
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def kill(self) -> ExecResult:
        """Cancels the run, killing its whole process tree; returns its final result (``cancelled=True``)."""
        return ExecResult.from_wire(self._client.json("DELETE", self._path, timeout=self._default_wait))

    def send_stdin(self, data: str) -> None:
        """Writes text to the run's stdin (needs ``stdin_open=True``); ``ConflictException`` once it has ended."""
        self._client.json("POST", self._path + "/stdin", json={"data": data})

    def close_stdin(self) -> None:
        """Closes the run's stdin (the program reads end-of-file)."""
        self._client.json("POST", self._path + "/stdin", json={"close": True})


def wrap_stream_error(e: BaseException, exec_id: str) -> BaseException:
    if isinstance(e, (PetriException, CallbackFailed)):
        return e
    return ConnectionException(f"the output stream of run {exec_id} broke: {e}", code="CONNECTION")
