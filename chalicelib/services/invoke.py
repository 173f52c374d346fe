"""Invocations from accounts: check the grant, validate against the protocol, run, map the answer.

Validation happens here, before any function runs, from the protocol written in the model config file:
a request the model cannot take costs no cold start and gets a 400 with a JSON pointer.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.cost import Bill, bill_for, failed_bill, server_timing_entries
from chalicelib.core.errors import (
    Conflict,
    FunctionFailed,
    FunctionTimedOut,
    InvalidRequest,
    ModelportError,
    NotAcceptable,
    ResponseTooLarge,
    TooLarge,
    UnsupportedMediaType,
)
from chalicelib.core.jsontext import JsonTextError, loads, pointer, short
from chalicelib.core.pipeline import stages_of
from chalicelib.core.ports import FunctionInvoker, ObjectInfo
from chalicelib.core.protocol import FLOAT_TYPES, Records
from chalicelib.core.records import Account, VersionRecord
from chalicelib.core.trace import current, current_trace_id
from chalicelib.core.wire import (
    BASE64,
    JSON,
    MAX_STATE_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    InvocationEvent,
    invocation_event,
    media_type,
    negotiate,
    reply_body,
)
from chalicelib.services.cache import TtlCache
from chalicelib.services.models import ModelService
from chalicelib.services.payloads import Payloads
from chalicelib.services.usage import Outcome, UsageRecorder

SPILL_FROM_BYTES = 512 * 1024
"""A fused call with a request this large may get an answer past Lambda's 6 MB: it gets a place to
store one (``Payloads.spill``); smaller ones, the hot path, pay no presigning."""
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}


@dataclass(frozen=True)
class InvokeResult:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]
    stored_key: str | None = None
    """The answer was past the function's limit: it is this object (``body`` is empty)."""
    stored_url: str | None = None
    size_bytes: int | None = None
    bill: Bill | None = None
    """What the invocation cost (``core/cost.py``); None for an answer read back (a job's)."""


