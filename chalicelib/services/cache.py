"""A small read-through cache with a time to live, per process: what a warm Lambda container keeps.

The invoke path would otherwise read DynamoDB five times per request (key, account, model, version,
grant) before any model runs. Only successful lookups are kept; a failure (a revoked key, a missing
model) is looked up again every time. A change made through this process's services is seen at once
(they clear or re-key their cache); one made elsewhere (another Lambda instance) within ``ttl_s``,
like API Gateway's authorizer cache, only shorter.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self, ttl_s: float, *, max_items: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self.clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The cached value of ``key``, else ``load()`` (kept if it returns; its exception passes)."""
        if self.ttl_s <= 0:
            return load()
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = load()
        with self._lock:
            self._items[key] = (now + self.ttl_s, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
