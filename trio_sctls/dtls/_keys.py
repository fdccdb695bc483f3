"""The SCTP-AUTH key schedule of DTLS over SCTP (RFC 6083 section 4.7).

Every DTLS handshake (the first one and each renegotiation) yields a new endpoint-pair
shared key: 64 bytes of the DTLS exporter with the label ``EXPORTER_DTLS_OVER_SCTP``
and no context. Its Shared Key Identifier is the previous one plus 1 (65535 is
followed by 1: key 0, the empty key of RFC 4895, is never reused). Each end

1. installs the new key as soon as it can compute it (when it writes its own
   ChangeCipherSpec or reads the peer's, whichever comes first: both happen after the
   handshake's master secret exists);
2. makes it the active key just before it sends its Finished message;
3. retires (deactivates, then deletes) the old key once it has both sent its Finished
   and received the peer's: from then on neither end sends under the old key.

What this relies on from SCTP: a message keeps the key that was active when it was
sent (:class:`~trio_sctls.transport.AuthKeys`). The records that let the peer compute
the new key (the key exchange, the ChangeCipherSpec) are sent before step 2, so they
travel, and are retransmitted, under the old key, which the peer holds. Signed with the
new key they would be dropped by a peer that can learn it only by reading them, on
every retransmission: the handshake would hang. Only the Finished travels under the new
key, and the peer's SCTP checks it on arrival, possibly before the peer's DTLS layer
has read the ChangeCipherSpec: it is then dropped once and retransmitted after an RTO,
when the peer holds the key. RFC 6083 leaves no earlier moment to switch (section 4.7
puts the switch before the Finished, and the peer sends nothing we could wait for).
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

    def activate(self) -> None:
        """Sign from now on with this handshake's key (just before our Finished)."""
        assert self._new is not None, "install() comes first"
        self._keys.activate_key(self._new)

    def retire(self) -> None:
        """Both Finished messages have crossed: forget the previous key."""
        assert self._new is not None, "install() comes first"
        old, self._current, self._new = self._current, self._new, None
        self._keys.deactivate_key(old)
        self._keys.delete_key(old)
        self.switches += 1
