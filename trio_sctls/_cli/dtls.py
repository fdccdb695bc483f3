"""``--dtls``: the ``serve``, ``connect`` and ``demo`` commands over DTLS over SCTP
(RFC 6083) instead of RFC 3436 channels.

Messages instead of byte streams: ``connect`` sends each stdin line as one message on
the stream it names (``3: hello``), with ``--ppid``; whatever arrives is printed as
``[stream 3 ppid 47] hello``. ``serve`` echoes every message on the stream and PPID it
came with (and prints it unless ``--quiet``). ``demo --dtls`` sends ``--bytes`` on every
stream in 16 KiB messages through an echo server and verifies them.

pyOpenSSL and service_identity are imported only here, only with ``--dtls``: the rest of
the command line needs no extra package.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import trio

from .. import TransportOptions
from .._options import TransportName
from ..transport import Message
from .certs import _demo_paths
from .demo import (
    TRANSPORT_DESCRIPTIONS,
    demo_client,
    demo_server_options,
    pattern,
    resolve,
)
from .peer import LineMode, Mode, connected_within, parse_line, status, stdin_lines

if TYPE_CHECKING:
    from OpenSSL import SSL

    from ..dtls import DTLSAssociation, DTLSListener


def server_context(cert: str, key: str | None, cafile: str | None) -> SSL.Context:
    """A DTLS server context from PEM files (``cafile``: require client certificates)."""
    from ..dtls import create_dtls_context

    return create_dtls_context(server_side=True, certfile=cert, keyfile=key, cafile=cafile)


def client_context(cafile: str | None, cert: str | None, key: str | None) -> SSL.Context:
    """A DTLS client context from PEM files (the system's CAs without ``cafile``)."""
    from ..dtls import create_dtls_context

    return create_dtls_context(certfile=cert, keyfile=key, cafile=cafile)


def _print(message: Message, quiet: bool, label: str = "") -> None:
    if quiet:
        return
    text = message.data.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "backslashreplace")
    print(f"[{label}stream {message.stream} ppid {message.ppid}] {text}", flush=True)


def _described(association: DTLSAssociation) -> str:
    return (
        f"{association.version}, {association.cipher}, SCTP-AUTH key "
        f"{association.active_key_id}, {association.outbound_streams} streams"
    )


async def echo_messages(
    association: DTLSAssociation, *, quiet: bool = True, label: str = ""
) -> None:
    """Send every message back on the stream, with the PPID and ordering it came with
    (printing it unless ``quiet``), until the peer closes."""
    async for message in association:
        _print(message, quiet, label)
        await association.send_message(
            message.data, stream=message.stream, ppid=message.ppid, unordered=message.unordered
        )


async def start_server(
    nursery: trio.Nursery,
    handler: Callable[[DTLSAssociation], Awaitable[object]],
    port: int,
    ssl_context: SSL.Context,
    hosts: Sequence[str] | str | None,
    transport_options: TransportOptions,
) -> DTLSListener:
    """``serve_dtls`` in ``nursery``; returns its listener once it listens."""
    from ..dtls import serve_dtls

    listener: DTLSListener = await nursery.start(
        partial(
            serve_dtls,
            handler,
            port,
            ssl_context=ssl_context,
            host=hosts,
            transport_options=transport_options,
        )
    )
    return listener


async def run_server(
    *,
    port: int,
    hosts: Sequence[str] | None,
    ssl_context: SSL.Context,
    transport_options: TransportOptions,
    quiet: bool,
) -> None:
    """Serve DTLS over SCTP until cancelled: echo every message."""
    count = 0

    async def echo(association: DTLSAssociation) -> None:
        nonlocal count
        count += 1
        label = f"#{count} "
        peer = association.transport.peer_addresses
        status(f"{label}association from {peer}: {_described(association)}")
        await echo_messages(association, quiet=quiet, label=label)

    async with trio.open_nursery() as nursery:
        listener = await start_server(
            nursery, echo, port, ssl_context, list(hosts) if hosts else None, transport_options
        )
        udp = f" over UDP port {listener.udp_port}" if listener.udp_port is not None else ""
        status(
            f"listening on SCTP port {listener.port}{udp}; DTLS over SCTP (RFC 6083), "
            "echo mode; Ctrl-C stops"
        )