class InvokeService:
    def __init__(
        self,
        models: ModelService,
        invoker: FunctionInvoker,
        *,
        cache_s: float = 0.0,
        payloads: Payloads | None = None,
        usage: UsageRecorder | None = None,
    ) -> None:
        """``cache_s``: how long which version an account's request resolves to is kept; ``payloads``:
        where payloads past an event's limits go (without it, they are refused); ``usage``: where each
        request is counted (per account and model: invocations, errors, cost, latency)."""
        self.models = models
        self.invoker = invoker
        self.payloads = payloads
        self.usage = usage
        self._manifests: dict[tuple[str, int], tuple[ModelConfigFile, RequestValidator]] = {}
        self._resolved: TtlCache[tuple[int, str, bool, str, int | None], tuple[str, int]] = TtlCache(cache_s)
        self._lock = threading.Lock()

    def manifest(self, caller: Account, name: str, version: int | None) -> ModelConfigFile:
        return self._ready(caller, name, version)[0]

    def _ready(
        self, caller: Account, name: str, version: int | None
    ) -> tuple[ModelConfigFile, RequestValidator]:
        asked = (self.models.generation, caller.account_id, caller.is_admin, name, version)
        key = self._resolved.get(asked, lambda: self._resolve(caller, name, version))
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None:
            return cached
        record = self.models.models.get_version(*key)  # visible and ready: checked by _resolve
        self._ready_record(record, name, with_reason=False)
        assert record.manifest is not None
        manifest = ModelConfigFile.model_validate_json(record.manifest)
        if manifest.deployment is None:
            raise Conflict(f"version {record.version} of {name!r} has no deployed function")
        entry = (manifest, RequestValidator(manifest))
        with self._lock:  # versions never change once READY: cache for the process's life
            self._manifests[key] = entry
        return entry

    def _resolve(self, caller: Account, name: str, version: int | None) -> tuple[str, int]:
        """(name, version) a request of ``caller`` runs, once that version is ready to run."""
        record = self.models.resolve_version(caller, name, version)
        if record.status != "READY":  # the reason is the owner's: a grantee learns only the status
            self._ready_record(
                record, name, with_reason=self.models.is_owner(caller, self.models.visible(caller, name))
            )
        self._ready_record(record, name, with_reason=False)
        return record.name, record.version

    @staticmethod
    def _ready_record(record: VersionRecord, name: str, *, with_reason: bool) -> None:
        if record.status != "READY" or record.manifest is None:
            reason = f": {record.reason}" if record.reason and with_reason else ""
            raise Conflict(f"version {record.version} of {name!r} is {record.status}{reason}")

    def invoke(
        self,
        caller: Account,
        name: str,
        version: int | None,
        *,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        reference: ObjectInfo | None = None,
        answer_key: str | None = None,
    ) -> InvokeResult:
        """``reference``: the request is this object of the data bucket (checked by the caller), not
        ``body``; ``answer_key``: where an answer too large for the event goes (else a key of its own)."""
        manifest, event = self.prepare(
            caller, name, version, body=body, content_type=content_type, accept=accept, reference=reference
        )
        assert manifest.deployment is not None
        reply_key = None
        if self.payloads is not None and (
            manifest.deployment.mode == "chained"
            or "body_url" in event
            or len(body) > SPILL_FROM_BYTES
            or answer_key is not None
        ):
            event["spill"], reply_key = self.payloads.spill(
                list(stages_of(manifest)), chained=manifest.deployment.mode == "chained", reply_key=answer_key
            )
        result = self._run(caller, manifest, event)
        if result.stored_key is not None:
            if reply_key is None or self.payloads is None:
                raise ResponseTooLarge("the model stored an answer nobody asked it to store")
            return replace(result, stored_key=reply_key, stored_url=self.payloads.stored_url(reply_key))
        return result

    def _run(self, caller: Account, manifest: ModelConfigFile, event: InvocationEvent) -> InvokeResult:
        """Invoke, price the answer (``Server-Timing``: ``billed``, ``cost``) and count it."""
        assert manifest.deployment is not None
        began = time.perf_counter()
        try:
            reply = self.invoker.invoke(manifest.deployment, event)
        except (FunctionFailed, FunctionTimedOut, ResponseTooLarge) as exc:
            wall_ms = (time.perf_counter() - began) * 1000
            bill = failed_bill(manifest, wall_ms, timed_out=isinstance(exc, FunctionTimedOut))
            self._count(caller, manifest, "error", bill=bill, latency_ms=wall_ms)
            raise
        wall_ms = (time.perf_counter() - began) * 1000
        _note_cold_starts(reply)
        bill = bill_for(manifest, reply, wall_ms)
        try:
            result = _result(reply, bill)
        except ResponseTooLarge:
            self._count(caller, manifest, "error", bill=bill, latency_ms=wall_ms)
            raise
        outcome: Outcome = "ok" if result.status < 400 else "client_error" if result.status < 500 else "error"
        self._count(caller, manifest, outcome, bill=bill, latency_ms=wall_ms)
        return result

    def _count(
        self,
        caller: Account,
        manifest: ModelConfigFile,
        outcome: Outcome,
        *,
        bill: Bill | None = None,
        latency_ms: float | None = None,
    ) -> None:
        if self.usage is not None:
            self.usage.record(caller.account_id, manifest.name, outcome, bill=bill, latency_ms=latency_ms)
        observation = current()
        if observation is not None:
            observation.outcome, observation.latency_ms = outcome, latency_ms

    def prepare(
        self,
        caller: Account,
        name: str,
        version: int | None,
        *,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        reference: ObjectInfo | None = None,
    ) -> tuple[ModelConfigFile, InvocationEvent]:
        """Everything an invocation checks before a function runs (grant, readiness, media types, sizes,
        the protocol's schema), and the event it sends; an asynchronous job is refused here too. A
        request by ``reference`` is checked by the function (the control plane never reads it whole).
        A refusal (4xx) of a model the caller may see is counted as ``rejected``."""
        manifest, validator = self._ready(caller, name, version)
        observation = current()
        if observation is not None:
            observation.model, observation.version = manifest.name, manifest.version
        try:
            event = self._event(manifest, validator, body, content_type, accept, reference)
        except ModelportError as exc:
            if exc.http_status < 500:
                self._count(caller, manifest, "rejected")
            raise
        event["trace_id"] = current_trace_id()
        return manifest, event

    def _event(
        self,
        manifest: ModelConfigFile,
        validator: RequestValidator,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        reference: ObjectInfo | None,
    ) -> InvocationEvent:
        name = manifest.name
        proto = manifest.protocol
        media = media_type(content_type) or JSON
        if media not in proto.request.content_types:
            raise UnsupportedMediaType(
                f"{name} does not take {media}",
                hint="send one of " + ", ".join(proto.request.content_types),
            )
        answer_as = negotiate(accept, proto.response.content_types)
        if answer_as is None:
            raise NotAcceptable(
                f"cannot answer with {accept!r}",
                hint="this model answers " + ", ".join(proto.response.content_types),
            )
        if reference is not None:
            return self._by_reference(reference, media, answer_as)
        if len(body) > MAX_SYNC_PAYLOAD:  # before anything reads it
            raise TooLarge(
                f"request body of {len(body)} bytes is over Lambda's 6 MB synchronous limit",
                hint="upload it (POST /v1/uploads) and send a job with ?input_url=",
            )
        try:
            event = invocation_event(body, media, answer_as)
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"the body is not UTF-8 text (byte {exc.start})") from None
        assert manifest.deployment is not None
        chained = manifest.deployment.mode == "chained"
        size = event_size(event, exact=chained)
        validator.validate(media, body)
        if size > (MAX_STATE_PAYLOAD if chained else MAX_SYNC_PAYLOAD):
            if self.payloads is None:
                where = "a chained pipeline's state" if chained else "Lambda's synchronous event"
                raise TooLarge(
                    f"the request becomes an event of {size} bytes (the body JSON-escaped or base64-encoded, "
                    f"in its envelope), over what {where} carries",
                    hint="send a smaller request",
                )
            event = self._by_reference(self.payloads.keep(body), media, answer_as)
        return event

    def _by_reference(self, reference: ObjectInfo, media: str, answer_as: str) -> InvocationEvent:
        if self.payloads is None:
            raise TooLarge("this deployment takes no requests by reference")
        event = invocation_event("", media, answer_as)
        event["body_url"] = self.payloads.body_url(reference.key)
        event["body_bytes"] = reference.size_bytes
        return event


