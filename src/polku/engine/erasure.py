"""Asking for an erasure and waiting for its receipt (``polku.core.erasure``;
docs/privacy.md, "Erasing a person"): the API's ``DELETE /v1/profiles/{id}`` and
``polku privacy erase`` append the request to the log, where the processor meets
it in the person's order."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from polku.core.erasure import ERASURE_EVENT, ErasureReceipt
from polku.core.events import Event
from polku.engine.runtime import INTERNAL_SOURCE, internal_event
from polku.ports import AppendBatch, EventLog

DEFAULT_WAIT_S: Final = 10.0
MAX_WAIT_S: Final = 120.0


def new_erasure_id() -> str:
    return "er_" + secrets.token_hex(10)


def request_event(erasure: str, customer_id: str, *, suppress: bool, now_ms: int) -> Event:
    """The request as the log holds it: an internal event about the customer (the
    scale-out routes it to their partition), its messageId made of the erasure id."""
    return internal_event(
        ERASURE_EVENT,
        customer_id,
        now_ms,
        f"erasure|{erasure}",
        {"erasure": erasure, "suppress": suppress},
        now_ms,
    )


async def request_erasure(log: EventLog, workspace: str, customer_id: str, *, suppress: bool, now_ms: int) -> str:
    """Append the request durably; returns the erasure's id."""
    erasure = new_erasure_id()
    event = request_event(erasure, customer_id, suppress=suppress, now_ms=now_ms)
    await log.append(AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=now_ms, events=[event]))
    return erasure


async def wait_for_receipt(
    read: Callable[[], Awaitable[ErasureReceipt | None]], wait_s: float, *, done: Callable[[ErasureReceipt], bool]
) -> ErasureReceipt | None:
    """The receipt once ``done`` says so, or as it stands after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        found = await read()
        if (found is not None and done(found)) or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
