"""Listeners and the serving loop, in the shape of trio's ``SSLListener`` and
``serve_listeners``.

Theory of operation
===================

Listeners. A :class:`SecureListener` wraps a transport's
:class:`~trio_sctls.MessageListener`: its :meth:`~SecureListener.accept` returns a
:class:`~trio_sctls.SecureAssociation` whose demultiplexer is already running. Unlike a
TLS stream, an association needs a task of its own (one reader fans messages out to the
channels), so a secure listener owns a nursery in which the associations it accepted
run, and it exists only inside the ``async with`` of :func:`open_secure_listener`.
Leaving that block normally closes the associations still open gracefully, within
``shutdown_timeout``, and aborts what is left; leaving it by an exception (or a
cancellation, which stops the transports' own tasks too) aborts them at once.

The serving loop. :func:`serve_listeners` is the one loop, for secure and plain
listeners alike: accept, check the limits, start the handler in its own task, close the
association when the handler returns. Where the line runs between the peer's failures
and the handler's bugs:

* An exception whose every leaf is a :class:`trio.BrokenResourceError` (which every
  :class:`~trio_sctls.AssociationError` is, and what a channel raises when its peer or
  the network failed), alone or inside exception groups from the handler's nurseries,
  is the peer's doing: it ends that association only (aborted), and is logged once, at
  INFO, with the peer's address and the association's own account of what happened.
* :class:`trio.Cancelled` leaves mean the server is stopping (see below), and are let
  through once the association is closed; broken resources beside them are logged as
  above.
* Anything else propagates out of the serving loop and stops the server, as an
  exception in a :func:`trio.serve_tcp` handler does: it is a bug to fix, not a peer to
  survive.

Nothing else a peer can do reaches the loop: an association that fails while being set
up is dropped by :meth:`SecureListener.accept` (logged at INFO), one over a limit is
aborted before any handler sees it (logged at WARNING), and the server side of every
association aborts a peer that starts no TLS handshake within ``handshake_timeout`` of
being accepted, or leaves one unfinished that long after its first byte (see
:mod:`trio_sctls._handshakes`).

Limits (:class:`~trio_sctls.ServerOptions`). Counted by the loop from acceptance to the
end of the association's close: ``max_associations`` per listener,
``max_associations_per_peer`` per peer address (the first address's host, over all the
listeners of one loop). An association over a limit is aborted at once with a reason
and never counted.

Graceful shutdown. Cancelling the loop cancels every handler; each handler's task then
closes its association gracefully (close_notify on every channel, then SCTP's SHUTDOWN),
shielded, within ``shutdown_timeout``, and aborts it if that does not finish in time.
That needs the associations' background tasks (the demultiplexer, the udp transport's
socket pump) to outlive the cancellation, which they do only if the listeners were
opened outside the cancelled scope. :func:`serve_until_cancelled` arranges exactly that,
for :func:`~trio_sctls.serve` and :func:`~trio_sctls.serve_sctp`: it opens the listener
under a shield, and turns the cancellation of its caller into the cancellation of the
serving loop alone (and the closing of the listener, so that nothing new is accepted);
once the associations are closed it returns to be cancelled.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, final

import trio

from ._association import SecureAssociation, run_association
from ._options import DEFAULT_SHUTDOWN_TIMEOUT, AssociationOptions, ServerOptions
from ._util import unwrap_single_exception
from .transport import MessageListener

log = logging.getLogger("trio_sctls")

#: accept() failures that mean "out of resources for now", not "the listener is broken".
_TRANSIENT_ACCEPT_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)
#: Seconds to wait before accepting again after a transient failure.
_ACCEPT_RETRY_DELAY = 0.1
#: The reason an association still open when the server stopped is aborted with.
_SHUTDOWN_REASON = "the server is shutting down"
#: What a handler may raise without being buggy: the peer's failures, and the cancellation
#: of a server that is stopping.
_PEER_OR_STOP = (trio.BrokenResourceError, trio.Cancelled)


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

    async def aclose(self) -> None:
        """Stop accepting."""


class ListenerPorts:
    """The ports of a listener that wraps a transport's listener (secure or DTLS)."""

    transport_listener: MessageListener

    @property
    def port(self) -> int:
        """The SCTP port (useful after binding port 0)."""
        return self.transport_listener.port

    @property
    def udp_port(self) -> int | None:
        """(udp) The UDP port SCTP travels in, for a client's ``remote_udp_port``;
        ``None`` on other transports."""
        return self.transport_listener.udp_port


