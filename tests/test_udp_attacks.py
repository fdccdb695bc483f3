"""Attacks on a live SCTP-over-UDP listener, from a raw UDP socket on loopback."""

from __future__ import annotations

import random
import socket

import trio
import trio.testing

from trio_sctls.sctp import Packet
from trio_sctls.sctp._chunks import CookieEchoChunk, InitAckChunk, InitChunk
from trio_sctls.sctp._params import StateCookieParam
from trio_sctls.transport import Message
from trio_sctls.transport.udp import open_udp_listener, open_udp_transport

from .soak.fuzz_udp_endpoint import run_fuzz
from .test_udp_transport import read_waiting


async def test_the_soak_fuzzer_core_on_a_few_thousand_datagrams() -> None:
    report = await run_fuzz(2000, seed=3, echo_every=500)
    assert report.errors == []
    assert report.sent == 2000
    assert report.echoes >= 5  # periodic checks and the final ones, exact bytes


async def _drain(sock: socket.socket) -> list[bytes]:
    await trio.testing.wait_all_tasks_blocked(0.02)
    return read_waiting(sock)


async def test_an_init_flood_and_forged_cookies_leave_the_listener_as_it_was() -> None:
    async with (
        open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=listener.udp_port) as client,
    ):
        server = await listener.accept()
        endpoint = server._endpoint
        target = ("127.0.0.1", listener.udp_port)
        rng = random.Random(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            attacker.bind(("127.0.0.1", 0))
            attacker.setblocking(False)
            cookies: list[tuple[int, bytes]] = []
            for i in range(2000):
                tag = rng.randrange(1, 1 << 32)
                init = InitChunk(tag, 2**32 - 1, 65535, 65535, rng.getrandbits(32))
                attacker.sendto(bytes(Packet(5000 + i % 100, listener.port, 0, [init])), target)
                if i % 64 == 63 or i == 1999:
                    for answer in await _drain(attacker):
                        (ack,) = Packet.parse(answer).chunks
                        assert isinstance(ack, InitAckChunk)
                        cookie = next(
                            p.cookie for p in ack.params if isinstance(p, StateCookieParam)
                        )
                        cookies.append((ack.initiate_tag, cookie))
            assert cookies
            # Nothing kept for any of them.
            assert endpoint.associations == [server.association]
            # Forged cookies (one bit flipped, or the tag wrong) open nothing, and
            # nothing answers them.
            for tag, cookie in cookies[:200]:
                forged = bytearray(cookie)
                forged[rng.randrange(len(forged))] ^= 1 << rng.randrange(8)
                for echo in (
                    Packet(5000, listener.port, tag, [CookieEchoChunk(bytes(forged))]),
                    Packet(5000, listener.port, tag ^ 1, [CookieEchoChunk(cookie)]),
                ):
                    attacker.sendto(bytes(echo), target)
            assert await _drain(attacker) == []
            assert endpoint.associations == [server.association]
        await client.send_message(b"still fine", stream=3)
        assert await server.receive() == Message(b"still fine", 3)
