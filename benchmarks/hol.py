"""Head-of-line blocking: request/response latency on 16 flows under packet loss,
one SCTP stream per flow against all flows multiplexed over one ordered connection.

Workload (the same in every case). ``--flows`` (16) independent request/response
flows. Each flow sends fixed-size requests (``--size``, 128 B, carrying the flow id and
a sequence number) at seeded Poisson times (``--rate`` per flow, open loop: a late
answer does not delay the next request); the server answers each with a response of the
same size on the same flow. A message's latency runs from the request's *scheduled*
time to the arrival of its response, so a sender held up by anything (the CPU, a full
buffer, the lock of a shared connection) is counted, not hidden. Every case starts
loss-free: connections and TLS handshakes, then ``--warmup`` seconds of traffic whose
samples are discarded; then the loss rate is switched on and the requests scheduled
during the next ``--duration`` seconds are measured; their responses are awaited (up to
``--drain`` seconds, still under loss; those that never come are counted as
``unanswered``); then loss is switched off and everything is closed. Cases alternate
between the two ways of carrying the flows so both see the same machine load; the Poisson
schedules depend only on the seed, the loss rate and the flow, so both see the same
requests.

Where (``WHERE``): on the host and in the kernel-SCTP VM, with different set-ups.

* In the VM (``TRIO_SCTLS_IN_VM=1``): loss comes from netem on the loopback interface
  (``tc qdisc add dev lo root netem delay 100ms loss X%``), so every packet, either way,
  is lost with probability X (netem's own random numbers: the guest kernel's netem takes
  no seed). Compared:

  - ``tls``: a trio-sctls association over Linux kernel SCTP with 16 TLS channels, flow
    *i* on channel *i* ("multi"), against the 16 flows multiplexed over ONE TLS/TCP
    connection (trio's ``SSLStream`` over TCP, ``TCP_NODELAY``; "single");
  - ``bare`` (reference, no TLS, none of our layers): one kernel SCTP association with 16
    streams, one message per request or response, against one plain TCP connection.

  Retransmission timers. Linux SCTP defaults to RTO.Min 1000 ms, RTO.Initial 3000 ms and
  a 200 ms delayed-SACK timer; Linux TCP uses a 200 ms minimum RTO (``TCP_RTO_MIN``), a
  1 s initial RTO and a delayed-ACK timer from 40 ms (``TCP_DELACK_MIN``). Comparing
  with SCTP's defaults would measure a timer setting, not head-of-line blocking, so the
  guest sets ``net.sctp.rto_min=200``, ``rto_initial=1000`` and ``sack_timeout=40``
  (``--sctp-rto-min``, ``--sctp-rto-initial``, ``--sctp-sack-timeout``; the result
  records them). What stays different is loss *detection*: TCP has RACK and tail loss
  probes (``tcp_recovery=1``, ``tcp_early_retrans=3``), Linux SCTP has fast retransmit
  on the third miss indication and the T3-rtx timer. The result also records the
  kernels' retransmission counters per case (``/proc/net/sctp/snmp``,
  ``/proc/net/netstat``).

* On the host (no SCTP in the kernel, no netem): trio-sctls over its own SCTP over UDP
  (``transport="udp"``) through :mod:`trio_sctls.impaired`'s seeded relay (the same loss
  rate both ways, per datagram). "multi" is 16 TLS channels as above; "single" is the 16
  flows multiplexed over ONE TLS channel on ONE SCTP stream through the same relay. TCP
  cannot be impaired in user space without privileges, so a single ordered stream of the
  same SCTP code over the same impaired link stands in for "one TCP connection": it has
  the same head-of-line blocking (one lost packet holds back everything behind it), and
  the same loss recovery and timers as the multi-stream case (RTO.Min 200 ms on
  loopback, RTO.Initial 500 ms, 200 ms delayed SACK), so the difference between the two
  is head-of-line blocking alone.

The link has a one-way delay too (``--delay``: host 25 ms, VM 100 ms; netem ``delay``
or the relay's), so round trips are network-like rather than loopback's microseconds:
with no delay, a loss costs about as much as the CPU time of a message, and the CPU, not
loss recovery, would set the latency. The VM's delay is larger because its CPU is
emulated: Python runs 14 times slower there on an idle host, and up to 100 times slower
while other work shares the host's cores, so a TLS request/response costs 10 to 60 ms
of CPU there; its 200 ms round trip is, in CPU terms, a 2 to 14 ms one.

Rates are modest (``--rate`` per flow: host 10/s, VM 0.5/s, i.e. 160 and 8 messages per
second in all) and messages small, so that the CPU is not the bottleneck: the 0 % rows
show the floor (round trip plus CPU) and ``cpu_busy`` the fraction of the measured time
the process was on the CPU. The VM's rate is what its emulated CPU allows with TLS on
16 channels; it gives few samples (160 per case by default), so its p99 and p99.9 are
rough. The bare reference runs at ``--bare-loss`` (0 and 2 %) only, to keep the VM run
short.

Targets, at 2 % loss, for the TLS cases: multi-stream p90 at most 0.75x, and p99 at most
1.0x, the single connection's.

    python -m benchmarks.hol [--quick] [--loss 0 1 2 5] [--rate R] [--delay MS]
                             [--duration S] [--json out.json] [--plots DIR]

(in the VM: ``python tests/vm/run_in_vm.py -- python -m benchmarks.hol --json FILE``,
then plot on the host: numpy dies of an illegal instruction on the VM's qemu64 CPU; or
``scripts/bench --only hol``, which runs it in both places and plots on the host).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import ssl
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import trio_sctls
from benchmarks._common import (
    IN_VM,
    SERVER_NAME,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    percentile,
    target,
)
from trio_sctls.impaired import Faults, impaired_link
from trio_sctls.transport.udp import UDPListener

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "hol"
#: Where the runner runs it: both, with different set-ups (see the module docstring).
WHERE = ("host", "vm")

#: Percentiles reported (and their column names).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
#: Where the issue's targets apply.
TARGET_LOSS = 2.0
TARGET_P90_RATIO = 0.75
TARGET_P99_RATIO = 1.0
#: Flow id and sequence number at the start of every request and response.
HEADER = struct.Struct("!HI")
#: Linux TCP's timers, which the VM's SCTP is set to match (milliseconds).
TCP_RTO_MIN_MS = 200
#: One-way delay of the impaired link (netem or relay), so that round trips are
#: network-like rather than loopback's microseconds, which the CPU would dominate: 25 ms
#: on the host (50 ms round trips); 100 ms in the VM, whose emulated CPU is 14 to 100
#: times slower (with other work on the host), so its network is slowed down too.
DEFAULT_DELAY_MS = {"host": 25.0, "vm": 100.0}
TCP_RTO_INITIAL_MS = 1000
TCP_DELACK_MIN_MS = 40
SCTP_SYSCTL = Path("/proc/sys/net/sctp")
LABELS = {
    ("vm", "tls", "multi"): "16 TLS channels, kernel SCTP",
    ("vm", "tls", "single"): "one TLS/TCP connection",
    ("vm", "bare", "multi"): "16 streams, bare kernel SCTP",
    ("vm", "bare", "single"): "one bare TCP connection",
    ("host", "tls", "multi"): "16 TLS channels, SCTP/UDP",
    ("host", "tls", "single"): "one TLS channel on one stream, SCTP/UDP",
    ("host", "bare", "multi"): "16 streams, bare SCTP/UDP",
    ("host", "bare", "single"): "one stream, bare SCTP/UDP",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (defaults depend on where it runs and ``--quick``)."""
    parser.add_argument("--flows", type=int, default=16, help="request/response flows (16)")
    parser.add_argument(
        "--loss",
        type=float,
        nargs="+",
        default=None,
        help="packet loss rates in percent (0 1 2 5; --quick: 0 2)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="requests per second per flow (host 10, VM 0.5)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds per case (host 6, VM 20; --quick: host 1.5, VM 8)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=None,
        help="one-way delay of the link in ms (host 25, VM 100)",
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="loss-free seconds first (0.5; VM 2)"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=20.0,
        help="seconds to wait for the last responses (20)",
    )
    parser.add_argument("--size", type=int, default=128, help="request and response bytes")
    parser.add_argument("--seed", type=int, default=1, help="seeds schedules and the relay")
    parser.add_argument("--tls", choices=sorted(TLS_VERSIONS), default="1.3")
    parser.add_argument(
        "--layers",
        nargs="+",
        choices=["tls", "bare"],
        default=None,
        help="tls: with trio-sctls and TLS; bare: plain SCTP and TCP (default: tls on "
        "the host, both in the VM)",
    )
    parser.add_argument(
        "--bare-loss",
        type=float,
        nargs="+",
        default=None,
        help="loss rates for the bare reference (default: 0 and 2 where measured)",
    )
    parser.add_argument(
        "--sctp-rto-min",
        type=int,
        default=TCP_RTO_MIN_MS,
        help=f"VM: net.sctp.rto_min in ms ({TCP_RTO_MIN_MS}, TCP's; Linux's default 1000)",
    )
    parser.add_argument(
        "--sctp-rto-initial",
        type=int,
        default=TCP_RTO_INITIAL_MS,
        help=f"VM: net.sctp.rto_initial in ms ({TCP_RTO_INITIAL_MS}; Linux's default 3000)",
    )
    parser.add_argument(
        "--sctp-sack-timeout",
        type=int,
        default=TCP_DELACK_MIN_MS,
        help=f"VM: net.sctp.sack_timeout in ms ({TCP_DELACK_MIN_MS}; Linux's default 200)",
    )


