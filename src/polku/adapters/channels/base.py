"""The port every outbound connector implements: ``deliver`` one message, say
whether it went, and if not whether trying again can help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from polku.core.channels import OutboundMessage


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    permanent: bool = False
    """A failure that no retry can fix (a 5xx SMTP reply, a 4xx HTTP answer)."""
    error: str = ""
    detail: Any = None
    """What the receiver said (an SMTP reply, an HTTP status), for the ledger's reader."""
    retry_after_s: float | None = None
    """The receiver asked to wait this long before the next attempt (``Retry-After``)."""

    @classmethod
    def sent(cls, detail: Any = None) -> DeliveryResult:
        return cls(ok=True, detail=detail)

    @classmethod
    def retry(cls, error: str, detail: Any = None, retry_after_s: float | None = None) -> DeliveryResult:
        return cls(ok=False, error=error, detail=detail, retry_after_s=retry_after_s)

    @classmethod
    def failed(cls, error: str, detail: Any = None) -> DeliveryResult:
        return cls(ok=False, permanent=True, error=error, detail=detail)


class Channel(Protocol):
    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        """Never raises for the receiver's or the network's failures: they are results."""
        ...

    async def aclose(self) -> None: ...
