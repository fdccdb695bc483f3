"""A real network path on one machine: two network namespaces joined by a veth pair.

Loopback in one process flatters a transport: one address, a 64 KiB MTU, no second
process competing for the CPU. A veth pair between two network namespaces is the
smallest real path Linux offers: Ethernet-sized frames (the MTU is chosen), the whole IP
stack on both ends, and each end in a process of its own. :func:`veth_pair` builds one
and always removes it; :func:`command_in` / :func:`run_in` run a program inside one of
its namespaces::

    with veth_pair(mtu=1500) as (ns_a, ns_b, addr_a, addr_b):
        server = subprocess.Popen(command_in(ns_a, [python, "-m", "...", "--host", addr_a]))
        run_in(ns_b, ["ip", "link"], timeout=5)

Hazards, and what is done about them:

* It needs root and ``ip`` (iproute2). :func:`unavailable` says why not, so a caller can
  fall back loudly instead of failing.
* Names must not clash between parallel runs: every pair gets namespaces named
  ``sctls-bench-<pid>-<random>-a``/``-b``. The veth ends are created directly inside
  their namespaces (``ip link add ... netns A type veth peer ... netns B``), so no
  interface ever appears in the caller's namespace and the same interface name
  (``veth0``) serves every pair.
* Addresses are a private /30 (``10.211.0.1``, ``10.211.0.2``) that exists only inside
  the two namespaces: nothing can route there from, or leak to, the machine's own
  network, and parallel pairs do not see each other.
* Leftovers: the namespaces are deleted in ``finally`` (Ctrl-C included; deleting a
  namespace destroys its veth end and with it the pair). A run killed by SIGKILL cannot
  clean up, so :func:`veth_pair` first removes namespaces of this naming scheme whose
  creating process no longer exists. A namespace lives on while a process still runs in
  it: callers stop their processes before the ``with`` block ends.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

#: Prefix of every namespace this module creates (and may sweep when its creator died).
PREFIX = "sctls-bench-"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[0-9a-f]+-[ab]$")
#: The two ends' addresses: a private /30 that exists only inside the two namespaces.
ADDRESS_A = "10.211.0.1"
ADDRESS_B = "10.211.0.2"
PREFIX_LENGTH = 30
#: The interface name of each veth end, inside its own namespace.
INTERFACE = "veth0"
#: Ethernet's MTU; 9000 makes a jumbo-frame path.
DEFAULT_MTU = 1500
#: Seconds any one ``ip`` command may take.
IP_TIMEOUT = 10.0


class NamespaceError(RuntimeError):
    """The namespaces or the veth pair could not be made (an ``ip`` command failed)."""


class VethPair(NamedTuple):
    """Two namespaces joined by a veth pair, and each end's address.

    Attributes:
        ns_a: the first namespace's name (pass it to :func:`command_in`).
        ns_b: the second's.
        addr_a: the IPv4 address of the veth end in ``ns_a``.
        addr_b: the one in ``ns_b``.
    """

    ns_a: str
    ns_b: str
    addr_a: str
    addr_b: str


def unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``), or ``None`` if they can.

    Only the cheap preconditions are checked; :func:`veth_pair` raises if the kernel
    still refuses (e.g. inside a container without ``CAP_SYS_ADMIN``).
    """
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN)"
    return None


def command_in(namespace: str, argv: Sequence[str]) -> list[str]:
    """``argv`` prefixed so that it runs inside ``namespace`` (``ip netns exec``).

    Args:
        namespace: a namespace of a :class:`VethPair`.
        argv: the program and its arguments.

    Returns:
        The command to hand to ``subprocess`` or ``trio.run_process``.
    """
    return ["ip", "netns", "exec", namespace, *argv]


def run_in(
    namespace: str, argv: Sequence[str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``namespace`` to completion; its output is captured as text.

    Args:
        namespace: a namespace of a :class:`VethPair`.
        argv: the program and its arguments.
        timeout: seconds before it is killed.

    Raises:
        subprocess.CalledProcessError: if it exits with a non-zero status.
        subprocess.TimeoutExpired: if it runs longer than ``timeout``.
    """
    return subprocess.run(
        command_in(namespace, argv), capture_output=True, text=True, timeout=timeout, check=True
    )


def _ip(*argv: str, check: bool = True) -> None:
    completed = subprocess.run(
        ["ip", *argv], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if check and completed.returncode != 0:
        raise NamespaceError(f"ip {' '.join(argv)} failed: {completed.stderr.strip()}")


def namespaces() -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete namespaces of this module's naming whose creating process has died (a run
    killed with SIGKILL cannot clean up after itself).

    Returns:
        The names deleted.
    """
    removed = []
    for name in namespaces():
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "delete", name, check=False)
            removed.append(name)
    return removed


@contextmanager
def veth_pair(mtu: int = DEFAULT_MTU) -> Iterator[VethPair]:
    """Create two network namespaces joined by a veth pair of ``mtu`` bytes; remove them
    when the ``with`` block ends, however it ends.

    Each namespace has its loopback interface up and one veth end, ``veth0``, up, with
    :data:`ADDRESS_A` or :data:`ADDRESS_B` (a /30 that exists only in these two
    namespaces). Blocks for the few ``ip`` commands it runs (tens of milliseconds).

    Args:
        mtu: the veth MTU in bytes (1500: Ethernet; 9000: jumbo frames).

    Raises:
        NamespaceError: if an ``ip`` command fails (see :func:`unavailable` for the usual
            reasons).
    """
    sweep_stale()
    tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
    pair = VethPair(f"{tag}-a", f"{tag}-b", ADDRESS_A, ADDRESS_B)
    created: list[str] = []
    try:
        for namespace in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", namespace)
            created.append(namespace)
        _ip(
            "link", "add", INTERFACE, "netns", pair.ns_a, "type", "veth",
            "peer", "name", INTERFACE, "netns", pair.ns_b,
        )  # fmt: skip
        for namespace, address in ((pair.ns_a, pair.addr_a), (pair.ns_b, pair.addr_b)):
            _ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", INTERFACE)
            _ip("-n", namespace, "link", "set", INTERFACE, "mtu", str(mtu), "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield pair
    finally:
        for namespace in created:
            _ip("netns", "delete", namespace, check=False)
