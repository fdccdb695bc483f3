"""Listeners and the serving loop, in the shape of trio's ``SSLListener`` and
``serve_listeners``.

A :class:`SecureListener` wraps a transport's :class:`~trio_sctls.MessageListener`: its
:meth:`~SecureListener.accept` returns a :class:`~trio_sctls.SecureAssociation` whose
demultiplexer is already running. Unlike a TLS stream, an association needs a task of
its own (one reader fans messages out to the channels), so a secure listener owns a
nursery in which the associations it accepted run, and it exists only inside the
``async with`` of :func:`open_secure_listener`: when that ends, the associations still
open are aborted, as a plain listener aborts the ones nobody accepted.

:func:`serve_listeners` is the one serving loop, for secure and plain listeners alike:
accept, start the handler in its own task, close the association when the handler
returns. Where the line runs between the peer's failures and the handler's bugs:

* An exception whose every leaf is a :class:`trio.BrokenResourceError` (which every
  :class:`~trio_sctls.AssociationError` is, and what a channel raises when its peer or
  the network failed), alone or inside exception groups from the handler's nurseries,
  is the peer's doing: it ends that association only (aborted), and is logged once at
  INFO with the peer's address.
* Anything else propagates out of the serving loop and stops the server, as an
  exception in a :func:`trio.serve_tcp` handler does: it is a bug to fix, not a peer to
  survive.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, final

import trio

from ._association import SecureAssociation, run_association
from ._options import AssociationOptions
from ._util import unwrap_single_exception
from .transport import MessageListener

log = logging.getLogger("trio_sctls")

#: accept() failures that mean "out of resources for now", not "the listener is broken".
_TRANSIENT_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
#: Seconds to wait before accepting again after a transient failure.
_ACCEPT_RETRY_DELAY = 0.1


class Closable(Protocol):
    """What the serving loop needs of an accepted association, secure or plain."""

    async def aclose(self) -> None:
        """End it gracefully."""

    def abort(self, reason: str = "") -> None:
        """End it at once."""


_Accepted = TypeVar("_Accepted", bound=Closable, covariant=True)


class Listener(Protocol[_Accepted]):
    """What :func:`serve_listeners` accepts from: a :class:`SecureListener` or a
    transport's :class:`~trio_sctls.MessageListener`."""

    async def accept(self) -> _Accepted:
        """Wait for the next association."""


@final
class SecureListener:
    """Accepts associations and runs TLS on every bidirectional stream of each, as the
    TLS server. Created by :func:`open_secure_listener`.

    Attributes:
        transport_listener: the SCTP listener underneath.
        options: the options every accepted association gets.
    """

    def __init__(
        self,
        transport_listener: MessageListener,
        ssl_context: ssl.SSLContext,
        options: AssociationOptions,
        nursery: trio.Nursery,
    ) -> None:
        self.transport_listener = transport_listener
        self.options = options
        self._ssl_context = ssl_context
        self._nursery = nursery

    def __repr__(self) -> str:
        return f"<SecureListener on {self.transport_listener!r}>"

    @property
    def port(self) -> int:
        """The SCTP port (useful after binding port 0)."""
        return self.transport_listener.port

    @property
    def udp_port(self) -> int | None:
        """(udp) The UDP port SCTP travels in, for a client's ``remote_udp_port``;
        ``None`` on other transports."""
        return self.transport_listener.udp_port

    async def accept(self) -> SecureAssociation:
        """Wait for the next association and return it running: its channels shake
        hands in the background as their ClientHellos arrive, and each channel's first
        use waits for its own handshake.

        Raises:
            trio.ClosedResourceError: the listener was closed.
            OSError: the transport could not accept (out of file descriptors, say).
        """
        while True:
            transport = await self.transport_listener.accept()
            association = SecureAssociation(
                transport, self._ssl_context, self.options, server_side=True
            )
            try:
                started: SecureAssociation = await self._nursery.start(run_association, association)
            except trio.BrokenResourceError as exc:
                # The peer failed before the association was up: its doing, and only
                # its association's end.
                log.info("association from %s failed at once: %s", _peer(transport), exc)
                continue
            return started

    async def aclose(self) -> None:
        """Stop accepting. Associations already accepted go on until the block of
        :func:`open_secure_listener` ends. Idempotent."""
        await self.transport_listener.aclose()


