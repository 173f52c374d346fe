"""The local stack's event source mappings: poll SQS queues and call the SQS handlers with batches.

What Lambda's SQS event source mapping does, and the handlers rely on: receive up to ``batch_size``
messages, hand them over as one ``{"Records": [...]}`` event, delete them when the handler returns, leave
them when it raises (and, with ReportBatchItemFailures, leave those its ``batchItemFailures`` answer names).
A left message comes back after its visibility timeout; the queue's redrive policy
(``maxReceiveCount``) moves it to the dead-letter queue, whose own mapping then gets it. The one liberty
taken: a failed batch is made visible again after a short backoff (``retry_s``, doubling per receive)
instead of the queue's 15 minutes, so a local redelivery is seen in seconds. Nothing here imports boto3:
the pump is given a client.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("modelport.local.pump")

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class QueueMapping:
    """One queue and the handler its batches go to (an ``@app.on_sqs_message`` function)."""

    queue_url: str
    queue_arn: str
    handler: Handler
    name: str
    batch_size: int = 1
    delivered: int = 0
    failed: int = 0


class _Context:
    """The slice of Lambda's context object the handlers may read."""

    def __init__(self, name: str, request_id: str) -> None:
        self.function_name = name
        self.aws_request_id = request_id
        self.memory_limit_in_mb = 2048

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 150_000


def lambda_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """SQS messages as Lambda's event source mapping delivers them."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: _lambda_attribute(value)
                    for name, value in (m.get("MessageAttributes") or {}).items()
                },
                "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def _lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as ReceiveMessage answers it (``StringValue``, ``DataType``) in the camelCase
    shape Lambda's event source mapping delivers (``stringValue``, ``dataType``, the list values)."""
    shaped: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value.get("DataType"),
    }
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return shaped


class EventPump:
    """One thread per mapping; ``stop()`` ends them after their current poll (``wait_s``) or batch."""

    def __init__(
        self,
        sqs: Any,
        mappings: list[QueueMapping],
        *,
        region: str = "us-east-1",
        wait_s: int = 1,
        retry_s: float = 1.0,
    ) -> None:
        self.sqs = sqs
        self.mappings = mappings
        self.region = region
        self.wait_s = wait_s
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> EventPump:
        for mapping in self.mappings:
            thread = threading.Thread(
                target=self._loop, args=(mapping,), name=f"pump-{mapping.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self, mapping: QueueMapping) -> None:
        while not self._stop.is_set():
            try:
                self.poll(mapping)
            except Exception:  # the endpoint went away or answered oddly: say so and keep polling
                log.warning("polling %s failed", mapping.name, exc_info=True)
                self._stop.wait(1.0)

    def poll(self, mapping: QueueMapping) -> int:
        """One receive and, if it got messages, one handler call; returns how many messages it got."""
        got = self.sqs.receive_message(
            QueueUrl=mapping.queue_url,
            MaxNumberOfMessages=mapping.batch_size,
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = got.get("Messages") or []
        if not messages:
            return 0
        event = lambda_event(messages, mapping.queue_arn, self.region)
        request_id = messages[0]["MessageId"]
        try:
            answer = mapping.handler(event, _Context(mapping.name, request_id))
        except Exception as exc:
            self._retry(mapping, messages, exc)
            return len(messages)
        failed_ids = batch_item_failures(answer)
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        if failed:
            self._retry(mapping, failed, RuntimeError(f"{len(failed)} record(s) in batchItemFailures"))
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        if not failed:
            mapping.delivered += 1
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=mapping.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def _retry(self, mapping: QueueMapping, messages: list[dict[str, Any]], exc: BaseException) -> None:
        """Failed messages made visible again after the backoff (their receive count picks the DLQ)."""
        mapping.failed += 1
        receives = max(int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")) for m in messages)
        backoff = int(min(self.retry_s * 2 ** (receives - 1), 60))
        log.warning(
            "%s failed on receive %d (%s: %s); redelivery in %d s",
            mapping.name, receives, type(exc).__name__, exc, backoff,
        )  # fmt: skip
        for m in messages:
            self.sqs.change_message_visibility(
                QueueUrl=mapping.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=backoff
            )


def batch_item_failures(answer: Any) -> set[str]:
    """The message ids a handler's ``{"batchItemFailures": [...]}`` answer names (ReportBatchItemFailures)."""
    items = answer.get("batchItemFailures") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return set()
    return {str(i.get("itemIdentifier")) for i in items if isinstance(i, dict)}
