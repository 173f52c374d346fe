"""A small AWS Lambda Runtime API server: the core of the local Lambda emulator.

A runtime (``awslambdaric`` in a container or a process) long-polls ``invocation/next`` and posts each
result back; ``RuntimeApiServer.invoke`` queues an event and waits for that result, like Lambda's Invoke.
One runtime handles one invocation at a time because it only asks for the next after answering.

Two details matter for real runtimes: awslambdaric 4.2.2 crashes (SIGSEGV) if ``invocation/next`` lacks
any header Lambda sends, so every one is sent; and accepted sockets get TCP_NODELAY, because Nagle's
algorithm with delayed ACKs otherwise adds ~40 ms to each small response on a keep-alive connection.

This module imports neither boto3 nor chalice: the emulator may run anywhere.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Literal

API = "/2018-06-01/runtime"
_INVOCATION = re.compile(rf"^{API}/invocation/(?P<id>[^/]+)/(?P<what>response|error)$")
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
"""Lambda's limit for a synchronous invocation's response payload."""
HANDLER = "chalicelib.runtime.handler.handler"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RuntimeApiResult:
    """What the runtime answered: its payload, or the error it (or its init) reported."""

    request_id: str
    payload: bytes
    error: dict[str, Any] | None
    duration_ms: float
    """From the runtime receiving the event to the server receiving its answer."""
    source: Literal["runtime", "init", "exit"] = "runtime"
    """Who produced ``error``: the runtime (an invocation error), its failed init, or its exit."""
    dispatched: bool = True
    """Whether the runtime received the event (False: it was gone before it asked for it)."""


class _Invocation:
    def __init__(self, event: bytes, timeout: float, request_id: str | None = None) -> None:
        self.request_id = request_id or str(uuid.uuid4())
        self.event = event
        self.deadline_ms = int((time.time() + timeout) * 1000)
        self.done = threading.Event()
        self.dispatched = 0.0
        self.payload = b""
        self.error: dict[str, Any] | None = None
        self.source: Literal["runtime", "init", "exit"] = "runtime"
        self.duration_ms = 0.0

    def finish(
        self,
        payload: bytes,
        error: dict[str, Any] | None,
        source: Literal["runtime", "init", "exit"] = "runtime",
    ) -> None:
        self.payload, self.error, self.source = payload, error, source
        self.duration_ms = (time.perf_counter() - self.dispatched) * 1000 if self.dispatched else 0.0
        self.done.set()


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


class RuntimeApiServer(ThreadingHTTPServer):
    """The Runtime API for one execution environment, on ``host:port`` (port 0: any free port)."""

    daemon_threads = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        function_name: str = "modelport-local",
        region: str = "us-east-1",
        account_id: str = "000000000000",
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.max_response_bytes = max_response_bytes
        self.init_error: dict[str, Any] | None = None
        """What the runtime posted to ``/init/error`` (its JSON body plus ``errorType``), if it did."""
        self.exit_reason: str | None = None
        """Set by ``runtime_exited``: why the runtime is gone ("Runtime exited with error: ...")."""
        self.ready_at: float | None = None
        """``time.perf_counter()`` when the runtime first asked for an invocation: its init was done."""
        self._settled = threading.Event()  # ready, init failed or exited
        self._exit_type = "Runtime.ExitError"
        self._cond = threading.Condition()
        self._queue: deque[_Invocation] = deque()
        self._running: dict[str, _Invocation] = {}
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``host:port``, the value of ``AWS_LAMBDA_RUNTIME_API``."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime that dies mid-request (killed, timed out) is normal here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def start(self) -> RuntimeApiServer:
        self._thread = threading.Thread(target=self.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; invocations still waiting fail at once (an emulator shut down under a request)."""
        self.runtime_exited("Runtime exited with error: the execution environment was shut down")
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def __enter__(self) -> RuntimeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- the invoker's side

    def invoke(self, event: Any, timeout: float = 30.0, *, request_id: str | None = None) -> RuntimeApiResult:
        """Queue ``event`` (JSON-serializable, or ``bytes`` of JSON) and wait for the answer; thread-safe.

        Raises TimeoutError when no answer arrives within ``timeout`` seconds (no runtime polling, a
        runtime that died unnoticed or hangs). A runtime whose init failed answers every invocation with
        its init error, as Lambda does; one reported gone (``runtime_exited``) with ``Runtime.ExitError``.
        """
        data = event if isinstance(event, bytes) else json.dumps(event).encode()
        invocation = _Invocation(data, timeout, request_id)
        with self._cond:
            if self.init_error is not None:
                return self._init_failure(invocation)
            if self.exit_reason is not None:
                error = _exit_error(invocation.request_id, self.exit_reason, self._exit_type)
                invocation.finish(*error, source="exit")
                return _result(invocation)
            self._queue.append(invocation)
            self._cond.notify_all()
        if not invocation.done.wait(timeout):
            with self._cond:
                if invocation in self._queue:
                    self._queue.remove(invocation)
                self._running.pop(invocation.request_id, None)
            if not invocation.done.is_set():
                raise TimeoutError(f"no answer from the runtime within {timeout:g} s")
        return _result(invocation)

    def _init_failure(self, invocation: _Invocation) -> RuntimeApiResult:
        error = dict(self.init_error or {})
        return RuntimeApiResult(invocation.request_id, json.dumps(error).encode(), error, 0.0, "init", False)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the runtime's init is over: it asked for an invocation, reported an init error, or
        was reported gone. False when none of these happened within ``timeout`` seconds."""
        return self._settled.wait(timeout)

    def runtime_exited(self, reason: str, error_type: str = "Runtime.ExitError") -> None:
        """The runtime's process or container is gone (its launcher saw it exit): every queued or running
        invocation, and every later one, fails at once with Lambda's ``Runtime.ExitError`` instead of
        waiting out its timeout. ``reason`` is worded as Lambda words it
        (``Runtime exited with error: signal: killed``).
        """
        with self._cond:
            if self.exit_reason is not None:
                return
            self.exit_reason = reason
            self._exit_type = error_type
            pending = [*self._queue, *self._running.values()]
            self._queue.clear()
            self._running.clear()
        self._settled.set()
        for invocation in pending:
            invocation.finish(*_exit_error(invocation.request_id, reason, error_type), source="exit")

    # ----------------------------------------------------------------------- the runtime's side

    def next_invocation(self, connected: Callable[[], bool] = lambda: True) -> _Invocation | None:
        """Block until an invocation is queued; None when the server is closing or the runtime that asked
        is gone (``connected``: its request outlives a killed runtime and must not take the event)."""
        if self.ready_at is None:
            self.ready_at = time.perf_counter()
            self._settled.set()
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if self._closing or not connected():
                return None
            invocation = self._queue.popleft()
            invocation.dispatched = time.perf_counter()
            self._running[invocation.request_id] = invocation
            return invocation

    def complete(self, request_id: str, payload: bytes, error: dict[str, Any] | None) -> bool:
        with self._cond:
            invocation = self._running.pop(request_id, None)
        if invocation is None:
            return False
        invocation.finish(payload, error)
        return True

    def init_failed(self, error: dict[str, Any]) -> None:
        with self._cond:
            self.init_error = error
            waiting = list(self._queue)
            self._queue.clear()
        self._settled.set()
        for invocation in waiting:
            invocation.finish(json.dumps(error).encode(), error, source="init")


def _result(invocation: _Invocation) -> RuntimeApiResult:
    return RuntimeApiResult(
        invocation.request_id,
        invocation.payload,
        invocation.error,
        invocation.duration_ms,
        invocation.source,
        invocation.dispatched > 0,
    )


def _exit_error(request_id: str, reason: str, error_type: str) -> tuple[bytes, dict[str, Any]]:
    error = {"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {reason}"}
    return json.dumps(error).encode(), error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the runtime client expects
    server: RuntimeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would drown the runtime's own log."""

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        end_headers_with_body(self, body)

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        self._send(status, json.dumps(body).encode())

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        if self.path != f"{API}/invocation/next":
            self._json(404, {"errorType": "NotFound", "errorMessage": f"no such endpoint: GET {self.path}"})
            return
        invocation = self.server.next_invocation(lambda: _peer_open(self.connection))
        if invocation is None:
            self.close_connection = True
            self._json(503, {"errorType": "ServiceUnavailable", "errorMessage": "the server is stopping"})
            return
        self._send(
            200,
            invocation.event,
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": self.server.function_arn,
                "Lambda-Runtime-Trace-Id": _trace_id(),
            },
        )

    def do_POST(self) -> None:
        body = self._body()
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if self.path == f"{API}/init/error":
            self.server.init_failed(_error(body, error_type))
            self._json(202, {"status": "OK"})
            return
        match = _INVOCATION.match(self.path)
        if match is None:
            self._json(404, {"errorType": "NotFound", "errorMessage": f"no such endpoint: POST {self.path}"})
            return
        request_id = match["id"]
        if match["what"] == "error":
            payload, error = body, _error(body, error_type)
        elif len(body) > self.server.max_response_bytes:
            limit = self.server.max_response_bytes
            error = {
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed "
                f"payload size ({limit} bytes).",
            }
            self.server.complete(request_id, json.dumps(error).encode(), error)
            self._json(413, error)
            return
        else:
            payload, error = body, None
        if not self.server.complete(request_id, payload, error):
            self._json(
                400,
                {"errorType": "InvalidRequestID", "errorMessage": f"no invocation {request_id} is running"},
            )
            return
        self._json(202, {"status": "OK"})


