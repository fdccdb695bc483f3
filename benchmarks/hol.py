"""Head-of-line blocking: request/response latency on 16 flows under packet loss,
one SCTP stream per flow against all flows multiplexed over one ordered connection.

Workload (the same in every case). ``--flows`` (16) independent request/response
flows. Each flow sends fixed-size requests (``--size``, 128 B, carrying the flow id and
a sequence number) at seeded Poisson times (``--rate`` per flow, open loop: a late
answer does not delay the next request); the server answers each with a response of the
same size on the same flow. A message's latency runs from the request's *scheduled*
time to the arrival of its response, so a sender held up by anything (the CPU, a full
buffer, the lock of a shared connection) is counted, not hidden. Every run starts
loss-free: connections and TLS handshakes, then ``--warmup`` seconds of traffic whose
samples are discarded; then the loss rate is switched on and the requests scheduled
during the next ``--duration`` seconds are measured; their responses are awaited (up to
``--drain`` seconds, still under loss; those that never come are counted as
``unanswered``); then loss is switched off and everything is closed.

Seeds and statistics. Every case runs once per seed (``--seeds``, 3): the seed drives
the Poisson schedules and, on the host, the relay's losses, so a case is measured over
independent runs rather than one. At each loss rate the runs go seed by seed, the cases
one after the other within a seed, so that every case sees the same machine load. A
row pools its case's samples over the seeds; the ratios between cases carry 95 %
bootstrap intervals (moving blocks, stratified by seed: :mod:`benchmarks._hol_stats`)
and the ratio seed by seed. A case should have at least 1,000 samples (so that its p99
is not one of its handful of worst messages); where a run has fewer, the result and the
README say so and why (``notes``), as they do when a case kept the CPU busy.

Where (``WHERE``): on the host and in the kernel-SCTP VM, with different set-ups.

* In the VM (``TRIO_SCTLS_IN_VM=1``): loss comes from netem on the loopback interface
  (``tc qdisc add dev lo root netem delay 100ms loss X%``), so every packet, either way,
  is lost with probability X (netem's own random numbers: the guest kernel's netem takes
  no seed; the seed drives the schedules). Compared:

  - ``tls``: a trio-sctls association over Linux kernel SCTP with 16 TLS channels, flow
    *i* on channel *i* ("multi"), against the 16 flows multiplexed over ONE TLS/TCP
    connection (trio's ``SSLStream`` over TCP, ``TCP_NODELAY``; "single");
  - ``bare`` (reference, no TLS, none of our layers): one kernel SCTP association with 16
    streams, one message per request or response ("multi"), and, at ``--bare-loss``
    rates only (none by default), one plain TCP connection ("single"). Our channels /
    bare kernel SCTP is what our layers (TLS, the association, the channels) add.

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
  cannot be impaired here (no netem in the host kernel), so a single ordered stream of
  the same SCTP code over the same impaired link stands in for "one TCP connection": it
  has the same head-of-line blocking (one lost packet holds back everything behind it),
  and the same loss recovery and timers as the multi-stream case (RTO.Min 200 ms,
  RTO.Initial 500 ms, 200 ms delayed SACK), so the difference between the two is
  head-of-line blocking alone. **The host's ratios are against one SCTP stream, not
  TCP.** Two paths (``--paths``), as in the throughput benchmark:

  - ``veth`` (the standard host scenario, issue 11): the servers in one network
    namespace, the client and its relay in another, each a process of its own, joined
    by a veth pair with an Ethernet MTU (``--mtu``, 1500). The relay binds the client's
    own veth address, so both ends see a non-loopback peer and use the transport's
    real-path settings (the RTOs above are given explicitly, as the VM's sysctls are).
    Needs root; where it cannot run, the run says so loudly, records why in
    ``netns_status`` and measures loopback only.
  - ``loopback``: everything in this process on 127.0.0.1.

The link has a one-way delay too (``--delay``: host 25 ms, VM 100 ms; netem ``delay``
or the relay's), so round trips are network-like rather than loopback's microseconds:
with no delay, a loss costs about as much as the CPU time of a message, and the CPU, not
loss recovery, would set the latency. The VM's delay is larger because its CPU is
emulated: Python runs 14 times slower there on an idle host, and up to 100 times slower
while other work shares the host's cores, so a TLS request/response costs 10 to 60 ms
of CPU there; its 200 ms round trip is, in CPU terms, a 2 to 14 ms one.

Rates are modest (``--rate`` per flow: host 10/s, VM 1.25/s, i.e. 160 and 20 messages
per second in all) and messages small, so that the CPU is not the bottleneck: the 0 % rows
show the floor (round trip plus CPU) and ``cpu_busy`` the fraction of the measured time
the process was on the CPU. The VM's rate is what its emulated CPU allows with TLS on
16 channels (a quarter to a third of its CPU), so its runs are long (``--duration`` 18 s
per seed: about 1,080 samples per case over 3 seeds; the schedules are seeded, so the
count is the same in every run) and it measures at the targets' loss rate (2 %) only;
the host measures 0, 2 and 5 % over the veth pair (2.3 s per seed: about 1,100 samples
per case), and 0 and 2 % on loopback, its second column.

Targets, at 2 % loss: 16 TLS channels' p90 at most 0.75x, and p99 at most 1.0x, the
single connection's (one TLS/TCP connection in the VM, one SCTP stream on the host, on
each path); in the VM, 16 TLS channels' p90 at most 1.10x bare kernel SCTP's (issue 11:
what our layers add, at most 10 %).

    python -m benchmarks.hol [--quick] [--loss 0 1 2 5] [--rate R] [--delay MS]
                             [--duration S] [--seeds N] [--paths veth loopback]
                             [--json out.json] [--plots DIR]

(in the VM: ``python tests/vm/run_in_vm.py -- python -m benchmarks.hol --json FILE``,
then plot on the host: numpy dies of an illegal instruction on the VM's qemu64 CPU, so
the intervals and targets are computed there too (:func:`finish`); or ``scripts/bench
--only hol``, which runs it in both places and does both on the host).
"""

