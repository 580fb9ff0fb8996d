"""Outbound connectors: SMTP and webhooks (docs/channels.md). ``build_channel``
makes the connector a workspace's channel configuration names."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

from polku.adapters.channels.base import Channel, DeliveryResult
from polku.adapters.channels.smtp import SmtpChannel
from polku.adapters.channels.webhook import WebhookChannel
from polku.core.channels import ChannelConfig

__all__ = ["Channel", "DeliveryResult", "SmtpChannel", "WebhookChannel", "build_channel"]


def build_channel(
    config: ChannelConfig,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
) -> Channel:
    environ = os.environ if environ is None else environ
    if config.type == "smtp":
        return SmtpChannel(config, environ=environ)
    return WebhookChannel(config, environ=environ, clock=clock)
