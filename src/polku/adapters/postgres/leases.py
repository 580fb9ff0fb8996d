"""Partition leases in PostgreSQL (docs/scale-out.md, "Workers").

Every live worker registers in ``workers`` and renews its leases every
``RENEW_S``; a lease not renewed for ``LEASE_S`` is free to take. A worker's share is
``ceil(partitions / live workers)``: it releases what it holds beyond its share and
takes free or expired partitions up to it (``FOR UPDATE SKIP LOCKED``, so two workers
never take one partition), each taking moving the lease's ``epoch`` — the fencing
token the commit checks. The clock is PostgreSQL's, so workers' clocks may disagree.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg.rows import TupleRow

LEASE_S: Final = 10.0
RENEW_S: Final = 2.0
FORGET_S: Final = 60.0
"""A worker unseen this long is removed from ``workers`` (and its commit-log horizon with it)."""
COMMIT_LOG_KEEP_S: Final = 300.0

Connection = psycopg.AsyncConnection[TupleRow]


@dataclass(frozen=True)
class Rebalance:
    gained: dict[int, tuple[int, int]]
    """partition → (epoch, checkpoint) newly held."""
    lost: list[int]
    """Partitions no longer held (released, expired or taken)."""


class PartitionLeases:
    def __init__(
        self, url: str, *, schema: str, owner: str, stream: str, partitions: int, role: str = "worker"
    ) -> None:
        self.url = url
        self.schema = schema
        self.owner = owner
        self.stream = stream
        self.partitions = partitions
        self.role = role
        self.held: dict[int, int] = {}
        """partition → epoch, as this worker believes."""
        self.forgotten = False
        """Set when this worker, once registered, was found removed as dead (it
        stalled past ``FORGET_S``): the commit log it needed may be gone, so its
        caches must go too. The caller clears it."""
        self._registered = False
        self.commits_seen: Callable[[], int] | None = None
        """The commit-log position this worker's caches reflect (``CommitGuard.seen``),
        published with each heartbeat: the log is kept from the lowest live one."""

    _connection: Connection | None = None

    @property
    def connection(self) -> Connection:
        assert self._connection is not None, "connect() first"
        return self._connection

    async def connect(self) -> None:
        self._connection = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, options=f"-c search_path={self.schema}"
        )

    async def reconnect(self) -> None:
        """After a failure of the connection (PostgreSQL restarted): a new one, if it can."""
        await self.close()
        try:
            await self.connect()
        except psycopg.OperationalError:
            self._connection = None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def register(self) -> None:
        """Create the partitions' lease rows (once per stream) and this worker's row."""
        async with self.connection.transaction():
            await self.connection.execute(
                "INSERT INTO partition_leases (stream, partition) SELECT %s, generate_series(0, %s - 1) "
                "ON CONFLICT DO NOTHING",
                (self.stream, self.partitions),
            )
            await self._heartbeat()

    async def renew(self) -> list[int]:
        """Extend the leases still ours; the partitions found lost. Safe beside a batch."""
        async with self.connection.transaction():
            await self._heartbeat()
            cursor = await self.connection.execute(
                "UPDATE partition_leases SET expires_at = now() + make_interval(secs => %s) "
                "WHERE stream = %s AND owner = %s RETURNING partition, epoch",
                (LEASE_S, self.stream, self.owner),
            )
            ours = {partition: epoch for partition, epoch in await cursor.fetchall()}
        return [p for p, epoch in self.held.items() if ours.get(p) != epoch]

    async def rebalance(self) -> Rebalance:
        """Renew, give back what is over the share, take what is free up to it.
        Only between batches: the caller must stop reading lost partitions first."""
        lost = await self.renew()
        for partition in lost:
            self.held.pop(partition, None)
        share = await self._share()
        extra = sorted(self.held)[share:] if len(self.held) > share else []
        if extra:
            await self.connection.execute(
                "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' "
                "WHERE stream = %s AND owner = %s AND partition = ANY(%s)",
                (self.stream, self.owner, extra),
            )
            for partition in extra:
                del self.held[partition]
        gained: dict[int, tuple[int, int]] = {}
        wanted = share - len(self.held)
        if wanted > 0:
            async with self.connection.transaction():
                cursor = await self.connection.execute(
                    "UPDATE partition_leases l SET owner = %s, epoch = l.epoch + 1, "
                    "expires_at = now() + make_interval(secs => %s) "
                    "FROM (SELECT partition FROM partition_leases WHERE stream = %s "
                    "AND (owner IS NULL OR expires_at < now()) ORDER BY partition LIMIT %s FOR UPDATE SKIP LOCKED) free "
                    "WHERE l.stream = %s AND l.partition = free.partition RETURNING l.partition, l.epoch",
                    (self.owner, LEASE_S, self.stream, wanted, self.stream),
                )
                taken: dict[int, int] = dict(await cursor.fetchall())
                # A statement of its own, after the lease rows are locked: a previous
                # holder's commit either went in before (and is seen here) or finds
                # the new epoch and fails. (Read in the UPDATE, the checkpoint would
                # come from a snapshot older than such a commit.)
                cursor = await self.connection.execute(
                    "SELECT partition, seq FROM partition_checkpoints WHERE stream = %s AND partition = ANY(%s)",
                    (self.stream, sorted(taken)),
                )
                checkpoints: dict[int, int] = dict(await cursor.fetchall())
                for partition, epoch in taken.items():
                    gained[partition] = (epoch, checkpoints.get(partition, 0))
                    self.held[partition] = epoch
        return Rebalance(gained=gained, lost=lost + extra)

    def forget(self, partitions: list[int]) -> None:
        """Partitions found held by another (their lease moved on)."""
        for partition in partitions:
            self.held.pop(partition, None)

    async def release(self, partitions: list[int]) -> None:
        """Give partitions back for anyone (this worker included) to take afresh."""
        self.forget(partitions)
        await self.connection.execute(
            "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' "
            "WHERE stream = %s AND owner = %s AND partition = ANY(%s)",
            (self.stream, self.owner, partitions),
        )

    async def extend(self) -> None:
        """Extend this worker's leases without looking at them (while a long batch
        runs: ``rebalance`` notices any that were lost)."""
        await self.connection.execute(
            "UPDATE partition_leases SET expires_at = now() + make_interval(secs => %s) "
            "WHERE stream = %s AND owner = %s AND partition = ANY(%s)",
            (LEASE_S, self.stream, self.owner, sorted(self.held)),
        )

    async def leave(self) -> None:
        """Give every lease back at once (a clean stop), so others need not wait them out."""
        await self.connection.execute(
            "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity' WHERE stream = %s AND owner = %s",
            (self.stream, self.owner),
        )
        await self.connection.execute("DELETE FROM workers WHERE id = %s", (self.owner,))
        self.held.clear()

    async def collect_garbage(self) -> None:
        """Forget workers long unseen, and commit-log rows older than anyone needs."""
        await self.connection.execute(
            "DELETE FROM workers WHERE seen_at < now() - make_interval(secs => %s)", (FORGET_S,)
        )
        # Old enough, and below every live worker's position: a worker whose step ran
        # for longer than the age (its leases extended meanwhile) still validates
        # against every commit since its caches were filled.
        await self.connection.execute(
            "DELETE FROM state_commits WHERE committed_at < now() - make_interval(secs => %s) AND id <= ("
            "SELECT coalesce(min(commits_seen), 0) FROM workers WHERE role = 'worker' "
            "AND seen_at > now() - make_interval(secs => %s))",
            (COMMIT_LOG_KEEP_S, FORGET_S),
        )

    async def _heartbeat(self) -> None:
        seen = self.commits_seen() if self.commits_seen is not None else None
        cursor = await self.connection.execute(
            "INSERT INTO workers (id, role, host, pid, commits_seen) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET seen_at = now(), commits_seen = excluded.commits_seen "
            "RETURNING (xmax = 0)",
            (self.owner, self.role, socket.gethostname(), os.getpid(), seen),
        )
        row = await cursor.fetchone()
        inserted = bool(row and row[0])
        if inserted and self._registered:
            self.forgotten = True
        self._registered = True

    async def _share(self) -> int:
        cursor = await self.connection.execute(
            "SELECT count(*) FROM workers WHERE role = %s AND seen_at > now() - make_interval(secs => %s)",
            (self.role, LEASE_S),
        )
        row = await cursor.fetchone()
        live = max(1, int(row[0]) if row else 1)
        return math.ceil(self.partitions / live)
