"""The benchmark suite runs end to end (``--quick``, host only) and writes what it
promises: results.json with every present benchmark's rows and targets, and its PNGs;
where network namespaces can be made (root, ``ip``), rows over the veth pair too, else
a ``netns_status`` that says why not. No timing is asserted: this machine's speed is not
what is tested."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _netns, _peer, dtls, run, throughput
from benchmarks._common import Progress

#: The benchmarks whose standard host scenario is the veth pair (issue 11).
OVER_VETH = run.OVER_VETH
#: ... and those whose quick run keeps the loopback column too (hol's quick run measures
#: one path: the veth pair where it can be made).
WITH_LOOPBACK = ("throughput", "handshakes")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_quick_suite_writes_results_and_plots(tmp_path: Path) -> None:
    readme_before = run.README.read_text()
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--no-vm", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=590,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Targets:" in completed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    assert results["errors"] == {}
    assert results["machine"]["host"]["python"]
    present = [name for name in run.MODULES if run.load(name)[0] is not None]
    assert "throughput" in present and "overhead" in present
    assert sorted(results["benchmarks"]) == sorted(present)
    assert sorted(results["skipped"]) == sorted(set(run.MODULES) - set(present))
    for name in present:
        entry = results["benchmarks"][name]
        host = entry["host"]
        assert host["rows"], name
        assert isinstance(host["targets"], list), name
        for item in host["targets"]:
            assert {"name", "value", "target", "met"} <= set(item), (name, item)
            assert {"benchmark": name, "where": "host", **item} in results["targets"]
        assert entry["plots"]["host"], name
        for plot in entry["plots"]["host"]:
            path = out / plot
            assert path.suffix == ".png" and path.stat().st_size > 0, path
    why_not = _netns.unavailable()
    for name in OVER_VETH:
        host = results["benchmarks"][name]["host"]
        paths = {row["path"] for row in host["rows"]}
        assert "loopback" in paths or name not in WITH_LOOPBACK, name
        if why_not is None:
            assert host["netns_status"] == "ok", (name, host["netns_status"])
            assert "veth" in paths and "veth" in host["paths"], name
        else:  # the fallback: loudly loopback only, never a failure
            assert host["netns_status"] == why_not, name
            assert paths == {"loopback"}, name
            assert "CANNOT RUN HERE" in completed.stderr
            assert "LOOPBACK ONLY" in completed.stderr
    # Targets say what they are ratios to (the README shows "(see target)" for any that
    # does not); head-of-line ratios carry intervals.
    for item in results["targets"]:
        assert item["benchmark"] not in ("throughput", "hol", "scale", "dtls") or item["against"], (
            item
        )
    hol_targets = [item for item in results["targets"] if item["benchmark"] == "hol"]
    assert hol_targets and all(len(item["ci"]) == 2 for item in hol_targets)
    assert all("not TCP" in item["against"] for item in hol_targets)
    # Quick runs never touch the README's figures.
    assert run.README.read_text() == readme_before


def test_readme_block_is_replaced_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{run.START_MARKER}\nold\n{run.END_MARKER}\n\n## After\n")
    assert run.rewrite_readme("new table\n", readme)
    assert readme.read_text() == (
        f"# x\n\n{run.START_MARKER}\nnew table\n{run.END_MARKER}\n\n## After\n"
    )
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# no markers\n")
    assert not run.rewrite_readme("new", plain)
    assert plain.read_text() == "# no markers\n"


def test_missing_modules_are_skipped_not_fatal() -> None:
    module, why = run.load("no_such_benchmark")
    assert module is None and "not written yet" in why


needs_netns = pytest.mark.skipif(
    _netns.unavailable() is not None, reason=f"no network namespaces: {_netns.unavailable()}"
)


@needs_netns
def test_veth_pair_joins_two_namespaces_with_the_mtu_asked_and_leaves_nothing() -> None:
    with _netns.veth_pair(mtu=9000) as (ns_a, ns_b, addr_a, addr_b):
        assert {ns_a, ns_b} <= set(_netns.namespaces())
        link = _netns.run_in(ns_a, ["ip", "-o", "link", "show", _netns.INTERFACE], timeout=10)
        assert "mtu 9000" in link.stdout and "UP" in link.stdout
        address = _netns.run_in(ns_b, ["ip", "-o", "-4", "addr", "show"], timeout=10)
        assert f"{addr_b}/{_netns.PREFIX_LENGTH}" in address.stdout
        probe = (
            "import socket, sys; a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"a.bind(('{addr_a}', 0)); a.settimeout(5); "
            "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "b.sendto(b'x', a.getsockname()); print(a.recv(1).decode())"
        )
        # One namespace sees only its own end: the probe stays inside ns_a.
        assert _netns.run_in(ns_a, [sys.executable, "-c", probe], timeout=10).stdout == "x\n"
    assert not {ns_a, ns_b} & set(_netns.namespaces())


@needs_netns
def test_veth_pair_is_removed_when_the_block_raises() -> None:
    with pytest.raises(KeyboardInterrupt), _netns.veth_pair() as pair:
        raise KeyboardInterrupt
    assert not {pair.ns_a, pair.ns_b} & set(_netns.namespaces())


@needs_netns
def test_a_dead_runs_namespaces_are_swept() -> None:
    stale = f"{_netns.PREFIX}999999999-abcdef-a"  # beyond any pid_max: never alive
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in _netns.sweep_stale()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], check=False, capture_output=True)
    assert stale not in _netns.namespaces()


async def _without_namespaces(
    module: Any, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> dict[str, Any]:
    """``module``'s quick measurement where namespaces cannot be made: it says so loudly
    and measures loopback only."""
    monkeypatch.setattr(_peer, "unavailable", lambda: "not root (pretend)")
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    module.add_arguments(parser)
    result: dict[str, Any] = await module.measure(parser.parse_args(argv), Progress(StringIO()))
    assert result["netns_status"] == "not root (pretend)"
    assert {row["path"] for row in result["rows"]} == {"loopback"}
    assert "CANNOT RUN HERE" in capsys.readouterr().err
    assert any("No veth figures" in line for line in module.summarize(result))
    return result


async def test_without_namespaces_throughput_says_so_and_measures_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--bytes", "64KiB", "--channels", "1", "--sizes", "16384"]
    await _without_namespaces(throughput, argv, monkeypatch, capsys)


async def test_without_namespaces_dtls_says_so_and_measures_loopback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--quick", "--bytes", "64KiB", "--channels", "1", "--setups", "1"]
    result = await _without_namespaces(dtls, argv, monkeypatch, capsys)
    assert {(row["measure"], row["against"]) for row in result["rows"]} == {
        ("throughput", "rfc3436_1"),
        ("throughput", "tls_tcp"),
        ("set-up", "rfc3436_1"),
        ("set-up", "tls_tcp"),
    }
    assert all(t["target"] == "(informational)" and t["against"] for t in result["targets"])


def _fake_results(netns_status: str) -> dict[str, Any]:
    host = {
        "netns_status": netns_status,
        "machine": {"date": "2026-12-03 07:00 UTC"},
        "rows": [],
    }
    machine = {
        "machine": "CPU, 2 cores",
        "kernel": "6.1",
        "python": "3.11.7",
        "trio": "0.35.0",
        "openssl": "OpenSSL 3.0",
        "trio_sctls": "0.1.0",
        "commit": "abc1234",
    }
    return {
        "date": "2026-12-03 07:00 UTC",
        "seconds": 840.0,
        "machine": {"host": machine},
        "vm_status": "--no-vm",
        "benchmarks": {"throughput": {"host": host, "plots": {}}},
        "targets": [
            {
                "benchmark": "hol",
                "where": "host",
                "name": "p90",
                "value": 0.5,
                "ci": [0.4, 0.6],
                "target": "<= 0.75",
                "met": True,
                "against": "one SCTP stream (ours, not TCP) over veth",
            }
        ],
        "skipped": {},
        "errors": {},
    }


def test_readme_block_gives_versions_commit_and_each_rows_baseline(tmp_path: Path) -> None:
    block = run.readme_block(_fake_results("ok"), tmp_path)
    for text in ("commit `abc1234`", "Python 3.11.7", "trio 0.35.0", "OpenSSL 3.0", "14 minutes"):
        assert text in block, text
    assert "| 0.5 [0.4, 0.6] | <= 0.75 | one SCTP stream (ours, not TCP) over veth | yes |" in block
    assert "veth pair (MTU 1500)" in block and "LOOPBACK ONLY" not in block


def test_readme_block_says_loudly_when_the_host_measured_loopback_only(tmp_path: Path) -> None:
    block = run.readme_block(_fake_results("not root (network namespaces need root)"), tmp_path)
    assert "**LOOPBACK ONLY on the host" in block
    assert "throughput: not root" in block
