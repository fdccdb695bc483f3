"""benchmarks/hol.py runs on the host (SCTP over UDP through the impaired relay) and
returns a well-formed result with bootstrap intervals; the statistics behind them
(_hol_stats) say what they should on data whose answer is known. No timing is asserted."""

from __future__ import annotations

import argparse
import random
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _hol_stats, _peer, hol
from benchmarks._common import Progress


def _numpy() -> Any:
    """numpy, imported in the test that needs it: never at collection, which the kernel
    tests' VM does too, where numpy dies of an illegal instruction."""
    return pytest.importorskip("numpy")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    hol.add_arguments(parser)
    return parser.parse_args(["--quick", *argv])


async def test_hol_measures_every_case_and_seed_and_reports_intervals(tmp_path: Path) -> None:
    args = _args(
        *("--duration", "0.6", "--warmup", "0.2", "--rate", "10", "--delay", "5"),
        *("--paths", "loopback", "--seeds", "2"),
    )
    result = await hol.measure(args, Progress(StringIO()))

    assert result["name"] == "hol"
    assert result["place"] == "host"
    assert list(result["paths"]) == ["loopback"]
    assert result["settings"]["loss_pct"] == [0.0, 2.0]
    assert result["settings"]["seeds"] == [1, 2]
    rows = result["rows"]
    assert {(r["path"], r["layer"], r["variant"], r["loss_pct"]) for r in rows} == {
        ("loopback", "tls", variant, loss) for variant in ("multi", "single") for loss in (0.0, 2.0)
    }
    for row in rows:
        assert row["seeds"] == 2 and len(row["p90_ms_by_seed"]) == 2
        assert row["messages"] > 0
        assert row["unanswered"] == 0
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["p99.9_ms"]
        assert row["p99.9_ms"] <= row["max_ms"]
    # A short run says it is short, case by case.
    short = f"fewer than {_hol_stats.MIN_SAMPLES} samples in 4 case(s)"
    assert [note for note in result["notes"] if short in note]
    assert [(r["path"], r["compare"], r["loss_pct"]) for r in result["ratios"]] == [
        ("loopback", "multi/single", 0.0),
        ("loopback", "multi/single", 2.0),
    ]
    for item in result["ratios"]:
        for name in _hol_stats.PERCENTILES:
            low, high = item[f"{name}_ci"]
            assert low <= high
            assert len(item[f"{name}_by_seed"]) == 2
    assert [t["name"].split(":")[1].split()[0] for t in result["targets"]] == ["p90", "p99"]
    for item in result["targets"]:
        assert isinstance(item["met"], bool)
        assert "one SCTP stream" in item["name"]
        assert item["ci"][0] <= item["ci"][1]
    assert "samples_ms" not in result  # the raw samples are dropped once used
    probabilities = result["cdf_probabilities"]
    for key, values in result["cdf_ms"].items():
        assert key.startswith("loopback/tls/")
        assert len(values) == len(probabilities), key
        assert values == sorted(values)
    assert set(result["flow_cdf_ms"]) == {"loopback/tls/multi/2", "loopback/tls/single/2"}
    assert len(result["flow_cdf_ms"]["loopback/tls/multi/2"]) == 16
    assert any("| loopback | 2% |" in line for line in hol.summarize(result))

    pytest.importorskip("matplotlib")
    paths = hol.plot(result, tmp_path)
    assert [p.name for p in paths] == [
        "hol-host-cdf.png",
        "hol-host-percentiles.png",
        "hol-host-streams.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)


def _runs(scale: float, seeds: int = 3, n: int = 400, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[scale * rng.expovariate(1.0) for _ in range(n)] for _ in range(seeds)]


def test_interval_of_a_ratio_covers_the_truth_and_excludes_what_it_should() -> None:
    same = _hol_stats.ratio_interval(_runs(1.0, seed=1), _runs(1.0, seed=2), 90, 20)
    assert same[0] < 1.0 < same[1]
    double = _hol_stats.ratio_interval(_runs(2.0, seed=3), _runs(1.0, seed=4), 90, 20)
    assert 1.0 < double[0] < 2.0 < double[1] < 3.0


def test_blocks_keep_neighbours_together_so_correlated_runs_get_wider_intervals() -> None:
    # Each run: slow stretches of 50 samples (a loss holding a stream up) among fast ones.
    def clustered(seed: int) -> list[list[float]]:
        rng = random.Random(seed)
        runs = []
        for _ in range(3):
            run: list[float] = []
            while len(run) < 400:
                slow = rng.random() < 0.15
                run += [(200.0 if slow else 50.0) + rng.random() for _ in range(50)]
            runs.append(run[:400])
        return runs

    top, bottom = clustered(5), clustered(6)
    iid = _hol_stats.ratio_interval(top, bottom, 90, 1)
    blocked = _hol_stats.ratio_interval(top, bottom, 90, 50)
    assert blocked[1] - blocked[0] > iid[1] - iid[0]


def test_a_block_is_at_most_a_quarter_of_a_run_so_short_runs_still_vary() -> None:
    rng = _numpy().random.default_rng(0)
    values = _hol_stats.resampled_percentiles([list(range(40))], 50, 1000, 200, rng)
    assert len(set(values.tolist())) > 1


def _vm_result() -> dict[str, Any]:
    """A VM-shaped result as it comes back to the host: raw samples, no ratios."""
    samples = {
        "loopback/tls/multi/2": _runs(220.0, seed=1),
        "loopback/tls/single/2": _runs(400.0, seed=2),
        "loopback/bare/multi/2": _runs(210.0, seed=3),
    }
    rows = [
        {"path": "loopback", "layer": layer, "variant": variant, "loss_pct": 2.0, "messages": 1200}
        for layer, variant in (("tls", "multi"), ("tls", "single"), ("bare", "multi"))
    ]
    return {
        "place": "vm",
        "rows": rows,
        "settings": {"bootstrap_block": 13},
        "samples_ms": samples,
        "ratios": [],
        "targets": [],
    }


def test_finish_computes_the_vm_ratios_and_targets_on_the_host() -> None:
    result = hol.finish(_vm_result())
    assert "samples_ms" not in result
    compares = {(item["layer"], item["compare"]) for item in result["ratios"]}
    assert compares == {("tls", "multi/single"), ("tls", "tls/bare")}
    names = [item["name"] for item in result["targets"]]
    assert any("one TLS/TCP connection" in name for name in names)
    (over_bare,) = [item for item in result["targets"] if "bare kernel SCTP" in item["name"]]
    assert over_bare["target"] == f"<= {_hol_stats.TARGET_OVER_BARE_P90}"
    assert over_bare["ci"][0] <= over_bare["value"] <= over_bare["ci"][1]
    assert hol.finish(result) is result  # idempotent


@pytest.mark.parametrize("quick", [False, True])
def test_the_veth_run_s_two_processes_measure_what_this_one_would(quick: bool) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    hol.add_arguments(parser)
    here = hol.Settings.from_args(parser.parse_args(["--quick"] if quick else []))
    there = hol.Settings.from_args(parser.parse_args(here.peer_arguments()))
    assert {**vars(there), "paths": None} == {**vars(here), "paths": None}


def test_cpu_bound_cases_and_a_loaded_machine_are_called_out() -> None:
    rows = [
        {"path": "loopback", "layer": "tls", "variant": "multi", "loss_pct": loss}
        | {"messages": 1020, "cpu_busy": busy, "p50_ms": p50}
        for loss, busy, p50 in ((2.0, 0.35, 60.0), (2.0, 0.93, 60.0), (0.0, 0.2, 55.0))
    ]
    (note,) = _hol_stats.notes(rows, "why", 50.0)
    assert note.startswith("CPU-BOUND in 1 case(s) (loopback tls multi 2%: 93%")
    rows[2]["p50_ms"] = 500.0
    assert "LOADED MACHINE" in _hol_stats.notes(rows, "why", 50.0)[1]


async def test_without_namespaces_hol_says_so_and_measures_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_peer, "unavailable", lambda: "not root (pretend)")
    args = _args(
        *("--duration", "0.3", "--warmup", "0.1", "--delay", "5", "--loss", "2"),
        *("--seeds", "1"),
    )
    result = await hol.measure(args, Progress(StringIO()))
    assert result["netns_status"] == "not root (pretend)"
    assert list(result["paths"]) == ["loopback"]
    assert {row["path"] for row in result["rows"]} == {"loopback"}
    assert "CANNOT RUN HERE" in capsys.readouterr().err
    assert any("No veth figures" in line for line in hol.summarize(result))
