"""The public entry points: secure associations and plain SCTP, client and server.

Each takes its options whole (``transport_options=``, ``options=``) or as keyword
arguments naming their fields (``outbound_streams=4``, ``handshake="resume"``), laid
over the whole object when both are given; either way they are validated once, in
:mod:`trio_sctls._options`. The transport is picked through the registry in
:mod:`trio_sctls.transport._registry`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Unpack

import trio

from ._association import SecureAssociation, wrap_transport
from ._listeners import SecureListener, secure_listener, serve_until_cancelled
from ._options import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    AssociationOptions,
    Hosts,
    PlainClientKeywords,
    PlainServerKeywords,
    SecureKeywords,
    SecureServerKeywords,
    ServerOptions,
    TransportKeywords,
    TransportName,
    TransportOptions,
    check_keywords,
    host_tuple,
    make_association_options,
    make_transport_options,
    split_server_keywords,
)
from .transport import MessageListener, MessageTransport
from .transport._registry import kernel_sctp_available, open_client, open_server, resolve


def resolve_transport(transport: TransportName) -> Literal["kernel", "udp", "memory"]:
    """Turn ``"auto"`` into what it means here: kernel SCTP where the kernel has it,
    otherwise our own SCTP over UDP (RFC 6951), which talks to any SCTP-over-UDP peer,
    Linux's included."""
    return resolve(transport)


@asynccontextmanager
async def open_transport(
    host: Hosts,
    port: int,
    *,
    transport_options: TransportOptions | None = None,
    **keywords: Unpack[TransportKeywords],
) -> AsyncIterator[MessageTransport]:
    """Establish a plain SCTP association and yield its transport.

    Whatever runs in the background for it (the udp transport's socket pump) lives
    inside this ``async with``. Close the transport (``aclose()``) in the block for a
    graceful end; whatever is still open on exit is aborted.

    Args:
        host: the peer's address, or several (multihoming, kernel SCTP); ignored by the
            memory transport.
        port: the peer's SCTP port.
        transport_options: see :class:`~trio_sctls.TransportOptions`.
        **keywords: fields of :class:`~trio_sctls.TransportOptions`, laid over
            ``transport_options``.

    Raises:
        ValueError: invalid options.
        SCTPNotSupportedError: ``transport="kernel"`` on a kernel without SCTP.
        OSError: the association could not be established.
    """
    check_keywords(keywords, secure=False)
    options = make_transport_options(transport_options, keywords)
    async with open_client(host_tuple(host), port, options) as sctp:
        yield sctp


@asynccontextmanager
async def open_listener(
    port: int,
    *,
    host: Hosts = None,
    transport_options: TransportOptions | None = None,
    **keywords: Unpack[TransportKeywords],
) -> AsyncIterator[MessageListener]:
    """Listen for plain SCTP associations; yield the listener.

    The listener, and for ``"udp"`` the associations it accepted (they share its
    socket), live inside this ``async with``; it is closed on exit.

    Args:
        port: the SCTP port (0 picks a free one: see the listener's ``port``).
        host: local address(es) to bind; all by default.
        transport_options: see :class:`~trio_sctls.TransportOptions`.
        **keywords: fields of :class:`~trio_sctls.TransportOptions`.

    Raises:
        OSError: the port could not be bound.
    """
    check_keywords(keywords, secure=False)
    options = make_transport_options(transport_options, keywords)
    async with open_server(port, host_tuple(host), options) as listener:
        yield listener


