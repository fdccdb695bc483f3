"""The options of a DTLS-over-SCTP association, validated once."""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds for a DTLS handshake: the client's from connecting, the server's from
#: accepting (so a peer that never speaks is aborted), and each renegotiation's: the
#: same bound as the RFC 3436 channels', so that a loaded machine or a slow path (a
#: handshake may wait out an SCTP retransmission timeout at the key switch) does not
#: fail where TLS on streams would not.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: Seconds to send close_notify and shut SCTP down before aborting.
DEFAULT_CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class DTLSOptions:
    """How a :class:`~trio_sctls.dtls.DTLSAssociation` behaves.

    Attributes:
        handshake_ppid: the PPID of handshake, alert and ChangeCipherSpec records.
            RFC 6083 section 4.3 defines no PPID for DTLS: an application protocol
            registers its own for "over DTLS/SCTP" (Diameter's is 47, RFC 6733) and
            uses it on every record, so set it to the application's.
        handshake_timeout: seconds for each handshake (see
            :data:`DEFAULT_HANDSHAKE_TIMEOUT`).
        close_timeout: seconds for the graceful close.
        label_bug: export the SCTP-AUTH keys with the label older OpenSSL used
            (1.0.2 and 1.1.0 among them: ``EXPORTER_DTLS_OVER_SCTP`` with its C
            string's NUL byte counted in), to talk to such a peer, or to OpenSSL 3
            run with ``-sctp_label_bug``. Both ends must agree: with different labels the
            end that finishes the handshake first drops the other's Finished (signed with
            the other key), so its handshake never completes and it fails after
            ``handshake_timeout``. Leave it off otherwise (RFC 6083 section 5 names the label
            without the NUL).
    """

    handshake_ppid: int = 0
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    label_bug: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.handshake_ppid < 2**32:
            raise ValueError(f"handshake_ppid {self.handshake_ppid} does not fit in 32 bits")
        for name in ("handshake_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
