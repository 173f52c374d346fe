"""The AWS adapter of ``Outbox``: completions to a reply queue (SQS) or bus (EventBridge), dead letters
to the invocations queue's DLQ.

A completion has one shape wherever it goes: an EventBridge event (``source`` ``modelport``,
``detail-type`` "Modelport Invocation Completed", ``detail``); on a queue, that event as the body.
Targets are checked by ``core/replies.check_target``."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.aws.outage import translates_outages
from chalicelib.core.errors import InvalidRequest
from chalicelib.core.replies import BUS_ARN, MAX_REASON, SOURCE, SQS_ARN, check_target


@translates_outages
class AwsOutbox:
    def __init__(self, sqs_client: Any, events_client: Any, dead_letter_queue: str) -> None:
        self.sqs = sqs_client
        self.events = events_client
        self.dead_letter_queue = dead_letter_queue
        self._urls: dict[str, str] = {}

    def reply(self, target: str, detail_type: str, detail: dict[str, Any]) -> None:
        check_target(target)
        if BUS_ARN.fullmatch(target):
            entry = {
                "Source": SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": target,
            }
            answer = self.events.put_events(Entries=[entry])
            if answer.get("FailedEntryCount"):
                failed = answer["Entries"][0]
                raise InvalidRequest(
                    f"the bus refused the event: {failed.get('ErrorCode')} {failed.get('ErrorMessage')}"
                )
            return
        event = {"source": SOURCE, "detail-type": detail_type, "detail": detail}
        self.sqs.send_message(QueueUrl=self._url(target), MessageBody=json.dumps(event))

    def dead_letter(self, message_id: str, body: str, reason: str) -> None:
        doc = {"message_id": message_id, "reason": reason[:MAX_REASON], "body": body}
        self.sqs.send_message(
            QueueUrl=self._url(self.dead_letter_queue),
            MessageBody=json.dumps(doc),
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:MAX_REASON]}},
        )

    def _url(self, queue: str) -> str:
        """A queue URL from a URL, an ARN or a name."""
        if queue.startswith(("http://", "https://")):
            return queue
        if queue not in self._urls:
            match = SQS_ARN.fullmatch(queue)
            kwargs = (
                {"QueueName": match["name"], "QueueOwnerAWSAccountId": match["account"]}
                if match
                else {"QueueName": queue}
            )
            self._urls[queue] = str(self.sqs.get_queue_url(**kwargs)["QueueUrl"])
        return self._urls[queue]
