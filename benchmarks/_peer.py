"""Two-process benchmarks over a real path: a server process in one network namespace,
a client process in another, a veth pair between them (:mod:`benchmarks._netns`).

The parent (``benchmarks/run.py``, outside both namespaces) calls :func:`run_over_veth`,
which creates the pair and a set of credentials (one CA and certificate, shared by both
ends through files), then runs::

    ip netns exec NS_A python -m benchmarks._peer MODULE server --host ADDR_A ... -- ARGS
    ip netns exec NS_B python -m benchmarks._peer MODULE client --host ADDR_A ... -- ARGS

The server prints one JSON line, where it listens (its ports), and serves until its
standard input closes; the client gets that line as ``--server``, measures, and prints
its result as JSON on standard output. Their progress goes to standard error, which
they share with the parent. Both are bounded in time and killed if they overrun; the
pair is removed in any case.

A benchmark module that runs this way defines, besides the convention of
:mod:`benchmarks._common`:

* ``async def serve_peer(args, host, credentials, task_status)``: start its servers on
  ``host``, ``task_status.started(info)`` with a JSON-able ``info`` (their ports), then
  serve until cancelled;
* ``async def measure_peer(args, host, credentials, server, progress) -> dict``: connect
  to the servers ``server`` (that ``info``) describes and measure (``args.local`` is the
  client's own address on the path).

Both parse the same ``ARGS`` with the module's ``add_arguments`` (plus ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from ._common import ROOT, Progress, shout, write_credentials
from ._netns import DEFAULT_MTU, NamespaceError, command_in, unavailable, veth_pair

#: What a module's ``serve_peer`` reports its servers through, and its default.
Started = trio.TaskStatus[dict[str, Any]]
NOT_WATCHED: Started = trio.TASK_STATUS_IGNORED
#: Seconds the server may take to start listening (imports included).
SERVER_START_TIMEOUT = 60.0
#: Seconds the server gets to exit once told to, before it is killed.
SERVER_STOP_TIMEOUT = 10.0


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def _command(module: str, role: str, host: str, credentials: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks._peer",
        module,
        role,
        "--host",
        host,
        "--credentials",
        str(credentials),
        *extra,
    ]


async def run_over_veth(
    module: str,
    arguments: Sequence[str],
    progress: Progress,
    *,
    mtu: int = DEFAULT_MTU,
    time_limit: float,
) -> dict[str, Any]:
    """Run ``module``'s server and client in two namespaces joined by a veth pair.

    Args:
        module: the benchmark module's name (``"throughput"``).
        arguments: the module's options, given to both ends.
        progress: where to say what is happening.
        mtu: the veth pair's MTU.
        time_limit: seconds the client may take to measure.

    Returns:
        The client's result, with ``"path"`` (what it ran over) added.

    Raises:
        RuntimeError: if namespaces cannot be made here (see
            :func:`benchmarks._netns.unavailable`), or either end fails.
        trio.TooSlowError: if either end overruns its time.
    """
    why = unavailable()
    if why is not None:
        raise RuntimeError(f"no network namespaces here: {why}")
    with (
        tempfile.TemporaryDirectory(prefix="trio-sctls-peer-") as tmp,
        veth_pair(mtu) as pair,
    ):
        credentials = write_credentials(Path(tmp))
        progress.log(
            f"{module}: server in {pair.ns_a} ({pair.addr_a}), client in {pair.ns_b} "
            f"({pair.addr_b}), veth MTU {mtu}"
        )
        server_argv = _command(module, "server", pair.addr_a, credentials, "--", *arguments)
        server = await trio.lowlevel.open_process(
            command_in(pair.ns_a, server_argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert server.stdout is not None
            with trio.fail_after(SERVER_START_TIMEOUT):
                line = await _read_line(server.stdout)
            if not line:
                raise RuntimeError(f"{module} server exited before listening")
            client_argv = _command(
                module,
                "client",
                pair.addr_a,
                credentials,
                *("--server", line, "--local", pair.addr_b, "--", *arguments),
            )
            with trio.fail_after(time_limit):
                client = await trio.run_process(
                    command_in(pair.ns_b, client_argv), capture_stdout=True, check=False, cwd=ROOT
                )
            if client.returncode != 0:
                raise RuntimeError(f"{module} client failed (exit status {client.returncode})")
        finally:
            await _stop(server)
    result: dict[str, Any] = json.loads(client.stdout)
    result["path"] = {"kind": "veth", "mtu": mtu, "processes": 2}
    return result


async def veth_or_why(
    module: str,
    what: str,
    arguments: Sequence[str],
    progress: Progress,
    *,
    mtu: int,
    time_limit: float,
) -> tuple[dict[str, Any] | None, str]:
    """:func:`run_over_veth` where namespaces can be made; else say so loudly.

    Args:
        module: the benchmark module's name.
        what: what it measures, for the warning (``"THROUGHPUT"``).
        arguments: the module's options, given to both ends.
        progress: where to say what is happening.
        mtu: the veth pair's MTU.
        time_limit: seconds the client may take to measure.

    Returns:
        The client's result (``None`` if the pair could not be made) and the
        ``netns_status`` to record: ``"ok"``, or why not.
    """
    status = unavailable() or "ok"
    result = None
    if status == "ok":
        try:
            result = await run_over_veth(
                module, arguments, progress, mtu=mtu, time_limit=time_limit
            )
        except NamespaceError as exc:
            status = str(exc)
    if status != "ok":
        shout(
            f"{what} OVER A VETH PAIR CANNOT RUN HERE ({status}):\n"
            "only the loopback figures (one process) are measured."
        )
    return result, status


def describe_paths(result: dict[str, Any]) -> list[str]:
    """README lines: the paths a result was measured on, and why not the veth pair if
    it could not be made."""
    lines = [
        "Paths: "
        + "; ".join(f"**{path}**: {label}" for path, label in result.get("paths", {}).items())
        + "."
    ]
    if result.get("netns_status", "ok") not in ("ok", "not asked"):
        lines.append(f"No veth figures: {result['netns_status']}.")
    return lines


async def _read_line(stream: trio.abc.ReceiveStream) -> str:
    """The first line of ``stream`` (all of it the server writes before it serves)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


