"""The local Lambda emulator: container-image functions with Lambda's control API and invoke semantics.

A registry of functions ($LATEST, published versions as frozen copies, aliases) and, per function version,
a pool of execution environments. An environment is one ``RuntimeApiServer`` plus one runtime a launcher
started (a container, or a process when no docker engine answers). As on Lambda: an environment serves
one invocation at a time and stays warm for the next; a busy pool scales out up to ``max_concurrency``,
then callers wait a bounded time before ``TooManyRequestsException``; a timeout kills the environment; a
runtime that exits or fails its init is reported as Lambda reports it (``Runtime.ExitError``, the
runtime's init error document) and replaced by a fresh one at the next invocation; every invocation gets
Lambda's START/END/REPORT log lines, the last 4 KB of which ``LogType=Tail`` returns.

The methods take and return the Lambda API's JSON documents, so the edge server (``edge.py``) is only
HTTP plumbing, and errors are ``LambdaError`` with Lambda's error code and HTTP status. Nothing here
imports boto3 or chalice.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from chalicelib.local.launchers import LaunchedRuntime, Launcher, LaunchSpec
from chalicelib.local.runtime_api import MAX_RESPONSE_BYTES, RuntimeApiResult, RuntimeApiServer

log = logging.getLogger("modelport.local.lambda")

LATEST = "$LATEST"
MAX_ASYNC_PAYLOAD = 256 * 1024
LOG_TAIL_BYTES = 4096
RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
_NAME = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"(?P<name>[A-Za-z0-9_-]{1,140})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?"
)
_ROLE = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/?[A-Za-z0-9+=,.@_/-]+")


class LambdaError(Exception):
    """A Lambda API error: ``code`` is the ``x-amzn-ErrorType``, ``status`` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.extra = code, message, status, extra

    def body(self) -> dict[str, str]:
        return {"Type": "User", "message": self.message, **self.extra}


