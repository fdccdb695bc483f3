"""benchmarks/hol.py runs on the host (SCTP over UDP through the impaired relay) and
returns a well-formed result. A smoke test of its structure: no timing is asserted."""

from __future__ import annotations

import argparse
from io import StringIO
from pathlib import Path

import pytest

from benchmarks import hol
from benchmarks._common import Progress


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    hol.add_arguments(parser)
    return parser.parse_args(["--quick", *argv])


async def test_hol_measures_every_case_and_reports_the_targets(tmp_path: Path) -> None:
    args = _args("--duration", "0.6", "--warmup", "0.2", "--rate", "10", "--delay", "5")
    result = await hol.measure(args, Progress(StringIO()))

    assert result["name"] == "hol"
    assert result["place"] == "host"
    assert result["settings"]["loss_pct"] == [0.0, 2.0]
    rows = result["rows"]
    assert {(r["layer"], r["variant"], r["loss_pct"]) for r in rows} == {
        ("tls", variant, loss) for variant in ("multi", "single") for loss in (0.0, 2.0)
    }
    for row in rows:
        assert row["messages"] > 0
        assert row["unanswered"] == 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p99.9_ms"]
        assert row["p99.9_ms"] <= row["max_ms"]
    assert [(r["layer"], r["loss_pct"]) for r in result["ratios"]] == [
        ("tls", 0.0),
        ("tls", 2.0),
    ]
    assert [t["name"].split(":")[1].split()[0] for t in result["targets"]] == ["p90", "p99"]
    assert all(isinstance(t["met"], bool) for t in result["targets"])
    probabilities = result["cdf_probabilities"]
    for key, values in result["cdf_ms"].items():
        assert len(values) == len(probabilities), key
        assert values == sorted(values)
    assert set(result["flow_cdf_ms"]) == {"tls/multi/2", "tls/single/2"}
    assert len(result["flow_cdf_ms"]["tls/multi/2"]) == 16

    pytest.importorskip("matplotlib")
    paths = hol.plot(result, tmp_path)
    assert [p.name for p in paths] == [
        "hol-host-cdf.png",
        "hol-host-percentiles.png",
        "hol-host-streams.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
