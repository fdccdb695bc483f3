"""DTLS over SCTP (RFC 6083) with SCTP-AUTH (RFC 4895) checked on the wire, not assumed.

On the udp transport a relay between client and server records every datagram; each is
parsed with our parser and, independently, byte by byte: every packet with DATA has an
AUTH chunk before its first DATA chunk, whose HMAC verifies under the association
shared key computed here the RFC 4895 section 6.1 way from the INIT / INIT ACK
parameters and the DTLS exporter secrets; the DATA carries DTLS 1.2 records (version
0xFEFD) and the handshake's records ride on stream 0 only. A DATA byte flipped in flight
is dropped by the receiver (counted) and the original still arrives.

In the VM (``-m kernel``): the same between two kernel-transport endpoints, seen with a
packet socket on ``lo``; and DTLS over SCTP between our kernel transport and our udp
transport through Linux's SCTP over UDP (RFC 6951), both directions.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from OpenSSL import SSL

from trio_sctls.dtls import (
    DTLSAssociation,
    DTLSListener,
    create_dtls_context,
    open_dtls_association,
    serve_dtls,
)
from trio_sctls.impaired import Direction, impaired_link
from trio_sctls.sctp import Packet
from trio_sctls.sctp._auth import AssociationAuth
from trio_sctls.sctp._auth_wire import AuthChunk
from trio_sctls.sctp._chunks import DataChunk
from trio_sctls.sctp._packet import finish_packet

from .conftest import SERVER_NAME
from .sctp.kernel_udp import kernel_auth_enabled
from .test_dtls import pems
from .test_dtls_transports import echo
from .test_udp_interop import DIRECTIONS, kernel_udp, transports

__all__ = ["kernel_udp", "pems"]  # the fixtures, re-used

AUTH, DATA, INIT, INIT_ACK = 0x0F, 0x00, 0x01, 0x02
RANDOM, CHUNKS, HMAC_ALGO = 0x8002, 0x8003, 0x8004
#: HMAC identifiers of RFC 4895 section 4.2 (SHA-1 and SHA-256).
HASHES = {1: hashlib.sha1, 3: hashlib.sha256}
#: DTLS content types: ChangeCipherSpec, Alert, Handshake, ApplicationData.
CCS, ALERT, HANDSHAKE, APPLICATION = 20, 21, 22, 23
DTLS_1_2, DTLS_1_0 = 0xFEFD, 0xFEFF
STREAMS = 4
ETH_P_ALL = 0x0003


def chunks_of(packet: bytes) -> Iterator[tuple[int, int, bytes]]:
    """``(type, offset, chunk)`` of each chunk of an SCTP packet, read from the bytes."""
    offset = 12
    while offset + 4 <= len(packet):
        kind, _flags, length = struct.unpack_from("!BBH", packet, offset)
        yield kind, offset, packet[offset : offset + length]
        offset += max(4, (length + 3) & ~3)


def key_vector(init: bytes) -> bytes:
    """RANDOM, CHUNKS and HMAC-ALGO of an INIT or INIT ACK chunk, unpadded, in that
    order (RFC 4895 section 6.1)."""
    found: dict[int, bytes] = {}
    offset = 20  # chunk header and the fixed fields
    while offset + 4 <= len(init):
        kind, length = struct.unpack_from("!HH", init, offset)
        found[kind] = init[offset : offset + length]
        offset += (length + 3) & ~3
    return found[RANDOM] + found[CHUNKS] + found[HMAC_ALGO]


def association_key(shared: bytes, one: bytes, other: bytes) -> bytes:
    """The association shared key: the endpoint-pair key, then the numerically smaller
    key vector, then the larger (RFC 4895 section 6.1)."""
    low, high = sorted((one, other), key=lambda v: int.from_bytes(v, "big"))
    return shared + low + high


def hmac_verifies(packet: bytes, offset: int, auth: bytes, keys: dict[int, bytes]) -> bool:
    """Whether the AUTH chunk at ``offset`` of ``packet`` carries the right HMAC: over
    the AUTH chunk (its HMAC zeroed) and everything after it (RFC 4895 section 6.2)."""
    key_id, hmac_id = struct.unpack_from("!HH", auth, 4)
    digest = hmac.new(
        keys[key_id],
        packet[offset : offset + 8] + bytes(len(auth) - 8) + packet[offset + len(auth) :],
        HASHES[hmac_id],
    ).digest()
    return hmac.compare_digest(digest, auth[8:])


def dtls_records(data: bytes) -> list[int]:
    """The content types of the DTLS records in a user message, each header checked:
    version 1.2 (1.0 allowed for a hello in the clear), the lengths covering the message
    exactly."""
    types, offset = [], 0
    while offset < len(data):
        kind, version, epoch, length = struct.unpack_from("!BHH6xH", data, offset)
        assert kind in (CCS, ALERT, HANDSHAKE, APPLICATION), kind
        # A hello in the clear may carry DTLS 1.0's record version (RFC 6347 4.1).
        hello = kind == HANDSHAKE and epoch == 0 and version == DTLS_1_0
        assert version == DTLS_1_2 or hello, hex(version)
        offset += 13 + length
        types.append(kind)
    assert offset == len(data)
    return types


def check_capture(
    packets: Sequence[bytes], secrets: Sequence[bytes], *, checksum: bool = True
) -> list[int]:
    """Check every captured SCTP packet (see the module docstring); ``secrets`` are the
    endpoint-pair keys 1, 2, ... in the order the DTLS handshakes exported them;
    ``checksum`` says whether the CRC32c is filled in. Returns the streams that carried
    application data."""
    inits = [c for p in packets for kind, _, c in chunks_of(p) if kind in (INIT, INIT_ACK)]
    vectors = [key_vector(chunk) for chunk in inits[:2]]
    keys = {0: association_key(b"", *vectors)}
    keys |= {n: association_key(s, *vectors) for n, s in enumerate(secrets, 1)}
    signed = 0
    streams: list[int] = []
    partial: dict[tuple[int, int, int], bytes] = {}
    seen: set[tuple[int, int]] = set()  # (tag, TSN): a retransmission is checked once
    for packet in packets:
        ours = Packet.parse(packet, check=checksum)  # our parser agrees
        kinds = [kind for kind, _, _ in chunks_of(packet)]
        assert [chunk.code for chunk in ours.chunks] == kinds
        if DATA not in kinds:
            continue
        assert AUTH in kinds and kinds.index(AUTH) < kinds.index(DATA), kinds
        _, offset, auth = next(c for c in chunks_of(packet) if c[0] == AUTH)
        (parsed,) = (chunk for chunk in ours.chunks if isinstance(chunk, AuthChunk))
        assert parsed.key_id == struct.unpack_from("!H", auth, 4)[0]
        signed += hmac_verifies(packet, offset, auth, keys)
        for chunk in ours.chunks:
            if not isinstance(chunk, DataChunk) or (ours.verification_tag, chunk.tsn) in seen:
                continue
            seen.add((ours.verification_tag, chunk.tsn))
            key = (ours.verification_tag, chunk.stream_id, chunk.ssn)
            data = (b"" if chunk.beginning else partial.pop(key)) + chunk.user_data
            if not chunk.end:
                partial[key] = data
            else:
                records = dtls_records(data)
                if set(records) != {APPLICATION}:
                    assert chunk.stream_id == 0 and not chunk.unordered, records
                else:
                    streams.append(chunk.stream_id)
    assert not partial
    # Every packet sent verifies (a Finished the peer dropped for want of the key too).
    data_packets = sum(DATA in [k for k, _, _ in chunks_of(p)] for p in packets)
    assert data_packets >= 8 and signed == data_packets, (signed, data_packets)
    return streams


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The DTLS exporter secrets, in the order the handshakes export them."""
    secrets: list[bytes] = []
    original = SSL.Connection.export_keying_material

    def recording(self: SSL.Connection, label: bytes, olen: int, context: Any = None) -> bytes:
        secret: bytes = original(self, label, olen, context)
        if secret not in secrets:  # both ends export the same secret
            secrets.append(secret)
        return secret

    monkeypatch.setattr(SSL.Connection, "export_keying_material", recording)
    return secrets


