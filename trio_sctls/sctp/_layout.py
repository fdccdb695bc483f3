"""Declaring wire structures: how their value bytes map to fields, and their code tables.

Most chunks, parameters and error causes (RFC 9260, Sections 3.3, 3.2.1 and 3.3.10) are
a few fixed-size integers, sometimes followed by one variable part: opaque bytes, a list
of 16-bit numbers, nested parameters. Rather than each class hand-writing the same
unpack/pack pair, a class declares that shape once as a :class:`Layout` over its
dataclass fields, in declaration order, and inherits ``value()`` (here, in
:class:`LaidOut`) and ``parse_value()`` (in its kind's base) that apply it. Structures
no layout describes (DATA and SACK, written by hand for speed; counted lists; optional
trailing fields) keep their own code.

:func:`declare` is the class decorator behind ``@_cause(3)``, ``@_param(9)`` and
``@_chunk(7)``: it makes the class a slotted dataclass, gives it its code, and files it in
its kind's code -> class table, so a code is written once, next to its class.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._errors import ParseError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T")


def need(value: bytes | memoryview, size: int, what: str) -> None:
    """Raise :class:`ParseError` unless ``value`` is exactly ``size`` bytes long."""
    if len(value) != size:
        raise ParseError(f"{what}: expected {size} bytes, got {len(value)}")


def need_at_least(value: bytes | memoryview, size: int, what: str) -> None:
    """Raise :class:`ParseError` if ``value`` is shorter than ``size`` bytes."""
    if len(value) < size:
        raise ParseError(f"{what}: expected at least {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class Tail(Generic[_T]):
    """The variable part of a value after its fixed fields: one more field, of type ``_T``."""

    #: Reads the field from the rest of the value; ``what`` names the structure in errors.
    #: Raises :class:`ParseError` if the rest is malformed.
    parse: Callable[[memoryview, str], _T]
    #: Writes the field back.
    pack: Callable[[_T], bytes]


def _u16s(view: memoryview, what: str) -> tuple[int, ...]:
    if len(view) % 2:
        raise ParseError(f"{what}: odd length list of 16-bit numbers")
    return struct.unpack(f"!{len(view) // 2}H", view)


def _u16_pairs(view: memoryview, what: str) -> tuple[tuple[int, int], ...]:
    if len(view) % 4:
        raise ParseError(f"{what}: ragged list of 16-bit pairs")
    flat = _u16s(view, what)
    return tuple(zip(flat[0::2], flat[1::2], strict=True))


#: The rest as opaque bytes (cookies, heartbeat info, a wrapped TLV, a reason).
BYTES: Tail[bytes] = Tail(lambda view, what: bytes(view), bytes)
#: The rest as one number per byte (chunk types).
U8S: Tail[tuple[int, ...]] = Tail(lambda view, what: tuple(view), bytes)
#: The rest as 16-bit numbers (stream ids, parameter types).
U16S: Tail[tuple[int, ...]] = Tail(_u16s, lambda xs: struct.pack(f"!{len(xs)}H", *xs))
#: The rest as pairs of 16-bit numbers (FORWARD TSN's stream and SSN).
U16_PAIRS: Tail[tuple[tuple[int, int], ...]] = Tail(
    _u16_pairs, lambda pairs: U16S.pack(tuple(x for pair in pairs for x in pair))
)


class Layout:
    """A value as fixed fields in a :mod:`struct` format, then optionally a :class:`Tail`.

    The fields are the dataclass's first ones, in order: one per item of the format
    (network byte order; pad bytes ``x`` are reserved: written as zero, ignored when
    read), then one for the tail. Without a tail the value must be exactly the fixed
    size, unless ``lenient``: then anything after it is ignored, which is how RFC 9260
    asks us to treat bodies it defines as empty.

    Args:
        fmt: the fixed fields, in :mod:`struct` notation without the byte order.
        tail: what follows them, if anything.
        lenient: accept and ignore bytes after the fixed fields (only without a tail).
    """

    __slots__ = ("_count", "_fixed", "_lenient", "_tail")

    def __init__(self, fmt: str = "", tail: Tail[Any] | None = None, *, lenient: bool = False):
        self._fixed = struct.Struct("!" + fmt)
        self._tail = tail
        self._lenient = lenient
        items = len(self._fixed.unpack(bytes(self._fixed.size)))
        self._count = items + (tail is not None)

    def unpack(self, value: memoryview, what: str) -> tuple[Any, ...]:
        """The field values read from ``value``, in order.

        Raises:
            ParseError: ``value`` is too short, too long, or its tail is malformed;
                ``what`` names the structure in the message.
        """
        size = self._fixed.size
        if self._tail is None and not self._lenient:
            need(value, size, what)
        else:
            need_at_least(value, size, what)
        fixed = self._fixed.unpack_from(value)
        if self._tail is None:
            return fixed
        return (*fixed, self._tail.parse(value[size:], what))

    def pack(self, obj: DataclassInstance) -> bytes:
        """The value bytes of ``obj``'s first fields."""
        values = [getattr(obj, f.name) for f in fields(obj)[: self._count]]
        if self._tail is None:
            return self._fixed.pack(*values)
        return self._fixed.pack(*values[:-1]) + self._tail.pack(values[-1])


class LaidOut:
    """A structure this implementation understands: a code, and (usually) a layout."""

    __slots__ = ()
    #: The chunk type, parameter type or cause code, set by :func:`declare`.
    CODE: ClassVar[int]
    #: The value's layout; classes that read and write their value by hand leave it unset.
    LAYOUT: ClassVar[Layout]

    @property
    def code(self) -> int:
        """The chunk type, parameter type or cause code."""
        return self.CODE

    def value(self) -> bytes:
        """The value, without header or padding."""
        return self.LAYOUT.pack(self)  # type: ignore[arg-type]  # every subclass is a dataclass


_Declared = TypeVar("_Declared", bound=LaidOut)


def declare(
    table: dict[int, Any], code: int, *, frozen: bool
) -> Callable[[type[_Declared]], type[_Declared]]:
    """A class decorator: the class becomes a slotted dataclass with ``CODE = code``,
    filed in ``table``.

    Raises:
        ValueError: (at import) ``code`` is already in ``table``.
    """

    def apply(cls: type[_Declared]) -> type[_Declared]:
        if code in table:
            raise ValueError(f"{cls.__name__}: code {code} is already {table[code].__name__}")
        cls.CODE = code
        table[code] = made = dataclass(frozen=frozen, slots=True)(cls)
        return made

    return apply
