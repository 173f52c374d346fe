"""What the invoke path keeps between requests: verified keys and resolved versions, for ``cache_ttl_s``."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from chalicelib.core.errors import Unauthorized
from chalicelib.memory.stores import MemoryAccountStore
from chalicelib.services.accounts import AccountService, generate_key
from chalicelib.services.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Later:
    """Runs the cache's background refreshes when told to."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def __call__(self, work: Any) -> None:
        self.pending.append(work)

    def run(self) -> None:
        while self.pending:
            self.pending.pop(0)()


def test_a_value_is_kept_for_its_ttl_then_refreshed_in_the_background() -> None:
    clock, loads, later = Clock(), Counter[str](), Later()
    cache: TtlCache[str, int] = TtlCache(2.0, clock=clock, spawn=later)

    def load(key: str) -> int:
        loads[key] += 1
        return loads[key]

    assert [cache.get("a", lambda: load("a")) for _ in range(3)] == [1, 1, 1]
    clock.now += 2.5  # expired, within the grace: the old value, and one refresh
    assert [cache.get("a", lambda: load("a")) for _ in range(3)] == [1, 1, 1]
    assert len(later.pending) == 1 and loads["a"] == 1
    later.run()
    assert cache.get("a", lambda: load("a")) == 2
    clock.now += 5.0  # past the grace too: looked up before answering
    assert cache.get("a", lambda: load("a")) == 3 and not later.pending


def test_a_refresh_that_fails_drops_the_entry() -> None:
    clock, later = Clock(), Later()
    cache: TtlCache[str, int] = TtlCache(2.0, clock=clock, spawn=later)
    cache.get("key", lambda: 1)
    clock.now += 2.5

    def revoked() -> int:
        raise LookupError("revoked")

    assert cache.get("key", revoked) == 1
    later.run()
    with pytest.raises(LookupError):
        cache.get("key", revoked)


def test_failures_are_not_kept_and_clear_drops_everything() -> None:
    cache: TtlCache[str, int] = TtlCache(60.0)
    calls = []

    def failing() -> int:
        calls.append(1)
        raise LookupError("gone")

    for _ in range(2):
        with pytest.raises(LookupError):
            cache.get("x", failing)
    assert len(calls) == 2
    assert cache.get("y", lambda: 1) == 1
    cache.clear()
    assert cache.get("y", lambda: 2) == 2


def test_a_ttl_of_zero_keeps_nothing_and_the_size_is_bounded() -> None:
    off: TtlCache[str, int] = TtlCache(0)
    values = iter(range(10))
    assert [off.get("k", lambda: next(values)) for _ in range(3)] == [0, 1, 2]
    small: TtlCache[int, int] = TtlCache(60.0, max_items=3)
    for i in range(5):
        small.get(i, lambda i=i: i)  # type: ignore[misc]
    assert len(small._items) == 3 and list(small._items) == [2, 3, 4]


class CountingStore(MemoryAccountStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get_key(self, key_id: str) -> Any:
        self.reads["key"] += 1
        return super().get_key(key_id)

    def get_account(self, account_id: str) -> Any:
        self.reads["account"] += 1
        return super().get_account(account_id)


def test_a_verified_key_costs_one_lookup_and_a_revocation_here_is_seen_at_once() -> None:
    store = CountingStore()
    service = AccountService(store, lambda: "2026-12-01T00:00:00Z", cache_s=60.0)
    admin_token = generate_key()
    admin = service.bootstrap_admin(admin_token)
    account, token = service.create_account(admin, "alice")
    store.reads.clear()
    for _ in range(5):
        assert service.authenticate(f"Bearer {token}") == account
    assert store.reads == {"key": 1, "account": 1}
    (key,) = service.list_keys(admin, account.account_id)
    service.revoke_key(admin, key.key_id)
    with pytest.raises(Unauthorized):
        service.authenticate(token)


def test_without_a_cache_every_request_reads_the_store() -> None:
    store = CountingStore()
    service = AccountService(store, lambda: "2026-12-01T00:00:00Z")
    admin = service.bootstrap_admin(generate_key())
    _, token = service.create_account(admin, "alice")
    store.reads.clear()
    for _ in range(3):
        service.authenticate(token)
    assert store.reads == {"key": 3, "account": 3}
