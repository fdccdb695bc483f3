"""Serve, then connect, on loopback: the set-ups the benchmarks share.

Every function takes a ``host``: loopback by default, or the address of one end of a
real path (a veth pair between network namespaces, :mod:`benchmarks._netns`), where
the server and the client run in different processes.

Every benchmark starts a server in its own process and connects to it, either with
trio-sctls (an association of TLS channels, or plain SCTP) or with the baseline, trio's
``SSLStream`` over TCP. The servers listen on ephemeral ports (and, over the ``udp``
transport, an ephemeral UDP port of their own, so that concurrent benchmarks never
share the default 9899), and stop when their ``async with`` ends. The clients connect
with the same number of streams each way as the server offers, so that a benchmark's
channel count is exactly what it asked for.

Only the public API is used here: what the benchmarks measure is what a user gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

import trio_sctls
from trio_sctls import MessageTransport, SecureAssociation

from ._common import SERVER_NAME

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Address:
    """Where a loopback server listens.

    Attributes:
        port: its SCTP (or TCP) port.
        udp_port: over the ``udp`` transport, the UDP port its SCTP packets go to;
            ``None`` over the others.
    """

    port: int
    udp_port: int | None = None


@asynccontextmanager
async def _serving(
    serve: Callable[..., Awaitable[None]],
    handler: Callable[[Any], Awaitable[Any]],
    *,
    transport: str,
    streams: int,
    host: str,
    **options: Any,
) -> AsyncIterator[Address]:
    """Run ``serve(handler, 0, ...)`` on ``host`` in the background; yield its address."""
    udp = transport == "udp"
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                handler,
                0,
                host=host,
                transport=transport,
                outbound_streams=streams,
                max_inbound_streams=streams,
                udp_port=0 if udp else None,
                **options,
            )
        )
        try:
            yield Address(listener.port, listener.udp_port)
        finally:
            nursery.cancel_scope.cancel()


def serving_associations(
    handler: Callable[[SecureAssociation], Awaitable[Any]],
    server_ctx: Any,
    *,
    transport: str,
    streams: int,
    host: str = LOOPBACK,
    **options: Any,
) -> AbstractAsyncContextManager[Address]:
    """Serve trio-sctls associations on ``host`` while the ``async with`` lasts.

    Args:
        handler: ``trio_sctls.serve``'s handler, called once per association.
        server_ctx: the server's ``ssl.SSLContext``.
        transport: ``"udp"``, ``"kernel"`` or ``"memory"``.
        streams: outbound and most inbound streams, i.e. TLS channels.
        host: the address to listen on.
        **options: more keyword arguments of ``serve`` (``rto_min=0.2``...).

    Returns:
        A context manager yielding the server's :class:`Address`.
    """
    return _serving(
        trio_sctls.serve,
        handler,
        transport=transport,
        streams=streams,
        host=host,
        ssl_context=server_ctx,
        **options,
    )


def serving_sctp(
    handler: Callable[[MessageTransport], Awaitable[Any]],
    *,
    transport: str,
    streams: int,
    host: str = LOOPBACK,
    **options: Any,
) -> AbstractAsyncContextManager[Address]:
    """Serve plain SCTP associations on ``host`` while the ``async with`` lasts.

    Args:
        handler: ``trio_sctls.serve_sctp``'s handler, called once per association.
        transport: ``"udp"``, ``"kernel"`` or ``"memory"``.
        streams: outbound and most inbound streams.
        host: the address to listen on.
        **options: more keyword arguments of ``serve_sctp``.

    Returns:
        A context manager yielding the server's :class:`Address`.
    """
    return _serving(
        trio_sctls.serve_sctp, handler, transport=transport, streams=streams, host=host, **options
    )


def _client_options(
    address: Address, *, transport: str, streams: int, udp_port_to: int | None
) -> dict[str, Any]:
    """What every loopback client passes: the server's transport, as many streams each
    way as the server offers, and where its UDP packets go."""
    return {
        "transport": transport,
        "outbound_streams": streams,
        "max_inbound_streams": streams,
        "remote_udp_port": udp_port_to or address.udp_port,
    }


def connect_association(
    address: Address,
    client_ctx: Any,
    *,
    transport: str,
    streams: int,
    udp_port_to: int | None = None,
    host: str = LOOPBACK,
    **options: Any,
) -> AbstractAsyncContextManager[SecureAssociation]:
    """``trio_sctls.open_association`` to a server on ``host``, as its TLS client.

    Args:
        address: the server's.
        client_ctx: the client's ``ssl.SSLContext``, trusting the server's certificate
            for :data:`~benchmarks._common.SERVER_NAME`.
        transport: the server's.
        streams: outbound and most inbound streams, i.e. TLS channels.
        udp_port_to: (udp) the UDP port to send to when it is not the server's own (an
            impaired relay in front of it).
        host: the server's address.
        **options: more keyword arguments of ``open_association``.

    Returns:
        ``open_association``'s context manager.
    """
    return trio_sctls.open_association(
        host,
        address.port,
        ssl_context=client_ctx,
        server_hostname=SERVER_NAME,
        **_client_options(address, transport=transport, streams=streams, udp_port_to=udp_port_to),
        **options,
    )


def connect_sctp(
    address: Address,
    *,
    transport: str,
    streams: int,
    udp_port_to: int | None = None,
    host: str = LOOPBACK,
    **options: Any,
) -> AbstractAsyncContextManager[MessageTransport]:
    """``trio_sctls.open_sctp_association`` to a server on ``host``, the plain SCTP
    counterpart of :func:`connect_association` (arguments as there).

    Returns:
        ``open_sctp_association``'s context manager.
    """
    return trio_sctls.open_sctp_association(
        host,
        address.port,
        **_client_options(address, transport=transport, streams=streams, udp_port_to=udp_port_to),
        **options,
    )


@asynccontextmanager
async def serving_tls_over_tcp(
    handler: Callable[[trio.SSLStream[trio.SocketStream]], Awaitable[Any]],
    server_ctx: Any,
    host: str = LOOPBACK,
) -> AsyncIterator[int]:
    """Serve TLS over TCP on ``host`` (trio's ``serve_ssl_over_tcp``), the baseline,
    while the ``async with`` lasts; yield the TCP port.

    Args:
        handler: called with each accepted, not yet handshaken, ``trio.SSLStream``.
        server_ctx: the server's ``ssl.SSLContext``.
        host: the address to listen on.
    """
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host=host)
        )
        try:
            yield listeners[0].transport_listener.socket.getsockname()[1]
        finally:
            nursery.cancel_scope.cancel()


async def connect_tls_over_tcp(
    port: int, client_ctx: Any, host: str = LOOPBACK
) -> trio.SSLStream[trio.SocketStream]:
    """Connect over TCP to ``host``:``port`` and do the TLS handshake, as the baseline
    client (trio sets ``TCP_NODELAY``).

    Args:
        port: the server's TCP port.
        client_ctx: the client's ``ssl.SSLContext``.
        host: the server's address.

    Returns:
        The established stream; the caller closes it.
    """
    stream = trio.SSLStream(
        await trio.open_tcp_stream(host, port), client_ctx, server_hostname=SERVER_NAME
    )
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream
