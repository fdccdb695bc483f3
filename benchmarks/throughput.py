"""Aggregate throughput of 1, 4 and 16 TLS channels on one association, as a ratio to one
TLS/TCP connection, in 1 KiB and 16 KiB application writes.

Method
------
Two paths (``--paths``), each with its own baseline measured in the same run, with one
certificate (ECDSA P-256), one TLS version (1.3 by default) and OpenSSL's default cipher
for it; the negotiated cipher of both is recorded and must agree:

* ``veth`` (the standard host scenario, issue 11): the server in one network namespace,
  the client in another, each a process of its own, joined by a veth pair with an
  Ethernet MTU (``--mtu``, 1500) (:mod:`benchmarks._netns`, :mod:`benchmarks._peer`).
  Needs root; where it cannot run, the run says so loudly, records why in
  ``netns_status`` and measures loopback only.
* ``loopback``: both sides in this process on 127.0.0.1 (the only path in the VM).

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
moves ``min(--bytes, --messages x message size)`` bytes (host: 16 MiB / 4096 messages,
so 4 MiB in 1 KiB writes, which keeps the suite within its time on two paths; VM, where
everything runs 14 to 190 times slower: 256 messages, so 16 per channel with 16
channels). The client writes its share in
``message``-size writes (one TLS record each, so one SCTP message each) on every channel
at once; on loopback the clock runs from the first write until the server side (in this
process) has read every byte, so the connections carry nothing but the data: no length
or answer records, whose per-channel cost would otherwise count against many channels.
Over the veth pair the server is elsewhere: each channel's share is preceded by an
8-byte length and answered by one byte once read (one round trip of microseconds per
transfer, on the baseline alike).
Throughput is bytes / seconds (MiB/s). On the kernel transport the rows also carry the
kernel's SCTP counters over the case's transfers (retransmission timer expiries, data
chunks discarded for want of receive buffer): a stall shows there.

Each round measures, for each message size, the baseline and every channel count, in an
order that reverses every other round, so that both see the same machine load. The
figure is the median over rounds of the per-round ratio (trio-sctls MiB/s / baseline
MiB/s of the same round and size); medians of the MiB/s are reported alongside.

Targets (:data:`TARGETS`), every one a ratio to one TLS/TCP connection on the same path:
issue 4, with 16 channels: at least 0.9x on the kernel transport (in the VM), 0.3x on
the udp transport on loopback (1 KiB writes); issue 11, 16 KiB writes over udp: over the
veth pair 0.5x with 16 channels and 0.4x with one, on loopback 0.8x with 16.

    python -m benchmarks.throughput [--quick] [--bytes 16MiB] [--messages 4096] [--rounds 5]
        [--channels 1 4 16] [--sizes 1024 16384] [--tls 1.3] [--transport udp]
        [--paths veth loopback] [--mtu 1500] [--profile FILE] [--json out.json]
        [--plots DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
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
    Address,
    connect_association,
    connect_tls_over_tcp,
    serving_associations,
    serving_tls_over_tcp,
)
from benchmarks._netns import DEFAULT_MTU
from benchmarks._peer import describe_paths, veth_or_why
from benchmarks._transfer import Link, Sink, answer_transfers, transfer
from trio_sctls import SecureAssociation

NAME = "throughput"
WHERE = ("host", "vm")

#: Targets: (transport, path, channels, message size or None for every size, least
#: ratio). Issue 4: kernel SCTP in the VM and udp on loopback, 16 channels. Issue 11
#: ("speed on a real path"): udp over a veth pair with MTU 1500, two processes, 16 KiB
#: writes: 16 channels 0.5x, 1 channel 0.4x; udp on loopback 0.8x.
TARGETS: list[tuple[str, str, int, int | None, float]] = [
    ("kernel", "loopback", 16, None, 0.9),
    ("udp", "loopback", 16, 1024, 0.3),
    ("udp", "loopback", 16, 16 * 1024, 0.8),
    ("udp", "veth", 16, 16 * 1024, 0.5),
    ("udp", "veth", 1, 16 * 1024, 0.4),
]

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
#: Seconds the client process of a veth run may take (set-ups, warm-up, every round).
PEER_TIMEOUT = 1800.0
PEER_TIMEOUT_QUICK = 300.0


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
        help="most messages per transfer (default 4096 on the host, 256 in the VM; 128 with "
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
        "--paths",
        nargs="+",
        choices=["veth", "loopback"],
        help="where to measure (default: both on the host, loopback in the VM): a veth "
        "pair between two network namespaces, one process each end (needs root), or "
        "127.0.0.1 with both ends in this process",
    )
    parser.add_argument(
        "--mtu", type=int, default=DEFAULT_MTU, help="the veth pair's MTU (default 1500)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="(loopback) after measuring, profile one transfer per message size with the most "
        "channels under cProfile; write pstats here (.SIZE appended) and print the top",
    )


# -- the two kinds of connection, both ends here -------------------------------------------


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


# -- two processes over a veth pair (benchmarks._peer) -----------------------------------


async def serve_peer(
    args: argparse.Namespace,
    host: str,
    credentials: Path,
    task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The server process: TLS/TCP and one association listener per channel count on
    ``host``, each channel answering transfers; reports their ports."""
    server_ctx, _ = contexts(TLS_VERSIONS[args.tls], credentials)
    _, _, _, transport = _defaults(args)

    async def association_handler(association: SecureAssociation) -> None:
        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(answer_transfers, channel)

    async with AsyncExitStack() as stack:
        tcp = await stack.enter_async_context(
            serving_tls_over_tcp(answer_transfers, server_ctx, host)
        )
        sctls = {}
        for n in args.channels:
            address = await stack.enter_async_context(
                serving_associations(
                    association_handler, server_ctx, transport=transport, streams=n, host=host
                )
            )
            sctls[str(n)] = [address.port, address.udp_port]
        task_status.started({"tcp": tcp, "sctls": sctls})
        await trio.sleep_forever()


