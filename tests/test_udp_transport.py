"""SCTP over UDP (RFC 6951): the Trio driver of the sans-IO core, end to end on loopback.

Plain SCTP messaging through real UDP sockets; sockets shared by several servers;
malformed datagrams at a live server; and the impaired link (tests/impaired.py) for
loss, duplication, reordering and delay, including the head-of-line test. Timing-
sensitive tests run on the autojump clock: retransmission timeouts cost no real time.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from trio_sctls import (
    AssociationAbortedError,
    MessageTransport,
    RemoteProtocolError,
    open_sctp_association,
    serve_sctp,
)
from trio_sctls._api import open_listener, open_transport, resolve_transport
from trio_sctls.impaired import DROP, Direction, Faults, ImpairedLink, impaired_link
from trio_sctls.sctp import Packet, ParseError, PMTUDState, SCTPConfig
from trio_sctls.sctp._causes import UnrecognizedChunkType
from trio_sctls.sctp._chunks import (
    AbortChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitChunk,
    ShutdownCompleteChunk,
    UnknownChunk,
)
from trio_sctls.sctp._packet import finish_packet
from trio_sctls.transport import (
    MIN_MAX_MESSAGE_SIZE,
    Message,
    RemoteError,
    ShutdownReceived,
    StreamReset,
    udp,
)
from trio_sctls.transport.udp import (
    UDPListener,
    UDPTransport,
    open_udp_listener,
    open_udp_transport,
)

from .conftest import free_udp_port


@asynccontextmanager
async def udp_pair(
    *,
    link_port: int | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[UDPTransport, UDPTransport, UDPListener]]:
    """A listener on an ephemeral UDP port, one client, and the accepted server end."""
    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=0, **(server or {})) as listener,
        open_udp_transport(
            "127.0.0.1",
            listener.port,
            remote_udp_port=link_port or listener.udp_port,
            **(client or {}),
        ) as client_end,
    ):
        server_end = await listener.accept()
        yield client_end, server_end, listener


@asynccontextmanager
async def linked_pair(
    **link_options: Any,
) -> AsyncIterator[tuple[UDPTransport, UDPTransport, UDPListener, ImpairedLink]]:
    """Like :func:`udp_pair`, with the impaired link between client and server."""
    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener,
        impaired_link(("127.0.0.1", listener.udp_port), **link_options) as link,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=link.port) as client,
    ):
        yield client, await listener.accept(), listener, link


async def receive_message(transport: MessageTransport) -> Message:
    """The next message, skipping notifications."""
    while True:
        item = await transport.receive()
        if isinstance(item, Message):
            return item


def read_waiting(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on a non-blocking socket, without waiting."""
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


async def echo(transport: MessageTransport) -> None:
    """Echo every message on its stream and PPID until the peer shuts down."""
    while True:
        try:
            item = await transport.receive()
        except trio.EndOfChannel:
            return
        if isinstance(item, Message):
            await transport.send_message(item.data, stream=item.stream, ppid=item.ppid)


# -- plain messaging ----------------------------------------------------------------------


async def test_messages_keep_stream_ppid_and_order_both_ways() -> None:
    async with udp_pair() as (client, server, _):
        assert (client.outbound_streams, client.inbound_streams) == (10, 10)
        for i in range(30):
            await client.send_message(b"c%d" % i, stream=i % 10, ppid=46 + i % 3)
        got = [await receive_message(server) for _ in range(30)]
        for stream in range(10):
            on_stream = [m for m in got if m.stream == stream]
            assert [m.data for m in on_stream] == [b"c%d" % i for i in range(stream, 30, 10)]
            assert all(m.ppid == 46 + int(m.data[1:]) % 3 for m in on_stream)
        await server.send_message(b"back", stream=9, ppid=2**32 - 1)
        assert await receive_message(client) == Message(b"back", 9, 2**32 - 1)


async def test_stream_counts_are_negotiated() -> None:
    async with udp_pair(
        client={"outbound_streams": 4, "max_inbound_streams": 6},
        server={"outbound_streams": 20, "max_inbound_streams": 3},
    ) as (client, server, _):
        assert (client.outbound_streams, client.inbound_streams) == (3, 6)
        assert (server.outbound_streams, server.inbound_streams) == (6, 3)
        with pytest.raises(ValueError, match="out of range"):
            await client.send_message(b"x", stream=3)


