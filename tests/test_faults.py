"""Faults: a peer that vanishes, a network that drops everything, an application that
cancels in the middle of things. After each, the association is typed-broken or still
usable, and nothing is left behind (tests/hygiene.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_sctls import (
    AssociationAbortedError,
    AssociationError,
    AssociationLostError,
    HandshakeError,
    SecureAssociation,
    run_association,
)
from trio_sctls._api import TransportName
from trio_sctls.impaired import DROP, Direction, impaired_link
from trio_sctls.transport import MessageTransport
from trio_sctls.transport.memory import memory_pair
from trio_sctls.transport.udp import open_udp_listener, open_udp_transport

from .conftest import association_pair, checked_pair, connect, server_context, wrap_client
from .hygiene import no_leaks

#: For tests of our own logic, which the kernel run (in the VM) would only repeat.
MEMORY_AND_UDP = pytest.mark.parametrize("transport", ["memory", "udp"], indirect=True)


async def test_the_peer_aborting_mid_transfer_is_typed_on_every_channel(
    transport: TransportName,
) -> None:
    async with checked_pair(transport, outbound_streams=3) as pair:
        client = pair.client

        async def endless_send() -> None:
            with pytest.raises(AssociationAbortedError):
                while True:
                    await client.channels[1].send_all(b"x" * 4096)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(endless_send)
            assert await pair.server.channels[1].receive_some()
            pair.server.transport.abort()
        for i in (0, 2):
            with pytest.raises(AssociationAbortedError):
                await client.channels[i].receive_some()
        # Channel 1's SSLStream failed a send already: Trio's own broken state then
        # says only BrokenResourceError; the association keeps the typed error.
        with pytest.raises(trio.BrokenResourceError):
            await client.channels[1].receive_some()
        assert isinstance(client.error, AssociationAbortedError)


async def test_the_peer_vanishing_mid_handshake_fails_the_set_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A memory peer that goes without a word (its end closed, no ABORT, no SHUTDOWN
    # answered): the client's handshake timeout ends it, typed.
    client_transport, server_transport = memory_pair(client_outbound=2, server_outbound=2)
    async with no_leaks():
        with pytest.raises(AssociationError):
            async with wrap_client(client_transport, handshake_timeout=5):
                pytest.fail("the association must not open")  # pragma: no cover
    del server_transport


@asynccontextmanager
async def black_hole_link() -> AsyncIterator[tuple[MessageTransport, MessageTransport, trio.Event]]:
    """A client's and a server's SCTP-over-UDP transports, joined through an impaired
    relay that drops every datagram, both ways, once the event yielded with them is set."""
    black_hole = trio.Event()

    def hook(direction: Direction, index: int, datagram: bytes) -> Sequence[bytes] | None:
        return DROP if black_hole.is_set() else None

    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener,
        impaired_link(("127.0.0.1", listener.udp_port), hook=hook) as link,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=link.port) as sctp,
    ):
        yield sctp, await listener.accept(), black_hole


async def test_a_network_that_drops_everything_loses_the_association_on_both_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        no_leaks(),
        black_hole_link() as (client_transport, server_transport, black_hole),
        trio.open_nursery() as nursery,
    ):
        server = SecureAssociation(server_transport, server_context(), server_side=True)
        await nursery.start(run_association, server)
        async with wrap_client(client_transport) as client:
            await client.channels[0].send_all(b"before")
            assert await server.channels[0].receive_some() == b"before"
            black_hole.set()
            await server.channels[1].send_all(b"into the void")
            with pytest.raises(AssociationLostError):
                await client.channels[0].send_all(b"into the void")
                await client.channels[2].receive_some()
            with pytest.raises(AssociationLostError):
                await server.channels[2].receive_some()
            assert isinstance(client.error, AssociationLostError)
            assert isinstance(server.error, AssociationLostError)


# -- cancellation -----------------------------------------------------------------------


@MEMORY_AND_UDP
async def test_cancelled_receive_and_send_leave_the_association_usable(
    transport: TransportName,
) -> None:
    async with checked_pair(transport, outbound_streams=2) as pair:
        client, server = pair.client, pair.server
        with trio.move_on_after(0.01):
            await client.channels[0].receive_some()
        await server.channels[0].send_all(b"after a cancelled read")
        assert await client.channels[0].receive_some() == b"after a cancelled read"
        # A cancelled send_all breaks that channel (as for any trio.SSLStream, the
        # record may be half-written) but not the association nor the other channel.
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.channels[1].send_all(b"y" * 100_000)
        await client.channels[0].send_all(b"other channel fine")
        assert await server.channels[0].receive_some() == b"other channel fine"
        assert client.error is None


@MEMORY_AND_UDP
async def test_cancelling_open_association_mid_handshake_leaves_nothing(
    transport: TransportName, autojump_clock: trio.testing.MockClock
) -> None:
    # A server that accepts the association but never answers a ClientHello.
    from trio_sctls import open_listener

    async with no_leaks(), open_listener(0, host="127.0.0.1", transport=transport) as listener:
        with trio.move_on_after(3) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.accept)
                async with connect(transport, listener.port):
                    pytest.fail("opened")  # pragma: no cover
        assert scope.cancelled_caught


async def test_the_peer_vanishing_mid_handshake_over_udp(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # SCTP is up, then nothing the client sends gets an answer (no SACK, no TLS).
    async with no_leaks(), black_hole_link() as (sctp, _, black_hole):
        black_hole.set()
        with pytest.raises(HandshakeError) as info:
            async with wrap_client(sctp, handshake_timeout=5):
                pytest.fail("the association must not open")  # pragma: no cover
        assert info.value.stream is not None


async def test_a_consumer_that_stops_reading_one_channel_under_pause(
    transport: TransportName,
) -> None:
    # The documented "pause" policy: memory stays bounded by the budget (the demux stops
    # reading the association), nothing is lost, and the association recovers when the
    # reader comes back.
    budget = 32 * 1024
    payload = bytes(range(256)) * 1024  # 256 KiB, 8 budgets
    async with (
        no_leaks(),
        association_pair(
            transport, client_options={"outbound_streams": 3, "stream_budget": budget}
        ) as pair,
    ):
        client, server = pair.client, pair.server
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.channels[1].send_all, payload)
            with trio.fail_after(30):  # a safety net for a hang, not a timing
                while client.statistics().paused_by != 1:  # noqa: ASYNC110 (a snapshot)
                    await trio.sleep(0.001)
            # One message (a TLS record, at most 16 KiB + overhead) past the budget.
            assert client.statistics().buffered_per_stream[1] <= budget + 17 * 1024
            assert client.error is None
            got = bytearray()
            while len(got) < len(payload):
                got += await client.channels[1].receive_some()
        assert got == payload
        await echo(server.channels[2], client.channels[2])
        assert client.error is None


async def echo(sender: trio.abc.Stream, receiver: trio.abc.Stream) -> None:
    await sender.send_all(b"later")
    assert await receiver.receive_some() == b"later"


@MEMORY_AND_UDP
async def test_a_cancelled_lazy_handshake_leaves_the_other_channels_usable(
    transport: TransportName,
) -> None:
    async with (
        no_leaks(),
        association_pair(
            transport, client_options={"outbound_streams": 3, "handshake": "lazy"}
        ) as pair,
    ):
        client, server = pair.client, pair.server
        with trio.CancelScope() as scope:
            scope.cancel()
            await client.channels[1].do_handshake()
        with trio.move_on_after(0.001):
            await client.channels[2].do_handshake()
        # Whatever state channels 1 and 2 were left in, the association and the
        # untouched channel work.
        await client.channels[0].send_all(b"fine")
        assert await server.channels[0].receive_some() == b"fine"
        assert client.error is None and server.error is None
