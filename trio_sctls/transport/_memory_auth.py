"""SCTP-AUTH (RFC 4895) as the memory transport simulates it.

Each end of a memory association that negotiated SCTP-AUTH holds a
:class:`MemoryAuthKeys` table. A message sent carries a :class:`Signature`: the
sender's active key id and that key's secret, standing in for the HMAC of the AUTH
chunk. The receiving end verifies it when it takes the message from its inbox, as a
stack verifies a packet on arrival: a message signed with a key id it does not hold,
or has deactivated or deleted, or whose secret differs from its own for that id (a
wrong HMAC), is dropped and counted, as RFC 4895 section 6.3 discards such chunks.

Unlike SCTP, a dropped message is not retransmitted: the simulation makes a key
schedule that drops data visible at once (in ``dropped``) instead of stalling it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

#: RFC 4895 section 4.1: Shared Key Identifiers are 16-bit.
_MAX_KEY_ID = 0xFFFF


@dataclass(frozen=True, slots=True)
class Signature:
    """What a message sent under SCTP-AUTH carries in the simulation."""

    key_id: int
    secret: bytes


@final
class MemoryAuthKeys:
    """The endpoint-pair shared keys of one end of a memory association (implements
    :class:`~trio_sctls.transport.AuthKeys`). Key 0, empty, exists from the start
    (RFC 4895 section 6.1)."""

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {0: b""}
        self._deactivated: set[int] = set()
        self._active = 0
        #: Messages dropped because their signature did not verify.
        self.dropped = 0

    @property
    def active_key_id(self) -> int:
        """The key our messages are signed with now."""
        return self._active

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The ids of the keys held (deactivated ones included), for tests and logs."""
        return tuple(sorted(self._keys))

    def add_key(self, key_id: int, secret: bytes) -> None:
        """Install ``secret`` as shared key ``key_id``.

        Raises:
            ValueError: ``key_id`` is out of range or is the active key.
        """
        _check_id(key_id)
        if key_id == self._active and key_id in self._keys:
            raise ValueError(f"key {key_id} is the active key and cannot be replaced")
        self._keys[key_id] = bytes(secret)
        self._deactivated.discard(key_id)

    def activate_key(self, key_id: int) -> None:
        """Sign what we send from now on with ``key_id``.

        Raises:
            ValueError: no such key, or it was deactivated.
        """
        if key_id not in self._keys or key_id in self._deactivated:
            raise ValueError(f"key {key_id} is not an installed, usable key")
        self._active = key_id

    def deactivate_key(self, key_id: int) -> None:
        """Stop signing with ``key_id``; messages signed with it are still accepted until
        it is deleted, as on the other transports (RFC 6458 section 8.3.4).

        Raises:
            ValueError: no such key, or it is the active key.
        """
        self._check_inactive(key_id)
        self._deactivated.add(key_id)

    def delete_key(self, key_id: int) -> None:
        """Forget ``key_id``.

        Raises:
            ValueError: no such key, or it is the active key.
        """
        self._check_inactive(key_id)
        del self._keys[key_id]
        self._deactivated.discard(key_id)

    def _check_inactive(self, key_id: int) -> None:
        if key_id not in self._keys:
            raise ValueError(f"no key {key_id}")
        if key_id == self._active:
            raise ValueError(f"key {key_id} is the active key; activate another first")

    def sign(self) -> Signature:
        """The signature of a message sent now."""
        return Signature(self._active, self._keys[self._active])

    def verify(self, signature: Signature | None) -> bool:
        """Whether a message with ``signature`` is accepted; counts it if not."""
        if signature is not None and self._keys.get(signature.key_id) == signature.secret:
            return True
        self.dropped += 1
        return False


def _check_id(key_id: int) -> None:
    if not 0 <= key_id <= _MAX_KEY_ID:
        raise ValueError(f"SCTP-AUTH key ids are 0..{_MAX_KEY_ID}, not {key_id}")
