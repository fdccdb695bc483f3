"""TLS throughput over our SCTP-over-UDP transport, as a ratio to TLS over TCP.

Both are measured in the same run, on loopback, with the same certificate (ECDSA P-256),
TLS version and default ciphers, in 16 KiB application writes (one full TLS record
each, so one SCTP message each on the udp side):

* baseline: trio's ``SSLStream`` over TCP (``trio.serve_ssl_over_tcp`` /
  ``open_tcp_stream``), one connection per channel;
* trio-sctls: ``open_association`` / ``serve`` with ``transport="udp"``, one
  association with 1 or 16 TLS channels.

The client writes ``--bytes`` (split evenly over the channels) and the server answers
``ok`` on each channel once it has read its share; the clock runs from the first write
to the last ``ok``. Rounds alternate baseline and udp so both see the same machine load;
the median round is reported. ``--profile FILE`` runs one extra udp round under cProfile
and prints where the time went.

    python benchmarks/throughput.py [--bytes 64MiB] [--rounds 5] [--channels 1 16]
                                    [--tls 1.3] [--json throughput.json] [--profile out.prof]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
import trustme

import trio_sctls
from trio_sctls import SecureAssociation

SERVER_NAME = "bench.example"
#: One maximum-size TLS record of application data per write.
WRITE_SIZE = 16 * 1024
TARGET_RATIO = 0.3


def contexts(version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts sharing one throwaway CA (ECDSA certificates)."""
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    for context in (server, client):
        context.minimum_version = context.maximum_version = version
    return server, client


async def drain_then_ack(stream: trio.abc.Stream, nbytes: int) -> None:
    """Read ``nbytes`` from ``stream``, then answer ``ok``."""
    got = 0
    while got < nbytes:
        data = await stream.receive_some(1 << 18)
        if not data:
            raise RuntimeError(f"stream ended after {got} of {nbytes} bytes")
        got += len(data)
    await stream.send_all(b"ok")


async def write_then_wait(stream: trio.abc.Stream, nbytes: int) -> None:
    """Write ``nbytes`` in 16 KiB writes, then wait for the peer's ``ok``."""
    block = b"x" * WRITE_SIZE
    sent = 0
    while sent < nbytes:
        chunk = block if nbytes - sent >= WRITE_SIZE else block[: nbytes - sent]
        await stream.send_all(chunk)
        sent += len(chunk)
    answer = b""
    while len(answer) < 2:
        data = await stream.receive_some()
        if not data:
            raise RuntimeError("no ok from the server")
        answer += data


async def tls_over_tcp(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, channels: int, nbytes: int
) -> float:
    """Seconds to push ``nbytes`` over ``channels`` TLS/TCP connections."""
    share = nbytes // channels

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await drain_then_ack(stream, share)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        streams = []
        for _ in range(channels):
            stream = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", port),
                client_ctx,
                server_hostname=SERVER_NAME,
            )
            await stream.do_handshake()
            streams.append(stream)
        started = time.perf_counter()
        async with trio.open_nursery() as writers:
            for stream in streams:
                writers.start_soon(write_then_wait, stream, share)
        elapsed = time.perf_counter() - started
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    return elapsed


async def tls_over_udp_sctp(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    channels: int,
    nbytes: int,
    profiler: cProfile.Profile | None = None,
) -> float:
    """Seconds to push ``nbytes`` over ``channels`` TLS channels of one association."""
    share = nbytes // channels

    async def handler(association: SecureAssociation) -> None:
        async with trio.open_nursery() as readers:
            for channel in association.channels:
                readers.start_soon(drain_then_ack, channel, share)
        await trio.sleep_forever()  # the client closes

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve,
                handler,
                0,
                ssl_context=server_ctx,
                host="127.0.0.1",
                transport="udp",
                udp_port=0,
                outbound_streams=channels,
                max_inbound_streams=channels,
            )
        )
        async with trio_sctls.open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_ctx,
            server_hostname=SERVER_NAME,
            transport="udp",
            remote_udp_port=listener.udp_port,
            outbound_streams=channels,
            max_inbound_streams=channels,
            session_cache=None,
        ) as association:
            assert len(association.channels) == channels
            if profiler is not None:
                profiler.enable()
            started = time.perf_counter()
            async with trio.open_nursery() as writers:
                for channel in association.channels:
                    writers.start_soon(write_then_wait, channel, share)
            elapsed = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
        nursery.cancel_scope.cancel()
    return elapsed


Runner = Callable[[ssl.SSLContext, ssl.SSLContext, int, int], Awaitable[float]]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[args.tls]
    server_ctx, client_ctx = contexts(version)
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "openssl": ssl.OPENSSL_VERSION,
        "tls": args.tls,
        "write_size": WRITE_SIZE,
        "bytes": args.bytes,
        "rounds": args.rounds,
        "cases": {},
    }
    # Warm up both paths once (imports, first handshakes).
    await tls_over_tcp(server_ctx, client_ctx, 1, 1 << 20)
    await tls_over_udp_sctp(server_ctx, client_ctx, 1, 1 << 20)
    for channels in args.channels:
        tcp: list[float] = []
        udp: list[float] = []
        for _ in range(args.rounds):
            tcp.append(await tls_over_tcp(server_ctx, client_ctx, channels, args.bytes))
            udp.append(await tls_over_udp_sctp(server_ctx, client_ctx, channels, args.bytes))
        tcp_s, udp_s = statistics.median(tcp), statistics.median(udp)
        mib = args.bytes / 2**20
        case = {
            "channels": channels,
            "tls_tcp_seconds": tcp,
            "tls_udp_sctp_seconds": udp,
            "tls_tcp_mib_s": mib / tcp_s,
            "tls_udp_sctp_mib_s": mib / udp_s,
            "ratio": tcp_s / udp_s,
            "meets_target": tcp_s / udp_s >= TARGET_RATIO,
        }
        results["cases"][str(channels)] = case
        print(
            f"{channels:>2} channel(s): TLS/TCP {mib / tcp_s:8.1f} MiB/s   "
            f"TLS/SCTP/UDP {mib / udp_s:8.1f} MiB/s   ratio {tcp_s / udp_s:.2f}x "
            f"(target >= {TARGET_RATIO}x)"
        )
    if args.profile:
        profiler = cProfile.Profile()
        channels = args.channels[-1]
        await tls_over_udp_sctp(server_ctx, client_ctx, channels, args.bytes, profiler)
        profiler.dump_stats(args.profile)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        print(f"\nprofile of one udp round with {channels} channel(s), by own time:")
        print(out.getvalue())
    return results


def parse_size(text: str) -> int:
    """``64MiB``, ``512KiB``, ``1000``..."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=parse_size, default=parse_size("64MiB"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3")
    parser.add_argument(
        "--json", default="throughput.json", help="write the results here (throughput.json)"
    )
    parser.add_argument("--profile", help="profile one extra udp round; write pstats here")
    args = parser.parse_args()
    results = trio.run(measure, args)
    results["target_ratio"] = TARGET_RATIO
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
