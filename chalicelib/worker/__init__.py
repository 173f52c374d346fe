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

log = logging.getLogger("modelport.worker")

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
        try:
            _deployments().handle_message(body)
        except (DeploymentBusy, ModelportError) as exc:  # another attempt holds the lease, or an outage
            log.warning("message %s left for redelivery: %s: %s", message_id, type(exc).__name__, exc)
            failures.append({"itemIdentifier": message_id})
        except Exception:
            log.exception("message %s failed; left for redelivery", message_id)
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
