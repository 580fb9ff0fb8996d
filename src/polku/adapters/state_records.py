"""The processor's records as table rows, for every state store on SQL.

``SqliteStateStore`` and ``PostgresStateStore`` write the same columns from a batch's
``StateChanges`` and keep the same bytes in them: msgpack for the records read whole
(profiles, accounts, links, refusals, identity changes, journey states), JSON for
what others read (the log's outbox, the dispatcher's messages, survey invitations,
feedback). The rows are built here once, in each table's column order, so the two
stores cannot drift apart. Pure: no connection and no SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias, TypeVar

import msgspec
from msgspec.structs import astuple

from polku.core.identity import LinkEvent
from polku.core.journey_state import JourneyState
from polku.core.profile import Profile
from polku.state import Account, MergeRecord, RefusalRecord, StateChanges, TimelineRow

DERIVED_TABLES: Final = (
    "identifiers",
    "links",
    "link_members",
    "profiles",
    "redirects",
    "timeline",
    "accounts",
    "account_members",
    "identity_refusals",
    "identity_changes",
    "timers",
    "processing_failures",
    "log_outbox",
    "feedback",
    "consent_withdrawn",
)
"""The tables a rebuild (``reset``) empties: records derived from the log alone. The
journey tables, survey invitations and learning counters depend on when events were
processed, not only on the log, so a rebuild keeps them."""

Row: TypeAlias = tuple[Any, ...]
Key = TypeVar("Key", bound=tuple[str, ...])
Record = TypeVar("Record")

encode_msgpack = msgspec.msgpack.Encoder().encode
encode_json = msgspec.json.Encoder().encode
decode_profile = msgspec.msgpack.Decoder(Profile).decode
decode_account = msgspec.msgpack.Decoder(Account).decode
decode_link = msgspec.msgpack.Decoder(LinkEvent).decode
decode_refusal = msgspec.msgpack.Decoder(RefusalRecord).decode
decode_change = msgspec.msgpack.Decoder(MergeRecord).decode
decode_journey_state = msgspec.msgpack.Decoder(JourneyState).decode


def encoded_rows(records: Mapping[Key, Record | None], encode: Callable[[Record], bytes]) -> list[Row]:
    """``(*key, encoded body)`` of each record of a ``StateChanges`` mapping such as
    ``accounts`` (a ``None`` record is left out)."""
    return [(*key, encode(record)) for key, record in records.items() if record is not None]


def written_and_deleted(
    records: Mapping[Key, Record | None], encode: Callable[[Record], bytes]
) -> tuple[list[Row], list[Key]]:
    """``encoded_rows``, and the keys whose record is ``None`` (deleted)."""
    return encoded_rows(records, encode), [key for key, record in records.items() if record is None]


def identifier_rows(changes: StateChanges) -> list[Row]:
    """(workspace, identifier, customer_id, first_ts, first_mid)"""
    return [
        (workspace, identifier, record.customer_id, record.first_key[0], record.first_key[1])
        for (workspace, identifier), record in changes.identifiers.items()
    ]


def link_rows(changes: StateChanges) -> list[Row]:
    """(workspace, set_hash, key_ts, key_mid, body)"""
    return [
        (workspace, set_hash, link.key[0], link.key[1], encode_msgpack(link))
        for (workspace, set_hash), link in changes.links.items()
    ]


def link_member_rows(changes: StateChanges) -> list[Row]:
    """(workspace, identifier, set_hash)"""
    return [
        (workspace, identifier, set_hash)
        for (workspace, set_hash), link in changes.links.items()
        for identifier in link.identifiers
    ]


def timeline_rows(timelines: Mapping[tuple[str, str], list[TimelineRow]]) -> list[Row]:
    """(workspace, customer_id, ts_ms, seq, anchor, type, name, channel, internal)"""
    return [
        (workspace, customer_id, *astuple(row)) for (workspace, customer_id), rows in timelines.items() for row in rows
    ]


def refusal_rows(changes: StateChanges) -> list[Row]:
    """(workspace, seq, ref, target, identifier, body); ``ref`` names the refusal, so
    recording it again (a recomputation) keeps one."""
    return [
        (
            workspace,
            record.seq,
            f"{record.ts_ms}|{record.message_id}|{record.identifier}",
            record.target,
            record.identifier,
            encode_msgpack(record),
        )
        for workspace, record in changes.refusals
    ]


def merge_rows(changes: StateChanges) -> list[Row]:
    """(workspace, seq, body) of ``identity_changes``"""
    return [(workspace, record.seq, encode_msgpack(record)) for workspace, record in changes.merges]


def outbox_rows(changes: StateChanges) -> list[Row]:
    """(workspace, body) of ``log_outbox``"""
    return [(workspace, encode_json(event)) for workspace, event in changes.emitted]


def transition_rows(changes: StateChanges) -> list[Row]:
    """(workspace, holder, customer_id, journey, version, instance, ts_ms, seq, kind,
    step, detail)"""
    return [(workspace, *astuple(record)) for workspace, record in changes.transitions]


def journey_stat_rows(changes: StateChanges) -> list[Row]:
    """(workspace, journey, version, metric, count to add)"""
    return [(*key, delta) for key, delta in changes.journey_stats.items() if delta]


def message_rows(changes: StateChanges) -> list[Row]:
    """(workspace, customer_id, key, channel, journey, created_ms, body)"""
    return [
        (
            message.workspace,
            message.customer_id,
            message.key,
            message.channel,
            message.journey,
            message.created_ms,
            encode_json(message),
        )
        for message in changes.messages
    ]


def invitation_rows(changes: StateChanges) -> list[Row]:
    """(workspace, id, customer_id, survey, status, reason, channel, created_ms,
    expires_ms, journey, body)"""
    return [
        (
            record.workspace,
            record.id,
            record.customer_id,
            record.survey,
            record.status,
            record.reason,
            record.channel,
            record.created_ms,
            record.expires_ms,
            record.journey,
            encode_json(record),
        )
        for record in changes.invitations
    ]


def feedback_answer_rows(changes: StateChanges) -> list[Row]:
    """(workspace, key, customer_id, ts_ms, seq, metric, invitation, body)"""
    return [
        (workspace, key, row.customer_id, row.ts_ms, row.seq, row.metric, row.invitation, encode_json(row))
        for (workspace, key), row in changes.feedback.items()
    ]


def consent_rows(changes: StateChanges) -> tuple[list[Row], list[Row]]:
    """(workspace, customer_id) of those who withdrew analytics consent, and of those
    who did not (or gave it back), from a batch."""
    withdrawn = [key for key, flag in changes.consent.items() if flag]
    kept = [key for key, flag in changes.consent.items() if not flag]
    return withdrawn, kept


def counter_rows(counters: Mapping[Key, list[int]]) -> list[Row]:
    """(*key, *amounts to add) of ``action_stats`` or ``decision_stats``"""
    return [(*key, *amounts) for key, amounts in counters.items()]
