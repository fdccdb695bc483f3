"""Type-length-value helpers shared by parameters and error causes.

RFC 9260, Section 3.2.1: a parameter (and, with the same layout, an error cause of
Section 3.3.10) is a 16-bit type, a 16-bit length that counts the 4-byte header and the
value but not the padding, and the value, padded with zero bytes to a multiple of 4.
The padding of the *last* TLV in a chunk is chunk padding (the chunk length does not
count it): :func:`join_tlvs` writes it so, and readers accept the last TLV's padding
inside the chunk length or outside it, since other stacks (and our own older versions)
send either.

:class:`Tlv` and :class:`KnownTlv` are the shared shape of both: a ``code``, a
``value()`` and ``__bytes__``, and for the codes we implement a ``parse_value()`` (by
default through the class's :class:`~._layout.Layout`);
:func:`parse_tlvs` turns an area of them into objects through a code -> class table.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self, TypeVar

from ._errors import ParseError
from ._layout import LaidOut

_TL = struct.Struct("!HH")
_Item = TypeVar("_Item")
#: Zero bytes to pad anything to a multiple of four, indexed by ``-len % 4``.
PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


def pad4(n: int) -> int:
    """Return ``n`` rounded up to a multiple of 4."""
    return (n + 3) & ~3


def tlv(type_: int, value: bytes) -> bytes:
    """Serialise one TLV, padded to a multiple of 4 bytes."""
    return _TL.pack(type_, 4 + len(value)) + value + PADDING[-len(value) % 4]


def join_tlvs(items: Sequence[Tlv]) -> bytes:
    """Serialise the parameters or error causes that end a chunk, back to back.

    Each is padded but the last: RFC 9260, Section 3.2, the chunk length counts the
    padding of every parameter except the last, whose padding is the chunk's own (added
    after the length, as for any chunk).
    """
    if not items:
        return b""
    last = items[-1]
    value = last.value()
    head = b"".join(bytes(item) for item in items[:-1])
    return head + _TL.pack(last.code, 4 + len(value)) + value


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


@dataclass(frozen=True, slots=True)
class UnknownTlv(Tlv):
    """A parameter or error cause whose code we do not implement, kept verbatim."""

    # field(), not a bare annotation: the dataclass would take the base's ``code``
    # property for this field's default.
    code: int = field()
    raw: bytes

    def value(self) -> bytes:
        """The value exactly as received."""
        return self.raw


class KnownTlv(LaidOut, Tlv):
    """A parameter or error cause this implementation understands."""

    __slots__ = ()

    @classmethod
    def parse_value(cls, value: memoryview) -> Self:
        """Build the object from its value bytes, by its :attr:`LAYOUT`.

        Raises:
            ParseError: the value does not have the layout of this type.
        """
        return cls(*cls.LAYOUT.unpack(value, cls.__name__))


def only(items: Sequence[_Item], what: str) -> _Item:
    """The one item of ``items``: a chunk or TLV area that must hold exactly one.

    Raises:
        ParseError: there are none, or more than one.
    """
    if len(items) != 1:
        raise ParseError(f"expected one {what}, found {len(items)}")
    return items[0]


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
