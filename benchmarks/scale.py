"""Scale: many concurrent idle associations with 4 TLS channels each, in one process.

Each measurement runs in a fresh child process (so that memory freed by one does not
flatter the next), which starts a server and then ``N`` client associations on loopback,
every one with ``--channels`` TLS channels whose handshakes have all completed, and then:

* **set-up**: the wall time from the first client to the last association being ready
  (at most ``--concurrency`` associations opening at once), and the process CPU time it
  took (which a loaded machine disturbs less: the scaling target uses it);
* **memory per association pair** (client end + server end, both in this process): the
  growth of the process's resident set (``VmRSS`` in ``/proc/self/status``) from the
  listening server to ``N`` idle associations, over ``N``; the per-side figure is half of
  it (both ends hold the same kinds of objects; ``--trace`` runs a tracemalloc pass that
  shows where the Python heap goes);
* **CPU at idle**: process CPU time (user + system) over ``--idle`` seconds of idle wall
  time, as a percentage of one core. SCTP keeps sending heartbeats meanwhile: each
  association end sends one HEARTBEAT (answered by a HEARTBEAT ACK) every HB.interval
  + RTO (30 s + 0.2 s on loopback), so the expected rate is reported beside it, with
  the datagrams our UDP sockets actually sent and received in the window. The default
  window (31 s) is a whole heartbeat interval, so every association end beats in it;
* **still alive**: after the idle time every association echoes one byte on every
  channel, then closes gracefully (the client's ``async with`` ends, close_notify on
  every channel, SCTP SHUTDOWN); both are counted.

Kinds, all with the same certificate (ECDSA P-256) and TLS version:

* ``udp``: trio-sctls over our SCTP over UDP. The clients share one UDP socket
  (``udp_port=`` a fixed port: one file descriptor, one pump for all of them), the server
  has its own;
* ``udp-own``: the same, but every client association has a UDP socket of its own
  (``udp_port=0``, the default of ``open_association``): ``N`` + 1 sockets;
* ``memory``: trio-sctls over the in-process memory transport: the cost of the TLS and
  association layers without SCTP;
* ``tcp``: the baseline, trio's ``SSLStream`` over TCP, ``--channels`` connections per
  association (so ``4 N`` TLS connections, ``8 N`` sockets in the process), i.e. the
  same number of TLS channels as trio-sctls.

File descriptors: the TCP baseline needs ``8 N`` of them and ``udp-own`` ``N``; each
child raises its soft ``RLIMIT_NOFILE`` to the hard limit (reported) when it needs more.

    python -m benchmarks.scale [--quick] [--sizes 100 1000] [--idle 31]
                               [--kinds udp udp-own memory tcp] [--concurrency 32]
                               [--json out.json] [--plots DIR] [--trace] [--profile F]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal

import trio

import trio_sctls
from trio_sctls import SecureAssociation
from trio_sctls.sctp import SCTPConfig

from ._common import (
    ROOT,
    SERVER_NAME,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    target,
)

NAME = "scale"
WHERE = ("host",)

KINDS = ("udp", "udp-own", "memory", "tcp")
#: Kinds measured at every size; the others at the largest size only.
EVERY_SIZE = ("udp", "tcp")
#: Seconds a child may take before it is killed.
CHILD_TIMEOUT = 1200.0
#: Seconds after the last handshake before memory is read: delayed SACKs, session
#: tickets and the like settle.
SETTLE = 1.0
#: Our own limits (the issue sets none): idle CPU for ``N`` associations at the largest
#: size, and how much the set-up time per association may grow from the smallest size to
#: the largest (1 = linear; O(N^2) work shows as a ratio growing with N).
IDLE_CPU_LIMIT = 10.0
SETUP_GROWTH_LIMIT = 2.0
#: How much the CPU per event at one endpoint may grow from the smallest N to 10x the
#: largest (it should not grow at all; 3 leaves room for caches and noise).
CORE_GROWTH_LIMIT = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of this benchmark (``--quick`` lowers the defaults)."""
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="numbers of associations (default 100 1000; --quick: 20 50)",
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        default=["udp", "memory", "tcp"],
        help="what to measure (default: udp memory tcp; udp-own and memory at the largest "
        "size only)",
    )
    parser.add_argument("--channels", type=int, default=4, help="TLS channels per association")
    parser.add_argument(
        "--idle",
        type=float,
        help="seconds of idle time measured (default 31: one whole heartbeat interval, "
        "so every association end beats once in it; --quick: 3)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="associations opening at once")
    parser.add_argument("--tls", choices=sorted(TLS_VERSIONS), default="1.3")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also run udp at the largest size under tracemalloc: Python heap per "
        "association and the biggest allocation sites",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="also run udp at the largest size with cProfile around the set-up and the "
        "idle time; write the profiles to FILE-setup.prof and FILE-idle.prof and print "
        "the top functions",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)


