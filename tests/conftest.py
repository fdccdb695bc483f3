"""Shared fixtures: certificates, TLS contexts, transports, and association pairs.

Kernel SCTP tests are marked ``kernel``. Where this kernel has SCTP they run here like
any other test; where it has none they are deselected here and run inside a QEMU VM
booting a stock Debian kernel, by ``tests/test_kernel_vm.py`` (see tests/vm/).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trustme

from trio_sctls import (
    AssociationOptions,
    SecureAssociation,
    kernel_sctp_available,
    open_association,
    serve,
    wrap_transport,
)
from trio_sctls._api import TransportName
from trio_sctls._util import unwrap_single_exception
from trio_sctls.transport import MessageListener, MessageTransport

from .hygiene import no_leaks

#: True inside the test VM (set by tests/vm/run_in_vm.py).
IN_VM = os.environ.get("TRIO_SCTLS_IN_VM") == "1"
#: Whether kernel SCTP tests can run in this process.
KERNEL_SCTP = kernel_sctp_available()

SERVER_NAME = "server.example"
# ECDSA: handshakes are several times cheaper than RSA-2048, which matters in the VM
# where OpenSSL runs ~100x slower.
CA = trustme.CA(key_type=trustme.KeyType.ECDSA)
SERVER_CERT = CA.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA)
#: A second, equally valid certificate for the same name: what a man in the middle
#: holding a mis-issued certificate would present.
OTHER_SERVER_CERT = CA.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA)
CLIENT_CERT = CA.issue_cert("client.example", key_type=trustme.KeyType.ECDSA)

TLS_VERSIONS = {
    "tls12": ssl.TLSVersion.TLSv1_2,
    "tls13": ssl.TLSVersion.TLSv1_3,
}


def pytest_configure(config: pytest.Config) -> None:
    """Register this suite's own markers."""
    config.addinivalue_line(
        "markers",
        "allow_error_logs: the test provokes trio_sctls's ERROR logs on purpose",
    )


