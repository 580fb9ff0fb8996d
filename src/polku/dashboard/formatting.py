"""How numbers, shares, times and channels read on the dashboard (Jinja filters)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

CHANNEL_ICONS: Final = {
    "web": "web",
    "app": "app",
    "email": "email",
    "sms": "sms",
    "phone": "phone",
    "call": "phone",
    "call_center": "phone",
    "chat": "chat",
    "store": "store",
    "pos": "store",
    "shop": "store",
    "crm": "crm",
    "billing": "billing",
    "server": "server",
    "in_app": "app",
    "push": "app",
    "webhook": "server",
    "survey": "survey",
}


def number(value: Any) -> str:
    """``12 345``-style grouping with a thin space; ``–`` for nothing."""
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "\u202f")
    return f"{int(value):,}".replace(",", "\u202f")


def compact(value: Any) -> str:
    """``1.2 M``, ``34 k``: for tiles."""
    if value is None:
        return "–"
    amount = float(value)
    for threshold, divisor, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(amount) >= threshold:
            return f"{amount / divisor:.1f}\u202f{suffix}".replace(".0\u202f", "\u202f")
    return number(value)


def percent(value: Any, digits: int = 1) -> str:
    """A share in 0..1 as ``12.3 %``."""
    if value is None:
        return "–"
    return f"{float(value) * 100:.{digits}f}\u202f%"


def signed_points(value: Any, digits: int = 1) -> str:
    """A difference of shares (0..1) in percentage points: ``+2.1 pp``."""
    if value is None:
        return "–"
    return f"{float(value) * 100:+.{digits}f}\u202fpp"


def when(value: Any) -> str:
    """An ISO time or epoch milliseconds as ``2026-11-24 14:05 UTC``."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def ago(value: Any, now: datetime | None = None) -> str:
    """``3 min ago``; for times within a year, else the date."""
    if value is None or value == "":
        return "–"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    for size, unit in ((86400 * 365, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)}\u202f{unit}"
    return f"{int(seconds)}\u202fs"


def channel_icon(channel: Any) -> str:
    return CHANNEL_ICONS.get(str(channel or "").lower(), "other")


FILTERS: Final = {
    "number": number,
    "compact": compact,
    "percent": percent,
    "points": signed_points,
    "when": when,
    "ago": ago,
    "channel_icon": channel_icon,
}
