"""Every notebook in notebooks/ runs top to bottom without an error and draws a figure.

Each notebook runs in a fresh kernel on this interpreter (the venv's, whichever way
pytest was started), with notebooks/ as its working directory, and the executed copy is
written to a temporary directory: the committed files are never touched here.

This module is also how ``scripts/notebooks`` refreshes the committed outputs:
``python -m tests.test_notebooks [NOTEBOOK ...]`` executes notebooks in place.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
#: Seconds one cell may run: a safety net for a hung cell, not a measurement.
CELL_TIMEOUT = 120


def _kernel_spec_dir(directory: Path) -> Path:
    """Write a kernel spec for this very interpreter, with matplotlib's inline backend.

    The stock ``python3`` spec found on the Jupyter path could name another interpreter
    (a user-wide or system-wide spec), and a ``MPLBACKEND`` set in the environment (Agg
    on many CI machines) would stop the inline backend from returning figures as PNG.
    Named ``python3`` so that nbclient treats it as ipykernel (in-memory history).
    """
    spec = directory / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
            }
        )
    )
    return directory


def execute(path: Path, *, record_timing: bool = True) -> Any:
    """Run the notebook at ``path`` in a fresh kernel with cwd ``notebooks/``; return the
    executed notebook (an ``nbformat.NotebookNode``).

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised (names the cell).
        nbclient.exceptions.CellTimeoutError: a cell ran longer than CELL_TIMEOUT.
    """
    notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory(prefix="trio-sctls-kernel-") as kernels:
        specs = KernelSpecManager(
            kernel_dirs=[str(_kernel_spec_dir(Path(kernels)))], ensure_native_kernel=False
        )
        client = NotebookClient(
            notebook,
            km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs),
            timeout=CELL_TIMEOUT,
            record_timing=record_timing,
            resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        )
        # cleanup_kc: shut the kernel down and close its channels, though we made its
        # manager (nbclient leaves a kernel it does not own running).
        client.execute(cleanup_kc=True)
    return notebook


def images(notebook: Any) -> int:
    """How many PNG outputs ``notebook``'s code cells produced."""
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    executed = execute(path)
    # Kept for a look after a failure (pytest keeps the last few tmp_path directories).
    nbformat.write(executed, tmp_path / path.name)  # type: ignore[no-untyped-call]
    assert images(executed) >= 1, f"{path.name} drew no figure"


def main() -> None:
    """Execute notebooks in place, saving them with their outputs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path, default=NOTEBOOKS)
    args = parser.parse_args()
    for path in args.notebooks:
        print(f"running {path} ...", file=sys.stderr, flush=True)
        # No timing metadata: the committed files change only when their outputs do.
        executed = execute(path.resolve(), record_timing=False)
        nbformat.validate(executed)
        nbformat.write(executed, path)  # type: ignore[no-untyped-call]
        print(f"  saved, {images(executed)} figure(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
