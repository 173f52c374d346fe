"""moto behind the edge: started in this process, patched where moto 5.2 falls short, and serialized
where its DynamoDB needs it (``serialized``, which the tests' own moto server uses too).

moto is imported inside the functions only: nothing else in ``chalicelib.local`` needs it installed.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass
class MotoServer:
    server: Any
    url: str

    def stop(self) -> None:
        self.server.stop()


def is_dynamodb(environ: dict[str, Any]) -> bool:
    """A DynamoDB request (its JSON target names the service)."""
    return str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_")


def serialized(app: WsgiApp, when: Callable[[dict[str, Any]], bool] = lambda environ: True) -> WsgiApp:
    """``app`` answering the requests ``when`` selects one at a time (their answers read whole under one
    lock); the others stay concurrent.

    moto's DynamoDB is atomic per request only when requests come one at a time: a cancelled
    TransactWriteItems restores a snapshot taken before it began, wiping what other threads wrote
    meanwhile (concurrent version reservations then get the same number). Clients stay concurrent,
    interleaving between requests as they do on AWS.
    """
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if when(environ):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return serve


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


def patch_moto_dispatch() -> None:
    """moto's server finds each request's service by listing its package directory and ``isdir``-ing
    every entry (~200), per request: ~1 ms of CPU each, in the process that also runs the edge and the
    emulator. The list never changes while the process runs: it is read once."""
    from moto import backends

    if getattr(backends.list_of_moto_modules, "_modelport_cached", False):
        return
    modules = tuple(backends.list_of_moto_modules())

    def cached() -> tuple[str, ...]:
        return modules

    cached._modelport_cached = True  # type: ignore[attr-defined]
    backends.list_of_moto_modules = cached


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


def start_moto(edge_port: int, *, host: str = "127.0.0.1", port: int = 0) -> MotoServer:
    """Start moto in this process on ``host:port`` (0: any free port), empty, with Step Functions
    executing, its interpreter calling back into the edge on ``edge_port``.

    moto's interpreter builds its service clients with ``endpoint_url=f"http://localhost:{MOTO_PORT}"``,
    reading ``$MOTO_PORT`` at every call (``moto.stepfunctions.parser.asl.utils.boto_client``), so setting
    it to the edge's port routes its Lambda tasks to the emulator and its other calls back to moto. The
    variable is process-wide: every in-process moto executes state machines through this edge.
    DynamoDB requests are ``serialized``; everything else (S3 uploads, Step Functions) stays concurrent.
    """
    from moto.server import ThreadedMotoServer

    patch_moto_stepfunctions()
    patch_moto_dispatch()
    os.environ["MOTO_PORT"] = str(edge_port)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(host, port, verbose=False)
    server.start()
    wsgi = server._server  # moto keeps its werkzeug server there
    assert wsgi is not None
    _no_delay(wsgi)
    wsgi.app = serialized(wsgi.app, when=is_dynamodb)
    bound_host, bound_port = server.get_host_and_port()
    url = f"http://{bound_host}:{bound_port}"
    conn = http.client.HTTPConnection(bound_host, bound_port, timeout=10)
    try:
        # moto's backends are process-wide: a stack started after another in this process (the tests,
        # the benches) would find the first one's tables, models and keys. A new stack starts empty.
        conn.request("POST", "/moto-api/reset", b"")
        conn.getresponse().read()
        config = {"stepfunctions": {"execute_state_machine": True}}
        conn.request("POST", "/moto-api/config", json.dumps(config), {"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()
    return MotoServer(server, url)