@dataclass
class Settings:
    """The resolved options of one run."""

    place: str
    flows: int
    loss: list[float]
    rate: float
    duration: float
    warmup: float
    delay_ms: float
    drain: float
    size: int
    seed: int
    tls: str
    layers: list[str]
    bare_loss: list[float]
    sctp_sysctl: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = bool(getattr(args, "quick", False))
        place = "vm" if IN_VM else "host"
        if args.size < HEADER.size:
            raise SystemExit(f"--size must be at least {HEADER.size}")
        default_duration = {("host", False): 6.0, ("host", True): 1.5}
        default_duration |= {("vm", False): 20.0, ("vm", True): 8.0}
        sysctl = {}
        if place == "vm":
            sysctl = {
                "rto_min": args.sctp_rto_min,
                "rto_initial": args.sctp_rto_initial,
                "sack_timeout": args.sctp_sack_timeout,
            }
        return cls(
            place=place,
            flows=args.flows,
            loss=list(args.loss or ([0.0, 2.0] if quick else [0.0, 1.0, 2.0, 5.0])),
            rate=args.rate or (0.5 if place == "vm" else 10.0),
            duration=args.duration or default_duration[place, quick],
            warmup=args.warmup if args.warmup is not None else (2.0 if place == "vm" else 0.5),
            delay_ms=args.delay if args.delay is not None else DEFAULT_DELAY_MS[place],
            drain=args.drain,
            size=args.size,
            seed=args.seed,
            tls=args.tls,
            layers=list(args.layers or (["tls", "bare"] if place == "vm" else ["tls"])),
            bare_loss=list(args.bare_loss if args.bare_loss is not None else (0.0, TARGET_LOSS)),
            sctp_sysctl=sysctl,
        )


