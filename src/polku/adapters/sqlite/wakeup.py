"""A nudge from the processor to the dispatcher: "messages committed". The
dispatcher listens on a Unix datagram socket in the data directory and otherwise
polls; the processor sends one byte after a commit with messages. A lost nudge
(no dispatcher, a full buffer) costs only the poll interval, so sending never
blocks and never fails the processor."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Final

SOCKET_FILE: Final = "dispatcher.sock"
MAX_PATH: Final = 100
"""Unix socket paths are limited to ~108 bytes; a longer data directory polls."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_FILE


class Nudger:
    """The processor's side."""

    def __init__(self, data_dir: Path) -> None:
        self.path = str(socket_path(data_dir))
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)

    def nudge(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.sendto(b"m", self.path)

    def close(self) -> None:
        self.socket.close()


def listen(data_dir: Path) -> socket.socket | None:
    """The dispatcher's side: a bound, non-blocking datagram socket, or ``None``
    where one cannot be made (the path is too long, the file system refuses)."""
    path = socket_path(data_dir)
    if len(str(path).encode()) > MAX_PATH:
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path.unlink(missing_ok=True)  # a killed dispatcher's; the lock says it is ours now
        listener.bind(str(path))
    except OSError:
        listener.close()
        return None
    listener.setblocking(False)
    return listener


def drain(listener: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while listener.recv(64):
            pass
