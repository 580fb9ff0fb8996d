"""Computed attributes: every kind, filters, windows decaying with a fake clock,
timers, order independence, bounded memory and configuration errors."""

from __future__ import annotations

import timeit
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polku.core.attributes import (
    MAX_WINDOW_ENTRIES,
    AttributeSet,
    AttributeSpec,
    EventFacts,
    parse_duration,
)
from polku.core.errors import ConfigError

DAY = 86_400_000
T0 = 1_700_000_000_000


def attributes(**specs: dict[str, Any]) -> AttributeSet:
    """Compile specs written as the YAML would have them."""
    return AttributeSet.compile({name: msgspec.convert(spec, AttributeSpec) for name, spec in specs.items()})


def event(
    seq: int,
    ts_ms: int = T0,
    name: str | None = "Order Completed",
    *,
    type: str = "track",
    channel: str = "web",
    traits: dict[str, Any] | None = None,
    **properties: Any,
) -> EventFacts:
    return EventFacts(
        seq=seq, ts_ms=ts_ms, type=type, name=name, channel=channel, properties=properties, context={}, traits=traits
    )


def fold(attribute_set: AttributeSet, events: list[EventFacts]) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for facts in events:
        attribute_set.apply(states, facts)
    return states


def roundtrip(states: dict[str, Any]) -> dict[str, Any]:
    """What the profile store gives back."""
    return msgspec.json.decode(msgspec.json.encode(states))  # type: ignore[no-any-return]


# --- kinds --------------------------------------------------------------------------


def test_every_kind_all_time() -> None:
    attribute_set = attributes(
        orders={"kind": "count", "event": "Order Completed"},
        revenue={"kind": "sum", "event": "Order Completed", "property": "total"},
        smallest={"kind": "min", "event": "Order Completed", "property": "total"},
        biggest={"kind": "max", "event": "Order Completed", "property": "total"},
        first_channel={"kind": "first", "property": "channel"},
        last_plan={"kind": "last", "event": "Order Completed", "property": "plan"},
        favourite={"kind": "most_frequent", "event": "Order Completed", "property": "product.category"},
    )
    events = [
        event(1, T0 + 3, total=10, plan="pro", product={"category": "shoes"}, channel="app"),
        event(2, T0 + 1, total=2.5, plan="free", product={"category": "hats"}, channel="web"),
        event(3, T0 + 2, total=7, product={"category": "shoes"}, channel="store"),
    ]
    states = roundtrip(fold(attribute_set, events))
    assert attribute_set.values(states, T0) == {
        "orders": 3,
        "revenue": 19.5,
        "smallest": 2.5,
        "biggest": 10,
        "first_channel": "web",
        "last_plan": "pro",
        "favourite": "shoes",
    }


def test_missing_state_reads_as_zero_or_none() -> None:
    attribute_set = attributes(
        orders={"kind": "count"},
        revenue={"kind": "sum", "property": "total"},
        biggest={"kind": "max", "property": "total"},
        recent={"kind": "count", "window": "1d"},
        top={"kind": "most_frequent", "property": "x", "window": "1d"},
    )
    assert attribute_set.values({}, T0) == {"orders": 0, "revenue": 0, "biggest": None, "recent": 0, "top": None}
    assert attribute_set.next_change_ms({}, T0) is None


def test_numbers_ignore_non_numbers_and_keep_ints() -> None:
    attribute_set = attributes(
        revenue={"kind": "sum", "property": "total"},
        biggest={"kind": "max", "property": "total"},
        orders={"kind": "count", "property": "total"},
    )
    states = fold(
        attribute_set,
        [
            event(1, total=3),
            event(2, total=True),
            event(3, total="9"),
            event(4, total=None),
            event(5, total=4),
            event(6),
        ],
    )
    values = attribute_set.values(states, T0)
    assert values == {"revenue": 7, "biggest": 4, "orders": 6}
    assert type(values["revenue"]) is int


def test_float_sum_does_not_overflow_to_null() -> None:
    attribute_set = attributes(revenue={"kind": "sum", "property": "total"})
    states = fold(attribute_set, [event(1, total=1.7e308), event(2, total=1.7e308)])
    assert attribute_set.values(roundtrip(states), T0) == {"revenue": 1.7e308}