# -- the flows ------------------------------------------------------------------------


def frame(flow: int, seq: int, size: int) -> bytes:
    """One request or response: flow id, sequence number, padding to ``size``."""
    return HEADER.pack(flow, seq) + bytes(size - HEADER.size)


class Book:
    """The client's record of one case: when each request was due, each latency."""

    def __init__(self, flows: int) -> None:
        self.due: dict[tuple[int, int], float] = {}
        self.latencies: list[list[float]] = [[] for _ in range(flows)]
        self.start = math.inf  # measured window: requests due in [start, stop)
        self.stop = math.inf
        self.senders = 0
        #: set once every sender has stopped and every request has been answered
        self.quiet = trio.Event()

    def answered(self, response: bytes) -> None:
        now = trio.current_time()
        flow, seq = HEADER.unpack_from(response)
        due = self.due.pop((flow, seq), None)
        if due is not None and self.start <= due < self.stop:
            self.latencies[flow].append(now - due)
        self.check()

    def check(self) -> None:
        if not self.senders and not self.due:
            self.quiet.set()

    def unanswered(self) -> int:
        return sum(1 for due in self.due.values() if self.start <= due < self.stop)


class Client:
    """How a case's client sends requests and reads responses."""

    async def send(self, flow: int, data: bytes) -> None:
        raise NotImplementedError

    async def read(self, book: Book) -> None:
        """Read responses into ``book`` until the peer closes or we are cancelled."""
        raise NotImplementedError


async def read_frames(
    stream: trio.abc.ReceiveStream, size: int, each: Callable[[bytes], Awaitable[None] | None]
) -> None:
    """Call ``each(frame)`` for every ``size``-byte frame from ``stream`` until it ends."""
    buffer = bytearray()
    while True:
        try:
            data = await stream.receive_some()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        buffer += data
        whole = len(buffer) - len(buffer) % size
        for offset in range(0, whole, size):
            result = each(bytes(buffer[offset : offset + size]))
            if result is not None:
                await result
        del buffer[:whole]


class StreamsClient(Client):
    """Flows over byte streams: flow *i* on stream *i*, or all flows on one stream
    (requests serialized by a lock, responses told apart by their flow id)."""

    def __init__(self, streams: Sequence[trio.abc.Stream], size: int) -> None:
        self.streams = list(streams)
        self.size = size
        self.locks = [trio.StrictFIFOLock() for _ in self.streams]

    async def send(self, flow: int, data: bytes) -> None:
        index = flow % len(self.streams)
        async with self.locks[index]:
            await self.streams[index].send_all(data)

    async def read(self, book: Book) -> None:
        async with trio.open_nursery() as nursery:
            for stream in self.streams:
                nursery.start_soon(read_frames, stream, self.size, book.answered)


