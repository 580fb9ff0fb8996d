"""The analytics files of the scale-out deployment: Parquet partitioned by day,
written by ``polku analytics parquet`` and read with DuckDB (docs/parquet.md)."""

from polku.adapters.parquet.files import COLUMNS, day_of, file_name, parse_name, recover, scan, write_batch, written
from polku.adapters.parquet.reader import connect, load_identities, refresh

__all__ = [
    "COLUMNS",
    "connect",
    "day_of",
    "file_name",
    "load_identities",
    "parse_name",
    "recover",
    "refresh",
    "scan",
    "write_batch",
    "written",
]
