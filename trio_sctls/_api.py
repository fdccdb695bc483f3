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

from ._association import SecureAssociation, wrap_transport
from ._options import (
    DEFAULT_ASSOCIATION_BUDGET,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_STREAM_BUDGET,
    AssociationOptions,
    HandshakeStrategy,
    OverflowPolicy,
    default_session_cache,
)
from ._tls import SessionCache
from .transport import DEFAULT_MAX_MESSAGE_SIZE, MessageListener, MessageTransport

log = logging.getLogger("trio_sctls")

TransportName = Literal["auto", "kernel", "udp", "memory"]

Hosts = str | Sequence[str] | None


def kernel_sctp_available() -> bool:
    """Whether this kernel can create SCTP sockets (Linux with the ``sctp`` module)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except (OSError, AttributeError):
        return False
    sock.close()
    return True


def resolve_transport(transport: TransportName) -> Literal["kernel", "udp", "memory"]:
    """Turn ``"auto"`` into what it means here: kernel SCTP where the kernel has it,
    otherwise our own SCTP over UDP (RFC 6951), which talks to any SCTP-over-UDP peer,
    Linux's included."""
    if transport == "auto":
        return "kernel" if kernel_sctp_available() else "udp"
    if transport not in ("kernel", "udp", "memory"):
        raise ValueError(
            f"unknown transport {transport!r}; use 'auto', 'kernel', 'udp' or 'memory'"
        )
    return transport


def _check_udp_options(
    transport: TransportName, udp_port: int | None, remote_udp_port: int | None
) -> None:
    # With "auto" they apply when auto means udp, and are ignored on kernel SCTP, so one
    # program runs on both kinds of machine.
    if transport in ("kernel", "memory") and (udp_port, remote_udp_port) != (None, None):
        raise ValueError(
            f"udp_port and remote_udp_port apply to transport='udp', not {transport!r}"
        )


@asynccontextmanager
async def open_transport(
    host: Hosts,
    port: int,
    *,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    local_addresses: Sequence[str] | None = None,
    udp_port: int | None = None,
    remote_udp_port: int | None = None,
) -> AsyncIterator[MessageTransport]:
    """Establish a plain SCTP association and yield its transport.

    Whatever runs in the background for it (the UDP transport's socket pump) lives
    inside this ``async with``. Close the transport (``aclose()``) in the block for a
    graceful end; whatever is still open on exit is aborted.

    Args:
        host: the peer's address(es); ignored by the memory transport.
        port: the peer's SCTP port.
        transport: ``"kernel"``, ``"udp"``, ``"memory"`` or ``"auto"``.
        outbound_streams: streams we ask for.
        max_inbound_streams: the most streams we accept from the peer.
        max_message_size: the largest inbound message accepted.
        local_addresses: local addresses to bind (kernel: several for multihoming).
        udp_port: (udp) our UDP port; default: an ephemeral one. With ``"auto"`` the
            UDP options are ignored where auto means kernel SCTP.
        remote_udp_port: (udp) the peer's UDP port; default 9899.

    Raises:
        ValueError: UDP options with ``"kernel"`` or ``"memory"``, or bad arguments.
        OSError: the association could not be established.
    """
    kind = resolve_transport(transport)
    _check_udp_options(transport, udp_port, remote_udp_port)
    if kind == "udp":
        from .transport.udp import open_udp_transport

        async with open_udp_transport(
            host if host is not None else "127.0.0.1",
            port,
            udp_port=udp_port or 0,
            remote_udp_port=remote_udp_port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            local_addresses=local_addresses,
        ) as udp_transport:
            yield udp_transport
        return
    sctp: MessageTransport
    if kind == "memory":
        from .transport.memory import connect_memory

        sctp = await connect_memory(
            port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        )
    else:
        from .transport.kernel import connect_kernel  # type: ignore[import-not-found,unused-ignore]

        sctp = await connect_kernel(
            host if host is not None else "127.0.0.1",
            port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            local_addresses=local_addresses,
        )
    try:
        yield sctp
    finally:
        sctp.abort()  # a no-op once closed


@asynccontextmanager
async def open_listener(
    port: int,
    *,
    host: Hosts = None,
    transport: TransportName = "auto",
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    udp_port: int | None = None,
) -> AsyncIterator[MessageListener]:
    """Listen for plain SCTP associations; yield the listener.

    The listener, and for ``"udp"`` the associations it accepted (they share its
    socket), live inside this ``async with``; it is closed on exit.

    Args:
        port: the SCTP port (0 picks a free one: see the listener's ``port``).
        host: local address(es) to bind; all by default.
        transport: ``"kernel"``, ``"udp"``, ``"memory"`` or ``"auto"``.
        outbound_streams: streams we offer.
        max_inbound_streams: the most streams we accept from a peer.
        max_message_size: the largest inbound message accepted.
        udp_port: (udp) the UDP port to bind: default 9899, shared by the listeners of
            this process; 0 for an ephemeral one (see the listener's ``udp_port``).

    Raises:
        OSError: the port could not be bound.
    """
    kind = resolve_transport(transport)
    _check_udp_options(transport, udp_port, None)
    if kind == "udp":
        from .transport.udp import open_udp_listener

        async with open_udp_listener(
            port,
            host=host,
            udp_port=udp_port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        ) as udp_listener:
            try:
                yield udp_listener
            finally:
                with trio.CancelScope(shield=True):
                    await udp_listener.aclose()
        return
    listener: MessageListener
    if kind == "memory":
        from .transport.memory import listen_memory

        listener = await listen_memory(
            port,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        )
    else:
        from .transport.kernel import listen_kernel  # type: ignore[import-not-found,unused-ignore]

        listener = await listen_kernel(
            port,
            hosts=host,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
        )
    try:
        yield listener
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()


