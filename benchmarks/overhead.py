"""Per-message cost of trio-sctls' demux and pipe layer, against the bare transport.

Method
------
A channel's message passes through four layers: TLS itself (OpenSSL), trio's
``SSLStream`` around it, our layer (the :class:`~trio_sctls._pipe.StreamPipe` that cuts
records into messages, the association's demux task that feeds each message to its
stream's pipe, budgets) and the transport. No public hook runs our layer without the
others, so it is isolated by subtraction, each term measured the same way: one task
sends ``--messages`` messages of ``size`` bytes, another receives them all, in this
process, and the figure is wall time / messages, in microseconds (sender and receiver
together: the CPU one message costs):

* ``transport``: the bare :class:`~trio_sctls.MessageTransport` (``send_message`` /
  ``receive``, stream 0), for each transport kind, in messages the size of the TLS
  records the channel sends (``size`` + 22 bytes in TLS 1.3);
* ``channel``: one TLS channel of a :class:`~trio_sctls.SecureAssociation` over that
  transport (``send_all`` / ``receive_some``): TLS + SSLStream + our layer + transport;
* ``tls``: a trio ``SSLStream`` pair over ``trio.testing.memory_stream_pair()``:
  TLS + SSLStream + the memory stream (same certificate, TLS version and cipher);
* ``stream``: the bare ``memory_stream_pair()``: what ``tls`` pays besides TLS.

Then ``tls - stream`` is TLS with SSLStream alone, and

    overhead = channel - transport - (tls - stream)

is what our demux and pipe add per message. The ratio reported is ``overhead /
transport``: our layer's cost as a multiple of the bare transport's own per-message cost
(and ``channel / (transport + tls - stream)``, the whole against the sum of its parts).
Rounds run every variant in turn (order reversed every other round, so drifting machine
load hits all alike); the median round is used. Subtracting medians of noisy timings can
come out slightly negative for a layer this thin: read a value near zero as "below the
noise". No targets: this is a diagnostic.

Runs on the host only (``memory`` and ``udp`` transports): the layer is pure Python, so
its cost does not depend on the transport below, and the VM's emulated Python would only
scale it. These rows are all on loopback, in one process (``"path": "loopback"``).

CPU per SCTP packet (issue 11)
------------------------------
Two workloads, **bulk** (16 KiB messages, each cut into 12 DATA chunks of one packet
each) and **small** (100-byte messages, about 12 bundled per packet), in packets of an
Ethernet MTU (1500):

* ``core_rows``: the sans-IO core (``trio_sctls.sctp``) alone, each side measured alone
  with :func:`time.process_time` over a whole replayed transfer
  (:mod:`benchmarks._core_cost`): ``send_us_per_packet`` is the sender's CPU (queueing
  messages, building packets, CRC32c, processing SACKs) per DATA packet,
  ``receive_us_per_packet`` the receiver's (parsing, TSN tracking, reassembly, delivery,
  SACKs) per DATA packet. Absolute microseconds, not ratios.
* ``path_rows``: the whole udp transport path (sockets, pump, endpoint, core, the
  ``MessageTransport`` API; no TLS) (:mod:`benchmarks._udp_cost`). Over the ``veth``
  pair (the standard host scenario: two network namespaces, MTU ``--mtu``, one process
  each end; needs root, else the run says so loudly and records why in
  ``netns_status``) per side: the sender's CPU per datagram sent, the receiver's per
  datagram received; ``send_vs_core`` / ``receive_vs_core`` are the side's CPU *per
  message* as a ratio to the core's for the same side and workload (what the whole path
  costs as a multiple of the core alone; per message because the packets differ: the
  transport chooses its own packet size, until path MTU discovery a fixed 1,200-byte
  MTU off loopback, and, flushing after each ``send_message``, bundles fewer small
  messages per packet than the core's replay, where the sender queues many before it
  flushes). On ``loopback`` (one process, the
  transport's loopback MTU, so bigger packets) one figure for both sides together per
  DATA datagram. ``both_us_per_message``: both sides' CPU per message, on either path.

    python -m benchmarks.overhead [--quick] [--messages 4000] [--rounds 5]
        [--sizes 1024 16384] [--kinds memory udp] [--paths veth loopback] [--mtu 1500]
        [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from argparse import Namespace
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

import trio_sctls
from benchmarks import _core_cost, _udp_cost
from benchmarks._common import (
    SERVER_NAME,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    save_figure,
)
from benchmarks._loopback import LOOPBACK, connect_association, serving_associations
from benchmarks._netns import DEFAULT_MTU
from benchmarks._peer import veth_or_why
from benchmarks.throughput import parse_size
from trio_sctls import Message, MessageTransport, SecureAssociation

NAME = "overhead"
WHERE = ("host",)

#: A measurement that takes longer is stuck: fail instead of hanging the suite.
TIMEOUT = 300.0
#: Bytes a TLS record adds to its plaintext with the default AES-GCM ciphers: header (5)
#: and tag (16), plus the inner content type in TLS 1.3 (1) or the explicit nonce in
#: TLS 1.2 (8). The bare transport sends messages of the records' size, so that the
#: subtraction compares like with like (transports cut messages into chunks by size).
RECORD_OVERHEAD = {"1.3": 22, "1.2": 29}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options; ``--quick`` makes every default smaller."""
    parser.add_argument(
        "--messages", type=int, help="messages per measurement (default 4000; 300 with --quick)"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 5; 1 with --quick)")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[1024, 16 * 1024])
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=["memory", "udp", "kernel"],
        default=["memory", "udp"],
        help="transports (kernel needs kernel SCTP)",
    )
    parser.add_argument("--tls", choices=sorted(TLS_VERSIONS), default="1.3")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["veth", "loopback"],
        default=["veth", "loopback"],
        help="paths of the per-packet udp figures (veth needs root)",
    )
    parser.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="the veth pair's MTU")


