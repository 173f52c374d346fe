"""The local stack's one AWS endpoint: Lambda -> the emulator, StartSyncExecution emulated, the rest -> moto.

boto3 clients (the control plane, the CLI, tests) and moto's own Step Functions interpreter all talk to
this endpoint, so a state machine's Lambda tasks run real model functions. Routing:

- a request signed for the ``lambda`` service (or, unsigned, under ``/2015-03-31/functions``) is
  answered by the ``LambdaEmulator`` with Lambda's status codes, headers and JSON error shapes
  (``x-amzn-ErrorType``), so boto3 raises the same ``ClientError`` codes as against AWS;
- ``AWSStepFunctions.StartSyncExecution`` (which moto lacks) runs in process by ``chalicelib.local.asl``
  when the state machine's definition is in its subset (the definition read once per ARN with
  ``DescribeStateMachine``, forgotten when an ``UpdateStateMachine``/``DeleteStateMachine`` passes through
  here): its Lambda tasks call the emulator directly, ~100 ms less per execution than moto's interpreter.
  Any other definition starts the execution on moto and polls ``DescribeExecution`` until it ends, within
  ``sync_timeout_s``;
- ``AWSStepFunctions.StartExecution`` without a ``name`` gets a generated one, as on AWS (moto names
  every unnamed execution ``None``, so the second one with another input fails);
- everything else is forwarded to moto as it came (method, path, query, headers, body, streamed both
  ways). When moto does not answer, the caller gets a 502 (refused, reset) or 504 (no answer within
  ``upstream_timeout_s``) at once, never a hang.

Every accepted socket gets TCP_NODELAY, and connections are HTTP/1.1 keep-alive: with Nagle's
algorithm on, delayed ACKs add ~40 ms to each small response.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chalicelib.local import asl
from chalicelib.local.emulator import EmulatorInvocation, LambdaEmulator, LambdaError
from chalicelib.local.runtime_api import end_headers_with_body

log = logging.getLogger("modelport.local.edge")

_SERVICE = re.compile(r"Credential=[^/,]+/[^/]+/[^/]+/([^/]+)/aws4_request")
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    }
)
_FN = r"/2015-03-31/functions/(?P<fn>[^/]+)"
Route = tuple[str, re.Pattern[str], str]
ROUTES: list[Route] = [
    (method, re.compile(pattern), action)
    for method, pattern, action in (
        ("POST", r"/2015-03-31/functions/?", "create_function"),
        ("GET", r"/2015-03-31/functions/?", "list_functions"),
        ("GET", _FN, "get_function"),
        ("DELETE", _FN, "delete_function"),
        ("GET", _FN + "/configuration", "get_function_configuration"),
        ("PUT", _FN + "/configuration", "update_function_configuration"),
        ("PUT", _FN + "/code", "update_function_code"),
        ("POST", _FN + "/invocations", "invoke"),
        ("POST", _FN + "/versions", "publish_version"),
        ("GET", _FN + "/versions", "list_versions"),
        ("POST", _FN + "/aliases", "create_alias"),
        ("GET", _FN + "/aliases", "list_aliases"),
        ("GET", _FN + "/aliases/(?P<alias>[^/]+)", "get_alias"),
        ("PUT", _FN + "/aliases/(?P<alias>[^/]+)", "update_alias"),
        ("DELETE", _FN + "/aliases/(?P<alias>[^/]+)", "delete_alias"),
    )
]
CREATED = frozenset({"create_function", "publish_version", "create_alias"})
BUFFERED_MAX = 1 << 20
"""Request bodies up to this size are read whole and go over a pooled keep-alive connection to moto
(a stale one is retried once on a fresh connection); larger and chunked ones are streamed on a new one."""
POOL_MAX = 32
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class EdgeServer(ThreadingHTTPServer):
    """The endpoint on ``127.0.0.1:port`` (0: any free port); ``moto_url`` may be set after construction
    (moto needs the edge's port first: see ``start_moto``)."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        port: int,
        moto_url: str,
        emulator: LambdaEmulator,
        *,
        host: str = "127.0.0.1",
        sync_timeout_s: float = 300.0,
        upstream_timeout_s: float = 60.0,
        fast_sync: bool = True,
    ) -> None:
        super().__init__((host, port), _EdgeHandler)
        self.moto_url = moto_url
        self.emulator = emulator
        self.sync_timeout_s = sync_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        self.fast_sync = fast_sync
        """False: every StartSyncExecution runs on moto (its interpreter), as before the fast path."""
        self._machines: dict[str, asl.Machine | None] = {}
        self._machines_lock = threading.Lock()
        self._pool: list[tuple[str, http.client.HTTPConnection]] = []
        self._pool_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is not our error
            super().handle_error(request, client_address)

    def start(self) -> EdgeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="edge", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()
        with self._pool_lock:
            pooled, self._pool = self._pool, []
        for _, conn in pooled:
            conn.close()

    def __enter__(self) -> EdgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def machine(self, arn: str) -> tuple[bool, asl.Machine | None]:
        """(known, the compiled machine or None when its definition is outside the subset)."""
        with self._machines_lock:
            if arn in self._machines:
                return True, self._machines[arn]
            return False, None

    def remember_machine(self, arn: str, machine: asl.Machine | None) -> None:
        with self._machines_lock:
            self._machines[arn] = machine

    def forget_machine(self, arn: str) -> None:
        """An update or a delete passed through: the next execution reads the definition again."""
        with self._machines_lock:
            for known in [k for k in self._machines if k == arn or k.startswith(arn + ":")]:
                del self._machines[known]

    def upstream(self) -> http.client.HTTPConnection:
        """A new connection to moto."""
        parts = urlsplit(self.moto_url)
        return http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.upstream_timeout_s
        )

    def checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        """A kept-alive connection to moto if one is idle (True), else a new one (False): a new TCP
        connection per request costs moto's server a connect, an accept and a thread."""
        with self._pool_lock:
            while self._pool:
                url, conn = self._pool.pop()
                if url == self.moto_url:
                    return conn, True
                conn.close()
        return self.upstream(), False

    def checkin(self, conn: http.client.HTTPConnection) -> None:
        """Back to the pool, once its answer was read whole."""
        with self._pool_lock:
            if len(self._pool) < POOL_MAX:
                self._pool.append((self.moto_url, conn))
                return
        conn.close()


