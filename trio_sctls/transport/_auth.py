"""SCTP-AUTH (RFC 4895) shared keys, as a transport offers them to the layer above.

DTLS over SCTP (RFC 6083) derives a fresh endpoint-pair shared key from each DTLS
handshake and must switch the association to it (section 4.7): add the new key, make it
active once both ends hold it, then retire the old one. The key schedule belongs to the
DTLS layer; how a key reaches the wire belongs to the transport (our own SCTP core on udp,
socket options on kernel SCTP, a shared table on memory). This protocol is the seam.
"""

from __future__ import annotations

from typing import Protocol


class AuthKeys(Protocol):
    """The endpoint-pair shared keys of one association that negotiated SCTP-AUTH.

    Key identifiers are 0..65535 (RFC 4895 section 4.1). Key 0 with an empty secret
    exists from the start, as RFC 4895 section 6.1 requires; chunks in the
    authenticated list are signed with the key that was active when their message was
    sent, on every transmission, retransmissions included (Linux keeps a key per chunk;
    our core and the memory transport do the same): a message sent before a key switch
    never travels under the new key, which matters to DTLS over SCTP, whose peer learns
    the new key only by reading those messages. They are accepted under any key that
    is not deleted (a deactivated key no longer signs, but still checks what arrives
    until it is deleted, as RFC 6458 section 8.3.4 has it). Misuse (an unknown key
    identifier, deactivating or deleting the active key, replacing it) raises
    ``ValueError``.
    """

    @property
    def active_key_id(self) -> int:
        """The key our outgoing AUTH chunks use now."""
        ...

    def add_key(self, key_id: int, secret: bytes) -> None:
        """Install ``secret`` as shared key ``key_id`` (replacing none that is in use)."""
        ...

    def activate_key(self, key_id: int) -> None:
        """Sign the messages sent from now on with ``key_id``, which must have been
        added (those sent before keep their key)."""
        ...

    def deactivate_key(self, key_id: int) -> None:
        """Stop using ``key_id`` for sending; it must not be the active key."""
        ...

    def delete_key(self, key_id: int) -> None:
        """Forget ``key_id``: chunks the peer signs with it are dropped from now on."""
        ...