# -- one measurement, in a child process -------------------------------------------------


def _rss() -> int:
    """Resident set size of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit if ``needed`` is above it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return int(probe.getsockname()[1])


class _Tally:
    """Counts of client associations through their life, and a wake-up for each."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ready = 0
        self.done = 0
        self.echoed = 0
        self.closed = 0
        self.server_closed = 0
        self.failures: list[str] = []
        self.all_ready = trio.Event()
        self.all_done = trio.Event()
        self.go = trio.Event()
        self.all_server_closed = trio.Event()

    def mark_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.n:
            self.all_ready.set()

    def mark_done(self, failure: BaseException | None = None) -> None:
        if failure is not None:
            self.failures.append(repr(failure)[:200])
        self.done += 1
        if self.done >= self.n:
            self.all_done.set()


async def _echo_channels(channels: list[Any], tally: _Tally, closed: Callable[[], None]) -> None:
    async def echo(channel: Any) -> None:
        try:
            while data := await channel.receive_some():
                await channel.send_all(data)
            await channel.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(echo, channel)
    closed()


async def _ping(channels: list[Any]) -> bool:
    """One byte each way on every channel, all channels at once."""
    for channel in channels:
        await channel.send_all(b"x")
    ok = True
    for channel in channels:
        ok = ok and await channel.receive_some(1) == b"x"
    return ok


async def _sctls_client(
    i: int,
    *,
    tally: _Tally,
    limiter: trio.CapacityLimiter,
    options: dict[str, Any],
) -> None:
    await limiter.acquire_on_behalf_of(i)
    held = True
    try:
        async with trio_sctls.open_association(**options) as association:
            limiter.release_on_behalf_of(i)
            held = False
            tally.mark_ready()
            await tally.go.wait()
            if await _ping(list(association.channels)):
                tally.echoed += 1
        tally.closed += 1
    except Exception as exc:
        if held or tally.ready < tally.n:
            tally.mark_ready()  # do not hang the set-up on a failure
        tally.mark_done(exc)
        return
    finally:
        if held:
            limiter.release_on_behalf_of(i)
    tally.mark_done()


async def _tcp_client(
    i: int,
    *,
    tally: _Tally,
    limiter: trio.CapacityLimiter,
    port: int,
    channels: int,
    context: Any,
) -> None:
    await limiter.acquire_on_behalf_of(i)
    held = True
    streams: list[trio.SSLStream[trio.SocketStream]] = []
    try:
        for _ in range(channels):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            streams.append(trio.SSLStream(tcp, context, server_hostname=SERVER_NAME))
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(stream.do_handshake)
        limiter.release_on_behalf_of(i)
        held = False
        tally.mark_ready()
        await tally.go.wait()
        if await _ping(list(streams)):
            tally.echoed += 1
        for stream in streams:
            await stream.aclose()
        tally.closed += 1
    except Exception as exc:
        if held or tally.ready < tally.n:
            tally.mark_ready()
        for stream in streams:
            stream.transport_stream.socket.close()
        tally.mark_done(exc)
        return
    finally:
        if held:
            limiter.release_on_behalf_of(i)
    tally.mark_done()


def _udp_sockets() -> list[Any]:
    """Every UDP socket of our SCTP-over-UDP driver in this process."""
    from trio_sctls.transport import udp

    return [o for o in gc.get_objects() if type(o) is udp._UDPSocket]


def _datagrams(sockets: list[Any]) -> tuple[int, int]:
    """Datagrams sent and received so far by ``sockets``."""
    sent = sum(getattr(s, "datagrams_sent", 0) for s in sockets)
    received = sum(getattr(s, "datagrams_received", 0) for s in sockets)
    return sent, received


