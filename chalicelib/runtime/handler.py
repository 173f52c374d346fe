"""The Lambda handler of a model container: ``python -m awslambdaric chalicelib.runtime.handler.handler``.

Inside Lambda (``AWS_LAMBDA_RUNTIME_API`` is set) the model config file and the model are loaded when this
module is imported, i.e. in Lambda's init phase: it runs once per environment, with its own time limit
rather than the invocation's timeout. Elsewhere nothing loads at import; tests call ``load(dir)``.

``Runtime.handle`` never raises for a client's or a model's problem: it answers 4xx/502 responses with
the shapes documented in docs/runtime.md. Only bugs of the runtime itself raise (a Lambda function error).
"""

# ruff: noqa: E402 - the clock starts before the heavy imports, which are part of the cold start
from __future__ import annotations

import time

_STARTED = time.perf_counter()

import base64
import contextlib
import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.pipeline import stages_of
from chalicelib.core.protocol import (
    Boxes,
    EncodedImage,
    Figure,
    Json,
    Labels,
    Records,
    Tensors,
    Value,
    dtype_name,
)
from chalicelib.core.trace import valid_trace_id
from chalicelib.core.wire import (
    BASE64,
    JSON,
    MAX_REFERENCE_BYTES,
    MAX_SYNC_PAYLOAD,
    UTF8,
    ErrorDocument,
    InvocationReply,
    Run,
    Spill,
    error_document,
    invocation_event,
    media_type,
    negotiate,
    reply,
    runs_of,
)
from chalicelib.runtime import transfer
from chalicelib.runtime.codecs import (
    Problems,
    RequestError,
    check_schema,
    decode_tensors,
    dumps,
    event_body,
    invalid,
    json_type,
    object_with,
    parse_json,
    to_jsonable,
    unsupported_media_type,
)
from chalicelib.runtime.intermediate import (
    IntermediateError,
    decode_invocation,
    decode_value,
    document,
    encode_invocation,
    read_document,
)
from chalicelib.runtime.layout import DEFAULT_MODEL_DIR, MODEL_CONFIG, MODEL_DIR_ENV
from chalicelib.runtime.loaders import Model, ModelLoadError, load_model
from chalicelib.runtime.observe import log_invocation
from chalicelib.runtime.steps import FigureValue, Geometry, RunStep, StepCall, Table, build_steps
from chalicelib.runtime.steps.drawing import prepare_matplotlib

log = logging.getLogger("modelport.runtime")

STAGES = ("decode_ms", "pre_ms", "model_ms", "post_ms", "encode_ms")
"""Every response's timings; each step adds its own (``pre.tabular_ms``, ``post.bar_chart_ms``, ...)."""

Role = Literal["fused", "pre", "model", "post"]
ROLES: tuple[Role, ...] = ("fused", "pre", "model", "post")
ROLE_ENV = "MODELPORT_ROLE"
"""Which part of the pipeline this function runs (docs/pipelines.md); unset means ``fused``."""
INIT_TYPE_ENV = "AWS_LAMBDA_INITIALIZATION_TYPE"
"""Lambda's ``on-demand`` or ``provisioned-concurrency``: a provisioned environment's init is paid by the
hour with its provisioned concurrency, not with its first request."""


def bills_init() -> bool:
    """Whether this environment's init phase is billed with its first invocation (on demand)."""
    return os.environ.get(INIT_TYPE_ENV, "on-demand") == "on-demand"


class ModelFailure(Exception):
    """User code or the model failed at ``stage`` (``model``, ``pre:<step>``, ``post:<step>``): a 502."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(stage)
        self.stage = stage
        self.exc = exc

    def body(self) -> ErrorDocument:
        text = " ".join(str(self.exc).split())
        text = text if len(text) <= 1000 else text[:997] + "..."
        return error_document("ModelError", f"{type(self.exc).__name__}: {text}", stage=self.stage)


class _Clock:
    """Adds the time spent in a ``with`` block to ``timings[key]``, even when the block raises."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.key = ""
        self.t0 = 0.0

    def __call__(self, key: str) -> _Clock:
        self.key = key
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.timings[self.key] += (time.perf_counter() - self.t0) * 1000