def end_headers_with_body(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """``end_headers()`` and the body in one write: as two writes they are two TCP segments, and the
    reader often wakes up for each (measurable on every hop of an invocation)."""
    buffer: list[bytes] | None = getattr(handler, "_headers_buffer", None)
    if buffer is None or handler.request_version == "HTTP/0.9":
        handler.end_headers()
        if body and handler.command != "HEAD":
            handler.wfile.write(body)
        return
    buffer.append(b"\r\n")
    if body and handler.command != "HEAD":
        buffer.append(body)
    handler.flush_headers()


def _peer_open(sock: socket.socket) -> bool:
    """False once the peer has closed the connection (a killed runtime's socket is closed by its kernel)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _error(body: bytes, error_type: str | None) -> dict[str, Any]:
    """The error document a runtime posted: awslambdaric sends errorMessage/errorType/stackTrace JSON."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    error: dict[str, Any] = doc if isinstance(doc, dict) else {"errorMessage": body.decode(errors="replace")}
    error.setdefault("errorType", error_type or "Unknown")
    return error


# --------------------------------------------------------------------------- process environments


class RuntimeProcess(subprocess.Popen[bytes]):
    """A runtime started by ``start_runtime_process``; ``stop()`` ends it and removes its /tmp stand-in."""

    scratch: Path

    def stop(self, timeout: float = 5.0) -> int:
        if self.poll() is None:
            self.terminate()
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)
        return self.returncode

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        super().__exit__(*exc)


