"""Chunk parameters: INIT / INIT ACK parameters, HEARTBEAT info, RE-CONFIG parameters.

Each parameter is a small frozen dataclass with ``parse_value()`` (from the bytes after
the 4-byte header) and ``__bytes__`` (the whole TLV, padded). :data:`PARAM_TYPES` maps a
type code to its class; :func:`parse_params` turns a chunk's parameter area into a list,
keeping any parameter it does not know as :class:`UnknownParam` so that the receiver can
apply the rules of RFC 9260, Section 3.2.1 (the two high bits of the type: skip or stop,
report or not) with :func:`unknown_param_action`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Self

from ._errors import ParseError
from ._tlv import KnownTlv, Tlv, need, need_at_least, parse_tlvs

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class Param(Tlv):
    """Base class of every parameter (known or not)."""

    __slots__ = ()


class KnownParam(Param, KnownTlv):
    """A parameter type this implementation understands."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class UnknownParam(Param):
    """A parameter whose type we do not implement, kept verbatim."""

    # field(), not a bare annotation: the dataclass would take the base's ``code``
    # property for this field's default.
    code: int = field()
    raw: bytes

    def value(self) -> bytes:
        """The value exactly as received."""
        return self.raw


@dataclass(frozen=True, slots=True)
class HeartbeatInfo(KnownParam):
    """Heartbeat Info (RFC 9260, Section 3.3.5): opaque to the receiver, echoed back."""

    CODE: ClassVar[int] = 1
    info: bytes

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Keep the opaque info."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The opaque info."""
        return self.info


@dataclass(frozen=True, slots=True)
class IPv4AddressParam(KnownParam):
    """IPv4 Address (RFC 9260, Section 3.3.2.1.1)."""

    CODE: ClassVar[int] = 5
    address: IPv4Address

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Four address bytes."""
        need(value, 4, "IPv4 address parameter")
        return cls(IPv4Address(bytes(value)))

    def value(self) -> bytes:
        """Four address bytes."""
        return self.address.packed


@dataclass(frozen=True, slots=True)
class IPv6AddressParam(KnownParam):
    """IPv6 Address (RFC 9260, Section 3.3.2.1.2)."""

    CODE: ClassVar[int] = 6
    address: IPv6Address

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Sixteen address bytes."""
        need(value, 16, "IPv6 address parameter")
        return cls(IPv6Address(bytes(value)))

    def value(self) -> bytes:
        """Sixteen address bytes."""
        return self.address.packed


@dataclass(frozen=True, slots=True)
class StateCookieParam(KnownParam):
    """State Cookie (RFC 9260, Section 3.3.3.1): opaque, authenticated by its creator."""

    CODE: ClassVar[int] = 7
    cookie: bytes

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Keep the cookie bytes."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The cookie bytes."""
        return self.cookie


@dataclass(frozen=True, slots=True)
class UnrecognizedParam(KnownParam):
    """Unrecognized Parameter (RFC 9260, Section 3.3.3.1): wraps a whole TLV we skipped."""

    CODE: ClassVar[int] = 8
    param: bytes

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Keep the wrapped TLV bytes."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The wrapped TLV bytes."""
        return self.param


@dataclass(frozen=True, slots=True)
class CookiePreservative(KnownParam):
    """Cookie Preservative (RFC 9260, Section 3.3.2.1.3): ask for a longer cookie life."""

    CODE: ClassVar[int] = 9
    #: Suggested Cookie Life-Span Increment, in milliseconds.
    increment_ms: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """One 32-bit increment."""
        need(value, 4, "cookie preservative")
        return cls(_U32.unpack(value)[0])

    def value(self) -> bytes:
        """One 32-bit increment."""
        return _U32.pack(self.increment_ms)


@dataclass(frozen=True, slots=True)
class HostNameAddressParam(KnownParam):
    """Host Name Address (RFC 9260, Section 3.3.2.1.4): deprecated, never resolved."""

    CODE: ClassVar[int] = 11
    host_name: bytes

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """The NUL-terminated name, verbatim."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The name bytes."""
        return self.host_name


