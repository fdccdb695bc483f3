"""One SCTP association (RFC 9260): handshake, data transfer, shutdown, abort.

The class is driven from outside: bytes in (``receive_datagram``), bytes out
(``datagrams_to_send``), a clock passed as ``now`` and one deadline to wake it up
(``timer_deadline`` / ``handle_timer``). Sending and receiving DATA live in
:mod:`._outbound` and :mod:`._inbound`; stream resets in :mod:`._reconfig`; the
handshake in :mod:`._assoc_handshake` (its stateless pieces in :mod:`._handshake`); the
control block and the one method that changes the state in :mod:`._assoc_base`. This
module holds the public API, chunk dispatch with the verification-tag rules of Section
8.5, data, shutdown and abort handling, the timers, and bundling chunks into packets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from ._assoc_handshake import HandshakeMixin
from ._assoc_pmtud import PathMTUMixin
from ._causes import (
    ErrorCause,
    InvalidStreamIdentifier,
    NoUserData,
    StaleCookie,
    UnrecognizedChunkType,
    UserInitiatedAbort,
)
from ._chunks import (
    AbortChunk,
    Chunk,
    CookieAckChunk,
    CookieEchoChunk,
    DataChunk,
    ErrorChunk,
    HeartbeatAckChunk,
    HeartbeatChunk,
    InitAckChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
    ShutdownAckChunk,
    ShutdownChunk,
    ShutdownCompleteChunk,
    unknown_chunk_action,
)
from ._errors import LocalProtocolError, ParseError, ProtocolViolation
from ._events import (
    AssociationAborted,
    AssociationLost,
    Event,
    MessageReceived,
    PeerError,
    ShutdownComplete,
    ShutdownReceived,
)
from ._inbound import DataResult
from ._packet import Packet, finish_packet, packet_header
from ._params import ReconfigResponse
from ._state import ALIVE, RECEIVING, SENDING, TRANSMITTING, State

_M32 = 0xFFFFFFFF
_NEW = DataResult.NEW
#: Common header, ERROR chunk header and cause header around a reported unknown chunk.
_REPORT_OVERHEAD = 12 + 4 + 4
#: RFC 6525, Section 3.1: the parameters of one RE-CONFIG chunk we act upon.
MAX_RECONFIG_PARAMS = 2
_HB_INFO = struct.Struct("!d8s")
#: What an ICMP message must quote of our packet to be tied to us: the common header
#: (ports, verification tag, checksum) and, for an INIT, its chunk header and Initiate
#: Tag (RFC 9260, Appendix C, ICMP5).
_QUOTED_HEADER = struct.Struct("!HHI")
_QUOTED_INIT = struct.Struct("!B3xI")
#: Section 6.10: chunks that must be alone in their packet (checked by exact type, on
#: every packet: a set lookup per chunk instead of an isinstance test).
_NEVER_BUNDLED = frozenset({InitChunk, InitAckChunk, ShutdownCompleteChunk})


def _bundle(
    chunks: list[bytes], buf: bytearray, header: bytes, limit: int, out: list[bytes]
) -> bytearray:
    """Move ``chunks`` into the packet being filled, ``buf``, finishing it into ``out``
    and starting another whenever the next chunk would not fit; return the packet
    being filled."""
    for chunk in chunks:
        if len(buf) + len(chunk) > limit and len(buf) > len(header):
            out.append(finish_packet(buf))
            buf = bytearray(header)
        buf += chunk
    chunks.clear()
    return buf


class Association(HandshakeMixin, PathMTUMixin):
    """One SCTP association, sans-IO.

    Args:
        config: the tunables; defaults are RFC 9260's.
        local_port, remote_port: SCTP ports (RFC 6951 carries them inside UDP).
        secret: the key that authenticates our State Cookies (random if omitted).
        cookie_context: bytes bound into our cookies' MAC, e.g. the peer's address.
        rng: a source of randomness for tags and initial TSNs (tests pass a seeded one).

    A fresh association either calls :meth:`connect` (client) or waits: while it has
    never been used it answers INIT statelessly and comes up on a valid COOKIE ECHO.
    """

    # == public API ==========================================================================

    def connect(self, now: float) -> None:
        """Start the handshake as the initiator: queue an INIT, arm T1-init (Section 5.1, A).

        Raises:
            LocalProtocolError: the association was already used.
        """
        self._changed()
        if self._used or self._state is not State.CLOSED:
            raise LocalProtocolError("connect() on an association already in use")
        self._used = True
        self._send_init(now)

    def send(self, data: bytes, stream: int = 0, ppid: int = 0, unordered: bool = False) -> None:
        """Queue one user message on ``stream``.

        Raises:
            LocalProtocolError: not in the ESTABLISHED state (closed, shutting down, not
                up yet), no such stream, an empty message, or one above
                ``max_message_size``.
        """
        self._changed()
        send = self._send
        if self._state not in SENDING or send is None:
            raise LocalProtocolError(f"cannot send in state {self._state.value}")
        if not 0 <= stream < send.outbound_streams:
            raise LocalProtocolError(f"no outbound stream {stream}")
        if not data:
            raise LocalProtocolError("SCTP cannot send an empty message")
        if len(data) > self.config.max_message_size:
            raise LocalProtocolError(f"message of {len(data)} bytes above max_message_size")
        auth = self._auth
        if auth is not None:
            send.key_id = auth.active_key_id
        send.enqueue(bytes(data), stream, ppid & _M32, unordered)

    def consumed(self, nbytes: int) -> None:
        """The application has read ``nbytes`` of received messages: reopen our window."""
        self._changed()
        recv = self._recv
        if recv is None or nbytes <= 0:
            return
        recv.consumed(nbytes)
        new, last = recv.a_rwnd, self._last_rwnd
        # (Both conditions below need the window to have grown: test that first, it is
        # the cheap one, and this runs for every message.)
        if new > last and self._state in RECEIVING:
            pmtu = self._pmtud.size
            if (last < pmtu <= new) or new - last >= self.config.receive_buffer // 4:
                self._sack_now = True  # a window update (Section 6.2, SWS avoidance)

    def shutdown(self, now: float) -> None:
        """Start a graceful shutdown (Section 9.2): deliver what is queued, then close."""
        self._changed()
        st = self._state
        if st is State.ESTABLISHED:
            self._set_state(State.SHUTDOWN_PENDING)
            self._progress_shutdown(now)
        elif st in (State.COOKIE_WAIT, State.COOKIE_ECHOED, State.CLOSED):
            self.abort("shutdown before the association was up")

    def abort(self, reason: str = "") -> None:
        """Abort at once (Section 9.1): ABORT, with a User-Initiated Abort cause if given."""
        self._changed()
        if self._state is State.CLOSED:
            return
        causes: tuple[ErrorCause, ...] = (UserInitiatedAbort(reason.encode()),) if reason else ()
        self._abort(causes, reason or "aborted by the user")

    def reset_streams(self, streams: Iterable[int], now: float) -> None:
        """Reset our outgoing ``streams`` after what is queued on them (RFC 6525).

        Raises:
            LocalProtocolError: not established, the peer did not announce RE-CONFIG, or
                a stream id is out of range.
        """
        self._changed()
        ids = tuple(dict.fromkeys(streams))
        send, reconf = self._send, self._reconf
        if self._state not in SENDING or send is None or reconf is None:
            raise LocalProtocolError("stream reset needs an established association")
        if not self._peer_reconfig:
            raise LocalProtocolError("the peer does not support stream reconfiguration")
        if not ids or any(not 0 <= s < send.outbound_streams for s in ids):
            raise LocalProtocolError("bad stream ids for reset")
        if reconf.request(ids, send):
            self._send_reconf_request(now)

    def next_event(self) -> Event | None:
        """The next event, or ``None``."""
        if not self._events:
            return None
        event = self._events.popleft()
        if self.config.auto_consume and type(event) is MessageReceived:
            self.consumed(len(event.data))
        return event

    # == incoming packets ====================================================================

    def receive_datagram(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one SCTP packet (one UDP payload). Malformed packets are dropped."""
        try:
            packet = Packet.parse(data)
        except ParseError:
            return
        self.receive_packet(packet, now)

    def receive_packet(self, packet: Packet, now: float) -> None:
        """Process one already parsed (and checksum-verified) packet."""
        self._changed()
        if packet.destination_port != self.local_port or packet.source_port != self.remote_port:
            return
        chunks = packet.chunks
        if self.config.auth:
            chunks = self._auth_admit(packet)  # SCTP-AUTH (RFC 4895): see _assoc_auth
        if not chunks:
            return
        if len(chunks) > 1 and not _NEVER_BUNDLED.isdisjoint(map(type, chunks)):
            return  # Section 6.10: these are never bundled
        if self._state is State.CLOSED and not isinstance(chunks[0], InitChunk | CookieEchoChunk):
            if self._graceful and self._tag_ok(packet):
                # Just closed gracefully: a late duplicate from the old association is
                # not news, and an ABORT could hit a peer that has not yet seen our
                # SHUTDOWN COMPLETE. Only a retransmitted SHUTDOWN ACK gets an answer.
                if isinstance(chunks[0], ShutdownAckChunk):
                    self._reply_ootb(packet)
            elif not isinstance(chunks[0], InitAckChunk):
                self._reply_ootb(packet)
            return
        recv = self._recv
        had_gaps = recv is not None and recv.has_gaps
        self._packet_has_data = False
        self._immediate = False
        self._reported_unknown = False
        try:
            for chunk in chunks:
                handler = _DISPATCH.get(type(chunk))
                keep_going = (
                    self._on_unknown(packet, chunk)
                    if handler is None
                    else handler(self, packet, chunk, now)
                )
                if not keep_going or self._state is State.CLOSED:
                    break
        except ProtocolViolation as exc:
            causes = (exc.cause,) if exc.cause is not None else ()
            self._abort(causes, str(exc))
            return
        if self._packet_has_data and self._recv is not None:
            self._schedule_sack(now, had_gaps)

    def _on_unknown(self, packet: Packet, chunk: Chunk) -> bool:
        """Section 3.2: the two high bits of an unknown chunk type."""
        if not self._tag_ok(packet):
            return False
        keep_going, report = unknown_chunk_action(chunk.chunk_type)
        if report and self._state in ALIVE and not self._reported_unknown:
            # One report per packet, and only if it fits one of our packets: a packet
            # of many small unknown chunks must not make us send more than it carried
            # (each report is 8 bytes bigger than its chunk), nor a chunk too large to
            # wrap.
            raw = bytes(chunk)
            if _REPORT_OVERHEAD + len(raw) <= self._pmtud.size:
                self._reported_unknown = True
                self._control.append(bytes(ErrorChunk((UnrecognizedChunkType(raw),))))
        return keep_going

    # -- handshake (Sections 5.1, 5.2) ------------------------------------------------------

    # -- data and acknowledgements (Section 6) ---------------------------------------------

    def _on_data(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, DataChunk)
        recv = self._recv
        if packet.verification_tag != self._local_tag:  # _tag_ok(), on every DATA chunk
            return False
        if recv is None or self._state not in RECEIVING:
            return True
        if not chunk.user_data:
            raise ProtocolViolation("DATA chunk without user data", NoUserData(chunk.tsn))
        self._packet_has_data = True
        if chunk.immediate:
            self._immediate = True
        result = recv.on_data(chunk)
        if result != _NEW:
            if result == DataResult.INVALID_STREAM:
                self._control.append(bytes(ErrorChunk((InvalidStreamIdentifier(chunk.stream_id),))))
            self._immediate = True
        return True

    def _schedule_sack(self, now: float, had_gaps: bool) -> None:
        """Section 6.2: SACK every second packet or within sack_delay; at once when TSNs
        are missing or duplicated (Section 6.7), or when shutting down."""
        assert self._recv is not None
        self._packets_unacked += 1
        if (
            self._immediate
            or self._packets_unacked >= 2
            or had_gaps
            or self._recv.has_gaps
            or self._state is State.SHUTDOWN_SENT
        ):
            self._sack_now = True
        elif self._sack_deadline is None:
            self._sack_deadline = now + self.config.sack_delay
        if self._state is State.SHUTDOWN_SENT:
            self._send_t2(now, bytes(ShutdownChunk(self._recv.cum_wire)))

    def _on_sack(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, SackChunk)
        if not self._tag_ok(packet):
            return False
        if self._send is not None and self._state in ALIVE:
            self._process_ack(chunk, now)
        return True

    def _process_ack(self, sack: SackChunk, now: float) -> None:
        assert self._send is not None
        result = self._send.on_sack(sack, now)
        self._sack_since_t3 = True
        if result.new_data_acked:
            self._errors = 0  # Section 8.3: an acknowledgement clears the error count
            self._pmtud.on_progress()
        self._progress_shutdown(now)

    # -- heartbeats (Section 8.3) --------------------------------------------------------

    def _on_heartbeat(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, HeartbeatChunk)
        if not self._tag_ok(packet):
            return False
        if self._state in ALIVE:
            self._control.append(bytes(HeartbeatAckChunk(chunk.info)))
        return True

    def _on_heartbeat_ack(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, HeartbeatAckChunk)
        if not self._tag_ok(packet):
            return False
        if len(chunk.info) == _HB_INFO.size and self._hb_nonce is not None:
            sent_at, nonce = _HB_INFO.unpack(chunk.info)
            if nonce == self._hb_nonce:
                self._hb_nonce = None
                self._errors = 0
                if self._send is not None:
                    self._send.on_rtt(now - sent_at)
        else:
            self._pmtud.on_probe_ack(chunk.info, now)  # a path MTU probe's, maybe
        return True

    # -- shutdown and abort (Section 9) -------------------------------------------------

    def _progress_shutdown(self, now: float) -> None:
        send = self._send
        if send is None or send.outstanding:
            return
        st = self._state
        if st is State.SHUTDOWN_PENDING:
            assert self._recv is not None
            self._set_state(State.SHUTDOWN_SENT)
            self._send_t2(now, bytes(ShutdownChunk(self._recv.cum_wire)))
            self._t5 = now + self.config.shutdown_guard
        elif st is State.SHUTDOWN_RECEIVED:
            self._set_state(State.SHUTDOWN_ACK_SENT)
            self._send_t2(now, bytes(ShutdownAckChunk()))

    def _send_t2(self, now: float, chunk: bytes) -> None:
        self._t2_chunk = chunk
        self._control.append(chunk)
        self._t2 = now + self.rto

    def _on_shutdown(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, ShutdownChunk)
        if not self._tag_ok(packet):
            return False
        st = self._state
        send = self._send
        if send is None or st not in ALIVE or st is State.SHUTDOWN_ACK_SENT:
            return True
        # The cumulative TSN ack of a SHUTDOWN acts as a SACK without gap blocks.
        sack = SackChunk(chunk.cumulative_tsn_ack, send.peer_rwnd + send.flight)
        if st is State.SHUTDOWN_SENT:
            # Both sides closing at once (Section 9.2).
            self._events.append(ShutdownReceived())
            self._set_state(State.SHUTDOWN_ACK_SENT)
            self._send_t2(now, bytes(ShutdownAckChunk()))
            return True
        if st in (State.ESTABLISHED, State.SHUTDOWN_PENDING):
            self._set_state(State.SHUTDOWN_RECEIVED)
            self._events.append(ShutdownReceived())
        self._process_ack(sack, now)
        return True

    def _on_shutdown_ack(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        st = self._state
        if st in (State.COOKIE_WAIT, State.COOKIE_ECHOED):
            self._reply_ootb(packet)  # Section 8.5.1 (E)
            return False
        if not self._tag_ok(packet):
            return False
        if st in (State.SHUTDOWN_SENT, State.SHUTDOWN_ACK_SENT):
            self._send_alone(bytes(ShutdownCompleteChunk()), self._peer_tag)
            self._close(ShutdownComplete())
        return False

    def _on_shutdown_complete(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, ShutdownCompleteChunk)
        tag_ok = self._reflected_tag_ok(packet, chunk.reflected)
        if tag_ok and self._state is State.SHUTDOWN_ACK_SENT:
            self._close(ShutdownComplete())
        return False

    def _on_abort(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, AbortChunk)
        if not self._reflected_tag_ok(packet, chunk.reflected):
            return False
        reasons = "; ".join(c.describe() for c in chunk.causes) or "aborted by the peer"
        self._close(AssociationAborted(reasons, True, chunk.causes))
        return False

    def peer_unreachable(self, quoted: bytes | bytearray | memoryview) -> bool:
        """An ICMP (or ICMPv6) Port Unreachable came back for a packet we sent;
        ``quoted`` is the start of that packet, as the ICMP message quoted it.

        RFC 6951, Section 5.5 treats it as the peer's ABORT (its UDP port is closed:
        its process is gone), but only once it is tied to this association as RFC
        9260, Appendix C asks, since ICMP is easy to forge: the quoted ports must be
        ours and its verification tag the peer's, or, for an INIT (tag 0) while we wait
        for the INIT ACK, its Initiate Tag ours. Off the path, nobody knows the tags.

        Returns:
            ``True`` if the association ended (:class:`AssociationAborted` with
            ``by_peer=True`` follows); ``False`` if the message was not ours to believe.
        """
        if len(quoted) < _QUOTED_HEADER.size or self._state is State.CLOSED:
            return False
        source, destination, tag = _QUOTED_HEADER.unpack_from(quoted)
        if (source, destination) != (self.local_port, self.remote_port):
            return False
        if tag == 0:
            if self._state is not State.COOKIE_WAIT or len(quoted) < 12 + _QUOTED_INIT.size:
                return False
            chunk_type, initiate_tag = _QUOTED_INIT.unpack_from(quoted, 12)
            if chunk_type != InitChunk.CODE or initiate_tag != self._local_tag:
                return False
        elif tag != self._peer_tag:
            return False
        self._changed()
        self._close(AssociationAborted("the peer's port is unreachable (ICMP)", True))
        return True

    def _on_error(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, ErrorChunk)
        if not self._tag_ok(packet):
            return False
        stale = next((c for c in chunk.causes if isinstance(c, StaleCookie)), None)
        if stale is not None:
            if self._state is State.COOKIE_ECHOED:
                self._on_stale_cookie(stale, now)
            return False
        self._events.append(PeerError(chunk.causes))
        return True

    # -- stream reconfiguration (RFC 6525) ------------------------------------------------

    def _on_reconfig(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, ReconfigChunk)
        if not self._tag_ok(packet):
            return False
        reconf, recv, send = self._reconf, self._recv, self._send
        if not self.config.reconfig:
            return self._on_unknown(packet, chunk)
        if reconf is None or recv is None or send is None or self._state not in ALIVE:
            return True
        answers: list[ReconfigResponse] = []
        # RFC 6525, Section 3.1: a RE-CONFIG chunk carries one or two parameters. More
        # are ignored: thousands of 8-byte requests would otherwise make an answer
        # bigger than a chunk can be (and than the packet that asked).
        for param in chunk.params[:MAX_RECONFIG_PARAMS]:
            answer = reconf.on_request(param, recv)
            if answer is not None:
                answers.append(answer)
            elif isinstance(param, ReconfigResponse) and reconf.on_response(param, send):
                self._send_reconf_request(now)
        if answers:
            self._control.append(bytes(ReconfigChunk(tuple(answers))))
        # A response releases the streams the reset held: a SHUTDOWN waiting for them
        # goes now (nothing else would wake it: there may be no DATA left to SACK).
        self._progress_shutdown(now)
        return True

    def _send_reconf_request(self, now: float) -> None:
        reconf = self._reconf
        if reconf is not None and reconf.outstanding is not None:
            # After the DATA of the same packet: the peer then usually has everything up
            # to our last TSN when it reads the request, and can answer "Performed".
            self._trailing.append(bytes(ReconfigChunk((reconf.outstanding,))))
            reconf.deadline = now + self.rto
            reconf.answered = False

    # == timers =================================================================================

    def timer_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or ``None``."""
        send = self._send
        candidates = (
            self._t1,
            self._t2,
            self._t5,
            self._sack_deadline,
            self._hb_deadline,
            send.t3_deadline if send is not None else None,
            self._reconf.deadline if self._reconf is not None else None,
            self._pmtud.deadline,
        )
        live = [t for t in candidates if t is not None]
        return min(live) if live else None

    def handle_timer(self, now: float) -> None:
        """Run every timer whose deadline is ``now`` or earlier."""
        self._changed()
        if self._t1 is not None and now >= self._t1:
            self._t1 = None
            self._t1_count += 1
            if self._t1_count > self.config.max_init_retransmissions:
                self._close(
                    AssociationLost("no answer to INIT / COOKIE ECHO (Max.Init.Retransmits)")
                )
                return
            self._t1_rto = min(self._t1_rto * 2, self.config.rto_max)
            self._send_t1(now)
        if self._sack_deadline is not None and now >= self._sack_deadline:
            self._sack_deadline = None
            self._sack_now = True
        send = self._send
        if send is not None and send.t3_deadline is not None and now >= send.t3_deadline:
            counts = not (send.probing and self._sack_since_t3)  # Section 6.1, rule A
            self._sack_since_t3 = False
            send.on_t3_expired(now)
            if counts:  # a closed window is no black hole
                self._pmtud.on_t3_expired()
            if counts and self._count_error("T3-rtx"):
                return
        if self._t2 is not None and now >= self._t2:
            if self._count_error("T2-shutdown"):
                return
            if send is not None:
                send.rto.back_off()
            self._send_t2(now, self._t2_chunk)
        if self._t5 is not None and now >= self._t5:
            self._abort((), "shutdown took too long (T5-shutdown-guard)")
            return
        reconf = self._reconf
        if reconf is not None and reconf.deadline is not None and now >= reconf.deadline:
            reconf.deadline = None
            if not reconf.answered and self._count_error("RE-CONFIG"):
                return
            self._send_reconf_request(now)
        if self._hb_deadline is not None and now >= self._hb_deadline:
            self._hb_deadline = None
            if self._state in ALIVE:
                if self._hb_nonce is not None:
                    if self._count_error("HEARTBEAT"):
                        return
                    if send is not None:
                        send.rto.back_off()
                self._send_heartbeat(now)
        pmtud = self._pmtud
        if pmtud.deadline is not None and now >= pmtud.deadline:
            pmtud.on_timer(now)

    def _send_heartbeat(self, now: float) -> None:
        self._hb_nonce = self._rng.getrandbits(64).to_bytes(8, "big")
        self._control.append(bytes(HeartbeatChunk(_HB_INFO.pack(now, self._hb_nonce))))
        self._rearm_heartbeat(now)

    # == outgoing packets ========================================================================

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """The packets to send now, each one UDP payload, in order."""
        out = self._oob
        self._oob = []
        if self._state not in ALIVE:
            self._control.clear()
            self._trailing.clear()
            return self._auth_sign(out)
        send, recv = self._send, self._recv
        assert send is not None and recv is not None
        limit = self._pmtud.size - self.config.auth_overhead  # room for AUTH
        if send.packet_size != limit:
            send.set_packet_size(limit)
        header = packet_header(self.local_port, self.remote_port, self._peer_tag)
        buf = bytearray(header)
        if self._cookie_ack:
            buf += bytes(CookieAckChunk())
            self._cookie_ack = False
        data_flows = self._state in TRANSMITTING and send.can_send()
        if self._sack_now or (
            (data_flows or self._control or self._trailing)
            and (self._sack_deadline is not None or self._packets_unacked)
        ):  # piggyback a pending SACK on anything we send anyway
            sack = recv.make_sack()
            self._last_rwnd = sack.a_rwnd
            buf += bytes(sack)
            self._sack_now = False
            self._sack_deadline = None
            self._packets_unacked = 0
        if self._control:
            buf = _bundle(self._control, buf, header, limit, out)
        # The SCTP-AUTH key of each packet that carries DATA (by index in ``out``):
        # a packet holds chunks of one key only (see SendSide.key_id).
        keys: dict[int, int] = {}
        if data_flows:
            sent_any = False
            next_chunk = send.next_chunk
            header_size = len(header)
            key_id: int | None = None
            while (ch := next_chunk(now)) is not None:
                if len(buf) > header_size and (
                    len(buf) + ch.wire_size > limit or (key_id is not None and ch.key_id != key_id)
                ):
                    if key_id is not None:
                        keys[len(out)] = key_id
                    out.append(finish_packet(buf))
                    send.packet_done()
                    buf = bytearray(header)
                key_id = ch.key_id
                ch.write_to(buf)
                sent_any = True
            send.packet_done()
            if sent_any:
                self._rearm_heartbeat(now)
                self._pmtud.on_data_sent()
            if key_id is not None and len(buf) > header_size:
                keys[len(out)] = key_id
        if self._trailing:
            buf = _bundle(self._trailing, buf, header, limit, out)
        if len(buf) > len(header):
            out.append(finish_packet(buf))
        return self._sized_datagrams(self._auth_sign(out, keys), now)

    # == the state machine ======================================================================


#: Chunk type -> handler. One table for the class (a per-instance table of bound methods
#: cost about 1.5 KB per association).
_DISPATCH: dict[type[Chunk], Callable[[Association, Packet, Chunk, float], bool]] = {
    DataChunk: Association._on_data,
    InitChunk: Association._on_init,
    InitAckChunk: Association._on_init_ack,
    SackChunk: Association._on_sack,
    HeartbeatChunk: Association._on_heartbeat,
    HeartbeatAckChunk: Association._on_heartbeat_ack,
    AbortChunk: Association._on_abort,
    ShutdownChunk: Association._on_shutdown,
    ShutdownAckChunk: Association._on_shutdown_ack,
    ErrorChunk: Association._on_error,
    CookieEchoChunk: Association._on_cookie_echo,
    CookieAckChunk: Association._on_cookie_ack,
    ShutdownCompleteChunk: Association._on_shutdown_complete,
    ReconfigChunk: Association._on_reconfig,
}