async def _stop(process: trio.Process) -> None:
    """Close the server's standard input (its signal to stop), wait, kill if need be."""
    with trio.CancelScope(shield=True):
        if process.stdin is not None:
            await process.stdin.aclose()
        with trio.move_on_after(SERVER_STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


# -- inside the namespaces ---------------------------------------------------------------


async def _serve(module: ModuleType, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        info = await nursery.start(module.serve_peer, args, args.host, args.credentials)
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        # Serve until the parent closes our standard input (or dies, which closes it).
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        while await stdin.receive_some():
            pass
        await stdin.aclose()
        nursery.cancel_scope.cancel()


async def _measure(module: ModuleType, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = await module.measure_peer(
        args, args.host, args.credentials, json.loads(args.server), Progress()
    )
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks._peer MODULE {server,client} --host H --credentials DIR
    [--server JSON] -- ARGS``: one end of a two-process benchmark."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, module_argv = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python -m benchmarks._peer")
    parser.add_argument("module")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", required=True, help="the server's address")
    parser.add_argument("--credentials", type=Path, required=True)
    parser.add_argument("--server", help="(client) the server's first line")
    parser.add_argument("--local", help="(client) this end's own address on the path")
    ours = parser.parse_args(own)
    module = _module(ours.module)
    module_parser = argparse.ArgumentParser(prog=f"benchmarks.{ours.module} ({ours.role})")
    module_parser.add_argument("--quick", action="store_true")
    module.add_arguments(module_parser)
    args = module_parser.parse_args(module_argv)
    for key, value in vars(ours).items():
        setattr(args, key, value)
    if ours.role == "server":
        trio.run(_serve, module, args)
    else:
        result = trio.run(_measure, module, args)
        sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
