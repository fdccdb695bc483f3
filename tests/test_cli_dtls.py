"""``trio-sctls demo --dtls``, run as a user runs it: in a subprocess. (``serve`` and
``connect --dtls`` need SCTP-AUTH on a transport that crosses processes: see
tests/dtls_transports_after_auth_merge.py.)"""

from __future__ import annotations

import subprocess
import sys

#: Seconds a run may take: generous, for a loaded machine.
STEP = 30.0


def run_main(arguments: list[str], hide: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys; {hide}from trio_sctls.__main__ import main; sys.exit(main({arguments!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STEP
    )


def test_the_dtls_demo_verifies_every_stream_and_shows_the_sctp_auth_key() -> None:
    done = run_main(
        ["demo", "--dtls", "--transport", "memory", "--streams", "3", "--bytes", "40KiB"]
    )
    assert done.returncode == 0, done.stderr
    assert "DTLSv1.2" in done.stderr and "SCTP-AUTH key 1" in done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    # 40 KiB is three messages of at most 16 KiB on each stream.
    assert [(row[0], row[1], row[-1]) for row in rows] == [(str(s), "3", "yes") for s in range(3)]


def test_without_the_extra_dtls_says_what_to_install() -> None:
    done = run_main(
        ["demo", "--dtls", "--transport", "memory"], hide="sys.modules['OpenSSL'] = None; "
    )
    assert done.returncode == 1
    assert "pip install trio-sctls[dtls]" in done.stderr
    assert "Traceback" not in done.stderr


def test_tls_only_options_are_refused_with_dtls() -> None:
    done = run_main(["connect", "--dtls", "--tls", "1.3", "127.0.0.1", "5000"])
    assert done.returncode == 1
    assert "not --dtls" in done.stderr and "Traceback" not in done.stderr