def _invalid(message: str) -> LambdaError:
    return LambdaError("InvalidParameterValueException", message)


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class FunctionConfig:
    """One function version's configuration; published versions are frozen copies of $LATEST."""

    name: str
    image_uri: str
    code_sha256: str
    role: str
    memory_mb: int = 128
    timeout_s: int = 3
    environment: Mapping[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("x86_64",)
    description: str = ""
    version: str = LATEST
    revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_modified: str = field(default_factory=_now_text)

    def content(self) -> tuple[Any, ...]:
        """What a published version freezes: equal content means no new version (as on Lambda)."""
        return (
            self.image_uri,
            self.code_sha256,
            self.role,
            self.memory_mb,
            self.timeout_s,
            tuple(sorted(self.environment.items())),
            self.architectures,
        )


@dataclass(frozen=True)
class Alias:
    name: str
    version: str
    description: str = ""
    revision_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class _Function:
    latest: FunctionConfig
    versions: dict[str, FunctionConfig] = field(default_factory=dict)
    aliases: dict[str, Alias] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    next_version: int = 1
    settling: str | None = None
    """"create" or "update" while the function is Pending / its update InProgress (``settle_s``)."""
    settled_at: float = 0.0
    started: int = 0
    """Execution environments started for this function, all versions together."""


@dataclass(frozen=True)
class EmulatorInvocation:
    """The result of Invoke, as the API answers it."""

    status: int
    payload: bytes
    request_id: str
    executed_version: str
    function_error: str | None = None
    log_result: str | None = None


@dataclass(frozen=True)
class EnvironmentInfo:
    id: str
    version: str
    busy: bool
    invocations: int
    pid: int | None


# --------------------------------------------------------------------------- environments


class _Log:
    """An environment's output as lines, numbered, for the per-invocation tail; also sent to ``log``."""

    def __init__(self, function_name: str, limit: int = 2000) -> None:
        self.logger = log.getChild(function_name)
        self.lines: deque[tuple[int, str]] = deque(maxlen=limit)
        self.seq = 0
        self.last_at = 0.0
        self._partial = b""
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                self._add(raw.decode(errors="replace").rstrip("\r"))

    def close(self) -> None:
        with self._lock:
            if self._partial:
                self._add(self._partial.decode(errors="replace"))
                self._partial = b""

    def _add(self, line: str) -> None:
        self.seq += 1
        self.lines.append((self.seq, line))
        self.last_at = time.monotonic()
        self.logger.debug("%s", line)

    def mark(self) -> int:
        return self.seq

    def since(self, mark: int) -> list[str]:
        with self._lock:
            return [line for seq, line in self.lines if seq > mark]

    def settle(self, quiet: float = 0.003, limit: float = 0.1) -> None:
        """Give the reader a moment to catch up with output written just before the answer (Tail only)."""
        deadline = time.monotonic() + limit
        time.sleep(0.001)
        while time.monotonic() < deadline and time.monotonic() - self.last_at < quiet:
            time.sleep(0.001)


class _Environment:
    """One execution environment: a Runtime API server and the runtime a launcher started against it."""

    def __init__(self, emulator: LambdaEmulator, config: FunctionConfig) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.config = config
        self.log = _Log(config.name)
        self.invocations = 0
        self.busy = True
        self.last_used = time.monotonic()
        self.server = RuntimeApiServer(
            function_name=config.name, region=emulator.region, account_id=emulator.account_id
        ).start()
        self.started = time.perf_counter()
        spec = LaunchSpec(
            function_name=config.name,
            version=config.version,
            image_uri=config.image_uri,
            memory_mb=config.memory_mb,
            timeout_s=config.timeout_s,
            environment=dict(config.environment),
            runtime_api=self.server.url,
            region=emulator.region,
            log_stream=f"{datetime.now(UTC):%Y/%m/%d}/[{config.version}]{self.id}",
        )
        try:
            self.runtime: LaunchedRuntime = emulator.launcher.launch(spec)
        except BaseException:
            self.server.stop()
            raise
        threading.Thread(target=self._read, name=f"lambda-log-{self.id}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"lambda-exit-{self.id}", daemon=True).start()

    def _read(self) -> None:
        for chunk in self.runtime.output():
            self.log.feed(chunk)
        self.log.close()

    def _watch(self) -> None:
        """Turn the runtime's exit into an immediate Runtime.ExitError for whoever waits on it."""
        ended = self.runtime.wait()
        self.server.runtime_exited(ended.reason, ended.error_type)

    @property
    def alive(self) -> bool:
        return self.server.exit_reason is None and self.server.init_error is None

    def stop(self) -> None:
        self.runtime.kill()
        self.server.stop()

    def run(
        self, payload: bytes, request_id: str, *, tail: bool, init_timeout_s: float
    ) -> tuple[EmulatorInvocation, bool]:
        """One invocation; returns it and whether the environment may serve another."""
        config = self.config
        cold = self.invocations == 0
        self.invocations += 1
        mark, init_ms, init_lines = self.log.mark(), None, []
        if cold:
            settled = self.server.wait_ready(init_timeout_s + config.timeout_s)
            init_ms = ((self.server.ready_at or time.perf_counter()) - self.started) * 1000
            mark = self.log.mark()
            init_lines = self.log.since(0)
            if not settled:
                return self._timed_out(request_id, init_ms, init_lines, tail, mark), False
        dispatched = time.perf_counter()
        try:
            result = self.server.invoke(payload, timeout=config.timeout_s, request_id=request_id)
        except TimeoutError:
            return self._timed_out(request_id, init_ms, init_lines, tail, mark), False
        if result.source == "exit" and not result.dispatched and not cold:
            raise _Stale  # it died while idle (killed, OOM): the event goes to a fresh environment
        keep = result.source == "runtime"
        duration = result.duration_ms if keep else (time.perf_counter() - dispatched) * 1000
        notes = self._failure_notes(result, init_ms)
        invocation = EmulatorInvocation(
            status=200,
            payload=result.payload,
            request_id=request_id,
            executed_version=config.version,
            function_error="Unhandled" if result.error is not None else None,
            log_result=self._report(request_id, duration, init_ms, init_lines, mark, tail, *notes),
        )
        return invocation, keep

    def _failure_notes(
        self, result: RuntimeApiResult, init_ms: float | None
    ) -> tuple[list[str], list[str], list[str]]:
        """(INIT_REPORT lines, lines inside the invocation, REPORT fields) for an init failure or an exit."""
        error = result.error or {}
        kind = str(error.get("errorType", "Runtime.Unknown"))
        if result.source == "init":
            return (
                [
                    f"INIT_REPORT Init Duration: {init_ms or 0.0:.2f} ms\tPhase: init\tStatus: error\t"
                    f"Error Type: {kind}"
                ],
                [],
                ["Status: error", f"Error Type: {kind}"],
            )
        if result.source == "exit":
            return [], [str(error.get("errorMessage", "")), kind], ["Status: error", f"Error Type: {kind}"]
        return [], [], []

    def _timed_out(
        self, request_id: str, init_ms: float | None, init_lines: list[str], tail: bool, mark: int
    ) -> EmulatorInvocation:
        timeout = self.config.timeout_s
        error = {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
        }
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        log_result = self._report(
            request_id,
            timeout * 1000.0,
            init_ms,
            init_lines,
            mark,
            tail,
            [],
            [f"{stamp} {request_id} Task timed out after {timeout:.2f} seconds"],
            ["Status: timeout"],
        )
        return EmulatorInvocation(
            200, json.dumps(error).encode(), request_id, self.config.version, "Unhandled", log_result
        )

    def _report(
        self,
        request_id: str,
        duration_ms: float,
        init_ms: float | None,
        init_lines: list[str],
        mark: int,
        tail: bool,
        before: list[str],
        inside: list[str],
        status: list[str],
    ) -> str | None:
        """Lambda's log lines for this invocation (to ``log``); with ``tail``, their last 4 KB in base64."""
        if not tail and not self.log.logger.isEnabledFor(logging.INFO):
            return None
        fields = [
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {math.ceil(duration_ms + (init_ms or 0.0))} ms",
            f"Memory Size: {self.config.memory_mb} MB",
            f"Max Memory Used: {self.runtime.max_memory_mb() or 0} MB",
        ]
        if init_ms is not None:
            fields.append(f"Init Duration: {init_ms:.2f} ms")
        report = "\t".join([f"REPORT RequestId: {request_id}", *fields, *status])
        self.log.logger.info("%s", report)
        if not tail:
            return None
        self.log.settle()
        lines = [
            *init_lines,
            *before,
            f"START RequestId: {request_id} Version: {self.config.version}",
            *self.log.since(mark),
            *inside,
            f"END RequestId: {request_id}",
            report,
        ]
        text = ("\n".join(lines) + "\n").encode()
        return base64.b64encode(text[-LOG_TAIL_BYTES:]).decode("ascii")


class _Stale(Exception):
    """A warm environment turned out to be gone before it took the event."""


class _PoolClosed(Exception):
    """The pool's version was replaced (an update of $LATEST) while a caller waited: resolve again."""


class _Pool:
    """The execution environments of one function version."""

    def __init__(self, emulator: LambdaEmulator, config: FunctionConfig) -> None:
        self.emulator = emulator
        self.config = config
        self.cond = threading.Condition()
        self.idle: list[_Environment] = []
        self.all: set[_Environment] = set()
        self.starting = 0
        self.closed = False

    def acquire(self, wait_s: float) -> _Environment:
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                if self.closed:
                    raise _PoolClosed
                while self.idle:
                    env = self.idle.pop()  # the most recently used: the warmest
                    if env.alive:
                        env.busy = True
                        return env
                    self.all.discard(env)
                    threading.Thread(target=env.stop, daemon=True).start()
                if len(self.all) + self.starting < self.emulator.max_concurrency:
                    self.starting += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LambdaError(
                        "TooManyRequestsException",
                        "Rate Exceeded.",
                        429,
                        Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
                    )
                self.cond.wait(remaining)
        try:
            env = _Environment(self.emulator, self.config)
        except Exception as exc:
            log.warning("could not start an environment for %s: %s", self.config.name, exc)
            raise LambdaError(
                "ServiceException", f"could not start an execution environment: {exc}", 500
            ) from None
        finally:
            with self.cond:
                self.starting -= 1
                self.cond.notify()
        with self.cond:
            self.all.add(env)
        self.emulator._count_start(self.config.name)
        return env

    def release(self, env: _Environment, keep: bool) -> None:
        with self.cond:
            env.busy = False
            env.last_used = time.monotonic()
            keep = keep and env.alive and not self.closed
            if keep:
                self.idle.append(env)
            else:
                self.all.discard(env)
            self.cond.notify()
        if not keep:  # in the background: the caller has its answer, and a server stop takes ~0.5 s
            threading.Thread(target=env.stop, name=f"lambda-stop-{env.id}", daemon=True).start()

    def reap(self, idle_s: float) -> list[_Environment]:
        """Take out the environments idle for longer than ``idle_s`` (or dead); the caller stops them."""
        now = time.monotonic()
        with self.cond:
            old = [e for e in self.idle if now - e.last_used > idle_s or not e.alive]
            for env in old:
                self.idle.remove(env)
                self.all.discard(env)
        return old

    def close(self, *, force: bool = False) -> None:
        """No more invocations: idle environments stop now, busy ones when released (or now, ``force``)."""
        with self.cond:
            self.closed = True
            stopping = list(self.idle) + ([e for e in self.all if e.busy] if force else [])
            self.idle.clear()
            for env in stopping:
                self.all.discard(env)
            self.cond.notify_all()
        for env in stopping:
            env.stop()

    def info(self) -> list[EnvironmentInfo]:
        with self.cond:
            environments = [(e, e.busy, e.invocations) for e in self.all]
        # a container's pid may take an engine call: not under the pool's lock
        return [EnvironmentInfo(e.id, self.config.version, b, n, e.runtime.pid) for e, b, n in environments]


# --------------------------------------------------------------------------- the emulator


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
        self._functions: dict[str, _Function] = {}
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="lambda-reaper", daemon=True)
        self._reaper.start()

    # ----------------------------------------------------------------------- names

    def arn(self, name: str, qualifier: str | None = None) -> str:
        base = f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"
        return f"{base}:{qualifier}" if qualifier else base

    @staticmethod
    def split_name(function_name: str, qualifier: str | None = None) -> tuple[str, str | None]:
        """A name, a partial or full ARN, or ``name:qualifier`` -> (name, qualifier)."""
        match = _NAME.fullmatch(function_name or "")
        if match is None:
            raise LambdaError(
                "ValidationException",
                f"1 validation error detected: Value '{function_name}' at 'functionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern",
            )
        derived = match["qualifier"]
        if qualifier and derived and qualifier != derived:
            raise _invalid(
                "The derived qualifier from the function name does not match the specified qualifier."
            )
        return match["name"], qualifier or derived

    def _function(self, name: str) -> _Function:
        fn = self._functions.get(name)
        if fn is None:
            raise LambdaError("ResourceNotFoundException", f"Function not found: {self.arn(name)}", 404)
        return fn

    def _config(self, fn: _Function, qualifier: str | None) -> FunctionConfig:
        if qualifier in (None, "", LATEST):
            return fn.latest
        version = fn.aliases[qualifier].version if qualifier in fn.aliases else qualifier
        if version == LATEST:
            return fn.latest
        if version not in fn.versions:
            raise LambdaError(
                "ResourceNotFoundException", f"Function not found: {self.arn(fn.latest.name, qualifier)}", 404
            )
        return fn.versions[version]

    # ----------------------------------------------------------------------- states

    def _state(self, fn: _Function) -> tuple[str, str]:
        if fn.settling is not None and time.monotonic() >= fn.settled_at:
            fn.settling = None
        if fn.settling == "create":
            return "Pending", "InProgress"
        return "Active", "InProgress" if fn.settling == "update" else "Successful"

    def _settle(self, fn: _Function, kind: str) -> None:
        if self.settle_s > 0:
            fn.settling, fn.settled_at = kind, time.monotonic() + self.settle_s

    def _check_idle(self, fn: _Function) -> None:
        state, update = self._state(fn)
        if state == "Pending" or update == "InProgress":
            raise LambdaError(
                "ResourceConflictException",
                "The operation cannot be performed at this time. An update is in progress for resource: "
                + self.arn(fn.latest.name),
                409,
            )

    def _document(self, fn: _Function, config: FunctionConfig) -> dict[str, Any]:
        """Lambda's FunctionConfiguration."""
        latest = config.version == LATEST
        state, update = self._state(fn) if latest else ("Active", "Successful")
        doc: dict[str, Any] = {
            "FunctionName": config.name,
            "FunctionArn": self.arn(config.name, None if latest else config.version),
            "Role": config.role,
            "CodeSize": 0,
            "Description": config.description,
            "Timeout": config.timeout_s,
            "MemorySize": config.memory_mb,
            "LastModified": config.last_modified,
            "CodeSha256": config.code_sha256,
            "Version": config.version,
            "Environment": {"Variables": dict(config.environment)},
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": config.revision_id,
            "State": state,
            "LastUpdateStatus": update,
            "PackageType": "Image",
            "Architectures": list(config.architectures),
            "EphemeralStorage": {"Size": 512},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{config.name}"},
        }
        if state == "Pending":
            doc.update(StateReason="The function is being created.", StateReasonCode="Creating")
        return doc

    # ----------------------------------------------------------------------- control API

    def create_function(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = self.split_name(str(request.get("FunctionName", "")))
        if request.get("PackageType") != "Image":
            raise _invalid("The local Lambda emulator runs container images only: set PackageType to Image.")
        image_uri = str((request.get("Code") or {}).get("ImageUri") or "")
        if not image_uri:
            raise _invalid("Code.ImageUri is required when PackageType is Image.")
        role = str(request.get("Role", ""))
        if not _ROLE.fullmatch(role):
            raise LambdaError("ValidationException", f"Value '{role}' at 'role' failed to satisfy constraint")
        config = self._validated(
            FunctionConfig(
                name=name,
                image_uri=image_uri,
                code_sha256=self._code_sha256(image_uri),
                role=role,
                memory_mb=int(request.get("MemorySize", 128)),
                timeout_s=int(request.get("Timeout", 3)),
                environment=dict((request.get("Environment") or {}).get("Variables") or {}),
                architectures=tuple(request.get("Architectures") or ("x86_64",)),
                description=str(request.get("Description", "")),
            )
        )
        with self._lock:
            if name in self._functions:
                raise LambdaError("ResourceConflictException", f"Function already exist: {name}", 409)
            fn = self._functions[name] = _Function(latest=config, tags=dict(request.get("Tags") or {}))
            if request.get("Publish"):
                self._publish(fn, "")
            self._settle(fn, "create")
            return self._document(fn, config)

    def _code_sha256(self, image_uri: str) -> str:
        try:
            return self.launcher.code_sha256(image_uri)
        except LookupError as exc:
            raise _invalid(
                f"Source image {image_uri} does not exist. Provide a valid source image. ({exc})"
            ) from None

    @staticmethod
    def _validated(config: FunctionConfig) -> FunctionConfig:
        if not 128 <= config.memory_mb <= 10240:
            raise _invalid(f"MemorySize {config.memory_mb} is outside 128..10240 MB.")
        if not 1 <= config.timeout_s <= 900:
            raise _invalid(f"Timeout {config.timeout_s} is outside 1..900 seconds.")
        if len(config.architectures) != 1 or config.architectures[0] not in ("x86_64", "arm64"):
            raise _invalid("Architectures must be one of [x86_64] or [arm64].")
        reserved = sorted(
            k for k in config.environment if k in RESERVED_VARIABLES or k.startswith("AWS_LAMBDA_")
        )
        if reserved:
            raise _invalid(
                "Lambda was unable to configure your environment variables because the environment variables "
                "you have provided contains reserved keys that are currently not supported for modification. "
                f"Reserved keys used in this request: {', '.join(reserved)}"
            )
        return config

    def get_function(self, function_name: str, qualifier: str | None = None) -> dict[str, Any]:
        name, qualifier = self.split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            config = self._config(fn, qualifier)
            return {
                "Configuration": self._document(fn, config),
                "Code": {
                    "RepositoryType": "ECR",
                    "ImageUri": config.image_uri,
                    "ResolvedImageUri": f"{config.image_uri.split('@')[0]}@sha256:{config.code_sha256}",
                },
                "Tags": dict(fn.tags),
            }

    def get_function_configuration(self, function_name: str, qualifier: str | None = None) -> dict[str, Any]:
        name, qualifier = self.split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            return self._document(fn, self._config(fn, qualifier))

    def list_functions(self) -> dict[str, Any]:
        with self._lock:
            return {"Functions": [self._document(fn, fn.latest) for fn in self._functions.values()]}

    def update_function_code(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        image_uri = str(request.get("ImageUri") or "")
        if not image_uri:
            raise _invalid("ImageUri is required for an image function.")
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
        if "Environment" in request:
            changes["environment"] = dict((request["Environment"] or {}).get("Variables") or {})
        return self._update(function_name, request, changes, publish=False)

    def _update(
        self, function_name: str, request: Mapping[str, Any], changes: dict[str, Any], *, publish: bool
    ) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            self._check_idle(fn)
            self._check_revision(fn, request.get("RevisionId"))
            if "Architectures" in request:
                changes["architectures"] = tuple(request["Architectures"])
            fn.latest = self._validated(
                replace(fn.latest, **changes, revision_id=str(uuid.uuid4()), last_modified=_now_text())
            )
            pool = self._pools.pop((name, LATEST), None)
            if publish and request.get("Publish"):
                self._publish(fn, "")
            self._settle(fn, "update")
            doc = self._document(fn, fn.latest)
        if pool is not None:
            pool.close()
        return doc

    def _check_revision(self, fn: _Function, revision_id: object) -> None:
        if revision_id and revision_id != fn.latest.revision_id:
            raise LambdaError(
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id. Call the "
                "GetFunction/GetAlias API to retrieve the latest Revision Id",
                412,
            )

    def delete_function(self, function_name: str, qualifier: str | None = None) -> None:
        name, qualifier = self.split_name(function_name, qualifier)
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
        for pool in pools:
            pool.close(force=True)

    def publish_version(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            self._check_idle(fn)
            self._check_revision(fn, request.get("RevisionId"))
            wanted = request.get("CodeSha256")
            if wanted and wanted != fn.latest.code_sha256:
                raise _invalid(
                    f"CodeSHA256 ({wanted}) is different from current CodeSHA256 in $LATEST "
                    f"({fn.latest.code_sha256}). Please try again with the CodeSHA256 in $LATEST."
                )
            return self._document(fn, self._publish(fn, str(request.get("Description", ""))))

    def _publish(self, fn: _Function, description: str) -> FunctionConfig:
        if fn.versions:
            last = fn.versions.get(str(fn.next_version - 1))
            if last is not None and last.content() == fn.latest.content():
                return last  # nothing changed since the last version: Lambda returns that one
        version = str(fn.next_version)
        fn.next_version += 1
        fn.versions[version] = replace(
            fn.latest,
            version=version,
            revision_id=str(uuid.uuid4()),
            description=description or fn.latest.description,
        )
        return fn.versions[version]

    def list_versions(self, function_name: str) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            configs = [fn.latest, *sorted(fn.versions.values(), key=lambda c: int(c.version))]
            return {"Versions": [self._document(fn, c) for c in configs]}

    def _alias_doc(self, name: str, alias: Alias) -> dict[str, Any]:
        return {
            "AliasArn": self.arn(name, alias.name),
            "Name": alias.name,
            "FunctionVersion": alias.version,
            "Description": alias.description,
            "RevisionId": alias.revision_id,
        }

    def create_alias(self, function_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        alias_name = str(request.get("Name", ""))
        if not re.fullmatch(r"(?!^[0-9]+$)[a-zA-Z0-9-_]{1,128}", alias_name):
            raise LambdaError(
                "ValidationException", f"Value '{alias_name}' at 'name' failed to satisfy constraint"
            )
        with self._lock:
            fn = self._function(name)
            version = str(request.get("FunctionVersion", ""))
            self._config(fn, version)  # the version must exist
            if alias_name in fn.aliases:
                raise LambdaError(
                    "ResourceConflictException", f"Alias already exists: {self.arn(name, alias_name)}", 409
                )
            alias = fn.aliases[alias_name] = Alias(alias_name, version, str(request.get("Description", "")))
            return self._alias_doc(name, alias)

    def get_alias(self, function_name: str, alias_name: str) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            return self._alias_doc(name, self._alias(self._function(name), name, alias_name))

    def _alias(self, fn: _Function, name: str, alias_name: str) -> Alias:
        if alias_name not in fn.aliases:
            raise LambdaError(
                "ResourceNotFoundException", f"Cannot find alias arn: {self.arn(name, alias_name)}", 404
            )
        return fn.aliases[alias_name]

    def update_alias(self, function_name: str, alias_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            alias = self._alias(fn, name, alias_name)
            if request.get("RevisionId") and request["RevisionId"] != alias.revision_id:
                raise LambdaError(
                    "PreconditionFailedException", "The Revision Id provided does not match", 412
                )
            version = str(request.get("FunctionVersion") or alias.version)
            self._config(fn, version)
            description = str(request.get("Description", alias.description))
            alias = fn.aliases[alias_name] = Alias(alias_name, version, description)
            return self._alias_doc(name, alias)

    def delete_alias(self, function_name: str, alias_name: str) -> None:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            self._alias(fn, name, alias_name)
            del fn.aliases[alias_name]

    def list_aliases(self, function_name: str) -> dict[str, Any]:
        name, _ = self.split_name(function_name)
        with self._lock:
            fn = self._function(name)
            return {"Aliases": [self._alias_doc(name, a) for a in fn.aliases.values()]}

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
        name, qualifier = self.split_name(function_name, qualifier)
        with self._lock:
            fn = self._function(name)
            config = self._config(fn, qualifier)
            if config.version == LATEST and self._state(fn)[0] == "Pending":
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
            raise _invalid(f"Unknown InvocationType {invocation_type!r}.")
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
            except _PoolClosed:
                continue
            keep = False
            try:
                invocation, keep = env.run(payload, request_id, tail=tail, init_timeout_s=self.init_timeout_s)
                return invocation
            except _Stale:
                continue
            finally:
                pool.release(env, keep)
        raise LambdaError("ServiceException", "no execution environment stayed up for the invocation", 500)

    def _pool(self, config: FunctionConfig) -> _Pool:
        if self._stopping.is_set():
            raise LambdaError("ServiceException", "the Lambda emulator is shutting down", 503)
        with self._lock:
            fn = self._function(config.name)
            current = self._config(fn, config.version)
            key = (config.name, config.version)
            pool = self._pools.get(key)
            if pool is None or pool.config is not current:
                pool = self._pools[key] = _Pool(self, current)
            return pool

    def _count_start(self, name: str) -> None:
        with self._lock:
            if name in self._functions:
                self._functions[name].started += 1

    # ----------------------------------------------------------------------- life cycle

    def environments(self, function_name: str) -> list[EnvironmentInfo]:
        """The function's live execution environments, all versions."""
        name, _ = self.split_name(function_name)
        with self._lock:
            pools = [p for k, p in self._pools.items() if k[0] == name]
        return [info for pool in pools for info in pool.info()]

    def started(self, function_name: str) -> int:
        """How many execution environments were started for the function (cold starts)."""
        name, _ = self.split_name(function_name)
        with self._lock:
            return self._function(name).started

    def _reap(self) -> None:
        while not self._stopping.wait(min(max(self.idle_s / 4, 0.05), 5.0)):
            with self._lock:
                pools = list(self._pools.values())
            for pool in pools:
                for env in pool.reap(self.idle_s):
                    env.stop()

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


def iter_log(log_result: str | None) -> Iterator[str]:
    """The lines of a base64 ``LogResult`` (what ``LogType=Tail`` returns)."""
    if log_result:
        yield from base64.b64decode(log_result).decode(errors="replace").splitlines()