from __future__ import annotations

import argparse
import math
import random
import ssl
import time
from argparse import Namespace
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trio_sctls.impaired import Faults

from ._common import (
    IN_VM,
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    contexts,
    percentile,
)
from ._hol_flows import (
    HEADER,
    HERE,
    LABELS,
    Book,
    Client,
    Where,
    answer_channels,
    answer_messages,
    bare_sctp,
    bare_tcp,
    frame,
    tls_over_tcp,
    trio_sctls_tls,
)

# The figures, for the notebook as for the suite.
from ._hol_plots import cdf_figure as cdf_figure
from ._hol_plots import percentile_figure as percentile_figure
from ._hol_plots import plot as plot
from ._hol_plots import streams_figure as streams_figure
from ._hol_report import path_label, setup_note
from ._hol_report import summarize as summarize
from ._hol_stats import (
    CDF_PROBABILITIES,
    MIN_SAMPLES,
    PERCENTILES,
    TARGET_LOSS,
    block_size,
    case_key,
    notes,
    quantiles,
    streams_loss_rate,
)
from ._hol_stats import finish as finish
from ._hol_vm import (
    check_vm_prerequisites,
    netem,
    netem_remove,
    proc_counters,
    set_sctp_sysctl,
)
from ._loopback import Address, serving_associations, serving_sctp
from ._netns import DEFAULT_MTU
from ._peer import NOT_WATCHED, Started, veth_or_why

NAME = "hol"
#: Where the runner runs it: both, with different set-ups (see the module docstring).
WHERE = ("host", "vm")

