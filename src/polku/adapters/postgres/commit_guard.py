"""What a worker's commit checks and records, inside the state store's transaction
(``PostgresStateStore(commit_hook=…)``; docs/scale-out.md).

Under one transaction-scoped advisory lock (commits of the processors are serialized;
their work is not), after step 0:

0. **Index and permanent deduplication** (before the lock: a unique key needs none).
   The applied messages go into the ``events`` table (what ``GET /v1/events`` reads;
   the worker is the indexer). Its ``UNIQUE (workspace, message_id)`` finds a message
   sent again after the stream's duplicate window: stored twice in the stream, it must
   be applied once, so the batch rolls back with ``DuplicateMessages`` and runs again
   without it.
1. **Fencing.** The lease rows of the partitions whose messages the batch applied are
   locked and must still name this worker with the epoch it took them at; otherwise
   ``LeaseLost`` and nothing commits. Their checkpoints move to the batch's last
   sequence in each. The partitions whose timers the batch fired are fenced the same
   way, at the epoch they were held at when the timers were read.
2. **Validation.** Commits of other workers since this worker last looked whose keys
   meet what this batch read or wrote are a ``StateConflict`` (run the batch again).
3. **Record.** This commit's written keys go to ``state_commits``.

``refresh`` (before a batch) returns the keys others committed since the last look,
for the processor to evict from its caches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import psycopg

from polku.adapters.nats.indexer import INSERT_EVENTS, columns, index_row
from polku.engine.shared_state import (
    DuplicateMessages,
    LeaseLost,
    StaleCheckpoint,
    StateConflict,
    cap_checks,
    clashes,
    written_keys,
)
from polku.state import StateChanges

Connection = psycopg.Connection[Any]
Positions = Callable[[int], Mapping[int, tuple[int, int, int]]]
"""The batch's applied messages up to a checkpoint: partition → (last sequence, epoch,
the partition's checkpoint before the batch)."""
Applied = Callable[[int], list[tuple[int, str, bytes]]]
"""The batch's applied messages up to a checkpoint: (sequence, workspace, body)."""

LOCK_PREFIX: Final = "polku commits "


