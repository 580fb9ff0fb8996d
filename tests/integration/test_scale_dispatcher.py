"""Dispatchers of the scale-out deployment against real PostgreSQL, NATS and SMTP
servers: the outbox the workers write (``messages``) is drained by several
``polku dispatch --store … --bus …`` processes at once, some of them SIGKILLed and
restarted while they work, and every message reaches the SMTP server — once, or,
in the one window the sender cannot close, again with the same ``Message-ID``."""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from tests.channels.helpers import T0, message
from tests.conftest import free_port
from tests.contract.conftest import NATS_URL, fresh_database
from tests.integration.scale_processes import fresh_deployment

from polku.adapters.channels.smtp import message_id
from polku.adapters.postgres.catalog import PostgresCatalog
from polku.adapters.postgres.deliveries import PostgresDeliveryLedger
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.postgres.tracks import migrate_all
from polku.core.channels import OutboundMessage
from polku.core.deliveries import Outcome
from polku.core.workspace import parse_config
from polku.engine.scale_dispatcher import ScaleDispatcher
from polku.engine.scale_worker import ScaleOut
from polku.engine.setup import bootstrap
from polku.state import StateChanges

pytestmark = pytest.mark.anyio
PARTITIONS = 4
CONCURRENCY = 4


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def deployment(database: str) -> AsyncIterator[ScaleOut]:
    async with fresh_deployment(database, PARTITIONS) as found:
        yield found


# -- an SMTP server that says who sent what, and when ---------------------------------


@dataclass(frozen=True)
class Copy:
    """One message as the SMTP server received it."""

    key: str
    message_id: str
    sender_pid: int | None
    started: float
    accepted: float
    """When the server answered 250 (``time.monotonic``, this process's clock)."""