#: Linux TCP's timers, which the VM's SCTP is set to match (milliseconds).
TCP_RTO_MIN_MS = 200
TCP_RTO_INITIAL_MS = 1000
TCP_DELACK_MIN_MS = 40
#: One-way delay of the impaired link (netem or relay), so that round trips are
#: network-like rather than loopback's microseconds, which the CPU would dominate: 25 ms
#: on the host (50 ms round trips); 100 ms in the VM, whose emulated CPU is 14 to 100
#: times slower (with other work on the host), so its network is slowed down too.
DEFAULT_DELAY_MS = {"host": 25.0, "vm": 100.0}
#: Over the veth pair, the transport's RTOs for a real path would be RFC 9260's (RTO.Min
#: 1 s, RTO.Initial 3 s); both ends get loopback's (TCP's 200 ms minimum), as the VM's
#: kernel SCTP does through its sysctls, so the paths compare.
VETH_OPTIONS: dict[str, Any] = {"rto_min": 0.2, "rto_initial": 0.5}
#: Seconds the client process of a veth run may take.
PEER_TIMEOUT = 900.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (defaults depend on where it runs and ``--quick``)."""
    parser.add_argument("--flows", type=int, default=16, help="request/response flows (16)")
    parser.add_argument(
        "--loss",
        type=float,
        nargs="+",
        default=None,
        help="packet loss rates in percent (host 0 2 5, VM 2; --quick: host 0 2)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="requests per second per flow (host 10, VM 1.25)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured seconds per case and seed (host 2.3, VM 18: over 3 seeds about "
        "1,100 and 1,080 samples; --quick: host 0.5, VM 4)",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=None,
        help="one-way delay of the link in ms (host 25, VM 100)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="loss-free seconds first (host 0.5, VM 1.5; --quick: host 0.2, VM 1)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=20.0,
        help="seconds to wait for the last responses (20)",
    )
    parser.add_argument("--size", type=int, default=128, help="request and response bytes")
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeded runs per case (3; --quick 2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="the first seed")
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
        help="loss rates at which the bare reference's one plain TCP connection runs too "
        "(default none: the VM's time goes to the cases the targets use; bare SCTP runs at "
        "every loss rate)",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["veth", "loopback"],
        help="host: where to measure (default veth and loopback; --quick: veth, or "
        "loopback where namespaces cannot be made); the VM measures on its loopback",
    )
    parser.add_argument(
        "--mtu", type=int, default=DEFAULT_MTU, help="the veth pair's MTU (default 1500)"
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
    seeds: list[int]
    tls: str
    layers: list[str]
    bare_loss: list[float]
    paths: list[str]
    mtu: int
    quick: bool
    sctp_sysctl: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        quick = bool(getattr(args, "quick", False))
        place = "vm" if IN_VM else "host"
        if args.size < HEADER.size:
            raise SystemExit(f"--size must be at least {HEADER.size}")
        default_duration = {("host", False): 2.3, ("host", True): 0.5}
        default_duration |= {("vm", False): 18.0, ("vm", True): 4.0}
        default_warmup = {("host", False): 0.5, ("host", True): 0.2}
        default_warmup |= {("vm", False): 1.5, ("vm", True): 1.0}
        # The VM measures where the targets are only: its CPU allows few messages per
        # second, and 1,000 samples per case at one loss rate take its whole budget.
        default_loss = {"host": [0.0, TARGET_LOSS, 5.0], "vm": [TARGET_LOSS]}[place]
        quick_loss = {"host": [0.0, TARGET_LOSS], "vm": [TARGET_LOSS]}[place]
        sysctl = {}
        if place == "vm":
            sysctl = {
                "rto_min": args.sctp_rto_min,
                "rto_initial": args.sctp_rto_initial,
                "sack_timeout": args.sctp_sack_timeout,
            }
        if place == "vm":
            paths = ["loopback"]
        elif args.paths:
            paths = list(args.paths)
        elif quick:  # one path: the veth pair, or loopback after saying why not
            paths = ["veth"]
        else:
            paths = ["veth", "loopback"]
        seeds = args.seeds or (2 if quick else 3)
        return cls(
            place=place,
            flows=args.flows,
            loss=list(args.loss or (quick_loss if quick else default_loss)),
            rate=args.rate or (1.25 if place == "vm" else 10.0),
            duration=args.duration or default_duration[place, quick],
            warmup=args.warmup if args.warmup is not None else default_warmup[place, quick],
            delay_ms=args.delay if args.delay is not None else DEFAULT_DELAY_MS[place],
            drain=args.drain,
            size=args.size,
            seeds=[args.seed + i for i in range(seeds)],
            tls=args.tls,
            layers=list(args.layers or (["tls", "bare"] if place == "vm" else ["tls"])),
            bare_loss=list(args.bare_loss or []),
            paths=paths,
            mtu=args.mtu,
            quick=quick,
            sctp_sysctl=sysctl,
        )

    def peer_arguments(self) -> list[str]:
        """The options that make the two processes of a veth run measure these."""
        return [
            *(["--quick"] if self.quick else []),
            *("--flows", str(self.flows), "--loss", *map(str, self.loss)),
            *("--rate", str(self.rate), "--duration", str(self.duration)),
            *("--warmup", str(self.warmup), "--delay", str(self.delay_ms)),
            *("--drain", str(self.drain), "--size", str(self.size)),
            *("--seeds", str(len(self.seeds)), "--seed", str(self.seeds[0])),
            *("--tls", self.tls, "--layers", *self.layers),
            *(["--bare-loss", *map(str, self.bare_loss)] if self.bare_loss else []),
        ]


# -- the cases ------------------------------------------------------------------------

#: Makes a case's connection for one seed.
Connect = Callable[[int], AbstractAsyncContextManager[Client]]
#: Where the server of (layer, streams) is, for the client.
Locate = Callable[[str, int], Where]


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


def _here(layer: str, streams: int) -> Where:
    return HERE


def cases(
    settings: Settings, ctx: tuple[ssl.SSLContext, ssl.SSLContext], locate: Locate = _here
) -> list[Case]:
    """The cases of this place, in the order they run at each loss rate and seed."""
    flows, place, size = settings.flows, settings.place, settings.size
    out: list[Case] = []
    if place == "vm":
        if "tls" in settings.layers:
            multi = partial(trio_sctls_tls, size, flows, "kernel", ctx, None)
            out.append(Case(place, "tls", "multi", multi))
            out.append(Case(place, "tls", "single", lambda _seed: tls_over_tcp(size, ctx)))
        if "bare" in settings.layers:
            out.append(Case(place, "bare", "multi", partial(bare_sctp, flows, "kernel", None)))
            out.append(Case(place, "bare", "single", lambda _seed: bare_tcp(size)))
        return out
    for layer in settings.layers:
        for variant, count in (("multi", flows), ("single", 1)):
            faults = Faults(delay=settings.delay_ms / 1000)
            where = locate(layer, count)
            if layer == "tls":
                connect: Connect = partial(_tls_case, size, count, ctx, faults, where)
            else:
                connect = partial(_bare_case, count, faults, where)
            out.append(Case(place, layer, variant, connect, faults))
    return out


def _tls_case(
    size: int,
    channels: int,
    ctx: tuple[ssl.SSLContext, ssl.SSLContext],
    faults: Faults,
    where: Where,
    seed: int,
) -> AbstractAsyncContextManager[Client]:
    return trio_sctls_tls(size, channels, "udp", ctx, faults, seed, where)


def _bare_case(
    streams: int, faults: Faults, where: Where, seed: int
) -> AbstractAsyncContextManager[Client]:
    return bare_sctp(streams, "udp", faults, seed, where)


def _runs(settings: Settings, case: Case, loss: float) -> bool:
    """Whether ``case`` runs at ``loss``: the bare reference's TCP connection only at
    ``--bare-loss`` rates (the VM's time is short)."""
    return not (
        case.layer == "bare" and case.variant == "single" and loss not in settings.bare_loss
    )


# -- one run of one case --------------------------------------------------------------


@dataclass
class Run:
    """What one seeded run of a case gave."""

    per_flow: list[list[float]]  # latencies (ms) per flow
    timeline: list[float]  # latencies (ms) in the order the requests were due
    unanswered: int
    cpu_busy: float
    counters: dict[str, int]


async def run_case(
    case: Case, loss: float, seed: int, settings: Settings, progress: Progress
) -> Run:
    """Measure one case at one loss rate with one seed."""
    book = Book(settings.flows)
    rate, flows = settings.rate, settings.flows

    async def set_loss(percent: float) -> None:
        if case.faults is not None:
            case.faults.loss = percent / 100
        elif settings.place == "vm":
            await netem("change", percent, settings.delay_ms)

    async def sender(client: Client, flow: int, origin: float) -> None:
        rng = random.Random(f"{seed}/{loss}/{flow}")
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
    async with case.connect(seed) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.read, book)
        origin = trio.current_time()
        for flow in range(flows):
            book.senders += 1
            nursery.start_soon(sender, client, flow, origin)
        await trio.sleep(settings.warmup)
        counters = proc_counters()
        await set_loss(loss)
        book.start = trio.current_time()
        book.stop = book.start + settings.duration
        cpu = time.process_time()
        while trio.current_time() < book.stop:
            await trio.sleep(min(0.5, book.stop - trio.current_time()))
            progress.update(
                f"{case.label}, {loss:g}% loss, seed {seed}: "
                f"{trio.current_time() - book.start:4.1f}/{settings.duration:g} s, "
                f"{len(book.timeline)} answers"
            )
        busy = (time.process_time() - cpu) / settings.duration
        with trio.move_on_after(settings.drain):
            await book.quiet.wait()
        after = proc_counters()
        await set_loss(0)
        nursery.cancel_scope.cancel()
    return Run(
        per_flow=[[v * 1000 for v in flow_samples] for flow_samples in book.latencies],
        timeline=[round(latency * 1000, 3) for _, latency in sorted(book.timeline)],
        unanswered=book.unanswered(),
        cpu_busy=busy,
        counters={name: value - counters.get(name, 0) for name, value in after.items()},
    )