@final
@dataclass(eq=False)
class SecureListener(ListenerPorts):
    """Accepts associations and runs TLS on every bidirectional stream of each, as the
    TLS server. Created by :func:`open_secure_listener`.

    Attributes:
        transport_listener: the SCTP listener underneath.
        options: the options every accepted association gets.
    """

    transport_listener: MessageListener
    options: AssociationOptions
    _ssl_context: ssl.SSLContext = field(repr=False)
    _running: _Running = field(repr=False)

    @property
    def open_associations(self) -> int:
        """How many of the associations it accepted are still open."""
        return len(self._running.live)

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
            # (Read now: a transport that has failed may no longer know its peer.)
            peer = peer_name(transport)
            association = SecureAssociation(
                transport, self._ssl_context, self.options, server_side=True
            )
            try:
                return await self._running.start(association)
            except trio.BrokenResourceError as exc:
                # The peer failed before the association was up: its doing, and only
                # its association's end.
                log.info("association from %s failed at once: %s", peer, exc)

    async def aclose(self) -> None:
        """Stop accepting. Associations already accepted go on until the block of
        :func:`open_secure_listener` ends. Idempotent."""
        await self.transport_listener.aclose()


class _Running:
    """The associations a secure listener accepted, each run in a task of the
    listener's block until it ends (closed, aborted or broken); when the block ends,
    those still open are closed or aborted together."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.live: set[SecureAssociation] = set()

    async def start(self, association: SecureAssociation) -> SecureAssociation:
        """Run ``association`` in the block; return it once its demultiplexer runs."""
        started: SecureAssociation = await self._nursery.start(self._run, association)
        return started

    async def _run(
        self,
        association: SecureAssociation,
        *,
        task_status: trio.TaskStatus[SecureAssociation] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.live.add(association)
        try:
            await run_association(association, task_status=task_status)
        finally:
            self.live.discard(association)

    async def close_all(self, seconds: float) -> None:
        """Close the open associations gracefully, together, within ``seconds``;
        abort what is left."""
        async with trio.open_nursery() as nursery:
            for association in list(self.live):
                peer = peer_name(association)
                nursery.start_soon(_close_within, association, peer, seconds)

    def abort_all(self) -> None:
        """Abort the open associations at once."""
        for association in list(self.live):
            association.abort(_SHUTDOWN_REASON)


async def _close_quietly(accepted: Closable, peer: str | None = None) -> None:
    try:
        await accepted.aclose()
    except trio.BrokenResourceError as exc:
        log.info("association from %s ended while closing: %s", peer or peer_name(accepted), exc)


@asynccontextmanager
async def secure_listener(
    transport_listener: MessageListener,
    ssl_context: ssl.SSLContext,
    options: AssociationOptions,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> AsyncIterator[SecureListener]:
    """Wrap ``transport_listener``; the associations accepted run inside this block.
    When it ends normally they are closed gracefully within ``shutdown_timeout``, then
    aborted; when it ends by an exception they are aborted at once."""
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            running = _Running(nursery)
            listener = SecureListener(transport_listener, options, ssl_context, running)
            try:
                yield listener
            except BaseException:
                running.abort_all()
                raise
            else:
                await listener.aclose()
                await running.close_all(shutdown_timeout)
            finally:
                nursery.cancel_scope.cancel()


def peer_name(resource: object) -> str:
    """The peer's first address of an association (secure or plain) as ``host:port``,
    for logs; ``"?"`` when it has none."""
    transport = getattr(resource, "transport", resource)
    addresses = getattr(transport, "peer_addresses", None) or []
    if not addresses:
        return "?"
    host, port = addresses[0][:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _peer_host(resource: object) -> object:
    transport = getattr(resource, "transport", resource)
    addresses = getattr(transport, "peer_addresses", None) or []
    return addresses[0][0] if addresses else None


def _leaves(exc: BaseException) -> list[BaseException]:
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(_leaves(inner))
    return found


def _account(accepted: object, exc: BaseException | None) -> str:
    """Why an association ended, for the log: its own recorded error where it has one
    (it names the stream and the cause), else what the handler raised."""
    error = getattr(accepted, "error", None)
    if error is not None:
        return str(error)
    if exc is None:
        return "closed"
    return "; ".join(dict.fromkeys(repr(leaf) for leaf in _leaves(exc)))


async def _close_within(accepted: Closable, peer: str, seconds: float) -> None:
    """Close ``accepted`` gracefully within ``seconds``, shielded (the caller is being
    cancelled); if that does not finish, abort it, saying why."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def close() -> None:
                await _close_quietly(accepted, peer)
                done.set()

            nursery.start_soon(close)
            with trio.move_on_after(seconds):
                await done.wait()
            if not done.is_set():
                # Abort first, with the reason (a cancelled close would abort without
                # one), then stop the close that waits for the peer.
                accepted.abort(_SHUTDOWN_REASON)
                nursery.cancel_scope.cancel()


