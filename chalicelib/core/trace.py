"""The trace id of one request, from the API through a chain's stages to the model function and back.

The id is an X-Ray root (``1-<8 hex: epoch seconds>-<24 hex>``, docs/observability.md): taken from the
request's ``X-Amzn-Trace-Id`` header when its ``Root`` is well formed, minted otherwise. A client's header
is hostile input: it is length-capped, parsed field by field, and only the validated root is ever used or
echoed (never the raw header). The same id goes into the invocation event (``trace_id``), into each
intermediate document of a chain, into every structured log line, and back in the response's
``X-Amzn-Trace-Id`` (and W3C ``traceparent``) headers.

``Observation`` is what one request learned on its way (model, version, outcome, cold starts), set where
it is known (the invoke service) and read by whoever logs or measures the request (the API's middleware):
a context variable, so concurrent requests on threads never see each other's. Stdlib only: the model's
runtime imports this module too.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

TRACE_HEADER = "X-Amzn-Trace-Id"
TRACEPARENT_HEADER = "traceparent"
MAX_HEADER_CHARS = 256
"""A longer header is ignored unread (X-Ray's own are well under 200 characters)."""
TRACE_ID = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def parse_trace_header(value: object) -> str | None:
    """The ``Root`` of an ``X-Amzn-Trace-Id`` header (``Root=1-...;Parent=...;Sampled=1``) when it is a
    well-formed X-Ray trace id, else None. Hex is taken in either case and answered in lower case."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
        return None
    for part in value.split(";"):
        key, _, root = part.strip().partition("=")
        if key.strip() == "Root":
            root = root.strip().lower()
            return root if TRACE_ID.fullmatch(root) else None
    return None


def parse_traceparent(value: object) -> str | None:
    """A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``) as the X-Ray id of the same trace."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS:
        return None
    found = _TRACEPARENT.fullmatch(value.strip().lower())
    if found is None or found.group(1) == "0" * 32:
        return None
    hex32 = found.group(1)
    return f"1-{hex32[:8]}-{hex32[8:]}"


def mint_trace_id(now: float | None = None) -> str:
    """A new X-Ray trace id: the epoch seconds, then 96 random bits."""
    seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
    return f"1-{seconds:08x}-{secrets.token_hex(12)}"


def trace_id_for(header: object, traceparent: object = None) -> str:
    """The request's trace id: its ``X-Amzn-Trace-Id`` root, else its ``traceparent``'s, else a new one."""
    return parse_trace_header(header) or parse_traceparent(traceparent) or mint_trace_id()


def valid_trace_id(value: object) -> str | None:
    """``value`` when it is a trace id as this module makes them (what an event or a document carries)."""
    return value if isinstance(value, str) and TRACE_ID.fullmatch(value) else None


def trace_headers(trace_id: str) -> dict[str, str]:
    """The response headers that carry ``trace_id`` back: X-Ray's and W3C's (a fresh span id)."""
    return {
        TRACE_HEADER: f"Root={trace_id}",
        TRACEPARENT_HEADER: f"00-{trace_id[2:10]}{trace_id[11:]}-{secrets.token_hex(8)}-01",
    }


@dataclass
class Observation:
    """What one request learned on its way, for its log line and its metrics."""

    trace_id: str
    model: str | None = None
    version: int | None = None
    outcome: str | None = None
    """``ok``, ``client_error``, ``error`` or ``rejected`` (``services/usage.Outcome``)."""
    error_class: str | None = None
    """The domain error's class name (``FunctionFailed``, ``InvalidRequest``, ...) of a refused request."""
    latency_ms: float | None = None
    """The function's (or the pipeline's) wall time, as the invoker saw it."""
    cold_starts: int = 0
    """Stages of the answer that ran an init phase (``runs[].init_ms``)."""
    extra: dict[str, object] = field(default_factory=dict)


_current: ContextVar[Observation | None] = ContextVar("modelport_observation", default=None)


def begin(trace_id: str) -> Observation:
    """Start observing a request in this context (a thread, a task)."""
    observation = Observation(trace_id)
    _current.set(observation)
    return observation


def end() -> None:
    _current.set(None)


def current() -> Observation | None:
    return _current.get()


@contextmanager
def observing(trace_id: str) -> Iterator[Observation]:
    """Observe work done outside a request (a job's run, a queue message) under ``trace_id``, then give
    the context back as it was (a job run inside a request leaves the request's observation in place)."""
    observation = Observation(trace_id)
    token = _current.set(observation)
    try:
        yield observation
    finally:
        _current.reset(token)


def current_trace_id() -> str:
    """The trace id of the request being handled, or a new one (a job, a message, a test)."""
    observation = _current.get()
    return observation.trace_id if observation is not None else mint_trace_id()


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is now (a test's capture, a redirected stream), not the one at
    import time: the handler the API's and the worker's Powertools loggers write JSON lines with. A line
    written while something is observed (a request, a job's run, a message) carries its ``trace_id``."""

    def filter(self, record: logging.LogRecord) -> Any:
        if not hasattr(record, "trace_id"):
            observation = _current.get()
            if observation is not None:
                record.trace_id = observation.trace_id
        return super().filter(record)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass
