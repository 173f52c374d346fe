"""One contract for the usage store, run against the in-memory twin and the DynamoDB adapter (moto server).

Counters only grow by addition: concurrent writers add without reading, and none of their counts is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from chalicelib.aws.dynamodb import DynamoUsageStore
from chalicelib.core.ports import UsageStore
from chalicelib.core.usage import UsageDay, bucket_of
from chalicelib.memory.stores import MemoryUsageStore


@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.functional)])
def store(request: pytest.FixtureRequest) -> Iterator[UsageStore]:
    if request.param == "memory":
        yield MemoryUsageStore()
        return
    infra = request.getfixturevalue("infra")
    yield DynamoUsageStore(infra.settings.usage_table, infra.client("dynamodb"))


def delta(account: str = "acct-a", model: str = "iris", day: str = "2026-12-01", **counts: int) -> UsageDay:
    return UsageDay(account_id=account, model=model, day=day, **counts)


def test_adding_creates_the_item_then_adds_to_it(store: UsageStore) -> None:
    store.add([delta(invocations=1, billed_ms=3, cost_pp=202_083, latency={bucket_of(2.0): 1})])
    store.add(
        [
            delta(invocations=2, errors=1, billed_ms=10, cost_pp=400_000, latency={bucket_of(2.0): 2, 40: 1}),
            delta(rejected=1),
        ]
    )
    (day,) = store.query("acct-a", "2026-12-01", "2026-12-01")
    assert day == delta(
        invocations=3,
        errors=1,
        rejected=1,
        billed_ms=13,
        cost_pp=602_083,
        latency={bucket_of(2.0): 3, 40: 1},
    )


def test_money_past_a_double_s_precision_is_kept_exactly(store: UsageStore) -> None:
    big = 10**20 + 1  # 100 million dollars and a pico-dollar
    store.add([delta(cost_pp=big), delta(cost_pp=1)])
    assert store.query("acct-a", "2026-12-01", "2026-12-01")[0].cost_pp == big + 1


def test_concurrent_writers_lose_no_count(store: UsageStore) -> None:
    def write() -> None:
        for _ in range(10):
            store.add([delta(invocations=1, cost_pp=7, latency={3: 1})])

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (day,) = store.query("acct-a", "2026-12-01", "2026-12-01")
    assert (day.invocations, day.cost_pp, day.latency) == (40, 280, {3: 40})


def test_a_query_is_one_accounts_days_in_range_sorted_by_day_then_model(store: UsageStore) -> None:
    store.add(
        [
            delta(model="sentiment", day="2026-12-02", invocations=1),
            delta(model="iris", day="2026-12-02", invocations=2),
            delta(model="iris-2", day="2026-12-01", invocations=3),
            delta(model="iris", day="2026-12-01", invocations=4),
            delta(model="iris", day="2026-11-30", invocations=5),
            delta(model="iris", day="2026-12-03", invocations=6),
            delta(account="acct-b", model="iris", day="2026-12-01", invocations=7),
        ]
    )
    got = store.query("acct-a", "2026-12-01", "2026-12-02")
    assert [(d.day, d.model, d.invocations) for d in got] == [
        ("2026-12-01", "iris", 4),
        ("2026-12-01", "iris-2", 3),
        ("2026-12-02", "iris", 2),
        ("2026-12-02", "sentiment", 1),
    ]
    only = store.query("acct-a", "2026-11-01", "2026-12-31", model="iris")
    assert [(d.day, d.invocations) for d in only] == [
        ("2026-11-30", 5),
        ("2026-12-01", 4),
        ("2026-12-02", 2),
        ("2026-12-03", 6),
    ]
    assert [d.invocations for d in store.query("acct-b", "2026-12-01", "2026-12-01")] == [7]
    assert store.query("acct-c", "2026-01-01", "2026-12-31") == []
