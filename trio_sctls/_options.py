"""Options objects: every tunable of a transport and of an association, validated once.

The entry points (:func:`~trio_sctls.open_association`, :func:`~trio_sctls.serve`, ...)
take keyword arguments for convenience and fold them into these frozen dataclasses,
which are what the layers below receive. A program that opens many associations with
the same settings builds one object and passes it whole (``options=``), as aioquic's
``QuicConfiguration`` is passed around.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ._tls import SessionCache
from .transport._base import DEFAULT_MAX_MESSAGE_SIZE, MIN_MAX_MESSAGE_SIZE
from .transport._setup import Timers

HandshakeStrategy = Literal["parallel", "resume", "lazy"]
OverflowPolicy = Literal["pause", "abort"]
TransportName = Literal["auto", "kernel", "udp", "memory"]

#: Unread bytes one stream may hold before the overflow policy applies: several
#: maximum-size TLS records, so a reader that is merely slow never trips it.
DEFAULT_STREAM_BUDGET = 256 * 1024
#: Unread bytes the whole association may hold.
DEFAULT_ASSOCIATION_BUDGET = 4 * 1024 * 1024
#: Seconds a handshake may take: the client's strategy as a whole; on the server, each
#: channel from its first ClientHello byte, and the association from its acceptance to
#: the first byte on any channel (a peer that never starts TLS holds nothing for long).
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: Seconds to wait for the peer's close_notify on each channel when closing.
DEFAULT_CLOSE_TIMEOUT = 5.0

#: The process-wide cache of client TLS sessions, used when none is given.
default_session_cache = SessionCache()


def _check_count(name: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"{name} must be in 1..65535, not {value}")


def _check_port(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError(f"{name} must be in 0..65535, not {value}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions(Timers):
    """How to set up the SCTP association itself, on any transport: the liveness knobs
    of :class:`~trio_sctls.transport.Timers`, and the rest.

    Attributes:
        transport: ``"kernel"`` (Linux SCTP), ``"udp"`` (our own SCTP over UDP, RFC
            6951), ``"memory"`` (in-process peers only) or ``"auto"`` (kernel where this
            kernel has SCTP, udp otherwise).
        outbound_streams: streams we ask for (the association gets at most the peer's
            maximum inbound count).
        max_inbound_streams: the most streams we accept from the peer.
        max_message_size: the largest message accepted from the peer (a larger one
            aborts the association) and the largest we agree to send. RFC 3436 needs at
            least 2**14 + 2048 + 5 bytes, the largest TLS 1.2 record.
        local_addresses: local addresses to bind (several for multihoming on kernel
            SCTP; udp uses the first); ``None`` binds the wildcard address.
        udp_port: (udp) our UDP port. Clients default to an ephemeral one, servers to
            9899, the IANA port that the servers of one process share.
        remote_udp_port: (udp, clients) the peer's UDP port; default 9899.
        heartbeat_interval: seconds between HEARTBEATs on an idle path (RFC 9260
            HB.interval), which is how a peer that vanished is noticed.
        rto_initial: the first retransmission timeout, in seconds (RTO.Initial).
        rto_min: the smallest retransmission timeout (RTO.Min).
        rto_max: the largest retransmission timeout (RTO.Max).
        max_retransmissions: consecutive unanswered retransmissions and heartbeats
            after which the association is declared lost (Association.Max.Retrans).
        max_init_retransmissions: retransmissions of INIT and COOKIE ECHO before
            connecting fails (Max.Init.Retransmits).
        auth: negotiate SCTP-AUTH (RFC 4895) with DATA among the authenticated chunks,
            and fail to connect with a peer that does not support it; DTLS over SCTP
            (RFC 6083) requires it. The keys are then reachable as the transport's
            ``auth`` (:class:`~trio_sctls.transport.AuthKeys`).

    The timer fields default to ``None``: the transport's own default, which is RFC
    9260's on udp (tuned for loopback peers) and the system's (``net.sctp.*`` sysctls)
    on kernel SCTP; see the README's table. Set them to notice dead peers sooner.
    """

    transport: TransportName = "auto"
    outbound_streams: int = 10
    max_inbound_streams: int = 10
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    local_addresses: tuple[str, ...] | None = None
    udp_port: int | None = None
    remote_udp_port: int | None = None
    # The timer fields are inherited from Timers (both are keyword-only).
    auth: bool = False

    def __post_init__(self) -> None:
        if self.transport not in ("auto", "kernel", "udp", "memory"):
            raise ValueError(
                f"unknown transport {self.transport!r}; use 'auto', 'kernel', 'udp' or 'memory'"
            )
        _check_count("outbound_streams", self.outbound_streams)
        _check_count("max_inbound_streams", self.max_inbound_streams)
        if self.max_message_size < MIN_MAX_MESSAGE_SIZE:
            raise ValueError(
                f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE} "
                "(the largest TLS record, RFC 3436 section 3.2)"
            )
        _check_port("udp_port", self.udp_port)
        for name in ("heartbeat_interval", "rto_initial", "rto_min", "rto_max"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, not {value}")
        rtos = [v for v in (self.rto_min, self.rto_initial, self.rto_max) if v is not None]
        if rtos != sorted(rtos):
            raise ValueError("need rto_min <= rto_initial <= rto_max")
        for name in ("max_retransmissions", "max_init_retransmissions"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 255:
                raise ValueError(f"{name} must be in 1..255, not {value}")
        _check_port("remote_udp_port", self.remote_udp_port)
        if self.local_addresses is not None:
            if isinstance(self.local_addresses, str):
                object.__setattr__(self, "local_addresses", (self.local_addresses,))
            else:
                object.__setattr__(self, "local_addresses", tuple(self.local_addresses))
        # With "auto" the UDP options apply where auto means udp and are ignored on
        # kernel SCTP, so one program runs on both kinds of machine.
        if self.transport in ("kernel", "memory") and (
            self.udp_port,
            self.remote_udp_port,
        ) != (None, None):
            raise ValueError(
                f"udp_port and remote_udp_port apply to transport='udp', not {self.transport!r}"
            )


@dataclass(frozen=True, slots=True)
class AssociationOptions:
    """How the TLS channels of a :class:`~trio_sctls.SecureAssociation` behave.

    Attributes:
        handshake: ``"parallel"`` (every channel at once), ``"resume"`` (a full
            handshake on stream 0, then the others resume its session) or ``"lazy"``
            (each channel on first use). RFC 3436 section 8. The server side pairs with
            any of them.
        session_cache: (client) where TLS sessions are kept for later associations to
            resume, or ``None`` not to resume across associations. Default: one cache
            for the process.
        ppid: the payload protocol identifier on every TLS record sent.
        stream_budget: unread bytes one stream may buffer before ``overflow`` applies.
        association_budget: unread bytes the whole association may buffer.
        overflow: at a budget, ``"pause"`` (stop reading the transport, so SCTP's
            window pushes back on the peer) or ``"abort"`` (abort with
            :class:`~trio_sctls.BufferLimitError`).
        plain_streams: accept plain messages on the unidirectional streams beyond the
            TLS range (RFC 3436 section 7); otherwise such data is a protocol error.
        handshake_timeout: seconds for the handshakes. Client: the strategy as a
            whole. Server: each channel's handshake from its first byte, and the
            association from being accepted to the first byte on any channel, so that
            a peer that never starts TLS (a plain association that never speaks, a
            ``"lazy"`` client that never uses a channel) is aborted.
        close_timeout: seconds to wait for the peer's close_notify when closing.
        ticket_timeout: (client, ``"resume"``, TLS 1.3) seconds to wait for a session
            ticket on stream 0; default: scaled from stream 0's handshake time.
    """

    handshake: HandshakeStrategy = "parallel"
    session_cache: SessionCache | None = default_session_cache
    ppid: int = 0
    stream_budget: int = DEFAULT_STREAM_BUDGET
    association_budget: int = DEFAULT_ASSOCIATION_BUDGET
    overflow: OverflowPolicy = "pause"
    plain_streams: bool = False
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    ticket_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.handshake not in ("parallel", "resume", "lazy"):
            raise ValueError(
                f"unknown handshake strategy {self.handshake!r}; use 'parallel', 'resume' or 'lazy'"
            )
        if self.overflow not in ("pause", "abort"):
            raise ValueError(f"unknown overflow policy {self.overflow!r}; use 'pause' or 'abort'")
        if not 0 <= self.ppid < 2**32:
            raise ValueError(f"ppid {self.ppid} does not fit in 32 bits")
        if self.stream_budget < MIN_MAX_MESSAGE_SIZE:
            # A budget below one record would pause (or abort) on every record.
            raise ValueError(f"stream_budget must be at least {MIN_MAX_MESSAGE_SIZE} bytes")
        if self.association_budget < self.stream_budget:
            raise ValueError("association_budget must be at least stream_budget")
        for name in ("handshake_timeout", "close_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.ticket_timeout is not None and not self.ticket_timeout >= 0:
            raise ValueError("ticket_timeout must be at least 0")


#: Seconds a server that is shutting down gives its associations to close gracefully
#: (close_notify on every channel, then SCTP's SHUTDOWN) before aborting what is left.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What a server allows and how it stops (:func:`~trio_sctls.serve`,
    :func:`~trio_sctls.open_secure_listener`).

    An association over a limit is aborted as soon as it is accepted, with a reason the
    peer sees, and logged at WARNING; it never reaches the handler and does not count
    against the limits.

    Attributes:
        max_associations: the most associations one listener keeps open at once;
            ``None``: no limit.
        max_associations_per_peer: the most associations open at once from one peer
            address (its first address, without the port); ``None``: no limit.
        shutdown_timeout: seconds to close the open associations gracefully when the
            server stops (its ``serve`` cancelled, its listener's block left) before
            aborting what is left (see :data:`DEFAULT_SHUTDOWN_TIMEOUT`).
    """

    max_associations: int | None = None
    max_associations_per_peer: int | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_associations", "max_associations_per_peer"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if not self.shutdown_timeout >= 0:
            raise ValueError(f"shutdown_timeout must be at least 0, not {self.shutdown_timeout}")


