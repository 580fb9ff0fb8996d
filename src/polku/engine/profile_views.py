"""What the API and the CLI show of customers and accounts: the profile, the
timeline across channels and merged identifiers, the agent view and accounts.
Reads only (the processor writes); the same functions serve both edges."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from polku.adapters.postgres.log_reader import PostgresLogReader
from polku.adapters.postgres.qmark import QmarkConnection
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import StateReads, open_state_reader
from polku.core.attributes import parse_duration
from polku.core.errors import InvalidInput, NotFound, NotServedHere
from polku.core.events import SYSTEM_CHANNEL, Event, format_millis
from polku.core.identity import BUILT_IN_TYPES, lookup_identifier
from polku.core.profile import Profile, identifiers_by_type
from polku.engine.journey_reports import agent_notes
from polku.engine.policy_views import contact_policy
from polku.engine.runtime import WorkspaceRuntime
from polku.ports import SqlReads
from polku.state import Account, TimelineRow

_decode_event = msgspec.json.Decoder(Event).decode
MAX_TIMELINE_PAGE: Final = 200
RECENT_EVENTS: Final = 20
RECENT_PURCHASES: Final = 5
CONTEXT_SCAN: Final = 500
"""Timeline entries the agent view reads at most (newest first)."""
REASON_SCAN: Final = 50
"""The most recent events the likely-reason rule looks at (within the look-back)."""
RECENT_CUSTOMERS: Final = 20
MAX_RECENT_CUSTOMERS: Final = 200
RECENT_SCAN: Final = 400
RECENT_SCAN_PER_CUSTOMER: Final = 20
"""Log entries (newest first) read to find the recently active customers: 20 per
customer asked for, at least 400 (segment events and the like crowd the tail)."""


def embedded_only(what: str) -> NotServedHere:
    """The error of a read the scale-out API does not serve yet."""
    return NotServedHere(
        f"{what} is served by the embedded deployment only; the scale-out API does not serve it yet "
        '(docs/scale-out.md, "What the API serves")'
    )


class ProfileViews:
    """Reads of one deployment: the embedded files (SQLite) or the scale-out's
    PostgreSQL. A read that only the embedded one answers raises ``NotServedHere``
    on the other (``sqlite()``)."""

    def __init__(self, state: StateReads | PostgresStateStore, log: SqliteLogReader | PostgresLogReader) -> None:
        self.state = state
        self.log = log
        self._qmark: QmarkConnection | None = None

    @classmethod
    def of_files(cls, data_dir: Path) -> ProfileViews:
        return cls(open_state_reader(data_dir), SqliteLogReader(data_dir))

    @classmethod
    def of_store(cls, store_url: str, schema: str) -> ProfileViews:
        state = PostgresStateStore(store_url, schema=schema, migrate=False)
        try:
            return cls(state, PostgresLogReader(store_url, schema=schema))
        except BaseException:
            state.close()
            raise

    @property
    def reports(self) -> SqlReads:
        """A connection for the journey reports (``journey_reports``), on either
        deployment."""
        if isinstance(self.state, StateReads):
            return self.state.connection
        if self._qmark is None:
            self._qmark = QmarkConnection(self.state.url, schema=self.state.schema)
        return self._qmark

    def close(self) -> None:
        if self._qmark is not None:
            self._qmark.close()
        if isinstance(self.state, StateReads):
            self.state.connection.close()
        else:
            self.state.close()
        self.log.close()

    @property
    def sql(self) -> sqlite3.Connection:
        """The embedded state's connection, for reads written in SQLite's SQL."""
        return self.sqlite("this read")[0]

    @property
    def log_sql(self) -> sqlite3.Connection:
        """The embedded log's connection, for reads written in SQLite's SQL."""
        return self.sqlite("this read")[1].connection

    def sqlite(self, what: str) -> tuple[sqlite3.Connection, SqliteLogReader]:
        """The embedded state's connection and log, for a read written in SQLite's SQL."""
        if isinstance(self.state, StateReads) and isinstance(self.log, SqliteLogReader):
            return self.state.connection, self.log
        raise embedded_only(what)

    # -- finding a customer -------------------------------------------------------

    def find(self, workspace: str, runtime: WorkspaceRuntime, kind: str, value: str) -> str:
        """The live customer id for ``kind=value`` (an identifier type, or
        ``customer_id``). Raises ``NotFound`` or ``InvalidInput``."""
        if kind == "customer_id":
            live = self.state.redirect(workspace, value)
            if self.state.profile(workspace, live) is None:
                raise NotFound(f"customer {value!r} does not exist")
            return live
        if kind not in BUILT_IN_TYPES and kind not in runtime.rules.identifiers:
            known = ", ".join(["customer_id", *runtime.rules.types()])
            raise InvalidInput(f"unknown identifier type {kind!r} (known: {known})", field=kind)
        identifier = lookup_identifier(kind, value, runtime.rules)
        if identifier is None:
            raise InvalidInput(f"{value!r} is not a valid {kind}", field=kind)
        record = self.state.identifier(workspace, identifier)
        if record is None:
            raise NotFound(f"no customer has {kind} {value!r}")
        return self.state.redirect(workspace, record.customer_id)

    def find_any(self, workspace: str, runtime: WorkspaceRuntime, text: str) -> str:
        """A CLI argument: ``type:value``, a customer id, or a bare value tried as
        every identifier type in turn."""
        kind, sep, value = text.partition(":")
        if sep and (kind in BUILT_IN_TYPES or kind in runtime.rules.identifiers or kind == "customer_id"):
            return self.find(workspace, runtime, kind, value)
        if text.startswith("c_") and self.state.profile(workspace, self.state.redirect(workspace, text)):
            return self.state.redirect(workspace, text)
        for candidate in runtime.rules.types():
            try:
                return self.find(workspace, runtime, candidate, text)
            except (NotFound, InvalidInput):
                continue
        raise NotFound(f"no customer has an identifier {text!r}")

    def recent(self, workspace: str, limit: int = RECENT_CUSTOMERS) -> list[dict[str, Any]]:
        """The customers behind the newest processed events of the log, newest first:
        a short list to start from (cheap: one backwards read of the log's tail)."""
        if not 1 <= limit <= MAX_RECENT_CUSTOMERS:
            raise InvalidInput(f"limit must be 1-{MAX_RECENT_CUSTOMERS}", field="limit")
        _, log = self.sqlite("the recently active customers")
        rows = log.connection.execute(
            "SELECT user_id, anonymous_id, ts_ms, channel, type, name FROM events "
            "WHERE seq <= ? AND workspace = ? ORDER BY seq DESC LIMIT ?",
            (self.state.checkpoint(), workspace, max(RECENT_SCAN, limit * RECENT_SCAN_PER_CUSTOMER)),
        ).fetchall()
        seen: dict[str, dict[str, Any]] = {}
        looked_up: dict[str, str | None] = {}
        for user_id, anonymous_id, ts_ms, channel, kind, name in rows:
            if channel == SYSTEM_CHANNEL or not (user_id or anonymous_id):
                continue
            identifier = f"user_id:{user_id}" if user_id else f"anonymous_id:{anonymous_id}"
            if identifier not in looked_up:
                record = self.state.identifier(workspace, identifier)
                looked_up[identifier] = self.state.redirect(workspace, record.customer_id) if record else None
            customer_id = looked_up[identifier]
            if customer_id is None or customer_id in seen:
                continue
            seen[customer_id] = {"customer_id": customer_id, "event": name or kind, "channel": channel, "at": ts_ms}
            if len(seen) >= limit:
                break
        profiles = self.state.profiles(workspace, list(seen))
        found: list[dict[str, Any]] = []
        for customer_id, item in seen.items():
            profile = profiles.get(customer_id)
            if profile is None:
                continue
            traits = {name: value[0] for name, value in profile.traits.items()}
            identifiers = sorted(identifier.partition(":")[2] for identifier in profile.identifiers)
            found.append(
                {
                    **item,
                    "at": format_millis(item["at"]),
                    "name": display_name(traits),
                    "contact": next(
                        (
                            i.partition(":")[2]
                            for i in sorted(profile.identifiers)
                            if i.startswith(("email:", "phone:"))
                        ),
                        identifiers[0] if identifiers else customer_id,
                    ),
                }
            )
        return sorted(found, key=lambda item: item["at"], reverse=True)

    def _profile(self, workspace: str, customer_id: str) -> Profile:
        profile = self.state.profile(workspace, customer_id)
        if profile is None:
            raise NotFound(f"customer {customer_id!r} does not exist")
        return profile

    # -- the profile --------------------------------------------------------------

    def profile_json(self, workspace: str, runtime: WorkspaceRuntime, customer_id: str, now_ms: int) -> dict[str, Any]:
        profile = self._profile(workspace, customer_id)
        accounts = self.state.accounts(workspace, list(profile.accounts))
        return {
            "customer_id": profile.customer_id,
            "identifiers": identifiers_by_type(profile.identifiers),
            "traits": {name: value[0] for name, value in profile.traits.items()},
            "trait_updated_at": {name: format_millis(value[1]) for name, value in profile.traits.items()},
            "attributes": runtime.attributes.values(profile.attributes, now_ms),
            "segments": {name: format_millis(ms) for name, ms in sorted(profile.segments.items())},
            "accounts": [_account_summary(account_id, accounts.get(account_id)) for account_id in profile.accounts],
            "last_seen": {channel: format_millis(ms) for channel, ms in sorted(profile.last_seen.items())},
            "feedback": {
                metric: {"score": answer[0], "at": format_millis(answer[1]), "channel": answer[2]}
                for metric, answer in sorted(profile.feedback.items())
            },
            "first_seen": format_millis(profile.first_seen_ms) if profile.first_seen_ms else None,
            "events": profile.events,
            "identity_conflict": profile.conflicted,
            "refused_links": self.refusals_of(workspace, profile) if profile.conflicted else [],
        }

    def refusals_of(self, workspace: str, profile: Profile) -> list[dict[str, Any]]:
        return [refusal_json(i, r) for i, r in self.state.refusals_about(workspace, profile.identifiers)]

    # -- consent and the contact policy ---------------------------------------------

    def policy(self, workspace: str, runtime: WorkspaceRuntime, customer_id: str, now_ms: int) -> dict[str, Any]:
        """Per purpose: the customer's consent and what the contact policy would
        decide for a message on each channel now (``policy_views.contact_policy``)."""
        profile = self._profile(workspace, customer_id)
        return {"customer_id": customer_id, **contact_policy(self.state, workspace, runtime, profile, now_ms)}

    # -- the timeline ---------------------------------------------------------------

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None, limit: int
    ) -> dict[str, Any]:
        self._profile(workspace, customer_id)
        rows = self.state.timeline(workspace, customer_id, before=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        items = self._items(rows)
        cursor = f"{rows[-1].ts_ms}:{rows[-1].seq}" if more and rows else None
        return {"customer_id": customer_id, "events": items, "next_cursor": cursor}

    def _items(self, rows: list[TimelineRow], bodies: dict[int, bytes] | None = None) -> list[dict[str, Any]]:
        if bodies is None:
            bodies = self.log.bodies([row.seq for row in rows])
        items = []
        for row in rows:
            body = bodies.get(row.seq)
            event = _decode_event(body) if body is not None else None
            item: dict[str, Any] = {
                "seq": row.seq,
                "timestamp": format_millis(row.ts_ms),
                "type": row.type,
                "name": row.name,
                "channel": row.channel,
                "identifier": None if row.internal else row.anchor,
                "internal": row.internal,
            }
            if event is not None:
                item["message_id"] = event.message_id
                item["source"] = event.source
                item["properties"] = event.properties or {}
                if event.type in ("identify", "group") and event.traits:
                    item["traits"] = event.traits
                if event.group_id:
                    item["group_id"] = event.group_id
            items.append(item)
        return items

    # -- the agent view ---------------------------------------------------------------

    def context(self, workspace: str, runtime: WorkspaceRuntime, customer_id: str, now_ms: int) -> dict[str, Any]:
        """Who this is, what they just did across channels, what they bought, how
        they felt, and the likely reason they are contacting us now."""
        profile_view = self.profile_json(workspace, runtime, customer_id, now_ms)
        rows = [row for row in self.state.timeline(workspace, customer_id, limit=CONTEXT_SCAN) if not row.internal]
        purchase_names = set(runtime.agent_view.purchase_events)
        purchase_rows = [row for row in rows if row.name in purchase_names][:RECENT_PURCHASES]
        lookback = runtime.lookback_ms
        candidates = [row for row in rows[:REASON_SCAN] if now_ms - row.ts_ms <= lookback]
        # One read of the log for every body the view shows.
        wanted = {row.seq for row in (*rows[:RECENT_EVENTS], *purchase_rows, *candidates)}
        bodies = self.log.bodies(sorted(wanted))
        recent = self._items(rows[:RECENT_EVENTS], bodies)
        purchases = self._items(purchase_rows, bodies)
        patterns = [pattern.lower() for pattern in runtime.agent_view.reason_patterns]
        reason = likely_reason(self._items(candidates, bodies), patterns, runtime.agent_view.lookback)
        traits = profile_view["traits"]
        return {
            "customer_id": customer_id,
            "who": {
                "name": traits.get("name")
                or " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
                or None,
                "identifiers": profile_view["identifiers"],
                "accounts": profile_view["accounts"],
                "first_seen": profile_view["first_seen"],
                "traits": traits,
            },
            "likely_reason": reason,
            "recent_events": recent,
            "channels_last_seen": profile_view["last_seen"],
            "recent_purchases": purchases,
            "latest_feedback": profile_view["feedback"],
            "segments": list(profile_view["segments"]),
            "attributes": profile_view["attributes"],
            "notes": agent_notes(self.reports, workspace, customer_id),
        }

    def interests(self, workspace: str, runtime: WorkspaceRuntime, customer_id: str, now_ms: int) -> dict[str, Any]:
        """What the customer is shopping for now: the values of the interest property
        on their recent interest events, each weighed by recency (a half-life), and
        the likely reason for contact — the signals the agent view and decisions use."""
        rules = runtime.interests
        window = parse_duration(rules.window, "interests.window")
        half_life = parse_duration(rules.half_life, "interests.half_life")
        wanted = set(rules.events)
        rows = [
            row
            for row in self.state.timeline(workspace, customer_id, limit=CONTEXT_SCAN)
            if not row.internal and row.name in wanted and now_ms - row.ts_ms <= window
        ]
        bodies = self.log.bodies(sorted(row.seq for row in rows))
        scores: dict[str, list[float]] = {}
        for item in self._items(rows, bodies):
            value = (item.get("properties") or {}).get(rules.property)
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                continue
            age = now_ms - _millis_of(item["timestamp"])
            entry = scores.setdefault(str(value), [0.0, 0.0, 0.0])
            entry[0] += 0.5 ** (age / half_life)
            entry[1] += 1
            entry[2] = max(entry[2], now_ms - age)
        ranked = sorted(scores.items(), key=lambda item: (-item[1][0], item[0]))[: rules.top]
        context = self.context(workspace, runtime, customer_id, now_ms)
        return {
            "customer_id": customer_id,
            "property": rules.property,
            "window": rules.window,
            "interests": [
                {"value": value, "score": round(score, 3), "events": int(count), "last_seen": format_millis(int(last))}
                for value, (score, count, last) in ranked
            ],
            "likely_reason": context["likely_reason"],
            "recent_purchases": context["recent_purchases"],
        }

    # -- accounts -----------------------------------------------------------------

    def account(self, workspace: str, account_id: str) -> dict[str, Any]:
        account = self.state.account(workspace, account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} does not exist")
        people = []
        members = self.state.account_members(workspace, account_id, limit=1000)
        profiles = self.state.profiles(workspace, members)
        for customer_id in members:
            profile = profiles.get(customer_id)
            if profile is None:
                continue
            traits = {name: value[0] for name, value in profile.traits.items()}
            people.append(
                {
                    "customer_id": customer_id,
                    "identifiers": identifiers_by_type(profile.identifiers),
                    "name": traits.get("name"),
                    "email": traits.get("email"),
                    "last_seen": format_millis(profile.last_seen_ms) if profile.last_seen_ms else None,
                }
            )
        return {
            "account_id": account.id,
            "traits": account.trait_values(),
            "first_seen": format_millis(account.first_seen_ms) if account.first_seen_ms else None,
            "last_seen": format_millis(account.last_seen_ms) if account.last_seen_ms else None,
            "people": people,
        }


def display_name(traits: Mapping[str, Any]) -> str | None:
    """The name to show: ``name``, else the first and last name."""
    name = traits.get("name") or " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    return str(name) if name else None


def _account_summary(account_id: str, account: Account | None) -> dict[str, Any]:
    return {"id": account_id, **(account.trait_values() if account is not None else {})}


def likely_reason(items: list[dict[str, Any]], patterns: list[str], lookback: str) -> dict[str, Any] | None:
    """The transparent rule: the most recent event in the look-back whose name
    contains a failure pattern, or that names a ``support_topic``."""
    for item in items:
        name = (item.get("name") or "").lower()
        properties: Mapping[str, Any] = item.get("properties") or {}
        topic = properties.get("support_topic")
        matched = next((pattern for pattern in patterns if pattern in name), None)
        if matched is None and not topic:
            continue
        why = (
            f"most recent event in the last {lookback} whose name contains {matched!r}"
            if matched is not None
            else f"most recent event in the last {lookback} with a support_topic ({topic})"
        )
        return {
            "event": item.get("name"),
            "channel": item["channel"],
            "timestamp": item["timestamp"],
            "properties": dict(properties),
            "rule": why,
        }
    return None


def refusal_json(entry_id: int, record: Any) -> dict[str, Any]:
    return {
        "id": entry_id,
        "seq": record.seq,
        "timestamp": format_millis(record.ts_ms),
        "message_id": record.message_id,
        "kept_with": record.target,
        "refused_identifier": record.identifier,
        "reason": record.reason,
        "customer": record.target_customer,
        "other_customer": record.other_customer,
    }


def parse_cursor(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    ts, sep, seq = text.partition(":")
    try:
        if not sep or len(text) > 41:
            raise ValueError(text)
        cursor = int(ts), int(seq)
        if not all(-(2**63) <= value < 2**63 for value in cursor):
            raise ValueError(text)
        return cursor
    except ValueError:
        raise InvalidInput(f"cursor {text[:40]!r} is not one this API returned", field="cursor") from None


def _millis_of(timestamp: str) -> int:
    from polku.core.events import time_millis

    return time_millis(timestamp)