def _ordered(timings: dict[str, float]) -> dict[str, float]:
    """Stages first, then ``init_ms``, then the steps in the order they ran (one Server-Timing order)."""
    head = [*STAGES, "init_ms"]
    keys = [k for k in head if k in timings] + [k for k in timings if k not in head]
    return {k: round(timings[k], 3) for k in keys}


MAX_RESPONSE_BYTES = MAX_SYNC_PAYLOAD - 4096
"""Lambda's 6 MB for a synchronous response, less room for the timings added after the check."""
_ESCAPED_BYTES_PER_CHAR = 6  # the most one character grows to as a JSON string: ``\u001f``


def response_size(response: Mapping[str, Any]) -> int:
    """Bytes of ``response`` as the Lambda runtime client sends it (JSON, UTF-8, ``ensure_ascii=False``).
    A body that fits even at worst-case escaping is not serialized (every answer under ~1 MB): the
    common case costs a ``len``."""
    body = response.get("body")
    if not isinstance(body, str):
        return 0  # an intermediate document between stages: Step Functions bounds those
    per_char = 1 if response.get("body_encoding") == BASE64 else _ESCAPED_BYTES_PER_CHAR
    if len(body) * per_char + 1024 <= MAX_RESPONSE_BYTES:
        return len(body)
    return _json_size(response)


def _json_size(response: Mapping[str, Any]) -> int:
    return len(json.dumps(response, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))


def too_large(size: int) -> ErrorDocument:
    return error_document(
        "ResponseTooLarge",
        f"the response would be {size} bytes, over the {MAX_RESPONSE_BYTES} bytes a synchronous "
        "Lambda answer can carry; ask for less per request, or run it as a job (Prefer: respond-async), "
        "whose answer is stored",
        stage="encode",
    )


def _reply(status: int, body: Any) -> InvocationReply:
    return reply(status, dumps(body))


def _refuse_non_finite(outputs: Any) -> None:
    """A finite request whose outputs are NaN or infinity went past what the model's arithmetic holds
    (a float32 network near float32's limit): the input cannot be processed, which is the request's
    422, not a failure of whichever post step or encoder meets the NaN first."""
    if not isinstance(outputs, dict):
        return
    for name, value in outputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise RequestError(
                f"the model's output {name!r} is NaN or infinite for this input: its values are beyond what "
                "the model can compute with",
                status=422,
                code="UnprocessableInput",
            )


