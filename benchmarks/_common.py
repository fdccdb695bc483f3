"""What every benchmark shares: certificates, the machine description, percentiles, a live
progress line, profiles and figures as files, and running a benchmark inside the
kernel-SCTP VM. (Connection set-ups on loopback are in :mod:`benchmarks._loopback`.)

Conventions (see ``benchmarks/run.py``): a benchmark module has

* ``NAME``: a short identifier (``"throughput"``);
* ``def add_arguments(parser)``: its own command-line options (each with a default, and a
  smaller value under ``--quick``);
* ``async def measure(args, progress) -> dict``: runs on the current machine and returns a
  JSON-able result with at least ``"rows"`` (a list of flat dicts) and ``"targets"`` (a
  list of :func:`target` dicts);
* ``def plot(result, directory) -> list[Path]``: writes PNG figures, returns their paths;
* optionally ``def finish(result) -> dict``: what must be computed on the host from a
  result measured in the VM (numpy dies on the VM's emulated CPU), e.g. bootstrap
  intervals and the targets that use them;
* ``main()`` via :func:`benchmark_main`, so ``python -m benchmarks.NAME --json out.json``
  runs it alone.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import math
import os
import platform
import pstats
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TextIO

import trio
import trustme

ROOT = Path(__file__).resolve().parent.parent
SERVER_NAME = "bench.example"
#: Set by tests/vm/run_in_vm.py inside the guest.
IN_VM = os.environ.get("TRIO_SCTLS_IN_VM") == "1"

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def write_credentials(directory: Path) -> Path:
    """Write a fresh ECDSA P-256 CA (``ca.pem``) and a certificate for
    :data:`SERVER_NAME` with its key (``server.pem``) into ``directory``, for
    :func:`contexts` in processes that must share them (the ends of a two-process run).

    Returns:
        ``directory``.
    """
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    ca.issue_cert(
        SERVER_NAME, key_type=trustme.KeyType.ECDSA
    ).private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    return directory


def contexts(
    version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, credentials: Path | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A (server, client) pair of contexts for one ECDSA P-256 CA and certificate, pinned
    to ``version``. Baseline and trio-sctls use the same pair in a run.

    Args:
        version: the only TLS version both accept.
        credentials: a directory written by :func:`write_credentials`; by default a fresh
            CA and certificate, in memory.
    """
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client = ssl.create_default_context()
    if credentials is None:
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        ca.issue_cert(SERVER_NAME, key_type=trustme.KeyType.ECDSA).configure_cert(server)
        ca.configure_trust(client)
    else:
        server.load_cert_chain(credentials / "server.pem")
        client.load_verify_locations(credentials / "ca.pem")
    for context in (server, client):
        context.minimum_version = context.maximum_version = version
    return server, client


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``samples``, by linear interpolation."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def target(
    name: str,
    value: float,
    limit: float | None,
    *,
    at_most: bool = False,
    interval: Sequence[float] | None = None,
    against: str = "",
) -> dict[str, Any]:
    """One performance target: ``value`` must be >= ``limit`` (or <= with ``at_most``).

    Args:
        name: what is measured, and what it is a ratio to.
        value: the measured value (whether the target is met is judged on it).
        limit: the bound; ``None`` for an informational figure, which no bound
            fits (its ``target`` says so and it counts as met).
        at_most: ``value`` must not exceed ``limit`` (default: must reach it).
        interval: the value's 95 % confidence interval, where one was computed; kept
            in the target (``"ci"``) so a reader sees how sure the verdict is.
        against: what ``value`` is a ratio to (the README's table says it row by row),
            or what it is when not a ratio.
    """
    if limit is None:  # informational: nothing to meet
        wanted, met = "(informational)", True
    else:
        wanted, met = (
            f"{'<=' if at_most else '>='} {limit}",
            (value <= limit if at_most else value >= limit),
        )
    out: dict[str, Any] = {
        "name": name,
        "value": round(value, 3),
        "target": wanted,
        "met": bool(met),
        "against": against,
    }
    if interval is not None:
        out["ci"] = [round(float(bound), 3) for bound in interval]
    return out


