"""Chunks (RFC 9260, Section 3.3; RE-CONFIG from RFC 6525; FORWARD TSN from RFC 3758).

A chunk is a 1-byte type, 1-byte flags, 16-bit length (header + value, without the
padding) and a value padded to 4 bytes. Each chunk type is a small dataclass with
``parse_value(flags, value)`` and ``__bytes__``; :data:`CHUNK_TYPES` maps a type code to
its class, and :func:`parse_chunks` splits a packet's chunk area, keeping unknown types
as :class:`UnknownChunk` for the rules of Section 3.2 (see :func:`unknown_chunk_action`).

DATA is on the hot path: its parse is one ``unpack_from`` and one slice copy, and the
sender builds its bytes with :func:`data_chunk_bytes` without a dataclass at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from ._causes import ErrorCause, parse_causes
from ._errors import ParseError
from ._params import HeartbeatInfo, Param, parse_params
from ._tlv import PADDING, join_tlvs, need, need_at_least, pad4

_HEADER = struct.Struct("!BBH")
_DATA_HEADER = struct.Struct("!BBHIHHI")
_U32 = struct.Struct("!I")
_INIT = struct.Struct("!IIHHI")
_SACK = struct.Struct("!IIHH")

# DATA chunk flags (RFC 9260, Section 3.3.1; I bit from RFC 7053).
FLAG_END = 0x01
FLAG_BEGIN = 0x02
FLAG_UNORDERED = 0x04
FLAG_IMMEDIATE = 0x08
#: The T bit of ABORT and SHUTDOWN COMPLETE (Section 3.3.7): "I used your tag, not mine".
FLAG_T = 0x01


class Chunk:
    """Base class of every chunk (known or not)."""

    __slots__ = ()

    @property
    def chunk_type(self) -> int:
        """The 8-bit chunk type."""
        raise NotImplementedError

    @property
    def flags(self) -> int:
        """The 8-bit chunk flags."""
        return 0

    def value(self) -> bytes:
        """The chunk value, without header or padding."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        value = self.value()
        return (
            _HEADER.pack(self.chunk_type, self.flags, 4 + len(value))
            + value
            + PADDING[-len(value) % 4]
        )

    @staticmethod
    def parse(data: bytes | memoryview) -> Chunk:
        """Parse exactly one chunk (its padding may follow).

        Raises:
            ParseError: ``data`` is not exactly one well-formed chunk.
        """
        chunks = parse_chunks(data)
        if len(chunks) != 1:
            raise ParseError(f"expected one chunk, found {len(chunks)}")
        return chunks[0]


