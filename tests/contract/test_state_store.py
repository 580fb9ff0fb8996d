"""The PostgreSQL state store where it differs from the others. Every engine test
runs on it too (``tests/engine``); these are what only PostgreSQL has: text that
holds U+0000, secrets every process of a schema shares, a checkpoint per scope,
timers per partition, the commit hook, its own migrations, and which failures are
the store's (``StoreUnavailable``: stop, start again from the checkpoint) and which
the event's."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from polku.adapters.memory import MemoryLogReader
from polku.adapters.nats.routing import partition
from polku.adapters.postgres.state_schema import escape, unescape
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.errors import ConfigError, StoreUnavailable
from polku.core.journey_state import JourneyState
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.state import RefusalRecord, StateChanges
from tests.engine.helpers import T0, Clock, event

SALT = bytes(range(32))


def test_it_has_every_method_of_the_sqlite_store_alike() -> None:
    """The processor, ``polku`` commands and the API call the stores alike."""
    for name, method in inspect.getmembers(SqliteStateStore, inspect.isfunction):
        if not name.startswith("_"):
            assert inspect.signature(getattr(PostgresStateStore, name)) == inspect.signature(method), name


@pytest.fixture
def store(postgres_url: str, postgres_schema: str) -> Iterator[PostgresStateStore]:
    opened = PostgresStateStore(postgres_url, schema=postgres_schema)
    yield opened
    opened.close()


# -- U+0000 -------------------------------------------------------------------------


NUL_EVENTS = [
    event("identify", user_id="u\x00a", anonymous_id="a\x01\x00", traits={"email": "p@x.io"}, message_id="m\x00"),
    event("track", user_id="u\x00a", event="Clicked \x00\x01", ts=T0 + 1),
    event("group", user_id="u\x00a", group_id="g\x00", traits={"plan": "pro"}, ts=T0 + 2),
    event("identify", user_id="u\x00b", anonymous_id="a\x01\x00", ts=T0 + 3, message_id="m\x00\x01"),
    event("page", anonymous_id="a\x01", name="Home\x00", ts=T0 + 4),
]
"""Ingest lets U+0000 through in ids, names and messageIds (it checks their length
only: ``polku.core.events._id``)."""


def fold(store: Any) -> dict[str, Any]:
    log = MemoryLogReader({"default": parse_config("identity: {limits: {user_id: 1}}")})
    for item in NUL_EVENTS:
        log.add("default", item)
    Processor(store, log, clock=Clock()).run_until_idle()
    identifiers = ["user_id:u\x00a", "user_id:u\x00b", "anonymous_id:a\x01\x00", "anonymous_id:a\x01", "email:p@x.io"]
    owners = {identifier: store.identifier("default", identifier) for identifier in identifiers}
    customers = sorted({record.customer_id for record in owners.values() if record is not None})
    return {
        "owners": owners,
        "timelines": {customer: store.timeline("default", customer) for customer in customers},
        "members": store.account_members("default", "g\x00"),
        "account": store.account("default", "g\x00"),
        "refusals": [record for _, record in store.refusals("default")],
        "links": store.link_hashes("default", identifiers),
    }


def test_text_holding_nul_round_trips_as_on_sqlite(store: PostgresStateStore, tmp_path: Path) -> None:
    sqlite = SqliteStateStore(tmp_path)
    try:
        sqlite.writer.execute("UPDATE meta SET value = ? WHERE key = 'salt'", (SALT,))
        with store.pool.connection() as connection:
            connection.execute("UPDATE meta SET value = %s WHERE key = 'salt'", (SALT,))
        expected = fold(sqlite)
    finally:
        sqlite.close()
    found = fold(store)
    assert found == expected
    assert found["owners"]["user_id:u\x00a"] is not None and found["members"]
    assert {row.name for rows in found["timelines"].values() for row in rows} >= {"Clicked \x00\x01", "Home\x00"}
    assert [record.message_id for record in found["refusals"]] == ["m\x00\x01"]


@given(st.lists(st.text(alphabet="\x00\x01\x02a\xe9\uffff\U0001f600", max_size=5), max_size=12))
def test_escaped_text_keeps_equality_order_and_prefixes(texts: list[str]) -> None:
    escaped = [escape(text) for text in texts]
    assert not any("\x00" in text for text in escaped)
    assert [unescape(text) for text in escaped] == texts
    for one, other in itertools.product(texts, repeat=2):
        assert (one < other) == (escape(one) < escape(other))
        assert one.startswith(other) == escape(one).startswith(escape(other))


def test_postgresql_orders_the_escaped_text_as_python_orders_the_text(store: PostgresStateStore) -> None:
    texts = ["", "\x00", "a", "a\x00", "a\x00\x00", "a\x00b", "a\x01", "a\x01\x00", "a\x02", "b", "\xe9", "\U0001f600"]
    escaped = [escape(text) for text in reversed(texts)]
    with store.pool.connection() as connection:
        rows = connection.execute('SELECT t FROM unnest(%s::text[]) AS t ORDER BY t COLLATE "C"', (escaped,))
        assert [unescape(row[0]) for row in rows] == sorted(texts)


# -- one schema, many processes ----------------------------------------------------------


def test_processes_opening_a_new_schema_at_once_share_its_secrets(postgres_url: str, postgres_schema: str) -> None:
    with ThreadPoolExecutor(4) as executor:
        stores = list(executor.map(lambda _: PostgresStateStore(postgres_url, schema=postgres_schema), range(4)))
    try:
        assert len({(found.salt(), found.survey_secret(), found.identity_epoch()) for found in stores}) == 1
        assert len(stores[0].salt()) == 32
    finally:
        for found in stores:
            found.close()


def test_each_scope_has_its_own_checkpoint(postgres_url: str, postgres_schema: str) -> None:
    first = PostgresStateStore(postgres_url, schema=postgres_schema, scope="partition-0")
    second = PostgresStateStore(postgres_url, schema=postgres_schema, scope="partition-1", migrate=False)
    try:
        first.commit(StateChanges(checkpoint=5))
        assert (first.checkpoint(), second.checkpoint()) == (5, 0)
        second.commit(StateChanges(checkpoint=3))
        first.commit(StateChanges(checkpoint=7))
        assert (first.checkpoint(), second.checkpoint()) == (7, 3)
    finally:
        first.close()
        second.close()


def test_a_worker_finds_the_timers_of_the_partitions_it_holds(postgres_url: str, postgres_schema: str) -> None:
    holders = [f"c_{number}" for number in range(40)] + ["account:g\x00"]
    owned = {1, 3}
    store = PostgresStateStore(postgres_url, schema=postgres_schema, timer_partitions=4, owned_partitions=lambda: owned)
    every = PostgresStateStore(postgres_url, schema=postgres_schema, timer_partitions=4, migrate=False)
    try:
        store.commit(
            StateChanges(
                checkpoint=1,
                timers={("w", holder): 2000 - number for number, holder in enumerate(holders)},
                journey_states={("w", holder): JourneyState(schedule_due_ms=500) for holder in holders},
            )
        )
        mine = [holder for holder in holders if partition("w", holder, 4) in owned]
        assert 0 < len(mine) < len(holders)
        due = [("w", holder, 2000 - holders.index(holder)) for holder in mine]
        assert store.due_timers(10_000, 100) == sorted(due, key=lambda timer: timer[2])
        assert store.due_timers(1975, 100) == [timer for timer in sorted(due, key=lambda t: t[2]) if timer[2] <= 1975]
        assert sorted(store.journey_holders_due()) == [("w", holder, 500) for holder in sorted(mine)]
        assert len(every.due_timers(10_000, 100)) == len(holders)
        owned.clear()
        assert store.due_timers(10_000, 100) == []
    finally:
        store.close()
        every.close()


# -- the commit and its hook ---------------------------------------------------------


def test_the_hook_runs_in_the_transaction_and_its_failure_rolls_it_back(
    postgres_url: str, postgres_schema: str
) -> None:
    seen: list[Any] = []
    failure = ValueError("the batch may not commit")

    def hook(connection: psycopg.Connection[Any], changes: StateChanges) -> None:
        seen.append(connection.execute("SELECT seq FROM checkpoints").fetchall())
        if changes.checkpoint == 2:
            raise failure

    store = PostgresStateStore(postgres_url, schema=postgres_schema, commit_hook=hook)
    try:
        store.commit(StateChanges(checkpoint=1, failures=[("w", 1, "first")]))
        with pytest.raises(ValueError) as raised:
            store.commit(StateChanges(checkpoint=2, failures=[("w", 2, "second")]))
        assert raised.value is failure
        assert seen == [[(1,)], [(2,)]]  # the hook sees the batch's own writes
        assert store.checkpoint() == 1
        assert store.failures("w") == [{"seq": 1, "error": "first"}]
    finally:
        store.close()


def test_a_connection_lost_while_idle_is_replaced_before_it_is_used(
    store: PostgresStateStore, postgres_url: str
) -> None:
    """After a restart of PostgreSQL (here: its backend terminated) the pool checks a
    connection as it hands it out, so no read fails for it. A connection lost in
    the middle of a commit is the store's failure: the next test."""
    with store.pool.connection() as connection:
        pid = connection.info.backend_pid
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.checkpoint() == 0
    with store.pool.connection() as connection:
        assert connection.info.backend_pid != pid


