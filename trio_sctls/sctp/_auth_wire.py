"""The wire structures of SCTP-AUTH (RFC 4895): three parameters, a chunk, an error cause.

RANDOM, CHUNKS and HMAC-ALGO travel in INIT and INIT ACK (Section 3) and together form
each side's *key vector*; the AUTH chunk (Section 4.2) carries a shared key identifier,
an HMAC identifier and the HMAC itself; the Unsupported HMAC Identifier cause (Section
4.1) answers an AUTH chunk whose HMAC we did not offer. Declaring them here files them
in the chunk, parameter and cause tables, so the generic parsers know them; what they
mean for an association is :mod:`._auth`'s business.
"""

from __future__ import annotations

from ._causes import KnownCause, _cause
from ._chunks import KnownChunk, _chunk
from ._layout import BYTES, U8S, U16S, Layout
from ._params import KnownParam, _param

#: The chunk type of AUTH, as listed in Supported Extensions (RFC 5061).
AUTH_CHUNK_TYPE = 0x0F


@_param(0x8002)
class RandomParam(KnownParam):
    """RANDOM (RFC 4895, Section 3.1): this side's random number for the key vector."""

    LAYOUT = Layout(tail=BYTES)
    random: bytes


@_param(0x8003)
class ChunkListParam(KnownParam):
    """CHUNKS (RFC 4895, Section 3.2): the chunk types the sender wants authenticated."""

    LAYOUT = Layout(tail=U8S)
    chunk_types: tuple[int, ...]


@_param(0x8004)
class HmacAlgoParam(KnownParam):
    """HMAC-ALGO (RFC 4895, Section 3.3): the HMAC identifiers the sender accepts, most
    preferred first."""

    LAYOUT = Layout(tail=U16S)
    hmac_ids: tuple[int, ...]


@_chunk(AUTH_CHUNK_TYPE)
class AuthChunk(KnownChunk):
    """AUTH (RFC 4895, Section 4.2): authenticates the chunks placed after it."""

    LAYOUT = Layout("HH", BYTES)
    key_id: int
    hmac_id: int
    hmac: bytes


@_cause(0x0105)
class UnsupportedHmacIdentifier(KnownCause):
    """Unsupported HMAC Identifier (RFC 4895, Section 4.1): an AUTH chunk used an HMAC
    we did not offer. Its length is 6; the two bytes of padding after it are ignored."""

    LAYOUT = Layout("H", lenient=True)
    hmac_id: int

    def describe(self) -> str:
        """Name the identifier."""
        return f"unsupported HMAC identifier {self.hmac_id}"
