"""The scale-out state store on PostgreSQL (psycopg 3 with a connection pool); so
far the catalog. docs/postgresql.md describes the URL, the schema and migrations."""

from polku.adapters.postgres.catalog import PostgresCatalog
from polku.adapters.postgres.schema import MIGRATIONS, Migration, SchemaStatus, migrate, status

__all__ = ["MIGRATIONS", "Migration", "PostgresCatalog", "SchemaStatus", "migrate", "status"]
