"""Attacks on TLS over SCTP (RFC 3436) from a peer that breaks the rules mid-session.

Already covered in test_association.py (not repeated here; the unordered-record,
truncation and stalled-handshake tests there now check for leaks too): a different
certificate on one stream, a forged record, an unordered message on a TLS stream, data
beyond the TLS streams, SCTP SHUTDOWN without close_notify (truncation), a server-side
stalled handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trio_sctls import (
    AssociationAbortedError,
    HandshakeError,
    SecureAssociation,
)
from trio_sctls._api import TransportName
from trio_sctls.transport import MessageTransport
from trio_sctls.transport.memory import memory_pair

from .conftest import (
    SERVER_NAME,
    checked_pair,
    client_context,
    server_context,
    wrap_client,
    wrap_server,
)
from .hygiene import no_leaks
from .test_udp_transport import receive_message


async def test_plain_data_on_a_tls_stream_mid_session_aborts_naming_the_stream(
    transport: TransportName,
) -> None:
    async with checked_pair(transport, outbound_streams=3) as pair:
        client, server = pair.client, pair.server
        await server.channels[0].send_all(b"delivered once")
        assert await client.channels[0].receive_some() == b"delivered once"
        # Cleartext where a TLS record belongs, as a confused or hostile peer would.
        await server.transport.send_message(b"GET / HTTP/1.0\r\n\r\n", stream=1)
        with pytest.raises(trio.BrokenResourceError):
            await client.channels[1].receive_some()
        assert isinstance(client.error, HandshakeError)
        assert client.error.stream == 1
        # The other channels see the association's error: nothing delivered twice.
        with pytest.raises(HandshakeError) as info:
            await client.channels[0].receive_some()
        assert info.value.stream == 1
        # The peer sees the ABORT.
        with pytest.raises(AssociationAbortedError):
            await server.channels[2].receive_some()


def test_wrapped_contexts_refuse_renegotiation() -> None:
    context = client_context()
    context.options &= ~ssl.OP_NO_RENEGOTIATION
    client_transport, _ = memory_pair(client_outbound=1, server_outbound=1)
    SecureAssociation(client_transport, context, server_side=False, server_hostname=SERVER_NAME)
    assert context.options & ssl.OP_NO_RENEGOTIATION


# -- a TLS 1.2 server that asks for renegotiation ------------------------------------------
#
# Python cannot initiate renegotiation, so the hostile server here is a raw SSLObject
# whose session keys we take from its key log, and the HelloRequest is a record of our
# own making, encrypted as OpenSSL would have (AES-128-GCM, RFC 5246/5288).

CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"


def raw_tls12(
    context: ssl.SSLContext, keylog: Path, **wrap: Any
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A hostile peer's raw TLS 1.2 endpoint over memory BIOs (``(object, incoming,
    outgoing)``), in :data:`CIPHER`, its keys logged to ``keylog``."""
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHER)
    context.keylog_filename = str(keylog)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(incoming, outgoing, **wrap), incoming, outgoing


def p_sha256(secret: bytes, seed: bytes, size: int) -> bytes:
    """TLS 1.2's PRF (RFC 5246 section 5)."""
    out, a = b"", seed
    while len(out) < size:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:size]


def gcm_nonce_aad(iv: bytes, seq: int, kind: int, length: int) -> tuple[bytes, bytes, bytes]:
    explicit = struct.pack("!Q", seq)
    return (
        iv + explicit,
        explicit,
        explicit + bytes([kind]) + b"\x03\x03" + struct.pack("!H", length),
    )


