"""LambdaInvoker's own Invoke request: what it sends, retries, errors, keep-alive; the same as boto3's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.aws.invoke import DirectInvoke, LambdaInvoker
from chalicelib.core.config_file import DeployedFunction, DeployedFunctions
from chalicelib.core.errors import FunctionFailed, FunctionTimedOut

pytestmark = pytest.mark.functional

ARN = "arn:aws:lambda:us-east-1:123456789012:function:modelport-iris"
DEPLOYMENT = DeployedFunctions(
    mode="fused",
    functions=(
        DeployedFunction(role="fused", function_name="modelport-iris", function_arn=ARN, version="3"),
    ),
)


class FakeLambda(ThreadingHTTPServer):
    """Answers Invoke from a script of (status, headers, body); records requests and connections."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.close_after_answer = False
        self.announce_close = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeLambda

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status, headers, answer = self.server.script.pop(0) if self.server.script else (200, {}, b"{}")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        if self.server.close_after_answer:
            if self.server.announce_close:
                self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def fake() -> Iterator[FakeLambda]:
    server = FakeLambda()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _invoker(url: str, retries: int = 0) -> tuple[LambdaInvoker, list[float]]:
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1"
    )
    client = session.client("lambda", endpoint_url=url, config=Config(retries={"max_attempts": retries}))
    slept: list[float] = []
    invoker = LambdaInvoker(client, None, sleep=slept.append)
    assert DirectInvoke.of(client) is not None  # the direct path is the one under test
    return invoker, slept


def _ok(doc: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"X-Amz-Executed-Version": "3"}, json.dumps(doc).encode()


def test_it_sends_the_request_boto3_sends(fake: FakeLambda) -> None:
    """Same path, query, body and signature scope as boto3's own invoke of the same function."""
    invoker, _ = _invoker(fake.url)
    fake.script = [_ok({"status": 200, "body": "mine"}), _ok({"status": 200})]
    assert invoker.invoke(DEPLOYMENT, {"body": "x"}) == {"status": 200, "body": "mine"}
    invoker.lambda_client.invoke(FunctionName=ARN, Qualifier="3", Payload=b'{"body":"x"}')
    ours, boto3s = fake.requests
    assert ours["path"] == boto3s["path"]
    assert (
        ours["path"].endswith("/invocations?Qualifier=3") and "%3Afunction%3Amodelport-iris" in ours["path"]
    )
    assert ours["body"] == boto3s["body"] == b'{"body":"x"}'
    scope = "Credential=AKIDEXAMPLE/{}/eu-west-1/lambda/aws4_request"
    for request in (ours, boto3s):
        date = request["headers"]["X-Amz-Date"][:8]
        assert scope.format(date) in request["headers"]["Authorization"]
    assert ours["headers"]["Host"] == boto3s["headers"]["Host"]


def test_connections_are_kept_alive_and_a_closed_one_is_replaced(fake: FakeLambda) -> None:
    invoker, _ = _invoker(fake.url)
    for _ in range(5):
        invoker.invoke(DEPLOYMENT, {})
    assert fake.connections == 1
    fake.close_after_answer = True
    for _ in range(3):
        invoker.invoke(DEPLOYMENT, {})
    assert fake.connections == 3  # each answer said Connection: close: a new connection for the next
    fake.announce_close = False  # now the server drops each connection silently after its answer
    for _ in range(3):
        assert invoker.invoke(DEPLOYMENT, {}) == {}
    assert fake.connections == 6 and len(fake.requests) == 11  # one retry per drop, nothing lost


def test_throttling_is_retried_within_the_clients_budget(fake: FakeLambda) -> None:
    throttled = (429, {"x-amzn-ErrorType": "TooManyRequestsException"}, b'{"message":"Rate exceeded"}')
    invoker, slept = _invoker(fake.url, retries=2)
    fake.script = [throttled, throttled, _ok({"status": 200})]
    assert invoker.invoke(DEPLOYMENT, {}) == {"status": 200}
    assert len(slept) == 2

    invoker, slept = _invoker(fake.url, retries=1)
    fake.script = [throttled, throttled]
    with pytest.raises(FunctionFailed, match=r"TooManyRequestsException.*Rate exceeded"):
        invoker.invoke(DEPLOYMENT, {})


def test_lambda_errors_and_function_errors(fake: FakeLambda) -> None:
    invoker, slept = _invoker(fake.url, retries=3)
    missing = (404, {"x-amzn-ErrorType": "ResourceNotFoundException"}, b'{"message":"Function not found"}')
    fake.script = [missing]
    with pytest.raises(FunctionFailed, match=r"\(ResourceNotFoundException\).*Function not found"):
        invoker.invoke(DEPLOYMENT, {})
    assert slept == []  # not retried

    failed = {"errorType": "ModelError", "errorMessage": "bad tensor"}
    fake.script = [(200, {"X-Amz-Function-Error": "Unhandled"}, json.dumps(failed).encode())]
    with pytest.raises(FunctionFailed, match="ModelError: bad tensor"):
        invoker.invoke(DEPLOYMENT, {})
    timed_out = {"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out after 1.00 seconds"}
    fake.script = [(200, {"X-Amz-Function-Error": "Unhandled"}, json.dumps(timed_out).encode())]
    with pytest.raises(FunctionTimedOut):
        invoker.invoke(DEPLOYMENT, {})


