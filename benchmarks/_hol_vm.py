"""The head-of-line benchmark's network in the VM: loss and delay from netem on the
loopback interface, TCP-like SCTP timers through ``net.sctp.*``, and the kernels'
loss-recovery counters, read before and after each case.

On the host none of this is used: loss comes from :mod:`trio_sctls.impaired`'s relay
(see :mod:`benchmarks._hol_flows`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import trio

import trio_sctls

SCTP_SYSCTL = Path("/proc/sys/net/sctp")


def _tc() -> str:
    """The path of ``tc`` (iproute2)."""
    for candidate in ("/usr/sbin/tc", "/sbin/tc"):
        if Path(candidate).exists():
            return candidate
    found = shutil.which("tc")
    if found is None:
        raise RuntimeError("no tc (iproute2) here: netem cannot be configured")
    return found


async def netem(action: str, loss: float, delay_ms: float) -> None:
    """``tc qdisc ACTION dev lo root netem [delay DELAYms] loss LOSS%``."""
    delay = ["delay", f"{delay_ms:g}ms"] if delay_ms else []
    command = [_tc(), "qdisc", action, "dev", "lo", "root", "netem", *delay, "loss", f"{loss:g}%"]
    await trio.run_process(command)


async def netem_remove() -> None:
    """Remove any qdisc from ``lo`` (no error if there is none)."""
    await trio.run_process(
        [_tc(), "qdisc", "del", "dev", "lo", "root"], check=False, stderr=subprocess.DEVNULL
    )


def check_vm_prerequisites() -> None:
    """Raise :exc:`RuntimeError` unless netem and kernel SCTP are here."""
    modules = Path("/proc/modules").read_text()
    if "sch_netem" not in modules:
        raise RuntimeError("sch_netem is not loaded in the VM (tests/vm/run_in_vm.py loads it)")
    if not trio_sctls.kernel_sctp_available():
        raise RuntimeError("no kernel SCTP here")


def set_sctp_sysctl(values: dict[str, int]) -> dict[str, int]:
    """Write net.sctp.* (milliseconds); return what was there before."""
    before = {}
    for name, value in values.items():
        path = SCTP_SYSCTL / name
        before[name] = int(path.read_text())
        path.write_text(f"{value}\n")
    return before


#: Counters of loss recovery, per case (in the VM).
SCTP_COUNTERS = (
    "SctpT3RtxExpireds",
    "SctpFastRetransmits",
    "SctpDelaySackExpireds",
    "SctpInDataChunkDiscards",
)
TCP_COUNTERS = ("RetransSegs", "TCPTimeouts", "TCPLossProbes", "TCPFastRetrans", "TCPSackRecovery")


def proc_counters() -> dict[str, int]:
    """The kernel's loss-recovery counters now: :data:`SCTP_COUNTERS` from
    ``/proc/net/sctp/snmp``, :data:`TCP_COUNTERS` from ``/proc/net/snmp`` and
    ``/proc/net/netstat`` (those that exist here)."""
    counters: dict[str, int] = {}
    try:
        for line in Path("/proc/net/sctp/snmp").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name in SCTP_COUNTERS:
                counters[name] = int(value.strip())
    except OSError:
        pass
    for source in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = Path(source).read_text().splitlines()
        except OSError:
            continue
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            names, numbers = header.split()[1:], values.split()[1:]
            for name, number in zip(names, numbers, strict=False):
                if name in TCP_COUNTERS and header.startswith(("Tcp:", "TcpExt:")):
                    counters[name] = int(number)
    return counters