def test_the_processor_stops_on_a_failure_of_the_store_and_skips_nothing(
    postgres_url: str, postgres_schema: str
) -> None:
    broken = True

    def hook(connection: psycopg.Connection[Any], changes: StateChanges) -> None:
        if broken:  # the server goes away in the middle of the commit
            connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    store = PostgresStateStore(postgres_url, schema=postgres_schema, commit_hook=hook)
    log = MemoryLogReader()
    log.add("default", event("track", user_id="u1", event="E"))
    log.add("default", event("track", user_id="u1", event="E", ts=T0 + 1))
    try:
        with pytest.raises(StoreUnavailable):
            Processor(store, log, clock=Clock()).step()
        assert store.checkpoint() == 0 and store.failures("default") == []
        broken = False
        assert Processor(store, log, clock=Clock()).run_until_idle() == 2
        profile = store.profile("default", store.redirect("default", _customer(store, "user_id:u1")))
        assert profile is not None and profile.events == 2
    finally:
        store.close()


def _customer(store: PostgresStateStore, identifier: str) -> str:
    record = store.identifier("default", identifier)
    assert record is not None
    return record.customer_id


def test_a_value_postgresql_refuses_is_not_the_stores_failure(store: PostgresStateStore) -> None:
    with pytest.raises(psycopg.DataError) as raised:
        store.commit(StateChanges(checkpoint=1, failures=[("w", 1 << 70, "a seq beyond bigint")]))
    assert not isinstance(raised.value, StoreUnavailable)
    assert store.checkpoint() == 0 and store.failures("w") == []