def profile_report(source: cProfile.Profile | str, *, top: Sequence[tuple[str, int]]) -> str:
    """The busiest functions of a profile, as text.

    Args:
        source: a profiler (stopped) or the path of a file of its stats.
        top: ``(sort key, count)`` pairs, e.g. ``[("tottime", 30)]``: for each, the
            first ``count`` functions in ``pstats`` order ``sort key``, one listing after
            the other.
    """
    out = io.StringIO()
    stats = pstats.Stats(source, stream=out)
    for key, count in top:
        stats.sort_stats(key).print_stats(count)
    return out.getvalue()


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` drawing into files only (the Agg backend).

    Imported on demand, never at module level: benchmarks run inside the VM too, where
    numpy dies of an illegal instruction on the emulated CPU; their figures are drawn on
    the host.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path, *, dpi: int) -> Path:
    """Lay out a pyplot ``figure``, write it as a PNG at ``path`` and free it.

    Returns:
        ``path``.
    """
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    """The short commit measured, ``-dirty`` if tracked files differ from it (so a
    figure is never credited to a commit that did not produce it)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    """Where and with what a result was measured."""
    import trio_sctls

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {platform.machine()}",
        "kernel": platform.release(),
        "in_vm": IN_VM,
        "python": platform.python_version(),
        "trio": trio.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "trio_sctls": getattr(trio_sctls, "__version__", "dev"),
        "commit": _git_commit(),
    }


class Progress:
    """A live status line on stderr: rewritten in place on a terminal, else printed at
    most every few seconds (so CI logs and VM consoles show it without flooding)."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = interval
        self._last = 0.0
        self._width = 0
        self._started = time.monotonic()

    def update(self, text: str) -> None:
        """Show ``text`` (prefixed with the elapsed time)."""
        now = time.monotonic()
        line = f"[{now - self._started:6.1f} s] {text}"
        if self._tty:
            pad = max(0, self._width - len(line))
            self._stream.write("\r" + line + " " * pad)
            self._width = len(line)
            self._stream.flush()
        elif now - self._last >= self._interval:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._last = now

    def log(self, text: str) -> None:
        """Print a permanent line (a finished measurement)."""
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self._stream.write(text + "\n")
        self._stream.flush()


def shout(text: str) -> None:
    """Print ``text`` on stderr in a box of ``!``: something is missing from the results
    (the VM or the network namespaces could not run) and a reader must not miss it."""
    bar = "!" * min(100, max(len(line) for line in text.splitlines()) + 4)
    print(
        f"\n{bar}\n" + "\n".join(f"!! {line}" for line in text.splitlines()) + f"\n{bar}\n",
        file=sys.stderr,
        flush=True,
    )


class Benchmark(Protocol):
    """What ``benchmarks/run.py`` expects of a benchmark module."""

    NAME: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def measure(
        self, args: argparse.Namespace, progress: Progress
    ) -> Awaitable[dict[str, Any]]: ...

    def plot(self, result: dict[str, Any], directory: Path) -> list[Path]: ...


def benchmark_main(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    measure: Callable[[argparse.Namespace, Progress], Awaitable[dict[str, Any]]],
    plot: Callable[[dict[str, Any], Path], list[Path]],
    doc: str | None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one benchmark from the command line: measure, write ``--json`` and
    ``--plots DIR`` if given, and print each target."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a small, fast run")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--plots", type=Path, help="write PNG figures into this directory")
    add_arguments(parser)
    args = parser.parse_args(argv)
    progress = Progress()
    result = trio.run(measure, args, progress)
    result.setdefault("name", name)
    result["machine"] = machine_info()
    for item in result.get("targets", []):
        progress.log(
            f"target {item['name']}: {item['value']} (want {item['target']}) "
            f"{'met' if item['met'] else 'NOT MET'}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        for path in plot(result, args.plots):
            progress.log(f"wrote {path}")
    return result


def run_in_vm(module: str, arguments: Sequence[str], *, timeout: float = 1500) -> dict[str, Any]:
    """Run ``python -m benchmarks.MODULE ARGUMENTS --json ...`` inside the kernel-SCTP VM
    (tests/vm/run_in_vm.py) and return its result. Its output streams live to ours.

    Raises:
        RuntimeError: if the VM cannot run here or the benchmark fails in it.
    """
    runner = ROOT / "tests" / "vm" / "run_in_vm.py"
    with tempfile.TemporaryDirectory(prefix="trio-sctls-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(runner),
            "--timeout",
            str(timeout),
            "--share",
            tmp,
            "--share",
            sys.prefix,
            "--cwd",
            str(ROOT),
            "--",
            sys.executable,
            "-m",
            f"benchmarks.{module}",
            *arguments,
            "--json",
            str(out),
        ]
        status = subprocess.run(command, check=False).returncode
        if status != 0 or not out.exists():
            raise RuntimeError(f"benchmarks.{module} in the VM failed (exit status {status})")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def vm_available() -> bool:
    """Whether tests/vm/run_in_vm.py can boot the VM here."""
    if shutil.which("qemu-system-x86_64") is None:
        return False
    runner = ROOT / "tests" / "vm" / "run_in_vm.py"
    return subprocess.run([sys.executable, str(runner), "--check"], check=False).returncode == 0