@asynccontextmanager
async def open_association(
    host: Hosts,
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None = None,
    options: AssociationOptions | None = None,
    transport_options: TransportOptions | None = None,
    **keywords: Unpack[SecureKeywords],
) -> AsyncIterator[SecureAssociation]:
    """Open an SCTP association to ``host``:``port`` and run TLS on every bidirectional
    stream (RFC 3436), as the TLS client; yield it once the handshake strategy is done.

    Leaving the block closes it gracefully (close_notify on every channel, then SCTP's
    SHUTDOWN); an exception from the block aborts it and propagates.

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
        options: see :class:`~trio_sctls.AssociationOptions`.
        transport_options: see :class:`~trio_sctls.TransportOptions`.
        **keywords: fields of either options object (``outbound_streams=4``,
            ``handshake="resume"``, ...), laid over the objects given.

    Raises:
        HandshakeError: a handshake failed or timed out (the error names the stream).
        SCTPNotSupportedError: ``transport="kernel"`` on a kernel without SCTP.
        ValueError: invalid options.
        OSError: the association could not be established.
    """
    check_keywords(keywords, secure=True)
    sctp_options = make_transport_options(transport_options, keywords)
    tls_options = make_association_options(options, keywords)
    first_host = host if isinstance(host, str) or host is None else host[0]
    async with (
        open_client(host_tuple(host), port, sctp_options) as sctp,
        wrap_transport(
            sctp,
            ssl_context,
            tls_options,
            server_side=False,
            server_hostname=server_hostname,
            session_key=(sctp.kind, first_host, port, server_hostname),
        ) as association,
    ):
        yield association


@asynccontextmanager
async def open_secure_listener(
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    host: Hosts = None,
    options: AssociationOptions | None = None,
    transport_options: TransportOptions | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    **keywords: Unpack[SecureKeywords],
) -> AsyncIterator[SecureListener]:
    """Listen for associations and run TLS on every bidirectional stream of each, as
    the TLS server; yield the :class:`~trio_sctls.SecureListener`.

    Its ``accept()`` returns a running :class:`~trio_sctls.SecureAssociation`. The
    associations accepted live inside this ``async with``: when it ends normally, those
    still open are closed gracefully (close_notify on every channel, then SCTP's
    SHUTDOWN) within ``shutdown_timeout``, and what is left is aborted; when it ends by
    an exception or a cancellation they are aborted at once (a cancellation stops the
    transports' background tasks too: :func:`serve` shuts down gracefully when
    cancelled).

    Args:
        port: the SCTP port (0 picks a free one: see the listener's ``port``).
        ssl_context: a server context with a certificate.
        host: local address(es) to bind; all by default.
        options: see :class:`~trio_sctls.AssociationOptions`.
        transport_options: see :class:`~trio_sctls.TransportOptions`.
        shutdown_timeout: seconds for the graceful close at the end of the block.
        **keywords: fields of either options object.

    Raises:
        OSError: the port could not be bound.
    """
    check_keywords(keywords, secure=True)
    sctp_options = make_transport_options(transport_options, keywords)
    tls_options = make_association_options(options, keywords)
    async with (
        open_server(port, host_tuple(host), sctp_options) as transport_listener,
        secure_listener(
            transport_listener, ssl_context, tls_options, shutdown_timeout=shutdown_timeout
        ) as listener,
    ):
        yield listener


Handler = Callable[[SecureAssociation], Awaitable[object]]


