"""Hostile replies over a socket: the Lambda invoker reading an over-size reply from a fake Invoke endpoint
(the requests through the API and the runtime are in tests/unit/security/test_requests.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def fake_lambda() -> Iterator[Any]:
    """A Lambda Invoke endpoint on 127.0.0.1 that answers from a script (tests/functional)."""
    import threading

    from tests.functional.test_direct_invoke import FakeLambda

    server = FakeLambda()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_over_size_reply_read_by_the_lambda_invoker_is_a_clear_error(fake_lambda: Any) -> None:
    from chalicelib.core.errors import ResponseTooLarge
    from tests.functional.test_direct_invoke import DEPLOYMENT, _invoker

    invoker, _ = _invoker(fake_lambda.url)
    refused = {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
    }
    fake_lambda.script = [(200, {"X-Amz-Function-Error": "Unhandled"}, json.dumps(refused).encode())]
    with pytest.raises(ResponseTooLarge, match="over Lambda's 6 MB limit for a synchronous response"):
        invoker.invoke(DEPLOYMENT, {})
    huge = json.dumps({"status": 200, "body": "x" * 6_300_000}).encode()  # an emulator that lets it through
    fake_lambda.script = [(200, {}, huge)]
    with pytest.raises(ResponseTooLarge, match=f"answered {len(huge)} bytes"):
        invoker.invoke(DEPLOYMENT, {})
