"""The API's structured logs and metrics, with Powertools for AWS Lambda (docs/observability.md).

``http_middleware`` wraps every request: it takes the request's trace id (``core/trace.py``: the client's
``X-Amzn-Trace-Id`` root when well formed, else a new one), puts the correlation keys (request id, account,
model, version, stage, trace id) on every line the Powertools ``Logger`` writes while the request runs,
writes one line per request (method, route, status, duration), answers the trace id in the response's
``X-Amzn-Trace-Id`` and ``traceparent`` headers, and for an invocation writes its metrics in CloudWatch's
embedded metric format (EMF: a JSON line the Logs service turns into metrics) - namespace ``Modelport``,
dimension ``model``. Lambda ships stdout to CloudWatch Logs; the local stack ships the API process's
stdout to the same emulation (``/aws/lambda/modelport-api-local``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from chalice.app import Request, Response

from chalicelib import wiring
from chalicelib.core import trace
from chalicelib.core.trace import TRACE_HEADER, TRACEPARENT_HEADER, Observation, StdoutHandler

NAMESPACE = "Modelport"
SERVICE = "modelport-api"
MAX_KEY_CHARS = 100
"""Correlation values from the request (the route's model name) are cut to this; ids are ours."""


logger = Logger(service=SERVICE, logger_handler=StdoutHandler(), utc=True)


def json_logs_for_modelport() -> None:
    """Every ``modelport.*`` logger's lines as this logger's JSON, with the request's keys: for a process
    that is the API alone (the Lambda function, the local stack's API process)."""
    logging.getLogger("modelport")  # registered, so it gets the handler its children propagate to
    copy_config_to_registered_loggers(source_logger=logger, include={"modelport"})


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    json_logs_for_modelport()


def _stage() -> str | None:
    """The stage the control plane is wired for (its settings, from ``MODELPORT_STAGE``)."""
    try:
        return wiring.container().settings.stage[:MAX_KEY_CHARS]
    except Exception:  # a request's line never fails for want of a wiring
        return None


def _request_id(request: Request) -> str:
    context = request.context or {}
    value = context.get("requestId") if isinstance(context, dict) else None
    lambda_context = getattr(request, "lambda_context", None)
    value = value or getattr(lambda_context, "aws_request_id", None)
    return str(value)[:MAX_KEY_CHARS] if value else str(uuid.uuid4())


def _account(request: Request) -> str | None:
    context = (request.context or {}).get("authorizer") or {}
    raw = context.get("account") if isinstance(context, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        account = json.loads(raw).get("account_id")
    except (ValueError, AttributeError):
        return None
    return account[:MAX_KEY_CHARS] if isinstance(account, str) else None


def _route_keys(request: Request) -> dict[str, Any]:
    params = request.uri_params or {}
    keys: dict[str, Any] = {}
    name, version = params.get("name"), params.get("version")
    if isinstance(name, str):
        keys["model"] = name[:MAX_KEY_CHARS]
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) <= 9:
        keys["version"] = int(version)
    return keys


def http_middleware(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Chalice's ``http`` middleware: see the module's docstring."""
    began = time.perf_counter()
    trace_id = trace.trace_id_for(request.headers.get(TRACE_HEADER), request.headers.get(TRACEPARENT_HEADER))
    observation = trace.begin(trace_id)
    logger.thread_safe_append_keys(
        request_id=_request_id(request),
        trace_id=trace_id,
        stage=_stage(),
        account=_account(request),
        **_route_keys(request),
    )
    try:
        response = get_response(request)
        response.headers.update(trace.trace_headers(trace_id))
        duration_ms = round((time.perf_counter() - began) * 1000, 3)
        if observation.model is not None:  # the invoke service knew it: the resolved model and version
            logger.thread_safe_append_keys(model=observation.model, version=observation.version)
        context = request.context or {}
        logger.info(
            "request",
            extra={
                "method": request.method,
                "route": context.get("resourcePath"),
                "status": response.status_code,
                "duration_ms": duration_ms,
                **({"error_class": observation.error_class} if observation.error_class else {}),
                **({"cold_starts": observation.cold_starts} if observation.cold_starts else {}),
            },
        )
        if observation.outcome is not None:
            emit_invocation_metrics(observation, duration_ms)
        return response
    finally:
        logger.thread_safe_clear_keys()
        trace.end()


def emit_invocation_metrics(observation: Observation, duration_ms: float) -> None:
    """One invocation's EMF blobs: per model, and its errors per model and error class."""
    assert observation.model is not None
    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_dimension(name="model", value=observation.model)
    failed = observation.outcome == "error"
    metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1 if failed else 0)
    metrics.add_metric(name="ColdStarts", unit=MetricUnit.Count, value=observation.cold_starts)
    metrics.add_metric(name="RequestLatency", unit=MetricUnit.Milliseconds, value=duration_ms)
    if observation.latency_ms is not None:
        metrics.add_metric(name="FunctionLatency", unit=MetricUnit.Milliseconds, value=observation.latency_ms)
    metrics.add_metadata(key="trace_id", value=observation.trace_id)
    metrics.flush_metrics()
    if failed or observation.error_class is not None:
        by_class = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        by_class.add_dimension(name="model", value=observation.model)
        by_class.add_dimension(name="error_class", value=observation.error_class or "FunctionError")
        by_class.add_metric(name="ErrorsByClass", unit=MetricUnit.Count, value=1)
        by_class.flush_metrics()