def case_row(case: Case, path: str, loss: float, runs: list[Run]) -> dict[str, Any]:
    """A case's row: its runs' samples pooled, and what the runs say on their own."""
    merged = sorted(v for run in runs for v in run.timeline)
    row: dict[str, Any] = {
        "place": case.place,
        "path": path,
        "layer": case.layer,
        "variant": case.variant,
        "carrier": case.label,
        "loss_pct": loss,
        "seeds": len(runs),
        "messages": len(merged),
        "unanswered": sum(run.unanswered for run in runs),
    }
    for name, p in PERCENTILES.items():
        row[f"{name}_ms"] = round(percentile(merged, p), 3)
    row["max_ms"] = round(merged[-1], 3) if merged else math.nan
    row["mean_ms"] = round(sum(merged) / len(merged), 3) if merged else math.nan
    row["p90_ms_by_seed"] = [round(percentile(sorted(run.timeline), 90), 3) for run in runs]
    row["cpu_busy"] = round(sum(run.cpu_busy for run in runs) / len(runs), 3)
    for run in runs:
        for name, value in run.counters.items():
            row[name] = row.get(name, 0) + value
    return row


# -- one path -------------------------------------------------------------------------


async def measure_path(
    settings: Settings,
    path: str,
    ctx: tuple[ssl.SSLContext, ssl.SSLContext],
    progress: Progress,
    locate: Locate = _here,
) -> dict[str, Any]:
    """Every case at every loss rate and seed on one path: rows, CDFs, raw samples."""
    rows: list[dict[str, Any]] = []
    cdfs: dict[str, list[float]] = {}
    flow_cdfs: dict[str, list[list[float]]] = {}
    samples: dict[str, list[list[float]]] = {}
    streams_loss = streams_loss_rate(settings.loss)
    the_cases = cases(settings, ctx, locate)
    for loss in settings.loss:
        runs: dict[str, list[Run]] = {}
        for seed in settings.seeds:
            for case in the_cases:
                if _runs(settings, case, loss):
                    run = await run_case(case, loss, seed, settings, progress)
                    runs.setdefault(case.label, []).append(run)
        for case in the_cases:
            if case.label not in runs:
                continue
            case_runs = runs[case.label]
            row = case_row(case, path, loss, case_runs)
            rows.append(row)
            key = case_key(path, case.layer, case.variant, loss)
            samples[key] = [run.timeline for run in case_runs]
            cdfs[key] = quantiles([v for run in case_runs for v in run.timeline])
            if loss == streams_loss:
                flow_cdfs[key] = [
                    quantiles([v for run in case_runs for v in run.per_flow[flow]])
                    for flow in range(settings.flows)
                ]
            progress.log(
                f"{path:8s} {loss:4g}% loss  {case.label:40s} n={row['messages']:5d}  "
                + "  ".join(f"{name} {row[f'{name}_ms']:8.1f}" for name in PERCENTILES)
                + f" ms  cpu {row['cpu_busy']:.0%}"
                + (f"  unanswered {row['unanswered']}" if row["unanswered"] else "")
            )
    return {"rows": rows, "cdf_ms": cdfs, "flow_cdf_ms": flow_cdfs, "samples_ms": samples}