class KnownChunk(Chunk):
    """A chunk type this implementation understands."""

    __slots__ = ()
    #: The type code.
    TYPE: ClassVar[int]

    @property
    def chunk_type(self) -> int:
        """The 8-bit chunk type."""
        return self.TYPE

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Build the chunk from its flags and value bytes.

        Raises:
            ParseError: the value does not have the layout of this chunk type.
        """
        raise NotImplementedError


@dataclass(slots=True)
class UnknownChunk(Chunk):
    """A chunk whose type we do not implement, kept verbatim."""

    code: int
    raw_flags: int
    raw: bytes

    @property
    def chunk_type(self) -> int:
        """The 8-bit chunk type."""
        return self.code

    @property
    def flags(self) -> int:
        """The flags exactly as received."""
        return self.raw_flags

    def value(self) -> bytes:
        """The value exactly as received."""
        return self.raw


def data_chunk_bytes(
    tsn: int, stream: int, ssn: int, ppid: int, flags: int, payload: bytes | memoryview
) -> bytes:
    """Serialise a DATA chunk from its fields (the sender's fast path)."""
    n = len(payload)
    return (
        _DATA_HEADER.pack(0, flags, 16 + n, tsn, stream, ssn, ppid)
        + bytes(payload)
        + PADDING[-n % 4]
    )


@dataclass(slots=True)
class DataChunk(KnownChunk):
    """DATA (RFC 9260, Section 3.3.1): one fragment of one user message."""

    TYPE: ClassVar[int] = 0
    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    user_data: bytes
    unordered: bool = False
    beginning: bool = True
    end: bool = True
    immediate: bool = False

    @property
    def flags(self) -> int:
        """U, B, E and I bits."""
        return (
            (FLAG_UNORDERED if self.unordered else 0)
            | (FLAG_BEGIN if self.beginning else 0)
            | (FLAG_END if self.end else 0)
            | (FLAG_IMMEDIATE if self.immediate else 0)
        )

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """TSN, stream id, SSN, PPID, then the user data."""
        need_at_least(value, 12, "DATA chunk")
        tsn, stream, ssn, ppid = struct.unpack_from("!IHHI", value)
        return cls(
            tsn,
            stream,
            ssn,
            ppid,
            bytes(value[12:]),
            bool(flags & FLAG_UNORDERED),
            bool(flags & FLAG_BEGIN),
            bool(flags & FLAG_END),
            bool(flags & FLAG_IMMEDIATE),
        )

    def value(self) -> bytes:
        """TSN, stream id, SSN, PPID, then the user data."""
        return struct.pack("!IHHI", self.tsn, self.stream_id, self.ssn, self.ppid) + self.user_data

    def __bytes__(self) -> bytes:
        return data_chunk_bytes(
            self.tsn, self.stream_id, self.ssn, self.ppid, self.flags, self.user_data
        )


@dataclass(slots=True)
class _InitBase(KnownChunk):
    """The common layout of INIT and INIT ACK (RFC 9260, Sections 3.3.2 and 3.3.3)."""

    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    params: tuple[Param, ...] = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Fixed fields, then parameters."""
        need_at_least(value, 16, "INIT chunk")
        tag, rwnd, os_, mis, tsn = _INIT.unpack_from(value)
        return cls(tag, rwnd, os_, mis, tsn, tuple(parse_params(value[16:])))

    def value(self) -> bytes:
        """Fixed fields, then parameters."""
        fixed = _INIT.pack(
            self.initiate_tag,
            self.a_rwnd,
            self.outbound_streams,
            self.inbound_streams,
            self.initial_tsn,
        )
        return fixed + join_tlvs(self.params)


@dataclass(slots=True)
class InitChunk(_InitBase):
    """INIT (RFC 9260, Section 3.3.2): the first leg of the four-way handshake."""

    TYPE: ClassVar[int] = 1


@dataclass(slots=True)
class InitAckChunk(_InitBase):
    """INIT ACK (RFC 9260, Section 3.3.3): carries the State Cookie back."""

    TYPE: ClassVar[int] = 2


@dataclass(slots=True)
class SackChunk(KnownChunk):
    """SACK (RFC 9260, Section 3.3.4).

    Gap Ack Blocks are ``(start, end)`` offsets from the cumulative TSN ack, inclusive.
    """

    TYPE: ClassVar[int] = 3
    cumulative_tsn_ack: int
    a_rwnd: int
    gap_blocks: tuple[tuple[int, int], ...] = ()
    duplicate_tsns: tuple[int, ...] = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Fixed fields, gap blocks, duplicate TSNs; the counts must match the length."""
        need_at_least(value, 12, "SACK chunk")
        cum, rwnd, ngaps, ndups = _SACK.unpack_from(value)
        need(value, 12 + 4 * (ngaps + ndups), "SACK chunk")
        flat = struct.unpack_from(f"!{2 * ngaps}H{ndups}I", value, 12)
        gaps = tuple(zip(flat[0 : 2 * ngaps : 2], flat[1 : 2 * ngaps : 2], strict=True))
        return cls(cum, rwnd, gaps, flat[2 * ngaps :])

    def value(self) -> bytes:
        """Fixed fields, gap blocks, duplicate TSNs."""
        flat = [x for block in self.gap_blocks for x in block]
        return struct.pack(
            f"!IIHH{len(flat)}H{len(self.duplicate_tsns)}I",
            self.cumulative_tsn_ack,
            self.a_rwnd,
            len(self.gap_blocks),
            len(self.duplicate_tsns),
            *flat,
            *self.duplicate_tsns,
        )


@dataclass(slots=True)
class HeartbeatChunk(KnownChunk):
    """HEARTBEAT (RFC 9260, Section 3.3.5): one Heartbeat Info parameter."""

    TYPE: ClassVar[int] = 4
    info: bytes

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """A Heartbeat Info parameter (others after it are ignored)."""
        params = parse_params(value)
        if not params or not isinstance(params[0], HeartbeatInfo):
            raise ParseError(f"{cls.__name__} without Heartbeat Info")
        return cls(params[0].info)

    def value(self) -> bytes:
        """A Heartbeat Info parameter."""
        return bytes(HeartbeatInfo(self.info))


@dataclass(slots=True)
class HeartbeatAckChunk(HeartbeatChunk):
    """HEARTBEAT ACK (RFC 9260, Section 3.3.6): the HEARTBEAT's info, echoed."""

    TYPE: ClassVar[int] = 5


@dataclass(slots=True)
class _CausesChunk(KnownChunk):
    """The common layout of ERROR and ABORT: a list of error causes."""

    causes: tuple[ErrorCause, ...] = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Error causes."""
        return cls(tuple(parse_causes(value)))

    def value(self) -> bytes:
        """Error causes."""
        return join_tlvs(self.causes)


@dataclass(slots=True)
class AbortChunk(_CausesChunk):
    """ABORT (RFC 9260, Section 3.3.7), with optional error causes."""

    TYPE: ClassVar[int] = 6
    #: T bit: the packet carries the receiver's tag (reflected), not the sender's.
    reflected: bool = False

    @property
    def flags(self) -> int:
        """The T bit."""
        return FLAG_T if self.reflected else 0

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Error causes, and the T bit from the flags."""
        return cls(tuple(parse_causes(value)), bool(flags & FLAG_T))


@dataclass(slots=True)
class ShutdownChunk(KnownChunk):
    """SHUTDOWN (RFC 9260, Section 3.3.8): carries a cumulative TSN ack."""

    TYPE: ClassVar[int] = 7
    cumulative_tsn_ack: int

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """One 32-bit TSN."""
        need(value, 4, "SHUTDOWN chunk")
        return cls(_U32.unpack(value)[0])

    def value(self) -> bytes:
        """One 32-bit TSN."""
        return _U32.pack(self.cumulative_tsn_ack)


@dataclass(slots=True)
class _EmptyChunk(KnownChunk):
    """A chunk with no value."""

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """No value (anything present is ignored)."""
        return cls()

    def value(self) -> bytes:
        """No value."""
        return b""


@dataclass(slots=True)
class ShutdownAckChunk(_EmptyChunk):
    """SHUTDOWN ACK (RFC 9260, Section 3.3.9)."""

    TYPE: ClassVar[int] = 8


@dataclass(slots=True)
class ErrorChunk(_CausesChunk):
    """ERROR (RFC 9260, Section 3.3.10): reports conditions that do not end the association."""

    TYPE: ClassVar[int] = 9


@dataclass(slots=True)
class CookieEchoChunk(KnownChunk):
    """COOKIE ECHO (RFC 9260, Section 3.3.11): the State Cookie, returned verbatim."""

    TYPE: ClassVar[int] = 10
    cookie: bytes

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """The cookie bytes."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The cookie bytes."""
        return self.cookie


@dataclass(slots=True)
class CookieAckChunk(_EmptyChunk):
    """COOKIE ACK (RFC 9260, Section 3.3.12)."""

    TYPE: ClassVar[int] = 11


@dataclass(slots=True)
class ShutdownCompleteChunk(KnownChunk):
    """SHUTDOWN COMPLETE (RFC 9260, Section 3.3.13)."""

    TYPE: ClassVar[int] = 14
    #: T bit, as for ABORT.
    reflected: bool = False

    @property
    def flags(self) -> int:
        """The T bit."""
        return FLAG_T if self.reflected else 0

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """No value."""
        return cls(bool(flags & FLAG_T))

    def value(self) -> bytes:
        """No value."""
        return b""


@dataclass(slots=True)
class ReconfigChunk(KnownChunk):
    """RE-CONFIG (RFC 6525, Section 3.1): one or two reconfiguration parameters."""

    TYPE: ClassVar[int] = 0x82
    params: tuple[Param, ...] = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Parameters."""
        return cls(tuple(parse_params(value)))

    def value(self) -> bytes:
        """Parameters."""
        return join_tlvs(self.params)


@dataclass(slots=True)
class ForwardTsnChunk(KnownChunk):
    """FORWARD TSN (RFC 3758, Section 3.2): parsed, never sent, and not acted upon."""

    TYPE: ClassVar[int] = 0xC0
    new_cumulative_tsn: int
    streams: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """New cumulative TSN, then (stream, SSN) pairs."""
        need_at_least(value, 4, "FORWARD TSN chunk")
        if len(value) % 4:
            raise ParseError("FORWARD TSN chunk: ragged stream list")
        (tsn,) = _U32.unpack_from(value)
        flat = struct.unpack_from(f"!{(len(value) - 4) // 2}H", value, 4)
        return cls(tsn, tuple(zip(flat[0::2], flat[1::2], strict=True)))

    def value(self) -> bytes:
        """New cumulative TSN, then (stream, SSN) pairs."""
        flat = [x for pair in self.streams for x in pair]
        return struct.pack(f"!I{len(flat)}H", self.new_cumulative_tsn, *flat)


CHUNK_CLASSES: tuple[type[KnownChunk], ...] = (
    DataChunk,
    InitChunk,
    InitAckChunk,
    SackChunk,
    HeartbeatChunk,
    HeartbeatAckChunk,
    AbortChunk,
    ShutdownChunk,
    ShutdownAckChunk,
    ErrorChunk,
    CookieEchoChunk,
    CookieAckChunk,
    ShutdownCompleteChunk,
    ReconfigChunk,
    ForwardTsnChunk,
)
#: Chunk type code -> class, for every chunk this implementation understands.
CHUNK_TYPES: dict[int, type[KnownChunk]] = {cls.TYPE: cls for cls in CHUNK_CLASSES}


def parse_chunks(buf: bytes | memoryview) -> list[Chunk]:
    """Split and parse a packet's chunks; unknown types become :class:`UnknownChunk`.

    Raises:
        ParseError: a chunk is truncated, has a length below 4, or a malformed value.
    """
    view = memoryview(buf)
    end = len(view)
    offset = 0
    out: list[Chunk] = []
    while offset < end:
        if end - offset < 4:
            raise ParseError("truncated chunk header")
        type_, flags, length = _HEADER.unpack_from(view, offset)
        if length < 4 or offset + length > end:
            raise ParseError(f"chunk type {type_} has a bad length {length}")
        value = view[offset + 4 : offset + length]
        cls = CHUNK_TYPES.get(type_)
        if cls is None:
            out.append(UnknownChunk(type_, flags, bytes(value)))
        else:
            out.append(cls.parse_value(flags, value))
        offset += pad4(length)
    return out


def unknown_chunk_action(chunk_type: int) -> tuple[bool, bool]:
    """What to do with a chunk of unknown type: ``(keep_processing, report)``.

    RFC 9260, Section 3.2, the two highest bits of the type: 00 stop processing the
    packet and discard it; 01 stop, discard, and report in an ERROR chunk (Unrecognized
    Chunk Type); 10 skip this chunk and continue; 11 skip, continue, and report.
    """
    return bool(chunk_type & 0x80), bool(chunk_type & 0x40)
