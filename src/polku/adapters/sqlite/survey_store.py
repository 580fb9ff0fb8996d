"""Survey invitations and feedback answers in ``state.db``: written by the
processor with its batch, read by the API (invitations, pending in-app surveys,
the rows feedback metrics are computed from)."""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import msgspec

from polku.adapters.state_records import counter_rows, feedback_answer_rows, invitation_rows
from polku.core.journey_state import InvitationRecord
from polku.ports import SqlReads
from polku.state import FeedbackRow, StateChanges

MAX_METRIC_ROWS: Final = 1_000_000
_decode_invitation = msgspec.json.Decoder(InvitationRecord).decode
_decode_feedback = msgspec.json.Decoder(FeedbackRow).decode


def write_surveys(connection: sqlite3.Connection, changes: StateChanges) -> None:
    """In the batch's transaction. An invitation decided again (an isolated retry)
    keeps its first record; an answer replaces its invitation's earlier one only
    when it is later in the log (an edit)."""
    if changes.invitations:
        connection.executemany(
            "INSERT OR IGNORE INTO survey_invitations (workspace, id, customer_id, survey, status, reason, channel, "
            "created_ms, expires_ms, journey, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            invitation_rows(changes),
        )
    if changes.feedback:
        connection.executemany(
            "INSERT INTO feedback (workspace, key, customer_id, ts_ms, seq, metric, invitation, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, key) DO UPDATE SET "
            "customer_id = excluded.customer_id, ts_ms = excluded.ts_ms, seq = excluded.seq, "
            "metric = excluded.metric, body = excluded.body WHERE excluded.seq > feedback.seq",
            feedback_answer_rows(changes),
        )


def write_decisions(connection: sqlite3.Connection, changes: StateChanges) -> None:
    """The learning counters of the batch (added to what is stored)."""
    connection.executemany(
        "INSERT INTO action_stats (workspace, action, grp, offers, accepts, rejects) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (workspace, action, grp) DO UPDATE SET offers = offers + excluded.offers, "
        "accepts = accepts + excluded.accepts, rejects = rejects + excluded.rejects",
        counter_rows(changes.action_stats),
    )
    connection.executemany(
        "INSERT INTO decision_stats (workspace, arm, decisions, conversions) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (workspace, arm) DO UPDATE SET decisions = decisions + excluded.decisions, "
        "conversions = conversions + excluded.conversions",
        counter_rows(changes.decision_stats),
    )


def action_stats(connection: SqlReads, workspace: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {
        (str(action), str(group)): (int(offers), int(accepts), int(rejects))
        for action, group, offers, accepts, rejects in connection.execute(
            "SELECT action, grp, offers, accepts, rejects FROM action_stats WHERE workspace = ?", (workspace,)
        )
    }


def decision_stats(connection: SqlReads, workspace: str) -> dict[str, tuple[int, int]]:
    return {
        str(arm): (int(decisions), int(conversions))
        for arm, decisions, conversions in connection.execute(
            "SELECT arm, decisions, conversions FROM decision_stats WHERE workspace = ?", (workspace,)
        )
    }


def invitation(connection: SqlReads, invitation_id: str) -> InvitationRecord | None:
    row = connection.execute("SELECT body FROM survey_invitations WHERE id = ?", (invitation_id,)).fetchone()
    return _decode_invitation(row[0]) if row else None


def answer_of(connection: SqlReads, workspace: str, invitation_id: str) -> FeedbackRow | None:
    row = connection.execute(
        "SELECT body FROM feedback WHERE workspace = ? AND key = ?", (workspace, invitation_id)
    ).fetchone()
    return _decode_feedback(row[0]) if row else None


def invitations(
    connection: SqlReads,
    workspace: str,
    *,
    survey: str | None = None,
    customer_ids: list[str] | None = None,
    status: str | None = None,
    channel: str | None = None,
    since_ms: int = 0,
    until_ms: int | None = None,
    limit: int = 100,
) -> list[tuple[InvitationRecord, bool]]:
    """Invitations, newest first, each with whether it was answered."""
    clauses = ["i.workspace = ?", "i.created_ms >= ?"]
    parameters: list[Any] = [workspace, since_ms]
    if until_ms is not None:
        clauses.append("i.created_ms < ?")
        parameters.append(until_ms)
    for column, value in (("survey", survey), ("status", status), ("channel", channel)):
        if value is not None:
            clauses.append(f"i.{column} = ?")
            parameters.append(value)
    if customer_ids is not None:
        clauses.append(f"i.customer_id IN ({', '.join('?' * len(customer_ids))})")
        parameters.extend(customer_ids)
    rows = connection.execute(
        "SELECT i.body, f.key IS NOT NULL FROM survey_invitations i LEFT JOIN feedback f "
        f"ON f.workspace = i.workspace AND f.key = i.id WHERE {' AND '.join(clauses)} "
        "ORDER BY i.created_ms DESC, i.id LIMIT ?",
        [*parameters, limit],
    ).fetchall()
    return [(_decode_invitation(body), bool(answered)) for body, answered in rows]


def merged_ids(connection: SqlReads, workspace: str, customer_id: str, limit: int = 100) -> list[str]:
    """The customer's id and every id merged into it (invitations keep the id the
    customer had when they were decided)."""
    found = [customer_id]
    for current in found:
        if len(found) >= limit:
            break
        found.extend(
            str(old)
            for (old,) in connection.execute(
                "SELECT old_id FROM redirects WHERE workspace = ? AND new_id = ?", (workspace, current)
            )
            if old not in found
        )
    return found[:limit]


def invitation_counts(connection: SqlReads, workspace: str, since_ms: int, until_ms: int) -> list[InvitationRecord]:
    """Every sent invitation in a period (response rates)."""
    return [
        _decode_invitation(body)
        for (body,) in connection.execute(
            "SELECT body FROM survey_invitations WHERE workspace = ? AND status = 'sent' AND created_ms >= ? "
            "AND created_ms < ? LIMIT ?",
            (workspace, since_ms, until_ms, MAX_METRIC_ROWS),
        )
    ]


def feedback_rows(connection: SqlReads, workspace: str, since_ms: int, until_ms: int) -> list[FeedbackRow]:
    return [
        _decode_feedback(body)
        for (body,) in connection.execute(
            "SELECT body FROM feedback WHERE workspace = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms LIMIT ?",
            (workspace, since_ms, until_ms, MAX_METRIC_ROWS),
        )
    ]


def reason_counts(
    connection: SqlReads, workspace: str, survey: str | None, since_ms: int
) -> list[tuple[str, str, str, int]]:
    """(survey, status, reason, count) of invitations decided since a moment."""
    clauses = ["workspace = ?", "created_ms >= ?"]
    parameters: list[Any] = [workspace, since_ms]
    if survey is not None:
        clauses.append("survey = ?")
        parameters.append(survey)
    return [
        (str(s), str(status), str(reason), int(count))
        for s, status, reason, count in connection.execute(
            f"SELECT survey, status, reason, count(*) FROM survey_invitations WHERE {' AND '.join(clauses)} "
            "GROUP BY survey, status, reason ORDER BY survey, status, count(*) DESC",
            parameters,
        )
    ]
