"""The event pump against real SQS (a moto server): batches in, delete on success, redelivery, the DLQ."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from chalicelib.local.pump import EventPump, QueueMapping
from tests.conftest import Infra

pytestmark = pytest.mark.functional


@pytest.fixture
def queues(infra: Infra) -> Infra:
    """The queues empty (the bucket notification's S3 test event gone)."""
    for key in ("deploy_queue_url", "deploy_dlq_url"):
        infra.client("sqs").purge_queue(QueueUrl=infra.outputs[key])
    return infra


class Recorder:
    """A handler that fails its first ``failures`` calls, recording every event it was given."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> None:
        self.events.append(event)
        assert context.function_name
        if len(self.events) <= self.failures:
            raise RuntimeError(f"failure {len(self.events)}")

    def bodies(self) -> list[str]:
        return [r["body"] for e in self.events for r in e["Records"]]


def mappings(infra: Infra, deploy: Recorder, dlq: Recorder, batch_size: int = 1) -> list[QueueMapping]:
    out = infra.outputs
    return [
        QueueMapping(out["deploy_queue_url"], out["deploy_queue_arn"], deploy, "deploy-worker", batch_size),
        QueueMapping(out["deploy_dlq_url"], out["deploy_dlq_arn"], dlq, "on_bundle_abandoned"),
    ]


def send(infra: Infra, *bodies: str) -> None:
    for body in bodies:
        infra.client("sqs").send_message(QueueUrl=infra.outputs["deploy_queue_url"], MessageBody=body)


def drain(pump: EventPump, mapping: QueueMapping, rounds: int = 20) -> None:
    for _ in range(rounds):
        pump.poll(mapping)


def queued(infra: Infra, url_key: str) -> int:
    attrs = infra.client("sqs").get_queue_attributes(
        QueueUrl=infra.outputs[url_key],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_messages_arrive_as_lambda_sqs_events_in_batches_and_are_deleted(queues: Infra) -> None:
    infra = queues
    deploy, dlq = Recorder(), Recorder()
    pump = EventPump(infra.client("sqs"), mappings(infra, deploy, dlq, batch_size=10), wait_s=0)
    send(infra, *(json.dumps({"n": i}) for i in range(3)))
    drain(pump, pump.mappings[0], rounds=3)
    assert sorted(deploy.bodies()) == sorted(json.dumps({"n": i}) for i in range(3))
    record = deploy.events[0]["Records"][0]
    assert (
        record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == infra.outputs["deploy_queue_arn"]
    )
    assert record["receiptHandle"] and record["messageId"] and record["attributes"]["ApproximateReceiveCount"]
    assert queued(infra, "deploy_queue_url") == 0 and not dlq.events


def test_a_failing_handler_gets_the_message_again(queues: Infra) -> None:
    infra = queues
    deploy, dlq = Recorder(failures=2), Recorder()
    pump = EventPump(infra.client("sqs"), mappings(infra, deploy, dlq), wait_s=0, retry_s=0.0)
    send(infra, "retry me")
    deadline = time.monotonic() + 10
    while len(deploy.events) < 3 and time.monotonic() < deadline:
        pump.poll(pump.mappings[0])
    assert deploy.bodies() == ["retry me"] * 3
    receives = [int(e["Records"][0]["attributes"]["ApproximateReceiveCount"]) for e in deploy.events]
    assert receives == [1, 2, 3]
    assert queued(infra, "deploy_queue_url") == 0 and not dlq.events


def test_a_message_that_keeps_failing_ends_in_the_dlq_handler(queues: Infra) -> None:
    infra = queues
    from chalicelib.aws.infra import MAX_RECEIVE_COUNT

    deploy, dlq = Recorder(failures=1000), Recorder()
    pump = EventPump(infra.client("sqs"), mappings(infra, deploy, dlq), wait_s=0, retry_s=0.0)
    send(infra, "poison")
    drain(pump, pump.mappings[0], rounds=MAX_RECEIVE_COUNT + 3)
    assert len(deploy.events) == MAX_RECEIVE_COUNT  # then the redrive policy moved it
    drain(pump, pump.mappings[1], rounds=2)
    assert dlq.bodies() == ["poison"]
    assert queued(infra, "deploy_queue_url") == 0 and queued(infra, "deploy_dlq_url") == 0


def test_the_pump_threads_deliver_and_stop(queues: Infra) -> None:
    infra = queues
    deploy, dlq = Recorder(), Recorder()
    pump = EventPump(infra.client("sqs"), mappings(infra, deploy, dlq), wait_s=0).start()
    try:
        send(infra, "threaded")
        deadline = time.monotonic() + 10
        while not deploy.events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pump.stop(timeout=10)
    assert deploy.bodies() == ["threaded"]
    assert all(not t.is_alive() for t in pump._threads)


def test_only_the_records_a_handler_reports_failed_come_back(queues: Infra) -> None:
    """ReportBatchItemFailures: the batch's other messages are deleted, the named one is redelivered."""
    infra = queues
    seen: list[str] = []

    def partial(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        seen.extend(r["body"] for r in records)
        return {
            "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "bad"]
        }

    dlq = Recorder()
    pump = EventPump(
        infra.client("sqs"), mappings(infra, Recorder(), dlq, batch_size=10), wait_s=0, retry_s=0.0
    )
    pump.mappings[0].handler = partial
    send(infra, "good", "bad", "fine")
    deadline = time.monotonic() + 10
    while seen.count("bad") < 2 and time.monotonic() < deadline:
        pump.poll(pump.mappings[0])
    assert sorted(seen) == ["bad", "bad", "fine", "good"]
    assert pump.mappings[0].failed >= 1