def commit_lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"{LOCK_PREFIX}{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class CommitGuard:
    def __init__(
        self,
        *,
        owner: str,
        stream: str,
        schema: str,
        positions: Positions,
        applied: Applied,
        reads: set[str],
        epochs: Callable[[], Mapping[int, int]] = dict,
    ) -> None:
        self.owner = owner
        self.stream = stream
        self.lock = commit_lock_key(schema)
        self.positions = positions
        self.applied = applied
        self.reads = reads
        self.seen = 0
        """The last commit of the log this worker's caches reflect."""
        self.epochs = epochs
        self._evict: set[str] = set()
        self._seen_after = 0
        self._timer_epochs: dict[int, int] = {}
        self.conflicts = 0

    def start(self, connection: Connection) -> None:
        """Begin with empty caches: everything committed so far is reflected."""
        row = connection.execute("SELECT coalesce(max(id), 0) FROM state_commits").fetchone()
        self.seen = int(row[0]) if row else 0

    def refresh(self, connection: Connection) -> set[str]:
        """The keys other workers committed since the last look (to evict)."""
        keys, newest = self._foreign(connection)
        self.seen = max(self.seen, newest)
        return keys

    def timers_fired(self, partitions: set[int]) -> None:
        """The store's ``on_timers``: the partitions whose timers the batch fires, with
        the epochs this worker holds them at now (checked again at commit)."""
        epochs = self.epochs()
        self._timer_epochs = {p: epochs[p] for p in partitions if p in epochs}
        lost = sorted(partitions - self._timer_epochs.keys())
        if lost:  # given up between the read and now: fence them as lost at commit
            self._timer_epochs.update(dict.fromkeys(lost, -1))

    def hook(self, connection: Connection, changes: StateChanges) -> None:
        # The index before the lock: its unique key needs no lock to catch a repeat,
        # and it is most of the work under the lock otherwise.
        self._index(connection, self.applied(changes.checkpoint))
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock,))
        positions = self.positions(changes.checkpoint)
        # The partitions of the batch's messages and of its timers, locked in one
        # statement (in partition order: two workers never wait on each other in turn).
        # Where both name a partition, the timers' epoch (read earlier) must hold too.
        epochs = {**{p: epoch for p, (_, epoch, _) in positions.items()}, **self._timer_epochs}
        self._check_leases(connection, epochs)
        self._move_checkpoints(connection, positions)
        foreign, newest = self._foreign(connection)
        mine = written_keys(changes) | cap_checks(self.reads)
        clash = clashes(foreign, mine | self.reads)
        if clash:
            self.conflicts += 1
            self.seen = max(self.seen, newest)  # the retry starts from cleared caches
            sample = ", ".join(sorted(clash)[:3])
            raise StateConflict(f"{len(clash)} records were changed by another worker meanwhile ({sample} …)")
        mine_id = 0
        if mine:
            row = connection.execute(
                "INSERT INTO state_commits (id, owner, keys) VALUES (nextval('state_commit_ids'), %s, %s) RETURNING id",
                (self.owner, sorted(mine)),
            ).fetchone()
            mine_id = int(row[0]) if row else 0
        self._evict = foreign
        self._seen_after = max(newest, mine_id)

    def committed(self) -> set[str]:
        """After the commit went through: the keys to evict; the reads start over."""
        self.seen = max(self.seen, self._seen_after)
        evict, self._evict = self._evict, set()
        self.reads.clear()
        self._timer_epochs = {}
        return evict

    def _check_leases(self, connection: Connection, epochs: Mapping[int, int]) -> None:
        """The lease rows of ``epochs``' partitions are locked and must still name this
        worker at those epochs (the messages' and the timers' partitions)."""
        if not epochs:
            return
        partitions = sorted(epochs)
        held = {
            partition: (owner, epoch)
            for partition, owner, epoch in connection.execute(
                "SELECT partition, owner, epoch FROM partition_leases WHERE stream = %s AND partition = ANY(%s) "
                "ORDER BY partition FOR UPDATE",
                (self.stream, partitions),
            )
        }
        lost = [p for p in partitions if held.get(p) != (self.owner, epochs[p])]
        if lost:
            raise LeaseLost(lost)

    def _move_checkpoints(self, connection: Connection, positions: Mapping[int, tuple[int, int, int]]) -> None:
        """``positions``: partition → (last sequence of the batch, epoch, the
        checkpoint the batch started from). Under the lease rows' locks: the
        checkpoints must be where this worker's batch started. Ahead means these
        messages were applied already (a commit whose answer was lost, or a holder
        that read an old checkpoint)."""
        if not positions:
            return
        partitions = sorted(positions)
        stored = dict(
            connection.execute(
                "SELECT partition, seq FROM partition_checkpoints WHERE stream = %s AND partition = ANY(%s)",
                (self.stream, partitions),
            ).fetchall()
        )
        stale = [p for p in partitions if stored.get(p, 0) != positions[p][2]]
        if stale:
            raise StaleCheckpoint(stale)
        connection.execute(
            "INSERT INTO partition_checkpoints (stream, partition, seq) "
            "SELECT %s, * FROM unnest(%s::int[], %s::bigint[]) "
            "ON CONFLICT (stream, partition) DO UPDATE SET seq = excluded.seq",
            (self.stream, partitions, [positions[p][0] for p in partitions]),
        )

    def _index(self, connection: Connection, messages: list[tuple[int, str, bytes]]) -> None:
        rows = []
        for seq, workspace, body in messages:
            try:
                rows.append(index_row(seq, workspace, body))
            except ValueError:  # not an event (the processor recorded its failure)
                continue
        if not rows:
            return
        stored = {seq for (seq,) in connection.execute(INSERT_EVENTS + " RETURNING seq", columns(rows))}
        if len(stored) == len(rows):
            return
        unstored = [row for row in rows if row[0] not in stored]
        earlier = connection.execute(
            "SELECT x.seq FROM unnest(%s::bigint[], %s::text[], %s::bytea[]) AS x (seq, workspace, message_id) "
            "JOIN events e ON e.workspace = x.workspace AND e.message_id = x.message_id WHERE e.seq <> x.seq",
            ([row[0] for row in unstored], [row[1] for row in unstored], [row[2] for row in unstored]),
        ).fetchall()
        # The same sequence already there (an indexer beside the workers) is no repeat.
        if earlier:
            raise DuplicateMessages([seq for (seq,) in earlier])

    def _foreign(self, connection: Connection) -> tuple[set[str], int]:
        keys: set[str] = set()
        newest = self.seen
        for commit_id, written in connection.execute(
            "SELECT id, keys FROM state_commits WHERE id > %s AND owner <> %s ORDER BY id", (self.seen, self.owner)
        ):
            keys.update(written)
            newest = max(newest, int(commit_id))
        return keys, newest
