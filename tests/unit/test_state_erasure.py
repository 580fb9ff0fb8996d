"""The erasure's SQL over a real ``state.db`` (``polku.adapters.state_erasure``) and
the pure helpers it leans on: an identity change that involved someone else keeps
them and loses the person; the analytics stage is done only when every Parquet
folder's consumer has done its part; the audit paths and quarantine bodies are
matched by whole segments and whole JSON strings, not by substrings."""

from __future__ import annotations

from pathlib import Path

import msgspec

from polku.adapters import state_erasure
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.erasure import quoted_forms, redact_action
from polku.state import MergeRecord

_encode = msgspec.msgpack.Encoder().encode


def _change(store: SqliteStateStore, survivor: str, absorbed: list[str], reason: str) -> None:
    record = MergeRecord(seq=1, ts_ms=1, kind="merge", survivor=survivor, absorbed=absorbed, reason=reason)
    store.writer.execute("INSERT INTO identity_changes (workspace, seq, body) VALUES ('w', 1, ?)", (_encode(record),))


def test_an_identity_change_shared_with_someone_else_keeps_them_without_the_person(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    try:
        store.writer.execute("INSERT INTO identifiers VALUES ('w', 'user_id:ann', 'c_ann', 1, 'm1')")
        _change(store, "c_ann", ["c_ann_old"], "merged")  # only the person (with an id merged into them)
        store.writer.execute("INSERT INTO redirects VALUES ('w', 'c_ann_old', 'c_ann')")
        _change(store, "c_bob", ["c_ann"], "split off by user_id:ann")  # bob's too
        _change(store, "c_bob", ["c_cy"], "merged")  # not the person's
        scope = state_erasure.find_scope(
            store.writer.execute, "w", "c_ann", erasure="er_1", requested_ms=1, marker_seq=9, suppress=False
        )
        assert scope.customer_ids == ["c_ann", "c_ann_old"] and len(scope.identity_changes) == 1
        assert len(scope.shared_changes) == 1
        store.writer.execute("BEGIN IMMEDIATE")
        state_erasure.erase_state(store.writer.execute, scope, 2)
        store.writer.execute("COMMIT")
        left = [
            msgspec.msgpack.decode(body, type=MergeRecord)
            for (body,) in store.writer.execute("SELECT body FROM identity_changes ORDER BY id")
        ]
        assert [(r.survivor, r.absorbed, r.reason) for r in left] == [
            ("c_bob", [state_erasure.ERASED_ID], "split off by user_id:[erased]"),
            ("c_bob", ["c_cy"], "merged"),
        ]
    finally:
        store.close()


def test_the_analytics_stage_waits_for_every_parquet_consumer(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path)
    execute = store.writer.execute
    try:
        scope = state_erasure.find_scope(
            execute, "w", "c_x", erasure="er_2", requested_ms=1, marker_seq=5, suppress=False
        )
        state_erasure.erase_state(execute, scope, 2)
        state_erasure.mark_stage(execute, "w", "er_2", "log", {"events": 1}, 3)
        consumers = {"polku-parquet-a", "polku-parquet-b"}
        state_erasure.mark_consumer(execute, "w", "er_2", "polku-parquet-a", {"parquet_rows": 2}, 4, consumers)
        assert [s.erasure for s in state_erasure.pending(execute, "analytics", "polku-parquet-b")] == ["er_2"]
        assert state_erasure.pending(execute, "analytics", "polku-parquet-a") == []
        (receipt,) = state_erasure.receipts(execute, "w")
        assert receipt.status == "erasing"
        state_erasure.mark_consumer(execute, "w", "er_2", "polku-parquet-b", {"parquet_rows": 3}, 5, consumers)
        (receipt,) = state_erasure.receipts(execute, "w")
        assert receipt.status == "erased" and receipt.removed["analytics.parquet_rows"] == 5
        assert execute("SELECT scope FROM erasures").fetchone() == (None,)  # the person's data wiped
    finally:
        store.close()


def test_paths_lose_whole_segments_and_bodies_are_searched_for_whole_strings() -> None:
    named = {"c_ann", "ann@example.com", "ann%40example.com"}
    assert redact_action("GET /v1/profiles/c_ann/export", named) == "GET /v1/profiles/[erased]/export"
    assert redact_action("GET /v1/profiles/c_anna/export", named) == "GET /v1/profiles/c_anna/export"
    assert redact_action("DELETE /v1/keys/c_ann", named) == "DELETE /v1/keys/[erased]"
    forms = quoted_forms(["Ann", "Åsa"])
    assert forms == ['"ann"', '"åsa"', '"\\u00c5sa"']  # as it stands in a body, and JSON-escaped
    body = '{"userId": "Ann", "channel": "annual"}'.lower()
    assert '"ann"' in body and all(form not in '{"channel": "annual"}' for form in forms)
