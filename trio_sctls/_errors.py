"""The exception hierarchy of trio-sctls.

Errors that end an association subclass :class:`trio.BrokenResourceError`, so code that
already handles a broken Trio stream handles a broken association too. Errors caused by
the peer (or the network) carry the stream id they concern, when there is one, so that a
log line says *where* things went wrong.
"""

from __future__ import annotations

import trio


class SCTLSError(Exception):
    """Base class of every error raised by trio-sctls itself."""


class SCTPNotSupportedError(SCTLSError, OSError):
    """The kernel transport was asked for, but this kernel has no SCTP.

    Raised when ``socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP)`` fails with
    ``EPROTONOSUPPORT`` (Linux without the ``sctp`` module) or the platform is not Linux.
    """


class AuthNotSupportedError(SCTLSError, ConnectionRefusedError):
    """SCTP-AUTH (RFC 4895) was required (``auth=True``) and the peer does not offer it.

    Raised by connecting, like any refused association (it is a
    :class:`ConnectionRefusedError`): DTLS over SCTP (RFC 6083) is not safe without
    authenticated DATA, so there is no falling back to plain SCTP.
    """


class AssociationError(SCTLSError, trio.BrokenResourceError):
    """The association is unusable: aborted by us, by the peer, or lost.

    Attributes:
        stream: the SCTP stream id the failure concerns, or ``None`` when it concerns
            the association as a whole.
    """

    def __init__(self, message: str, *, stream: int | None = None) -> None:
        #: The message without the stream prefix.
        self.detail = message
        if stream is not None:
            message = f"stream {stream}: {message}"
        super().__init__(message)
        self.stream = stream


class AssociationAbortedError(AssociationError):
    """The association was aborted (an SCTP ABORT was sent or received)."""


class PeerShutdownError(AssociationError):
    """The peer shut the association down gracefully (SCTP SHUTDOWN, RFC 9260 section
    9.2): what it sent before is still delivered, but nothing new may be sent."""


class AssociationLostError(AssociationError):
    """The association failed (retransmission limit reached, peer unreachable)."""


class RemoteProtocolError(AssociationError):
    """The peer broke RFC 3436 or RFC 9260, so we aborted the association.

    Examples: an unordered message on a TLS stream (RFC 3436 section 6.2), data on a
    stream id outside the TLS range without opt-in (section 7), a TLS record larger than
    the configured maximum.
    """


class HandshakeError(AssociationError):
    """A TLS handshake (or a later TLS record) failed on one stream; the association
    was aborted. The underlying :class:`ssl.SSLError` is chained as ``__cause__``."""


class PeerIdentityError(HandshakeError):
    """A stream presented a peer certificate different from the one pinned on the first
    completed handshake; the association was aborted."""


class BufferLimitError(AssociationError):
    """A stream (or the association) buffered more unread bytes than its budget, and the
    overflow policy is ``"abort"``."""


class SendFailedError(AssociationError):
    """The SCTP stack reported that a message could not be delivered."""