def _expected_heartbeats(kind: str, n: int) -> float:
    """HEARTBEATs per second we expect at idle, all association ends together."""
    if not kind.startswith("udp"):
        return 0.0
    from trio_sctls.transport.udp import LOOPBACK_RTO_MIN

    interval = SCTPConfig().heartbeat_interval
    assert interval is not None
    return 2 * n / (interval + LOOPBACK_RTO_MIN)


async def run_scenario(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """One measurement (see the module docs); ``emit`` gets progress and the result."""
    kind: str = spec["kind"]
    n: int = spec["n"]
    channels: int = spec["channels"]
    trace: bool = spec.get("trace", False)
    needed = (2 * n * channels if kind == "tcp" else n) + 256
    soft, hard = _raise_fd_limit(needed)
    server_ctx, client_ctx = contexts(TLS_VERSIONS[spec["tls"]])
    tally = _Tally(n)

    def label(text: str) -> None:
        emit({"progress": f"{kind} N={n}: {text}"})

    async def sctls_handler(association: SecureAssociation) -> None:
        await _echo_channels(list(association.channels), tally, server_closed)

    async def tcp_handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await _echo_channels([stream], tally, lambda: None)

    def server_closed() -> None:
        tally.server_closed += 1
        if tally.server_closed >= n:
            tally.all_server_closed.set()

    result: dict[str, Any] = {"kind": kind, "n": n, "channels": channels}
    async with trio.open_nursery() as nursery:
        transport: Literal["memory", "udp"] = "memory" if kind == "memory" else "udp"
        client: Callable[..., Awaitable[None]]
        if kind == "tcp":
            listeners = await nursery.start(
                partial(trio.serve_ssl_over_tcp, tcp_handler, 0, server_ctx, host="127.0.0.1")
            )
            port = listeners[0].transport_listener.socket.getsockname()[1]
            client = partial(_tcp_client, port=port, channels=channels, context=client_ctx)
        else:
            listener = await nursery.start(
                partial(
                    trio_sctls.serve,
                    sctls_handler,
                    0,
                    ssl_context=server_ctx,
                    host="127.0.0.1",
                    transport=transport,
                    outbound_streams=channels,
                    max_inbound_streams=channels,
                    udp_port=0 if transport == "udp" else None,
                )
            )
            options: dict[str, Any] = {
                "host": "127.0.0.1",
                "port": listener.port,
                "ssl_context": client_ctx,
                "server_hostname": SERVER_NAME,
                "transport": transport,
                "outbound_streams": channels,
                "max_inbound_streams": channels,
            }
            if transport == "udp":
                options["remote_udp_port"] = listener.udp_port
                options["udp_port"] = _free_udp_port() if kind == "udp" else 0
            client = partial(_sctls_client, options=options)
        await trio.sleep(0.1)
        gc.collect()
        if trace:
            tracemalloc.start()
            traced_before = tracemalloc.take_snapshot()
        rss_listening = _rss()
        fds_listening = _open_fds()
        tasks_listening = trio.lowlevel.current_statistics().tasks_living
        limiter = trio.CapacityLimiter(spec["concurrency"])
        profile = spec.get("profile")
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        started_cpu = time.process_time()
        for i in range(n):
            nursery.start_soon(partial(client, i, tally=tally, limiter=limiter))
        while not tally.all_ready.is_set():
            with trio.move_on_after(0.5):
                await tally.all_ready.wait()
            label(f"set-up {tally.ready}/{n}")
        setup = time.perf_counter() - started
        setup_cpu = time.process_time() - started_cpu
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}-setup.prof")
            profiler = cProfile.Profile()
        await trio.sleep(SETTLE)
        gc.collect()
        rss_up = _rss()
        result["tasks"] = trio.lowlevel.current_statistics().tasks_living - tasks_listening
        result["fds"] = _open_fds() - fds_listening
        if trace:
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            stats = snapshot.compare_to(traced_before, "lineno")
            grown = sum(stat.size_diff for stat in stats)
            result["traced_per_pair"] = grown / n
            result["top_sites"] = [
                {
                    "site": f"{Path(stat.traceback[0].filename).name}:{stat.traceback[0].lineno}",
                    "bytes_per_pair": round(stat.size_diff / n),
                    "blocks_per_pair": round(stat.count_diff / n, 2),
                }
                for stat in stats[:15]
            ]
        label(f"idle for {spec['idle']} s")
        sockets = _udp_sockets()
        counted = _datagrams(sockets)
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        wall = time.perf_counter()
        await trio.sleep(spec["idle"])
        idle_cpu = (time.process_time() - cpu) / (time.perf_counter() - wall) * 100
        idle_wall = time.perf_counter() - wall
        datagrams = [
            after - before for after, before in zip(_datagrams(sockets), counted, strict=True)
        ]
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(f"{profile}-idle.prof")
        label("echo on every channel, then close")
        echo_started = time.perf_counter()
        tally.go.set()
        with trio.move_on_after(300):
            await tally.all_done.wait()
        finish = time.perf_counter() - echo_started
        if kind != "tcp":
            with trio.move_on_after(30):
                await tally.all_server_closed.wait()
        nursery.cancel_scope.cancel()
    result.update(
        setup_s=setup,
        setup_cpu_s=setup_cpu,
        setup_per_assoc_ms=setup / n * 1000,
        setup_cpu_per_assoc_ms=setup_cpu / n * 1000,
        rss_listening=rss_listening,
        rss_up=rss_up,
        rss_per_pair=(rss_up - rss_listening) / n,
        rss_per_side=(rss_up - rss_listening) / n / 2,
        idle_s=spec["idle"],
        idle_cpu_percent=idle_cpu,
        heartbeats_per_s=_expected_heartbeats(kind, n),
        idle_datagrams_sent_per_s=datagrams[0] / idle_wall,
        idle_datagrams_received_per_s=datagrams[1] / idle_wall,
        echo_close_s=finish,
        echoed=tally.echoed,
        closed=tally.closed,
        server_closed=tally.server_closed if kind != "tcp" else None,
        first_failure=tally.failures[0] if tally.failures else "",
        failure_count=len(tally.failures),
        fd_soft_limit=soft,
        fd_hard_limit=hard,
    )
    emit({"result": result})