async def _run_handler(
    handler: Callable[[Any], Awaitable[object]],
    accepted: Closable,
    peer: str,
    shutdown_timeout: float,
) -> None:
    """Run the handler on one association (from ``peer``); close it after: gracefully
    if the handler returned or was cancelled (within ``shutdown_timeout``), by abort if
    it raised. Only the peer's failures are contained (see the module docstring)."""
    try:
        await handler(accepted)
    except BaseException as exc:
        leaves = _leaves(exc)
        stopping = any(isinstance(leaf, trio.Cancelled) for leaf in leaves)
        by_peer = all(isinstance(leaf, _PEER_OR_STOP) for leaf in leaves)
        if not by_peer:
            # A bug in the handler (or KeyboardInterrupt and the like): not ours to hide.
            accepted.abort(f"the server's handler failed: {type(exc).__name__}")
            raise
        if any(isinstance(leaf, trio.BrokenResourceError) for leaf in leaves):
            accepted.abort("the association failed")
            log.info("association from %s ended: %s", peer, _account(accepted, exc))
        if stopping:
            await _close_within(accepted, peer, shutdown_timeout)
            raise
        return
    try:
        await accepted.aclose()
    except trio.BrokenResourceError as exc:
        log.info("association from %s ended: %s", peer, exc)
    else:
        if getattr(accepted, "error", None) is not None:
            # Broken while the handler ran, and the handler let it be.
            log.info("association from %s ended: %s", peer, _account(accepted, None))


@final
class _Limits:
    """Counts the open associations of one serving loop against
    :class:`~trio_sctls.ServerOptions`' limits."""

    def __init__(self, options: ServerOptions) -> None:
        self._options = options
        self._per_listener: Counter[int] = Counter()
        self._per_peer: Counter[object] = Counter()

    def refusal(self, listener: int, peer: object) -> str | None:
        """Why an association from ``peer`` on ``listener`` may not be admitted now,
        or ``None`` if it may."""
        most = self._options.max_associations
        if most is not None and self._per_listener[listener] >= most:
            return f"the server is at its limit of {most} associations"
        most = self._options.max_associations_per_peer
        if most is not None and peer is not None and self._per_peer[peer] >= most:
            return f"the server is at its limit of {most} associations from {peer}"
        return None

    def admit(self, listener: int, peer: object) -> None:
        """Count an association in."""
        self._per_listener[listener] += 1
        if peer is not None:
            self._per_peer[peer] += 1

    def release(self, listener: int, peer: object) -> None:
        """Count an association out."""
        self._per_listener[listener] -= 1
        if peer is not None:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]


