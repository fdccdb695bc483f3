"""The server: where a peer's failure ends and a handler's bug begins, the limits, the
handshake timeout for associations that never finish TLS, and graceful shutdown.

On the memory transport with the autojump clock: timeouts of seconds run in
milliseconds. The hostile clients on every transport are in test_hostile_clients.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

import trio_sctls
from trio_sctls import (
    AssociationError,
    MessageTransport,
    SecureAssociation,
    SecureListener,
    ServerOptions,
    serve,
    serve_sctp,
)

from .conftest import connect, server_context
from .test_hostile_clients import echo_each_channel


@dataclass
class Server:
    """A server running in the background, and how to stop it."""

    listener: SecureListener
    scope: trio.CancelScope
    stopped: trio.Event
    error: list[BaseException]

    async def stop(self) -> float:
        """Cancel ``serve``; returns how long it took to return (virtual seconds)."""
        started = trio.current_time()
        self.scope.cancel()
        await self.stopped.wait()
        return trio.current_time() - started


@asynccontextmanager
async def running(handler: Any, **options: Any) -> AsyncIterator[Server]:
    """``serve(handler)`` on memory in the background for the block, with ``options``;
    a handler's bug is kept in ``Server.error`` rather than raised."""
    scope = trio.CancelScope()
    stopped = trio.Event()
    error: list[BaseException] = []

    async def run(task_status: trio.TaskStatus[SecureListener]) -> None:
        try:
            with scope:
                await serve(
                    handler,
                    0,
                    ssl_context=server_context(),
                    host="127.0.0.1",
                    transport="memory",
                    task_status=task_status,
                    **options,
                )
        except Exception as exc:
            error.append(exc)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(run)
        yield Server(listener, scope, stopped, error)
        scope.cancel()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def echo_once(association: SecureAssociation, stream: int = 0) -> None:
    """Send on one channel and check the echo."""
    channel = association.channels[stream]
    await channel.send_all(b"hello %d" % stream)
    assert await channel.receive_some() == b"hello %d" % stream


# -- failure isolation ---------------------------------------------------------------------


async def nested_handler(association: SecureAssociation) -> None:
    """A handler whose channel tasks live two nurseries deep."""

    async def echo(channel: trio_sctls.Channel) -> None:
        while data := await channel.receive_some():
            await channel.send_all(data)

    async with trio.open_nursery() as outer:
        for half in (association.channels[:2], association.channels[2:]):

            async def run_half(channels: list[trio_sctls.Channel]) -> None:
                async with trio.open_nursery() as inner:
                    for channel in channels:
                        inner.start_soon(echo, channel)

            outer.start_soon(run_half, half)


@pytest.mark.parametrize("handler", [echo_each_channel, nested_handler])
async def test_a_peer_abort_ends_only_its_association_and_is_logged_once(
    handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_sctls")
    async with (
        running(handler) as server,
        connect("memory", server.listener.port) as doomed,
    ):
        await echo_once(doomed, 1)
        doomed.abort("goodbye")
        async with connect("memory", server.listener.port) as good:
            await echo_once(good, 3)
        assert not server.error
    ended = [r for r in caplog.records if r.getMessage().startswith("association from")]
    assert len(ended) == 1, [r.getMessage() for r in ended]
    assert ended[0].levelno == logging.INFO
    assert "memory:" in ended[0].getMessage() and "aborted" in ended[0].getMessage()


async def test_a_bug_in_the_handler_stops_the_server() -> None:
    async def buggy(association: SecureAssociation) -> None:
        await association.channels[0].receive_some()
        raise ZeroDivisionError("a bug")

    async with (
        running(buggy) as server,
        connect("memory", server.listener.port) as client,
    ):
        await client.channels[0].send_all(b"boom")
        with pytest.raises(AssociationError):
            await client.channels[0].receive_some()
        await server.stopped.wait()
    assert [type(leaf) for leaf in _leaves(server.error[0])] == [ZeroDivisionError]


async def test_a_bug_mixed_with_peer_failures_still_stops_the_server() -> None:
    async def buggy(association: SecureAssociation) -> None:
        async def fail_on_peer(channel: trio_sctls.Channel) -> None:
            await channel.receive_some()

        async def wait_then_fail() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise KeyError("cleanup bug")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_then_fail)
            nursery.start_soon(fail_on_peer, association.channels[0])

    async with (
        running(buggy) as server,
        connect("memory", server.listener.port) as client,
    ):
        client.abort()
        await server.stopped.wait()
    kinds = {type(leaf) for leaf in _leaves(server.error[0])}
    assert KeyError in kinds


