"""Deliveries, as a dispatcher's ledger records them (pure data and decisions).

A message the processor put in the outbox becomes a delivery: ``pending`` until a
channel accepted it (``sent``) or it was given up (``dead``). ``settle`` decides what
an attempt's result makes of it, and when a retryable failure is tried again: a
random delay between 0 and ``backoff · 2^(attempts−1)`` (full jitter), capped at an
hour, never sooner than the receiver's ``Retry-After``. The randomness is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from polku.core.attributes import parse_duration
from polku.core.channels import ChannelConfig, OutboundMessage

DeliveryStatus = Literal["pending", "sent", "dead"]
STATUSES: Final[tuple[DeliveryStatus, ...]] = ("pending", "sent", "dead")
Lane = tuple[str, str]
"""(workspace, channel name): deliveries that share a connector and its slots."""
MAX_BACKOFF_MS: Final = 3_600_000


@dataclass(frozen=True)
class Due:
    """A pending delivery taken for an attempt."""

    key: str
    """The message's idempotency key (the ledger's key)."""
    workspace: str
    channel: str
    attempts: int
    """Attempts made before this one."""
    message: OutboundMessage | None
    """``None`` when the message was erased from the outbox meanwhile."""

    @property
    def lane(self) -> Lane:
        return (self.workspace, self.channel)


@dataclass(frozen=True)
class Outcome:
    """What the ledger records after an attempt."""

    status: DeliveryStatus
    attempts: int
    at_ms: int
    error: str | None = None
    next_attempt_ms: int | None = None
    """When a ``pending`` delivery is tried again."""


@dataclass(frozen=True)
class Settled:
    """A delivery that is over (``sent`` or ``dead``) and whose result event may not
    be in the log yet (the dispatcher that recorded it died before writing it)."""

    key: str
    workspace: str
    channel: str
    status: DeliveryStatus
    attempts: int
    error: str | None
    at_ms: int
    message: OutboundMessage | None

    @classmethod
    def from_row(cls, row: Sequence[Any], message: OutboundMessage | None) -> Settled:
        """From a ledger's (key, workspace, channel, status, attempts, last_error,
        updated_ms)."""
        key, workspace, channel, status, attempts, error, at_ms = row
        return cls(str(key), str(workspace), str(channel), status, int(attempts), error, int(at_ms), message)


def backoff_ms(
    config: ChannelConfig, attempts: int, uniform: Callable[[float, float], float], retry_after_s: float | None = None
) -> int:
    """The delay before attempt ``attempts + 1``; ``uniform`` draws the jitter."""
    base = parse_duration(config.backoff, "backoff")
    ceiling = min(MAX_BACKOFF_MS, base * 2 ** min(attempts - 1, 40))
    delay = uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s * 1000)
    return int(min(delay, MAX_BACKOFF_MS))


def settle(
    *,
    ok: bool,
    permanent: bool,
    error: str,
    retry_after_s: float | None,
    config: ChannelConfig | None,
    attempts: int,
    now: int,
    uniform: Callable[[float, float], float],
) -> Outcome:
    """The outcome of attempt number ``attempts`` (counted from 1). Without a
    ``config`` (the channel is not configured) a failure is final."""
    if ok:
        return Outcome("sent", attempts, now)
    max_attempts = config.max_attempts if config is not None else 1
    if permanent or config is None or attempts >= max_attempts:
        return Outcome("dead", attempts, now, error)
    return Outcome("pending", attempts, now, error, now + backoff_ms(config, attempts, uniform, retry_after_s))
