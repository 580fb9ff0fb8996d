"""Routing on the NATS stream (``polku.adapters.nats.routing``): an event's partition
must be the same in every process and on every machine, spread evenly, and its
``Nats-Msg-Id`` must be a header value that names exactly one messageId."""

from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import pytest

from polku.adapters.nats.routing import (
    message_id,
    partition,
    quarantine_message_id,
    routing_key,
    subject,
)
from polku.core.events import Event

KEYS = ["alice", "bob", "u1", ""]


def test_partitions_are_pinned() -> None:
    # Changing these moves every customer's events to another partition: a running
    # stream would then hold one person's history on two partitions.
    assert [partition("w", key, 64) for key in KEYS] == [28, 49, 33, 46]
    assert partition("acme", "alice", 1024) == 657


def test_partitions_are_the_same_in_another_process() -> None:
    script = f"from polku.adapters.nats.routing import partition;print([partition('w', key, 64) for key in {KEYS!r}])"
    for seed in ("1", "2"):  # str hashes differ between these; the partition must not
        found = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == str([partition("w", key, 64) for key in KEYS])


def test_partitions_spread_evenly() -> None:
    partitions, ids = 64, 10_000
    counts = [0] * partitions
    for number in range(ids):
        counts[partition("workspace", f"user-{number}", partitions)] += 1
    expected = ids / partitions
    chi_squared = sum((count - expected) ** 2 / expected for count in counts)
    assert chi_squared < 103.4  # the 0.1 % critical value for 63 degrees of freedom
    assert min(counts) > 0.6 * expected and max(counts) < 1.4 * expected


def test_partitions_are_in_range() -> None:
    assert {partition("w", f"k{n}", 7) for n in range(500)} == set(range(7))
    assert partition("w", "anyone", 1) == 0
    with pytest.raises(ValueError):
        partition("w", "anyone", 0)
    assert subject("polku.ev", 5) == "polku.ev.5"


def test_the_routing_key_is_the_user_id_else_the_anonymous_id() -> None:
    base = Event(message_id="m", type="track", channel="web", source="s", timestamp="t", received_at="t")
    assert routing_key(msgspec.structs.replace(base, user_id="u", anonymous_id="a")) == "u"
    assert routing_key(msgspec.structs.replace(base, anonymous_id="a")) == "a"
    assert routing_key(base) == ""
    internal = msgspec.structs.replace(base, context={"polku": {"customer_id": "c1"}})
    assert routing_key(internal) == "customer:c1"
    assert routing_key(msgspec.structs.replace(internal, user_id="u")) == "u"


def test_message_ids_are_header_safe_and_distinct() -> None:
    assert message_id("w", "a-b:c") == "w:a-b:c"
    odd = ["line\r\nbreak", "nul\0", " leading", "trailing ", "päivää", "tab\t"]
    headers = [message_id("w", found) for found in odd]
    for header in headers:
        assert header.startswith("w#") and header.isascii() and header.isprintable() and " " not in header
    assert len(set(headers)) == len(odd)
    assert message_id("w", "x") != message_id("v", "x")
    # The three forms start differently after the workspace: they never meet.
    assert quarantine_message_id("w", 7) == "w!q7"
    assert quarantine_message_id("w", 7) not in {message_id("w", "q7"), message_id("w", "!q7")}
