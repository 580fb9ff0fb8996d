"""One writer thread with a queue and group commit.

SQLite allows one writer; concurrent requests are therefore queued, and the writer
takes everything waiting into one ``BEGIN IMMEDIATE … COMMIT``. A request's future
resolves only after that commit, so a 2xx is durable, and N concurrent requests
share one fsync. ``sqlite3`` releases the GIL while SQLite works, so the event loop
keeps parsing the next requests during a commit.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from polku.core.errors import PolkuError, Unavailable

Work = Callable[[sqlite3.Connection], Any]
"""A unit of work run inside the group transaction; may raise ``PolkuError`` to fail
only itself (it runs in a savepoint, unless submitted with ``isolated=False``)."""

MAX_EVENTS_PER_COMMIT: Final = 20_000


@dataclass(slots=True)
class _Job:
    work: Work
    weight: int
    isolated: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class CommitStats:
    """Observers (metrics) get one of these per commit."""

    jobs: int
    weight: int
    seconds: float


@dataclass
class Writer:
    connection: sqlite3.Connection
    max_pending: int
    on_commit: Callable[[CommitStats], None] = lambda stats: None
    _queue: queue.SimpleQueue[_Job | None] = field(default_factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None
    _pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="polku-sqlite-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, work: Work, weight: int = 1, *, isolated: bool = True) -> Any:
        """Run ``work`` in the next group commit and return its result once durable.

        ``isolated=False`` skips the job's savepoint, for work that never raises
        ``PolkuError`` (plain appends): each statement the writer runs hands the GIL
        to the event loop and back, which costs more than SQLite's own work when
        the loop is busy, so a commit should run as few statements as it can."""
        if self._thread is None:
            raise Unavailable("the event log is not running")
        with self._lock:
            if self._pending + weight > self.max_pending and self._pending > 0:
                raise Unavailable(
                    f"ingestion queue is full ({self._pending} events waiting for commit); retry shortly",
                    retry_after=1,
                )
            self._pending += weight
        loop = asyncio.get_running_loop()
        job = _Job(work=work, weight=weight, isolated=isolated, loop=loop, future=loop.create_future())
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
        connection = self.connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            for job in jobs:
                if not job.isolated:
                    job.outcome = job.work(connection)
                    continue
                connection.execute("SAVEPOINT job")
                try:
                    job.outcome = job.work(connection)
                    connection.execute("RELEASE job")
                except PolkuError as error:
                    connection.execute("ROLLBACK TO job")
                    connection.execute("RELEASE job")
                    job.error = error
            connection.execute("COMMIT")
        except BaseException as error:  # a failed commit fails every job in it
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            failure = Unavailable(f"the event log could not commit: {error}", retry_after=1)
            for job in jobs:
                job.error = failure
        seconds = time.perf_counter() - started
        weight = sum(job.weight for job in jobs)
        with self._lock:
            self._pending -= weight
        self.on_commit(CommitStats(jobs=len(jobs), weight=weight, seconds=seconds))
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
            job.future.set_result(job.outcome)
