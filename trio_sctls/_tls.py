"""Hooks into each channel's TLS object, and the client-side session cache.

Why hooks at all: a channel is a plain :class:`trio.SSLStream`, and the association must
still learn (1) the moment each handshake completes, to pin the peer's certificate
*before* any application data is exchanged on that stream; (2) any TLS failure on any
stream, to abort the whole association (RFC 3436 leaves a broken stream no way to
recover); and (3) it must get TLS 1.3 session tickets across without losing data.

How: :class:`trio.SSLStream` creates its :class:`ssl.SSLObject` by calling
``ssl_context.wrap_bio(incoming, outgoing, server_side=..., server_hostname=...)``. We
pass it a :class:`ContextAdapter` whose ``wrap_bio`` wraps the real object in a
:class:`TLSObject` that delegates every call and watches ``do_handshake``, ``read``,
``write`` and ``unwrap``. No private attribute of Trio or of :mod:`ssl` is touched; the
only contract relied upon is ``wrap_bio``'s, and everything else is forwarded.

Driving handshakes without Trio's machinery. ``wrap_bio`` also hands us the two memory
BIOs of the channel, so the association can run a handshake itself while nobody else
uses the channel: its demux task writes each arriving handshake message into the
incoming BIO (:meth:`TLSObject.feed_handshake`), one task steps OpenSSL once the flight is
in (:meth:`TLSObject.step_handshake`) and what OpenSSL writes goes to the pipe's queue,
which that task sends, for all channels. That costs one call per flight instead of a
task, a receive and a send round through :class:`trio.SSLStream` per flight per channel,
which is most of the CPU of setting up many channels beyond OpenSSL's. The handshake
itself is the same OpenSSL handshake, and its completion goes through the same hook
(pinning included). Trio asks for the handshake as soon as a user reads or writes the
channel (a server handler that reads at once does so before any ClientHello arrived).
While the association drives it, the TLS object does not step it then: it writes
:data:`~trio_sctls._pipe.HANDSHAKE_WAIT` into the (empty) outgoing BIO and reports "want
read", so Trio sends that marker, and the pipe's ``send_all`` holds Trio there, without
sending anything, until the association completed the handshake (or the association
failed, or the pipe closed). Trio then steps it again, finds it done and carries on as
after any handshake. So the flights stay the association's, bundled for all channels,
however early the channels are used. Ownership passes to Trio for good once Trio steps
a completed handshake, or the first time it steps one the association does not drive
(a client's ``lazy`` channels).

TLS 1.3 session tickets, the hazard:

* Server side: Trio deliberately holds back the tickets OpenSSL writes at the end of a
  TLS 1.3 server handshake until the server's first write (python-trio/trio#819: a TCP
  client that never reads could deadlock on them). Under RFC 3436 the client's demux
  always reads, so the hazard does not exist, and a client that wants to resume other
  streams from stream 0's session needs them now. So on a TLS 1.3 server handshake's
  completion we take the tickets out of the outgoing BIO ourselves and queue them on the
  pipe, whose association sends them at once. They are the bytes OpenSSL produced anyway.
* Client side: OpenSSL processes tickets only inside ``SSL_read``, which returns
  application data if any follows. The association reads stream 0 until a ticket was
  processed (see ``HandshakeDriver._harvest_ticket``); any application data that read
  returns is pushed back here (:meth:`TLSObject.unread`) and handed to the user's next
  read, so nothing is lost or reordered.
"""

from __future__ import annotations

import ssl
import time
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Protocol, final

from ._pipe import HANDSHAKE_WAIT, StreamPipe


class TLSObserver(Protocol):
    """What a :class:`TLSObject` reports to its association."""

    def handshake_completed(self, tls: TLSObject) -> None:
        """Called as a handshake completes; raising :class:`ssl.SSLError` refuses it."""

    def tls_failed(self, tls: TLSObject, exc: ssl.SSLError, alert: bytes) -> None:
        """Called when TLS fails on a channel (not for want-read or clean EOF), with
        the alert OpenSSL wrote (Trio does not send it once an operation failed)."""


class PeerIdentityMismatch(ssl.SSLError):
    """Raised inside the TLS object when a stream's peer certificate differs from the
    pinned one; Trio turns it into :class:`trio.BrokenResourceError`."""


