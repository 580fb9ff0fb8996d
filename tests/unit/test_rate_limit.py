"""The token bucket per key: a burst, then one request per 1/rate seconds, each key
on its own, memory bounded."""

from __future__ import annotations

import pytest

from polku.core import rate_limit
from polku.core.rate_limit import KeyRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_with_the_wait_to_retry() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(2.0, 5, clock=clock)
    assert [limiter.admit("k") for _ in range(5)] == [0] * 5
    assert limiter.admit("k") == 1  # empty: a token in 0.5 s, said in whole seconds
    clock.now += 0.5
    assert limiter.admit("k") == 0
    assert limiter.admit("k") == 1
    clock.now += 10  # refills to the burst, not beyond
    assert [limiter.admit("k") for _ in range(6)] == [0] * 5 + [1]


def test_keys_have_buckets_of_their_own() -> None:
    limiter = KeyRateLimiter(1.0, 1, clock=Clock())
    assert limiter.admit("a") == 0 and limiter.admit("a") == 1
    assert limiter.admit("b") == 0


def test_a_slow_rate_says_how_long_to_wait() -> None:
    limiter = KeyRateLimiter(0.1, 1, clock=Clock())
    assert limiter.admit("k") == 0
    assert limiter.admit("k") == 10


def test_the_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_KEYS", 3)
    limiter = KeyRateLimiter(1.0, 1, clock=Clock())
    for key in "abcd":
        limiter.admit(key)
    assert len(limiter._buckets) == 3 and "a" not in limiter._buckets  # the least recently used went


def test_a_limiter_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        KeyRateLimiter(0, 1)
    with pytest.raises(ValueError):
        KeyRateLimiter(1, 0)
