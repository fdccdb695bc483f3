"""Soak: good clients and hostile ones against one server, every good byte checked.

    python tests/soak/mixed.py [--seconds 20] [--transport udp|kernel|memory|auto]
                               [--workers 8] [--hostile 0.2] [--warmup 10]
                               [--max-growth 0.10] [--json out.json]

One process, loopback only. A server (``trio_sctls.serve``) runs the README's handler
(an echo task per channel). ``--workers`` tasks each open association after
association until ``--seconds`` have passed: with probability ``--hostile`` a hostile
client drawn from tests/test_hostile_clients.py (an ABORT after open, plain SCTP closed
or aborted, junk on the TLS streams, an untrusted CA, a wrong host name, a client
cancelled 1 ms in, a plain association that never speaks; the killed process is left
to that test: each one would hold a dead association until SCTP gives up on it), else a
good client that echoes random messages (seeded) on every channel and checks every byte
(load_echo.py's ``exchange``). The process's RSS is sampled every second.

Exit status 0 when no good byte came back wrong, no good client failed, no hostile
client saw the server misbehave, RSS grew by at most ``--max-growth`` between the end
of ``--warmup`` and the end, and a good client still gets its echo after the load (the
server still serves); one summary line either way, and the whole report with
``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

if __name__ == "__main__":  # run as a script: find the package and the tests from a checkout
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import trio_sctls
from tests.conftest import server_context
from tests.soak.load_echo import Tally, exchange, rss_kib
from tests.test_hostile_clients import (
    CASES,
    HANDSHAKE_TIMEOUT,
    STREAMS,
    Target,
    echo_each_channel,
    good_client,
)
from trio_sctls._api import resolve_transport

#: The in-process hostile cases of the hostile-clients test (a killed process would
#: leave a dead udp association behind for every draw).
HOSTILE = CASES
#: How a good client fails (counted, not raised: the soak goes on and reports them).
_GOOD_CLIENT_FAILURES = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    trio.TooSlowError,
)
#: Seconds any one client may take before it counts as a failure.
CLIENT_LIMIT = 30.0


@dataclass
class Run:
    """What the clients saw."""

    tally: Tally = field(default_factory=Tally)
    good: int = 0
    hostile: Counter[str] = field(default_factory=Counter)
    hostile_failures: list[str] = field(default_factory=list)


async def good_echoes(target: Target, rng: random.Random, run: Run, size: int) -> None:
    """One good association: a few random messages echoed on every channel, checked."""
    async with target.secure() as association:

        async def flow(stream: int) -> None:
            for _ in range(rng.randint(1, 4)):
                payload = rng.randbytes(rng.randint(1, size))
                await exchange(association.channels[stream], payload, run.tally, stream=stream)

        async with trio.open_nursery() as nursery:
            for stream in range(len(association.channels)):
                nursery.start_soon(flow, stream)
    run.good += 1


async def worker(
    index: int, target: Target, args: argparse.Namespace, run: Run, deadline: float
) -> None:
    """Clients one after another until the deadline."""
    rng = random.Random(index)
    while time.perf_counter() < deadline:
        if rng.random() < args.hostile:
            case = rng.choice(HOSTILE)
            try:
                with trio.fail_after(CLIENT_LIMIT):
                    await case(target)
            except Exception as exc:
                run.hostile_failures.append(f"{case.__name__}: {exc!r}")
            run.hostile[case.__name__] += 1
            continue
        try:
            with trio.fail_after(CLIENT_LIMIT):
                await good_echoes(target, rng, run, args.size)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            trio.TooSlowError,
        ) as exc:
            run.tally.failures.append(f"worker {index}: {exc!r}")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    """The whole soak; returns the report."""
    transport = resolve_transport(args.transport)
    run = Run()
    rss: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery:
        listener = await nursery.start(
            partial(
                trio_sctls.serve,
                echo_each_channel,
                0,
                ssl_context=server_context(),
                host="127.0.0.1",
                transport=transport,
                outbound_streams=STREAMS,
                max_inbound_streams=STREAMS,
                udp_port=0 if transport == "udp" else None,
                handshake_timeout=HANDSHAKE_TIMEOUT,
                shutdown_timeout=1.0,
            )
        )
        target = Target(transport, listener.port, udp_port=listener.udp_port)
        started = time.perf_counter()
        deadline = started + args.seconds
        async with trio.open_nursery() as clients:
            for index in range(args.workers):
                clients.start_soon(worker, index, target, args, run, deadline)
            while time.perf_counter() < deadline:
                await trio.sleep(1)
                rss.append((round(time.perf_counter() - started, 1), rss_kib()))
        # The server still serves.
        try:
            with trio.fail_after(CLIENT_LIMIT):
                await good_client(target, b"after the soak")
            serving = True
        except Exception as exc:
            run.tally.failures.append(f"after the soak: {exc!r}")
            serving = False
        nursery.cancel_scope.cancel()
    after_warmup = [kib for t, kib in rss if t >= args.warmup]
    growth = (after_warmup[-1] / after_warmup[0] - 1) if len(after_warmup) >= 2 else 0.0
    report: dict[str, Any] = {
        "transport": transport,
        "seconds": args.seconds,
        "good_associations": run.good,
        "hostile_associations": sum(run.hostile.values()),
        "hostile_by_kind": dict(run.hostile),
        "messages": run.tally.messages,
        "bytes_checked": run.tally.bytes,
        "mismatches": run.tally.mismatches,
        "failures": run.tally.failures,
        "hostile_failures": run.hostile_failures,
        "rss_kib": rss,
        "rss_growth_after_warmup": round(growth, 4),
        "still_serving": serving,
    }
    report["ok"] = (
        serving
        and run.tally.mismatches == 0
        and not run.tally.failures
        and not run.hostile_failures
        and run.good > 0
        and growth <= args.max_growth
    )
    return report


def main() -> int:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--transport", default="udp")
    parser.add_argument("--workers", type=int, default=8, help="clients at once")
    parser.add_argument("--hostile", type=float, default=0.2, help="share of hostile clients")
    parser.add_argument("--size", type=int, default=2048, help="largest good message, bytes")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS counts")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = trio.run(soak, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    problems = report["failures"] + report["hostile_failures"]
    print(
        f"mixed soak {'OK' if report['ok'] else 'FAILED'}: {report['transport']}, "
        f"{report['seconds']:g} s, {report['good_associations']} good associations "
        f"({report['messages']} messages, {report['bytes_checked']} bytes checked, "
        f"{report['mismatches']} wrong), {report['hostile_associations']} hostile, "
        f"RSS growth {report['rss_growth_after_warmup']:+.1%}, still serving: "
        f"{report['still_serving']}" + (f"; first problem: {problems[0]}" if problems else "")
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
