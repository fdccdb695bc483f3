"""Type-length-value helpers shared by parameters and error causes.

RFC 9260, Section 3.2.1: a parameter (and, with the same layout, an error cause of
Section 3.3.10) is a 16-bit type, a 16-bit length that counts the 4-byte header and the
value but not the padding, and the value, padded with zero bytes to a multiple of 4.
The padding of the *last* TLV in a chunk may be missing (the chunk length does not count
it), so readers accept a short tail.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from ._errors import ParseError

_TL = struct.Struct("!HH")
#: Zero bytes to pad anything to a multiple of four, indexed by ``-len % 4``.
PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


def pad4(n: int) -> int:
    """Return ``n`` rounded up to a multiple of 4."""
    return (n + 3) & ~3


def tlv(type_: int, value: bytes) -> bytes:
    """Serialise one TLV, padded to a multiple of 4 bytes."""
    return _TL.pack(type_, 4 + len(value)) + value + PADDING[-len(value) % 4]


def iter_tlvs(buf: bytes | memoryview, what: str) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(type, value)`` for each TLV in ``buf``.

    Each iteration consumes at least 4 bytes, so a hostile length can neither loop
    forever nor make us allocate: values are views into ``buf``.

    Raises:
        ParseError: a TLV header is truncated, its length is below 4, or it runs past
            the end of ``buf``.
    """
    view = memoryview(buf)
    end = len(view)
    offset = 0
    while offset < end:
        if end - offset < 4:
            raise ParseError(f"truncated {what} header")
        type_, length = _TL.unpack_from(view, offset)
        if length < 4 or offset + length > end:
            raise ParseError(f"{what} type {type_} has a bad length {length}")
        yield type_, view[offset + 4 : offset + length]
        offset += pad4(length)


def need(value: bytes | memoryview, size: int, what: str) -> None:
    """Raise :class:`ParseError` unless ``value`` is exactly ``size`` bytes long."""
    if len(value) != size:
        raise ParseError(f"{what}: expected {size} bytes, got {len(value)}")


def need_at_least(value: bytes | memoryview, size: int, what: str) -> None:
    """Raise :class:`ParseError` if ``value`` is shorter than ``size`` bytes."""
    if len(value) < size:
        raise ParseError(f"{what}: expected at least {size} bytes, got {len(value)}")