def test_first_last_and_most_frequent_keep_json_scalars_only() -> None:
    attribute_set = attributes(
        first={"kind": "first", "property": "v"},
        last={"kind": "last", "property": "v"},
        top={"kind": "most_frequent", "property": "v"},
    )
    events = [
        event(1, T0 + 1, v=True),
        event(2, T0 + 2, v={"a": 1}),
        event(3, T0 + 3, v=[1]),
        event(4, T0 + 4, v=None),
        event(5, T0 + 5, v=1),
        event(6, T0 + 6),
    ]
    values = attribute_set.values(roundtrip(fold(attribute_set, events)), T0)
    # True and 1 are different values: the most recent one wins the tie.
    assert values == {"first": True, "last": 1, "top": 1}
    assert type(values["top"]) is int


def test_most_frequent_distinguishes_types_and_breaks_ties_by_recency() -> None:
    attribute_set = attributes(top={"kind": "most_frequent", "property": "v"})
    events = [event(1, T0 + 5, v="1"), event(2, T0 + 1, v=1), event(3, T0 + 2, v=1.5), event(4, T0 + 3, v="1")]
    assert attribute_set.values(roundtrip(fold(attribute_set, events)), T0) == {"top": "1"}
    tie = [event(1, T0 + 9, v="b"), event(2, T0 + 1, v="a"), event(3, T0 + 2, v="a"), event(4, T0 + 3, v="b")]
    assert attribute_set.values(fold(attribute_set, tie), T0) == {"top": "b"}
    same_time = [event(7, T0, v="late"), event(2, T0, v="early")]
    assert attribute_set.values(fold(attribute_set, same_time), T0) == {"top": "late"}


def test_first_and_last_decide_by_timestamp_then_seq() -> None:
    attribute_set = attributes(first={"kind": "first", "property": "v"}, last={"kind": "last", "property": "v"})
    events = [event(5, T0, v="b"), event(9, T0 + 1, v="c"), event(4, T0, v="a"), event(8, T0 + 1, v="x")]
    assert attribute_set.values(fold(attribute_set, events), T0) == {"first": "a", "last": "c"}


def test_apply_reports_only_changed_states() -> None:
    attribute_set = attributes(
        biggest={"kind": "max", "property": "total"},
        first={"kind": "first", "property": "total"},
        revenue={"kind": "sum", "property": "total"},
    )
    states: dict[str, Any] = {}
    assert attribute_set.apply(states, event(1, T0, total=5)) == ["biggest", "first", "revenue"]
    assert attribute_set.apply(states, event(2, T0 + 1, total=3)) == ["revenue"]
    assert attribute_set.apply(states, event(3, T0 + 2, total=0)) == []
    assert attribute_set.apply(states, event(4, T0 + 3, other=1)) == []


def test_event_fields_as_properties() -> None:
    attribute_set = attributes(
        last_page={"kind": "last", "type": "page", "property": "name"},
        types={"kind": "most_frequent", "property": "type"},
    )
    events = [
        event(1, T0, "Pricing", type="page"),
        event(2, T0 + 1, "Docs", type="page"),
        event(3, T0 + 2, None, type="identify"),
    ]
    assert attribute_set.values(fold(attribute_set, events), T0) == {"last_page": "Docs", "types": "page"}


# --- filters ------------------------------------------------------------------------


def test_filters_by_event_type_channel_and_where() -> None:
    attribute_set = attributes(
        orders={"kind": "count", "event": "Order Completed"},
        pages={"kind": "count", "type": "page"},
        phone={"kind": "count", "channel": "phone"},
        eur_orders={"kind": "count", "event": "Order Completed", "where": "properties.currency == 'EUR'"},
        pro_identifies={"kind": "count", "type": "identify", "where": "traits.plan == 'pro'"},
    )
    events = [
        event(1, currency="EUR"),
        event(2, currency="USD", channel="phone"),
        event(3, name="Order Completed", type="page"),
        event(4, name="Pricing", type="page", channel="phone"),
        event(5, name=None, type="identify", traits={"plan": "pro"}),
        event(6, name=None, type="identify", traits={"plan": "free"}),
    ]
    assert attribute_set.values(fold(attribute_set, events), T0) == {
        "orders": 3,
        "pages": 2,
        "phone": 2,
        "eur_orders": 1,
        "pro_identifies": 1,
    }


