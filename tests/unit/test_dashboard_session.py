"""Dashboard sessions (pure): signed cookies, expiry, CSRF tokens, the secret file;
and how numbers read on the pages."""

from __future__ import annotations

import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from polku.dashboard import formatting
from polku.dashboard.session import SessionSigner, load_secret


def test_a_cookie_round_trips_and_any_change_is_refused() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie, session = signer.issue("default", "abc123")
    assert signer.read(cookie) == session
    # A character inside the signature (the last one can carry unused padding bits).
    tampered = cookie[:-10] + ("A" if cookie[-10] != "A" else "B") + cookie[-9:]
    assert signer.read(tampered) is None
    assert SessionSigner(b"x" * 32).read(cookie) is None  # another server's secret
    assert signer.read("") is None and signer.read(None) is None and signer.read("a" * 2000) is None


def test_a_cookie_expires_after_a_working_day(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SessionSigner(b"k" * 32)
    cookie, _ = signer.issue("default", "abc123")
    later = time.time() + 12 * 3600 + 5
    monkeypatch.setattr(time, "time", lambda: later)
    assert signer.read(cookie) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    signer = SessionSigner(b"k" * 32)
    _, first = signer.issue("default", "abc123")
    _, second = signer.issue("default", "abc123")
    assert signer.check_csrf(first, signer.csrf_token(first))
    assert not signer.check_csrf(first, signer.csrf_token(second))
    assert not signer.check_csrf(first, None) and not signer.check_csrf(first, "")


def test_the_secret_is_made_once_and_private(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    assert len(secret) == 32 and load_secret(tmp_path) == secret
    assert stat.S_IMODE((tmp_path / "dashboard.secret").stat().st_mode) == 0o600


def test_numbers_read_the_way_people_read_them() -> None:
    assert formatting.number(1234567) == "1\u202f234\u202f567" and formatting.number(None) == "–"
    assert formatting.compact(18_726) == "18.7\u202fk" and formatting.compact(2_000_000) == "2\u202fM"
    assert formatting.compact(9_999) == "9\u202f999"
    assert formatting.percent(0.1234) == "12.3\u202f%" and formatting.signed_points(-0.021) == "-2.1\u202fpp"
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert formatting.ago("2026-11-24T11:57:00Z", now) == "3\u202fmin ago"
    assert formatting.when("2026-11-24T11:57:00.123Z") == "2026-11-24 11:57 UTC"
    assert formatting.channel_icon("Phone") == "phone" and formatting.channel_icon("fax") == "other"
