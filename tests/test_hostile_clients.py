"""No client can stop a server: the README's handler against hostile clients.

One server per transport, with the handler of the README's server example (one nursery,
an echo task per channel), faces one hostile client after another: an ABORT right after
set-up, plain SCTP with no TLS (closed, then aborted), junk on the TLS streams, a client
that does not trust the server's CA, one that expects another host name, one cancelled
1 ms in, one whose process is killed mid-transfer (udp and kernel: a subprocess), and a
plain association that never speaks (closed by the server's handshake timeout). After
each, a good client gets its echo on every channel; at the end 16 good clients at once
do. The autouse fixture in conftest fails the test if the library logged at ERROR.

The hostile clients are plain functions of a :class:`Target`, so that the mixed soak
(``tests/soak/mixed.py``) draws from the same cases.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import trio_sctls
from trio_sctls import HandshakeError, SecureAssociation
from trio_sctls._api import TransportName

from .conftest import IN_VM, SERVER_NAME, client_context, serving

#: Streams the clients ask for: enough to show every channel echoes, few enough for the
#: VM, where Python and OpenSSL run many times slower.
STREAMS = 4
#: The server's handshake timeout here: short, so that the association that never
#: speaks is closed soon, long enough for 16 clients' handshakes at once in the VM.
HANDSHAKE_TIMEOUT = 8.0 if IN_VM else 2.0
#: Seconds any one step may take before the test fails (not a measurement).
STEP_LIMIT = 60.0 if IN_VM else 20.0

ROOT = Path(__file__).resolve().parent.parent


async def echo_each_channel(association: trio_sctls.SecureAssociation) -> None:
    """The README's server handler: an echo task per channel in one nursery."""

    async def echo(channel: trio_sctls.Channel) -> None:
        while data := await channel.receive_some():
            await channel.send_all(data)
        await channel.aclose()

    async with trio.open_nursery() as nursery:
        for channel in association.channels:
            nursery.start_soon(echo, channel)


