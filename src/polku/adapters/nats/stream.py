"""Connecting to NATS and making sure the event stream is there (docs/nats.md).

The stream is created on first start with file storage, the subjects
``<prefix>.*`` and the duplicate window; its description records the partition
count, which is fixed from then on: a different count would send a person's next
events to another partition than their earlier ones. A stream that exists is checked
(subjects, partitions) and its duplicate window brought to the one configured.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Final

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import NotFoundError

from polku.core.errors import ConfigError

log = logging.getLogger("polku.nats")

URL_SCHEMES: Final = ("nats://", "tls://")
STREAM_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_DESCRIPTION: Final = re.compile(r"polku event log: (\d+) partitions")
DEFAULT_DUPLICATE_WINDOW_S: Final = 600.0
START_HINT: Final = "scripts/services (or: nats-server -js -a 127.0.0.1 -p 4222 -sd <dir>)"


def check_url(url: str) -> str:
    if not url.startswith(URL_SCHEMES):
        raise ConfigError(f"{url!r} is not a NATS URL: expected nats://host[:port]", field="bus")
    return url


def check_names(stream: str, subject_prefix: str) -> None:
    if not STREAM_PATTERN.fullmatch(stream):
        raise ConfigError(f"stream name {stream!r} must be letters, digits, '-' or '_'", field="stream")
    if not PREFIX_PATTERN.fullmatch(subject_prefix):
        raise ConfigError(
            f"subject prefix {subject_prefix!r} must be dot-separated tokens of letters, digits, '-' or '_'",
            field="subject_prefix",
        )


async def connect(url: str, *, name: str, timeout_s: float = 10.0) -> Client:
    """A connection that reconnects for ever once made; a ``ConfigError`` naming the
    last failure if none is made within ``timeout_s`` (nats-py itself would retry the
    first connection indefinitely)."""
    check_url(url)
    last_error: list[BaseException] = []

    async def on_error(error: Exception) -> None:
        last_error[:] = [error]
        log.warning("nats: %s", error)

    async def on_disconnected() -> None:
        log.warning("nats: disconnected from %s", url)

    async def on_reconnected() -> None:
        log.info("nats: reconnected to %s", url)

    client = Client()
    try:
        await asyncio.wait_for(
            client.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            ),
            timeout=timeout_s,
        )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        await client.close()
        reason = last_error[0] if last_error else error
        raise ConfigError(f"cannot connect to NATS at {url}: {reason or type(reason).__name__}", field="bus") from None
    return client


def description(partitions: int) -> str:
    return f"polku event log: {partitions} partitions"


async def ensure_stream(
    js: JetStreamContext,
    *,
    stream: str,
    subject_prefix: str,
    partitions: int,
    duplicate_window_s: float | None,
) -> StreamInfo:
    """Create the stream, or check the one there against the configuration.
    ``duplicate_window_s=None`` (a worker) keeps the window the stream has, and
    creates a missing stream with ``DEFAULT_DUPLICATE_WINDOW_S``."""
    subjects = [f"{subject_prefix}.*"]
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return await js.add_stream(
            StreamConfig(
                name=stream,
                description=description(partitions),
                subjects=subjects,
                storage=StorageType.FILE,
                # The log of record: kept until polku deletes from it, never by age.
                retention=RetentionPolicy.LIMITS,
                discard=DiscardPolicy.NEW,
                duplicate_window=duplicate_window_s or DEFAULT_DUPLICATE_WINDOW_S,
            )
        )
    config = info.config
    if config.subjects != subjects:
        raise ConfigError(
            f"stream {stream!r} exists with subjects {config.subjects}, not {subjects}: "
            "choose another stream name or subject prefix",
            field="stream",
        )
    found = _DESCRIPTION.fullmatch(config.description or "")
    if found is not None and int(found.group(1)) != partitions:
        raise ConfigError(
            f"stream {stream!r} has {found.group(1)} partitions, not {partitions}: the count is fixed when the "
            "stream is created",
            field="partitions",
        )
    if duplicate_window_s is not None and config.duplicate_window != duplicate_window_s:
        config.duplicate_window = duplicate_window_s
        info = await js.update_stream(config)
    return info