#: accept() failures that mean "out of resources for now", not "the listener is broken".
_TRANSIENT_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


async def _accept_forever(
    listener: MessageListener,
    run_one: Callable[[MessageTransport], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept associations and run each in ``nursery``; ride out resource exhaustion."""
    while True:
        try:
            sctp = await listener.accept()
        except OSError as exc:
            if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                log.error("accept failed (%s); retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            raise
        nursery.start_soon(run_one, sctp)


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
    udp_port: int | None = None,
    remote_udp_port: int | None = None,
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
        transport: ``"kernel"`` (Linux SCTP), ``"udp"`` (our own SCTP over UDP, RFC
            6951), ``"memory"`` (in-process peers only) or ``"auto"`` (kernel where
            available, udp otherwise).
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
        udp_port: (udp) our UDP port; default: an ephemeral one, which Linux answers.
        remote_udp_port: (udp) the server's UDP port; default 9899.

    Raises:
        HandshakeError: a handshake failed (the error names the stream).
        SCTPNotSupportedError: ``transport="kernel"`` on a kernel without SCTP.
        OSError: the association could not be established.
    """
    first_host = host if isinstance(host, str) or host is None else host[0]
    async with open_transport(
        host,
        port,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        local_addresses=local_addresses,
        udp_port=udp_port,
        remote_udp_port=remote_udp_port,
    ) as sctp:
        options = AssociationOptions(
            handshake=handshake,
            session_cache=session_cache,
            ppid=ppid,
            stream_budget=stream_budget,
            association_budget=association_budget,
            overflow=overflow,
            plain_streams=plain_streams,
            handshake_timeout=handshake_timeout,
            close_timeout=close_timeout,
            ticket_timeout=ticket_timeout,
        )
        async with wrap_transport(
            sctp,
            ssl_context,
            options,
            server_side=False,
            server_hostname=server_hostname,
            session_key=(sctp.kind, first_host, port, server_hostname),
        ) as association:
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
    udp_port: int | None = None,
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
        udp_port: (udp) the UDP port to bind: default 9899, which the servers of one
            process share (they differ in SCTP port); 0 for an ephemeral one (the
            listener's ``udp_port`` says which).
        task_status: with ``nursery.start``, receives the listener (``.port``).

    Other arguments are as for :func:`open_association`.
    """

    options = AssociationOptions(
        ppid=ppid,
        stream_budget=stream_budget,
        association_budget=association_budget,
        overflow=overflow,
        plain_streams=plain_streams,
        close_timeout=close_timeout,
    )

    async def run_one(sctp: MessageTransport) -> None:
        try:
            async with wrap_transport(sctp, ssl_context, options, server_side=True) as association:
                await handler(association)
        except trio.BrokenResourceError as exc:
            # AssociationError included: the peer's or the network's doing.
            log.info("association from %s ended: %r", sctp.peer_addresses, exc)

    async with (
        open_listener(
            port,
            host=host,
            transport=transport,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            udp_port=udp_port,
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        task_status.started(listener)
        await _accept_forever(listener, run_one, nursery)


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
    udp_port: int | None = None,
    remote_udp_port: int | None = None,
) -> AsyncIterator[MessageTransport]:
    """Open a plain (unencrypted) SCTP association and yield its transport.

    Closed gracefully on exit, aborted if the body raises. Arguments are as for
    :func:`open_association`.

    Example::

        async with open_sctp_association("127.0.0.1", 2905) as sctp:
            await sctp.send_message(b"hi", stream=1, ppid=3)
            reply = await sctp.receive()
    """
    async with open_transport(
        host,
        port,
        transport=transport,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        local_addresses=local_addresses,
        udp_port=udp_port,
        remote_udp_port=remote_udp_port,
    ) as sctp:
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
    udp_port: int | None = None,
    task_status: trio.TaskStatus[MessageListener] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept plain SCTP associations on ``port`` forever, calling ``handler(transport)``
    for each in its own task; the association is shut down when the handler returns
    (aborted if it raises). Peer and network failures are logged, as in :func:`serve`.
    Arguments are as for :func:`serve`.
    """

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

    async with (
        open_listener(
            port,
            host=host,
            transport=transport,
            outbound_streams=outbound_streams,
            max_inbound_streams=max_inbound_streams,
            max_message_size=max_message_size,
            udp_port=udp_port,
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        task_status.started(listener)
        await _accept_forever(listener, run_one, nursery)


__all__ = [
    "kernel_sctp_available",
    "open_association",
    "open_listener",
    "open_sctp_association",
    "open_transport",
    "serve",
    "serve_sctp",
]
