"""The processor's state in PostgreSQL: its tables, their migrations, how text is
stored, and the statements that write a batch into them (docs/postgresql.md, "The
state store").

The tables are SQLite's ``state.db`` (``polku.adapters.sqlite.state_schema``) with
PostgreSQL types, in polku's schema beside the catalog, numbered on a track of their
own (``state_migrations``) by the catalog's runner, under the same advisory lock. Two
differences: ``checkpoints`` holds one row per ``scope`` (each worker's share of the
stream has its own position), and ``timers.part`` is the timer's partition
(``polku.adapters.nats.routing.partition`` of workspace and holder), so a worker finds
the timers of the partitions it holds through the ``(part, due_ms)`` index.

Id columns are ``COLLATE "C"``: rows come back in code-point order, as from SQLite.

U+0000 in text: ingest does not refuse it in a ``userId``, an ``anonymousId``, a
``groupId``, an event or page name or a ``messageId`` (``polku.core.events._id``
checks only the length), and these reach identifiers, anchors, timeline names,
account ids, holders, refusal keys, journey details and decision groups. PostgreSQL's
``text`` cannot hold it, so every string the store sends goes through ``escape``
and every string it reads through ``unescape``: U+0000 is written ``\\x01\\x01``
and U+0001 ``\\x01\\x02``. The code is prefix-free and keeps the order of code
points, so equality, ``COLLATE "C"`` order and prefixes mean what they mean in
SQLite; a string with neither character (all but a handful) is stored as it is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final, LiteralString

from polku.adapters import state_erasure
from polku.adapters.nats.routing import partition
from polku.adapters.postgres import schema as schema_runner
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration
from polku.adapters.state_records import (
    Row,
    consent_rows,
    counter_rows,
    encode_msgpack,
    encoded_rows,
    feedback_answer_rows,
    identifier_rows,
    invitation_rows,
    journey_stat_rows,
    link_member_rows,
    link_rows,
    merge_rows,
    message_rows,
    outbox_rows,
    refusal_rows,
    timeline_rows,
    transition_rows,
    written_and_deleted,
)
from polku.state import StateChanges

TRACK_TABLE: Final = "state_migrations"
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "processor state: identity, profiles, timeline, accounts, timers, outboxes, journeys, surveys, decisions",
        """
        CREATE TABLE meta (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
        CREATE TABLE checkpoints (scope TEXT COLLATE "C" PRIMARY KEY, seq BIGINT NOT NULL);
        CREATE TABLE identifiers (
            workspace TEXT COLLATE "C" NOT NULL, identifier TEXT COLLATE "C" NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL, first_ts BIGINT NOT NULL, first_mid TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (workspace, identifier)
        );
        CREATE TABLE links (
            workspace TEXT COLLATE "C" NOT NULL, set_hash TEXT COLLATE "C" NOT NULL,
            key_ts BIGINT NOT NULL, key_mid TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (workspace, set_hash)
        );
        CREATE TABLE link_members (
            workspace TEXT COLLATE "C" NOT NULL, identifier TEXT COLLATE "C" NOT NULL,
            set_hash TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (workspace, identifier, set_hash)
        );
        CREATE TABLE profiles (
            workspace TEXT COLLATE "C" NOT NULL, customer_id TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (workspace, customer_id)
        );
        CREATE TABLE redirects (
            workspace TEXT COLLATE "C" NOT NULL, old_id TEXT COLLATE "C" NOT NULL, new_id TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (workspace, old_id)
        );
        CREATE INDEX redirects_new_id ON redirects (workspace, new_id);
        CREATE TABLE timeline (
            workspace TEXT COLLATE "C" NOT NULL, customer_id TEXT COLLATE "C" NOT NULL,
            ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL, anchor TEXT COLLATE "C" NOT NULL, type TEXT NOT NULL,
            name TEXT COLLATE "C", channel TEXT COLLATE "C" NOT NULL, internal BOOLEAN NOT NULL,
            PRIMARY KEY (workspace, customer_id, ts_ms, seq)
        );
        CREATE TABLE accounts (
            workspace TEXT COLLATE "C" NOT NULL, account_id TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (workspace, account_id)
        );
        CREATE TABLE account_members (
            workspace TEXT COLLATE "C" NOT NULL, account_id TEXT COLLATE "C" NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (workspace, account_id, customer_id)
        );
        CREATE TABLE identity_refusals (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL, ref TEXT COLLATE "C" NOT NULL, target TEXT COLLATE "C" NOT NULL,
            identifier TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            UNIQUE (workspace, ref)
        );
        CREATE INDEX identity_refusals_workspace ON identity_refusals (workspace, id);
        CREATE INDEX identity_refusals_target ON identity_refusals (workspace, target);
        CREATE INDEX identity_refusals_identifier ON identity_refusals (workspace, identifier);
        CREATE TABLE identity_changes (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL, body BYTEA NOT NULL
        );
        CREATE INDEX identity_changes_workspace ON identity_changes (workspace, id);
        -- `customer_id` is the timer's holder: a customer, or `account:<id>`.
        CREATE TABLE timers (
            workspace TEXT COLLATE "C" NOT NULL, customer_id TEXT COLLATE "C" NOT NULL,
            due_ms BIGINT NOT NULL, part INTEGER NOT NULL,
            PRIMARY KEY (workspace, customer_id)
        );
        CREATE INDEX timers_due ON timers (due_ms);
        CREATE INDEX timers_part_due ON timers (part, due_ms);
        CREATE TABLE log_outbox (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            body BYTEA NOT NULL
        );
        CREATE TABLE processing_failures (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL, error TEXT NOT NULL
        );
        CREATE INDEX processing_failures_workspace ON processing_failures (workspace, id);

        -- Journeys (docs/journeys.md): not derived from the log alone, so a rebuild
        -- keeps them. `messages` is the dispatcher's outbox.
        CREATE TABLE journey_states (
            workspace TEXT COLLATE "C" NOT NULL, holder TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (workspace, holder)
        );
        CREATE TABLE journey_transitions (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            holder TEXT COLLATE "C" NOT NULL, customer_id TEXT COLLATE "C" NOT NULL,
            journey TEXT COLLATE "C" NOT NULL, version INTEGER NOT NULL, instance TEXT COLLATE "C" NOT NULL,
            ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, step TEXT COLLATE "C" NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX journey_transitions_customer ON journey_transitions (workspace, customer_id, id);
        CREATE TABLE journey_stats (
            workspace TEXT COLLATE "C" NOT NULL, journey TEXT COLLATE "C" NOT NULL, version INTEGER NOT NULL,
            metric TEXT COLLATE "C" NOT NULL, count BIGINT NOT NULL,
            PRIMARY KEY (workspace, journey, version, metric)
        );
        CREATE TABLE messages (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace TEXT COLLATE "C" NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL UNIQUE,
            channel TEXT COLLATE "C" NOT NULL, journey TEXT COLLATE "C" NOT NULL, created_ms BIGINT NOT NULL,
            body BYTEA NOT NULL
        );
        CREATE INDEX messages_customer ON messages (workspace, customer_id, id);

        -- Surveys (docs/surveys.md): invitations are decisions (kept by a rebuild);
        -- feedback rows are derived from the log's feedback events.
        CREATE TABLE survey_invitations (
            workspace TEXT COLLATE "C" NOT NULL, id TEXT COLLATE "C" NOT NULL UNIQUE,
            customer_id TEXT COLLATE "C" NOT NULL, survey TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL,
            reason TEXT NOT NULL, channel TEXT COLLATE "C" NOT NULL, created_ms BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL, journey TEXT COLLATE "C" NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (workspace, id)
        );
        CREATE INDEX survey_invitations_customer ON survey_invitations (workspace, customer_id, created_ms);
        CREATE INDEX survey_invitations_survey ON survey_invitations (workspace, survey, created_ms);
        CREATE TABLE feedback (
            workspace TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL,
            customer_id TEXT COLLATE "C" NOT NULL, ts_ms BIGINT NOT NULL, seq BIGINT NOT NULL,
            metric TEXT COLLATE "C" NOT NULL, invitation TEXT COLLATE "C", body BYTEA NOT NULL,
            PRIMARY KEY (workspace, key)
        );
        CREATE INDEX feedback_ts ON feedback (workspace, ts_ms);
        CREATE INDEX feedback_customer ON feedback (workspace, customer_id, ts_ms);

        -- Next-best-action learning (docs/decisions.md): counters, kept by a rebuild.
        CREATE TABLE action_stats (
            workspace TEXT COLLATE "C" NOT NULL, action TEXT COLLATE "C" NOT NULL, grp TEXT COLLATE "C" NOT NULL,
            offers BIGINT NOT NULL, accepts BIGINT NOT NULL, rejects BIGINT NOT NULL,
            PRIMARY KEY (workspace, action, grp)
        );
        CREATE TABLE decision_stats (
            workspace TEXT COLLATE "C" NOT NULL, arm TEXT COLLATE "C" NOT NULL,
            decisions BIGINT NOT NULL, conversions BIGINT NOT NULL,
            PRIMARY KEY (workspace, arm)
        );
        """,
    ),
    Migration("erasure: receipts, and the hashes that keep the erased out", state_erasure.POSTGRES_TABLES),
)


async def migrate(url: str, *, schema: str = DEFAULT_SCHEMA, allow_destructive: bool = False) -> list[int]:
    """Apply the state's pending migrations (the catalog's runner, on this module's
    track); the versions this call applied."""
    return await schema_runner.migrate(
        url, schema=schema, migrations=MIGRATIONS, allow_destructive=allow_destructive, table=TRACK_TABLE
    )


# -- U+0000 in text ------------------------------------------------------------------

_ESCAPED: Final = re.compile("\x01([\x01\x02])")


def escape(text: str) -> str:
    """``text`` without U+0000, for a ``text`` column (module docstring)."""
    if "\x00" not in text and "\x01" not in text:
        return text
    return text.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def unescape(text: str) -> str:
    if "\x01" not in text:
        return text
    return _ESCAPED.sub(lambda found: "\x00" if found[1] == "\x01" else "\x01", text)


# -- what a commit writes ------------------------------------------------------------

Statement = tuple[LiteralString, list[Row]]


def batch_statements(changes: StateChanges, timer_partitions: int) -> Iterator[Statement]:
    """What ``PostgresStateStore.commit`` sends for a batch: each statement with its
    rows (the rows of its ``unnest`` arrays), those that have rows, in
    ``SqliteStateStore._write``'s order (a later one may undo an earlier one's work:
    a timer set after its customer's profile is deleted)."""
    for query, rows in (
        *_journey_statements(changes),
        *_survey_and_decision_statements(changes),
        *_identity_statements(changes),
        *_timeline_statements(changes),
        *_account_and_refusal_statements(changes),
        *_timer_statements(changes, timer_partitions),
        (_INSERT_FAILURES, list(changes.failures)),
        (_INSERT_OUTBOX, outbox_rows(changes)),
    ):
        if rows:
            yield query, rows


def _journey_statements(changes: StateChanges) -> list[Statement]:
    states, deleted = written_and_deleted(changes.journey_states, encode_msgpack)
    return [
        (_DELETE_JOURNEY_STATES, list(deleted)),
        (_UPSERT_JOURNEY_STATES, states),
        (_INSERT_TRANSITIONS, transition_rows(changes)),
        (_ADD_JOURNEY_STATS, journey_stat_rows(changes)),
        (_INSERT_MESSAGES, message_rows(changes)),
    ]


def _survey_and_decision_statements(changes: StateChanges) -> list[Statement]:
    return [
        (_INSERT_INVITATIONS, invitation_rows(changes)),
        (_UPSERT_FEEDBACK, feedback_answer_rows(changes)),
        (_ADD_ACTION_STATS, counter_rows(changes.action_stats)),
        (_ADD_DECISION_STATS, counter_rows(changes.decision_stats)),
    ]


def _identity_statements(changes: StateChanges) -> list[Statement]:
    profiles, deleted = written_and_deleted(changes.profiles, encode_msgpack)
    return [
        (_UPSERT_IDENTIFIERS, identifier_rows(changes)),
        (_UPSERT_LINKS, link_rows(changes)),
        (_INSERT_LINK_MEMBERS, link_member_rows(changes)),
        (_DELETE_PROFILES, list(deleted)),
        (_DELETE_TIMERS, list(deleted)),
        (_UPSERT_PROFILES, profiles),
        (_DELETE_REDIRECTS, sorted(changes.unredirected)),
        (_UPSERT_REDIRECTS, [(workspace, old, new) for (workspace, old), new in changes.redirects.items()]),
        (_DELETE_CONSENT, [*deleted, *consent_rows(changes)[1]]),
        (_INSERT_CONSENT, consent_rows(changes)[0]),
    ]


def _timeline_statements(changes: StateChanges) -> list[Statement]:
    """A replaced timeline is deleted, then every row is written once: of two rows at
    one (ts_ms, seq), the later one, as ``INSERT OR REPLACE`` leaves it in SQLite."""
    rows = timeline_rows(changes.timeline_replaced) + timeline_rows(changes.timeline)
    unique = {row[:4]: row for row in rows}
    return [(_DELETE_TIMELINES, list(changes.timeline_replaced)), (_UPSERT_TIMELINE, list(unique.values()))]


def _account_and_refusal_statements(changes: StateChanges) -> list[Statement]:
    cleared = [
        (workspace, identifier) for workspace, identifiers in changes.refusals_cleared for identifier in identifiers
    ]
    return [
        (_UPSERT_ACCOUNTS, encoded_rows(changes.accounts, encode_msgpack)),
        (_DELETE_MEMBERS, sorted(changes.members_removed)),
        (_INSERT_MEMBERS, sorted(changes.members_added)),
        (_DELETE_REFUSALS, cleared),
        (_INSERT_REFUSALS, refusal_rows(changes)),
        (_INSERT_CHANGES, merge_rows(changes)),
    ]


def _timer_statements(changes: StateChanges, timer_partitions: int) -> list[Statement]:
    return [
        (_DELETE_TIMERS, [key for key, due_ms in changes.timers.items() if due_ms is None]),
        (
            _UPSERT_TIMERS,
            [
                (workspace, holder, due_ms, partition(workspace, holder, timer_partitions))
                for (workspace, holder), due_ms in changes.timers.items()
                if due_ms is not None
            ],
        ),
    ]


_DELETE_JOURNEY_STATES: Final = (
    "DELETE FROM journey_states WHERE (workspace, holder) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_UPSERT_JOURNEY_STATES: Final = (
    "INSERT INTO journey_states (workspace, holder, body) SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
    "ON CONFLICT (workspace, holder) DO UPDATE SET body = excluded.body"
)
_INSERT_TRANSITIONS: Final = (
    "INSERT INTO journey_transitions (workspace, holder, customer_id, journey, version, instance, ts_ms, seq, kind, "
    "step, detail) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::integer[], %b::text[], "
    "%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[])"
)
_ADD_JOURNEY_STATS: Final = (
    "INSERT INTO journey_stats (workspace, journey, version, metric, count) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::integer[], %b::text[], %b::bigint[]) "
    "ON CONFLICT (workspace, journey, version, metric) DO UPDATE SET count = journey_stats.count + excluded.count"
)
# A message decided again (a rebuild, an isolated retry) is kept once, by its key.
_INSERT_MESSAGES: Final = (
    "INSERT INTO messages (workspace, customer_id, key, channel, journey, created_ms, body) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bytea[]) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_INVITATIONS: Final = (
    "INSERT INTO survey_invitations (workspace, id, customer_id, survey, status, reason, channel, created_ms, "
    "expires_ms, journey, body) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::bytea[]) ON CONFLICT DO NOTHING"
)
_UPSERT_FEEDBACK: Final = (
    "INSERT INTO feedback (workspace, key, customer_id, ts_ms, seq, metric, invitation, body) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], "
    "%b::bytea[]) ON CONFLICT (workspace, key) DO UPDATE SET customer_id = excluded.customer_id, "
    "ts_ms = excluded.ts_ms, seq = excluded.seq, metric = excluded.metric, body = excluded.body "
    "WHERE excluded.seq > feedback.seq"
)
_ADD_ACTION_STATS: Final = (
    "INSERT INTO action_stats (workspace, action, grp, offers, accepts, rejects) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[]) "
    "ON CONFLICT (workspace, action, grp) DO UPDATE SET offers = action_stats.offers + excluded.offers, "
    "accepts = action_stats.accepts + excluded.accepts, rejects = action_stats.rejects + excluded.rejects"
)
_ADD_DECISION_STATS: Final = (
    "INSERT INTO decision_stats (workspace, arm, decisions, conversions) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[]) "
    "ON CONFLICT (workspace, arm) DO UPDATE SET decisions = decision_stats.decisions + excluded.decisions, "
    "conversions = decision_stats.conversions + excluded.conversions"
)
_UPSERT_IDENTIFIERS: Final = (
    "INSERT INTO identifiers (workspace, identifier, customer_id, first_ts, first_mid) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[]) "
    "ON CONFLICT (workspace, identifier) DO UPDATE SET customer_id = excluded.customer_id, "
    "first_ts = excluded.first_ts, first_mid = excluded.first_mid"
)
# A link keeps the key of the earliest event that carried it.
_UPSERT_LINKS: Final = (
    "INSERT INTO links (workspace, set_hash, key_ts, key_mid, body) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[], %b::bytea[]) "
    "ON CONFLICT (workspace, set_hash) DO UPDATE SET key_ts = excluded.key_ts, key_mid = excluded.key_mid, "
    "body = excluded.body WHERE (excluded.key_ts, excluded.key_mid) < (links.key_ts, links.key_mid)"
)
_INSERT_LINK_MEMBERS: Final = (
    "INSERT INTO link_members (workspace, identifier, set_hash) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING"
)
_DELETE_PROFILES: Final = (
    "DELETE FROM profiles WHERE (workspace, customer_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_UPSERT_PROFILES: Final = (
    "INSERT INTO profiles (workspace, customer_id, body) SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
    "ON CONFLICT (workspace, customer_id) DO UPDATE SET body = excluded.body"
)
_DELETE_REDIRECTS: Final = (
    "DELETE FROM redirects WHERE (workspace, old_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_UPSERT_REDIRECTS: Final = (
    "INSERT INTO redirects (workspace, old_id, new_id) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) "
    "ON CONFLICT (workspace, old_id) DO UPDATE SET new_id = excluded.new_id"
)
_DELETE_TIMELINES: Final = (
    "DELETE FROM timeline WHERE (workspace, customer_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_UPSERT_TIMELINE: Final = (
    "INSERT INTO timeline (workspace, customer_id, ts_ms, seq, anchor, type, name, channel, internal) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::boolean[]) ON CONFLICT (workspace, customer_id, ts_ms, seq) DO UPDATE SET "
    "anchor = excluded.anchor, type = excluded.type, name = excluded.name, channel = excluded.channel, "
    "internal = excluded.internal"
)
_UPSERT_ACCOUNTS: Final = (
    "INSERT INTO accounts (workspace, account_id, body) SELECT * FROM unnest(%b::text[], %b::text[], %b::bytea[]) "
    "ON CONFLICT (workspace, account_id) DO UPDATE SET body = excluded.body"
)
_DELETE_MEMBERS: Final = (
    "DELETE FROM account_members WHERE (workspace, account_id, customer_id) IN "
    "(SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]))"
)
_INSERT_MEMBERS: Final = (
    "INSERT INTO account_members (workspace, account_id, customer_id) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING"
)
_DELETE_REFUSALS: Final = (
    "DELETE FROM identity_refusals r USING unnest(%b::text[], %b::text[]) AS cleared (workspace, identifier) "
    "WHERE r.workspace = cleared.workspace AND (r.target = cleared.identifier OR r.identifier = cleared.identifier)"
)
_INSERT_REFUSALS: Final = (
    "INSERT INTO identity_refusals (workspace, seq, ref, target, identifier, body) "
    "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[], %b::bytea[]) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_CHANGES: Final = (
    "INSERT INTO identity_changes (workspace, seq, body) SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bytea[])"
)
_DELETE_CONSENT: Final = (
    "DELETE FROM consent_withdrawn WHERE (workspace, customer_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_INSERT_CONSENT: Final = (
    "INSERT INTO consent_withdrawn (workspace, customer_id) SELECT * FROM unnest(%b::text[], %b::text[]) "
    "ON CONFLICT DO NOTHING"
)
_DELETE_TIMERS: Final = (
    "DELETE FROM timers WHERE (workspace, customer_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
)
_UPSERT_TIMERS: Final = (
    "INSERT INTO timers (workspace, customer_id, due_ms, part) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::integer[]) "
    "ON CONFLICT (workspace, customer_id) DO UPDATE SET due_ms = excluded.due_ms, part = excluded.part"
)
_INSERT_FAILURES: Final = (
    "INSERT INTO processing_failures (workspace, seq, error) SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[])"
)
_INSERT_OUTBOX: Final = "INSERT INTO log_outbox (workspace, body) SELECT * FROM unnest(%b::text[], %b::bytea[])"