async def measure_peer(
    args: argparse.Namespace,
    host: str,
    credentials: Path,
    server: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """The client process: connect to :func:`serve_peer`'s servers on ``host``, measure."""
    async with AsyncExitStack() as stack:
        progress.update("setting up: TLS/TCP connection and associations")
        tcp, associations, links = await connect_peer(args, host, credentials, server, stack)
        return await _measure_links(args, progress, "veth", tcp, associations, links)


async def connect_peer(
    args: argparse.Namespace,
    host: str,
    credentials: Path,
    server: dict[str, Any],
    stack: AsyncExitStack,
) -> tuple[trio.SSLStream[trio.SocketStream], dict[int, SecureAssociation], dict[int, Link]]:
    """Connect to :func:`serve_peer`'s servers on ``host`` (closed when ``stack`` ends):
    the TLS/TCP connection, the associations by channel count, and their links (key 0:
    the TLS/TCP connection's). :mod:`benchmarks.dtls` measures against them too."""
    _, client_ctx = contexts(TLS_VERSIONS[args.tls], credentials)
    _, _, _, transport = _defaults(args)
    tcp = await connect_tls_over_tcp(server["tcp"], client_ctx, host)
    stack.push_async_callback(tcp.aclose)
    links: dict[int, Link] = {0: Link([tcp], None)}
    associations: dict[int, SecureAssociation] = {}
    for n in args.channels:
        port, udp_port = server["sctls"][str(n)]
        associations[n] = await stack.enter_async_context(
            connect_association(
                Address(port, udp_port),
                client_ctx,
                transport=transport,
                streams=n,
                host=host,
                session_cache=None,
                close_timeout=2.0,
            )
        )
        links[n] = Link(associations[n].channels, None)
    return tcp, associations, links


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
    messages = args.messages or (128 if quick else 256 if IN_VM else 4096)
    rounds = args.rounds or (1 if quick else 5)
    transport = args.transport or ("kernel" if IN_VM else "udp")
    return nbytes, messages, rounds, transport


def _paths(args: argparse.Namespace) -> list[str]:
    return list(args.paths or (["loopback"] if IN_VM else ["veth", "loopback"]))


def _peer_arguments(args: argparse.Namespace) -> list[str]:
    """The options that make the two processes measure what this one would."""
    nbytes, messages, rounds, transport = _defaults(args)
    return [
        *(["--quick"] if args.quick else []),
        *("--bytes", str(nbytes), "--messages", str(messages), "--rounds", str(rounds)),
        *("--tls", args.tls, "--transport", transport),
        *("--channels", *map(str, args.channels), "--sizes", *map(str, args.sizes)),
    ]


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Measure every (path, channels, message size) case; see the module docstring."""
    _, _, rounds, transport = _defaults(args)
    results: dict[str, dict[str, Any]] = {}
    netns_status = "not asked"
    for path in _paths(args):
        if path == "veth":
            veth, netns_status = await veth_or_why(
                NAME,
                "THROUGHPUT",
                _peer_arguments(args),
                progress,
                mtu=args.mtu,
                time_limit=PEER_TIMEOUT_QUICK if args.quick else PEER_TIMEOUT,
            )
            if veth is not None:
                results[path] = veth
        else:
            results[path] = await _measure_here(args, progress)
    rows = []
    for path, result in results.items():
        for row in result["rows"]:
            rows.append({"path": path, **row})
    if not rows:
        raise RuntimeError("no path could be measured")
    first = next(iter(results.values()))
    out: dict[str, Any] = {
        "name": NAME,
        "transport": transport,
        "tls": args.tls,
        "cipher": first["cipher"],
        "rounds": rounds,
        "baseline": "one TLS/TCP connection (trio SSLStream) on the same path, in the same "
        "run, carrying the same bytes in the same writes",
        "paths": {path: _path_label(path, args.mtu) for path in results},
        "netns_status": netns_status,
        "rows": rows,
        "targets": _targets(rows, transport),
    }
    profiles = {k: v for result in results.values() for k, v in result.get("profiles", {}).items()}
    if profiles:
        out["profiles"] = profiles
    return out


def _path_label(path: str, mtu: int) -> str:
    if path == "veth":
        return f"veth pair between two network namespaces, MTU {mtu}, one process each end"
    return "127.0.0.1, both ends in one process"


async def _measure_here(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Both ends in this process, on loopback."""
    _, _, _, transport = _defaults(args)
    server_ctx, client_ctx = contexts(TLS_VERSIONS[args.tls])
    async with AsyncExitStack() as stack:
        progress.update("setting up: TLS/TCP connection")
        tcp, tcp_link = await stack.enter_async_context(tls_over_tcp(server_ctx, client_ctx))
        associations: dict[int, SecureAssociation] = {}
        links: dict[int, Link] = {0: tcp_link}
        for n in args.channels:
            progress.update(f"setting up: association with {n} channel(s) over {transport}")
            associations[n], links[n] = await stack.enter_async_context(
                tls_over_sctp(server_ctx, client_ctx, transport, n)
            )
        return await _measure_links(args, progress, "loopback", tcp, associations, links)


async def _measure_links(
    args: argparse.Namespace,
    progress: Progress,
    path: str,
    tcp: trio.SSLStream[trio.SocketStream],
    associations: dict[int, SecureAssociation],
    links: dict[int, Link],
) -> dict[str, Any]:
    """The rounds over established links (key 0: the TLS/TCP baseline; else the channel
    count); returns ``cipher``, ``rows`` and perhaps ``profiles``."""
    max_bytes, max_messages, rounds, transport = _defaults(args)
    channel_counts: list[int] = list(args.channels)
    sizes: list[int] = list(args.sizes)
    # (channels or 0 for the baseline, size) -> seconds per round
    seconds: dict[tuple[int, int], list[float]] = {
        (n, size): [] for n in [0, *channel_counts] for size in sizes
    }
    # Kernel SCTP counters summed over each case's transfers (VM only).
    counters: dict[tuple[int, int], dict[str, int]] = {key: {} for key in seconds}
    cipher = tcp.cipher()
    sctp_cipher = associations[channel_counts[0]].channel_info(0).cipher
    if cipher is None or cipher[0] != sctp_cipher:
        raise RuntimeError(f"ciphers differ: TLS/TCP {cipher}, trio-sctls {sctp_cipher}")

    def amount(size: int) -> int:
        return min(max_bytes, max_messages * size)

    progress.update("warming up")
    for link in links.values():
        await transfer(link, 4 * len(link.streams) * sizes[-1], sizes[-1])

    order = [(n, size) for size in sizes for n in [0, *channel_counts]]
    total = rounds * len(order)
    done = 0
    for round_index in range(rounds):
        for n, size in order if round_index % 2 == 0 else reversed(order):
            label = "TLS/TCP" if n == 0 else f"{n} channel(s)"
            progress.update(
                f"{path}: round {round_index + 1}/{rounds}: {label}, {size} B writes "
                f"({done}/{total} transfers, this one {amount(size) / 2**20:g} MiB)"
            )
            before = sctp_counters()
            with trio.fail_after(TRANSFER_TIMEOUT):
                seconds[n, size].append(await transfer(links[n], amount(size), size))
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
            await transfer(links[n], amount(size), size)
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
                f"{path}: {n:>2} channel(s), {size:>5} B writes over {transport}: "
                f"{row['sctls_mib_s']:8.2f} MiB/s vs TLS/TCP {row['baseline_mib_s']:8.2f} "
                f"MiB/s: {row['ratio']:.2f}x"
            )
    result: dict[str, Any] = {"cipher": cipher[0], "rows": rows}
    if profiles:
        result["profiles"] = profiles
    return result