def start_runtime_process(
    model_dir: Path,
    server: RuntimeApiServer | str,
    *,
    python: str = sys.executable,
    code_root: Path = REPO_ROOT,
    env: Mapping[str, str] | None = None,
    memory_mb: int | None = None,
    function_name: str = "modelport-local",
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> RuntimeProcess:
    """Run the model runtime as Lambda would, in a process instead of a container ("process environment").

    ``model_dir`` is a prepared model directory (``chalicelib.runtime.layout.prepare_model_dir``) and
    ``code_root`` the directory holding ``chalicelib`` (the image's ``/var/task``). The
    environment is built from scratch, as Lambda's is - the host's variables (credentials included) do not
    leak in - with a private temporary directory standing in for /tmp as HOME, TMPDIR and MPLCONFIGDIR.
    ``memory_mb`` defaults to the model config file's.
    """
    if memory_mb is None:
        config = json.loads((model_dir / "model-config.json").read_text(encoding="utf-8"))
        memory_mb = int(config.get("environment", {}).get("memory_mb", 1024))
    scratch = Path(tempfile.mkdtemp(prefix="modelport-runtime-"))
    (scratch / "matplotlib").mkdir()
    variables = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "MPLCONFIGDIR": str(scratch / "matplotlib"),
        "PYTHONPATH": str(code_root),
        "LAMBDA_TASK_ROOT": str(code_root),
        "MODELPORT_MODEL_DIR": str(Path(model_dir).resolve()),
        "AWS_LAMBDA_RUNTIME_API": server if isinstance(server, str) else server.url,
        "_HANDLER": HANDLER,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    process = RuntimeProcess(
        [python, "-m", "awslambdaric", HANDLER],
        cwd=code_root,
        env=variables,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )
    process.scratch = scratch
    return process
