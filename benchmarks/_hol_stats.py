"""The head-of-line benchmark's statistics: the percentiles reported, the sampled
latency distributions, the multi / single ratios and the targets they are held to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._common import percentile, target

#: Percentiles reported (and their column names).
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
#: Where the issue's targets apply.
TARGET_LOSS = 2.0
TARGET_P90_RATIO = 0.75
TARGET_P99_RATIO = 1.0

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


def targets(ratios: list[dict[str, Any]], place: str) -> list[dict[str, Any]]:
    """The issue's targets at 2 % loss, for the TLS cases measured at ``place``."""
    baseline = "one TLS/TCP connection" if place == "vm" else "one SCTP stream"
    out = []
    for item in ratios:
        if item["layer"] == "tls" and item["loss_pct"] == TARGET_LOSS:
            out.append(
                target(
                    f"{place}: p90 latency, 16 channels / {baseline}, 2% loss",
                    item["p90_ratio"],
                    TARGET_P90_RATIO,
                    at_most=True,
                )
            )
            out.append(
                target(
                    f"{place}: p99 latency, 16 channels / {baseline}, 2% loss",
                    item["p99_ratio"],
                    TARGET_P99_RATIO,
                    at_most=True,
                )
            )
    return out