async def run_client(
    *,
    hosts: Sequence[str],
    port: int,
    ssl_context: SSL.Context,
    server_hostname: str | None,
    transport_options: TransportOptions,
    ppid: int,
    mode: Mode,
    lines: LineMode,
    connect_timeout: float,
    linger: float,
) -> None:
    """Connect; send stdin lines as messages (or echo), print what arrives.

    Raises:
        ConnectTimeoutError: no association within ``connect_timeout`` seconds.
    """
    from ..dtls import open_dtls_association

    failure = (
        f"no DTLS association with {', '.join(hosts)} port {port} within "
        f"{connect_timeout:g} s (see --connect-timeout)"
    )
    opening = open_dtls_association(
        list(hosts),
        port,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        transport_options=transport_options,
    )
    async with connected_within(opening, connect_timeout, failure) as association:
        status(f"connected ({association.transport.kind}): {_described(association)}")
        async with trio.open_nursery() as nursery:

            async def printer() -> None:
                async for message in association:
                    _print(message, lines.quiet)
                    if mode == "echo":
                        await association.send_message(
                            message.data, stream=message.stream, ppid=message.ppid
                        )
                nursery.cancel_scope.cancel()

            nursery.start_soon(printer)
            if mode == "lines":
                async for line in stdin_lines():
                    stream, data = parse_line(line, lines)
                    try:
                        await association.send_message(data, stream=stream, ppid=ppid)
                    except ValueError as exc:
                        status(f"line not sent: {exc}")
                await trio.sleep(linger)
                nursery.cancel_scope.cancel()


@dataclass
class _Row:
    stream: int
    messages: int = 0
    seconds: float = 0.0
    verified: bool = False


async def run_demo(*, streams: int, size: int, transport: TransportName, port: int) -> bool:
    """An echo server and a client on loopback over DTLS over SCTP: ``size`` bytes on
    every stream in 16 KiB messages, verified; a table per stream. Returns whether
    every byte came back."""
    from ..dtls import MAX_PLAINTEXT, create_dtls_context

    concrete = resolve(transport)
    status(f"transport: {TRANSPORT_DESCRIPTIONS[concrete]}, DTLS over SCTP (RFC 6083)")
    options = demo_server_options(concrete, streams)
    with _demo_paths("server.pem", "server.key", "ca.pem") as (cert, key, ca):
        server_context = create_dtls_context(server_side=True, certfile=cert, keyfile=key)
        client_ctx = create_dtls_context(cafile=ca)
    from ..dtls import open_dtls_association

    rows = [_Row(stream) for stream in range(streams)]
    async with trio.open_nursery() as nursery:
        listener = await start_server(
            nursery, echo_messages, port, server_context, "127.0.0.1", options
        )
        started = time.perf_counter()
        async with demo_client(open_dtls_association, listener, client_ctx, options) as association:
            status(f"handshake in {time.perf_counter() - started:.3f} s: {_described(association)}")
            expected = {row.stream: pattern(row.stream, size) for row in rows}
            received = {row.stream: bytearray() for row in rows}

            async def send(row: _Row) -> None:
                data = expected[row.stream]
                for offset in range(0, len(data), MAX_PLAINTEXT):
                    await association.send_message(
                        data[offset : offset + MAX_PLAINTEXT], stream=row.stream, ppid=47
                    )
                    row.messages += 1

            begun = time.perf_counter()
            async with trio.open_nursery() as senders:
                for row in rows:
                    senders.start_soon(send, row)
                remaining = sum(len(data) for data in expected.values())
                while remaining:
                    message = await association.receive()
                    received[message.stream] += message.data
                    remaining -= len(message.data)
                    if len(received[message.stream]) == size:
                        rows[message.stream].seconds = time.perf_counter() - begun
            for row in rows:
                row.verified = bytes(received[row.stream]) == expected[row.stream]
        nursery.cancel_scope.cancel()
    print(f"{'stream':>6} {'messages':>8} {'bytes':>10} {'seconds':>8} {'MiB/s':>8}  verified")
    for row in rows:
        rate = size / row.seconds / 2**20 if row.seconds else 0.0
        print(
            f"{row.stream:>6} {row.messages:>8} {size:>10} {row.seconds:>8.3f} {rate:>8.1f}"
            f"  {'yes' if row.verified else 'NO'}"
        )
    return all(row.verified for row in rows)
