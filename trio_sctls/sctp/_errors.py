"""Errors of the sans-IO SCTP core: who was wrong, and what to put on the wire.

The core never lets a malformed or hostile datagram raise out of
``receive_datagram()``: such packets are dropped (or answered as RFC 9260 says). The
errors below are what the *caller* can see:

* :class:`LocalProtocolError`: the API was misused (sending on a closed association, on
  a stream that does not exist, a message larger than the configured maximum...).
* :class:`ParseError`: raised by the wire-format ``parse()`` functions when bytes are not
  a well-formed SCTP structure. The association catches it and drops the packet; it only
  reaches callers who parse bytes themselves.
* :class:`ProtocolViolation`: the peer broke RFC 9260 in a way that ends the
  association. It is raised and caught inside the core, which turns it into an ABORT
  carrying :attr:`ProtocolViolation.cause`, and reported as an
  ``AssociationAborted`` event; it is public so that tests and drivers can name it.
  It is not :class:`trio_sctls.RemoteProtocolError`, the error a *user* sees once a
  transport has turned that event into the end of the association.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._causes import ErrorCause


class SCTPError(Exception):
    """Base class of every error raised by the sans-IO SCTP core."""


class LocalProtocolError(SCTPError):
    """Our own user called the API in a way the protocol state does not allow."""


class ParseError(SCTPError, ValueError):
    """Bytes that are not a well-formed SCTP packet, chunk, parameter or error cause."""


class ProtocolViolation(SCTPError):
    """The peer broke the protocol; the association is aborted with :attr:`cause`.

    Args:
        message: what went wrong, for humans.
        cause: the error cause to carry in the ABORT chunk (RFC 9260, Section 3.3.10),
            or ``None`` for an ABORT without causes.
    """

    def __init__(self, message: str, cause: ErrorCause | None = None) -> None:
        super().__init__(message)
        #: The error cause sent to the peer in our ABORT chunk.
        self.cause = cause