def _note_cold_starts(reply: dict[str, Any]) -> None:
    """How many of the answer's runs (its stages) paid an init phase, for the request's metrics."""
    observation = current()
    runs = reply.get("runs")
    if observation is not None and isinstance(runs, list):
        observation.cold_starts = sum(
            1 for run in runs if isinstance(run, dict) and isinstance(run.get("init_ms"), int | float)
        )


MAX_PROBLEMS = 20
"""Problems listed per refused request; validation stops looking once it has found this many."""
FLOAT64_MAX = 1.7976931348623157e308


def _is_number(checker: Any, value: Any) -> bool:
    """A JSON number as a model can take it: finite and within a 64-bit float (NaN, Infinity and a
    400-digit integer are not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and -FLOAT64_MAX <= value <= FLOAT64_MAX


def _lazy_of(keyword: str) -> Any:
    """``oneOf``/``anyOf`` that keep at most MAX_PROBLEMS errors per branch: jsonschema's own build every
    error of every branch (and a repr of the whole instance) before one is reported."""

    def check(validator: Any, branches: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
        found: list[ValidationError] = []
        valid = 0
        for index, branch in enumerate(branches):
            wanted = 1 if valid else MAX_PROBLEMS  # after a valid branch, only whether another one is
            errors = list(islice(validator.descend(instance, branch, schema_path=index), wanted))
            if not errors:
                valid += 1
                if keyword == "anyOf":
                    return
            found.extend(errors)
        if valid == 0:
            yield ValidationError(
                f"{short(instance)} is not valid under any of the given schemas", context=found
            )
        elif keyword == "oneOf" and valid > 1:
            yield ValidationError(f"{short(instance)} is valid under more than one of the given schemas")

    return check


def _canonical(value: Any) -> Any:
    """A hashable stand-in with JSON equality (``1 == 1.0``, ``true != 1``)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, list):
        return ("list", tuple(_canonical(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((k, _canonical(v)) for k, v in value.items()))
    return value


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """uniqueItems in linear time (jsonschema compares unsortable items pairwise)."""
    if unique and isinstance(instance, list):
        seen: set[Any] = set()
        for item in instance:
            key = _canonical(item)
            if key in seen:
                yield ValidationError("has non-unique elements")
                return
            seen.add(key)


DTYPE_VALUE = "x-modelport-dtype-value"
"""A private keyword: one dtype's ``{type, format, minimum, maximum}`` checked in one call (jsonschema
would make three per value, a tenth of a record's validation time)."""


def _dtype_value(validator: Any, spec: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    kind, name, low, high = spec
    if not validator.is_type(instance, kind):
        yield ValidationError(
            f"{short(instance)} is not of type {kind!r}", validator="type", validator_value=kind
        )
    elif not low <= instance <= high:
        yield ValidationError(
            f"{short(instance)} does not fit {name}",
            validator="minimum" if instance < low else "maximum",
            schema={"format": name, "minimum": low, "maximum": high},
        )


def compile_schema(schema: Any) -> Any:
    """``schema`` for SchemaValidator: every dtype leaf that ``core/protocol.number_schema`` wrote
    becomes one DTYPE_VALUE keyword; the rest is unchanged."""
    if isinstance(schema, list):
        return [compile_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if set(schema) == {"type", "format", "minimum", "maximum"} and schema["type"] in ("number", "integer"):
        return {DTYPE_VALUE: (schema["type"], schema["format"], schema["minimum"], schema["maximum"])}
    return {k: compile_schema(v) for k, v in schema.items()}


SchemaValidator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        "oneOf": _lazy_of("oneOf"),
        "anyOf": _lazy_of("anyOf"),
        "uniqueItems": _unique_items,
        DTYPE_VALUE: _dtype_value,
    },
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_number),
)
del SchemaValidator.VALIDATORS["format"]  # an annotation here (the dtype's name): not a call per value


class RequestValidator:
    """The control plane's check of a request against the model's protocol, before any function runs.

    Its cost is bounded by the body's size whether the body is valid or not: nesting is checked before
    parsing, errors are produced lazily and the search stops at MAX_PROBLEMS, and messages are cut so
    none carries a large value back (bench/validation_cost.py)."""

    def __init__(self, manifest: ModelConfigFile) -> None:
        self.manifest = manifest
        self.schema = SchemaValidator(compile_schema(manifest.protocol.request.json_schema))

    def problems(self, doc: Any) -> list[dict[str, str]]:
        """Up to MAX_PROBLEMS ``{pointer, message}`` of a parsed JSON request, in document order."""
        errors = _leaf_errors(islice(self.schema.iter_errors(doc), MAX_PROBLEMS))[:MAX_PROBLEMS]
        errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
        return [{"pointer": pointer(*err.absolute_path), "message": _message(err)} for err in errors]

    def validate(self, media: str, body: bytes) -> None:
        if media == "application/json":
            try:
                doc = loads(body or b"null")
            except JsonTextError as exc:
                raise InvalidRequest(
                    exc.message,
                    errors=[{"pointer": exc.pointer, "message": exc.message}],
                    hint="send a JSON document",
                ) from None
            problems = self.problems(doc)
            if problems:
                summary = "; ".join(f"{p['pointer']}: {p['message']}" for p in problems[:3])
                raise InvalidRequest(
                    f"request does not match the model's protocol: {summary}", errors=problems
                )
        elif media == "text/csv":
            value = self.manifest.protocol.request_value
            assert isinstance(value, Records)
            numeric = all(f.datatype in FLOAT_TYPES or f.categories for f in value.features)
            names = frozenset(n for f in value.features for n in f.categories or ())
            _validate_csv(
                body, [f.name for f in value.features], value.rows, numeric=numeric, categories=names
            )
        elif media in IMAGE_MAGIC and not body.startswith(IMAGE_MAGIC[media]):
            raise InvalidRequest(f"the body is not a {media} image")


def _leaf_errors(errors: Iterable[ValidationError]) -> list[ValidationError]:
    """For oneOf/anyOf, the errors of the branch the request was aiming at (the one it got furthest in)."""
    leaves: list[ValidationError] = []
    for err in errors:
        if err.validator in ("oneOf", "anyOf") and err.context:
            branches: dict[int, list[ValidationError]] = {}
            for sub in err.context:
                branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
            deepest = max(branches.values(), key=lambda subs: max(len(e.relative_path) for e in subs))
            leaves.extend(_leaf_errors(deepest))
        else:
            leaves.append(err)
    return leaves


def _message(err: ValidationError) -> str:
    """jsonschema's message, unless it would embed a large value or say less than we know."""
    value = err.instance
    if err.validator == "type" and isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (NaN and Infinity are not JSON numbers)"
    kinds = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    if err.validator == "type" and type(value) is int and "number" in kinds:
        return f"{short(value)} is too large for a 64-bit float"
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator in ("minimum", "maximum") and "format" in schema:
        low, high = schema.get("minimum"), schema.get("maximum")
        return f"{short(value)} does not fit {schema['format']} (from {low} to {high})"
    if err.validator in ("minItems", "maxItems") and schema.get("minItems") == schema.get("maxItems"):
        return _fixed_size(list(err.absolute_path), schema["minItems"], value)
    text = " ".join(err.message.split())
    return text if len(text) <= 200 else text[:140] + " … " + text[-57:]


def _fixed_size(path: list[Any], size: int, value: Any) -> str:
    """An exact item count missed: which dimension of which input (or how many rows) the model takes."""
    got = len(value) if isinstance(value, list) else "?"
    if len(path) >= 2 and path[0] == "inputs":
        return (
            f"dimension {len(path) - 2} of input {str(path[1])!r} is fixed at {size} by the model; got {got}"
        )
    if len(path) == 1 and path[0] in ("records", "rows"):
        return f"the model takes exactly {size} {path[0]} at a time; got {got}"
    return f"must hold exactly {size} items; got {got}"


ENVELOPE_BYTES = 1024
"""More than the keys and media types of an invocation event add to its body."""
ESCAPED_BYTES_PER_CHAR = 12
"""The most one character of a body grows to in the event's JSON (ASCII escapes): an emoji is one
character and ``\\ud83d\\ude00``."""


def event_size(event: InvocationEvent, *, exact: bool = False) -> int:
    """The bytes of ``event`` as the invoker sends it (``json.dumps``, ASCII, compact separators).

    A body whose worst-case escaping still fits is not serialized here (the invoker does it once):
    that is every request under ~0.5 MB, so the hot path pays a ``len``. Larger ones, and ``exact``,
    are serialized to measure."""
    body = event.get("body")
    if isinstance(body, str) and not exact:
        bound = ENVELOPE_BYTES + len(body) * (
            1 if event.get("body_encoding") == BASE64 else ESCAPED_BYTES_PER_CHAR
        )
        if bound <= MAX_SYNC_PAYLOAD:
            return bound
    return len(json.dumps(event, separators=(",", ":")))


def _validate_csv(
    body: bytes,
    features: list[str],
    fixed_rows: int | None = None,
    *,
    numeric: bool = True,
    categories: frozenset[str] = frozenset(),
) -> None:
    """Column and (for a fixed batch) row counts, reading lines as the tabular step does: a BOM and blank
    lines ignored; the first line a header if it names the features (in any order) or, when every
    feature is a number, if any of its cells is neither a number nor a category name."""
    try:
        rows = list(csv.reader(io.StringIO(body.decode().removeprefix("\ufeff"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidRequest(f"unreadable CSV: {exc}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if rows and _is_header([c.strip() for c in rows[0]], features, numeric, categories):
        rows = rows[1:]
    if not rows:
        raise InvalidRequest("CSV has no data rows", hint="columns: " + ", ".join(features))
    for i, row in enumerate(rows, start=1):
        if len(row) != len(features):
            raise InvalidRequest(
                f"CSV row {i} has {len(row)} columns, expected {len(features)} ({', '.join(features)})",
                errors=[{"pointer": f"/{i - 1}", "message": f"{len(row)} columns"}],
            )
    if fixed_rows is not None and len(rows) != fixed_rows:
        raise InvalidRequest(f"the model takes exactly {fixed_rows} rows at a time; got {len(rows)}")


def _is_header(cells: list[str], features: list[str], numeric: bool, categories: frozenset[str]) -> bool:
    if sorted(cells) == sorted(features):
        return True
    if not numeric:
        return False
    for cell in cells:
        if cell in categories:
            continue
        try:
            float(cell)
        except ValueError:
            return True
    return False


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]+")


def server_timing(timings: Any) -> str:
    """The runtime's ``{name_ms: ms}`` as a Server-Timing header: ``pre;dur=0.100, pre.tabular;dur=...``.
    Names are made RFC 9110 tokens (other characters become ``-``); values that are not finite numbers
    are left out, so a header never carries what a browser cannot parse."""
    if not isinstance(timings, dict):
        return ""
    metrics = []
    for name, ms in timings.items():
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms):
            continue
        token = _NOT_TOKEN.sub("-", str(name).removesuffix("_ms")).strip("-")
        if token:
            metrics.append(f"{token};dur={float(ms):.3f}")
    return ", ".join(metrics)


def _result(reply: dict[str, Any], bill: Bill | None = None) -> InvokeResult:
    raw = reply.get("body", "")
    if isinstance(raw, str) and len(raw) > MAX_SYNC_PAYLOAD - ENVELOPE_BYTES:  # what the API can answer
        raise ResponseTooLarge(
            f"the model answered {len(raw)} bytes, over Lambda's 6 MB ({MAX_SYNC_PAYLOAD} bytes) limit "
            "for a synchronous response",
            hint="ask for less per request (fewer rows, a smaller image)",
        )
    body = reply_body(reply)
    timing = server_timing(reply.get("timings") or {})
    if bill is not None:
        timing = f"{timing}, {server_timing_entries(bill)}" if timing else server_timing_entries(bill)
    headers = {"Server-Timing": timing} if timing else {}
    stored = reply.get("body_stored")
    return InvokeResult(
        status=int(reply.get("status", 200)),
        content_type=str(reply.get("content_type", JSON)),
        body=body,
        headers=headers,
        stored_key="" if type(stored) is int else None,
        size_bytes=stored if type(stored) is int else len(body),
        bill=bill,
    )
