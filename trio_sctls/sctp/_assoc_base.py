"""The state every association keeps, and the few operations on it that everything uses.

:class:`AssociationBase` holds the transmission control block (RFC 9260, Section 14):
tags, the send and receive halves, timers, counters, and the one method that changes
the state (:meth:`AssociationBase._set_state`, checked against ``_state.TRANSITIONS``).
The handshake lives in ``_assoc_handshake``, everything else in ``_association``.
"""

from __future__ import annotations

import random
import secrets
from collections import deque
from collections.abc import Callable
from typing import Self, overload

from ._causes import ErrorCause
from ._chunks import AbortChunk
from ._config import UDP_HEADER_SIZE, SCTPConfig
from ._events import AssociationAborted, AssociationLost, AssociationUp, Event
from ._handshake import ootb_response
from ._inbound import ReceiveSide
from ._outbound import SendSide
from ._packet import Packet, finish_packet, packet_header
from ._pmtud import PathMTU
from ._reconfig import Reconfig
from ._state import TRANSMITTING, State, allowed

#: The default source of tags and TSNs, shared: it draws from ``os.urandom`` and keeps no
#: state, while an instance of its own would cost 2.5 KB (``random.Random``'s state).
SYSTEM_RANDOM: random.Random = secrets.SystemRandom()


def with_defaults(
    config: SCTPConfig | None, secret: bytes | None, rng: random.Random | None
) -> tuple[SCTPConfig, bytes, random.Random]:
    """The arguments an association and an endpoint both take, defaults filled in: the
    default configuration, a fresh 32-byte cookie secret, :data:`SYSTEM_RANDOM`."""
    return (
        config if config is not None else SCTPConfig(),
        secret if secret is not None else secrets.token_bytes(32),
        rng if rng is not None else SYSTEM_RANDOM,
    )


