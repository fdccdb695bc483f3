"""The benchmark suite runs end to end (``--quick``, host only) and writes what it
promises: results.json with every present benchmark's rows and targets, and its PNGs.
No timing is asserted: this machine's speed is not what is tested."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run

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
