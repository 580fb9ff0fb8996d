"""What the API and the CLI show of journeys from the processor's state
(``state.db``, read-only): counters, a customer's live instances and transitions,
their inbox and messages, and agent notes. Reads only; the same functions serve
both edges.

This answers "why did (or didn't) this customer get this message?": every move of
an instance is a transition (``entered``, ``step``, ``action`` with ``sent`` /
``holdout`` / ``held`` / ``skipped:<reason>``, ``goal``, ``exited``, ``migrated``),
and every decided message is a row of ``messages``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from polku.core.events import format_millis
from polku.core.journey_state import Instance, JourneyState, account_holder
from polku.core.journey_stats import summarize
from polku.ports import SqlReads

_decode_state = msgspec.msgpack.Decoder(JourneyState).decode
_decode_json = msgspec.json.decode
MAX_TRANSITIONS: Final = 1000
MESSAGE_FIELDS: Final = ("channel", "purpose", "journey", "version", "step", "message", "to", "subject", "account")


def stats_rows(connection: SqlReads, workspace: str, journey: str) -> list[tuple[int, str, int]]:
    return [
        (int(version), str(metric), int(count))
        for version, metric, count in connection.execute(
            "SELECT version, metric, count FROM journey_stats WHERE workspace = ? AND journey = ?",
            (workspace, journey),
        )
    ]


def journey_totals(connection: SqlReads, workspace: str) -> dict[str, dict[str, Any]]:
    """Per journey: ``entered``, ``active`` and ``goal`` conversions (all versions)."""
    rows: dict[str, list[tuple[int, str, int]]] = {}
    for journey, version, metric, count in connection.execute(
        "SELECT journey, version, metric, count FROM journey_stats WHERE workspace = ?", (workspace,)
    ):
        rows.setdefault(str(journey), []).append((int(version), str(metric), int(count)))
    totals = {}
    for journey, found in rows.items():
        total = summarize(found)["total"]
        totals[journey] = {
            "entered": total["entered"]["total"],
            "active": total["active"],
            "goal": total["goal"]["conversions"],
        }
    return totals


def journey_state(connection: SqlReads, workspace: str, holder: str) -> JourneyState | None:
    row = connection.execute(
        "SELECT body FROM journey_states WHERE workspace = ? AND holder = ?", (workspace, holder)
    ).fetchone()
    return _decode_state(row[0]) if row is not None else None


def _instance_json(holder: str, instance: Instance) -> dict[str, Any]:
    return {
        "instance": instance.id,
        "holder": holder,
        "journey": instance.journey,
        "version": instance.version,
        "step": instance.step,
        "entered_at": format_millis(instance.entered_ms),
        "due_at": format_millis(instance.due_ms) if instance.due_ms else None,
        "holdout": instance.holdout,
        "variants": dict(instance.variants),
        "held": instance.held or None,
    }


def _transition_json(row: tuple[Any, ...]) -> dict[str, Any]:
    holder, journey, version, instance, ts_ms, seq, kind, step, detail = row
    return {
        "timestamp": format_millis(int(ts_ms)),
        "journey": journey,
        "version": int(version),
        "instance": instance,
        "holder": holder,
        "kind": kind,
        "step": step,
        "detail": detail or None,
        "seq": int(seq),
    }


def customer_journeys(
    connection: SqlReads,
    workspace: str,
    customer_id: str,
    accounts: Iterable[str],
    *,
    journey: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The customer's live instances (their own and their accounts') and their
    transitions, newest first."""
    instances = []
    for holder in [customer_id, *(account_holder(account) for account in accounts)]:
        state = journey_state(connection, workspace, holder)
        if state is None:
            continue
        instances += [
            _instance_json(holder, instance)
            for instance in state.instances.values()
            if journey is None or instance.journey == journey
        ]
    sql = (
        "SELECT holder, journey, version, instance, ts_ms, seq, kind, step, detail FROM journey_transitions "
        "WHERE workspace = ? AND customer_id = ?"
    )
    parameters: list[Any] = [workspace, customer_id]
    if journey is not None:
        sql += " AND journey = ?"
        parameters.append(journey)
    rows = connection.execute(sql + " ORDER BY id DESC LIMIT ?", [*parameters, limit]).fetchall()
    return {
        "customer_id": customer_id,
        "instances": sorted(instances, key=lambda item: (item["journey"], item["holder"])),
        "transitions": [_transition_json(row) for row in rows],
    }


def customer_messages(
    connection: SqlReads,
    workspace: str,
    customer_id: str,
    now_ms: int,
    *,
    journey: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """The in-app inbox (unexpired, newest first) and the messages decided for the
    customer (queued for or handed to the dispatcher), newest first."""
    state = journey_state(connection, workspace, customer_id)
    inbox = [
        {
            "key": item.key,
            "created_at": format_millis(item.ts_ms),
            "expires_at": format_millis(item.expires_ms),
            "journey": item.journey,
            "step": item.step,
            "message": item.message,
            "purpose": item.purpose,
            "subject": item.subject,
            "body": item.body,
            "payload": item.payload,
        }
        for item in sorted(state.inbox if state else [], key=lambda item: item.ts_ms, reverse=True)
        if item.expires_ms > now_ms and (journey is None or item.journey == journey)
    ]
    sql = "SELECT key, created_ms, body FROM messages WHERE workspace = ? AND customer_id = ?"
    parameters: list[Any] = [workspace, customer_id]
    if journey is not None:
        sql += " AND journey = ?"
        parameters.append(journey)
    messages = []
    for key, created_ms, body in connection.execute(sql + " ORDER BY id DESC LIMIT ?", [*parameters, limit]):
        decoded = _decode_json(body)
        fields = decoded if isinstance(decoded, dict) else {}
        messages.append(
            {"key": key, "created_at": format_millis(int(created_ms)), **{f: fields.get(f) for f in MESSAGE_FIELDS}}
        )
    return {"customer_id": customer_id, "inbox": inbox, "messages": messages}


def agent_notes(connection: SqlReads, workspace: str, customer_id: str) -> list[dict[str, Any]]:
    """The customer's agent notes, newest first (the agent view)."""
    state = journey_state(connection, workspace, customer_id)
    return [
        {"text": note.text, "at": format_millis(note.ts_ms), "journey": note.journey, "step": note.step}
        for note in sorted(state.notes if state else [], key=lambda note: note.ts_ms, reverse=True)
    ]