#: Exceptions that are part of normal operation, not a failure of the TLS connection.
#: SSLEOFError/SSLSyscallError: the transport ended without close_notify, which Trio
#: reports as a broken (truncated) stream; it does not by itself break the association.
_NOT_FAILURES = (
    ssl.SSLWantReadError,
    ssl.SSLWantWriteError,
    ssl.SSLZeroReturnError,
    ssl.SSLEOFError,
    ssl.SSLSyscallError,
    PeerIdentityMismatch,
)


@final
class TLSObject:
    """Delegates to one real :class:`ssl.SSLObject`; see the module docstring."""

    def __init__(
        self,
        obj: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        *,
        pipe: StreamPipe,
        observer: TLSObserver,
    ) -> None:
        # object.__setattr__ because __setattr__ forwards to the real object.
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_incoming", incoming)
        object.__setattr__(self, "_outgoing", outgoing)
        object.__setattr__(self, "pipe", pipe)
        object.__setattr__(self, "_observer", observer)
        object.__setattr__(self, "_pushback", bytearray())
        object.__setattr__(self, "handshake_started", None)
        object.__setattr__(self, "handshake_finished", None)
        object.__setattr__(self, "driven", False)
        object.__setattr__(self, "trio_waited", False)

    _obj: ssl.SSLObject
    _incoming: ssl.MemoryBIO
    _outgoing: ssl.MemoryBIO
    pipe: StreamPipe
    _observer: TLSObserver
    _pushback: bytearray
    #: time.perf_counter() at the first handshake step, and at its completion.
    handshake_started: float | None
    handshake_finished: float | None
    #: Whether the association drives this handshake itself (:meth:`step_handshake`);
    #: cleared for good once Trio steps it after it completed (see the module docstring).
    driven: bool
    #: Whether Trio asked for this handshake while the association was driving it,
    #: and so waits for it itself (see the module docstring).
    trio_waited: bool

    @property
    def stream_id(self) -> int:
        """The SCTP stream id of this channel."""
        return self.pipe.stream_id

    @property
    def pushed_back(self) -> int:
        """Bytes of application data held for the user's next read."""
        return len(self._pushback)

    def unread(self, data: bytes | bytearray) -> None:
        """Give back application data read on the user's behalf; returned first later."""
        self._pushback += data

    def _failed(self, exc: ssl.SSLError) -> None:
        if not isinstance(exc, _NOT_FAILURES):
            self._observer.tls_failed(self, exc, self._outgoing.read())

    def drive(self) -> None:
        """Let the association drive this handshake (:meth:`step_handshake`) until Trio
        steps it itself."""
        object.__setattr__(self, "driven", True)

    def do_handshake(self) -> None:
        """Trio steps the handshake. While the association drives it, Trio is made to
        wait until it is complete (see the module docstring); then, or if the
        association never drove it, Trio drives it from now on. On completion pin the
        peer and release TLS 1.3 tickets."""
        if self.driven and self.handshake_finished is None:
            # The outgoing BIO is empty (every step of the association's empties it):
            # Trio sends the marker alone, and the pipe makes that send wait.
            object.__setattr__(self, "trio_waited", True)
            self.pipe.handshake_running = True
            self._outgoing.write(HANDSHAKE_WAIT)
            raise ssl.SSLWantReadError("the association is driving this handshake")
        if self.driven:
            object.__setattr__(self, "driven", False)
        if self.handshake_finished is not None:
            # Completed by the association: nothing left to do but tell Trio so.
            self._obj.do_handshake()
            return
        if self.handshake_started is None:
            object.__setattr__(self, "handshake_started", time.perf_counter())
        try:
            self._obj.do_handshake()
        except ssl.SSLError as exc:
            self._failed(exc)
            raise
        self._completed()
        if self._obj.server_side and self._obj.version() == "TLSv1.3":
            # Everything the server wrote before this step was sent already, so what
            # the BIO holds now are the NewSessionTicket records: send them first.
            self.pipe.queue_out(self._outgoing.read())

    def feed_handshake(self, data: bytes) -> None:
        """Give OpenSSL one message from the peer for the next :meth:`step_handshake`."""
        self._incoming.write(data)

    def step_handshake(self, data: bytes | None = None) -> bool:
        """The association drives the handshake: feed ``data`` (one message from the
        peer) to OpenSSL, step it, and queue whatever it wrote on the pipe.

        Returns:
            whether the handshake is complete.

        Raises:
            ssl.SSLError: the handshake failed (already reported to the observer).
        """
        if data:
            self._incoming.write(data)
        if self.handshake_started is None:
            object.__setattr__(self, "handshake_started", time.perf_counter())
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            self.pipe.queue_out(self._outgoing.read())
            return False
        except ssl.SSLError as exc:
            self._failed(exc)
            raise
        self._completed()
        # The last flight, and for a TLS 1.3 server its session tickets.
        self.pipe.queue_out(self._outgoing.read())
        return True

    def _completed(self) -> None:
        object.__setattr__(self, "handshake_finished", time.perf_counter())
        self.pipe.handshake_done()
        self._observer.handshake_completed(self)

    def read(self, size: int = 1024, buffer: Any = None) -> Any:
        """Like :meth:`ssl.SSLObject.read`, pushed-back data first."""
        if self._pushback:
            data = bytes(self._pushback[:size])
            del self._pushback[:size]
            if buffer is None:
                return data
            memoryview(buffer)[: len(data)] = data
            return len(data)
        try:
            return self._obj.read(size, buffer)
        except ssl.SSLError as exc:
            self._failed(exc)
            raise

    def write(self, data: Any) -> int:
        """Like :meth:`ssl.SSLObject.write`."""
        try:
            return self._obj.write(data)
        except ssl.SSLError as exc:
            self._failed(exc)
            raise

    def unwrap(self) -> None:
        """Like :meth:`ssl.SSLObject.unwrap`."""
        try:
            self._obj.unwrap()
        except ssl.SSLError as exc:
            self._failed(exc)
            raise

    def pending(self) -> int:
        """Decrypted bytes available without reading more, pushed-back data included."""
        return len(self._pushback) + self._obj.pending()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)

    def __setattr__(self, name: str, value: object) -> None:
        # Trio forwards `stream.session = ...` here; it must reach the real object.
        setattr(self._obj, name, value)


