"""One end of the real-path PLPMTUD test (``test_pmtud_netns``), run inside a network
namespace: ``python -m tests._pmtud_peer server|client ADDRESS``. The server echoes
what it receives; each end prints one JSON line: the path MTU it settled on, the state
of the search, and the bytes it moved."""

from __future__ import annotations

import contextlib
import json
import sys

import trio

from trio_sctls.sctp import PMTUDState
from trio_sctls.transport import Message
from trio_sctls.transport.udp import UDPTransport, open_udp_listener, open_udp_transport

SCTP_PORT = 5000
UDP_PORT = 9899
MESSAGES = 64
MESSAGE_SIZE = 16 * 1024
SETTLE_TIMEOUT = 10.0


async def _settled(transport: UDPTransport) -> None:
    with trio.fail_after(SETTLE_TIMEOUT):
        # The core raises no event for this state: poll it.
        while transport.association.pmtud_state is not PMTUDState.SEARCH_COMPLETE:  # noqa: ASYNC110
            await trio.sleep(0.01)


def _report(transport: UDPTransport, moved: int) -> None:
    state = transport.association.pmtud_state.value
    print(json.dumps({"path_mtu": transport.path_mtu, "state": state, "bytes": moved}))


async def serve(address: str) -> None:
    async with open_udp_listener(SCTP_PORT, host=address, udp_port=UDP_PORT) as listener:
        print("ready", flush=True)
        transport = await listener.accept()
        moved = 0
        while moved < MESSAGES * MESSAGE_SIZE:
            message = await transport.receive()
            assert isinstance(message, Message)
            moved += len(message.data)
            await transport.send_message(message.data, stream=0)
        await _settled(transport)
        _report(transport, moved)
        with contextlib.suppress(trio.EndOfChannel):
            while True:  # until the client's SHUTDOWN: our echoes are all acknowledged
                await transport.receive()


async def connect(address: str) -> None:
    async with open_udp_transport(address, SCTP_PORT, remote_udp_port=UDP_PORT) as transport:
        payload = bytes(range(256)) * (MESSAGE_SIZE // 256)
        moved = 0
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for _ in range(MESSAGES):
                    await transport.send_message(payload, stream=0)

            nursery.start_soon(send_all)
            for _ in range(MESSAGES):
                message = await transport.receive()
                assert isinstance(message, Message) and message.data == payload
                moved += MESSAGE_SIZE
        await _settled(transport)  # the search began with the first DATA
        _report(transport, moved)
        await transport.aclose()  # a graceful SHUTDOWN, which the server waits for


if __name__ == "__main__":
    role, host = sys.argv[1], sys.argv[2]
    trio.run(serve if role == "server" else connect, host)