#: Per-packet workloads of the udp path: name -> (message size, messages, with --quick).
PATH_WORKLOADS = {"bulk": (16 * 1024, 1000, 60), "small": (100, 12000, 600)}
#: Seconds the client process of a veth run may take.
PEER_TIMEOUT = 900.0


def _path_workloads(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    quick = getattr(args, "quick", False)
    return {
        name: (size, few if quick else many) for name, (size, many, few) in PATH_WORKLOADS.items()
    }


def _rounds(args: argparse.Namespace) -> int:
    return int(args.rounds or (1 if getattr(args, "quick", False) else 5))


# -- what is measured ------------------------------------------------------------------

#: ``run(payload, count)``: send ``count`` messages of ``payload`` and receive them all.
Runner = Callable[[bytes, int], Awaitable[None]]


def message_runner(sender: MessageTransport, receiver: MessageTransport, extra: int = 0) -> Runner:
    """Bare transport: ``send_message`` on stream 0, ``receive`` until all arrived; each
    message ``extra`` bytes longer than the payload (the TLS record's size)."""

    async def receive(count: int) -> None:
        got = 0
        while got < count:
            item = await receiver.receive()
            if isinstance(item, Message):
                got += 1

    async def run(payload: bytes, count: int) -> None:
        payload += b"r" * extra
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, count)
            send = sender.send_message
            for _ in range(count):
                await send(payload, stream=0)

    return run


def stream_runner(sender: trio.abc.SendStream, receiver: trio.abc.ReceiveStream) -> Runner:
    """A byte stream: ``send_all`` each message, ``receive_some`` until all arrived."""

    async def receive(nbytes: int) -> None:
        got = 0
        while got < nbytes:
            data = await receiver.receive_some()
            if not data:
                raise RuntimeError(f"stream ended after {got} of {nbytes} bytes")
            got += len(data)

    async def run(payload: bytes, count: int) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, len(payload) * count)
            send = sender.send_all
            for _ in range(count):
                await send(payload)

    return run


