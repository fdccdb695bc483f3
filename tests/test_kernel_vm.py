"""Runs the ``kernel``-marked tests inside a QEMU VM with real Linux kernel SCTP.

This machine's kernel may have no SCTP. Where it has, conftest deselects this test and
the kernel tests run natively instead. Where it has none and the VM cannot start (no
QEMU or kernel image), this test is skipped with a loud reason, except when CI=true or
TRIO_SCTLS_REQUIRE_VM=1, where that is a failure: kernel SCTP coverage is mandatory
in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm_runner

ROOT = Path(__file__).resolve().parent.parent
RUN_IN_VM = ROOT / "tests" / "vm" / "run_in_vm.py"
#: The kernel suite has at least this many tests; fewer means some were not collected.
MIN_KERNEL_TESTS = 20
#: Summary line of the run, shown at the end of the host's pytest output.
SUMMARY: list[str] = []


def vm_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("TRIO_SCTLS_REQUIRE_VM")
    )


@pytest.mark.timeout(1500)
def test_kernel_sctp_suite_passes_inside_a_vm() -> None:
    check = subprocess.run(
        [sys.executable, str(RUN_IN_VM), "--check"], capture_output=True, text=True
    )
    if check.returncode != 0:
        reason = (
            "KERNEL SCTP TESTS NOT RUN: this kernel has no SCTP and the VM cannot start "
            f"here ({(check.stdout + check.stderr).strip()}). Install qemu-system-x86, "
            "linux-image-amd64 and busybox-static (scripts/test does, as root)."
        )
        if vm_required():
            pytest.fail(reason)
        pytest.skip(reason)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN_IN_VM),
            "--cwd",
            str(ROOT),
            # The enable-sctp OpenSSL of tests/test_dtls_openssl.py (scripts/test sets it).
            "--env",
            "TRIO_SCTLS_OPENSSL",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "kernel",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEs",
            str(ROOT / "tests"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    print(output)
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    last = summary[-1] if summary else "(no summary line)"
    SUMMARY.append(f"kernel SCTP tests in the VM: {last.strip('= ')} ({elapsed:.0f} s with boot)")
    assert proc.returncode == 0, f"kernel tests failed in the VM (exit {proc.returncode})"
    passed = re.search(r"(\d+) passed", last)
    assert passed and int(passed.group(1)) >= MIN_KERNEL_TESTS, last
    # A skip in the kernel suite would hide missing coverage.
    assert not re.search(r"\d+ (skipped|xfailed|deselected by skip)", last), last
