"""DTLS over SCTP (RFC 6083) against OpenSSL's own implementation, in the VM.

OpenSSL is the one other DTLS-over-SCTP implementation at hand, but only when built with
``enable-sctp``, which Debian's is not: ``scripts/setup-openssl-sctp`` builds one from
Debian's source into a cache outside the repository (CI runs it first; see the README).
The tests find its binary through ``TRIO_SCTLS_OPENSSL`` or in that cache, and fail,
never skip, without it: like every kernel test, they are mandatory coverage.

OpenSSL's DTLS/SCTP needs ``net.sctp.auth_enable=1`` when its sockets are created (it
checks that SCTP-AUTH is on); ours turn it on per socket. Each exchange checks the bytes
both ways, on native kernel SCTP and, through Linux's SCTP over UDP, on our udp
transport. OpenSSL's exporter label quirk (``-sctp_label_bug``: the label with its NUL
byte) is met with ``DTLSOptions(label_bug=True)``, and shown to break the association
without it. Every OpenSSL process is killed on the way out of its block.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_sctls import HandshakeError
from trio_sctls.dtls import (
    DTLSAssociation,
    DTLSListener,
    DTLSOptions,
    create_dtls_context,
    serve_dtls,
)

from .conftest import SERVER_NAME
from .sctp.kernel_udp import free_udp_port, kernel_auth_enabled, kernel_sctp_over_udp
from .test_cli import STEP, Lines, running_command
from .test_dtls import pems
from .test_dtls_wire import connect as dtls_client

pytestmark = pytest.mark.kernel

__all__ = ["pems"]  # the fixture, re-used

#: Where scripts/setup-openssl-sctp builds (the same default as the script's).
CACHE_NAME = "trio-sctls-openssl-sctp"
ENV_VAR = "TRIO_SCTLS_OPENSSL"


def find_openssl() -> Path | None:
    """The ``enable-sctp`` OpenSSL: ``$TRIO_SCTLS_OPENSSL``, else the newest finished
    build in the cache of scripts/setup-openssl-sctp."""
    if explicit := os.environ.get(ENV_VAR):
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / CACHE_NAME
    builds = sorted(
        (marker.parent for marker in base.glob("*/.built")),
        key=lambda p: [int(n) if n.isdigit() else n for n in re.split(r"(\d+)", p.name)],
    )
    return builds[-1] / "bin" / "openssl" if builds else None


@pytest.fixture(scope="module")
def openssl() -> Path:
    """The binary, or a failure that says how to build it."""
    path = find_openssl()
    if path is None or not os.access(path, os.X_OK):
        pytest.fail(
            f"no OpenSSL built with enable-sctp ({ENV_VAR}={path}): run "
            "scripts/setup-openssl-sctp as root (it builds one from Debian's source in "
            "about 6 minutes), or point TRIO_SCTLS_OPENSSL at such a binary"
        )
    return path


@dataclass
class Transport:
    """How our end reaches OpenSSL's kernel socket: natively, or our SCTP over UDP
    meeting the kernel's (``net.sctp.udp_port`` / ``encap_port``)."""

    name: str
    keywords: dict[str, object]


