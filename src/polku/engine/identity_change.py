"""Merges, splits and canonical recomputation of identity, for the processor.

Both paths read the store through the batch's pending changes (links, timeline
rows, profiles, redirects), so nothing is committed half-way through a batch. They
end the same way (``apply``): the
identifiers get their new customers, the timelines of the customers involved are
dealt out again by the identifier that named each event, every changed profile is
folded again from its history, retired customers redirect to their survivors, and
the change is audited and announced in the log (``Customers Merged``,
``Customer Split``) for later stages to hook into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

from polku.core.events import Event
from polku.core.identity import (
    EventKey,
    Founder,
    LinkEvent,
    LivePlan,
    customer_id_for,
    identifier_type,
    plan_recompute,
    resolve,
)
from polku.core.profile import Profile, facts_of, rebuild
from polku.engine.runtime import WorkspaceRuntime
from polku.state import IdentifierRecord, MergeRecord, RefusalRecord, TimelineRow

if TYPE_CHECKING:
    from polku.engine.processor import Processor

MAX_CLOSURE: Final = 10_000
"""Identifiers a recomputation may gather; beyond it the event's links are refused
(a hub such as a shared test e-mail address), so one event cannot stall the processor."""
MERGED_EVENT: Final = "Customers Merged"
SPLIT_EVENT: Final = "Customer Split"
_decode_event = msgspec.json.Decoder(Event).decode


class IdentityChanger:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    def merge(self, workspace: str, runtime: WorkspaceRuntime, plan: LivePlan, key: EventKey, seq: int) -> str:
        """The fast path's merge: no link was refused, so the union is canonical."""
        processor = self.processor
        owner_updates = dict.fromkeys(plan.attach, plan.survivor)
        for absorbed in plan.absorb:
            for identifier in processor.profile(workspace, absorbed).identifiers:
                owner_updates[identifier] = plan.survivor
        self.apply(
            workspace,
            runtime,
            owner_updates,
            founders={},
            retired=dict.fromkeys(plan.absorb, plan.survivor),
            changed={plan.survivor},
            conflicted=None,
            key=key,
            seq=seq,
        )
        return plan.survivor

    def closure(
        self, workspace: str, identifiers: list[str], link: LinkEvent | None
    ) -> tuple[set[str], dict[str, LinkEvent]] | None:
        """Every identifier reachable from ``identifiers`` through stored links (and
        every identifier of their customers), with those links; ``None`` if larger
        than ``MAX_CLOSURE``."""
        processor = self.processor
        store = processor.store
        seen = set(identifiers)
        links: dict[str, LinkEvent] = {}
        if link is not None:
            links["current"] = link
        frontier = list(identifiers)
        while frontier:
            reached: set[str] = set()
            linked = store.link_hashes(workspace, frontier, limit=MAX_CLOSURE * 4)
            hashes = {h for found in linked.values() for h in found}
            wanted = set(frontier)
            pending = {
                set_hash: pending_link
                for (pending_workspace, set_hash), pending_link in processor.changes.links.items()
                if pending_workspace == workspace and wanted.intersection(pending_link.identifiers)
            }
            hashes = (hashes | set(pending)) - set(links)
            if len(hashes) > MAX_CLOSURE * 2:
                return None
            found = store.links(workspace, sorted(hashes))
            for set_hash, pending_link in pending.items():
                stored_link = found.get(set_hash)
                if set_hash in hashes and (stored_link is None or pending_link.key < stored_link.key):
                    found[set_hash] = pending_link  # the store keeps the earliest key too
            for set_hash, stored in found.items():
                links[set_hash] = stored
                reached.update(stored.identifiers)
            for identifier in frontier:
                record = processor.owner(workspace, identifier)
                if record is not None:
                    reached.update(processor.profile(workspace, record.customer_id).identifiers)
            frontier = sorted(reached - seen)
            seen.update(frontier)
            if len(seen) > MAX_CLOSURE:
                return None
        return seen, links

    def recompute(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        identifiers: list[str],
        key: EventKey,
        seq: int,
        link: LinkEvent | None,
    ) -> str:
        """The canonical partition of the event's closure (``core.identity.resolve``)."""
        processor = self.processor
        gathered = self.closure(workspace, identifiers, link)
        if gathered is None:
            return self.refuse_hub(workspace, identifiers, key, seq)
        closure, links = gathered
        records = {identifier: processor.owner(workspace, identifier) for identifier in closure}
        current_owner = {i: (record.customer_id if record else None) for i, record in records.items()}
        first_keys = {i: record.first_key if record else key for i, record in records.items()}
        for identifier in identifiers:
            first_keys[identifier] = min(first_keys[identifier], key)
        customers = {customer_id for customer_id in current_owner.values() if customer_id is not None}
        founders = {customer_id: processor.profile(workspace, customer_id).founder for customer_id in customers}
        resolution = resolve(closure, links.values(), runtime.rules)
        plan = plan_recompute(resolution, current_owner, founders, first_keys, processor.salt, runtime.rules)
        # The closure's refusals are replaced by the canonical ones: in the canonical
        # order a refusal may belong to an earlier event than this one, and a late
        # event can lift one.
        processor.changes.refusals_cleared.append((workspace, sorted(closure)))
        processor.changes.refusals = [  # and those this batch added before
            (w, refused)
            for w, refused in processor.changes.refusals
            if w != workspace or (refused.target not in closure and refused.identifier not in closure)
        ]
        for refused in resolution.refusals:
            processor.changes.refusals.append(
                (
                    workspace,
                    RefusalRecord(
                        seq=seq,
                        ts_ms=refused.key[0],
                        message_id=refused.key[1],
                        target=refused.target,
                        identifier=refused.identifier,
                        reason=refused.reason,
                        target_customer=plan.owner.get(refused.target),
                        other_customer=plan.owner.get(refused.identifier),
                    ),
                )
            )
        if link is not None:
            processor.record_link(workspace, link)
        owner_updates = {i: c for i, c in plan.owner.items() if current_owner.get(i) != c}
        for identifier in closure:
            if records[identifier] is not None and first_keys[identifier] != records[identifier].first_key:  # type: ignore[union-attr]
                owner_updates.setdefault(identifier, plan.owner[identifier])
        self.apply(
            workspace,
            runtime,
            owner_updates,
            founders=plan.founders,
            retired=plan.retired,
            changed=plan.changed,
            conflicted=plan.conflicted,
            key=key,
            seq=seq,
            first_keys=first_keys,
            everyone=set(plan.owner.values()),
        )
        return plan.owner[identifiers[0]]

    def refuse_hub(self, workspace: str, identifiers: list[str], key: EventKey, seq: int) -> str:
        """Too large to recompute: keep the event with its first identifier's
        customer and refuse its other links."""
        processor = self.processor
        first = identifiers[0]
        record = processor.owner(workspace, first)
        if record is None:
            customer_id = customer_id_for(first, processor.salt)
            processor.revive(workspace, customer_id)
            processor.put_profile(
                workspace, Profile(customer_id=customer_id, founder=(key[0], key[1], first), identifiers=[first])
            )
            processor.set_owner(workspace, first, IdentifierRecord(customer_id, key))
        else:
            customer_id = record.customer_id
        profile = processor.profile(workspace, customer_id)
        counts: dict[str, int] = {}
        for held in profile.identifiers:
            counts[identifier_type(held)] = counts.get(identifier_type(held), 0) + 1
        for identifier in identifiers[1:]:
            other = processor.owner(workspace, identifier)
            if other is not None and other.customer_id == customer_id:
                continue
            kind = identifier_type(identifier)
            if other is None and counts.get(kind, 0) < processor.runtime(workspace).rules.limits.get(kind, 1 << 30):
                # A new identifier is attached (that is not a merge).
                counts[kind] = counts.get(kind, 0) + 1
                profile.identifiers.append(identifier)
                processor.set_owner(workspace, identifier, IdentifierRecord(customer_id, key))
                processor.put_profile(workspace, profile)
                continue
            processor.changes.refusals.append(
                (
                    workspace,
                    RefusalRecord(
                        seq=seq,
                        ts_ms=key[0],
                        message_id=key[1],
                        target=first,
                        identifier=identifier,
                        reason=f"more than {MAX_CLOSURE} identifiers are linked to these; the link is not followed",
                        target_customer=customer_id,
                        other_customer=other.customer_id if other else None,
                    ),
                )
            )
        return customer_id

    def apply(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        owner_updates: dict[str, str],
        *,
        founders: dict[str, Founder],
        retired: dict[str, str],
        changed: set[str],
        conflicted: set[str] | None,
        key: EventKey,
        seq: int,
        first_keys: dict[str, EventKey] | None = None,
        everyone: set[str] | None = None,
    ) -> None:
        processor = self.processor
        changes = processor.changes
        old_profiles: dict[str, Profile] = {}
        for customer_id in (changed | set(retired)) - set(founders):
            try:
                old_profiles[customer_id] = processor.profile(workspace, customer_id)
            except LookupError:
                continue
        # Identifiers and their new owners.
        identifiers: list[str] = []
        for profile in old_profiles.values():
            identifiers.extend(profile.identifiers)
        identifiers.extend(i for i in owner_updates if i not in set(identifiers))

        def owner_of(identifier: str) -> str | None:
            if identifier in owner_updates:
                return owner_updates[identifier]
            record = processor.owner(workspace, identifier)
            return record.customer_id if record is not None else None

        members: dict[str, list[str]] = {customer_id: [] for customer_id in changed}
        for identifier in dict.fromkeys(identifiers):
            owner = owner_of(identifier)
            if owner in members:
                members[owner].append(identifier)
        for identifier, customer_id in owner_updates.items():
            record = processor.owner(workspace, identifier)
            first = (first_keys or {}).get(identifier) or (record.first_key if record else key)
            processor.set_owner(workspace, identifier, IdentifierRecord(customer_id, first))
        # Timelines dealt out again by the identifier that named each event.
        rows: dict[str, list[TimelineRow]] = {customer_id: [] for customer_id in changed}
        history_of = {customer_id: processor.timeline_rows(workspace, customer_id) for customer_id in old_profiles}
        # Their pending rows are in ``history_of`` now; left in the batch's inserts
        # they would be written to the old customers after the replacement.
        for customer_id in history_of:
            changes.timeline.pop((workspace, customer_id), None)
        for customer_id in old_profiles:
            for row in history_of[customer_id]:
                if row.anchor.startswith("customer:"):
                    about = row.anchor[9:]
                    target: str | None = retired.get(about) or processor.redirect(workspace, about)
                    # Internal rows, and events written for the customer (survey
                    # answers, which stay part of the profile), follow the customer.
                    row = TimelineRow(
                        row.ts_ms, row.seq, f"customer:{target}", row.type, row.name, row.channel, row.internal
                    )
                else:
                    target = owner_of(row.anchor)
                if target is None:
                    continue
                if target in rows:
                    rows[target].append(row)
                else:
                    changes.timeline.setdefault((workspace, target), []).append(row)
        seqs = sorted({row.seq for found in rows.values() for row in found if not row.internal})
        bodies = processor.reader.bodies(seqs)
        # Profiles folded again; accounts follow: every membership of the customers
        # involved goes (this batch's too), then the rebuilt profiles' come back.
        removed = {
            (workspace, account_id, old) for old, profile in old_profiles.items() for account_id in profile.accounts
        }
        changes.members_added -= removed
        changes.members_removed |= removed
        for customer_id in sorted(changed):
            base = old_profiles.get(customer_id)
            if base is None:
                base = Profile(customer_id=customer_id, founder=founders[customer_id])
                processor.revive(workspace, customer_id)
            base.identifiers = members[customer_id]
            if conflicted is not None:
                base.conflicted = customer_id in conflicted
            history = []
            for row in sorted(rows[customer_id], key=lambda row: row.seq):
                body = bodies.get(row.seq)
                if body is None:
                    continue
                event = _decode_event(body)
                history.append((facts_of(row.seq, event), event.group_id if event.type == "group" else None))
            fresh = rebuild(base, history, runtime.attributes, runtime.feedback_event)
            for profile in old_profiles.values():  # links already stored stay known
                for set_hash, link_key in profile.links.items():
                    if set_hash not in fresh.links or tuple(link_key) < tuple(fresh.links[set_hash]):
                        fresh.links[set_hash] = link_key
            processor.put_profile(workspace, fresh)
            changes.timeline_replaced[(workspace, customer_id)] = sorted(rows[customer_id])
            for account_id in fresh.accounts:
                changes.members_added.add((workspace, account_id, customer_id))
                changes.members_removed.discard((workspace, account_id, customer_id))
        for old, new in retired.items():
            processor.journeys.merge(workspace, old, new)
            processor.drop_profile(workspace, old)
            changes.redirects[(workspace, old)] = new
            changes.timeline_replaced[(workspace, old)] = []
        if conflicted is not None and everyone is not None:
            for customer_id in everyone - changed:
                profile = processor.profile(workspace, customer_id)
                if profile.conflicted != (customer_id in conflicted):
                    profile.conflicted = customer_id in conflicted
                    processor.put_profile(workspace, profile)
        self.audit(workspace, founders, retired, old_profiles, members, key, seq)
        for customer_id in sorted(changed):
            processor.evaluate(workspace, runtime, processor.profile(workspace, customer_id), None, f"{seq}:identity")

    def audit(
        self,
        workspace: str,
        founders: dict[str, Founder],
        retired: dict[str, str],
        old_profiles: dict[str, Profile],
        members: dict[str, list[str]],
        key: EventKey,
        seq: int,
    ) -> None:
        processor = self.processor
        survivors: dict[str, list[str]] = {}
        for old, new in retired.items():
            survivors.setdefault(new, []).append(old)
        for survivor, absorbed in sorted(survivors.items()):
            record = MergeRecord(
                seq=seq, ts_ms=key[0], kind="merge", survivor=survivor, absorbed=sorted(absorbed), reason=key[1]
            )
            processor.changes.merges.append((workspace, record))
            processor.announce_identity(workspace, MERGED_EVENT, survivor, {"merged": sorted(absorbed)}, str(seq))
        for customer_id in sorted(founders):
            sources = sorted(
                old
                for old, profile in old_profiles.items()
                if set(profile.identifiers) & set(members.get(customer_id, []))
            )
            if not sources:
                continue
            record = MergeRecord(
                seq=seq, ts_ms=key[0], kind="split", survivor=customer_id, absorbed=sources, reason=key[1]
            )
            processor.changes.merges.append((workspace, record))
            processor.announce_identity(workspace, SPLIT_EVENT, customer_id, {"split_from": sources}, str(seq))
