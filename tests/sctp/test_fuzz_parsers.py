"""Targeted fuzzing of every wire parser: each chunk, parameter and error cause type.

``test_fuzz`` throws whole (mostly mutated) packets at the decoder and at associations;
this module aims at each parser on its own, with values built to hit its length and
count fields: truncations, lengths past the end, zero and sub-header lengths, huge
gap-block / duplicate / parameter counts, stream lists of every size, unknown types
with each combination of the two high bits, and bad checksums. Two properties:

* the only exception is :class:`ParseError` (``ChecksumError`` is one);
* what a parser returns is never bigger than its input (a "weight" that counts every
  object, int and byte of the result is at most the input length), and parsing never
  allocates much more than the input: a count field cannot drive an allocation.
"""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_sctls.sctp import CAUSE_TYPES, CHUNK_TYPES, PARAM_TYPES, Packet, ParseError
from trio_sctls.sctp._causes import parse_causes
from trio_sctls.sctp._chunks import Chunk, UnknownChunk, parse_chunks, unknown_chunk_action
from trio_sctls.sctp._packet import ChecksumError
from trio_sctls.sctp._params import UnknownParam, parse_param, parse_params, unknown_param_action

PARSERS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Parser = Callable[[bytes], object]


def weight(obj: object) -> int:
    """How much a parse result holds: one per object, int and byte, recursively."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return 1 + len(obj)
    if isinstance(obj, int | float | IPv4Address | IPv6Address) or obj is None:
        return 1
    if isinstance(obj, tuple | list):
        return 1 + sum(weight(x) for x in obj)
    if dataclasses.is_dataclass(obj):
        # Fields left out of comparisons (a packet's ``raw``) refer to the input itself.
        fields = [f for f in dataclasses.fields(obj) if f.compare]
        return 1 + sum(weight(getattr(obj, f.name)) for f in fields)
    raise AssertionError(f"unexpected object in a parse result: {obj!r}")


def check(parse: Parser, data: bytes) -> object:
    """Parse ``data``: ``None`` for a ParseError, else the result, whose weight is
    bounded by the input size (one slack for the outer list or packet)."""
    try:
        result = parse(data)
    except ParseError:
        return None
    assert weight(result) <= len(data) + 4, (parse, data)
    return result


def with_crc(buf: bytes) -> bytes:
    out = bytearray(buf)
    out[8:12] = b"\0\0\0\0"
    struct.pack_into("<I", out, 8, crc32c(out))
    return bytes(out)


# -- building blocks: TLVs with honest or lying lengths -----------------------------------

# A length field: the honest one, or zero, or below the header, or one past the end, or
# anything at all.
LENGTH_LIES = st.sampled_from(["honest", "zero", "short", "past_end", "any", "minus_one"])


def _length(how: str, honest: int, any_value: int) -> int:
    return {
        "honest": honest,
        "zero": 0,
        "short": honest % 4,
        "past_end": honest + 1 + any_value % 64,
        "minus_one": max(0, honest - 1),
        "any": any_value,
    }[how]


@st.composite
def tlv(draw: st.DrawFn, types: st.SearchStrategy[int], value: st.SearchStrategy[bytes]) -> bytes:
    """One parameter or cause TLV, its length field maybe lying, padding maybe absent."""
    type_ = draw(types)
    body = draw(value)
    length = _length(draw(LENGTH_LIES), 4 + len(body), draw(st.integers(0, 0xFFFF)))
    pad = b"\0" * draw(st.sampled_from([-len(body) % 4, 0, 1, 3]))
    return struct.pack("!HH", type_, length & 0xFFFF) + body + pad


def _counts_and_items(size: int) -> st.SearchStrategy[bytes]:
    """A 16- or 32-bit count (often huge) followed by a few items of ``size`` bytes."""
    return st.builds(
        lambda count, items: count + items,
        st.one_of(
            st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\xff\xff", b"\x7f\xff\xff\xff"]),
            st.binary(min_size=4, max_size=4),
        ),
        st.binary(max_size=6 * size),
    )


#: Values shaped for a parameter or cause with a fixed part and a list: a fixed part of
#: the sizes the parsers expect, and a tail of any length (odd ones included).
VALUES = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda fixed, tail: fixed + tail,
        st.sampled_from([b"", b"\0" * 4, b"\xff" * 8, b"\1" * 12, b"\0" * 16]),
        st.binary(max_size=9),
    ),
    _counts_and_items(2),
)

# The two high bits of an unknown type, each combination, with any low bits.
UNKNOWN_PARAM_TYPES = st.builds(
    lambda hi, lo: hi | lo, st.sampled_from([0, 0x4000, 0x8000, 0xC000]), st.integers(0, 0x3FFF)
).filter(lambda t: t not in PARAM_TYPES)
PARAM_CODES = st.one_of(st.sampled_from(sorted(PARAM_TYPES)), UNKNOWN_PARAM_TYPES)
CAUSE_CODES = st.one_of(st.sampled_from(sorted(CAUSE_TYPES)), st.integers(0, 0xFFFF))

params_area = st.lists(tlv(PARAM_CODES, VALUES), max_size=5).map(b"".join)
causes_area = st.lists(tlv(CAUSE_CODES, VALUES), max_size=5).map(b"".join)


def _sack_value() -> st.SearchStrategy[bytes]:
    # Fixed part with counts that may lie (huge, or more than the items present).
    return st.builds(
        lambda cum, rwnd, ngaps, ndups, items: (
            struct.pack("!IIHH", cum, rwnd, ngaps, ndups) + items
        ),
        st.integers(0, 2**32 - 1),
        st.sampled_from([0, 1500, 2**32 - 1]),
        st.one_of(st.integers(0, 4), st.just(0xFFFF), st.integers(0, 0xFFFF)),
        st.one_of(st.integers(0, 4), st.just(0xFFFF), st.integers(0, 0xFFFF)),
        st.binary(max_size=40),
    )


def _init_value() -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda fixed, params: fixed + params,
        st.sampled_from(
            [
                struct.pack("!IIHHI", 1, 2**32 - 1, 65535, 65535, 7),
                struct.pack("!IIHHI", 0, 0, 0, 0, 0),
                b"\1" * 15,
            ]
        ),
        params_area,
    )


#: For each known chunk type, values that aim at its parser.
CHUNK_VALUES: dict[int, st.SearchStrategy[bytes]] = {
    0: st.binary(max_size=30),  # DATA: 12-byte fixed part, then user data
    1: _init_value(),
    2: _init_value(),
    3: _sack_value(),
    4: params_area,
    5: params_area,
    6: causes_area,
    7: st.binary(max_size=8),
    9: causes_area,
    0x82: params_area,
    0xC0: st.binary(max_size=20),
}


@st.composite
def chunk(draw: st.DrawFn) -> bytes:
    """One chunk of any type (known, or unknown with any high bits) and any flags, with a
    length field that may lie."""
    type_ = draw(
        st.one_of(
            st.sampled_from(sorted(CHUNK_TYPES)),
            st.builds(
                lambda hi, lo: hi | lo, st.sampled_from([0, 0x40, 0x80, 0xC0]), st.integers(0, 0x3F)
            ),
        )
    )
    value = draw(CHUNK_VALUES.get(type_, st.binary(max_size=24)))
    length = _length(draw(LENGTH_LIES), 4 + len(value), draw(st.integers(0, 0xFFFF)))
    pad = b"\0" * draw(st.sampled_from([-len(value) % 4, 0, 2]))
    return struct.pack("!BBH", type_, draw(st.integers(0, 255)), length & 0xFFFF) + value + pad


@st.composite
def packet(draw: st.DrawFn) -> bytes:
    """A packet of such chunks; usually with a correct CRC, sometimes with a bad one,
    sometimes truncated anywhere."""
    header = struct.pack(
        "!HHI",
        *draw(st.tuples(st.integers(0, 65535), st.integers(0, 65535), st.integers(0, 2**32 - 1))),
    )
    body = b"".join(draw(st.lists(chunk(), max_size=5)))
    data = with_crc(header + b"\0\0\0\0" + body)
    how = draw(st.sampled_from(["ok", "ok", "bad_crc", "truncated"]))
    if how == "bad_crc":
        data = data[:8] + bytes([data[8] ^ (1 + draw(st.integers(0, 254)))]) + data[9:]
    elif how == "truncated":
        data = data[: draw(st.integers(0, len(data)))]
    return data


# -- the properties ----------------------------------------------------------------------


@PARSERS
@given(packet())
def test_the_packet_decoder_raises_only_parse_error(data: bytes) -> None:
    result = check(Packet.parse, data)
    if result is not None:
        assert isinstance(result, Packet)
        # Whatever parsed re-serialises to something that parses the same way.
        assert Packet.parse(bytes(result)).chunks == result.chunks


@PARSERS
@given(st.lists(chunk(), min_size=1, max_size=6).map(b"".join))
def test_the_chunk_parser_raises_only_parse_error(data: bytes) -> None:
    result = check(parse_chunks, data)
    if isinstance(result, list):
        for c in result:
            assert isinstance(c, Chunk)
            if isinstance(c, UnknownChunk):
                # Every unknown type, whatever its high bits, is kept for Section 3.2.
                assert c.chunk_type not in CHUNK_TYPES
                unknown_chunk_action(c.chunk_type)


@PARSERS
@given(st.sampled_from(sorted(CHUNK_TYPES)), st.integers(0, 255), st.data())
def test_each_chunk_value_parser_raises_only_parse_error(
    type_: int, flags: int, data: st.DataObject
) -> None:
    cls = CHUNK_TYPES[type_]
    value = data.draw(
        st.one_of(CHUNK_VALUES.get(type_, st.binary(max_size=40)), st.binary(max_size=40))
    )
    check(lambda v: cls.parse_value(flags, memoryview(v)), value)


@PARSERS
@given(st.lists(tlv(PARAM_CODES, VALUES), min_size=1, max_size=6).map(b"".join))
def test_the_parameter_parser_raises_only_parse_error(data: bytes) -> None:
    result = check(parse_params, data)
    check(parse_param, data)
    if isinstance(result, list):
        for p in result:
            if isinstance(p, UnknownParam):
                assert p.code not in PARAM_TYPES
                unknown_param_action(p.code)


@PARSERS
@given(st.sampled_from(sorted(PARAM_TYPES)), VALUES)
def test_each_parameter_value_parser_raises_only_parse_error(type_: int, value: bytes) -> None:
    check(lambda v: PARAM_TYPES[type_].parse_value(memoryview(v)), value)


@PARSERS
@given(st.lists(tlv(CAUSE_CODES, VALUES), min_size=1, max_size=6).map(b"".join))
def test_the_cause_parser_raises_only_parse_error(data: bytes) -> None:
    check(parse_causes, data)


@PARSERS
@given(st.sampled_from(sorted(CAUSE_TYPES)), VALUES)
def test_each_cause_value_parser_raises_only_parse_error(code: int, value: bytes) -> None:
    check(lambda v: CAUSE_TYPES[code].parse_value(memoryview(v)), value)


# -- count fields and allocation ---------------------------------------------------------


def _sack(ngaps: int, ndups: int, items: bytes) -> bytes:
    value = struct.pack("!IIHH", 1, 2**32 - 1, ngaps, ndups) + items
    return struct.pack("!BBH", 3, 0, 4 + len(value)) + value


#: Small inputs whose count fields claim far more than they hold.
LIARS = [
    _sack(0xFFFF, 0xFFFF, b""),  # 65535 gap blocks and 65535 duplicates in 16 bytes
    _sack(0xFFFF, 0, b"\0" * 40),
    _sack(0, 0xFFFF, b"\0" * 40),
    _sack(1, 0xFFFF, b"\0\1\0\2"),
    # Missing Mandatory Parameter cause (in an ABORT) announcing 2**32 - 1 types.
    b"\x06\x00\x00\x10" + struct.pack("!HHI", 2, 12, 0xFFFFFFFF) + b"\0\0\0\0",
    # A parameter whose length runs 65535 bytes past the end.
    b"\x01\x00\x00\x18" + b"\0" * 16 + b"\xc0\x00\xff\xff",
    # RE-CONFIG: an Outgoing SSN Reset Request with a ragged stream list.
    b"\x82\x00\x00\x15" + struct.pack("!HHIII", 13, 17, 1, 2, 3) + b"\x01",
    # FORWARD TSN with a ragged stream list.
    b"\xc0\x00\x00\x0a" + b"\0" * 6,
]


@pytest.mark.parametrize("data", LIARS)
def test_a_lying_count_is_a_parse_error_and_allocates_nothing(data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ParseError):
            parse_chunks(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024


def test_the_biggest_honest_counts_stay_proportional_to_the_input() -> None:
    # A 64 KB SACK with as many duplicate TSNs as fit, and one with as many gap blocks;
    # a packet of 4-byte unknown chunks; RE-CONFIG with a full stream list: memory stays
    # within a small multiple of the input (Python objects are ~30 bytes per int).
    n = (65532 - 16) // 4
    inputs = [
        _sack(0, n, b"\0\0\0\1" * n),
        _sack(n, 0, b"\0\1\0\2" * n),
        b"\xbf\x00\x00\x04" * 16000,
        b"\x82\x00"
        + struct.pack("!H", 4 + 16 + 2 * 32000)
        + struct.pack("!HHIII", 13, 16 + 2 * 32000, 1, 2, 3)
        + b"\0\5" * 32000,
    ]
    for data in inputs:
        tracemalloc.start()
        try:
            result = parse_chunks(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert weight(result) <= len(data) + 4
        assert peak < 64 * len(data) + 64 * 1024


@PARSERS
@given(packet())
def test_parsing_allocates_in_proportion_to_the_input(data: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            result: object = Packet.parse(data)
        except ParseError:
            result = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    assert peak < 64 * len(data) + 16 * 1024


def test_every_high_bit_combination_of_unknown_types_is_kept() -> None:
    for hi in (0x00, 0x40, 0x80, 0xC0):
        code = hi | 0x3E
        (c,) = parse_chunks(bytes([code, 0xFF, 0, 5, 0xAA, 0, 0, 0]))
        assert isinstance(c, UnknownChunk) and c.raw == b"\xaa" and c.raw_flags == 0xFF
        assert unknown_chunk_action(code) == (bool(hi & 0x80), bool(hi & 0x40))
    for hi in (0x0000, 0x4000, 0x8000, 0xC000):
        code = hi | 0x3FFE
        (p,) = parse_params(struct.pack("!HH", code, 5) + b"\xaa\0\0\0")
        assert isinstance(p, UnknownParam) and p.raw == b"\xaa"
        assert unknown_param_action(code) == (bool(hi & 0x8000), bool(hi & 0x4000))


def test_a_bad_checksum_is_a_checksum_error_and_the_header_alone_parses() -> None:
    good = with_crc(struct.pack("!HHI", 1, 2, 3) + b"\0" * 4 + b"\x0b\x00\x00\x04")
    assert Packet.parse(good).chunks
    for i in range(len(good)):
        if 8 <= i < 12:
            continue
        bad = bytearray(good)
        bad[i] ^= 0x80
        with pytest.raises(ChecksumError):
            Packet.parse(bytes(bad))
    assert Packet.parse(with_crc(good[:12])).chunks == []
    for n in range(12):
        with pytest.raises(ParseError):
            Packet.parse(good[:n])
