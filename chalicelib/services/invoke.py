"""Invocations from accounts: check the grant, validate against the protocol, run, map the answer.

Validation happens here, before any function runs, from the protocol written in the model config file:
a request the model cannot take costs no cold start and gets a 400 with a JSON pointer.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from chalicelib.core.errors import (
    Conflict,
    InvalidRequest,
    NotAcceptable,
    TooLarge,
    UnsupportedMediaType,
)
from chalicelib.core.manifest import ModelConfigFile
from chalicelib.core.ports import FunctionInvoker
from chalicelib.core.protocol import Records
from chalicelib.core.records import Account, VersionRecord
from chalicelib.services.cache import TtlCache
from chalicelib.services.models import ModelService

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous invocation limit, request and response
MAX_STATE_PAYLOAD = 256 * 1024  # Step Functions' limit for a state's input: a chained pipeline's request
IMAGE_MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/webp": (b"RIFF",),
}
TEXT_TYPES = ("application/json", "text/csv")


@dataclass(frozen=True)
class InvokeResult:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None, offered: tuple[str, ...]) -> str:
    """The first offered type the Accept header takes (q-values respected, ties by our order)."""
    if not accept or not accept.strip():
        return offered[0]
    ranges: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        ranges.append((q, i, kind.lower()))
    best: tuple[float, int, int] | None = None
    chosen = None
    for q, order, kind in ranges:
        if q <= 0:
            continue
        for rank, media in enumerate(offered):
            main = media.split("/")[0]
            if kind in (media, "*/*", f"{main}/*"):
                key = (q, -rank, -order)
                if best is None or key > best:
                    best, chosen = key, media
    if chosen is None:
        raise NotAcceptable(f"cannot answer with {accept!r}", hint="this model answers " + ", ".join(offered))
    return chosen


class InvokeService:
    def __init__(self, models: ModelService, invoker: FunctionInvoker, *, cache_s: float = 0.0) -> None:
        """``cache_s``: how long which version an account's request resolves to is kept."""
        self.models = models
        self.invoker = invoker
        self._manifests: dict[tuple[str, int], tuple[ModelConfigFile, Draft202012Validator]] = {}
        self._resolved: TtlCache[tuple[int, str, bool, str, int | None], tuple[str, int]] = TtlCache(cache_s)
        self._lock = threading.Lock()

    def manifest(self, caller: Account, name: str, version: int | None) -> ModelConfigFile:
        return self._ready(caller, name, version)[0]

    def _ready(
        self, caller: Account, name: str, version: int | None
    ) -> tuple[ModelConfigFile, Draft202012Validator]:
        asked = (self.models.generation, caller.account_id, caller.is_admin, name, version)
        key = self._resolved.get(asked, lambda: self._resolve(caller, name, version))
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None:
            return cached
        record = self.models.models.get_version(*key)  # visible and ready: checked by _resolve
        self._ready_record(record, name)
        assert record.manifest is not None
        manifest = ModelConfigFile.model_validate_json(record.manifest)
        if manifest.deployment is None:
            raise Conflict(f"version {record.version} of {name!r} has no deployed function")
        entry = (manifest, Draft202012Validator(manifest.protocol.request.json_schema))
        with self._lock:  # versions never change once READY: cache for the process's life
            self._manifests[key] = entry
        return entry

    def _resolve(self, caller: Account, name: str, version: int | None) -> tuple[str, int]:
        """(name, version) a request of ``caller`` runs, once that version is ready to run."""
        record = self.models.resolve_version(caller, name, version)
        self._ready_record(record, name)
        return record.name, record.version

    @staticmethod
    def _ready_record(record: VersionRecord, name: str) -> None:
        if record.status != "READY" or record.manifest is None:
            reason = f": {record.reason}" if record.reason else ""
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
    ) -> InvokeResult:
        manifest, validator = self._ready(caller, name, version)
        proto = manifest.protocol
        media = media_type(content_type) or "application/json"
        if media not in proto.request.content_types:
            raise UnsupportedMediaType(
                f"{name} does not take {media}",
                hint="send one of " + ", ".join(proto.request.content_types),
            )
        answer_as = negotiate(accept, proto.response.content_types)
        if len(body) * (1 if media in TEXT_TYPES else 4 / 3) > MAX_SYNC_PAYLOAD:
            raise TooLarge(f"request body of {len(body)} bytes is over Lambda's 6 MB synchronous limit")
        _validate(media, body, validator, manifest)
        event: dict[str, object] = {
            "body": body.decode() if media in TEXT_TYPES else base64.b64encode(body).decode(),
            "body_encoding": "utf8" if media in TEXT_TYPES else "base64",
            "content_type": media,
            "accept": answer_as,
        }
        assert manifest.deployment is not None
        if manifest.deployment.mode == "chained":
            size = len(json.dumps(event, separators=(",", ":")))
            if size > MAX_STATE_PAYLOAD:
                raise TooLarge(
                    f"request of {size} bytes is over the 256 KB a chained pipeline's state can carry",
                    hint="send a smaller request, or deploy the model with pipeline: fused (6 MB)",
                )
        reply = self.invoker.invoke(manifest.deployment, event)
        return _result(reply)


def _validate(media: str, body: bytes, validator: Draft202012Validator, manifest: ModelConfigFile) -> None:
    if media == "application/json":
        try:
            doc = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"malformed JSON: {exc}", hint="send a JSON document") from None
        errors = sorted(
            _leaf_errors(validator.iter_errors(doc)), key=lambda e: list(map(str, e.absolute_path))
        )
        problems = [
            {"pointer": "/" + "/".join(str(p) for p in err.absolute_path), "message": err.message}
            for err in errors[:20]
        ]
        if problems:
            summary = "; ".join(f"{p['pointer']}: {p['message']}" for p in problems[:3])
            raise InvalidRequest(f"request does not match the model's protocol: {summary}", errors=problems)
    elif media == "text/csv":
        value = manifest.protocol.request_value
        assert isinstance(value, Records)
        _validate_csv(body, [f.name for f in value.features])
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


def _validate_csv(body: bytes, features: list[str]) -> None:
    try:
        rows = list(csv.reader(io.StringIO(body.decode())))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidRequest(f"unreadable CSV: {exc}") from None
    rows = [r for r in rows if r]
    if rows and [c.strip() for c in rows[0]] == features:
        rows = rows[1:]
    if not rows:
        raise InvalidRequest("CSV has no data rows", hint="columns: " + ", ".join(features))
    for i, row in enumerate(rows, start=1):
        if len(row) != len(features):
            raise InvalidRequest(
                f"CSV row {i} has {len(row)} columns, expected {len(features)} ({', '.join(features)})",
                errors=[{"pointer": f"/{i - 1}", "message": f"{len(row)} columns"}],
            )


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


def _result(reply: dict[str, Any]) -> InvokeResult:
    encoding = reply.get("body_encoding", "utf8")
    raw = reply.get("body", "")
    body = base64.b64decode(raw) if encoding == "base64" else str(raw).encode()
    timing = server_timing(reply.get("timings") or {})
    headers = {"Server-Timing": timing} if timing else {}
    return InvokeResult(
        status=int(reply.get("status", 200)),
        content_type=str(reply.get("content_type", "application/json")),
        body=body,
        headers=headers,
    )
