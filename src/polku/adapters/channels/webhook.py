"""JSON over HTTP POST (httpx, one client per channel), signed with HMAC-SHA256
when the channel has a secret, with the message's key as ``Idempotency-Key``.

Signature: ``X-Polku-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``
where ``timestamp`` is ``X-Polku-Timestamp`` (unix seconds), so a receiver can
refuse replays of old requests."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx
import msgspec

from polku.adapters.channels.base import DeliveryResult
from polku.adapters.channels.public_network import DestinationRefused, public_only
from polku.core.attributes import parse_duration
from polku.core.channels import ChannelConfig, OutboundMessage

MAX_RETRY_AFTER_S: Final = 3600.0
RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_encode = msgspec.json.Encoder().encode


def default_document(message: OutboundMessage) -> dict[str, Any]:
    return {
        "key": message.key,
        "customer_id": message.customer_id,
        "journey": message.journey,
        "version": message.version,
        "step": message.step,
        "message": message.message,
        "to": message.to,
        "subject": message.subject,
        "body": message.body,
        "account": message.account,
        "created_ms": message.created_ms,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "").strip()
    if not raw.isdigit():
        return None  # an HTTP date: the channel's own backoff applies
    return min(float(raw), MAX_RETRY_AFTER_S)


class WebhookChannel:
    def __init__(self, config: ChannelConfig, *, environ: Mapping[str, str], clock: Callable[[], int]) -> None:
        self.config = config
        self.clock = clock
        self.secret: str | None = None
        self.missing_env: str | None = None
        if config.secret_env:
            self.secret = environ.get(config.secret_env)
            if self.secret is None:
                self.missing_env = config.secret_env
        timeout = parse_duration(config.timeout, "timeout") / 1000
        limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
        transport = httpx.AsyncHTTPTransport(limits=limits)
        self.client = httpx.AsyncClient(
            timeout=timeout,
            transport=transport if config.allow_private_network else public_only(transport),
            follow_redirects=False,  # a redirect to an inner address would be a way around the check
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if self.missing_env is not None:
            return DeliveryResult.retry(f"the environment variable {self.missing_env} (the signing secret) is not set")
        body = _encode(message.payload if message.payload is not None else default_document(message))
        timestamp = str(self.clock() // 1000)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.key,
            "X-Polku-Timestamp": timestamp,
            **self.config.headers,
        }
        if self.secret is not None:
            headers["X-Polku-Signature"] = signature(self.secret, timestamp, body)
        try:
            response = await self.client.post(self.config.url or "", content=body, headers=headers)
        except DestinationRefused as error:  # not now, not later: the dead letter says why
            return DeliveryResult.failed(str(error))
        except httpx.TimeoutException as error:
            return DeliveryResult.retry(f"timeout: {type(error).__name__}")
        except httpx.HTTPError as error:
            return DeliveryResult.retry(f"{type(error).__name__}: {error}")
        status = response.status_code
        if 200 <= status < 300:
            return DeliveryResult.sent(detail=status)
        error_text = f"HTTP {status}: {response.text[:200]}"
        if status in RETRYABLE_STATUS or status >= 500:
            return DeliveryResult.retry(error_text, detail=status, retry_after_s=retry_after(response))
        return DeliveryResult.failed(error_text, detail=status)
