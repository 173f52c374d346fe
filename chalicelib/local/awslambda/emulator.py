"""The local Lambda emulator: container-image functions with Lambda's control API and invoke semantics.

A registry of functions ($LATEST, published versions as frozen copies, aliases: ``models.py``) and, per
function version, a pool of execution environments (``pools.py``). As on Lambda: an environment serves
one invocation at a time and stays warm for the next; a busy pool scales out up to ``max_concurrency``,
then callers wait a bounded time before ``TooManyRequestsException``; a timeout kills the environment; a
runtime that exits or fails its init is reported as Lambda reports it (``Runtime.ExitError``, the
runtime's init error document) and replaced by a fresh one at the next invocation; every invocation gets
Lambda's START/END/REPORT log lines, the last 4 KB of which ``LogType=Tail`` returns.

The methods take and return the Lambda API's JSON documents, so the edge (``chalicelib.local.edge``) is
only HTTP plumbing, and errors are ``LambdaError`` with Lambda's error code and HTTP status. Nothing here
imports boto3 or chalice.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from chalicelib.local.awslambda.models import (
    LATEST,
    MAX_ASYNC_PAYLOAD,
    ROLE,
    Alias,
    EmulatorInvocation,
    EnvironmentInfo,
    Function,
    FunctionConfig,
    LambdaError,
    invalid,
    now_text,
    split_name,
)
from chalicelib.local.awslambda.pools import Pool, PoolClosed, Stale
from chalicelib.local.launchers import Launcher
from chalicelib.local.runtime_api import MAX_RESPONSE_BYTES

log = logging.getLogger("modelport.local.lambda")


class LambdaEmulator:
    """Container-image Lambda functions run by ``launcher``; see the module docstring.

    ``max_concurrency``: environments per function version. ``queue_wait_s``: how long an invocation
    waits for a free environment before TooManyRequestsException. ``idle_s``: idle environments are
    stopped after this long. ``init_timeout_s``: Lambda's init phase limit (an init still running then
    eats into the invocation's own timeout, as on Lambda). ``settle_s``: how long a created function
    stays Pending and an update InProgress (0: Active and Successful at once), to exercise callers' waits.
    """

    def __init__(
        self,
        launcher: Launcher,
        *,
        max_concurrency: int = 4,
        queue_wait_s: float = 10.0,
        idle_s: float = 600.0,
        init_timeout_s: float = 10.0,
        settle_s: float = 0.0,
        region: str = "us-east-1",
        account_id: str = "123456789012",
    ) -> None:
        self.launcher = launcher
        self.max_concurrency = max_concurrency
        self.queue_wait_s = queue_wait_s
        self.idle_s = idle_s
        self.init_timeout_s = init_timeout_s
        self.settle_s = settle_s
        self.region = region
        self.account_id = account_id
        self._functions: dict[str, Function] = {}
        self._pools: dict[tuple[str, str], Pool] = {}
        self._provisioned: dict[tuple[str, str], tuple[int, str, Pool]] = {}
        """(name, qualifier) -> (requested environments, when, the pool that keeps them)."""
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="lambda-reaper", daemon=True)
        self._reaper.start()

    # ----------------------------------------------------------------------- names

    def arn(self, name: str, qualifier: str | None = None) -> str:
        base = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{base}:{qualifier}" if qualifier else base

    def _function(self, name: str) -> Function:
        fn = self._functions.get(name)
        if fn is None:
            raise LambdaError("ResourceNotFoundException", f"Function not found: {self.arn(name)}", 404)
        return fn

    # ----------------------------------------------------------------------- control API

    def create_function(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = split_name(str(request.get("FunctionName", "")))
        if request.get("PackageType") != "Image":
            raise invalid("The local Lambda emulator runs container images only: set PackageType to Image.")
        image_uri = str((request.get("Code") or {}).get("ImageUri") or "")
        if not image_uri:
            raise invalid("Code.ImageUri is required when PackageType is Image.")
        role = str(request.get("Role", ""))
        if not ROLE.fullmatch(role):
            raise LambdaError("ValidationException", f"Value '{role}' at 'role' failed to satisfy constraint")
        config = FunctionConfig(
            name=name,
            image_uri=image_uri,
            code_sha256=self._code_sha256(image_uri),
            role=role,
            memory_mb=int(request.get("MemorySize", 128)),
            timeout_s=int(request.get("Timeout", 3)),
            ephemeral_mb=int((request.get("EphemeralStorage") or {}).get("Size", 512)),
            environment=dict((request.get("Environment") or {}).get("Variables") or {}),
            architectures=tuple(request.get("Architectures") or ("x86_64",)),
            description=str(request.get("Description", "")),
            tracing_mode=str((request.get("TracingConfig") or {}).get("Mode", "PassThrough")),
        ).validated()
        with self._lock:
            if name in self._functions:
                raise LambdaError("ResourceConflictException", f"Function already exist: {name}", 409)
            fn = self._functions[name] = Function(
                config, self.arn(name), tags=dict(request.get("Tags") or {})
            )
            if request.get("Publish"):
                fn.publish("")
            fn.settle("create", self.settle_s)
            return fn.document(config)

    def _code_sha256(self, image_uri: str) -> str:
        try:
            return self.launcher.code_sha256(image_uri)
        except LookupError as exc:
            raise invalid(
                f"Source image {image_uri} does not exist. Provide a valid source image. ({exc})"
            ) from None

    def get_function(self, function_name: str, qualifier: str | None = None) -> dict[str, Any]:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            config = fn.config(qualifier)
            return {
                "Configuration": fn.document(config),
                "Code": {
                    "RepositoryType": "ECR",
                    "ImageUri": config.image_uri,
                    "ResolvedImageUri": f"{config.image_uri.split('@')[0]}@sha256:{config.code_sha256}",
                },
                "Tags": dict(fn.tags),
            }

    def get_function_configuration(self, function_name: str, qualifier: str | None = None) -> dict[str, Any]:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            return fn.document(fn.config(qualifier))

    def list_functions(self) -> dict[str, Any]:
        with self._lock:
            return {"Functions": [fn.document(fn.latest) for fn in self._functions.values()]}

    def update_function_code(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        image_uri = str(request.get("ImageUri") or "")
        if not image_uri:
            raise invalid("ImageUri is required for an image function.")
        code_sha256 = self._code_sha256(image_uri)
        return self._update(
            function_name, request, {"image_uri": image_uri, "code_sha256": code_sha256}, publish=True
        )

    def update_function_configuration(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for key, attr, kind in (
            ("MemorySize", "memory_mb", int),
            ("Timeout", "timeout_s", int),
            ("Role", "role", str),
            ("Description", "description", str),
        ):
            if key in request:
                changes[attr] = kind(request[key])
        if "EphemeralStorage" in request:
            changes["ephemeral_mb"] = int((request["EphemeralStorage"] or {}).get("Size", 512))
        if "Environment" in request:
            changes["environment"] = dict((request["Environment"] or {}).get("Variables") or {})
        if "TracingConfig" in request:
            changes["tracing_mode"] = str((request["TracingConfig"] or {}).get("Mode", "PassThrough"))
        return self._update(function_name, request, changes, publish=False)

    def _update(
        self, function_name: str, request: Mapping[str, Any], changes: dict[str, Any], *, publish: bool
    ) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            fn.check_idle()
            fn.check_revision(request.get("RevisionId"))
            if "Architectures" in request:
                changes["architectures"] = tuple(request["Architectures"])
            fn.latest = replace(
                fn.latest, **changes, revision_id=str(uuid.uuid4()), last_modified=now_text()
            ).validated()
            pool = self._pools.pop((name, LATEST), None)
            if publish and request.get("Publish"):
                fn.publish("")
            fn.settle("update", self.settle_s)
            doc = fn.document(fn.latest)
        if pool is not None:
            pool.close()
        return doc

    def delete_function(self, function_name: str, qualifier: str | None = None) -> None:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            if qualifier in (None, "", LATEST):
                del self._functions[name]
                pools = [self._pools.pop(k) for k in list(self._pools) if k[0] == name]
            else:
                if qualifier not in fn.versions:
                    raise LambdaError(
                        "ResourceNotFoundException", f"Function not found: {self.arn(name, qualifier)}", 404
                    )
                users = [a.name for a in fn.aliases.values() if a.version == qualifier]
                if users:
                    raise LambdaError(
                        "ResourceConflictException",
                        f"Unable to delete version because the following aliases reference it: {users}",
                        409,
                    )
                del fn.versions[qualifier]
                pools = [p for p in [self._pools.pop((name, qualifier), None)] if p is not None]
            for key in [
                k for k in self._provisioned if k[0] == name and qualifier in (None, "", LATEST, k[1])
            ]:
                del self._provisioned[key]
        for pool in pools:
            pool.close(force=True)

    def publish_version(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            fn.check_idle()
            fn.check_revision(request.get("RevisionId"))
            wanted = request.get("CodeSha256")
            if wanted and wanted != fn.latest.code_sha256:
                raise invalid(
                    f"CodeSHA256 ({wanted}) is different from current CodeSHA256 in $LATEST "
                    f"({fn.latest.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
                )
            return fn.document(fn.publish(str(request.get("Description", ""))))

    def list_versions(self, function_name: str) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            configs = [fn.latest, *sorted(fn.versions.values(), key=lambda c: int(c.version))]
            return {"Versions": [fn.document(c) for c in configs]}

    def create_alias(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = split_name(function_name)
        alias_name = str(request.get("Name", ""))
        if not re.fullmatch(r"(?!^[0-9]+$)[a-zA-Z0-9-_]{1,128}", alias_name):
            raise LambdaError(
                "ValidationException", f"Value '{alias_name}' at 'name' failed to satisfy constraint"
            )
        with self._lock:
            fn = self._function(name)
            version = str(request.get("FunctionVersion", ""))
            fn.config(version)  # the version must exist
            if alias_name in fn.aliases:
                raise LambdaError(
                    "ResourceConflictException", f"Alias already exists: {self.arn(name, alias_name)}", 409
                )
            alias = fn.aliases[alias_name] = Alias(alias_name, version, str(request.get("Description", "")))
            return fn.alias_document(alias)

    def get_alias(self, function_name: str, alias_name: str) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            return fn.alias_document(fn.alias(alias_name))

    def update_alias(self, function_name: str, alias_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            alias = fn.alias(alias_name)
            if request.get("RevisionId") and request["RevisionId"] != alias.revision_id:
                raise LambdaError(
                    "PreconditionFailedException", "The Revision Id provided does not match", 412
                )
            version = str(request.get("FunctionVersion") or alias.version)
            fn.config(version)
            description = str(request.get("Description", alias.description))
            alias = fn.aliases[alias_name] = Alias(alias_name, version, description)
            return fn.alias_document(alias)

    def delete_alias(self, function_name: str, alias_name: str) -> None:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            fn.alias(alias_name)
            del fn.aliases[alias_name]

    def list_aliases(self, function_name: str) -> dict[str, Any]:
        name, _ = split_name(function_name)
        with self._lock:
            fn = self._function(name)
            return {"Aliases": [fn.alias_document(a) for a in fn.aliases.values()]}

    # ----------------------------------------------------------------------- provisioned concurrency

    def put_provisioned_concurrency_config(
        self, function_name: str, qualifier: str | None, request: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Keep ``ProvisionedConcurrentExecutions`` environments of a version (or an alias's) initialized:
        they start now, in the background; ``Status`` is IN_PROGRESS until they have, then READY."""
        name, qualifier = split_name(function_name, qualifier)
        count = request.get("ProvisionedConcurrentExecutions")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise invalid("ProvisionedConcurrentExecutions must be an integer of at least 1.")
        if qualifier in (None, "", LATEST):
            raise invalid(
                "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
            )
        if count > self.max_concurrency:
            raise invalid(
                f"ProvisionedConcurrentExecutions ({count}) is over what this emulator runs per function "
                f"version ({self.max_concurrency})."
            )
        with self._lock:
            config = self._function(name).config(qualifier)
        pool = self._pool(config)
        with self._lock:
            self._provisioned[(name, qualifier)] = (count, now_text(), pool)
        pool.provision(count)
        return self.get_provisioned_concurrency_config(name, qualifier)

    def get_provisioned_concurrency_config(self, function_name: str, qualifier: str | None) -> dict[str, Any]:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            self._function(name)
            found = self._provisioned.get((name, qualifier or ""))
        if found is None:
            raise LambdaError(
                "ProvisionedConcurrencyConfigNotFoundException",
                f"No Provisioned Concurrency Config found for this function: {self.arn(name, qualifier)}",
                404,
            )
        count, when, pool = found
        available = pool.available()
        status = "READY" if available >= count else "FAILED" if pool.reserve_error else "IN_PROGRESS"
        doc = {
            "RequestedProvisionedConcurrentExecutions": count,
            "AvailableProvisionedConcurrentExecutions": available,
            "AllocatedProvisionedConcurrentExecutions": available,
            "Status": status,
            "LastModified": when,
        }
        if status == "FAILED":
            doc["StatusReason"] = pool.reserve_error or ""
        return doc

    def delete_provisioned_concurrency_config(self, function_name: str, qualifier: str | None) -> None:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            self._function(name)
            found = self._provisioned.pop((name, qualifier or ""), None)
        if found is not None:
            found[2].provision(0)

    # ----------------------------------------------------------------------- invoke

    def invoke(
        self,
        function_name: str,
        payload: bytes = b"",
        *,
        qualifier: str | None = None,
        invocation_type: str = "RequestResponse",
        log_type: str = "None",
    ) -> EmulatorInvocation:
        name, qualifier = split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            config = fn.config(qualifier)
            if config.version == LATEST and fn.state()[0] == "Pending":
                raise LambdaError(
                    "ResourceConflictException",
                    "The operation cannot be performed at this time. The function is currently in the "
                    "following state: Pending",
                    409,
                )
        limit = MAX_ASYNC_PAYLOAD if invocation_type == "Event" else MAX_RESPONSE_BYTES
        if len(payload) > limit:
            raise LambdaError(
                "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the Invoke operation",
                413,
            )
        payload = payload if payload.strip() else b"{}"
        try:
            json.loads(payload)
        except ValueError as exc:
            raise LambdaError(
                "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
            ) from None
        request_id = str(uuid.uuid4())
        if invocation_type == "DryRun":
            return EmulatorInvocation(204, b"", request_id, config.version)
        if invocation_type == "Event":
            threading.Thread(
                target=self._run_event, args=(config, payload, request_id), name="lambda-event", daemon=True
            ).start()
            return EmulatorInvocation(202, b"", request_id, config.version)
        if invocation_type != "RequestResponse":
            raise invalid(f"Unknown InvocationType {invocation_type!r}.")
        return self._run(config, payload, request_id, tail=log_type == "Tail")

    def _run_event(self, config: FunctionConfig, payload: bytes, request_id: str) -> None:
        try:
            outcome = self._run(config, payload, request_id, tail=False)
            if outcome.function_error:
                log.warning(
                    "async invocation %s of %s failed: %s", request_id, config.name, outcome.payload[:500]
                )
        except LambdaError as exc:
            log.warning("async invocation %s of %s was not run: %s", request_id, config.name, exc)

    def _run(
        self, config: FunctionConfig, payload: bytes, request_id: str, *, tail: bool
    ) -> EmulatorInvocation:
        for _ in range(3):
            pool = self._pool(config)
            try:
                env = pool.acquire(self.queue_wait_s)
            except PoolClosed:
                continue
            keep = False
            try:
                invocation, keep = env.run(payload, request_id, tail=tail, init_timeout_s=self.init_timeout_s)
                return invocation
            except Stale:
                continue
            finally:
                pool.release(env, keep)
        raise LambdaError("ServiceException", "no execution environment stayed up for the invocation", 500)

    def _pool(self, config: FunctionConfig) -> Pool:
        if self._stopping.is_set():
            raise LambdaError("ServiceException", "the Lambda emulator is shutting down", 503)
        with self._lock:
            fn = self._function(config.name)
            current = fn.config(config.version)
            key = (config.name, config.version)
            pool = self._pools.get(key)
            if pool is None or pool.config is not current:
                pool = self._pools[key] = Pool(self, current)
            return pool

    def count_start(self, name: str) -> None:
        with self._lock:
            if name in self._functions:
                self._functions[name].started += 1

    # ----------------------------------------------------------------------- life cycle

    def environments(self, function_name: str) -> list[EnvironmentInfo]:
        """The function's live execution environments, all versions."""
        name, _ = split_name(function_name)
        with self._lock:
            pools = [p for k, p in self._pools.items() if k[0] == name]
        return [info for pool in pools for info in pool.info()]

    def started(self, function_name: str) -> int:
        """How many execution environments were started for the function (cold starts)."""
        name, _ = split_name(function_name)
        with self._lock:
            return self._function(name).started

    def _reap(self) -> None:
        while not self._stopping.wait(min(max(self.idle_s / 4, 0.05), 5.0)):
            with self._lock:
                pools = list(self._pools.values())
            for pool in pools:
                for env in pool.reap(self.idle_s):
                    env.stop()
                pool.top_up()

    def shutdown(self) -> None:
        """Stop every environment (invocations still running fail at once) and the reaper."""
        self._stopping.set()
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        threads = [threading.Thread(target=pool.close, kwargs={"force": True}) for pool in pools]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self._reaper.join(5)

    def __enter__(self) -> LambdaEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
