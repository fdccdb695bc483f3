"""Association set-up time per handshake strategy, as a ratio to one TLS/TCP handshake.

Both are measured in the same run, on loopback, with the same certificate (ECDSA P-256),
TLS version and default ciphers: the baseline is trio's SSLStream over TCP. "Ready"
means every channel has completed its handshake (for ``lazy``, after one byte was
exchanged on each channel, which is what triggers them).

    python benchmarks/handshakes.py [--transport memory|kernel] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import time
from functools import partial
from typing import Any

import trio
import trustme

import trio_sctls
from trio_sctls import SecureAssociation

SERVER_NAME = "bench.example"


def contexts(version: ssl.TLSVersion) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    for context in (server, client):
        context.minimum_version = context.maximum_version = version
    return server, client


async def tls_tcp_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> float:
    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.do_handshake()
        await stream.receive_some()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        started = time.perf_counter()
        stream = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port),
            client_ctx,
            server_hostname=SERVER_NAME,
        )
        await stream.do_handshake()
        elapsed = time.perf_counter() - started
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return elapsed


async def association_ready(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    *,
    channels: int,
    strategy: str,
    transport: str,
) -> float:
    async def handler(association: SecureAssociation) -> None:
        async def echo(channel: trio_sctls.Channel) -> None:
            while data := await channel.receive_some():
                await channel.send_all(data)

        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(echo, channel)

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve,
                handler,
                0,
                ssl_context=server_ctx,
                host="127.0.0.1",
                transport=transport,  # type: ignore[arg-type]
                outbound_streams=channels,
                max_inbound_streams=channels,
            )
        )
        started = time.perf_counter()
        async with trio_sctls.open_association(
            "127.0.0.1",
            listener.port,
            ssl_context=client_ctx,
            server_hostname=SERVER_NAME,
            transport=transport,  # type: ignore[arg-type]
            outbound_streams=channels,
            max_inbound_streams=channels,
            handshake=strategy,  # type: ignore[arg-type]
            session_cache=None,
            close_timeout=1.0,
        ) as association:
            if strategy == "lazy":

                async def touch(channel: trio_sctls.Channel) -> None:
                    await channel.send_all(b"x")
                    await channel.receive_some()

                async with trio.open_nursery() as touches:
                    for channel in association.channels:
                        touches.start_soon(touch, channel)
            elapsed = time.perf_counter() - started
            resumed = sum(
                bool(association.channel_info(i).resumed) for i in range(len(association.channels))
            )
            if strategy == "resume" and channels > 1:
                assert resumed == channels - 1, resumed
        nursery.cancel_scope.cancel()
    return elapsed


async def run(transport: str, rounds: int, sizes: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {"transport": transport, "rounds": rounds, "cases": []}
    for label, version in (
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
    ):
        server_ctx, client_ctx = contexts(version)
        baseline = statistics.median(
            [await tls_tcp_handshake(server_ctx, client_ctx) for _ in range(rounds)]
        )
        print(f"{label}: one TLS/TCP handshake {baseline * 1000:.2f} ms (median)", flush=True)
        for channels in sizes:
            for strategy in ("parallel", "resume", "lazy"):
                times = [
                    await association_ready(
                        server_ctx,
                        client_ctx,
                        channels=channels,
                        strategy=strategy,
                        transport=transport,
                    )
                    for _ in range(rounds)
                ]
                median = statistics.median(times)
                case = {
                    "tls": label,
                    "channels": channels,
                    "strategy": strategy,
                    "ready_ms": round(median * 1000, 2),
                    "tls_tcp_handshake_ms": round(baseline * 1000, 2),
                    "ratio": round(median / baseline, 2),
                }
                results["cases"].append(case)
                print(
                    f"  {channels:>3} channels {strategy:<8} ready in {median * 1000:8.2f} ms"
                    f" = {median / baseline:6.2f} x one TLS/TCP handshake",
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--channels", default="1,8,32")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    transport = trio_sctls._api.resolve_transport(args.transport)
    sizes = [int(n) for n in args.channels.split(",")]
    results = trio.run(run, transport, args.rounds, sizes)
    results["python"] = sys.version.split()[0]
    results["openssl"] = ssl.OPENSSL_VERSION
    if args.json_path:
        with open(args.json_path, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