class TransportKeywords(TypedDict, total=False):
    """The fields of :class:`TransportOptions`, as keyword arguments of the entry points."""

    transport: TransportName
    outbound_streams: int
    max_inbound_streams: int
    max_message_size: int
    local_addresses: Sequence[str] | None
    udp_port: int | None
    remote_udp_port: int | None
    heartbeat_interval: float | None
    rto_initial: float | None
    rto_min: float | None
    rto_max: float | None
    max_retransmissions: int | None
    max_init_retransmissions: int | None
    auth: bool


class PlainClientKeywords(TransportKeywords, total=False):
    """Keyword arguments of :func:`~trio_sctls.open_sctp_association`: those of
    :func:`~trio_sctls.open_transport`, the options whole and field by field."""

    transport_options: TransportOptions | None


class AssociationKeywords(TypedDict, total=False):
    """The fields of :class:`AssociationOptions`, as keyword arguments of the entry
    points."""

    handshake: HandshakeStrategy
    session_cache: SessionCache | None
    ppid: int
    stream_budget: int
    association_budget: int
    overflow: OverflowPolicy
    plain_streams: bool
    handshake_timeout: float
    close_timeout: float
    ticket_timeout: float | None


class SecureKeywords(TransportKeywords, AssociationKeywords, total=False):
    """The fields of both options objects, as keyword arguments of the TLS entry
    points."""