async def _serve_one(
    handler: Callable[[Any], Awaitable[object]],
    accepted: Closable,
    peer: str,
    limits: _Limits,
    slot: tuple[int, object],
    shutdown_timeout: float,
) -> None:
    try:
        await _run_handler(handler, accepted, peer, shutdown_timeout)
    finally:
        limits.release(*slot)


async def _accept_loop(
    index: int,
    listener: Listener[Closable],
    handler: Callable[[Any], Awaitable[object]],
    handler_nursery: trio.Nursery,
    limits: _Limits,
    shutdown_timeout: float,
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
        host, name = _peer_host(accepted), peer_name(accepted)
        refusal = limits.refusal(index, host)
        if refusal is not None:
            log.warning("association from %s refused: %s", name, refusal)
            accepted.abort(refusal)
            continue
        limits.admit(index, host)
        handler_nursery.start_soon(
            _serve_one, handler, accepted, name, limits, (index, host), shutdown_timeout
        )


async def serve_listeners(
    handler: Callable[[Any], Awaitable[object]],
    listeners: Sequence[Listener[Closable]],
    *,
    handler_nursery: trio.Nursery | None = None,
    server_options: ServerOptions | None = None,
) -> None:
    """Accept on every listener forever, calling ``handler(association)`` for each
    association in its own task.

    The association is closed gracefully when the handler returns and aborted when it
    raises. A failure caused by the peer or the network (every leaf a
    :class:`trio.BrokenResourceError`, inside exception groups or not) ends only that
    association and is logged at INFO with the peer's address; any other exception
    propagates and stops the server, as in :func:`trio.serve_tcp`. When this is
    cancelled, each handler is cancelled and its association closed gracefully within
    ``shutdown_timeout`` (then aborted), provided the listeners' transports live outside
    the cancelled scope (see :func:`~trio_sctls.serve`, which arranges that). Returns
    when every listener is closed.

    Args:
        handler: ``async def handler(association)``; gets a
            :class:`~trio_sctls.SecureAssociation` from a :class:`SecureListener`, a
            :class:`~trio_sctls.MessageTransport` from a plain listener.
        listeners: the listeners to serve.
        handler_nursery: where the handlers run (default: a nursery of this call).
        server_options: limits and the shutdown deadline (see
            :class:`~trio_sctls.ServerOptions`).
    """
    options = server_options if server_options is not None else ServerOptions()
    limits = _Limits(options)
    async with trio.open_nursery() as nursery:
        for index, listener in enumerate(listeners):
            nursery.start_soon(
                _accept_loop,
                index,
                listener,
                handler,
                handler_nursery or nursery,
                limits,
                options.shutdown_timeout,
            )


_L = TypeVar("_L", bound=Listener[Any])


async def serve_until_cancelled(
    open_listener: Callable[[], AbstractAsyncContextManager[_L]],
    handler: Callable[[Any], Awaitable[object]],
    server_options: ServerOptions,
    task_status: trio.TaskStatus[_L],
) -> None:
    """Open a listener with ``open_listener()`` and serve it with
    :func:`serve_listeners` until cancelled; then shut down gracefully (see the module
    docstring) and let the cancellation through.

    The listener (and with it the transports' background tasks) is opened under a
    shield, so that the caller's cancellation stops only the serving loop: the handlers
    are cancelled, their associations closed within ``server_options.shutdown_timeout``
    while the transports still run, and only then is everything torn down.

    Raises:
        OSError: the listener could not be opened.
    """
    serving = trio.CancelScope()
    opened: list[_L] = []

    async def stop_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            serving.cancel()
            if opened:
                # Accept nothing new while the open associations close.
                with trio.CancelScope(shield=True):
                    await opened[0].aclose()

    with unwrap_single_exception():
        async with trio.open_nursery() as watcher:
            watcher.start_soon(stop_when_cancelled)
            with trio.CancelScope(shield=True):
                async with open_listener() as listener:
                    opened.append(listener)
                    task_status.started(listener)
                    with serving:
                        await serve_listeners(handler, [listener], server_options=server_options)
            watcher.cancel_scope.cancel()
