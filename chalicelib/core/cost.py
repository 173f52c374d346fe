"""What one invocation costs on AWS, from its billed durations: Lambda requests and GB-seconds, and the
Express state machine of a chained pipeline.

Prices are data, us-east-1 on-demand, first tier (the lowest monthly volume), as published on
https://aws.amazon.com/lambda/pricing/ and https://aws.amazon.com/step-functions/pricing/ (read
2026-12-03; they change rarely, but check them before quoting a figure):

- Lambda: $0.20 per 1M requests; duration $0.0000166667 per GB-second on x86_64 and $0.0000133334 on
  arm64. Duration runs "from the time your code begins executing until it returns or otherwise
  terminates, rounded up to the nearest 1 ms", and includes the initialization code of a cold start
  (container images always did; since 2025-08-01 every on-demand function does, ZIP ones too). The
  init and the handler are added before the rounding (a REPORT line's ``Billed Duration`` is
  ``ceil(Init Duration + Duration)``). GB is the configured memory in MB / 1024.
- Step Functions Express: $1.00 per 1M requests (executions); duration $0.06000 per GB-hour for the first
  1,000 GB-hours a month (about $0.0000166667 per GB-second), "rounded up to the nearest 100ms", memory
  "billed in 64-MB chunks", estimated as 50 MB + the definition + the execution's data.
  ``StartSyncExecution`` answers both figures (``billingDetails``); they are used when present.

Not priced here: the free tier, the cheaper tiers past 6 billion GB-s (Lambda) or 1,000 GB-hours
(Express), provisioned concurrency (a function with provisioned environments pays a lower duration rate
plus a charge per hour for each environment kept, not per request), ephemeral storage beyond 512 MB, and
data transfer. Money is integer pico-dollars (1e-12 USD), so sums never drift; each invocation is rounded
to the nearest pico-dollar once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.core.config_file import ModelConfigFile
from chalicelib.core.pipeline import function_memory_mb
from chalicelib.core.wire import runs_of

PICO_PER_USD = 10**12
LAMBDA_REQUEST_PP = 200_000
"""$0.20 per million requests, in pico-dollars per request (the rates are exact integers in pico-dollars,
so a price is integer arithmetic: a few hundred nanoseconds on the hot path)."""
LAMBDA_GB_SECOND_PP = {"x86_64": 16_666_700, "arm64": 13_333_400}
"""$0.0000166667 and $0.0000133334 per GB-second."""
EXPRESS_REQUEST_PP = 1_000_000
"""$1.00 per million executions."""
EXPRESS_GB_HOUR_PP = 60_000_000_000
"""$0.06000 per GB-hour."""
EXPRESS_BILLING_MS = 100
"""Express rounds an execution's duration up to this."""
EXPRESS_MEMORY_CHUNK_MB = 64
EXPRESS_BASE_MB = 50
"""Step Functions' own estimate of an Express execution's memory: 50 MB + definition + data."""


FLOAT_SLACK_MS = 1e-6
"""Sums of float milliseconds carry noise (``0.1 + 0.2``): a nanosecond over a whole ms is not another."""