@dataclass
class Target:
    """Where the server listens, and how a client reaches it."""

    transport: TransportName
    port: int
    client_ctx: ssl.SSLContext = field(default_factory=client_context)
    server_name: str = SERVER_NAME
    udp_port: int | None = None

    def keywords(self) -> dict[str, Any]:
        """Transport keyword arguments of a client."""
        found: dict[str, Any] = {
            "transport": self.transport,
            "outbound_streams": STREAMS,
            "max_inbound_streams": STREAMS,
        }
        if self.udp_port is not None:
            found["remote_udp_port"] = self.udp_port
        return found

    def secure(
        self, *, client_ctx: ssl.SSLContext | None = None, server_name: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[SecureAssociation]:
        """A TLS client of the server."""
        return trio_sctls.open_association(
            "127.0.0.1",
            self.port,
            ssl_context=client_ctx or self.client_ctx,
            server_hostname=server_name or self.server_name,
            session_cache=None,
            **self.keywords(),
        )

    def plain(self) -> contextlib.AbstractAsyncContextManager[trio_sctls.MessageTransport]:
        """A plain SCTP client of the server."""
        return trio_sctls.open_transport("127.0.0.1", self.port, **self.keywords())


async def good_client(target: Target, payload: bytes = b"ping") -> int:
    """Open an association, check the echo of a distinct message on every channel at
    once, close it; returns the bytes checked."""
    async with target.secure() as association:
        assert len(association.channels) == STREAMS

        async def check(stream: int) -> None:
            channel = association.channels[stream]
            message = b"%s on stream %d" % (payload, stream)
            await channel.send_all(message)
            got = b""
            while len(got) < len(message):
                data = await channel.receive_some()
                assert data, f"stream {stream}: end of stream before the echo"
                got += data
            assert got == message

        async with trio.open_nursery() as nursery:
            for stream in range(STREAMS):
                nursery.start_soon(check, stream)
    return STREAMS * (len(payload) + len(b" on stream 0"))


async def _until_ended(sctp: trio_sctls.MessageTransport) -> None:
    """Read until the server ends the association (it must, on its own)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.EndOfChannel):
        while True:
            await sctp.receive()


async def abort_after_open(target: Target) -> None:
    """An SCTP ABORT as soon as the association is up."""
    async with target.plain() as sctp:
        sctp.abort("hostile client")


async def plain_then_close(target: Target) -> None:
    """Plain SCTP, no TLS: a message on a TLS stream, then a graceful close."""
    async with target.plain() as sctp:
        with contextlib.suppress(trio.BrokenResourceError):
            await sctp.send_message(b"HELO plain text\r\n", stream=0, ppid=0)
            await sctp.aclose()


async def plain_then_abort(target: Target) -> None:
    """Plain SCTP, no TLS: a message on a TLS stream, then an ABORT."""
    async with target.plain() as sctp:
        with contextlib.suppress(trio.BrokenResourceError):
            await sctp.send_message(b"HELO plain text\r\n", stream=1, ppid=0)
        sctp.abort("hostile client")


async def junk_on_tls_streams(target: Target) -> None:
    """Bytes shaped like TLS records but not TLS, on every stream; the server aborts."""
    async with target.plain() as sctp:
        with contextlib.suppress(trio.BrokenResourceError):
            for stream in range(sctp.outbound_streams):
                await sctp.send_message(b"\x16\x03\x01\x00\x08junk" + bytes(4), stream=stream)
        await _until_ended(sctp)


def _untrusting_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    trustme.CA(key_type=trustme.KeyType.ECDSA).configure_trust(context)
    return context


async def untrusted_ca(target: Target) -> None:
    """A client that does not trust the server's CA: its handshake fails."""
    with pytest.raises(HandshakeError):
        async with target.secure(client_ctx=_untrusting_context()):
            pass  # pragma: no cover - the handshake fails


async def wrong_host_name(target: Target) -> None:
    """A client that expects another name in the server's certificate."""
    with pytest.raises(HandshakeError):
        async with target.secure(server_name="elsewhere.example"):
            pass  # pragma: no cover - the handshake fails


async def cancelled_1ms_in(target: Target) -> None:
    """A client cancelled 1 ms after it started, wherever it was."""
    with trio.move_on_after(0.001):
        await good_client(target)


async def never_speaks(target: Target) -> None:
    """A plain association that sends nothing: the server's handshake timeout closes it
    (not much later than the timeout)."""
    async with target.plain() as sctp:
        started = trio.current_time()
        with trio.fail_after(HANDSHAKE_TIMEOUT + STEP_LIMIT):
            await _until_ended(sctp)
        assert trio.current_time() - started >= HANDSHAKE_TIMEOUT * 0.9


#: A client in a process of its own: sends on every channel until killed.
_CHILD = """
import ssl, sys, trio, trio_sctls
transport, port, udp_port, cafile, name = sys.argv[1:6]
async def main():
    kw = {"remote_udp_port": int(udp_port)} if udp_port != "-" else {}
    ctx = ssl.create_default_context(cafile=cafile)
    async with trio_sctls.open_association(
        "127.0.0.1", int(port), ssl_context=ctx, server_hostname=name, transport=transport,
        outbound_streams=STREAMS, max_inbound_streams=STREAMS, session_cache=None, **kw
    ) as association:
        async def flood(channel):
            while True:
                await channel.send_all(b"x" * 4096)
                await channel.receive_some()
        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(flood, channel)
            await trio.sleep(0.05)
            print("transferring", flush=True)
trio.run(main)
""".replace("STREAMS", str(STREAMS))


async def killed_mid_transfer(target: Target, cafile: Path) -> None:
    """A client process killed (SIGKILL) while it sends on every channel."""
    udp_port = target.udp_port
    if target.transport == "udp" and udp_port is None:
        from trio_sctls.transport.udp import _listener

        udp_port = _listener.DEFAULT_UDP_PORT
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [target.transport, str(target.port), str(udp_port or "-"), str(cafile)]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", _CHILD, *args, target.server_name],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(STEP_LIMIT):
            seen = b""
            while b"transferring" not in seen:
                data = await process.stdout.receive_some()
                assert data, "the child client ended before transferring"
                seen += data
    finally:
        process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


Case = Callable[[Target], Awaitable[None]]

#: The hostile clients every transport faces, in order (the killed process is added
#: where a process of its own can reach the server: not on memory).
CASES: list[Case] = [
    abort_after_open,
    plain_then_close,
    plain_then_abort,
    junk_on_tls_streams,
    untrusted_ca,
    wrong_host_name,
    cancelled_1ms_in,
    never_speaks,
]


async def test_no_client_stops_the_server(transport: TransportName, tmp_path: Path) -> None:
    from .conftest import CA

    cafile = tmp_path / "ca.pem"
    CA.cert_pem.write_to_path(str(cafile))
    cases: list[tuple[str, Case]] = [(case.__name__, case) for case in CASES]
    if transport != "memory":

        async def killed(target: Target) -> None:
            await killed_mid_transfer(target, cafile)

        cases.insert(6, ("killed_mid_transfer", killed))
    async with serving(
        echo_each_channel,
        transport,
        outbound_streams=STREAMS,
        max_inbound_streams=STREAMS,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        shutdown_timeout=1.0,
    ) as listener:
        target = Target(transport, listener.port)
        for name, case in cases:
            with trio.fail_after(STEP_LIMIT):
                await case(target)
            with trio.fail_after(STEP_LIMIT):
                await good_client(target, name.encode())
        with trio.fail_after(STEP_LIMIT * 2):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(good_client, target, b"client %d" % i)