async def talk(association: DTLSAssociation) -> None:
    """A message on each stream with its own PPID, echoed with stream and PPID intact."""
    for stream in range(STREAMS):
        await association.send_message(b"to %d" % stream * 50, stream=stream, ppid=40 + stream)
    replies = [await association.receive() for _ in range(STREAMS)]
    assert sorted((r.stream, r.ppid, r.data) for r in replies) == [
        (s, 40 + s, b"to %d" % s * 50) for s in range(STREAMS)
    ]


async def start(nursery: trio.Nursery, pems: dict[str, Path], **keywords: Any) -> DTLSListener:
    """An echoing DTLS server on 127.0.0.1 with ``keywords`` for its transport."""
    context = create_dtls_context(server_side=True, certfile=pems["server"])
    serve = partial(serve_dtls, echo, 0, ssl_context=context, host="127.0.0.1", auth=True)
    listener: DTLSListener = await nursery.start(partial(serve, **keywords))
    return listener


def connect(
    port: int, pems: dict[str, Path], **keywords: Any
) -> AbstractAsyncContextManager[DTLSAssociation]:
    """A DTLS client of ``port`` on 127.0.0.1 that checks the server's name."""
    return open_dtls_association(
        "127.0.0.1",
        port,
        ssl_context=create_dtls_context(cafile=pems["ca"]),
        server_hostname=SERVER_NAME,
        auth=True,
        **keywords,
    )


