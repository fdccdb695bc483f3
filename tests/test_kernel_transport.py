"""The Linux kernel SCTP transport (trio_sctls.transport.kernel).

Tests marked ``kernel`` need kernel SCTP: here, or inside the QEMU VM (tests/vm/). They
are kept few and small because the VM emulates its CPU. The others run anywhere: the
refusal on a kernel without SCTP, argument checks, and notification parsing on bytes
laid out as Debian's 6.1 kernel delivers them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trio_sctls import (
    AssociationAbortedError,
    SCTPNotSupportedError,
)
from trio_sctls.transport import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MIN_MAX_MESSAGE_SIZE,
    Message,
    PeerAddressChange,
    PeerAddressState,
    RemoteError,
    SendFailed,
    StreamReset,
    Timers,
)
from trio_sctls.transport._linux import _PADDRPARAMS, _Libc, _parse_event
from trio_sctls.transport.kernel import (
    KernelListener,
    KernelTransport,
    connect_kernel,
    listen_kernel,
    read_timers,
)

#: Seconds a kernel test may take inside the VM before it counts as hung.
TEST_DEADLINE = 60


def kernel_has_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close()
    except OSError:
        return False
    return True


@asynccontextmanager
async def kernel_pair(
    *,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[KernelTransport, KernelTransport, KernelListener]]:
    """A listener on 127.0.0.1, a client connected to it and the accepted server end.
    Everything still open at the end is aborted (fast, and fine for a test)."""
    listener = await listen_kernel(0, hosts="127.0.0.1", **(server or {}))
    # A deadlock should fail the test, not hang the VM run.
    try:
        with trio.fail_after(TEST_DEADLINE):
            client_end, server_end = await accept_and_connect(
                listener, "127.0.0.1", **(client or {})
            )
            try:
                yield client_end, server_end, listener
            finally:
                client_end.abort()
                server_end.abort()
    finally:
        await listener.aclose()


async def accept_and_connect(
    listener: KernelListener, hosts: str | list[str], **options: Any
) -> tuple[KernelTransport, KernelTransport]:
    """Connect to ``listener`` and accept at once: (client end, server end)."""
    accepted: list[KernelTransport] = []

    async def accept() -> None:
        accepted.append(await listener.accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        client = await connect_kernel(hosts, listener.port, **options)
    return client, accepted[0]


async def receive_messages(transport: KernelTransport, count: int) -> list[Message]:
    messages: list[Message] = []
    while len(messages) < count:
        item = await transport.receive()
        assert isinstance(item, Message), item
        messages.append(item)
    return messages


# --- Anywhere ------------------------------------------------------------------------------


@pytest.mark.skipif(kernel_has_sctp(), reason="this kernel has SCTP")
async def test_a_kernel_without_sctp_is_reported_as_such() -> None:
    with pytest.raises(SCTPNotSupportedError, match="no SCTP support") as connecting:
        await connect_kernel("127.0.0.1", 9)
    assert isinstance(connecting.value, OSError)
    with pytest.raises(SCTPNotSupportedError, match="no SCTP support"):
        await listen_kernel(0)
    with pytest.raises(SCTPNotSupportedError):
        await listen_kernel(0, hosts=["127.0.0.1", "127.0.0.2"])


async def test_options_are_checked_before_any_socket_is_made() -> None:
    with pytest.raises(ValueError, match="RFC 3436"):
        await connect_kernel("127.0.0.1", 9, max_message_size=MIN_MAX_MESSAGE_SIZE - 1)
    with pytest.raises(ValueError, match="outbound_streams"):
        await connect_kernel("127.0.0.1", 9, outbound_streams=0)
    with pytest.raises(ValueError, match="max_inbound_streams"):
        await listen_kernel(0, max_inbound_streams=65536)
    with pytest.raises(ValueError, match="at least one address"):
        await connect_kernel([], 9)


# Notifications as Debian's 6.1 kernel delivers them (x86-64): the send-failed ones as
# captured in the VM, the others built to the layout of include/uapi/linux/sctp.h (the
# address change layout is also exercised for real by the multihoming test).
SEND_FAILED_EVENT = bytes.fromhex(
    "0d80"
    "0100"
    "25000000"  # type, flags (SCTP_DATA_UNSENT), length 37
    "000c0000"  # ssf_error: cause 12 (user-initiated abort), network order
    "0300"
    "0000"
    "0000002e"
    "00000000"
    "0b000000"  # sndinfo: sid 3, flags, ppid 46, ...
    "0b000000"  # assoc id
    "68656c6c6f"  # the undelivered message
)
SEND_FAILED_OLD = bytes.fromhex(
    "0380"
    "0100"
    "35000000"
    "000c0000"
    "0200"
    "0000"
    "0000"
    "0000"
    "0000002f" + "00" * 16 + "0d000000"  # sndrcvinfo
    "0d000000"
    "68656c6c6f"
)
PADDR_CHANGE = (
    bytes.fromhex("0280000094000000")
    + bytes.fromhex("02001f907f000002").ljust(128, b"\0")  # sockaddr_in 127.0.0.2:8080
    + struct.pack("=iii", 5, 0, 7)  # SCTP_ADDR_CONFIRMED, error, assoc id
)
PADDR_CHANGE_V6_MAPPED = (
    bytes.fromhex("0280000094000000")
    + (
        bytes.fromhex("0a001f9000000000") + socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.3")
    ).ljust(128, b"\0")
    + struct.pack("=iii", 1, 110, 7)  # SCTP_ADDR_UNREACHABLE
)
REMOTE_ERROR = bytes.fromhex("04800000140000000006000007000000c0010004")


def test_send_failed_notifications_are_parsed() -> None:
    assert _parse_event(SEND_FAILED_EVENT) == SendFailed(3, 46, b"hello", 12)
    assert _parse_event(SEND_FAILED_OLD) == SendFailed(2, 47, b"hello", 12)


def test_peer_address_changes_are_parsed_with_mapped_addresses_as_ipv4() -> None:
    assert _parse_event(PADDR_CHANGE) == PeerAddressChange(
        ("127.0.0.2", 8080), PeerAddressState.CONFIRMED, 0
    )
    assert _parse_event(PADDR_CHANGE_V6_MAPPED) == PeerAddressChange(
        ("127.0.0.3", 8080), PeerAddressState.UNREACHABLE, 110
    )


def test_remote_errors_are_parsed() -> None:
    assert _parse_event(REMOTE_ERROR) == RemoteError(6, bytes.fromhex("c0010004"))


# --- Kernel SCTP ---------------------------------------------------------------------------


@pytest.mark.kernel
async def test_stream_counts_are_negotiated() -> None:
    async with kernel_pair() as (client, server, _):
        assert (client.outbound_streams, client.inbound_streams) == (10, 10)
        assert (server.outbound_streams, server.inbound_streams) == (10, 10)
        assert client.kind == server.kind == "kernel"
        assert client.max_message_size == DEFAULT_MAX_MESSAGE_SIZE


@pytest.mark.kernel
async def test_asymmetric_stream_counts_follow_init_and_init_ack() -> None:
    # Client INIT: OS=4, MIS=6. Server INIT-ACK: OS=min(10, 6)=6, MIS=10.
    options = {"outbound_streams": 4, "max_inbound_streams": 6}
    async with kernel_pair(client=options) as (client, server, _):
        assert (client.outbound_streams, client.inbound_streams) == (4, 6)
        assert (server.outbound_streams, server.inbound_streams) == (6, 4)
        with pytest.raises(ValueError, match="out of range"):
            await client.send_message(b"x", stream=4)


@pytest.mark.kernel
async def test_stream_ids_and_ppids_make_the_round_trip_both_ways() -> None:
    async with kernel_pair() as (client, server, _):
        for stream, ppid in ((0, 0), (3, 46), (9, 2**32 - 1)):
            await client.send_message(b"to server %d" % stream, stream=stream, ppid=ppid)
            await server.send_message(bytearray(b"to client"), stream=9 - stream, ppid=ppid)
        assert await receive_messages(server, 3) == [
            Message(b"to server 0", 0, 0),
            Message(b"to server 3", 3, 46),
            Message(b"to server 9", 9, 2**32 - 1),
        ]
        assert await receive_messages(client, 3) == [
            Message(b"to client", 9, 0),
            Message(b"to client", 6, 46),
            Message(b"to client", 0, 2**32 - 1),
        ]


@pytest.mark.kernel
async def test_ppid_travels_in_network_byte_order() -> None:
    # A capture on lo (root in the VM): the DATA chunk carries 46 as 00 00 00 2e.
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    capture.bind(("lo", 0))
    capture.setblocking(False)
    with capture:
        async with kernel_pair() as (client, server, _):
            await client.send_message(b"diameter", stream=2, ppid=46)
            await receive_messages(server, 1)
        data_chunks = []
        while True:
            try:
                frame = capture.recv(65536)
            except BlockingIOError:
                break
            ip = frame[14:]
            if ip[0] >> 4 != 4 or ip[9] != 132:
                continue
            offset = (ip[0] & 0x0F) * 4 + 12  # past the IPv4 and SCTP common headers
            while offset + 4 <= len(ip):
                kind, _flags, length = struct.unpack_from("!BBH", ip, offset)
                if kind == 0:  # DATA: TSN, stream, SSN, PPID, payload
                    data_chunks.append(struct.unpack_from("!HHI", ip, offset + 8))
                offset += max(4, (length + 3) & ~3)
    assert (2, 0, 46) in data_chunks


@pytest.mark.kernel
async def test_a_pysctp_peer_sees_the_same_ppid() -> None:
    import sctp  # type: ignore[import-untyped,unused-ignore]

    listener = await listen_kernel(0, hosts="127.0.0.1")
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)
    with raw:
        raw.setblocking(False)
        with pytest.raises(BlockingIOError):
            raw.connect(("127.0.0.1", listener.port))
        server = await listener.accept()
        await trio.lowlevel.wait_writable(raw)
        peer = sctp.sctpsocket(socket.AF_INET, sctp.TCP_STYLE, raw)
        peer.sctp_send(b"from pysctp", ppid=46, stream=2)
        assert await server.receive() == Message(b"from pysctp", 2, 46)
        server.abort()
    await listener.aclose()


@pytest.mark.kernel
async def test_a_stream_reset_reaches_the_peer_after_the_streams_messages() -> None:
    async with kernel_pair() as (client, server, _):
        for i in range(3):
            await client.send_message(b"%d" % i * 5000, stream=2)
        assert await client.reset_outgoing_stream(2) is True
        assert await receive_messages(server, 3) == [Message(b"%d" % i * 5000, 2) for i in range(3)]
        assert await server.receive() == StreamReset((2,))
        # Both directions stay usable, and another reset (after the first) also works.
        await server.send_message(b"still here", stream=2)
        assert await receive_messages(client, 1) == [Message(b"still here", 2)]
        assert await client.reset_outgoing_stream(7) is True
        assert await server.receive() == StreamReset((7,))
        with pytest.raises(ValueError, match="out of range"):
            await client.reset_outgoing_stream(10)


@pytest.mark.kernel
async def test_the_unordered_flag_is_sent_and_reported() -> None:
    async with kernel_pair() as (client, server, _):
        await client.send_message(b"u", stream=1, unordered=True)
        await client.send_message(b"o", stream=1)
        assert await receive_messages(server, 2) == [
            Message(b"u", 1, 0, unordered=True),
            Message(b"o", 1, 0, unordered=False),
        ]


@pytest.mark.kernel
async def test_a_largest_tls_record_and_a_200_kib_message_arrive_whole() -> None:
    big = bytes(range(256)) * 800  # 204,800 bytes: several reads, partial delivery
    record = b"\x17" * MIN_MAX_MESSAGE_SIZE
    async with kernel_pair(server={"max_message_size": 300 * 1024}) as (client, server, _):

        async def send_all() -> None:
            # "after" waits for room until the server has read part of the big one.
            await client.send_message(record, stream=1, ppid=47)
            await client.send_message(big, stream=2)
            await client.send_message(b"after", stream=1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            received = await receive_messages(server, 3)
        assert received == [
            Message(record, 1, 47),
            Message(big, 2),
            Message(b"after", 1),
        ]


@pytest.mark.kernel
async def test_many_tasks_send_concurrently_on_different_streams() -> None:
    streams, per_stream, size = 8, 12, 16 * 1024  # 1.5 MiB: more than the socket buffers
    async with kernel_pair() as (client, server, _):

        async def sender(stream: int) -> None:
            for i in range(per_stream):
                await client.send_message(bytes([i]) * size, stream=stream, ppid=stream)

        async with trio.open_nursery() as nursery:
            for stream in range(streams):
                nursery.start_soon(sender, stream)
            received = await receive_messages(server, streams * per_stream)
    by_stream: dict[int, list[int]] = {}
    for message in received:
        assert message.ppid == message.stream and len(message.data) == size
        by_stream.setdefault(message.stream, []).append(message.data[0])
    assert by_stream == {stream: list(range(per_stream)) for stream in range(streams)}


@pytest.mark.kernel
async def test_an_abort_names_its_cause_for_the_peer() -> None:
    # The rest of what an abort does is in test_transport_contract.py.
    async with kernel_pair() as (client, server, _):
        client.abort()
        with pytest.raises(AssociationAbortedError, match="user-initiated abort"):
            await server.receive()


@pytest.mark.kernel
async def test_undelivered_messages_come_back_as_send_failed_before_the_abort() -> None:
    async with kernel_pair() as (client, server, _):
        # The server does not read: fill its window and our send buffer.
        sent = 0
        with trio.move_on_after(1.0):
            while True:
                await client.send_message(b"%08d" % sent + b"." * 60_000, stream=3, ppid=46)
                sent += 1
        server.abort()
        failed = []
        with pytest.raises(AssociationAbortedError):
            while True:
                event = await client.receive()
                assert isinstance(event, SendFailed), event
                failed.append(event)
    assert failed
    assert all(event.stream == 3 and event.ppid == 46 and event.error == 12 for event in failed)
    # Whatever the peer had not acknowledged: the last messages we sent, each once.
    numbers = sorted(int(event.data[:8]) for event in failed)
    assert numbers == list(range(sent - len(failed), sent))


@pytest.mark.kernel
async def test_multihomed_server_and_client_see_both_addresses() -> None:
    listener = await listen_kernel(0, hosts=["127.0.0.1", "127.0.0.2"])
    try:
        with trio.fail_after(TEST_DEADLINE):
            await check_multihoming(listener)
    finally:
        await listener.aclose()


async def check_multihoming(listener: KernelListener) -> None:
    """Both ends of an association with a multihomed listener see every address."""
    port = listener.port
    assert sorted(listener.addresses) == [("127.0.0.1", port), ("127.0.0.2", port)]
    client, server = await accept_and_connect(
        listener, ["127.0.0.1", "127.0.0.2"], local_addresses=["127.0.0.3", "127.0.0.4"]
    )
    try:
        assert sorted(client.peer_addresses) == [("127.0.0.1", port), ("127.0.0.2", port)]
        local_port = client.local_addresses[0][1]
        assert sorted(client.local_addresses) == [
            ("127.0.0.3", local_port),
            ("127.0.0.4", local_port),
        ]
        assert sorted(server.peer_addresses) == sorted(client.local_addresses)
        await client.send_message(b"multihomed", stream=0)
        assert await receive_messages(server, 1) == [Message(b"multihomed", 0)]
        # The server learnt 127.0.0.4 from the INIT, unconfirmed; its first heartbeat
        # (after about one initial RTO) confirms it.
        with trio.fail_after(15):
            event = await server.receive()
        assert isinstance(event, PeerAddressChange)
        assert (event.address, event.state) == (
            ("127.0.0.4", local_port),
            PeerAddressState.CONFIRMED,
        )
    finally:
        client.abort()
        server.abort()


@pytest.mark.kernel
async def test_ipv6_and_ipv4_clients_reach_a_wildcard_listener() -> None:
    listener = await listen_kernel(0)
    try:
        for host in ("::1", "127.0.0.1"):
            client, server = await accept_and_connect(listener, host)
            # The wildcard listener also lists its other addresses in the INIT-ACK.
            assert (host, listener.port) in client.peer_addresses
            await client.send_message(b"hello", stream=1, ppid=7)
            assert await server.receive() == Message(b"hello", 1, 7)
            await client.aclose()
            await server.aclose()
    finally:
        await listener.aclose()


@pytest.mark.kernel
async def test_connecting_to_a_closed_port_is_refused_naming_the_port() -> None:
    listener = await listen_kernel(0, hosts="127.0.0.1")
    port = listener.port
    await listener.aclose()
    with pytest.raises(ConnectionRefusedError) as info:
        await connect_kernel("127.0.0.1", port)
    assert f"nothing listens on SCTP port {port} at 127.0.0.1" in str(info.value)


@pytest.mark.kernel
def test_the_systems_defaults_are_what_docs_transports_md_says() -> None:
    # The kernel column of the knob table in docs/transports.md.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)
    with sock:
        assert read_timers(sock.fileno()) == Timers(
            heartbeat_interval=30.0,
            rto_initial=3.0,
            rto_min=1.0,
            rto_max=60.0,
            max_retransmissions=10,
            max_init_retransmissions=8,
        )


@pytest.mark.kernel
async def test_the_liveness_knobs_reach_both_associations() -> None:
    timers = Timers(
        heartbeat_interval=1.5,
        rto_initial=0.4,
        rto_min=0.3,
        rto_max=2.0,
        max_retransmissions=4,
        max_init_retransmissions=3,
    )
    async with kernel_pair(client={"timers": timers}, server={"timers": timers}) as (
        client,
        server,
        _,
    ):
        # Read back from the established associations: the server's was made by the
        # listening socket, so it inherited them.
        for end in (client, server):
            assert read_timers(end.fileno()) == timers
            raw = _Libc.getsockopt(end.fileno(), 132, 9, bytes(156), 156)
            assert _PADDRPARAMS.unpack(raw)[3] == 4  # spp_pathmaxrxt


@pytest.mark.kernel
async def test_only_rto_max_given_pulls_the_other_bounds_under_it() -> None:
    async with kernel_pair(client={"timers": Timers(rto_max=0.5)}) as (client, _server, _):
        timers = read_timers(client.fileno())
        assert (timers.rto_min, timers.rto_initial, timers.rto_max) == (0.5, 0.5, 0.5)


@pytest.mark.kernel
async def test_a_graceful_close_that_cannot_finish_aborts_after_the_timeout() -> None:
    async with kernel_pair() as (client, server, _):
        # The server does not read, so part of what we queue stays unacknowledged and
        # SHUTDOWN cannot even be sent.
        with trio.move_on_after(0.5):
            while True:
                await client.send_message(b"." * 60_000, stream=0)
        client.close_timeout = 0.2
        start = trio.current_time()
        await client.aclose()
        assert 0.2 <= trio.current_time() - start < 5
        with pytest.raises(AssociationAbortedError):
            while True:
                assert isinstance(await server.receive(), Message)


@pytest.mark.kernel
async def test_a_receive_cancelled_while_waiting_or_before_reading_loses_nothing() -> None:
    big = bytes(range(256)) * 800  # several reads: reassembled across recvmsg calls
    async with kernel_pair(server={"max_message_size": 300 * 1024}) as (client, server, _):
        with trio.move_on_after(0.05) as scope:
            await server.receive()  # nothing comes: cancelled while waiting
        assert scope.cancelled_caught
        await client.send_message(b"first", stream=1)
        await client.send_message(big, stream=2)
        await client.send_message(b"last", stream=3)
        assert await server.receive() == Message(b"first", 1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive()  # cancelled before it reads anything
        assert scope.cancelled_caught
        assert await receive_messages(server, 2) == [Message(big, 2), Message(b"last", 3)]


@pytest.mark.kernel
async def test_every_receive_is_a_checkpoint_whether_or_not_it_waits() -> None:
    async with kernel_pair() as (client, server, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive)  # waits, then returns without yielding again
            await trio.testing.wait_all_tasks_blocked()
            await client.send_message(b"wake", stream=0)
        for i in range(4):
            await client.send_message(b"m%d" % i, stream=0)
        for i in range(4):
            with trio.testing.assert_checkpoints():
                assert await server.receive() == Message(b"m%d" % i, 0)
        client.abort()
        with trio.testing.assert_checkpoints(), pytest.raises(AssociationAbortedError):
            while True:
                await server.receive()


@pytest.mark.kernel
async def test_receive_nowait_takes_what_is_ready_without_waiting() -> None:
    async with kernel_pair() as (client, server, _):
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        for i in range(3):
            await client.send_message(b"m%d" % i, stream=i)
        received: list[object] = [await server.receive()]
        while len(received) < 3:
            try:
                received.append(server.receive_nowait())
            except trio.WouldBlock:
                await trio.sleep(0.01)  # not there yet: loopback is fast, but not instant
        assert received == [Message(b"m%d" % i, i) for i in range(3)]
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                server.receive_nowait()
            await client.send_message(b"release", stream=0)
        client.abort()
        with pytest.raises(AssociationAbortedError):
            while True:
                try:
                    server.receive_nowait()
                except trio.WouldBlock:
                    await trio.sleep(0.01)
        server.abort()
        with pytest.raises(trio.ClosedResourceError):
            server.receive_nowait()
