"""Dashboard sessions: a signed, HttpOnly, SameSite=Strict cookie made at login
from an admin token, and the CSRF token every form posts back.

The cookie holds the workspace, the hash of the admin token it was made from (never
the token) and a random nonce; ``itsdangerous`` signs it with a secret kept in the
data directory, so sessions survive restarts. Each request checks that the admin
token still exists and is not revoked, so revoking the token ends its sessions.
The CSRF token is an HMAC of the nonce (synchronizer token): a page from another
site can neither read it nor, with SameSite=Strict, send the cookie at all.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE_NAME: Final = "polku_session"
MAX_AGE_S: Final = 12 * 3600
"""A session lasts a working day; then the token is asked for again."""
SECRET_FILE: Final = "dashboard.secret"


@dataclass(frozen=True)
class Session:
    workspace: str
    key_hash: str
    nonce: str


class SessionSigner:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._serializer = URLSafeTimedSerializer(secret, salt="polku-dashboard-session")

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SessionSigner:
        return cls(load_secret(data_dir))

    def issue(self, workspace: str, key_hash: str) -> tuple[str, Session]:
        session = Session(workspace=workspace, key_hash=key_hash, nonce=secrets.token_urlsafe(16))
        cookie = self._serializer.dumps({"w": workspace, "k": key_hash, "n": session.nonce})
        return cookie, session

    def read(self, cookie: str | None) -> Session | None:
        """The session of a valid, unexpired cookie; ``None`` otherwise."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=MAX_AGE_S)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        workspace, key_hash, nonce = data.get("w"), data.get("k"), data.get("n")
        if not all(isinstance(value, str) and value for value in (workspace, key_hash, nonce)):
            return None
        return Session(workspace=str(workspace), key_hash=str(key_hash), nonce=str(nonce))

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, f"csrf|{session.nonce}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), str(token))


def load_secret(data_dir: Path) -> bytes:
    """The signing secret, made once (0600) in the data directory."""
    path = data_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secret)
    os.replace(temporary, path)
    return secret