class Runtime:
    """One loaded model with its pre and post steps, answering invocation events.

    ``role`` is the part of the pipeline this function runs: ``fused`` all of it; in a chained pipeline
    ``pre`` (decode + pre steps), ``model`` and ``post`` (post steps + encode). The first stage of a chain
    takes the invocation event, the last one answers the response document, and each one before the last
    answers an intermediate document for the next (``runtime/intermediate.py``). ``model`` is None in the
    roles that do not run it.
    """

    def __init__(
        self,
        manifest: ModelConfigFile,
        model: Model | None,
        pre: list[RunStep],
        post: list[RunStep],
        init_ms: float,
        role: Role = "fused",
    ) -> None:
        self.manifest = manifest
        self.protocol = manifest.protocol
        self.model = model
        self.pre = pre
        self.post = post
        self.init_ms = init_ms
        self.role: Role = role
        self._cold = True
        self._warming = False
        self.bills_init = bills_init()
        chain = stages_of(manifest)
        if role != "fused" and role not in chain:
            raise ModelLoadError(f"{manifest.name} has no {role} stage (its chain: {', '.join(chain)})")
        self.first = role == "fused" or chain[0] == role
        self.last = role == "fused" or chain[-1] == role
        self.next: Role | None = None if self.last else chain[chain.index(role) + 1]  # type: ignore[arg-type]
        self.runs: frozenset[str] = (
            frozenset(("pre", "model", "post")) if role == "fused" else frozenset((role,))
        )
        # Only an overlay draws on the request's image: carry it to the post stage only for one.
        self.carry_image = any(ref.step == "overlay" for ref in manifest.processing.post)

    def handle(
        self, event: Any, *, started: float | None = None, init_ms: float | None = None
    ) -> dict[str, Any]:
        """Answer ``event``, adding this function's run (``runs``: what Lambda bills) to the ones the
        previous stages handed on. ``started``: when the invocation began (default: now); ``init_ms``: the
        environment's init phase to bill with it (default: this runtime's own, on its first request)."""
        began = time.perf_counter() if started is None else started
        timings = dict.fromkeys(STAGES, 0.0)
        cold, self._cold = self._cold, False
        if init_ms is None:
            init_ms = self.init_ms if cold and self.bills_init else 0.0
        before = [] if self.first else runs_of(event)  # a stored document's stub carries them too
        trace = valid_trace_id(event.get("trace_id")) if isinstance(event, Mapping) else None
        clock = _Clock(timings)
        response: Mapping[str, Any]  # an InvocationReply, or the intermediate document of a chain's stage
        spill: Spill | None = None
        try:
            inv: StepCall | None = None
            passed: dict[str, Any] = {}  # the invocation state as the previous stage sent it
            if self.first:
                if not isinstance(event, Mapping):
                    raise invalid(
                        f"the invocation event must be an object with a body, got {json_type(event)}"
                    )
                spill = spill_of(event)
                content_type, accept = self._negotiate(event)
                with clock("decode_ms"):
                    value = self._decode(event, content_type)
                inv = StepCall()
            else:
                with clock(f"{self.role}_ms"):
                    doc = read_document(_unstored(event, self.role), self.role)
                    trace = valid_trace_id(doc.get("trace_id")) or trace
                    spill = spill_of(doc)
                    accept, passed = doc["accept"], doc["invocation"]
                    try:
                        timings.update({k: float(v) for k, v in doc["timings"].items()})
                        value = decode_value(doc["value"])
                        if "post" in self.runs:
                            inv = decode_invocation(passed)
                    except IntermediateError:
                        raise
                    except (KeyError, TypeError, ValueError, OSError) as exc:  # OSError: PIL's bad PNG
                        raise IntermediateError(
                            f"the intermediate document cannot be read: {exc!r}"
                        ) from None
            if "pre" in self.runs:
                assert inv is not None
                with clock("pre_ms"):
                    for step in self.pre:
                        value = self._run(step, value, inv, timings)
            if "model" in self.runs:
                assert self.model is not None
                with clock("model_ms"):
                    try:
                        value = self.model.predict(value)
                    except RequestError:
                        raise
                    except Exception as exc:
                        raise ModelFailure("model", exc) from exc
                    _refuse_non_finite(value)
            if "post" in self.runs:
                assert inv is not None
                with clock("post_ms"):
                    for step in self.post:
                        value = self._run(step, value, inv, timings)
            if self.last:
                with clock("encode_ms"):
                    response = self._encode(value, accept)
            else:
                with clock(f"{self.role}_ms"):
                    response = self._hand_on(value, inv, passed, accept, spill)
        except RequestError as exc:
            response = _reply(exc.status, exc.body())
        except ModelFailure as exc:
            log.error("%s failed", exc.stage, exc_info=exc.exc)
            response = _reply(502, exc.body())
        except IntermediateError as exc:
            log.error("bad intermediate document: %s", exc)
            response = _reply(500, error_document("PipelineError", str(exc), stage=self.role))
        if cold:  # a chain adds up the cold starts it waited for
            timings["init_ms"] = timings.get("init_ms", 0.0) + self.init_ms
        final: dict[str, Any] = {**response, "timings": _ordered(timings)}
        if trace is not None and not self.last and "kind" in final:
            final["trace_id"] = trace  # the next stage logs the same trace
        final = self._bounded(final if spill is None else self._spill(final, spill))
        final["runs"] = [*before, this_run(self.role, began, init_ms)]
        if not self._warming:
            log_invocation(self.manifest, self.role, final, trace, cold=cold)
        return final

    @staticmethod
    def _bounded(final: dict[str, Any]) -> dict[str, Any]:
        """``final``, or a 502 when it is past what a synchronous Lambda answer carries."""
        size = response_size(final)
        if size > MAX_RESPONSE_BYTES:
            log.error("the response of %d bytes is over Lambda's limit", size)
            return {**_reply(502, too_large(size)), "timings": final["timings"]}
        return final

    def _spill(self, response: dict[str, Any], spill: Spill) -> dict[str, Any]:
        """``response`` as it fits ``spill["limit"]``: a larger answer (or intermediate document) is PUT
        to its presigned URL and answered by a stub naming it (``core/wire.Spill``)."""
        limit = spill["limit"]
        try:
            if not self.last:
                hop = spill.get("handoff", {}).get(str(self.next))
                if response.get("status") != 200 or "kind" not in response or hop is None:
                    return response
                data = json.dumps(response, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
                if len(data) <= limit:
                    return response
                transfer.store(hop["put"], data, JSON)
                stub = document(str(self.next), None, {}, response["accept"], {}, spill=spill)
                return {**stub, "stored": hop["get"]}
            body = response.get("body")
            if not isinstance(body, str) or len(body) * _ESCAPED_BYTES_PER_CHAR + 1024 <= limit:
                return response
            if _json_size(response) <= limit:
                return response
            data = (
                base64.b64decode(body)
                if response.get("body_encoding") == BASE64
                else body.encode("utf-8", errors="surrogatepass")
            )
            transfer.store(spill["reply"], data, str(response.get("content_type") or JSON))
            return {**response, "body": "", "body_encoding": UTF8, "body_stored": len(data)}
        except transfer.TransferError as exc:
            log.error("the answer could not be stored: %s", exc)
            failed = error_document(
                "PayloadStoreFailed", f"the answer could not be stored: {exc}", stage="encode"
            )
            return {**_reply(502, failed), "timings": response["timings"]}

    def _hand_on(
        self,
        value: Any,
        inv: StepCall | None,
        passed: dict[str, Any],
        accept: str,
        spill: Spill | None = None,
    ) -> dict[str, Any]:
        """The intermediate document for the next stage (``handle`` adds the timings); a value that
        cannot cross stages is the failure of whoever produced it (the last pre step, or the model)."""
        assert self.next is not None
        state = encode_invocation(inv, image=self.carry_image) if inv is not None else passed
        try:
            return document(self.next, value, state, accept, {}, spill=spill)
        except IntermediateError as exc:
            stage = self.pre[-1].stage if self.role == "pre" and self.pre else "model"
            raise ModelFailure(stage, TypeError(str(exc))) from exc

    # ----------------------------------------------------------------------- stages

    def _negotiate(self, event: Mapping[str, Any]) -> tuple[str, str]:
        for key in ("content_type", "accept"):
            if event.get(key) is not None and not isinstance(event[key], str):
                raise invalid(f"the invocation event's {key} must be a string")
        offered = self.protocol.request.content_types
        content_type = media_type(event.get("content_type")) or offered[0]
        if content_type not in offered:
            raise unsupported_media_type(content_type, offered)
        produced = self.protocol.response.content_types
        accept = negotiate(event.get("accept"), produced)
        if accept is None:
            raise RequestError(
                f"cannot answer in {event.get('accept')!r}; this model answers {', '.join(produced)}",
                status=406,
                code="NotAcceptable",
            )
        return content_type, accept

    def _decode(self, event: Mapping[str, Any], content_type: str) -> Any:
        spec = self.protocol.request_value
        body = referenced_body(event) if "body_url" in event else event_body(event)
        if spec.kind == "records" and content_type == "text/csv":
            try:
                return Table(csv=body.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise invalid(f"the CSV is not UTF-8 text (byte {exc.start})") from None
        if spec.kind == "image":
            if content_type.startswith("image/"):
                if "body_url" not in event and event.get("body_encoding") != BASE64:
                    raise invalid("send image bytes base64-encoded (body_encoding: base64)")
                return body
            _, data = object_with(parse_json(body), ("image",), "the request")
            try:
                return base64.b64decode(data, validate=True)
            except (TypeError, ValueError):
                raise invalid("expected the image's bytes, base64-encoded", "/image") from None
        doc = parse_json(body)
        if isinstance(spec, Tensors):
            return decode_tensors(doc, spec)
        if isinstance(spec, Json):
            problems = Problems()
            value = check_schema(doc, spec.json_schema, "", problems)
            problems.check()
            return value
        return Table(json=doc)

    def _run(self, step: RunStep, value: Any, inv: StepCall, timings: dict[str, float]) -> Any:
        t0 = time.perf_counter()
        try:
            return step.run(value, inv)
        except RequestError:
            raise
        except Exception as exc:
            if not step.contained:
                raise
            raise ModelFailure(step.stage, exc) from exc
        finally:
            key = f"{step.timing}_ms"
            timings[key] = timings.get(key, 0.0) + (time.perf_counter() - t0) * 1000

    def _encode(self, value: Any, accept: str) -> InvocationReply:
        spec = self.protocol.response_value
        stage = self.post[-1].stage if self.post else "model"  # whoever produced the value
        try:
            if isinstance(spec, Figure):
                assert isinstance(value, FigureValue)
                png = base64.b64encode(value.png).decode("ascii")
                if accept == spec.media_type:
                    return reply(200, png, accept, BASE64)
                body = self._body(spec.data, value.data)
                body["figure"] = {"media_type": spec.media_type, "data": png}
            else:
                body = self._body(spec, value)
            return _reply(200, body)
        except TypeError as exc:  # user code returned something that is not JSON data
            raise ModelFailure(stage, exc) from exc
        except ValueError as exc:
            raise ModelFailure(
                stage, ValueError("the result holds NaN or infinity, which JSON cannot carry")
            ) from exc

    def _body(self, spec: Value, value: Any) -> dict[str, Any]:
        if isinstance(spec, Labels):
            return {
                "predictions": [[{"label": label, "score": score} for label, score in row] for row in value]
            }
        if isinstance(spec, Boxes):
            return {"detections": value}
        if isinstance(spec, Tensors):
            return {"outputs": {t.name: to_jsonable(value[t.name]) for t in spec.tensors}}
        return {"output": to_jsonable(value)}

    def warm_up(self) -> None:
        """Run the protocol's example request once, so the first real request finds kernels chosen,
        arenas allocated and fonts loaded. Only logged if it fails: the example is generic.

        A stage that is not first gets the example as the stages before it would hand it on: the model
        stage runs the pre steps it was given for this, the post stage gets zeros of the model's outputs."""
        example: Any = invocation_event(dumps(self.protocol.request.example), JSON)
        self._warming = True
        try:
            if not self.first:
                example = self._warm_up_document(example)
                if example is None:
                    return
            response = self.handle(example)
        except Exception:
            log.warning("the warm-up request failed", exc_info=True)
            return
        finally:
            self._cold, self._warming = True, False
        if response["status"] != 200:
            log.warning("the warm-up request answered %s: %s", response["status"], response["body"][:300])

    def _warm_up_document(self, example: dict[str, Any]) -> dict[str, Any] | None:
        if self.role == "model" and not self.pre and self.manifest.processing.pre:
            return None  # its pre steps are not in this image (shared stages): nothing to warm up with
        if self.role == "model":
            pre = Runtime(self.manifest, None, self.pre, [], 0.0, role="pre")
            pre._warming = True
            return pre.handle(example)
        outputs = _zeros(self.manifest.native.outputs)
        if outputs is None:
            return None
        inv = StepCall()
        request = self.protocol.request_value
        if isinstance(request, Records):
            inv.table = (tuple(f.name for f in request.features), np.zeros((1, len(request.features))))
        elif isinstance(request, EncodedImage):  # a blank request image, the size of the model's input
            from PIL import Image

            sizes = [r.params.get("size") for r in self.manifest.processing.pre if r.step == "image"]
            height, width = sizes[0] if sizes and sizes[0] else (64, 64)
            inv.image = Image.new("RGB", (width, height), (255, 255, 255))
            inv.geometry = Geometry(width, height, width, height)
        accept = self.protocol.response.content_types[0]
        return document("post", outputs, encode_invocation(inv, image=self.carry_image), accept, {})


def this_run(role: str, began: float, init_ms: float) -> Run:
    """This function's run, from ``began`` (``perf_counter``) until now: Lambda's ``Duration`` as near as
    the handler can see it (the runtime client's own JSON work is outside), and the init it bills."""
    run: Run = {"role": role, "ms": round((time.perf_counter() - began) * 1000, 3)}
    if init_ms > 0:
        run["init_ms"] = round(init_ms, 3)
    return run


def spill_of(event: Mapping[str, Any]) -> Spill | None:
    """The event's (or intermediate document's) ``spill``, checked; None when it has none."""
    spill = event.get("spill")
    if spill is None:
        return None
    handoff = spill.get("handoff", {}) if isinstance(spill, dict) else None
    if (
        not isinstance(spill, dict)
        or type(spill.get("limit")) is not int
        or not isinstance(spill.get("reply"), str)
        or not isinstance(handoff, dict)
        or not all(
            isinstance(h, dict) and isinstance(h.get("put"), str) and isinstance(h.get("get"), str)
            for h in handoff.values()
        )
    ):
        raise invalid("the invocation event's spill must be {limit: int, reply: URL, handoff?: {...}}")
    return spill  # type: ignore[return-value]


def referenced_body(event: Mapping[str, Any]) -> bytes:
    """The body an event passes by reference (``body_url``, ``body_bytes``)."""
    url, size = event.get("body_url"), event.get("body_bytes")
    if not isinstance(url, str) or type(size) is not int or not 0 <= size <= MAX_REFERENCE_BYTES:
        raise invalid(f"body_url needs body_bytes, its size (at most {MAX_REFERENCE_BYTES} bytes)")
    try:
        return transfer.fetch(url, size)
    except transfer.TransferError as exc:
        raise RequestError(
            f"the referenced input could not be read: {exc}", status=502, code="InputUnavailable"
        ) from None


def _unstored(event: Any, role: str) -> Any:
    """A stage's input as the previous stage made it: a stub naming a stored document (``stored``) is
    replaced by that document, fetched."""
    if not isinstance(event, Mapping) or "stored" not in event:
        return event
    read_document(event, role)  # the stub is for this stage
    try:
        text = transfer.fetch(str(event["stored"]), 2 * MAX_REFERENCE_BYTES)
        return json.loads(text)
    except (transfer.TransferError, ValueError) as exc:
        raise IntermediateError(f"the stored intermediate document cannot be read: {exc}") from None


def _zeros(spec: Value) -> dict[str, Any] | None:
    """One row of zeros for every output of ``spec``; None when some output is not a numeric tensor."""
    if not isinstance(spec, Tensors):
        return None
    out: dict[str, Any] = {}
    for tensor in spec.tensors:
        if tensor.datatype is None or tensor.datatype == "BYTES":
            return None
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in tensor.shape)
        out[tensor.name] = np.zeros(shape, dtype=dtype_name(tensor.datatype))
    return out


def role_from_env() -> Role:
    role = os.environ.get(ROLE_ENV) or "fused"
    if role not in ROLES:
        raise ModelLoadError(f"{ROLE_ENV}={role!r}: expected one of {', '.join(ROLES)}")
    return role


def load(
    model_dir: Path | str, *, warm: bool = True, started: float | None = None, role: Role | None = None
) -> Runtime:
    """Load ``model_dir/model-config.json`` and what ``role`` runs of it (default: ``$MODELPORT_ROLE``,
    else fused): the pre stage binds only the pre steps, the post stage only the post steps and neither
    opens the model, so each function of a chain imports only what it needs. ``init_ms`` counts from
    ``started``."""
    t0 = time.perf_counter() if started is None else started
    role = role_from_env() if role is None else role
    model_dir = Path(model_dir)
    path = model_dir / MODEL_CONFIG
    try:
        manifest = ModelConfigFile.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read the model config file {path}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        raise ModelLoadError(f"{path} is not a valid model config file: {exc}") from None
    return from_manifest(manifest, model_dir, role, warm=warm, started=t0)


def from_manifest(
    manifest: ModelConfigFile, model_dir: Path, role: Role, *, warm: bool = True, started: float
) -> Runtime:
    """``role``'s runtime of ``manifest`` (see ``load``); its files are in ``model_dir``."""
    chain = stages_of(manifest)
    if role != "fused" and role not in chain:
        raise ModelLoadError(f"{manifest.name} has no {role} stage (its chain: {', '.join(chain)})")
    # The model stage binds the pre steps too when it is not first: its warm-up runs them. Not where the
    # steps run on shared stage functions: the model's image has not their packages (pillow, matplotlib).
    shared = manifest.pipeline_plan is not None and manifest.pipeline_plan.shared_steps
    wanted = {
        "fused": ("pre", "post"),
        "pre": ("pre",),
        "model": () if chain[0] == "model" or shared else ("pre",),
        "post": ("post",),
    }[role]
    pre, post = build_steps(manifest, model_dir, stages=wanted)
    model = load_model(manifest, model_dir) if role in ("fused", "model") else None
    runtime = Runtime(manifest, model, pre, post, init_ms=0.0, role=role)
    if warm:
        runtime.warm_up()
    runtime.init_ms = round((time.perf_counter() - started) * 1000, 3)
    return runtime


SHARED_ENV = "MODELPORT_SHARED_STAGE"
"""``1``: this pre or post function has no model of its own; each event brings the model's config."""


class SharedStage:
    """A pre or post function shared by every model of a step environment (docs/pipelines.md).

    Its events are ``{"model": "<model config file, JSON text>", "input": <the stage's input>}``: the state
    machine's Task puts the model's config in its ``Parameters``. Each config is validated and its steps
    bound once, on its first request (reported as that request's ``init_ms``), then kept, the most recently
    used ``capacity`` of them. Only built-in steps run here: user code never leaves its model's image.
    """

    def __init__(self, role: Role, *, capacity: int = 32, started: float | None = None) -> None:
        """``started``: when the environment's init began (its init phase is billed with the first run)."""
        t0 = time.perf_counter() if started is None else started
        if role not in ("pre", "post"):
            raise ModelLoadError(f"{SHARED_ENV}=1 is for pre and post functions, not {role}")
        self.role: Role = role
        self.capacity = capacity
        self.cache: OrderedDict[str, Runtime] = OrderedDict()
        self._scratch = Path(tempfile.mkdtemp(prefix="modelport-shared-"))  # no files: built-ins only
        _preload(role)
        self._init_ms: float = (time.perf_counter() - t0) * 1000 if bills_init() else 0.0
        """Billed with this environment's first run, then 0 (a model's binding is in its own run)."""

    def handle(self, event: Any) -> dict[str, Any]:
        began = time.perf_counter()
        init_ms, self._init_ms = self._init_ms, 0.0
        try:
            if (
                not isinstance(event, Mapping)
                or not isinstance(event.get("model"), str)
                or "input" not in event
            ):
                raise IntermediateError(
                    "a shared stage takes {model: <model config JSON>, input: ...} from its Task's Parameters"
                )
            runtime = self._runtime(event["model"])
        except IntermediateError as exc:
            log.error("bad shared-stage event: %s", exc)
            body = error_document("PipelineError", str(exc), stage=self.role)
            before = runs_of(event.get("input")) if isinstance(event, Mapping) else []
            return {
                **_reply(500, body),
                "timings": _ordered(dict.fromkeys(STAGES, 0.0)),
                "runs": [*before, this_run(self.role, began, init_ms)],
            }
        return runtime.handle(event["input"], started=began, init_ms=init_ms)

    def _runtime(self, text: str) -> Runtime:
        key = hashlib.sha256(text.encode()).hexdigest()
        runtime = self.cache.get(key)
        if runtime is not None:
            self.cache.move_to_end(key)
            return runtime
        t0 = time.perf_counter()
        try:
            manifest = ModelConfigFile.model_validate_json(text)
        except ValidationError as exc:
            raise IntermediateError(f"the model config in the event is not valid: {exc}") from None
        user = [r.step for r in (*manifest.processing.pre, *manifest.processing.post) if r.is_user_code]
        if user:
            raise IntermediateError(f"a shared stage runs built-in steps only, not {', '.join(user)}")
        try:
            runtime = from_manifest(manifest, self._scratch, self.role, warm=False, started=t0)
        except ModelLoadError as exc:
            raise IntermediateError(str(exc)) from None
        self.cache[key] = runtime
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return runtime


def model_dir_from_env() -> Path:
    return Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)


def _preload(role: Role) -> None:
    """Import the step packages (and let matplotlib build its font list) during init, as a model's own
    function does when it binds its steps, rather than in the first request of the first model."""
    if role == "post":
        with contextlib.suppress(ImportError):
            prepare_matplotlib()
    for module in ("PIL.Image", "PIL.ImageDraw", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        if role == "post" or module.startswith("PIL"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    if role == "post":
        with contextlib.suppress(ImportError):
            importlib.import_module("matplotlib.font_manager").findfont("DejaVu Sans")


def load_from_env(started: float) -> Runtime | SharedStage:
    """What this function runs, from its environment: a shared stage, or the model in its directory."""
    if os.environ.get(SHARED_ENV) == "1":
        return SharedStage(role_from_env(), started=started)
    return load(model_dir_from_env(), started=started)


_runtime: Runtime | SharedStage | None = None
if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # in a Lambda environment: load during the init phase
    _runtime = load_from_env(_STARTED)


def handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point."""
    global _runtime
    if _runtime is None:
        _runtime = load_from_env(time.perf_counter())
    return _runtime.handle(event)
