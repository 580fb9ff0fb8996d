"""A fresh PostgreSQL database for the contract suite: created once per test session,
dropped at its end. Tests that need isolation from each other take a fresh schema in
it (``postgres_schema``), and a fresh NATS JetStream stream (``nats_stream``, deleted
after the test). PostgreSQL or NATS not answering is a failure, not a skip: the
scale-out adapters are part of the contract."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlsplit

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError
from psycopg import sql

ADMIN_URL = os.environ.get("POLKU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A superuser connection to the server the tests create their databases on."""
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
NATS_URL = os.environ.get("POLKU_TEST_NATS_URL", "nats://127.0.0.1:4222")
"""A NATS server with JetStream enabled."""
NATS_START_HINT = "scripts/services (or: nats-server -js -a 127.0.0.1 -p 4222 -sd /var/lib/nats-server)"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        reason = str(error).strip()
    pytest.fail(
        f"PostgreSQL is not reachable at {ADMIN_URL} ({reason}).\n"
        f"Start it with: {START_HINT}\n(or point POLKU_TEST_POSTGRES_URL at a server with trust auth)",
        pytrace=False,
    )


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database ``polku_test_<random>``; its URL. Dropped on exit, with
    any connection still open to it."""
    name = f"polku_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(ADMIN_URL)._replace(path=f"/{name}").geturl()
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of this session's fresh database."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def postgres_schema() -> str:
    """A schema name no other test uses (created by the adapter's migrations)."""
    return f"test_{uuid.uuid4().hex[:12]}"


def nats_reachable() -> str:
    """``NATS_URL``, or the test fails saying how to start NATS."""
    parts = urlsplit(NATS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=5).close()
    except OSError as error:
        pytest.fail(
            f"NATS is not reachable at {NATS_URL} ({error}).\nStart it with: {NATS_START_HINT}\n"
            "(or point POLKU_TEST_NATS_URL at a server with JetStream)",
            pytrace=False,
        )
    return NATS_URL


@asynccontextmanager
async def fresh_stream() -> AsyncIterator[tuple[str, str]]:
    """A stream name and subject prefix no other test uses, ``POLKU_TEST_<hex>`` and
    ``polku_test_<hex>.ev``; the stream (created by the adapter) is deleted on exit."""
    url = nats_reachable()
    token = uuid.uuid4().hex[:12]
    name = f"POLKU_TEST_{token}"
    try:
        yield name, f"polku_test_{token}.ev"
    finally:
        client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            await client.jetstream().delete_stream(name)
        except NotFoundError:
            pass
        finally:
            await client.close()


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    async with fresh_stream() as found:
        yield found