class _ErrorRecords(logging.Handler):
    """Keeps every record at ERROR or above."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test in which ``trio_sctls`` (or a logger below it) logged at ERROR:
    the library logs there only what nobody else will see (an exception in a udp pump
    task, say), so such a record is a bug even when the test's assertions pass. Mark a
    test ``allow_error_logs`` if it provokes one on purpose."""
    handler = _ErrorRecords()
    logger = logging.getLogger("trio_sctls")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.records and "allow_error_logs" not in request.keywords:
        formatter = logging.Formatter()
        details = "\n".join(
            f"{record.name}: {record.getMessage()}"
            + ("\n" + formatter.formatException(record.exc_info) if record.exc_info else "")
            for record in handler.records
        )
        pytest.fail(f"trio_sctls logged at ERROR during the test:\n{details}", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without kernel SCTP here, kernel tests belong to the VM run, not to this one."""
    if KERNEL_SCTP:
        keep = [item for item in items if "vm_runner" not in item.keywords]
    else:
        keep = [item for item in items if "kernel" not in item.keywords]
    deselected = [item for item in items if item not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show how the kernel-SCTP run inside the VM went, if it ran."""
    from .test_kernel_vm import SUMMARY

    for line in SUMMARY:
        terminalreporter.write_line(line)


def server_context(
    version: ssl.TLSVersion | None = None,
    *,
    cert: trustme.LeafCert = SERVER_CERT,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context with ``cert``; optionally requiring a client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        CA.configure_trust(context)
    return context


def client_context(
    version: ssl.TLSVersion | None = None, *, client_cert: bool = False
) -> ssl.SSLContext:
    """A client context trusting the test CA; optionally presenting a client cert."""
    context = ssl.create_default_context()
    CA.configure_trust(context)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    if client_cert:
        CLIENT_CERT.configure_cert(context)
    return context


def free_udp_port() -> int:
    """A UDP port that was free a moment ago on 127.0.0.1 and the wildcard address."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        probe.bind(("::", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(params=["memory", "udp", pytest.param("kernel", marks=pytest.mark.kernel)])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> TransportName:
    """Each association test runs on the in-process transport, on our SCTP over UDP and
    on kernel SCTP.

    For udp, the default UDP port (9899, which servers bind and clients send to) is
    moved to a free port for the test, so that test runs sharing this machine (or a
    real SCTP-over-UDP service on 9899) cannot collide.
    """
    name: TransportName = request.param
    if name == "udp":
        from trio_sctls.transport.udp import _listener

        # The openers read the default from their own module, at call time.
        monkeypatch.setattr(_listener, "DEFAULT_UDP_PORT", free_udp_port())
    return name


@pytest.fixture(params=list(TLS_VERSIONS))
def tls_version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    """TLS 1.2 and TLS 1.3."""
    return TLS_VERSIONS[request.param]


@dataclass
class Pair:
    """A connected client and server association."""

    client: SecureAssociation
    server: SecureAssociation
    port: int
    #: Set to let the server's handler return (its association then closes).
    release_server: trio.Event = field(default_factory=trio.Event)


Handler = Callable[[SecureAssociation], Awaitable[object]]


@asynccontextmanager
async def serving(
    handler: Handler,
    transport: TransportName = "memory",
    server_ctx: ssl.SSLContext | None = None,
    **server_options: Any,
) -> AsyncIterator[MessageListener]:
    """:func:`serve` ``handler`` on a free port of 127.0.0.1 for the block; yields the
    listener (``.port``). The server stops (cancelled) when the block ends."""
    async with trio.open_nursery() as nursery:
        listener: MessageListener = await nursery.start(
            partial(
                serve,
                handler,
                0,
                ssl_context=server_ctx or server_context(),
                host="127.0.0.1",
                transport=transport,
                **server_options,
            )
        )
        yield listener
        nursery.cancel_scope.cancel()


def connect(
    transport: TransportName,
    port: int,
    client_ctx: ssl.SSLContext | None = None,
    **client_options: Any,
) -> AbstractAsyncContextManager[SecureAssociation]:
    """:func:`open_association` to ``port`` on 127.0.0.1 as the test CA's client of
    :data:`SERVER_NAME` (no session cache unless given)."""
    options = {"session_cache": None, **client_options}
    return open_association(
        "127.0.0.1",
        port,
        ssl_context=client_ctx or client_context(),
        server_hostname=SERVER_NAME,
        transport=transport,
        **options,
    )


@asynccontextmanager
async def association_pair(
    transport: TransportName = "memory",
    *,
    client_ctx: ssl.SSLContext | None = None,
    server_ctx: ssl.SSLContext | None = None,
    client_options: dict[str, Any] | None = None,
    server_options: dict[str, Any] | None = None,
) -> AsyncIterator[Pair]:
    """Serve on a free port, connect to it, and yield both ends.

    On exit the server's handler is released first, so both ends close gracefully
    together, as two well-behaved peers would.
    """
    accepted_send, accepted_receive = trio.open_memory_channel[SecureAssociation](1)
    release = trio.Event()

    async def handler(association: SecureAssociation) -> None:
        await accepted_send.send(association)
        await release.wait()

    with unwrap_single_exception():
        async with (
            serving(handler, transport, server_ctx, **(server_options or {})) as listener,
            connect(transport, listener.port, client_ctx, **(client_options or {})) as client,
        ):
            server = await accepted_receive.receive()
            yield Pair(client, server, listener.port, release)
            release.set()


@asynccontextmanager
async def checked_pair(transport: TransportName, **client_options: Any) -> AsyncIterator[Pair]:
    """An :func:`association_pair` (with ``client_options``) that must leave nothing
    behind (:func:`~tests.hygiene.no_leaks`)."""
    async with no_leaks(), association_pair(transport, client_options=client_options) as pair:
        yield pair


@pytest.fixture
def pair_factory(transport: TransportName) -> Any:
    """``async with pair_factory(**kwargs) as pair`` on the parametrized transport."""
    return partial(association_pair, transport)


def wrap_client(
    transport: MessageTransport, ssl_context: ssl.SSLContext | None = None, **options: Any
) -> AbstractAsyncContextManager[SecureAssociation]:
    """:func:`wrap_transport` as the test CA's client of :data:`SERVER_NAME`, with
    ``options`` for :class:`AssociationOptions` (no session cache unless given)."""
    return wrap_transport(
        transport,
        ssl_context or client_context(),
        AssociationOptions(**{"session_cache": None, **options}),
        server_side=False,
        server_hostname=SERVER_NAME,
    )


def wrap_server(
    transport: MessageTransport, ssl_context: ssl.SSLContext | None = None, **options: Any
) -> AbstractAsyncContextManager[SecureAssociation]:
    """:func:`wrap_transport` as the server with :data:`SERVER_CERT`."""
    return wrap_transport(
        transport,
        ssl_context or server_context(),
        AssociationOptions(**options),
        server_side=True,
    )