async def test_unordered_messages_carry_the_flag() -> None:
    async with udp_pair() as (client, server, _):
        await client.send_message(b"u", stream=2, unordered=True)
        await client.send_message(b"o", stream=2)
        got = {(await receive_message(server)) for _ in range(2)}
        assert got == {Message(b"u", 2, 0, True), Message(b"o", 2, 0, False)}


@pytest.mark.parametrize("size", [MIN_MAX_MESSAGE_SIZE, 200 * 1024])
async def test_large_messages_are_fragmented_and_reassembled(size: int) -> None:
    payload = os.urandom(size)
    async with udp_pair() as (client, server, _):
        await client.send_message(payload, stream=1, ppid=7)
        got = await receive_message(server)
        assert (got.data, got.stream, got.ppid) == (payload, 1, 7)
        await server.send_message(payload[::-1], stream=0)
        assert (await receive_message(client)).data == payload[::-1]


async def test_small_mtu_fragments_into_many_packets() -> None:
    # The path MTU of a non-loopback peer: 200 KiB in ~200 packets, each way.
    config = SCTPConfig(mtu=1200)
    payload = os.urandom(200 * 1024)
    async with udp_pair(client={"config": config}, server={"config": config}) as pair:
        client, server, _ = pair
        await client.send_message(payload, stream=0)
        assert (await receive_message(server)).data == payload


async def test_stream_reset_reaches_the_peer_after_the_data() -> None:
    async with udp_pair() as (client, server, _):
        await client.send_message(b"last on 3", stream=3)
        assert await client.reset_outgoing_stream(3)
        assert await server.receive() == Message(b"last on 3", 3)
        assert await server.receive() == StreamReset((3,))
        await client.send_message(b"stream 3 again", stream=3)
        assert await server.receive() == Message(b"stream 3 again", 3)


async def test_addresses_report_ip_and_sctp_port() -> None:
    async with udp_pair() as (client, server, listener):
        assert client.peer_addresses == [("127.0.0.1", listener.port)]
        assert server.local_addresses == [("127.0.0.1", listener.port)]
        assert server.peer_addresses == [("127.0.0.1", client.association.local_port)]
        assert client.peer_udp_address == ("127.0.0.1", listener.udp_port)
        assert server.peer_udp_address == client.udp_address
        assert client.kind == server.kind == "udp"


# -- closing -------------------------------------------------------------------------------


async def test_graceful_close_from_the_server() -> None:
    async with udp_pair() as (client, server, _):
        await server.send_message(b"bye", stream=5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose)
            assert await client.receive() == Message(b"bye", 5)
            assert isinstance(await client.receive(), ShutdownReceived)
            with pytest.raises(trio.EndOfChannel):
                await client.receive()
        assert server.association.closed


async def test_close_waits_for_queued_data_to_be_delivered() -> None:
    # More than the server's receive window, which nobody reads yet: when we close,
    # part of it cannot have been acknowledged, and aclose waits until it is.
    payload = os.urandom(udp.RECEIVE_BUFFER * 3 // 2)
    async with udp_pair() as (client, server, _):
        for offset in range(0, len(payload), 100_000):
            await client.send_message(payload[offset : offset + 100_000], stream=1)
        assert client.association.queued_bytes > 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            got = bytearray()
            while len(got) < len(payload):
                got += (await receive_message(server)).data
        assert got == payload
        assert client.association.closed


# -- connecting and listening -------------------------------------------------------------


async def test_connecting_to_an_sctp_port_nobody_listens_on_is_refused() -> None:
    async with open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener:
        expected = f"nothing listens on SCTP port {listener.port + 1} at 127.0.0.1"
        with pytest.raises(ConnectionRefusedError, match=expected):
            async with open_udp_transport(
                "127.0.0.1", listener.port + 1, remote_udp_port=listener.udp_port
            ):
                pytest.fail("connected to nobody")  # pragma: no cover


async def test_connecting_to_a_udp_port_nobody_listens_on_is_refused() -> None:
    port = free_udp_port()
    expected = rf"nothing listens on UDP port {port} at 127\.0\.0\.1 \(ICMP port unreachable\)"
    with trio.fail_after(5), pytest.raises(ConnectionRefusedError, match=expected):
        async with open_udp_transport("127.0.0.1", 5000, remote_udp_port=port):
            pytest.fail("connected to nobody")  # pragma: no cover


async def test_an_unanswered_init_times_out(autojump_clock: trio.testing.MockClock) -> None:
    # A peer that swallows everything: INIT is retransmitted Max.Init.Retransmits times.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        with pytest.raises(TimeoutError):
            async with open_udp_transport(
                "127.0.0.1", 5000, remote_udp_port=black_hole.getsockname()[1]
            ):
                pytest.fail("connected to nobody")  # pragma: no cover


async def test_many_associations_share_one_server_socket() -> None:
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(serve_sctp, echo, 0, host="127.0.0.1", transport="udp", udp_port=0)
        )
        results: dict[int, list[bytes]] = {}

        async def client(i: int) -> None:
            async with open_sctp_association(
                "127.0.0.1", listener.port, transport="udp", remote_udp_port=listener.udp_port
            ) as sctp:
                assert isinstance(sctp, UDPTransport)
                assert sctp.peer_udp_address == ("127.0.0.1", listener.udp_port)
                for n in range(5):
                    await sctp.send_message(b"%d:%d" % (i, n), stream=n)
                results[i] = [(await receive_message(sctp)).data for _ in range(5)]

        async with trio.open_nursery() as clients:
            for i in range(25):
                clients.start_soon(client, i)
        nursery.cancel_scope.cancel()
    assert all(sorted(results[i]) == [b"%d:%d" % (i, n) for n in range(5)] for i in range(25))


