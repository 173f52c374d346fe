"""The invocation wire contract: the event a model's function (or its state machine) takes, the reply it
answers, the error document inside a reply's body, and the media-type negotiation both sides do.

The control plane, the runtime in the model's image, the benches and the test fakes all build and read
these documents here, so the two ends cannot drift. Runtime-safe: stdlib only (it ships in every image).
The JSON is what it always was: keys in this order, ``body`` a string, compact separators on the control
plane's side (``aws/invoke.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
"""Lambda's limit for a synchronous invocation, its event and its answer alike."""
MAX_STATE_PAYLOAD = 256 * 1024
"""Step Functions' limit for a state's input or output: what a chained pipeline carries per hop."""
MAX_REFERENCE_BYTES = 1024**3
"""The largest input a request may pass by reference (``body_url``): a job's, a batch file's."""
JSON = "application/json"
TEXT_TYPES = (JSON, "text/csv")
"""Media types an event carries as UTF-8 text; any other body travels base64-encoded."""

Encoding = Literal["utf8", "base64"]
UTF8: Encoding = "utf8"
BASE64: Encoding = "base64"


class InvocationEvent(TypedDict):
    """What a model's function takes: the request body and what it is and wants back."""

    body: str
    body_encoding: NotRequired[Encoding]
    """Absent: ``utf8``."""
    content_type: NotRequired[str]
    """A bare media type; absent: the first the model takes."""
    accept: NotRequired[str]
    """An Accept header, or the media type the control plane already chose; absent: anything."""
    body_url: NotRequired[str]
    """The body is the object at this URL (its raw bytes; ``body`` is empty): an input past the event's
    limit, uploaded beforehand. ``body_bytes`` is its size."""
    body_bytes: NotRequired[int]
    spill: NotRequired[Spill]
    """Where what would not fit goes: the answer, and in a chain the documents between stages."""
    trace_id: NotRequired[str]
    """The request's trace id (``core/trace.py``): in every log line of every stage that runs it."""


class Handoff(TypedDict):
    """A presigned pair for one hop of a chain: the stage before PUTs, the stage after GETs."""

    put: str
    get: str


class Spill(TypedDict):
    """Presigned URLs for payloads past a limit (docs/runtime.md, "Payloads by reference").

    An answer (or, in a chain, an intermediate document) larger than ``limit`` bytes is PUT to ``reply``
    (or to ``handoff[next stage].put``) and answered by a stub: ``body_stored`` (its bytes) in a reply,
    ``stored`` (the GET URL) in an intermediate document. The control plane makes the URLs per request."""

    limit: int
    reply: str
    handoff: NotRequired[dict[str, Handoff]]


class Run(TypedDict):
    """One function's part of an invocation, as Lambda bills it: the handler's own milliseconds and, on
    the environment's cold start, its init phase (``core/cost.py`` prices it)."""

    role: str
    """``fused``, ``pre``, ``model`` or ``post``: which function of the deployment ran."""
    ms: float
    init_ms: NotRequired[float]


class ExecutionBilling(TypedDict):
    """A chained invocation's Express execution as Step Functions billed it (``StartSyncExecution``'s
    ``billingDetails``)."""

    billed_ms: int
    billed_mb: int


class InvocationReply(TypedDict):
    """What a model's function answers (the last stage's answer, in a chained pipeline)."""

    status: int
    content_type: str
    body: str
    body_encoding: Encoding
    timings: NotRequired[dict[str, float]]
    """``{stage_ms: milliseconds}``: ``decode_ms`` ... ``encode_ms``, ``init_ms`` on a cold start, then
    each step's own (``pre.tabular_ms``)."""
    body_stored: NotRequired[int]
    """The body (this many bytes, raw) went to the event's ``spill.reply``; ``body`` is empty."""
    runs: NotRequired[list[Run]]
    """Each function that ran, in order (a chain's stages add theirs to what the previous one handed on)."""
    execution: NotRequired[ExecutionBilling]
    """Added by the control plane's invoker for a chained pipeline, when the service reports it."""


