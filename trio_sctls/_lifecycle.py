"""The state of one secure association, shared by its parts.

:class:`~trio_sctls.SecureAssociation` is a facade over two workers, the demultiplexer
(:mod:`trio_sctls._demux`) and the handshake driver (:mod:`trio_sctls._handshakes`).
All three must agree on one thing: whether the association is still usable, and if not,
why. That lives here, in one small object each of them holds: the state enum, the typed
error, the one way to fail (:meth:`Lifecycle.fail`) and the one check every operation
makes (:meth:`Lifecycle.check_usable`). Whoever detects a failure calls ``fail``; every
waiter, in any part, is woken through the wakers the parts registered, and finds the
error through ``check_usable``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any, final

import trio

from ._errors import AssociationError
from .transport import MessageTransport

log = logging.getLogger("trio_sctls")

#: Seconds we try to deliver a TLS alert before the ABORT that follows it.
ALERT_TIMEOUT = 1.0


class State(enum.Enum):
    """Where an association is in its life."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    BROKEN = "broken"


@final
class Lifecycle:
    """State, error and failure of one association (see the module docstring).

    Args:
        transport: the SCTP association underneath (aborted on failure).
        ppid: the payload protocol identifier of the TLS alert sent before an abort.
    """

    def __init__(self, transport: MessageTransport, *, ppid: int) -> None:
        self.transport = transport
        self.state = State.OPEN
        self.error: AssociationError | None = None
        #: Where background work runs (set while :func:`run_association` runs).
        self.nursery: trio.Nursery | None = None
        #: Set once the association is closed or broken: its background tasks may stop.
        self.ended = trio.Event()
        self._ppid = ppid
        self._wakers: list[Callable[[], None]] = []

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Have ``wake()`` called whenever the state changes, so that the part that
        registered it lets its waiters notice."""
        self._wakers.append(wake)

    def wake(self) -> None:
        """Wake every waiter of every part."""
        for wake in self._wakers:
            wake()

    def check_usable(self) -> None:
        """Raise the association's error if it is broken (a fresh copy naming the same
        stream, chained to the original), or :class:`trio.ClosedResourceError` if it
        was closed."""
        if self.error is not None:
            error = self.error
            raise type(error)(error.detail, stream=error.stream) from error
        if self.state is State.CLOSED:
            raise trio.ClosedResourceError("the association was closed")

    def spawn(self, function: Callable[..., Awaitable[Any]], *args: object) -> bool:
        """Run ``function(*args)`` in the background while the association is open.

        Returns:
            whether it was started (not once the association closed or broke).
        """
        if self.state is not State.OPEN or self.nursery is None:
            return False
        self.nursery.start_soon(function, *args)
        return True

    def fail(self, error: AssociationError, *, alert: tuple[int, bytes] | None = None) -> None:
        """Break the association with ``error``: SCTP ABORT (after ``alert``, the TLS
        alert OpenSSL wrote for a stream, if any, so the peer learns why), then wake
        everyone. A no-op once closed or broken: the first failure is the one reported."""
        if self.state in (State.BROKEN, State.CLOSED):
            return
        # At DEBUG: the error reaches every user of the association, and a server logs
        # it once with the peer's address (see _listeners.py).
        log.debug("aborting association: %s", error)
        self.error = error
        self.state = State.BROKEN
        # The peer's error will say why (RFC 9260 User-Initiated Abort cause).
        reason = str(error)
        if alert is not None and self.nursery is not None:
            self.nursery.start_soon(self._send_alert_then_abort, *alert, reason)
        else:
            self.transport.abort(reason)
        self.ended.set()
        self.wake()

    async def _send_alert_then_abort(self, stream: int, alert: bytes, reason: str) -> None:
        # Shielded: the association's background tasks are cancelled as soon as it
        # broke, and this last message is what tells the peer why.
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(ALERT_TIMEOUT):
                await self.transport.send_message(alert, stream=stream, ppid=self._ppid)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.transport.abort(reason)

    def finish(self) -> None:
        """The association is over (closed, or aborted by its user): a broken one stays
        broken (and is aborted, if it was not yet), any other becomes closed."""
        if self.state is State.BROKEN:
            self.transport.abort()
        else:
            self.state = State.CLOSED
        self.ended.set()
        self.wake()
