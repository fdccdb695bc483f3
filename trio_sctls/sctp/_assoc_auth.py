"""Where SCTP-AUTH (RFC 4895) meets the association: the hooks it calls.

The protocol itself (key vectors, keys, signing, checking) is in :mod:`._auth`; this
mixin only holds an association's :class:`~._auth.AssociationAuth` and connects it to
the four places that need it: our INIT (our parameters), the peer's INIT ACK or our
State Cookie (the agreement), each incoming packet (:meth:`_auth_admit`, before chunk
dispatch) and each outgoing one (:meth:`_auth_sign`, after bundling).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._assoc_base import AssociationBase
from ._auth import AssociationAuth, AuthSide, from_cookie_blob
from ._chunks import Chunk, CookieEchoChunk
from ._handshake import CookieState
from ._packet import Packet
from ._params import Param


class AuthMixin(AssociationBase):
    """The SCTP-AUTH state of an association; see :class:`~trio_sctls.sctp.Association`."""

    _auth: AssociationAuth | None = None
    #: Our parameters of the INIT we sent (client side), until the INIT ACK answers.
    _auth_local: AuthSide | None = None

    @property
    def auth(self) -> AssociationAuth | None:
        """The SCTP-AUTH keys and counters, once both sides agreed on it (RFC 4895);
        ``None`` before, or without it."""
        return self._auth

    def _auth_for_init(self) -> AuthSide | None:
        """Fresh parameters for the INIT we are about to send, if we speak SCTP-AUTH."""
        self._auth_local = AuthSide.ours(self.config) if self.config.auth else None
        return self._auth_local

    def _auth_on_init_ack(self, params: Iterable[Param]) -> None:
        """The peer's INIT ACK answered our INIT: agree on SCTP-AUTH if both speak it."""
        local = self._auth_local
        peer = AuthSide.find(params) if local is not None else None
        self._auth = AssociationAuth(local, peer) if local and peer else None

    def _auth_on_cookie(self, cookie: CookieState) -> None:
        """A valid COOKIE ECHO made the association: its cookie holds the agreement."""
        self._auth = from_cookie_blob(cookie.auth) if self.config.auth else None

    def _auth_admit(self, packet: Packet) -> list[Chunk]:
        """The chunks of ``packet`` that survive the checks of RFC 4895, Section 6.3."""
        auth = self._auth
        if auth is None:
            auth = self._auth_from_echo(packet.chunks)
            if auth is None:
                return packet.chunks
        chunks = auth.admit(packet)
        if auth.report is not None:
            self._control.append(auth.report)
            auth.report = None
        return chunks

    def _auth_from_echo(self, chunks: list[Chunk]) -> AssociationAuth | None:
        """Before the association exists, an AUTH chunk can only guard a COOKIE ECHO
        (right behind it): check it with the keys the cookie carries."""
        echo = next((c for c in chunks[:2] if isinstance(c, CookieEchoChunk)), None)
        if echo is None:
            return None
        cookie = CookieState.open(echo.cookie, self._secret, self._context)
        return from_cookie_blob(cookie.auth) if cookie is not None else None

    def _auth_sign(self, packets: list[bytes], keys: dict[int, int] | None = None) -> list[bytes]:
        """``packets`` with AUTH chunks where the peer asked for them: packet number
        ``i`` signed with key ``keys[i]`` if given (the key its DATA was queued
        under), the others with the active key."""
        auth = self._auth
        if auth is None:
            return packets
        if not keys:
            return [auth.sign(p) for p in packets]
        return [auth.sign(p, keys.get(i)) for i, p in enumerate(packets)]
