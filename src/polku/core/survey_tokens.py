"""Signed survey links (pure): ``/s/<token>``.

A token names one invitation and the moment it expires, and carries an HMAC-SHA256
of both under the installation's secret, so it cannot be forged (a made-up or
altered token fails the signature), stretched (the expiry is signed) or pointed at
another invitation or customer (the invitation names its customer, and the token
names only the invitation). Short enough for an SMS: 12 bytes of invitation id, 5
of expiry (seconds), 16 of tag — 46 characters of URL-safe base64 and one dot.

Replay is not the token's job: the answer store lets one answer per invitation
in, and edits only within the survey's edit window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

TAG_BYTES: Final = 16
ID_BYTES: Final = 12
EXPIRY_BYTES: Final = 5
MAX_TOKEN_LENGTH: Final = 128


class TokenError(ValueError):
    """Why a token is refused: ``code`` is ``invalid`` (malformed or forged) or
    ``expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TokenClaims:
    invitation: str
    """The invitation id (24 hex digits)."""
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, b"polku-survey-v1|" + body, hashlib.sha256).digest()[:TAG_BYTES]


def make_token(secret: bytes, invitation: str, expires_ms: int) -> str:
    body = bytes.fromhex(invitation) + (expires_ms // 1000).to_bytes(EXPIRY_BYTES, "big")
    return f"{_b64(body)}.{_b64(_tag(secret, body))}"


def read_token(secret: bytes, token: str, now_ms: int) -> TokenClaims:
    """The claims of a genuine, unexpired token; ``TokenError`` otherwise. The tag
    is compared in constant time, before anything in the token is believed."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise TokenError("invalid", "this survey link is not valid (it may have been cut short or altered)")
    body_text, tag_text = token.split(".")
    try:
        body, tag = _unb64(body_text), _unb64(tag_text)
    except (binascii.Error, ValueError):
        raise TokenError("invalid", "this survey link is not valid (it may have been cut short or altered)") from None
    canonical = _b64(body) == body_text and _b64(tag) == tag_text  # base64's spare bits altered: tampered
    if not canonical or len(body) != ID_BYTES + EXPIRY_BYTES or not hmac.compare_digest(tag, _tag(secret, body)):
        raise TokenError("invalid", "this survey link is not valid (it may have been cut short or altered)")
    expires_ms = int.from_bytes(body[ID_BYTES:], "big") * 1000
    if now_ms >= expires_ms:
        raise TokenError("expired", "this survey has closed: its link expired")
    return TokenClaims(invitation=body[:ID_BYTES].hex(), expires_ms=expires_ms)