@dataclass
class Inbox:
    """An aiosmtpd handler: takes ``delay_s`` over each message, notes which
    dispatcher process sent it (``sender_of``, asked when a connection says EHLO),
    and can hold one message (``hold``) until the test lets it go."""

    delay_s: float = 0.0
    sender_of: Any = None
    hold: str | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    copies: list[Copy] = field(default_factory=list)
    senders: dict[object, int | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        peer: Any = session.peer  # (host, port) of the sender's connection
        if self.sender_of is not None:
            self.senders[peer] = self.sender_of(peer[1])
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        key = str(parsed["X-Polku-Key"])
        if key == self.hold:
            self.arrived.set()
            await asyncio.to_thread(self.release.wait)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self.lock:
            self.copies.append(
                Copy(key, str(parsed["Message-ID"]), self.senders.get(session.peer), started, time.monotonic())
            )
        return "250 OK"

    def by_key(self) -> dict[str, list[Copy]]:
        with self.lock:
            found: dict[str, list[Copy]] = collections.defaultdict(list)
            for copy in self.copies:
                found[copy.key].append(copy)
            return dict(found)


@contextmanager
def smtp_inbox(inbox: Inbox) -> Iterator[int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def sender_pid(port: int, pids: list[int]) -> int | None:
    """The process among ``pids`` whose TCP socket has local port ``port`` (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in itertools.islice(lines, 1, None):
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") in inodes:
                    return pid
            except OSError:
                continue
    return None


# -- the deployment's other parts, as the workers leave them ---------------------------


async def configure(deployment: ScaleOut, port: int) -> None:
    catalog = PostgresCatalog(deployment.store_url, schema=deployment.schema)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=None, admin_token=None)
        channels = {"email": {"type": "smtp", "port": port, "sender": "shop@example.com", "concurrency": CONCURRENCY}}
        await catalog.set_config("default", parse_config(json.dumps({"channels": channels})))
    finally:
        await catalog.close()


@asynccontextmanager
async def outbox(deployment: ScaleOut) -> AsyncIterator[Any]:
    """``decide(*messages)``: what a worker's commit does with the messages it decided."""
    await migrate_all(deployment.store_url, schema=deployment.schema)
    store = await asyncio.to_thread(PostgresStateStore, deployment.store_url, schema=deployment.schema)

    async def decide(*messages: OutboundMessage) -> None:
        await asyncio.to_thread(store.commit, StateChanges(checkpoint=0, messages=list(messages)))

    try:
        yield decide
    finally:
        await asyncio.to_thread(store.close)


def messages(prefix: str, count: int) -> list[OutboundMessage]:
    return [message(f"{prefix}{number}", "email") for number in range(count)]


async def ledger(deployment: ScaleOut) -> dict[str, tuple[str, int, bool]]:
    """key → (status, attempts, announced)."""
    async with await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    ) as connection:
        cursor = await connection.execute("SELECT key, status, attempts, announced FROM deliveries")
        return {key: (status, attempts, announced) for key, status, attempts, announced in await cursor.fetchall()}


async def results(deployment: ScaleOut) -> list[tuple[str, str]]:
    """(event name, message key) of every result event in the stream."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        last = (await js.stream_info(deployment.stream)).state.last_seq
        found = []
        for seq in range(1, last + 1):
            event = json.loads((await js.get_msg(deployment.stream, seq)).data or b"{}")
            if event.get("event") in ("Message Sent", "Message Failed"):
                found.append((event["event"], event["properties"]["key"]))
        return found
    finally:
        await client.close()


async def until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        await asyncio.sleep(0.1)


class Dispatchers:
    """``polku dispatch --store … --bus …`` processes, killed and restarted at will;
    their output goes to ``log_dir``."""

    def __init__(self, deployment: ScaleOut, log_dir: Path, *, claim_s: float) -> None:
        self.deployment = deployment
        self.log_dir = log_dir
        self.claim_s = claim_s
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.started = 0

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes.values()]

    async def start(self, slot: int) -> None:
        deployment = self.deployment
        self.started += 1
        output = os.open(self.log_dir / f"dispatcher-{self.started}.log", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            self.processes[slot] = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "polku", "dispatch", "--store", deployment.store_url],
                *["--bus", deployment.bus_url, "--schema", deployment.schema, "--stream", deployment.stream],
                *["--subject-prefix", deployment.subject_prefix, "--partitions", str(deployment.partitions)],
                *["--claim-lease", str(self.claim_s)],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        finally:
            os.close(output)

    async def kill(self, slot: int) -> None:
        process = self.processes.pop(slot)
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        for slot, process in self.processes.items():
            assert process.returncode == 0, f"dispatcher {slot} exited with {process.returncode}"


@asynccontextmanager
async def dispatchers(deployment: ScaleOut, log_dir: Path, count: int, *, claim_s: float) -> AsyncIterator[Dispatchers]:
    running = Dispatchers(deployment, log_dir, claim_s=claim_s)
    try:
        for slot in range(count):
            await running.start(slot)
        yield running
    finally:
        await running.stop()


# -- the tests -----------------------------------------------------------------------


async def test_a_dispatcher_delivers_with_result_events(deployment: ScaleOut) -> None:
    """In one process, as the embedded tests drive theirs: sent once, recorded, told."""
    inbox = Inbox()
    with smtp_inbox(inbox) as port:
        await configure(deployment, port)
        async with outbox(deployment) as decide:
            await decide(message("a", "email"), message("b", "email"), message("note", "agent_note"))
            dispatcher = ScaleDispatcher(deployment, rng=random.Random(7))
            await dispatcher.start()
            try:
                await dispatcher.run_until_idle()
                await decide(message("a", "email"))  # decided again: the same key
                await dispatcher.run_until_idle()
            finally:
                await dispatcher.close()
    assert sorted(copy.key for copy in inbox.copies) == ["a", "b"]
    assert await ledger(deployment) == {"a": ("sent", 1, True), "b": ("sent", 1, True)}
    assert sorted(await results(deployment)) == [("Message Sent", "a"), ("Message Sent", "b")]


async def test_a_message_committed_after_later_ones_is_still_taken(deployment: ScaleOut) -> None:
    """Ids are drawn at insert and seen at commit: a worker's transaction that commits
    after others with higher ids must not be skipped by the intake's floor."""
    async with outbox(deployment) as decide:
        owner = PostgresDeliveryLedger(deployment.store_url, owner="d1", schema=deployment.schema, batch_size=2)
        other = PostgresDeliveryLedger(deployment.store_url, owner="d2", schema=deployment.schema, batch_size=2)
        await migrate_all(deployment.store_url, schema=deployment.schema)
        await owner.open()
        await other.open()
        late = await psycopg.AsyncConnection.connect(
            deployment.store_url, options=f"-c search_path={deployment.schema}"
        )
        try:
            cursor = await late.execute(
                "INSERT INTO messages (workspace, customer_id, key, channel, journey, created_ms, body) "
                "VALUES ('default', 'c-late', 'late', 'email', 'welcome', 0, %s) RETURNING id",
                (b'{"key":"late"}',),
            )  # not committed: its id is drawn, the row is not visible
            late_id = (await cursor.fetchall())[0][0]
            await decide(*messages("early", 5))
            for _ in range(6):  # rounds of both dispatchers, two rows a round
                await owner.take_new(0)
                await other.take_new(0)
            assert sorted(await ledger(deployment)) == [f"early{number}" for number in range(5)]
            assert await intake_floor(deployment) < late_id
            await late.commit()
            for _ in range(3):
                await other.take_new(0)
                await owner.take_new(0)
        finally:
            await late.close()
            await owner.close()
            await other.close()
    assert sorted(await ledger(deployment)) == sorted(["late", *(f"early{number}" for number in range(5))])
    assert await intake_floor(deployment) == late_id + 5  # the scan is bounded again


async def test_keys_are_handed_back_as_stored(deployment: ScaleOut) -> None:
    """A key holding U+0000 is stored escaped in ``messages``; the ledger copies it and
    hands it back as stored, so claims and outcomes find their row, and the message
    itself comes whole from its body."""
    async with outbox(deployment) as decide:
        await decide(message("k\x00\x01", "email"))
        deliveries = PostgresDeliveryLedger(deployment.store_url, owner="d1", schema=deployment.schema)
        await deliveries.open()
        try:
            assert await deliveries.take_new(T0) == 1
            [due] = await deliveries.claim(("default", "email"), T0, 10, set())
            assert due.message is not None and due.message.key == "k\x00\x01"
            assert await deliveries.start_attempt(due)
            assert await deliveries.settle(due, Outcome("sent", 1, T0))
            await deliveries.announced(due.key)
        finally:
            await deliveries.close()
    assert list((await ledger(deployment)).values()) == [("sent", 1, True)]


async def intake_floor(deployment: ScaleOut) -> int:
    async with await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    ) as connection:
        cursor = await connection.execute("SELECT floor FROM delivery_intake")
        return int((await cursor.fetchall())[0][0])


