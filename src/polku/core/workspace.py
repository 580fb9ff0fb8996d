"""Workspaces, sources, credentials and the workspace configuration (pure data).

A *workspace* is one tenant: its events, keys and configuration are separate from
every other workspace's. A *source* is one system that sends events (a web site, an
app, a call-center system); its write keys carry its default channel. Keys are
stored as SHA-256 hashes: they are random and 160+ bits long, so a slow password
hash would add latency to every request without adding safety.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from typing import Any, Final, Literal

import msgspec

from polku.core.attributes import AttributeSet, AttributeSpec, parse_duration
from polku.core.channels import AgentNotes, ChannelConfig, validate_channels
from polku.core.errors import ConfigError, InvalidInput
from polku.core.events import CHANNEL_PATTERN, MESSAGE_TYPES, SYSTEM_CHANNEL
from polku.core.identity import IdentityRules, validate_rules
from polku.core.policy import Policy, PolicyConfig
from polku.core.retention import Retention, RetentionConfig
from polku.core.segments import SegmentSet, SegmentSpec
from polku.core.survey_fatigue import Fatigue, SurveysConfig
from polku.core.yaml_source import check_shape

NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
KeyKind = Literal["write", "admin"]
RESERVED_SOURCES: Final = frozenset({"polku"})
DEFAULT_SOURCE: Final = "default"
"""The source every workspace is made with (and admin tokens with ``ingest`` send as)."""
"""Source names polku writes under itself (segment changes, merges): no key may send as them."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} must be 1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            field=what,
        )
    return value


def check_source_name(value: str, what: str) -> str:
    check_name(value, what)
    if value in RESERVED_SOURCES:
        raise ConfigError(f"{what} {value!r} is reserved for events polku writes itself", field=what)
    return value


def check_channel(value: str, field: str) -> str:
    if not CHANNEL_PATTERN.fullmatch(value):
        raise ConfigError(f"{field}: channel {value!r} must be a lower-case name like 'web' or 'phone'", field=field)
    if value == SYSTEM_CHANNEL:
        raise ConfigError(f"{field}: channel 'system' is reserved for events polku writes itself", field=field)
    return value


