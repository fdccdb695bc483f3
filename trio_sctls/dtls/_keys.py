"""The SCTP-AUTH key schedule of DTLS over SCTP (RFC 6083 section 4.7, as its successor
draft-ietf-tsvwg-dtls-over-sctp-bis and OpenSSL have it).

Every DTLS handshake (the first one and each renegotiation) yields a new endpoint-pair
shared key: 64 bytes of the DTLS exporter with the label ``EXPORTER_DTLS_OVER_SCTP``
and no context. Its Shared Key Identifier is the previous one plus 1 (65535 is
followed by 1: key 0, the empty key of RFC 4895, is never reused). Each end

1. installs the new key as soon as it can compute it (when it writes its own
   ChangeCipherSpec or reads the peer's, whichever comes first: both happen after the
   handshake's master secret exists);
2. switches to it once the peer is sure to hold it: the end that finishes second
   (it has read the peer's Finished, so the peer wrote its ChangeCipherSpec and holds
   the key) switches just before sending its Finished, which then proves end to end
   that both ends derived the same key; the end that finishes first sends its Finished
   under the old key and switches when it reads the peer's;
3. deletes key 0 at the first switch (anyone who saw the INIT and INIT ACK can sign
   with it), and at later switches the key from two handshakes back; the key it
   switched away from stays deactivated, still checking what the peer may still
   retransmit under it, until the next switch.

Why the first Finished travels under the old key, where RFC 6083's text switches
before every Finished: SCTP checks a chunk when the packet arrives, and the peer can
compute the new key only once its DTLS layer has read the key exchange and
ChangeCipherSpec in front of that Finished. Signed with the new key, the first Finished
is dropped by a peer whose SCTP sees it first, and is delivered only by a
retransmission, one retransmission timeout later (a second or more on a real path).
The successor draft moved the switch after the Finished for this reason, and OpenSSL's
DTLS/SCTP switches exactly as here. It interoperates with both orders: an end that
switches before its first Finished signs it with a key we installed when we wrote our
ChangeCipherSpec, and what we send under the old key reaches a peer that deletes the
old key only after reading our Finished.

What this relies on from SCTP: a message keeps the key that was active when it was
sent (:class:`~trio_sctls.transport.AuthKeys`), so nothing sent before the switch
travels under a key the peer cannot know yet.
"""

from __future__ import annotations

from typing import final

from ..transport import AuthKeys

#: RFC 6083 section 5: the TLS exporter label (RFC 5705) of the SCTP-AUTH keys.
EXPORTER_LABEL = b"EXPORTER_DTLS_OVER_SCTP"
#: The label older OpenSSL (1.0.2, 1.1.0) exported with: the C string's NUL included.
#: OpenSSL 3 uses it under ``SSL_MODE_DTLS_SCTP_LABEL_LENGTH_BUG`` (``-sctp_label_bug``).
BUGGY_EXPORTER_LABEL = EXPORTER_LABEL + b"\0"
#: RFC 6083 section 4.7: each endpoint-pair shared secret is 64 bytes.
SECRET_SIZE = 64
#: Shared Key Identifiers are 16 bits (RFC 4895 section 4.1).
_MAX_KEY_ID = 0xFFFF


def next_key_id(key_id: int) -> int:
    """The Shared Key Identifier that follows ``key_id`` (RFC 6083 section 4.7)."""
    return 1 if key_id >= _MAX_KEY_ID else key_id + 1


@final
class KeySchedule:
    """Drives one association's :class:`~trio_sctls.transport.AuthKeys` through the
    key switch of every handshake."""

    def __init__(self, keys: AuthKeys) -> None:
        self._keys = keys
        self._current = keys.active_key_id
        self._new: int | None = None
        # The key switched away from last time: deactivated, deleted at the next switch.
        self._previous: int | None = None
        #: Key switches completed (one per handshake).
        self.switches = 0

    @property
    def active_key_id(self) -> int:
        """The key id our DATA is signed with now."""
        return self._keys.active_key_id

    def install(self, secret: bytes) -> None:
        """Add this handshake's key (idempotent within one handshake)."""
        if self._new is None:
            self._new = next_key_id(self._current)
            self._keys.add_key(self._new, secret)

    def switch(self) -> None:
        """Sign with this handshake's key from now on, deactivate the one before, and
        delete key 0 or the one before that. A no-op once this handshake switched."""
        if self._new is None:
            return
        old, self._current, self._new = self._current, self._new, None
        self._keys.activate_key(self._current)
        self._keys.deactivate_key(old)
        stale, self._previous = self._previous, old
        if old == 0:
            self._keys.delete_key(old)
            self._previous = None
        elif stale is not None:
            self._keys.delete_key(stale)
        self.switches += 1
