"""What an attempt's result makes of a delivery (``polku.core.deliveries``): pure, so
the randomness is a function the test passes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from polku.core.channels import ChannelConfig
from polku.core.deliveries import MAX_BACKOFF_MS, Outcome, backoff_ms, settle

WEBHOOK = ChannelConfig(type="webhook", url="http://127.0.0.1/hook", backoff="10s", max_attempts=3)


def highest(low: float, high: float) -> float:
    return high


def outcome(attempts: int, *, ok: bool = False, permanent: bool = False, retry_after_s: float | None = None) -> Outcome:
    return settle(
        ok=ok,
        permanent=permanent,
        error="" if ok else "HTTP 503",
        retry_after_s=retry_after_s,
        config=WEBHOOK,
        attempts=attempts,
        now=1_000,
        uniform=highest,
    )


def test_an_attempt_settles_a_delivery() -> None:
    assert outcome(1, ok=True) == Outcome("sent", 1, 1_000)
    assert outcome(1) == Outcome("pending", 1, 1_000, "HTTP 503", 1_000 + 10_000)
    assert outcome(2) == Outcome("pending", 2, 1_000, "HTTP 503", 1_000 + 20_000)  # the ceiling doubles
    assert outcome(3) == Outcome("dead", 3, 1_000, "HTTP 503")  # max_attempts
    assert outcome(1, permanent=True) == Outcome("dead", 1, 1_000, "HTTP 503")
    assert outcome(1, retry_after_s=60).next_attempt_ms == 1_000 + 60_000  # never before Retry-After


def test_without_a_channel_a_failure_is_final() -> None:
    found = settle(
        ok=False,
        permanent=False,
        error="no channel",
        retry_after_s=None,
        config=None,
        attempts=1,
        now=5,
        uniform=highest,
    )
    assert found == Outcome("dead", 1, 5, "no channel")


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0, max_value=1), st.none() | st.floats(0, 1e7))
def test_backoff_stays_within_its_bounds(attempts: int, fraction: float, retry_after_s: float | None) -> None:
    delay = backoff_ms(WEBHOOK, attempts, lambda low, high: low + fraction * (high - low), retry_after_s)
    assert 0 <= delay <= MAX_BACKOFF_MS
    assert delay <= min(MAX_BACKOFF_MS, 10_000 * 2 ** (attempts - 1)) or retry_after_s is not None
    if retry_after_s is not None:
        assert delay >= min(int(retry_after_s * 1000), MAX_BACKOFF_MS)
