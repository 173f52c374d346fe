"""The probe's document: what a sandboxed probe returns and how the control plane reads it back.

The probe (``chalicelib.runtime.probe``) runs tenant code, so everything it returns is hostile: the control
plane reads at most ``MAX_OUTPUT`` bytes, accepts exactly ``{"contract": <NativeContract>}`` or
``{"error": {"code": <one of ERROR_CODES>, ...}}`` and re-creates every message itself from the code. What
the probe wrote on stderr goes, bounded and sanitized, to the control plane's log under an error id; the
user sees a fixed message naming the failure class and that id, never the excerpt.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from chalicelib.core.config import ModelConfig
from chalicelib.core.errors import ArtifactError, SandboxUnavailable
from chalicelib.core.native import NativeContract
from chalicelib.core.protocol import Frozen

# Not under "modelport": that is the Chalice app's logger, which does not propagate to the root.
log = logging.getLogger(__name__)

MAX_OUTPUT = 1024 * 1024
"""Bytes of probe stdout the control plane reads; more is "no valid contract"."""
EXCERPT_CHARS = 300
TIMEOUT_S = 60

ProbeFormat = Literal["pickle", "skops"]
Failure = Literal["timed_out", "out_of_memory", "not_loadable", "no_contract", "crashed"]
FAILURES: dict[Failure, str] = {
    "timed_out": "timed out",
    "out_of_memory": "ran out of memory",
    "not_loadable": "could not be loaded",
    "no_contract": "returned no valid contract",
    "crashed": "crashed",
}
ErrorCode = Literal["not_an_estimator", "not_fitted", "not_loadable"]
ERROR_CODES: tuple[ErrorCode, ...] = ("not_an_estimator", "not_fitted", "not_loadable")
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,119}$")
_ENV_LIKE = re.compile(r"\S*=\S*")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


class ProbeRequest(Frozen):
    """One artifact to open in a sandbox: the file on this host, its name in the bundle, how to load it."""

    config: ModelConfig
    artifact: Path
    rel: str
    format: ProbeFormat


class ContractError(ArtifactError):
    """An artifact that loads but is not a usable estimator; ``reason`` is one of ``ERROR_CODES``."""

    def __init__(self, message: str, *, reason: ErrorCode, type_name: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason
        self.type_name = type_name


SANDBOXES = "a docker engine locally, the probe function on AWS"


def no_sandbox(request: ProbeRequest, why: str) -> SandboxUnavailable:
    """The refusal of an artifact that needs code to open where no sandbox can open it (``why``)."""
    what = "a pickle" if request.format == "pickle" else "a .skops file with trusted_types"
    return SandboxUnavailable(
        f"{request.rel} is {what}: it can only be opened in a sandbox ({SANDBOXES}), and {why}",
        hint="convert it to .skops with skops' default types, or deploy where a sandbox runs",
    )


def not_an_estimator(rel: str, type_name: str) -> ContractError:
    shown = type_name if _TYPE_NAME.fullmatch(type_name) else "an object"
    return ContractError(
        f"{rel} holds a {shown}, not a scikit-learn estimator",
        reason="not_an_estimator",
        type_name=shown,
        hint="save the fitted estimator itself",
    )


def not_fitted(rel: str) -> ContractError:
    return ContractError(
        f"{rel} holds an estimator that is not fitted", reason="not_fitted", hint="fit it, then save it"
    )


def error_document(exc: ContractError | None) -> dict[str, Any]:
    """What the probe returns for a failure: a code (and a type name), never free text."""
    if exc is None:
        return {"error": {"code": "not_loadable"}}
    return {"error": {"code": exc.reason, "type": exc.type_name}}


def contract_document(contract: NativeContract) -> dict[str, Any]:
    return {"contract": contract.model_dump(mode="json")}


def sanitize(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Printable ASCII, ``KEY=VALUE``-like tokens dropped, at most ``limit`` characters (the tail)."""
    text = _NOT_PRINTABLE.sub(" ", text)
    text = _ENV_LIKE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[-limit:]


def failure(rel: str, kind: Failure, *, excerpt: str | bytes = "") -> ArtifactError:
    """The user-visible error of a failed probe; the excerpt is logged under the error id only."""
    if isinstance(excerpt, bytes):
        excerpt = excerpt[-4 * EXCERPT_CHARS :].decode("ascii", errors="replace")
    error_id = uuid.uuid4().hex[:12]
    log.warning("sandbox probe of %s %s (error id %s): %s", rel, kind, error_id, sanitize(excerpt))
    return ArtifactError(
        f"{rel} {FAILURES[kind]} in the sandbox (error id {error_id})",
        hint="check that it is a plain fitted estimator saved with the environment's packages",
    )


def read_result(raw: bytes, rel: str, *, excerpt: str | bytes = "") -> NativeContract:
    """The native contract in a probe's output, or the ArtifactError it stands for."""
    if len(raw) > MAX_OUTPUT:
        raise failure(rel, "no_contract", excerpt=f"{len(raw)} bytes of output")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise failure(rel, "no_contract", excerpt=excerpt) from None
    if isinstance(doc, dict) and set(doc) == {"contract"}:
        try:
            return NativeContract.model_validate(doc["contract"])
        except (ValidationError, RecursionError):
            raise failure(rel, "no_contract", excerpt=excerpt) from None
    error = doc.get("error") if isinstance(doc, dict) and set(doc) == {"error"} else None
    code = error.get("code") if isinstance(error, dict) else None
    if code == "not_an_estimator":
        type_name = error.get("type") if isinstance(error, dict) else None
        raise not_an_estimator(rel, type_name if isinstance(type_name, str) else "")
    if code == "not_fitted":
        raise not_fitted(rel)
    if code == "not_loadable":
        raise failure(rel, "not_loadable", excerpt=excerpt)
    raise failure(rel, "no_contract", excerpt=excerpt)


class NoSandbox:
    """The ``Sandbox`` that refuses every artifact needing code to open (a pickle, trusted types): where no
    sandbox runs (process mode, no docker engine, memory stacks, ``MODELPORT_SANDBOX=none``), nothing of a
    bundle runs in the control plane."""

    def __init__(self, why: str = "none is configured here") -> None:
        self.why = why

    def probe(self, request: ProbeRequest) -> NativeContract:
        raise no_sandbox(request, self.why)
