"""The dispatchers' ledger on PostgreSQL (docs/scale-out.md, "Dispatchers"): the
``DeliveryLedger`` that several dispatchers share, over the workers' outbox (the
state's ``messages`` table, in the same schema).

- **Intake.** A message becomes a delivery once: a dispatcher that takes the intake
  row (``FOR UPDATE SKIP LOCKED``: one at a time, the others go on delivering) inserts
  the outbox rows that have no delivery yet, keyed by the message's idempotency key
  (``ON CONFLICT DO NOTHING``). There is no cursor to race for, and none to skip
  with: ids are drawn when a worker inserts a row but become visible when its
  transaction commits, in any order, so "after the last id taken" would miss a row
  whose transaction commits late. What bounds the scan is ``floor``, an id at or
  below which every row is known to be taken, moved in two steps: a round notes the
  highest id visible and every transaction then running in the database (``mark``);
  once none of those is running any more, every row up to that id is visible (or
  was rolled back), and the next round's insert has taken it.
- **Claims.** A due delivery is claimed (``claimed_by``, ``claimed_until``, leased
  for ``claim_s`` by PostgreSQL's clock) with ``FOR UPDATE SKIP LOCKED``, so two
  dispatchers never take the same one. The attempt is counted, and the claim checked
  and extended, in one statement just before the message is sent; the dispatcher
  renews the claims of what it has under way every ``claim_s / 3``. The outcome is
  recorded right after the channel answered; a delivery that will be tried again
  is let go, a settled one stays claimed until its result event is written. The
  claims of a dispatcher that died lapse, and the others take them over.

Keys and ids are copied from ``messages`` as the state's tables hold them (U+0000
escaped: ``state_schema``) and handed back as they were read, never decoded: what
is sent comes from the message's body, which is bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from typing import Any, Final, LiteralString, TypeVar

import msgspec
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from polku.adapters.postgres import schema as runner
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration, check_schema, check_url
from polku.core.channels import OutboundMessage
from polku.core.deliveries import Due, Lane, Outcome, Settled
from polku.core.errors import StoreUnavailable
from polku.core.journey_spec import BUILTIN_CHANNELS

TRACK_TABLE: Final = "delivery_migrations"
CLAIM_S: Final = 30.0
ANNOUNCE_BATCH: Final = 500
_decode_message = msgspec.json.Decoder(OutboundMessage).decode
T = TypeVar("T")
Cursor = psycopg.Cursor[TupleRow]

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "the dispatchers' ledger: deliveries with their claims, and the outbox's intake",
        """
        CREATE TABLE deliveries (
            key TEXT COLLATE "C" PRIMARY KEY,
            message_id BIGINT NOT NULL,
            workspace TEXT COLLATE "C" NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL,
            channel TEXT COLLATE "C" NOT NULL,
            journey TEXT COLLATE "C" NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'dead')),
            attempts INTEGER NOT NULL,
            next_attempt_ms BIGINT NOT NULL,
            last_error TEXT,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            announced BOOLEAN NOT NULL DEFAULT false,
            claimed_by TEXT COLLATE "C",
            claimed_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
        );
        CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE status = 'pending';
        CREATE INDEX deliveries_lane ON deliveries (workspace, channel, next_attempt_ms) WHERE status = 'pending';
        CREATE INDEX deliveries_unannounced ON deliveries (updated_ms) WHERE NOT announced AND status <> 'pending';
        CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
        CREATE INDEX deliveries_customer ON deliveries (workspace, customer_id, created_ms);
        -- One row: every outbox row with an id at or below `floor` is taken; `mark_id`
        -- becomes the floor once none of `mark_transactions` is running.
        CREATE TABLE delivery_intake (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            floor BIGINT NOT NULL,
            mark_id BIGINT,
            mark_transactions TEXT[]
        );
        INSERT INTO delivery_intake (id, floor) VALUES (1, 0);
        """,
    ),
)

_INTAKE: Final = (
    "INSERT INTO deliveries (key, message_id, workspace, customer_id, channel, journey, status, attempts, "
    "next_attempt_ms, created_ms, updated_ms) "
    "SELECT m.key, m.id, m.workspace, m.customer_id, m.channel, m.journey, 'pending', 0, %(now)s, m.created_ms, "
    "%(now)s FROM messages m WHERE m.id > %(floor)s AND m.channel <> ALL(%(builtin)s) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.key = m.key) ORDER BY m.id LIMIT %(limit)s "
    "ON CONFLICT (key) DO NOTHING RETURNING message_id"
)
# Every transaction holds the lock on its own virtual transaction id while it runs
# (whether or not it has written yet): the transactions of this database, but not
# this one's and not autovacuum's.
_RUNNING: Final = (
    "SELECT coalesce(array_agg(l.virtualxid), '{}') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid() "
    "AND a.datname = current_database() AND a.backend_type IS DISTINCT FROM 'autovacuum worker'"
)
_STILL_RUNNING: Final = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'virtualxid' AND granted AND virtualxid = ANY(%s))"
)
_LEASE: Final = "now() + make_interval(secs => %(lease)s)"
_CLAIM: Final = (
    "UPDATE deliveries d SET claimed_by = %(owner)s, claimed_until = " + _LEASE + " "
    "FROM (SELECT key FROM deliveries WHERE status = 'pending' AND workspace = %(workspace)s "
    "AND channel = %(channel)s AND next_attempt_ms <= %(now)s AND claimed_until < now() AND key <> ALL(%(skip)s) "
    "ORDER BY next_attempt_ms LIMIT %(limit)s FOR UPDATE SKIP LOCKED) due WHERE d.key = due.key "
    "RETURNING d.key, d.attempts, d.next_attempt_ms, (SELECT body FROM messages m WHERE m.key = d.key)"
)
_CLAIM_UNANNOUNCED: Final = (
    "UPDATE deliveries d SET claimed_by = %(owner)s, claimed_until = " + _LEASE + " "
    "FROM (SELECT key FROM deliveries WHERE NOT announced AND status <> 'pending' AND claimed_until < now() "
    "AND key <> ALL(%(skip)s) ORDER BY updated_ms LIMIT %(limit)s FOR UPDATE SKIP LOCKED) done "
    "WHERE d.key = done.key RETURNING d.key, d.workspace, d.channel, d.status, d.attempts, d.last_error, "
    "d.updated_ms, (SELECT body FROM messages m WHERE m.key = d.key)"
)
_START_ATTEMPT: Final = (
    "UPDATE deliveries SET attempts = %(attempts)s, claimed_until = " + _LEASE + " "
    "WHERE key = %(key)s AND claimed_by = %(owner)s AND claimed_until > now() AND status = 'pending'"
)
_RETRY: Final = (
    "UPDATE deliveries SET attempts = %(attempts)s, next_attempt_ms = %(next)s, last_error = %(error)s, "
    "updated_ms = %(at)s, claimed_by = NULL, claimed_until = '-infinity' "
    "WHERE key = %(key)s AND claimed_by = %(owner)s AND status = 'pending'"
)
_DEAD: Final = (
    "UPDATE deliveries SET status = 'dead', attempts = %(attempts)s, next_attempt_ms = %(at)s, "
    "last_error = %(error)s, updated_ms = %(at)s, claimed_until = " + _LEASE + " "
    "WHERE key = %(key)s AND claimed_by = %(owner)s AND status = 'pending'"
)
# Sent is the truth whoever holds the claim: the receiver has the message.
_SENT: Final = (
    "UPDATE deliveries SET status = 'sent', attempts = %(attempts)s, next_attempt_ms = %(at)s, last_error = NULL, "
    "updated_ms = %(at)s, claimed_by = %(owner)s, claimed_until = " + _LEASE + " "
    "WHERE key = %(key)s AND status = 'pending'"
)


async def migrate(url: str, *, schema: str = DEFAULT_SCHEMA, allow_destructive: bool = False) -> list[int]:
    """Apply the ledger's pending migrations; the versions applied."""
    return await runner.migrate(
        url, schema=schema, migrations=MIGRATIONS, allow_destructive=allow_destructive, table=TRACK_TABLE
    )


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StoreUnavailable(f"the delivery ledger failed: {reason}") from error