@dataclass(frozen=True, slots=True)
class SupportedAddressTypes(KnownParam):
    """Supported Address Types (RFC 9260, Section 3.3.2.1.5)."""

    CODE: ClassVar[int] = 12
    address_types: tuple[int, ...]

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """A list of 16-bit parameter types (5 for IPv4, 6 for IPv6)."""
        if len(value) % 2:
            raise ParseError("supported address types: odd length")
        return cls(tuple(x for (x,) in _U16.iter_unpack(value)))

    def value(self) -> bytes:
        """A list of 16-bit parameter types."""
        return b"".join(_U16.pack(x) for x in self.address_types)


@dataclass(frozen=True, slots=True)
class SupportedExtensions(KnownParam):
    """Supported Extensions (RFC 5061, Section 4.2.7): chunk types beyond RFC 9260.

    We announce RE-CONFIG (0x82, RFC 6525) here; a peer must list it too before either
    side sends one.
    """

    CODE: ClassVar[int] = 0x8008
    chunk_types: tuple[int, ...]

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """One byte per chunk type."""
        return cls(tuple(value))

    def value(self) -> bytes:
        """One byte per chunk type."""
        return bytes(self.chunk_types)


@dataclass(frozen=True, slots=True)
class ForwardTSNSupported(KnownParam):
    """Forward-TSN-Supported (RFC 3758, Section 3.1); we never send FORWARD TSN."""

    CODE: ClassVar[int] = 0xC000

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """No value."""
        return cls()

    def value(self) -> bytes:
        """No value."""
        return b""


# -- RFC 6525: stream reconfiguration parameters, carried in RE-CONFIG chunks ----------


class ReconfigResult(IntEnum):
    """Result codes of a Re-configuration Response (RFC 6525, Section 4.4)."""

    SUCCESS_NOTHING_TO_DO = 0
    SUCCESS_PERFORMED = 1
    DENIED = 2
    ERROR_WRONG_SSN = 3
    ERROR_REQUEST_ALREADY_IN_PROGRESS = 4
    ERROR_BAD_SEQUENCE_NUMBER = 5
    IN_PROGRESS = 6


def _streams(value: memoryview, what: str) -> tuple[int, ...]:
    if len(value) % 2:
        raise ParseError(f"{what}: odd length stream list")
    return tuple(x for (x,) in _U16.iter_unpack(value))


@dataclass(frozen=True, slots=True)
class OutgoingSSNResetRequest(KnownParam):
    """Outgoing SSN Reset Request (RFC 6525, Section 4.1).

    "I reset my outgoing streams ``streams`` (all of them if empty) after TSN
    ``last_tsn``."
    """

    CODE: ClassVar[int] = 13
    request_seq: int
    response_seq: int
    last_tsn: int
    streams: tuple[int, ...] = ()

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Three 32-bit numbers and 16-bit stream ids."""
        need_at_least(value, 12, "outgoing SSN reset request")
        req, resp, last = struct.unpack_from("!III", value)
        return cls(req, resp, last, _streams(value[12:], "outgoing SSN reset request"))

    def value(self) -> bytes:
        """Three 32-bit numbers and 16-bit stream ids."""
        return struct.pack(
            f"!III{len(self.streams)}H",
            self.request_seq,
            self.response_seq,
            self.last_tsn,
            *self.streams,
        )


@dataclass(frozen=True, slots=True)
class IncomingSSNResetRequest(KnownParam):
    """Incoming SSN Reset Request (RFC 6525, Section 4.2): "please reset yours"."""

    CODE: ClassVar[int] = 14
    request_seq: int
    streams: tuple[int, ...] = ()

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """A 32-bit sequence number and 16-bit stream ids."""
        need_at_least(value, 4, "incoming SSN reset request")
        (req,) = _U32.unpack_from(value)
        return cls(req, _streams(value[4:], "incoming SSN reset request"))

    def value(self) -> bytes:
        """A 32-bit sequence number and 16-bit stream ids."""
        return struct.pack(f"!I{len(self.streams)}H", self.request_seq, *self.streams)


@dataclass(frozen=True, slots=True)
class SSNTSNResetRequest(KnownParam):
    """SSN/TSN Reset Request (RFC 6525, Section 4.3); we always deny it."""

    CODE: ClassVar[int] = 15
    request_seq: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """A 32-bit sequence number."""
        need(value, 4, "SSN/TSN reset request")
        return cls(_U32.unpack(value)[0])

    def value(self) -> bytes:
        """A 32-bit sequence number."""
        return _U32.pack(self.request_seq)


@dataclass(frozen=True, slots=True)
class ReconfigResponse(KnownParam):
    """Re-configuration Response (RFC 6525, Section 4.4)."""

    CODE: ClassVar[int] = 16
    response_seq: int
    result: int
    #: Sender's and Receiver's Next TSN: only in answers to SSN/TSN Reset Requests.
    next_tsns: tuple[int, int] | None = None

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Two 32-bit numbers, optionally two more."""
        if len(value) == 8:
            seq, result = struct.unpack("!II", value)
            return cls(seq, result)
        need(value, 16, "re-configuration response")
        seq, result, sender_next, receiver_next = struct.unpack("!IIII", value)
        return cls(seq, result, (sender_next, receiver_next))

    def value(self) -> bytes:
        """Two 32-bit numbers, optionally two more."""
        out = struct.pack("!II", self.response_seq, self.result)
        if self.next_tsns is not None:
            out += struct.pack("!II", *self.next_tsns)
        return out


