"""The embedded dispatcher: delivers the messages the processor decided to send.

The processor writes each message into ``state.db``'s ``messages`` table in the
transaction of its state change (the transactional outbox). The dispatcher reads
new rows (by id, after its cursor), records each in its own ledger
(``deliveries.db``, ``polku.adapters.sqlite.deliveries``) as ``pending`` together
with the cursor, and delivers them through the workspace's channels
(``polku.engine.dispatch_loop``, the loop the scale-out dispatcher runs too).

Crash safety: the ledger is keyed by the message's idempotency key and a key is
taken once (``INSERT OR IGNORE``), so a message marked ``sent`` is never sent
again, and a ``pending`` one is resumed after a restart. One window cannot be
closed: the receiver accepted the message and the process died before the ledger
said ``sent``. That message is sent again after the restart, with the same SMTP
``Message-ID`` and the same ``Idempotency-Key`` header, so a receiver that checks
them drops the repeat.

Only one dispatcher may run on a data directory: it holds an exclusive ``flock``
on ``dispatcher.lock``. The processor nudges it after a commit with messages
(``polku.adapters.sqlite.wakeup``); it polls as well, for a lost nudge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Final

from polku.adapters.sqlite import wakeup
from polku.adapters.sqlite.deliveries import SqliteDeliveryLedger
from polku.adapters.sqlite.event_log import SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.engine.dispatch_loop import BATCH_SIZE, DispatchLoop, wall_clock_ms
from polku.engine.worker import exclusive_lock

log = logging.getLogger("polku.dispatcher")
LOCK_FILE: Final = "dispatcher.lock"
POLL_S: Final = 0.005
NUDGED_POLL_S: Final = 0.05
"""The poll while the processor nudges: a safety net for a lost nudge, not the path."""


def dispatcher_lock(data_dir: Path) -> AbstractContextManager[IO[str]]:
    return exclusive_lock(data_dir, LOCK_FILE, "dispatcher")


class Dispatcher(DispatchLoop):
    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        poll_s: float = POLL_S,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.data_dir = data_dir
        self.reader = SqliteLogReader(data_dir)
        self.deliveries = SqliteDeliveryLedger(data_dir, batch_size=batch_size)
        super().__init__(
            self.deliveries,
            SqliteEventLog(data_dir, writer="thread"),
            self._configs,
            clock=clock,
            rng=rng,
            environ=environ,
            poll_s=poll_s,
            batch_size=batch_size,
        )
        self._listener: socket.socket | None = None

    async def _configs(self) -> dict[str, bytes]:
        return self.reader.configs()

    async def close(self, grace_s: float = 5.0) -> None:
        try:
            await super().close(grace_s)
        finally:
            self.reader.close()

    # -- the processor's nudges ----------------------------------------------------

    def _poll_interval(self) -> float:
        return max(NUDGED_POLL_S, self.poll_s) if self._listener is not None else self.poll_s

    def listen(self) -> None:
        """Wake on the processor's nudges (``polku.adapters.sqlite.wakeup``)."""
        listener = wakeup.listen(self.data_dir)
        if listener is None:
            log.info("no wake-up socket in %s; polling every %.0f ms", self.data_dir, self.poll_s * 1000)
            return
        self._listener = listener

        def woken() -> None:
            wakeup.drain(listener)
            self._wake.set()

        asyncio.get_running_loop().add_reader(listener.fileno(), woken)

    def unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    async def run(self, stop: asyncio.Event) -> None:
        self.listen()
        try:
            await super().run(stop)
        finally:
            self.unlisten()


async def run_dispatcher(
    data_dir: Path,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
    poll_s: float = POLL_S,
) -> None:
    """Deliver the outbox until ``stop`` is set (forever without one)."""
    with dispatcher_lock(data_dir):
        dispatcher = Dispatcher(data_dir, clock=clock, rng=rng, environ=environ, poll_s=poll_s)
        try:
            await dispatcher.start()
            log.info("dispatcher started", extra={"data_dir": str(data_dir), "cursor": dispatcher.deliveries.cursor})
            await dispatcher.run(stop or asyncio.Event())
        finally:
            with contextlib.suppress(Exception):
                await dispatcher.close()