class ServerKeywords(TypedDict, total=False):
    """The fields of :class:`ServerOptions`, as keyword arguments of the server entry
    points."""

    max_associations: int | None
    max_associations_per_peer: int | None
    shutdown_timeout: float


class SecureServerKeywords(SecureKeywords, ServerKeywords, total=False):
    """Keyword arguments of :func:`~trio_sctls.serve` and
    :func:`~trio_sctls.open_secure_listener`: the fields of all three options
    objects."""


class PlainServerKeywords(TransportKeywords, ServerKeywords, total=False):
    """Keyword arguments of :func:`~trio_sctls.serve_sctp`: the fields of
    :class:`TransportOptions` and :class:`ServerOptions`."""


_TRANSPORT_FIELDS = frozenset(field.name for field in dataclasses.fields(TransportOptions))
_ASSOCIATION_FIELDS = frozenset(field.name for field in dataclasses.fields(AssociationOptions))
_SERVER_FIELDS = frozenset(field.name for field in dataclasses.fields(ServerOptions))


def make_transport_options(
    base: TransportOptions | None, overrides: Mapping[str, Any]
) -> TransportOptions:
    """``base`` (or the defaults) with the transport fields of ``overrides`` laid over
    it, validated once. Keys that are not transport fields are left for
    :func:`make_association_options`."""
    given = {key: value for key, value in overrides.items() if key in _TRANSPORT_FIELDS}
    if base is None:
        return TransportOptions(**given)
    return dataclasses.replace(base, **given) if given else base


