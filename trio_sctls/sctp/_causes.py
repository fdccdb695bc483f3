"""Error causes (RFC 9260, Section 3.3.10), carried in ERROR and ABORT chunks.

Same TLV layout as parameters: 16-bit cause code, 16-bit length, cause-specific
information padded to 4 bytes. :data:`CAUSE_TYPES` maps a code to its class; codes we
do not know are kept as :class:`UnknownCause`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from ._errors import ParseError
from ._tlv import KnownTlv, Tlv, need, need_at_least, parse_tlvs

_U32 = struct.Struct("!I")


class ErrorCause(Tlv):
    """Base class of every error cause (known or not)."""

    __slots__ = ()

    def describe(self) -> str:
        """A short human-readable description, for events and logs."""
        return type(self).__name__


class KnownCause(ErrorCause, KnownTlv):
    """An error cause this implementation understands."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class UnknownCause(ErrorCause):
    """An error cause whose code we do not implement, kept verbatim."""

    # field(), not a bare annotation: the dataclass would take the base's ``code``
    # property for this field's default.
    code: int = field()
    raw: bytes

    def value(self) -> bytes:
        """The information exactly as received."""
        return self.raw

    def describe(self) -> str:
        """The numeric code."""
        return f"error cause {self.code}"


@dataclass(frozen=True, slots=True)
class _EmptyCause(KnownCause):
    """A cause with no information."""

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Ignore any information (be liberal in what we accept)."""
        return cls()

    def value(self) -> bytes:
        """No information."""
        return b""


@dataclass(frozen=True, slots=True)
class _OpaqueCause(KnownCause):
    """A cause whose information is a blob of bytes."""

    data: bytes = b""

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Keep the bytes."""
        return cls(bytes(value))

    def value(self) -> bytes:
        """The bytes."""
        return self.data


@dataclass(frozen=True, slots=True)
class InvalidStreamIdentifier(KnownCause):
    """Invalid Stream Identifier (cause 1): DATA arrived for a stream that does not exist."""

    CODE: ClassVar[int] = 1
    stream: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Stream id and two reserved bytes."""
        need(value, 4, "invalid stream identifier cause")
        return cls(struct.unpack("!HH", value)[0])

    def value(self) -> bytes:
        """Stream id and two reserved bytes."""
        return struct.pack("!HH", self.stream, 0)

    def describe(self) -> str:
        """Name the stream."""
        return f"invalid stream identifier {self.stream}"


@dataclass(frozen=True, slots=True)
class MissingMandatoryParameter(KnownCause):
    """Missing Mandatory Parameter (cause 2)."""

    CODE: ClassVar[int] = 2
    param_types: tuple[int, ...]

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """A count and that many 16-bit parameter types."""
        need_at_least(value, 4, "missing mandatory parameter cause")
        (count,) = _U32.unpack_from(value)
        if len(value) != 4 + 2 * count:
            raise ParseError("missing mandatory parameter cause: bad count")
        return cls(struct.unpack_from(f"!{count}H", value, 4))

    def value(self) -> bytes:
        """A count and that many 16-bit parameter types."""
        n = len(self.param_types)
        return struct.pack(f"!I{n}H", n, *self.param_types)


@dataclass(frozen=True, slots=True)
class StaleCookie(KnownCause):
    """Stale Cookie (cause 3): how late the COOKIE ECHO was, in microseconds."""

    CODE: ClassVar[int] = 3
    staleness_us: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """One 32-bit measure of staleness."""
        need(value, 4, "stale cookie cause")
        return cls(_U32.unpack(value)[0])

    def value(self) -> bytes:
        """One 32-bit measure of staleness."""
        return _U32.pack(self.staleness_us)

    def describe(self) -> str:
        """Say how stale."""
        return f"stale cookie ({self.staleness_us} us late)"


@dataclass(frozen=True, slots=True)
class OutOfResource(_EmptyCause):
    """Out of Resource (cause 4): also what we send for a message above our maximum."""

    CODE: ClassVar[int] = 4


@dataclass(frozen=True, slots=True)
class UnresolvableAddress(_OpaqueCause):
    """Unresolvable Address (cause 5): carries the address parameter."""

    CODE: ClassVar[int] = 5


@dataclass(frozen=True, slots=True)
class UnrecognizedChunkType(_OpaqueCause):
    """Unrecognized Chunk Type (cause 6): carries the chunk header and value."""

    CODE: ClassVar[int] = 6


@dataclass(frozen=True, slots=True)
class InvalidMandatoryParameter(_EmptyCause):
    """Invalid Mandatory Parameter (cause 7)."""

    CODE: ClassVar[int] = 7


@dataclass(frozen=True, slots=True)
class UnrecognizedParameters(_OpaqueCause):
    """Unrecognized Parameters (cause 8): carries the parameters verbatim."""

    CODE: ClassVar[int] = 8


@dataclass(frozen=True, slots=True)
class NoUserData(KnownCause):
    """No User Data (cause 9): a DATA chunk without payload."""

    CODE: ClassVar[int] = 9
    tsn: int

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """The TSN of the empty DATA chunk."""
        need(value, 4, "no user data cause")
        return cls(_U32.unpack(value)[0])

    def value(self) -> bytes:
        """The TSN of the empty DATA chunk."""
        return _U32.pack(self.tsn)


@dataclass(frozen=True, slots=True)
class CookieWhileShuttingDown(_EmptyCause):
    """Cookie Received While Shutting Down (cause 10)."""

    CODE: ClassVar[int] = 10


@dataclass(frozen=True, slots=True)
class RestartWithNewAddresses(_OpaqueCause):
    """Restart of an Association with New Addresses (cause 11)."""

    CODE: ClassVar[int] = 11


@dataclass(frozen=True, slots=True)
class UserInitiatedAbort(_OpaqueCause):
    """User-Initiated Abort (cause 12): the upper layer's reason, as bytes."""

    CODE: ClassVar[int] = 12

    def describe(self) -> str:
        """The reason, decoded leniently."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class ProtocolViolationCause(_OpaqueCause):
    """Protocol Violation (cause 13): free-form additional information."""

    CODE: ClassVar[int] = 13

    def describe(self) -> str:
        """The additional information, decoded leniently."""
        return "protocol violation: " + self.data.decode("utf-8", "replace")


CAUSE_CLASSES: tuple[type[KnownCause], ...] = (
    InvalidStreamIdentifier,
    MissingMandatoryParameter,
    StaleCookie,
    OutOfResource,
    UnresolvableAddress,
    UnrecognizedChunkType,
    InvalidMandatoryParameter,
    UnrecognizedParameters,
    NoUserData,
    CookieWhileShuttingDown,
    RestartWithNewAddresses,
    UserInitiatedAbort,
    ProtocolViolationCause,
)
#: Cause code -> class, for every error cause of RFC 9260.
CAUSE_TYPES: dict[int, type[KnownCause]] = {cls.CODE: cls for cls in CAUSE_CLASSES}


def parse_causes(buf: bytes | memoryview) -> list[ErrorCause]:
    """Parse the causes of an ERROR or ABORT chunk.

    Raises:
        ParseError: a cause is truncated or malformed.
    """
    return list(parse_tlvs(buf, CAUSE_TYPES, UnknownCause, "error cause"))
