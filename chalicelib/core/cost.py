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
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

PICO_PER_USD = 10**12
LAMBDA_REQUEST_USD = Decimal("0.20") / 1_000_000
LAMBDA_GB_SECOND_USD = {"x86_64": Decimal("0.0000166667"), "arm64": Decimal("0.0000133334")}
EXPRESS_REQUEST_USD = Decimal("1.00") / 1_000_000
EXPRESS_GB_HOUR_USD = Decimal("0.06000")
EXPRESS_BILLING_MS = 100
"""Express rounds an execution's duration up to this."""
EXPRESS_MEMORY_CHUNK_MB = 64
EXPRESS_BASE_MB = 50
"""Step Functions' own estimate of an Express execution's memory: 50 MB + definition + data."""


def _pico(usd: Fraction) -> int:
    """``usd`` in pico-dollars, rounded half up (costs are never negative)."""
    scaled = usd * PICO_PER_USD
    return (2 * scaled.numerator + scaled.denominator) // (2 * scaled.denominator)


def lambda_billed_ms(duration_ms: float, init_ms: float = 0.0) -> int:
    """Lambda's billed duration: the handler (plus the init phase on a cold start), up to the next ms."""
    return max(1, math.ceil(round(max(0.0, duration_ms) + max(0.0, init_ms), 6)))


def lambda_cost_pp(billed_ms: int, memory_mb: int, architecture: str) -> int:
    """One Lambda request of ``billed_ms`` at ``memory_mb``, in pico-dollars."""
    rate = LAMBDA_GB_SECOND_USD.get(architecture)
    if rate is None:
        raise ValueError(f"no Lambda price for architecture {architecture!r}")
    gb_seconds = Fraction(billed_ms * memory_mb, 1024 * 1000)
    return _pico(Fraction(LAMBDA_REQUEST_USD) + gb_seconds * Fraction(rate))


def express_billed_ms(duration_ms: float) -> int:
    """An Express execution's billed duration: up to the next 100 ms (an execution bills at least 100)."""
    chunks = max(1, math.ceil(round(max(0.0, duration_ms), 6) / EXPRESS_BILLING_MS))
    return chunks * EXPRESS_BILLING_MS


def express_memory_mb(definition_bytes: int, data_bytes: int) -> int:
    """The memory an Express execution bills, by Step Functions' estimate, in 64 MB chunks."""
    used = EXPRESS_BASE_MB * 1024 * 1024 + definition_bytes + data_bytes
    chunk = EXPRESS_MEMORY_CHUNK_MB * 1024 * 1024
    return math.ceil(used / chunk) * EXPRESS_MEMORY_CHUNK_MB


def express_cost_pp(billed_ms: int, billed_mb: int = EXPRESS_MEMORY_CHUNK_MB) -> int:
    """One Express execution (its request and its duration), in pico-dollars."""
    gb_hours = Fraction(billed_ms * billed_mb, 1024 * 3_600_000)
    return _pico(Fraction(EXPRESS_REQUEST_USD) + gb_hours * Fraction(EXPRESS_GB_HOUR_USD))


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

    @property
    def billed_ms(self) -> int:
        return lambda_billed_ms(self.duration_ms, self.init_ms)

    @property
    def cost_pp(self) -> int:
        return lambda_cost_pp(self.billed_ms, self.memory_mb, self.architecture)


@dataclass(frozen=True)
class ExecutionBill:
    """An Express execution as billed: its rounded duration and memory."""

    billed_ms: int
    billed_mb: int = EXPRESS_MEMORY_CHUNK_MB

    @property
    def cost_pp(self) -> int:
        return express_cost_pp(self.billed_ms, self.billed_mb)


@dataclass(frozen=True)
class Bill:
    """What one invocation cost: each function run, and the execution when the pipeline is chained."""

    runs: tuple[FunctionRun, ...]
    execution: ExecutionBill | None = None
    estimated: bool = False
    """No run was reported (a runtime older than the report, a function that crashed): the durations
    are the control plane's wall time, an upper bound."""

    @property
    def billed_ms(self) -> int:
        """Lambda's billed milliseconds, summed over the functions (the execution's are separate)."""
        return sum(run.billed_ms for run in self.runs)

    @property
    def cost_pp(self) -> int:
        execution = self.execution.cost_pp if self.execution is not None else 0
        return sum(run.cost_pp for run in self.runs) + execution

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