class MessagesClient(Client):
    """Flows over SCTP messages: flow *i* on stream *i* modulo the streams used."""

    def __init__(self, sctp: trio_sctls.MessageTransport, streams: int) -> None:
        self.sctp = sctp
        self.streams = streams

    async def send(self, flow: int, data: bytes) -> None:
        await self.sctp.send_message(data, stream=flow % self.streams)

    async def read(self, book: Book) -> None:
        while True:
            try:
                item = await self.sctp.receive()
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if isinstance(item, trio_sctls.Message):
                book.answered(item.data)


async def answer_stream(stream: trio.abc.Stream, size: int) -> None:
    """Server side of byte-stream flows: answer every request frame, in order."""

    async def answer(request: bytes) -> None:
        await stream.send_all(request[: HEADER.size] + bytes(size - HEADER.size))

    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await read_frames(stream, size, answer)


async def answer_messages(sctp: trio_sctls.MessageTransport) -> None:
    """Server side of message flows: answer every request on its own stream."""
    while True:
        try:
            item = await sctp.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if isinstance(item, trio_sctls.Message):
            data = item.data
            await sctp.send_message(
                data[: HEADER.size] + bytes(len(data) - HEADER.size), stream=item.stream
            )


# -- the connections ------------------------------------------------------------------

Connect = Callable[[], AbstractAsyncContextManager[Client]]


@dataclass
class Case:
    """One way of carrying the flows at one place."""

    place: str
    layer: str  # "tls" or "bare"
    variant: str  # "multi" or "single"
    connect: Connect
    #: (host) the relay's faults, changed in place to switch loss on and off
    faults: Faults | None = None

    @property
    def label(self) -> str:
        return LABELS[self.place, self.layer, self.variant]


async def handshake_all(channels: Sequence[trio_sctls.Channel]) -> None:
    async with trio.open_nursery() as nursery:
        for channel in channels:
            nursery.start_soon(channel.do_handshake)


@asynccontextmanager
async def trio_sctls_tls(
    settings: Settings,
    channels: int,
    transport: str,
    ctx: tuple[ssl.SSLContext, ssl.SSLContext],
    faults: Faults | None,
) -> AsyncIterator[Client]:
    """A trio-sctls association with ``channels`` TLS channels (through the relay on
    the host)."""
    server_ctx, client_ctx = ctx
    size = settings.size

    async def handler(association: trio_sctls.SecureAssociation) -> None:
        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(answer_stream, channel, size)

    udp = transport == "udp"
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve,
                handler,
                0,
                ssl_context=server_ctx,
                host="127.0.0.1",
                transport="udp" if udp else "kernel",
                udp_port=0 if udp else None,
                outbound_streams=channels,
                max_inbound_streams=channels,
            )
        )
        async with (
            _maybe_relay(listener, faults, settings.seed) as remote_udp_port,
            trio_sctls.open_association(
                "127.0.0.1",
                listener.port,
                ssl_context=client_ctx,
                server_hostname=SERVER_NAME,
                transport="udp" if udp else "kernel",
                remote_udp_port=remote_udp_port,
                outbound_streams=channels,
                max_inbound_streams=channels,
                session_cache=None,
            ) as association,
        ):
            if len(association.channels) != channels:
                raise RuntimeError(f"wanted {channels} channels, got {association}")
            await handshake_all(association.channels)
            yield StreamsClient(association.channels, size)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def bare_sctp(
    settings: Settings, streams: int, transport: str, faults: Faults | None
) -> AsyncIterator[Client]:
    """A plain SCTP association with ``streams`` streams, one message per request."""
    udp = transport == "udp"
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve_sctp,
                answer_messages,
                0,
                host="127.0.0.1",
                transport="udp" if udp else "kernel",
                udp_port=0 if udp else None,
                outbound_streams=streams,
                max_inbound_streams=streams,
            )
        )
        async with (
            _maybe_relay(listener, faults, settings.seed) as remote_udp_port,
            trio_sctls.open_sctp_association(
                "127.0.0.1",
                listener.port,
                transport="udp" if udp else "kernel",
                remote_udp_port=remote_udp_port,
                outbound_streams=streams,
                max_inbound_streams=streams,
            ) as sctp,
        ):
            yield MessagesClient(sctp, streams)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _maybe_relay(
    listener: trio_sctls.MessageListener, faults: Faults | None, seed: int
) -> AsyncIterator[int | None]:
    """The UDP port the client sends to: the impaired relay's in front of a udp
    listener, the listener's own without faults, ``None`` for kernel SCTP."""
    if not isinstance(listener, UDPListener):
        yield None
        return
    if faults is None:
        yield listener.udp_port
        return
    async with impaired_link(("127.0.0.1", listener.udp_port), faults=faults, seed=seed) as link:
        yield link.port


