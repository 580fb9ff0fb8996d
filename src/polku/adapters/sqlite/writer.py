"""The event log's writer: one queue and group commit.

SQLite allows one writer; concurrent requests are therefore queued, and the writer
takes everything waiting into one ``BEGIN IMMEDIATE … COMMIT``
(``Transaction.commit``). A request's future resolves only after that commit, so a
2xx is durable, and N concurrent requests share one fsync.

Two writers share that logic:

- ``ThreadWriter`` commits on a thread of the serving process. ``sqlite3`` releases
  the GIL while SQLite works, but everything else the writer does in Python
  (deduplication, binding parameters) competes with the event loop for the GIL,
  and every statement has to win the GIL back — up to the 5 ms switch interval
  while the loop is busy. Simple; for tests and embedding.
- ``ProcessWriter`` (``writer_process.py``) commits in a child process, so parsing
  and committing run on two cores. ``polku serve`` and ``polku import`` use it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

from polku.adapters.sqlite.transaction import Outcome, Payload, Transaction
from polku.core.errors import Unavailable

MAX_EVENTS_PER_COMMIT: Final = 20_000


@dataclass(slots=True)
class CommitStats:
    """Observers (metrics) get one of these per commit."""

    jobs: int
    weight: int
    seconds: float


class Writer(Protocol):
    @property
    def pending(self) -> int:
        """Events submitted and not committed yet."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, payload: Payload, weight: int) -> Outcome:
        """Commit ``payload`` with the next group; its outcome once durable. Raises
        ``Unavailable`` when more than ``max_pending`` events wait (back-pressure)
        or the commit failed."""
        ...


@dataclass
class Pending:
    """Back-pressure accounting shared by both writers."""

    max_pending: int
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, weight: int) -> None:
        with self.lock:
            if self.count + weight > self.max_pending and self.count > 0:
                raise Unavailable(
                    f"ingestion queue is full ({self.count} events waiting for commit); retry shortly",
                    retry_after=1,
                )
            self.count += weight

    def release(self, weight: int) -> None:
        with self.lock:
            self.count -= weight


@dataclass(slots=True)
class _Job:
    payload: Payload
    weight: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    outcome: Outcome | None = None
    error: BaseException | None = None


class ThreadWriter:
    def __init__(
        self,
        connection: sqlite3.Connection,
        transaction: Transaction,
        *,
        max_pending: int,
        on_commit: Callable[[CommitStats], None] = lambda stats: None,
    ) -> None:
        self.connection = connection
        self.transaction = transaction
        self.on_commit = on_commit
        self._pending = Pending(max_pending)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return self._pending.count

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="polku-sqlite-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self.connection.close()

    async def submit(self, payload: Payload, weight: int) -> Outcome:
        if self._thread is None:
            raise Unavailable("the event log is not running")
        self._pending.take(weight)
        loop = asyncio.get_running_loop()
        job = _Job(payload=payload, weight=weight, loop=loop, future=loop.create_future())
        self._queue.put(job)
        return await job.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            weight = first.weight
            stop = False
            while weight < MAX_EVENTS_PER_COMMIT:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
                weight += job.weight
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self.transaction.commit(self.connection, [job.payload for job in jobs])
        except Unavailable as error:  # a failed commit fails every job in it
            for job in jobs:
                job.error = error
        else:
            for job, outcome in zip(jobs, outcomes, strict=True):
                job.outcome = outcome
        weight = sum(job.weight for job in jobs)
        self._pending.release(weight)
        self.on_commit(CommitStats(jobs=len(jobs), weight=weight, seconds=time.perf_counter() - started))
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, loop_jobs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, loop_jobs)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():  # the client went away; the work is committed anyway
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            assert job.outcome is not None
            job.future.set_result(job.outcome)
