"""Aggregate throughput of 1, 4 and 16 TLS channels on one association, as a ratio to one
TLS/TCP connection, in 1 KiB and 16 KiB application writes.

Method
------
Both sides run in this process, on loopback, with one certificate (ECDSA P-256), one TLS
version (1.3 by default) and OpenSSL's default cipher for it; the negotiated cipher of
both is recorded and must agree.

* **Baseline**: one trio ``SSLStream`` over TCP (``serve_ssl_over_tcp`` /
  ``open_tcp_stream``). The baseline of every channel count is this *one* connection
  carrying the same bytes in the same writes: the question the targets ask is "what do
  N channels of one association deliver, compared with the single TLS/TCP connection an
  application would otherwise use?".
* **trio-sctls**: ``open_association`` / ``serve`` with one association per channel
  count, the client writing its transfer split evenly over the N channels, concurrently.
  On the host the transport is ``udp`` (our SCTP over UDP: the host kernel has no SCTP);
  inside the VM (``scripts/bench`` runs it there too) it is ``kernel`` (Linux SCTP), and
  the TLS/TCP baseline is measured in the same VM.

Connections and associations are set up once, before the clock starts. One transfer
moves ``min(--bytes, --messages x message size)`` bytes (host: 16 MiB / 8192 messages,
so 8 MiB in 1 KiB writes; VM, where everything runs 14 to 190 times slower: 256
messages, so 16 per channel with 16 channels). The client writes its share in
``message``-size writes (one TLS record each, so one SCTP message each) on every channel
at once; the clock runs from the first write until the server side (in this process)
has read every byte, so the connections carry nothing but the data: no length or
answer records, whose per-channel cost would otherwise count against many channels.
Throughput is bytes / seconds (MiB/s). On the kernel transport the rows also carry the
kernel's SCTP counters over the case's transfers (retransmission timer expiries, data
chunks discarded for want of receive buffer): a stall shows there.

Each round measures, for each message size, the baseline and every channel count, in an
order that reverses every other round, so that both see the same machine load. The
figure is the median over rounds of the per-round ratio (trio-sctls MiB/s / baseline
MiB/s of the same round and size); medians of the MiB/s are reported alongside.

Targets (issue 4): with 16 channels, at least 0.9x one TLS/TCP connection on the kernel
transport (in the VM), at least 0.3x on the udp transport (on the host), for each
message size.

    python -m benchmarks.throughput [--quick] [--bytes 16MiB] [--messages 8192] [--rounds 5]
        [--channels 1 4 16] [--sizes 1024 16384] [--tls 1.3] [--transport udp]
        [--profile FILE] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from benchmarks._common import (
    IN_VM,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    profile_report,
    pyplot,
    save_figure,
    target,
)
from benchmarks._loopback import (
    connect_association,
    connect_tls_over_tcp,
    serving_associations,
    serving_tls_over_tcp,
)
from trio_sctls import SecureAssociation

NAME = "throughput"
WHERE = ("host", "vm")

#: Targets: (transport, ratio) with the largest channel count.
TARGETS = {"kernel": 0.9, "udp": 0.3}
TARGET_CHANNELS = 16

#: Linux's SCTP counters (kernel transport): timer expiries and discards explain stalls.
SCTP_SNMP = Path("/proc/net/sctp/snmp")
SNMP_KEPT = (
    "SctpT3RtxExpireds",
    "SctpT3Retransmits",
    "SctpFastRetransmits",
    "SctpInDataChunkDiscards",
    "SctpDelaySackExpireds",
)
#: A transfer that takes longer is stuck: fail instead of hanging the suite.
TRANSFER_TIMEOUT = 600.0


def parse_size(text: str) -> int:
    """``16MiB``, ``512KiB``, ``1000``..."""
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "k": 1024, "m": 1024**2}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options; every default has a smaller ``--quick`` variant and a VM variant."""
    parser.add_argument(
        "--bytes",
        type=parse_size,
        help="most bytes per transfer, split over the channels "
        "(default 16MiB on the host, 4MiB in the VM; 256KiB with --quick)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        help="most messages per transfer (default 8192 on the host, 256 in the VM; 128 with "
        "--quick): small writes move fewer bytes in the same time",
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[1024, 16 * 1024])
    parser.add_argument("--tls", choices=sorted(TLS_VERSIONS), default="1.3")
    parser.add_argument(
        "--transport",
        choices=["kernel", "udp", "memory"],
        help="trio-sctls transport (default: kernel in the VM, udp elsewhere)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="after measuring, profile one transfer per message size with the most "
        "channels under cProfile; write pstats here (.SIZE appended) and print the top",
    )


# -- one transfer ------------------------------------------------------------------------


class Sink:
    """The server side of one channel: counts what arrives and says when a transfer's
    share is in. Both ends live in this process, so the client learns it without any
    answer travelling back, and the connection carries nothing but the data."""

    def __init__(self) -> None:
        self.expected = 0
        self.got = 0
        self.done = trio.Event()

    def expect(self, nbytes: int) -> None:
        """Start a transfer of ``nbytes`` (before any of it is sent)."""
        if self.got != self.expected:
            raise RuntimeError(f"read {self.got} bytes of a {self.expected}-byte transfer")
        self.expected, self.got, self.done = nbytes, 0, trio.Event()

    async def drain(self, stream: trio.abc.Stream) -> None:
        """Read ``stream`` until it ends."""
        while data := await stream.receive_some():
            self.got += len(data)
            if self.got >= self.expected:
                self.done.set()


@dataclass
class Link:
    """The client's write side and the server's sinks, channel by channel."""

    streams: Sequence[trio.abc.Stream]
    sinks: Sequence[Sink]


async def _send_share(stream: trio.abc.Stream, nbytes: int, message: int) -> None:
    """Client side of a channel for one transfer."""
    block = b"x" * message
    full, rest = divmod(nbytes, message)
    send_all = stream.send_all
    for _ in range(full):
        await send_all(block)
    if rest:
        await send_all(block[:rest])


async def transfer(link: Link, nbytes: int, message: int) -> float:
    """Seconds to push ``nbytes`` split evenly over the link's channels, concurrently,
    until the server side has read it all."""
    share = nbytes // len(link.streams)
    for sink in link.sinks:
        sink.expect(share)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for stream in link.streams:
            nursery.start_soon(_send_share, stream, share, message)
        for sink in link.sinks:
            await sink.done.wait()
    return time.perf_counter() - started


# -- the two kinds of connection -------------------------------------------------------


@asynccontextmanager
async def tls_over_tcp(
    server_ctx: Any, client_ctx: Any
) -> AsyncIterator[tuple[trio.SSLStream[trio.SocketStream], Link]]:
    """One established TLS/TCP connection on loopback, and its link."""
    sinks: list[Sink] = []
    accepted = trio.Event()

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        sink = Sink()
        sinks.append(sink)
        accepted.set()
        await sink.drain(stream)

    async with serving_tls_over_tcp(handler, server_ctx) as port:
        stream = await connect_tls_over_tcp(port, client_ctx)
        await accepted.wait()
        try:
            yield stream, Link([stream], sinks)
        finally:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def tls_over_sctp(
    server_ctx: Any, client_ctx: Any, transport: str, channels: int
) -> AsyncIterator[tuple[SecureAssociation, Link]]:
    """One established association with ``channels`` TLS channels, and its link."""
    sinks = [Sink() for _ in range(channels)]
    accepted = trio.Event()

    async def handler(association: SecureAssociation) -> None:
        accepted.set()
        async with trio.open_nursery() as nursery:
            for channel, sink in zip(association.channels, sinks, strict=True):
                nursery.start_soon(sink.drain, channel)

    async with (
        serving_associations(handler, server_ctx, transport=transport, streams=channels) as address,
        connect_association(
            address,
            client_ctx,
            transport=transport,
            streams=channels,
            session_cache=None,
            close_timeout=2.0,
        ) as association,
    ):
        if len(association.channels) != channels:
            raise RuntimeError(f"{len(association.channels)} channels, wanted {channels}")
        await accepted.wait()
        yield association, Link(association.channels, sinks)


# -- the benchmark ---------------------------------------------------------------------


def sctp_counters() -> dict[str, int]:
    """The kernel's SCTP counters we keep (empty without kernel SCTP)."""
    try:
        lines = SCTP_SNMP.read_text().splitlines()
    except OSError:
        return {}
    counters = {}
    for line in lines:
        name, _, value = line.partition(" ")
        if name in SNMP_KEPT:
            counters[name] = int(value.strip())
    return counters


def _defaults(args: argparse.Namespace) -> tuple[int, int, int, str]:
    quick = getattr(args, "quick", False)
    nbytes = args.bytes or (256 * 1024 if quick else (4 << 20) if IN_VM else (16 << 20))
    messages = args.messages or (128 if quick else 256 if IN_VM else 8192)
    rounds = args.rounds or (1 if quick else 5)
    transport = args.transport or ("kernel" if IN_VM else "udp")
    return nbytes, messages, rounds, transport


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Measure every (channels, message size) case; see the module docstring."""
    max_bytes, max_messages, rounds, transport = _defaults(args)
    server_ctx, client_ctx = contexts(TLS_VERSIONS[args.tls])
    channel_counts: list[int] = list(args.channels)
    sizes: list[int] = list(args.sizes)
    # (channels or 0 for the baseline, size) -> seconds per round
    seconds: dict[tuple[int, int], list[float]] = {
        (n, size): [] for n in [0, *channel_counts] for size in sizes
    }
    # Kernel SCTP counters summed over each case's transfers (VM only).
    counters: dict[tuple[int, int], dict[str, int]] = {key: {} for key in seconds}
    async with AsyncExitStack() as stack:
        progress.update("setting up: TLS/TCP connection")
        tcp, tcp_link = await stack.enter_async_context(tls_over_tcp(server_ctx, client_ctx))
        associations: dict[int, SecureAssociation] = {}
        streams: dict[int, Link] = {0: tcp_link}
        for n in channel_counts:
            progress.update(f"setting up: association with {n} channel(s) over {transport}")
            associations[n], streams[n] = await stack.enter_async_context(
                tls_over_sctp(server_ctx, client_ctx, transport, n)
            )
        cipher = tcp.cipher()
        sctp_cipher = associations[channel_counts[0]].channel_info(0).cipher
        if cipher is None or cipher[0] != sctp_cipher:
            raise RuntimeError(f"ciphers differ: TLS/TCP {cipher}, trio-sctls {sctp_cipher}")

        def amount(size: int) -> int:
            return min(max_bytes, max_messages * size)

        progress.update("warming up")
        for key in streams:
            await transfer(streams[key], 4 * len(streams[key].streams) * sizes[-1], sizes[-1])

        order = [(n, size) for size in sizes for n in [0, *channel_counts]]
        total = rounds * len(order)
        done = 0
        for round_index in range(rounds):
            for n, size in order if round_index % 2 == 0 else reversed(order):
                label = "TLS/TCP" if n == 0 else f"{n} channel(s)"
                progress.update(
                    f"round {round_index + 1}/{rounds}: {label}, {size} B writes "
                    f"({done}/{total} transfers, this one {amount(size) / 2**20:g} MiB)"
                )
                before = sctp_counters()
                with trio.fail_after(TRANSFER_TIMEOUT):
                    seconds[n, size].append(await transfer(streams[n], amount(size), size))
                for name, value in sctp_counters().items():
                    delta = value - before.get(name, value)
                    if delta:
                        counters[n, size][name] = counters[n, size].get(name, 0) + delta
                done += 1

        profiles: dict[str, str] = {}
        if args.profile:
            n = channel_counts[-1]
            for size in sizes:
                progress.update(f"profiling {n} channel(s), {size} B writes")
                profiler = cProfile.Profile()
                profiler.enable()
                await transfer(streams[n], amount(size), size)
                profiler.disable()
                path = args.profile.with_name(f"{args.profile.name}.{size}")
                profiler.dump_stats(path)
                profiles[str(size)] = profile_report(profiler, top=[("tottime", 30)])
                progress.log(f"profile of {n} channel(s), {size} B writes (by own time):")
                progress.log(profiles[str(size)])

    rows: list[dict[str, Any]] = []
    for size in sizes:
        mib = amount(size) / 2**20
        base = seconds[0, size]
        for n in channel_counts:
            ours = seconds[n, size]
            ratios = [b / o for b, o in zip(base, ours, strict=True)]
            row: dict[str, Any] = {
                "channels": n,
                "message_size": size,
                "transport": transport,
                "bytes": amount(size),
                "baseline_mib_s": round(mib / statistics.median(base), 2),
                "sctls_mib_s": round(mib / statistics.median(ours), 2),
                "ratio": round(statistics.median(ratios), 3),
                "ratios": [round(r, 3) for r in ratios],
            }
            if transport == "kernel":
                row["sctp_counters"] = counters[n, size]
            rows.append(row)
            progress.log(
                f"{n:>2} channel(s), {size:>5} B writes over {transport}: "
                f"{row['sctls_mib_s']:8.2f} MiB/s vs TLS/TCP {row['baseline_mib_s']:8.2f} "
                f"MiB/s: {row['ratio']:.2f}x"
            )
    targets = []
    limit = TARGETS.get(transport)
    if limit is not None:
        for row in rows:
            if row["channels"] == TARGET_CHANNELS:
                targets.append(
                    target(
                        f"throughput {transport}, {TARGET_CHANNELS} channels, "
                        f"{_size_label(row['message_size'])} writes / one TLS/TCP connection",
                        row["ratio"],
                        limit,
                    )
                )
    result: dict[str, Any] = {
        "name": NAME,
        "transport": transport,
        "tls": args.tls,
        "cipher": cipher[0],
        "rounds": rounds,
        "baseline": "one TLS/TCP connection (trio SSLStream), same bytes and writes",
        "rows": rows,
        "targets": targets,
    }
    if profiles:
        result["profiles"] = profiles
    return result


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def summarize(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the README: ratio per channel count and message size."""
    rows = result["rows"]
    sizes = sorted({row["message_size"] for row in rows})
    counts = sorted({row["channels"] for row in rows})
    by = {(row["channels"], row["message_size"]): row for row in rows}
    header = "| channels | " + " | ".join(f"{_size_label(s)} writes" for s in sizes) + " |"
    lines = [
        f"trio-sctls over the `{result['transport']}` transport, TLS {result['tls']} "
        f"({result['cipher']}): "
        "aggregate throughput as a ratio to one TLS/TCP connection (and in MiB/s), "
        f"median of {result['rounds']} rounds.",
        "",
        header,
        "|---:|" + "---:|" * len(sizes),
    ]
    for n in counts:
        cells = []
        for size in sizes:
            row = by.get((n, size))
            cells.append(
                "" if row is None else f"{row['ratio']:.2f}x ({row['sctls_mib_s']:.3g} MiB/s)"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    baselines = ", ".join(
        f"{_size_label(s)}: {by[counts[0], s]['baseline_mib_s']:.3g} MiB/s"
        for s in sizes
        if (counts[0], s) in by
    )
    lines.append("")
    lines.append(f"One TLS/TCP connection (the baseline): {baselines}.")
    return lines


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """One bar chart: ratio to one TLS/TCP connection per channel count, a bar per
    message size, with the target as a line."""
    plt = pyplot()
    rows = result["rows"]
    sizes = sorted({row["message_size"] for row in rows})
    counts = sorted({row["channels"] for row in rows})
    by = {(row["channels"], row["message_size"]): row for row in rows}
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        xs = [c + (i - (len(sizes) - 1) / 2) * width for c in range(len(counts))]
        values = [by[n, size]["ratio"] if (n, size) in by else 0.0 for n in counts]
        bars = ax.bar(xs, values, width, label=f"{_size_label(size)} writes")
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    limit = TARGETS.get(result["transport"])
    if limit is not None:
        ax.axhline(limit, color="black", linestyle="--", linewidth=1)
        ax.text(-0.45, limit, f"target {limit}x at {TARGET_CHANNELS} channels", va="bottom")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(counts)), [str(n) for n in counts])
    ax.set_xlabel("TLS channels on one association")
    ax.set_ylabel("throughput / one TLS/TCP connection")
    where = "VM, kernel SCTP" if result.get("machine", {}).get("in_vm") else "host"
    ax.set_title(f"Aggregate throughput, {result['transport']} transport ({where})")
    ax.set_ylim(0, max(1.2, *(row["ratio"] * 1.15 for row in rows)))
    ax.legend(loc="upper right")
    return [save_figure(fig, directory / "throughput.png", dpi=100)]


def main(argv: Sequence[str] | None = None) -> None:
    benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
