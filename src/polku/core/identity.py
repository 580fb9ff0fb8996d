"""Identity resolution: which identifiers belong to one customer (pure).

An *identifier* is a typed value written ``type:value``: ``user_id:u-1``,
``anonymous_id:3f2a…``, ``email:ann@example.com``, ``phone:+358401234567``. An event
*links* the identifiers it carries (top-level ids, ``traits`` of an identify call,
``context.traits`` of any call; ``alias`` links ``previousId`` and ``userId``). Every
identifier belongs to exactly one customer.

The partition is defined as a function of the *set* of events, not of their order:

    sort the linking events by (timestamp, messageId); start with every identifier
    alone; for each event, the event's first identifier (by priority: user_id,
    previousId, trait identifiers in config order, anonymous_id) names the target;
    every other identifier's customer merges into the target unless a rule refuses
    the link (``refusal``), in which case the link is recorded and skipped.

That greedy pass is ``resolve``. Live processing takes a fast path (``link_live``)
when the result cannot depend on order: no link is refused and no customer involved
was ever party to a refusal (then the partition is just the connected components,
which no order changes). Otherwise the processor loads the *closure* — every
identifier reachable through stored links — and runs ``resolve`` on it, which gives
exactly what a replay of the whole log would give. Merges, splits and renames follow
from comparing the new partition with the old one (``plan_recompute``).

A customer's id is derived from its *founder*: the identifier seen first (by event
key, then by type priority — a ``user_id`` before an e-mail address — then by text),
hashed with a per-store salt, so a replay gives the same ids. A recomputation keeps
an id with the component that holds its founder, so an id never passes to another
person.

``merge_on`` makes the outcome depend on order (whether a customer already had
several identifiers when a phone number linked it), so any link through a type
outside ``merge_on``, and any change to a customer holding such an identifier among
others, takes the canonical path too.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from polku.core.errors import ConfigError
from polku.core.events import Event
from polku.core.limits import MAX_ID_CHARS

Normalizer = Literal["email", "phone", "lower", "exact"]
EventKey = tuple[int, str]
"""The canonical order of events: (timestamp in ms, messageId)."""

BUILT_IN_TYPES: Final = ("user_id", "anonymous_id")
TYPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
EMAIL_PATTERN: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class IdentifierSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A trait-borne identifier type: which trait carries it and how it is normalised."""

    trait: str
    normalize: Normalizer = "exact"


def _default_identifiers() -> dict[str, IdentifierSpec]:
    return {
        "email": IdentifierSpec(trait="email", normalize="email"),
        "phone": IdentifierSpec(trait="phone", normalize="phone"),
    }


class IdentityRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``identity:`` section of the workspace configuration."""

    identifiers: dict[str, IdentifierSpec] = msgspec.field(default_factory=_default_identifiers)
    phone_region: str | None = None
    """Region (ISO 3166 code, e.g. ``FI``) for phone numbers written without a country code."""
    merge_on: list[str] = msgspec.field(default_factory=lambda: ["user_id", "anonymous_id", "email", "phone"])
    """Identifier types that may merge two existing customers into one."""
    limits: dict[str, int] = msgspec.field(default_factory=lambda: {"user_id": 1, "anonymous_id": 100})
    """At most this many identifiers of a type per customer: a link that would exceed it is refused."""
    previous_id_type: Literal["anonymous_id", "user_id"] = "anonymous_id"
    """What an alias call's ``previousId`` is."""

    def types(self) -> tuple[str, ...]:
        return (*BUILT_IN_TYPES, *self.identifiers)

    def rank(self, identifier: str) -> int:
        """Priority of an identifier's type: ``user_id`` first, then the trait
        identifiers in configuration order, ``anonymous_id`` last."""
        kind = identifier_type(identifier)
        if kind == "user_id":
            return 0
        if kind == "anonymous_id":
            return len(self.identifiers) + 1
        return 1 + list(self.identifiers).index(kind) if kind in self.identifiers else len(self.identifiers) + 1

    def founder_key(self, founder: Founder) -> tuple[int, str, int, str]:
        return founder[0], founder[1], self.rank(founder[2]), founder[2]


