"""Running the processor: the loop (``polku process``, and the child process that
``polku serve`` starts), the outbox forwarder, and ``polku identity rebuild``.

Only one processor may write a data directory's state: it holds an exclusive
``flock`` on ``processor.lock`` for as long as it runs, and a rebuild takes the same
lock, so it refuses to run beside a live processor instead of corrupting it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Final

import msgspec

from polku.adapters.sqlite.event_log import SqliteEventLog
from polku.adapters.sqlite.log_erasure import SqliteLogEraser
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.adapters.sqlite.wakeup import Nudger
from polku.core.errors import Conflict
from polku.core.events import Event
from polku.engine.processor import Processor
from polku.engine.runtime import INTERNAL_SOURCE
from polku.ports import AppendBatch, EventLog, StateStore

log = logging.getLogger("polku.processor")
LOCK_FILE: Final = "processor.lock"
CONFIG_REFRESH_S: Final = 1.0
_decode_event = msgspec.json.Decoder(Event).decode


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def exclusive_lock(data_dir: Path, lock_file: str, what: str) -> Iterator[IO[str]]:
    """An exclusive ``flock`` on ``<data_dir>/<lock_file>`` for as long as the block
    runs (the file says which process holds it); ``Conflict`` if another holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / lock_file).open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(
                f"a {what} is running on {data_dir} (it holds {lock_file}); stop `polku serve` first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield handle
    finally:
        handle.close()


def processor_lock(data_dir: Path) -> AbstractContextManager[IO[str]]:
    return exclusive_lock(data_dir, LOCK_FILE, "processor")


async def forward_outbox(store: StateStore, event_log: EventLog) -> int:
    """Append the events the processor wrote (after their state committed) to the
    log. Their messageIds are deterministic: a repeat after a crash — or, on the
    scale-out deployment, two workers forwarding the same rows — is a duplicate."""
    total = 0
    while True:
        entries = store.outbox()
        if not entries:
            return total
        by_workspace: dict[str, list[Event]] = {}
        for _, workspace, body in entries:
            by_workspace.setdefault(workspace, []).append(_decode_event(body))
        for workspace, events in by_workspace.items():
            await event_log.append(
                AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=wall_clock_ms(), events=events)
            )
        store.delete_outbox([entry_id for entry_id, _, _ in entries])
        total += len(entries)


async def run_processor(
    data_dir: Path,
    *,
    stop: asyncio.Event | None = None,
    poll_s: float = 0.005,
    clock: Callable[[], int] = wall_clock_ms,
    batch_size: int = 1000,
) -> None:
    """Process the log until ``stop`` is set (forever without one)."""
    with processor_lock(data_dir):
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        event_log = SqliteEventLog(data_dir, writer="thread")
        nudger = Nudger(data_dir)
        await event_log.start()
        try:
            processor = Processor(store, reader, clock=clock, batch_size=batch_size, eraser=SqliteLogEraser(data_dir))
            await forward_outbox(store, event_log)
            refreshed = time.monotonic()
            log.info("processor started", extra={"data_dir": str(data_dir), "checkpoint": processor.checkpoint})
            messages = processor.messages_committed
            while stop is None or not stop.is_set():
                done = processor.step()
                if processor.messages_committed != messages:
                    messages = processor.messages_committed
                    nudger.nudge()
                await forward_outbox(store, event_log)
                if time.monotonic() - refreshed > CONFIG_REFRESH_S:
                    processor.refresh_configs()
                    processor.expire()
                    refreshed = time.monotonic()
                if not done:
                    await asyncio.sleep(poll_s)
        finally:
            await event_log.close()
            nudger.close()
            reader.close()
            store.close()


def rebuild_state(
    data_dir: Path,
    *,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    clock: Callable[[], int] = wall_clock_ms,
) -> int:
    """``polku identity rebuild``: forget every derived record and replay the whole
    log under the current rules. Announcements (segment changes, merges) are not
    written again: they describe history that has already been told."""
    with processor_lock(data_dir):
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        try:
            store.reset()
            total = reader.last_seq()
            processor = Processor(store, reader, clock=clock, batch_size=2000, emit=False)
            while processor.step():
                on_progress(processor.checkpoint, total)
            # The rebuild emptied the timers; journeys kept their state (it is not
            # derived from the log alone), so their waits get their timers back.
            for workspace, holder, _ in store.journey_holders_due():
                processor.journeys.mark(workspace, holder)
            processor.flush()
            return processor.checkpoint
        finally:
            reader.close()
            store.close()