@asynccontextmanager
async def bare_tcp(settings: Settings) -> AsyncIterator[Client]:
    """One plain TCP connection (trio sets TCP_NODELAY)."""
    size = settings.size

    async def handler(stream: trio.SocketStream) -> None:
        await answer_stream(stream, size)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            yield StreamsClient([stream], size)
        finally:
            await stream.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tls_over_tcp(
    settings: Settings, ctx: tuple[ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[Client]:
    """One TLS/TCP connection: trio's SSLStream on both sides."""
    server_ctx, client_ctx = ctx
    size = settings.size

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await answer_stream(stream, size)
        with suppress(trio.BrokenResourceError):
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, server_ctx, host="127.0.0.1")
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        stream = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port),
            client_ctx,
            server_hostname=SERVER_NAME,
        )
        await stream.do_handshake()
        try:
            yield StreamsClient([stream], size)
        finally:
            with trio.move_on_after(5):
                await stream.aclose()
            nursery.cancel_scope.cancel()


def cases(settings: Settings, ctx: tuple[ssl.SSLContext, ssl.SSLContext]) -> list[Case]:
    """The cases of this place, in the order they run at each loss rate."""
    flows, place = settings.flows, settings.place
    out: list[Case] = []
    if place == "vm":
        if "tls" in settings.layers:
            out.append(
                Case(
                    place,
                    "tls",
                    "multi",
                    partial(trio_sctls_tls, settings, flows, "kernel", ctx, None),
                )
            )
            out.append(Case(place, "tls", "single", partial(tls_over_tcp, settings, ctx)))
        if "bare" in settings.layers:
            out.append(
                Case(place, "bare", "multi", partial(bare_sctp, settings, flows, "kernel", None))
            )
            out.append(Case(place, "bare", "single", partial(bare_tcp, settings)))
        return out
    for layer in settings.layers:
        for variant, count in (("multi", flows), ("single", 1)):
            faults = Faults(delay=settings.delay_ms / 1000)
            if layer == "tls":
                connect: Connect = partial(trio_sctls_tls, settings, count, "udp", ctx, faults)
            else:
                connect = partial(bare_sctp, settings, count, "udp", faults)
            out.append(Case(place, layer, variant, connect, faults))
    return out


# -- loss and counters ----------------------------------------------------------------


def _tc() -> str:
    for candidate in ("/usr/sbin/tc", "/sbin/tc"):
        if Path(candidate).exists():
            return candidate
    found = shutil.which("tc")
    if found is None:
        raise RuntimeError("no tc (iproute2) here: netem cannot be configured")
    return found


async def netem(action: str, loss: float, delay_ms: float) -> None:
    """``tc qdisc ACTION dev lo root netem [delay DELAYms] loss LOSS%``."""
    delay = ["delay", f"{delay_ms:g}ms"] if delay_ms else []
    command = [_tc(), "qdisc", action, "dev", "lo", "root", "netem", *delay, "loss", f"{loss:g}%"]
    await trio.run_process(command)


async def netem_remove() -> None:
    await trio.run_process(
        [_tc(), "qdisc", "del", "dev", "lo", "root"], check=False, stderr=subprocess.DEVNULL
    )


def _check_vm_prerequisites() -> None:
    modules = Path("/proc/modules").read_text()
    if "sch_netem" not in modules:
        raise RuntimeError("sch_netem is not loaded in the VM (tests/vm/run_in_vm.py loads it)")
    if not trio_sctls.kernel_sctp_available():
        raise RuntimeError("no kernel SCTP here")


def set_sctp_sysctl(values: dict[str, int]) -> dict[str, int]:
    """Write net.sctp.* (milliseconds); return what was there before."""
    before = {}
    for name, value in values.items():
        path = SCTP_SYSCTL / name
        before[name] = int(path.read_text())
        path.write_text(f"{value}\n")
    return before


#: Counters of loss recovery, per case (in the VM).
SCTP_COUNTERS = (
    "SctpT3RtxExpireds",
    "SctpFastRetransmits",
    "SctpDelaySackExpireds",
    "SctpInDataChunkDiscards",
)
TCP_COUNTERS = ("RetransSegs", "TCPTimeouts", "TCPLossProbes", "TCPFastRetrans", "TCPSackRecovery")


def _proc_counters() -> dict[str, int]:
    counters: dict[str, int] = {}
    try:
        for line in Path("/proc/net/sctp/snmp").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name in SCTP_COUNTERS:
                counters[name] = int(value.strip())
    except OSError:
        pass
    for source in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = Path(source).read_text().splitlines()
        except OSError:
            continue
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            names, numbers = header.split()[1:], values.split()[1:]
            for name, number in zip(names, numbers, strict=False):
                if name in TCP_COUNTERS and header.startswith(("Tcp:", "TcpExt:")):
                    counters[name] = int(number)
    return counters


