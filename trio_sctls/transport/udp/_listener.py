"""Listening for and opening SCTP associations over UDP: :class:`UDPListener`,
:func:`open_udp_transport`, :func:`open_udp_listener`, and the registry's factories
:func:`open_client` / :func:`open_server`."""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import trio

from ...sctp import (
    SCTP_UDP_PORT,
    Association,
    Endpoint,
    SCTPConfig,
)
from .._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MessageListener,
)
from .._setup import Timers, stream_arguments, timers_of
from ._socket import (
    DEFAULT_BACKLOG,
    _dual_stack,
    _first,
    _is_loopback,
    _plain,
    _resolve,
    _UDPSocket,
    _using_socket,
)
from ._transport import UDPTransport, _make_config

if TYPE_CHECKING:
    from ..._options import TransportOptions


#: RFC 6951, Section 5.1: the IANA-registered UDP port of SCTP over UDP. Servers bind it
#: by default and clients send to it by default.
DEFAULT_UDP_PORT: int = SCTP_UDP_PORT

# -- the listener -------------------------------------------------------------------------


@final
class UDPListener(MessageListener):
    """Accepts SCTP associations on one SCTP port of a (possibly shared) UDP socket.
    Created by :func:`open_udp_listener`."""

    kind = "udp"

    def __init__(self, udp: _UDPSocket, endpoint: Endpoint, backlog: int) -> None:
        self._udp = udp
        self._endpoint = endpoint
        self._queue: deque[UDPTransport] = deque()
        self._backlog = backlog
        self._arrived = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"<UDPListener sctp port {self.port} on udp {self.udp_address}>"

    @property
    def port(self) -> int:
        """The SCTP port this listener accepts associations on."""
        return self._endpoint.local_port

    @property
    def udp_port(self) -> int:
        """The UDP port its socket is bound to (the encapsulation port): what a
        client gives as ``remote_udp_port``."""
        return self._udp.address[1]

    @property
    def udp_address(self) -> tuple[str, int]:
        """The UDP address its socket is bound to."""
        return _plain(self._udp.address)

    def _incoming(self, assoc: Association) -> UDPTransport:
        """A new association on our endpoint: its transport, delivered to
        :meth:`accept` once it is up."""
        return UDPTransport(self._udp, self._endpoint, assoc, self)

    def _deliver(self, transport: UDPTransport) -> None:
        if self._closed or len(self._queue) >= self._backlog:
            transport.abort("the listener is closed or its backlog is full")
            return
        self._queue.append(transport)
        self._arrived.unpark_all()

    if TYPE_CHECKING:

        async def accept(self) -> UDPTransport:
            """The next association (see :meth:`MessageListener.accept`)."""

    async def _accept(self) -> UDPTransport:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this udp listener was closed")
            if self._queue:
                transport = self._queue.popleft()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return transport
            await self._arrived.park()

    def _close(self) -> None:
        # Associations already accepted go on until open_udp_listener's block ends.
        self._endpoint.accept = False
        while self._queue:
            self._queue.popleft().abort("the listener closed")
        for assoc in self._endpoint.associations:
            transport = self._udp.transports.get(assoc)
            if transport is not None and not transport._up:
                transport.abort()
        self._arrived.unpark_all()


# -- opening ------------------------------------------------------------------------------


@asynccontextmanager
async def open_udp_transport(
    host: str | Sequence[str],
    port: int,
    *,
    udp_port: int = 0,
    remote_udp_port: int | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    local_addresses: Sequence[str] | None = None,
    config: SCTPConfig | None = None,
    timers: Timers | None = None,
    auth: bool = False,
) -> AsyncIterator[UDPTransport]:
    """Establish an SCTP association over UDP with ``host``:``port`` and yield it.

    The association (and its socket's pump task) lives as long as the ``async with``;
    close it with ``aclose()`` inside the block for a graceful end, else it is aborted
    on exit.

    Args:
        host: the peer's address or name (one path: the first of several is used).
        port: the peer's SCTP port.
        udp_port: our UDP port: 0 (default) for a socket of our own on an ephemeral
            port, or a fixed port, shared with other users of it in this process.
        remote_udp_port: the peer's UDP port (default 9899).
        outbound_streams: streams we ask to send on.
        max_inbound_streams: most streams we accept from the peer.
        max_message_size: largest message accepted (and sent).
        local_addresses: the local address to bind (the first one).
        config: core options (MTU, RTO...); stream counts, message size and
            ``auto_consume`` are set from the other arguments.
        timers: heartbeat and retransmission knobs laid over ``config`` (or over our
            defaults); see ``docs/transports.md``.
        auth: require SCTP-AUTH (RFC 4895) with DATA authenticated; the keys are the
            transport's :attr:`~UDPTransport.auth`.

    Raises:
        AuthNotSupportedError: ``auth`` and the peer does not offer SCTP-AUTH.
        ConnectionRefusedError: the peer answered with an ABORT, or nothing listens on
            its UDP port.
        TimeoutError: the peer never answered (Max.Init.Retransmits).
        OSError: the UDP socket could not be bound.
        ValueError: bad stream counts or message size.
    """
    if remote_udp_port is None:
        remote_udp_port = DEFAULT_UDP_PORT
    target = _first(host)
    if target is None:
        target = "127.0.0.1"
    family, peer = await _resolve(target, remote_udp_port)
    local = _first(local_addresses)
    bind_host = local if local is not None else ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sctp_config = _make_config(
        config,
        loopback=_is_loopback(peer[0]),
        family=family,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        timers=timers,
        auth=auth,
    )
    async with _using_socket(
        family, bind_host, udp_port, connect_to=peer if udp_port == 0 else None
    ) as udp:
        endpoint = Endpoint(
            sctp_config, local_port=udp.free_sctp_port(udp.address[1]), accept=False
        )
        udp.add_endpoint(endpoint)
        try:
            assoc = endpoint.connect(peer, trio.current_time(), port)
            transport = UDPTransport(udp, endpoint, assoc)
            udp.transports[assoc] = transport
            udp.request_flush()
            await transport._settled.wait()
            if transport._connect_error is not None:
                raise transport._connect_error
            yield transport
        finally:
            udp.remove_endpoint(endpoint)