async def test_a_dispatcher_killed_after_the_server_accepted_repeats_it_with_its_message_id(
    deployment: ScaleOut, tmp_path: Path
) -> None:
    """The one window: the SMTP server accepted the message, and the dispatcher died
    before its ledger said sent (held here by a lock on the ledger's row, its
    waiting statement ended with it). Another
    dispatcher sends it again once the claim lapses, with the same Message-ID, so a
    receiver that remembers it drops the repeat."""
    inbox = Inbox(hold="held")
    with smtp_inbox(inbox) as port:
        await configure(deployment, port)
        async with outbox(deployment) as decide, dispatchers(deployment, tmp_path, 1, claim_s=2.0) as running:
            await decide(message("held", "email"), message("other", "email"))
            assert await asyncio.to_thread(inbox.arrived.wait, 30)  # the attempt is counted; DATA is in
            async with await psycopg.AsyncConnection.connect(
                deployment.store_url, options=f"-c search_path={deployment.schema}"
            ) as blocker:
                await blocker.execute("SELECT 1 FROM deliveries WHERE key = 'held' FOR UPDATE")
                inbox.release.set()  # the server answers 250; recording it waits for the lock
                await until(lambda: accepted(inbox, "held"), 10, "the server accepted it")
                await asyncio.sleep(0.2)
                await running.kill(0)
                # Its UPDATE, waiting for the lock, would still commit: the process
                # died before it reached the server, as far as the ledger knows.
                await blocker.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (blocker.info.backend_pid,),
                )
                await blocker.rollback()
            await running.start(1)
            await until(lambda: all_announced(deployment, 2), 30, "both delivered and told")
    copies = inbox.by_key()
    assert [copy.message_id for copy in copies["held"]] == [message_id("held")] * 2
    assert len(copies["other"]) == 1
    assert (await ledger(deployment))["held"] == ("sent", 2, True)  # the killed attempt counted
    assert sorted(await results(deployment)) == [("Message Sent", "held"), ("Message Sent", "other")]


async def accepted(inbox: Inbox, key: str) -> bool:
    return key in inbox.by_key()


async def all_announced(deployment: ScaleOut, count: int) -> bool:
    rows = await ledger(deployment)
    return len(rows) == count and all(status == "sent" and announced for status, _, announced in rows.values())