# -- one case -------------------------------------------------------------------------


async def run_case(
    case: Case, loss: float, settings: Settings, progress: Progress
) -> tuple[dict[str, Any], list[list[float]]]:
    """Measure one case at one loss rate: its row and its latencies (ms) per flow."""
    book = Book(settings.flows)
    rate, flows = settings.rate, settings.flows

    async def set_loss(percent: float) -> None:
        if case.faults is not None:
            case.faults.loss = percent / 100
        elif settings.place == "vm":
            await netem("change", percent, settings.delay_ms)

    async def sender(client: Client, flow: int, origin: float) -> None:
        rng = random.Random(f"{settings.seed}/{loss}/{flow}")
        due = origin + rng.expovariate(rate)
        seq = 0
        try:
            while due < book.stop:
                await trio.sleep_until(due)
                book.due[flow, seq] = due
                await client.send(flow, frame(flow, seq, settings.size))
                seq += 1
                due += rng.expovariate(rate)
        finally:
            book.senders -= 1
            book.check()

    await set_loss(0)
    async with case.connect() as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.read, book)
        origin = trio.current_time()
        for flow in range(flows):
            book.senders += 1
            nursery.start_soon(sender, client, flow, origin)
        await trio.sleep(settings.warmup)
        counters = _proc_counters()
        await set_loss(loss)
        book.start = trio.current_time()
        book.stop = book.start + settings.duration
        cpu = time.process_time()
        while trio.current_time() < book.stop:
            await trio.sleep(min(0.5, book.stop - trio.current_time()))
            done = sum(len(samples) for samples in book.latencies)
            progress.update(
                f"{case.label}, {loss:g}% loss: "
                f"{trio.current_time() - book.start:4.1f}/{settings.duration:g} s, "
                f"{done} answers"
            )
        busy = (time.process_time() - cpu) / settings.duration
        with trio.move_on_after(settings.drain):
            await book.quiet.wait()
        after = _proc_counters()
        await set_loss(0)
        nursery.cancel_scope.cancel()
    samples = [sorted(v * 1000 for v in flow_samples) for flow_samples in book.latencies]
    merged = sorted(v for flow_samples in samples for v in flow_samples)
    row: dict[str, Any] = {
        "place": settings.place,
        "layer": case.layer,
        "variant": case.variant,
        "carrier": case.label,
        "loss_pct": loss,
        "messages": len(merged),
        "unanswered": book.unanswered(),
    }
    for name, p in PERCENTILES.items():
        row[f"{name}_ms"] = round(percentile(merged, p), 3)
    row["max_ms"] = round(merged[-1], 3) if merged else math.nan
    row["mean_ms"] = round(sum(merged) / len(merged), 3) if merged else math.nan
    row["cpu_busy"] = round(busy, 3)
    for name, value in after.items():
        row[name] = value - counters.get(name, 0)
    return row, samples


# -- the benchmark --------------------------------------------------------------------

#: Where the latency distributions are sampled for the result (and the CDF plots):
#: every percent, then every tenth of a percent of the last one, and the maximum.
CDF_PROBABILITIES = [i / 100 for i in range(100)] + [0.99 + i / 1000 for i in range(1, 10)] + [1.0]


def quantiles(samples: Sequence[float]) -> list[float]:
    """``samples`` at :data:`CDF_PROBABILITIES` (empty if there are none)."""
    if not samples:
        return []
    ordered = sorted(samples)
    return [round(percentile(ordered, 100 * p), 3) for p in CDF_PROBABILITIES]