def test_reset_forgets_the_derived_state_and_keeps_journeys_and_the_salt(store: PostgresStateStore) -> None:
    refusal = RefusalRecord(seq=1, ts_ms=T0, message_id="m1", target="user_id:u", identifier="email:e", reason="r")
    store.commit(
        StateChanges(
            checkpoint=9,
            refusals=[("w", refusal)],
            timers={("w", "c_1"): T0},
            journey_states={("w", "c_1"): JourneyState(schedule_due_ms=T0)},
        )
    )
    salt, epoch = store.salt(), store.identity_epoch()
    store.reset()
    assert store.checkpoint() == 0 and store.refusals("w") == [] and store.due_timers(T0, 10) == []
    assert store.journey_state("w", "c_1") == JourneyState(schedule_due_ms=T0)
    assert store.salt() == salt and store.identity_epoch() != epoch
    store.commit(StateChanges(checkpoint=1, refusals=[("w", refusal)]))
    assert [entry_id for entry_id, _ in store.refusals("w")] == [1]  # ids start over, as in SQLite


# -- migrations ----------------------------------------------------------------------


def test_the_state_migrates_on_a_track_of_its_own(postgres_url: str, postgres_schema: str) -> None:
    with pytest.raises(ConfigError, match="polku db migrate"):
        PostgresStateStore(postgres_url, schema=postgres_schema, migrate=False)
    PostgresStateStore(postgres_url, schema=postgres_schema).close()
    PostgresStateStore(postgres_url, schema=postgres_schema, migrate=False).close()
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        tracks = admin.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (f"{postgres_schema}.state_migrations", f"{postgres_schema}.polku_migrations"),
        ).fetchone()
    assert tracks == (True, False)
