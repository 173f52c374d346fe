"""core/wire: the invocation documents keep their JSON, and negotiation follows RFC 9110."""

from __future__ import annotations

import base64
import json

import pytest

from chalicelib.core.wire import error_document, invocation_event, negotiate, reply, reply_body

OFFERED = ("application/json", "image/png")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("image/*", "image/png"),
        ("IMAGE/PNG; Q=0.4, application/json;q=0.3", "image/png"),
        ("*/*, image/png", "application/json"),  # equal q: the model's order
        ("application/json;q=0.5, */*", "image/png"),  # */* gives PNG q=1; JSON's own range says 0.5
        ("*/*, image/png;q=0", "application/json"),  # the most specific range refuses PNG
        ("image/*, image/png;q=0", None),
        ("image/png;q=0", None),
        ("text/html", None),
        ("image/png;q=oops", None),
    ],
)
def test_negotiation_takes_the_most_specific_range(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept, OFFERED) == chosen


def test_an_event_is_the_json_the_control_plane_always_sent() -> None:
    event = invocation_event(b'{"records": []}', "application/json", "application/json")
    assert json.dumps(event, separators=(",", ":")) == (
        '{"body":"{\\"records\\": []}","body_encoding":"utf8","content_type":"application/json",'
        '"accept":"application/json"}'
    )
    png = invocation_event(b"\x89PNG", "image/png")
    assert png == {
        "body": base64.b64encode(b"\x89PNG").decode(),
        "body_encoding": "base64",
        "content_type": "image/png",
    }
    with pytest.raises(UnicodeDecodeError):
        invocation_event(b"\xff", "text/csv")


def test_replies_and_error_documents_keep_their_key_order() -> None:
    answer = reply(415, json.dumps(error_document("UnsupportedMediaType", "no", stage="decode")))
    assert list(answer) == ["status", "content_type", "body", "body_encoding"]
    assert list(json.loads(answer["body"])) == ["code", "message", "stage"]
    assert reply_body(reply(200, base64.b64encode(b"png").decode(), "image/png", "base64")) == b"png"
    assert reply_body({}) == b""