def test_where_sees_event_name_channel_and_time() -> None:
    attribute_set = attributes(
        late_web={"kind": "count", "where": f"channel == 'web' and now > {T0} and event == 'Order Completed'"}
    )
    events = [event(1, T0), event(2, T0 + 1), event(3, T0 + 1, channel="app"), event(4, T0 + 1, name="Other")]
    assert attribute_set.values(fold(attribute_set, events), T0) == {"late_web": 1}


# --- windows ------------------------------------------------------------------------


def test_windows_decay_without_events() -> None:
    attribute_set = attributes(
        orders_30d={"kind": "count", "window": "30d"},
        revenue_30d={"kind": "sum", "property": "total", "window": "30d"},
        biggest_30d={"kind": "max", "property": "total", "window": "30d"},
        first_30d={"kind": "first", "property": "total", "window": "30d"},
        last_30d={"kind": "last", "property": "total", "window": "30d"},
        top_30d={"kind": "most_frequent", "property": "total", "window": "30d"},
    )
    states = roundtrip(fold(attribute_set, [event(1, T0, total=50), event(2, T0 + 10 * DAY, total=20)]))
    assert attribute_set.values(states, T0 + 10 * DAY) == {
        "orders_30d": 2,
        "revenue_30d": 70,
        "biggest_30d": 50,
        "first_30d": 50,
        "last_30d": 20,
        "top_30d": 20,
    }
    # Membership: an event counts while now - ts < window.
    assert attribute_set.values(states, T0 + 30 * DAY - 1)["orders_30d"] == 2
    assert attribute_set.values(states, T0 + 30 * DAY) == {
        "orders_30d": 1,
        "revenue_30d": 20,
        "biggest_30d": 20,
        "first_30d": 20,
        "last_30d": 20,
        "top_30d": 20,
    }
    assert attribute_set.values(states, T0 + 41 * DAY) == {
        "orders_30d": 0,
        "revenue_30d": 0,
        "biggest_30d": None,
        "first_30d": None,
        "last_30d": None,
        "top_30d": None,
    }


def test_next_change_and_prune() -> None:
    attribute_set = attributes(
        orders_30d={"kind": "count", "window": "30d"},
        views_1d={"kind": "count", "event": "Product Viewed", "window": "1d"},
        orders={"kind": "count"},
    )
    assert attribute_set.windowed == frozenset({"orders_30d", "views_1d"})
    states = fold(
        attribute_set, [event(1, T0), event(2, T0 + DAY), event(3, T0 + 2 * DAY, "Product Viewed"), event(4, T0 + 1)]
    )
    assert attribute_set.next_change_ms(states, T0 + 2 * DAY) == T0 + 3 * DAY  # the view leaves first
    assert attribute_set.next_change_ms(states, T0 + 3 * DAY) == T0 + 30 * DAY
    assert attribute_set.next_change_ms(states, T0 + 30 * DAY) == T0 + 30 * DAY + 1
    assert attribute_set.next_change_ms(states, T0 + 32 * DAY) is None
    before = attribute_set.values(states, T0 + 30 * DAY + 1)
    attribute_set.prune(states, T0 + 30 * DAY + 1)
    assert "views_1d" not in states and len(states["orders_30d"][0]) == 2
    assert attribute_set.values(states, T0 + 30 * DAY + 1) == before == {"orders_30d": 2, "views_1d": 0, "orders": 4}
    attribute_set.prune(states, T0 + 60 * DAY)
    assert states == {"orders": 4}


