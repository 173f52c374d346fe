"""The edge's HTTP server: reads each request, routes it (the package docstring) and writes the answer."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.edge.responses import (
    Machines,
    error_reply,
    json_doc,
    lambda_reply,
    send_reply,
    sync_execution,
)
from chalicelib.local.edge.upstream import ConnectionPool, Forwarder, read_chunks

log = logging.getLogger("modelport.local.edge")

_SERVICE = re.compile(r"Credential=[^/,]+/[^/]+/[^/]+/([^/]+)/aws4_request")


class EdgeServer(ThreadingHTTPServer):
    """The endpoint on ``127.0.0.1:port`` (0: any free port); ``moto_url`` may be set after construction
    (moto needs the edge's port first: see ``moto.start_moto``)."""

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
        self.machines = Machines()
        self.pool = ConnectionPool(upstream_timeout_s)
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
        self.pool.close()

    def __enter__(self) -> EdgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
            send_reply(self, error_reply(500, "ServiceException", f"the local edge failed: {exc!r}"))

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        upstream = Forwarder(self, self.server.pool, self.server.moto_url)
        if self._is_lambda(url.path):
            body = self._body()
            headers: Any = self.headers  # case-insensitive, as a Mapping
            reply = lambda_reply(
                self.server.emulator, self.command, url.path, parse_qs(url.query), headers, body
            )
            send_reply(self, reply)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target == "AWSStepFunctions.StartSyncExecution":
            send_reply(self, sync_execution(self.server, json_doc(self._body()), upstream.call))
        elif target == "AWSStepFunctions.StartExecution":
            doc = json_doc(self._body())
            doc.setdefault("name", str(uuid.uuid4()))
            upstream.forward(json.dumps(doc).encode())
        elif target in ("AWSStepFunctions.UpdateStateMachine", "AWSStepFunctions.DeleteStateMachine"):
            body = self._body()
            self.server.machines.forget(str(json_doc(body).get("stateMachineArn", "")))
            upstream.forward(body)
            self.server.machines.forget(str(json_doc(body).get("stateMachineArn", "")))
        else:
            upstream.forward()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _route  # noqa: N815

    def _is_lambda(self, path: str) -> bool:
        match = _SERVICE.search(self.headers.get("Authorization", ""))
        if match is not None:
            return match[1] == "lambda"
        return path.startswith(("/2015-03-31/functions", "/2019-09-30/functions"))

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(read_chunks(self.rfile))
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))
