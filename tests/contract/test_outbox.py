"""One contract for ``Outbox``, run against the in-memory twin and the AWS adapter (SQS and EventBridge on a
moto server): a completion reaches a reply queue or bus in one event shape, a dead letter keeps its id,
reason and body, and a target outside the rules is refused before anything is sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.aws.outbox import AwsOutbox
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.ports import Outbox
from chalicelib.core.replies import COMPLETED, MAX_REASON, SOURCE
from chalicelib.memory.stores import MemoryOutbox

ACCOUNT = "123456789012"


@dataclass
class Box:
    outbox: Outbox
    queue_url: str
    queue_arn: str
    bus_arn: str
    received: Callable[[str], list[dict[str, Any]]]
    """The events that reached a target (a reply queue's URL, or the bus's ARN)."""
    dead: Callable[[], list[dict[str, Any]]]
    """The dead letters, as documents ``message_id``, ``reason``, ``body``."""


@pytest.fixture(params=["memory", pytest.param("aws", marks=pytest.mark.functional)])
def box(request: pytest.FixtureRequest) -> Iterator[Box]:
    name = f"modelport-replies-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        memory = MemoryOutbox()
        url, arn = (
            f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{name}",
            f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}",
        )
        bus = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/modelport-{name}"

        def received(target: str) -> list[dict[str, Any]]:
            same = {url, arn} if target == url else {target}
            return [
                {"source": SOURCE, "detail-type": kind, "detail": detail}
                for to, kind, detail in memory.replies
                if to in same
            ]

        def dead() -> list[dict[str, Any]]:
            return [{"message_id": i, "body": b, "reason": r} for i, b, r in memory.dead]

        yield Box(memory, url, arn, bus, received, dead)
        return
    session = request.getfixturevalue("aws_session")
    endpoint = request.getfixturevalue("moto_server")
    sqs = session.client("sqs", endpoint_url=endpoint)
    events = session.client("events", endpoint_url=endpoint)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    heard = sqs.create_queue(QueueName=f"{name}-heard")["QueueUrl"]  # what the bus's rule delivers to
    heard_arn = sqs.get_queue_attributes(QueueUrl=heard, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bus = events.create_event_bus(Name=f"modelport-{name}")["EventBusArn"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "heard", "Arn": heard_arn}])

    def drain(queue: str) -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    def received_aws(target: str) -> list[dict[str, Any]]:
        if target == bus:
            return [{k: e[k] for k in ("source", "detail-type", "detail")} for e in drain(heard)]
        return drain(url)

    yield Box(AwsOutbox(sqs, events, dlq), url, arn, bus, received_aws, lambda: drain(dlq))
    for queue in (url, dlq, heard):
        sqs.delete_queue(QueueUrl=queue)


DETAIL = {"job_id": "job-1", "status": "SUCCEEDED", "result": {"status": 200, "body": {"y": [1]}}}


@pytest.mark.parametrize("by", ["url", "arn"])
def test_a_completion_reaches_a_reply_queue_as_one_event(box: Box, by: str) -> None:
    box.outbox.reply(box.queue_url if by == "url" else box.queue_arn, COMPLETED, DETAIL)
    assert box.received(box.queue_url) == [{"source": SOURCE, "detail-type": COMPLETED, "detail": DETAIL}]


def test_a_completion_reaches_a_bus_as_an_eventbridge_event(box: Box) -> None:
    box.outbox.reply(box.bus_arn, COMPLETED, DETAIL)
    assert box.received(box.bus_arn) == [{"source": SOURCE, "detail-type": COMPLETED, "detail": DETAIL}]


@pytest.mark.parametrize(
    "target",
    [
        "https://sqs.us-east-1.amazonaws.com/123456789012/modelport-jobs",  # the platform's own queue
        "arn:aws:sqs:us-east-1:123456789012:someone-elses-queue",
        "arn:aws:events:us-east-1:123456789012:event-bus/other",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_a_target_outside_the_rules_is_refused_before_anything_is_sent(box: Box, target: str) -> None:
    with pytest.raises(InvalidRequest, match="reply_to"):
        box.outbox.reply(target, COMPLETED, DETAIL)
    assert box.received(box.queue_url) == []


def test_a_dead_letter_keeps_its_id_reason_and_body(box: Box) -> None:
    box.outbox.dead_letter("m-1", '{"model": 3}', "model: not a name " + "x" * 2000)
    (letter,) = box.dead()
    assert letter["message_id"] == "m-1" and letter["body"] == '{"model": 3}'
    assert letter["reason"].startswith("model: not a name") and len(letter["reason"]) == MAX_REASON