async def test_two_servers_share_the_default_udp_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp._listener, "DEFAULT_UDP_PORT", free_udp_port())

    async def identify(name: bytes, sctp: MessageTransport) -> None:
        await receive_message(sctp)
        await sctp.send_message(name, stream=0)
        await echo(sctp)

    async with trio.open_nursery() as nursery:
        first = await nursery.start(
            partial(serve_sctp, partial(identify, b"first"), 0, host="127.0.0.1", transport="udp")
        )
        second = await nursery.start(
            partial(serve_sctp, partial(identify, b"second"), 0, host="127.0.0.1", transport="udp")
        )
        assert first.udp_port == second.udp_port == udp._listener.DEFAULT_UDP_PORT
        assert first.port != second.port
        for listener, name in ((first, b"first"), (second, b"second")):
            async with open_sctp_association("127.0.0.1", listener.port, transport="udp") as c:
                await c.send_message(b"who?", stream=0)
                assert (await receive_message(c)).data == name
        nursery.cancel_scope.cancel()


async def test_two_servers_on_udp_port_zero_get_sockets_of_their_own() -> None:
    async with (
        open_listener(7000, host="127.0.0.1", transport="udp", udp_port=0) as first,
        open_listener(7000, host="127.0.0.1", transport="udp", udp_port=0) as second,
    ):
        assert isinstance(first, UDPListener) and isinstance(second, UDPListener)
        assert first.port == second.port == 7000
        assert first.udp_port != second.udp_port
        async with trio.open_nursery() as nursery:
            for listener in (first, second):

                async def accept_and_echo(listener: UDPListener = listener) -> None:
                    await echo(await listener.accept())

                nursery.start_soon(accept_and_echo)
                async with open_transport(
                    "127.0.0.1", 7000, transport="udp", remote_udp_port=listener.udp_port
                ) as sctp:
                    await sctp.send_message(b"hi %d" % listener.udp_port, stream=0)
                    assert (await receive_message(sctp)).data == b"hi %d" % listener.udp_port
                    await sctp.aclose()


async def test_one_sctp_port_twice_on_one_udp_port_is_in_use() -> None:
    port = free_udp_port()
    async with open_udp_listener(0, host="127.0.0.1", udp_port=port) as listener:
        with pytest.raises(OSError, match="in use") as info:
            async with open_udp_listener(listener.port, host="127.0.0.1", udp_port=port):
                pytest.fail("bound twice")  # pragma: no cover
        assert info.value.errno == errno.EADDRINUSE


async def test_a_udp_port_taken_by_another_socket_is_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        with pytest.raises(OSError, match="in use") as info:
            async with open_udp_listener(0, host="127.0.0.1", udp_port=port):
                pytest.fail("bound twice")  # pragma: no cover
        assert info.value.errno == errno.EADDRINUSE
        assert f"UDP port {port} at 127.0.0.1" in str(info.value)
        assert "pass another udp_port, or udp_port=0" in str(info.value)


