"""The SQS adapter of ``RetryQueue``: a received message's visibility shortened to its retry delay."""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.aws.outage import translates_outages
from chalicelib.core.errors import ConfigError

SqsClient = Any
"""A low-level ``boto3.client("sqs")``; typed ``Any`` because boto3 ships no stubs."""


@translates_outages
class SqsRetryQueue:
    def __init__(self, client: SqsClient) -> None:
        self.client = client
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def retry_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
        self.client.change_message_visibility(
            QueueUrl=self._url(queue_arn),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, int(seconds)),
        )

    def _url(self, queue_arn: str) -> str:
        """The queue's URL from its ARN (``arn:aws:sqs:REGION:ACCOUNT:NAME``), asked once."""
        with self._lock:
            if queue_arn not in self._urls:
                parts = queue_arn.split(":")
                if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[5]:
                    raise ConfigError(f"{queue_arn[:120]!r} is not an SQS queue ARN", path="eventSourceARN")
                found = self.client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
                self._urls[queue_arn] = str(found["QueueUrl"])
            return self._urls[queue_arn]