def test_windowed_sum_of_floats_is_exact() -> None:
    attribute_set = attributes(revenue_1d={"kind": "sum", "property": "total", "window": "1d"})
    events = [event(seq, T0 + seq, total=value) for seq, value in enumerate([0.1] * 10 + [1e16, 1.0, -1e16])]
    assert attribute_set.values(fold(attribute_set, events), T0 + 20) == {"revenue_1d": 2.0}


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 40 * DAY),
            st.sampled_from(["Order Completed", "Product Viewed"]),
            st.one_of(st.integers(-1000, 1000), st.sampled_from(["a", "b", "c", True, 2.5]), st.none()),
        ),
        max_size=30,
    ),
    order=st.randoms(use_true_random=False),
    now_offset=st.integers(0, 80 * DAY),
)
def test_any_order_gives_the_same_values(rows: list[tuple[int, str, Any]], order: Any, now_offset: int) -> None:
    attribute_set = attributes(
        **{
            f"{kind}{suffix}": {"kind": kind, "event": "Order Completed", "property": "v", **window}
            for kind in ("count", "sum", "min", "max", "first", "last", "most_frequent")
            for suffix, window in (("", {}), ("_30d", {"window": "30d"}))
        },
        any_event={"kind": "most_frequent", "property": "name", "window": "1d"},
    )
    events = [event(seq, T0 + ts, name, v=value) for seq, (ts, name, value) in enumerate(rows)]
    shuffled = list(events)
    order.shuffle(shuffled)
    now = T0 + now_offset
    in_order = attribute_set.values(fold(attribute_set, events), now)
    assert attribute_set.values(roundtrip(fold(attribute_set, shuffled)), now) == in_order
    assert attribute_set.next_change_ms(fold(attribute_set, shuffled), now) == attribute_set.next_change_ms(
        fold(attribute_set, events), now
    )


# --- bounds -------------------------------------------------------------------------


def test_window_memory_is_bounded_and_values_stay_close() -> None:
    attribute_set = attributes(
        views_1d={"kind": "count", "window": "1d"},
        revenue_1d={"kind": "sum", "property": "v", "window": "1d"},
        smallest_1d={"kind": "min", "property": "v", "window": "1d"},
        first_1d={"kind": "first", "property": "v", "window": "1d"},
        top_1d={"kind": "most_frequent", "property": "k", "window": "1d"},
    )
    states: dict[str, Any] = {}
    step = 20_000  # 4,320 events a day, 10 days
    for seq in range(43_200):
        attribute_set.apply(states, event(seq, T0 + seq * step, v=seq, k=f"k{seq % 7 if seq % 2 else 0}"))
    now = T0 + 43_199 * step + 1
    for state in states.values():
        times, _seqs, _values, buckets, _kind = state
        assert len(times) <= MAX_WINDOW_ENTRIES
        assert len(buckets) <= 102
    assert all(len(bucket[1]) <= 32 for bucket in states["top_1d"][3])
    values = attribute_set.values(roundtrip(states), now)
    exact_count = sum(1 for seq in range(43_200) if now - (T0 + seq * step) < DAY)
    assert exact_count <= values["views_1d"] <= exact_count * 1.02
    assert values["smallest_1d"] <= 43_200 - exact_count and values["first_1d"] <= 43_200 - exact_count
    assert values["top_1d"] == "k0"
    assert values["revenue_1d"] >= sum(range(43_200 - exact_count, 43_200))
    # At the cap: ~15 KB for a count, ~45 KB for a most_frequent with its bucket tallies.
    assert all(len(msgspec.json.encode(state)) < 50_000 for state in states.values())


def test_all_time_tally_is_bounded() -> None:
    attribute_set = attributes(top={"kind": "most_frequent", "property": "v"})
    states = fold(
        attribute_set, [event(seq, T0 + seq, v="popular" if seq % 3 == 0 else f"v{seq}") for seq in range(5000)]
    )
    assert len(states["top"]) <= 1000
    assert attribute_set.values(states, T0) == {"top": "popular"}