def validate_rules(rules: IdentityRules, where: str = "identity") -> IdentityRules:
    import phonenumbers

    for name, spec in rules.identifiers.items():
        if name in BUILT_IN_TYPES or not TYPE_PATTERN.fullmatch(name):
            raise ConfigError(
                f"{where}.identifiers.{name}: an identifier type is a lower-case name other than user_id and anonymous_id",
                field=f"{where}.identifiers.{name}",
            )
        if not spec.trait or len(spec.trait) > 128:
            raise ConfigError(f"{where}.identifiers.{name}.trait must be a trait name", field=f"{where}.identifiers")
    known = set(rules.types())
    for field, names in (("merge_on", rules.merge_on), ("limits", list(rules.limits))):
        for name in names:
            if name not in known:
                raise ConfigError(
                    f"{where}.{field}: unknown identifier type {name!r} (known: {', '.join(sorted(known))})",
                    field=f"{where}.{field}",
                )
    for name, limit in rules.limits.items():
        if not 1 <= limit <= 100_000:
            raise ConfigError(f"{where}.limits.{name}: {limit} is not between 1 and 100000", field=f"{where}.limits")
    if rules.previous_id_type == "user_id" and rules.limits.get("user_id", 100_000) < 2:
        raise ConfigError(
            f"{where}.previous_id_type: with user_id aliases an alias links two user ids, "
            f"which {where}.limits.user_id ({rules.limits['user_id']}) always refuses; raise the limit",
            field=f"{where}.previous_id_type",
        )
    if rules.phone_region is not None and rules.phone_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{where}.phone_region: {rules.phone_region!r} is not a region code such as 'FI' or 'US'",
            field=f"{where}.phone_region",
        )
    return rules


# -- identifiers of an event ----------------------------------------------------


def identifier_type(identifier: str) -> str:
    return identifier.partition(":")[0]


@functools.lru_cache(maxsize=65_536)
def _phone(value: str, region: str | None) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_identifier(value: Any, how: Normalizer, phone_region: str | None = None) -> str | None:
    """The canonical text of an identifier value, or ``None`` if it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_ID_CHARS:
        return None
    if how == "email":
        text = text.lower()
        return text if EMAIL_PATTERN.fullmatch(text) else None
    if how == "phone":
        return _phone(text, phone_region)
    if how == "lower":
        return text.lower()
    return text


def event_identifiers(event: Event, rules: IdentityRules) -> list[str]:
    """The identifiers an event carries, first the one that names its customer.
    A ``group`` call's traits describe the account, so they carry none."""
    found: list[str] = []
    if event.user_id:
        found.append("user_id:" + event.user_id)
    if event.type == "alias" and event.previous_id:
        found.append(f"{rules.previous_id_type}:{event.previous_id}")
    if rules.identifiers:
        own = event.traits if event.type == "identify" and event.traits else None
        context_traits = event.context.get("traits") if event.context else None
        if not isinstance(context_traits, dict):
            context_traits = None
        if own or context_traits:
            for name, spec in rules.identifiers.items():
                raw = own.get(spec.trait) if own else None
                if raw is None and context_traits:
                    raw = context_traits.get(spec.trait)
                if raw is None:
                    continue
                value = normalize_identifier(raw, spec.normalize, rules.phone_region)
                if value is not None:
                    found.append(f"{name}:{value}")
    if event.anonymous_id:
        found.append("anonymous_id:" + event.anonymous_id)
    return list(dict.fromkeys(found)) if len(found) > 1 else found


def lookup_identifier(kind: str, value: str, rules: IdentityRules) -> str | None:
    """The identifier a lookup by ``kind=value`` means (normalised like events)."""
    if kind in BUILT_IN_TYPES:
        return f"{kind}:{value}" if value else None
    spec = rules.identifiers.get(kind)
    if spec is None:
        return None
    normalized = normalize_identifier(value, spec.normalize, rules.phone_region)
    return f"{kind}:{normalized}" if normalized is not None else None


# -- the link rule ----------------------------------------------------------------


