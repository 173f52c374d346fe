"""Usage per account, model and UTC day: counters that only ever grow by addition, so any number of API
processes can add theirs to one stored item at once (DynamoDB's ``ADD``) and nothing is read first.

Latency is a histogram of fixed, log-spaced buckets (20 per decade from 0.1 ms to 1,000 s), counted like
the rest, so the p50 and p99 of any set of days or models are read back from summed counts: each within
a bucket's width (about 12 %), reported as the bucket's geometric middle.

What is counted (``docs/usage.md``): ``invocations`` ran a function (billed, whatever they answered);
of those ``errors`` failed on the function's side (5xx, a crash, a timeout) and ``client_errors`` were
answered 4xx by the function; ``rejected`` were refused with a 4xx before any function ran (not billed,
not in ``invocations``). A request for a model the caller cannot see is not counted anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from chalicelib.core.cost import usd
from chalicelib.core.protocol import Frozen

BUCKETS_PER_DECADE = 20
LOWEST_MS = 0.1
BUCKETS = 7 * BUCKETS_PER_DECADE
"""0.1 ms .. 1,000 s; a latency outside falls into the first or the last bucket."""
COUNTERS = ("invocations", "errors", "client_errors", "rejected", "billed_ms", "cost_pp")


def bucket_of(ms: float) -> int:
    """The histogram bucket of a latency of ``ms`` milliseconds."""
    if not ms > LOWEST_MS:  # also NaN
        return 0
    return min(BUCKETS - 1, int(math.log10(ms / LOWEST_MS) * BUCKETS_PER_DECADE))


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The latencies, in ms, bucket ``bucket`` holds: ``[low, high)``."""
    return (
        LOWEST_MS * 10 ** (bucket / BUCKETS_PER_DECADE),
        LOWEST_MS * 10 ** ((bucket + 1) / BUCKETS_PER_DECADE),
    )


def quantile_ms(histogram: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of the latencies ``histogram`` counts; None when it is empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            low, high = bucket_bounds(bucket)
            return round(math.sqrt(low * high), 3)
    raise AssertionError("unreachable: the counts add up to total")


class UsageDay(Frozen):
    """One account's use of one model on one UTC day; also what a process adds to it (a delta)."""

    account_id: str
    model: str
    day: str = Field(description="YYYY-MM-DD, UTC")
    invocations: int = 0
    errors: int = 0
    client_errors: int = 0
    rejected: int = 0
    billed_ms: int = 0
    cost_pp: int = Field(default=0, description="pico-dollars (1e-12 USD)")
    latency: dict[int, int] = Field(default_factory=dict, description="latency bucket -> requests")

    @property
    def key(self) -> tuple[str, str, str]:
        return self.account_id, self.model, self.day

    def plus(self, other: UsageDay) -> UsageDay:
        """This and ``other`` added up (same key, or a summary across keys)."""
        latency = dict(self.latency)
        for bucket, count in other.latency.items():
            latency[bucket] = latency.get(bucket, 0) + count
        sums: dict[str, Any] = {c: getattr(self, c) + getattr(other, c) for c in COUNTERS}
        return self.model_copy(update={**sums, "latency": latency})


def summary(days: Iterable[UsageDay]) -> dict[str, Any]:
    """The counters of ``days`` added up, as ``GET /v1/usage`` shows them (money as text and as an
    integer, latency as p50/p99 of the recorded buckets)."""
    total = UsageDay(account_id="", model="", day="")
    for day in days:
        total = total.plus(day)
    return {
        "invocations": total.invocations,
        "errors": total.errors,
        "client_errors": total.client_errors,
        "rejected": total.rejected,
        "billed_ms": total.billed_ms,
        "cost": {"usd": usd(total.cost_pp), "pico_usd": total.cost_pp},
        "latency_ms": {"p50": quantile_ms(total.latency, 0.5), "p99": quantile_ms(total.latency, 0.99)},
    }
