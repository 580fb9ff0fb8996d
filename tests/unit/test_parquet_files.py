"""The pure parts of the Parquet analytics consumer: file names, what the files say
is written, recovery from a crash between two renames, the rows of messages, and
the DuckDB view over the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from polku.adapters.parquet import files, reader
from polku.core.errors import ConfigError
from polku.core.events import Event, format_millis
from polku.core.workspace import parse_config
from polku.engine.parquet_feed import Batch, add_message, check_options, event_row

DAY_MS = 86_400_000
T0 = 1_790_035_200_000  # 2026-09-22T00:00:00Z
CONFIG = parse_config("{}")


def body(**fields: Any) -> bytes:
    ts = fields.pop("ts", T0)
    defaults: dict[str, Any] = {
        "message_id": "m1",
        "type": "track",
        "channel": "web",
        "source": "default",
        "timestamp": format_millis(ts),
        "received_at": format_millis(ts + 5),
    }
    return msgspec.json.encode(Event(**{**defaults, **fields}))


def test_a_name_says_its_sequences_and_place_and_sorts_as_they_do() -> None:
    name = files.file_name(7, 1200, 2, 3)
    assert name == "part-00000000000000000007-00000000000000001200-2of3.parquet"
    assert files.parse_name("day=2026-09-22", name) == files.PartFile(7, 1200, 2, 3, "2026-09-22")
    assert files.file_name(9, 10, 1, 1) < files.file_name(11, 12, 1, 1) < files.file_name(100, 100, 1, 1)
    for folder, other in [
        ("day=2026-09-22", "part-7-1200-2of3.parquet"),
        ("day=2026-09-22", ".part-00000000000000000007-00000000000000001200-2of3.parquet.1.tmp"),
        ("day=2026-09-22", files.file_name(7, 1200, 4, 3)),
        ("2026-09-22", name),
    ]:
        assert files.parse_name(folder, other) is None


def test_days_are_utc_days() -> None:
    assert files.day_of(T0) == "2026-09-22"
    assert files.day_of(T0 - 1) == "2026-09-21"
    assert files.day_of(T0 + DAY_MS - 1) == "2026-09-22"
    assert files.day_of(0) == "1970-01-01"


def parts(*batches: tuple[int, int, int, list[int]]) -> list[files.PartFile]:
    """(first, last, count, the indexes present) per batch."""
    return [
        files.PartFile(first, last, index, count, f"2026-09-{20 + index:02d}")
        for first, last, count, indexes in batches
        for index in indexes
    ]


def test_the_high_water_mark_is_the_last_complete_batch() -> None:
    state = files.written(parts((1, 10, 2, [1, 2]), (11, 30, 1, [1]), (31, 40, 3, [1, 3])))
    assert state.high_water == 30
    assert [(part.first, part.index) for part in state.incomplete] == [(31, 1), (31, 3)]
    assert files.written([]).high_water == 0


def test_a_hole_below_complete_batches_or_an_overlap_is_refused() -> None:
    with pytest.raises(ConfigError, match="removed by hand"):
        files.written(parts((1, 10, 2, [2]), (11, 30, 1, [1])))
    with pytest.raises(ConfigError, match="overlap"):
        files.written(parts((1, 10, 1, [1]), (5, 30, 1, [1])))


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6), st.data())
def test_a_crash_after_any_rename_leaves_the_complete_batches(counts: list[int], data: st.DataObject) -> None:
    """Batches written in order, the last cut after any number of its renames: the
    high-water mark is the last batch whose files are all there."""
    batches = []
    first = 1
    for count in counts:
        batches.append((first, first + 9, count, list(range(1, count + 1))))
        first += 10
    renamed = data.draw(st.integers(min_value=0, max_value=counts[-1]))
    last_first, last_last, last_count, _ = batches[-1]
    batches[-1] = (last_first, last_last, last_count, list(range(1, renamed + 1)))
    state = files.written(parts(*batches))
    if renamed == last_count:
        assert state.high_water == last_last and not state.incomplete
    else:
        assert state.high_water == last_first - 1 and len(state.incomplete) == renamed


def columns_of(rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    batch = Batch(rows=rows)
    return batch.columns()


def rows_on(days: list[int], first_seq: int) -> tuple[dict[str, list[Any]], list[str]]:
    rows = []
    for offset, day in enumerate(days):
        seq = first_seq + offset
        found = event_row(
            seq,
            "default",
            body(message_id=f"m{seq}", user_id=f"u{seq % 3}", event="Viewed", ts=T0 + day * DAY_MS + offset),
            CONFIG,
        )
        assert found is not None
        rows.append(found[1])
    return columns_of(rows), [files.day_of(row[2]) for row in rows]


def test_a_batch_is_one_file_per_day_and_recovery_deletes_an_incomplete_one(tmp_path: Path) -> None:
    out = tmp_path / "analytics"
    columns, days = rows_on([0, 1, 0, 2], 1)
    assert files.write_batch(out, 1, 4, columns, days) == 3
    assert sorted(path.relative_to(out).as_posix() for path in out.glob("day=*/*.parquet")) == [
        f"day=2026-09-22/{files.file_name(1, 4, 1, 3)}",
        f"day=2026-09-23/{files.file_name(1, 4, 2, 3)}",
        f"day=2026-09-24/{files.file_name(1, 4, 3, 3)}",
    ]
    columns, days = rows_on([1, 2], 5)
    assert files.write_batch(out, 5, 8, columns, days) == 2  # sequences 7 and 8 were left out
    # The process died after the first rename of the next batch, and left a temporary file.
    columns, days = rows_on([0, 3], 9)
    files.write_batch(out, 9, 10, columns, days)
    (out / "day=2026-09-25" / files.file_name(9, 10, 2, 2)).unlink()
    (out / "day=2026-09-22" / ".part-00000000000000000011-00000000000000000011-1of1.parquet.9.tmp").write_bytes(b"x")
    state = files.recover(out)
    assert (state.high_water, state.files) == (8, 5)
    assert len(list(out.glob("day=*/*"))) == 5
    with reader.connect(out) as db:
        assert db.execute("SELECT day::VARCHAR, count(*) FROM events GROUP BY ALL ORDER BY 1").fetchall() == [
            ("2026-09-22", 2),
            ("2026-09-23", 2),
            ("2026-09-24", 2),
        ]
        # Without identities each identifier is its own customer.
        assert db.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1").fetchall() == [
            ("user_id:u0",),
            ("user_id:u1",),
            ("user_id:u2",),
        ]
        assert db.execute("SELECT min(seq), max(seq), count(DISTINCT message_id) FROM events").fetchone() == (1, 6, 6)


def test_the_view_over_no_files_is_empty_with_the_same_columns(tmp_path: Path) -> None:
    with reader.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
        names = [row[0] for row in db.execute("DESCRIBE events").fetchall()]
    assert names == [*files.NAMES, "day"]


def test_rows_follow_the_embedded_feed() -> None:
    day, row = event_row(3, "w", body(user_id="ada", anonymous_id="a1", event="Signed Up"), CONFIG) or ("", ())
    assert day == "2026-09-22"
    values = dict(zip(files.NAMES, row, strict=True))
    assert values["anchor"] == "user_id:ada" and values["customer_id"] is None
    assert (values["user_id"], values["anonymous_id"], values["name"], values["seq"]) == ("ada", "a1", "Signed Up", 3)
    assert values["received_at"] == T0 + 5
    _, row = event_row(
        4,
        "w",
        body(anonymous_id="a1", event="Feedback Submitted", properties={"metric": "CSAT", "score": 2, "survey": "s"}),
        CONFIG,
    ) or ("", ())
    values = dict(zip(files.NAMES, row, strict=True))
    assert (values["anchor"], values["metric"], values["score"], values["survey"]) == (
        "anonymous_id:a1",
        "csat",
        2.0,
        "s",
    )
    internal = {"polku": {"customer_id": "c9"}}
    _, row = event_row(
        5, "w", body(source="polku", channel="email", context=internal, event="Message Opened"), CONFIG
    ) or (
        "",
        (),
    )
    values = dict(zip(files.NAMES, row, strict=True))
    assert (values["customer_id"], values["anchor"]) == ("c9", "customer:c9")
    # Segment changes, what polku showed a customer, and polku's other events are left out.
    assert (
        event_row(6, "w", body(source="polku", channel="system", context=internal, event="Segment Entered"), CONFIG)
        is None
    )
    shown = {"polku": {"customer_id": "c9", "interaction": False}}
    assert event_row(7, "w", body(source="polku", channel="web", context=shown, event="Decision Shown"), CONFIG) is None
    assert event_row(8, "w", body(source="polku", channel="system", event="Journey Deployed"), CONFIG) is None
    with pytest.raises(ValueError, match="not a polku event"):
        event_row(9, "w", b"not json", CONFIG)


def test_a_batch_skips_what_the_workers_skip_and_a_repeated_message_id() -> None:
    batch = Batch()
    assert add_message(batch, 10, "w", body(message_id="x", user_id="u"), {}) is None
    assert add_message(batch, 11, None, body(message_id="y", user_id="u"), {}) == "no Polku-Workspace header"
    assert "not a polku event" in (add_message(batch, 12, "w", b"{}", {}) or "")
    assert add_message(batch, 13, "w", body(message_id="x", user_id="u"), {}) is None  # sent again after the window
    assert add_message(batch, 14, "other", body(message_id="x", user_id="u"), {}) is None  # another workspace's
    assert (batch.first, batch.last, len(batch.rows)) == (10, 14, 2)
    assert batch.columns()["seq"] == [10, 14]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"durable": "a.b"}, "durable"),
        ({"max_events": 0}, "batch_events"),
        ({"max_seconds": 0.0}, "batch_seconds"),
    ],
)
def test_options_are_checked(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"durable": "polku-parquet", "max_events": 10, "max_seconds": 1.0, "out": tmp_path}
    with pytest.raises(ConfigError) as raised:
        check_options(**{**arguments, **options})
    assert raised.value.details["field"] == field
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        check_options(**{**arguments, "out": tmp_path / "file"})


def test_each_folder_has_a_consumer_of_its_own(tmp_path: Path) -> None:
    """Two consumers writing two folders must not share one durable consumer (each
    start re-places it, which would move the other's)."""
    from polku.engine.parquet_feed import folder_consumer

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    name = folder_consumer(first)
    assert name.startswith("polku-parquet-") and folder_consumer(first) == name  # kept
    assert folder_consumer(second) != name
    assert [entry.name for entry in first.iterdir()] == [".polku-parquet-id"]
