"""One scale measurement, in a child process of its own: a server and ``N`` idle client
associations (or TLS/TCP connection groups) in this process, and what they cost.

``benchmarks/scale.py`` plans the measurements and starts one child per (kind, N), so
that memory freed by one measurement does not flatter the next:
``python -m benchmarks._scale_child SPEC`` takes the measurement's JSON ``spec`` and
writes JSON lines to stdout, ``{"progress": text}`` while it runs and
``{"result": row}`` at the end; :func:`run_child` is the parent's side.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import trio

from trio_sctls import SecureAssociation
from trio_sctls.sctp import SCTPConfig

from ._common import ROOT, SERVER_NAME, TLS_VERSIONS, Progress, contexts
from ._loopback import (
    LOOPBACK,
    Address,
    connect_association,
    serving_associations,
    serving_tls_over_tcp,
)

#: Seconds a child may take before it is killed.
CHILD_TIMEOUT = 1200.0
#: Seconds after the last handshake before memory is read: delayed SACKs, session
#: tickets and the like settle.
SETTLE = 1.0


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


Connect = Callable[[], AbstractAsyncContextManager[list[Any]]]


@asynccontextmanager
async def _association_channels(
    address: Address, client_ctx: Any, **options: Any
) -> AsyncIterator[list[Any]]:
    """The TLS channels of an association to ``address`` while it is open (closed
    gracefully at the end); ``options`` as for :func:`connect_association`."""
    async with connect_association(address, client_ctx, **options) as association:
        yield list(association.channels)


@asynccontextmanager
async def _tls_connections(*, port: int, channels: int, context: Any) -> AsyncIterator[list[Any]]:
    """``channels`` TLS/TCP connections to ``port``, connected one after the other and
    then shaking hands all at once (as an association's channels do); closed gracefully
    at the end, or their sockets closed at once on a failure."""
    streams: list[trio.SSLStream[trio.SocketStream]] = []
    try:
        for _ in range(channels):
            tcp = await trio.open_tcp_stream(LOOPBACK, port)
            streams.append(trio.SSLStream(tcp, context, server_hostname=SERVER_NAME))
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(stream.do_handshake)
        yield list(streams)
        for stream in streams:
            await stream.aclose()
    except Exception:
        for stream in streams:
            stream.transport_stream.socket.close()
        raise


async def _client(
    i: int, *, tally: _Tally, limiter: trio.CapacityLimiter, connect: Connect
) -> None:
    """Client ``i``'s life: open its channels (at most ``limiter``'s total opening at
    once), wait for the go, echo one byte on each channel, close; counted in ``tally``."""
    await limiter.acquire_on_behalf_of(i)
    held = True
    try:
        async with connect() as channels:
            limiter.release_on_behalf_of(i)
            held = False
            tally.mark_ready()
            await tally.go.wait()
            if await _ping(channels):
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
    async with trio.open_nursery() as nursery, AsyncExitStack() as servers:
        transport: Literal["memory", "udp"] = "memory" if kind == "memory" else "udp"
        connect: Connect
        if kind == "tcp":
            port = await servers.enter_async_context(serving_tls_over_tcp(tcp_handler, server_ctx))
            connect = partial(_tls_connections, port=port, channels=channels, context=client_ctx)
        else:
            address = await servers.enter_async_context(
                serving_associations(
                    sctls_handler, server_ctx, transport=transport, streams=channels
                )
            )
            # udp: the clients share one UDP socket, or (udp-own) each has its own.
            udp = {"udp_port": _free_udp_port() if kind == "udp" else 0}
            connect = partial(
                _association_channels,
                address,
                client_ctx,
                transport=transport,
                streams=channels,
                **(udp if transport == "udp" else {}),
            )
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
            nursery.start_soon(partial(_client, i, tally=tally, limiter=limiter, connect=connect))
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


async def run_child(spec: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Run one measurement in a child process, relaying its progress; return its row.

    Raises:
        RuntimeError: if the child fails or ends without a result.
    """
    command = [sys.executable, "-m", "benchmarks._scale_child", json.dumps(spec)]
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


if __name__ == "__main__":
    _child_main(sys.argv[1])
