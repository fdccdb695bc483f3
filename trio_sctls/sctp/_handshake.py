"""The pieces of the four-way handshake that need no association (RFC 9260, Section 5).

A server answers an INIT with an INIT ACK carrying a *State Cookie* and keeps nothing:
everything it will need to build the association later (both tags, both initial TSNs,
the negotiated stream counts...) travels inside the cookie, authenticated with
HMAC-SHA256 under a secret only this endpoint knows (Section 5.1.3), and bound to the
peer's transport address through the MAC's ``context``. Only a COOKIE ECHO returning a
valid, fresh cookie creates state (Section 5.1.5). The same code serves a listening
``Association``, the collision cases of Section 5.2, and the ``Endpoint``.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from typing import TypeVar

from ._auth import AUTH_PARAM_TYPES, AuthSide, cookie_blob
from ._auth_wire import AUTH_CHUNK_TYPE
from ._causes import (
    ErrorCause,
    InvalidMandatoryParameter,
    MissingMandatoryParameter,
    StaleCookie,
    UnrecognizedParameters,
    UnresolvableAddress,
)
from ._chunks import (
    AbortChunk,
    Chunk,
    CookieAckChunk,
    ErrorChunk,
    InitAckChunk,
    InitChunk,
    ShutdownAckChunk,
    ShutdownCompleteChunk,
)
from ._config import SCTPConfig
from ._packet import Packet
from ._params import (
    CookiePreservative,
    HostNameAddressParam,
    Param,
    StateCookieParam,
    SupportedAddressTypes,
    SupportedExtensions,
    UnknownParam,
    UnrecognizedParam,
    unknown_param_action,
)

#: Chunk type of RE-CONFIG (RFC 6525), as listed in Supported Extensions.
RECONFIG_CHUNK_TYPE = 0x82
_COOKIE_VERSION = 1
# version, flags, created, lifetime, local tag, peer tag, local TSN, peer TSN, peer
# a_rwnd, local port, peer port, outbound streams, inbound streams, local tie tag, peer
# tie tag.
_COOKIE = struct.Struct("!BBxxddIIIIIHHHHII")
_MAC_SIZE = 32
_FLAG_PEER_RECONFIG = 0x01
#: The longest extra cookie life we grant a Cookie Preservative (Section 5.2.6 lets the
#: server ignore or cap the request).
MAX_PRESERVATIVE = 60.0
#: The most bytes of unknown parameters we reflect (in an INIT ACK's Unrecognized
#: Parameter parameters, or the ERROR after our COOKIE ECHO). Section 3.2.1 asks to report
#: them all, but a peer could then make our answer bigger than its INIT (an amplifier)
#: and even beyond the 64 KB a chunk can hold; the rest is skipped without a word.
MAX_UNRECOGNIZED_REPORT = 1024


@dataclass(frozen=True, slots=True)
class CookieState:
    """What a State Cookie carries: the association, as agreed in INIT / INIT ACK.

    "Local" is the endpoint that made the cookie (the INIT's receiver), "peer" the one
    that echoes it.
    """

    created: float
    lifetime: float
    local_tag: int
    peer_tag: int
    local_tsn: int
    peer_tsn: int
    peer_rwnd: int
    local_port: int
    peer_port: int
    outbound_streams: int
    inbound_streams: int
    local_tie_tag: int = 0
    peer_tie_tag: int = 0
    peer_reconfig: bool = False
    #: Both sides' SCTP-AUTH parameters (``_auth.cookie_blob``), or empty.
    auth: bytes = b""

    def seal(self, secret: bytes, context: bytes) -> bytes:
        """The cookie bytes: the fields, then HMAC-SHA256(secret, fields + context)."""
        body = (
            _COOKIE.pack(
                _COOKIE_VERSION,
                _FLAG_PEER_RECONFIG if self.peer_reconfig else 0,
                self.created,
                self.lifetime,
                self.local_tag,
                self.peer_tag,
                self.local_tsn,
                self.peer_tsn,
                self.peer_rwnd,
                self.local_port,
                self.peer_port,
                self.outbound_streams,
                self.inbound_streams,
                self.local_tie_tag,
                self.peer_tie_tag,
            )
            + self.auth
        )
        return body + hmac.digest(secret, body + context, "sha256")

    @classmethod
    def open(cls, cookie: bytes, secret: bytes, context: bytes) -> CookieState | None:
        """Check a cookie's MAC and decode it; ``None`` if it is not one of ours."""
        if len(cookie) < _COOKIE.size + _MAC_SIZE:
            return None
        body, mac = cookie[:-_MAC_SIZE], cookie[-_MAC_SIZE:]
        if not hmac.compare_digest(mac, hmac.digest(secret, body + context, "sha256")):
            return None
        (version, flags, created, lifetime, ltag, ptag, ltsn, ptsn, prwnd, lport, pport,
         os_, is_, ltie, ptie) = _COOKIE.unpack_from(body)  # fmt: skip
        if version != _COOKIE_VERSION:
            return None
        return cls(
            created, lifetime, ltag, ptag, ltsn, ptsn, prwnd, lport, pport,
            os_, is_, ltie, ptie, bool(flags & _FLAG_PEER_RECONFIG), body[_COOKIE.size :],
        )  # fmt: skip


@dataclass(slots=True)
class PeerParams:
    """What we take from the parameters of the peer's INIT or INIT ACK."""

    reconfig: bool = False
    cookie: bytes | None = None
    preservative_ms: int = 0
    #: Whole TLVs of unknown parameters the peer wants reported (Section 3.2.2).
    unrecognized: list[bytes] = field(default_factory=list)
    #: A problem that makes us refuse the INIT (sent as the ABORT's cause).
    problem: ErrorCause | None = None


def read_peer_params(params: tuple[Param, ...]) -> PeerParams:
    """Apply RFC 9260, Section 3.2.1 to the parameters of an INIT or INIT ACK."""
    out = PeerParams()
    reported = 0
    for p in params:
        if isinstance(p, UnknownParam):
            keep_going, report = unknown_param_action(p.code)
            if report:
                raw = bytes(p)
                reported += 4 + len(raw)  # wrapped in an Unrecognized Parameter each
                if reported <= MAX_UNRECOGNIZED_REPORT:
                    out.unrecognized.append(raw)
            if not keep_going:
                break
        elif isinstance(p, SupportedExtensions):
            out.reconfig = RECONFIG_CHUNK_TYPE in p.chunk_types
        elif isinstance(p, StateCookieParam):
            out.cookie = p.cookie
        elif isinstance(p, CookiePreservative):
            out.preservative_ms = p.increment_ms
        elif isinstance(p, HostNameAddressParam):
            # Section 3.3.2.1.4: host names are deprecated; we cannot resolve them.
            out.problem = UnresolvableAddress(bytes(p))
    return out


def our_params(config: SCTPConfig, auth: AuthSide | None = None) -> list[Param]:
    """The parameters we put in every INIT and INIT ACK (with our SCTP-AUTH ones, RFC
    4895 Section 3, when ``auth`` is given)."""
    params: list[Param] = [SupportedAddressTypes((5, 6))]
    extensions: tuple[int, ...] = (RECONFIG_CHUNK_TYPE,) if config.reconfig else ()
    if auth is not None:
        extensions += (AUTH_CHUNK_TYPE,)
    if extensions:
        params.append(SupportedExtensions(extensions))
    if auth is not None:
        params.extend(auth.params)
    return params


def build_init(
    config: SCTPConfig,
    tag: int,
    tsn: int,
    preservative_ms: int = 0,
    auth: AuthSide | None = None,
) -> InitChunk:
    """Our INIT (Section 5.1, step A)."""
    params = our_params(config, auth)
    if preservative_ms:
        params.append(CookiePreservative(preservative_ms))
    return _with_our_fields(InitChunk, config, tag, tsn, params)


_Init = TypeVar("_Init", InitChunk, InitAckChunk)


def _with_our_fields(
    cls: type[_Init], config: SCTPConfig, tag: int, tsn: int, params: list[Param]
) -> _Init:
    """An INIT or INIT ACK announcing our window and stream counts (Section 3.3.2).

    The stream counts are what we ask for, not what was negotiated: the peer applies
    the same minimum on its side.
    """
    return cls(
        initiate_tag=tag,
        a_rwnd=config.receive_buffer,
        outbound_streams=config.outbound_streams,
        inbound_streams=config.max_inbound_streams,
        initial_tsn=tsn,
        params=tuple(params),
    )


def init_problem(init: InitChunk | InitAckChunk, config: SCTPConfig) -> ErrorCause | None:
    """Why an INIT or INIT ACK must be refused, or ``None`` (Sections 3.3.2, 3.3.3; and
    a peer without SCTP-AUTH when ``config.auth`` requires it)."""
    if init.outbound_streams == 0 or init.inbound_streams == 0:
        return InvalidMandatoryParameter()
    if config.auth and AuthSide.find(init.params) is None:
        return MissingMandatoryParameter(AUTH_PARAM_TYPES)
    return read_peer_params(init.params).problem


def negotiate_streams(config: SCTPConfig, peer_os: int, peer_mis: int) -> tuple[int, int]:
    """``(outbound, inbound)`` stream counts (Section 5.1.1): each side gets the smaller
    of what the sender asked for and what the receiver accepts."""
    return min(config.outbound_streams, peer_mis), min(peer_os, config.max_inbound_streams)


def build_init_ack(
    config: SCTPConfig,
    init: InitChunk,
    *,
    now: float,
    local_tag: int,
    local_tsn: int,
    local_port: int,
    peer_port: int,
    secret: bytes,
    context: bytes,
    tie_tags: tuple[int, int] = (0, 0),
    local_auth: AuthSide | None = None,
) -> InitAckChunk:
    """The INIT ACK answering ``init``, with a sealed State Cookie (Section 5.1, step B).

    Unknown INIT parameters that ask to be reported come back as Unrecognized Parameter
    parameters (Section 3.2.2). With SCTP-AUTH, ``local_auth`` is the RANDOM etc. of the
    INIT we sent ourselves (an INIT collision: both legs then agree on one key vector);
    otherwise fresh ones are drawn.
    """
    peer = read_peer_params(init.params)
    outbound, inbound = negotiate_streams(config, init.outbound_streams, init.inbound_streams)
    # Section 5.2.6: a Cookie Preservative asks for a longer life; we grant it, capped.
    extra = min(peer.preservative_ms / 1000.0, MAX_PRESERVATIVE)
    peer_auth = None
    if config.auth:
        local_auth = local_auth or AuthSide.ours(config)
        peer_auth = AuthSide.find(init.params)
    state = CookieState(
        created=now,
        lifetime=config.cookie_lifetime + extra,
        local_tag=local_tag,
        peer_tag=init.initiate_tag,
        local_tsn=local_tsn,
        peer_tsn=init.initial_tsn,
        peer_rwnd=init.a_rwnd,
        local_port=local_port,
        peer_port=peer_port,
        outbound_streams=outbound,
        inbound_streams=inbound,
        local_tie_tag=tie_tags[0],
        peer_tie_tag=tie_tags[1],
        peer_reconfig=peer.reconfig and config.reconfig,
        auth=cookie_blob(local_auth, peer_auth) if local_auth and peer_auth else b"",
    )
    params = our_params(config, local_auth)
    params.append(StateCookieParam(state.seal(secret, context)))
    params.extend(UnrecognizedParam(raw) for raw in peer.unrecognized)
    return _with_our_fields(InitAckChunk, config, local_tag, local_tsn, params)


def unrecognized_cause(unrecognized: list[bytes]) -> UnrecognizedParameters:
    """The error cause reporting unknown INIT ACK parameters (Section 3.2.2)."""
    return UnrecognizedParameters(b"".join(unrecognized))


def ootb_response(packet: Packet) -> Packet | None:
    """The answer to an "out of the blue" packet (RFC 9260, Section 8.4), if any.

    INIT and COOKIE ECHO are not handled here (the caller processes them as in
    Section 5.1); this covers the rest: silence for ABORT, SHUTDOWN COMPLETE, COOKIE ACK
    and Stale Cookie errors, SHUTDOWN COMPLETE for a SHUTDOWN ACK, ABORT otherwise; both
    answers reflect the packet's own verification tag with the T bit set.
    """
    chunks = packet.chunks
    if not chunks:
        return None
    for c in chunks:
        if isinstance(c, AbortChunk | ShutdownCompleteChunk | CookieAckChunk):
            return None  # (2), (6), (7)
        if isinstance(c, ErrorChunk) and any(isinstance(x, StaleCookie) for x in c.causes):
            return None  # (7)
    answer: Chunk
    if isinstance(chunks[0], ShutdownAckChunk):
        answer = ShutdownCompleteChunk(reflected=True)  # (5)
    else:
        answer = AbortChunk(reflected=True)  # (8)
    return Packet(packet.destination_port, packet.source_port, packet.verification_tag, [answer])


def abort_init(init: InitChunk, packet: Packet, cause: ErrorCause | None) -> Packet:
    """An ABORT answering an INIT we refuse: it carries the INIT's Initiate Tag, T bit
    clear (Section 8.4, (3))."""
    causes = (cause,) if cause is not None else ()
    return Packet(
        packet.destination_port,
        packet.source_port,
        init.initiate_tag,
        [AbortChunk(causes)],
    )
