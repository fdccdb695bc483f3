"""A sans-IO SCTP (RFC 9260) for SCTP over UDP (RFC 6951), with stream reset (RFC 6525).

Theory of operation
===================

This package is the protocol, and nothing else: no sockets, no threads, no sleeping,
no Trio. An :class:`Association` is fed what arrives and asked what to send::

    assoc = Association(SCTPConfig(outbound_streams=10), local_port=9899, remote_port=9899)
    assoc.connect(now)                          # client; a server uses an Endpoint
    for datagram in assoc.datagrams_to_send(now):
        udp_socket.sendto(datagram, peer)       # the driver's job
    assoc.receive_datagram(payload, now)        # each UDP payload that arrives
    while (event := assoc.next_event()) is not None:
        ...                                     # AssociationUp, MessageReceived, ...
    deadline = assoc.timer_deadline()           # sleep until then, or until input
    assoc.handle_timer(now)                     # when the deadline has passed

Time is whatever monotonic clock the driver passes as ``now`` (seconds, a float); the
core only compares it with deadlines it computed from earlier ``now`` values, so tests
drive it with a simulated clock and no real waiting. After *every* call that feeds the
association (``receive_datagram``, ``handle_timer``, ``send``, ``consumed``,
``shutdown``, ``abort``, ``reset_streams``) the driver should collect
``datagrams_to_send(now)`` and the events, and re-read ``timer_deadline()``.

A server uses an :class:`Endpoint`: one local SCTP port and one UDP socket for any
number of peers. ``endpoint.receive_datagram(data, addr, now)``,
``endpoint.datagrams_to_send(now) -> [(data, addr)]``, ``endpoint.next_event() ->
(association, event)``; a new peer appears as :class:`AssociationAccepted` then
:class:`AssociationUp`. The endpoint keeps nothing for a peer before its valid COOKIE
ECHO (the INIT ACK's State Cookie, authenticated with HMAC-SHA256 under the endpoint's
secret, carries everything), so a flood of INITs costs no memory. ``endpoint.connect``
opens client associations on the same port.

What the application sees
-------------------------
* ``send(data, stream, ppid, unordered)`` queues one message (fragmented to the path
  MTU, reassembled on the other side). ``queued_bytes`` counts what is not yet
  acknowledged: the driver's send back-pressure. Errors in our own use of the API raise
  :class:`LocalProtocolError`; nothing else is raised to the caller.
* :class:`MessageReceived` carries one whole message. Ordered messages of a stream come
  in SSN order; a message missing on one stream never holds up another stream (SCTP's
  point). The receive window we advertise shrinks by what was delivered and not yet
  *consumed*: with ``SCTPConfig(auto_consume=False)`` the driver calls
  ``consumed(nbytes)`` as the application reads, so an application that stops reading
  stops the peer (flow control end to end) instead of growing our buffers.
* ``shutdown(now)`` delivers everything queued and then closes gracefully
  (:class:`ShutdownComplete`); ``abort(reason)`` sends an ABORT at once, with the reason
  in a User-Initiated Abort cause; the peer's abort arrives as
  :class:`AssociationAborted` with ``by_peer=True``. A peer that stops answering is
  reported as :class:`AssociationLost` after Association.Max.Retrans retransmissions.
* ``reset_streams(ids, now)`` (RFC 6525) resets our outgoing streams after everything
  already queued on them; both ends see :class:`StreamResetDone`.

How it is built, and the hazards
--------------------------------
* Wire format: ``_packet`` (common header, CRC32c), ``_chunks``, ``_params``,
  ``_causes``: small dataclasses with ``parse``/``__bytes__`` and registries by type.
  Malformed input raises :class:`ParseError` inside the parser, never ``IndexError``;
  every length is checked against the buffer and every loop consumes input, so a
  hostile packet can neither loop nor make us allocate more than its own size.
* A packet that fails to parse, fails its checksum, or carries the wrong verification
  tag is dropped without a word (RFC 9260, Sections 6.8, 8.5); a peer that breaks the
  protocol in a way that matters (a SACK for data never sent, fragments that cannot
  fit together, a message above ``max_message_size``) gets an ABORT carrying the reason
  and the association ends with :class:`AssociationAborted`.
* Memory is bounded by configuration: reassembly and reordering by the receive window
  (a peer that ignores our window has its data dropped; each fragment or message counts
  at least 256 bytes, its bookkeeping, so tiny ones cannot hide their real cost), a
  peer's deferred stream resets by a small count, what we echo or report (unknown
  chunks and parameters) by the size of what asked, the number of out-of-order TSNs
  by the 16-bit reach of a Gap Ack Block, a message by ``max_message_size``.
* Sequence numbers are unwrapped into ever-growing Python ints where they enter, so
  the rest of the code compares them with ``<`` and 32-bit wrap-around is tested once.
* The state machine is the table in ``_state``; every transition goes through
  ``Association._set_state``.
* Path MTU: discovered per association (RFC 8899 PLPMTUD, ``_pmtud``): it starts at
  :data:`BASE_PLPMTU` and probes up to ``SCTPConfig.mtu`` with HEARTBEATs padded by
  PAD chunks; ``path_mtu`` and ``pmtud_state`` say where it is. A datagram marked
  :class:`Fragmentable` must go out with IP fragmentation allowed (DATA cut for a
  path MTU that has since shrunk); the driver reports ``EMSGSIZE`` through
  ``Endpoint.datagram_refused`` and ICMP Packet Too Big through
  ``Endpoint.packet_too_big``, and may cap the search with ``set_local_mtu``.
* One path only: SCTP multi-homing is meaningless over one UDP socket pair; the peer's
  address parameters are ignored and heartbeats keep that one path alive.
* SCTP-AUTH (RFC 4895) with ``SCTPConfig(auth=True)``, required of the peer: RANDOM,
  CHUNKS and HMAC-ALGO in INIT / INIT ACK (and in our State Cookie), AUTH chunks added to
  finished packets and checked before chunk dispatch, HMAC-SHA-1 and -SHA-256. The keys
  and drop counters are ``association.auth`` (:class:`AssociationAuth`, which the
  transports hand out as their ``auth``); see ``_auth``'s theory of operation.

Not implemented: multi-homing and path failover, PR-SCTP (FORWARD TSN is parsed and
reported as unrecognized), I-DATA (RFC 8260), ECN, partial
delivery (so ``max_message_size`` may not exceed ``receive_buffer``), per-message
send-failure events (messages still queued when an association ends are simply
dropped; ``queued_bytes`` says how much), and RFC 6525 requests other than Outgoing
SSN Reset (we answer them "Denied").

Scale: an ``Endpoint`` never visits all of its associations. Each association tells its
endpoint when it is fed (by a packet, a timer, or the application calling ``send``,
``consumed``, ``shutdown``... on it directly); ``datagrams_to_send`` visits only those,
and deadlines live in a heap with lazy invalidation (:class:`Deadlines`). Idle
associations cost memory and their heartbeats, nothing per event.
"""