async def test_servers_default_to_udp_port_9899() -> None:
    try:
        async with open_listener(0, transport="udp") as listener:
            assert isinstance(listener, UDPListener)
            assert listener.udp_port == 9899 == udp.DEFAULT_UDP_PORT
    except OSError as exc:  # pragma: no cover - someone else runs SCTP over UDP here
        if exc.errno != errno.EADDRINUSE:
            raise
        pytest.skip("UDP port 9899 is in use on this machine")


async def test_auto_means_udp_without_kernel_sctp() -> None:
    from trio_sctls import kernel_sctp_available

    assert resolve_transport("auto") == ("kernel" if kernel_sctp_available() else "udp")
    with pytest.raises(ValueError, match="udp_port"):
        async with open_transport("127.0.0.1", 1, transport="memory", udp_port=5):
            pass  # pragma: no cover


async def test_a_client_can_use_a_fixed_udp_port_shared_with_a_server() -> None:
    port = free_udp_port()
    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=port) as listener,
        open_udp_transport(
            "127.0.0.1",
            listener.port,
            udp_port=port,
            remote_udp_port=port,
            local_addresses=["127.0.0.1"],
        ) as client,
    ):
        server = await listener.accept()
        assert client.udp_address == server.udp_address == ("127.0.0.1", port)
        await client.send_message(b"to myself", stream=0)
        assert (await receive_message(server)).data == b"to myself"


async def test_cancelling_a_connect_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        with trio.move_on_after(2):
            async with open_udp_transport(
                "127.0.0.1",
                5000,
                udp_port=free_udp_port(),
                remote_udp_port=black_hole.getsockname()[1],
            ):
                pytest.fail("connected to nobody")  # pragma: no cover
        assert black_hole.recv(65536)  # the INIT went out
    assert not udp._socket._registry()  # the shared socket is gone with its last user


# -- flow control ---------------------------------------------------------------------------


async def test_a_reader_that_stops_reading_pushes_back_on_the_sender() -> None:
    block = os.urandom(16 * 1024)
    total = 200  # 3.2 MB: more than the receive window plus the send buffer
    async with udp_pair() as (client, server, _):
        sent = 0

        async def sender() -> None:
            nonlocal sent
            for _ in range(total):
                await client.send_message(block, stream=0)
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked(0.05)
            # The server's window is full of unread data: the sender is stuck.
            assert sent < total
            assert client.association.peer_rwnd < 64 * 1024
            assert client.association.queued_bytes > udp.SEND_BUFFER - len(block)
            for _ in range(total):
                assert (await receive_message(server)).data == block
        assert sent == total


# -- malformed input --------------------------------------------------------------------------


def packet_bytes(src: int, dst: int, tag: int, *chunks: bytes) -> bytes:
    """A packet with a valid CRC32c from raw chunk bytes."""
    buf = bytearray(Packet(src, dst, tag).__bytes__())
    for chunk in chunks:
        buf += chunk
    buf[8:12] = b"\0\0\0\0"
    return finish_packet(buf)


def garbage(listener: UDPListener, victim: UDPTransport) -> list[bytes]:
    """Malformed and hostile datagrams for ``listener``'s port, from a stranger."""
    port, tag = listener.port, victim.association.verification_tag
    init = bytes(InitChunk(0x1234, 65536, 10, 10, 1))
    good_init = packet_bytes(5000, port, 0, init)
    rng = random.Random(3436)
    items = [
        b"",
        b"\x01",
        good_init[:11],  # truncated common header
        good_init[:20],  # truncated chunk
        good_init[:8] + b"\xde\xad\xbe\xef" + good_init[12:],  # bad CRC
        packet_bytes(5000, port, 0, b"\x01\x00\x00\x02"),  # chunk length below 4
        packet_bytes(5000, port, 0, b"\x01\x00\x01\x00" + bytes(12)),  # length past the end
        # An INIT whose parameter claims more bytes than the chunk holds.
        packet_bytes(5000, port, 0, b"\x01\x00\x00\x18" + init[4:20] + b"\x00\x05\x00\x63"),
        # An association's own tag from another SCTP port: the DATA must not land in it.
        packet_bytes(5000, port, tag, bytes(DataChunk(1, 0, 0, 0, b"forged"))),
        packet_bytes(5000, port, tag ^ 1, bytes(HeartbeatChunk(b"wrong tag"))),
        packet_bytes(5000, port + 1, 0, init),  # a port nobody listens on
    ]
    items += [  # unknown chunk types with each combination of the two high bits
        packet_bytes(5000, port, tag, bytes(UnknownChunk(code, 0, b"?")))
        for code in (0x3F, 0x7F, 0xBF, 0xFF)
    ]
    items += [rng.randbytes(rng.randrange(1, 200)) for _ in range(50)]
    items += [packet_bytes(5000, port, tag, rng.randbytes(rng.randrange(0, 64))) for _ in range(50)]
    return items


