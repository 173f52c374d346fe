"""The Chalice control plane served over HTTP on 127.0.0.1 like ``chalice local``, minus its stall.

``chalice local`` answers keep-alive connections in ~44 ms: its HTTP/1.1 handler leaves Nagle's algorithm
on, so the body written after the headers waits for the client's delayed ACK. This server is the same
``chalice.local.LocalDevServer`` (the same ``LocalGateway``: routes, authorizers, binary types, CORS) with
a handler that sets TCP_NODELAY and a threading server, so keep-alive clients get sub-millisecond
answers. Requests run on a thread each; the app's ``current_request`` is made thread-local (chalice's
``LocalChalice``), as ``chalice local`` does.

Where chalice's gateway departs from API Gateway (REST) the handler answers as API Gateway does: a
method a route does not define (TRACE, HEAD, OPTIONS without CORS, ...) or a path no route matches is
403 ``{"message": "Missing Authentication Token"}`` (chalice: 501 from ``http.server``, 405 from the app,
a 200 preflight, or a 403 that echoes the Authorization header back). A request with no Authorization
header on an authorized route is refused before the authorizer runs, as API Gateway does, but with our
documented error body (``code`` + ``message``) instead of ``{"message": "Unauthorized"}``.

This module needs chalice by nature; nothing else in ``chalicelib.local`` imports it.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LocalChalice,
    LocalDevServer,
    LocalGatewayException,
    NotAuthorizedError,
    RouteMatcher,
)

from chalicelib.core.errors import InvalidRequest, ModelportError, TooLarge, Unauthorized
from chalicelib.local.runtime_api import end_headers_with_body

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
NO_ROUTE_BODY = b'{"message":"Missing Authentication Token"}'
"""API Gateway's answer (403) for a path or method no route defines; the same for every request."""
MISSING_KEY_BODY = json.dumps(
    Unauthorized("missing API key", hint="send Authorization: Bearer mp_...").to_dict()
).encode()
"""Our 401 for a request without an Authorization header (API Gateway's UNAUTHORIZED gateway response)."""


class _NoDelayHandler(ChaliceRequestHandler):
    """chalice's handler with Nagle off (``StreamRequestHandler.setup`` sets TCP_NODELAY)."""

    disable_nagle_algorithm = True
    server: _Server

    def __getattr__(self, name: str) -> Any:
        """Every method reaches the gateway (``http.server`` answers 501 for a ``do_*`` it lacks)."""
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    def _generic_handle(self) -> None:
        if not self.server.routes.defines(self.command, self.path):
            self._read_body()
            self._answer(403, {"x-amzn-ErrorType": "MissingAuthenticationTokenException"}, NO_ROUTE_BODY)
            return
        refusal = self._framing_refusal()
        if refusal is not None:  # chalice would int() the header and drop the connection unanswered
            self.close_connection = True
            self._answer(refusal.http_status, {}, json.dumps(refusal.to_dict()).encode())
            return
        super()._generic_handle()

    def _framing_refusal(self) -> ModelportError | None:
        """A body this server will not read: a Content-Length that is not a number, or one over API
        Gateway's 10 MB payload limit (its 413)."""
        length = self.headers.get("content-length", "0").strip()
        if not length.isdigit():
            return InvalidRequest("invalid Content-Length header", hint="send the body's size in bytes")
        if int(length) > MAX_PAYLOAD_BYTES:
            return TooLarge(f"a request body is at most {MAX_PAYLOAD_BYTES} bytes")
        return None

    # chalice's do_* are bound to its own _generic_handle: point them at this one
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle  # noqa: N815

    def _read_body(self) -> None:
        """Drains the body a refused request carries, so the connection stays usable (keep-alive); one
        over API Gateway's 10 MB payload limit, or of no stated length, is left unread and the
        connection closed."""
        length = self.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_PAYLOAD_BYTES or "transfer-encoding" in self.headers:
            self.close_connection = True  # and _answer says so
        elif int(length) > 0:
            self.rfile.read(int(length))

    def _send_error_response(self, error: LocalGatewayException) -> None:
        if isinstance(error, NotAuthorizedError):  # no Authorization header: refused before the authorizer
            self._answer(401, error.headers, MISSING_KEY_BODY)
            return
        super()._send_error_response(error)

    def _answer(self, code: int, headers: dict[str, Any], body: bytes) -> None:
        closing = {"Connection": "close"} if self.close_connection else {}
        self._send_http_response_with_body(
            code, {"Content-Type": "application/json", **headers, **closing}, body
        )

    def log_message(self, format: str, *args: Any) -> None:  # one stderr line per request otherwise
        pass

    def _send_http_response_with_body(self, code: int, headers: dict[str, Any], body: str | bytes) -> None:
        """chalice's, with the headers and the body in one write (two writes: two TCP segments, and
        often two wake-ups of the reader)."""
        self.send_response(code)
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        for name, value in headers.items():
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, item)
        end_headers_with_body(self, data)


