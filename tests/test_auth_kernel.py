"""SCTP-AUTH (RFC 4895) on the kernel transport, between two kernel sockets (in the VM).

``auth=True`` switches SCTP-AUTH on per socket (``SCTP_AUTH_SUPPORTED``: these tests
keep ``net.sctp.auth_enable`` at 0 to show it needs no sysctl), puts DATA among the
authenticated chunks, and makes ``transport.auth`` manage the keys through the
``SCTP_AUTH_*`` options; a peer without SCTP-AUTH fails typed. The AUTH chunks are seen
on the wire with a packet socket on the loopback interface.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
import trio

from tests.sctp.kernel_udp import kernel_auth_enabled
from tests.test_kernel_transport import TEST_DEADLINE, kernel_pair, receive_messages
from trio_sctls import AssociationAbortedError, AuthNotSupportedError
from trio_sctls.transport import AuthKeys
from trio_sctls.transport.kernel import KernelTransport, connect_kernel, listen_kernel

pytestmark = pytest.mark.kernel

ETH_P_ALL = 0x0003
SECRET = bytes(range(64))


@pytest.fixture
def sniffer() -> Iterator[socket.socket]:
    """A packet socket on ``lo`` (the sysctl off, so only the socket option enables
    SCTP-AUTH), read after the exchange."""
    with kernel_auth_enabled(0):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        yield sock
        sock.close()


def sctp_chunk_types(sniffer: socket.socket) -> list[list[int]]:
    """The chunk types of each IPv4 SCTP packet the sniffer holds (each seen once)."""
    packets: list[list[int]] = []
    while True:
        try:
            frame, address = sniffer.recvfrom(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return packets
        if address[2] == socket.PACKET_OUTGOING:
            continue  # on lo each packet shows up twice
        ip = frame[14:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 132:
            continue
        offset = (ip[0] & 0x0F) * 4 + 12
        types = []
        while offset + 4 <= len(ip):
            kind, _flags, length = struct.unpack_from("!BBH", ip, offset)
            types.append(kind)
            offset += max(4, (length + 3) & ~3)
        packets.append(types)


def keys_of(transport: KernelTransport) -> AuthKeys:
    assert transport.auth is not None
    return transport.auth


async def exchange(a: KernelTransport, b: KernelTransport, data: bytes) -> None:
    await a.send_message(data, stream=1, ppid=51)
    (got,) = await receive_messages(b, 1)
    assert (got.data, got.stream, got.ppid) == (data, 1, 51)


async def test_auth_true_between_kernel_sockets_signs_data_and_switches_keys(
    sniffer: socket.socket,
) -> None:
    options = {"auth": True}
    async with kernel_pair(client=options, server=options) as (client, server, _):
        await exchange(client, server, b"under key 0")
        await exchange(server, client, b"back under key 0")
        # RFC 6083 section 4.7: both ends add key 1, then switch, then drop key 0.
        for end in (client, server):
            keys_of(end).add_key(1, SECRET)
        for end in (client, server):
            keys_of(end).activate_key(1)
            assert keys_of(end).active_key_id == 1
        await exchange(client, server, b"under key 1")
        for end in (client, server):
            keys_of(end).delete_key(0)
        await exchange(server, client, b"key 0 is gone")
        with pytest.raises(ValueError, match="refused"):
            keys_of(client).delete_key(1)  # the active key
        with pytest.raises(ValueError, match="refused"):
            keys_of(client).activate_key(9)  # never added
    with_data = [types for types in sctp_chunk_types(sniffer) if 0 in types]
    assert len(with_data) >= 4
    for types in with_data:
        assert 0x0F in types and types.index(0x0F) < types.index(0), types


async def test_a_server_without_auth_fails_the_connect_typed() -> None:
    listener = await listen_kernel(0, hosts="127.0.0.1")
    try:
        with trio.fail_after(TEST_DEADLINE), pytest.raises(AuthNotSupportedError, match="AUTH"):
            await connect_kernel("127.0.0.1", listener.port, auth=True)
    finally:
        await listener.aclose()  # the kernel aborts what it did not hand out


async def test_a_server_requiring_auth_aborts_a_client_without_it() -> None:
    listener = await listen_kernel(0, hosts="127.0.0.1", auth=True)
    try:
        with trio.fail_after(TEST_DEADLINE):
            client = await connect_kernel("127.0.0.1", listener.port)  # Linux accepts it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.accept)  # ... and our accept aborts it
                with pytest.raises(AssociationAbortedError):
                    await client.receive()
                nursery.cancel_scope.cancel()
            client.abort()
    finally:
        await listener.aclose()


async def test_without_auth_there_are_no_keys() -> None:
    async with kernel_pair() as (client, server, _):
        assert client.auth is None and server.auth is None
        await exchange(client, server, b"plain")
