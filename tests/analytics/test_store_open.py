"""Readers that meet a store being created in the same process wait for it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from polku.adapters.duckdb import analytics_store


def test_many_readers_of_a_store_that_does_not_exist_yet(tmp_path: Path) -> None:
    def read(_: int) -> int:
        with analytics_store.reader(tmp_path) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(read, range(16))) == [0] * 16
