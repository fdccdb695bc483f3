"""Soak: many TLS associations echoing at once, every byte checked, memory watched.

    python tests/soak/load_echo.py [--associations 200] [--channels 8] [--seconds 60]
                                   [--transport udp|kernel|memory|auto] [--size 512]
                                   [--warmup 10] [--json out.json]

One process, loopback only. A server (``trio_sctls.serve``) echoes every channel of every
association; ``--associations`` clients each open ``--channels`` TLS channels
(``handshake="resume"``) and then, on every channel at once, send a message of up to
``--size`` random bytes (seeded), wait for exactly those bytes to come back, and repeat,
until ``--seconds`` of load have passed. Then every association is closed gracefully.

Reported: set-up time, messages and bytes echoed, message rate, round-trip latency
(p50/p99/p99.9 from a fixed-size reservoir, so the measurement itself does not grow),
and the process's RSS sampled every second. Exit status 1 if any byte came back wrong,
any association failed, or RSS grew by more than ``--max-growth`` (default 10%) between
the end of ``--warmup`` and the end of the run ("memory flat after warm-up").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import ssl
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trustme

if __name__ == "__main__":  # run as a script: find the package from a checkout
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import trio_sctls
from trio_sctls import SecureAssociation
from trio_sctls._api import resolve_transport

SERVER_NAME = "load.example"
RESERVOIR = 100_000


def rss_kib() -> int:
    """The process's resident set size, KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile of ``samples`` (nearest rank), or NaN if empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


