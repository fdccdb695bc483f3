"""Run the benchmark suite: every benchmark on this machine and, for those that want it,
inside the kernel-SCTP VM; write ``results.json`` and PNG figures; print the targets;
after a full run, rewrite the "Performance" block of README.md.

    scripts/bench [--quick] [--only NAME ...] [--no-vm] [--require-vm] [--out DIR]

Each benchmark is a module of this package following the convention described in
:mod:`benchmarks._common` (``NAME``, ``WHERE``, ``add_arguments``, ``measure``, ``plot``),
run with its own default options (or their ``--quick`` variants). A module that does not
exist yet is skipped with a message. Modules whose ``WHERE`` includes ``"vm"`` also run
inside the QEMU VM of tests/vm/run_in_vm.py (Debian's kernel, real kernel SCTP), one boot
per module; if the VM cannot run here that is reported loudly and the host results are
kept (``--require-vm`` makes it an error). A VM result then passes through the module's
``finish`` on the host, if it has one (bootstrap intervals need numpy).

The standard host path is a veth pair between two network namespaces (throughput,
set-up and head-of-line run each end in its own process over it, loopback being the
second column): that needs root. Without it each of those benchmarks says so loudly and
measures loopback only; the run ends with one more warning and the README block leads
with "LOOPBACK ONLY". The time each benchmark took is logged and kept in
``results.json`` (``benchmarks.NAME.seconds``); a full run takes about 15 minutes.

Output in ``--out`` (default ``benchmarks/results/``): ``results.json`` (every result,
machine descriptions, the flat list of targets) and ``host/NAME*.png``, ``vm/NAME*.png``.
README.md is rewritten only by a full run (no ``--quick``, no ``--only``), between the
``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` markers.

Exit status: 0 if every benchmark ran (targets missed or not), 1 if one failed (or the
VM was required and could not run).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from benchmarks._common import ROOT, Progress, machine_info, run_in_vm, shout, vm_available

#: The suite, in the order it runs.
MODULES = ["throughput", "handshakes", "hol", "overhead", "scale", "dtls"]
#: What a module must define to be run (see benchmarks/_common.py).
REQUIRED = ("NAME", "add_arguments", "measure", "plot")
DEFAULT_OUT = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START_MARKER = "<!-- benchmarks:start -->"
END_MARKER = "<!-- benchmarks:end -->"


def load(name: str) -> tuple[ModuleType | None, str]:
    """Import ``benchmarks.NAME``; ``(None, why)`` if it is missing or not runnable."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.{name}":
            return None, f"not written yet (no benchmarks/{name}.py)"
        raise
    missing = [attribute for attribute in REQUIRED if not hasattr(module, attribute)]
    if missing:
        return None, f"does not follow the benchmark convention yet (no {', '.join(missing)})"
    return module, ""


def where(module: ModuleType) -> tuple[str, ...]:
    """Where a module runs: its ``WHERE`` (default: the host only)."""
    return tuple(getattr(module, "WHERE", ("host",)))


def module_arguments(module: ModuleType, quick: bool) -> argparse.Namespace:
    """The module's default options (``--quick`` variants if asked)."""
    parser = argparse.ArgumentParser(prog=f"benchmarks.{module.NAME}")
    parser.add_argument("--quick", action="store_true")
    module.add_arguments(parser)
    return parser.parse_args(["--quick"] if quick else [])


def run_on_host(module: ModuleType, quick: bool, progress: Progress) -> dict[str, Any]:
    """Measure ``module`` here."""
    args = module_arguments(module, quick)
    result: dict[str, Any] = trio.run(module.measure, args, progress)
    result.setdefault("name", module.NAME)
    result["machine"] = machine_info()
    return result


def write_plots(
    module: ModuleType, result: dict[str, Any], directory: Path, progress: Progress
) -> list[Path]:
    """Write the module's figures for one result into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = module.plot(result, directory)
    for path in paths:
        progress.log(f"wrote {path}")
    return paths


def _value(item: dict[str, Any]) -> str:
    """A target's value, with its 95 % interval where one was computed."""
    ci = item.get("ci")
    return f"{item['value']:g}" + (f" [{ci[0]:g}, {ci[1]:g}]" if ci else "")


def _met(item: dict[str, Any], no: str) -> str:
    """Whether a target was met; "-" for an informational row, which has no bound."""
    if item["target"] == "(informational)":
        return "-"
    return "yes" if item["met"] else no