# -- two processes over a veth pair (benchmarks._peer) -----------------------------------


def _servers(settings: Settings) -> list[tuple[str, int]]:
    """(layer, streams) of every server a veth run's client needs."""
    return [(layer, n) for layer in settings.layers for n in (settings.flows, 1)]


async def serve_peer(
    args: Namespace, host: str, credentials: Path, task_status: Started = NOT_WATCHED
) -> None:
    """The server process: one udp server per (layer, stream count) on ``host``,
    answering every flow; reports their ports."""
    settings = Settings.from_args(args)
    server_ctx, _ = contexts(TLS_VERSIONS[settings.tls], credentials)
    info: dict[str, list[int | None]] = {}
    async with AsyncExitStack() as stack:
        for layer, streams in _servers(settings):
            if layer == "tls":
                serving = serving_associations(
                    answer_channels(settings.size),
                    server_ctx,
                    transport="udp",
                    streams=streams,
                    host=host,
                    **VETH_OPTIONS,
                )
            else:
                serving = serving_sctp(
                    answer_messages, transport="udp", streams=streams, host=host, **VETH_OPTIONS
                )
            address = await stack.enter_async_context(serving)
            info[f"{layer}/{streams}"] = [address.port, address.udp_port]
        task_status.started(info)
        await trio.sleep_forever()


