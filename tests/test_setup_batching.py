"""Many channels' handshake flights leave bundled: counted on the wire, through a
fault-free relay, for a 32-channel set-up over udp (issue 11: "batch each handshake
flight into as few packets as the MTU allows").

The bound is the physics, not a measured number: the DATA-carrying packets each way
until the client is ready can be no fewer than the bytes their chunks take over what one
packet of the largest size seen carries, plus one part-filled packet per flight (a
flight cannot wait for the next one, which the peer's answer triggers). One flush per
scheduling round of a sending task, as before, takes several times more."""

from __future__ import annotations

import math
import ssl
from collections.abc import Sequence

import pytest
import trio

from trio_sctls import AssociationOptions, SecureAssociation, run_association, wrap_transport
from trio_sctls.impaired import Direction, impaired_link
from trio_sctls.sctp import Packet
from trio_sctls.testing import trusted_contexts
from trio_sctls.transport.udp import open_udp_listener, open_udp_transport

from .conftest import SERVER_NAME

CHANNELS = 32
#: SCTP's common header: what each packet carries besides its chunks.
COMMON_HEADER = 12
#: Flights each way until a TLS 1.2 client that resumes is ready: client ClientHello,
#: ClientKeyExchange+CCS+Finished, 31 ClientHellos, 31 CCS+Finished; server
#: ServerHello..Done, (ticket+)CCS+Finished, 31 ServerHello+CCS+Finished.
FLIGHTS = {"to_server": 4, "to_client": 3}


def _least_packets(packets: Sequence[bytes]) -> int:
    """The fewest packets of the largest size seen that could carry these chunks."""
    payload = sum(len(packet) - COMMON_HEADER for packet in packets)
    return math.ceil(payload / (max(map(len, packets)) - COMMON_HEADER))


async def _echo(channel: trio.SSLStream[trio.abc.Stream]) -> None:
    while data := await channel.receive_some():
        await channel.send_all(data)


@pytest.mark.parametrize("server_reads_at_once", [False, True])
async def test_a_32_channel_resume_set_up_sends_each_flight_in_as_few_packets_as_fit(
    server_reads_at_once: bool,
) -> None:
    server_ctx, client_ctx = trusted_contexts(SERVER_NAME, version=ssl.TLSVersion.TLSv1_2)
    wire: dict[Direction, list[bytes]] = {"to_server": [], "to_client": []}

    def record(direction: Direction, index: int, datagram: bytes) -> None:
        if any(type(chunk).__name__ == "DataChunk" for chunk in Packet.parse(datagram).chunks):
            wire[direction].append(datagram)

    async with (
        open_udp_listener(
            0,
            host="127.0.0.1",
            udp_port=0,
            outbound_streams=CHANNELS,
            max_inbound_streams=CHANNELS,
        ) as listener,
        impaired_link(("127.0.0.1", listener.udp_port), hook=record) as link,
        open_udp_transport(
            "127.0.0.1",
            listener.port,
            remote_udp_port=link.port,
            outbound_streams=CHANNELS,
            max_inbound_streams=CHANNELS,
        ) as sctp,
        trio.open_nursery() as nursery,
    ):
        server = SecureAssociation(await listener.accept(), server_ctx, server_side=True)
        await nursery.start(run_association, server)
        if server_reads_at_once:
            # A handler that reads every channel at once, before any handshake: the
            # association still drives them, and the handler's reads wait for that.
            for channel in server.channels:
                nursery.start_soon(_echo, channel)
        options = AssociationOptions(handshake="resume", session_cache=None)
        async with wrap_transport(
            sctp, client_ctx, options, server_side=False, server_hostname=SERVER_NAME
        ) as client:
            sent = {direction: list(packets) for direction, packets in wire.items()}
            assert sum(bool(client.channel_info(i).resumed) for i in range(CHANNELS)) == 31
            # The channels work, and the server's handler (if any) finished its
            # handshakes through Trio.
            await client.channels[CHANNELS - 1].send_all(b"ping")
            if server_reads_at_once:
                assert await client.channels[CHANNELS - 1].receive_some() == b"ping"
            else:
                assert await server.channels[CHANNELS - 1].receive_some() == b"ping"
        server.abort()
        nursery.cancel_scope.cancel()
    for direction, packets in sent.items():
        bound = _least_packets(packets) + FLIGHTS[direction]
        assert len(packets) <= bound, (direction, [len(p) for p in packets])