# -- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", [{"max_associations": 2}, {"max_associations_per_peer": 2}], ids=str
)
async def test_an_association_over_a_limit_is_aborted_and_not_counted(
    limit: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    # (On memory every peer has the same address, so the per-peer limit applies too.)
    caplog.set_level(logging.INFO, logger="trio_sctls")
    async with running(echo_each_channel, **limit) as server:
        port = server.listener.port
        async with connect("memory", port) as first, connect("memory", port) as second:
            for _attempt in range(2):
                with pytest.raises(AssociationError):
                    async with connect("memory", port) as third:
                        await echo_once(third)
            await echo_once(first)
            await echo_once(second)
        async with connect("memory", port) as later:
            await echo_once(later)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2
    assert all(r.levelno == logging.WARNING and "limit of 2" in r.getMessage() for r in refused)


def test_server_options_are_validated() -> None:
    with pytest.raises(ValueError, match="max_associations"):
        ServerOptions(max_associations=0)
    with pytest.raises(ValueError, match="max_associations_per_peer"):
        ServerOptions(max_associations_per_peer=-1)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        ServerOptions(shutdown_timeout=-1.0)
    assert ServerOptions().shutdown_timeout == 5.0


async def test_serve_refuses_unknown_keywords() -> None:
    with pytest.raises(TypeError, match="max_association"):
        await serve(
            echo_each_channel,
            0,
            ssl_context=server_context(),
            transport="memory",
            max_association=3,  # type: ignore[call-arg]
        )


# -- the handshake timeout -----------------------------------------------------------------


async def test_a_plain_association_that_never_speaks_is_closed_at_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(echo_each_channel, handshake_timeout=7.0) as server,
        trio_sctls.open_transport("127.0.0.1", server.listener.port, transport="memory") as sctp,
    ):
        started = trio.current_time()
        with pytest.raises(AssociationError):
            await sctp.receive()
        assert 7.0 <= trio.current_time() - started < 7.5


async def test_a_lazy_client_that_never_uses_a_channel_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(echo_each_channel, handshake_timeout=4.0) as server,
        connect("memory", server.listener.port, handshake="lazy") as client,
    ):
        await trio.sleep(5.0)
        with pytest.raises(AssociationError):
            await echo_once(client)


async def test_a_handshake_that_starts_and_never_finishes_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(echo_each_channel, handshake_timeout=3.0) as server,
        trio_sctls.open_transport("127.0.0.1", server.listener.port, transport="memory") as sctp,
    ):
        await trio.sleep(2.0)
        # The start of a ClientHello record, never completed.
        await sctp.send_message(b"\x16\x03\x01\x02\x00\x01\x00", stream=0)
        started = trio.current_time()
        with pytest.raises(AssociationError):
            await sctp.receive()
        # From the first byte, not from the association's start.
        assert 3.0 <= trio.current_time() - started < 3.5


# -- graceful shutdown ---------------------------------------------------------------------


async def test_cancelling_serve_closes_associations_with_close_notify(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(echo_each_channel, shutdown_timeout=3.0) as server,
        connect("memory", server.listener.port) as client,
    ):
        for stream in range(len(client.channels)):
            await echo_once(client, stream)
        async with trio.open_nursery() as nursery:
            took: list[float] = []

            async def stop() -> None:
                took.append(await server.stop())

            nursery.start_soon(stop)
            # Every channel ends cleanly: the server's close_notify. The client
            # answers with its own, as the README's handler does.
            for channel in client.channels:
                assert await channel.receive_some() == b""
            await client.aclose()
        assert took[0] < 3.0
        assert client.error is None
        assert not server.error


async def test_shutdown_aborts_what_does_not_close_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        running(echo_each_channel, shutdown_timeout=2.0, close_timeout=30.0) as server,
        connect("memory", server.listener.port) as client,
    ):
        await echo_once(client)
        # The client reads nothing, so it never answers the server's close_notify.
        took = await server.stop()
        assert 2.0 <= took < 2.5
        await trio.sleep(0.1)
        with pytest.raises(AssociationError, match="the server is shutting down"):
            await client.channels[0].send_all(b"too late")
        client.abort()


async def test_cancelling_serve_sctp_shuts_plain_associations_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def echo(transport: MessageTransport) -> None:
        while True:
            message = await transport.receive()
            if isinstance(message, trio_sctls.Message):
                await transport.send_message(message.data, stream=message.stream)

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[Any]) -> None:
            with scope:
                await serve_sctp(
                    echo, 0, host="127.0.0.1", transport="memory", task_status=task_status
                )

        listener = await nursery.start(run)
        async with trio_sctls.open_transport(
            "127.0.0.1", listener.port, transport="memory"
        ) as sctp:
            await sctp.send_message(b"hi", stream=2)
            reply = await sctp.receive()
            assert isinstance(reply, trio_sctls.Message) and reply.data == b"hi"
            scope.cancel()
            # The server's SHUTDOWN: the end of the association, not an abort.
            with pytest.raises((trio.EndOfChannel, trio_sctls.PeerShutdownError)):
                while True:
                    await sctp.receive()


async def test_leaving_a_secure_listener_block_closes_gracefully() -> None:
    async with (
        trio.open_nursery() as nursery,
        trio_sctls.open_secure_listener(
            0, ssl_context=server_context(), host="127.0.0.1", transport="memory"
        ) as listener,
    ):

        async def client_side() -> None:
            async with connect("memory", listener.port) as client:
                await client.channels[0].send_all(b"ping")
                assert await client.channels[0].receive_some() == b"pong"
                # The server's close_notify, when its listener's block ends.
                assert await client.channels[0].receive_some() == b""

        nursery.start_soon(client_side)
        server_end = await listener.accept()
        assert listener.open_associations == 1
        assert await server_end.channels[0].receive_some() == b"ping"
        await server_end.channels[0].send_all(b"pong")
    assert server_end.error is None
    assert server_end.statistics().state == "closed"


def test_serve_keeps_its_signature() -> None:
    import inspect

    for function in (serve, serve_sctp):
        parameters = inspect.signature(function).parameters
        assert list(parameters)[:2] == ["handler", "port"]
        assert "server_options" in parameters and "task_status" in parameters
