"""The dispatcher as a child process of ``polku serve``, like the processor
(``processor_child``): started with the server, restarted if it dies, stopped with
it, and killed with the server on Linux, so no orphan keeps its lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

from polku.web.processor_child import _die_with_parent

log = logging.getLogger("polku.dispatcher")
RESTART_DELAY_S: Final = 1.0
STOP_TIMEOUT_S: Final = 10.0


class DispatcherChild:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "polku", "dispatch", "--data-dir", str(self.data_dir), "--wait-for-lock"]

    def stopping(self) -> bool:
        return self._stopping

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self.stopping():
            self._process = await asyncio.create_subprocess_exec(
                *self.command(), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
            code = await self._process.wait()
            if self.stopping():
                return
            log.error("the dispatcher exited with %s; restarting it", code)
            await asyncio.sleep(RESTART_DELAY_S)

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
