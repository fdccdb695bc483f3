"""Tools for testing code that uses trio-sctls, as :mod:`trio.testing` is for Trio.

* :func:`trusted_contexts`: a throw-away CA and a server certificate, as a matching
  pair of server and client :class:`ssl.SSLContext` (needs ``trustme``:
  ``pip install 'trio-sctls[testing]'``).
* :func:`association_pair`: a connected client and server
  :class:`~trio_sctls.SecureAssociation`, on the in-process ``memory`` transport by
  default (any transport works: ``"udp"`` runs our real SCTP over UDP on loopback).
* :func:`transport_pair`: the same for plain SCTP.
* :func:`memory_transport_pair`: two joined :class:`~trio_sctls.MessageTransport` ends
  without any listener, with per-stream delays for head-of-line experiments.
* :func:`impaired_link`: a UDP relay with seeded loss, duplication, reordering and delay
  between a udp client and server (see :mod:`trio_sctls.impaired`).

Everything here runs inside the caller's Trio run and leaves no task behind.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import trio

from ._api import open_association, open_listener, open_secure_listener, open_transport
from ._association import SecureAssociation
from ._options import AssociationOptions, TransportName, TransportOptions
from ._util import unwrap_single_exception
from .impaired import DROP as DROP
from .impaired import Faults as Faults
from .impaired import ImpairedLink as ImpairedLink
from .impaired import impaired_link as impaired_link
from .transport import MessageTransport
from .transport.memory import memory_pair as memory_transport_pair

#: The name in the certificate that :func:`trusted_contexts` makes by default.
SERVER_NAME = "server.example"

_End = TypeVar("_End", SecureAssociation, MessageTransport)
_Accepted = TypeVar("_Accepted", covariant=True)


def trusted_contexts(
    server_name: str = SERVER_NAME,
    *,
    version: ssl.TLSVersion | None = None,
    client_certificate: bool = False,
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A fresh CA with one ECDSA P-256 server certificate for ``server_name``, as a
    ``(server, client)`` pair of contexts that trust each other.

    ECDSA keeps handshakes several times cheaper than RSA-2048.

    Args:
        server_name: the name the server's certificate is issued for.
        version: pin both contexts to this TLS version.
        client_certificate: the client presents a certificate from the same CA too,
            and the server requires one (mutual TLS).

    Raises:
        ImportError: ``trustme`` is not installed.
    """
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "trusted_contexts() makes certificates with trustme: pip install 'trio-sctls[testing]'"
        ) from exc
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(server_name, key_type=trustme.KeyType.ECDSA).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    if client_certificate:
        ca.issue_cert("client." + server_name, key_type=trustme.KeyType.ECDSA).configure_cert(
            client
        )
        server.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(server)
    if version is not None:
        for context in (server, client):
            context.minimum_version = context.maximum_version = version
    return server, client


@dataclass(frozen=True)
class Pair(Generic[_End]):
    """Two connected ends of one association.

    Attributes:
        client: the end that connected (the TLS client, for secure pairs).
        server: the end that accepted.
        port: the server's SCTP port.
    """

    client: _End
    server: _End
    port: int


class _Accepts(Protocol[_Accepted]):
    async def accept(self) -> _Accepted: ...


@asynccontextmanager
async def _accepting(
    listener: _Accepts[_Accepted],
) -> AsyncIterator[Callable[[], Awaitable[_Accepted]]]:
    """Accept one association in the background (the client's set-up may need the
    server's end running), and yield a function that waits for it."""
    accepted: list[_Accepted] = []
    done = trio.Event()

    async def accept_one() -> None:
        accepted.append(await listener.accept())
        done.set()

    async def wait() -> _Accepted:
        await done.wait()
        return accepted[0]

    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_one)
            yield wait
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _paired(
    client: _End, accepted: Callable[[], Awaitable[_End]], port: int
) -> AsyncIterator[Pair[_End]]:
    """Yield ``client`` paired with the server end once it is accepted. Leaving closes
    both gracefully, together; an exception aborts both and propagates."""
    server = await accepted()
    pair = Pair(client, server, port)
    try:
        yield pair
    except BaseException:
        client.abort()
        server.abort()
        raise
    # Together: a graceful close waits for the peer's close_notify (or SHUTDOWN ACK),
    # which the other end sends only while it is closing too.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        nursery.start_soon(server.aclose)


@asynccontextmanager
async def association_pair(
    transport: TransportName = "memory",
    *,
    server_context: ssl.SSLContext | None = None,
    client_context: ssl.SSLContext | None = None,
    server_hostname: str = SERVER_NAME,
    options: AssociationOptions | None = None,
    server_options: AssociationOptions | None = None,
    transport_options: TransportOptions | None = None,
) -> AsyncIterator[Pair[SecureAssociation]]:
    """Listen on a free port of 127.0.0.1, connect to it, and yield both ends, ready.

    Leaving the block closes both gracefully, together; an exception from the block
    aborts both and propagates.

    Args:
        transport: ``"memory"`` (default), ``"udp"``, ``"kernel"`` or ``"auto"``.
        server_context: default: from :func:`trusted_contexts`, with the client's.
        client_context: default: from :func:`trusted_contexts`, with the server's.
        server_hostname: the name the client verifies.
        options: the client's association options (default: no session cache, so
            pairs do not resume each other's sessions).
        server_options: the server's association options.
        transport_options: both ends' transport options (the ``transport`` field is
            set from ``transport``).
    """
    if server_context is None or client_context is None:
        made_server, made_client = trusted_contexts(server_hostname)
        server_context = server_context or made_server
        client_context = client_context or made_client
    sctp = _with_transport(transport_options, transport)
    async with (
        open_secure_listener(
            0,
            ssl_context=server_context,
            host="127.0.0.1",
            options=server_options,
            transport_options=sctp,
        ) as listener,
        _accepting(listener) as accepted,
        open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_context,
            server_hostname=server_hostname,
            options=options or AssociationOptions(session_cache=None),
            transport_options=sctp,
        ) as client,
        _paired(client, accepted, listener.port) as pair,
    ):
        yield pair


@asynccontextmanager
async def transport_pair(
    transport: TransportName = "memory",
    *,
    transport_options: TransportOptions | None = None,
) -> AsyncIterator[Pair[MessageTransport]]:
    """Listen on a free port of 127.0.0.1, connect a plain SCTP association to it, and
    yield both ends. Leaving the block shuts both down gracefully; an exception aborts
    them."""
    sctp = _with_transport(transport_options, transport)
    async with (
        open_listener(0, host="127.0.0.1", transport_options=sctp) as listener,
        _accepting(listener) as accepted,
        open_transport("127.0.0.1", listener.port, transport_options=sctp) as client,
        _paired(client, accepted, listener.port) as pair,
    ):
        yield pair


def _with_transport(options: TransportOptions | None, transport: TransportName) -> TransportOptions:
    if options is None:
        return TransportOptions(transport=transport)
    return dataclasses.replace(options, transport=transport)


__all__ = [
    "DROP",
    "SERVER_NAME",
    "Faults",
    "ImpairedLink",
    "Pair",
    "association_pair",
    "impaired_link",
    "memory_transport_pair",
    "transport_pair",
    "trusted_contexts",
]
