"""The transport contract (the table in ``trio_sctls/transport/_base.py``), tested once and
run over every transport: memory, udp and kernel (the last inside the VM).

In the spirit of :func:`trio.testing.check_two_way_stream`: the ``connect`` fixture makes
a connected pair on the parametrized transport, and each test is one row of the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import pytest
import trio
import trio.testing

from trio_sctls import (
    AssociationAbortedError,
    AssociationLostError,
    PeerShutdownError,
    RemoteProtocolError,
)
from trio_sctls._options import TransportName, TransportOptions
from trio_sctls.impaired import DROP, Direction, impaired_link
from trio_sctls.transport import (
    MIN_MAX_MESSAGE_SIZE,
    Message,
    MessageListener,
    MessageTransport,
    ShutdownReceived,
    StreamReset,
)
from trio_sctls.transport._registry import (
    kernel_sctp_available,
    open_client,
    open_server,
    resolve,
)
from trio_sctls.transport.memory import MemoryTransport

#: A deadlock fails the test instead of hanging the (VM) run.
DEADLINE = 60
#: Big enough for any test message, small enough to exceed with one.
SMALL_LIMIT = MIN_MAX_MESSAGE_SIZE
LARGE_LIMIT = 4 * MIN_MAX_MESSAGE_SIZE
_Error = TypeVar("_Error", bound=BaseException)


@dataclass
class Pair:
    """A connected client and server transport, their listener, and a way to cut the
    network between them (``None`` where the transport offers none)."""

    client: MessageTransport
    server: MessageTransport
    listener: MessageListener
    cut: Callable[[], None] | None


Connect = Callable[..., AbstractAsyncContextManager[Pair]]


@asynccontextmanager
async def registry_pair(
    name: TransportName, client_max: int, server_max: int
) -> AsyncIterator[Pair]:
    """Both ends opened through the transport registry; on udp, through the impaired
    relay, whose black hole is the way to cut the network."""
    black_hole = False

    def hook(direction: Direction, index: int, datagram: bytes) -> Sequence[bytes] | None:
        return DROP if black_hole else None

    def cut() -> None:
        nonlocal black_hole
        black_hole = True

    udp = name == "udp"
    server_options = TransportOptions(
        transport=name, max_message_size=server_max, udp_port=0 if udp else None
    )
    async with (
        open_server(0, ("127.0.0.1",), server_options) as listener,
        AsyncExitStack() as stack,
    ):
        remote_udp_port = None
        if listener.udp_port is not None:
            link = await stack.enter_async_context(
                impaired_link(("127.0.0.1", listener.udp_port), hook=hook)
            )
            remote_udp_port = link.port
        client_options = TransportOptions(
            transport=name, max_message_size=client_max, remote_udp_port=remote_udp_port
        )
        # Every listener queues established associations until accepted.
        client = await stack.enter_async_context(
            open_client(("127.0.0.1",), listener.port, client_options)
        )
        server = await listener.accept()
        try:
            if isinstance(client, MemoryTransport):
                yield Pair(client, server, listener, client.lose)
            else:
                # Cutting kernel SCTP's network needs packet filtering in the VM.
                yield Pair(client, server, listener, cut if udp else None)
        finally:
            server.abort()


@pytest.fixture(params=["memory", "udp", pytest.param("kernel", marks=pytest.mark.kernel)])
def connect(request: pytest.FixtureRequest) -> Connect:
    """``async with connect(client_max=..., server_max=...) as pair`` on each transport."""
    name = request.param

    @asynccontextmanager
    async def connect(
        *, client_max: int = LARGE_LIMIT, server_max: int = LARGE_LIMIT, deadline: float = DEADLINE
    ) -> AsyncIterator[Pair]:
        with trio.fail_after(deadline):
            async with registry_pair(name, client_max, server_max) as pair:
                yield pair

    return connect


async def next_message(transport: MessageTransport) -> Message:
    """The next message, skipping notifications."""
    while True:
        item = await transport.receive()
        if isinstance(item, Message):
            return item


async def raises_each_time(
    error: type[_Error], call: Callable[[], Awaitable[object]]
) -> list[_Error]:
    """Check that ``call`` raises ``error``, and again when called again: the contract's
    outcomes stick. Returns both errors."""
    errors = []
    for _ in range(2):
        with pytest.raises(error) as info:
            await call()
        errors.append(info.value)
    return errors


async def test_send_after_the_peers_shutdown_raises_peer_shutdown_error(
    connect: Connect,
) -> None:
    async with connect() as pair:
        await pair.client.aclose()
        await raises_each_time(
            PeerShutdownError, lambda: pair.server.send_message(b"too late", stream=0)
        )


async def test_receive_after_the_peers_shutdown_returns_the_messages_then_shutdown_then_end(
    connect: Connect,
) -> None:
    async with connect() as pair:
        for i in range(3):
            await pair.client.send_message(b"last words %d" % i, stream=i)
        await pair.client.aclose()
        for i in range(3):
            assert await pair.server.receive() == Message(b"last words %d" % i, i)
        assert await pair.server.receive() == ShutdownReceived()
        await raises_each_time(trio.EndOfChannel, pair.server.receive)


async def test_the_peers_abort_ends_receive_after_what_came_before_and_fails_send(
    connect: Connect,
) -> None:
    async with connect() as pair:
        await pair.client.send_message(b"before the abort", stream=1)
        assert await pair.server.receive() == Message(b"before the abort", 1)
        pair.client.abort("going away")
        for error in await raises_each_time(AssociationAbortedError, pair.server.receive):
            if pair.client.kind != "kernel":  # Linux cannot send a reason (see kernel.py)
                assert "going away" in str(error)
        await raises_each_time(
            AssociationAbortedError, lambda: pair.server.send_message(b"x", stream=0)
        )


@pytest.mark.parametrize("connect", ["memory", "udp"], indirect=True)
async def test_a_lost_association_raises_association_lost_error_on_receive_and_send(
    connect: Connect, autojump_clock: trio.testing.MockClock
) -> None:
    # Kernel SCTP runs this row in tests/test_dead_peers.py
    # (test_kernel_a_silently_vanished_peer_is_lost_on_both_ends_within_30_s): its
    # timers run in real time, not on this clock, so the VM's loopback is cut with
    # netem there and the liveness knobs are turned down.
    # RFC 9260's retransmission limits take minutes (of the autojump clock).
    async with connect(deadline=3600) as pair:
        assert pair.cut is not None
        await pair.client.send_message(b"before", stream=0)
        assert await pair.server.receive() == Message(b"before", 0)
        pair.cut()
        # Data in flight makes the sender notice (T3-rtx up to Association.Max.Retrans);
        # a transport may notice at once.
        with contextlib.suppress(AssociationLostError):
            await pair.client.send_message(b"into the void", stream=0)
        for transport in (pair.client, pair.server):
            with pytest.raises(AssociationLostError):
                await transport.receive()
            with pytest.raises(AssociationLostError):
                await transport.send_message(b"x", stream=0)


@pytest.mark.parametrize("how", ["aclose", "abort"])
async def test_after_our_own_close_every_call_raises_closed_resource_error(
    connect: Connect, how: str
) -> None:
    async with connect() as pair:
        transport = pair.client
        if how == "aclose":
            await transport.aclose()
        else:
            transport.abort()
        with pytest.raises(trio.ClosedResourceError):
            await transport.receive()
        with pytest.raises(trio.ClosedResourceError):
            transport.receive_nowait()
        with pytest.raises(trio.ClosedResourceError):
            await transport.send_message(b"x", stream=0)
        with pytest.raises(trio.ClosedResourceError):
            await transport.reset_outgoing_stream(0)
        with pytest.raises(trio.ClosedResourceError):
            await transport.wait_sender_dry()


@asynccontextmanager
async def blocked_until_closed(
    call: Callable[[], Awaitable[object]],
) -> AsyncIterator[trio.Nursery]:
    """Run ``call`` in a task until it blocks; the body closes what it waits on, and on
    leaving, the call must have ended in ``trio.ClosedResourceError``."""

    async def blocked() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await call()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked)
        await trio.testing.wait_all_tasks_blocked()
        yield nursery


@pytest.mark.parametrize("how", ["aclose", "abort"])
async def test_closing_wakes_a_blocked_receiver_with_closed_resource_error(
    connect: Connect, how: str
) -> None:
    async with connect() as pair, blocked_until_closed(pair.client.receive) as nursery:
        if how == "aclose":
            nursery.start_soon(pair.client.aclose)
            # The server must not hold the close up: it reads the SHUTDOWN.
            with pytest.raises(trio.EndOfChannel):
                while True:
                    await pair.server.receive()
        else:
            pair.client.abort()


async def test_bad_arguments_raise_value_error_and_send_nothing(connect: Connect) -> None:
    async with connect(client_max=SMALL_LIMIT) as pair:
        client = pair.client
        for kwargs, match in (
            ({"data": b"x", "stream": client.outbound_streams}, "out of range"),
            ({"data": b"x", "stream": -1}, "out of range"),
            ({"data": b"", "stream": 0}, "empty"),
            ({"data": b"x", "stream": 0, "ppid": 2**32}, "32 bits"),
            ({"data": b"x", "stream": 0, "ppid": -1}, "32 bits"),
            ({"data": b"x" * (SMALL_LIMIT + 1), "stream": 0}, "max_message_size"),
        ):
            with pytest.raises(ValueError, match=match):
                await client.send_message(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out of range"):
            await client.reset_outgoing_stream(client.outbound_streams)
        await client.send_message(b"still fine", stream=0)
        assert await pair.server.receive() == Message(b"still fine", 0)


async def test_a_message_over_our_limit_from_the_peer_makes_us_abort(connect: Connect) -> None:
    async with connect(server_max=SMALL_LIMIT) as pair:
        await pair.client.send_message(b"x" * (SMALL_LIMIT + 1), stream=2)
        await raises_each_time(RemoteProtocolError, pair.server.receive)
        with pytest.raises(AssociationAbortedError):
            await next_message(pair.client)


async def test_a_message_over_the_peers_limit_is_sent_and_the_peer_aborts(
    connect: Connect,
) -> None:
    async with connect(server_max=SMALL_LIMIT) as pair:
        # Within our limit, so no ValueError: the peer's limit is the peer's business.
        await pair.client.send_message(b"x" * (SMALL_LIMIT + 1), stream=0)
        with pytest.raises(RemoteProtocolError):
            await pair.server.receive()
        with pytest.raises(AssociationAbortedError):
            await next_message(pair.client)
        with pytest.raises(AssociationAbortedError):
            await pair.client.send_message(b"x", stream=0)


async def test_receive_nowait_takes_only_what_is_ready_and_loses_or_reorders_nothing(
    connect: Connect,
) -> None:
    # How the demux drains a batch: one receive(), then receive_nowait() until it would
    # block. Interleaved, the two deliver every message once, in order.
    async with connect() as pair:
        with pytest.raises(trio.WouldBlock):
            pair.server.receive_nowait()
        for i in range(6):
            await pair.client.send_message(b"batch %d" % i, stream=0)
        received = [await next_message(pair.server)]
        while len(received) < 6:
            try:
                item = pair.server.receive_nowait()
            except trio.WouldBlock:
                item = await pair.server.receive()
            if isinstance(item, Message):
                received.append(item)
        assert received == [Message(b"batch %d" % i, 0) for i in range(6)]
        with pytest.raises(trio.WouldBlock):
            pair.server.receive_nowait()


async def test_once_the_sender_is_dry_the_peer_holds_every_message_sent(
    connect: Connect,
) -> None:
    # wait_sender_dry() returns once the peer acknowledged everything: then all of it
    # is in the peer's receive queue, ready without waiting, whatever the stream.
    async with connect() as pair:
        await pair.client.wait_sender_dry()  # nothing sent yet: dry at once
        sent = [Message(b"m%d" % i * 700, i % 3, ppid=i) for i in range(12)]
        for message in sent:
            await pair.client.send_message(message.data, stream=message.stream, ppid=message.ppid)
        await pair.client.wait_sender_dry()
        received = []
        with contextlib.suppress(trio.WouldBlock):
            while True:
                item = pair.server.receive_nowait()
                if isinstance(item, Message):
                    received.append(item)
        assert received == sent


async def test_wait_sender_dry_raises_when_the_peer_aborts_first(
    connect: Connect,
) -> None:
    async with connect() as pair:
        await pair.client.send_message(b"x", stream=0)
        pair.server.abort()
        with pytest.raises(AssociationAbortedError):  # receive() sees the ABORT arrive
            await next_message(pair.client)
        with pytest.raises(AssociationAbortedError):
            await pair.client.wait_sender_dry()


@pytest.mark.parametrize("connect", ["udp"], indirect=True)
async def test_aborting_wakes_a_task_waiting_for_the_sender_to_dry(connect: Connect) -> None:
    # The network is cut (udp's relay can), so what was sent stays unacknowledged and
    # the wait blocks until our abort wakes it.
    async with connect() as pair:
        assert pair.cut is not None
        pair.cut()
        await pair.client.send_message(b"never acknowledged", stream=0)
        async with blocked_until_closed(pair.client.wait_sender_dry):
            pair.client.abort()


async def test_two_tasks_in_receive_or_accept_at_once_is_a_busy_resource_error(
    connect: Connect,
) -> None:
    async with connect() as pair, trio.open_nursery() as nursery:
        nursery.start_soon(pair.server.receive)
        nursery.start_soon(pair.listener.accept)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await pair.server.receive()
        with pytest.raises(trio.BusyResourceError):
            pair.server.receive_nowait()
        with pytest.raises(trio.BusyResourceError):
            await pair.listener.accept()
        nursery.cancel_scope.cancel()


async def test_closing_the_listener_wakes_a_blocked_accept_with_closed_resource_error(
    connect: Connect,
) -> None:
    async with connect() as pair:
        async with blocked_until_closed(pair.listener.accept):
            await pair.listener.aclose()
        await pair.listener.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await pair.listener.accept()


async def test_a_cancelled_send_queues_nothing_and_a_cancelled_receive_loses_nothing(
    connect: Connect,
) -> None:
    async with connect() as pair:
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await pair.client.send_message(b"never sent", stream=0)
        with trio.move_on_after(0.01):
            await pair.server.receive()
        await pair.client.send_message(b"the only one", stream=0)
        assert await pair.server.receive() == Message(b"the only one", 0)


async def test_every_call_is_a_checkpoint(connect: Connect) -> None:
    async with connect() as pair:
        with trio.testing.assert_checkpoints():
            await pair.client.send_message(b"one", stream=0)
        await trio.testing.wait_all_tasks_blocked()
        with trio.testing.assert_checkpoints():
            assert await pair.server.receive() == Message(b"one", 0)
        with trio.testing.assert_checkpoints():
            await pair.client.reset_outgoing_stream(0)
        if pair.client.kind != "kernel":  # Linux's reconf_enable is off by default
            assert await pair.server.receive() == StreamReset((0,))
        with trio.testing.assert_checkpoints():
            await pair.client.aclose()
        with trio.testing.assert_checkpoints():
            await pair.client.aclose()
        for call in (pair.client.receive, lambda: pair.client.send_message(b"x", stream=0)):
            with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
                await call()


async def test_abort_is_sync_and_idempotent_and_its_reason_reaches_the_peer(
    connect: Connect,
) -> None:
    async with connect() as pair:
        assert pair.server.abort("bye now") is None  # type: ignore[func-returns-value]
        pair.server.abort("again")
        pair.server.abort()
        with pytest.raises(AssociationAbortedError) as info:
            await next_message(pair.client)
        if pair.server.kind != "kernel":  # Linux cannot send a reason (see kernel.py)
            assert "bye now" in str(info.value)


async def test_aclose_is_graceful_and_idempotent_and_aborts_when_cancelled(
    connect: Connect,
) -> None:
    async with connect() as graceful:
        await graceful.client.aclose()
        await graceful.client.aclose()
        assert await graceful.server.receive() == ShutdownReceived()
    async with connect() as cancelled:
        with trio.CancelScope() as scope:
            scope.cancel()
            await cancelled.client.aclose()
        with pytest.raises(AssociationAbortedError):
            await next_message(cancelled.server)


def test_the_registry_resolves_auto_by_what_this_kernel_has() -> None:
    assert resolve("auto") == ("kernel" if kernel_sctp_available() else "udp")
    assert [resolve(name) for name in ("memory", "udp", "kernel")] == ["memory", "udp", "kernel"]
    with pytest.raises(ValueError, match="unknown transport"):
        resolve("tcp")  # type: ignore[arg-type]