@asynccontextmanager
async def secure_listener(
    transport_listener: MessageListener,
    ssl_context: ssl.SSLContext,
    options: AssociationOptions,
) -> AsyncIterator[SecureListener]:
    """Wrap ``transport_listener``; the associations accepted run inside this block and
    are aborted when it ends."""
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            try:
                yield SecureListener(transport_listener, ssl_context, options, nursery)
            finally:
                nursery.cancel_scope.cancel()


def _peer(resource: object) -> object:
    transport = getattr(resource, "transport", resource)
    return getattr(transport, "peer_addresses", None)


def _caused_by_peer(exc: BaseException) -> bool:
    """Whether every leaf of ``exc`` is a broken resource: the peer's or the network's
    doing, not a bug in the handler."""
    if isinstance(exc, BaseExceptionGroup):
        _matched, rest = exc.split(trio.BrokenResourceError)
        return rest is None
    return isinstance(exc, trio.BrokenResourceError)


async def _run_handler(handler: Callable[[Any], Awaitable[object]], accepted: Closable) -> None:
    """Run the handler on one association; close it after, gracefully if the handler
    returned, by abort if it raised. Only the peer's failures are contained."""
    try:
        await handler(accepted)
    except BaseException as exc:
        accepted.abort(f"the server's handler failed: {type(exc).__name__}")
        if not _caused_by_peer(exc):
            raise
        log.info("association from %s ended: %s", _peer(accepted), _describe(exc))
        return
    try:
        await accepted.aclose()
    except trio.BrokenResourceError as exc:
        log.info("association from %s ended: %s", _peer(accepted), exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        stack = [exc]
        while stack:
            group = stack.pop()
            for inner in group.exceptions:
                if isinstance(inner, BaseExceptionGroup):
                    stack.append(inner)
                else:
                    leaves.append(inner)
        return "; ".join(dict.fromkeys(repr(leaf) for leaf in leaves))
    return repr(exc)


async def _accept_loop(
    listener: Listener[Closable],
    handler: Callable[[Any], Awaitable[object]],
    handler_nursery: trio.Nursery,
) -> None:
    while True:
        try:
            accepted = await listener.accept()
        except trio.ClosedResourceError:
            return
        except OSError as exc:
            if exc.errno in _TRANSIENT_ACCEPT_ERRORS:
                log.warning("accept failed (%s); retrying in %s s", exc, _ACCEPT_RETRY_DELAY)
                await trio.sleep(_ACCEPT_RETRY_DELAY)
                continue
            raise
        handler_nursery.start_soon(_run_handler, handler, accepted)


async def serve_listeners(
    handler: Callable[[Any], Awaitable[object]],
    listeners: Sequence[Listener[Closable]],
    *,
    handler_nursery: trio.Nursery | None = None,
) -> None:
    """Accept on every listener forever, calling ``handler(association)`` for each
    association in its own task.

    The association is closed gracefully when the handler returns and aborted when it
    raises. A failure caused by the peer or the network (every leaf a
    :class:`trio.BrokenResourceError`, inside exception groups or not) ends only that
    association and is logged at INFO; any other exception propagates and stops the
    server, as in :func:`trio.serve_tcp`. Returns when every listener is closed.

    Args:
        handler: ``async def handler(association)``; gets a
            :class:`~trio_sctls.SecureAssociation` from a :class:`SecureListener`, a
            :class:`~trio_sctls.MessageTransport` from a plain listener.
        listeners: the listeners to serve.
        handler_nursery: where the handlers run (default: a nursery of this call).
    """
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, handler, handler_nursery or nursery)
