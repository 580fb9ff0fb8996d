"""Time-ordered identifiers (UUIDv7, RFC 9562). Pure: the caller passes the time and
the random bytes. Python 3.11 has no ``uuid.uuid7``; this is its 10-line layout."""

from __future__ import annotations

import uuid


def uuid7(unix_ms: int, random_bytes: bytes) -> str:
    """A UUIDv7 string; ``random_bytes`` must hold at least 10 bytes."""
    if len(random_bytes) < 10:
        raise ValueError("uuid7 needs 10 random bytes")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (int.from_bytes(random_bytes[:2], "big") & 0x0FFF) << 64
    value |= 0b10 << 62
    value |= int.from_bytes(random_bytes[2:10], "big") & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))