class _SendSideFigure:
    """A read-only integer of the association that its send side keeps under the same
    name (a counter, a window): 0 until the handshake has made the send side."""

    __slots__ = ("_name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, assoc: None, owner: type) -> Self: ...
    @overload
    def __get__(self, assoc: AssociationBase, owner: type) -> int: ...
    def __get__(self, assoc: AssociationBase | None, owner: type) -> Self | int:
        if assoc is None:
            return self
        send = assoc._send
        if send is None:
            return 0
        figure: int = getattr(send, self._name)
        return figure


class AssociationBase:
    """The transmission control block; see :class:`~trio_sctls.sctp.Association`."""

    def __init__(
        self,
        config: SCTPConfig | None = None,
        *,
        local_port: int = 9899,
        remote_port: int = 9899,
        secret: bytes | None = None,
        cookie_context: bytes = b"",
        rng: random.Random | None = None,
    ) -> None:
        self.config, self._secret, self._rng = with_defaults(config, secret, rng)
        self.local_port = local_port
        self.remote_port = remote_port
        self._context = cookie_context
        self._state = State.CLOSED
        self._used = False
        self._graceful = False  # closed by a completed SHUTDOWN sequence
        self._events: deque[Event] = deque()
        self._oob: list[bytes] = []  # whole packets with a tag of their own
        self._control: list[bytes] = []  # chunks for the next packet, peer's tag
        self._trailing: list[bytes] = []  # chunks to put after the DATA of that packet
        self._local_tag = self._random_tag()
        self._peer_tag = 0
        self._local_tsn = self._rng.getrandbits(32)
        self._send: SendSide | None = None
        self._recv: ReceiveSide | None = None
        self._reconf: Reconfig | None = None
        self._peer_reconfig = False
        self._errors = 0
        # Handshake (T1-init / T1-cookie) and shutdown (T2, T5) timers.
        self._t1: float | None = None
        self._t1_rto = self.config.rto_initial
        self._t1_count = 0
        self._t1_sent_at = 0.0
        self._t1_chunk = b""
        self._t2: float | None = None
        self._t2_chunk = b""
        self._t5: float | None = None
        # SACK scheduling (Section 6.2).
        self._sack_now = False
        self._sack_deadline: float | None = None
        self._packets_unacked = 0
        self._last_rwnd = self.config.receive_buffer
        # Heartbeats (Section 8.3).
        self._hb_deadline: float | None = None
        self._hb_nonce: bytes | None = None
        self._sack_since_t3 = False
        # Path MTU discovery (RFC 8899): the packet size to use, and the probes.
        config = self.config
        self._pmtud = PathMTU(
            config.max_packet_size, config.ip_header_size + UDP_HEADER_SIZE, config.pmtud
        )
        # Per-packet facts gathered while its chunks are processed.
        self._packet_has_data = False
        self._immediate = False
        self._reported_unknown = False  # an Unrecognized Chunk Type report is queued
        self._cookie_ack = False  # a COOKIE ACK leads the next packet (Section 5.1, E)
        # Called at the start of every public call that feeds the association, so an
        # Endpoint learns which of its many associations may have something to send or
        # a new deadline without visiting them all (see Endpoint._watch).
        self._watcher: Callable[[], None] | None = None

    def _changed(self) -> None:
        """Tell the watcher (the endpoint) that this association is being fed."""
        watcher = self._watcher
        if watcher is not None:
            watcher()

    @property
    def state(self) -> State:
        """The current state (RFC 9260, Section 4)."""
        return self._state

    @property
    def established(self) -> bool:
        """Whether user data may be sent (the ESTABLISHED state)."""
        return self._state is State.ESTABLISHED

    @property
    def closed(self) -> bool:
        """Whether the association is over (or never started)."""
        return self._state is State.CLOSED

    @property
    def verification_tag(self) -> int:
        """Our verification tag: what the peer puts in every packet it sends us."""
        return self._local_tag

    #: Negotiated outbound stream count (0 before the handshake).
    outbound_streams = _SendSideFigure()
    #: User bytes accepted by :meth:`send` and not yet acknowledged by the peer.
    queued_bytes = _SendSideFigure()
    #: The congestion window, in bytes (Section 7.2).
    cwnd = _SendSideFigure()
    #: Our estimate of the peer's receive window (Section 6.2.1).
    peer_rwnd = _SendSideFigure()

    @property
    def inbound_streams(self) -> int:
        """Negotiated inbound stream count (0 before the handshake)."""
        return self._recv.inbound_streams if self._recv is not None else 0

    @property
    def rto(self) -> float:
        """The current retransmission timeout, in seconds."""
        return self._send.rto.rto if self._send is not None else self._t1_rto

    @property
    def has_events(self) -> bool:
        """Whether :meth:`next_event` has something to return."""
        return bool(self._events)

    @property
    def has_datagrams(self) -> bool:
        """Whether :meth:`datagrams_to_send` has something to return (approximately:
        new data may still be held back by the congestion or receive window)."""
        send = self._send
        return bool(
            self._oob
            or self._control
            or self._trailing
            or self._cookie_ack
            or self._sack_now
            or self._pmtud.probe_due
            or (send is not None and self._state in TRANSMITTING and send.can_send())
        )

    def _tag_ok(self, packet: Packet) -> bool:
        return packet.verification_tag == self._local_tag

    def _reply_ootb(self, packet: Packet) -> None:
        answer = ootb_response(packet)
        if answer is not None:
            self._oob.append(bytes(answer))

    def _reflected_tag_ok(self, packet: Packet, reflected: bool) -> bool:
        """Section 8.5.1 (B), (C): ABORT and SHUTDOWN COMPLETE may carry the peer's tag."""
        tag = packet.verification_tag
        if reflected:
            return self._peer_tag != 0 and tag == self._peer_tag
        return tag == self._local_tag

    def _send_t1(self, now: float) -> None:
        """(Re)send INIT (tag 0) or COOKIE ECHO, and arm T1."""
        self._send_alone(self._t1_chunk, 0 if self._state is State.COOKIE_WAIT else self._peer_tag)
        self._t1_sent_at = now
        self._t1 = now + self._t1_rto

    def _build_tcb(self, peer_tsn: int, peer_rwnd: int, outbound: int, inbound: int) -> None:
        self._send = SendSide(self.config, self._local_tsn, outbound, peer_rwnd)
        self._send.set_packet_size(self._pmtud.size - self.config.auth_overhead)
        self._recv = ReceiveSide(self.config, peer_tsn, inbound, self._events)
        self._reconf = Reconfig(self._local_tsn, peer_tsn, self._events)

    def _establish(self, now: float) -> None:
        self._t1 = None
        self._errors = 0
        self._set_state(State.ESTABLISHED)
        self._rearm_heartbeat(now)
        self._pmtud.start()

    def _rearm_heartbeat(self, now: float) -> None:
        interval = self.config.heartbeat_interval
        if interval is not None:
            self._hb_deadline = now + interval + self.rto

    def _abort(self, causes: tuple[ErrorCause, ...], reason: str) -> None:
        if self._peer_tag and self._state is not State.COOKIE_WAIT:
            self._send_alone(bytes(AbortChunk(causes)), self._peer_tag)
        self._close(AssociationAborted(reason, False, causes))

    def _count_error(self, what: str) -> bool:
        """Section 8.1: one more unanswered retransmission; ``True`` if that was one too many."""
        self._errors += 1
        if self._errors > self.config.max_retransmissions:
            self._close(AssociationLost(f"{what}: Association.Max.Retrans exceeded"))
            return True
        return False

    def _close(self, why: Event) -> None:
        """Enter CLOSED, and tell the user ``why`` (lost, aborted, shut down)."""
        self._set_state(State.CLOSED)
        self._events.append(why)

    def _send_alone(self, chunk: bytes, tag: int) -> None:
        """Send ``chunk`` in a packet of its own, with verification tag ``tag``, ahead of
        anything :meth:`datagrams_to_send` bundles."""
        buf = bytearray(packet_header(self.local_port, self.remote_port, tag))
        buf += chunk
        self._oob.append(finish_packet(buf))

    def _set_state(self, new: State) -> None:
        """The only place where the state changes (checked against ``_state.TRANSITIONS``)."""
        old = self._state
        if old is new:
            return
        if not allowed(old, new):
            raise AssertionError(f"SCTP state machine: {old.value} -> {new.value}")
        self._state = new
        self._graceful = old in (State.SHUTDOWN_SENT, State.SHUTDOWN_ACK_SENT)
        if new is State.ESTABLISHED:
            assert self._send is not None and self._recv is not None
            self._events.append(
                AssociationUp(
                    self._send.outbound_streams, self._recv.inbound_streams, self._peer_reconfig
                )
            )
        elif new is State.CLOSED:
            self._t1 = self._t2 = self._t5 = self._sack_deadline = self._hb_deadline = None
            self._pmtud.stop()
            if self._send is not None:
                self._send.fail_all()
            if self._reconf is not None:
                self._reconf.deadline = None
        elif new in (State.SHUTDOWN_ACK_SENT, State.SHUTDOWN_SENT):
            self._hb_deadline = None

    def _random_tag(self) -> int:
        return self._rng.randrange(1, 1 << 32)

    def __repr__(self) -> str:
        return (
            f"<Association {self.local_port}->{self.remote_port} {self._state.value}"
            f" tag={self._local_tag:#010x}>"
        )