def session_keys(keylog: Path, server_random: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(client key, server key, client IV, server IV) of the one TLS 1.2 session logged."""
    (line,) = [line for line in keylog.read_text().splitlines() if line.startswith("CLIENT_")]
    _, client_random, secret = line.split()
    keys = p_sha256(
        bytes.fromhex(secret), b"key expansion" + server_random + bytes.fromhex(client_random), 40
    )
    return keys[:16], keys[16:32], keys[32:36], keys[36:40]


def seal(key: bytes, iv: bytes, seq: int, kind: int, plaintext: bytes) -> bytes:
    """One AES-128-GCM TLS 1.2 record."""
    nonce, explicit, aad = gcm_nonce_aad(iv, seq, kind, len(plaintext))
    body = explicit + AESGCM(key).encrypt(nonce, plaintext, aad)
    return bytes([kind]) + b"\x03\x03" + struct.pack("!H", len(body)) + body


def unseal(key: bytes, iv: bytes, seq: int, record: bytes) -> tuple[int, bytes]:
    """The content type and plaintext of one AES-128-GCM TLS 1.2 record."""
    kind, length = record[0], struct.unpack("!H", record[3:5])[0]
    assert length == len(record) - 5
    _, _, aad = gcm_nonce_aad(iv, seq, kind, length - 8 - 16)
    nonce = iv + record[5:13]  # the explicit part as the sender chose it
    return kind, AESGCM(key).decrypt(nonce, record[13:], aad)


async def refuses_renegotiation(
    ours: SecureAssociation,
    raw_peer: MessageTransport,
    keylog: Path,
    server_random: bytes,
    *,
    request: bytes,
    then: bytes,
) -> None:
    """The raw peer, its TLS 1.2 handshake with ``ours`` done (its keys in ``keylog``),
    asks for a new handshake with ``request`` (its record number 1). Reading stream 0,
    ``ours`` must answer with a no_renegotiation warning alert (our record number 1)
    rather than a handshake message, and carry on, reading ``then``, which the raw peer
    sends in the same session (its record number 2). Then ``ours`` is aborted: the raw
    peer would never answer its close_notify."""
    client_key, server_key, client_iv, server_iv = session_keys(keylog, server_random)
    our_keys, peer_keys = (client_key, client_iv), (server_key, server_iv)
    if ours.server_side:
        our_keys, peer_keys = peer_keys, our_keys
    await raw_peer.send_message(seal(*peer_keys, 1, 0x16, request), stream=0)
    got: list[bytes] = []

    async def read() -> None:
        got.append(bytes(await ours.channels[0].receive_some()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        answer = (await receive_message(raw_peer)).data
        kind, plaintext = unseal(*our_keys, 1, answer)
        assert kind == 0x15, f"content type {kind}: renegotiation was not refused"
        assert plaintext == b"\x01\x64"  # warning, no_renegotiation
        await raw_peer.send_message(seal(*peer_keys, 2, 0x17, then), stream=0)
    assert got == [then]
    assert ours.error is None
    ours.abort()


async def test_a_server_hello_request_is_refused_not_obeyed(tmp_path: Path) -> None:
    # Obeyed, it would run a second handshake inside read(), where no hook pins the
    # server's certificate: a way round the pinning of test_association's MITM test.
    keylog = tmp_path / "keys"
    client_transport, server_transport = memory_pair(client_outbound=1, server_outbound=1)
    tls, incoming, outgoing = raw_tls12(server_context(), keylog, server_side=True)
    server_random = b""
    handshaken = trio.Event()

    async def hostile_handshake() -> None:
        nonlocal server_random
        while True:
            incoming.write((await receive_message(server_transport)).data)
            try:
                tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            out = outgoing.read()
            if out and not server_random:
                assert out[0] == 0x16 and out[5] == 2  # a ServerHello
                server_random = out[11:43]
            if out:
                await server_transport.send_message(out, stream=0)
            if done:
                handshaken.set()
                return

    with trio.fail_after(10):  # a safety net for a hang, not a timing
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile_handshake)
            async with wrap_client(
                client_transport, client_context(ssl.TLSVersion.TLSv1_2)
            ) as client:
                await handshaken.wait()
                assert client.channels[0].cipher()[0] == CIPHER
                # A HelloRequest (type 0, empty). The client reads it when its user reads
                # the channel, and must answer with an alert, not a ClientHello.
                await refuses_renegotiation(
                    client,
                    server_transport,
                    keylog,
                    server_random,
                    request=b"\x00\x00\x00\x00",
                    then=b"same session",
                )


async def test_a_peer_that_never_finishes_one_streams_handshake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server that answers every stream's ClientHello but stream 2's: the client's
    # handshake timeout fires, naming the stream, and nothing is left behind.
    # (The memory link holds stream 2's messages to the server for an hour.)
    client_transport, server_transport = memory_pair(
        client_outbound=3,
        server_outbound=3,
        client_delay=lambda stream: 3600.0 if stream == 2 else 0.0,
    )
    servers: list[SecureAssociation] = []
    async with no_leaks():
        async with trio.open_nursery() as nursery:

            async def serve_it() -> None:
                with pytest.raises(AssociationAbortedError):
                    async with wrap_server(server_transport) as server:
                        servers.append(server)
                        # Until the client's abort reaches this channel.
                        await server.channels[0].receive_some()

            nursery.start_soon(serve_it)
            with pytest.raises(HandshakeError) as info:
                async with wrap_client(client_transport, handshake_timeout=5):
                    pytest.fail("the association must not open")  # pragma: no cover
            assert info.value.stream == 2
            assert "did not complete within 5" in str(info.value)
        assert servers[0].channel_info(2).started_at is None  # never saw a ClientHello


async def test_a_client_renegotiation_is_refused(tmp_path: Path) -> None:
    # The mirror image: a raw TLS 1.2 client sends a new ClientHello, encrypted, after
    # the handshake. Our server must not start a second handshake.
    keylog = tmp_path / "keys"
    client_transport, server_transport = memory_pair(client_outbound=1, server_outbound=1)
    tls, incoming, outgoing = raw_tls12(client_context(), keylog, server_hostname=SERVER_NAME)
    server_random = b""
    with trio.fail_after(10):  # a safety net for a hang, not a timing
        async with wrap_server(server_transport) as server:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                if out := outgoing.read():
                    await client_transport.send_message(out, stream=0)
                data = (await receive_message(client_transport)).data
                if not server_random:
                    assert data[0] == 0x16 and data[5] == 2  # a ServerHello
                    server_random = data[11:43]
                incoming.write(data)
            # A ClientHello (type 1), whose body does not matter: it is refused on sight.
            # The server reads it when its user reads the channel, and must answer with
            # an alert, not a ServerHello.
            await refuses_renegotiation(
                server,
                client_transport,
                keylog,
                server_random,
                request=b"\x01\x00\x00\x04" + b"\x03\x03\x00\x00",
                then=b"still the same session",
            )
