"""Request bodies: decompression under a hard output limit.

The ``Content-Encoding`` header decides, whatever ``Content-Type`` says: some official
SDKs send gzip under a form content type. Inflation stops one byte past the limit,
so a gzip bomb costs at most ``limit`` bytes of memory.
"""

from __future__ import annotations

import zlib

from polku.core.errors import LimitExceeded, MalformedBody, UnsupportedEncoding
from polku.core.limits import MAX_REQUEST_BYTES

MAX_GZIP_MEMBERS = 64
"""SDKs send one member; a few concatenated ones are legal; thousands are an attack."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_DEFLATE_WBITS = zlib.MAX_WBITS


def decode_body(body: bytes, content_encoding: str | None, *, limit: int = MAX_REQUEST_BYTES) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise LimitExceeded(f"request body is {len(body)} bytes; the limit is {limit} bytes (500 KB)", limit=limit)
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = _GZIP_WBITS
    elif encoding == "deflate":
        wbits = _DEFLATE_WBITS
    else:
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate")
    parts: list[bytes] = []
    size = 0
    remaining = body
    # A gzip body may hold several members (RFC 1952); each is inflated under what
    # is left of the limit, and data after the end of a stream is never ignored.
    for _member in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(remaining, limit + 1 - size)
        except zlib.error as error:
            raise MalformedBody(f"body is not valid {encoding} data: {error}") from None
        parts.append(part)
        size += len(part)
        if size > limit:
            raise LimitExceeded(f"{encoding} body inflates past the limit of {limit} bytes (500 KB)", limit=limit)
        if not inflater.eof:
            raise MalformedBody(f"{encoding} body is truncated")
        remaining = inflater.unused_data
        if not remaining:
            return b"".join(parts)
        if wbits == _DEFLATE_WBITS:
            raise MalformedBody("deflate body has data after the end of its stream")
    raise MalformedBody(f"{encoding} body has more than {MAX_GZIP_MEMBERS} members")
