"""The public entry points: secure associations and plain SCTP, client and server."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from ._association import (
    DEFAULT_ASSOCIATION_BUDGET,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_STREAM_BUDGET,
    HandshakeStrategy,
    OverflowPolicy,
    SecureAssociation,
    default_session_cache,
    run_association,
)
from ._tls import SessionCache
from .transport import DEFAULT_MAX_MESSAGE_SIZE, MessageListener, MessageTransport

log = logging.getLogger("trio_sctls")

TransportName = Literal["auto", "kernel", "memory"]

Hosts = str | Sequence[str] | None


def kernel_sctp_available() -> bool:
    """Whether this kernel can create SCTP sockets (Linux with the ``sctp`` module)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except (OSError, AttributeError):
        return False
    sock.close()
    return True


def resolve_transport(transport: TransportName) -> Literal["kernel", "memory"]:
    """Turn ``"auto"`` into what it means here: kernel SCTP where the kernel has it,
    otherwise the in-process transport (which only reaches peers in this process)."""
    if transport == "auto":
        return "kernel" if kernel_sctp_available() else "memory"
    if transport not in ("kernel", "memory"):
        raise ValueError(f"unknown transport {transport!r}; use 'auto', 'kernel' or 'memory'")
    return transport


async def connect_transport(
    host: Hosts,
    port: int,
    *,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    local_addresses: Sequence[str] | None = None,
) -> MessageTransport:
    """Establish a plain SCTP association and return its transport (caller owns it)."""
    kind = resolve_transport(transport)
    if kind == "memory":
        from .transport.memory import connect_memory

        return await connect_memory(
            port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        )
    from .transport.kernel import connect_kernel  # type: ignore[import-not-found,unused-ignore]

    if host is None:
        host = "127.0.0.1"
    return await connect_kernel(
        host,
        port,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        local_addresses=local_addresses,
    )


