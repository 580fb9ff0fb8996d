"""The dispatcher end to end: outbox rows in ``state.db`` → real receivers →
ledger rows and result events in the log."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polku.adapters.sqlite.deliveries import deliveries
from polku.adapters.sqlite.wakeup import Nudger
from polku.core.errors import Conflict
from polku.engine.dispatcher import Dispatcher, dispatcher_lock, run_dispatcher
from tests.channels.helpers import T0, Clock, configure, decide, log_events, message, results, until
from tests.channels.receivers import http_receiver, smtp_server

pytestmark = pytest.mark.anyio


def ledger(data_dir: Path, **filters: str) -> dict[str, dict[str, object]]:
    return {row["key"]: row for row in deliveries(data_dir, "default", limit=1000, **filters)}


async def drain(data_dir: Path, clock: Clock, seed: int = 7) -> Dispatcher:
    dispatcher = Dispatcher(data_dir, clock=clock, rng=random.Random(seed))
    await dispatcher.start()
    try:
        await dispatcher.run_until_idle()
    finally:
        await dispatcher.close()
    return dispatcher


async def test_messages_are_delivered_once_with_result_events(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        await configure(tmp_path, {"email": {"type": "smtp", "port": inbox.port, "sender": "shop@example.com"}})
        decide(tmp_path, message("a", "email"), message("b", "email"), message("note", "agent_note"))
        await drain(tmp_path, Clock())
        await drain(tmp_path, Clock(T0 + 60_000))  # a restart finds nothing to do
        decide(tmp_path, message("a", "email"))  # decided again: the same key
        await drain(tmp_path, Clock(T0 + 120_000))
    assert sorted(str(received["X-Polku-Key"]) for received in inbox.messages) == ["a", "b"]
    rows = ledger(tmp_path)
    assert set(rows) == {"a", "b"}  # built-in channels are the processor's
    assert {row["status"] for row in rows.values()} == {"sent"} and rows["a"]["attempts"] == 1
    assert sorted(results(tmp_path)) == [("Message Sent", "a"), ("Message Sent", "b")]
    [sent] = [event for event in log_events(tmp_path) if event["properties"].get("key") == "a"]
    assert sent["channel"] == "email" and sent["source"] == "polku"
    assert sent["properties"] | {"customer_id": None} == {
        "customer_id": None,
        "key": "a",
        "journey": "welcome",
        "version": 1,
        "step": "hello",
        "message": "hello",
        "channel_name": "email",
        "attempts": 1,
    }
    assert deliveries(tmp_path, "default", customer_id="c-a")[0]["key"] == "a"
    assert deliveries(tmp_path, "other") == []


async def test_retryable_failures_back_off_then_succeed(tmp_path: Path) -> None:
    clock = Clock()
    with http_receiver() as receiver:
        receiver.script = {"/hook": [(500, 0, {}), (503, 0, {}), (200, 0, {})]}
        await configure(
            tmp_path,
            {
                "crm": {
                    "type": "webhook",
                    "allow_private_network": True,
                    "url": receiver.url + "/hook",
                    "backoff": "10s",
                }
            },
        )
        decide(tmp_path, message("a", "crm"))
        await drain(tmp_path, clock)
        row = ledger(tmp_path)["a"]
        assert (row["status"], row["attempts"]) == ("pending", 1) and "500" in str(row["last_error"])
        first_delay = int(str(row["next_attempt_ms"])) - T0
        assert 0 <= first_delay <= 10_000
        await drain(tmp_path, clock)  # not due yet: nothing is sent
        assert len(receiver.to("/hook")) == 1
        clock.now = int(str(row["next_attempt_ms"]))
        await drain(tmp_path, clock)
        row = ledger(tmp_path)["a"]
        assert (row["status"], row["attempts"]) == ("pending", 2)
        assert 0 <= int(str(row["next_attempt_ms"])) - clock.now <= 20_000  # the ceiling doubled
        clock.now = int(str(row["next_attempt_ms"]))
        await drain(tmp_path, clock)
    assert len(receiver.to("/hook")) == 3
    assert {request.headers["Idempotency-Key"] for request in receiver.to("/hook")} == {"a"}
    row = ledger(tmp_path)["a"]
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    assert results(tmp_path) == [("Message Sent", "a")]


async def test_failures_are_dead_lettered(tmp_path: Path) -> None:
    clock = Clock()
    with http_receiver() as receiver:
        receiver.script = {"/down": [(500, 0, {})], "/bad": [(400, 0, {})]}
        await configure(
            tmp_path,
            {
                "down": {
                    "type": "webhook",
                    "allow_private_network": True,
                    "url": receiver.url + "/down",
                    "max_attempts": 3,
                    "backoff": "1s",
                },
                "bad": {"type": "webhook", "allow_private_network": True, "url": receiver.url + "/bad"},
            },
        )
        decide(tmp_path, message("d", "down"), message("b", "bad"), message("g", "gone"))
        for _ in range(5):
            await drain(tmp_path, clock)
            clock.now += 3_600_000
    assert len(receiver.to("/down")) == 3 and len(receiver.to("/bad")) == 1
    rows = ledger(tmp_path, status="dead")
    assert {key: row["attempts"] for key, row in rows.items()} == {"d": 3, "b": 1, "g": 1}
    assert rows["g"]["last_error"] == "channel gone is not configured"
    failed = {e["properties"]["key"]: e for e in log_events(tmp_path) if e.get("event") == "Message Failed"}
    assert set(failed) == {"d", "b", "g"}
    assert failed["d"]["properties"]["dead_lettered"] is True and "500" in failed["d"]["properties"]["error"]
    assert failed["b"]["properties"]["attempts"] == 1 and failed["g"]["channel"] == "gone"


async def test_a_slow_channel_does_not_delay_another(tmp_path: Path) -> None:
    with http_receiver() as receiver, smtp_server() as inbox:
        receiver.script = {"/slow": [(200, 0.6, {})]}
        await configure(
            tmp_path,
            {
                "slow": {
                    "type": "webhook",
                    "allow_private_network": True,
                    "url": receiver.url + "/slow",
                    "concurrency": 1,
                },
                "email": {"type": "smtp", "port": inbox.port, "sender": "shop@example.com"},
            },
        )
        decide(tmp_path, *(message(f"s{i}", "slow") for i in range(3)))
        stop = asyncio.Event()
        task = asyncio.create_task(run_dispatcher(tmp_path, stop=stop))
        await until(lambda: receiver.to("/slow"))
        decide(tmp_path, message("e", "email"))
        email_s = await until(lambda: inbox.messages)
        assert email_s < 0.3, email_s
        assert len(receiver.to("/slow")) == 1  # concurrency 1: the others wait their turn
        with pytest.raises(Conflict), dispatcher_lock(tmp_path):
            pass
        await until(lambda: len(ledger(tmp_path, status="sent")) == 4)
        stop.set()
        await task
    assert len(ledger(tmp_path, status="sent")) == 4


async def test_a_killed_dispatcher_resumes_without_sending_twice(tmp_path: Path) -> None:
    with http_receiver() as receiver:
        receiver.script = {"/slow": [(200, 30, {})]}
        await configure(
            tmp_path,
            {
                "fast": {"type": "webhook", "allow_private_network": True, "url": receiver.url + "/fast"},
                "slow": {"type": "webhook", "allow_private_network": True, "url": receiver.url + "/slow"},
            },
        )
        decide(tmp_path, message("f1", "fast"), message("f2", "fast"), message("s", "slow"))
        child = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "polku", "dispatch", "--data-dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await until(lambda: len(ledger(tmp_path, status="sent")) == 2 and receiver.to("/slow"), 15)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        assert set(ledger(tmp_path, status="sent")) == {"f1", "f2"}
        assert ledger(tmp_path)["s"]["status"] == "pending"  # in flight when it died
        receiver.script = {"/slow": [(200, 0, {})]}
        await drain(tmp_path, Clock(time.time_ns() // 1_000_000))
    assert [request.headers["Idempotency-Key"] for request in receiver.to("/fast")].count("f1") == 1
    assert len(receiver.to("/fast")) == 2
    # The one window: received, not yet recorded. It comes again with the same key.
    assert [request.headers["Idempotency-Key"] for request in receiver.to("/slow")] == ["s", "s"]
    assert set(ledger(tmp_path, status="sent")) == {"f1", "f2", "s"}
    assert sorted(results(tmp_path)) == [("Message Sent", "f1"), ("Message Sent", "f2"), ("Message Sent", "s")]


async def test_the_processors_nudge_wakes_the_dispatcher_at_once(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        await configure(tmp_path, {"email": {"type": "smtp", "port": inbox.port, "sender": "shop@example.com"}})
        dispatcher = Dispatcher(tmp_path, clock=lambda: time.time_ns() // 1_000_000, poll_s=30.0)
        await dispatcher.start()
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await asyncio.sleep(0.2)  # the loop is asleep now, for up to 30 s
            decide(tmp_path, message("nudged", "email"))
            started = time.monotonic()
            nudger = Nudger(tmp_path)
            nudger.nudge()  # what the worker does after a commit with messages
            nudger.close()
            await until(lambda: len(inbox.messages) == 1, 5)
            assert time.monotonic() - started < 2.0
        finally:
            stop.set()
            dispatcher._wake.set()
            await task
            await dispatcher.close()
