"""One invocation's structured logs through the local stack (docs/observability.md): the API process's
lines, the state machine's execution log, the chain's stage functions' and the model function's, read
back from the CloudWatch Logs emulation as ``modelport logs`` reads them, all carry the trace id the
request came with, and the answer carries it in its headers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.client import Client, Connection, deploy, function_names, log_lines
from chalicelib.local.stack import API_FUNCTION, LOCAL_CREDENTIALS, LocalStack

pytestmark = [pytest.mark.functional, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRACE = "1-6b117790-0123456789abcdef01234567"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    running = LocalStack(edge_port=0, api_port=0, launcher="process", registry=False).start()
    yield running
    running.stop()


def _json_lines(found: list[tuple[str, int, str]]) -> dict[str, list[dict[str, Any]]]:
    by_function: dict[str, list[dict[str, Any]]] = {}
    for function, _, line in found:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            by_function.setdefault(function, []).append(doc)
    return by_function


def test_one_invocation_has_the_same_trace_id_in_the_api_the_pipeline_and_the_model(
    stack: LocalStack,
) -> None:
    admin = Client(Connection(stack.api_url, stack.admin_key, stack.endpoint_url))
    outcome = deploy(admin, EXAMPLES / "iris-onnx")
    assert outcome.status == "READY", outcome.reason
    assert outcome.config is not None and outcome.config["deployment"]["mode"] == "chained"
    roles = {f["role"]: f["function_name"] for f in outcome.config["deployment"]["functions"]}
    body = json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    answer = admin.request(
        "POST",
        "/v1/models/iris-onnx/invoke",
        body,
        {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Amzn-Trace-Id": f"Root={TRACE}",
        },
    )
    assert answer.json()["predictions"][0][0]["label"] == "setosa"
    assert answer.headers["x-amzn-trace-id"] == f"Root={TRACE}"
    assert answer.headers["traceparent"].startswith(f"00-{TRACE[2:10]}{TRACE[11:]}-")

    logs = boto3.session.Session(region_name="us-east-1", **LOCAL_CREDENTIALS).client(
        "logs", endpoint_url=stack.endpoint_url, config=Config(retries={"max_attempts": 0})
    )
    functions = (*function_names(admin, "iris-onnx"), API_FUNCTION)
    assert set(roles.values()) <= set(functions)
    deadline = time.monotonic() + 15
    while True:
        lines = _json_lines(list(log_lines(logs, functions)))
        traced = {fn for fn, docs in lines.items() if any(d.get("trace_id") == TRACE for d in docs)}
        if traced >= {API_FUNCTION, *roles.values()} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert traced >= {API_FUNCTION, *roles.values()}, (traced, sorted(lines))
    request = next(
        d for d in lines[API_FUNCTION] if d.get("message") == "request" and d.get("trace_id") == TRACE
    )
    assert request["model"] == "iris-onnx" and request["status"] == 200 and request["stage"] == "local"
    assert request["route"] == "/v1/models/{name}/invoke" and request["account"]
    emf = [d for d in lines[API_FUNCTION] if "_aws" in d and d.get("trace_id") == TRACE]
    assert emf and emf[0]["model"] == "iris-onnx" and "Invocations" in emf[0]
    machine = outcome.config["deployment"]["state_machine_arn"].rsplit(":", 1)[-1]
    executions = [
        json.loads(e["message"])
        for e in logs.filter_log_events(logGroupName=f"/aws/vendedlogs/states/{machine}")["events"]
    ]
    assert any(d["trace_id"] == TRACE and d["type"] == "ExecutionSucceeded" for d in executions), executions
    for role, function in roles.items():
        mine = [d for d in lines[function] if d.get("trace_id") == TRACE and d.get("message") == "invocation"]
        assert mine and mine[-1]["role"] == role and mine[-1]["model"] == "iris-onnx", (role, lines[function])

    # the owner reads the same request's lines through the API, as the console does
    deadline = time.monotonic() + 15
    while True:
        doc = admin.json("GET", f"/v1/models/iris-onnx/logs?trace={TRACE}")
        sources = {entry["source"] for entry in doc["lines"]}
        if sources >= {"api", *roles} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sources >= {"api", *roles}, doc
    assert all(TRACE in entry["message"] for entry in doc["lines"])
    assert {entry["function"] for entry in doc["lines"] if entry["source"] != "api"} == set(roles.values())
