"""Soak: a million hostile datagrams at a live SCTP-over-UDP listener, on loopback.

    python tests/soak/fuzz_udp_endpoint.py [--count 1000000] [--seed 1] [--time-limit 900]

What it does, in one Trio run:

1. A listener on 127.0.0.1 (ephemeral UDP and SCTP ports).
2. A *victim* association, through a relay that records every datagram both ways: its
   handshake, messages (small and fragmented), a stream reset and its shutdown give the
   corpus of real packets. Crafted packets add what a session does not show (ABORT and
   ERROR with causes, RE-CONFIG requests, INIT with every kind of parameter, unknown
   chunks with each pair of high bits).
3. An *echo* association on the same listener, with a task on the server side echoing
   every message.
4. From a third socket, ``--count`` datagrams: mutations of the corpus (bytes flipped,
   set, inserted, deleted; truncations; lying chunk and parameter lengths; chunk types
   changed, with each pair of high bits; chunks duplicated or swapped; the CRC fixed up
   most of the time, so the chunk parsers and the state machine see them) and random
   junk, all from a seeded ``random.Random``. Every ``--echo-every`` datagrams the
   echo association sends a message of random size (up to 100 KB: fragmented) on a
   random stream and checks that exactly those bytes come back.
5. At the end: the echo association still works (exact bytes), the listener still
   accepts a new association, and nothing was logged as an error by the driver (which
   logs any exception the core raises on a datagram, instead of crashing).

It prints datagrams/s and the errors; exit status 1 if anything failed. Loopback only,
bounded by ``--count`` and ``--time-limit`` (seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import resource
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio
import trio.lowlevel
from crc32c import crc32c

if __name__ == "__main__":  # run as a script: find the package from a checkout
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from trio_sctls._errors import AssociationError
from trio_sctls.impaired import impaired_link
from trio_sctls.sctp import Packet
from trio_sctls.sctp._causes import (
    InvalidStreamIdentifier,
    MissingMandatoryParameter,
    NoUserData,
    OutOfResource,
    StaleCookie,
    UnrecognizedChunkType,
    UserInitiatedAbort,
)
from trio_sctls.sctp._chunks import (
    AbortChunk,
    Chunk,
    ErrorChunk,
    ForwardTsnChunk,
    InitChunk,
    ReconfigChunk,
    SackChunk,
    UnknownChunk,
)
from trio_sctls.sctp._params import (
    AddOutgoingStreamsRequest,
    CookiePreservative,
    HostNameAddressParam,
    IncomingSSNResetRequest,
    IPv4AddressParam,
    OutgoingSSNResetRequest,
    ReconfigResponse,
    SSNTSNResetRequest,
    SupportedAddressTypes,
    SupportedExtensions,
    UnknownParam,
)
from trio_sctls.transport import Message
from trio_sctls.transport.udp import UDPListener, open_udp_listener, open_udp_transport

DEFAULT_COUNT = 1_000_000
#: Datagrams sent between two chances for the server's pump to read them.
BATCH = 64


@dataclass
class Report:
    """What a run did."""

    sent: int = 0
    received_by_server: int = 0
    echoes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    corpus: int = 0
    #: Associations opened as targets for mutations carrying their tag.
    victims: int = 0

    @property
    def rate(self) -> float:
        """Datagrams sent per second."""
        return self.sent / self.seconds if self.seconds else 0.0


class _Errors(logging.Handler):
    """Collects what the driver logs at WARNING and above (a core exception is ERROR)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


# -- the corpus and the mutations --------------------------------------------------------