@pytest.fixture(params=["kernel", "udp"])
def route(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """SCTP-AUTH on for OpenSSL's sockets; our kernel transport, and the kernel's SCTP
    over UDP for our udp transport. (The kernel client once sent its last flight twice
    when OpenSSL's DTLS timer expired in the slow VM, and ``s_server`` crashed on the
    repeat; the engine now drops OpenSSL's retransmissions, RFC 6083 section 3.5.)"""
    with ExitStack() as stack:
        stack.enter_context(kernel_auth_enabled(1))
        if request.param == "kernel":
            yield Transport("kernel", {"transport": "kernel"})
            return
        kernel_port, our_port = free_udp_port(), free_udp_port()
        stack.enter_context(kernel_sctp_over_udp(kernel_port, our_port))
        yield Transport("udp", {"transport": "udp", "remote_udp_port": kernel_port})


@dataclass
class OpenSSLPeer:
    """A running ``openssl s_server`` or ``s_client``: its stdin, and its output
    (stdout and stderr together) line by line."""

    process: trio.Process
    lines: Lines

    async def type(self, text: bytes) -> None:
        """Write to its stdin: each write is one record to the peer."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text)


@asynccontextmanager
async def openssl_peer(argv: Sequence[str | os.PathLike[str]]) -> AsyncIterator[OpenSSLPeer]:
    """Run ``argv``; kill it on the way out."""
    async with running_command(
        [os.fspath(arg) for arg in argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        assert process.stdout is not None
        yield OpenSSLPeer(process, Lines(process.stdout))


@asynccontextmanager
async def s_server(
    openssl: Path, pems: dict[str, Path], *extra: str
) -> AsyncIterator[tuple[OpenSSLPeer, int]]:
    """``openssl s_server -dtls -sctp`` on a free port of 127.0.0.1, with the suite's
    server certificate; yields it and its port. Not ``-quiet``: its stdin then takes
    commands (a line ``r`` renegotiates), so test lines start with other letters."""
    argv: list[str | os.PathLike[str]] = [openssl, "s_server", "-dtls", "-sctp"]
    argv += ["-accept", "127.0.0.1:0"]
    argv += ["-cert", pems["server"], "-key", pems["server"], "-naccept", "1", *extra]
    async with openssl_peer(argv) as server:
        match = await server.lines.until(r"^ACCEPT .*:(\d+)$")
        yield server, int(match[1])


def connect(
    port: int, pems: dict[str, Path], transport: Transport, options: DTLSOptions | None = None
) -> AbstractAsyncContextManager[DTLSAssociation]:
    return dtls_client(port, pems, options=options, **transport.keywords)


async def from_openssl(association: DTLSAssociation, server: OpenSSLPeer, tag: str) -> None:
    """A line typed into ``s_server`` arrives as one message on stream 0, byte for byte."""
    theirs = f"hello from openssl {tag}\n".encode()
    await server.type(theirs)
    with trio.fail_after(STEP):
        message = await association.receive()
    assert message.data == theirs
    assert message.stream == 0


async def to_openssl(association: DTLSAssociation, server: OpenSSLPeer, tag: str) -> None:
    """Our message, on a non-zero stream with a PPID (OpenSSL reads any stream), comes
    out of ``s_server`` byte for byte."""
    ours = f"hello from trio-sctls {tag}"
    await association.send_message(ours.encode() + b"\n", stream=3, ppid=47)
    await server.lines.until(f"^{re.escape(ours)}$")


async def test_our_client_completes_the_handshake_with_openssl_s_server_and_receives(
    openssl: Path, pems: dict[str, Path], route: Transport
) -> None:
    async with (
        s_server(openssl, pems) as (server, port),
        connect(port, pems, route) as association,
    ):
        assert association.version == "DTLSv1.2"
        assert association.active_key_id == 1
        await from_openssl(association, server, "first")
        await to_openssl(association, server, "first")
        await from_openssl(association, server, "second")


async def test_openssl_s_client_exchanges_messages_with_our_server(
    openssl: Path, pems: dict[str, Path], nursery: trio.Nursery
) -> None:
    received: list[tuple[bytes, int]] = []
    ended = trio.Event()

    async def echo(association: DTLSAssociation) -> None:
        try:
            async for message in association:
                received.append((message.data, message.stream))
                await association.send_message(b"echo: " + message.data, stream=message.stream)
        finally:
            ended.set()

    with kernel_auth_enabled(1):
        listener: DTLSListener = await nursery.start(
            partial(
                serve_dtls,
                echo,
                0,
                ssl_context=create_dtls_context(server_side=True, certfile=pems["server"]),
                host="127.0.0.1",
                transport="kernel",
            )
        )
        argv: list[str | os.PathLike[str]] = [openssl, "s_client", "-dtls", "-sctp"]
        argv += ["-connect", f"127.0.0.1:{listener.port}", "-CAfile", pems["ca"]]
        argv += ["-verify_return_error", "-verify_hostname", SERVER_NAME]
        argv += ["-servername", SERVER_NAME, "-no_ign_eof"]
        async with openssl_peer(argv) as client:
            await client.lines.until(r"Verify return code: 0 \(ok\)")
            await client.type(b"hello from openssl s_client\n")
            await client.lines.until(r"^echo: hello from openssl s_client$")
            await client.type(b"and a second message\n")
            await client.lines.until(r"^echo: and a second message$")
            assert client.process.stdin is not None
            await client.process.stdin.aclose()  # s_client sends close_notify and exits
            with trio.fail_after(STEP):
                assert await client.process.wait() == 0
        with trio.fail_after(STEP):
            await ended.wait()
    assert received == [
        (b"hello from openssl s_client\n", 0),
        (b"and a second message\n", 0),
    ]
    nursery.cancel_scope.cancel()


async def test_openssl_label_bug_needs_our_label_bug_option(
    openssl: Path, pems: dict[str, Path], route: Transport
) -> None:
    """``-sctp_label_bug`` exports the SCTP-AUTH key with ``EXPORTER_DTLS_OVER_SCTP\\0``:
    with the same quirk we interoperate; with the RFC's label the keys differ, our
    kernel drops OpenSSL's Finished (it finishes second and signs it with its new key),
    and our handshake times out."""
    quirk = DTLSOptions(label_bug=True)
    with kernel_auth_enabled(1):
        async with (
            s_server(openssl, pems, "-sctp_label_bug") as (server, port),
            connect(port, pems, route, quirk) as association,
        ):
            await from_openssl(association, server, "with the label bug")
        async with s_server(openssl, pems, "-sctp_label_bug") as (server, port):
            rfc_label = DTLSOptions(handshake_timeout=8.0)
            with pytest.raises(HandshakeError, match="no DTLS handshake within"):
                async with connect(port, pems, route, rfc_label):
                    pass  # pragma: no cover