async def serve(
    handler: Handler,
    port: int,
    *,
    ssl_context: ssl.SSLContext,
    host: Hosts = None,
    options: AssociationOptions | None = None,
    transport_options: TransportOptions | None = None,
    server_options: ServerOptions | None = None,
    task_status: trio.TaskStatus[SecureListener] = trio.TASK_STATUS_IGNORED,
    **keywords: Unpack[SecureServerKeywords],
) -> None:
    """Accept associations on ``port`` until cancelled and call
    ``handler(association)`` for each, in its own task, as the TLS server on every
    bidirectional stream.

    The handler runs as soon as the association is up; its channels shake hands in the
    background and each channel's first use waits for its own handshake. The
    association is closed gracefully when the handler returns and aborted when it
    raises.

    No peer can stop the server. A failure caused by the peer or the network (an
    exception whose every leaf is a :class:`trio.BrokenResourceError`, which every
    :class:`~trio_sctls.AssociationError` is, alone or in exception groups from the
    handler's nurseries) ends only that association and is logged once at INFO with
    the peer's address. Any other exception from a handler is a bug: it propagates and
    stops the server, as in :func:`trio.serve_tcp` (see
    :func:`~trio_sctls.serve_listeners`). An association over a limit of
    ``server_options`` is aborted at once; one that completes no TLS handshake within
    ``handshake_timeout`` of being accepted (or leaves one unfinished that long) is
    aborted by the server.

    Cancelling ``serve`` shuts down gracefully: it stops accepting, cancels the
    handlers, closes every association with close_notify and SCTP's SHUTDOWN within
    ``shutdown_timeout``, aborts what is left, then raises the cancellation.

    Args:
        handler: ``async def handler(association)``.
        port: the SCTP port to listen on (0 picks one; see ``task_status``).
        ssl_context: a server context with a certificate.
        host: local address(es) to bind; all by default.
        options: see :class:`~trio_sctls.AssociationOptions`.
        transport_options: see :class:`~trio_sctls.TransportOptions`.
        server_options: limits and the shutdown deadline; see
            :class:`~trio_sctls.ServerOptions`.
        task_status: with ``nursery.start``, receives the
            :class:`~trio_sctls.SecureListener` (``.port``).
        **keywords: fields of any of the three options objects.

    Raises:
        OSError: the port could not be bound.
    """
    limits, secure_keywords = split_server_keywords(server_options, keywords, secure=True)

    def open_one() -> AbstractAsyncContextManager[SecureListener]:
        return open_secure_listener(
            port,
            ssl_context=ssl_context,
            host=host,
            options=options,
            transport_options=transport_options,
            shutdown_timeout=limits.shutdown_timeout,
            **secure_keywords,
        )

    await serve_until_cancelled(open_one, handler, limits, task_status)


@asynccontextmanager
async def open_sctp_association(
    host: Hosts, port: int, **keywords: Unpack[PlainClientKeywords]
) -> AsyncIterator[MessageTransport]:
    """Open a plain (unencrypted) SCTP association and yield its transport.

    Closed gracefully on exit, aborted if the body raises. Arguments are as for
    :func:`open_transport`.

    Example::

        async with open_sctp_association("127.0.0.1", 2905) as sctp:
            await sctp.send_message(b"hi", stream=1, ppid=3)
            reply = await sctp.receive()
    """
    async with open_transport(host, port, **keywords) as sctp:
        try:
            yield sctp
        except BaseException:
            sctp.abort()
            raise
        else:
            await sctp.aclose()


async def serve_sctp(
    handler: Callable[[MessageTransport], Awaitable[object]],
    port: int,
    *,
    host: Hosts = None,
    transport_options: TransportOptions | None = None,
    server_options: ServerOptions | None = None,
    task_status: trio.TaskStatus[MessageListener] = trio.TASK_STATUS_IGNORED,
    **keywords: Unpack[PlainServerKeywords],
) -> None:
    """Accept plain SCTP associations on ``port`` until cancelled, calling
    ``handler(transport)`` for each in its own task; the association is shut down when
    the handler returns and aborted when it raises. Peer and network failures are
    contained and logged, limits apply and cancelling shuts down gracefully, as in
    :func:`serve`. Arguments are as for :func:`serve`.
    """
    limits, transport_keywords = split_server_keywords(server_options, keywords, secure=False)

    def open_one() -> AbstractAsyncContextManager[MessageListener]:
        return open_listener(
            port, host=host, transport_options=transport_options, **transport_keywords
        )

    await serve_until_cancelled(open_one, handler, limits, task_status)


__all__ = [
    "TransportName",
    "kernel_sctp_available",
    "open_association",
    "open_listener",
    "open_sctp_association",
    "open_secure_listener",
    "open_transport",
    "resolve_transport",
    "serve",
    "serve_sctp",
]
