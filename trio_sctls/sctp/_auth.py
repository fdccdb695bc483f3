"""SCTP-AUTH (RFC 4895) for one association: key vectors, shared keys, signing, checking.

Theory of operation
===================

Each side announces RANDOM, CHUNKS and HMAC-ALGO in its INIT or INIT ACK; those three
parameters, unpadded and in that order, are its *key vector* (Section 6.1). A side that
omits RANDOM or HMAC-ALGO (or offers no SHA-1) does not speak SCTP-AUTH; with
``SCTPConfig(auth=True)`` such a peer is refused, since we *require* authentication.

Keys: the application installs *endpoint-pair shared keys* by identifier (key 0, empty,
exists from the start). The key an HMAC is computed with is the *association shared
key*: the endpoint-pair key, then the numerically smaller key vector, then the larger.
One of the keys is *active* and signs what we send; any key still installed (even one
deactivated for sending) checks what arrives, until it is deleted (RFC 6458, Section
8.3; RFC 6083, Section 4.7 switches keys this way after each DTLS handshake).

Sending (:meth:`AssociationAuth.sign`): a finished packet is scanned for the first
chunk whose type the *peer* listed in its CHUNKS; an AUTH chunk goes right before it,
its HMAC (the first identifier in the peer's HMAC-ALGO that we support) computed over
the AUTH chunk, HMAC field zeroed, and everything after it; then the CRC32c is redone.
Packets reserve :data:`~._config.MAX_AUTH_CHUNK_SIZE` bytes for it
(``SCTPConfig.auth_overhead``).

Receiving (:meth:`AssociationAuth.admit`): the chunks of a packet are filtered before
dispatch (Section 6.3). A chunk type we listed that is not behind a valid AUTH chunk is
dropped silently and counted. An AUTH chunk with an HMAC we did not offer drops itself
and the rest of the packet and earns an ERROR (Unsupported HMAC Identifier); one with an
unknown key identifier or a wrong HMAC drops itself and the rest silently. Nothing of
this ends the association: a forger must not be able to.

The cookie: a listening side keeps no state before COOKIE ECHO, so both key vectors
travel inside its State Cookie (:func:`cookie_blob`); an AUTH chunk in front of a COOKIE
ECHO is checked against the keys the cookie carries (Section 6.3's special case).
"""

from __future__ import annotations

import hmac
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from crc32c import crc32c

from ._auth_wire import (
    AuthChunk,
    ChunkListParam,
    HmacAlgoParam,
    RandomParam,
    UnsupportedHmacIdentifier,
)
from ._causes import MissingMandatoryParameter
from ._chunks import Chunk, ErrorChunk
from ._config import HMAC_SHA1, HMAC_SHA256, SCTPConfig
from ._errors import LocalProtocolError, ParseError
from ._packet import COMMON_HEADER_SIZE, Packet
from ._params import Param, parse_params
from ._tlv import join_tlvs

#: HMAC identifier -> (hashlib name, digest size).
HMACS: dict[int, tuple[str, int]] = {HMAC_SHA1: ("sha1", 20), HMAC_SHA256: ("sha256", 32)}
#: Bytes of RANDOM we send, and the fewest we accept (RFC 4895, Section 3.1: 32).
RANDOM_SIZE = 32
#: Parameters a peer that lacks SCTP-AUTH is missing (the refusal's cause names them).
AUTH_PARAM_TYPES = (RandomParam.CODE, HmacAlgoParam.CODE)
_CHUNK_HEADER = struct.Struct("!BBH")
_AUTH_HEADER = struct.Struct("!BBHHH")
_BLOB_HEAD = struct.Struct("!H")
_CRC = struct.Struct("<I")  # the CRC32c field, least significant byte first (_packet)
_ZEROS = {n: bytes(n) for n in (4, *(size for _name, size in HMACS.values()))}
_KEY_IDS = range(65536)


class AuthKeyError(LocalProtocolError, ValueError):
    """A shared key operation the key table does not allow (unknown identifier, the
    active key, ...): a :class:`ValueError`, as on every transport."""