async def test_malformed_datagrams_never_disturb_a_live_server() -> None:
    async with udp_pair() as (client, server, listener):
        answers: list[bytes] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.setblocking(False)
            for i, datagram in enumerate(garbage(listener, server)):
                stranger.sendto(datagram, ("127.0.0.1", listener.udp_port))
                # Traffic on the live association in between.
                await client.send_message(b"%d" % i, stream=i % 10)
                assert (await receive_message(server)).data == b"%d" % i
            await trio.testing.wait_all_tasks_blocked(0.02)
            while True:
                try:
                    answers.append(stranger.recv(65536))
                except BlockingIOError:
                    break
        # The association is untouched, in both directions, and nothing forged landed.
        await server.send_message(b"still here", stream=1)
        assert await client.receive() == Message(b"still here", 1)
        assert server.association.established and client.association.established
        # Answers, where RFC 9260 Section 8.4 asks for them, go to the stranger: ABORT
        # (or SHUTDOWN COMPLETE for a stray SHUTDOWN ACK).
        assert answers, "the INIT to a closed port and the OOTB packets get ABORTs"
        for answer in answers:
            (chunk,) = Packet.parse(answer).chunks
            assert isinstance(chunk, AbortChunk | ShutdownCompleteChunk)
        # And the server still accepts new associations.
        async with open_udp_transport(
            "127.0.0.1", listener.port, remote_udp_port=listener.udp_port
        ) as other:
            await other.send_message(b"new", stream=0)
            assert (await receive_message(await listener.accept())).data == b"new"


@pytest.mark.parametrize(
    ("code", "processes_the_rest", "reports"),
    [(0x3F, False, False), (0x7F, False, True), (0xBF, True, False), (0xFF, True, True)],
)
async def test_unknown_chunks_are_handled_by_their_high_bits(
    autojump_clock: trio.testing.MockClock, code: int, processes_the_rest: bool, reports: bool
) -> None:
    # RFC 9260, Section 3.2: 00 stop, 01 stop and report, 10 skip, 11 skip and report.
    # The unknown chunk is followed by a HEARTBEAT: answered only if processing goes on.
    seen: list[Packet] = []

    def watch(direction: Direction, index: int, datagram: bytes) -> None:
        if direction == "to_client":
            seen.append(Packet.parse(datagram))

    async with linked_pair(hook=watch) as (client, server, listener, link):
        marker = b"after %#x" % code
        link.inject(
            "to_server",
            packet_bytes(
                client.association.local_port,
                listener.port,
                server.association.verification_tag,
                bytes(UnknownChunk(code, 0, b"unknown")),
                bytes(HeartbeatChunk(marker)),
            ),
        )
        await trio.sleep(1)
        chunks = [c for p in seen for c in p.chunks]
        acked = any(isinstance(c, HeartbeatAckChunk) and c.info == marker for c in chunks)
        errors = [
            cause
            for c in chunks
            if isinstance(c, ErrorChunk)
            for cause in c.causes
            if isinstance(cause, UnrecognizedChunkType)
        ]
        assert acked == processes_the_rest
        assert bool(errors) == reports
        if reports:
            assert await client.receive() == RemoteError(6, bytes(errors[0])[4:])
        await client.send_message(b"fine", stream=0)
        assert await server.receive() == Message(b"fine", 0)