def _child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)

    def emit(item: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(item) + "\n")
        sys.stdout.flush()

    trio.run(run_scenario, spec, emit)


async def _run_child(spec: dict[str, Any], progress: Progress) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scale", "--child", json.dumps(spec)]
    result: dict[str, Any] | None = None
    with trio.fail_after(CHILD_TIMEOUT):
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, cwd=ROOT)
        assert process.stdout is not None
        try:
            buffer = b""
            while chunk := await process.stdout.receive_some():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    item = json.loads(line)
                    if "progress" in item:
                        progress.update(item["progress"])
                    elif "result" in item:
                        result = item["result"]
            status = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    if status != 0 or result is None:
        raise RuntimeError(f"scale child {spec} failed (exit status {status})")
    return result


# -- the sans-IO core alone ------------------------------------------------------------


def core_event_cost(n: int, events: int = 200) -> dict[str, Any]:
    """CPU time of one event at an :class:`~trio_sctls.sctp.Endpoint` holding ``n``
    idle associations: a peer's message arrives, the endpoint flushes, hands out the
    event and reports its next deadline. Sans-IO, simulated clock, no Trio: this is the
    part that must not grow with ``n`` (it grew linearly before the endpoint indexed its
    associations by pending work and deadline)."""
    import random

    from trio_sctls.sctp import Endpoint

    config = SCTPConfig(rto_min=0.2, rto_initial=0.5)
    hub = Endpoint(config, local_port=9899, rng=random.Random(1))
    leaves = [
        Endpoint(config, local_port=5000, accept=False, rng=random.Random(i)) for i in range(n)
    ]
    now = 0.0
    started = time.process_time()
    for leaf in leaves:
        leaf.connect("hub", now)
    for _ in range(4):  # INIT, INIT ACK, COOKIE ECHO, COOKIE ACK: whole rounds
        for i, leaf in enumerate(leaves):
            for data, _addr in leaf.datagrams_to_send(now):
                hub.receive_datagram(data, i, now)
        for data, to in hub.datagrams_to_send(now):
            assert isinstance(to, int)
            leaves[to].receive_datagram(data, "hub", now)
        while hub.next_event() is not None:
            pass
    setup = time.process_time() - started
    if len(hub.associations) != n:
        raise RuntimeError(f"only {len(hub.associations)} of {n} associations came up")
    started = time.process_time()
    for k in range(events):
        now += 0.001
        i = k * 7919 % n
        assoc = leaves[i].associations[0]
        assoc.send(b"x" * 100, stream=0)
        for data, _addr in leaves[i].datagrams_to_send(now):
            hub.receive_datagram(data, i, now)
        hub.datagrams_to_send(now)
        while hub.next_event() is not None:
            pass
        hub.timer_deadline()
    per_event = (time.process_time() - started) / events
    return {"n": n, "event_us": per_event * 1e6, "setup_cpu_s": setup}


