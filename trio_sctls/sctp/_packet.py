"""SCTP packets: the common header and the CRC32c checksum (RFC 9260, Sections 3.1, 6.8).

Over UDP (RFC 6951) an SCTP packet is exactly one UDP payload; the SCTP checksum is
still computed and checked (Section 5 of RFC 6951), the UDP one is the kernel's
business.

The checksum is CRC32c (Castagnoli) over the whole packet with the checksum field set
to zero, stored in the field *least significant byte first*: RFC 9260, Appendix A works
on reflected bit order, which comes out as the little-endian encoding of the usual
CRC32c value (the one the C-backed ``crc32c`` package returns). The tests check this
against packets captured from Linux.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from crc32c import crc32c

from . import _auth_wire  # noqa: F401  (files the SCTP-AUTH chunk, parameters, cause)
from ._chunks import Chunk, parse_chunks
from ._errors import ParseError

_COMMON = struct.Struct("!HHI")
_CRC = struct.Struct("<I")
_ZERO4 = b"\0\0\0\0"
#: Size of the common header (Section 3.1).
COMMON_HEADER_SIZE = 12


class ChecksumError(ParseError):
    """The packet's CRC32c does not match its contents (Section 6.8: discard it)."""


def compute_checksum(data: bytes | bytearray | memoryview) -> int:
    """The CRC32c of ``data`` as if its checksum field (bytes 8..11) were zero."""
    view = memoryview(data)
    return crc32c(view[12:], crc32c(_ZERO4, crc32c(view[:8])))


def verify_checksum(data: bytes | bytearray | memoryview) -> bool:
    """Whether the checksum field of ``data`` matches its contents."""
    if len(data) < COMMON_HEADER_SIZE:
        return False
    (stored,) = _CRC.unpack_from(data, 8)
    return bool(stored == compute_checksum(data))


def finish_packet(buf: bytearray) -> bytes:
    """Write the checksum of a packet assembled in ``buf`` (field zero) and return it."""
    _CRC.pack_into(buf, 8, crc32c(buf))
    return bytes(buf)


def packet_header(source_port: int, destination_port: int, verification_tag: int) -> bytes:
    """The 12-byte common header with a zero checksum field."""
    return _COMMON.pack(source_port, destination_port, verification_tag) + _ZERO4


def peek_header(data: bytes | memoryview) -> tuple[int, int, int]:
    """``(source_port, destination_port, verification_tag)`` of a raw packet.

    Raises:
        ParseError: shorter than a common header.
    """
    if len(data) < COMMON_HEADER_SIZE:
        raise ParseError("packet shorter than the SCTP common header")
    src, dst, tag = _COMMON.unpack_from(data)
    return src, dst, tag


@dataclass(slots=True)
class Packet:
    """One SCTP packet: common header plus chunks."""

    source_port: int
    destination_port: int
    verification_tag: int
    chunks: list[Chunk] = field(default_factory=list)
    #: The bytes it was parsed from (SCTP-AUTH checks its HMAC over them), or empty.
    raw: bytes | bytearray | memoryview = field(default=b"", repr=False, compare=False)

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, *, check: bool = True) -> Packet:
        """Parse a packet, checking its CRC32c unless ``check`` is false.

        Raises:
            ChecksumError: the checksum is wrong.
            ParseError: the packet is truncated or a chunk is malformed.
        """
        # On every packet received: the header checks inlined.
        view = memoryview(data)
        if len(view) < COMMON_HEADER_SIZE:
            raise ParseError("packet shorter than the SCTP common header")
        src, dst, tag = _COMMON.unpack_from(view)
        if check and _CRC.unpack_from(view, 8)[0] != compute_checksum(view):
            raise ChecksumError("bad CRC32c")
        return cls(src, dst, tag, parse_chunks(view[COMMON_HEADER_SIZE:]), data)

    def __bytes__(self) -> bytes:
        buf = bytearray(
            packet_header(self.source_port, self.destination_port, self.verification_tag)
        )
        for chunk in self.chunks:
            buf += bytes(chunk)
        return finish_packet(buf)