def test_an_unreachable_endpoint_is_a_function_failure(fake: FakeLambda) -> None:
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    invoker, slept = _invoker(f"http://127.0.0.1:{port}", retries=1)
    with pytest.raises(FunctionFailed, match="Could not connect"):
        invoker.invoke(DEPLOYMENT, {})
    assert len(slept) == 1


def _sfn(url: str, **config: Any) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1"
    )
    return session.client(
        "stepfunctions", endpoint_url=url, config=Config(retries={"max_attempts": 0}, **config)
    )


def test_chained_start_sync_execution_is_sent_as_boto3_sends_it(fake: FakeLambda) -> None:
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:modelport-iris-v1"
    chained = DeployedFunctions(mode="chained", functions=(), state_machine_arn=machine)
    sfn = _sfn(fake.url, inject_host_prefix=False)
    invoker = LambdaInvoker(_invoker(fake.url)[0].lambda_client, sfn)
    answer = {"status": "SUCCEEDED", "output": json.dumps({"status": 200, "body": "ok"})}
    fake.script = [(200, {}, json.dumps(answer).encode()), (200, {}, json.dumps(answer).encode())]
    assert invoker.invoke(chained, {"body": "x"}) == {"status": 200, "body": "ok"}
    sfn.start_sync_execution(stateMachineArn=machine, input='{"body":"x"}')
    ours, boto3s = fake.requests
    for name in ("X-Amz-Target", "Content-Type", "Host"):
        assert ours["headers"][name] == boto3s["headers"][name], name
    assert json.loads(ours["body"]) == json.loads(boto3s["body"])
    assert "/eu-west-1/states/aws4_request" in ours["headers"]["Authorization"]

    billed = {**answer, "billingDetails": {"billedMemoryUsedInMB": 64, "billedDurationInMilliseconds": 200}}
    fake.script = [(200, {}, json.dumps(billed).encode())]
    assert invoker.invoke(chained, {})["execution"] == {"billed_ms": 200, "billed_mb": 64}

    missing = {"__type": "com.amazonaws.swf.service.v2.model#StateMachineDoesNotExist", "message": "gone"}
    fake.script = [(400, {}, json.dumps(missing).encode())]
    with pytest.raises(FunctionFailed, match=r"\(StateMachineDoesNotExist\).*gone"):
        invoker.invoke(chained, {})
    failed = {"status": "FAILED", "error": "ModelportStageFailed", "cause": "a stage failed"}
    fake.script = [(200, {}, json.dumps(failed).encode())]
    with pytest.raises(FunctionFailed, match="ModelportStageFailed"):
        invoker.invoke(chained, {})


def test_the_sync_host_prefix_follows_the_clients_setting() -> None:
    from chalicelib.aws.invoke import DirectSyncExecution

    on_aws = DirectSyncExecution.of(_sfn("https://states.eu-west-1.amazonaws.com"))
    local = DirectSyncExecution.of(_sfn("http://127.0.0.1:4566", inject_host_prefix=False))
    assert on_aws is not None and on_aws.base == "https://sync-states.eu-west-1.amazonaws.com"
    assert local is not None and local.base == "http://127.0.0.1:4566"


def test_the_event_s_trace_id_goes_as_x_ray_s_trace_header(fake: FakeLambda) -> None:
    """Lambda's ``X-Amzn-Trace-Id`` request header and StartSyncExecution's ``traceHeader`` (as boto3
    sends it) carry the event's trace id; an event without a well-formed one sends neither."""
    trace = "1-6b117790-0123456789abcdef01234567"
    invoker, _ = _invoker(fake.url)
    fake.script = [_ok({"status": 200}), _ok({"status": 200})]
    invoker.invoke(DEPLOYMENT, {"body": "x", "trace_id": trace})
    invoker.invoke(DEPLOYMENT, {"body": "x", "trace_id": "Root=1-bad\r\nX: y"})
    traced, untraced = fake.requests
    assert traced["headers"]["X-Amzn-Trace-Id"] == f"Root={trace}"
    assert "X-Amzn-Trace-Id" not in untraced["headers"]

    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:modelport-iris-v1"
    chained = DeployedFunctions(mode="chained", functions=(), state_machine_arn=machine)
    sfn = _sfn(fake.url, inject_host_prefix=False)
    invoker = LambdaInvoker(invoker.lambda_client, sfn)
    answer = json.dumps({"status": "SUCCEEDED", "output": "{}"}).encode()
    fake.script = [(200, {}, answer), (200, {}, answer)]
    fake.requests.clear()
    invoker.invoke(chained, {"body": "x", "trace_id": trace})
    sfn.start_sync_execution(stateMachineArn=machine, input='{"body":"x"}', traceHeader=f"Root={trace}")
    ours, boto3s = fake.requests
    assert json.loads(ours["body"])["traceHeader"] == json.loads(boto3s["body"])["traceHeader"]