async def test_a_packet_with_a_wrong_verification_tag_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with linked_pair() as (client, server, listener, link):
        # Path MTU probes are traffic too: let the searches (which wait for data) end.
        await client.send_message(b"first", stream=0)
        assert await server.receive() == Message(b"first", 0)
        await server.send_message(b"second", stream=0)
        assert await client.receive() == Message(b"second", 0)
        await trio.sleep(5)
        settled = PMTUDState.SEARCH_COMPLETE
        assert client.association.pmtud_state is server.association.pmtud_state is settled
        before = link.stats("to_client").received
        tag = server.association.verification_tag ^ 0x5A5A
        forged = DataChunk(12345, 0, 0, 0, b"forged")
        src = client.association.local_port
        link.inject("to_server", packet_bytes(src, listener.port, tag, bytes(forged)))
        await trio.sleep(1)
        assert link.stats("to_client").received == before  # not even a SACK
        await client.send_message(b"real", stream=0)
        assert await server.receive() == Message(b"real", 0)


# -- the impaired link ----------------------------------------------------------------------------


def data_streams(datagram: bytes) -> set[int]:
    """The stream ids of the DATA chunks in a datagram."""
    try:
        packet = Packet.parse(datagram)
    except ParseError:  # pragma: no cover - we only see our own packets
        return set()
    return {c.stream_id for c in packet.chunks if isinstance(c, DataChunk)}


async def test_a_lost_message_on_one_stream_does_not_delay_another_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Head of line: the packet carrying stream A's message is lost; stream B's message,
    # sent after it, is delivered at once, and A's only after its retransmission.
    stream_a, stream_b = 1, 2
    dropped = trio.Event()
    forwarded_a: list[float] = []

    def lose_a_once(direction: Direction, index: int, datagram: bytes) -> list[bytes] | None:
        if direction == "to_server" and stream_a in data_streams(datagram):
            if not dropped.is_set():
                dropped.set()
                return list(DROP)
            forwarded_a.append(trio.current_time())
        return None

    async with linked_pair(hook=lose_a_once) as (client, server, _, _link):
        # Some traffic first, so the RTO comes from measured round trips.
        for _ in range(4):
            await client.send_message(b"warm-up", stream=0)
            await receive_message(server)
        await client.send_message(b"A", stream=stream_a)
        await dropped.wait()
        lost_at = trio.current_time()
        await client.send_message(b"B", stream=stream_b)
        first = await receive_message(server)
        b_at = trio.current_time()
        second = await receive_message(server)
        a_at = trio.current_time()
        assert (first.stream, first.data) == (stream_b, b"B")
        assert (second.stream, second.data) == (stream_a, b"A")
        assert b_at == lost_at  # no waiting for A at all
        # A came with its retransmission, one RTO later (at least RTO.Min).
        assert forwarded_a and forwarded_a[0] >= lost_at + udp.LOOPBACK_RTO_MIN
        assert a_at >= forwarded_a[0]


async def test_every_stream_delivers_everything_in_order_through_seeded_faults(
    autojump_clock: trio.testing.MockClock,
) -> None:
    faults = Faults(loss=0.05, duplicate=0.05, reorder=0.1, delay=0.005, jitter=0.01)
    streams = 6
    sizes = [random.Random(i).choice([10, 1000, 5000, 30000, 70000]) for i in range(120)]
    async with linked_pair(faults=faults, seed=42) as (client, server, _, link):
        expected: dict[int, list[bytes]] = {s: [] for s in range(streams)}
        got: dict[int, list[bytes]] = {s: [] for s in range(streams)}

        async def send(sender: UDPTransport, offset: int) -> None:
            for i, size in enumerate(sizes):
                payload = (b"%d/%d;" % (offset, i) * size)[:size]
                if offset == 0:
                    expected[i % streams].append(payload)
                await sender.send_message(payload, stream=i % streams)

        async def echo_back() -> None:
            for _ in sizes:
                message = await receive_message(server)
                got[message.stream].append(message.data)
                await server.send_message(message.data, stream=message.stream)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, client, 0)
            nursery.start_soon(echo_back)
            echoed = [await receive_message(client) for _ in sizes]
        assert got == expected
        for s in range(streams):
            assert [m.data for m in echoed if m.stream == s] == expected[s]
        directions: tuple[Direction, ...] = ("to_server", "to_client")
        for direction in directions:
            stats = link.stats(direction)
            assert stats.dropped and stats.duplicated and stats.reordered, stats