def _targets(rows: list[dict[str, Any]], transport: str) -> list[dict[str, Any]]:
    """The :data:`TARGETS` that apply to the rows measured."""
    targets = []
    for row in rows:
        for kind, path, channels, size, limit in TARGETS:
            if (kind, path, channels) != (transport, row["path"], row["channels"]):
                continue
            if size is not None and size != row["message_size"]:
                continue
            targets.append(
                target(
                    f"throughput {transport} over {path}, {channels} channel"
                    f"{'s' if channels > 1 else ''}, {_size_label(row['message_size'])} "
                    "writes / one TLS/TCP connection on the same path",
                    row["ratio"],
                    limit,
                    against=f"one TLS/TCP connection (trio SSLStream) over {path}, same run",
                )
            )
    return targets


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _path_of(row: dict[str, Any]) -> str:
    return str(row.get("path", "loopback"))  # results from before issue 11 had no path


def summarize(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the README: ratio per channel count, path and message size."""
    rows = result["rows"]
    paths = list(result.get("paths") or {"loopback": "127.0.0.1, one process"})
    sizes = sorted({row["message_size"] for row in rows})
    counts = sorted({row["channels"] for row in rows})
    by = {(_path_of(row), row["channels"], row["message_size"]): row for row in rows}
    columns = [(path, size) for path in paths for size in sizes]
    lines = [
        f"trio-sctls over the `{result['transport']}` transport, TLS {result['tls']} "
        f"({result['cipher']}): aggregate throughput as a ratio to one TLS/TCP connection "
        "on the same path (and in MiB/s), median of "
        f"{result['rounds']} rounds.",
        *describe_paths(result),
    ]
    lines += [
        "",
        "| channels | "
        + " | ".join(f"{path}, {_size_label(size)} writes" for path, size in columns)
        + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    for n in counts:
        cells = []
        for path, size in columns:
            row = by.get((path, n, size))
            cells.append(
                "" if row is None else f"{row['ratio']:.2f}x ({row['sctls_mib_s']:.3g} MiB/s)"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    baselines = ", ".join(
        f"{path}, {_size_label(size)}: {by[path, counts[0], size]['baseline_mib_s']:.3g} MiB/s"
        for path, size in columns
        if (path, counts[0], size) in by
    )
    lines.append("")
    lines.append(f"One TLS/TCP connection (the baseline): {baselines}.")
    return lines


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """Bar charts side by side, one per path: ratio to one TLS/TCP connection on that
    path per channel count, a bar per message size, with the targets as marks."""
    plt = pyplot()
    rows = result["rows"]
    paths = sorted({_path_of(row) for row in rows}, key=lambda p: p != "veth")
    sizes = sorted({row["message_size"] for row in rows})
    counts = sorted({row["channels"] for row in rows})
    by = {(_path_of(row), row["channels"], row["message_size"]): row for row in rows}
    fig, axes = plt.subplots(
        1, len(paths), figsize=(6.4 * len(paths), 4.0), squeeze=False, sharey=True
    )
    top = max(1.2, *(row["ratio"] * 1.15 for row in rows))
    for ax, path in zip(axes[0], paths, strict=True):
        width = 0.8 / len(sizes)
        for i, size in enumerate(sizes):
            offset = (i - (len(sizes) - 1) / 2) * width
            xs = [c + offset for c in range(len(counts))]
            values = [by[path, n, size]["ratio"] if (path, n, size) in by else 0.0 for n in counts]
            bars = ax.bar(xs, values, width, label=f"{_size_label(size)} writes")
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
            for kind, where, channels, target_size, limit in TARGETS:
                if (kind, where) != (result["transport"], path) or channels not in counts:
                    continue
                if target_size not in (None, size):
                    continue
                x = counts.index(channels) + offset
                ax.hlines(limit, x - width / 2, x + width / 2, color="black", linestyle="--")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xticks(range(len(counts)), [str(n) for n in counts])
        ax.set_xlabel("TLS channels on one association")
        ax.set_title(result.get("paths", {}).get(path, path), fontsize=9)
        ax.set_ylim(0, top)
        ax.legend(loc="upper right")
    axes[0][0].set_ylabel("throughput / one TLS/TCP connection\n(dashes: targets)")
    where = "VM, kernel SCTP" if result.get("machine", {}).get("in_vm") else "host"
    fig.suptitle(f"Aggregate throughput, {result['transport']} transport ({where})")
    return [save_figure(fig, directory / "throughput.png", dpi=100)]


def main(argv: Sequence[str] | None = None) -> None:
    benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
