"""The edge's answers of its own: the Lambda API (by the emulator) and ``StartSyncExecution``.

Each handler takes the request's parts and returns a ``Reply``; none touches a socket, so the HTTP server
(``server.py``) only reads requests and writes replies. Lambda answers carry Lambda's status codes, headers
and JSON error shapes (``x-amzn-ErrorType``), so boto3 raises the same ``ClientError`` codes as on AWS.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import unquote

from chalicelib.core.trace import parse_trace_header
from chalicelib.local import asl
from chalicelib.local.awslambda.emulator import LambdaEmulator
from chalicelib.local.awslambda.models import EmulatorInvocation, LambdaError
from chalicelib.local.logs import STATES_LOGGER
from chalicelib.local.runtime_api import end_headers_with_body

log = logging.getLogger("modelport.local.edge")

_FN = r"/2015-03-31/functions/(?P<fn>[^/]+)"
_PC = r"/2019-09-30/functions/(?P<fn>[^/]+)/provisioned-concurrency"
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
        ("PUT", _PC, "put_provisioned_concurrency_config"),
        ("GET", _PC, "get_provisioned_concurrency_config"),
        ("DELETE", _PC, "delete_provisioned_concurrency_config"),
    )
]
CREATED = frozenset({"create_function", "publish_version", "create_alias"})
ACCEPTED = frozenset({"put_provisioned_concurrency_config"})
MotoCall = Callable[[str, Mapping[str, Any]], tuple[int, dict[str, Any]]]
"""One Step Functions JSON call to moto: (operation, document) -> (status, answer)."""


@dataclass(frozen=True)
class Reply:
    """A whole answer: status, body, headers (Content-Length is added when it is sent)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def send_reply(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    handler.send_response(reply.status)
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(reply.body)))
    end_headers_with_body(handler, reply.body)


