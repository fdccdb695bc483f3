"""DTLS 1.2 record framing (RFC 6347 section 4.1), as RFC 6083 maps it onto SCTP.

RFC 6083 section 4.2 carries each DTLS record as one SCTP user message, so the layer
above SCTP must cut what OpenSSL writes at record boundaries (OpenSSL writes several
records at once into a memory BIO) and must check that each message it receives is
exactly one record. The 13-byte record header is sent in the clear and tells both the
content type (which decides the stream: handshake, alert and ChangeCipherSpec records
go on stream 0, section 4.4) and the epoch (which tells which key protects it). This
module is pure: bytes in, headers and slices out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: DTLSPlaintext header: type (1), version (2), epoch (2), sequence_number (6), length (2).
HEADER_SIZE = 13
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
#: The record types RFC 6083 section 4.4 sends on stream 0, ordered.
CONTROL_TYPES = frozenset((CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE))
KNOWN_TYPES = CONTROL_TYPES | {APPLICATION_DATA}

#: The most plaintext one record carries (RFC 6347 section 4.1, TLS 1.2's 2**14), hence
#: the largest user message DTLS over SCTP can carry (RFC 6083 section 4.2).
MAX_PLAINTEXT = 2**14
#: The longest record payload a peer may send: compressed and protected plaintext may
#: grow by up to 2048 bytes (RFC 5246 section 6.2.3).
MAX_RECORD_PAYLOAD = MAX_PLAINTEXT + 2048
MAX_RECORD = HEADER_SIZE + MAX_RECORD_PAYLOAD

_HEADER = struct.Struct("!BHH6sH")


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The clear-text header of one DTLS record."""

    content_type: int
    version: int
    epoch: int
    sequence: int
    length: int

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RecordHeader:
        """Parse the header at the start of ``data``.

        Raises:
            ValueError: fewer than 13 bytes.
        """
        if len(data) < HEADER_SIZE:
            raise ValueError(f"a DTLS record header is {HEADER_SIZE} bytes, got {len(data)}")
        content_type, version, epoch, sequence, length = _HEADER.unpack_from(data)
        return cls(content_type, version, epoch, int.from_bytes(sequence, "big"), length)


def split_records(data: bytes) -> list[tuple[RecordHeader, bytes]]:
    """Cut what OpenSSL wrote into its records, each with its header.

    Raises:
        ValueError: ``data`` ends inside a record (never the case for OpenSSL's own
            output, which is written whole).
    """
    records: list[tuple[RecordHeader, bytes]] = []
    offset = 0
    view = memoryview(data)
    while offset < len(data):
        header = RecordHeader.parse(view[offset:])
        end = offset + HEADER_SIZE + header.length
        if end > len(data):
            raise ValueError("DTLS output ends inside a record")
        records.append((header, bytes(view[offset:end])))
        offset = end
    return records


def parse_message(data: bytes) -> RecordHeader:
    """The header of the one record a received user message must be.

    Raises:
        ValueError: the message is not exactly one DTLS record of a known type and a
            plausible size (the reason says which).
    """
    if len(data) > MAX_RECORD:
        raise ValueError(
            f"message of {len(data)} bytes is larger than the largest DTLS record ({MAX_RECORD})"
        )
    header = RecordHeader.parse(data)
    if header.content_type not in KNOWN_TYPES:
        raise ValueError(f"unknown DTLS record type {header.content_type}")
    if HEADER_SIZE + header.length != len(data):
        raise ValueError(
            f"message of {len(data)} bytes is not one DTLS record "
            f"(its header says {HEADER_SIZE + header.length})"
        )
    return header
