"""``trio-sctls demo``: a server and a client on loopback, TLS on every stream of one
SCTP association, traffic on all channels at once, verified, and a table per channel.

It runs over real SCTP everywhere: the kernel's where it has SCTP, else our own SCTP
over UDP (RFC 6951). Its certificates are the packaged demo ones (see :mod:`.certs`),
so it needs nothing beyond ``pip install trio-sctls``.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, TypeVar

import trio

from .. import SecureAssociation, kernel_sctp_available, open_association, serve
from .._listeners import ListenerPorts
from .._options import TransportName, TransportOptions
from .certs import DEMO_SERVER_NAME, demo_contexts

_Association = TypeVar("_Association")

#: How the demo names each transport.
TRANSPORT_DESCRIPTIONS = {
    "kernel": "kernel (Linux kernel SCTP)",
    "udp": "udp (trio-sctls' own SCTP over UDP, RFC 6951)",
    "memory": "memory (in-process, both ends in this process; not real SCTP)",
}


@dataclass
class Traffic:
    """What one channel carried in the demo."""

    stream: int
    sent: int = 0
    seconds: float = 0.0
    verified: bool = False


async def echo_handler(association: SecureAssociation) -> None:
    """Echo every channel until the client closes it."""

    async def echo(channel: trio.SSLStream[trio.abc.Stream]) -> None:
        while data := await channel.receive_some():
            await channel.send_all(data)
        await channel.aclose()

    async with trio.open_nursery() as nursery:
        for channel in association.channels:
            nursery.start_soon(echo, channel)


def pattern(stream: int, size: int) -> bytes:
    """Deterministic, stream-specific bytes, so crossed streams would be caught."""
    seed = hashlib.sha256(b"stream %d" % stream).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def exchange(channel: trio.SSLStream[trio.abc.Stream], traffic: Traffic, size: int) -> None:
    """Send ``size`` bytes on one channel and check the echo."""
    payload = pattern(traffic.stream, size)
    started = time.perf_counter()
    received = bytearray()

    async def sender() -> None:
        view = memoryview(payload)
        for offset in range(0, size, 16384):
            await channel.send_all(view[offset : offset + 16384])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(received) < size:
            chunk = await channel.receive_some()
            if not chunk:
                break
            received += chunk
    traffic.seconds = time.perf_counter() - started
    traffic.sent = size
    traffic.verified = bytes(received) == payload


async def run_demo(
    *,
    streams: int,
    size: int,
    transport: TransportName,
    handshake: str,
    version: ssl.TLSVersion | None,
    port: int,
    keylog: str | None = None,
) -> bool:
    """Run the demo; print the table; return whether every channel verified."""
    kind = resolve(transport)
    print(f"transport: {TRANSPORT_DESCRIPTIONS[kind]}")
    if transport == "auto" and kind == "udp":
        print("  (this kernel has no SCTP: transport='auto' chose SCTP over UDP)")
    print(f"streams: {streams}; handshake: {handshake}")
    server_ctx, client_ctx = demo_contexts(version, keylog=keylog)
    server_options = demo_server_options(kind, streams)
    ok = True
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                echo_handler,
                port,
                ssl_context=server_ctx,
                host="127.0.0.1",
                transport_options=server_options,
            )
        )
        if listener.udp_port is not None:
            udp_port = listener.udp_port
            print(f"SCTP port {listener.port}, carried in UDP datagrams to 127.0.0.1:{udp_port}")
        started = time.perf_counter()
        async with demo_client(
            open_association,
            listener,
            client_ctx,
            server_options,
            handshake=handshake,
            session_cache=None,
        ) as association:
            ready = time.perf_counter() - started
            traffic = [Traffic(i) for i in range(len(association.channels))]
            transfer_started = time.perf_counter()
            async with trio.open_nursery() as exchanges:
                for channel, record in zip(association.channels, traffic, strict=True):
                    exchanges.start_soon(exchange, channel, record, size)
            elapsed = time.perf_counter() - transfer_started
            print(
                f"association ready in {ready * 1000:.1f} ms: "
                f"{association.outbound_streams} out / {association.inbound_streams} in, "
                f"{len(association.channels)} TLS channels"
            )
            header = (
                f"{'stream':>6}  {'handshake':>10}  {'resumed':>7}  {'version':<8} "
                f"{'cipher':<30} {'bytes':>9}  {'MiB/s':>7}  verified"
            )
            print(header)
            print("-" * len(header))
            for record in traffic:
                info = association.channel_info(record.stream)
                hs = f"{info.handshake_seconds * 1000:.1f} ms" if info.handshake_seconds else "-"
                rate = record.sent * 2 / record.seconds / 2**20 if record.seconds else 0.0
                ok = ok and record.verified
                print(
                    f"{record.stream:>6}  {hs:>10}  {'yes' if info.resumed else 'no':>7}  "
                    f"{info.version or '-':<8} {info.cipher or '-':<30} {record.sent:>9}  "
                    f"{rate:>7.1f}  {'ok' if record.verified else 'MISMATCH'}"
                )
            total = sum(record.sent for record in traffic) * 2
            print(
                f"total: {total} bytes echoed in {elapsed:.3f} s "
                f"({total / elapsed / 2**20:.1f} MiB/s aggregate)"
            )
        nursery.cancel_scope.cancel()
    print("all channels verified" if ok else "VERIFICATION FAILED")
    return ok


def demo_server_options(kind: Literal["kernel", "udp", "memory"], streams: int) -> TransportOptions:
    """The transport options of a loopback demo's server: ``streams`` each way, and
    over UDP an ephemeral UDP port, so that a demo never clashes with a real
    SCTP-over-UDP service on the standard port 9899."""
    return TransportOptions(
        transport=kind,
        outbound_streams=streams,
        max_inbound_streams=streams,
        udp_port=0 if kind == "udp" else None,
    )


def demo_client(
    open_client: Callable[..., AbstractAsyncContextManager[_Association]],
    listener: ListenerPorts,
    ssl_context: object,
    server_options: TransportOptions,
    **keywords: Any,
) -> AbstractAsyncContextManager[_Association]:
    """Open (with ``open_client``, TLS's or DTLS's) the demo's client association to
    ``listener`` on loopback, with the server's transport options aimed at the UDP port
    it got, verifying the demo server's name."""
    return open_client(
        "127.0.0.1",
        listener.port,
        ssl_context=ssl_context,
        server_hostname=DEMO_SERVER_NAME,
        transport_options=replace(server_options, udp_port=None, remote_udp_port=listener.udp_port),
        **keywords,
    )


def resolve(transport: TransportName) -> Literal["kernel", "udp", "memory"]:
    """What ``transport="auto"`` means on this machine (kernel SCTP where the kernel has
    it, else SCTP over UDP)."""
    if transport == "auto":
        return "kernel" if kernel_sctp_available() else "udp"
    return transport


def parse_size(text: str) -> int:
    """``64KiB``, ``1MiB``, ``1000``..."""
    units = {"kib": 1024, "mib": 1024**2, "k": 1000, "m": 1000**2}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)
