"""The runtime as Lambda runs it: awslambdaric in its own process, polling our Runtime API server."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core.wire import JSON, InvocationEvent, invocation_event
from chalicelib.local.runtime_api import RuntimeApiServer, RuntimeProcess, start_runtime_process
from chalicelib.runtime.handler import load
from chalicelib.runtime.layout import prepare_model_dir
from chalicelib.services.intake import config_file_for_dir

pytestmark = pytest.mark.functional

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EVENTS: dict[str, InvocationEvent] = {
    "iris-onnx": invocation_event(
        json.dumps({"rows": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}), JSON, JSON
    ),
    "digits-onnx": invocation_event(
        (EXAMPLES / "digits-onnx" / "samples" / "digit-7.png").read_bytes(), "image/png", "*/*"
    ),
}


@pytest.fixture
def server() -> Iterator[RuntimeApiServer]:
    with RuntimeApiServer() as srv:
        yield srv


def _prepared(name: str, tmp_path: Path) -> Path:
    src = EXAMPLES / name
    return prepare_model_dir(src, config_file_for_dir(src), tmp_path / name)


def _start(model_dir: Path, server: RuntimeApiServer, tmp_path: Path) -> RuntimeProcess:
    log = (tmp_path / "runtime.log").open("wb")
    return start_runtime_process(model_dir, server, stdout=log, stderr=log)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_a_runtime_process_answers_like_the_in_process_runtime(
    name: str, server: RuntimeApiServer, tmp_path: Path
) -> None:
    model_dir = _prepared(name, tmp_path)
    event = EVENTS[name]
    expected = load(model_dir).handle(event)
    with _start(model_dir, server, tmp_path) as process:
        first = server.invoke(event, timeout=60)
        assert first.error is None, first.payload
        cold = json.loads(first.payload)
        assert cold["status"] == 200 and cold["timings"]["init_ms"] > 0
        assert json.loads(cold["body"]) == json.loads(expected["body"])  # the chart's bytes included

        durations = []
        for _ in range(50):
            start = time.perf_counter()
            warm = server.invoke(event, timeout=10)
            durations.append((time.perf_counter() - start) * 1000)
        answer = json.loads(warm.payload)
        assert "init_ms" not in answer["timings"] and answer["body"] == cold["body"]
        print(
            f"\n{name}: init {cold['timings']['init_ms']:.0f} ms, warm round trip "
            f"median {statistics.median(durations):.2f} ms, max {max(durations):.2f} ms"
        )

        process.kill()
        process.wait(10)
        start = time.perf_counter()
        with pytest.raises(TimeoutError):
            server.invoke(event, timeout=0.3)
        assert time.perf_counter() - start < 2


def test_an_init_failure_is_reported_and_the_process_exits(server: RuntimeApiServer, tmp_path: Path) -> None:
    model_dir = _prepared("iris-onnx", tmp_path)
    (model_dir / "model.onnx").write_bytes(b"\x08not a model")
    with _start(model_dir, server, tmp_path) as process:
        assert process.wait(60) != 0
    assert server.init_error is not None
    assert server.init_error["errorType"] == "ModelLoadError"
    assert "model.onnx: the onnx model could not be loaded" in server.init_error["errorMessage"]
    result = server.invoke(EVENTS["iris-onnx"], timeout=1)  # as Lambda: invocations get the init error
    assert result.error is not None and result.error["errorType"] == "ModelLoadError"


# --------------------------------------------------------------------------- the Runtime API itself


def _request(server: RuntimeApiServer, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
    conn = http.client.HTTPConnection(server.url, timeout=10)
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def test_the_runtime_api_speaks_lambdas_protocol(server: RuntimeApiServer) -> None:
    """What awslambdaric relies on: every header on /next, 202s, errors kept, unknown ids refused."""
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(server.invoke({"n": 1}, timeout=10)))
    caller.start()
    status, headers, body = _request(server, "GET", "/2018-06-01/runtime/invocation/next")
    assert (status, json.loads(body)) == (200, {"n": 1})
    for name in ("Lambda-Runtime-Aws-Request-Id", "Lambda-Runtime-Deadline-Ms", "Lambda-Runtime-Trace-Id"):
        assert headers[name]
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].startswith("arn:aws:lambda:")
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) > time.time() * 1000
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    error = json.dumps({"errorMessage": "bad", "errorType": "ValueError", "stackTrace": []}).encode()
    path = f"/2018-06-01/runtime/invocation/{request_id}/error"
    assert (
        _request(server, "POST", path, error, **{"Lambda-Runtime-Function-Error-Type": "Unhandled"})[0] == 202
    )
    caller.join()
    assert results[0].error == {"errorMessage": "bad", "errorType": "ValueError", "stackTrace": []}
    assert _request(server, "POST", f"/2018-06-01/runtime/invocation/{request_id}/response", b"{}")[0] == 400
    assert _request(server, "GET", "/2018-06-01/runtime/nope")[0] == 404


def test_an_oversized_response_becomes_a_function_error() -> None:
    with RuntimeApiServer(max_response_bytes=10) as server:
        results: list[Any] = []
        caller = threading.Thread(target=lambda: results.append(server.invoke({}, timeout=10)))
        caller.start()
        _, headers, _ = _request(server, "GET", "/2018-06-01/runtime/invocation/next")
        path = f"/2018-06-01/runtime/invocation/{headers['Lambda-Runtime-Aws-Request-Id']}/response"
        assert _request(server, "POST", path, b"x" * 11)[0] == 413
        caller.join()
        assert results[0].error["errorType"] == "Function.ResponseSizeTooLarge"
