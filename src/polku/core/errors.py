"""The one error tree of polku.

Every error a user can meet is a ``PolkuError``; the HTTP edge maps them to status
codes in one place (``polku.web.errors``) and the CLI prints ``code: message``.

::

    PolkuError                      code             retry helps?
    ├── InvalidInput                invalid_input    no   (400)
    │   ├── MalformedBody           malformed_json   no   (400)
    │   ├── LimitExceeded           limit_exceeded   no   (413)
    │   ├── UnsupportedEncoding     unsupported_encoding no (415)
    │   └── ConfigError             invalid_config   no   (400 / CLI exit 2)
    ├── Unauthorized                unauthorized     no   (401)
    ├── NotFound                    not_found        no   (404)
    ├── Conflict                    conflict         no   (409)
    └── Unavailable                 overloaded       yes  (503 + Retry-After)
        └── StoreUnavailable        store_unavailable yes (503 + Retry-After)
"""

from __future__ import annotations

from typing import Any


class PolkuError(Exception):
    """Base of every polku error: a machine-readable ``code`` and a human message."""

    code = "error"
    status = 500
    retryable = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInput(PolkuError):
    code = "invalid_input"
    status = 400


class MalformedBody(InvalidInput):
    code = "malformed_json"


class LimitExceeded(InvalidInput):
    code = "limit_exceeded"
    status = 413


class UnsupportedEncoding(InvalidInput):
    code = "unsupported_encoding"
    status = 415


class ConfigError(InvalidInput):
    code = "invalid_config"


class Unauthorized(PolkuError):
    code = "unauthorized"
    status = 401


class NotFound(PolkuError):
    code = "not_found"
    status = 404


class Conflict(PolkuError):
    code = "conflict"
    status = 409


class Unavailable(PolkuError):
    """The server is saturated; the client should retry after ``retry_after`` seconds."""

    code = "overloaded"
    status = 503
    retryable = True

    def __init__(self, message: str, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class RateLimited(Unavailable):
    """The key sent more requests than its rate limit allows; retry after ``retry_after``."""

    code = "rate_limited"
    status = 429


class StoreUnavailable(Unavailable):
    """The state store cannot answer now (its server or connection failed, or a
    transaction lost to a concurrent one): nothing was committed, and the same work
    may succeed when tried again. The processor stops and restarts from its
    checkpoint rather than blame the event it was applying."""

    code = "store_unavailable"


class Forbidden(PolkuError):
    code = "forbidden"
    status = 403


class Gone(PolkuError):
    """It existed, and is over (an expired survey link)."""

    code = "gone"
    status = 410


class NotServedHere(PolkuError):
    """The deployment cannot answer this (a read the scale-out API does not serve
    yet); the message says which deployment does."""

    code = "not_served_here"
    status = 501
