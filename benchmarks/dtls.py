"""DTLS over SCTP (RFC 6083) against RFC 3436 channels and TLS/TCP: throughput and set-up,
in one run, on the suite's standard host path (issue 12).

Path: a veth pair between two network namespaces, server and client in processes of
their own (MTU ``--mtu``, 1500), over the ``udp`` transport (the host kernel has no
SCTP); where the pair cannot be made the run says so loudly, records why in
``netns_status`` and measures on loopback (both ends in this process) instead.

* **Throughput**: ``--bytes`` (16 MiB; 256 KiB with ``--quick``) in 16,384-byte writes
  (2**14, the most plaintext one DTLS record, so one SCTP message, may carry), split
  evenly over 1 and 16 streams, concurrently, until the server has read it all
  (:mod:`benchmarks._transfer`: each stream's share announced, then acknowledged). Three
  kinds, set up once before the clock: DTLS over SCTP (one association, the share of
  stream i sent as messages on stream i), RFC 3436 (one association, one TLS channel
  per stream) and one trio ``SSLStream`` over TCP. The TLS/TCP and RFC 3436 servers
  and clients are :mod:`benchmarks.throughput`'s. Every round measures each kind, in
  an order that reverses every other round; a ratio is the median of the per-round
  ratios.
* **Set-up**: time until a DTLS association is ready (SCTP set-up with SCTP-AUTH and
  one DTLS handshake), against TCP connect plus one TLS handshake
  (:func:`benchmarks.handshakes.tls_tcp_ready`) and against an RFC 3436 association
  with one channel (:func:`benchmarks.handshakes.association_ready`), interleaved;
  the ratio is of the medians.

TLS 1.2 for all by default (DTLS is 1.2), one ECDSA P-256 certificate, default ciphers
(recorded). The rows are informational: the issue sets no bound, so the targets carry
none (:func:`benchmarks._common.target` with ``limit=None``).

    python -m benchmarks.dtls [--quick] [--bytes 16MiB] [--rounds 5] [--setups 9]
        [--channels 1 16] [--tls 1.2] [--mtu 1500] [--json out.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from benchmarks import throughput
from benchmarks._common import (
    SERVER_NAME,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    pyplot,
    save_figure,
    target,
    write_credentials,
)
from benchmarks._loopback import LOOPBACK, Address, _client_options, _serving
from benchmarks._netns import DEFAULT_MTU
from benchmarks._peer import NOT_WATCHED, Started, describe_paths, veth_or_why
from benchmarks._transfer import Link, answer_transfers, transfer
from benchmarks.handshakes import Peer, association_ready, tls_tcp_ready

NAME = "dtls"
WHERE = ("host",)
#: Every write: 2**14 bytes, the most plaintext one DTLS record carries (RFC 6083).
MESSAGE = 16_384
PEER_TIMEOUT = 1200.0
#: What the two ends tell each other, and results: JSON objects.
Info = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options; the names :mod:`benchmarks.throughput`'s servers read are the same."""
    parser.add_argument(
        "--bytes", type=throughput.parse_size, help="per transfer (16MiB; 256KiB with --quick)"
    )
    parser.add_argument("--rounds", type=int, help="throughput rounds (5; 1 with --quick)")
    parser.add_argument("--setups", type=int, help="set-ups of each kind (9; 3 with --quick)")
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tls", choices=sorted(TLS_VERSIONS), default="1.2")
    parser.add_argument("--mtu", type=int, default=DEFAULT_MTU, help="veth MTU (1500)")
    parser.set_defaults(messages=None, transport="udp", sizes=[MESSAGE])


# -- DTLS messages as one trio Stream per SCTP stream ------------------------------------


