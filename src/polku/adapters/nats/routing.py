"""Where an event goes on the stream, and under which id (docs/nats.md).

Pure functions: every API process must route an event to the same partition and name
it with the same ``Nats-Msg-Id``, today and after a restart, so nothing here may
depend on the process — no ``hash()`` (randomised per process for ``str``), no clock.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from polku.core.events import Event

DEFAULT_PARTITIONS: Final = 64
DEFAULT_SUBJECT_PREFIX: Final = "polku.ev"

# A message id goes into the header as it is when the header can carry it unchanged:
# printable ASCII, no space at either end (header values are trimmed). Anything else —
# a newline, a NUL, non-ASCII — is named by its SHA-256 instead.
_PLAIN_ID: Final = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def routing_key(event: Event) -> str:
    """The identifier the processor anchors the event to: its ``userId``, else its
    ``anonymousId`` (every message from a source has one). polku's own events (a
    segment entered, a message sent) name their customer in ``context.polku``: they
    route by that id, so they spread over the partitions as customers do."""
    if event.user_id or event.anonymous_id:
        return event.user_id or event.anonymous_id or ""
    polku = (event.context or {}).get("polku")
    customer_id = polku.get("customer_id") if isinstance(polku, dict) else None
    return f"customer:{customer_id}" if isinstance(customer_id, str) else ""


def partition(workspace: str, key: str, partitions: int) -> int:
    """``blake2b-64(workspace NUL key) mod partitions``: stable across processes,
    machines and Python versions, and even over partitions. Workspace names cannot
    hold NUL, so the separator keeps ``("a", "bc")`` apart from ``("ab", "c")``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    digest = hashlib.blake2b(f"{workspace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def subject(prefix: str, number: int) -> str:
    """The subject of partition ``number``: ``<prefix>.<number>``."""
    return f"{prefix}.{number}"


def event_subject(prefix: str, workspace: str, event: Event, partitions: int) -> str:
    return subject(prefix, partition(workspace, routing_key(event), partitions))


def message_id(workspace: str, event_message_id: str) -> str:
    """The ``Nats-Msg-Id`` of an event: ``<workspace>:<messageId>``, so a resend
    within the stream's duplicate window is stored once. A messageId a header cannot
    carry as it is becomes ``<workspace>#<sha256 hex>``; workspace names hold neither
    ``:`` nor ``#``, so the two forms never meet."""
    if _PLAIN_ID.fullmatch(event_message_id):
        return f"{workspace}:{event_message_id}"
    return f"{workspace}#{hashlib.sha256(event_message_id.encode()).hexdigest()}"


def quarantine_message_id(workspace: str, entry_id: int) -> str:
    """The ``Nats-Msg-Id`` of a resubmitted quarantine entry: ``<workspace>!q<id>``.
    Derived from the entry, not from the event (whose messageId a resubmission may
    generate afresh), so a retried resubmission is stored once."""
    return f"{workspace}!q{entry_id}"
