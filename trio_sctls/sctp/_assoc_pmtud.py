"""Path MTU discovery in an association: the probes it sends, what it tells the driver.

The state machine is :class:`._pmtud.PathMTU` (RFC 8899); this mixin is its seam with
the association: building probe packets (a HEARTBEAT padded with a PAD chunk to the
exact size, RFC 8899 Section 6.2), the figures the driver and tests read, and what
only the driver can tell (the local interface's MTU, a datagram the kernel refused).
``_association`` calls the rest at the right moments: HEARTBEAT ACKs, timers,
retransmission timeouts, acknowledgements, and when it cuts packets.
"""

from __future__ import annotations

import struct

from ._assoc_base import AssociationBase
from ._chunks import HeartbeatChunk, PadChunk
from ._packet import finish_packet, packet_header
from ._pmtud import Fragmentable, PMTUDState
from ._state import State

_PORTS_TAG = struct.Struct("!HHI")


class PathMTUMixin(AssociationBase):
    """Path MTU discovery; see :class:`~trio_sctls.sctp.Association` and ``_pmtud``."""

    @property
    def path_mtu(self) -> int:
        """The path MTU in use now, IP header included: the PLPMTU that discovery has
        confirmed (RFC 8899), or ``config.mtu`` when discovery is off."""
        return self._pmtud.path_mtu

    @property
    def max_packet_size(self) -> int:
        """The largest SCTP packet (UDP payload) sent now: :attr:`path_mtu` less the IP
        and UDP headers. Probes are larger while they test a larger size."""
        return self._pmtud.size

    @property
    def pmtud_state(self) -> PMTUDState:
        """Where path MTU discovery is (RFC 8899, Section 5.2)."""
        return self._pmtud.state

    def set_local_mtu(self, mtu: int) -> None:
        """The driver learned the MTU of the local interface towards the peer (e.g. a
        connected socket's ``IP_MTU``): discovery goes no higher (MAX_PLPMTU is at most
        the local MTU, RFC 8899 Section 5.3.1). Ignored if below the base size."""
        self._changed()
        self._pmtud.limit_max(mtu - self._pmtud.overhead)

    def datagram_refused(self, datagram: bytes | bytearray | memoryview, now: float) -> bool:
        """The local stack refused to send ``datagram``, one of ours, as too big
        (``EMSGSIZE``: DF set and above the interface MTU). A probe of that size failed;
        a packet of the current size means the interface shrank, a black hole.

        Returns:
            whether the datagram was this association's (ports and peer's tag).
        """
        if not self._quotes_us(datagram):
            return False
        self._changed()
        self._pmtud.refused(len(datagram), now)
        return True

    def packet_too_big(self, quoted: bytes | bytearray | memoryview, mtu: int, now: float) -> bool:
        """An ICMP Fragmentation Needed or ICMPv6 Packet Too Big came back for a packet
        we sent, reporting next-hop MTU ``mtu``; ``quoted`` is the start of that packet.
        Believed only if it quotes our ports and the peer's verification tag (RFC 8899
        Section 6.2.1.4, RFC 9260 Appendix C), and then only a hint for the search.

        Returns:
            whether the message was tied to this association.
        """
        if not self._quotes_us(quoted):
            return False
        self._changed()
        self._pmtud.packet_too_big(mtu - self._pmtud.overhead, now)
        return True

    def _quotes_us(self, packet: bytes | bytearray | memoryview) -> bool:
        """Whether ``packet`` starts with the common header of a packet of ours to the
        peer (our ports, the peer's tag) while the association lives."""
        if len(packet) < _PORTS_TAG.size or self._state is State.CLOSED:
            return False
        source, destination, tag = _PORTS_TAG.unpack_from(packet)
        return (source, destination, tag) == (self.local_port, self.remote_port, self._peer_tag)

    def _probe_datagram(self, now: float) -> bytes:
        """The probe packet due now: a HEARTBEAT, then a PAD chunk filling the packet to
        exactly the size probed (RFC 8899, Section 6.2; RFC 4820)."""
        nonce = self._rng.getrandbits(64).to_bytes(8, "big")
        size, info = self._pmtud.take_probe(now, self.rto, nonce)
        buf = bytearray(packet_header(self.local_port, self.remote_port, self._peer_tag))
        buf += bytes(HeartbeatChunk(info))
        buf += bytes(PadChunk(size - len(buf) - 4))
        return finish_packet(buf)

    def _sized_datagrams(self, out: list[bytes], now: float) -> list[bytes]:
        """``out``, with packets above the current size (DATA cut before the path
        shrank) marked :class:`Fragmentable`, and the probe due, if any, after them."""
        pmtud = self._pmtud
        limit = pmtud.size
        for i, datagram in enumerate(out):
            if len(datagram) > limit:
                out[i] = Fragmentable(datagram)
        if pmtud.probe_due:
            out.append(self._probe_datagram(now))
        return out
