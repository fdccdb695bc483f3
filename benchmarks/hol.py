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
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
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
    LABELS,
    Book,
    Client,
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
from ._hol_stats import (
    CDF_PROBABILITIES,
    PERCENTILES,
    TARGET_LOSS,
    quantiles,
    ratio_rows,
    streams_loss_rate,
    targets,
)
from ._hol_vm import (
    check_vm_prerequisites,
    netem,
    netem_remove,
    proc_counters,
    set_sctp_sysctl,
)

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


# -- the cases ------------------------------------------------------------------------

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


def cases(settings: Settings, ctx: tuple[ssl.SSLContext, ssl.SSLContext]) -> list[Case]:
    """The cases of this place, in the order they run at each loss rate."""
    flows, place = settings.flows, settings.place
    size, seed = settings.size, settings.seed
    out: list[Case] = []
    if place == "vm":
        if "tls" in settings.layers:
            out.append(
                Case(
                    place,
                    "tls",
                    "multi",
                    partial(trio_sctls_tls, size, flows, "kernel", ctx, None, seed),
                )
            )
            out.append(Case(place, "tls", "single", partial(tls_over_tcp, size, ctx)))
        if "bare" in settings.layers:
            out.append(
                Case(place, "bare", "multi", partial(bare_sctp, flows, "kernel", None, seed))
            )
            out.append(Case(place, "bare", "single", partial(bare_tcp, size)))
        return out
    for layer in settings.layers:
        for variant, count in (("multi", flows), ("single", 1)):
            faults = Faults(delay=settings.delay_ms / 1000)
            if layer == "tls":
                connect: Connect = partial(trio_sctls_tls, size, count, "udp", ctx, faults, seed)
            else:
                connect = partial(bare_sctp, count, "udp", faults, seed)
            out.append(Case(place, layer, variant, connect, faults))
    return out


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
        counters = proc_counters()
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
        after = proc_counters()
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


async def measure(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Run every case at every loss rate; see the module docstring."""
    settings = Settings.from_args(args)
    ctx = contexts(TLS_VERSIONS[settings.tls])
    previous_sysctl: dict[str, int] = {}
    if settings.place == "vm":
        check_vm_prerequisites()
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
        "targets": targets(ratios, settings.place),
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run this benchmark alone."""
    return benchmark_main(NAME, add_arguments, measure, plot, __doc__, argv)


if __name__ == "__main__":
    main()