class _EdgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EdgeServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _route(self) -> None:
        try:
            self._dispatch()
        except ConnectionError:
            raise
        except Exception as exc:  # a bug of ours: still an answer, never a dropped connection
            log.exception("the edge failed on %s %s", self.command, self.path)
            self.close_connection = True
            self._error(500, "ServiceException", f"the local edge failed: {exc!r}")

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        if self._is_lambda(url.path):
            self._lambda(url.path, parse_qs(url.query))
            return
        target = self.headers.get("X-Amz-Target", "")
        if target == "AWSStepFunctions.StartSyncExecution":
            self._sync_execution()
        elif target == "AWSStepFunctions.StartExecution":
            doc = _json(self._body())
            doc.setdefault("name", str(uuid.uuid4()))
            self._forward(json.dumps(doc).encode())
        elif target in ("AWSStepFunctions.UpdateStateMachine", "AWSStepFunctions.DeleteStateMachine"):
            body = self._body()
            self.server.forget_machine(str(_json(body).get("stateMachineArn", "")))
            self._forward(body)
            self.server.forget_machine(str(_json(body).get("stateMachineArn", "")))
        else:
            self._forward()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _route  # noqa: N815

    def _is_lambda(self, path: str) -> bool:
        match = _SERVICE.search(self.headers.get("Authorization", ""))
        if match is not None:
            return match[1] == "lambda"
        return path.startswith("/2015-03-31/functions")

    # ----------------------------------------------------------------------- request and response

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._chunks())
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _chunks(self) -> Iterator[bytes]:
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        end_headers_with_body(self, body)

    def _send_json(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str, message: str, **extra: str) -> None:
        headers = {"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())}
        self._send_json(status, {"__type": code, "Type": "User", "message": message, **extra}, headers)

    # ----------------------------------------------------------------------- Lambda

    def _lambda(self, path: str, query: dict[str, list[str]]) -> None:
        body = self._body()
        found = _match(self.command, path)
        if found is None:
            self._error(
                404, "UnknownOperationException", f"the local Lambda emulator has no {self.command} {path}"
            )
            return
        action, args = found
        qualifier = query.get("Qualifier", [""])[0] or None
        emulator = self.server.emulator
        try:
            if action == "invoke":
                self._invoke(args["fn"], qualifier, body)
                return
            handlers: dict[str, Callable[[], Any]] = {
                "create_function": lambda: emulator.create_function(_json(body)),
                "list_functions": emulator.list_functions,
                "get_function": lambda: emulator.get_function(args["fn"], qualifier),
                "delete_function": lambda: emulator.delete_function(args["fn"], qualifier),
                "get_function_configuration": lambda: emulator.get_function_configuration(
                    args["fn"], qualifier
                ),
                "update_function_configuration": lambda: emulator.update_function_configuration(
                    args["fn"], _json(body)
                ),
                "update_function_code": lambda: emulator.update_function_code(args["fn"], _json(body)),
                "publish_version": lambda: emulator.publish_version(args["fn"], _json(body)),
                "list_versions": lambda: emulator.list_versions(args["fn"]),
                "create_alias": lambda: emulator.create_alias(args["fn"], _json(body)),
                "list_aliases": lambda: emulator.list_aliases(args["fn"]),
                "get_alias": lambda: emulator.get_alias(args["fn"], args["alias"]),
                "update_alias": lambda: emulator.update_alias(args["fn"], args["alias"], _json(body)),
                "delete_alias": lambda: emulator.delete_alias(args["fn"], args["alias"]),
            }
            doc = handlers[action]()
        except LambdaError as exc:
            self._lambda_error(exc)
            return
        if doc is None:
            self._send(204, b"", {"x-amzn-RequestId": str(uuid.uuid4())})
        else:
            self._send_json(201 if action in CREATED else 200, doc, {"x-amzn-RequestId": str(uuid.uuid4())})

    def _lambda_error(self, exc: LambdaError) -> None:
        headers = {"x-amzn-ErrorType": exc.code, "x-amzn-RequestId": str(uuid.uuid4())}
        self._send_json(exc.status, exc.body(), headers)

    def _invoke(self, function_name: str, qualifier: str | None, payload: bytes) -> None:
        try:
            result = self.server.emulator.invoke(
                function_name,
                payload,
                qualifier=qualifier,
                invocation_type=self.headers.get("X-Amz-Invocation-Type") or "RequestResponse",
                log_type=self.headers.get("X-Amz-Log-Type") or "None",
            )
        except LambdaError as exc:
            self._lambda_error(exc)
            return
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": result.request_id,
            "X-Amz-Executed-Version": result.executed_version,
        }
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        if result.log_result:
            headers["X-Amz-Log-Result"] = result.log_result
        self._send(result.status, result.payload, headers)

    # ----------------------------------------------------------------------- Step Functions

    def _sync_execution(self) -> None:
        """StartSyncExecution: in process when the definition allows, else on moto."""
        request = _json(self._body())
        arn = str(request.get("stateMachineArn") or "")
        machine = self._fast_machine(arn) if self.server.fast_sync and arn else None
        if machine is not None:
            self._run_in_process(machine, request)
        else:
            self._sync_on_moto(request)

    def _fast_machine(self, arn: str) -> asl.Machine | None:
        """The compiled definition of ``arn`` (DescribeStateMachine once, then cached), or None for moto."""
        known, machine = self.server.machine(arn)
        if known:
            return machine
        try:
            status, described = self._moto("DescribeStateMachine", {"stateMachineArn": arn})
        except (OSError, http.client.HTTPException):
            return None  # the moto path reports it
        if status != 200:
            return None  # not cached: the moto path answers with moto's error
        try:
            machine = asl.compile_machine(str(described.get("definition", "")))
        except (asl.Unsupported, ValueError) as exc:
            log.debug("state machine %s runs on moto: %s", arn, exc)
            machine = None
        self.server.remember_machine(arn, machine)
        return machine

    def _run_in_process(self, machine: asl.Machine, request: Mapping[str, Any]) -> None:
        arn = str(request["stateMachineArn"])
        text = request.get("input", "{}")
        try:
            doc = json.loads(text if isinstance(text, str) else "")
        except ValueError:
            self._error(400, "InvalidExecutionInput", "Invalid State Machine Execution Input: not JSON")
            return
        name = str(request.get("name") or uuid.uuid4())
        parts = arn.split(":")
        execution_arn = ":".join(
            [*parts[:5], "express", parts[6] if len(parts) > 6 else "", name, str(uuid.uuid4())]
        )
        started, began = time.time(), time.monotonic()
        context = {
            "Execution": {"Id": execution_arn, "Name": name, "StartTime": _iso(started)},
            "StateMachine": {"Id": arn, "Name": parts[6] if len(parts) > 6 else ""},
        }
        emulator = self.server.emulator

        def invoke(function: str, qualifier: str | None, payload: bytes) -> EmulatorInvocation:
            return emulator.invoke(function, payload, qualifier=qualifier)

        outcome = asl.run(machine, doc, invoke, context=context, timeout_s=self.server.sync_timeout_s)
        answer: dict[str, Any] = {
            "executionArn": execution_arn,
            "stateMachineArn": arn,
            "name": name,
            "startDate": started,
            "stopDate": time.time(),
            "status": outcome.status,
            "input": text,
            "inputDetails": {"included": True},
        }
        if outcome.output is not None:
            answer["output"] = outcome.output
            answer["outputDetails"] = {"included": True}
        if outcome.error is not None:
            answer["error"] = outcome.error
        if outcome.cause is not None:
            answer["cause"] = outcome.cause
        if request.get("traceHeader"):
            answer["traceHeader"] = request["traceHeader"]
        answer["billingDetails"] = _billing(began)
        self._send_json(200, answer)

    def _sync_on_moto(self, request: Mapping[str, Any]) -> None:
        """StartSyncExecution as StartExecution + DescribeExecution until the execution ends."""
        start = {
            "stateMachineArn": request.get("stateMachineArn"),
            "name": request.get("name") or str(uuid.uuid4()),
            "input": request.get("input", "{}"),
        }
        if request.get("traceHeader"):
            start["traceHeader"] = request["traceHeader"]
        began = time.monotonic()
        try:
            status, started = self._moto("StartExecution", start)
            if status != 200:
                self._send_json(status, started, {"x-amzn-ErrorType": str(started.get("__type", "Error"))})
                return
            arn = started["executionArn"]
            pause, deadline = 0.001, began + self.server.sync_timeout_s
            while True:
                status, described = self._moto("DescribeExecution", {"executionArn": arn})
                if status != 200:
                    self._send_json(status, described)
                    return
                if described.get("status") != "RUNNING":
                    break
                if time.monotonic() >= deadline:
                    self._moto("StopExecution", {"executionArn": arn, "error": "States.Timeout"})
                    described.update(
                        status="TIMED_OUT", error="States.Timeout", cause="the sync execution timed out"
                    )
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.025)
        except (OSError, http.client.HTTPException) as exc:
            self._upstream_failed(exc)
            return
        answer = {
            key: described[key]
            for key in (
                "executionArn",
                "stateMachineArn",
                "name",
                "startDate",
                "stopDate",
                "status",
                "error",
                "cause",
                "input",
                "output",
                "traceHeader",
            )
            if described.get(key) is not None
        }
        answer.setdefault("stopDate", time.time())
        answer["inputDetails"] = {"included": True}
        if "output" in answer:
            answer["outputDetails"] = {"included": True}
        answer["billingDetails"] = _billing(began)
        self._send_json(200, answer)

    def _moto(self, operation: str, doc: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """One Step Functions JSON call to moto, with the caller's credentials (moto takes the account and
        region from them)."""
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"AWSStepFunctions.{operation}",
            "Authorization": self.headers.get("Authorization", ""),
        }
        body = json.dumps(doc).encode()
        conn, response = self._exchange(lambda c: c.request("POST", "/", body, headers))
        try:
            data = response.read()
        except BaseException:
            conn.close()
            raise
        self._done(conn, response)
        return response.status, _json(data)

    def _exchange(
        self, send: Callable[[http.client.HTTPConnection], None]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``send`` a whole request on a pooled connection and read the answer's head; a pooled
        connection moto had closed is retried once on a new one. Raises OSError/HTTPException."""
        for attempt in range(2):
            conn, reused = self.server.checkout()
            try:
                send(conn)
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not (reused and attempt == 0 and isinstance(exc, _STALE)):
                    raise
        raise AssertionError("unreachable")

    def _done(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        if response.isclosed() and not response.will_close:
            self.server.checkin(conn)
        else:
            conn.close()

    # ----------------------------------------------------------------------- moto

    def _forward(self, body: bytes | None = None) -> None:
        """Send the request to moto as it came and stream the answer back."""
        if body is not None:
            self._forward_whole(body, send_length=True)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or length > BUFFERED_MAX:
            self._forward_streamed()
            return
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionResetError("the client closed the connection mid-body")
        self._forward_whole(body, send_length=bool(length) or self.command in ("POST", "PUT", "PATCH"))

    def _forward_whole(self, body: bytes, *, send_length: bool) -> None:
        """A request read whole: over a pooled connection."""

        def send(conn: http.client.HTTPConnection) -> None:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP:
                    conn.putheader(name, value)
            if send_length:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)

        try:
            conn, response = self._exchange(send)
        except (OSError, http.client.HTTPException) as exc:
            self._upstream_failed(exc)
            return
        complete = False
        try:
            complete = self._relay(response)
        finally:
            if complete:
                self._done(conn, response)
            else:
                conn.close()

    def _forward_streamed(self) -> None:
        """A chunked or large request: streamed on a new connection."""
        conn = self.server.upstream()
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP:
                    conn.putheader(name, value)
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                for chunk in self._chunks():
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                if remaining or self.command in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(remaining))
                conn.endheaders()
                while remaining > 0:
                    piece = self.rfile.read(min(remaining, 1 << 16))
                    if not piece:
                        raise ConnectionResetError("the client closed the connection mid-body")
                    conn.send(piece)
                    remaining -= len(piece)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.close_connection = True  # the request body may be half read
            self._upstream_failed(exc)
            return
        try:
            self._relay(response)
        finally:
            conn.close()

    def _relay(self, response: http.client.HTTPResponse) -> bool:
        """Stream moto's answer back; True when it was read to its end."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        if length is not None:
            self.send_header("Content-Length", length)
        elif not bodiless:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodiless:
            response.read()
            return True
        try:
            while chunk := response.read1(1 << 16):
                self.wfile.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (OSError, http.client.HTTPException):
            self.close_connection = True  # moto went away mid-answer: the client sees a short body
            return False
        if length is None:
            self.wfile.write(b"0\r\n\r\n")
        response.read()  # b"": read1 stops at the end without marking the answer closed; this does
        return True

    def _upstream_failed(self, exc: BaseException) -> None:
        timed_out = isinstance(exc, TimeoutError | socket.timeout)
        status, code = (504, "GatewayTimeout") if timed_out else (502, "ServiceUnavailable")
        log.warning("moto at %s failed: %s", self.server.moto_url, exc)
        self._error(
            status, code, f"the AWS endpoint behind the edge ({self.server.moto_url}) failed: {exc!r}"
        )


def _billing(began: float) -> dict[str, int]:
    elapsed_ms = (time.monotonic() - began) * 1000
    return {
        "billedMemoryUsedInMB": 64,
        "billedDurationInMilliseconds": max(100, math.ceil(elapsed_ms / 100) * 100),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route_method, pattern, action in ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and route_method == method:
            return action, {k: unquote(v) for k, v in match.groupdict().items()}
    return None


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# --------------------------------------------------------------------------- moto


@dataclass
class MotoServer:
    server: Any
    url: str

    def stop(self) -> None:
        self.server.stop()


def patch_moto_stepfunctions() -> None:
    """Two fixes to moto 5.2's Step Functions, in this process:

    - StartExecution fails (HTTP 500 "cannot pickle '_thread.RLock'") for every execution after the first
      one in a region: it deep-copies the state machine, whose ``backend`` attribute leads to every earlier
      execution's worker thread. The copy now shares the backend and the executions list (they are not
      part of the definition snapshot the copy is for).
    - Its interpreter creates a new boto3 client for every Task (~20 ms each); they are now made once per
      service, region and endpoint (boto3 clients are thread-safe).
    """
    from moto.core.base_backend import BaseBackend
    from moto.stepfunctions.models import StateMachineInstance
    from moto.stepfunctions.parser.asl.utils import boto_client

    if getattr(StateMachineInstance, "_modelport_patched", False):
        return
    setattr(boto_client, "boto3", _CachedClients(getattr(boto_client, "boto3")))  # noqa: B009, B010

    def __deepcopy__(self: Any, memo: dict[int, Any]) -> Any:  # noqa: N807 - the copy protocol's name
        clone = copy.copy(self)
        memo[id(self)] = clone
        for key, value in vars(self).items():
            if key != "executions" and not isinstance(value, BaseBackend):
                setattr(clone, key, copy.deepcopy(value, memo))
        return clone

    setattr(StateMachineInstance, "__deepcopy__", __deepcopy__)  # noqa: B010 - mypy: no such attribute
    setattr(StateMachineInstance, "_modelport_patched", True)  # noqa: B010


class _CachedClients:
    """Stands in for the ``boto3`` module where moto's interpreter calls ``boto3.client(**kwargs)``."""

    def __init__(self, boto3: Any) -> None:
        self._boto3 = boto3
        self._clients: dict[tuple[object, ...], Any] = {}
        self._lock = threading.Lock()

    def client(self, **kwargs: Any) -> Any:
        key = tuple(
            kwargs.get(k) for k in ("service_name", "region_name", "endpoint_url", "aws_access_key_id")
        )
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._boto3.client(**kwargs)
            return self._clients[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._boto3, name)


def _no_delay(wsgi_server: Any) -> None:
    """TCP_NODELAY on every connection moto accepts: werkzeug answers HTTP/1.1 keep-alive (the edge
    reuses its connections) in two writes, headers then body, which Nagle's algorithm and the edge's
    delayed ACK would hold up by ~40 ms."""
    accept = wsgi_server.get_request

    def get_request() -> tuple[socket.socket, Any]:
        sock, addr = accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    wsgi_server.get_request = get_request


def _dynamodb_one_at_a_time(app: Callable[..., Any]) -> Callable[..., Any]:
    """moto's DynamoDB is atomic per request only when requests come one at a time: a cancelled
    TransactWriteItems restores a snapshot taken before it began, wiping what other threads wrote
    meanwhile (concurrent version reservations then get the same number). DynamoDB requests take a lock;
    everything else (S3 uploads, Step Functions) stays concurrent."""
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return serve


def start_moto(edge_port: int, *, host: str = "127.0.0.1", port: int = 0) -> MotoServer:
    """Start moto in this process on ``host:port`` (0: any free port) with Step Functions executing, its
    interpreter calling back into the edge on ``edge_port``.

    moto's interpreter builds its service clients with ``endpoint_url=f"http://localhost:{MOTO_PORT}"``,
    reading ``$MOTO_PORT`` at every call (``moto.stepfunctions.parser.asl.utils.boto_client``), so setting
    it to the edge's port routes its Lambda tasks to the emulator and its other calls back to moto. The
    variable is process-wide: every in-process moto executes state machines through this edge.
    """
    from moto.server import ThreadedMotoServer

    patch_moto_stepfunctions()
    os.environ["MOTO_PORT"] = str(edge_port)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(host, port, verbose=False)
    server.start()
    wsgi = server._server  # moto keeps its werkzeug server there
    assert wsgi is not None
    _no_delay(wsgi)
    wsgi.app = _dynamodb_one_at_a_time(wsgi.app)
    bound_host, bound_port = server.get_host_and_port()
    url = f"http://{bound_host}:{bound_port}"
    conn = http.client.HTTPConnection(bound_host, bound_port, timeout=10)
    try:
        config = {"stepfunctions": {"execute_state_machine": True}}
        conn.request("POST", "/moto-api/config", json.dumps(config), {"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()
    return MotoServer(server, url)