def _crafted(src: int, dst: int, tag: int) -> list[bytes]:
    """Packets a normal session does not show, with the victim's ports and tag."""
    ip = __import__("ipaddress").IPv4Address("127.0.0.1")
    init_params = (
        IPv4AddressParam(ip),
        HostNameAddressParam(b"example\0"),
        SupportedAddressTypes((5, 6)),
        SupportedExtensions((0x82, 0xC0)),
        CookiePreservative(1000),
        UnknownParam(0x0123, b"a"),
        UnknownParam(0x4123, b"b"),
        UnknownParam(0x8123, b"c"),
        UnknownParam(0xC123, b"d"),
    )
    causes = (
        InvalidStreamIdentifier(3),
        MissingMandatoryParameter((7, 9)),
        StaleCookie(1000),
        OutOfResource(),
        NoUserData(5),
        UnrecognizedChunkType(b"\xff\x00\x00\x04"),
        UserInitiatedAbort(b"bye"),
    )
    chunks: list[list[Chunk]] = [
        [InitChunk(0x1234, 2**32 - 1, 65535, 65535, 1, init_params)],
        [ErrorChunk(causes)],
        [AbortChunk(causes)],
        [AbortChunk(reflected=True)],
        [
            ReconfigChunk(
                (OutgoingSSNResetRequest(1, 2, 3, (0, 1)), IncomingSSNResetRequest(2, (1,)))
            )
        ],
        [ReconfigChunk((SSNTSNResetRequest(4), AddOutgoingStreamsRequest(5, 100)))],
        [ReconfigChunk((ReconfigResponse(1, 1), ReconfigResponse(2, 6, (7, 8))))],
        [SackChunk(1, 2**32 - 1, ((2, 3), (5, 9)), (1, 2, 3))],
        [ForwardTsnChunk(10, ((1, 2),))],
        [UnknownChunk(code, 0, b"unknown") for code in (0x3F, 0x7F, 0xBF, 0xFF)],
    ]
    out = [bytes(Packet(src, dst, tag, c)) for c in chunks]
    out.append(bytes(Packet(src, dst, 0, chunks[0])))  # the INIT with the tag it needs
    return out


def _fix_crc(buf: bytearray) -> None:
    if len(buf) >= 12:
        buf[8:12] = b"\0\0\0\0"
        struct.pack_into("<I", buf, 8, crc32c(buf))


def _chunk_offsets(buf: bytearray) -> list[int]:
    """Where the chunks of a (maybe broken) packet start, as far as they can be followed."""
    out = []
    offset = 12
    while offset + 4 <= len(buf):
        out.append(offset)
        (length,) = struct.unpack_from("!H", buf, offset + 2)
        if length < 4:
            break
        offset += (length + 3) & ~3
    return out


def datagrams(corpus: list[bytes], seed: int, target: dict[str, int]) -> Iterator[bytes]:
    """An endless, seeded stream of hostile datagrams. Half of the mutations carry the
    SCTP source port and verification tag of the current victim (``target``), so they
    reach a live association's state machine, not only the out-of-the-blue rules."""
    rng = random.Random(seed)
    rand = rng.random
    randrange = rng.randrange
    while True:
        if rand() < 0.05:
            junk = bytearray(rng.randbytes(randrange(0, 200)))
            if rand() < 0.5:
                _fix_crc(junk)
            yield bytes(junk)
            continue
        buf = bytearray(corpus[randrange(len(corpus))])
        for _ in range(1 + randrange(4)):
            op = randrange(10)
            n = len(buf)
            if op == 0 and n:  # flip a bit
                buf[randrange(n)] ^= 1 << randrange(8)
            elif op == 1 and n:  # set a byte
                buf[randrange(n)] = randrange(256)
            elif op == 2:  # insert bytes
                pos = randrange(n + 1)
                buf[pos:pos] = rng.randbytes(1 + randrange(8))
            elif op == 3 and n:  # delete bytes
                pos = randrange(n)
                del buf[pos : pos + 1 + randrange(8)]
            elif op == 4 and n:  # truncate
                del buf[randrange(n) :]
            elif op in (5, 6):  # a chunk or parameter length field that lies
                offsets = _chunk_offsets(buf)
                if offsets:
                    at = rng.choice(offsets) + (2 if op == 5 else 6 + 4 * randrange(5))
                    if at + 2 <= n:
                        lie = rng.choice([0, 1, 3, 4, 0xFFFF, randrange(0x10000)])
                        struct.pack_into("!H", buf, at, lie)
            elif op == 7:  # another chunk type, any high bits
                offsets = _chunk_offsets(buf)
                if offsets:
                    buf[rng.choice(offsets)] = randrange(256)
            elif op == 8:  # duplicate a chunk
                offsets = _chunk_offsets(buf)
                if offsets:
                    start = rng.choice(offsets)
                    (length,) = struct.unpack_from("!H", buf, start + 2)
                    piece = buf[start : start + ((length + 3) & ~3)]
                    buf += piece * (1 + randrange(3))
            elif op == 9 and n >= 8:  # another verification tag
                struct.pack_into("!I", buf, 4, rng.choice([0, randrange(1 << 32)]))
        if target and len(buf) >= 8 and rand() < 0.5:
            struct.pack_into("!H", buf, 0, target["port"])
            struct.pack_into("!I", buf, 4, target["tag"])
        if rand() < 0.9:
            _fix_crc(buf)
        yield bytes(buf[:65000])


