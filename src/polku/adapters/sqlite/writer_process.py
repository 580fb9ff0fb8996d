"""The event log's writer in a child process.

With the writer on a thread, the serving process is bound by the GIL: parsing and
normalising on the event loop and deduplicating and binding rows on the writer
thread take turns on one core, and each SQLite statement waits to win the GIL back.
A child process owns the write connection instead; the parent sends it encoded
rows over a socket pair and gets each request's outcome back after the commit, so
the two halves run on two cores.

Protocol: length-prefixed msgpack frames. The parent sends ``Request``s; the child
answers each group commit with one ``Reply`` (the outcomes, or the error that
failed the commit), and one empty ``Reply`` when it is ready. The child commits
what it has read whenever it is free — group commit, as the thread writer does.

Durability is unchanged: a request's future resolves only when the child reports
its commit. If the parent dies (``kill -9``), the child reads EOF, finishes the
commit it is in and exits; what it committed without acknowledging is
deduplicated when the client retries. If the child dies, every waiting request
fails with 503 and the writer is restarted on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, cast

import msgspec

from polku.adapters.sqlite.transaction import Append, Outcome, Payload, Resolve
from polku.adapters.sqlite.writer import CommitStats, Pending
from polku.core.errors import Unavailable

log = logging.getLogger("polku.writer")

MAX_EVENTS_PER_COMMIT: Final = 20_000
_BUFFER: Final = 4 << 20
_HEADER: Final = 4
_FLUSH_AT: Final = 32 << 10


class Request(msgspec.Struct, array_like=True):
    id: int
    weight: int
    payload: Append | Resolve


class Reply(msgspec.Struct, array_like=True):
    ids: list[int]
    outcomes: list[Outcome] | None  # None: the commit failed with ``error``
    error: str = ""
    seconds: float = 0.0


_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(Request).decode
_decode_reply = msgspec.msgpack.Decoder(Reply).decode


def _frame(message: Request | Reply) -> bytes:
    body = _encode(message)
    return len(body).to_bytes(_HEADER, "big") + body


def _split(buffer: bytearray) -> list[bytes]:
    """Complete frames at the start of ``buffer`` (removed from it)."""
    frames: list[bytes] = []
    offset = 0
    while len(buffer) - offset >= _HEADER:
        size = int.from_bytes(buffer[offset : offset + _HEADER], "big")
        if len(buffer) - offset - _HEADER < size:
            break
        frames.append(bytes(buffer[offset + _HEADER : offset + _HEADER + size]))
        offset += _HEADER + size
    del buffer[:offset]
    return frames


# -- the parent's side -----------------------------------------------------------


class _ReplyProtocol(asyncio.Protocol):
    def __init__(self, writer: ProcessWriter) -> None:
        self.writer = writer
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        for frame in _split(self.buffer):
            self.writer._on_reply(_decode_reply(frame))

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._on_lost()


class ProcessWriter:
    """The parent's handle on the writer process (see the module docstring)."""

    def __init__(
        self,
        database: Path,
        *,
        synchronous: str,
        max_pending: int,
        on_commit: Callable[[CommitStats], None] = lambda stats: None,
    ) -> None:
        self.database = database
        self.synchronous = synchronous
        self.on_commit = on_commit
        self._pending = Pending(max_pending)
        self._ids = itertools.count()
        self._waiting: dict[int, tuple[asyncio.Future[Outcome], int]] = {}
        self._transport: asyncio.WriteTransport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stopping = False
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0

    @property
    def pending(self) -> int:
        return self._pending.count

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        for end in (parent, child):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from polku.adapters.sqlite.writer_process import main; main()",
                str(child.fileno()),
                str(self.database),
                self.synchronous,
                pass_fds=[child.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        self._ready = loop.create_future()
        self._stopping = False
        transport, _ = await loop.connect_accepted_socket(lambda: _ReplyProtocol(self), parent)
        self._transport = cast(asyncio.WriteTransport, transport)
        await self._ready

    async def stop(self) -> None:
        self._stopping = True
        # Let what was sent be committed and acknowledged before closing.
        for _ in range(3000):
            if not self._waiting or self._transport is None:
                break
            await asyncio.sleep(0.01)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        process = self._process
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
            self._process = None

    async def submit(self, payload: Payload, weight: int) -> Outcome:
        if self._transport is None or self._transport.is_closing():
            if self._stopping:
                raise Unavailable("the event log is closed")
            log.warning("restarting the event log writer process")
            await self.stop()
            await self.start()
        assert self._transport is not None
        self._pending.take(weight)
        request_id = next(self._ids)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (future, weight)
        frame = _frame(Request(id=request_id, weight=weight, payload=payload))
        # Small frames (single events) leave in one write per loop iteration, not
        # one system call each; a big one (a batch, a file chunk) goes now.
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if self._outbox_bytes >= _FLUSH_AT:
            self._flush()
        return await future

    def _flush(self) -> None:
        if not self._outbox:
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_bytes = 0
        if self._transport is not None:
            self._transport.write(data)

    def _on_reply(self, reply: Reply) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
            return
        weight = 0
        for index, request_id in enumerate(reply.ids):
            entry = self._waiting.pop(request_id, None)
            if entry is None:  # already failed (the writer was restarting)
                continue
            future, request_weight = entry
            weight += request_weight
            if future.done():  # the client went away; the work is committed anyway
                continue
            if reply.outcomes is None:
                future.set_exception(Unavailable(f"the event log could not commit: {reply.error}", retry_after=1))
            else:
                future.set_result(reply.outcomes[index])
        self._pending.release(weight)
        self.on_commit(CommitStats(jobs=len(reply.ids), weight=weight, seconds=reply.seconds))

    def _on_lost(self) -> None:
        self._transport = None
        self._outbox.clear()
        self._outbox_bytes = 0
        failure = Unavailable("the event log writer stopped; retry shortly", retry_after=1)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(Unavailable("the event log writer could not start (see the log above)"))
        waiting, self._waiting = self._waiting, {}
        for future, weight in waiting.values():
            self._pending.release(weight)
            if not future.done():
                future.set_exception(failure)


# -- the child's side ------------------------------------------------------------


class _Requests:
    """Blocking reads of whole frames: everything available, at least one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.closed = False

    def read(self) -> list[Request]:
        frames = _split(self.buffer)
        while not frames and not self.closed:
            self._receive(block=True)
            frames = _split(self.buffer)
        if frames and not self.closed:
            self._receive(block=False)
            frames += _split(self.buffer)
        return [_decode_request(frame) for frame in frames]

    def _receive(self, *, block: bool) -> None:
        self.sock.setblocking(block)
        try:
            while True:
                data = self.sock.recv(_BUFFER)
                if not data:
                    self.closed = True
                    return
                self.buffer += data
                if block:
                    return
        except BlockingIOError:
            return


def _serve(sock: socket.socket, database: Path, synchronous: str) -> None:
    from polku.adapters.sqlite.dedupe import Deduplicator
    from polku.adapters.sqlite.schema import connect
    from polku.adapters.sqlite.transaction import Transaction

    connection = connect(database, synchronous="NORMAL" if synchronous == "NORMAL" else "FULL")
    dedupe = Deduplicator()
    dedupe.load(connection)
    transaction = Transaction(dedupe)
    sock.sendall(_frame(Reply(ids=[], outcomes=[])))
    requests = _Requests(sock)
    try:
        while True:
            batch = requests.read()
            if not batch:
                return  # EOF: the parent closed the log, or died
            start = 0
            while start < len(batch):
                end, weight = start, 0
                while end < len(batch) and (end == start or weight + batch[end].weight <= MAX_EVENTS_PER_COMMIT):
                    weight += batch[end].weight
                    end += 1
                group = batch[start:end]
                started = time.perf_counter()
                ids = [request.id for request in group]
                try:
                    outcomes = transaction.commit(connection, [request.payload for request in group])
                    reply = Reply(ids=ids, outcomes=outcomes, seconds=time.perf_counter() - started)
                except Unavailable as error:
                    reply = Reply(ids=ids, outcomes=None, error=error.message, seconds=time.perf_counter() - started)
                with contextlib.suppress(OSError):  # the parent is gone; the commit stands
                    sock.sendall(_frame(reply))
                start = end
    finally:
        connection.close()


def main() -> None:
    # Ctrl-C reaches the whole process group; the parent decides when to stop,
    # by closing the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, database, synchronous = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    with socket.socket(fileno=fd) as sock:
        _serve(sock, database, synchronous)