def make_association_options(
    base: AssociationOptions | None, overrides: Mapping[str, Any]
) -> AssociationOptions:
    """``base`` (or the defaults) with the association fields of ``overrides`` laid
    over it, validated once."""
    given = {key: value for key, value in overrides.items() if key in _ASSOCIATION_FIELDS}
    if base is None:
        return AssociationOptions(**given)
    return dataclasses.replace(base, **given) if given else base


def make_server_options(base: ServerOptions | None, overrides: Mapping[str, Any]) -> ServerOptions:
    """``base`` (or the defaults) with the server fields of ``overrides`` laid over it,
    validated once."""
    given = {key: value for key, value in overrides.items() if key in _SERVER_FIELDS}
    if base is None:
        return ServerOptions(**given)
    return dataclasses.replace(base, **given) if given else base


def split_server_keywords(
    base: ServerOptions | None, overrides: Mapping[str, Any], *, secure: bool
) -> tuple[ServerOptions, dict[str, Any]]:
    """Check the keyword arguments of a ``serve*`` entry point and split them: the
    server fields make its :class:`ServerOptions`, the rest are passed on to the
    listener it opens."""
    check_keywords(overrides, secure=secure, server=True)
    rest = {key: value for key, value in overrides.items() if key not in _SERVER_FIELDS}
    return make_server_options(base, overrides), rest


#: Where to connect or bind: one address, several (multihoming), or ``None`` (all).
Hosts = str | Sequence[str] | None


def host_tuple(hosts: Hosts) -> tuple[str, ...] | None:
    """``hosts`` as the transports take them."""
    if hosts is None:
        return None
    return (hosts,) if isinstance(hosts, str) else tuple(hosts)


def check_keywords(overrides: Mapping[str, Any], *, secure: bool, server: bool = False) -> None:
    """Refuse keyword arguments that are not option fields (a typo must not pass
    silently): transport fields always, association fields when ``secure``, server
    fields when ``server``."""
    known = _TRANSPORT_FIELDS | _ASSOCIATION_FIELDS if secure else _TRANSPORT_FIELDS
    if server:
        known |= _SERVER_FIELDS
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")


__all__ = [
    "AssociationKeywords",
    "AssociationOptions",
    "PlainServerKeywords",
    "SecureKeywords",
    "SecureServerKeywords",
    "ServerKeywords",
    "ServerOptions",
    "TransportKeywords",
    "TransportOptions",
    "default_session_cache",
]
