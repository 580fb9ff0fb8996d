"""Rate limits per key (docs/security.md, "Rate limits"): a token bucket per key —
``rate`` requests a second on average, up to ``burst`` at once — in each server
process. Pure: the clock is given. The buckets are bounded (the least recently
used go first), so a flood of distinct keys cannot grow memory: a forgotten key
starts again with a full bucket, which only ever errs on letting a request through."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

MAX_KEYS: Final = 100_000


class KeyRateLimiter:
    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key → (tokens, when counted)."""

    def admit(self, key: str) -> int:
        """0 if a request of ``key`` may go now (and count it), else the whole seconds
        until it may (for ``Retry-After``)."""
        now = self.clock()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self._store(key, tokens - 1, now)
            return 0
        self._store(key, tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