async def measure_peer(
    args: Namespace, host: str, credentials: Path, server: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The client process: every case against :func:`serve_peer`'s servers on ``host``,
    through relays bound to this end's own address (``args.local``)."""
    settings = Settings.from_args(args)

    def locate(layer: str, streams: int) -> Where:
        port, udp_port = server[f"{layer}/{streams}"]
        return Where(Address(port, udp_port), host, args.local, VETH_OPTIONS)

    ctx = contexts(TLS_VERSIONS[settings.tls], credentials)
    return await measure_path(settings, "veth", ctx, progress, locate)


# -- the benchmark --------------------------------------------------------------------


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run every case at every loss rate and seed, on every path; see the module
    docstring. On the host the ratios, intervals and targets are computed here; the
    VM's come from :func:`finish` on the host."""
    settings = Settings.from_args(args)
    parts: dict[str, dict[str, Any]] = {}
    netns_status = "not asked"
    previous_sysctl: dict[str, int] = {}
    if settings.place == "vm":
        check_vm_prerequisites()
        previous_sysctl = set_sctp_sysctl(settings.sctp_sysctl)
        await netem_remove()
        await netem("add", 0, settings.delay_ms)
    try:
        for path in settings.paths:
            if path == "loopback":
                ctx = contexts(TLS_VERSIONS[settings.tls])
                second = settings
                if "veth" in parts and not args.loss:  # the second column: the targets' rates
                    second = replace(settings, loss=[x for x in settings.loss if x <= TARGET_LOSS])
                parts[path] = await measure_path(second, path, ctx, progress)
                continue
            veth, netns_status = await veth_or_why(
                NAME,
                "HEAD-OF-LINE",
                settings.peer_arguments(),
                progress,
                mtu=settings.mtu,
                time_limit=PEER_TIMEOUT,
            )
            if veth is not None:
                parts[path] = veth
            elif "loopback" not in settings.paths:
                ctx = contexts(TLS_VERSIONS[settings.tls])
                parts["loopback"] = await measure_path(settings, "loopback", ctx, progress)
    finally:
        if settings.place == "vm":
            with trio.CancelScope(shield=True):
                await netem_remove()
            set_sctp_sysctl(previous_sysctl)
    result = _result(settings, parts, netns_status, previous_sysctl)
    for note in result["notes"]:
        progress.log(f"NOTE: {note}")
    if settings.place == "host":
        finish(result)
        for item in result["ratios"]:
            progress.log(
                f"{item['path']:8s} {item['loss_pct']:4g}% loss  {item['layer']:4s} "
                f"{item['compare']:12s} "
                + "  ".join(
                    f"{name} {item[f'{name}_ratio']:.2f}x "
                    f"[{item[f'{name}_ci'][0]:.2f}, {item[f'{name}_ci'][1]:.2f}]"
                    for name in PERCENTILES
                )
            )
    return result


def _result(
    settings: Settings,
    parts: dict[str, dict[str, Any]],
    netns_status: str,
    previous_sysctl: dict[str, int],
) -> dict[str, Any]:
    """The paths' measurements as one result (ratios and targets: :func:`finish`)."""
    merged: dict[str, Any] = {"rows": [], "cdf_ms": {}, "flow_cdf_ms": {}, "samples_ms": {}}
    for part in parts.values():
        merged["rows"] += part["rows"]
        for key in ("cdf_ms", "flow_cdf_ms", "samples_ms"):
            merged[key].update(part[key])
    why_short = (
        "a --quick run"
        if settings.quick
        else "the VM's emulated CPU allows about "
        f"{settings.flows * settings.rate:g} messages per second with TLS on "
        f"{settings.flows} channels, and its run must fit the suite's time"
        if settings.place == "vm"
        else "a short run (--duration, --rate or --seeds given)"
    )
    return {
        "name": NAME,
        "place": settings.place,
        "paths": {path: path_label(path, settings) for path in parts},
        "netns_status": netns_status,
        "settings": {
            "flows": settings.flows,
            "loss_pct": settings.loss,
            "rate_per_flow": settings.rate,
            "duration_s": settings.duration,
            "seeds": settings.seeds,
            "warmup_s": settings.warmup,
            "delay_ms": settings.delay_ms,
            "size_bytes": settings.size,
            "tls": settings.tls,
            "layers": settings.layers,
            "bare_loss_pct": settings.bare_loss,
            "bootstrap_block": block_size(
                settings.flows * settings.rate, 2 * settings.delay_ms / 1000
            ),
            "min_samples": MIN_SAMPLES,
            "sctp_sysctl_ms": settings.sctp_sysctl,
            "sctp_sysctl_defaults_ms": previous_sysctl,
            "veth_transport_options": VETH_OPTIONS if "veth" in parts else {},
        },
        "setup": setup_note(settings),
        "notes": notes(merged["rows"], why_short, 2 * settings.delay_ms),
        **merged,
        "ratios": [],
        "targets": [],
        "cdf_probabilities": CDF_PROBABILITIES,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run this benchmark alone."""
    return benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
