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
from collections.abc import Iterator
from functools import partial
from typing import Any

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
from .sctp.kernel_udp import free_udp_port, kernel_sctp_over_udp
from .test_udp_transport import echo

pytestmark = pytest.mark.kernel

STREAMS = 8


@pytest.fixture
def kernel_udp() -> Iterator[tuple[int, int]]:
    """``(kernel_port, our_port)``: the kernel receives SCTP over UDP on ``kernel_port``
    and sends it to ``our_port`` (where our server listens)."""
    kernel_port, our_port = free_udp_port(), free_udp_port()
    with kernel_sctp_over_udp(kernel_port, our_port):
        yield kernel_port, our_port


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


#: Which end is ours (SCTP over UDP in this library) and which the kernel's.
DIRECTIONS = ["our_udp_client_to_a_kernel_server", "a_kernel_client_to_our_udp_server"]
#: Keyword arguments for the entry points.
Keywords = dict[str, Any]
#: Both ends offer and accept the same streams.
STREAM_COUNTS: Keywords = {"outbound_streams": STREAMS, "max_inbound_streams": STREAMS}


def transports(direction: str, kernel_udp: tuple[int, int]) -> tuple[Keywords, Keywords]:
    """The server's and the client's transport keywords for ``direction``: our client
    sends to the kernel's UDP port; the kernel sends to our server's."""
    kernel_port, our_port = kernel_udp
    if direction == "our_udp_client_to_a_kernel_server":
        return {"transport": "kernel"}, {"transport": "udp", "remote_udp_port": kernel_port}
    return {"transport": "udp", "udp_port": our_port}, {"transport": "kernel"}


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_plain_messaging(direction: str, kernel_udp: tuple[int, int]) -> None:
    server, client = transports(direction, kernel_udp)
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(serve_sctp, echo, 0, host="127.0.0.1", **server, **STREAM_COUNTS)
        )
        async with open_sctp_association(
            "127.0.0.1", listener.port, **client, **STREAM_COUNTS
        ) as sctp:
            await exchange_plain(sctp)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_tls_on_every_stream(direction: str, kernel_udp: tuple[int, int]) -> None:
    server, client = transports(direction, kernel_udp)
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                serve,
                echo_channels,
                0,
                ssl_context=server_context(),
                host="127.0.0.1",
                **server,
                **STREAM_COUNTS,
            )
        )
        async with open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_context(),
            server_hostname=SERVER_NAME,
            session_cache=None,
            handshake_timeout=120,
            **client,
            **STREAM_COUNTS,
        ) as association:
            await exchange_tls(association)
        nursery.cancel_scope.cancel()