@dataclass
class Tally:
    """What the clients saw."""

    messages: int = 0
    bytes: int = 0
    mismatches: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seen: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    def record(self, seconds: float) -> None:
        """Keep a uniform sample of at most RESERVOIR round-trip times."""
        self.seen += 1
        if len(self.latencies) < RESERVOIR:
            self.latencies.append(seconds)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < RESERVOIR:
                self.latencies[slot] = seconds


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts for a throwaway ECDSA certificate authority."""
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def echo_handler(association: SecureAssociation) -> None:
    """Server side: echo every channel until the client closes it."""

    async def echo(channel: trio_sctls.Channel) -> None:
        while data := await channel.receive_some():
            await channel.send_all(data)

    async with trio.open_nursery() as nursery:
        for channel in association.channels:
            nursery.start_soon(echo, channel)


async def exchange(
    channel: trio_sctls.Channel, payload: bytes, tally: Tally, *, stream: int
) -> None:
    """Send ``payload`` and read until the same number of bytes came back; check them."""
    started = time.perf_counter()
    await channel.send_all(payload)
    got = bytearray()
    while len(got) < len(payload):
        data = await channel.receive_some(len(payload) - len(got))
        if not data:
            raise trio.BrokenResourceError(f"stream {stream}: end of stream mid-echo")
        got += data
    tally.record(time.perf_counter() - started)
    if bytes(got) != payload:
        tally.mismatches += 1
    tally.messages += 1
    tally.bytes += len(payload)


async def client(
    index: int,
    args: argparse.Namespace,
    context: ssl.SSLContext,
    port: int,
    udp_port: int | None,
    transport: str,
    tally: Tally,
    ready: trio.Semaphore,
    go: trio.Event,
    deadline_box: list[float],
    opened: list[int],
) -> None:
    """One association: open it, wait for the start signal, echo until the deadline."""
    rng = random.Random(index)
    # Hold a slot of `ready` only while opening: at most --concurrency set-ups at once.
    await ready.acquire()
    holding = True
    try:
        async with trio_sctls.open_association(
            "127.0.0.1",
            port,
            ssl_context=context,
            server_hostname=SERVER_NAME,
            transport=transport,  # type: ignore[arg-type]
            outbound_streams=args.channels,
            max_inbound_streams=args.channels,
            handshake="resume",
            session_cache=None,
            remote_udp_port=udp_port,
        ) as association:
            ready.release()
            holding = False
            opened[0] += 1
            await go.wait()

            async def flow(stream: int) -> None:
                channel = association.channels[stream]
                while time.perf_counter() < deadline_box[0]:
                    size = rng.randint(1, args.size)
                    payload = rng.randbytes(size)
                    await exchange(channel, payload, tally, stream=stream)

            async with trio.open_nursery() as nursery:
                for stream in range(args.channels):
                    nursery.start_soon(flow, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        tally.failures.append(f"association {index}: {exc!r}")
    finally:
        if holding:
            ready.release()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak; returns the report."""
    transport = resolve_transport(args.transport)
    server_ctx, client_ctx = contexts()
    tally = Tally()
    rss: list[tuple[float, int]] = []
    started = time.perf_counter()
    deadline_box = [math.inf]
    opened = [0]
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve,
                echo_handler,
                0,
                ssl_context=server_ctx,
                host="127.0.0.1",
                transport=transport,
                outbound_streams=args.channels,
                max_inbound_streams=args.channels,
                udp_port=0 if transport == "udp" else None,
            )
        )
        udp_port = listener.udp_port if transport == "udp" else None
        ready = trio.Semaphore(args.concurrency)
        go = trio.Event()
        async with trio.open_nursery() as clients:
            for index in range(args.associations):
                clients.start_soon(
                    client,
                    index,
                    args,
                    client_ctx,
                    listener.port,
                    udp_port,
                    transport,
                    tally,
                    ready,
                    go,
                    deadline_box,
                    opened,
                )
            while opened[0] + len(tally.failures) < args.associations:
                print(f"set-up: {opened[0]}/{args.associations}", file=sys.stderr)
                await trio.sleep(1)
            setup = time.perf_counter() - started
            print(f"all {opened[0]} associations up in {setup:.1f} s", file=sys.stderr)
            load_started = time.perf_counter()
            deadline_box[0] = load_started + args.seconds
            go.set()
            last = 0
            snapshot: tracemalloc.Snapshot | None = None
            while time.perf_counter() < deadline_box[0]:
                await trio.sleep(1)
                now = time.perf_counter() - load_started
                if args.trace and snapshot is None and now >= args.warmup:
                    snapshot = tracemalloc.take_snapshot()
                rss.append((round(now, 1), rss_kib()))
                print(
                    f"[{now:5.1f} s] {tally.messages - last} msg/s, "
                    f"{tally.messages} echoed, RSS {rss[-1][1] // 1024} MiB, "
                    f"{len(tally.failures)} failures",
                    file=sys.stderr,
                )
                last = tally.messages
            if snapshot is not None:
                growth_sites = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
                print("largest growth after warm-up (tracemalloc):", file=sys.stderr)
                for stat in growth_sites[:15]:
                    print(f"  {stat}", file=sys.stderr)
        load_seconds = time.perf_counter() - load_started
        nursery.cancel_scope.cancel()
    after_warmup = [kib for t, kib in rss if t >= args.warmup]
    growth = (after_warmup[-1] / after_warmup[0] - 1) if len(after_warmup) >= 2 else 0.0
    lat = tally.latencies
    report = {
        "transport": transport,
        "associations": args.associations,
        "channels": args.channels,
        "seconds": args.seconds,
        "setup_seconds": round(setup, 2),
        "messages": tally.messages,
        "bytes": tally.bytes,
        "messages_per_second": round(tally.messages / load_seconds, 1),
        "mib_per_second": round(tally.bytes / load_seconds / 2**20, 3),
        "latency_ms": {
            "p50": round(percentile(lat, 50) * 1000, 2),
            "p99": round(percentile(lat, 99) * 1000, 2),
            "p99.9": round(percentile(lat, 99.9) * 1000, 2),
        },
        "mismatches": tally.mismatches,
        "failures": tally.failures,
        "rss_kib": rss,
        "rss_growth_after_warmup": round(growth, 4),
    }
    report["ok"] = (
        tally.mismatches == 0
        and not tally.failures
        and tally.messages > 0
        and growth <= args.max_growth
    )
    return report


def main() -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", type=int, default=200)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--transport", default="udp")
    parser.add_argument("--size", type=int, default=512, help="largest message, bytes")
    parser.add_argument("--concurrency", type=int, default=32, help="associations opening at once")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS counts")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--trace", action="store_true", help="print tracemalloc's largest growth after warm-up"
    )
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start()
    report = trio.run(run, args)
    summary = {k: v for k, v in report.items() if k != "rss_kib"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("OK" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