def streams_loss_rate(losses: Sequence[float]) -> float:
    """The loss rate whose per-flow distributions are kept: 2 %, else the highest."""
    return TARGET_LOSS if TARGET_LOSS in losses else max(losses)


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run every case at every loss rate; see the module docstring."""
    settings = Settings.from_args(args)
    ctx = contexts(TLS_VERSIONS[settings.tls])
    previous_sysctl: dict[str, int] = {}
    if settings.place == "vm":
        _check_vm_prerequisites()
        previous_sysctl = set_sctp_sysctl(settings.sctp_sysctl)
        await netem_remove()
        await netem("add", 0, settings.delay_ms)
    rows: list[dict[str, Any]] = []
    cdfs: dict[str, list[float]] = {}
    flow_cdfs: dict[str, list[list[float]]] = {}
    streams_loss = streams_loss_rate(settings.loss)
    try:
        for loss in settings.loss:
            for case in cases(settings, ctx):
                if case.layer == "bare" and loss not in settings.bare_loss:
                    continue
                row, per_flow = await run_case(case, loss, settings, progress)
                rows.append(row)
                key = f"{case.layer}/{case.variant}/{loss:g}"
                cdfs[key] = quantiles([v for flow in per_flow for v in flow])
                if loss == streams_loss:
                    flow_cdfs[key] = [quantiles(flow) for flow in per_flow]
                progress.log(
                    f"{loss:4g}% loss  {case.label:40s} n={row['messages']:5d}  "
                    + "  ".join(f"{name} {row[f'{name}_ms']:8.1f}" for name in PERCENTILES)
                    + f" ms  cpu {row['cpu_busy']:.0%}"
                    + (f"  unanswered {row['unanswered']}" if row["unanswered"] else "")
                )
    finally:
        if settings.place == "vm":
            with trio.CancelScope(shield=True):
                await netem_remove()
            set_sctp_sysctl(previous_sysctl)
    ratios = ratio_rows(rows)
    for item in ratios:
        progress.log(
            f"{item['loss_pct']:4g}% loss  {item['layer']:4s} multi/single  "
            + "  ".join(f"{name} {item[f'{name}_ratio']:.2f}x" for name in PERCENTILES)
        )
    return {
        "name": NAME,
        "place": settings.place,
        "settings": {
            "flows": settings.flows,
            "loss_pct": settings.loss,
            "rate_per_flow": settings.rate,
            "duration_s": settings.duration,
            "warmup_s": settings.warmup,
            "delay_ms": settings.delay_ms,
            "size_bytes": settings.size,
            "seed": settings.seed,
            "tls": settings.tls,
            "layers": settings.layers,
            "bare_loss_pct": settings.bare_loss,
            "sctp_sysctl_ms": settings.sctp_sysctl,
            "sctp_sysctl_defaults_ms": previous_sysctl,
        },
        "setup": setup_note(settings),
        "rows": rows,
        "ratios": ratios,
        "targets": targets(ratios, settings),
        "cdf_probabilities": CDF_PROBABILITIES,
        "cdf_ms": cdfs,
        "flow_cdf_ms": flow_cdfs,
    }


def setup_note(settings: Settings) -> str:
    """What was compared, in words (goes into the result)."""
    if settings.place == "vm":
        sysctl = settings.sctp_sysctl
        return (
            "VM (QEMU TCG, Debian kernel): netem on lo, each packet (both ways) delayed "
            f"{settings.delay_ms:g} ms and lost at the given rate. "
            "multi = trio-sctls TLS association over kernel SCTP, one channel per flow; "
            "single = the same flows multiplexed over one TLS/TCP connection. bare = "
            "kernel SCTP, one stream per flow, vs one plain TCP connection. SCTP timers "
            f"set TCP-like: net.sctp.rto_min={sysctl.get('rto_min')} ms, "
            f"rto_initial={sysctl.get('rto_initial')} ms, "
            f"sack_timeout={sysctl.get('sack_timeout')} ms (TCP: RTO min 200 ms, initial "
            "1 s, delayed ACK from 40 ms). TCP keeps RACK and tail loss probes. "
            f"{settings.flows} flows x {settings.rate:g} requests/s (Poisson), "
            f"{settings.size} B each way."
        )
    return (
        "host: trio-sctls over its SCTP over UDP through the seeded impaired relay "
        "(trio_sctls.impaired: each datagram, both ways, delayed "
        f"{settings.delay_ms:g} ms and lost at the given rate). multi = one TLS "
        "channel per flow; single = the same flows multiplexed over one TLS channel on one "
        "SCTP stream, through the same relay: the host has no netem and TCP cannot be "
        "impaired in user space, so one ordered stream of the same SCTP code stands in for "
        "one TCP connection (same head-of-line blocking, same loss recovery and timers: "
        "RTO.Min 200 ms, RTO.Initial 500 ms on loopback, 200 ms delayed SACK). "
        f"{settings.flows} flows x {settings.rate:g} requests/s (Poisson), "
        f"{settings.size} B each way."
    )


def ratio_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """multi / single per layer and loss rate, for each percentile."""
    out = []
    index = {(r["layer"], r["variant"], r["loss_pct"]): r for r in rows}
    for (layer, variant, loss), multi in index.items():
        single = index.get((layer, "single", loss))
        if variant != "multi" or single is None:
            continue
        item: dict[str, Any] = {"layer": layer, "loss_pct": loss}
        for name in PERCENTILES:
            a, b = multi[f"{name}_ms"], single[f"{name}_ms"]
            item[f"{name}_ratio"] = round(a / b, 3) if b else math.nan
        bare = index.get(("bare", "multi", loss))
        if layer == "tls" and bare is not None:
            # What our layers (TLS, the association) add to bare SCTP, in ms.
            for name in PERCENTILES:
                item[f"{name}_over_bare_ms"] = round(multi[f"{name}_ms"] - bare[f"{name}_ms"], 3)
        out.append(item)
    return out


def targets(ratios: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """The issue's targets at 2 % loss, for the TLS cases."""
    baseline = "one TLS/TCP connection" if settings.place == "vm" else "one SCTP stream"
    out = []
    for item in ratios:
        if item["layer"] == "tls" and item["loss_pct"] == TARGET_LOSS:
            out.append(
                target(
                    f"{settings.place}: p90 latency, 16 channels / {baseline}, 2% loss",
                    item["p90_ratio"],
                    TARGET_P90_RATIO,
                    at_most=True,
                )
            )
            out.append(
                target(
                    f"{settings.place}: p99 latency, 16 channels / {baseline}, 2% loss",
                    item["p99_ratio"],
                    TARGET_P99_RATIO,
                    at_most=True,
                )
            )
    return out


