"""Counting what each account's invocations use, and reading it back (``GET /v1/usage``).

``UsageRecorder`` keeps the counts in process and adds them to the store at most about once a second (or
when ``max_records`` requests are waiting), in the request that crosses the threshold: Lambda freezes a
process between requests, so a background thread would stall with its writes half done. A write that
fails keeps the counts for the next one, and never fails the request. What a process still holds when
it ends is flushed by ``flush`` where there is an end to hook (``atexit`` in ``api/deps.py``); a Lambda
environment is reclaimed without one, so it loses at most the last second of its counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from chalicelib.core.config import SLUG
from chalicelib.core.cost import Bill
from chalicelib.core.errors import Forbidden, InvalidRequest
from chalicelib.core.jsontext import short
from chalicelib.core.ports import Clock, UsageStore
from chalicelib.core.records import Account
from chalicelib.core.usage import UsageDay, bucket_of, summary

log = logging.getLogger("modelport.usage")

Outcome = Literal["ok", "error", "client_error", "rejected"]
MAX_HELD_KEYS = 10_000
"""Keys kept while the store does not answer; past this the oldest counts are dropped (and logged)."""


@dataclass
class _Counts:
    invocations: int = 0
    errors: int = 0
    client_errors: int = 0
    rejected: int = 0
    billed_ms: int = 0
    cost_pp: int = 0
    latency: dict[int, int] = field(default_factory=dict)

    def day(self, account_id: str, model: str, day: str) -> UsageDay:
        return UsageDay(
            account_id=account_id,
            model=model,
            day=day,
            invocations=self.invocations,
            errors=self.errors,
            client_errors=self.client_errors,
            rejected=self.rejected,
            billed_ms=self.billed_ms,
            cost_pp=self.cost_pp,
            latency=dict(self.latency),
        )


class UsageRecorder:
    def __init__(
        self,
        store: UsageStore,
        clock: Clock,
        *,
        max_age_s: float = 1.0,
        max_records: int = 500,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_age_s``: the longest counts wait before a request writes them; ``max_records``: as many
        requests as a buffer holds before one does, however recent."""
        self.store = store
        self.clock = clock
        self.max_age_s = max_age_s
        self.max_records = max_records
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str, str], _Counts] = {}
        self._records = 0
        self._last_flush = monotonic()

    def record(
        self,
        account_id: str,
        model: str,
        outcome: Outcome,
        *,
        bill: Bill | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Count one request of ``account_id`` for ``model``: ``rejected`` ran no function; the others did
        (``bill`` what it cost, ``latency_ms`` the control plane's wall time of the call)."""
        key = (account_id, model, self.clock()[:10])
        with self._lock:
            counts = self._held.setdefault(key, _Counts())
            if outcome == "rejected":
                counts.rejected += 1
            else:
                counts.invocations += 1
                counts.errors += outcome == "error"
                counts.client_errors += outcome == "client_error"
            if bill is not None:
                counts.billed_ms += bill.billed_ms
                counts.cost_pp += bill.cost_pp
            if latency_ms is not None:
                bucket = bucket_of(latency_ms)
                counts.latency[bucket] = counts.latency.get(bucket, 0) + 1
            self._records += 1
            due = self._records >= self.max_records or self.monotonic() - self._last_flush >= self.max_age_s
        if due:
            self.flush()

    def flush(self) -> int:
        """Add what is held to the store now; the number of items written (0 when it did not answer:
        the counts are kept for the next flush)."""
        with self._lock:
            held, self._held, self._records = self._held, {}, 0
            self._last_flush = self.monotonic()
        if not held:
            return 0
        deltas = [counts.day(*key) for key, counts in held.items()]
        try:
            self.store.add(deltas)
        except Exception:  # metering never fails an answered request, whatever the fault
            log.warning("usage of %d keys kept for the next flush", len(deltas), exc_info=True)
            self._keep(held)
            return 0
        return len(deltas)

    def _keep(self, held: dict[tuple[str, str, str], _Counts]) -> None:
        with self._lock:
            for key, counts in held.items():
                mine = self._held.setdefault(key, _Counts())
                for name in ("invocations", "errors", "client_errors", "rejected", "billed_ms", "cost_pp"):
                    setattr(mine, name, getattr(mine, name) + getattr(counts, name))
                for bucket, n in counts.latency.items():
                    mine.latency[bucket] = mine.latency.get(bucket, 0) + n
            while len(self._held) > MAX_HELD_KEYS:
                dropped = next(iter(self._held))
                del self._held[dropped]
                log.error("usage of %s dropped: the store has not answered for too long", dropped)


MAX_DAYS = 366
DEFAULT_DAYS = 30


class UsageService:
    """``GET /v1/usage``: an account's usage per model over a range of UTC days."""

    def __init__(self, store: UsageStore, clock: Clock, recorder: UsageRecorder | None = None) -> None:
        self.store = store
        self.clock = clock
        self.recorder = recorder

    def usage(
        self,
        caller: Account,
        *,
        model: str | None = None,
        first: str | None = None,
        last: str | None = None,
        account: str | None = None,
    ) -> dict[str, Any]:
        """The caller's account's (an admin: ``account``'s) usage per model from ``first`` to ``last``
        (ISO dates, inclusive; default the last 30 days to today), with its total and each day."""
        if account is not None and account != caller.account_id and not caller.is_admin:
            raise Forbidden("only an admin reads another account's usage")
        account_id = account or caller.account_id
        if model is not None and not SLUG.match(model):
            raise InvalidRequest(f"model={short(model)} is not a model name")
        today = date.fromisoformat(self.clock()[:10])
        end = _day(last, "to") if last is not None else today
        start = _day(first, "from") if first is not None else end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise InvalidRequest(f"from={start} is after to={end}")
        if (end - start).days + 1 > MAX_DAYS:
            raise InvalidRequest(f"from={start} to={end} spans more than {MAX_DAYS} days; ask for less")
        if self.recorder is not None:
            self.recorder.flush()  # this process's own counts, before it reads
        days = self.store.query(account_id, start.isoformat(), end.isoformat(), model=model)
        models: dict[str, list[UsageDay]] = {}
        for day in days:
            models.setdefault(day.model, []).append(day)
        return {
            "account": account_id,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "total": summary(days),
            "models": [
                {
                    "model": name,
                    **summary(found),
                    "days": [{"day": d.day, **summary([d])} for d in found],
                }
                for name, found in sorted(models.items())
            ],
        }


def _day(text: str, name: str) -> date:
    """An ISO date (YYYY-MM-DD) from a query parameter; 400 otherwise."""
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{name}={short(text)} is not a date", hint=f"give {name} as YYYY-MM-DD (UTC)"
        ) from None
