"""Outbound HTTP that reaches public addresses only (``polku.core.network``): a
network backend for httpx's connection pool that resolves each host itself, refuses
the connection if any address it resolves to is not public, and connects to the
address it checked — so a name that resolves to a public address when checked and
to 127.0.0.1 a moment later (DNS rebinding) cannot slip through between the two."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from polku.core.network import is_public_address


class DestinationRefused(Exception):
    """The destination is not a public address (and the channel does not allow it)."""


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise httpcore.ConnectError(f"{host}: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        refused = [address for address in addresses if not is_public_address(address)]
        if refused or not addresses:
            raise DestinationRefused(
                f"{host} resolves to {', '.join(refused) or 'nothing'}, not a public address: refused "
                "(allow_private_network: true on the channel allows a receiver inside your network)"
            )
        return await self.inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not a webhook destination")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def public_only(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncHTTPTransport:
    """``transport`` with its pool's network backend guarded. httpx builds the
    httpcore pool itself and has no option for its backend, so the pool's is
    wrapped in place (``tests/channels/test_webhook_ssrf.py`` fails if that stops
    working)."""
    pool = transport._pool
    pool._network_backend = PublicOnlyBackend(pool._network_backend)
    return transport
