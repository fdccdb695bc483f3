"""Chunks (RFC 9260, Section 3.3; RE-CONFIG from RFC 6525; FORWARD TSN from RFC 3758).

A chunk is a 1-byte type, 1-byte flags, 16-bit length (header + value, without the
padding) and a value padded to 4 bytes. Each chunk type is a small dataclass with
``parse_value(flags, value)`` and ``__bytes__``, declared with its type code by
``@_chunk(code)``, which files it in :data:`CHUNK_TYPES`; most declare their value as a
:class:`~._layout.Layout` rather than parse it by hand. :func:`parse_chunks` splits a
packet's chunk area, keeping unknown types as :class:`UnknownChunk` for the rules of
Section 3.2 (see :func:`unknown_chunk_action`).

DATA is on the hot path: its parse is one ``unpack_from`` and one slice copy, and the
sender builds its bytes with :func:`data_chunk_bytes` without a dataclass at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self, TypeVar, dataclass_transform

from ._causes import ErrorCause, parse_causes
from ._errors import ParseError
from ._layout import BYTES, U16_PAIRS, LaidOut, Layout, Tail, declare, need, need_at_least
from ._params import HeartbeatInfo, Param, parse_params
from ._tlv import PADDING, join_tlvs, only

_HEADER = struct.Struct("!BBH")
_DATA_HEADER = struct.Struct("!BBHIHHI")
_DATA_FIELDS = struct.Struct("!IHHI")
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
    def code(self) -> int:
        """The 8-bit chunk type."""
        raise NotImplementedError

    @property
    def chunk_type(self) -> int:
        """The 8-bit chunk type: :attr:`code`, by the name RFC 9260 gives it."""
        return self.code

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
            _HEADER.pack(self.code, self.flags, 4 + len(value)) + value + PADDING[-len(value) % 4]
        )

    @staticmethod
    def parse(data: bytes | memoryview) -> Chunk:
        """Parse exactly one chunk (its padding may follow).

        Raises:
            ParseError: ``data`` is not exactly one well-formed chunk.
        """
        return only(parse_chunks(data), "chunk")


class KnownChunk(LaidOut, Chunk):
    """A chunk type this implementation understands."""

    __slots__ = ()

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Build the chunk from its flags and value bytes (by default, the value by its
        :attr:`LAYOUT`, and no flags).

        Raises:
            ParseError: the value does not have the layout of this chunk type.
        """
        return cls(*cls.LAYOUT.unpack(value, cls.__name__))


#: Chunk type code -> class, for every chunk this implementation understands.
CHUNK_TYPES: dict[int, type[KnownChunk]] = {}
_K = TypeVar("_K", bound=KnownChunk)


@dataclass_transform()
def _chunk(code: int) -> Callable[[type[_K]], type[_K]]:
    """Declare the class of chunk type ``code``: a dataclass in :data:`CHUNK_TYPES`.

    Chunks are not frozen: a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__``, which would slow down parsing DATA.
    """
    return declare(CHUNK_TYPES, code, frozen=False)


class _ReflectedFlag(KnownChunk):
    """ABORT and SHUTDOWN COMPLETE: their only flag is the T bit (Section 3.3.7), the
    chunk's last field, after what its layout reads from the value."""

    __slots__ = ()
    #: T bit: the packet carries the receiver's tag (reflected), not the sender's.
    reflected: bool

    @property
    def flags(self) -> int:
        """The T bit."""
        return FLAG_T if self.reflected else 0

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """The value by the layout, and the T bit from the flags."""
        fields = (*cls.LAYOUT.unpack(value, cls.__name__), bool(flags & FLAG_T))
        return cls(*fields)


@dataclass(slots=True)
class UnknownChunk(Chunk):
    """A chunk whose type we do not implement, kept verbatim."""

    # field(), not a bare annotation: the dataclass would take the base's ``code``
    # property for this field's default.
    code: int = field()
    raw_flags: int
    raw: bytes

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
    # One copy of the payload (a memoryview of the message, on the sender's side).
    return b"".join(
        (_DATA_HEADER.pack(0, flags, 16 + n, tsn, stream, ssn, ppid), payload, PADDING[-n % 4])
    )


@_chunk(0)
class DataChunk(KnownChunk):
    """DATA (RFC 9260, Section 3.3.1): one fragment of one user message.

    On the hot path: :meth:`parse_value` is written out by hand (one ``unpack_from``, one
    slice copy, the flags), and :meth:`__bytes__` is :func:`data_chunk_bytes`.
    """

    LAYOUT = Layout("IHHI", BYTES)
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
        tsn, stream, ssn, ppid = _DATA_FIELDS.unpack_from(value)
        return cls(
            tsn,
            stream,
            ssn,
            ppid,
            bytes(value[12:]),
            flags & FLAG_UNORDERED != 0,
            flags & FLAG_BEGIN != 0,
            flags & FLAG_END != 0,
            flags & FLAG_IMMEDIATE != 0,
        )

    def __bytes__(self) -> bytes:
        return data_chunk_bytes(
            self.tsn, self.stream_id, self.ssn, self.ppid, self.flags, self.user_data
        )


#: Parameters after the fixed fields (INIT, INIT ACK, RE-CONFIG).
_PARAMS: Tail[tuple[Param, ...]] = Tail(lambda view, what: tuple(parse_params(view)), join_tlvs)
#: Error causes (ERROR, ABORT).
_CAUSES: Tail[tuple[ErrorCause, ...]] = Tail(
    lambda view, what: tuple(parse_causes(view)), join_tlvs
)


