"""The embedded analytics store: DuckDB (docs/analytics.md)."""
