from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polku.config import Settings
from polku.core.errors import ConfigError
from polku.core.ids import uuid7


@given(st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10))
def test_uuid7_is_a_valid_version_7_uuid_carrying_the_time(unix_ms: int, random_bytes: bytes) -> None:
    value = uuid.UUID(uuid7(unix_ms, random_bytes))
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == unix_ms


@given(st.lists(st.integers(min_value=0, max_value=2**48 - 1), min_size=2, max_size=20, unique=True))
def test_uuid7_sorts_by_time(times: list[int]) -> None:
    ids = [uuid7(ms, bytes(10)) for ms in times]
    assert sorted(ids) == [uuid7(ms, bytes(10)) for ms in sorted(times)]


def test_uuid7_needs_ten_random_bytes() -> None:
    with pytest.raises(ValueError, match="10 random bytes"):
        uuid7(0, b"short")


def test_settings_flags_win_over_environment_over_defaults() -> None:
    environ = {
        "POLKU_PORT": "9001",
        "POLKU_DATA_DIR": "/tmp/x",
        "POLKU_ACCESS_LOG": "yes",
        "POLKU_SYNCHRONOUS": "normal",
    }
    settings = Settings.from_sources({"port": 9002, "data_dir": None}, environ)
    assert settings.port == 9002
    assert settings.data_dir == Path("/tmp/x")
    assert settings.access_log is True
    assert settings.synchronous == "NORMAL"
    assert Settings.from_sources({}, {}).port == 8000


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"POLKU_PORT": "eighty"}, "POLKU_PORT='eighty' is not a valid int"),
        ({"POLKU_PORT": "70000"}, "port 70000 is not between 1 and 65535"),
        ({"POLKU_ACCESS_LOG": "maybe"}, "POLKU_ACCESS_LOG='maybe' is not a valid bool"),
        ({"POLKU_SYNCHRONOUS": "off"}, "synchronous must be FULL or NORMAL"),
        ({"POLKU_MAX_PENDING_EVENTS": "10"}, "max_pending_events must be at least 1000"),
    ],
)
def test_bad_settings_are_clear_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_sources({}, environ)