def refusal(
    rules: IdentityRules,
    target_counts: Mapping[str, int],
    other_counts: Mapping[str, int],
    *,
    first: str,
    via: str,
    target_size: int,
    other_size: int,
) -> str | None:
    """Why the customer holding ``via`` may not merge into the target (named by the
    event's ``first`` identifier), or ``None``. Merging two customers that each have
    several identifiers needs both link ends to be of a ``merge_on`` type; adding an
    identifier that is alone so far is always a link, not a merge."""
    if other_size > 1 and target_size > 1:
        for end in (via, first):
            kind = identifier_type(end)
            if kind not in rules.merge_on:
                return f"{kind} may not merge two customers (identity.merge_on)"
    for name, limit in rules.limits.items():
        total = target_counts.get(name, 0) + other_counts.get(name, 0)
        if total > limit:
            return f"the customer would have {total} {name} identifiers (identity.limits.{name} is {limit})"
    return None


class LinkEvent(msgspec.Struct, frozen=True, array_like=True):
    """A distinct set of identifiers some event carried together, with the key of
    the earliest such event (later ones cannot change the outcome)."""

    key: EventKey
    identifiers: tuple[str, ...]


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    key: EventKey
    target: str
    identifier: str
    reason: str


class Resolution(msgspec.Struct, kw_only=True):
    components: list[list[str]]
    refusals: list[Refusal]


def resolve(identifiers: Iterable[str], links: Iterable[LinkEvent], rules: IdentityRules) -> Resolution:
    """The canonical partition of ``identifiers`` (which must be closed under
    ``links``): the greedy pass over links in key order described above."""
    parent: dict[str, str] = {identifier: identifier for identifier in identifiers}
    counts: dict[str, dict[str, int]] = {identifier: {identifier_type(identifier): 1} for identifier in parent}
    sizes: dict[str, int] = dict.fromkeys(parent, 1)

    def find(identifier: str) -> str:
        root = identifier
        while parent[root] != root:
            root = parent[root]
        while parent[identifier] != root:
            parent[identifier], identifier = root, parent[identifier]
        return root

    refused: list[Refusal] = []
    for link in sorted(links, key=lambda link: (link.key, link.identifiers)):
        first = link.identifiers[0]
        target = find(first)
        for identifier in link.identifiers[1:]:
            other = find(identifier)
            if other == target:
                continue
            reason = refusal(
                rules,
                counts[target],
                counts[other],
                first=first,
                via=identifier,
                target_size=sizes[target],
                other_size=sizes[other],
            )
            if reason is not None:
                refused.append(Refusal(key=link.key, target=first, identifier=identifier, reason=reason))
                continue
            parent[other] = target
            sizes[target] += sizes.pop(other)
            merged = counts[target]
            for name, count in counts.pop(other).items():
                merged[name] = merged.get(name, 0) + count
    groups: dict[str, list[str]] = {}
    for identifier in parent:
        groups.setdefault(find(identifier), []).append(identifier)
    return Resolution(components=sorted(sorted(group) for group in groups.values()), refusals=refused)


# -- customers ----------------------------------------------------------------------

Founder = tuple[int, str, str]
"""(first timestamp, first messageId, identifier): the smallest founds the customer."""


class CustomerSummary(msgspec.Struct, kw_only=True):
    """What the link rule needs of a stored customer."""

    customer_id: str
    founder: Founder
    counts: dict[str, int]
    size: int
    conflicted: bool = False


def order_sensitive(customer: CustomerSummary, rules: IdentityRules) -> bool:
    """Whether a change to this customer must take the canonical path: it was party
    to a refusal, or it holds an identifier outside ``merge_on`` among others."""
    if customer.conflicted:
        return True
    return customer.size > 1 and any(kind not in rules.merge_on for kind in customer.counts)


def customer_id_for(founder_identifier: str, salt: bytes) -> str:
    digest = hashlib.blake2b(founder_identifier.encode(), key=salt[:64], digest_size=10).hexdigest()
    return "c_" + digest


class LivePlan(msgspec.Struct, kw_only=True):
    """A fast-path outcome: ``survivor`` (existing, or new when ``founder`` is set)
    gains ``attach`` (new identifiers) and absorbs the customers in ``absorb``."""

    survivor: str
    founder: Founder | None
    attach: list[str]
    absorb: list[str]


