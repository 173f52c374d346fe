"""The SQS adapter of ``JobQueue``: a submitted job's id onto the jobs queue (its runner: the app's on_job).

Apart from ``sqs.py`` (the deploy worker's retry delays): the worker never queues jobs, and the policy tests
read each adapter file's calls for the role that runs it."""

from __future__ import annotations

import json

from chalicelib.aws.outage import translates_outages
from chalicelib.aws.sqs import SqsClient


@translates_outages
class SqsJobQueue:
    """``JobQueue`` on the jobs queue, found by name once."""

    def __init__(self, client: SqsClient, queue_name: str) -> None:
        self.client = client
        self.queue_name = queue_name
        self._url: str | None = None

    def send(self, job_id: str, *, webhook_attempt: int = 0, delay_s: int = 0) -> None:
        if self._url is None:
            self._url = str(self.client.get_queue_url(QueueName=self.queue_name)["QueueUrl"])
        doc: dict[str, object] = {"job_id": job_id}
        if webhook_attempt:
            doc["webhook_attempt"] = webhook_attempt
        self.client.send_message(
            QueueUrl=self._url, MessageBody=json.dumps(doc), DelaySeconds=max(0, min(int(delay_s), 900))
        )