@dataclass(frozen=True, slots=True)
class _AddStreamsRequest(KnownParam):
    """The shared layout of the two Add Streams Requests (RFC 6525, Sections 4.5, 4.6)."""

    request_seq: int
    new_streams: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Sequence number, stream count, reserved."""
        need(value, 8, "add streams request")
        seq, count, _reserved = struct.unpack("!IHH", value)
        return cls(seq, count)

    def value(self) -> bytes:
        """Sequence number, stream count, reserved."""
        return struct.pack("!IHH", self.request_seq, self.new_streams, 0)


@dataclass(frozen=True, slots=True)
class AddOutgoingStreamsRequest(_AddStreamsRequest):
    """Add Outgoing Streams Request (RFC 6525, Section 4.5); we always deny it."""

    CODE: ClassVar[int] = 17


@dataclass(frozen=True, slots=True)
class AddIncomingStreamsRequest(_AddStreamsRequest):
    """Add Incoming Streams Request (RFC 6525, Section 4.6); we always deny it."""

    CODE: ClassVar[int] = 18


PARAM_CLASSES: tuple[type[KnownParam], ...] = (
    HeartbeatInfo,
    IPv4AddressParam,
    IPv6AddressParam,
    StateCookieParam,
    UnrecognizedParam,
    CookiePreservative,
    HostNameAddressParam,
    SupportedAddressTypes,
    SupportedExtensions,
    ForwardTSNSupported,
    OutgoingSSNResetRequest,
    IncomingSSNResetRequest,
    SSNTSNResetRequest,
    ReconfigResponse,
    AddOutgoingStreamsRequest,
    AddIncomingStreamsRequest,
)
#: Parameter type code -> class, for every parameter this implementation understands.
PARAM_TYPES: dict[int, type[KnownParam]] = {cls.CODE: cls for cls in PARAM_CLASSES}


def parse_params(buf: bytes | memoryview) -> list[Param]:
    """Parse a sequence of parameters; unknown types become :class:`UnknownParam`.

    Raises:
        ParseError: a TLV is truncated or a known parameter's value is malformed.
    """
    return list(parse_tlvs(buf, PARAM_TYPES, UnknownParam, "parameter"))


def parse_param(data: bytes | memoryview) -> Param:
    """Parse exactly one parameter (padding allowed after it).

    Raises:
        ParseError: ``data`` is not exactly one well-formed parameter.
    """
    params = parse_params(data)
    if len(params) != 1:
        raise ParseError(f"expected one parameter, found {len(params)}")
    return params[0]


def unknown_param_action(param_type: int) -> tuple[bool, bool]:
    """What to do with a parameter of unknown type: ``(keep_processing, report)``.

    RFC 9260, Section 3.2.1, the two highest bits of the type:
    00 stop processing the chunk's parameters, do not report; 01 stop and report;
    10 skip this parameter and continue, do not report; 11 skip, continue, and report.
    """
    return bool(param_type & 0x8000), bool(param_type & 0x4000)
