"""``decode_body``: Content-Encoding decides, and inflation never runs past the limit."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polku.core.errors import LimitExceeded, MalformedBody, PolkuError, UnsupportedEncoding
from polku.core.limits import MAX_REQUEST_BYTES
from polku.engine.body import decode_body

PAYLOAD = b'{"batch": [{"type": "track", "userId": "u1", "event": "Signed Up"}]}'


def deflate(data: bytes, level: int = 6) -> bytes:
    """HTTP's ``deflate`` is the zlib format (RFC 1950), not raw deflate."""
    return zlib.compress(data, level)


@pytest.mark.parametrize("encoding", [None, "", "identity", "Identity", " identity "])
def test_identity_bodies_pass_through(encoding: str | None) -> None:
    assert decode_body(PAYLOAD, encoding) == PAYLOAD


def test_identity_body_over_the_limit_is_refused() -> None:
    assert decode_body(b"x" * MAX_REQUEST_BYTES, None) == b"x" * MAX_REQUEST_BYTES
    with pytest.raises(LimitExceeded) as refused:
        decode_body(b"x" * (MAX_REQUEST_BYTES + 1), None)
    assert refused.value.status == 413
    assert refused.value.to_dict()["code"] == "limit_exceeded"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", " gzip "])
def test_gzip_bodies_are_inflated(encoding: str) -> None:
    assert decode_body(gzip.compress(PAYLOAD), encoding) == PAYLOAD


def test_deflate_bodies_are_inflated() -> None:
    assert decode_body(deflate(PAYLOAD), "deflate") == PAYLOAD


def test_gzip_body_of_several_members_is_inflated_whole() -> None:
    # RFC 1952 allows concatenated members; streaming compressors write them.
    body = gzip.compress(PAYLOAD[:20]) + gzip.compress(PAYLOAD[20:])
    assert decode_body(body, "gzip") == PAYLOAD


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(b"\0" * 50_000_000, 9), "gzip"),
        (deflate(b"\0" * 50_000_000, 9), "deflate"),
        # The bomb split over members: the limit applies to their sum.
        (gzip.compress(b"\0" * 400_000) + gzip.compress(b"\0" * 400_000), "gzip"),
    ],
)
def test_compression_bomb_is_refused_without_inflating_it(body: bytes, encoding: str) -> None:
    assert len(body) < MAX_REQUEST_BYTES // 5  # small on the wire
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceeded) as refused:
            decode_body(body, encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert "inflates past the limit" in refused.value.message
    # 50 MB would be inflated without the limit; only about the limit itself is.
    assert peak < 4 * MAX_REQUEST_BYTES


def test_inflating_to_exactly_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    assert decode_body(gzip.compress(b"a" * 1000), "gzip", limit=1000) == b"a" * 1000
    with pytest.raises(LimitExceeded):
        decode_body(gzip.compress(b"a" * 1001), "gzip", limit=1000)


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(PAYLOAD)[:-8],  # trailer (CRC and length) missing
        gzip.compress(PAYLOAD)[:15],  # cut inside the deflate stream
        gzip.compress(PAYLOAD)[:3],  # cut inside the header
        b"",
    ],
)
def test_truncated_gzip_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody) as refused:
        decode_body(body, "gzip")
    assert refused.value.status == 400
    assert refused.value.code == "malformed_json"


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"this is not deflate data at all" * 3,
        PAYLOAD,  # not compressed although the header says so
        gzip.compress(PAYLOAD)[:-8] + b"\x00\x00\x00\x00" + gzip.compress(PAYLOAD)[-4:],  # wrong CRC
        gzip.compress(PAYLOAD) + b"trailing garbage",
    ],
)
def test_garbage_declared_as_gzip_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_body(body, "gzip")


@pytest.mark.parametrize("body", [gzip.compress(PAYLOAD), deflate(PAYLOAD) + b"more", deflate(PAYLOAD)[:-4]])
def test_garbage_declared_as_deflate_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_body(body, "deflate")


@pytest.mark.parametrize("encoding", ["br", "compress", "zstd", "gzip, deflate", "identity;q=1"])
def test_unknown_encodings_are_refused(encoding: str) -> None:
    with pytest.raises(UnsupportedEncoding) as refused:
        decode_body(PAYLOAD, encoding)
    assert refused.value.status == 415
    assert refused.value.code == "unsupported_encoding"


compressions = st.sampled_from(["gzip", "x-gzip", "deflate"])


def compress(data: bytes, encoding: str, level: int) -> bytes:
    return deflate(data, level) if encoding == "deflate" else gzip.compress(data, level)


@given(data=st.binary(max_size=20_000), encoding=compressions, level=st.integers(min_value=0, max_value=9))
@settings(deadline=None)
def test_compressed_bodies_round_trip(data: bytes, encoding: str, level: int) -> None:
    assert decode_body(compress(data, encoding, level), encoding) == data


@given(data=st.binary(max_size=3000), encoding=compressions, limit=st.integers(min_value=0, max_value=3000))
def test_the_limit_applies_to_the_inflated_size(data: bytes, encoding: str, limit: int) -> None:
    body = compress(data, encoding, 6)
    if len(data) <= limit:
        assert decode_body(body, encoding, limit=limit) == data
    else:
        with pytest.raises(LimitExceeded):
            decode_body(body, encoding, limit=limit)


@given(
    body=st.binary(max_size=2000) | st.binary(max_size=200).map(gzip.compress).map(lambda b: b[: len(b) // 2]),
    encoding=st.sampled_from(["gzip", "deflate", "identity", "br"]),
)
def test_any_body_is_decoded_or_refused_with_a_polku_error(body: bytes, encoding: str) -> None:
    try:
        decoded = decode_body(body, encoding, limit=1000)
    except PolkuError as error:
        assert 400 <= error.status < 500
    else:
        assert len(decoded) <= 1000