@asynccontextmanager
async def open_udp_listener(
    port: int,
    *,
    host: str | Sequence[str] | None = None,
    udp_port: int | None = None,
    outbound_streams: int = 10,
    max_inbound_streams: int = 10,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    backlog: int = DEFAULT_BACKLOG,
    config: SCTPConfig | None = None,
    timers: Timers | None = None,
    auth: bool = False,
) -> AsyncIterator[UDPListener]:
    """Listen for SCTP associations over UDP; yield the listener.

    The listener and every association it accepted live as long as the ``async with``:
    on exit, those still open are aborted.

    Args:
        port: our SCTP port; 0 picks a free one (see :attr:`UDPListener.port`).
        host: the local address to bind (the first one); every address by default.
        udp_port: the UDP port to bind (default 9899, shared with other listeners of
            this process on other SCTP ports); 0 for an ephemeral one (see
            :attr:`UDPListener.udp_port`).
        outbound_streams: streams we offer to send on.
        max_inbound_streams: most streams we accept from a peer.
        max_message_size: largest message accepted (and sent).
        backlog: established associations held for :meth:`UDPListener.accept`.
        config: core options, as for :func:`open_udp_transport`.
        timers: heartbeat and retransmission knobs, as for :func:`open_udp_transport`.
        auth: require SCTP-AUTH (RFC 4895) of every peer, as for
            :func:`open_udp_transport`; peers without it are refused.

    Raises:
        OSError: ``EADDRINUSE``: the UDP port is taken by another process, or the SCTP
            port by another listener on this UDP port.
    """
    if udp_port is None:
        udp_port = DEFAULT_UDP_PORT
    if not 0 <= port <= 65535 or not 0 <= udp_port <= 65535:
        raise ValueError("ports must be between 0 and 65535")
    bind_host = _first(host)
    family: int
    if bind_host is None:
        family = socket.AF_INET6 if _dual_stack() else socket.AF_INET
        bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    else:
        family, _address = await _resolve(bind_host, udp_port)
        bind_host = _address[0]
    sctp_config = _make_config(
        config,
        loopback=_is_loopback(bind_host),
        family=family,
        outbound_streams=outbound_streams,
        max_inbound_streams=max_inbound_streams,
        max_message_size=max_message_size,
        timers=timers,
        auth=auth,
    )
    async with _using_socket(family, bind_host, udp_port) as udp:
        endpoint = Endpoint(sctp_config, local_port=port or udp.free_sctp_port(0), accept=True)
        udp.add_endpoint(endpoint)
        listener = UDPListener(udp, endpoint, backlog)
        udp.listeners[endpoint] = listener
        try:
            yield listener
        finally:
            listener._closed = True
            listener._arrived.unpark_all()
            udp.remove_endpoint(endpoint)


@asynccontextmanager
async def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AsyncIterator[UDPTransport]:
    """:func:`open_udp_transport` from :class:`~trio_sctls.TransportOptions`: yields the
    association; whatever is still open on exit is aborted. ``hosts`` defaults to
    127.0.0.1 (one path: the first is used)."""
    async with open_udp_transport(
        hosts or "127.0.0.1",
        port,
        udp_port=options.udp_port or 0,
        remote_udp_port=options.remote_udp_port,
        local_addresses=options.local_addresses,
        timers=timers_of(options),
        auth=options.auth,
        **stream_arguments(options),
    ) as transport:
        yield transport


@asynccontextmanager
async def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AsyncIterator[UDPListener]:
    """:func:`open_udp_listener` from :class:`~trio_sctls.TransportOptions`: yields the
    listener; on exit it is closed and the associations it accepted are aborted (they
    share its socket and pump)."""
    async with open_udp_listener(
        port,
        host=hosts,
        udp_port=options.udp_port,
        timers=timers_of(options),
        auth=options.auth,
        **stream_arguments(options),
    ) as listener:
        try:
            yield listener
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
