"""A small read-through cache with a time to live, per process: what a warm Lambda container keeps.

The invoke path would otherwise read DynamoDB five times per request (key, account, model, version,
grant) before any model runs. Only successful lookups are kept; a failure (a revoked key, a missing
model) is looked up again every time. A change made through this process's services is seen at once
(they clear or re-key their cache); one made elsewhere (another Lambda instance) within ``2 * ttl_s``:
for one more ``ttl_s`` after it expires an entry is still answered while one background lookup
refreshes it, so no request pays the reads at each expiry (a p99 tail every ``ttl_s`` otherwise). A
refresh that fails drops the entry, so the next request meets the failure itself.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="cache-refresh", daemon=True).start()


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        ttl_s: float,
        *,
        max_items: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] = _in_thread,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self.clock = clock
        self.spawn = spawn
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._refreshing: set[K] = set()
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The cached value of ``key``, else ``load()`` (kept if it returns; its exception passes)."""
        if self.ttl_s <= 0:
            return load()
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and now < hit[0]:
                return hit[1]
            stale = hit is not None and now < hit[0] + self.ttl_s
            refresh = stale and key not in self._refreshing
            if refresh:
                self._refreshing.add(key)
        if hit is not None and stale:
            if refresh:
                self.spawn(lambda: self._refresh(key, load))
            return hit[1]
        value = load()
        self._put(key, value)
        return value

    def _refresh(self, key: K, load: Callable[[], V]) -> None:
        try:
            value = load()
        except Exception:  # revoked, gone, or the store is down: the next request looks it up itself
            with self._lock:
                self._items.pop(key, None)
                self._refreshing.discard(key)
            return
        self._put(key, value)
        with self._lock:
            self._refreshing.discard(key)

    def _put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = (self.clock() + self.ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