@dataclass(frozen=True, slots=True)
class AuthSide:
    """One side's SCTP-AUTH parameters, as it sent them in its INIT or INIT ACK."""

    random: RandomParam
    hmacs: HmacAlgoParam
    chunks: ChunkListParam | None = None

    @classmethod
    def ours(cls, config: SCTPConfig) -> AuthSide:
        """Fresh parameters for our INIT or INIT ACK (a new RANDOM each time)."""
        return cls(
            RandomParam(secrets.token_bytes(RANDOM_SIZE)),
            HmacAlgoParam(config.auth_hmacs),
            ChunkListParam(config.auth_chunks),
        )

    @classmethod
    def find(cls, params: Iterable[Param]) -> AuthSide | None:
        """The peer's SCTP-AUTH parameters, or ``None`` if it does not support it: no
        RANDOM of at least :data:`RANDOM_SIZE` bytes, or no HMAC-ALGO offering SHA-1."""
        random: RandomParam | None = None
        hmacs: HmacAlgoParam | None = None
        chunks: ChunkListParam | None = None
        for p in params:
            if isinstance(p, RandomParam) and random is None:
                random = p
            elif isinstance(p, HmacAlgoParam) and hmacs is None:
                hmacs = p
            elif isinstance(p, ChunkListParam) and chunks is None:
                chunks = p
        if random is None or len(random.random) < RANDOM_SIZE:
            return None
        if hmacs is None or HMAC_SHA1 not in hmacs.hmac_ids:
            return None
        return cls(random, hmacs, chunks)

    @property
    def params(self) -> list[Param]:
        """The parameters, in key-vector order."""
        out: list[Param] = [self.random]
        if self.chunks is not None:
            out.append(self.chunks)
        out.append(self.hmacs)
        return out

    @property
    def chunk_types(self) -> frozenset[int]:
        """The chunk types this side wants authenticated (never the four that cannot
        be: INIT, INIT ACK, SHUTDOWN COMPLETE, AUTH; Section 3.2)."""
        listed = self.chunks.chunk_types if self.chunks is not None else ()
        return frozenset(listed) - {1, 2, 14, 15}

    def vector(self) -> bytes:
        """The key vector (Section 6.1): RANDOM, CHUNKS, HMAC-ALGO, each without padding."""
        return b"".join(_unpadded(p) for p in self.params)


def _unpadded(param: Param) -> bytes:
    return bytes(param)[: 4 + len(param.value())]


def cookie_blob(local: AuthSide, peer: AuthSide) -> bytes:
    """Both sides' parameters, for a State Cookie: a listener keeps no state until the
    COOKIE ECHO, which must find the keys in the cookie (Section 6.3)."""
    ours = join_tlvs(local.params)
    return _BLOB_HEAD.pack(len(ours)) + ours + join_tlvs(peer.params)


def from_cookie_blob(blob: bytes) -> AssociationAuth | None:
    """The association's SCTP-AUTH state from a cookie's :func:`cookie_blob` (``None``
    if empty or malformed; the cookie's MAC vouches for it, so only our bugs could make
    it so)."""
    if len(blob) < _BLOB_HEAD.size:
        return None
    (size,) = _BLOB_HEAD.unpack_from(blob)
    try:
        local = AuthSide.find(parse_params(blob[2 : 2 + size]))
        peer = AuthSide.find(parse_params(blob[2 + size :]))
    except ParseError:
        return None
    if local is None or peer is None:
        return None
    return AssociationAuth(local, peer)


def is_auth_refusal(causes: Iterable[object]) -> bool:
    """Whether an ABORT's causes say "no SCTP-AUTH": the Missing Mandatory Parameter
    (RANDOM, HMAC-ALGO) that :func:`~._handshake.init_problem` sends, either way."""
    return any(
        isinstance(c, MissingMandatoryParameter) and RandomParam.CODE in c.param_types
        for c in causes
    )


def leading_chunk(chunks: list[Chunk]) -> Chunk:
    """The chunk that says what a packet is: the first, or the one after a leading AUTH
    (an authenticated COOKIE ECHO arrives as AUTH + COOKIE ECHO, Section 6.3)."""
    if len(chunks) > 1 and type(chunks[0]) is AuthChunk:
        return chunks[1]
    return chunks[0]


@dataclass(slots=True)
class AuthCounters:
    """What SCTP-AUTH discarded on one association (all silently, Section 6.3)."""

    #: Chunks of a type we listed that came without a valid AUTH chunk before them.
    unauthenticated: int = 0
    #: AUTH chunks whose HMAC was wrong (or of the wrong length).
    bad_hmac: int = 0
    #: AUTH chunks naming a shared key identifier we do not hold.
    unknown_key: int = 0
    #: AUTH chunks using an HMAC identifier we did not offer (answered with an ERROR).
    unsupported_hmac: int = 0
    #: Every chunk discarded, for any of the reasons above (AUTH chunks included).
    dropped_chunks: int = 0