async def test_the_impaired_link_is_deterministic_under_a_seed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fates(seed: int) -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.bind(("127.0.0.1", 0))
            sink.setblocking(False)
            faults = Faults(loss=0.2, duplicate=0.2, reorder=0.2, delay=0.01, jitter=0.01)
            async with impaired_link(sink.getsockname(), faults=faults, seed=seed) as link:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as source:
                    for i in range(100):
                        source.sendto(b"%d" % i, link.address)
                        await trio.sleep(0.001)
                    await trio.sleep(1)
            return read_waiting(sink)

    first, again, other = await fates(1), await fates(1), await fates(2)
    assert first == again
    assert first != other
    assert len(set(first)) < 100 and len(first) != len(set(first))  # lost and duplicated
    assert first != sorted(set(first), key=int)  # reordered


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 here")
async def test_ipv6_loopback() -> None:
    try:
        async with (
            open_udp_listener(0, host="::1", udp_port=0) as listener,
            open_udp_transport("::1", listener.port, remote_udp_port=listener.udp_port) as client,
        ):
            server = await listener.accept()
            assert client.peer_udp_address == ("::1", listener.udp_port)
            payload = os.urandom(100_000)
            await client.send_message(payload, stream=0)
            assert (await receive_message(server)).data == payload
    except OSError as exc:  # pragma: no cover - IPv6 compiled in but not configured
        if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise
        pytest.skip(f"no IPv6 loopback: {exc}")


async def test_a_wildcard_server_answers_ipv4_clients() -> None:
    async with (
        open_udp_listener(0, udp_port=0) as listener,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=listener.udp_port) as client,
    ):
        server = await listener.accept()
        assert server.peer_addresses == [("127.0.0.1", client.association.local_port)]
        await server.send_message(b"dual stack", stream=0)
        assert (await receive_message(client)).data == b"dual stack"


async def test_one_failing_association_leaves_the_others_on_the_socket_alone() -> None:
    # The server accepts messages up to 18,437 bytes; one client sends more, and the
    # server's SCTP aborts that association ("Out of Resource"). Its neighbour goes on.
    async with (
        open_udp_listener(
            0, host="127.0.0.1", udp_port=0, max_message_size=MIN_MAX_MESSAGE_SIZE
        ) as listener,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=listener.udp_port) as bad,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=listener.udp_port) as good,
    ):
        servers = {}
        for _ in range(2):
            server = await listener.accept()
            servers[server.peer_addresses[0]] = server
        bad_server = servers[bad.local_addresses[0]]
        good_server = servers[good.local_addresses[0]]
        await bad.send_message(bytes(MIN_MAX_MESSAGE_SIZE + 1), stream=0)
        with pytest.raises(RemoteProtocolError):
            await bad_server.receive()
        with pytest.raises(AssociationAbortedError):
            await bad.receive()
        await good.send_message(b"unaffected", stream=0)
        assert await good_server.receive() == Message(b"unaffected", 0)


async def test_many_clients_share_one_socket_and_all_keep_their_timers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Twenty client associations on one UDP socket (a fixed udp_port: twenty endpoints
    # on it). The pump flushes and times only the endpoints with work; after idling
    # through several heartbeat intervals every association is still up and echoes.
    n = 20
    port = free_udp_port()
    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener,
        trio.open_nursery() as nursery,
    ):

        async def accept_all() -> None:
            while True:
                nursery.start_soon(echo, await listener.accept())

        nursery.start_soon(accept_all)
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(
                    open_udp_transport(
                        "127.0.0.1",
                        listener.port,
                        remote_udp_port=listener.udp_port,
                        udp_port=port,
                        local_addresses=["127.0.0.1"],
                    )
                )
                for _ in range(n)
            ]
            shared = clients[0]._udp
            assert all(client._udp is shared for client in clients)
            assert len(shared.endpoints) == n
            before = shared.datagrams_sent
            await trio.sleep(200)  # HB.interval is 30 s: about six heartbeats per end
            # Each client end sends its HEARTBEATs and acknowledges the server's.
            assert shared.datagrams_sent - before >= n * 2 * 5
            assert all(client.association.established for client in clients)
            for i, client in enumerate(clients):
                await client.send_message(b"still here %d" % i, stream=i % 10)
            for i, client in enumerate(clients):
                assert await receive_message(client) == Message(b"still here %d" % i, i % 10)
            for client in clients:
                await client.aclose()
            assert all(client.association.closed for client in clients)
        nursery.cancel_scope.cancel()