@dataclass(slots=True)
class _InitBase(KnownChunk):
    """The common layout of INIT and INIT ACK (RFC 9260, Sections 3.3.2 and 3.3.3)."""

    LAYOUT = Layout("IIHHI", _PARAMS)
    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    params: tuple[Param, ...] = ()


@_chunk(1)
class InitChunk(_InitBase):
    """INIT (RFC 9260, Section 3.3.2): the first leg of the four-way handshake."""


@_chunk(2)
class InitAckChunk(_InitBase):
    """INIT ACK (RFC 9260, Section 3.3.3): carries the State Cookie back."""


@_chunk(3)
class SackChunk(KnownChunk):
    """SACK (RFC 9260, Section 3.3.4).

    Gap Ack Blocks are ``(start, end)`` offsets from the cumulative TSN ack, inclusive.
    On the hot path, and counted, so read and written by hand.
    """

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


@_chunk(4)
class HeartbeatChunk(KnownChunk):
    """HEARTBEAT (RFC 9260, Section 3.3.5): one Heartbeat Info parameter."""

    info: bytes

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """A Heartbeat Info parameter (others after it are ignored)."""
        params = parse_params(value)
        if not params or not isinstance(params[0], HeartbeatInfo):
            raise ParseError(f"{cls.__name__} without Heartbeat Info")
        return cls(params[0].info)

    def value(self) -> bytes:
        """A Heartbeat Info parameter (its padding is the chunk's)."""
        return join_tlvs((HeartbeatInfo(self.info),))


@_chunk(5)
class HeartbeatAckChunk(HeartbeatChunk):
    """HEARTBEAT ACK (RFC 9260, Section 3.3.6): the HEARTBEAT's info, echoed."""


@dataclass(slots=True)
class _CausesChunk(KnownChunk):
    """The common layout of ERROR and ABORT: a list of error causes."""

    LAYOUT = Layout(tail=_CAUSES)
    causes: tuple[ErrorCause, ...] = ()


@_chunk(6)
class AbortChunk(_ReflectedFlag, _CausesChunk):
    """ABORT (RFC 9260, Section 3.3.7), with optional error causes."""

    reflected: bool = False


@_chunk(7)
class ShutdownChunk(KnownChunk):
    """SHUTDOWN (RFC 9260, Section 3.3.8): carries a cumulative TSN ack."""

    LAYOUT = Layout("I")
    cumulative_tsn_ack: int


@dataclass(slots=True)
class _EmptyChunk(KnownChunk):
    """A chunk with no value (anything present is ignored)."""

    LAYOUT = Layout(lenient=True)


@_chunk(8)
class ShutdownAckChunk(_EmptyChunk):
    """SHUTDOWN ACK (RFC 9260, Section 3.3.9)."""


@_chunk(9)
class ErrorChunk(_CausesChunk):
    """ERROR (RFC 9260, Section 3.3.10): reports conditions that do not end the association."""


@_chunk(10)
class CookieEchoChunk(KnownChunk):
    """COOKIE ECHO (RFC 9260, Section 3.3.11): the State Cookie, returned verbatim."""

    LAYOUT = Layout(tail=BYTES)
    cookie: bytes


@_chunk(11)
class CookieAckChunk(_EmptyChunk):
    """COOKIE ACK (RFC 9260, Section 3.3.12)."""


@_chunk(14)
class ShutdownCompleteChunk(_ReflectedFlag):
    """SHUTDOWN COMPLETE (RFC 9260, Section 3.3.13): no value, only the T bit."""

    LAYOUT = Layout(lenient=True)
    reflected: bool = False


@_chunk(0x82)
class ReconfigChunk(KnownChunk):
    """RE-CONFIG (RFC 6525, Section 3.1): one or two reconfiguration parameters."""

    LAYOUT = Layout(tail=_PARAMS)
    params: tuple[Param, ...] = ()


@_chunk(0x84)
class PadChunk(KnownChunk):
    """PAD (RFC 4820): padding that fills a path MTU probe to its size (RFC 8899,
    Section 6.2). The receiver discards it; its type's high bits (10) make a peer that
    does not know it skip it too. Parsed without copying the padding."""

    length: int  # bytes of padding (the value's length)

    @classmethod
    def parse_value(cls, flags: int, value: memoryview) -> Self:
        """Only the padding's length is kept."""
        return cls(len(value))

    def value(self) -> bytes:
        """``length`` zero bytes."""
        return bytes(self.length)


@_chunk(0xC0)
class ForwardTsnChunk(KnownChunk):
    """FORWARD TSN (RFC 3758, Section 3.2): parsed, never sent, and not acted upon.

    The new cumulative TSN, then (stream, SSN) pairs.
    """

    LAYOUT = Layout("I", U16_PAIRS)
    new_cumulative_tsn: int
    streams: tuple[tuple[int, int], ...] = ()


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
        offset += (length + 3) & ~3  # pad4(length), inlined: once per chunk
    return out


def unknown_chunk_action(chunk_type: int) -> tuple[bool, bool]:
    """What to do with a chunk of unknown type: ``(keep_processing, report)``.

    RFC 9260, Section 3.2, the two highest bits of the type: 00 stop processing the
    packet and discard it; 01 stop, discard, and report in an ERROR chunk (Unrecognized
    Chunk Type); 10 skip this chunk and continue; 11 skip, continue, and report.
    """
    return bool(chunk_type & 0x80), bool(chunk_type & 0x40)
