"""The deploy worker's structured logs and deployment metrics, with Powertools (docs/observability.md).

Each SQS record is handled with the correlation keys on every line the Powertools ``Logger`` writes
(request id, stage, trace id: a new one per record, as a deployment is a request of its own), one line
per deployment it moved (model, version, state, duration), and its durations in EMF: namespace
``Modelport``, dimension ``model``: ``DeploymentDuration`` and per deployment stage
``DeploymentStageDuration`` (dimensions ``model``, ``deployment_stage``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from chalicelib import wiring
from chalicelib.core import trace
from chalicelib.core.records import Deployment
from chalicelib.core.trace import StdoutHandler

NAMESPACE = "Modelport"
SERVICE = "modelport-worker"


logger = Logger(service=SERVICE, logger_handler=StdoutHandler(), utc=True)
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # a Lambda of its own: Modelport's other lines in JSON too
    logging.getLogger("modelport")  # registered, so it gets the JSON handler its children propagate to
    copy_config_to_registered_loggers(source_logger=logger, include={"modelport"})


def begin_record(context: Any, message_id: str) -> str:
    """Correlation keys for one SQS record; returns its trace id."""
    trace_id = trace.begin(trace.mint_trace_id()).trace_id
    try:
        stage: str | None = wiring.container().settings.stage
    except Exception:
        stage = None
    request_id = getattr(context, "aws_request_id", None)
    logger.thread_safe_append_keys(
        request_id=str(request_id) if request_id else message_id, message_id=message_id, trace_id=trace_id,
        stage=stage,
    )  # fmt: skip
    return trace_id


def end_record() -> None:
    logger.thread_safe_clear_keys()
    trace.end()


def _ms(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


def deployments_moved(deployments: Iterable[Deployment]) -> None:
    """A line and the duration metrics of each deployment a record moved; never raises (a record's outcome
    is the deployment's, not its metrics')."""
    try:
        _moved(deployments)
    except Exception:
        logging.getLogger("modelport.worker").debug("no metrics for a deployment", exc_info=True)


def _moved(deployments: Iterable[Deployment]) -> None:
    for dep in deployments:
        total = _ms(dep.stages[0].started_at, dep.stages[-1].finished_at) if dep.stages else 0.0
        logger.info(
            "deployment",
            extra={
                "model": dep.model_name, "version": dep.version, "deployment_id": dep.deployment_id,
                "state": dep.state, "duration_ms": round(total, 3), "reason": dep.reason,
            },
        )  # fmt: skip
        if dep.state not in ("READY", "FAILED"):
            continue
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        metrics.add_dimension(name="model", value=dep.model_name)
        metrics.add_metric(name="DeploymentDuration", unit=MetricUnit.Milliseconds, value=total)
        metrics.add_metric(name="DeploymentFailures", unit=MetricUnit.Count, value=int(dep.state == "FAILED"))
        metrics.flush_metrics()
        for record in dep.stages:
            per_stage = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            per_stage.add_dimensions(model=dep.model_name, deployment_stage=record.stage)
            per_stage.add_metric(
                name="DeploymentStageDuration", unit=MetricUnit.Milliseconds,
                value=_ms(record.started_at, record.finished_at),
            )  # fmt: skip
            per_stage.flush_metrics()