class PostgresDeliveryLedger:
    """``DeliveryLedger`` shared by any number of dispatchers; ``owner`` names this
    one's claims. Synchronous psycopg in threads, like the state store. ``open``
    before use."""

    def __init__(
        self, url: str, *, owner: str, schema: str = DEFAULT_SCHEMA, batch_size: int = 500, claim_s: float = CLAIM_S
    ) -> None:
        self.url = check_url(url)
        self.schema = check_schema(schema)
        self.owner = owner
        self.batch_size = batch_size
        self.claim_s = claim_s
        self.pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=8,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
            name=f"polku-deliveries-{self.schema}",
            open=False,
        )

    async def open(self) -> None:
        with _unavailable():
            await asyncio.to_thread(self.pool.open, True, 30)

    async def close(self) -> None:
        """Let go of every claim (the others may take them at once), then disconnect."""
        try:
            await self._run(
                lambda cursor: cursor.execute(
                    "UPDATE deliveries SET claimed_by = NULL, claimed_until = '-infinity' WHERE claimed_by = %s",
                    (self.owner,),
                )
            )
        except StoreUnavailable:
            pass  # they lapse
        await asyncio.to_thread(self.pool.close)

    async def _run(self, work: Callable[[Cursor], T]) -> T:
        def go() -> T:
            with _unavailable(), self.pool.connection() as connection:
                return work(connection.cursor())

        return await asyncio.to_thread(go)

    # -- intake -------------------------------------------------------------------

    async def take_new(self, now_ms: int) -> int:
        return await self._run(lambda cursor: self._take(cursor, now_ms))

    def _take(self, cursor: Cursor, now_ms: int) -> int:
        with cursor.connection.transaction():
            row = cursor.execute(
                "SELECT floor, mark_id, mark_transactions FROM delivery_intake WHERE id = 1 FOR UPDATE SKIP LOCKED"
            ).fetchone()
            if row is None:  # another dispatcher is taking them now
                return 0
            floor, mark_id, mark_transactions = row
            # Checked before the insert's snapshot is taken: what those transactions
            # committed, the insert sees.
            mark_settled = mark_id is not None and not _scalar(cursor, _STILL_RUNNING, (mark_transactions,))
            taken = [
                int(found[0])
                for found in cursor.execute(
                    _INTAKE,
                    {"now": now_ms, "floor": floor, "builtin": sorted(BUILTIN_CHANNELS), "limit": self.batch_size},
                ).fetchall()
            ]
            if mark_settled or mark_id is None:
                if mark_settled:
                    full = len(taken) >= self.batch_size
                    floor = max(floor, min(mark_id, max(taken)) if full else mark_id)
                mark_id = _scalar(cursor, "SELECT coalesce(max(id), 0) FROM messages", ())
                mark_transactions = _scalar(cursor, _RUNNING, ())
                cursor.execute(
                    "UPDATE delivery_intake SET floor = %s, mark_id = %s, mark_transactions = %s WHERE id = 1",
                    (floor, mark_id, mark_transactions),
                )
        return len(taken)

    # -- claims -------------------------------------------------------------------

    async def due_lanes(self, now_ms: int) -> set[Lane]:
        rows = await self._run(
            lambda cursor: cursor.execute(
                "SELECT DISTINCT workspace, channel FROM deliveries "
                "WHERE status = 'pending' AND next_attempt_ms <= %s AND claimed_until < now()",
                (now_ms,),
            ).fetchall()
        )
        return {(str(workspace), str(channel)) for workspace, channel in rows}

    async def claim(self, lane: Lane, now_ms: int, limit: int, skip: Set[str]) -> list[Due]:
        parameters = {
            "owner": self.owner,
            "lease": self.claim_s,
            "workspace": lane[0],
            "channel": lane[1],
            "now": now_ms,
            "skip": sorted(skip),
            "limit": limit,
        }
        rows = await self._run(lambda cursor: cursor.execute(_CLAIM, parameters).fetchall())
        rows.sort(key=lambda row: (row[2], row[0]))
        return [
            Due(
                key=key,
                workspace=lane[0],
                channel=lane[1],
                attempts=attempts,
                message=_decode_message(bytes(body)) if body is not None else None,
            )
            for key, attempts, _, body in rows
        ]

    async def start_attempt(self, item: Due) -> bool:
        parameters = {"attempts": item.attempts + 1, "lease": self.claim_s, "key": item.key, "owner": self.owner}
        return await self._run(lambda cursor: cursor.execute(_START_ATTEMPT, parameters).rowcount == 1)

    async def keep_claims(self, keys: Set[str]) -> int:
        """Extend the claims on ``keys`` still held; how many were."""
        if not keys:
            return 0
        return await self._run(
            lambda cursor: (
                cursor.execute(
                    "UPDATE deliveries SET claimed_until = now() + make_interval(secs => %s) "
                    "WHERE claimed_by = %s AND key = ANY(%s)",
                    (self.claim_s, self.owner, sorted(keys)),
                ).rowcount
            )
        )

    # -- outcomes -----------------------------------------------------------------

    async def settle(self, item: Due, outcome: Outcome) -> bool:
        statement = {"sent": _SENT, "dead": _DEAD, "pending": _RETRY}[outcome.status]
        parameters = {
            "key": item.key,
            "owner": self.owner,
            "lease": self.claim_s,
            "attempts": outcome.attempts,
            "at": outcome.at_ms,
            "next": outcome.next_attempt_ms,
            "error": outcome.error,
        }
        return await self._run(lambda cursor: cursor.execute(statement, parameters).rowcount == 1)

    async def announced(self, key: str) -> None:
        await self._run(
            lambda cursor: cursor.execute(
                "UPDATE deliveries SET announced = true, claimed_by = NULL, claimed_until = '-infinity' WHERE key = %s",
                (key,),
            )
        )

    async def forget(self, key: str) -> None:
        await self._run(lambda cursor: cursor.execute("DELETE FROM deliveries WHERE key = %s", (key,)))

    async def unannounced(self, skip: Set[str]) -> list[Settled]:
        """Settled deliveries whose result no live dispatcher is writing (their claim
        lapsed), claimed for this one to write."""
        parameters = {"owner": self.owner, "lease": self.claim_s, "skip": sorted(skip), "limit": ANNOUNCE_BATCH}
        rows = await self._run(lambda cursor: cursor.execute(_CLAIM_UNANNOUNCED, parameters).fetchall())
        return [
            Settled.from_row(row[:7], _decode_message(bytes(row[7])) if row[7] is not None else None) for row in rows
        ]

    async def next_due(self, now_ms: int) -> int:
        """Now: other dispatchers take messages in and let deliveries go at any time,
        so each round looks for due ones."""
        return now_ms


def _scalar(cursor: Cursor, query: LiteralString, parameters: Any) -> Any:
    row = cursor.execute(query, parameters).fetchone()
    assert row is not None
    return row[0]