async def test_dispatchers_never_send_one_message_at_once(deployment: ScaleOut, tmp_path: Path) -> None:
    """Three dispatchers on one outbox; each send outlasts the claim's lease, so only
    the renewals keep the others off: every message reaches the server once."""
    inbox = Inbox(delay_s=1.5)
    count = 48
    async with dispatchers(deployment, tmp_path, 0, claim_s=1.0) as running:
        inbox.sender_of = lambda port: sender_pid(port, running.pids())
        with smtp_inbox(inbox) as port:
            await configure(deployment, port)
            for slot in range(3):
                await running.start(slot)
            async with outbox(deployment) as decide:
                await decide(*messages("m", count))
                await until(lambda: all_announced(deployment, count), 60, "every message delivered and told")
    copies = inbox.by_key()
    assert {key: len(found) for key, found in copies.items()} == {f"m{number}": 1 for number in range(count)}
    assert all(found[0].message_id == message_id(key) for key, found in copies.items())
    senders = collections.Counter(found[0].sender_pid for found in copies.values())
    assert None not in senders and len(senders) == 3, senders  # all three took part
    assert {attempts for _, attempts, _ in (await ledger(deployment)).values()} == {1}
    assert sorted(await results(deployment)) == sorted(("Message Sent", f"m{number}") for number in range(count))


async def test_dispatchers_killed_at_random_deliver_every_message(deployment: ScaleOut, tmp_path: Path) -> None:
    """Three dispatchers drain waves of messages while one of them is SIGKILLed and
    restarted every half second or so. Every message is delivered and recorded sent
    once. A message may reach the server twice only through the window the sender
    cannot close: its first copy went out from a dispatcher killed moments after the
    server accepted it, before the ledger said sent, and the copy after the kill has
    the same Message-ID. The test tells such repeats apart and bounds them."""
    rng = random.Random(20261124)
    inbox = Inbox(delay_s=0.03)
    waves, per_wave = 8, 100
    kills: list[tuple[float, int]] = []
    async with dispatchers(deployment, tmp_path, 0, claim_s=2.0) as running:
        inbox.sender_of = lambda port: sender_pid(port, [*running.pids(), *(pid for _, pid in kills)])
        with smtp_inbox(inbox) as port:
            await configure(deployment, port)
            for slot in range(3):
                await running.start(slot)
            async with outbox(deployment) as decide:
                await asyncio.sleep(1.5)  # the dispatchers start up
                for wave in range(waves):
                    await decide(*messages(f"w{wave}-", per_wave))
                    for _ in range(2):
                        await asyncio.sleep(rng.uniform(0.2, 0.6))
                        slot = rng.randrange(3)
                        pid = running.processes[slot].pid
                        await running.kill(slot)
                        kills.append((time.monotonic(), pid))
                        await running.start(slot)
                total = waves * per_wave
                await until(lambda: all_announced(deployment, total), 90, "every message delivered and told")
    keys = {f"w{wave}-{number}" for wave in range(waves) for number in range(per_wave)}
    copies = inbox.by_key()
    assert set(copies) == keys
    rows = await ledger(deployment)
    assert set(rows) == keys and {status for status, _, _ in rows.values()} == {"sent"}
    assert sorted(await results(deployment)) == sorted(("Message Sent", key) for key in keys)
    killed_at = {pid: at for at, pid in kills}
    repeats = {key: found for key, found in copies.items() if len(found) > 1}
    for key, found in repeats.items():
        assert {copy.message_id for copy in found} == {message_id(key)}, key
        ordered = sorted(found, key=lambda copy: copy.accepted)
        # Every copy but the last went out from a dispatcher killed moments after the
        # server accepted it, before it could record it (~ms; generous for a busy
        # machine), and the next copy started after that kill. A message can go round
        # this more than once when the dispatcher that sent it again is killed too.
        for copy, following in itertools.pairwise(ordered):
            assert copy.sender_pid in killed_at, (key, found)
            kill = killed_at[copy.sender_pid]
            assert copy.started <= kill <= copy.accepted + 0.5, (key, copy, kill)
            assert following.started > kill, (key, found)
        assert rows[key][1] >= len(found)  # every killed attempt was counted
    assert sum(len(found) - 1 for found in repeats.values()) <= len(kills) * CONCURRENCY, (repeats, len(kills))
    firsts = [min(found, key=lambda copy: copy.accepted) for found in repeats.values()]
    windows = sorted(killed_at[first.sender_pid or 0] - first.accepted for first in firsts)
    after = ", ".join(f"{1000 * window:.0f} ms" for window in windows)
    print(f"{len(kills)} kills, {total} messages, {len(repeats)} sent twice (killed {after or '-'} after the 250)")