@final
class ContextAdapter:
    """Stands in for an :class:`ssl.SSLContext` when creating one channel's SSLStream:
    its ``wrap_bio`` returns a :class:`TLSObject`; every other attribute is the real
    context's."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        pipe: StreamPipe,
        observer: TLSObserver,
    ) -> None:
        # Renegotiation (TLS 1.2) would run a new handshake inside read(), past the
        # handshake hook that pins the peer's certificate: refuse it, on the context the
        # user gave us (an option OpenSSL reads per connection, so it must be set there).
        if not context.options & ssl.OP_NO_RENEGOTIATION:
            context.options |= ssl.OP_NO_RENEGOTIATION
        self._context = context
        self._pipe = pipe
        self._observer = observer
        self.created: TLSObject | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> TLSObject:
        """Create the channel's TLS object (see :meth:`ssl.SSLContext.wrap_bio`)."""
        obj = self._context.wrap_bio(
            incoming,
            outgoing,
            server_side=server_side,
            # Trio passes the name IDNA-encoded, as bytes; wrap_bio takes those too.
            server_hostname=server_hostname,
            session=session,
        )
        self.created = TLSObject(obj, incoming, outgoing, pipe=self._pipe, observer=self._observer)
        return self.created

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


@final
class SessionCache:
    """Client-side TLS sessions, so that a later association to the same server resumes
    (RFC 3436 section 5: an abbreviated handshake may resume a session "from another
    connection ... on the same or another association").

    Sessions belong to the :class:`ssl.SSLContext` that made them (OpenSSL refuses
    others), so the cache is kept per context, and forgets a context when it goes away.

    Args:
        max_entries: servers remembered per context; the least recently used goes first.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max_entries = max_entries
        self._by_context: weakref.WeakKeyDictionary[
            ssl.SSLContext, OrderedDict[Hashable, ssl.SSLSession]
        ] = weakref.WeakKeyDictionary()

    def get(self, context: ssl.SSLContext, key: Hashable) -> ssl.SSLSession | None:
        """The remembered session for ``key`` (e.g. host, port, server name), if any."""
        entries = self._by_context.get(context)
        if entries is None or key not in entries:
            return None
        entries.move_to_end(key)
        return entries[key]

    def put(self, context: ssl.SSLContext, key: Hashable, session: ssl.SSLSession) -> None:
        """Remember ``session`` for ``key``."""
        entries = self._by_context.setdefault(context, OrderedDict())
        entries[key] = session
        entries.move_to_end(key)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every session."""
        self._by_context.clear()


def is_resumable(session: ssl.SSLSession | None, version: str | None) -> bool:
    """Whether ``session`` can resume: in TLS 1.3 only once a ticket was received."""
    if session is None:
        return False
    if version == "TLSv1.3":
        return bool(session.has_ticket)
    return True
