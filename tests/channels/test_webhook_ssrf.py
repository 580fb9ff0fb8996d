"""Server-side request forgery: a webhook URL is configuration an admin token sets, so
it must not make the server call its own loopback services, the cloud metadata
endpoint or anything else inside its network — at configuration time for address
literals, and at every connection for names (checked on the addresses they resolve
to, connecting to the address checked). ``allow_private_network`` opens it for a
receiver inside your network."""

from __future__ import annotations

import pytest

from polku.adapters.channels import WebhookChannel
from polku.core.channels import ChannelConfig
from polku.core.errors import ConfigError
from polku.core.network import is_public_address, refused_host
from polku.core.workspace import parse_config
from tests.channels.receivers import http_receiver
from tests.channels.test_connectors import NOW_MS, outbound
from tests.conftest import ServerProcess

NOT_PUBLIC = [
    "127.0.0.1",
    "127.3.2.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # the cloud metadata service
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:127.0.0.1",  # IPv4 inside IPv6
    "::ffff:169.254.169.254",
    "ff02::1",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_inner_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888"])
def test_global_addresses_are_public(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:10.0.0.1]/",
        "https://10.0.0.5/",
        "http://0/",
        "http://127.1/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f000001/",
    ],
)
def test_a_webhook_to_an_inner_address_is_refused_at_configuration(url: str) -> None:
    text = f"channels:\n  crm: {{type: webhook, url: '{url}'}}\n"
    with pytest.raises(ConfigError, match="allow_private_network: true") as refused:
        parse_config(text)
    assert refused.value.details["field"] == "channels.crm.url"
    allowed = parse_config(f"channels:\n  crm: {{type: webhook, url: '{url}', allow_private_network: true}}\n")
    assert allowed.channels["crm"].allow_private_network is True


def test_public_names_and_addresses_pass_the_configuration() -> None:
    assert refused_host("https://crm.example.com/polku") is None  # a name: checked at each connection
    assert refused_host("https://93.184.216.34/hook") is None
    parse_config("channels:\n  crm: {type: webhook, url: 'https://crm.example.com/polku'}\n")


@pytest.mark.anyio
async def test_a_name_resolving_to_loopback_is_refused_at_the_connection_and_nothing_is_sent() -> None:
    """``localhost`` stands for any name whose answer is an inner address (or turns
    into one after the configuration was checked: DNS rebinding)."""
    with http_receiver() as receiver:
        url = f"http://localhost:{receiver.port}/hook"
        guarded = WebhookChannel(ChannelConfig(type="webhook", url=url), environ={}, clock=lambda: NOW_MS)
        allowed = WebhookChannel(
            ChannelConfig(type="webhook", url=url, allow_private_network=True), environ={}, clock=lambda: NOW_MS
        )
        try:
            refused = await guarded.deliver(outbound())
            assert not refused.ok and refused.permanent, refused
            assert "not a public address" in refused.error and "allow_private_network" in refused.error
            assert receiver.to("/hook") == []
            assert (await allowed.deliver(outbound())).ok
        finally:
            await guarded.aclose()
            await allowed.aclose()
    assert len(receiver.to("/hook")) == 1


def test_the_server_refuses_an_inner_webhook_with_invalid_config(server: ServerProcess) -> None:
    config = "channels:\n  crm: {type: webhook, url: 'http://169.254.169.254/latest/meta-data/'}\n"
    with server.admin() as admin:
        answer = admin.put("/v1/workspace/config", content=config)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["code"] == "invalid_config" and body["field"] == "channels.crm.url"
    assert "allow_private_network" in body["message"]
