"""The tunables of an association, with RFC 9260's defaults (Section 16) beside them."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import LocalProtocolError

#: UDP header size; RFC 6951, Section 5.6: subtract it from the path MTU.
UDP_HEADER_SIZE = 8
#: SCTP common header (12) + DATA chunk header (16).
DATA_OVERHEAD = 12 + 16
#: Room kept in every full DATA packet for a SACK without gap blocks (16 bytes), so the
#: receiver side can piggyback its acknowledgement on data instead of a packet of its own.
SACK_ROOM = 16
#: The largest AUTH chunk we send (RFC 4895, Section 4.2): header, key and HMAC ids,
#: an HMAC-SHA-256. Packets reserve it when SCTP-AUTH is on.
MAX_AUTH_CHUNK_SIZE = 4 + 4 + 32
#: HMAC identifiers (RFC 4895, Section 6.1): SHA-1 (mandatory) and SHA-256.
HMAC_SHA1 = 1
HMAC_SHA256 = 3


@dataclass(frozen=True, slots=True)
class SCTPConfig:
    """Options of an :class:`~trio_sctls.sctp.Association` (and of an ``Endpoint``).

    Attributes:
        outbound_streams: streams we ask to send on (OS in our INIT); the association
            gets ``min(outbound_streams, peer's MIS)``.
        max_inbound_streams: streams we accept from the peer (MIS in our INIT).
        max_message_size: the largest user message we reassemble; a peer sending a
            larger one is aborted with an "Out of Resource" cause, and ``send()`` refuses
            larger ones. RFC 3436 needs at least 2**14 + 2048 + 5 = 18437.
        receive_buffer: bytes we can hold for the application (received, not yet
            consumed): the a_rwnd we advertise when empty (Section 6.2).
        mtu: the largest path MTU in bytes, IP header included: with ``pmtud`` the
            upper bound of the search (MAX_PLPMTU, e.g. the interface's MTU), without it
            the path MTU used from the start (1200 is safe on the internet).
        pmtud: discover the path MTU (RFC 8899 PLPMTUD, ``_pmtud``): start at 1200
            bytes of SCTP packet and probe upward to ``mtu`` with padded HEARTBEATs,
            falling back when the path shrinks. Nothing to search when ``mtu`` is not
            above that base.
        ip_header_size: subtracted from ``mtu`` (40 = IPv6, the worst case; 20 for IPv4).
        rto_initial, rto_min, rto_max: RTO.Initial, RTO.Min, RTO.Max (Section 16:
            1 s, 1 s, 60 s). Tests may lower ``rto_min``.
        max_retransmissions: Association.Max.Retrans (10): consecutive unanswered
            retransmissions or heartbeats before the association is declared lost.
        max_init_retransmissions: Max.Init.Retransmits (8), for INIT and COOKIE ECHO.
        heartbeat_interval: HB.interval (30 s) between heartbeats on an idle path, or
            ``None`` to send none (we still answer the peer's).
        sack_delay: the delayed-SACK timer (200 ms, Section 6.2; at most 500 ms).
        cookie_lifetime: Valid.Cookie.Life (60 s).
        auto_consume: if true, a message counts as consumed by the application as soon
            as it is handed out as an event; if false the driver must call
            ``consumed(nbytes)`` when the application has read it, and our receive
            window closes while it does not (back-pressure on the peer).
        reconfig: announce RE-CONFIG (RFC 6525) in the Supported Extensions parameter,
            which stream resets need on both sides.
        auth: negotiate SCTP-AUTH (RFC 4895) and require it: a peer that does not
            announce it is refused (its INIT) or aborted (its INIT ACK).
        auth_chunks: chunk types the peer must authenticate (our CHUNKS parameter);
            DATA and FORWARD TSN by default, as DTLS over SCTP (RFC 6083) needs: an
            unauthenticated FORWARD TSN could make a receiver skip messages, and
            OpenSSL's DTLS/SCTP refuses a peer that does not ask for both. INIT,
            INIT ACK, SHUTDOWN COMPLETE and AUTH are not allowed (Section 3.2).
        auth_hmacs: HMAC identifiers we accept, most preferred first (our HMAC-ALGO
            parameter); SHA-1 must be among them (Section 3.3).
        shutdown_guard: T5-shutdown-guard: how long a SHUTDOWN may take before we abort
            (Section 9.2 suggests 5 * RTO.Max).
    """

    outbound_streams: int = 10
    max_inbound_streams: int = 10
    max_message_size: int = 256 * 1024
    receive_buffer: int = 1024 * 1024
    mtu: int = 1200
    pmtud: bool = True
    ip_header_size: int = 40
    rto_initial: float = 1.0
    rto_min: float = 1.0
    rto_max: float = 60.0
    max_retransmissions: int = 10
    max_init_retransmissions: int = 8
    heartbeat_interval: float | None = 30.0
    sack_delay: float = 0.2
    cookie_lifetime: float = 60.0
    auto_consume: bool = True
    reconfig: bool = True
    shutdown_guard: float = 300.0
    auth: bool = False
    auth_chunks: tuple[int, ...] = (0, 192)
    auth_hmacs: tuple[int, ...] = (HMAC_SHA256, HMAC_SHA1)

    def __post_init__(self) -> None:
        if not (1 <= self.outbound_streams <= 65535 and 1 <= self.max_inbound_streams <= 65535):
            raise LocalProtocolError("stream counts must be between 1 and 65535")
        if self.max_packet_size < 256:
            raise LocalProtocolError(f"mtu {self.mtu} leaves too little room for SCTP")
        if self.receive_buffer < 1500:
            # Section 3.3.2: the a_rwnd of an INIT is at least 1500.
            raise LocalProtocolError("receive_buffer must be at least 1500 bytes")
        if not 1 <= self.max_message_size <= self.receive_buffer:
            # Without partial delivery a message is reassembled whole inside the
            # window: a larger one could never complete.
            raise LocalProtocolError("need 1 <= max_message_size <= receive_buffer")
        if not 0 < self.rto_min <= self.rto_initial <= self.rto_max:
            raise LocalProtocolError("need 0 < rto_min <= rto_initial <= rto_max")
        if not 0 <= self.sack_delay <= 0.5:
            raise LocalProtocolError("sack_delay must be between 0 and 0.5 s (Section 6.2)")
        if HMAC_SHA1 not in self.auth_hmacs or not set(self.auth_hmacs) <= {1, 3}:
            raise LocalProtocolError("auth_hmacs: SHA-1 (1) is required, SHA-256 (3) optional")
        if not set(self.auth_chunks) <= set(range(256)) - {1, 2, 14, 15}:
            raise LocalProtocolError(
                "auth_chunks: chunk types 0..255, but never INIT (1), INIT ACK (2), "
                "SHUTDOWN COMPLETE (14) or AUTH (15)"
            )

    @property
    def max_packet_size(self) -> int:
        """The largest SCTP packet (UDP payload) we send."""
        return self.mtu - self.ip_header_size - UDP_HEADER_SIZE

    @property
    def max_fragment_size(self) -> int:
        """User data bytes per DATA chunk: a full packet, less room for a SACK."""
        return fragment_size(self.max_packet_size - self.auth_overhead)

    @property
    def auth_overhead(self) -> int:
        """Bytes every packet keeps free for an AUTH chunk (0 without SCTP-AUTH)."""
        return MAX_AUTH_CHUNK_SIZE if self.auth else 0


def fragment_size(packet_size: int) -> int:
    """User data bytes per DATA chunk in packets of ``packet_size`` bytes, less room
    for a SACK."""
    return (packet_size - DATA_OVERHEAD - SACK_ROOM) & ~3
