"""The Chalice app served over HTTP (``ApiServer``): keep-alive, binary bodies both ways, auth headers."""

from __future__ import annotations

import base64
import http.client
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from app import app
from chalicelib import wiring
from chalicelib.local.api import ApiServer
from chalicelib.memory.stores import MemoryInvoker
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

pytestmark = pytest.mark.functional

DIGIT = (ROOT / "examples/digits-onnx/samples/digit-7.png").read_bytes()


class EchoPicture:
    """Stands in for the digits function: answers the request's own picture, records the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return {
            "status": 200,
            "content_type": "image/png",
            "body": event["body"],
            "body_encoding": event["body_encoding"],
        }


@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    container = wiring.memory_container(wiring.Settings(admin_key=ADMIN_KEY))
    wiring.override(container)
    fake = EchoPicture()
    assert isinstance(container.invoker, MemoryInvoker)
    container.invoker.register("modelport-digits-onnx", fake)
    try:
        with Client(app) as client:
            alice, _ = new_account(Api(client, ADMIN_KEY), "alice")
            assert (
                deploy(container, alice, "digits-onnx", bundle("digits-onnx"))["deployment"].state == "READY"
            )
        with ApiServer(app) as server:
            assert server.url.startswith("http://127.0.0.1:")
            conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=10)
            yield {"conn": conn, "key": alice.key, "fake": fake}
            conn.close()
    finally:
        wiring.override(None)


def _call(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def test_health_and_a_binary_invoke_on_one_keep_alive_connection(served: dict[str, Any]) -> None:
    conn = served["conn"]
    status, headers, body = _call(conn, "GET", "/v1/health", None, {})
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert headers.get("connection", "").lower() != "close"
    sock = conn.sock

    invoke = {"Content-Type": "image/png", "Accept": "image/png", "Authorization": f"Bearer {served['key']}"}
    status, headers, body = _call(conn, "POST", "/v1/models/digits-onnx/invoke", DIGIT, invoke)
    assert status == 200, body
    assert headers["content-type"] == "image/png"
    assert body == DIGIT  # byte-exact both ways: in as the request's body, out as the answer
    assert base64.b64decode(served["fake"].events[-1]["body"]) == DIGIT
    assert conn.sock is sock  # the same connection throughout

    status, _, body = _call(
        conn, "POST", "/v1/models/digits-onnx/invoke", DIGIT, {**invoke, "Authorization": "Bearer mp_nope"}
    )
    assert status == 401, body  # the header reaches the authorizer as sent


def test_keep_alive_answers_have_no_nagle_stall(served: dict[str, Any]) -> None:
    """A regression guard, not a speed target: Nagle + delayed ACK would put every answer near 40 ms."""
    conn = served["conn"]
    _call(conn, "GET", "/v1/health", None, {})
    durations = []
    for _ in range(20):
        began = time.perf_counter()
        status, _, _ = _call(conn, "GET", "/v1/health", None, {})
        durations.append(time.perf_counter() - began)
        assert status == 200
    assert statistics.median(durations) < 0.020, durations
