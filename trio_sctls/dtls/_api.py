"""Entry points of DTLS over SCTP, in the style of the plain-SCTP and RFC 3436 ones.

Their arguments say where first (the peer or the local address, and the name the
peer's certificate must carry), then how (the DTLS context and options); the
transport and server options come whole or field by field as keywords, as
:func:`~trio_sctls.open_sctp_association` takes them.

The transport is asked for SCTP-AUTH (``auth=True``, which RFC 6083 requires) and
otherwise opened exactly as :func:`~trio_sctls.open_sctp_association` and
:func:`~trio_sctls.serve_sctp` open it; the server side runs on the same serving loop
(:func:`~trio_sctls.serve_listeners`), so failure isolation, limits and graceful
shutdown are the same: a peer that fails its handshake, never speaks, or breaks
RFC 6083 ends only its own association, logged at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Unpack, final

import trio
from OpenSSL import SSL

from .._errors import RemoteProtocolError
from .._listeners import ListenerPorts, peer_name, serve_until_cancelled
from .._options import (
    Hosts,
    PlainServerKeywords,
    ServerOptions,
    TransportKeywords,
    TransportOptions,
    check_keywords,
    host_tuple,
    make_transport_options,
    split_server_keywords,
)
from .._util import closed_or_aborted
from ..transport import MessageListener
from ..transport._registry import open_client, open_server
from ._association import DTLSAssociation
from ._options import DTLSOptions

log = logging.getLogger("trio_sctls")

#: What :func:`serve_dtls` calls for each association, once its handshake completed.
DTLSHandler = Callable[[DTLSAssociation], Awaitable[object]]


class DTLSClientKeywords(TransportKeywords, total=False):
    """Keyword arguments of :func:`open_dtls_association` after its DTLS ones: as for
    :func:`~trio_sctls.open_sctp_association`, the transport options whole
    (``transport_options``) and field by field."""

    transport_options: TransportOptions | None


class DTLSServerKeywords(PlainServerKeywords, total=False):
    """Keyword arguments of :func:`serve_dtls` and :func:`open_dtls_listener` after
    their DTLS ones: the transport and server options whole and field by field (a
    listener takes no server fields)."""

    transport_options: TransportOptions | None
    server_options: ServerOptions | None


def _with_auth(base: TransportOptions | None, keywords: Mapping[str, Any]) -> TransportOptions:
    """The transport options with ``auth`` on, from ``base`` and the keyword fields
    (checked: a typo must not pass silently)."""
    check_keywords(keywords, secure=False)
    if keywords.get("auth") is False:
        raise ValueError("DTLS over SCTP requires SCTP-AUTH (RFC 6083 section 4.5): auth=True")
    return make_transport_options(base, {**keywords, "auth": True})


@asynccontextmanager
async def open_dtls_association(
    host: Hosts,
    port: int,
    *,
    server_hostname: str | None = None,
    ssl_context: SSL.Context,
    options: DTLSOptions | None = None,
    **keywords: Unpack[DTLSClientKeywords],
) -> AsyncIterator[DTLSAssociation]:
    """Open an SCTP association with SCTP-AUTH to ``host``:``port``, run the DTLS 1.2
    handshake as the client (RFC 6083), and yield the
    :class:`~trio_sctls.dtls.DTLSAssociation` once it has completed.

    Leaving the block closes it gracefully (close_notify, then SCTP's SHUTDOWN); an
    exception from the block aborts it and propagates.

    Args:
        host: the server's address, or several (multihoming); ignored by the memory
            transport.
        port: the server's SCTP port.
        server_hostname: the DNS name or IP address the server's certificate must
            match (checked with ``service_identity``); ``None`` checks only the chain.
        ssl_context: a pyOpenSSL ``SSL.Context(SSL.DTLS_METHOD)`` that verifies the
            server (see :func:`~trio_sctls.dtls.create_dtls_context`).
        options: see :class:`~trio_sctls.dtls.DTLSOptions`.
        **keywords: ``transport_options`` (a :class:`~trio_sctls.TransportOptions`)
            and its fields one by one; ``auth`` is forced on.

    Raises:
        HandshakeError: the handshake failed (wrong CA, wrong name...) or timed out.
        RemoteProtocolError: the association has no SCTP-AUTH, or the server broke
            RFC 6083.
        OSError: the association could not be established.
    """
    sctp_options = _with_auth(keywords.pop("transport_options", None), keywords)
    async with open_client(host_tuple(host), port, sctp_options) as sctp:
        association = DTLSAssociation(
            sctp,
            ssl_context,
            server_side=False,
            server_hostname=server_hostname,
            options=options,
        )
        async with closed_or_aborted(association):
            await association.do_handshake()
            yield association


@final
class DTLSListener(ListenerPorts):
    """Accepts SCTP associations with SCTP-AUTH and wraps each in a
    :class:`~trio_sctls.dtls.DTLSAssociation` (server side), whose handshake runs on
    first use. Created by :func:`open_dtls_listener`.

    Attributes:
        transport_listener: the SCTP listener underneath.
        options: what every accepted association gets.
    """

    def __init__(
        self,
        transport_listener: MessageListener,
        ssl_context: SSL.Context,
        options: DTLSOptions,
    ) -> None:
        self.transport_listener = transport_listener
        self.options = options
        self._ssl_context = ssl_context

    async def accept(self) -> DTLSAssociation:
        """The next association, its handshake not yet run (``do_handshake()``, or
        the first ``receive``/``send_message``, runs it within the handshake
        timeout). Associations without SCTP-AUTH are aborted and skipped.

        Raises:
            trio.ClosedResourceError: the listener was closed.
        """
        while True:
            transport = await self.transport_listener.accept()
            try:
                return DTLSAssociation(
                    transport, self._ssl_context, server_side=True, options=self.options
                )
            except RemoteProtocolError as exc:
                log.info("association from %s refused: %s", peer_name(transport), exc)
                transport.abort(str(exc)[:200])

    async def aclose(self) -> None:
        """Stop accepting. Idempotent."""
        await self.transport_listener.aclose()


@asynccontextmanager
async def open_dtls_listener(
    port: int,
    *,
    host: Hosts = None,
    ssl_context: SSL.Context,
    options: DTLSOptions | None = None,
    **keywords: Unpack[DTLSServerKeywords],
) -> AsyncIterator[DTLSListener]:
    """Listen for DTLS-over-SCTP associations; yield the :class:`DTLSListener`.

    Args:
        port: the SCTP port (0 picks a free one: see the listener's ``port``).
        host: local address(es) to bind; all by default.
        ssl_context: a pyOpenSSL DTLS server context with a certificate.
        options: see :class:`~trio_sctls.dtls.DTLSOptions`.
        **keywords: ``transport_options`` (a :class:`~trio_sctls.TransportOptions`)
            and its fields one by one; ``auth`` is forced on.

    Raises:
        OSError: the port could not be bound.
    """
    dtls_options = options if options is not None else DTLSOptions()
    sctp_options = _with_auth(keywords.pop("transport_options", None), keywords)
    async with _listening(port, host, ssl_context, dtls_options, sctp_options) as listener:
        yield listener


@asynccontextmanager
async def _listening(
    port: int, host: Hosts, ssl_context: SSL.Context, options: DTLSOptions, sctp: TransportOptions
) -> AsyncIterator[DTLSListener]:
    """:func:`open_dtls_listener` once its keywords are resolved into options."""
    async with open_server(port, host_tuple(host), sctp) as transport_listener:
        yield DTLSListener(transport_listener, ssl_context, options)


async def serve_dtls(
    handler: DTLSHandler,
    port: int,
    *,
    host: Hosts = None,
    ssl_context: SSL.Context,
    options: DTLSOptions | None = None,
    task_status: trio.TaskStatus[DTLSListener] = trio.TASK_STATUS_IGNORED,
    **keywords: Unpack[DTLSServerKeywords],
) -> None:
    """Accept DTLS-over-SCTP associations on ``port`` until cancelled, and call
    ``handler(association)`` for each, in its own task, once its handshake has
    completed (within ``options.handshake_timeout`` of being accepted).

    The association is closed gracefully when the handler returns and aborted when it
    raises. As in :func:`~trio_sctls.serve`: a failure caused by the peer (a failed
    handshake, a peer that never speaks, a record that fails authentication, anything
    that breaks RFC 6083) ends only that association and is logged at INFO; any other
    exception from the handler propagates and stops the server; cancelling shuts down
    gracefully.

    Args:
        handler: ``async def handler(association)``.
        port: the SCTP port (0 picks one; see ``task_status``).
        host: local address(es) to bind; all by default.
        ssl_context: a pyOpenSSL DTLS server context with a certificate.
        options: see :class:`~trio_sctls.dtls.DTLSOptions`.
        task_status: with ``nursery.start``, receives the :class:`DTLSListener`.
        **keywords: ``transport_options`` (a :class:`~trio_sctls.TransportOptions`)
            and ``server_options`` (a :class:`~trio_sctls.ServerOptions`: limits and
            the shutdown deadline), and the fields of either one by one.

    Raises:
        OSError: the port could not be bound.
    """
    server_options = keywords.pop("server_options", None)
    transport_options = keywords.pop("transport_options", None)
    limits, transport_keywords = split_server_keywords(server_options, keywords, secure=False)
    dtls_options = options if options is not None else DTLSOptions()
    sctp_options = _with_auth(transport_options, transport_keywords)

    def open_one() -> AbstractAsyncContextManager[DTLSListener]:
        return _listening(port, host, ssl_context, dtls_options, sctp_options)

    async def handshake_then_handle(association: DTLSAssociation) -> None:
        await association.do_handshake()
        await handler(association)

    await serve_until_cancelled(open_one, handshake_then_handle, limits, task_status)


__all__ = [
    "DTLSHandler",
    "DTLSListener",
    "open_dtls_association",
    "open_dtls_listener",
    "serve_dtls",
]
