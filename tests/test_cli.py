"""The ``trio-sctls`` command line, run as a user runs it: in subprocesses.

* ``demo`` needs nothing beyond the package (trustme and cryptography hidden);
* ``serve`` and ``connect`` talk over SCTP over UDP on loopback, lines go to the stream
  their prefix names and come back labelled, and ``--keylog`` logs every channel;
* expected failures are one line on stderr and a non-zero exit status.

Each test starts its own processes (a second or two each) and stops them in
``finally``; every wait has a deadline, so a hung peer fails the test instead of
hanging it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_sctls._cli.certs import DEMO_FILES, DEMO_SERVER_NAME
from trio_sctls._cli.errors import describe_error
from trio_sctls._cli.peer import LineMode, parse_line

#: Seconds any one step may take: generous, for a loaded machine.
STEP = 20.0

COMMAND = [sys.executable, "-m", "trio_sctls"]


class Lines:
    """Reads a subprocess's pipe line by line."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def next(self) -> str:
        """The next line (without its newline); ``""`` once the pipe is closed."""
        with trio.fail_after(STEP):
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                if not chunk:
                    rest, self._buffer = self._buffer, b""
                    return rest.decode()
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.seen.append(line.decode())
        return line.decode()

    async def until(self, pattern: str) -> re.Match[str]:
        """Read until a line matches ``pattern``."""
        while True:
            line = await self.next()
            if match := re.search(pattern, line):
                return match
            if not line and not self._buffer:
                raise AssertionError(f"no line matched {pattern!r} in {self.seen}")


@asynccontextmanager
async def running(args: Sequence[str], **kwargs: Any) -> AsyncIterator[trio.Process]:
    """A ``trio-sctls`` subprocess, terminated (then killed) on the way out."""
    async with running_command([*COMMAND, *args], **kwargs) as process:
        yield process


@asynccontextmanager
async def running_command(argv: Sequence[str], **kwargs: Any) -> AsyncIterator[trio.Process]:
    """A subprocess running ``argv``, terminated (then killed) on the way out."""
    process = await trio.lowlevel.open_process(list(argv), **kwargs)
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(STEP):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