# -- plots ----------------------------------------------------------------------------

COLORS = {"multi": "tab:blue", "single": "tab:orange"}


def _log_axis(axis: Any) -> None:
    """Plain numbers (20, 50, 100...) on a logarithmic axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda _value, _position: ""))


STYLES = {"tls": "-", "bare": ":"}


def _label(result: dict[str, Any], layer: str, variant: str) -> str:
    return LABELS[result.get("place", "host"), layer, variant]


def cdf_figure(result: dict[str, Any]) -> Figure:
    """Latency CDF per loss rate: multi-stream against one connection."""
    from matplotlib.figure import Figure

    losses = result["settings"]["loss_pct"]
    figure = Figure(figsize=(4.2 * len(losses), 3.8), layout="constrained")
    axes = figure.subplots(1, len(losses), sharey=True, squeeze=False)[0]
    for ax, loss in zip(axes, losses, strict=True):
        for key, xs in result["cdf_ms"].items():
            layer, variant, key_loss = key.split("/")
            if float(key_loss) != loss or not xs:
                continue
            ax.plot(
                xs,
                result["cdf_probabilities"],
                STYLES[layer],
                color=COLORS[variant],
                label=_label(result, layer, variant),
                drawstyle="steps-post",
            )
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(f"{loss:g}% loss")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of messages")
    # The legend goes where every carrier appears (the bare reference skips some rates).
    max(axes, key=lambda ax: len(ax.get_lines())).legend(fontsize="small", loc="lower right")
    figure.suptitle(
        f"Request/response latency, {result['settings']['flows']} flows ({result.get('place')})"
    )
    return figure


def percentile_figure(result: dict[str, Any]) -> Figure:
    """p50/p90/p99/p99.9 against the loss rate, multi-stream and one connection."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(PERCENTILES), 3.6), layout="constrained")
    axes = figure.subplots(1, len(PERCENTILES), squeeze=False)[0]
    rows = result["rows"]
    for ax, name in zip(axes, PERCENTILES, strict=True):
        for layer in STYLES:
            for variant in COLORS:
                points = sorted(
                    (r["loss_pct"], r[f"{name}_ms"])
                    for r in rows
                    if r["layer"] == layer and r["variant"] == variant
                )
                if not points:
                    continue
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    STYLES[layer],
                    marker="o",
                    color=COLORS[variant],
                    label=_label(result, layer, variant),
                )
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_title(name)
        ax.set_xlabel("packet loss (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize="small")
    return figure


def streams_figure(result: dict[str, Any], loss: float | None = None, layer: str = "tls") -> Figure:
    """Latency CDF of each flow at one loss rate (2 % by default), multi against single."""
    from matplotlib.figure import Figure

    if loss is None:
        loss = streams_loss_rate(result["settings"]["loss_pct"])
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for ax, variant in zip(axes, COLORS, strict=True):
        per_flow = result["flow_cdf_ms"].get(f"{layer}/{variant}/{loss:g}", [])
        for flow, xs in enumerate(per_flow):
            if xs:
                ax.plot(
                    xs,
                    result["cdf_probabilities"],
                    drawstyle="steps-post",
                    linewidth=0.9,
                    label=f"flow {flow}",
                )
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(f"{_label(result, layer, variant)}, {loss:g}% loss", fontsize="medium")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of the flow's messages")
    return figure


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write the CDF, percentile and per-flow figures as PNGs."""
    place = result.get("place", "host")
    paths = []
    figures = [
        ("cdf", cdf_figure(result)),
        ("percentiles", percentile_figure(result)),
        ("streams", streams_figure(result)),
    ]
    for name, figure in figures:
        path = directory / f"hol-{place}-{name}.png"
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
