"""Type-length-value helpers shared by parameters and error causes.

RFC 9260, Section 3.2.1: a parameter (and, with the same layout, an error cause of
Section 3.3.10) is a 16-bit type, a 16-bit length that counts the 4-byte header and the
value but not the padding, and the value, padded with zero bytes to a multiple of 4.
The padding of the *last* TLV in a chunk may be missing (the chunk length does not count
it), so readers accept a short tail.

:class:`Tlv` and :class:`KnownTlv` are the shared shape of both: a ``code``, a
``value()`` and ``__bytes__``, and a ``parse_value()`` for the codes we implement;
:func:`parse_tlvs` turns an area of them into objects through a code -> class table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import ClassVar, Self, TypeVar

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


def join_tlvs(items: Iterable[Tlv]) -> bytes:
    """Serialise parameters or error causes back to back, each padded."""
    return b"".join(bytes(item) for item in items)


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


class Tlv:
    """Base class of every parameter and error cause (known or not)."""

    __slots__ = ()

    @property
    def code(self) -> int:
        """The 16-bit parameter type or cause code."""
        raise NotImplementedError

    def value(self) -> bytes:
        """The value, without header or padding."""
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        return tlv(self.code, self.value())


class KnownTlv(Tlv):
    """A parameter or error cause this implementation understands."""

    __slots__ = ()
    #: The type or cause code (RFC 9260 Sections 3.3.2.1 and 3.3.10, RFC 5061, RFC 6525).
    CODE: ClassVar[int]

    @property
    def code(self) -> int:
        """The 16-bit parameter type or cause code."""
        return self.CODE

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Build the object from its value bytes.

        Raises:
            ParseError: the value does not have the layout of this type.
        """
        raise NotImplementedError


_Known = TypeVar("_Known", bound=KnownTlv)
_Unknown = TypeVar("_Unknown", bound=Tlv)


def parse_tlvs(
    buf: bytes | memoryview,
    known: Mapping[int, type[_Known]],
    unknown: Callable[[int, bytes], _Unknown],
    what: str,
) -> Iterator[_Known | _Unknown]:
    """Yield each TLV of ``buf`` parsed by its class in ``known``, else by ``unknown``.

    Args:
        buf: the TLV area of a chunk.
        known: code -> class, for the codes we implement.
        unknown: builds the verbatim keeper of a code we do not implement from the code
            and a copy of the value.
        what: the kind of TLV, for error messages.

    Raises:
        ParseError: a TLV is truncated or a known one's value is malformed.
    """
    for code, value in iter_tlvs(buf, what):
        cls = known.get(code)
        yield unknown(code, bytes(value)) if cls is None else cls.parse_value(value)