class ErrorDocument(TypedDict):
    """The JSON body of a reply of 400 or more."""

    code: str
    message: str
    errors: NotRequired[list[dict[str, Any]]]
    """Up to 20 ``{pointer, message}`` (or ``{row, column, message}``) problems of the request."""
    stage: NotRequired[str]
    """Where the model's side failed: ``model``, ``pre:<step>``, ``encode`` ..."""


def invocation_event(
    body: bytes | str, content_type: str, accept: str | None = None, *, encoding: Encoding | None = None
) -> InvocationEvent:
    """The event for ``body``: text as it is, bytes as UTF-8 text for TEXT_TYPES (``UnicodeDecodeError``
    if they are not) and base64 otherwise, unless ``encoding`` says. No ``accept``: the key is left out."""
    if isinstance(body, str):
        sent, encoding = body, encoding or UTF8
    else:
        encoding = encoding or (UTF8 if content_type in TEXT_TYPES else BASE64)
        sent = body.decode() if encoding == UTF8 else base64.b64encode(body).decode()
    event: InvocationEvent = {"body": sent, "body_encoding": encoding, "content_type": content_type}
    if accept is not None:
        event["accept"] = accept
    return event


def reply(status: int, body: str, content_type: str = JSON, encoding: Encoding = UTF8) -> InvocationReply:
    """A reply without timings (the runtime adds them last)."""
    return {"status": status, "content_type": content_type, "body": body, "body_encoding": encoding}


def error_document(
    code: str, message: str, *, errors: list[dict[str, Any]] | None = None, stage: str | None = None
) -> ErrorDocument:
    """An error body; the keys a caller leaves out stay out (a client tells the kinds apart by them)."""
    doc: ErrorDocument = {"code": code, "message": message}
    if errors is not None:
        doc["errors"] = errors
    if stage is not None:
        doc["stage"] = stage
    return doc


def reply_body(answer: Mapping[str, object]) -> bytes:
    """The bytes of a reply's body, read leniently: the control plane's side (a missing body is empty)."""
    raw = answer.get("body", "")
    if answer.get("body_encoding", UTF8) == BASE64:
        if not isinstance(raw, str):
            raise TypeError(f"a base64 body is a string, not {type(raw).__name__}")
        return base64.b64decode(raw)
    return str(raw).encode()


def runs_of(document: object) -> list[Run]:
    """The well-formed ``runs`` of a reply or intermediate document, read leniently (others dropped)."""
    runs = document.get("runs") if isinstance(document, Mapping) else None
    if not isinstance(runs, list):
        return []
    found: list[Run] = []
    for run in runs:
        if not isinstance(run, Mapping) or not isinstance(run.get("role"), str):
            continue
        ms, init = run.get("ms"), run.get("init_ms", 0.0)
        if not _finite(ms) or not _finite(init):
            continue
        entry: Run = {"role": str(run["role"]), "ms": float(ms)}  # type: ignore[arg-type]
        if init:
            entry["init_ms"] = float(init)
        found.append(entry)
    return found


def _finite(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and value == value  # not NaN
        and 0 <= value < float("inf")
    )


def media_type(header: str | None) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``."""
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str | None:
    """The offered media type ``accept`` prefers (RFC 9110 §12.5.1); None: it takes none of them.

    Each offered type gets the quality of the most specific range that matches it (``image/png;q=0``
    refuses PNG even after ``*/*``); the highest quality wins, ties go to the order of ``offered`` (JSON
    first). An absent or blank header takes anything: the first offered type.
    """
    if not accept or not accept.strip():
        return offered[0]
    ranges = _ranges(accept)
    best, chosen = 0.0, None
    for offer in offered:
        q = _quality(offer, ranges)
        if q > best:
            best, chosen = q, offer
    return chosen


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` of an Accept header; a q that is not a number counts as 0."""
    ranges = []
    for item in accept.split(","):
        fields = [f.strip() for f in item.split(";")]
        if not fields[0]:
            continue
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((fields[0].lower(), q))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    kind = offer.split("/", 1)[0]
    quality, level = 0.0, -1
    for rng, q in ranges:
        specificity = 2 if rng == offer else 1 if rng == f"{kind}/*" else 0 if rng == "*/*" else -1
        if specificity >= 0 and (specificity > level or (specificity == level and q > quality)):
            quality, level = q, specificity
    return quality
