"""A fresh PostgreSQL database for the contract suite: created once per test session,
dropped at its end. Tests that need isolation from each other take a fresh schema in
it (``postgres_schema``). PostgreSQL not answering is a failure, not a skip: the
scale-out adapters are part of the contract."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

ADMIN_URL = os.environ.get("POLKU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""A superuser connection to the server the tests create their databases on."""
START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


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