# -- the run -----------------------------------------------------------------------------


async def _capture_corpus(listener: UDPListener, rng: random.Random) -> list[bytes]:
    """Run a victim association through a recording relay; return what went by."""
    captured: list[bytes] = []

    def record(_direction: str, _index: int, datagram: bytes) -> None:
        captured.append(datagram)

    async with (
        impaired_link(("127.0.0.1", listener.udp_port), hook=record) as link,
        open_udp_transport("127.0.0.1", listener.port, remote_udp_port=link.port) as victim,
    ):
        server = await listener.accept()
        for i, size in enumerate((10, 1000, 100_000, 3)):
            await victim.send_message(rng.randbytes(size), stream=i % 3, ppid=i)
            item = await server.receive()
            assert isinstance(item, Message) and len(item.data) == size
        await victim.reset_outgoing_stream(1)
        await victim.send_message(b"after reset", stream=1)
        await server.receive()
        first = Packet.parse(captured[0])
        src, dst = first.source_port, first.destination_port
        tag = server.association.verification_tag
        await victim.aclose()
        await server.aclose()
    return captured + _crafted(src, dst, tag)


async def run_fuzz(
    count: int = DEFAULT_COUNT,
    *,
    seed: int = 1,
    time_limit: float = 900.0,
    echo_every: int = 20_000,
    progress: bool = False,
) -> Report:
    """Send ``count`` hostile datagrams at a live listener while an echo association
    runs on it; see the module docstring."""
    report = Report()
    errors = _Errors()
    logger = logging.getLogger("trio_sctls")
    logger.addHandler(errors)
    rng = random.Random(seed)
    try:
        async with (
            open_udp_listener(0, host="127.0.0.1", udp_port=0) as listener,
            trio.open_nursery() as nursery,
        ):
            corpus = await _capture_corpus(listener, rng)
            report.corpus = len(corpus)
            async with open_udp_transport(
                "127.0.0.1", listener.port, remote_udp_port=listener.udp_port
            ) as client:
                server = await listener.accept()
                nursery.start_soon(_echo, server)
                target: dict[str, int] = {}
                victims_scope = trio.CancelScope()

                async def victims() -> None:
                    # One live association at a time for the mutations to hit; a new
                    # one when the fuzz has killed it (an ABORT with the right tag...).
                    with victims_scope:
                        while True:
                            try:
                                async with open_udp_transport(
                                    "127.0.0.1", listener.port, remote_udp_port=listener.udp_port
                                ) as victim:
                                    with trio.move_on_after(5):
                                        far_end = await listener.accept()
                                        report.victims += 1
                                        target["port"] = victim.association.local_port
                                        target["tag"] = far_end.association.verification_tag
                                        try:  # until the fuzz kills it
                                            while True:
                                                await far_end.receive()
                                        except (
                                            trio.EndOfChannel,
                                            AssociationError,
                                            trio.ClosedResourceError,
                                        ):
                                            pass
                                    target.clear()
                            except (OSError, AssociationError, trio.BrokenResourceError):
                                target.clear()
                                await trio.sleep(0.01)

                nursery.start_soon(victims)

                async def check_echo() -> None:
                    size = rng.choice([1, 100, 1400, rng.randrange(1, 100_000)])
                    payload = rng.randbytes(size)
                    stream = rng.randrange(client.outbound_streams)
                    with trio.fail_after(30):
                        await client.send_message(payload, stream=stream, ppid=size)
                        while True:
                            item = await client.receive()
                            if isinstance(item, Message):
                                break
                    if (item.data, item.stream, item.ppid) != (payload, stream, size):
                        report.errors.append(f"echo mismatch after {report.sent} datagrams")
                    report.echoes += 1

                udp = listener._udp  # statistics of the server's socket
                received_before = udp.datagrams_received
                attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                attacker.bind(("127.0.0.1", 0))
                attacker.setblocking(False)
                server_address = ("127.0.0.1", listener.udp_port)
                stream = datagrams(corpus, seed, target)
                start = time.monotonic()
                try:
                    while report.sent < count and time.monotonic() - start < time_limit:
                        for _ in range(min(BATCH, count - report.sent)):
                            try:
                                attacker.sendto(next(stream), server_address)
                            except BlockingIOError:
                                pass
                            except OSError as exc:  # e.g. EMSGSIZE: not our concern
                                report.errors.append(f"sendto: {exc!r}")
                            report.sent += 1
                        await trio.lowlevel.checkpoint()
                        try:  # drop the answers (ABORTs, INIT ACKs...)
                            while attacker.recv(65536):
                                pass
                        except BlockingIOError:
                            pass
                        if report.sent % echo_every < BATCH:
                            await check_echo()
                        if progress and report.sent % 100_000 < BATCH:
                            elapsed = time.monotonic() - start
                            print(
                                f"  {report.sent} sent, {report.sent / elapsed:.0f}/s", flush=True
                            )
                    report.seconds = time.monotonic() - start
                    victims_scope.cancel()
                    # The end: the echo association works, with exact bytes, both sizes.
                    await trio.sleep(0.2)
                    for _ in range(5):
                        await check_echo()
                finally:
                    attacker.close()
                report.received_by_server = udp.datagrams_received - received_before
                # A new peer can still connect.
                with trio.fail_after(30):
                    async with open_udp_transport(
                        "127.0.0.1", listener.port, remote_udp_port=listener.udp_port
                    ) as newcomer:
                        await newcomer.send_message(b"hello", stream=0)
                        # (Skip a victim established as the victims were cancelled.)
                        fresh = await listener.accept()
                        while fresh.association.remote_port != newcomer.association.local_port:
                            fresh = await listener.accept()
                        item = await fresh.receive()
                        if item != Message(b"hello", 0):
                            report.errors.append(f"newcomer got {item!r}")
                        await newcomer.aclose()
                await client.aclose()
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(errors)
    report.errors += errors.records
    return report


async def _echo(transport: object) -> None:
    from trio_sctls.transport.udp import UDPTransport

    assert isinstance(transport, UDPTransport)
    while True:
        try:
            item = await transport.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, AssociationError):
            return
        if isinstance(item, Message):
            await transport.send_message(item.data, stream=item.stream, ppid=item.ppid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="datagrams to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds at most")
    parser.add_argument("--echo-every", type=int, default=20_000)
    args = parser.parse_args(argv)
    report = trio.run(
        lambda: run_fuzz(
            args.count,
            seed=args.seed,
            time_limit=args.time_limit,
            echo_every=args.echo_every,
            progress=True,
        )
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"sent {report.sent} datagrams in {report.seconds:.1f} s ({report.rate:.0f}/s); "
        f"the server read {report.received_by_server}; corpus {report.corpus} packets; "
        f"{report.echoes} echo checks; {report.victims} victim associations; "
        f"max RSS {rss:.0f} MB"
    )
    for error in report.errors:
        print("ERROR:", error)
    print("OK" if not report.errors else f"{len(report.errors)} errors")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
