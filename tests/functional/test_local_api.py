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
from chalicelib.core.wire import reply
from chalicelib.local.api import ApiServer
from chalicelib.memory.stores import MemoryInvoker
from chalicelib.settings import Settings
from tests.support import ADMIN_KEY, ROOT, Api, bundle, deploy, new_account

pytestmark = pytest.mark.functional

DIGIT = (ROOT / "examples/digits-onnx/samples/digit-7.png").read_bytes()


class EchoPicture:
    """Stands in for the digits function: answers the request's own picture, records the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return dict(reply(200, event["body"], "image/png", event["body_encoding"]))


@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    container = wiring.memory_container(Settings(admin_key=ADMIN_KEY))
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


NO_ROUTE = {"message": "Missing Authentication Token"}


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("TRACE", "/v1/health", {}),  # http.server: 501 for a method it has no do_* for
        ("PROPFIND", "/v1/models/digits-onnx", {}),
        ("PUT", "/v1/health", {}),  # chalice: 405 from the app
        ("OPTIONS", "/v1/health", {}),  # chalice: a 200 preflight, though no route has CORS
        ("GET", "/v1/no/such/path", {"Authorization": "Bearer mp_\u00e9"}),  # chalice: echoes the header
    ],
)
def test_what_no_route_defines_is_403_missing_authentication_token_as_on_api_gateway(
    served: dict[str, Any], method: str, path: str, headers: dict[str, str]
) -> None:
    conn = served["conn"]
    status, answer, body = _call(
        conn, method, path, b'{"a": 1}', {"Content-Type": "application/json", **headers}
    )
    assert status == 403 and json.loads(body) == NO_ROUTE
    assert answer["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    status, _, body = _call(conn, "GET", "/v1/health", None, {})  # the refused body was read: same connection
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_head_is_403_without_a_body(served: dict[str, Any]) -> None:
    status, answer, body = _call(served["conn"], "HEAD", "/v1/health", None, {})
    assert (
        status == 403
        and body == b""
        and int(answer["content-length"]) == len(json.dumps(NO_ROUTE, separators=(",", ":")))
    )


def test_no_authorization_header_is_refused_before_the_authorizer_with_our_error_body(
    served: dict[str, Any],
) -> None:
    status, answer, body = _call(
        served["conn"], "POST", "/v1/models/digits-onnx/invoke", DIGIT, {"Content-Type": "image/png"}
    )
    assert status == 401 and answer["x-amzn-errortype"] == "UnauthorizedException"
    assert json.loads(body) == {
        "code": "Unauthorized", "message": "missing API key", "hint": "send Authorization: Bearer mp_..."
    }  # fmt: skip
    assert not served["fake"].events  # nothing reached the function


def test_a_refused_request_with_an_oversized_body_is_answered_without_reading_it(
    served: dict[str, Any],
) -> None:
    conn = served["conn"]
    conn.putrequest("TRACE", "/v1/health")
    conn.putheader("Content-Length", str(1 << 40))  # a terabyte announced, nothing sent
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 403 and json.loads(response.read()) == NO_ROUTE
    assert response.getheader("connection", "").lower() == "close"


@pytest.mark.parametrize(
    ("length", "status", "code"),
    [("JU-", 400, "InvalidRequest"), ("-1", 400, "InvalidRequest"), (str(1 << 40), 413, "TooLarge")],
)
def test_a_routed_request_with_a_body_it_cannot_frame_is_answered_and_the_connection_closed(
    served: dict[str, Any], length: str, status: int, code: str
) -> None:
    """Found by the fuzzer: chalice int()s Content-Length and drops the connection without an answer."""
    conn = served["conn"]
    conn.putrequest("POST", "/v1/models/digits-onnx/invoke")
    conn.putheader("Authorization", f"Bearer {served['key']}")
    conn.putheader("Content-Length", length)
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == status and json.loads(response.read())["code"] == code
    assert response.getheader("connection", "").lower() == "close"
    assert not served["fake"].events
