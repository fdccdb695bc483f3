"""The head-of-line benchmark in words: what a run compared and over which paths (kept
in its result), and the README's lines for it, each ratio with what it is a ratio to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._hol_flows import LABELS
from ._peer import describe_paths

if TYPE_CHECKING:
    from .hol import Settings


def path_label(path: str, settings: Settings) -> str:
    """What ``path`` was, in words."""
    if settings.place == "vm":
        return "the VM's loopback, netem on lo, both ends in one process"
    if path == "veth":
        return (
            f"veth pair between two network namespaces, MTU {settings.mtu}, servers in one "
            "process, client and relay in another"
        )
    return "127.0.0.1, everything (relay included) in one process"


def setup_note(settings: Settings) -> str:
    """What was compared, in words (goes into the result)."""
    seeds = f"{len(settings.seeds)} seeds x {settings.duration:g} s per case"
    if settings.place == "vm":
        sysctl = settings.sctp_sysctl
        return (
            "VM (QEMU TCG, Debian kernel): netem on lo, each packet (both ways) delayed "
            f"{settings.delay_ms:g} ms and lost at the given rate. "
            "multi = trio-sctls TLS association over kernel SCTP, one channel per flow; "
            "single = the same flows multiplexed over one TLS/TCP connection. bare = "
            "kernel SCTP, one stream per flow, vs one plain TCP connection. SCTP timers "
            f"set TCP-like: net.sctp.rto_min={sysctl.get('rto_min')} ms, "
            f"rto_initial={sysctl.get('rto_initial')} ms, "
            f"sack_timeout={sysctl.get('sack_timeout')} ms (TCP: RTO min 200 ms, initial "
            "1 s, delayed ACK from 40 ms). TCP keeps RACK and tail loss probes. "
            f"{settings.flows} flows x {settings.rate:g} requests/s (Poisson), "
            f"{settings.size} B each way, {seeds}."
        )
    return (
        "host: trio-sctls over its SCTP over UDP through the seeded impaired relay "
        "(trio_sctls.impaired: each datagram, both ways, delayed "
        f"{settings.delay_ms:g} ms and lost at the given rate). multi = one TLS "
        "channel per flow; single = the same flows multiplexed over one TLS channel on one "
        "SCTP stream, through the same relay: the host has no netem, so TCP cannot be "
        "impaired, and one ordered stream of the same SCTP code stands in for one TCP "
        "connection (same head-of-line blocking, same loss recovery and timers: RTO.Min "
        "200 ms, RTO.Initial 500 ms, 200 ms delayed SACK). The ratios are against one SCTP "
        f"stream, not TCP. {settings.flows} flows x {settings.rate:g} requests/s "
        f"(Poisson), {settings.size} B each way, {seeds}."
    )


def summarize(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the README: each ratio with its interval, and what it is to."""
    place = result.get("place", "host")
    settings = result["settings"]
    lines = [result["setup"], "", *describe_paths(result)]
    lines += [
        "",
        f"Latency ratios (95 % bootstrap interval), {len(settings['seeds'])} seeds pooled:",
        "",
        "| path | loss | ratio of | samples | p50 | p90 | p99 |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    counts = {
        (r.get("path"), r["layer"], r["variant"], r["loss_pct"]): r["messages"]
        for r in result["rows"]
    }
    for item in result.get("ratios", []):
        top, _, bottom = item["compare"].partition("/")
        key = (item["path"], item["layer"] if top == "multi" else top, "multi", item["loss_pct"])
        other = (
            (item["path"], item["layer"], "single", item["loss_pct"])
            if bottom == "single"
            else (item["path"], bottom, "multi", item["loss_pct"])
        )
        cells = [
            f"{item[f'{name}_ratio']:.2f}x [{item[f'{name}_ci'][0]:.2f}, "
            f"{item[f'{name}_ci'][1]:.2f}]"
            for name in ("p50", "p90", "p99")
        ]
        top_label = LABELS[place, key[1], "multi"]
        bottom_label = LABELS[place, other[1], other[2]]
        lines.append(
            f"| {item['path']} | {item['loss_pct']:g}% | {top_label} / {bottom_label} "
            f"| {counts.get(key, '?')} / {counts.get(other, '?')} | " + " | ".join(cells) + " |"
        )
    for note in result.get("notes", []):
        lines += ["", f"Note: {note}."]
    return lines
