"""Wire format: every chunk, parameter and error cause round-trips; CRC32c as Linux does it."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from trio_sctls.sctp import CAUSE_TYPES, CHUNK_TYPES, PARAM_TYPES, Packet, ParseError
from trio_sctls.sctp._auth_wire import (
    AuthChunk,
    ChunkListParam,
    HmacAlgoParam,
    RandomParam,
    UnsupportedHmacIdentifier,
)
from trio_sctls.sctp._causes import (
    CookieWhileShuttingDown,
    ErrorCause,
    InvalidMandatoryParameter,
    InvalidStreamIdentifier,
    MissingMandatoryParameter,
    NoUserData,
    OutOfResource,
    ProtocolViolationCause,
    RestartWithNewAddresses,
    StaleCookie,
    UnknownCause,
    UnrecognizedChunkType,
    UnrecognizedParameters,
    UnresolvableAddress,
    UserInitiatedAbort,
    parse_causes,
)
from trio_sctls.sctp._chunks import (
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    ForwardTsnChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    PadChunk,
    ReconfigChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
    parse_chunks,
    unknown_chunk_action,
)
from trio_sctls.sctp._packet import ChecksumError, compute_checksum, verify_checksum
from trio_sctls.sctp._params import (
    AddIncomingStreamsRequest,
    AddOutgoingStreamsRequest,
    CookiePreservative,
    ForwardTSNSupported,
    HeartbeatInfo,
    HostNameAddressParam,
    IncomingSSNResetRequest,
    IPv4AddressParam,
    IPv6AddressParam,
    OutgoingSSNResetRequest,
    Param,
    ReconfigResponse,
    SSNTSNResetRequest,
    StateCookieParam,
    SupportedAddressTypes,
    SupportedExtensions,
    UnknownParam,
    UnrecognizedParam,
    parse_param,
    parse_params,
    unknown_param_action,
)

PARAMS: list[Param] = [
    HeartbeatInfo(b"\x01\x02\x03"),
    IPv4AddressParam(IPv4Address("192.0.2.7")),
    IPv6AddressParam(IPv6Address("2001:db8::1")),
    StateCookieParam(b"cookie!"),
    UnrecognizedParam(bytes(UnknownParam(0xC123, b"xy"))),
    CookiePreservative(1234),
    HostNameAddressParam(b"example.org\0"),
    SupportedAddressTypes((5, 6)),
    SupportedExtensions((0x82, 0xC1)),
    ForwardTSNSupported(),
    OutgoingSSNResetRequest(1, 2, 3, (4, 5, 6)),
    OutgoingSSNResetRequest(7, 8, 9),
    IncomingSSNResetRequest(10, (1,)),
    SSNTSNResetRequest(11),
    ReconfigResponse(12, 1),
    ReconfigResponse(13, 0, (100, 200)),
    AddOutgoingStreamsRequest(14, 3),
    AddIncomingStreamsRequest(15, 4),
    UnknownParam(0x4321, b"abcde"),
    RandomParam(bytes(32)),
    ChunkListParam((0, 3)),
    HmacAlgoParam((3, 1)),
]

CAUSES: list[ErrorCause] = [
    InvalidStreamIdentifier(7),
    MissingMandatoryParameter((7, 9)),
    StaleCookie(123456),
    OutOfResource(),
    UnresolvableAddress(bytes(HostNameAddressParam(b"x\0"))),
    UnrecognizedChunkType(bytes(UnknownChunk(0xFF, 0, b"zz"))),
    InvalidMandatoryParameter(),
    UnrecognizedParameters(bytes(UnknownParam(0xC001, b""))),
    NoUserData(99),
    CookieWhileShuttingDown(),
    RestartWithNewAddresses(bytes(IPv4AddressParam(IPv4Address("10.0.0.1")))),
    UserInitiatedAbort(b"going away"),
    ProtocolViolationCause(b"bad"),
    UnknownCause(77, b"q"),
    UnsupportedHmacIdentifier(2),
]

CHUNKS: list[Chunk] = [
    DataChunk(1, 2, 3, 4, b"hello"),
    DataChunk(0xFFFFFFFF, 65535, 65535, 0xFFFFFFFF, b"x" * 7, True, False, False, True),
    InitChunk(1, 65536, 10, 10, 42, (SupportedAddressTypes((5,)), SupportedExtensions((0x82,)))),
    InitAckChunk(2, 1500, 1, 1, 43, (StateCookieParam(b"c" * 45), UnknownParam(0x8001, b""))),
    SackChunk(100, 5000),
    SackChunk(100, 5000, ((2, 3), (5, 9)), (99, 98, 97)),
    HeartbeatChunk(b"info"),
    HeartbeatAckChunk(b"info!"),
    AbortChunk(),
    AbortChunk((UserInitiatedAbort(b"bye"), ProtocolViolationCause(b"oops")), reflected=True),
    ShutdownChunk(77),
    ShutdownAckChunk(),
    ErrorChunk((InvalidStreamIdentifier(3), StaleCookie(5))),
    CookieEchoChunk(b"the cookie"),
    CookieAckChunk(),
    ShutdownCompleteChunk(),
    ShutdownCompleteChunk(reflected=True),
    ReconfigChunk((OutgoingSSNResetRequest(1, 2, 3, (4,)), ReconfigResponse(5, 6))),
    PadChunk(1000),
    PadChunk(3),
    ForwardTsnChunk(5, ((1, 2), (3, 4))),
    UnknownChunk(0xC7, 0x5A, b"abc"),
    AuthChunk(1, 3, bytes(range(32))),
]


def _name(obj: object) -> str:
    return type(obj).__name__


@pytest.mark.parametrize("param", PARAMS, ids=_name)
def test_every_parameter_round_trips(param: Param) -> None:
    data = bytes(param)
    assert len(data) % 4 == 0
    assert parse_param(data) == param
    assert bytes(parse_param(data)) == data


@pytest.mark.parametrize("cause", CAUSES, ids=_name)
def test_every_error_cause_round_trips(cause: ErrorCause) -> None:
    data = bytes(cause)
    assert len(data) % 4 == 0
    assert parse_causes(data) == [cause]


@pytest.mark.parametrize("chunk", CHUNKS, ids=_name)
def test_every_chunk_round_trips(chunk: Chunk) -> None:
    data = bytes(chunk)
    assert len(data) % 4 == 0
    assert struct.unpack_from("!H", data, 2)[0] == len(chunk.value()) + 4  # no padding counted
    parsed = Chunk.parse(data)
    assert parsed == chunk
    assert bytes(parsed) == data


def test_registries_cover_every_rfc_9260_type() -> None:
    # With SCTP-AUTH (RFC 4895): chunk 0x0F, cause 0x0105, parameters 0x8002..0x8004;
    # PAD (RFC 4820): chunk 0x84.
    chunks = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 0x0F, 0x82, 0x84, 0xC0}
    assert set(CHUNK_TYPES) == chunks
    assert set(CAUSE_TYPES) == {*range(1, 14), 0x0105}
    params = {1, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 0x8002, 0x8003, 0x8004}
    assert params | {0x8008, 0xC000} == set(PARAM_TYPES)
    covered = {type(c) for c in CHUNKS} | {type(p) for p in PARAMS} | {type(c) for c in CAUSES}
    assert set(CHUNK_TYPES.values()) <= covered
    assert set(PARAM_TYPES.values()) <= covered
    assert set(CAUSE_TYPES.values()) <= covered


def test_packet_round_trips_with_a_checksum() -> None:
    packet = Packet(5000, 9899, 0xDEADBEEF, [SackChunk(1, 2), DataChunk(3, 0, 0, 0, b"abc")])
    data = bytes(packet)
    assert verify_checksum(data)
    assert Packet.parse(data) == packet


# Packets captured from Linux (Diameter over SCTP, port 3868): header, chunks and the
# CRC32c as the kernel wrote it.
LINUX_INIT = bytes.fromhex("0fe40f1c000000009f78a70401000014bb7b0f9c0000fa00000a000abb7b0f9c")
LINUX_SACK = bytes.fromhex("0f1c0fe4bb7b0f9c7994912903000010bb7b0f9c0000fa0000000000")
LINUX_SHUTDOWN = bytes.fromhex("0f1c0fe4bb7b0f9c611ded5707000008bb7b0f9d")
LINUX_COOKIE_ACK = bytes.fromhex("0f1c0fe4bb7b0f9c2142fa610b000004")
LINUX_SHUTDOWN_COMPLETE = bytes.fromhex("0f1c0fe4bb7b0f9c6ad99dc70e000004")


@pytest.mark.parametrize(
    "captured",
    [LINUX_INIT, LINUX_SACK, LINUX_SHUTDOWN, LINUX_COOKIE_ACK, LINUX_SHUTDOWN_COMPLETE],
)
def test_checksum_matches_packets_captured_from_linux(captured: bytes) -> None:
    assert verify_checksum(captured)
    packet = Packet.parse(captured)
    assert bytes(packet) == captured  # our serialiser writes the same bytes, CRC included


def test_captured_linux_init_parses_field_by_field() -> None:
    packet = Packet.parse(LINUX_INIT)
    assert (packet.source_port, packet.destination_port, packet.verification_tag) == (4068, 3868, 0)
    (init,) = packet.chunks
    assert init == InitChunk(0xBB7B0F9C, 64000, 10, 10, 0xBB7B0F9C)


def test_crc32c_of_the_iscsi_test_vector() -> None:
    # RFC 3720, Appendix B.4: 32 bytes of zeros -> 0x8A9136AA. Our packet checksum is
    # that CRC over a packet whose checksum field is zero, stored little-endian.
    data = bytes(32)
    assert compute_checksum(data) == 0x8A9136AA


def test_a_corrupted_packet_fails_its_checksum() -> None:
    bad = bytearray(LINUX_SACK)
    bad[20] ^= 1  # inside a_rwnd
    with pytest.raises(ChecksumError):
        Packet.parse(bytes(bad))
    Packet.parse(bytes(bad), check=False)  # parsing without the check still works


@pytest.mark.parametrize(
    ("chunk_type", "keep_going", "report"),
    [(0x3F, False, False), (0x7F, False, True), (0xBF, True, False), (0xFF, True, True)],
)
def test_unknown_chunk_type_high_bits(chunk_type: int, keep_going: bool, report: bool) -> None:
    assert unknown_chunk_action(chunk_type) == (keep_going, report)


@pytest.mark.parametrize(
    ("param_type", "keep_going", "report"),
    [(0x3001, False, False), (0x7001, False, True), (0xB001, True, False), (0xF001, True, True)],
)
def test_unknown_parameter_type_high_bits(param_type: int, keep_going: bool, report: bool) -> None:
    assert unknown_param_action(param_type) == (keep_going, report)


def test_last_parameter_may_lack_its_padding() -> None:
    unpadded = bytes(SupportedExtensions((0x82,)))[:5]
    assert parse_params(unpadded) == [SupportedExtensions((0x82,))]


# RFC 9260, Section 3.2: the chunk length counts the padding of every parameter but the
# last one, whose padding is chunk padding. Each chunk here ends in a TLV that needs it.
LAST_TLV_PADDED = [
    # 4 header + 16 fixed + ForwardTSNSupported 4 + SupportedExtensions 5 (+3 padding).
    (InitChunk(1, 65536, 10, 10, 42, (ForwardTSNSupported(), SupportedExtensions((0x82,)))), 29),
    # The padding of a parameter that is not the last one is counted: 20 + 8 + 4.
    (InitChunk(1, 65536, 10, 10, 42, (SupportedExtensions((0x82,)), ForwardTSNSupported())), 32),
    (InitAckChunk(2, 1500, 1, 1, 43, (StateCookieParam(b"cookie!"),)), 31),
    (HeartbeatChunk(b"abcde"), 13),
    (HeartbeatAckChunk(b"abcde"), 13),
    (AbortChunk((UserInitiatedAbort(b"bye"),)), 11),
    (ErrorChunk((StaleCookie(5), UnknownCause(77, b"q"))), 17),
    (ReconfigChunk((OutgoingSSNResetRequest(1, 2, 3, (4,)),)), 22),
]
LAST_TLV_PADDED_IDS = [f"{_name(chunk)}-{length}" for chunk, length in LAST_TLV_PADDED]


@pytest.mark.parametrize(("chunk", "length"), LAST_TLV_PADDED, ids=LAST_TLV_PADDED_IDS)
def test_chunk_length_leaves_out_the_last_tlvs_padding(chunk: Chunk, length: int) -> None:
    data = bytes(chunk)
    assert struct.unpack_from("!H", data, 2)[0] == length
    assert len(data) == length + (-length % 4)  # the padding is still on the wire
    assert data[length:] == bytes(-length % 4)


@pytest.mark.parametrize(("chunk", "length"), LAST_TLV_PADDED, ids=LAST_TLV_PADDED_IDS)
def test_chunk_length_counting_the_last_tlvs_padding_is_accepted(chunk: Chunk, length: int) -> None:
    # What older versions of ourselves (and some other stacks) send: the same bytes with
    # the final padding inside the chunk length; another chunk follows in the packet.
    data = bytearray(bytes(chunk))
    struct.pack_into("!H", data, 2, len(data))
    assert parse_chunks(bytes(data) + bytes(CookieAckChunk())) == [chunk, CookieAckChunk()]
    assert parse_chunks(bytes(chunk) + bytes(CookieAckChunk())) == [chunk, CookieAckChunk()]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01",  # truncated header
        b"\x00\x01\x00\x02",  # length below 4
        b"\x00\x01\x00\x09abc",  # runs past the end
        bytes(IPv4AddressParam(IPv4Address("1.2.3.4")))[:4] + b"\0\0\0\0\0",
    ],
)
def test_malformed_parameters_raise_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_params(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00",  # truncated chunk header
        b"\x03\x00\x00\x00",  # length 0
        b"\x00\x03\x00\x10" + bytes(4),  # DATA shorter than its header
        bytes(SackChunk(1, 2, ((1, 2),)))[:-4],  # gap count says more than there is
        b"\x03\x00\x00\x14" + struct.pack("!IIHH", 1, 2, 1000, 0) + bytes(4),
        b"\x04\x00\x00\x04",  # HEARTBEAT without info
        b"\x07\x00\x00\x06\x00\x00",  # SHUTDOWN with a short TSN
        b"\x09\x00\x00\x06\x00\x01",  # ERROR with a truncated cause
    ],
)
def test_malformed_chunks_raise_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_chunks(data)


def test_a_huge_gap_count_does_not_allocate() -> None:
    # 65535 gap blocks and 65535 duplicates announced in a 16-byte SACK: rejected
    # by the length check before anything is unpacked.
    data = b"\x03\x00\x00\x10" + struct.pack("!IIHH", 1, 2, 0xFFFF, 0xFFFF)
    with pytest.raises(ParseError):
        parse_chunks(data)


def test_short_packet_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        Packet.parse(b"\x00" * 11)