class _Routes:
    """Which (method, path) pairs the app defines, as API Gateway's resources and methods would."""

    def __init__(self, app: Chalice) -> None:
        self.app = app
        self.matcher = RouteMatcher(list(app.routes))

    def defines(self, method: str, path: str) -> bool:
        try:
            route = self.matcher.match_route(path).route
        except ValueError:
            return False
        views = self.app.routes[route]
        if method == "OPTIONS" and "OPTIONS" not in views:  # API Gateway answers a preflight only with CORS
            return any(view.cors is not None for view in views.values())
        return method in views


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    routes: _Routes

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is not our error
            super().handle_error(request, client_address)


class ApiServer:
    """Serves ``app`` on ``host:port`` (0: any free port) in a background thread; ``url`` once started.

    The app's class is swapped for a ``LocalChalice`` subclass while it is served (thread-local
    ``current_request``; concurrent requests would otherwise see each other's) and restored on ``stop``.
    """

    def __init__(
        self,
        app: Chalice,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: Config | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.config = config or Config.create(chalice_stage="local", app_name=app.app_name)
        self._dev: LocalDevServer | None = None
        self._thread: threading.Thread | None = None
        self._original_class: type[Chalice] | None = None

    @property
    def url(self) -> str:
        if self._dev is None:
            raise RuntimeError("the API server is not started")
        host, port = self._dev.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ApiServer:
        if self._dev is not None:
            return self
        original = type(self.app)
        if not isinstance(self.app, LocalChalice):
            local_class = type(f"Local{original.__name__}", (LocalChalice, original), {})
            self.app.__class__ = local_class
            self._original_class = original
        self._dev = LocalDevServer(
            self.app, self.config, self.host, self.port, handler_cls=_NoDelayHandler, server_cls=_Server
        )
        self._dev.server.routes = _Routes(self.app)
        self._thread = threading.Thread(target=self._dev.server.serve_forever, name="api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._dev is None:
            return
        self._dev.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._dev.server.server_close()
        self._dev = self._thread = None
        if self._original_class is not None:
            self.app.__class__ = self._original_class
            self._original_class = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m chalicelib.local.api``: serve ``app.py`` in a process of its own (the local stack's API,
    wired from ``MODELPORT_*`` variables like the control-plane Lambda); prints ``listening URL`` once it
    accepts, and ends on SIGTERM/SIGINT or when the process that started it is gone."""
    import argparse
    import os
    import signal

    from chalicelib.api.observe import json_logs_for_modelport
    from chalicelib.local.chalice_app import load_app

    parser = argparse.ArgumentParser(prog="python -m chalicelib.local.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    parent = os.getppid()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    json_logs_for_modelport()  # its stdout is the API function's log (/aws/lambda/modelport_api)
    server = ApiServer(load_app().app, args.host, args.port).start()
    print(f"listening {server.url}", flush=True)
    try:
        while not stopping.wait(1.0):
            if os.getppid() != parent:  # orphaned: the stack died without stopping us
                break
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
