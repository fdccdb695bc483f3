"""The in-process transport keeps SCTP's message semantics (see its module docstring)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from trio_sctls.sctp import AuthKeyError
from trio_sctls.transport import (
    Message,
    StreamReset,
)
from trio_sctls.transport._memory_auth import MemoryAuthKeys, Signature
from trio_sctls.transport.memory import connect_memory, listen_memory, memory_pair


async def test_stream_counts_are_negotiated_like_init_and_init_ack() -> None:
    client, server = memory_pair(
        client_outbound=4, client_max_inbound=6, server_outbound=10, server_max_inbound=10
    )
    assert (client.outbound_streams, client.inbound_streams) == (4, 6)
    assert (server.outbound_streams, server.inbound_streams) == (6, 4)


def test_stream_counts_outside_1_to_65535_are_refused_by_memory_pair() -> None:
    with pytest.raises(ValueError, match=r"must be in 1\.\.65535, not 0"):
        memory_pair(client_outbound=0)
    with pytest.raises(ValueError, match=r"must be in 1\.\.65535, not 65536"):
        memory_pair(server_max_inbound=65536)


async def test_a_listener_or_client_with_a_bad_stream_count_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match=r"must be in 1\.\.65535"):
        await listen_memory(0, max_inbound_streams=0)
    listener = await listen_memory(0)
    with pytest.raises(ValueError, match=r"must be in 1\.\.65535"):
        await connect_memory(listener.port, outbound_streams=70000)
    await listener.aclose()


async def test_messages_keep_stream_ppid_and_order() -> None:
    client, server = memory_pair()
    for i in range(5):
        await client.send_message(b"m%d" % i, stream=i % 2, ppid=46)
    got = [await server.receive() for _ in range(5)]
    assert got == [Message(b"m%d" % i, i % 2, 46) for i in range(5)]


async def test_a_delayed_stream_does_not_hold_back_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = memory_pair(client_delay=lambda stream: 5.0 if stream == 1 else 0.0)
    await client.send_message(b"slow", stream=1)
    await client.send_message(b"fast", stream=2)
    start = trio.current_time()
    first = await server.receive()
    assert first == Message(b"fast", 2) and trio.current_time() == start
    second = await server.receive()
    assert second == Message(b"slow", 1) and trio.current_time() == start + 5.0


async def test_the_window_pushes_back_on_a_sender_whose_peer_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = memory_pair(window=1000)
    await client.send_message(b"a" * 800, stream=0)
    with trio.move_on_after(60) as scope:  # the peer holds 800 of 1000 bytes
        await client.send_message(b"b" * 800, stream=0)
    assert scope.cancelled_caught
    assert await server.receive() == Message(b"a" * 800, 0)
    await client.send_message(b"b" * 800, stream=0)  # room again


async def test_stream_reset_follows_the_stream_data() -> None:
    client, server = memory_pair()
    await client.send_message(b"tail", stream=2)
    assert await client.reset_outgoing_stream(2)
    assert await server.receive() == Message(b"tail", 2)
    assert await server.receive() == StreamReset((2,))


async def test_listener_and_connect_pair_up_through_the_registry() -> None:
    listener = await listen_memory(0, outbound_streams=3, max_inbound_streams=5)
    with pytest.raises(OSError, match="in use"):
        await listen_memory(listener.port)
    client = await connect_memory(listener.port, outbound_streams=8, max_inbound_streams=2)
    server = await listener.accept()
    assert (client.outbound_streams, client.inbound_streams) == (5, 2)
    assert server.local_addresses == client.peer_addresses
    await listener.aclose()
    with pytest.raises(ConnectionRefusedError):
        await connect_memory(listener.port)
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()


async def test_receive_nowait_returns_what_is_due_and_would_block_otherwise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = memory_pair(client_delay=lambda stream: 5.0 if stream == 1 else 0.0)
    with pytest.raises(trio.WouldBlock):
        server.receive_nowait()
    await client.send_message(b"slow", stream=1)
    for i in range(3):
        await client.send_message(b"m%d" % i, stream=0)
    assert [server.receive_nowait() for _ in range(3)] == [Message(b"m%d" % i, 0) for i in range(3)]
    with pytest.raises(trio.WouldBlock):
        server.receive_nowait()  # the delayed message is not due yet
    assert await server.receive() == Message(b"slow", 1)
    # The window counts what receive_nowait took, too.
    assert server._inbox.buffered == 0


def test_the_simulated_key_table_refuses_what_the_cores_refuses() -> None:
    """The memory transport's SCTP-AUTH keys are the core's table (RFC 4895 section 6.1,
    RFC 6458 section 8.3), so a key schedule that works here works on udp too."""
    keys = MemoryAuthKeys()
    mistakes: list[Callable[[], None]] = [
        lambda: keys.activate_key(5),  # not installed
        lambda: keys.delete_key(0),  # the active key
        lambda: keys.deactivate_key(0),
        lambda: keys.add_key(70000, b"k"),  # ids are 16-bit
        lambda: keys.add_key(0, b"another secret for the active key"),
    ]
    for mistake in mistakes:
        with pytest.raises(AuthKeyError):
            mistake()
    keys.add_key(0, b"")  # the active key's own secret again: nothing changes
    keys.add_key(2, b"k")
    keys.deactivate_key(2)
    with pytest.raises(AuthKeyError, match="deactivated"):
        keys.activate_key(2)
    assert keys.key_ids == (0, 2) and keys.active_key_id == 0
    # A deactivated key still verifies what arrives until it is deleted.
    assert keys.verify(Signature(2, b"k"))
    keys.delete_key(2)
    assert not keys.verify(Signature(2, b"k")) and keys.dropped == 1
