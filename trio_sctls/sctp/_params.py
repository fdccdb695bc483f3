"""Chunk parameters: INIT / INIT ACK parameters, HEARTBEAT info, RE-CONFIG parameters.

Each parameter is a small frozen dataclass with ``parse_value()`` (from the bytes after
the 4-byte header) and ``__bytes__`` (the whole TLV, padded), declared with its type code
by ``@_param(code)``, which files it in :data:`PARAM_TYPES`, and its value's shape as a
:class:`~._layout.Layout`. :func:`parse_params` turns a chunk's parameter area into a
list, keeping any parameter it does not know as :class:`UnknownParam` so that the receiver can
apply the rules of RFC 9260, Section 3.2.1 (the two high bits of the type: skip or stop,
report or not) with :func:`unknown_param_action`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Self, TypeVar, dataclass_transform

from ._layout import BYTES, U8S, U16S, Layout, Tail, declare, need
from ._tlv import KnownTlv, Tlv, UnknownTlv, only, parse_tlvs


class Param(Tlv):
    """Base class of every parameter (known or not)."""

    __slots__ = ()


class KnownParam(Param, KnownTlv):
    """A parameter type this implementation understands."""

    __slots__ = ()


class UnknownParam(UnknownTlv, Param):
    """A parameter whose type we do not implement, kept verbatim."""

    __slots__ = ()


#: Parameter type code -> class, for every parameter this implementation understands.
PARAM_TYPES: dict[int, type[KnownParam]] = {}
_P = TypeVar("_P", bound=KnownParam)


@dataclass_transform(frozen_default=True)
def _param(code: int) -> Callable[[type[_P]], type[_P]]:
    """Declare the class of parameter type ``code``: a frozen dataclass in :data:`PARAM_TYPES`."""
    return declare(PARAM_TYPES, code, frozen=True)


def _ipv4(view: memoryview, what: str) -> IPv4Address:
    need(view, 4, what)
    return IPv4Address(bytes(view))


def _ipv6(view: memoryview, what: str) -> IPv6Address:
    need(view, 16, what)
    return IPv6Address(bytes(view))


@_param(1)
class HeartbeatInfo(KnownParam):
    """Heartbeat Info (RFC 9260, Section 3.3.5): opaque to the receiver, echoed back."""

    LAYOUT = Layout(tail=BYTES)
    info: bytes


@_param(5)
class IPv4AddressParam(KnownParam):
    """IPv4 Address (RFC 9260, Section 3.3.2.1.1): four address bytes."""

    LAYOUT = Layout(tail=Tail(_ipv4, lambda address: address.packed))
    address: IPv4Address


@_param(6)
class IPv6AddressParam(KnownParam):
    """IPv6 Address (RFC 9260, Section 3.3.2.1.2): sixteen address bytes."""

    LAYOUT = Layout(tail=Tail(_ipv6, lambda address: address.packed))
    address: IPv6Address


@_param(7)
class StateCookieParam(KnownParam):
    """State Cookie (RFC 9260, Section 3.3.3.1): opaque, authenticated by its creator."""

    LAYOUT = Layout(tail=BYTES)
    cookie: bytes


@_param(8)
class UnrecognizedParam(KnownParam):
    """Unrecognized Parameter (RFC 9260, Section 3.3.3.1): wraps a whole TLV we skipped."""

    LAYOUT = Layout(tail=BYTES)
    param: bytes


@_param(9)
class CookiePreservative(KnownParam):
    """Cookie Preservative (RFC 9260, Section 3.3.2.1.3): ask for a longer cookie life."""

    LAYOUT = Layout("I")
    #: Suggested Cookie Life-Span Increment, in milliseconds.
    increment_ms: int


@_param(11)
class HostNameAddressParam(KnownParam):
    """Host Name Address (RFC 9260, Section 3.3.2.1.4): deprecated, never resolved.

    The NUL-terminated name is kept verbatim.
    """

    LAYOUT = Layout(tail=BYTES)
    host_name: bytes


@_param(12)
class SupportedAddressTypes(KnownParam):
    """Supported Address Types (RFC 9260, Section 3.3.2.1.5): 5 for IPv4, 6 for IPv6."""

    LAYOUT = Layout(tail=U16S)
    address_types: tuple[int, ...]


@_param(0x8008)
class SupportedExtensions(KnownParam):
    """Supported Extensions (RFC 5061, Section 4.2.7): chunk types beyond RFC 9260.

    We announce RE-CONFIG (0x82, RFC 6525) here; a peer must list it too before either
    side sends one.
    """

    LAYOUT = Layout(tail=U8S)
    chunk_types: tuple[int, ...]


@_param(0xC000)
class ForwardTSNSupported(KnownParam):
    """Forward-TSN-Supported (RFC 3758, Section 3.1); we never send FORWARD TSN."""

    LAYOUT = Layout(lenient=True)


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


@_param(13)
class OutgoingSSNResetRequest(KnownParam):
    """Outgoing SSN Reset Request (RFC 6525, Section 4.1).

    "I reset my outgoing streams ``streams`` (all of them if empty) after TSN
    ``last_tsn``."
    """

    LAYOUT = Layout("III", U16S)
    request_seq: int
    response_seq: int
    last_tsn: int
    streams: tuple[int, ...] = ()


@_param(14)
class IncomingSSNResetRequest(KnownParam):
    """Incoming SSN Reset Request (RFC 6525, Section 4.2): "please reset yours"."""

    LAYOUT = Layout("I", U16S)
    request_seq: int
    streams: tuple[int, ...] = ()


@_param(15)
class SSNTSNResetRequest(KnownParam):
    """SSN/TSN Reset Request (RFC 6525, Section 4.3); we always deny it."""

    LAYOUT = Layout("I")
    request_seq: int


@_param(16)
class ReconfigResponse(KnownParam):
    """Re-configuration Response (RFC 6525, Section 4.4)."""

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

    LAYOUT = Layout("IH2x")  # sequence number, stream count, two reserved bytes
    request_seq: int
    new_streams: int


@_param(17)
class AddOutgoingStreamsRequest(_AddStreamsRequest):
    """Add Outgoing Streams Request (RFC 6525, Section 4.5); we always deny it."""


@_param(18)
class AddIncomingStreamsRequest(_AddStreamsRequest):
    """Add Incoming Streams Request (RFC 6525, Section 4.6); we always deny it."""


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
    return only(parse_params(data), "parameter")


def unknown_param_action(param_type: int) -> tuple[bool, bool]:
    """What to do with a parameter of unknown type: ``(keep_processing, report)``.

    RFC 9260, Section 3.2.1, the two highest bits of the type:
    00 stop processing the chunk's parameters, do not report; 01 stop and report;
    10 skip this parameter and continue, do not report; 11 skip, continue, and report.
    """
    return bool(param_type & 0x8000), bool(param_type & 0x4000)
