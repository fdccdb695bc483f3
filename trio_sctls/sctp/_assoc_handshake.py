"""The four-way handshake of an association (RFC 9260, Sections 5.1 and 5.2).

INIT / INIT ACK / COOKIE ECHO / COOKIE ACK, INIT collisions (Section 5.2.1), INITs
in an established association (5.2.2), the COOKIE ECHO table of Section 5.2.4 (cases A
to D) and stale cookies (5.2.6). The stateless pieces (cookies, INIT ACK building)
are in ``_handshake``.
"""

from __future__ import annotations

from ._assoc_auth import AuthMixin
from ._causes import MissingMandatoryParameter, StaleCookie
from ._chunks import Chunk, CookieEchoChunk, ErrorChunk, InitAckChunk, InitChunk, ShutdownAckChunk
from ._events import AssociationLost
from ._handshake import (
    CookieState,
    abort_init,
    build_init,
    build_init_ack,
    init_problem,
    negotiate_streams,
    read_peer_params,
    unrecognized_cause,
)
from ._packet import Packet
from ._state import State

_M32 = 0xFFFFFFFF


class HandshakeMixin(AuthMixin):
    """Handlers of the handshake chunks; see :class:`~trio_sctls.sctp.Association`."""

    def _send_init(self, now: float, preservative_ms: int = 0) -> None:
        init = build_init(
            self.config, self._local_tag, self._local_tsn, preservative_ms, self._auth_for_init()
        )
        self._t1_chunk = bytes(init)
        self._set_state(State.COOKIE_WAIT)
        self._t1_rto = self.config.rto_initial
        self._send_t1(now)

    def _on_init(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, InitChunk)
        if packet.verification_tag != 0 or chunk.initiate_tag == 0:
            return False  # Sections 8.5.1 (A) and 3.3.2: discard
        problem = init_problem(chunk, self.config)
        if problem is not None:
            self._oob.append(bytes(abort_init(chunk, packet, problem)))
            return False
        st = self._state
        if st is State.CLOSED and self._used:
            self._oob.append(bytes(abort_init(chunk, packet, None)))
            return False
        if st is State.SHUTDOWN_ACK_SENT:
            self._control.append(bytes(ShutdownAckChunk()))  # Section 9.2
            return False
        tie = (0, 0)
        local_auth = None
        if st is State.CLOSED:
            # Listening: a stateless answer with fresh tag and TSN.
            local_tag, local_tsn = self._random_tag(), self._rng.getrandbits(32)
        elif st in (State.COOKIE_WAIT, State.COOKIE_ECHOED):
            # Section 5.2.1: an INIT collision: answer with our original tag and TSN.
            local_tag, local_tsn = self._local_tag, self._local_tsn
            local_auth = self._auth_local
            if st is State.COOKIE_ECHOED:
                tie = (self._local_tag, self._peer_tag)
        else:
            # Section 5.2.2: an INIT in an established association (peer restart?).
            local_tag, local_tsn = self._random_tag(), self._rng.getrandbits(32)
            tie = (self._local_tag, self._peer_tag)
        ack = build_init_ack(
            self.config,
            chunk,
            now=now,
            local_tag=local_tag,
            local_tsn=local_tsn,
            local_port=self.local_port,
            peer_port=self.remote_port,
            secret=self._secret,
            context=self._context,
            tie_tags=tie,
            local_auth=local_auth,
        )
        self._oob.append(
            bytes(Packet(self.local_port, self.remote_port, chunk.initiate_tag, [ack]))
        )
        return False

    def _on_init_ack(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, InitAckChunk)
        if self._state is not State.COOKIE_WAIT or not self._tag_ok(packet):
            return False  # Section 5.2.3: an unexpected INIT ACK is discarded
        peer = read_peer_params(chunk.params)
        problem = init_problem(chunk, self.config)
        if problem is None and peer.cookie is None:
            problem = MissingMandatoryParameter((7,))
        if problem is not None or chunk.initiate_tag == 0:
            self._peer_tag = chunk.initiate_tag
            detail = f": {problem.describe()}" if problem else ""
            self._abort((problem,) if problem else (), f"invalid INIT ACK{detail}")
            return False
        assert peer.cookie is not None
        self._peer_tag = chunk.initiate_tag
        self._peer_reconfig = peer.reconfig and self.config.reconfig
        outbound, inbound = negotiate_streams(
            self.config, chunk.outbound_streams, chunk.inbound_streams
        )
        self._build_tcb(chunk.initial_tsn, chunk.a_rwnd, outbound, inbound)
        self._auth_on_init_ack(chunk.params)
        self._t1_chunk = bytes(CookieEchoChunk(peer.cookie))
        if peer.unrecognized:
            # Section 3.2.2: report them in an ERROR bundled after the COOKIE ECHO.
            self._t1_chunk += bytes(ErrorChunk((unrecognized_cause(peer.unrecognized),)))
        self._set_state(State.COOKIE_ECHOED)
        self._t1_count = 0
        self._t1_rto = self.config.rto_initial
        self._send_t1(now)
        return False

    def _on_cookie_echo(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        assert isinstance(chunk, CookieEchoChunk)
        cookie = CookieState.open(chunk.cookie, self._secret, self._context)
        # Section 5.1.5, steps 2 and 3: not ours, or not for this packet: discard.
        if (
            cookie is None
            or packet.verification_tag != cookie.local_tag
            or cookie.local_port != self.local_port
            or cookie.peer_port != self.remote_port
        ):
            return False
        st = self._state
        local_match = cookie.local_tag == self._local_tag
        peer_match = cookie.peer_tag == self._peer_tag
        fresh = now <= cookie.created + cookie.lifetime
        if not fresh and not (local_match and peer_match and st is not State.CLOSED):
            # Sections 5.1.5 step 3 and 5.2.4 step 3.
            staleness = int((now - cookie.created - cookie.lifetime) * 1e6)
            err = ErrorChunk((StaleCookie(min(staleness, _M32)),))
            self._oob.append(
                bytes(Packet(self.local_port, self.remote_port, cookie.peer_tag, [err]))
            )
            return False
        if st is State.CLOSED:
            if self._used:
                return False
            self._used = True
            self._adopt_cookie(cookie)
            self._establish(now)
        elif local_match and not peer_match:
            # Section 5.2.4, case B: the peer's INIT crossed ours and it chose a new tag.
            if st in (State.COOKIE_WAIT, State.COOKIE_ECHOED):
                self._adopt_cookie(cookie)
                self._establish(now)
            else:
                self._peer_tag = cookie.peer_tag
        elif local_match and peer_match:
            # Case D: a duplicate (or our collision cookie): just make sure we are up.
            if st in (State.COOKIE_WAIT, State.COOKIE_ECHOED):
                if self._send is None:
                    self._adopt_cookie(cookie)
                self._establish(now)
        elif (
            not local_match
            and not peer_match
            and cookie.local_tie_tag == self._local_tag
            and cookie.peer_tie_tag == self._peer_tag
            and st not in (State.COOKIE_WAIT, State.COOKIE_ECHOED)
        ):
            # Case A: the peer restarted. We end this association; the peer's next
            # COOKIE ECHO starts a new one (through an Endpoint).
            self._close(AssociationLost("the peer restarted the association"))
            return False
        else:
            return False  # case C, or no match: discard silently
        self._cookie_ack = True
        return True

    def _adopt_cookie(self, cookie: CookieState) -> None:
        self._local_tag = cookie.local_tag
        self._peer_tag = cookie.peer_tag
        self._local_tsn = cookie.local_tsn
        self._peer_reconfig = cookie.peer_reconfig
        self._auth_on_cookie(cookie)
        self._build_tcb(
            cookie.peer_tsn, cookie.peer_rwnd, cookie.outbound_streams, cookie.inbound_streams
        )

    def _on_cookie_ack(self, packet: Packet, chunk: Chunk, now: float) -> bool:
        if not self._tag_ok(packet):
            return False
        if self._state is State.COOKIE_ECHOED:
            if self._t1_count == 0 and self._send is not None:
                self._send.on_rtt(now - self._t1_sent_at)  # Karn: only if never resent
            self._establish(now)
        return True

    def _on_stale_cookie(self, stale: StaleCookie, now: float) -> None:
        """Section 5.2.6: start over with a fresh INIT asking for a longer cookie life."""
        self._t1_count += 1
        if self._t1_count > self.config.max_init_retransmissions:
            self._close(AssociationLost("the peer keeps finding our cookies stale"))
            return
        self._send = self._recv = None
        self._reconf = None
        preservative = max(1, 2 * stale.staleness_us // 1000)
        self._send_init(now, preservative_ms=preservative)