def flip_user_data(datagram: bytes) -> bytes | None:
    """The packet with the last user data byte of its first DATA chunk flipped and the
    CRC32c made right again (the HMAC left alone), or None unless that chunk starts an
    application data record (sent under a key both ends hold by then)."""
    for kind, offset, chunk in chunks_of(datagram):
        if kind == DATA:
            if chunk[16] != APPLICATION:
                return None
            tampered = bytearray(datagram)
            tampered[offset + len(chunk) - 1] ^= 0xFF
            tampered[8:12] = bytes(4)
            return bytes(finish_packet(tampered))
    return None


async def test_udp_datagrams_carry_authenticated_dtls_records(
    pems: dict[str, Path], exported: list[bytes], nursery: trio.Nursery
) -> None:
    captured: list[bytes] = []
    tampered: list[int] = []

    def hook(direction: Direction, index: int, datagram: bytes) -> Sequence[bytes] | None:
        captured.append(datagram)
        if direction == "to_client" and not tampered:
            bad = flip_user_data(datagram)
            if bad is not None:
                tampered.append(index)
                return [bad, datagram]  # the forgery first, then the original
        return None

    listener = await start(nursery, pems, transport="udp", udp_port=0)
    assert listener.udp_port is not None
    async with impaired_link(("127.0.0.1", listener.udp_port), hook=hook) as link:
        client = connect(listener.port, pems, transport="udp", remote_udp_port=link.port)
        async with client as association:
            await talk(association)
            auth = association.transport.auth
            assert isinstance(auth, AssociationAuth)
            assert tampered and auth.counters.bad_hmac >= 1, (tampered, auth.counters)
            assert association.active_key_id == 1
    nursery.cancel_scope.cancel()
    streams = check_capture(captured, exported)  # the originals (the forgery was not kept)
    assert set(streams) == set(range(STREAMS))


# -- in the VM -------------------------------------------------------------------------


@pytest.fixture
def sniffer() -> Iterator[socket.socket]:
    """A packet socket on ``lo``, read after the exchange."""
    with kernel_auth_enabled(0):  # the kernel transport enables SCTP-AUTH per socket
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        yield sock
        sock.close()