@asynccontextmanager
async def transport_pair(kind: str) -> AsyncIterator[tuple[MessageTransport, MessageTransport]]:
    """An established (client, server) plain SCTP pair of ``kind``, on loopback."""
    udp = kind == "udp"
    async with (
        trio_sctls.open_listener(
            0,
            host=LOOPBACK,
            transport=kind,  # type: ignore[arg-type]
            outbound_streams=1,
            max_inbound_streams=1,
            udp_port=0 if udp else None,
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        accepted: list[MessageTransport] = []
        done = trio.Event()

        async def accept() -> None:
            accepted.append(await listener.accept())
            done.set()

        nursery.start_soon(accept)
        async with trio_sctls.open_transport(
            LOOPBACK,
            listener.port,
            transport=kind,  # type: ignore[arg-type]
            outbound_streams=1,
            max_inbound_streams=1,
            remote_udp_port=listener.udp_port,
        ) as client:
            await done.wait()
            server = accepted[0]
            try:
                yield client, server
            finally:
                client.abort()
                server.abort()


@asynccontextmanager
async def association_pair(
    kind: str, server_ctx: Any, client_ctx: Any
) -> AsyncIterator[tuple[trio_sctls.Channel, trio_sctls.Channel]]:
    """One established TLS channel: (client side, server side), over ``kind``."""
    send_server, receive_server = trio.open_memory_channel[SecureAssociation](1)

    async def handler(association: SecureAssociation) -> None:
        await send_server.send(association)
        await trio.sleep_forever()

    async with (
        serving_associations(handler, server_ctx, transport=kind, streams=1) as address,
        connect_association(
            address, client_ctx, transport=kind, streams=1, session_cache=None, close_timeout=1.0
        ) as association,
    ):
        server = await receive_server.receive()
        yield association.channels[0], server.channels[0]
        association.abort()


@asynccontextmanager
async def tls_stream_pair(
    server_ctx: Any, client_ctx: Any
) -> AsyncIterator[tuple[trio.SSLStream[Any], trio.SSLStream[Any]]]:
    """trio SSLStreams over a trio memory stream pair, handshake done."""
    left, right = trio.testing.memory_stream_pair()
    client = trio.SSLStream(left, client_ctx, server_hostname=SERVER_NAME)
    server = trio.SSLStream(right, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    yield client, server


# -- the benchmark ---------------------------------------------------------------------


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """The layers (loopback), then the core's and the udp path's CPU per packet; see the
    module docstring."""
    result = await _measure_layers(args, progress)
    for row in result["rows"]:
        row["path"] = "loopback"
    result["core_rows"] = core_rows(args, progress)
    path_rows, netns_status = await _measure_paths(args, progress)
    core = {row["workload"]: row for row in result["core_rows"]}
    for row in path_rows:
        if "send_us_per_packet" in row:
            base = core[row["workload"]]
            # Per message, not per packet: the path bundles fewer small messages per
            # packet than the replayed core does (its sender flushes after each one).
            for side in ("send", "receive"):
                row[f"{side}_vs_core"] = round(
                    row[f"{side}_us_per_message"] / base[f"{side}_us_per_message"], 2
                )
    result["path_rows"] = path_rows
    result["netns_status"] = netns_status
    result["paths"] = {
        "veth": f"veth pair between two network namespaces, MTU {args.mtu}, one process each end",
        "loopback": "127.0.0.1, both ends in one process",
    }
    return result


def core_rows(args: argparse.Namespace, progress: Progress) -> list[dict[str, Any]]:
    """The sans-IO core's CPU per packet, each side alone (:mod:`benchmarks._core_cost`)."""
    quick = getattr(args, "quick", False)
    rows = []
    for name, workload in _core_cost.WORKLOADS.items():
        messages = max(1, workload.messages // 20) if quick else workload.messages
        progress.update(f"core: {name} ({messages} messages of {workload.size} B), replays")
        row = _core_cost.measure(
            _core_cost.Workload(name, workload.size, messages, args.mtu), _rounds(args)
        )
        progress.log(
            f"core, {name:>5}: {row['send_us_per_packet']:6.2f} us per packet sent, "
            f"{row['receive_us_per_packet']:6.2f} us per packet received "
            f"({row['messages_per_packet']} messages per packet)"
        )
        rows.append(row)
    return rows


async def _measure_paths(
    args: argparse.Namespace, progress: Progress
) -> tuple[list[dict[str, Any]], str]:
    """The udp path's CPU per packet over each of ``--paths``; and the ``netns_status``."""
    rows: list[dict[str, Any]] = []
    netns_status = "not asked"
    for path in args.paths:
        if path == "veth":
            result, netns_status = await veth_or_why(
                NAME,
                "OVERHEAD",
                _peer_arguments(args),
                progress,
                mtu=args.mtu,
                time_limit=PEER_TIMEOUT,
            )
            if result is None:
                continue
            found = result["path_rows"]
        else:
            async with (
                _udp_cost.listening(LOOPBACK) as (port, udp_port),
                _udp_cost.connected(LOOPBACK, port, udp_port) as client,
            ):
                progress.update("udp path on loopback")
                found = await _udp_cost.run_transfers(
                    client, _path_workloads(args), _rounds(args), split=False
                )
        for row in found:
            row["path"] = path
            progress.log(f"udp path, {path}: {_describe(row)}")
        rows += found
    return rows, netns_status


def _describe(row: dict[str, Any]) -> str:
    if "send_us_per_packet" in row:
        per_packet = (
            f"{row['send_us_per_packet']:.1f} us per packet sent, "
            f"{row['receive_us_per_packet']:.1f} us per packet received"
        )
    else:
        per_packet = f"{row['both_us_per_packet']:.1f} us per packet, both ends"
    return f"{row['workload']:>5}: {per_packet} ({row['both_us_per_message']:.1f} us per message)"


def _peer_arguments(args: argparse.Namespace) -> list[str]:
    """The options that make the two processes measure what this one would."""
    return [
        *(["--quick"] if getattr(args, "quick", False) else []),
        *("--rounds", str(_rounds(args))),
    ]


#: The veth scenario's server description (its ports), and its task status.
Info = dict[str, Any]
Status = trio.TaskStatus[Info]
IGNORED = trio.TASK_STATUS_IGNORED


async def serve_peer(args: Namespace, host: str, _: Path, task_status: Status = IGNORED) -> None:
    """The receiving process of the veth scenario (:mod:`benchmarks._peer`): a udp
    listener answering transfers; reports its ports."""
    async with _udp_cost.listening(host) as (port, udp_port):
        task_status.started({"port": port, "udp_port": udp_port})
        await trio.sleep_forever()


async def measure_peer(args: Namespace, host: str, _: Path, server: Info, log: Progress) -> Info:
    """The sending process of the veth scenario: transfers to :func:`serve_peer`."""
    async with _udp_cost.connected(host, server["port"], server["udp_port"]) as client:
        log.update("udp path over the veth pair")
        rows = await _udp_cost.run_transfers(
            client, _path_workloads(args), _rounds(args), split=True
        )
    return {"path_rows": rows}


async def _measure_layers(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Measure every variant for every size; see the module docstring."""
    quick = getattr(args, "quick", False)
    count = args.messages or (300 if quick else 4000)
    rounds = _rounds(args)
    kinds: list[str] = list(args.kinds)
    sizes: list[int] = list(args.sizes)
    server_ctx, client_ctx = contexts(TLS_VERSIONS[args.tls])

    runners: dict[str, Runner] = {}
    ciphers: set[str] = set()
    async with AsyncExitStack() as stack:
        progress.update("setting up")
        left, right = trio.testing.memory_stream_pair()
        runners["stream"] = stream_runner(left, right)
        tls_client, tls_server = await stack.enter_async_context(
            tls_stream_pair(server_ctx, client_ctx)
        )
        runners["tls"] = stream_runner(tls_client, tls_server)
        cipher = tls_client.cipher()
        assert cipher is not None
        ciphers.add(cipher[0])
        for kind in kinds:
            client, server = await stack.enter_async_context(transport_pair(kind))
            runners[f"transport/{kind}"] = message_runner(client, server, RECORD_OVERHEAD[args.tls])
            channel, peer = await stack.enter_async_context(
                association_pair(kind, server_ctx, client_ctx)
            )
            runners[f"channel/{kind}"] = stream_runner(channel, peer)
            channel_cipher = channel.cipher()
            assert channel_cipher is not None
            ciphers.add(channel_cipher[0])
        if len(ciphers) != 1:
            raise RuntimeError(f"ciphers differ: {ciphers}")

        progress.update("warming up")
        for run in runners.values():
            await run(b"w" * sizes[0], 50)

        samples: dict[tuple[str, int], list[float]] = {
            (name, size): [] for name in runners for size in sizes
        }
        order = list(samples)
        for round_index in range(rounds):
            for i, (name, size) in enumerate(order if round_index % 2 == 0 else order[::-1]):
                progress.update(
                    f"round {round_index + 1}/{rounds}: {name}, {size} B "
                    f"({i}/{len(order)} this round, {count} messages each)"
                )
                payload = b"m" * size
                started = time.perf_counter()
                with trio.fail_after(TIMEOUT):
                    await runners[name](payload, count)
                samples[name, size].append((time.perf_counter() - started) / count * 1e6)

    def us(name: str, size: int) -> float:
        return statistics.median(samples[name, size])

    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for size in sizes:
            transport_us = us(f"transport/{kind}", size)
            channel_us = us(f"channel/{kind}", size)
            tls_alone = us("tls", size) - us("stream", size)
            overhead = channel_us - transport_us - tls_alone
            row: dict[str, Any] = {
                "transport": kind,
                "message_size": size,
                "transport_us": round(transport_us, 2),
                "channel_us": round(channel_us, 2),
                "tls_us": round(us("tls", size), 2),
                "stream_us": round(us("stream", size), 2),
                "tls_alone_us": round(tls_alone, 2),
                "overhead_us": round(overhead, 2),
                "overhead_vs_transport": round(overhead / transport_us, 3),
                "channel_vs_parts": round(channel_us / (transport_us + tls_alone), 3),
            }
            rows.append(row)
            progress.log(
                f"{kind:>6}, {size:>5} B: channel {channel_us:7.1f} us = transport "
                f"{transport_us:6.1f} + TLS {tls_alone:6.1f} + demux/pipe {overhead:6.1f} "
                f"({overhead / transport_us:.2f}x the bare transport)"
            )
    return {
        "name": NAME,
        "messages": count,
        "rounds": rounds,
        "tls": args.tls,
        "cipher": ciphers.pop(),
        "samples_us": {
            f"{name} {size}": [round(v, 2) for v in s] for (name, size), s in samples.items()
        },
        "rows": rows,
        "targets": [],
    }


def summarize(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the README."""
    lines = [
        f"Microseconds per message (median of {result['rounds']} rounds of "
        f"{result['messages']} messages); demux + pipe = TLS channel - bare transport - "
        "(TLS over a trio memory stream - the memory stream).",
        "",
        "| transport | message | bare transport | TLS alone | demux + pipe "
        "| overhead / transport |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['transport']} | {row['message_size']} B | {row['transport_us']:.1f} us "
            f"| {row['tls_alone_us']:.1f} us | {row['overhead_us']:.1f} us "
            f"| {row['overhead_vs_transport']:.2f}x |"
        )
    return lines + _per_packet_lines(result)


def _per_packet_lines(result: dict[str, Any]) -> list[str]:
    """The per-packet tables: the core alone, then the udp path on each path."""
    if "core_rows" not in result:
        return []
    lines = [
        "",
        "CPU microseconds per SCTP packet, each side (absolute, not ratios): the sans-IO "
        "core alone (replayed transfers, MTU 1500), and the whole udp transport path "
        "(no TLS); the `/ core` columns are the path's CPU per message as a ratio to the "
        "core's, same side and workload.",
        "",
        "| what | workload | messages / packet | sent | received | sent / core | received / core |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["core_rows"]:
        lines.append(
            f"| core | {row['workload']} ({row['message_size']} B) "
            f"| {row['messages_per_packet']} | {row['send_us_per_packet']:.1f} us "
            f"| {row['receive_us_per_packet']:.1f} us | 1 | 1 |"
        )
    for row in result.get("path_rows", []):
        where = f"udp path, {row['path']}"
        if "send_us_per_packet" in row:
            lines.append(
                f"| {where} | {row['workload']} ({row['message_size']} B) "
                f"| {row['messages'] / row['data_packets']:.2f} "
                f"| {row['send_us_per_packet']:.1f} us | {row['receive_us_per_packet']:.1f} us "
                f"| {row['send_vs_core']:.2f}x | {row['receive_vs_core']:.2f}x |"
            )
        else:
            lines.append(
                f"| {where} (one process) | {row['workload']} ({row['message_size']} B) "
                f"| {row['messages'] / row['data_packets']:.2f} "
                f"| {row['both_us_per_packet']:.1f} us, both sides | | | |"
            )
    if result.get("netns_status", "ok") not in ("ok", "not asked"):
        lines.append(f"No veth figures: {result['netns_status']}.")
    return lines


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """Stacked bars per (transport, size): transport, TLS alone, demux + pipe; a marker
    for the measured channel cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{row['transport']}\n{row['message_size']} B" for row in rows]
    xs = list(range(len(rows)))
    transport = [row["transport_us"] for row in rows]
    tls = [row["tls_alone_us"] for row in rows]
    overhead = [row["overhead_us"] for row in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.bar(xs, transport, label="bare transport")
    ax.bar(xs, tls, bottom=transport, label="TLS + SSLStream alone")
    bottoms = [a + b for a, b in zip(transport, tls, strict=True)]
    bars = ax.bar(xs, overhead, bottom=bottoms, label="demux + pipe (ours)")
    ax.bar_label(
        bars,
        labels=[
            f"{row['overhead_us']:.0f} us\n{row['overhead_vs_transport']:.2f}x" for row in rows
        ],
        fontsize=8,
    )
    ax.scatter(
        xs,
        [row["channel_us"] for row in rows],
        color="black",
        marker="_",
        s=400,
        label="channel, measured",
        zorder=3,
    )
    top = max(max(row["channel_us"], row["transport_us"] + row["tls_alone_us"]) for row in rows)
    ax.set_ylim(0, top * 1.3)
    ax.set_xticks(xs, labels)
    ax.set_ylabel("microseconds per message")
    ax.set_title("Per-message cost of a TLS channel, by layer (host)")
    ax.legend(fontsize=8, loc="upper left")
    paths = [save_figure(fig, directory / "overhead.png", dpi=100)]
    if result.get("core_rows"):
        paths.append(_plot_per_packet(result, directory))
    return paths


def _plot_per_packet(result: dict[str, Any], directory: Path) -> Path:
    """Bars of CPU µs per packet sent and received: the core alone, the udp path over
    the veth pair (per side) and on loopback (both sides, one process)."""
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float]] = [
        (f"core\n{row['workload']}", row["send_us_per_packet"], row["receive_us_per_packet"])
        for row in result["core_rows"]
    ]
    for row in result.get("path_rows", []):
        label = f"udp {row['path']}\n{row['workload']}"
        if "send_us_per_packet" in row:
            bars.append((label, row["send_us_per_packet"], row["receive_us_per_packet"]))
        else:
            bars.append((label + "\n(both)", row["both_us_per_packet"], 0.0))
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    xs = list(range(len(bars)))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [b[1] for b in bars], width, label="sent (or both)")
    ax.bar([x + width / 2 for x in xs], [b[2] for b in bars], width, label="received")
    ax.set_xticks(xs, [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("CPU microseconds per SCTP packet")
    ax.set_title("CPU per packet: the sans-IO core and the udp path (host)")
    ax.legend(fontsize=8)
    return save_figure(fig, directory / "overhead_per_packet.png", dpi=100)


def main(argv: Sequence[str] | None = None) -> None:
    benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
