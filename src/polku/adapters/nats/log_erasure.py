"""The log stage of an erasure on the scale-out deployment (``polku.core.erasure``):
the person's messages leave the NATS stream (JetStream overwrites a deleted message
with random data), and in PostgreSQL their rows leave the stream's ``events`` index,
the quarantine, the survey answers and the delivery ledger, and their ids the audit
log's paths. Driven by the worker that processed the erasure, from its processor's
thread; the stream is reached on the worker's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import psycopg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from psycopg_pool import ConnectionPool

from polku.adapters.nats.routing import partition, routing_key
from polku.adapters.state_erasure import encode_scope
from polku.core.erasure import ErasureScope, identifier_values, path_forms, quoted_forms, redact_action
from polku.core.events import Event
from polku.core.retention import Retention
from polku.engine.shared_state import person_keys

log = logging.getLogger("polku.erasure")
_decode_event = msgspec.json.Decoder(Event).decode
STREAM_TIMEOUT_S: Final = 120.0
RETENTION_LOCK: Final = 0x706F6C6B75_7265  # "polku" "re": one worker runs retention at a time
ANALYTICS_CONSUMER: Final = "polku-parquet"
"""The name every Parquet consumer's durable starts with (``parquet_feed``)."""


class ScaleLogEraser:
    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        js: JetStreamContext,
        stream: str,
        loop: asyncio.AbstractEventLoop,
        *,
        partitions: int,
    ) -> None:
        self.pool = pool
        self.js = js
        self.stream = stream
        self.loop = loop
        self.partitions = partitions

    def erase(self, scope: ErasureScope) -> dict[str, int]:
        """In an order a crash anywhere can resume from: the person's messages the
        index holds beyond their timeline (one that failed) join the scope in the
        state first; then the messages leave the stream; then, in one transaction, the
        index rows and the rest."""
        workspace = scope.workspace
        named = [*scope.customer_ids, *identifier_values(scope.identifiers)]
        users = [i.partition(":")[2].encode() for i in scope.identifiers if i.startswith("user_id:")]
        anonymous = [i.partition(":")[2].encode() for i in scope.identifiers if i.startswith("anonymous_id:")]
        removed: dict[str, int] = {}
        with self.pool.connection() as connection, connection.transaction():
            found = connection.execute(
                "SELECT seq FROM events WHERE workspace = %s AND seq < %s "
                "AND (user_id = ANY(%s::bytea[]) OR anonymous_id = ANY(%s::bytea[]))",
                (workspace, scope.marker_seq, users, anonymous),
            ).fetchall()
            more = sorted({int(seq) for (seq,) in found} - set(scope.seqs))
            if more:
                # The Parquet consumer erases by the scope's positions: these too.
                scope.seqs = sorted({*scope.seqs, *more})
                connection.execute(
                    "UPDATE erasures SET scope = %s WHERE workspace = %s AND id = %s AND scope IS NOT NULL",
                    (encode_scope(scope), workspace, scope.erasure),
                )
        seqs = [*scope.seqs, scope.marker_seq]
        removed["stream"] = self._from_stream(seqs)
        with self.pool.connection() as connection, connection.transaction():
            removed["events"] = _count(
                connection.execute("DELETE FROM events WHERE workspace = %s AND seq = ANY(%s)", (workspace, seqs))
            )
            removed["quarantine"] = sum(
                _count(
                    connection.execute(
                        "DELETE FROM quarantine WHERE workspace = %s AND strpos(lower(encode(body, 'escape')), %s) > 0",
                        (workspace, needle),
                    )
                )
                for needle in quoted_forms(named)
            )
            removed["survey_answers"] = _count(
                connection.execute(
                    "DELETE FROM survey_answers WHERE workspace = %s AND invitation = ANY(%s)",
                    (workspace, scope.invitations),
                )
            )
            forms = path_forms(named)
            candidates = connection.execute(
                "SELECT id, action FROM audit_log WHERE workspace = %s "
                "AND EXISTS (SELECT 1 FROM unnest(%s::text[]) AS f WHERE strpos(action, f) > 0)",
                (workspace, forms),
            ).fetchall()
            removed["audit_log"] = 0
            for row_id, action in candidates:
                redacted = redact_action(action, set(forms))
                if redacted != action:
                    connection.execute("UPDATE audit_log SET action = %s WHERE id = %s", (redacted, row_id))
                    removed["audit_log"] += 1
            removed["deliveries"] = self._ledger(connection, workspace, scope.customer_ids)
            # The commit log names the keys each commit wrote, for minutes: theirs
            # give way to a stand-in that names no one (``person_keys``).
            keys, stand_in = person_keys(scope)
            removed["state_commits"] = _count(
                connection.execute(
                    "UPDATE state_commits SET keys = ARRAY(SELECT DISTINCT CASE WHEN k = ANY(%s) THEN %s ELSE k END "
                    "FROM unnest(keys) AS k) WHERE keys && %s::text[]",
                    (keys, stand_in, keys),
                )
            )
        return removed

    def expire(self, workspace: str, retention: Retention, now_ms: int, processed_seq: int) -> dict[str, int]:
        """One worker at a time (an advisory lock; the others skip). The index says
        which messages expired; of those, the ones their partition's worker has
        applied (its checkpoint is past them) leave the index and the stream. For a
        default age over the whole stream, NATS's own ``max_age`` is cheaper
        (docs/nats.md)."""
        where = retention.expired_where(
            now_ms, lambda column: column, lambda field, value: value.encode() if field == "name" else value
        )
        removed = {"events": 0, "quarantine": 0, "stream": 0}
        seqs: list[int] = []
        with self.pool.connection() as connection, connection.transaction():
            locked = connection.execute("SELECT pg_try_advisory_xact_lock(%s)", (RETENTION_LOCK,)).fetchone()
            if not locked or not locked[0]:
                return removed
            if where is not None:
                condition, parameters = where
                applied = dict(
                    connection.execute(
                        "SELECT partition, seq FROM partition_checkpoints WHERE stream = %s", (self.stream,)
                    ).fetchall()
                )
                candidates = connection.execute(
                    f"SELECT seq, body FROM events WHERE workspace = %s AND ({condition.replace('?', '%s')})",
                    (workspace, *parameters),
                ).fetchall()
                for seq, body in candidates:
                    key = routing_key(_decode_event(bytes(body)))
                    if seq <= applied.get(partition(workspace, key, self.partitions), 0):
                        seqs.append(int(seq))
                removed["events"] = _count(
                    connection.execute("DELETE FROM events WHERE workspace = %s AND seq = ANY(%s)", (workspace, seqs))
                )
            if retention.quarantine_ms is not None:
                removed["quarantine"] = _count(
                    connection.execute(
                        "DELETE FROM quarantine WHERE workspace = %s AND received_ms < %s",
                        (workspace, now_ms - retention.quarantine_ms),
                    )
                )
        if seqs:
            removed["stream"] = self._from_stream(sorted(seqs))
        return removed

    def analytics_follow(self) -> bool:
        """A Parquet consumer's durable (``polku-parquet…``) on the stream: it stays
        while its process is down, so the stage waits for it to come back."""
        future = asyncio.run_coroutine_threadsafe(self._consumers(), self.loop)
        return any(name.startswith(ANALYTICS_CONSUMER) for name in future.result(timeout=STREAM_TIMEOUT_S))

    async def _consumers(self) -> list[str]:
        return [info.name for info in await self.js.consumers_info(self.stream)]

    def drop(self, late: Sequence[tuple[str, int, str | None]]) -> None:
        seqs = sorted({seq for _, seq, _ in late})
        with self.pool.connection() as connection, connection.transaction():
            for workspace, seq, customer_id in late:
                connection.execute("DELETE FROM events WHERE workspace = %s AND seq = %s", (workspace, seq))
                if customer_id is not None:
                    self._ledger(connection, workspace, [customer_id])
        self._from_stream(seqs)

    @staticmethod
    def _ledger(connection: psycopg.Connection[Any], workspace: str, customer_ids: list[str]) -> int:
        return _count(
            connection.execute(
                "DELETE FROM deliveries WHERE workspace = %s AND customer_id = ANY(%s)", (workspace, customer_ids)
            )
        )

    def _from_stream(self, seqs: list[int]) -> int:
        """Delete (and overwrite) the messages; those gone already are no error."""
        future = asyncio.run_coroutine_threadsafe(self._delete(seqs), self.loop)
        return future.result(timeout=STREAM_TIMEOUT_S)

    async def _delete(self, seqs: list[int]) -> int:
        deleted = 0
        for seq in seqs:
            try:
                deleted += bool(await self.js.delete_msg(self.stream, seq))
            except NotFoundError:
                continue
        return deleted


def _count(cursor: psycopg.Cursor[Any]) -> int:
    return max(cursor.rowcount, 0)
