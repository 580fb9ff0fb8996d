"""The SMTP and webhook connectors against real receivers."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from polku.adapters.channels import SmtpChannel, WebhookChannel
from polku.core.channels import ChannelConfig, OutboundMessage
from tests.channels.receivers import http_receiver, smtp_server
from tests.conftest import free_port

pytestmark = pytest.mark.anyio
NOW_MS = 1_700_000_000_000


def outbound(**fields: object) -> OutboundMessage:
    values: dict[str, object] = {
        "key": "welcome|1|i-1|hello|0",
        "workspace": "default",
        "customer_id": "c-1",
        "channel": "email",
        "purpose": "transactional",
        "journey": "welcome",
        "version": 1,
        "step": "hello",
        "message": "hello",
        "created_ms": NOW_MS,
        "to": "ada@example.com",
        "subject": "Welcome",
        "body": "Hello Ada",
    }
    return OutboundMessage(**(values | fields))  # type: ignore[arg-type]


def smtp_config(port: int, **fields: object) -> ChannelConfig:
    return ChannelConfig(type="smtp", port=port, sender="shop@example.com", timeout="5s", **fields)  # type: ignore[arg-type]


async def test_smtp_delivers_a_message_with_deterministic_headers() -> None:
    with smtp_server() as inbox:
        channel = SmtpChannel(smtp_config(inbox.port), environ={})
        result = await channel.deliver(outbound(html="<p>Hello <b>Ada</b></p>"))
        assert result.ok, result.error
    [received] = inbox.messages
    assert received["From"] == "shop@example.com"
    assert received["To"] == "ada@example.com"
    assert received["Subject"] == "Welcome"
    assert received["X-Polku-Key"] == "welcome|1|i-1|hello|0"
    expected = "<" + hashlib.sha256(b"welcome|1|i-1|hello|0").hexdigest()[:32] + "@polku>"
    assert received["Message-ID"] == expected
    text = received.get_body(preferencelist=("plain",))
    html = received.get_body(preferencelist=("html",))
    assert text is not None and text.get_content().strip() == "Hello Ada"
    assert html is not None and "<b>Ada</b>" in html.get_content()


async def test_smtp_reuses_its_connection_and_drops_one_that_failed() -> None:
    with smtp_server() as inbox:
        channel = SmtpChannel(smtp_config(inbox.port), environ={})
        for _ in range(3):
            assert (await channel.deliver(outbound())).ok
        assert len(inbox.peers) == 3 and len(set(inbox.peers)) == 1  # one handshake for three messages
        inbox.reply = "451 4.3.0 try later"
        assert not (await channel.deliver(outbound())).ok
        inbox.reply = "250 OK"
        assert (await channel.deliver(outbound())).ok
        assert len(set(inbox.peers)) == 2  # the connection that failed was not reused
        await channel.aclose()


async def test_smtp_refusals_and_outages() -> None:
    with smtp_server() as inbox:
        channel = SmtpChannel(smtp_config(inbox.port), environ={})
        no_recipient = await channel.deliver(outbound(to=None))
        assert not no_recipient.ok and no_recipient.permanent and no_recipient.error == "no recipient"
        inbox.reply = "554 5.7.1 rejected"
        refused = await channel.deliver(outbound())
        assert not refused.ok and refused.permanent and "554" in refused.error
        inbox.reply = "451 4.3.0 try later"
        later = await channel.deliver(outbound())
        assert not later.ok and not later.permanent and "451" in later.error
    down = await SmtpChannel(smtp_config(free_port()), environ={}).deliver(outbound())
    assert not down.ok and not down.permanent


async def test_smtp_password_comes_from_the_environment() -> None:
    channel = SmtpChannel(smtp_config(25, username="shop", password_env="SMTP_PASSWORD"), environ={})
    result = await channel.deliver(outbound())
    assert not result.ok and not result.permanent and "SMTP_PASSWORD" in result.error
    assert SmtpChannel(smtp_config(25, password_env="P"), environ={"P": "secret"}).password == "secret"


def webhook_config(url: str, **fields: object) -> ChannelConfig:
    return ChannelConfig(type="webhook", url=url, timeout="5s", allow_private_network=True, **fields)  # type: ignore[arg-type]


async def test_webhook_signs_and_keys_its_requests() -> None:
    with http_receiver() as receiver:
        channel = WebhookChannel(
            webhook_config(receiver.url + "/hook", secret_env="HOOK_SECRET", headers={"X-Tenant": "shop"}),
            environ={"HOOK_SECRET": "s3cret"},
            clock=lambda: NOW_MS,
        )
        try:
            assert (await channel.deliver(outbound())).ok
            assert (await channel.deliver(outbound(key="k2", payload={"custom": [1, 2]}))).ok
        finally:
            await channel.aclose()
    first, second = receiver.to("/hook")
    headers = {name.lower(): value for name, value in first.headers.items()}
    assert headers["idempotency-key"] == "welcome|1|i-1|hello|0"
    assert headers["x-tenant"] == "shop"
    assert headers["content-type"] == "application/json"
    timestamp = headers["x-polku-timestamp"]
    assert timestamp == str(NOW_MS // 1000)
    expected = hmac.new(b"s3cret", f"{timestamp}.".encode() + first.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-polku-signature"], f"sha256={expected}")
    document = json.loads(first.body)
    assert document["key"] == "welcome|1|i-1|hello|0"
    assert document["customer_id"] == "c-1" and document["to"] == "ada@example.com" and document["version"] == 1
    assert json.loads(second.body) == {"custom": [1, 2]}


async def test_webhook_answers_decide_between_retry_and_dead_letter() -> None:
    with http_receiver() as receiver:
        receiver.script = {
            "/e500": [(500, 0, {})],
            "/e429": [(429, 0, {"Retry-After": "7"})],
            "/e400": [(400, 0, {})],
            "/slow": [(200, 1.0, {})],
        }
        results = {}
        for path in ("/e500", "/e429", "/e400"):
            channel = WebhookChannel(webhook_config(receiver.url + path), environ={}, clock=lambda: NOW_MS)
            results[path] = await channel.deliver(outbound())
            await channel.aclose()
        slow = WebhookChannel(webhook_config(receiver.url + "/slow"), environ={}, clock=lambda: NOW_MS)
        slow.client.timeout = httpx.Timeout(0.2)
        results["/slow"] = await slow.deliver(outbound())
        await slow.aclose()
    assert not results["/e500"].ok and not results["/e500"].permanent
    assert not results["/e429"].permanent and results["/e429"].retry_after_s == 7
    assert results["/e400"].permanent and "400" in results["/e400"].error
    assert not results["/slow"].ok and not results["/slow"].permanent and "timeout" in results["/slow"].error
    unreachable = WebhookChannel(webhook_config(f"http://127.0.0.1:{free_port()}/x"), environ={}, clock=lambda: 0)
    down = await unreachable.deliver(outbound())
    await unreachable.aclose()
    assert not down.ok and not down.permanent
