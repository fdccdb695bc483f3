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

from ..sctp._auth import KeyTable


@dataclass(frozen=True, slots=True)
class Signature:
    """What a message sent under SCTP-AUTH carries in the simulation."""

    key_id: int
    secret: bytes


@final
class MemoryAuthKeys(KeyTable):
    """The endpoint-pair shared keys of one end of a memory association (implements
    :class:`~trio_sctls.transport.AuthKeys`): the core's key table, so that key
    schedules behave as on udp, plus the simulation's signing and checking."""

    def __init__(self) -> None:
        super().__init__()
        #: Messages dropped because their signature did not verify.
        self.dropped = 0

    def sign(self) -> Signature:
        """The signature of a message sent now."""
        return Signature(self._active, self._keys[self._active])

    def verify(self, signature: Signature | None) -> bool:
        """Whether a message with ``signature`` is accepted; counts it if not."""
        if signature is not None and self._keys.get(signature.key_id) == signature.secret:
            return True
        self.dropped += 1
        return False
