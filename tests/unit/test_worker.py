"""The deploy worker's handler: SQS batches in, partial batch failures out, malformed events answered."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib import wiring
from chalicelib.core.errors import Conflict, Unavailable
from chalicelib.core.records import ModelRecord
from chalicelib.local.pump import lambda_event
from chalicelib.memory.stores import MemoryRetryQueue
from chalicelib.services.deployments import DeploymentBusy, upload_key
from chalicelib.worker import handler, retry_delay_s

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iris-onnx"
QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:modelport-deploy"


def s3_body(bucket: str, key: str, etag: str, size: int) -> str:
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag}}}]})  # fmt: skip


def sqs_event(*bodies: str) -> dict[str, Any]:
    messages = [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": b} for i, b in enumerate(bodies)]
    return lambda_event(messages, QUEUE_ARN, "us-east-1")


@pytest.fixture
def container() -> Iterator[wiring.Container]:
    c = wiring.memory_container()
    wiring.override(c)
    yield c
    wiring.override(None)


def bundle() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path in sorted(EXAMPLE.iterdir()):
            tf.add(path, arcname=path.name)
    return buf.getvalue()


def upload(c: wiring.Container, name: str = "iris-onnx") -> str:
    with contextlib.suppress(Conflict):
        c.models.create_model(ModelRecord(name=name, owner="acct-1", created_at=c.clock()))
    version = c.models.reserve_version(name, lambda v: upload_key(name, v, "tar.gz"), c.clock())
    info = c.artifacts.put(version.upload_key, bundle())
    return s3_body(c.settings.bundle_bucket, info.key, info.etag, info.size_bytes)


def test_a_batch_deploys_its_bundles_and_reports_no_failures(container: wiring.Container) -> None:
    assert handler(sqs_event(upload(container), upload(container)), None) == {"batchItemFailures": []}
    assert [container.models.get_version("iris-onnx", v).status for v in (1, 2)] == ["READY", "READY"]


class FlakyService:
    """A deployment service whose answer depends on the body: what each kind of failure looks like."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def handle_message(self, body: str) -> list[Any]:
        self.bodies.append(body)
        if body == "busy":
            raise DeploymentBusy("leased by another attempt")
        if body == "outage":
            raise Unavailable("the table is throttling")
        if body == "bug":
            raise KeyError("an unexpected fault")
        return []


def test_only_the_failed_records_go_back_to_the_queue(
    container: wiring.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = FlakyService()
    monkeypatch.setattr(wiring, "deployment_service", lambda c, **_: service)
    result = handler(sqs_event("ok", "busy", "ok", "outage", "bug"), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": i} for i in ("m1", "m3", "m4")]}
    assert service.bodies == ["ok", "busy", "ok", "outage", "bug"]
    # An outage or a bug comes back in 30 s, not after the queue's hour; a busy one waits out the lease.
    assert isinstance(container.retries, MemoryRetryQueue)
    assert container.retries.retries == [(QUEUE_ARN, "r3", 30), (QUEUE_ARN, "r4", 30)]


def test_the_retry_delay_doubles_with_each_receive_up_to_fifteen_minutes(
    container: wiring.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [retry_delay_s(n) for n in (1, 2, 3, 4, 5, 9)] == [30, 60, 120, 240, 480, 900]
    monkeypatch.setattr(wiring, "deployment_service", lambda c, **_: FlakyService())
    event = sqs_event("outage")
    event["Records"][0]["attributes"]["ApproximateReceiveCount"] = "3"
    handler(event, None)
    assert isinstance(container.retries, MemoryRetryQueue)
    assert container.retries.retries == [(QUEUE_ARN, "r0", 120)]


def test_a_retry_queue_that_fails_leaves_the_message_to_the_queues_timeout(
    container: wiring.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Down:
        def retry_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
            raise Unavailable("SQS does not answer")

    monkeypatch.setattr(wiring, "deployment_service", lambda c, **_: FlakyService())
    monkeypatch.setattr(container, "retries", Down())
    assert handler(sqs_event("outage"), None) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}


@pytest.mark.parametrize(
    "event",
    [
        None,
        "text",
        [],
        {},
        {"Records": None},
        {"Records": "x"},
        {"Records": [None, 3, {"body": 5}, {"messageId": "a"}]},
    ],
)
def test_malformed_events_are_answered_not_raised(container: wiring.Container, event: Any) -> None:
    assert handler(event, None) == {"batchItemFailures": []}


def test_a_body_that_is_no_s3_notification_is_dropped(container: wiring.Container) -> None:
    assert handler(sqs_event("not json", json.dumps({"Event": "s3:TestEvent"})), None) == {
        "batchItemFailures": []
    }


def test_the_service_is_built_once_per_container(
    container: wiring.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[wiring.Container] = []

    def build(c: wiring.Container, **_: Any) -> FlakyService:
        built.append(c)
        return FlakyService()

    monkeypatch.setattr(wiring, "deployment_service", build)
    handler(sqs_event("ok"), None)
    handler(sqs_event("ok"), None)
    other = wiring.memory_container()
    wiring.override(other)
    handler(sqs_event("ok"), None)
    assert built == [container, other]