def link_live(
    identifiers: Sequence[str],
    owners: Mapping[str, CustomerSummary | None],
    key: EventKey,
    rules: IdentityRules,
    salt: bytes,
) -> LivePlan | None:
    """The fast path: what the event changes, or ``None`` when the canonical
    recomputation is needed (a link would be refused, or a customer involved has
    been party to a refusal, so order could matter)."""
    if any(identifier_type(identifier) not in rules.merge_on for identifier in identifiers):
        return None
    involved: dict[str, CustomerSummary] = {}
    target_counts: dict[str, int] = {}
    target_size = 0
    new: list[str] = []
    target_customer: str | None = None
    for position, identifier in enumerate(identifiers):
        owner = owners.get(identifier)
        if owner is None:
            other_counts: Mapping[str, int] = {identifier_type(identifier): 1}
            other_size = 1
        elif owner.customer_id in involved or owner.customer_id == target_customer:
            continue
        else:
            if order_sensitive(owner, rules):
                return None
            other_counts, other_size = owner.counts, owner.size
        if position > 0:
            reason = refusal(
                rules,
                target_counts,
                other_counts,
                first=identifiers[0],
                via=identifier,
                target_size=target_size,
                other_size=other_size,
            )
            if reason is not None:
                return None
        for name, count in other_counts.items():
            target_counts[name] = target_counts.get(name, 0) + count
        target_size += other_size
        if owner is None:
            new.append(identifier)
        else:
            involved[owner.customer_id] = owner
            if target_customer is None:
                target_customer = owner.customer_id
    if involved:
        survivor = min(involved.values(), key=lambda customer: rules.founder_key(customer.founder))
        absorb = sorted(customer_id for customer_id in involved if customer_id != survivor.customer_id)
        return LivePlan(survivor=survivor.customer_id, founder=None, attach=new, absorb=absorb)
    founder_identifier = min(new, key=lambda identifier: (rules.rank(identifier), identifier))
    return LivePlan(
        survivor=customer_id_for(founder_identifier, salt),
        founder=(key[0], key[1], founder_identifier),
        attach=new,
        absorb=[],
    )


class RecomputePlan(msgspec.Struct, kw_only=True):
    """What a canonical recomputation changes: the owner of each identifier in the
    closure, the new customers (with founders), the retired ones (→ the customer
    that now holds their founder) and every customer whose identifiers changed."""

    owner: dict[str, str]
    founders: dict[str, Founder]
    retired: dict[str, str]
    changed: set[str]
    conflicted: set[str]


def plan_recompute(
    resolution: Resolution,
    current_owner: Mapping[str, str | None],
    founders: Mapping[str, Founder],
    first_keys: Mapping[str, EventKey],
    salt: bytes,
    rules: IdentityRules,
) -> RecomputePlan:
    """Name the components of ``resolution``: a component keeps the id of the
    oldest existing customer whose founder it holds, else it gets a new id from its
    own founder. ``founders`` are those of the customers currently owning any
    identifier of the closure."""
    founder_of_identifier = {founder[2]: customer_id for customer_id, founder in founders.items()}
    owner: dict[str, str] = {}
    new_founders: dict[str, Founder] = {}
    retired: dict[str, str] = {}
    changed: set[str] = set()
    conflicted_identifiers = {refused.identifier for refused in resolution.refusals} | {
        refused.target for refused in resolution.refusals
    }
    conflicted: set[str] = set()
    for component in resolution.components:
        holders = [founder_of_identifier[i] for i in component if i in founder_of_identifier]
        if holders:
            survivor = min(holders, key=lambda customer_id: rules.founder_key(founders[customer_id]))
            for other in holders:
                if other != survivor:
                    retired[other] = survivor
        else:
            first = min(component, key=lambda identifier: (first_keys[identifier], rules.rank(identifier), identifier))
            survivor = customer_id_for(first, salt)
            key = first_keys[first]
            new_founders[survivor] = (key[0], key[1], first)
        before = {current_owner.get(identifier) for identifier in component}
        if before != {survivor}:
            changed.add(survivor)
            changed.update(customer_id for customer_id in before if customer_id is not None)
        for identifier in component:
            owner[identifier] = survivor
        if conflicted_identifiers.intersection(component):
            conflicted.add(survivor)
    changed.difference_update(retired)
    return RecomputePlan(owner=owner, founders=new_founders, retired=retired, changed=changed, conflicted=conflicted)
