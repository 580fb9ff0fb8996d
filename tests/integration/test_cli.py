"""The ``polku`` command as a user runs it: a real subprocess on a real data dir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec


def polku(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "polku", *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"polku {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def exported(data_dir: Path, *extra: str) -> list[dict[str, object]]:
    output = polku("export", "events", "--data-dir", str(data_dir), *extra).stdout
    return [json.loads(line) for line in output.splitlines() if line]


def write_jsonl(path: Path, messages: list[dict[str, object]], extra_lines: list[str] = ()) -> None:  # type: ignore[assignment]
    lines = [msgspec.json.encode(m).decode() for m in messages] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def test_jsonl_import_is_validated_quarantined_and_idempotent(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    source = tmp_path / "events.jsonl"
    messages: list[dict[str, object]] = [
        {
            "type": "track",
            "userId": f"u{i}",
            "event": "Bought",
            "timestamp": "2024-05-01T10:00:00Z",
            "properties": {"i": i},
        }
        for i in range(300)
    ]
    messages.append(
        {
            "type": "identify",
            "userId": "u1",
            "traits": {"plan": "pro"},
            "messageId": "given-id",
            "context": {"channel": "crm"},
        }
    )
    write_jsonl(source, messages, extra_lines=['{"type": "track", "userId": "x"}', "not json"])

    first = json.loads(polku("import", str(source), "--data-dir", str(data_dir), "--output", "json").stdout)
    assert first == {"files": 1, "messages": 303, "accepted": 301, "duplicates": 0, "quarantined": 2}
    again = json.loads(polku("import", str(source), "--data-dir", str(data_dir), "--output", "json").stdout)
    assert again["accepted"] == 0 and again["duplicates"] == 301

    events = exported(data_dir)
    assert len(events) == 301
    assert len({e["messageId"] for e in events}) == 301
    assert {e["channel"] for e in events} == {"web", "crm"}
    assert exported(data_dir, "--identifier", "u1", "--type", "identify")[0]["messageId"] == "given-id"
    assert events[0]["timestamp"] == "2024-05-01T10:00:00.000Z"

    listing = json.loads(polku("quarantine", "list", "--data-dir", str(data_dir), "--format", "json").stdout)
    reasons = sorted(entry["reason"] for entry in listing)
    assert len(listing) == 4  # two bad lines, imported twice
    assert reasons[0].startswith("events.jsonl line 302: ")
    assert any("line 302" in reason and "`event`" in reason for reason in reasons)
    assert any("line 303" in reason and "malformed" in reason for reason in reasons)


def test_quarantined_message_can_be_corrected_and_resubmitted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    source = tmp_path / "bad.jsonl"
    write_jsonl(source, [{"type": "track", "userId": "u9", "messageId": "fix-me"}])
    polku("import", str(source), "--data-dir", str(data_dir))
    [entry] = json.loads(polku("quarantine", "list", "--data-dir", str(data_dir), "--format", "json").stdout)
    still_bad = polku("quarantine", "resubmit", str(entry["id"]), "--data-dir", str(data_dir), check=False)
    assert still_bad.returncode == 2 and "still invalid" in still_bad.stderr
    corrected = tmp_path / "fixed.json"
    corrected.write_text('{"type": "track", "userId": "u9", "messageId": "fix-me", "event": "Fixed"}')
    out = polku(
        "quarantine", "resubmit", str(entry["id"]), "--file", str(corrected), "--data-dir", str(data_dir)
    ).stderr
    assert f"{entry['id']}: stored" in out
    assert [e["event"] for e in exported(data_dir)] == ["Fixed"]
    assert json.loads(polku("quarantine", "list", "--data-dir", str(data_dir), "--format", "json").stdout) == []


def test_csv_import_with_a_column_mapping(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    polku("import", str(_empty_jsonl(tmp_path)), "--data-dir", str(data_dir))
    polku("sources", "add", "shop", "--channel", "store", "--data-dir", str(data_dir))
    source = tmp_path / "orders.csv"
    source.write_text(
        "order_id,customer,placed_at,total\n1,c1,2024-06-01T09:00:00Z,19.90\n2,,2024-06-01T09:05:00Z,5\n3,c3,2024-06-01T09:10:00Z,7\n"
    )
    args = ["import", str(source), "--data-dir", str(data_dir), "--source", "shop", "--event", "Order Placed"]
    args += [
        "--map",
        "userId=customer",
        "--map",
        "timestamp=placed_at",
        "--map",
        "messageId=order_id",
        "--output",
        "json",
    ]
    report = json.loads(polku(*args).stdout)
    assert report == {"files": 1, "messages": 3, "accepted": 2, "duplicates": 0, "quarantined": 1}
    events = exported(data_dir)
    assert [(e["userId"], e["messageId"], e["channel"], e["event"]) for e in events] == [
        ("c1", "1", "store", "Order Placed"),
        ("c3", "3", "store", "Order Placed"),
    ]
    assert events[0]["properties"] == {"total": "19.90"}
    bad = polku("import", str(source), "--data-dir", str(data_dir), "--map", "userId=nope", check=False)
    assert bad.returncode == 2 and "no column named 'nope'" in bad.stderr


def _empty_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    return path


def test_keys_are_created_listed_and_revoked(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    polku("import", str(_empty_jsonl(tmp_path)), "--data-dir", str(data_dir))
    created = json.loads(polku("keys", "create", "write", "--label", "ci", "--data-dir", str(data_dir)).stdout)
    assert created["key"].startswith("pk_write_")
    listed = json.loads(polku("keys", "list", "--data-dir", str(data_dir), "--format", "json").stdout)
    assert created["key_id"] in [k["key_id"] for k in listed]
    assert created["key"] not in json.dumps(listed)
    revoked = json.loads(polku("keys", "revoke", created["key_id"], "--data-dir", str(data_dir)).stdout)
    assert revoked["revoked_at"] is not None


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    result = polku("export", "events", "--data-dir", str(tmp_path / "nothing"), check=False)
    assert result.returncode == 2
    assert "no polku store in" in result.stderr


def test_exported_events_reimport_with_their_original_timestamps(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    source = tmp_path / "history.jsonl"
    # A Segment archive line from years ago: already received, already corrected.
    archived = {
        "type": "track",
        "userId": "u1",
        "event": "Bought",
        "messageId": "old-1",
        "timestamp": "2021-03-04T05:06:07.000Z",
        "originalTimestamp": "2021-03-04T05:06:09.000Z",
        "sentAt": "2021-03-04T05:06:10.000Z",
        "receivedAt": "2021-03-04T05:06:08.000Z",
    }
    write_jsonl(source, [archived])
    polku("import", str(source), "--data-dir", str(first))
    [stored] = exported(first)
    assert stored["timestamp"] == "2021-03-04T05:06:07.000Z"
    assert stored["originalTimestamp"] == "2021-03-04T05:06:09.000Z"
    dump = tmp_path / "dump.jsonl"
    polku("export", "events", "--data-dir", str(first), "--out", str(dump))
    report = json.loads(polku("import", str(dump), "--data-dir", str(second), "--output", "json").stdout)
    assert report["accepted"] == 1 and report["quarantined"] == 0
    [again] = exported(second)
    assert (again["messageId"], again["timestamp"]) == ("old-1", "2021-03-04T05:06:07.000Z")