def json_reply(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Reply:
    body = b"" if doc is None else json.dumps(doc).encode()
    return Reply(status, body, {"Content-Type": "application/json", **(headers or {})})


def error_reply(status: int, code: str, message: str, **extra: str) -> Reply:
    headers = {"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())}
    return json_reply(status, {"__type": code, "Type": "User", "message": message, **extra}, headers)


def upstream_failed(moto_url: str, exc: BaseException) -> Reply:
    """moto refused or reset (502) or did not answer in time (504): an answer at once, never a hang."""
    timed_out = isinstance(exc, TimeoutError | socket.timeout)
    status, code = (504, "GatewayTimeout") if timed_out else (502, "ServiceUnavailable")
    log.warning("moto at %s failed: %s", moto_url, exc)
    return error_reply(status, code, f"the AWS endpoint behind the edge ({moto_url}) failed: {exc!r}")


def json_doc(body: bytes) -> dict[str, Any]:
    """The request's JSON object, or {} for anything else (the handlers then report what is missing)."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


# --------------------------------------------------------------------------- Lambda


def lambda_reply(
    emulator: LambdaEmulator,
    method: str,
    path: str,
    query: Mapping[str, list[str]],
    headers: Message,
    body: bytes,
) -> Reply:
    """A Lambda API request answered by the emulator (``headers``: the request's, case-insensitive)."""
    found = _match(method, path)
    if found is None:
        return error_reply(
            404, "UnknownOperationException", f"the local Lambda emulator has no {method} {path}"
        )
    action, args = found
    qualifier = query.get("Qualifier", [""])[0] or None
    try:
        if action == "invoke":
            return _invoke(emulator, args["fn"], qualifier, headers, body)
        doc = _handlers(emulator, args, qualifier, body)[action]()
    except LambdaError as exc:
        return _lambda_error(exc)
    if doc is None:
        return Reply(204, b"", {"x-amzn-RequestId": str(uuid.uuid4())})
    status = 201 if action in CREATED else 202 if action in ACCEPTED else 200
    return json_reply(status, doc, {"x-amzn-RequestId": str(uuid.uuid4())})


def _handlers(
    emulator: LambdaEmulator, args: Mapping[str, str], qualifier: str | None, body: bytes
) -> dict[str, Callable[[], Any]]:
    return {
        "create_function": lambda: emulator.create_function(json_doc(body)),
        "list_functions": emulator.list_functions,
        "get_function": lambda: emulator.get_function(args["fn"], qualifier),
        "delete_function": lambda: emulator.delete_function(args["fn"], qualifier),
        "get_function_configuration": lambda: emulator.get_function_configuration(args["fn"], qualifier),
        "update_function_configuration": lambda: emulator.update_function_configuration(
            args["fn"], json_doc(body)
        ),
        "update_function_code": lambda: emulator.update_function_code(args["fn"], json_doc(body)),
        "publish_version": lambda: emulator.publish_version(args["fn"], json_doc(body)),
        "list_versions": lambda: emulator.list_versions(args["fn"]),
        "create_alias": lambda: emulator.create_alias(args["fn"], json_doc(body)),
        "list_aliases": lambda: emulator.list_aliases(args["fn"]),
        "get_alias": lambda: emulator.get_alias(args["fn"], args["alias"]),
        "update_alias": lambda: emulator.update_alias(args["fn"], args["alias"], json_doc(body)),
        "delete_alias": lambda: emulator.delete_alias(args["fn"], args["alias"]),
        "put_provisioned_concurrency_config": lambda: emulator.put_provisioned_concurrency_config(
            args["fn"], qualifier, json_doc(body)
        ),
        "get_provisioned_concurrency_config": lambda: emulator.get_provisioned_concurrency_config(
            args["fn"], qualifier
        ),
        "delete_provisioned_concurrency_config": lambda: emulator.delete_provisioned_concurrency_config(
            args["fn"], qualifier
        ),
    }


def _lambda_error(exc: LambdaError) -> Reply:
    headers = {"x-amzn-ErrorType": exc.code, "x-amzn-RequestId": str(uuid.uuid4())}
    return json_reply(exc.status, exc.body(), headers)


def _invoke(
    emulator: LambdaEmulator,
    function_name: str,
    qualifier: str | None,
    request_headers: Message,
    payload: bytes,
) -> Reply:
    try:
        result = emulator.invoke(
            function_name,
            payload,
            qualifier=qualifier,
            invocation_type=request_headers.get("X-Amz-Invocation-Type") or "RequestResponse",
            log_type=request_headers.get("X-Amz-Log-Type") or "None",
        )
    except LambdaError as exc:
        return _lambda_error(exc)
    headers = {
        "Content-Type": "application/json",
        "x-amzn-RequestId": result.request_id,
        "X-Amz-Executed-Version": result.executed_version,
    }
    if result.function_error:
        headers["X-Amz-Function-Error"] = result.function_error
    if result.log_result:
        headers["X-Amz-Log-Result"] = result.log_result
    return Reply(result.status, result.payload, headers)


def _match(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route_method, pattern, action in ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and route_method == method:
            return action, {k: unquote(v) for k, v in match.groupdict().items()}
    return None


# --------------------------------------------------------------------------- Step Functions


class Machines:
    """The compiled definitions by state machine ARN (None: outside the subset, run on moto)."""

    def __init__(self) -> None:
        self._machines: dict[str, asl.Machine | None] = {}
        self._lock = threading.Lock()

    def get(self, arn: str) -> tuple[bool, asl.Machine | None]:
        """(known, the compiled machine or None when its definition is outside the subset)."""
        with self._lock:
            if arn in self._machines:
                return True, self._machines[arn]
            return False, None

    def remember(self, arn: str, machine: asl.Machine | None) -> None:
        with self._lock:
            self._machines[arn] = machine

    def forget(self, arn: str) -> None:
        """An update or a delete passed through: the next execution reads the definition again."""
        with self._lock:
            for known in [k for k in self._machines if k == arn or k.startswith(arn + ":")]:
                del self._machines[known]


class SyncHost(Protocol):
    """What a sync execution needs of the edge (``EdgeServer`` has it)."""

    emulator: LambdaEmulator
    machines: Machines
    moto_url: str
    fast_sync: bool
    sync_timeout_s: float


def sync_execution(edge: SyncHost, request: Mapping[str, Any], moto: MotoCall) -> Reply:
    """StartSyncExecution: in process when the definition allows, else on moto."""
    arn = str(request.get("stateMachineArn") or "")
    machine = _fast_machine(edge, arn, moto) if edge.fast_sync and arn else None
    if machine is not None:
        return _run_in_process(edge, machine, request)
    return _sync_on_moto(edge, request, moto)


def _fast_machine(edge: SyncHost, arn: str, moto: MotoCall) -> asl.Machine | None:
    """The compiled definition of ``arn`` (DescribeStateMachine once, then cached), or None for moto."""
    known, machine = edge.machines.get(arn)
    if known:
        return machine
    try:
        status, described = moto("DescribeStateMachine", {"stateMachineArn": arn})
    except (OSError, http.client.HTTPException):
        return None  # the moto path reports it
    if status != 200:
        return None  # not cached: the moto path answers with moto's error
    try:
        machine = asl.compile_machine(str(described.get("definition", "")))
    except (asl.Unsupported, ValueError) as exc:
        log.debug("state machine %s runs on moto: %s", arn, exc)
        machine = None
    edge.machines.remember(arn, machine)
    return machine


def _run_in_process(edge: SyncHost, machine: asl.Machine, request: Mapping[str, Any]) -> Reply:
    arn = str(request["stateMachineArn"])
    text = request.get("input", "{}")
    try:
        doc = json.loads(text if isinstance(text, str) else "")
    except ValueError:
        return error_reply(400, "InvalidExecutionInput", "Invalid State Machine Execution Input: not JSON")
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
    emulator = edge.emulator

    def invoke(function: str, qualifier: str | None, payload: bytes) -> EmulatorInvocation:
        return emulator.invoke(function, payload, qualifier=qualifier)

    outcome = asl.run(machine, doc, invoke, context=context, timeout_s=edge.sync_timeout_s)
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
    _log_execution(context, answer, began)
    return json_reply(200, answer)


def _log_execution(context: Mapping[str, Any], answer: Mapping[str, Any], began: float) -> None:
    """The execution's end as an Express state machine's CloudWatch log (``/aws/vendedlogs/states/<name>``,
    shipped by the stack's ``LogShipper``), with the X-Ray trace id of its ``traceHeader``."""
    machine = str(context["StateMachine"]["Name"])
    if not machine:
        return
    line = {
        "type": f"Execution{str(answer['status']).title().replace('_', '')}",
        "execution_arn": answer["executionArn"],
        "status": answer["status"],
        "duration_ms": round((time.monotonic() - began) * 1000, 3),
        "trace_id": parse_trace_header(answer.get("traceHeader")),
    }
    logging.getLogger(f"{STATES_LOGGER}.{machine}").info(json.dumps(line, separators=(",", ":")))


_DESCRIBED = (
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


def _sync_on_moto(edge: SyncHost, request: Mapping[str, Any], moto: MotoCall) -> Reply:
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
        status, started = moto("StartExecution", start)
        if status != 200:
            return json_reply(status, started, {"x-amzn-ErrorType": str(started.get("__type", "Error"))})
        status, described = _until_done(edge, started["executionArn"], began, moto)
        if status != 200:
            return json_reply(status, described)
    except (OSError, http.client.HTTPException) as exc:
        return upstream_failed(edge.moto_url, exc)
    answer = {key: described[key] for key in _DESCRIBED if described.get(key) is not None}
    answer.setdefault("stopDate", time.time())
    answer["inputDetails"] = {"included": True}
    if "output" in answer:
        answer["outputDetails"] = {"included": True}
    answer["billingDetails"] = _billing(began)
    return json_reply(200, answer)


def _until_done(edge: SyncHost, arn: str, began: float, moto: MotoCall) -> tuple[int, dict[str, Any]]:
    """DescribeExecution until the execution ends (or the sync timeout stops it): (status, described)."""
    pause, deadline = 0.001, began + edge.sync_timeout_s
    while True:
        status, described = moto("DescribeExecution", {"executionArn": arn})
        if status != 200 or described.get("status") != "RUNNING":
            return status, described
        if time.monotonic() >= deadline:
            moto("StopExecution", {"executionArn": arn, "error": "States.Timeout"})
            described.update(status="TIMED_OUT", error="States.Timeout", cause="the sync execution timed out")
            return status, described
        time.sleep(pause)
        pause = min(pause * 2, 0.025)


def _billing(began: float) -> dict[str, int]:
    elapsed_ms = (time.monotonic() - began) * 1000
    return {
        "billedMemoryUsedInMB": 64,
        "billedDurationInMilliseconds": max(100, math.ceil(elapsed_ms / 100) * 100),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
