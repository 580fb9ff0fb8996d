"""E-mail over SMTP (aiosmtplib): connections kept open and reused (one per
concurrent delivery; a handshake and a login cost more than the message on a
nearby relay), a deterministic ``Message-ID`` and an ``X-Polku-Key`` header, so a
message sent twice (the one crash window of docs/channels.md) is recognisably the
same message."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from polku.adapters.channels.base import DeliveryResult
from polku.core.attributes import parse_duration
from polku.core.channels import ChannelConfig, OutboundMessage


def message_id(key: str) -> str:
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@polku>"


def build_email(sender: str, message: OutboundMessage) -> EmailMessage:
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to or ""
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(message.created_ms / 1000, usegmt=True)
    email["Message-ID"] = message_id(message.key)
    email["X-Polku-Key"] = message.key
    email.set_content(message.body or "")
    if message.html:
        email.add_alternative(message.html, subtype="html")
    return email


def _permanent(code: int) -> bool:
    return 500 <= code < 600


IDLE_CHECK_S = 5.0
"""A connection idle longer than this is checked with NOOP before it is reused
(relays close idle connections; a message must not be lost to a stale one)."""
MAX_IDLE = 8


class SmtpChannel:
    def __init__(self, config: ChannelConfig, *, environ: Mapping[str, str]) -> None:
        self.config = config
        self.timeout_s = parse_duration(config.timeout, "timeout") / 1000
        self.password: str | None = None
        self.missing_env: str | None = None
        if config.password_env:
            self.password = environ.get(config.password_env)
            if self.password is None:
                self.missing_env = config.password_env
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for client, _ in idle:
            with contextlib.suppress(Exception):
                await client.quit()

    async def _client(self) -> aiosmtplib.SMTP:
        """An open connection: an idle one (checked if it has idled long), or a new one."""
        while self._idle:
            client, since = self._idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - since > IDLE_CHECK_S:
                try:
                    await client.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    client.close()
                    continue
            return client
        config = self.config
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=self.password if config.username else None,
            use_tls=config.tls,
            start_tls=config.starttls,
            timeout=self.timeout_s,
        )
        await client.connect()
        return client

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if not message.to:
            return DeliveryResult.failed("no recipient")
        if self.missing_env is not None:
            return DeliveryResult.retry(f"the environment variable {self.missing_env} (the SMTP password) is not set")
        email = build_email(self.config.sender or "", message)
        client: aiosmtplib.SMTP | None = None
        try:
            client = await self._client()
            _, reply = await client.send_message(email)
        except aiosmtplib.SMTPRecipientsRefused as error:
            self._discard(client)
            codes = [refused.code for refused in error.recipients]
            text = "; ".join(f"{refused.code} {refused.message}" for refused in error.recipients)
            if codes and all(_permanent(code) for code in codes):
                return DeliveryResult.failed(f"recipient refused: {text}", detail=codes)
            return DeliveryResult.retry(f"recipient refused: {text}", detail=codes)
        except aiosmtplib.SMTPResponseException as error:
            self._discard(client)
            text = f"SMTP {error.code}: {error.message}"
            if _permanent(error.code):
                return DeliveryResult.failed(text, detail=error.code)
            return DeliveryResult.retry(text, detail=error.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            self._discard(client)
            return DeliveryResult.retry(f"{type(error).__name__}: {error}")
        self._release(client)
        return DeliveryResult.sent(detail=reply)

    def _release(self, client: aiosmtplib.SMTP | None) -> None:
        if client is None or not client.is_connected:
            return
        if len(self._idle) >= MAX_IDLE:
            client.close()
        else:
            self._idle.append((client, time.monotonic()))

    @staticmethod
    def _discard(client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
