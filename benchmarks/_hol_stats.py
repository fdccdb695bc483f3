"""The head-of-line benchmark's statistics: the percentiles reported, the sampled
latency distributions, the ratios (multi-stream / one stream, our channels / bare
SCTP) with bootstrap confidence intervals, and the targets they are held to.

Intervals. A case's samples come from several seeded runs (``--seeds``), each a
sequence of latencies in the order the requests were due. They are not independent: one
lost packet holds back every message of a single stream for a retransmission timeout
and a round trip, so neighbours in time share their fate. The interval therefore comes
from a *moving-block* bootstrap, stratified by seed: each resample of a seed's run is
made of randomly placed runs of ``block`` consecutive samples (``block`` covers twice
the time one loss takes to repair by the timer, RTO.Min plus a round trip: 0.5 s on the
host, 0.8 s in the VM), so the correlation inside a block is kept (a block is at most a
quarter of a run, so that a short run still varies); the percentile is taken over the
seeds' resamples pooled. The two cases of a ratio are independent runs and are resampled
independently; the 95 % interval is the 2.5th and 97.5th percentiles of the resampled
ratios (the percentile method). numpy does the arithmetic, so this runs on the host only
(numpy dies of an illegal instruction on the VM's emulated CPU): the VM's raw samples
come back to the host, which computes their intervals (:func:`finish`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ._common import percentile, target

#: Percentiles reported (and their column names).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
#: Where the issue's targets apply.
TARGET_LOSS = 2.0
TARGET_P90_RATIO = 0.75
TARGET_P99_RATIO = 1.0
#: Issue 11: what our layers (TLS channels, the association) add to bare kernel SCTP at
#: p90, 2 % loss, in the VM: at most 10 %.
TARGET_OVER_BARE_P90 = 1.10
#: Samples a case should have (pooled over seeds), so that its p99 is not one of its few
#: worst messages; a run with fewer says so (:func:`notes`).
MIN_SAMPLES = 1000
#: Bootstrap: resamples per interval and the interval's coverage.
RESAMPLES = 2000
CONFIDENCE = 0.95
#: The smallest retransmission timeout in every case measured (TCP's, and SCTP's as the
#: benchmark sets it), for the bootstrap's block length.
RTO_MIN_S = 0.2

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


def case_key(path: str, layer: str, variant: str, loss: float) -> str:
    """How a case is named in a result's ``cdf_ms``, ``samples_ms``..."""
    return f"{path}/{layer}/{variant}/{loss:g}"


def block_size(messages_per_second: float, round_trip_s: float) -> int:
    """Bootstrap block length in samples: the messages due in twice the time one loss
    takes to repair by the timer (RTO.Min plus a round trip)."""
    return max(1, round(messages_per_second * 2 * (RTO_MIN_S + round_trip_s)))


