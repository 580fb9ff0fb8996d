"""When each key was last used (docs/keys.md): recorded in the catalog at most once a
minute per key and process, in the background — never on a request's path."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from polku.core.events import format_millis
from polku.ports import Catalog

log = logging.getLogger("polku.keys")
EVERY_S: Final = 60.0
MAX_REMEMBERED: Final = 100_000


class KeyUsage:
    def __init__(self, catalog: Catalog, *, every_s: float = EVERY_S) -> None:
        self.catalog = catalog
        self.every_s = every_s
        self._recorded: dict[str, float] = {}
        self._pending: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, key_hash: str) -> None:
        """A key was accepted just now (on the event loop)."""
        now = time.monotonic()
        last = self._recorded.get(key_hash)
        if last is not None and now - last < self.every_s:
            return
        if len(self._recorded) >= MAX_REMEMBERED:
            self._recorded.clear()
        self._recorded[key_hash] = now
        self._pending[key_hash] = format_millis(int(time.time() * 1000))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the keys noted by the requests of this moment, together
        pending, self._pending = self._pending, {}
        try:
            await self.catalog.record_key_use(pending)
        except Exception as error:  # a time of use is worth no failed request
            log.warning("when %d keys were last used was not recorded: %s", len(pending), error)

    async def close(self) -> None:
        if self._task is not None:
            await self._task