def segments(payload: bytes) -> list[bytes]:
    """The SCTP packets in what a packet socket on ``lo`` saw: loopback passes GSO
    super-packets on unsegmented. UDP GSO (ours) concatenates whole packets (a new one
    starts where the common header repeats); SCTP GSO (the kernel's) keeps one common
    header before every segment's chunks (a new one starts at each AUTH chunk after a
    DATA chunk: a packet has one AUTH, before its DATA)."""
    common = payload[:8]
    packets, current, data, offset = [], bytearray(payload[:12]), False, 12
    while offset + 4 <= len(payload):
        if payload[offset : offset + 8] == common:  # the next UDP segment's header
            packets.append(bytes(current))
            current, data, offset = bytearray(payload[offset : offset + 12]), False, offset + 12
            continue
        kind, _flags, length = struct.unpack_from("!BBH", payload, offset)
        if kind == AUTH and data:  # the next SCTP segment
            packets.append(bytes(current))
            current, data = bytearray(payload[:12]), False
        end = offset + max(4, (length + 3) & ~3)
        current += payload[offset:end]
        data |= kind == DATA
        offset = end
    packets.append(bytes(current))
    return packets


def ports(ip: bytes, header: int) -> tuple[int, int]:
    """The source and destination ports of the UDP datagram in ``ip``."""
    source, destination = struct.unpack_from("!HH", ip, header)
    return source, destination


def sctp_packets(sniffer: socket.socket, udp_port: int | None = None) -> list[bytes]:
    """The SCTP packets the sniffer holds, each once: native (IP protocol 132), or
    encapsulated in UDP (RFC 6951) to or from ``udp_port`` if given."""
    packets: list[bytes] = []
    while True:
        try:
            # Frames may pass 64 KiB: PLPMTUD probes fill the 64 KiB of lo's MTU.
            frame, address = sniffer.recvfrom(1 << 17, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return packets
        ip = frame[14:]
        if address[2] == socket.PACKET_OUTGOING or len(ip) < 20 or ip[0] >> 4 != 4:
            continue  # on lo each packet shows up twice
        total, header = struct.unpack_from("!H", ip, 2)[0], (ip[0] & 0x0F) * 4
        if udp_port is None and ip[9] == 132:
            packets += segments(bytes(ip[header:total]))
        elif udp_port is not None and ip[9] == 17 and udp_port in ports(ip, header):
            packets += segments(bytes(ip[header + 8 : total]))


@pytest.mark.kernel
async def test_kernel_packets_carry_authenticated_dtls_records(
    pems: dict[str, Path], exported: list[bytes], sniffer: socket.socket, nursery: trio.Nursery
) -> None:
    listener = await start(nursery, pems, transport="kernel")
    async with connect(listener.port, pems, transport="kernel") as association:
        await talk(association)
        assert association.transport.auth is not None and association.active_key_id == 1
    nursery.cancel_scope.cancel()
    # Linux leaves the CRC32c out on lo (checksum offload): the HMACs are checked.
    streams = check_capture(sctp_packets(sniffer), exported, checksum=False)
    assert set(streams) == set(range(STREAMS))


@pytest.mark.kernel
@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_dtls_between_our_kernel_and_udp_transports(
    direction: str,
    kernel_udp: tuple[int, int],
    pems: dict[str, Path],
    exported: list[bytes],
    sniffer: socket.socket,
    nursery: trio.Nursery,
) -> None:
    server, client = transports(direction, kernel_udp)
    listener = await start(nursery, pems, **server)
    async with connect(listener.port, pems, **client) as association:
        assert association.transport.auth is not None
        await talk(association)
        await association.send_message(b"u" * 16384, stream=3, ppid=99, unordered=True)
        reply = await association.receive()
        assert (reply.data, reply.stream, reply.ppid) == (b"u" * 16384, 3, 99)
        assert association.active_key_id == 1
    nursery.cancel_scope.cancel()
    # The kernel's datagrams, both ways, carry authenticated DATA too.
    streams = check_capture(sctp_packets(sniffer, kernel_udp[0]), exported, checksum=False)
    assert set(streams) == set(range(STREAMS))