class Source(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    name: str
    default_channel: str
    created_at: str


ADMIN_SCOPES: Final = ("manage", "privacy", "read")
"""The scopes an admin token gets unless it asks (docs/security.md, "Keys and scopes")."""
KNOWN_SCOPES: Final = ("ingest", "manage", "privacy", "read", "workspaces")
"""Also: ``ingest`` (send events, as the workspace's ``default`` source) and
``workspaces`` (make new workspaces): only when asked for."""
OPERATOR_SCOPES: Final = ("manage", "privacy", "read", "workspaces")
"""The first admin token of an installation's."""


def grantable(held: Collection[str]) -> set[str]:
    """The scopes a token may give a key it makes: its own, and ``ingest`` with
    ``manage`` (it can make write keys, which ingest, anyway)."""
    return {*held, "ingest"} if "manage" in held else set(held)


"""What an admin token may be allowed (docs/security.md, "Keys and scopes"): ``read``
(every read of the workspace), ``manage`` (every change), ``privacy`` (the reads and
actions that hand a person's data out whole or remove it, and the audit log). A
token made without a choice has all three; write keys ingest and nothing else."""


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """What a key grants. Write keys ingest for one source; admin tokens read,
    manage and handle personal data of one workspace, as far as their ``scopes``
    go."""

    key_hash: str
    kind: KeyKind
    workspace: str
    source: str | None
    label: str
    created_at: str
    revoked_at: str | None = None
    scopes: tuple[str, ...] = ADMIN_SCOPES
    last_used_at: str | None = None
    """When it was last accepted (to the minute: recorded at most once a minute)."""

    @classmethod
    def from_row(cls, row: Any) -> Credential:
        """From a catalog row in ``CREDENTIAL_COLUMNS`` order (both catalogs)."""
        return cls(
            key_hash=row[0],
            kind=row[1],
            workspace=row[2],
            source=row[3],
            label=row[4],
            created_at=row[5],
            revoked_at=row[6],
            scopes=tuple(str(row[7]).split()),
            last_used_at=row[8],
        )

    def row(self) -> tuple[Any, ...]:
        return (
            self.key_hash,
            self.kind,
            self.workspace,
            self.source,
            self.label,
            self.created_at,
            self.revoked_at,
            " ".join(self.scopes),
            self.last_used_at,
        )


CREDENTIAL_COLUMNS: Final = "key_hash, kind, workspace, source, label, created_at, revoked_at, scopes, last_used_at"


def check_scopes(scopes: list[str] | tuple[str, ...], kind: KeyKind) -> tuple[str, ...]:
    """The scopes a new key asks for, checked: admin tokens only, at least one,
    each known; sorted and once each."""
    if kind != "admin":
        raise InvalidInput("scopes are for admin tokens; a write key only ingests", field="scopes")
    unknown = sorted(set(scopes) - set(KNOWN_SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"scopes must be one or more of {', '.join(KNOWN_SCOPES)}"
            + (f"; not {', '.join(repr(s) for s in unknown)}" if unknown else ""),
            field="scopes",
        )
    return tuple(sorted(set(scopes)))


class WebhookMapping(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How one inbound webhook source's JSON becomes events.

    Fields ending in an expression are JMESPath (https://jmespath.org), evaluated on
    each record; a constant is written as a JMESPath raw string: ``"'ticket_closed'"``.
    """

    channel: str
    type: str = "track"
    records: str | None = None
    event: str | None = None
    name: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    message_id: str | None = None
    timestamp: str | None = None
    properties: str | None = "@"
    traits: str | None = None
    context: str | None = None


class AgentViewRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the agent view (``GET /v1/profiles/{id}/context``) picks the likely reason
    for contact: the most recent event within ``lookback`` whose name contains one of
    ``reason_patterns`` (case-insensitive), or that has a ``support_topic`` property."""

    lookback: str = "48h"
    reason_patterns: list[str] = msgspec.field(
        default_factory=lambda: ["fail", "error", "declined", "denied", "cancel", "refund", "complain", "problem"]
    )
    purchase_events: list[str] = msgspec.field(default_factory=lambda: ["Order Completed"])


class InterestRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a customer is shopping for now (``GET /v1/profiles/{id}/interests``): the
    values of ``property`` on their recent ``events``, each weighed by its recency."""

    events: list[str] = msgspec.field(default_factory=lambda: ["Product Viewed", "Added to Cart"])
    property: str = "product"
    window: str = "7d"
    half_life: str = "1d"
    top: int = 5


class WorkspaceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The declarative configuration of one workspace (YAML or JSON)."""

    webhooks: dict[str, WebhookMapping] = {}
    identity: IdentityRules = msgspec.field(default_factory=IdentityRules)
    attributes: dict[str, AttributeSpec] = {}
    segments: dict[str, SegmentSpec] = {}
    feedback_event: str = "Feedback Submitted"
    agent_view: AgentViewRules = msgspec.field(default_factory=AgentViewRules)
    channels: dict[str, ChannelConfig] = {}
    """Outbound channels journeys name (docs/channels.md)."""
    agent_notes: AgentNotes = msgspec.field(default_factory=AgentNotes)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    """The contact policy (docs/contact-policy.md)."""
    surveys: SurveysConfig = msgspec.field(default_factory=SurveysConfig)
    """Survey links and fatigue control (docs/surveys.md)."""
    interests: InterestRules = msgspec.field(default_factory=InterestRules)
    """What customers are shopping for now (docs/decisions.md)."""
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    """How long raw events are kept (docs/privacy.md, "Retention")."""


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: str
    config: WorkspaceConfig = msgspec.field(default_factory=WorkspaceConfig)


def validate_config(config: WorkspaceConfig) -> WorkspaceConfig:
    """Semantic checks msgspec's types cannot express; errors name the field."""
    import jmespath
    from jmespath.exceptions import JMESPathError

    for source, mapping in config.webhooks.items():
        where = f"webhooks.{source}"
        check_source_name(source, f"{where} (source name)")
        check_channel(mapping.channel, f"{where}.channel")
        if mapping.type not in MESSAGE_TYPES:
            raise ConfigError(
                f"{where}.type: {mapping.type!r} is not one of {sorted(MESSAGE_TYPES)}", field=f"{where}.type"
            )
        if mapping.type == "track" and mapping.event is None:
            raise ConfigError(f"{where}.event: a track mapping needs an `event` expression", field=f"{where}.event")
        if mapping.user_id is None and mapping.anonymous_id is None:
            raise ConfigError(f"{where}: map `user_id` or `anonymous_id`", field=where)
        for field in (
            "records",
            "event",
            "name",
            "user_id",
            "anonymous_id",
            "group_id",
            "message_id",
            "timestamp",
            "properties",
            "traits",
            "context",
        ):
            expression = getattr(mapping, field)
            if expression is None:
                continue
            try:
                jmespath.compile(expression)
            except JMESPathError as error:
                raise ConfigError(
                    f"{where}.{field}: invalid JMESPath {expression!r}: {error}", field=f"{where}.{field}"
                ) from None
    validate_rules(config.identity)
    attributes = AttributeSet.compile(config.attributes)
    SegmentSet.compile(config.segments, windowed_attributes=attributes.windowed, attribute_names=attributes.names)
    if not config.feedback_event or len(config.feedback_event) > 256:
        raise ConfigError("feedback_event must be an event name", field="feedback_event")
    parse_duration(config.agent_view.lookback, "agent_view.lookback")
    validate_channels(config.channels, config.agent_notes)
    Policy(config.policy)
    Fatigue.compile(config.surveys.fatigue)
    Retention.compile(config.retention)
    parse_duration(config.interests.window, "interests.window")
    parse_duration(config.interests.half_life, "interests.half_life")
    if not 1 <= config.interests.top <= 50:
        raise ConfigError("interests.top: must be 1-50", field="interests.top")
    base_url = config.surveys.base_url
    if base_url is not None and not re.match(r"https?://[^/\s]+(/\S*)?$", base_url):
        raise ConfigError(
            f"surveys.base_url: {base_url!r} must be an http(s) address, e.g. https://feedback.example.com",
            field="surveys.base_url",
        )
    return config


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return not value.isascii() and any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(key) or _has_lone_surrogate(item) for key, item in value.items())
    if isinstance(value, list | set):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _load_yaml(text: str | bytes, filename: str) -> Any:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """Refuses YAML aliases: nested aliases expand exponentially (a "billion
        laughs" document), and a configuration never needs them."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(
                    f"{filename}:{mark.line + 1}:{mark.column + 1}: YAML aliases (*name) are not allowed",
                    file=filename,
                )
            return super().compose_node(parent, index)

    try:
        check_shape(text, filename)  # deep nesting would exhaust the loader's recursion
        data = yaml.load(text, Loader=NoAliasLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise ConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}", file=filename) from None
    # PyYAML reads an escaped surrogate pair ("\ud83d\ude00") as two lone surrogates,
    # which no error message, response or store can encode.
    if _has_lone_surrogate(data):
        raise ConfigError(f"{filename}: a string is not valid Unicode (a lone \\uD800-\\uDFFF escape)", file=filename)
    return data


def parse_config(text: str | bytes, *, filename: str = "<config>", allow_empty: bool = True) -> WorkspaceConfig:
    """Parse YAML (a superset of JSON) into a validated ``WorkspaceConfig``. An empty
    document (or ``null``) is the empty configuration unless ``allow_empty`` is false."""
    try:
        # JSON first, as JSON reads it: json.dumps escapes every emoji as a surrogate pair.
        data = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError):
        data = _load_yaml(text, filename)
    except RecursionError:
        raise ConfigError(f"{filename}: nested too deeply", file=filename) from None
    if data is None:
        if not allow_empty:
            raise ConfigError(f"{filename}: the configuration is empty; send {{}} to clear it", file=filename)
        data = {}
    # Convert each named entry on its own so an error names it: msgspec's own
    # path would say `$.webhooks[...]` for a dictionary value.
    for section, kind in (
        ("webhooks", WebhookMapping),
        ("attributes", AttributeSpec),
        ("segments", SegmentSpec),
        ("channels", ChannelConfig),
    ):
        if not (isinstance(data, dict) and isinstance(data.get(section), dict)):
            continue
        for name, entry in data[section].items():
            try:
                msgspec.convert(entry, kind)
            except msgspec.ValidationError as error:
                message = str(error).replace("$", f"$.{section}.{name}")
                if " - at `" not in message:
                    message += f" - at `$.{section}.{name}`"
                raise ConfigError(f"{filename}: {message}", file=filename, field=f"{section}.{name}") from None
    try:
        config = msgspec.convert(data, WorkspaceConfig)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{filename}: {error}", file=filename) from None
    return validate_config(config)