def free_udp_port() -> int:
    """A UDP port nothing listens on (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """The demo certificates, written by ``trio-sctls demo-certs``."""
    directory = tmp_path / "certs"
    subprocess.run([*COMMAND, "demo-certs", str(directory)], check=True, timeout=STEP)
    return directory


@asynccontextmanager
async def udp_server(certs: Path, *extra: str) -> AsyncIterator[tuple[trio.Process, int, int]]:
    """``trio-sctls serve`` on loopback, SCTP over UDP on free ports; yields the process,
    its SCTP port and its UDP port, read from its first line."""
    args = [
        "serve",
        *("--cert", str(certs / "server.pem"), "--key", str(certs / "server.key")),
        *("--host", "127.0.0.1", "--port", "0", "--transport", "udp", "--udp-port", "0"),
        *extra,
    ]
    async with running(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as server:
        assert server.stderr is not None
        first = await Lines(server.stderr).next()
        match = re.search(r"SCTP port (\d+) over UDP port (\d+)", first)
        assert match, first
        yield server, int(match[1]), int(match[2])


def connect_args(certs: Path, port: int, udp_port: int, *extra: str) -> list[str]:
    return [
        "connect",
        *("--cafile", str(certs / "ca.pem"), "--server-name", DEMO_SERVER_NAME),
        *("--transport", "udp", "--remote-udp-port", str(udp_port)),
        *extra,
        "127.0.0.1",
        str(port),
    ]


def test_the_demo_needs_no_extra_package() -> None:
    hide = "import sys; sys.modules['trustme'] = sys.modules['cryptography'] = None"
    code = (
        f"{hide}; from trio_sctls.__main__ import main; "
        "sys.exit(main(['demo', '--transport', 'udp', '--streams', '3', '--bytes', '16KiB']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STEP
    )
    assert done.returncode == 0, done.stderr
    assert "all channels verified" in done.stdout
    assert done.stdout.count(" ok\n") == 3


def test_demo_certs_writes_a_ca_and_the_certificates_it_signed(certs: Path) -> None:
    assert sorted(path.name for path in certs.iterdir()) == sorted(DEMO_FILES)
    for role in ("server", "client"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs / f"{role}.pem", certs / f"{role}.key")
        assert oct(os.stat(certs / f"{role}.key").st_mode & 0o777) == "0o600"
    assert "DO NOT TRUST" in (certs / "ca.pem").read_text()


@asynccontextmanager
async def two_lines_round_trip(
    certs: Path, server_extra: Sequence[str], client_extra: Sequence[str], *, label: str
) -> AsyncIterator[trio.Process]:
    """Start a server, send two lines from a client (one naming stream 3), check each
    comes back labelled with its stream (and ``label``), stop both cleanly and yield
    the stopped server (its output can still be read)."""
    async with udp_server(certs, *server_extra) as (server, port, udp_port):
        async with running(
            connect_args(certs, port, udp_port, *client_extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as client:
            assert client.stdin is not None and client.stdout is not None
            replies = Lines(client.stdout)
            await client.stdin.send_all(b"3: to stream three\nto the default stream\n")
            # Streams are independent: the two replies may come back in either order.
            assert {await replies.next(), await replies.next()} == {
                f"[stream 3{label}] to stream three",
                f"[stream 0{label}] to the default stream",
            }
            await client.stdin.aclose()  # end of input: the client closes and exits
            with trio.fail_after(STEP):
                assert await client.wait() == 0
        server.send_signal(signal.SIGTERM)
        with trio.fail_after(STEP):
            assert await server.wait() == 0
        yield server


@pytest.mark.parametrize(
    ("version", "secret"),
    [("1.3", "CLIENT_HANDSHAKE_TRAFFIC_SECRET"), ("1.2", "CLIENT_RANDOM")],
)
async def test_lines_reach_the_stream_they_name_and_come_back_labelled(
    certs: Path, tmp_path: Path, version: str, secret: str
) -> None:
    keylog = tmp_path / "keys.log"
    extra = ["--streams", "4", "--tls", version, "--keylog", str(keylog)]
    async with two_lines_round_trip(certs, [], extra, label="") as server:
        assert server.stdout is not None
        printed = Lines(server.stdout)
        await printed.until(r"^\[#1 stream 3\] to stream three$")
    # One TLS connection per stream, each with its own secrets.
    randoms = {
        line.split()[1] for line in keylog.read_text().splitlines() if line.startswith(secret)
    }
    assert len(randoms) == 4


async def test_connect_where_nothing_listens_is_one_line_and_a_failure() -> None:
    done = await trio.run_process(
        [
            *COMMAND,
            "connect",
            *("--transport", "udp", "--remote-udp-port", str(free_udp_port())),
            *("--connect-timeout", str(STEP)),
            "127.0.0.1",
            "5000",
        ],
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trio-sctls: error: "), lines
    assert "nothing listens" in lines[0]


async def test_an_untrusted_server_is_one_line_naming_the_stream_and_the_fix(
    certs: Path,
) -> None:
    async with udp_server(certs) as (_server, port, udp_port):
        args = connect_args(certs, port, udp_port)
        args.remove("--cafile")
        args.remove(str(certs / "ca.pem"))
        done = await trio.run_process(
            [*COMMAND, *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 1
    error = done.stderr.decode().splitlines()[-1]
    assert "Traceback" not in done.stderr.decode()
    # Every channel fails the same way; which one is reported first depends on timing.
    assert re.match(r"trio-sctls: error: stream \d+: ", error) and "--cafile" in error, error


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"3: hello\n", (3, b"hello\n")),
        (b"3:hello\n", (3, b"hello\n")),
        (b"hello\n", (7, b"hello\n")),
        (b"0: 3: not a prefix\n", (0, b"3: not a prefix\n")),
        (b"x: hello\n", (7, b"x: hello\n")),
        (b": hello\n", (7, b": hello\n")),
    ],
)
def test_a_line_prefix_picks_the_stream(line: bytes, expected: tuple[int, bytes]) -> None:
    assert parse_line(line, LineMode(stream=7)) == expected


def test_without_prefixes_every_line_goes_to_the_chosen_stream() -> None:
    assert parse_line(b"3: hello\n", LineMode(stream=1, prefix=False)) == (1, b"3: hello\n")


def test_an_error_group_is_described_once_per_distinct_message() -> None:
    group = ExceptionGroup("handler", [ValueError("stream 2: TLS failure: bad"), ValueError("bad")])
    assert describe_error(group) == "stream 2: TLS failure: bad"
