"""Settings: one frozen object built at the edge from flags, environment
(``POLKU_…``) and defaults. Each setting has a help line; ``docs/configuration.md``
lists them and a test keeps the two in step."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from polku.core.errors import ConfigError

if TYPE_CHECKING:
    from polku.engine.scale_worker import ScaleOut


OLDER_NAMES: dict[str, str] = {"schema": "POLKU_STORE_SCHEMA"}
"""Environment variables read when ``POLKU_<NAME>`` is not set (the other roles' CLI
options take both names too)."""


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = _setting("127.0.0.1", "Address the HTTP server binds to.")
    port: int = _setting(8000, "TCP port of the HTTP server.")
    data_dir: Path = _setting(
        Path("polku-data"),
        "Directory of the embedded store (SQLite database in WAL mode).",
    )
    write_key: str | None = _setting(None, "Write key of the default source, created if missing (scripted setups).")
    admin_token: str | None = _setting(None, "Admin token of the default workspace, created if missing.")
    synchronous: Literal["FULL", "NORMAL"] = _setting(
        "FULL", "SQLite fsync policy: FULL survives power loss, NORMAL only process crashes."
    )
    max_pending_events: int = _setting(200_000, "Events waiting for commit before ingestion answers 503 + Retry-After.")
    processor: bool = _setting(
        True, "Run the processor (identity, profiles, segments) as a child process of the server."
    )
    dispatcher: bool = _setting(
        True, "Run the dispatcher (delivers journey messages: SMTP, webhooks) as a child process of the server."
    )
    public_url: str | None = _setting(
        None,
        "Address people reach this server at, for survey links (http://HOST:PORT without it; a workspace's "
        "surveys.base_url wins).",
    )
    analytics: bool = _setting(
        True, "Run the analytics feed (copies events into the DuckDB analytics store) as a child process."
    )
    store: str | None = _setting(
        None,
        "PostgreSQL URL of the scale-out deployment (with bus: this server is its API role, "
        "docs/scale-out.md); none for the embedded store.",
    )
    bus: str | None = _setting(None, "NATS URL of the scale-out deployment's event stream (with store).")
    schema: str = _setting("polku", "PostgreSQL schema of the scale-out deployment's tables.")
    stream: str = _setting("POLKU_EVENTS", "JetStream stream of the scale-out deployment's events.")
    subject_prefix: str = _setting("polku.ev", "Subject prefix of the stream's partitions.")
    partitions: int = _setting(64, "Partitions of the stream (fixed when it is created).")
    duplicate_window_s: int = _setting(
        600, "Seconds the stream deduplicates a resent messageId in (older resends: the workers' index)."
    )
    admin_rate_limit: float = _setting(
        50.0, "Requests per second per admin token, in bursts of up to ten times that (0: no limit)."
    )
    write_rate_limit: float = _setting(
        0.0,
        "Requests per second per write key, in bursts of up to ten times that (0: no limit — one write key serves "
        "every browser of a site).",
    )
    log_level: str = _setting("info", "Log level: debug, info, warning or error.")
    access_log: bool = _setting(False, "Log every HTTP request (costs throughput).")

    @classmethod
    def help_lines(cls) -> dict[str, str]:
        return {f.name: str(f.metadata["help"]) for f in fields(cls)}

    @classmethod
    def from_sources(cls, flags: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
        """Flags win over ``POLKU_<NAME>`` environment variables, which win over defaults."""
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = flags.get(f.name)
            if raw is None:
                raw = environ.get(f"POLKU_{f.name.upper()}")
            if raw is None and f.name in OLDER_NAMES:
                raw = environ.get(OLDER_NAMES[f.name])
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.default, raw)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not between 1 and 65535", field="port")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be FULL or NORMAL, not {self.synchronous!r}", field="synchronous")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ConfigError(f"public_url must be an http(s) address, not {self.public_url!r}", field="public_url")
        if (self.store is None) != (self.bus is None):
            missing = "bus" if self.bus is None else "store"
            raise ConfigError(f"the scale-out deployment needs both store and bus; {missing} is missing", field=missing)
        if self.scale_out:
            self.deployment()  # checks the URLs and the partitions
            if not 1 <= self.duplicate_window_s <= 86_400:
                raise ConfigError("duplicate_window_s must be 1-86,400", field="duplicate_window_s")
        for name in ("admin_rate_limit", "write_rate_limit"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ConfigError(f"{name} must be 0 (no limit) to 1,000,000 requests per second", field=name)
        if self.max_pending_events < 1000:
            raise ConfigError("max_pending_events must be at least 1000", field="max_pending_events")

    @property
    def scale_out(self) -> bool:
        """The server is the API role of the scale-out deployment (PostgreSQL + NATS)."""
        return self.store is not None

    def deployment(self) -> ScaleOut:
        from polku.engine.scale_worker import ScaleOut

        assert self.store is not None and self.bus is not None
        return ScaleOut.checked(
            store_url=self.store,
            bus_url=self.bus,
            schema=self.schema,
            stream=self.stream,
            subject_prefix=self.subject_prefix,
            partitions=self.partitions,
        )


def _convert(name: str, default: Any, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if name == "synchronous":
            return raw.upper()
    except ValueError:
        raise ConfigError(f"POLKU_{name.upper()}={raw!r} is not a valid {type(default).__name__}", field=name) from None
    return raw
