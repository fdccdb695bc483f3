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
  only udp at the largest size, which the idle target reads, gets it: the other runs
  idle :data:`SHORT_IDLE` seconds (tcp and memory send nothing at idle);
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
import time
from pathlib import Path
from typing import Any

from trio_sctls.sctp import SCTPConfig

from ._common import (
    TLS_VERSIONS,
    Progress,
    benchmark_main,
    profile_report,
    pyplot,
    save_figure,
    target,
)
from ._scale_child import run_child

NAME = "scale"
WHERE = ("host",)

KINDS = ("udp", "udp-own", "memory", "tcp")
#: Kinds measured at every size; the others at the largest size only.
EVERY_SIZE = ("udp", "tcp")
#: Our own limits (the issue sets none): idle CPU for ``N`` associations at the largest
#: size, and how much the set-up time per association may grow from the smallest size to
#: the largest (1 = linear; O(N^2) work shows as a ratio growing with N).
IDLE_CPU_LIMIT = 10.0
SETUP_GROWTH_LIMIT = 2.0
#: How much the CPU per event at one endpoint may grow from the smallest N to 10x the
#: largest (it should not grow at all; 3 leaves room for caches and noise).
CORE_GROWTH_LIMIT = 3.0
#: Idle seconds of the runs no idle target reads (smaller sizes, other kinds: tcp and
#: memory send nothing at idle): enough for the echo-after-idle check, and they keep the
#: suite within its time.
SHORT_IDLE = 5.0


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
        help="seconds of idle time measured for udp at the largest size, which the idle "
        "CPU target uses (default 31: one whole heartbeat interval, so every association "
        "end beats once in it; --quick: 2); every other run idles at most "
        f"{SHORT_IDLE:g} s (--quick: 1 s)",
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
    idle = args.idle if args.idle is not None else (2.0 if args.quick else 31.0)
    short_idle = min(idle, 1.0 if args.quick else SHORT_IDLE)
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
            "idle": idle if (kind, n) == ("udp", largest) else short_idle,
            "concurrency": args.concurrency,
            "tls": args.tls,
            "trace": mode == "trace",
            "profile": str(args.profile.resolve()) if mode == "profile" else None,
        }
        row = await run_child(spec, progress)
        if mode == "profile":
            for phase in ("setup", "idle"):
                report = profile_report(f"{spec['profile']}-{phase}.prof", top=[("tottime", 25)])
                progress.log(f"udp N={n}, {phase}, by own time:\n{report}")
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
                    against="all N (a fraction, not a speed)",
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
                    against="one core (a percentage, not a ratio)",
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
                        against=f"the same at N={sizes[0]}, same run",
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
                against=f"the same at N={core_rows[0]['n']}, same run",
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
    plt = pyplot()
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
    return [save_figure(fig, directory / "scale.png", dpi=110)]


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
    benchmark_main(NAME, add_arguments, measure, plot, __doc__)


if __name__ == "__main__":
    main()
