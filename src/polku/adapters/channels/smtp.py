"""E-mail over SMTP (aiosmtplib): one connection per message, a deterministic
``Message-ID`` and an ``X-Polku-Key`` header, so a message sent twice (the one
crash window of docs/channels.md) is recognisably the same message."""

from __future__ import annotations

import hashlib
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

    async def aclose(self) -> None:
        return None

    async def deliver(self, message: OutboundMessage) -> DeliveryResult:
        if not message.to:
            return DeliveryResult.failed("no recipient")
        if self.missing_env is not None:
            return DeliveryResult.retry(f"the environment variable {self.missing_env} (the SMTP password) is not set")
        config = self.config
        email = build_email(config.sender or "", message)
        try:
            _, reply = await aiosmtplib.send(
                email,
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=self.password if config.username else None,
                use_tls=config.tls,
                start_tls=config.starttls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refused.code for refused in error.recipients]
            text = "; ".join(f"{refused.code} {refused.message}" for refused in error.recipients)
            if codes and all(_permanent(code) for code in codes):
                return DeliveryResult.failed(f"recipient refused: {text}", detail=codes)
            return DeliveryResult.retry(f"recipient refused: {text}", detail=codes)
        except aiosmtplib.SMTPResponseException as error:
            text = f"SMTP {error.code}: {error.message}"
            if _permanent(error.code):
                return DeliveryResult.failed(text, detail=error.code)
            return DeliveryResult.retry(text, detail=error.code)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return DeliveryResult.retry(f"{type(error).__name__}: {error}")
        return DeliveryResult.sent(detail=reply)
