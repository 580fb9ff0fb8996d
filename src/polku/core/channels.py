"""Outbound channels: how a workspace's journeys reach people (pure data).

A journey names a channel (``email``, ``sms``, ``crm`` …); the workspace's
``channels`` section says which connector delivers it and where. Swapping a
provider is a change here, never in a journey. ``agent_note`` and ``in_app`` are
delivered by polku itself into the customer's state and need no configuration.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError
from polku.core.network import refused_host

CHANNEL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
SENT_EVENT: Final = "Message Sent"
FAILED_EVENT: Final = "Message Failed"
"""Delivery results the dispatcher writes into the log, on the channel's own
``channel`` (``email``, ``sms`` …), so journeys can wait for them."""


class ChannelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["smtp", "webhook"]
    channel: str | None = None
    """The event channel of this channel's delivery results (its name without it)."""
    # smtp
    host: str = "127.0.0.1"
    port: int = 25
    sender: str | None = None
    """The From address of emails."""
    username: str | None = None
    password_env: str | None = None
    """The environment variable holding the SMTP password (never the password itself)."""
    starttls: bool = False
    tls: bool = False
    # webhook
    url: str | None = None
    secret_env: str | None = None
    """The environment variable holding the HMAC-SHA256 signing secret."""
    headers: dict[str, str] = {}
    allow_private_network: bool = False
    """Let the webhook reach loopback, private, link-local and other non-public
    addresses (a receiver inside your network). Off: such destinations are refused,
    at configuration and at every connection (docs/security.md)."""
    # delivery
    timeout: str = "10s"
    max_attempts: int = 8
    backoff: str = "1s"
    """The first retry's delay; each next one doubles it (with jitter), up to 1 h."""
    concurrency: int = 4


class AgentNotes(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    forward_to: str | None = None
    """A webhook channel that receives every agent note too (a contact-center desktop)."""
    keep: int = 50
    """Notes kept per customer (the newest)."""


class OutboundMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message the processor decided to send, as the outbox holds it: rendered,
    addressed, and keyed. ``key`` is deterministic (journey, version, instance,
    step, visit), so a message decided again after a crash is the same message, and
    the dispatcher's ledger and the receiver's idempotency checks drop the repeat."""

    key: str
    workspace: str
    customer_id: str
    channel: str
    purpose: str
    journey: str
    version: int
    step: str
    message: str
    created_ms: int
    to: str | None = None
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    payload: Any = None
    account: str | None = None


def validate_channels(channels: dict[str, ChannelConfig], notes: AgentNotes) -> None:
    from polku.core.journey_spec import BUILTIN_CHANNELS

    for name, config in channels.items():
        where = f"channels.{name}"
        if not CHANNEL_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: {name!r} is not a channel name (lower-case letters, digits, '-', '_')", field=where
            )
        if name in BUILTIN_CHANNELS:
            raise ConfigError(f"{where}: {name!r} is built in; pick another name", field=where)
        if config.type == "smtp" and not config.sender:
            raise ConfigError(f"{where}.sender: an smtp channel needs a From address", field=f"{where}.sender")
        if config.type == "webhook" and not re.match(r"https?://", config.url or ""):
            raise ConfigError(f"{where}.url: a webhook channel needs an http(s) URL", field=f"{where}.url")
        refused = refused_host(config.url or "") if config.type == "webhook" else None
        if refused is not None and not config.allow_private_network:
            raise ConfigError(
                f"{where}.url: {refused}; webhooks reach public addresses only — set "
                f"allow_private_network: true if the receiver is inside your network",
                field=f"{where}.url",
            )
        if not 1 <= config.port <= 65535:
            raise ConfigError(f"{where}.port: must be 1-65535", field=f"{where}.port")
        if not 1 <= config.max_attempts <= 100:
            raise ConfigError(f"{where}.max_attempts: must be 1-100", field=f"{where}.max_attempts")
        if not 1 <= config.concurrency <= 64:
            raise ConfigError(f"{where}.concurrency: must be 1-64", field=f"{where}.concurrency")
        parse_duration(config.timeout, f"{where}.timeout")
        parse_duration(config.backoff, f"{where}.backoff")
        if config.channel is not None and not CHANNEL_NAME.fullmatch(config.channel):
            raise ConfigError(f"{where}.channel: {config.channel!r} is not a channel name", field=f"{where}.channel")
    if notes.forward_to is not None:
        target = channels.get(notes.forward_to)
        if target is None or target.type != "webhook":
            raise ConfigError(
                f"agent_notes.forward_to: {notes.forward_to!r} is not a webhook channel of this workspace",
                field="agent_notes.forward_to",
            )
    if not 1 <= notes.keep <= 1000:
        raise ConfigError("agent_notes.keep: must be 1-1000", field="agent_notes.keep")
