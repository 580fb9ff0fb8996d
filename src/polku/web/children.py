"""The child processes of ``polku serve``: the processor (``polku process``) and
the dispatcher (``polku dispatch``). Each is started with the server, restarted if
it dies, stopped with it; on Linux it is killed when the server dies, even by
SIGKILL, so a restarted server never finds an orphan holding its lock. Each runs in
a process of its own: the server and the event writer already use a core each."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

log = logging.getLogger("polku")
RESTART_DELAY_S: Final = 1.0
STOP_TIMEOUT_S: Final = 10.0
SCALE_OUT_ENVIRONMENT: Final = ("POLKU_STORE", "POLKU_BUS")
"""Not passed to the children: they are the embedded deployment's, and `polku dispatch`
would take these as a scale-out deployment's store and bus."""


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SupervisedChild:
    """``polku <command> --data-dir D --wait-for-lock`` kept running."""

    def __init__(self, command: str, data_dir: Path) -> None:
        self.name = command
        self.data_dir = data_dir
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "polku", *self.name.split(), "--data-dir", str(self.data_dir), "--wait-for-lock"]

    def stopping(self) -> bool:
        """A method, not the attribute: ``stop`` sets it while ``_supervise`` awaits."""
        return self._stopping

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self.stopping():
            environment = {name: value for name, value in os.environ.items() if name not in SCALE_OUT_ENVIRONMENT}
            self._process = await asyncio.create_subprocess_exec(
                *self.command(), stdin=subprocess.DEVNULL, env=environment, preexec_fn=_die_with_parent
            )
            code = await self._process.wait()
            if self.stopping():
                return
            log.error("`polku %s` exited with %s; restarting it", self.name, code)
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


def processor_child(data_dir: Path) -> SupervisedChild:
    return SupervisedChild("process", data_dir)


def dispatcher_child(data_dir: Path) -> SupervisedChild:
    return SupervisedChild("dispatch", data_dir)


def analytics_child(data_dir: Path) -> SupervisedChild:
    return SupervisedChild("analytics feed", data_dir)
