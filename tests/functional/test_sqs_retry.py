"""The SQS adapter of ``RetryQueue`` on moto: a failed message comes back after the delay it was given,
not after the deploy queue's hour-long visibility timeout."""

from __future__ import annotations

import pytest

from chalicelib.aws.sqs import SqsRetryQueue
from chalicelib.core.errors import ConfigError
from tests.conftest import Infra

pytestmark = pytest.mark.functional


def test_a_message_is_visible_again_after_its_retry_delay(infra: Infra) -> None:
    sqs = infra.client("sqs")
    url, arn = infra.outputs["deploy_queue_url"], infra.outputs["deploy_queue_arn"]
    sqs.send_message(QueueUrl=url, MessageBody="deploy me")

    def receive() -> list[dict[str, str]]:  # (the bucket's notification put an s3:TestEvent there too)
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=3600)
        return [m for m in got.get("Messages", []) if m["Body"] == "deploy me"]

    (first,) = receive()
    assert receive() == []  # invisible for the hour the receive asked for

    SqsRetryQueue(sqs).retry_in(arn, first["ReceiptHandle"], 0)
    assert [m["MessageId"] for m in receive()] == [first["MessageId"]]


def test_an_arn_that_is_not_a_queues_is_refused(infra: Infra) -> None:
    with pytest.raises(ConfigError, match="not an SQS queue ARN"):
        SqsRetryQueue(infra.client("sqs")).retry_in("arn:aws:s3:::bucket", "handle", 30)