def resampled_percentiles(
    runs: Sequence[Sequence[float]], p: float, block: int, resamples: int, rng: Any
) -> Any:
    """``resamples`` bootstrap replicates of the ``p``-th percentile of ``runs`` pooled:
    each run (one seed's samples in time order) resampled by moving blocks of ``block``
    samples, to its own length (see the module docstring). A numpy array."""
    import numpy as np

    parts = []
    for run in runs:
        samples = np.asarray(run, dtype=float)
        n = len(samples)
        if n == 0:
            continue
        b = max(1, min(block, n // 4))
        count = -(-n // b)
        starts = rng.integers(0, n - b + 1, size=(resamples, count))
        index = (starts[:, :, None] + np.arange(b)).reshape(resamples, count * b)[:, :n]
        parts.append(samples[index])
    if not parts:
        return np.full(resamples, np.nan)
    return np.percentile(np.concatenate(parts, axis=1), p, axis=1)


def ratio_interval(
    top: Sequence[Sequence[float]],
    bottom: Sequence[Sequence[float]],
    p: float,
    block: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap :data:`CONFIDENCE` interval of ``percentile(top) /
    percentile(bottom)`` at ``p``, each given as runs (one per seed) of samples in time
    order."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ratios = resampled_percentiles(top, p, block, resamples, rng) / resampled_percentiles(
        bottom, p, block, resamples, rng
    )
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    return round(float(low), 3), round(float(high), 3)


def _pooled(runs: Sequence[Sequence[float]]) -> list[float]:
    return sorted(v for run in runs for v in run)


def ratio_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios of a result's cases, each percentile with its bootstrap interval (from
    ``result["samples_ms"]``): per path, layer and loss rate, multi-stream / one
    stream; per path and loss rate, our channels / bare SCTP (``compare`` says which)."""
    samples: dict[str, list[list[float]]] = result["samples_ms"]
    block = result["settings"]["bootstrap_block"]
    pairs = []
    for row in result["rows"]:
        path, layer, loss = row.get("path", "loopback"), row["layer"], row["loss_pct"]
        if row["variant"] != "multi":
            continue
        multi = case_key(path, layer, "multi", loss)
        single = case_key(path, layer, "single", loss)
        if single in samples:
            pairs.append((path, layer, "multi/single", loss, multi, single))
        bare = case_key(path, "bare", "multi", loss)
        if layer == "tls" and bare in samples:
            pairs.append((path, layer, "tls/bare", loss, multi, bare))
    out = []
    for index, (path, layer, compare, loss, top, bottom) in enumerate(pairs):
        item: dict[str, Any] = {"path": path, "layer": layer, "compare": compare}
        item["loss_pct"] = loss
        for name, p in PERCENTILES.items():
            a, b = percentile(_pooled(samples[top]), p), percentile(_pooled(samples[bottom]), p)
            item[f"{name}_ratio"] = round(a / b, 3) if b else math.nan
            item[f"{name}_ci"] = list(
                ratio_interval(samples[top], samples[bottom], p, block, seed=index)
            )
            item[f"{name}_by_seed"] = [
                round(percentile(sorted(x), p) / percentile(sorted(y), p), 3)
                for x, y in zip(samples[top], samples[bottom], strict=True)
                if x and y
            ]
        out.append(item)
    return out


def targets(ratios: list[dict[str, Any]], place: str) -> list[dict[str, Any]]:
    """The targets at 2 % loss: multi-stream against one stream (one TLS/TCP connection
    in the VM, one SCTP stream of our own on the host) at p90 and p99, on every path;
    in the VM, our channels against bare kernel SCTP at p90."""
    out = []
    for item in ratios:
        if item["loss_pct"] != TARGET_LOSS or item["layer"] != "tls":
            continue
        where = place if place == "vm" else f"{place} {item['path']}"
        if item["compare"] == "multi/single":
            baseline = (
                "one TLS/TCP connection" if place == "vm" else "one SCTP stream (ours, not TCP)"
            )
            for name, limit in (("p90", TARGET_P90_RATIO), ("p99", TARGET_P99_RATIO)):
                out.append(
                    target(
                        f"{where}: {name} latency, 16 TLS channels / {baseline}, 2% loss",
                        item[f"{name}_ratio"],
                        limit,
                        at_most=True,
                        interval=item[f"{name}_ci"],
                        against=baseline + (" over " + item["path"] if place == "host" else ""),
                    )
                )
        elif place == "vm":
            out.append(
                target(
                    f"{where}: p90 latency, 16 TLS channels / 16 streams of bare kernel "
                    "SCTP (what our layers add), 2% loss",
                    item["p90_ratio"],
                    TARGET_OVER_BARE_P90,
                    at_most=True,
                    interval=item["p90_ci"],
                    against="16 streams of bare kernel SCTP (no TLS, none of our code)",
                )
            )
    return out


#: A case whose process was on the CPU more than this share of its measured time was
#: limited by the CPU: its latencies queue behind computation, not loss recovery.
CPU_BOUND = 0.6


def notes(rows: list[dict[str, Any]], why_short: str, round_trip_ms: float) -> list[str]:
    """What a reader must know before trusting the rows: the cases with fewer than
    :data:`MIN_SAMPLES` samples (and ``why_short``), those the CPU limited, and loss-free
    cases whose median is over twice the link's ``round_trip_ms`` (the process waited
    for a CPU: a loaded machine)."""
    Row = dict[str, Any]
    #: (which rows, what to say of each, the note given the count and those cases)
    checks: list[tuple[Callable[[Row], bool], Callable[[Row], str], Callable[[int, str], str]]]
    checks = [
        (
            lambda r: r["messages"] < MIN_SAMPLES,
            lambda r: str(r["messages"]),
            lambda n, cases: (
                f"fewer than {MIN_SAMPLES} samples in {n} case(s) ({cases}): " + why_short
            ),
        ),
        (
            lambda r: r.get("cpu_busy", 0) > CPU_BOUND,
            lambda r: f"{r['cpu_busy']:.0%}",
            lambda n, cases: (
                f"CPU-BOUND in {n} case(s) ({cases} of the time on the CPU, "
                f"more than {CPU_BOUND:.0%}): their latencies measure the machine's load, not "
                "loss recovery; measure again on a quiet machine"
            ),
        ),
        (
            lambda r: r["loss_pct"] == 0 and r["p50_ms"] > 2 * round_trip_ms,
            lambda r: f"p50 {r['p50_ms']:.0f} ms",
            lambda n, cases: (
                "LOADED MACHINE: with no loss the median should be about one "
                f"round trip ({round_trip_ms:g} ms), but in {n} case(s) ({cases}) the process "
                "waited for a CPU, so these figures say little; measure again on a quiet machine"
            ),
        ),
    ]
    out = []
    for wanted, detail, say in checks:
        found = [r for r in rows if wanted(r)]
        if found:
            out.append(say(len(found), ", ".join(f"{_case(r)}: {detail(r)}" for r in found)))
    return out


def _case(row: dict[str, Any]) -> str:
    return f"{row.get('path', 'loopback')} {row['layer']} {row['variant']} {row['loss_pct']:g}%"


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """On the host: the ratios with their intervals and the targets, from the raw
    samples, which are then dropped (they are large, and the CDFs stay). Idempotent."""
    if "samples_ms" in result:
        result["ratios"] = ratio_rows(result)
        result["targets"] = targets(result["ratios"], result.get("place", "host"))
        del result["samples_ms"]
    return result
