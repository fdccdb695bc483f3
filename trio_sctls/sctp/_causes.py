"""Error causes (RFC 9260, Section 3.3.10), carried in ERROR and ABORT chunks.

Same TLV layout as parameters: 16-bit cause code, 16-bit length, cause-specific
information padded to 4 bytes. Each class is declared with its code by ``@_cause(code)``,
which files it in :data:`CAUSE_TYPES`; codes we do not know are kept as
:class:`UnknownCause`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self, TypeVar, dataclass_transform

from ._errors import ParseError
from ._layout import BYTES, Layout, declare, need_at_least
from ._tlv import KnownTlv, Tlv, UnknownTlv, parse_tlvs

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


class UnknownCause(UnknownTlv, ErrorCause):
    """An error cause whose code we do not implement, kept verbatim."""

    __slots__ = ()

    def describe(self) -> str:
        """The numeric code."""
        return f"error cause {self.code}"


#: Cause code -> class, for every error cause of RFC 9260.
CAUSE_TYPES: dict[int, type[KnownCause]] = {}
_C = TypeVar("_C", bound=KnownCause)


@dataclass_transform(frozen_default=True)
def _cause(code: int) -> Callable[[type[_C]], type[_C]]:
    """Declare the class of cause ``code``: a frozen dataclass in :data:`CAUSE_TYPES`."""
    return declare(CAUSE_TYPES, code, frozen=True)


@dataclass(frozen=True, slots=True)
class _EmptyCause(KnownCause):
    """A cause with no information (any present is ignored: be liberal in what we accept)."""

    LAYOUT = Layout(lenient=True)


@dataclass(frozen=True, slots=True)
class _OpaqueCause(KnownCause):
    """A cause whose information is a blob of bytes."""

    LAYOUT = Layout(tail=BYTES)
    data: bytes = b""


@_cause(1)
class InvalidStreamIdentifier(KnownCause):
    """Invalid Stream Identifier: DATA arrived for a stream that does not exist."""

    LAYOUT = Layout("H2x")  # stream id, two reserved bytes
    stream: int

    def describe(self) -> str:
        """Name the stream."""
        return f"invalid stream identifier {self.stream}"


@_cause(2)
class MissingMandatoryParameter(KnownCause):
    """Missing Mandatory Parameter."""

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

    def describe(self) -> str:
        """Name the missing parameter types."""
        return "missing mandatory parameters " + ", ".join(f"{t:#06x}" for t in self.param_types)


@_cause(3)
class StaleCookie(KnownCause):
    """Stale Cookie: how late the COOKIE ECHO was, in microseconds."""

    LAYOUT = Layout("I")
    staleness_us: int

    def describe(self) -> str:
        """Say how stale."""
        return f"stale cookie ({self.staleness_us} us late)"


@_cause(4)
class OutOfResource(_EmptyCause):
    """Out of Resource: also what we send for a message above our maximum."""


@_cause(5)
class UnresolvableAddress(_OpaqueCause):
    """Unresolvable Address: carries the address parameter."""


@_cause(6)
class UnrecognizedChunkType(_OpaqueCause):
    """Unrecognized Chunk Type: carries the chunk header and value."""


@_cause(7)
class InvalidMandatoryParameter(_EmptyCause):
    """Invalid Mandatory Parameter."""


@_cause(8)
class UnrecognizedParameters(_OpaqueCause):
    """Unrecognized Parameters: carries the parameters verbatim."""


@_cause(9)
class NoUserData(KnownCause):
    """No User Data: a DATA chunk without payload, named by its TSN."""

    LAYOUT = Layout("I")
    tsn: int


@_cause(10)
class CookieWhileShuttingDown(_EmptyCause):
    """Cookie Received While Shutting Down."""


@_cause(11)
class RestartWithNewAddresses(_OpaqueCause):
    """Restart of an Association with New Addresses."""


@_cause(12)
class UserInitiatedAbort(_OpaqueCause):
    """User-Initiated Abort: the upper layer's reason, as bytes."""

    def describe(self) -> str:
        """The reason, decoded leniently."""
        return self.data.decode("utf-8", "replace")


@_cause(13)
class ProtocolViolationCause(_OpaqueCause):
    """Protocol Violation: free-form additional information."""

    def describe(self) -> str:
        """The additional information, decoded leniently."""
        return "protocol violation: " + self.data.decode("utf-8", "replace")


def parse_causes(buf: bytes | memoryview) -> list[ErrorCause]:
    """Parse the causes of an ERROR or ABORT chunk.

    Raises:
        ParseError: a cause is truncated or malformed.
    """
    return list(parse_tlvs(buf, CAUSE_TYPES, UnknownCause, "error cause"))