def target_table(targets: list[dict[str, Any]]) -> list[str]:
    """The targets as an aligned text table."""
    if not targets:
        return ["(no targets)"]
    header = ("benchmark", "where", "target", "value [95% CI]", "wanted", "met")
    rows = [
        (
            item["benchmark"],
            item["where"],
            item["name"],
            _value(item),
            item["target"],
            _met(item, "NO"),
        )
        for item in targets
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _machine_line(info: dict[str, Any]) -> str:
    return f"{info['machine']}, Linux {info['kernel']}"


#: The benchmarks whose standard host path is the veth pair (issue 11), and which record
#: in ``netns_status`` whether it could be made.
OVER_VETH = ("throughput", "handshakes", "hol", "dtls")


def loopback_only(results: dict[str, Any]) -> dict[str, str]:
    """The benchmarks that measured loopback only on the host because the veth pair
    could not be made, with why."""
    out = {}
    for name in OVER_VETH:
        host = results["benchmarks"].get(name, {}).get("host")
        if host is not None and host.get("netns_status", "ok") not in ("ok", "not asked"):
            out[name] = str(host["netns_status"])
    return out


def readme_block(results: dict[str, Any], out: Path) -> str:
    """The markdown that goes between the README markers."""
    host = results["machine"].get("host", {})
    vm = results["machine"].get("vm")
    minutes = results.get("seconds", 0) / 60
    lines = [
        f"Latest full run (`scripts/bench`): {results['date']}, commit `{host.get('commit')}`, "
        f"{minutes:.0f} minutes in all.",
        "",
        f"- Host: {_machine_line(host)}." if host else "- Host: not measured.",
        f"- VM (QEMU TCG, 1 vCPU, Debian's kernel with SCTP): {_machine_line(vm)}; Python "
        "there runs ~14x slower and AES ~190x slower than on the host, so only ratios "
        "measured inside it compare."
        if vm
        else "- VM: not run (" + results.get("vm_status", "skipped") + ").",
        f"- Python {host.get('python')}, trio {host.get('trio')}, {host.get('openssl')}, "
        f"trio-sctls {host.get('trio_sctls')}.",
        "",
    ]
    missing = loopback_only(results)
    if missing:
        reasons = "; ".join(f"{name}: {why}" for name, why in missing.items())
        lines += [
            f"**LOOPBACK ONLY on the host: the veth pair could not be made ({reasons}). "
            "These host figures are from 127.0.0.1 with both ends in one process, not from "
            "the standard path.**",
            "",
        ]
    else:
        lines += [
            "On the host the standard path is a veth pair (MTU 1500) between two network "
            "namespaces, server and client in processes of their own; loopback (127.0.0.1, "
            "one process) is the second column.",
            "",
        ]
    lines += [
        'Each row says what its value is a ratio to ("ratio to"), measured in the same '
        "run on the same path, with the same TLS version, cipher and certificate (ECDSA "
        "P-256). Values in brackets are 95 % bootstrap intervals. The host's head-of-line "
        "rows are against ONE SCTP STREAM of our own, not TCP (the host kernel cannot "
        "impair TCP); the VM's are against one TLS/TCP connection. Targets:",
        "",
        "| benchmark | where | target | value [95% CI] | wanted | ratio to | met |",
        "|---|---|---|---:|---|---|---|",
    ]
    for item in results["targets"]:
        lines.append(
            f"| {item['benchmark']} | {item['where']} | {item['name']} | {_value(item)} "
            f"| {item['target']} | {item.get('against') or '(see target)'} "
            f"| {_met(item, '**no**')} |"
        )
    if not results["targets"]:
        lines.append("| | | (none) | | | | |")
    for name, entry in results["benchmarks"].items():
        module, _why = load(name)
        for place in ("host", "vm"):
            result = entry.get(place)
            if result is None:
                continue
            measured = result.get("machine", {}).get("date", "")
            lines += ["", f"**{name}** ({place}, measured {measured}):", ""]
            summarize = getattr(module, "summarize", None) if module is not None else None
            if summarize is not None:
                try:
                    lines += [*summarize(result), ""]
                except Exception as exc:  # a summary is a nicety; never lose a run for it
                    lines += [f"(no summary: {exc!r})", ""]
            for plot in entry.get("plots", {}).get(place, []):
                relative = os.path.relpath(out / plot, README.parent)
                lines.append(f"![{name}, {place}]({relative})")
    for name, why in results.get("skipped", {}).items():
        lines += ["", f"- {name}: skipped, {why}."]
    for name, error in results.get("errors", {}).items():
        lines += ["", f"- {name}: failed: {error.splitlines()[-1] if error else '?'}"]
    lines.append("")
    lines.append(
        f"Raw results: [{os.path.relpath(out / 'results.json', README.parent)}]"
        f"({os.path.relpath(out / 'results.json', README.parent)})."
    )
    return "\n".join(lines)


def rewrite_readme(block: str, readme: Path = README) -> bool:
    """Replace what is between the markers; ``False`` if the markers are missing."""
    text = readme.read_text()
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        return False
    new = text[: start + len(START_MARKER)] + "\n" + block.strip() + "\n" + text[end:]
    readme.write_text(new)
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small, fast runs (a smoke test)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=MODULES, help="run only these benchmarks"
    )
    parser.add_argument("--no-vm", action="store_true", help="do not run anything in the VM")
    parser.add_argument(
        "--require-vm",
        action="store_true",
        help="fail if the VM cannot run (default: warn, keep host results)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default {os.path.relpath(DEFAULT_OUT)})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    full = not args.quick and not args.only
    names = [name for name in MODULES if not args.only or name in args.only]
    progress = Progress()
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "command": ["scripts/bench", *(argv if argv is not None else sys.argv[1:])],
        "machine": {"host": machine_info()},
        "benchmarks": {},
        "skipped": {},
        "errors": {},
        "targets": [],
    }
    modules: dict[str, ModuleType] = {}
    for name in names:
        module, why = load(name)
        if module is None:
            progress.log(f"== {name}: skipped, {why}")
            results["skipped"][name] = why
        else:
            modules[name] = module

    wants_vm = [name for name, module in modules.items() if "vm" in where(module)]
    vm_ok = False
    if args.no_vm:
        results["vm_status"] = "--no-vm"
    elif wants_vm:
        vm_ok = vm_available()
        if not vm_ok:
            results["vm_status"] = "the VM cannot run here"
            shout(
                "THE KERNEL-SCTP VM CANNOT RUN HERE (tests/vm/run_in_vm.py --check failed; run\n"
                "scripts/setup-vm as root). Kernel-transport results ("
                + ", ".join(wants_vm)
                + ") are MISSING;\ncontinuing with the host results only."
            )
            if args.require_vm:
                return 1

    failed = False
    for name, module in modules.items():
        entry: dict[str, Any] = {"plots": {}, "seconds": {}}
        results["benchmarks"][name] = entry
        places = [p for p in ("host", "vm") if p in where(module)]
        if not vm_ok:
            places = [p for p in places if p != "vm"]
        for place in places:
            progress.log(f"== {name} ({place}{', quick' if args.quick else ''})")
            begun = time.monotonic()
            try:
                if place == "host":
                    result = run_on_host(module, args.quick, progress)
                else:
                    result = run_in_vm(name, ["--quick"] if args.quick else [])
                    results["machine"]["vm"] = result.get("machine")
                    finish = getattr(module, "finish", None)
                    if finish is not None:  # the host's part of a VM result (numpy)
                        result = finish(result)
            except Exception:
                error = traceback.format_exc()
                results["errors"][f"{name} ({place})"] = error
                shout(f"{name} ({place}) FAILED:\n{error.rstrip()}")
                if place == "vm":
                    results["vm_status"] = f"{name} failed in the VM"
                    if args.require_vm:
                        return 1
                else:
                    failed = True
                continue
            entry[place] = result
            entry["seconds"][place] = round(time.monotonic() - begun, 1)
            progress.log(f"== {name} ({place}): {entry['seconds'][place]} s")
            for item in result.get("targets", []):
                results["targets"].append({"benchmark": name, "where": place, **item})
            try:
                paths = write_plots(module, result, out / place, progress)
                entry["plots"][place] = [os.path.relpath(path, out) for path in paths]
            except Exception:
                failed = True
                error = traceback.format_exc()
                results["errors"][f"{name} plot ({place})"] = error
                shout(f"plotting {name} ({place}) FAILED:\n{error.rstrip()}")

    results["seconds"] = round(time.monotonic() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    progress.log(f"wrote {out / 'results.json'} ({results['seconds']} s in all)")
    print("\n".join(["", "Targets:", *target_table(results["targets"])]), flush=True)
    if results["skipped"]:
        print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items()))
    missing = loopback_only(results)
    if missing:
        shout(
            "THE HOST FIGURES ARE LOOPBACK ONLY: the veth pair (the standard path) could not\n"
            "be made: " + "; ".join(f"{name}: {why}" for name, why in missing.items())
        )
    if full:
        if rewrite_readme(readme_block(results, out)):
            progress.log(f"updated the Performance section of {README}")
        else:
            shout(f"{README} has no {START_MARKER} ... {END_MARKER} block: not updated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
