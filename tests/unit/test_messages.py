"""Message-driven invocations (memory container): a message becomes one job and one reply, a duplicate
delivery nothing more, a poison message a dead letter with its reason and without the key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chalicelib.api.deps import services
from chalicelib.core.errors import Unavailable
from chalicelib.core.replies import COMPLETED
from chalicelib.services.messages import received
from tests.unit import test_invoke_api
from tests.unit.test_invoke_api import RECORD
from tests.unit.test_jobs_api import run_queued

pytestmark = pytest.mark.unit

world = test_invoke_api.world
REPLIES = "https://sqs.us-east-1.amazonaws.com/123456789012/modelport-replies-alice"


def _record(world: dict[str, Any], body: Any, message_id: str = "m-1", **extra: Any) -> dict[str, Any]:
    key = world["alice"].key
    return {
        "messageId": message_id,
        "body": body if isinstance(body, str) else json.dumps(body),
        "messageAttributes": {"Authorization": {"stringValue": f"Bearer {key}", "dataType": "String"}},
        "attributes": {"ApproximateReceiveCount": "1"},
        **extra,
    }


def test_a_message_becomes_one_job_and_one_reply_even_delivered_twice(world: dict[str, Any]) -> None:
    message = {"model": "iris", "input": {"records": [RECORD]}, "reply_to": REPLIES}
    handle = services().messages.handle  # type: ignore[union-attr]
    job_id = handle(received(_record(world, message)))
    assert job_id is not None
    assert handle(received(_record(world, message))) is None  # the same message id: its job exists
    run_queued(world)
    outbox = world["container"].outbox
    assert len(outbox.replies) == 1
    target, kind, detail = outbox.replies[0]
    assert (target, kind) == (REPLIES, COMPLETED)
    assert detail["job_id"] == job_id and detail["status"] == "SUCCEEDED"
    assert detail["result"]["body"]["predictions"][0][0]["label"] == "setosa"
    assert world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ({"model": "iris"}, "exactly one of input and input_url"),
        ({"model": "Bad Name", "input": {}}, "model"),
        ({"model": "nope", "input": {"records": [RECORD]}}, "NotFound"),
        ({"model": "iris", "input": {"records": [{"sepal_length": "x"}]}}, "/records/0"),
        ({"model": "iris", "input": {"records": [RECORD]}, "reply_to": "https://evil.example/q"}, "reply_to"),
    ],
)
def test_a_poison_message_is_a_dead_letter_with_its_reason(
    world: dict[str, Any], body: Any, reason: str
) -> None:
    assert services().messages.handle(received(_record(world, body))) is None  # type: ignore[union-attr]
    dead = world["container"].outbox.dead
    assert len(dead) == 1 and dead[0][0] == "m-1" and reason in dead[0][2], dead
    assert world["alice"].key not in json.dumps(dead)
    assert world["container"].job_queue.sent == []


def test_a_message_without_a_valid_key_is_a_dead_letter(world: dict[str, Any]) -> None:
    record = _record(world, {"model": "iris", "input": {"records": [RECORD]}})
    for attributes in ({}, {"Authorization": {"stringValue": "Bearer mp_wrong", "dataType": "String"}}):
        services().messages.handle(received({**record, "messageAttributes": attributes}))  # type: ignore[union-attr]
    assert len(world["container"].outbox.dead) == 2 and world["container"].job_queue.sent == []


def test_an_outage_is_retried_then_a_dead_letter(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = services().jobs

    def down(*args: Any, **kwargs: Any) -> Any:
        raise Unavailable("DynamoDB does not answer")

    monkeypatch.setattr(jobs, "submit", down)
    record = _record(world, {"model": "iris", "input": {"records": [RECORD]}})
    with pytest.raises(Unavailable):
        services().messages.handle(received(record))  # type: ignore[union-attr]
    last = {**record, "attributes": {"ApproximateReceiveCount": "4"}}
    assert services().messages.handle(received(last)) is None  # type: ignore[union-attr]
    assert "gave up after 4 attempts" in world["container"].outbox.dead[0][2]


GOOD = "1-5759e988-bd862e3fe1be46a994272793"


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (f"Root={GOOD};Parent=53995c3f42cd8ad8;Sampled=1", True),  # what SQS sets when the sender traces
        (f"Root={GOOD.upper()};Sampled=0", True),
        ("Root=1-5759e988-bd862e3fe1be46a99427279Z;<script>", False),  # malformed: a new id
        (f"Root={GOOD};" + "x" * 300, False),  # over the length cap: not read
        (None, False),  # the sender does not trace
    ],
)
def test_a_message_job_runs_under_the_senders_trace_id_or_a_new_one(
    world: dict[str, Any], header: str | None, kept: bool
) -> None:
    message = {"model": "iris", "input": {"records": [RECORD]}}
    record = _record(world, message)
    if header is not None:
        record["attributes"]["AWSTraceHeader"] = header
    job_id = services().messages.handle(received(record))  # type: ignore[union-attr]
    assert job_id is not None
    run_queued(world)
    event = world["fake"].events[-1]
    doc = world["alice"].call("GET", f"/v1/jobs/{job_id}").json_body
    assert doc["trace_id"] == event["trace_id"]
    if kept:
        assert event["trace_id"] == GOOD
    else:
        assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", event["trace_id"]) and event["trace_id"] != GOOD
        assert "script" not in json.dumps(doc)