async def listen_transport(
    port: int,
    *,
    host: Hosts = None,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> MessageListener:
    """Create a listener for plain SCTP associations (caller owns it)."""
    kind = resolve_transport(transport)
    if kind == "memory":
        from .transport.memory import listen_memory

        return await listen_memory(
            port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        )
    from .transport.kernel import listen_kernel  # type: ignore[import-not-found,unused-ignore]

    return await listen_kernel(
        port,
        hosts=host,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
    )


@asynccontextmanager
async def open_association(
    host: Hosts,
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None = None,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    handshake: HandshakeStrategy = "parallel",
    local_addresses: Sequence[str] | None = None,
    session_cache: SessionCache | None = default_session_cache,
    ppid: int = 0,
    stream_budget: int = DEFAULT_STREAM_BUDGET,
    association_budget: int = DEFAULT_ASSOCIATION_BUDGET,
    overflow: OverflowPolicy = "pause",
    plain_streams: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    handshake_timeout: float = 30.0,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ticket_timeout: float | None = None,
) -> AsyncIterator[SecureAssociation]:
    """Open an SCTP association to ``host``:``port`` and run TLS on every bidirectional
    stream (RFC 3436), as the TLS client.

    Example::

        async with open_association("127.0.0.1", 5868, ssl_context=ctx,
                                    server_hostname="peer.example") as assoc:
            await assoc.channels[0].send_all(b"hello")

    Args:
        host: the server's address, or several (multihoming); ignored by the memory
            transport.
        port: the server's SCTP port.
        ssl_context: a client context (``ssl.create_default_context()`` or similar).
        server_hostname: the name to verify in the server's certificate.
        transport: ``"kernel"`` (Linux SCTP), ``"memory"`` (in-process peers only) or
            ``"auto"`` (kernel where available, memory otherwise).
        outbound_streams: streams we ask for.
        max_inbound_streams: the most streams we accept from the peer.
        handshake: ``"parallel"``, ``"resume"`` or ``"lazy"`` (see the module docs of
            :mod:`trio_sctls._association`).
        local_addresses: local addresses to bind (multihoming, kernel transport).
        session_cache: where client sessions are kept for later associations, or
            ``None`` not to resume across associations.
        ppid: the payload protocol identifier on every TLS record sent.
        stream_budget: unread bytes one stream may buffer.
        association_budget: unread bytes the association may buffer.
        overflow: ``"pause"`` or ``"abort"`` at a budget.
        plain_streams: accept plain messages on unidirectional streams.
        max_message_size: the largest inbound SCTP message accepted.
        handshake_timeout: seconds for the strategy's handshakes to complete.
        close_timeout: seconds to wait for the peer's close_notify when closing.
        ticket_timeout: seconds ``resume`` waits for a TLS 1.3 ticket (default: scaled
            from stream 0's handshake time).

    Raises:
        HandshakeError: a handshake failed (the error names the stream).
        SCTPNotSupportedError: ``transport="kernel"`` on a kernel without SCTP.
        OSError: the association could not be established.
    """
    sctp = await connect_transport(
        host,
        port,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        local_addresses=local_addresses,
    )
    first_host = host if isinstance(host, str) or host is None else host[0]
    try:
        association = SecureAssociation(
            sctp,
            ssl_context=ssl_context,
            server_side=False,
            server_hostname=server_hostname,
            handshake=handshake,
            session_cache=session_cache,
            session_key=(sctp.kind, first_host, port, server_hostname),
            ppid=ppid,
            stream_budget=stream_budget,
            association_budget=association_budget,
            overflow=overflow,
            plain_streams=plain_streams,
            close_timeout=close_timeout,
            ticket_timeout=ticket_timeout,
        )
    except BaseException:
        sctp.abort()
        raise
    async with run_association(association, handshake_timeout=handshake_timeout):
        yield association


Handler = Callable[[SecureAssociation], Awaitable[Any]]


async def serve(
    handler: Handler,
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    host: Hosts = None,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    ppid: int = 0,
    stream_budget: int = DEFAULT_STREAM_BUDGET,
    association_budget: int = DEFAULT_ASSOCIATION_BUDGET,
    overflow: OverflowPolicy = "pause",
    plain_streams: bool = False,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    task_status: trio.TaskStatus[MessageListener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept associations on ``port`` forever and call ``handler(association)`` for
    each, in its own task, as the TLS server on every bidirectional stream.

    The association is closed gracefully when the handler returns, aborted if it
    raises. Failures caused by the peer or the network (an :class:`AssociationError`
    or :class:`trio.BrokenResourceError`) are logged and end only that association;
    any other exception from a handler propagates, as in :func:`trio.serve_tcp`.

    Channels shake hands in the background as soon as the association is up, so the
    handler runs at once and each channel's first use waits for its own handshake.

    Args:
        handler: ``async def handler(association)``.
        port: the SCTP port to listen on (0 picks one; see ``task_status``).
        ssl_context: a server context with a certificate.
        host: local address(es) to bind; all by default.
        task_status: with ``nursery.start``, receives the listener (``.port``).

    Other arguments are as for :func:`open_association`.
    """
    listener = await listen_transport(
        port,
        host=host,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
    )

    async def run_one(sctp: MessageTransport) -> None:
        association = SecureAssociation(
            sctp,
            ssl_context=ssl_context,
            server_side=True,
            ppid=ppid,
            stream_budget=stream_budget,
            association_budget=association_budget,
            overflow=overflow,
            plain_streams=plain_streams,
            close_timeout=close_timeout,
        )
        try:
            async with run_association(association):
                await handler(association)
        except trio.BrokenResourceError as exc:
            # AssociationError included: the peer's or the network's doing.
            log.info("association from %s ended: %r", sctp.peer_addresses, exc)

    try:
        async with trio.open_nursery() as nursery:
            task_status.started(listener)
            while True:
                try:
                    sctp = await listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                        log.error("accept failed (%s); retrying in 0.1 s", exc)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(run_one, sctp)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()


@asynccontextmanager
async def open_sctp_association(
    host: Hosts,
    port: int,
    *,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    local_addresses: Sequence[str] | None = None,
) -> AsyncIterator[MessageTransport]:
    """Open a plain (unencrypted) SCTP association and yield its transport.

    Closed gracefully on exit, aborted if the body raises.

    Example::

        async with open_sctp_association("127.0.0.1", 2905) as sctp:
            await sctp.send_message(b"hi", stream=1, ppid=3)
            reply = await sctp.receive()
    """
    sctp = await connect_transport(
        host,
        port,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        local_addresses=local_addresses,
    )
    try:
        yield sctp
    except BaseException:
        sctp.abort()
        raise
    else:
        await sctp.aclose()


async def serve_sctp(
    handler: Callable[[MessageTransport], Awaitable[Any]],
    port: int,
    *,
    host: Hosts = None,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    task_status: trio.TaskStatus[MessageListener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept plain SCTP associations on ``port`` forever, calling ``handler(transport)``
    for each in its own task; the association is shut down when the handler returns
    (aborted if it raises). Peer and network failures are logged, as in :func:`serve`.
    """
    listener = await listen_transport(
        port,
        host=host,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
    )

    async def run_one(sctp: MessageTransport) -> None:
        try:
            await handler(sctp)
        except trio.BrokenResourceError as exc:
            sctp.abort()
            log.info("association from %s ended: %r", sctp.peer_addresses, exc)
        except BaseException:
            sctp.abort()
            raise
        else:
            await sctp.aclose()

    try:
        async with trio.open_nursery() as nursery:
            task_status.started(listener)
            while True:
                nursery.start_soon(run_one, await listener.accept())
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()


__all__ = [
    "kernel_sctp_available",
    "open_association",
    "open_sctp_association",
    "serve",
    "serve_sctp",
]
