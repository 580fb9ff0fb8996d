"""Identity is a function of the set of events: any order of processing gives the
same partition of identifiers, equal to the canonical ``resolve`` and to a replay."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polku.core.events import Event, time_millis
from polku.core.identity import IdentityRules, LinkEvent, event_identifiers, resolve
from polku.core.workspace import parse_config
from polku.engine.worker import forward_outbox, rebuild_state
from tests.engine.helpers import T0, World, event

CONFIG = "identity: {limits: {user_id: 1, anonymous_id: 2, email: 1}, merge_on: [user_id, anonymous_id, email]}"
CONFIGS = [CONFIG, "identity: {limits: {user_id: 1, anonymous_id: 3}}"]

identity_events = st.builds(
    lambda user, anonymous, email, phone, offset, number: event(
        "identify",
        ts=T0 + offset,
        message_id=f"m{number}",
        user_id=user,
        anonymous_id=anonymous or (None if user else "anon-x"),
        traits={k: v for k, v in (("email", email), ("phone", phone)) if v} or None,
    ),
    st.sampled_from([None, "u1", "u2", "u3"]),
    st.sampled_from([None, "a1", "a2", "a3", "a4"]),
    st.sampled_from([None, "e1@x.io", "e2@x.io"]),
    st.sampled_from([None, "+358401111111", "+358402222222"]),
    st.integers(0, 20),
    st.integers(0, 10_000),
)


def unique(events: list[Event]) -> list[Event]:
    return list({item.message_id: item for item in events}.values())


def canonical(events: list[Event], rules: IdentityRules) -> set[frozenset[str]]:
    links = []
    identifiers: set[str] = set()
    for item in events:
        found = event_identifiers(item, rules)
        identifiers.update(found)
        if len(found) > 1:
            links.append(LinkEvent((time_millis(item.timestamp), item.message_id), tuple(found)))
    return {frozenset(group) for group in resolve(identifiers, links, rules).components}


def partition_after(events: list[Event], config: str, batch_size: int) -> set[frozenset[str]]:
    with tempfile.TemporaryDirectory() as directory:
        world = World(Path(directory), config, batch_size=batch_size)
        try:
            world.send(*events)
            world.run()
            return world.partition()
        finally:
            world.close()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(CONFIGS),
    st.lists(identity_events, min_size=1, max_size=14),
    st.randoms(use_true_random=False),
    st.integers(1, 8),
)
def test_any_order_gives_the_canonical_partition(
    config: str, events: list[Event], random: object, batch_size: int
) -> None:
    """The batch size varies too: a batch reads the store through its own pending changes."""
    events = unique(events)
    shuffled = list(events)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    expected = canonical(events, parse_config(config).identity)
    assert partition_after(events, config, batch_size) == expected
    assert partition_after(shuffled, config, batch_size) == expected


def test_rebuild_equals_live(tmp_path: Path) -> None:
    """``polku identity rebuild`` over the real SQLite log replays to the same
    state, including customer ids."""
    import asyncio

    from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
    from polku.adapters.sqlite.log_reader import SqliteLogReader
    from polku.adapters.sqlite.state_store import SqliteStateStore
    from polku.engine.processor import Processor
    from polku.engine.setup import bootstrap
    from polku.ports import AppendBatch
    from tests.engine.helpers import Clock

    events = [
        event("page", anonymous_id="a1", name="Home", ts=T0),
        event("identify", anonymous_id="a1", user_id="alice", traits={"email": "f@x.io"}, ts=T0 + 1),
        event("identify", anonymous_id="a2", user_id="bob", traits={"email": "f@x.io"}, ts=T0 + 2),
        event("track", anonymous_id="a3", event="Viewed", ts=T0 + 3, context={"traits": {"email": "f@x.io"}}),
        event("group", user_id="bob", group_id="acme", traits={"name": "Acme"}, ts=T0 + 4),
        event("identify", anonymous_id="a4", traits={"phone": "+358401111111"}, ts=T0 + 5),
        event("alias", user_id="alice", previous_id="a4", ts=T0 + 6),
    ]

    async def write() -> None:
        catalog = SqliteCatalog(tmp_path)
        await catalog.start()
        await bootstrap(catalog, write_key=None, admin_token=None)
        await catalog.set_config(
            "default", parse_config(CONFIG + "\nsegments: {named: {condition: 'exists(traits.email)'}}")
        )
        await catalog.close()
        log = SqliteEventLog(tmp_path, writer="thread")
        await log.start()
        await log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=events))
        await log.close()

    asyncio.run(write())
    store = SqliteStateStore(tmp_path)
    reader = SqliteLogReader(tmp_path)
    Processor(store, reader, clock=Clock(), batch_size=3).run_until_idle()

    async def forward() -> None:  # what the worker does after each step
        log = SqliteEventLog(tmp_path, writer="thread")
        await log.start()
        assert await forward_outbox(store, log) > 0
        await log.close()

    asyncio.run(forward())
    Processor(store, reader, clock=Clock(), batch_size=3).run_until_idle()

    def snapshot() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], list[tuple[str, ...]]]:
        identifiers = store.connection.execute("SELECT identifier, customer_id FROM identifiers ORDER BY 1").fetchall()
        timeline = store.connection.execute("SELECT customer_id, seq FROM timeline ORDER BY 1, 2").fetchall()
        members = store.connection.execute("SELECT * FROM account_members ORDER BY 1, 2, 3").fetchall()
        return identifiers, timeline, members

    live = snapshot()
    assert len({row[1] for row in live[0]}) >= 2
    internal = store.connection.execute("SELECT count(*) FROM timeline WHERE internal = 1").fetchone()[0]
    assert internal >= 2  # Segment Entered and Customers Merged rows
    store.close()
    reader.close()
    rebuild_state(tmp_path, clock=Clock())
    store = SqliteStateStore(tmp_path)
    try:
        assert snapshot() == live
    finally:
        store.close()