def _rounded(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up (costs are never negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


def lambda_billed_ms(duration_ms: float, init_ms: float = 0.0) -> int:
    """Lambda's billed duration: the handler (plus the init phase on a cold start), up to the next ms."""
    return max(1, math.ceil(max(0.0, duration_ms) + max(0.0, init_ms) - FLOAT_SLACK_MS))


def lambda_cost_pp(billed_ms: int, memory_mb: int, architecture: str) -> int:
    """One Lambda request of ``billed_ms`` at ``memory_mb``, in pico-dollars."""
    rate = LAMBDA_GB_SECOND_PP.get(architecture)
    if rate is None:
        raise ValueError(f"no Lambda price for architecture {architecture!r}")
    return LAMBDA_REQUEST_PP + _rounded(billed_ms * memory_mb * rate, 1024 * 1000)  # GB = MB / 1024


def express_billed_ms(duration_ms: float) -> int:
    """An Express execution's billed duration: up to the next 100 ms (an execution bills at least 100)."""
    chunks = max(1, math.ceil((max(0.0, duration_ms) - FLOAT_SLACK_MS) / EXPRESS_BILLING_MS))
    return chunks * EXPRESS_BILLING_MS


def express_memory_mb(definition_bytes: int, data_bytes: int) -> int:
    """The memory an Express execution bills, by Step Functions' estimate, in 64 MB chunks."""
    used = EXPRESS_BASE_MB * 1024 * 1024 + definition_bytes + data_bytes
    chunk = EXPRESS_MEMORY_CHUNK_MB * 1024 * 1024
    return math.ceil(used / chunk) * EXPRESS_MEMORY_CHUNK_MB


def express_cost_pp(billed_ms: int, billed_mb: int = EXPRESS_MEMORY_CHUNK_MB) -> int:
    """One Express execution (its request and its duration), in pico-dollars."""
    return EXPRESS_REQUEST_PP + _rounded(billed_ms * billed_mb * EXPRESS_GB_HOUR_PP, 1024 * 3_600_000)


def usd(pico: int) -> str:
    """Pico-dollars as a plain decimal USD string, exact, no exponent: ``2100`` -> ``0.0000000021``."""
    sign, pico = ("-" if pico < 0 else ""), abs(pico)
    whole, frac = divmod(pico, PICO_PER_USD)
    text = f"{whole}.{frac:012d}".rstrip("0").rstrip(".")
    return sign + text


@dataclass(frozen=True)
class FunctionRun:
    """One function's part of an invocation, as the runtime reports it and the control plane prices it."""

    role: str
    duration_ms: float
    init_ms: float = 0.0
    memory_mb: int = 1024
    architecture: str = "x86_64"
    billed_ms: int = field(init=False)
    cost_pp: int = field(init=False)

    def __post_init__(self) -> None:  # priced once: the hot path reads these several times
        billed = lambda_billed_ms(self.duration_ms, self.init_ms)
        object.__setattr__(self, "billed_ms", billed)
        object.__setattr__(self, "cost_pp", lambda_cost_pp(billed, self.memory_mb, self.architecture))


@dataclass(frozen=True)
class ExecutionBill:
    """An Express execution as billed: its rounded duration and memory."""

    billed_ms: int
    billed_mb: int = EXPRESS_MEMORY_CHUNK_MB
    cost_pp: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost_pp", express_cost_pp(self.billed_ms, self.billed_mb))


@dataclass(frozen=True)
class Bill:
    """What one invocation cost: each function run, and the execution when the pipeline is chained."""

    runs: tuple[FunctionRun, ...]
    execution: ExecutionBill | None = None
    estimated: bool = False
    """No run was reported (a runtime older than the report, a function that crashed): the durations
    are the control plane's wall time, an upper bound."""
    billed_ms: int = field(init=False)
    """Lambda's billed milliseconds, summed over the functions (the execution's are separate)."""
    cost_pp: int = field(init=False)

    def __post_init__(self) -> None:
        execution = self.execution.cost_pp if self.execution is not None else 0
        object.__setattr__(self, "billed_ms", sum(run.billed_ms for run in self.runs))
        object.__setattr__(self, "cost_pp", sum(run.cost_pp for run in self.runs) + execution)

    def document(self) -> dict[str, object]:
        """The bill as a response or job document carries it."""
        doc: dict[str, object] = {
            "billed_ms": self.billed_ms,
            "usd": usd(self.cost_pp),
            "pico_usd": self.cost_pp,
        }
        if self.execution is not None:
            doc["execution_billed_ms"] = self.execution.billed_ms
        if self.estimated:
            doc["estimated"] = True
        return doc


def _main_role(manifest: ModelConfigFile) -> str:
    chained = manifest.deployment is not None and manifest.deployment.mode == "chained"
    return "model" if chained else "fused"


def _execution(manifest: ModelConfigFile, reply: Mapping[str, Any], wall_ms: float) -> ExecutionBill | None:
    if manifest.deployment is None or manifest.deployment.mode != "chained":
        return None
    reported = reply.get("execution")
    if isinstance(reported, Mapping):
        billed_ms, billed_mb = reported.get("billed_ms"), reported.get("billed_mb")
        if type(billed_ms) is int and type(billed_mb) is int and billed_ms > 0 and billed_mb > 0:
            return ExecutionBill(billed_ms, billed_mb)
    return ExecutionBill(express_billed_ms(wall_ms))


def bill_for(manifest: ModelConfigFile, reply: Mapping[str, Any], wall_ms: float) -> Bill:
    """The bill of one answered invocation of ``manifest``: the runs its reply reports, each at the memory
    of the function that ran it, and a chain's execution (as reported, else its wall time). A reply
    without runs (a runtime older than them) is billed as one run of the call's wall time, ``estimated``."""
    arch = manifest.environment.architecture
    reported = runs_of(reply)
    runs = tuple(
        FunctionRun(
            run["role"],
            run["ms"],
            run.get("init_ms", 0.0),
            function_memory_mb(manifest, run["role"]),
            arch,
        )
        for run in reported
    )
    if not runs:
        role = _main_role(manifest)
        runs = (FunctionRun(role, wall_ms, 0.0, function_memory_mb(manifest, role), arch),)
    return Bill(runs, _execution(manifest, reply, wall_ms), estimated=not reported)


def failed_bill(manifest: ModelConfigFile, wall_ms: float, *, timed_out: bool) -> Bill:
    """An invocation that answered nothing: a timeout bills the function's whole timeout; a crash is
    billed as its wall time (no run was reported). Both ``estimated``."""
    role = _main_role(manifest)
    ms = manifest.environment.timeout_s * 1000.0 if timed_out else wall_ms
    run = FunctionRun(role, ms, 0.0, function_memory_mb(manifest, role), manifest.environment.architecture)
    return Bill((run,), _execution(manifest, {}, max(wall_ms, ms)), estimated=True)


def server_timing_entries(bill: Bill) -> str:
    """The bill as Server-Timing metrics: ``billed;dur=<Lambda ms>, cost;desc="<USD>"`` (a quoted
    ``desc`` holds the decimal point and digits as browsers parse it)."""
    return f'billed;dur={bill.billed_ms}, cost;desc="{usd(bill.cost_pp)}"'