class _StreamOf(trio.abc.Stream):
    """One SCTP stream of a DTLS association as a byte stream: writes go as messages on
    it, reads are the messages the association's pump routed to it."""

    def __init__(self, association: Any, stream: int) -> None:
        self.association, self.stream = association, stream
        self.inbox, self.outbox = trio.open_memory_channel[bytes](math.inf)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        for start in range(0, len(data), MESSAGE):
            await self.association.send_message(data[start : start + MESSAGE], stream=self.stream)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self.outbox.receive()
        except trio.EndOfChannel:
            return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def _streams(association: Any, count: int) -> AsyncIterator[list[_StreamOf]]:
    """``count`` streams of ``association``, fed by one receiving task (the association
    has one receiver) while the block lasts; each ends when the association does."""
    streams = [_StreamOf(association, i) for i in range(count)]

    async def pump() -> None:
        try:
            async for message in association:
                streams[message.stream].inbox.send_nowait(message.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            for stream in streams:
                stream.inbox.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        yield streams
        nursery.cancel_scope.cancel()


async def _answer_dtls(association: Any) -> None:
    """The DTLS server: answer transfers on every stream, as throughput's servers do."""
    async with (
        _streams(association, association.inbound_streams) as streams,
        trio.open_nursery() as nursery,
    ):
        for stream in streams:
            nursery.start_soon(answer_transfers, stream)


def _dtls_contexts(credentials: Path) -> tuple[Any, Any]:
    from trio_sctls.dtls import create_dtls_context

    return create_dtls_context(
        server_side=True, certfile=credentials / "server.pem"
    ), create_dtls_context(cafile=credentials / "ca.pem")


def _open_dtls(address: Address, host: str, context: Any, streams: int) -> Any:
    from trio_sctls.dtls import open_dtls_association

    return open_dtls_association(
        host,
        address.port,
        ssl_context=context,
        server_hostname=SERVER_NAME,
        **_client_options(address, transport="udp", streams=streams, udp_port_to=None),
    )


# -- the two ends ------------------------------------------------------------------------


async def measure_peer(
    args: argparse.Namespace, host: str, credentials: Path, server: Info, progress: Progress
) -> Info:
    """The client process: throughput, then set-up, against :func:`serve_peer`."""
    _, client_ctx = contexts(TLS_VERSIONS[args.tls], credentials)
    _, dtls_ctx = _dtls_contexts(credentials)
    dtls_address = Address(*server["dtls"])
    async with AsyncExitStack() as stack:
        progress.update("setting up the TLS/TCP connection and the RFC 3436 associations")
        tcp, associations, links = await throughput.connect_peer(
            args, host, credentials, server, stack
        )
        kinds: dict[str, Link] = {"tls_tcp": links[0]}
        ciphers = {"tls_tcp": tcp.cipher()[0] if tcp.cipher() else None}
        for n in args.channels:
            kinds[f"rfc3436_{n}"] = links[n]
            ciphers["rfc3436"] = associations[n].channel_info(0).cipher
            progress.update(f"setting up a DTLS association with {n} stream(s)")
            association = await stack.enter_async_context(
                _open_dtls(dtls_address, host, dtls_ctx, n)
            )
            ciphers["dtls"] = association.cipher
            kinds[f"dtls_{n}"] = Link(
                await stack.enter_async_context(_streams(association, n)), None
            )
        seconds = await _throughput(args, progress, kinds)
    peer = Peer(host, server["tcp"], {1: Address(*server["sctls"]["1"])})
    setups = await _setups(args, progress, peer, client_ctx, dtls_address, dtls_ctx)
    return _rows(args, seconds, setups, ciphers)


async def serve_peer(
    args: argparse.Namespace, host: str, credentials: Path, task_status: Started = NOT_WATCHED
) -> None:
    """The server process: :mod:`benchmarks.throughput`'s servers, and a DTLS server
    offering the most streams asked; reports their ports."""
    from trio_sctls.dtls import serve_dtls

    server_ctx, _ = _dtls_contexts(credentials)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(throughput.serve_peer, args, host, credentials)
        async with _serving(
            serve_dtls,
            _answer_dtls,
            transport="udp",
            streams=max(args.channels),
            host=host,
            ssl_context=server_ctx,
        ) as address:
            task_status.started({**info, "dtls": [address.port, address.udp_port]})
            await trio.sleep_forever()


async def _throughput(
    args: argparse.Namespace, progress: Progress, kinds: dict[str, Link]
) -> dict[str, list[float]]:
    nbytes, _, rounds, _ = throughput._defaults(args)
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for link in kinds.values():  # warm up
        await transfer(link, 4 * len(link.streams) * MESSAGE, MESSAGE)
    order = list(kinds)
    for r in range(rounds):
        for kind in order if r % 2 == 0 else reversed(order):
            progress.update(f"throughput round {r + 1}/{rounds}: {kind}")
            with trio.fail_after(throughput.TRANSFER_TIMEOUT):
                seconds[kind].append(await transfer(kinds[kind], nbytes, MESSAGE))
    return seconds


async def _setups(
    args: argparse.Namespace,
    progress: Progress,
    peer: Peer,
    client_ctx: Any,
    dtls_address: Address,
    dtls_ctx: Any,
) -> dict[str, list[float]]:
    count = args.setups or (3 if args.quick else 9)
    out: dict[str, list[float]] = {"tls_tcp": [], "rfc3436_1": [], "dtls": []}
    for i in range(count + 1):  # the first of each warms up
        progress.update(f"set-up {i}/{count}")
        tcp, _ = await tls_tcp_ready(None, client_ctx, peer)
        sctls = await association_ready(
            None, client_ctx, channels=1, strategy="parallel", transport="udp", peer=peer
        )
        started = time.perf_counter()
        async with _open_dtls(dtls_address, peer.host, dtls_ctx, 1):
            dtls = time.perf_counter() - started
        if i:
            for kind, value in (("tls_tcp", tcp), ("rfc3436_1", sctls["seconds"]), ("dtls", dtls)):
                out[kind].append(value)
    return out


def _rows(
    args: argparse.Namespace,
    seconds: dict[str, list[float]],
    setups: dict[str, list[float]],
    ciphers: dict[str, Any],
) -> dict[str, Any]:
    nbytes = throughput._defaults(args)[0]
    mib = nbytes / 2**20
    rows: list[dict[str, Any]] = []
    for n in args.channels:
        dtls = seconds[f"dtls_{n}"]
        for against in (f"rfc3436_{n}", "tls_tcp"):
            ratios = [b / d for b, d in zip(seconds[against], dtls, strict=True)]
            rows.append(
                {
                    "measure": "throughput",
                    "streams": n,
                    "against": against,
                    "bytes": nbytes,
                    "message_size": MESSAGE,
                    "dtls_mib_s": round(mib / statistics.median(dtls), 2),
                    "against_mib_s": round(mib / statistics.median(seconds[against]), 2),
                    "ratio": round(statistics.median(ratios), 3),
                    "ratios": [round(r, 3) for r in ratios],
                }
            )
    for against in ("tls_tcp", "rfc3436_1"):
        ready, base = statistics.median(setups["dtls"]), statistics.median(setups[against])
        rows.append(
            {
                "measure": "set-up",
                "streams": 1,
                "against": against,
                "dtls_ms": round(ready * 1000, 3),
                "against_ms": round(base * 1000, 3),
                "ratio": round(ready / base, 3),
                # The best of each: DTLS's median includes any retransmission timeout.
                "dtls_best_ms": round(min(setups["dtls"]) * 1000, 3),
                "against_best_ms": round(min(setups[against]) * 1000, 3),
                "dtls_ms_all": [round(s * 1000, 3) for s in setups["dtls"]],
                "against_ms_all": [round(s * 1000, 3) for s in setups[against]],
            }
        )
    return {"rows": rows, "ciphers": ciphers, "rounds": throughput._defaults(args)[2]}


# -- the benchmark ---------------------------------------------------------------------

AGAINST = {
    "tls_tcp": "one TLS/TCP connection (trio SSLStream)",
    "rfc3436": "an RFC 3436 association with one TLS channel per stream",
}


def _against(key: str) -> str:
    return AGAINST["tls_tcp" if key == "tls_tcp" else "rfc3436"]


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Over the veth pair (else, loudly, loopback); see the module docstring."""
    peer_args = [
        *(["--quick"] if args.quick else []),
        *(["--bytes", str(args.bytes)] if args.bytes else []),
        *(["--rounds", str(args.rounds)] if args.rounds else []),
        *(["--setups", str(args.setups)] if args.setups else []),
        *("--channels", *map(str, args.channels), "--tls", args.tls),
    ]
    result, status = await veth_or_why(
        NAME,
        "DTLS THROUGHPUT AND SET-UP",
        peer_args,
        progress,
        mtu=args.mtu,
        time_limit=PEER_TIMEOUT,
    )
    path = "veth"
    if result is None:
        path, result = "loopback", await _measure_here(args, progress)
    label = throughput._path_label(path, args.mtu)
    rows = [{"path": path, **row} for row in result["rows"]]
    for row in rows:
        what = "set-up time" if row["measure"] == "set-up" else "throughput"
        ours, other, unit = _figures(row)
        progress.log(
            f"{path}: DTLS {what}, {row['streams']} stream(s) = {row['ratio']:.2f} x "
            f"{_against(row['against'])} ({ours} vs {other} {unit})"
        )
    targets = [
        target(
            f"DTLS/SCTP {row['measure']} over {path}, {row['streams']} stream"
            f"{'s' if row['streams'] > 1 else ''}, {_label(row)} / "
            f"{'TLS/TCP' if row['against'] == 'tls_tcp' else 'RFC 3436'}",
            row["ratio"],
            None,
            against=f"{_against(row['against'])} over {path}, same run",
        )
        for row in rows
    ]
    return {
        **result,
        "name": NAME,
        "tls": args.tls,
        "transport": "udp",
        "paths": {path: label},
        "netns_status": status,
        "rows": rows,
        "targets": targets,
    }


def _label(row: dict[str, Any]) -> str:
    if row["measure"] == "set-up":
        return "time until ready (lower is faster)"
    return "16 KiB writes, MiB/s (higher is faster)"


async def _measure_here(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Both ends in this process, on loopback: the same server and client."""
    with tempfile.TemporaryDirectory(prefix="trio-sctls-dtls-") as tmp:
        credentials = write_credentials(Path(tmp))
        async with trio.open_nursery() as nursery:
            info = await nursery.start(serve_peer, args, LOOPBACK, credentials)
            result = await measure_peer(args, LOOPBACK, credentials, info, progress)
            nursery.cancel_scope.cancel()
    return result


def _figures(row: Info) -> tuple[Any, Any, str]:
    """A row's DTLS figure, the other's, and their unit."""
    if row["measure"] == "throughput":
        return row["dtls_mib_s"], row["against_mib_s"], "MiB/s"
    return row["dtls_ms"], row["against_ms"], "ms"


def summarize(result: Info) -> list[str]:
    """The README's lines: each row's ratio, both figures, what it is a ratio to."""
    table = [
        f"| {row['measure']} | {row['streams']} | {row['ratio']:.2f}x | {ours} {unit} "
        f"| {other} {unit} | {_against(row['against'])} |"
        for row in result["rows"]
        for ours, other, unit in [_figures(row)]
    ]
    ciphers = result["ciphers"]
    return [
        f"DTLS 1.2 over SCTP ({ciphers.get('dtls')}) over `udp`, against TLS "
        f"{result['tls']} ({ciphers.get('rfc3436')}) in RFC 3436 channels and over TCP; "
        "medians.",
        *describe_paths(result),
        "",
        "| measure | streams | ratio | DTLS | the other | ratio to |",
        "|---|---:|---:|---:|---:|---|",
        *table,
    ]


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """One bar per row: its ratio, with what it is a ratio to."""
    plt = pyplot()
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(8.0, 4.0))
    labels = [
        f"{r['measure']}\n{r['streams']} str. / "
        f"{'TLS/TCP' if r['against'] == 'tls_tcp' else 'RFC 3436'}"
        for r in rows
    ]
    bars = ax.bar(range(len(rows)), [r["ratio"] for r in rows])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("DTLS / the other (throughput: higher is\nfaster; set-up: lower is faster)")
    ax.set_title(next(iter(result["paths"].values())), fontsize=9)
    return [save_figure(fig, directory / "dtls.png", dpi=100)]


def main(argv: Sequence[str] | None = None) -> None:
    """Run this benchmark alone."""
    benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
