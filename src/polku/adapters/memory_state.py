"""In-memory ``StateStore``: the reference semantics of the processor's state, run
by the same engine tests as the SQLite store. Records are copied in and out (through
msgpack) so that, as with a real store, nothing the processor mutates after a
commit changes what was committed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from polku.core.channels import OutboundMessage
from polku.core.erasure import STAGES, ErasureReceipt, ErasureScope, keep_out, receipt
from polku.core.identity import LinkEvent
from polku.core.journey_state import InvitationRecord, JourneyState, TransitionRecord
from polku.core.profile import Profile
from polku.core.retention import Retention
from polku.state import Account, FeedbackRow, IdentifierRecord, MergeRecord, RefusalRecord, StateChanges, TimelineRow

T = TypeVar("T")
_encode = msgspec.msgpack.Encoder().encode
_json = msgspec.json.Encoder().encode


def _copy(value: T, kind: type[T]) -> T:
    return msgspec.msgpack.decode(_encode(value), type=kind)


class MemoryStateStore:
    def __init__(self) -> None:
        self._salt = os.urandom(32)
        self._checkpoint = 0
        self.identifiers: dict[tuple[str, str], IdentifierRecord] = {}
        self.link_bodies: dict[tuple[str, str], LinkEvent] = {}
        self.link_members: dict[tuple[str, str], set[str]] = {}
        self.profiles: dict[tuple[str, str], bytes] = {}
        self.redirects: dict[tuple[str, str], str] = {}
        self.timelines: dict[tuple[str, str], dict[tuple[int, int], TimelineRow]] = {}
        self.accounts: dict[tuple[str, str], bytes] = {}
        self.members: set[tuple[str, str, str]] = set()
        self.refusal_log: dict[int, tuple[str, str, RefusalRecord]] = {}
        self.changes_log: list[tuple[str, MergeRecord]] = []
        self.timers: dict[tuple[str, str], int] = {}
        self.outbox_entries: dict[int, tuple[str, bytes]] = {}
        self.failure_log: list[tuple[str, int, str]] = []
        self.journey_states: dict[tuple[str, str], bytes] = {}
        self.transitions: list[tuple[str, TransitionRecord]] = []
        self.journey_stats: dict[tuple[str, str, int, str], int] = {}
        self.messages: dict[str, OutboundMessage] = {}
        self.invitations: dict[str, InvitationRecord] = {}
        self.feedback: dict[tuple[str, str], FeedbackRow] = {}
        self.action_stats: dict[tuple[str, str, str], list[int]] = {}
        self.decision_stats: dict[tuple[str, str], list[int]] = {}
        self.erasures: dict[
            tuple[str, str], tuple[ErasureScope | None, dict[str, int | None], dict[str, int], tuple[int, int, int]]
        ] = {}
        self.erased_hashes: dict[tuple[str, str], int] = {}
        self.consent_withdrawn: set[tuple[str, str]] = set()
        self._next_id = 1

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- reads ------------------------------------------------------------------

    def salt(self) -> bytes:
        return self._salt

    def survey_secret(self) -> bytes:
        return self._salt[::-1]

    def checkpoint(self) -> int:
        return self._checkpoint

    def identifier(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        return self.identifiers.get((workspace, identifier))

    def profile(self, workspace: str, customer_id: str) -> Profile | None:
        body = self.profiles.get((workspace, customer_id))
        return None if body is None else msgspec.msgpack.decode(body, type=Profile)

    def redirect(self, workspace: str, customer_id: str) -> str:
        for _ in range(64):
            if (workspace, customer_id) in self.profiles:
                return customer_id
            new = self.redirects.get((workspace, customer_id))
            if new is None:
                return customer_id
            customer_id = new
        return customer_id

    def redirect_step(self, workspace: str, customer_id: str) -> str | None:
        if (workspace, customer_id) in self.profiles:
            return None
        return self.redirects.get((workspace, customer_id))

    def link_hashes(self, workspace: str, identifiers: Sequence[str], *, limit: int = 1 << 62) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for identifier in identifiers:
            hashes = sorted(self.link_members.get((workspace, identifier), ()))
            if hashes:
                found[identifier] = hashes[:limit]
        return found

    def links(self, workspace: str, set_hashes: Sequence[str]) -> dict[str, LinkEvent]:
        return {h: self.link_bodies[(workspace, h)] for h in set_hashes if (workspace, h) in self.link_bodies}

    def account(self, workspace: str, account_id: str) -> Account | None:
        body = self.accounts.get((workspace, account_id))
        return None if body is None else msgspec.msgpack.decode(body, type=Account)

    def account_members(self, workspace: str, account_id: str, *, limit: int = 10_000) -> list[str]:
        return sorted(c for w, a, c in self.members if w == workspace and a == account_id)[:limit]

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None = None, limit: int | None = None
    ) -> list[TimelineRow]:
        rows = self.timelines.get((workspace, customer_id), {})
        keys = sorted((key for key in rows if before is None or key < before), reverse=True)
        return [rows[key] for key in keys[:limit]]

    def refusals(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, RefusalRecord]]:
        return [
            (entry_id, record)
            for entry_id, (w, _, record) in sorted(self.refusal_log.items())
            if w == workspace and entry_id > after_id
        ][:limit]

    def refusals_about(
        self, workspace: str, identifiers: Sequence[str], limit: int = 50
    ) -> list[tuple[int, RefusalRecord]]:
        wanted = set(identifiers)
        found = [
            (entry_id, record)
            for entry_id, (w, _, record) in self.refusal_log.items()
            if w == workspace and (record.target in wanted or record.identifier in wanted)
        ]
        return sorted(found, key=lambda item: item[0], reverse=True)[:limit]

    def identity_changes(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, MergeRecord]]:
        entries = [(i + 1, record) for i, (w, record) in enumerate(self.changes_log) if w == workspace]
        return [(entry_id, record) for entry_id, record in entries if entry_id > after_id][:limit]

    def failures(self, workspace: str, limit: int = 20) -> list[dict[str, Any]]:
        found = [{"seq": seq, "error": error} for w, seq, error in reversed(self.failure_log) if w == workspace]
        return found[:limit]

    def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, str, int]]:
        due = sorted((d, w, c) for (w, c), d in self.timers.items() if d <= now_ms)
        return [(w, c, d) for d, w, c in due[:limit]]

    def journey_state(self, workspace: str, holder: str) -> JourneyState | None:
        body = self.journey_states.get((workspace, holder))
        return None if body is None else msgspec.msgpack.decode(body, type=JourneyState)

    def journey_entries(self, workspace: str, journey_id: str) -> int:
        return sum(
            count
            for (w, journey, _, metric), count in self.journey_stats.items()
            if w == workspace and journey == journey_id and metric in ("entered", "entered:holdout")
        )

    def journey_holders_due(self) -> list[tuple[str, str, int]]:
        found = []
        for (workspace, holder), body in self.journey_states.items():
            due = msgspec.msgpack.decode(body, type=JourneyState).next_due()
            if due:
                found.append((workspace, holder, due))
        return found

    def outbox(self, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        return [(entry_id, w, body) for entry_id, (w, body) in sorted(self.outbox_entries.items())][:limit]

    # -- writes -----------------------------------------------------------------

    def commit(self, changes: StateChanges) -> None:
        # Validate everything first (encoding), then apply: all or nothing.
        profiles = {key: None if p is None else _encode(p) for key, p in changes.profiles.items()}
        accounts = {key: _encode(a) for key, a in changes.accounts.items()}
        emitted = [(workspace, _json(event)) for workspace, event in changes.emitted]
        journey_states = {key: None if j is None else _encode(j) for key, j in changes.journey_states.items()}
        self.identifiers.update({key: _copy(r, IdentifierRecord) for key, r in changes.identifiers.items()})
        for (workspace, set_hash), link in changes.links.items():
            stored = self.link_bodies.get((workspace, set_hash))
            if stored is None or link.key < stored.key:
                self.link_bodies[(workspace, set_hash)] = link
            for identifier in link.identifiers:
                self.link_members.setdefault((workspace, identifier), set()).add(set_hash)
        for key, body in profiles.items():
            if body is None:
                self.profiles.pop(key, None)
                self.timers.pop(key, None)
            else:
                self.profiles[key] = body
        for key in changes.unredirected:
            self.redirects.pop(key, None)
        self.redirects.update(changes.redirects)
        for key, rows in changes.timeline_replaced.items():
            self.timelines[key] = {(row.ts_ms, row.seq): row for row in rows}
        for key, rows in changes.timeline.items():
            for row in rows:
                self.timelines.setdefault(key, {})[(row.ts_ms, row.seq)] = row
        self.accounts.update(accounts)
        self.members -= changes.members_removed
        self.members |= changes.members_added
        for workspace, identifiers in changes.refusals_cleared:
            wanted = set(identifiers)
            for entry_id, (w, _, record) in list(self.refusal_log.items()):
                if w == workspace and (record.target in wanted or record.identifier in wanted):
                    del self.refusal_log[entry_id]
        known = {(w, ref) for w, ref, _ in self.refusal_log.values()}
        for workspace, record in changes.refusals:
            ref = f"{record.ts_ms}|{record.message_id}|{record.identifier}"
            if (workspace, ref) not in known:
                known.add((workspace, ref))
                self.refusal_log[self._id()] = (workspace, ref, record)
        self.changes_log.extend(changes.merges)
        for key, due in changes.timers.items():
            if due is None:
                self.timers.pop(key, None)
            else:
                self.timers[key] = due
        self.failure_log.extend(changes.failures)
        for workspace, body in emitted:
            self.outbox_entries[self._id()] = (workspace, body)
        for key, state in journey_states.items():
            if state is None:
                self.journey_states.pop(key, None)
            else:
                self.journey_states[key] = state
        self.transitions.extend(changes.transitions)
        for stat, delta in changes.journey_stats.items():
            self.journey_stats[stat] = self.journey_stats.get(stat, 0) + delta
        for message in changes.messages:
            self.messages.setdefault(message.key, message)
        for invitation in changes.invitations:
            self.invitations.setdefault(invitation.id, invitation)
        for key3, counts in changes.action_stats.items():
            current = self.action_stats.get(key3, [0, 0, 0])
            self.action_stats[key3] = [a + b for a, b in zip(current, counts, strict=True)]
        for key2, counts in changes.decision_stats.items():
            current = self.decision_stats.get(key2, [0, 0])
            self.decision_stats[key2] = [a + b for a, b in zip(current, counts, strict=True)]
        for key, answer in changes.feedback.items():
            if key not in self.feedback or answer.seq > self.feedback[key].seq:
                self.feedback[key] = answer
        for key, flag in changes.consent.items():
            if flag:
                self.consent_withdrawn.add(key)
            else:
                self.consent_withdrawn.discard(key)
        self.consent_withdrawn -= {key for key, body in profiles.items() if body is None}
        for scope in changes.erasures:
            self._erase(scope)
        self._checkpoint = changes.checkpoint

    # -- erasure (the SQL stores share ``adapters.state_erasure``) -------------------

    def erasure_scope(
        self, workspace: str, customer_id: str, *, erasure: str, requested_ms: int, marker_seq: int, suppress: bool
    ) -> ErasureScope:
        ids = [customer_id]
        for found in ids:
            ids.extend(
                old for (w, old), new in self.redirects.items() if w == workspace and new == found and old not in ids
            )
        named = set(ids)
        identifiers = sorted(i for (w, i), r in self.identifiers.items() if w == workspace and r.customer_id in named)
        seqs = sorted({row.seq for c in ids for row in self.timelines.get((workspace, c), {}).values()})
        invitations = sorted(
            i.id for i in self.invitations.values() if i.workspace == workspace and i.customer_id in named
        )
        return ErasureScope(
            erasure=erasure,
            workspace=workspace,
            requested_ms=requested_ms,
            marker_seq=marker_seq,
            customer_ids=ids,
            identifiers=identifiers,
            seqs=seqs,
            invitations=invitations,
            suppress=suppress,
        )

    def _erase(self, scope: ErasureScope) -> None:
        workspace, ids, identifiers = scope.workspace, set(scope.customer_ids), set(scope.identifiers)
        counts = {"state.identifiers": 0, "state.profiles": 0, "state.timeline": 0}
        for identifier in identifiers:
            counts["state.identifiers"] += self.identifiers.pop((workspace, identifier), None) is not None
            for set_hash in self.link_members.pop((workspace, identifier), set()):
                self.link_bodies.pop((workspace, set_hash), None)
        for customer_id in ids:
            counts["state.profiles"] += self.profiles.pop((workspace, customer_id), None) is not None
            counts["state.timeline"] += len(self.timelines.pop((workspace, customer_id), {}))
            for table in (self.timers, self.journey_states, self.redirects):
                table.pop((workspace, customer_id), None)
        self.redirects = {k: v for k, v in self.redirects.items() if not (k[0] == workspace and v in ids)}
        self.members = {m for m in self.members if not (m[0] == workspace and m[2] in ids)}
        self.transitions = [t for t in self.transitions if not (t[0] == workspace and t[1].customer_id in ids)]
        self.messages = {
            k: m for k, m in self.messages.items() if not (m.workspace == workspace and m.customer_id in ids)
        }
        self.invitations = {
            k: i for k, i in self.invitations.items() if not (i.workspace == workspace and i.customer_id in ids)
        }
        self.feedback = {k: f for k, f in self.feedback.items() if not (k[0] == workspace and f.customer_id in ids)}
        self.consent_withdrawn -= {(workspace, c) for c in ids}
        for found, _, until in keep_out(scope):
            self.erased_hashes[(workspace, found)] = max(self.erased_hashes.get((workspace, found), 0), until)
        stages: dict[str, int | None] = {"state": scope.state_ms, "log": None, "analytics": None}
        suppressed = len(identifiers) if scope.suppress else 0
        facts = (scope.requested_ms, len(ids), suppressed)
        self.erasures.setdefault(
            (workspace, scope.erasure), (scope, stages, {k: v for k, v in counts.items() if v}, facts)
        )

    def mark_erasure(self, workspace: str, erasure: str, stage: str, removed: dict[str, int], now_ms: int) -> None:
        scope, stages, counts, facts = self.erasures[(workspace, erasure)]
        stages[stage] = now_ms
        counts.update({f"{stage}.{table}": count for table, count in removed.items() if count})
        done = all(stages[name] is not None for name in STAGES)
        self.erasures[(workspace, erasure)] = (None if done else scope, stages, counts, facts)

    def pending_erasures(self, stage: str, consumer: str | None = None) -> list[ErasureScope]:
        before = "state" if stage == "log" else "log"
        return [
            scope
            for scope, stages, _, _ in self.erasures.values()
            if scope is not None and stages[stage] is None and stages[before] is not None
        ]

    def erasure_receipts(self, workspace: str, *, erasure: str | None = None, limit: int = 100) -> list[ErasureReceipt]:
        found = [
            receipt(
                erasure=name,
                workspace=w,
                requested_ms=facts[0],
                stages=dict(stages),
                removed=dict(counts),
                customers=facts[1],
                suppressed=facts[2],
            )
            for (w, name), (_, stages, counts, facts) in self.erasures.items()
            if w == workspace and erasure in (None, name)
        ]
        return found[-limit:][::-1]

    def erased(self) -> dict[tuple[str, str], int]:
        return dict(self.erased_hashes)

    def wipe_wal(self) -> None:
        return None

    def expire_timeline(self, workspace: str, retention: Retention, now_ms: int) -> dict[str, int]:
        removed = 0
        for (w, _), rows in self.timelines.items():
            if w != workspace:
                continue
            for position, row in list(rows.items()):
                keep = retention.keep_ms(row.type, row.name, row.channel)
                if keep is not None and row.ts_ms < now_ms - keep:
                    del rows[position]
                    removed += 1
        return {"timeline": removed}

    def delete_outbox(self, ids: Sequence[int]) -> None:
        for entry_id in ids:
            self.outbox_entries.pop(entry_id, None)

    def reset(self) -> None:
        """Like the SQLite store: the journey records survive (they are not derived
        from the log alone)."""
        kept = (self._salt, self.journey_states, self.transitions, self.journey_stats, self.messages, self.invitations)
        self.__init__()  # type: ignore[misc]
        self._salt, self.journey_states, self.transitions, self.journey_stats, self.messages, self.invitations = kept

    def close(self) -> None:
        return None

    # -- for tests ----------------------------------------------------------------

    def partition(self, workspace: str) -> dict[str, set[str]]:
        groups: dict[str, set[str]] = {}
        for (w, identifier), record in self.identifiers.items():
            if w == workspace:
                groups.setdefault(record.customer_id, set()).add(identifier)
        return groups
