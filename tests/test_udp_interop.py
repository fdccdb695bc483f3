"""Our SCTP over UDP against Linux's own SCTP over UDP (RFC 6951), in both directions.

Marked ``kernel``: where this machine's kernel lacks SCTP these run inside the QEMU VM
(tests/test_kernel_vm.py), where the Linux kernel is a real, independent SCTP peer. The
kernel side uses our kernel transport (``transport="kernel"``); the kernel itself does
the UDP encapsulation once ``net.sctp.udp_port`` (the UDP port it listens on) and
``net.sctp.encap_port`` (the UDP port it sends to) are set. Both are global, so they
are restored after each test. A kernel server answers the UDP port our client's INIT
came from (an ephemeral one); a kernel client sends to ``encap_port``, where our server
listens.

Each direction runs plain SCTP messaging first, then the full TLS association with 8
streams. Kept small: inside the VM Python is ~14x and AES ~190x slower than here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_sctls import (
    MessageTransport,
    SecureAssociation,
    open_association,
    open_sctp_association,
    serve,
    serve_sctp,
)
from trio_sctls.transport import Message

from .conftest import SERVER_NAME, client_context, server_context
from .test_udp_transport import echo

pytestmark = pytest.mark.kernel

SYSCTL = Path("/proc/sys/net/sctp")
STREAMS = 8


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def kernel_udp() -> Iterator[tuple[int, int]]:
    """``(kernel_port, our_port)``: the kernel receives SCTP over UDP on ``kernel_port``
    and sends it to ``our_port`` (where our server listens)."""
    if not (SYSCTL / "encap_port").exists() or not os.access(SYSCTL / "udp_port", os.W_OK):
        pytest.skip("needs net.sctp.udp_port / encap_port (Linux >= 5.11) and root")
    kernel_port, our_port = _free_udp_port(), _free_udp_port()
    names = ("udp_port", "encap_port", "reconf_enable")
    saved = {n: (SYSCTL / n).read_text() for n in names if (SYSCTL / n).exists()}
    try:
        (SYSCTL / "udp_port").write_text(str(kernel_port))
        (SYSCTL / "encap_port").write_text(str(our_port))
        if "reconf_enable" in saved:
            (SYSCTL / "reconf_enable").write_text("1")
        yield kernel_port, our_port
    finally:
        for name, value in saved.items():
            (SYSCTL / name).write_text(value)


async def exchange_plain(sctp: MessageTransport) -> None:
    """One message per stream (stream id and PPID must survive), then a large one."""
    assert sctp.outbound_streams == sctp.inbound_streams == STREAMS
    for stream in range(STREAMS):
        await sctp.send_message(b"hello on %d" % stream, stream=stream, ppid=46 + stream)
    echoed = []
    for _ in range(STREAMS):
        item = await sctp.receive()
        assert isinstance(item, Message)
        echoed.append(item)
    assert sorted(echoed, key=lambda m: m.stream) == [
        Message(b"hello on %d" % s, s, 46 + s) for s in range(STREAMS)
    ]
    big = os.urandom(100 * 1024)  # fragmented one way, reassembled the other
    await sctp.send_message(big, stream=3)
    item = await sctp.receive()
    assert isinstance(item, Message) and item.data == big and item.stream == 3


async def echo_channels(association: SecureAssociation) -> None:
    """Echo every TLS channel until the client closes it."""

    async def one(channel: trio.SSLStream[trio.abc.Stream]) -> None:
        while data := await channel.receive_some():
            await channel.send_all(data)

    async with trio.open_nursery() as nursery:
        for channel in association.channels:
            nursery.start_soon(one, channel)


async def exchange_tls(association: SecureAssociation) -> None:
    """Something different on every channel, echoed back."""
    assert len(association.channels) == STREAMS

    async def one(stream: int) -> None:
        channel = association.channels[stream]
        payload = b"channel %d " % stream * 300
        await channel.send_all(payload)
        got = b""
        while len(got) < len(payload):
            got += await channel.receive_some()
        assert got == payload

    async with trio.open_nursery() as nursery:
        for stream in range(STREAMS):
            nursery.start_soon(one, stream)
    assert all(association.channel_info(i).version for i in range(STREAMS))


async def test_our_udp_client_to_a_kernel_server_plain(kernel_udp: tuple[int, int]) -> None:
    kernel_port, _ = kernel_udp
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve_sctp,
                echo,
                0,
                host="127.0.0.1",
                transport="kernel",
                outbound_streams=STREAMS,
                max_inbound_streams=STREAMS,
            )
        )
        async with open_sctp_association(
            "127.0.0.1",
            listener.port,
            transport="udp",
            remote_udp_port=kernel_port,
            outbound_streams=STREAMS,
            max_inbound_streams=STREAMS,
        ) as sctp:
            await exchange_plain(sctp)
        nursery.cancel_scope.cancel()


async def test_a_kernel_client_to_our_udp_server_plain(kernel_udp: tuple[int, int]) -> None:
    _, our_port = kernel_udp
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve_sctp,
                echo,
                0,
                host="127.0.0.1",
                transport="udp",
                udp_port=our_port,
                outbound_streams=STREAMS,
                max_inbound_streams=STREAMS,
            )
        )
        async with open_sctp_association(
            "127.0.0.1",
            listener.port,
            transport="kernel",
            outbound_streams=STREAMS,
            max_inbound_streams=STREAMS,
        ) as sctp:
            await exchange_plain(sctp)
        nursery.cancel_scope.cancel()


async def test_our_udp_client_to_a_kernel_server_tls(kernel_udp: tuple[int, int]) -> None:
    kernel_port, _ = kernel_udp
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                echo_channels,
                0,
                ssl_context=server_context(),
                host="127.0.0.1",
                transport="kernel",
                outbound_streams=STREAMS,
                max_inbound_streams=STREAMS,
            )
        )
        async with open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_context(),
            server_hostname=SERVER_NAME,
            transport="udp",
            remote_udp_port=kernel_port,
            session_cache=None,
            handshake_timeout=120,
            outbound_streams=STREAMS,
            max_inbound_streams=STREAMS,
        ) as association:
            await exchange_tls(association)
        nursery.cancel_scope.cancel()


async def test_a_kernel_client_to_our_udp_server_tls(kernel_udp: tuple[int, int]) -> None:
    _, our_port = kernel_udp
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                echo_channels,
                0,
                ssl_context=server_context(),
                host="127.0.0.1",
                transport="udp",
                udp_port=our_port,
                outbound_streams=STREAMS,
                max_inbound_streams=STREAMS,
            )
        )
        async with open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_context(),
            server_hostname=SERVER_NAME,
            transport="kernel",
            session_cache=None,
            handshake_timeout=120,
            outbound_streams=STREAMS,
            max_inbound_streams=STREAMS,
        ) as association:
            await exchange_tls(association)
        nursery.cancel_scope.cancel()
