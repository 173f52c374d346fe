"""The Lambda adapter of the ``Sandbox`` port: the probe as a function of the model's environment image.

One probe function per environment (``modelport-probe-<fingerprint[:12]>``), created on demand from the
environment's probe image with the probe role (one that grants nothing), no environment variables, and a
short timeout. The artifact travels base64 in the event when it is small, else as a presigned GET URL of a
staged copy that is deleted afterwards. The function's answer is read capped and validated here.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from chalicelib.aws.outage import translates_outages
from chalicelib.core.environment import ResolvedEnvironment, resolve_environment
from chalicelib.core.errors import ArtifactError, TooLarge, Unavailable
from chalicelib.core.native import NativeContract
from chalicelib.core.ports import Progress, Sandbox
from chalicelib.core.probe import MAX_OUTPUT, TIMEOUT_S, ProbeRequest, failure, read_result

PREFIX = "modelport-probe-"
HANDLER = "chalicelib.runtime.probe.handler"
INLINE_MAX_BYTES = 4 * 1024 * 1024
"""Artifacts up to this size travel base64 in the event (Lambda takes 6 MB synchronous payloads)."""
_TRANSIENT = (
    "TooManyRequestsException",
    "ServiceException",
    "ResourceConflictException",
    "EC2ThrottledException",
)


class Staging(Protocol):
    def stage(self, path: Path) -> tuple[str, Callable[[], None]]:
        """A presigned GET URL of a copy of ``path``, and what deletes that copy."""


@translates_outages
class S3Staging:
    """Stages artifacts under ``probes/`` of the bundle bucket behind a URL valid for a few minutes.

    The control plane may not delete objects (its policy grants no ``s3:DeleteObject``), so the staged
    copies are left to the bucket's lifecycle rule for ``probes/``.
    """

    def __init__(self, s3: Any, bucket: str, *, expires_in: int = 300) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.expires_in = expires_in

    def stage(self, path: Path) -> tuple[str, Callable[[], None]]:
        key = f"probes/{uuid.uuid4().hex}/artifact"
        with path.open("rb") as fh:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=fh)
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires_in
        )

        return str(url), lambda: None


def _quiet(_: str) -> None:
    pass


def function_name(env: ResolvedEnvironment) -> str:
    return PREFIX + env.fingerprint.removeprefix("sha256:")[:12]


@translates_outages
class LambdaSandbox:
    def __init__(
        self,
        client: Any,
        role_arn: str,
        *,
        probe_image: Callable[[ResolvedEnvironment, Progress], str],
        staging: Staging | None = None,
        timeout_s: int = TIMEOUT_S,
        memory_mb: int = 1024,
        progress: Progress = _quiet,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.role_arn = role_arn
        self.probe_image = probe_image
        self.staging = staging
        self.timeout_s = min(int(timeout_s), TIMEOUT_S)
        self.memory_mb = memory_mb
        self.progress = progress
        self.sleep = sleep

    def probe(self, request: ProbeRequest) -> NativeContract:
        env = resolve_environment(request.config, "sklearn")
        name = function_name(env)
        try:
            self._ensure(name, self.probe_image(env, self.progress), env)
            event: dict[str, Any] = {
                "rel": request.rel,
                "format": request.format,
                "trusted_types": list(request.config.trusted_types) if request.format == "skops" else [],
            }
            cleanup: Callable[[], None] | None = None
            size = request.artifact.stat().st_size
            if size <= INLINE_MAX_BYTES:
                event["artifact_b64"] = base64.b64encode(request.artifact.read_bytes()).decode()
            elif self.staging is None:
                raise TooLarge(
                    f"{request.rel} is over {INLINE_MAX_BYTES // 2**20} MB and no staging is set up"
                )
            else:
                event["artifact_url"], cleanup = self.staging.stage(request.artifact)
            try:
                response = self.client.invoke(
                    FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
                )
            finally:
                if cleanup is not None:
                    cleanup()
        except Exception as exc:
            raise _translate(exc) from None
        payload = response["Payload"].read(MAX_OUTPUT + 1)
        if response.get("FunctionError"):
            raise failure(request.rel, _failure_kind(payload), excerpt=payload)
        return read_result(payload, request.rel)

    def _ensure(self, name: str, image: str, env: ResolvedEnvironment) -> None:
        """Create the probe function (or point it at a new image) and wait until it can be invoked."""
        try:
            current = self.client.get_function(FunctionName=name)
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            self.progress(f"creating the probe function {name}")
            self.client.create_function(
                FunctionName=name,
                Role=self.role_arn,
                PackageType="Image",
                Code={"ImageUri": image},
                ImageConfig={"Command": [HANDLER]},
                Timeout=self.timeout_s,
                MemorySize=self.memory_mb,
                Architectures=[env.architecture],
                Description="Modelport sandboxed artifact probe (no network use, no secrets)",
            )
        else:
            if current.get("Code", {}).get("ImageUri") != image:
                self.client.update_function_code(FunctionName=name, ImageUri=image)
        for _ in range(120):
            config = self.client.get_function_configuration(FunctionName=name)
            if config.get("State") == "Active" and config.get("LastUpdateStatus") in (None, "Successful"):
                return
            if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
                raise ArtifactError(f"the probe function {name} could not start")
            self.sleep(1.0)
        raise Unavailable(f"the probe function {name} did not become active")


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return str(error.get("Code", "")) if isinstance(error, dict) else ""


def _translate(exc: Exception) -> Exception:
    from chalicelib.core.errors import ModelportError

    if isinstance(exc, ModelportError):
        return exc
    code = _code(exc)
    if code in _TRANSIENT:
        return Unavailable(f"the probe function is busy or unavailable ({code})", hint="retry in a minute")
    if code:
        return ArtifactError(f"the probe function could not be used ({code})")
    return exc


def _failure_kind(payload: bytes) -> Any:
    text = payload[:2000].decode("utf-8", errors="replace")
    if "Task timed out" in text:
        return "timed_out"
    if "signal: killed" in text or "Runtime.OutOfMemory" in text:
        return "out_of_memory"
    return "crashed"


def _implements_the_port(sandbox: LambdaSandbox) -> Sandbox:
    return sandbox