def test_apply_is_cheap() -> None:
    """20 attributes on one event name, 5 windowed, 2 with `where` (module docstring)."""
    specs: dict[str, dict[str, Any]] = {}
    for index, kind in enumerate(["count", "sum", "min", "max", "first", "last", "most_frequent"] * 3):
        specs[f"a{index}"] = {"kind": kind, "event": "Order Completed", "property": "total"}
    specs.pop("a20")
    for index in range(5):
        specs[f"a{index}"]["window"] = "30d"
    specs["a5"]["where"] = specs["a6"]["where"] = "properties.currency == 'EUR'"
    attribute_set = attributes(**specs)
    states: dict[str, Any] = {}
    seq = iter(range(10**9))

    def one() -> None:
        number = next(seq)
        attribute_set.apply(states, event(number, T0 + number * 1000, total=number % 97, currency="EUR"))

    seconds = min(timeit.repeat(one, number=2000, repeat=3)) / 2000
    assert seconds < 200e-6, f"{seconds * 1e6:.1f} µs per apply"


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("45s", 45_000),
        ("90m", 5_400_000),
        ("12h", 43_200_000),
        ("30d", 30 * DAY),
        ("2w", 14 * DAY),
        ("3650d", 3650 * DAY),
    ],
)
def test_parse_duration(text: str, milliseconds: int) -> None:
    assert parse_duration(text, "f") == milliseconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1.5h", "30 d", "30D", "1y", "3651d", "99999999999d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_duration(text, "attributes.x.window")
    assert raised.value.details["field"] == "attributes.x.window"
    assert "attributes.x.window" in raised.value.message


@pytest.mark.parametrize(
    ("name", "spec", "field"),
    [
        ("revenue", {"kind": "sum"}, "attributes.revenue.property"),
        ("latest", {"kind": "last", "event": "Order Completed"}, "attributes.latest.property"),
        ("x", {"kind": "count", "window": "30 days"}, "attributes.x.window"),
        ("x", {"kind": "count", "window": "0h"}, "attributes.x.window"),
        ("Orders", {"kind": "count"}, "attributes.Orders"),
        ("1st", {"kind": "count"}, "attributes.1st"),
        ("a" * 64, {"kind": "count"}, "attributes." + "a" * 64),
        ("x", {"kind": "count", "where": "properties.total >"}, "attributes.x.where"),
        ("x", {"kind": "count", "where": "__import__('os')"}, "attributes.x.where"),
        ("x", {"kind": "count", "type": "click"}, "attributes.x.type"),
        ("x", {"kind": "count", "channel": "Web Site"}, "attributes.x.channel"),
        ("x", {"kind": "sum", "property": "a..b"}, "attributes.x.property"),
        ("x", {"kind": "count", "event": ""}, "attributes.x.event"),
    ],
)
def test_config_errors_name_the_field(name: str, spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        attributes(**{name: spec})
    assert raised.value.details["field"] == field
    assert field in raised.value.message


def test_spec_shape_is_checked_by_msgspec() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "median", "property": "x"}, AttributeSpec)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"kind": "count", "windw": "1d"}, AttributeSpec)


def test_compile_with_custom_prefix_and_fingerprints() -> None:
    with pytest.raises(ConfigError) as raised:
        AttributeSet.compile({"x": AttributeSpec(kind="sum")}, where="workspace.yaml: attributes")
    assert raised.value.details["field"] == "workspace.yaml: attributes.x.property"
    one = AttributeSet.compile({"x": AttributeSpec(kind="count", description="a"), "y": AttributeSpec(kind="count")})
    two = AttributeSet.compile(
        {"x": AttributeSpec(kind="count", description="b"), "y": AttributeSpec(kind="count", window="1d")}
    )
    assert one.names == ("x", "y")
    assert one.fingerprints["x"] == two.fingerprints["x"]
    assert one.fingerprints["y"] != two.fingerprints["y"]


def test_states_kept_under_an_earlier_spec_start_afresh() -> None:
    kinds = ("count", "sum", "min", "max", "first", "last", "most_frequent")
    variants = [{"kind": kind, "property": "v", **window} for kind in kinds for window in ({}, {"window": "1d"})]
    for before in variants:
        states = fold(attributes(x=before), [event(seq, T0 + seq, v=seq % 3) for seq in range(5)])
        for after in variants:
            attribute_set = attributes(x=after)
            changed = roundtrip(states)
            attribute_set.apply(changed, event(9, T0 + 9, v=7))  # a number state may serve min as max
            assert attribute_set.values(changed, T0 + 10)["x"] is not None
            attribute_set.values(states, T0 + 10)  # never raises
            attribute_set.next_change_ms(states, T0 + 10)
            attribute_set.prune(roundtrip(states), T0 + 10)
    assert attributes(x={"kind": "count"}).fingerprints != attributes(x={"kind": "count", "window": "1d"}).fingerprints
