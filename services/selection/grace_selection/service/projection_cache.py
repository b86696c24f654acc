"""A small thread-safe LRU of computed maps, so a polling page does not refit PCA every time.

A round is immutable once published, so its map keyed by (job, round, max_points) never goes
stale; the cache only bounds memory. Concurrent requests for the same key compute it once
(single flight): ten browser tabs opening the same round cost one fit, not ten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ProjectionCache(Generic[V]):
    """The `max_entries` most recently used values, each computed at most once per key."""

    def __init__(self, max_entries: int = 8) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._max_entries = max_entries
        self._values: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value of `key`, or `compute()`'s result, stored; errors are not cached."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            # Another thread may have finished the same key while this one waited at the gate.
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    return self._values[key]
            try:
                value = compute()
            except BaseException:
                with self._lock:
                    self._inflight.pop(key, None)
                raise
            # Store and retire the gate under one lock, so no newcomer can slip in between
            # and compute the same key again.
            with self._lock:
                self._inflight.pop(key, None)
                self._values[key] = value
                self._values.move_to_end(key)
                while len(self._values) > self._max_entries:
                    self._values.popitem(last=False)
            return value

    def discard(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every key for which `predicate` is true (e.g. a deleted job's); how many."""
        with self._lock:
            doomed = [key for key in self._values if predicate(key)]
            for key in doomed:
                del self._values[key]
            return len(doomed)