from ._association import Association as Association
from ._auth import AssociationAuth as AssociationAuth
from ._auth import AuthCounters as AuthCounters
from ._auth import AuthKeyError as AuthKeyError
from ._causes import CAUSE_TYPES as CAUSE_TYPES
from ._causes import ErrorCause as ErrorCause
from ._causes import UserInitiatedAbort as UserInitiatedAbort
from ._chunks import CHUNK_TYPES as CHUNK_TYPES
from ._chunks import Chunk as Chunk
from ._chunks import InitChunk as InitChunk
from ._config import SCTPConfig as SCTPConfig
from ._endpoint import Endpoint as Endpoint
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import ParseError as ParseError
from ._errors import ProtocolViolation as ProtocolViolation
from ._errors import SCTPError as SCTPError
from ._events import AssociationAborted as AssociationAborted
from ._events import AssociationAccepted as AssociationAccepted
from ._events import AssociationLost as AssociationLost
from ._events import AssociationUp as AssociationUp
from ._events import Event as Event
from ._events import MessageReceived as MessageReceived
from ._events import PeerError as PeerError
from ._events import ShutdownComplete as ShutdownComplete
from ._events import ShutdownReceived as ShutdownReceived
from ._events import StreamResetDone as StreamResetDone
from ._events import StreamResetFailed as StreamResetFailed
from ._handshake import abort_init as abort_init
from ._handshake import ootb_response as ootb_response
from ._packet import Packet as Packet
from ._params import PARAM_TYPES as PARAM_TYPES
from ._pmtud import BASE_PLPMTU as BASE_PLPMTU
from ._pmtud import Fragmentable as Fragmentable
from ._pmtud import PMTUDState as PMTUDState
from ._schedule import Deadlines as Deadlines
from ._state import State as State

#: The IANA-registered UDP port for SCTP over UDP (RFC 6951, Section 5.1).
SCTP_UDP_PORT = 9899
