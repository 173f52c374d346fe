"""Execution environments and their pools, one pool per function version.

An environment is one ``RuntimeApiServer`` plus one runtime a launcher started (a container, or a process
when no docker engine answers). It serves one invocation at a time and stays warm for the next; a busy
pool scales out up to its host's ``max_concurrency``, then callers wait a bounded time before
``TooManyRequestsException``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

from chalicelib.local.awslambda.models import (
    LOG_TAIL_BYTES,
    EmulatorInvocation,
    EnvironmentInfo,
    FunctionConfig,
    LambdaError,
)
from chalicelib.local.launchers import LaunchedRuntime, Launcher, LaunchSpec
from chalicelib.local.runtime_api import RuntimeApiResult, RuntimeApiServer

log = logging.getLogger("modelport.local.lambda")


class PoolHost(Protocol):
    """What pools and environments need of the emulator (``LambdaEmulator`` has it)."""

    launcher: Launcher
    region: str
    account_id: str
    max_concurrency: int
    init_timeout_s: float

    def count_start(self, name: str) -> None: ...


class EnvironmentLog:
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


class Environment:
    """One execution environment: a Runtime API server and the runtime a launcher started against it."""

    def __init__(self, emulator: PoolHost, config: FunctionConfig) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.config = config
        self.log = EnvironmentLog(config.name)
        self.invocations = 0
        self.prewarmed = False
        """Initialized before any invocation (provisioned concurrency): its first one is not a cold start."""
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
            ephemeral_mb=config.ephemeral_mb,
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
        cold = self.invocations == 0 and not self.prewarmed
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
            raise Stale  # it died while idle (killed, OOM): the event goes to a fresh environment
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


class Stale(Exception):
    """A warm environment turned out to be gone before it took the event."""


class PoolClosed(Exception):
    """The pool's version was replaced (an update of $LATEST) while a caller waited: resolve again."""


class Pool:
    """The execution environments of one function version."""

    def __init__(self, emulator: PoolHost, config: FunctionConfig) -> None:
        self.emulator = emulator
        self.config = config
        self.cond = threading.Condition()
        self.idle: list[Environment] = []
        self.all: set[Environment] = set()
        self.starting = 0
        self.closed = False
        self.reserved = 0
        """Environments kept initialized (provisioned concurrency): started ahead, never reaped for idling."""
        self.reserve_error: str | None = None

    def acquire(self, wait_s: float) -> Environment:
        deadline = time.monotonic() + wait_s
        with self.cond:
            while True:
                if self.closed:
                    raise PoolClosed
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
            env = Environment(self.emulator, self.config)
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
        self.emulator.count_start(self.config.name)
        return env

    def release(self, env: Environment, keep: bool) -> None:
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

    def provision(self, count: int) -> None:
        """Keep ``count`` environments initialized: the missing ones start now, in the background (and
        again whenever one is lost: ``top_up``, which the emulator's reaper calls)."""
        with self.cond:
            self.reserved, self.reserve_error = count, None
        self.top_up()

    def top_up(self) -> None:
        with self.cond:
            room = self.emulator.max_concurrency - len(self.all) - self.starting
            missing = min(self.reserved - len(self.all) - self.starting, room)
            if self.closed or missing <= 0:
                return
            self.starting += missing
        for _ in range(missing):
            threading.Thread(
                target=self._prewarm, name=f"lambda-prewarm-{self.config.name}", daemon=True
            ).start()

    def _prewarm(self) -> None:
        env: Environment | None = None
        error: str | None = None
        try:
            env = Environment(self.emulator, self.config)
        except Exception as exc:
            error = f"could not start an execution environment: {exc}"
        else:
            if not (env.server.wait_ready(self.emulator.init_timeout_s) and env.alive):
                why = env.server.init_error or env.server.exit_reason or "it did not finish in time"
                error = f"the runtime's init failed: {why}"
        with self.cond:
            self.starting -= 1
            keep = env is not None and error is None and not self.closed
            if env is not None and keep:
                env.busy, env.prewarmed, env.last_used = False, True, time.monotonic()
                self.all.add(env)
                self.idle.append(env)
            self.reserve_error = error or self.reserve_error
            self.cond.notify_all()
        if keep:
            self.emulator.count_start(self.config.name)
        elif env is not None:
            env.stop()

    def available(self) -> int:
        """Initialized environments, up to the reserved count (AvailableProvisionedConcurrentExecutions)."""
        with self.cond:
            ready = sum(1 for e in self.all if e.alive and e.server.ready_at is not None)
            return min(ready, self.reserved)

    def reap(self, idle_s: float) -> list[Environment]:
        """Take out the environments idle for longer than ``idle_s`` (or dead), but none of the reserved
        count; the caller stops them."""
        now = time.monotonic()
        with self.cond:
            dead = [e for e in self.idle if not e.alive]
            spare = max(0, len(self.all) - len(dead) - self.reserved)
            old = dead + [e for e in self.idle if e.alive and now - e.last_used > idle_s][:spare]
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