class KeyTable:
    """The endpoint-pair shared keys of one association, as RFC 4895 section 6.1 and
    RFC 6458 section 8.3 manage them: key 0, empty, from the start; one key active for
    sending; a deactivated key no longer signs but still checks until it is deleted.

    Every implementation of :class:`~trio_sctls.transport.AuthKeys` that keeps its own
    table (this core's, the memory transport's) is one of these, so a key schedule
    that works on one works on the other. Mistakes raise :class:`AuthKeyError`.
    """

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {0: b""}
        self._deactivated: set[int] = set()
        self._active = 0

    @property
    def active_key_id(self) -> int:
        """The shared key identifier that signs what we send now."""
        return self._active

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The installed shared key identifiers, deactivated ones included."""
        return tuple(sorted(self._keys))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} active={self._active} keys={self.key_ids}>"

    def add_key(self, key_id: int, secret: bytes) -> None:
        """Install endpoint-pair shared key ``key_id`` (replacing one that is not active)."""
        if key_id not in _KEY_IDS:
            raise AuthKeyError(f"shared key identifier {key_id} is not 0..65535")
        if key_id == self._active and secret != self._keys[key_id]:
            raise AuthKeyError(f"shared key {key_id} is active: it cannot be replaced")
        self._keys[key_id] = bytes(secret)
        self._deactivated.discard(key_id)
        self._key_changed(key_id)

    def activate_key(self, key_id: int) -> None:
        """Sign what we send from now on with ``key_id``."""
        self._need(key_id)
        if key_id in self._deactivated:
            raise AuthKeyError(f"shared key {key_id} was deactivated")
        self._active = key_id

    def deactivate_key(self, key_id: int) -> None:
        """Never send with ``key_id`` again; it still checks what arrives until deleted."""
        self._need_inactive(key_id)
        self._deactivated.add(key_id)

    def delete_key(self, key_id: int) -> None:
        """Forget ``key_id``: what the peer signs with it is dropped from now on."""
        self._need_inactive(key_id)
        del self._keys[key_id]
        self._deactivated.discard(key_id)
        self._key_changed(key_id)

    def _key_changed(self, key_id: int) -> None:
        """Hook: the secret of ``key_id`` was replaced or deleted."""

    def _need(self, key_id: int) -> None:
        if key_id not in self._keys:
            raise AuthKeyError(f"no shared key {key_id}")

    def _need_inactive(self, key_id: int) -> None:
        self._need(key_id)
        if key_id == self._active:
            raise AuthKeyError(f"shared key {key_id} is the active key")


class AssociationAuth(KeyTable):
    """The SCTP-AUTH state of one association: its keys and counters.

    It is what :attr:`Association.auth <trio_sctls.sctp.Association.auth>` returns once
    both sides agreed on SCTP-AUTH, and it implements the transports'
    :class:`~trio_sctls.transport.AuthKeys` protocol. Key management mistakes raise
    :class:`AuthKeyError`.
    """

    def __init__(self, local: AuthSide, peer: AuthSide) -> None:
        super().__init__()
        ours, theirs = local.vector(), peer.vector()
        low, high = sorted((ours, theirs), key=lambda v: int.from_bytes(v, "big"))
        self._vectors = low + high
        self._verify_types = local.chunk_types
        self._sign_types = peer.chunk_types
        self._our_hmacs = frozenset(local.hmacs.hmac_ids) & HMACS.keys()
        #: The HMAC our AUTH chunks use: the peer's favourite among those we offered
        #: (both lists hold SHA-1, so there is one).
        self.hmac_id = next(h for h in peer.hmacs.hmac_ids if h in self._our_hmacs)
        #: (key id, HMAC id) -> an HMAC keyed with the association key, copied per use.
        self._macs: dict[tuple[int, int], hmac.HMAC] = {}
        #: What was discarded, by reason.
        self.counters = AuthCounters()
        #: An ERROR chunk to send (Unsupported HMAC Identifier), taken by the association.
        self.report: bytes | None = None

    @property
    def sign_types(self) -> frozenset[int]:
        """The chunk types the peer asked us to authenticate."""
        return self._sign_types

    @property
    def verify_types(self) -> frozenset[int]:
        """The chunk types we asked the peer to authenticate."""
        return self._verify_types

    def _key_changed(self, key_id: int) -> None:
        for hmac_id in HMACS:
            self._macs.pop((key_id, hmac_id), None)

    def _mac(self, key_id: int, hmac_id: int) -> hmac.HMAC | None:
        """A fresh HMAC under the association key of ``key_id`` (Section 6.1: the
        endpoint-pair key, then the smaller and the larger key vector), or ``None``."""
        keyed = self._macs.get((key_id, hmac_id))
        if keyed is None:
            secret = self._keys.get(key_id)
            if secret is None:
                return None
            keyed = hmac.new(secret + self._vectors, digestmod=HMACS[hmac_id][0])
            self._macs[key_id, hmac_id] = keyed
        return keyed.copy()

    # -- sending ----------------------------------------------------------------------

    def sign(self, packet: bytes, key_id: int | None = None) -> bytes:
        """``packet`` with an AUTH chunk before its first chunk the peer wants
        authenticated (unchanged if it has none), checksum redone.

        ``key_id`` is the key its DATA was queued under; a key deleted since (the user
        asked for it) gives way to the active key, as nothing else can sign it."""
        types = self._sign_types
        if not types:
            return packet
        offset = COMMON_HEADER_SIZE
        end = len(packet)
        while True:
            if offset + 4 > end:
                return packet
            chunk_type, _, length = _CHUNK_HEADER.unpack_from(packet, offset)
            if chunk_type in types:
                break
            if length < 4:
                return packet
            offset += (length + 3) & ~3
        hmac_id, active = self.hmac_id, self._active
        if key_id is not None and key_id in self._keys:
            active = key_id
        size = HMACS[hmac_id][1]
        mac = self._mac(active, hmac_id)
        assert mac is not None  # the active key cannot be deleted, the other one is held
        view = memoryview(packet)
        head = _AUTH_HEADER.pack(AuthChunk.CODE, 0, 8 + size, active, hmac_id)
        mac.update(head)
        mac.update(_ZEROS[size])
        mac.update(view[offset:])
        auth = head + mac.digest()
        # The checksum over the new packet, its own field zero, without building it twice.
        crc = crc32c(view[:8])
        for part in (_ZEROS[4], view[12:offset], auth, view[offset:]):
            crc = crc32c(part, crc)
        return b"".join((view[:8], _CRC.pack(crc), view[12:offset], auth, view[offset:]))

    # -- receiving ----------------------------------------------------------------------

    def admit(self, packet: Packet) -> list[Chunk]:
        """The chunks of ``packet`` that may be processed (Section 6.3), AUTH chunks
        removed; what is discarded is counted in :attr:`counters`."""
        chunks = packet.chunks
        verify = self._verify_types
        out: list[Chunk] = []
        authenticated = False
        counters = self.counters
        for index, chunk in enumerate(chunks):
            if type(chunk) is AuthChunk:
                if not authenticated:
                    assert isinstance(chunk, AuthChunk)
                    if not self._check(packet, index, chunk):
                        counters.dropped_chunks += len(chunks) - index
                        break
                    authenticated = True
                continue
            if not authenticated and chunk.code in verify:
                counters.unauthenticated += 1
                counters.dropped_chunks += 1
                continue
            out.append(chunk)
        return out

    def _check(self, packet: Packet, index: int, chunk: AuthChunk) -> bool:
        counters = self.counters
        if chunk.hmac_id not in self._our_hmacs:
            counters.unsupported_hmac += 1
            self.report = bytes(ErrorChunk((UnsupportedHmacIdentifier(chunk.hmac_id),)))
            return False
        mac = self._mac(chunk.key_id, chunk.hmac_id)
        if mac is None:
            counters.unknown_key += 1
            return False
        size = HMACS[chunk.hmac_id][1]
        view = memoryview(packet.raw or bytes(packet))
        offset = _chunk_offset(view, index)
        if len(chunk.hmac) != size or offset is None:
            counters.bad_hmac += 1
            return False
        mac.update(view[offset : offset + 8])
        mac.update(_ZEROS[size])
        mac.update(view[offset + 8 + size :])
        if not hmac.compare_digest(mac.digest(), chunk.hmac):
            counters.bad_hmac += 1
            return False
        return True


def _chunk_offset(raw: bytes | bytearray | memoryview, index: int) -> int | None:
    """Where chunk number ``index`` starts in the packet bytes ``raw``."""
    offset = COMMON_HEADER_SIZE
    for _ in range(index):
        if offset + 4 > len(raw):
            return None
        offset += (_CHUNK_HEADER.unpack_from(raw, offset)[2] + 3) & ~3
    return offset if offset + 4 <= len(raw) else None
