"""The deploy worker: the Lambda handler the deploy queue's event source mapping calls with SQS batches.

It runs as a container-image function (its image: ``chalicelib.worker.image``), not in Chalice's zip: the
inspectors and the daemonless builder need more than a zip function holds. A record that fails or finds
its deployment busy is reported in ``batchItemFailures`` so SQS redelivers only it (the mapping must have
``ReportBatchItemFailures``); the rest of the batch is deleted. A malformed event is logged and answered,
never raised: raising would redeliver the whole batch for a fault no retry can fix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from chalicelib import wiring
from chalicelib.core.errors import ModelportError
from chalicelib.services.deployments import DeploymentBusy, DeploymentService
from chalicelib.worker import observe

log = logging.getLogger("modelport.worker")
RETRY_BASE_S = 30
RETRY_MAX_S = 900

_lock = threading.Lock()
_built: tuple[wiring.Container, DeploymentService] | None = None


def _deployments() -> DeploymentService:
    """The service on the process's container, built once per container (a warm Lambda reuses it)."""
    global _built
    current = wiring.container()
    with _lock:
        if _built is None or _built[0] is not current:
            _built = (current, wiring.deployment_service(current))
        return _built[1]


def handler(event: Any, context: Any) -> dict[str, list[dict[str, str]]]:
    """Deploy every bundle the batch's records announce; the failed records' ids go back to SQS."""
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list):
        log.warning("ignoring an event that is not an SQS batch: %.200r", event)
        return {"batchItemFailures": []}
    failures: list[dict[str, str]] = []
    for record in records:
        message_id = record.get("messageId") if isinstance(record, Mapping) else None
        body = record.get("body") if isinstance(record, Mapping) else None
        if not isinstance(message_id, str) or not isinstance(body, str):
            log.warning("dropping a malformed SQS record: %.200r", record)
            continue
        observe.begin_record(context, message_id)
        try:
            observe.deployments_moved(_deployments().handle_message(body))
        except DeploymentBusy as exc:  # another attempt holds the lease: back after the visibility timeout
            log.warning("message %s left for redelivery: %s", message_id, exc)
            failures.append({"itemIdentifier": message_id})
        except Exception as exc:  # an outage (ModelportError) or a bug: back soon, with a growing delay
            if isinstance(exc, ModelportError):
                log.warning("message %s left for redelivery: %s: %s", message_id, type(exc).__name__, exc)
            else:
                log.exception("message %s failed; left for redelivery", message_id)
            failures.append({"itemIdentifier": message_id})
            _retry_soon(record)
        finally:
            observe.end_record()
    return {"batchItemFailures": failures}


def retry_delay_s(receive_count: int) -> int:
    """30 s after the first failed receive, doubling, at most 15 minutes (the queue's own timeout is an
    hour: six times the worker's, so a batch is never redelivered while it runs)."""
    return int(min(RETRY_BASE_S * 2 ** max(receive_count - 1, 0), RETRY_MAX_S))


def _retry_soon(record: Mapping[str, Any]) -> None:
    retries = wiring.container().retries
    arn, handle = record.get("eventSourceARN"), record.get("receiptHandle")
    if retries is None or not isinstance(arn, str) or not isinstance(handle, str):
        return
    try:
        count = int((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
    except (TypeError, ValueError):
        count = 1
    try:
        retries.retry_in(arn, handle, retry_delay_s(count))
    except Exception:  # the message still comes back, after the queue's visibility timeout
        log.warning("could not shorten the redelivery of %s", record.get("messageId"), exc_info=True)