# -- the benchmark -----------------------------------------------------------------------


def _summary(row: dict[str, Any]) -> str:
    ok = f"{row['echoed']}/{row['n']} echoed, {row['closed']}/{row['n']} closed"
    return (
        f"{row['kind']:8} N={row['n']:5}: set-up {row['setup_s']:6.1f} s "
        f"({row['setup_cpu_s']:5.1f} s CPU), "
        f"{row['rss_per_pair'] / 1024:6.1f} KiB per pair, idle CPU "
        f"{row['idle_cpu_percent']:5.2f} % ({row['idle_datagrams_sent_per_s']:.0f} datagrams/s, "
        f"{row['heartbeats_per_s']:.0f} heartbeats/s expected), {row['fds']} fds, "
        f"{row['tasks']} tasks, {ok}"
    )


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run every (kind, size) in a child process of its own; see the module docs."""
    sizes = sorted(args.sizes or ([20, 50] if args.quick else [100, 1000]))
    idle = args.idle if args.idle is not None else (3.0 if args.quick else 31.0)
    largest = sizes[-1]
    # (kind, N, mode): mode "" measures; "trace" and "profile" are extra diagnostic runs.
    plan: list[tuple[str, int, str]] = []
    for n in sizes:
        for kind in args.kinds:
            if kind in EVERY_SIZE or n == largest:
                plan.append((kind, n, ""))
    if args.trace:
        plan.append(("udp", largest, "trace"))
    if args.profile:
        plan.append(("udp", largest, "profile"))
    rows: list[dict[str, Any]] = []
    traced: dict[str, Any] | None = None
    for kind, n, mode in plan:
        spec = {
            "kind": kind,
            "n": n,
            "channels": args.channels,
            "idle": idle,
            "concurrency": args.concurrency,
            "tls": args.tls,
            "trace": mode == "trace",
            "profile": str(args.profile.resolve()) if mode == "profile" else None,
        }
        row = await _run_child(spec, progress)
        if mode == "profile":
            for phase in ("setup", "idle"):
                out = io.StringIO()
                stats = pstats.Stats(f"{spec['profile']}-{phase}.prof", stream=out)
                stats.sort_stats("tottime").print_stats(25)
                progress.log(f"udp N={n}, {phase}, by own time:\n{out.getvalue()}")
            continue
        if mode == "trace":
            traced = row
            progress.log(
                f"udp N={n} under tracemalloc: {row['traced_per_pair'] / 1024:.1f} KiB of "
                "Python heap per pair; biggest sites:"
            )
            for site in row["top_sites"]:
                progress.log(f"    {site['bytes_per_pair']:8} B  {site['site']}")
            continue
        rows.append(row)
        progress.log(_summary(row))
    core_rows = []
    for n in sorted({*sizes, 10 * largest}):
        progress.update(f"sans-IO endpoint with {n} associations")
        core = core_event_cost(n)
        core_rows.append(core)
        progress.log(
            f"core     N={n:5}: one event at an endpoint with N idle associations: "
            f"{core['event_us']:.0f} us CPU"
        )
    by = {(row["kind"], row["n"]): row for row in rows}
    targets = []
    for row in rows:
        if row["n"] == largest:
            targets.append(
                target(
                    f"{row['kind']} N={largest}: associations that echoed and closed",
                    min(row["echoed"], row["closed"]) / row["n"],
                    1.0,
                )
            )
    ratios: dict[str, float] = {}
    base = by.get(("tcp", largest))
    for kind in ("udp", "udp-own", "memory"):
        found = by.get((kind, largest))
        if found is None:
            continue
        row = found
        if base is not None:
            ratios[f"{kind}_memory_vs_tcp"] = row["rss_per_pair"] / max(base["rss_per_pair"], 1)
        if kind == "udp":
            targets.append(
                target(
                    f"udp N={largest}: idle CPU, % of one core",
                    row["idle_cpu_percent"],
                    IDLE_CPU_LIMIT,
                    at_most=True,
                )
            )
            small = by.get(("udp", sizes[0]))
            if small is not None and sizes[0] != largest:
                growth = row["setup_cpu_per_assoc_ms"] / small["setup_cpu_per_assoc_ms"]
                ratios["udp_setup_growth"] = growth
                targets.append(
                    target(
                        f"udp: set-up CPU time per association, N={largest} / N={sizes[0]}",
                        growth,
                        SETUP_GROWTH_LIMIT,
                        at_most=True,
                    )
                )
    if len(core_rows) > 1:
        growth = core_rows[-1]["event_us"] / core_rows[0]["event_us"]
        ratios["core_event_growth"] = growth
        targets.append(
            target(
                f"endpoint: CPU per event, N={core_rows[-1]['n']} / N={core_rows[0]['n']}",
                growth,
                CORE_GROWTH_LIMIT,
                at_most=True,
            )
        )
    return {
        "name": NAME,
        "parameters": {
            "sizes": sizes,
            "kinds": args.kinds,
            "channels": args.channels,
            "idle_s": idle,
            "concurrency": args.concurrency,
            "tls": args.tls,
        },
        "rows": rows,
        "core_rows": core_rows,
        "ratios": {key: round(value, 3) for key, value in ratios.items()},
        "traced": traced,
        "targets": targets,
    }


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """Memory per association pair, idle CPU and set-up time against N, per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    kinds = [k for k in KINDS if any(row["kind"] == k for row in rows)]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    panels = (
        ("rss_per_pair", 1 / 1024, "KiB per association pair (RSS)"),
        ("idle_cpu_percent", 1.0, "CPU at idle, % of one core"),
        ("setup_s", 1.0, "set-up time for all N, s"),
    )
    for axis, (key, scale, title) in zip(axes[:3], panels, strict=True):
        for kind in kinds:
            points = sorted((row["n"], row[key] * scale) for row in rows if row["kind"] == kind)
            xs = [x for x, _ in points]
            ys = [y for _, y in points]
            axis.plot(xs, ys, marker="o", label=kind)
        axis.set_title(title)
        axis.set_xlabel("concurrent associations N (4 TLS channels each)")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
    axes[0].legend()
    core = sorted((row["n"], row["event_us"]) for row in result.get("core_rows", []))
    axis = axes[3]
    axis.plot([x for x, _ in core], [y for _, y in core], marker="o", color="black")
    axis.set_xscale("log")
    axis.set_title("sans-IO endpoint: CPU per event, us")
    axis.set_xlabel("idle associations on the endpoint")
    axis.grid(alpha=0.3)
    axis.set_ylim(bottom=0)
    machine = result.get("machine", {})
    fig.suptitle(
        f"trio-sctls at scale, one process, loopback ({machine.get('machine', '')}, "
        f"{machine.get('date', '')})",
        fontsize=10,
    )
    fig.tight_layout()
    path = directory / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def summarize(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the README: one row per measurement."""
    lines = [
        "| kind | N | set-up s (CPU s) | KiB per pair (RSS) | idle CPU % "
        "| idle datagrams/s (HEARTBEATs/s expected) | fds | echoed+closed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ok = min(row["echoed"], row["closed"])
        lines.append(
            f"| {row['kind']} | {row['n']} | {row['setup_s']:.1f} ({row['setup_cpu_s']:.1f}) "
            f"| {row['rss_per_pair'] / 1024:.0f} | {row['idle_cpu_percent']:.2f} "
            f"| {row['idle_datagrams_sent_per_s']:.0f} ({row['heartbeats_per_s']:.0f}) "
            f"| {row['fds']} | {ok}/{row['n']} |"
        )
    core = ", ".join(
        f"N={row['n']}: {row['event_us']:.0f} us" for row in result.get("core_rows", [])
    )
    if core:
        lines += ["", f"One event at a sans-IO endpoint with N idle associations: {core}."]
    return lines


def main() -> None:
    """``python -m benchmarks.scale``."""
    if "--child" in sys.argv:
        _child_main(sys.argv[sys.argv.index("--child") + 1])
        return
    benchmark_main(NAME, add_arguments, measure, plot, __doc__)


if __name__ == "__main__":
    main()
