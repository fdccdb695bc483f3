"""The handshakes benchmark's figures (see :mod:`benchmarks.handshakes`): ratios per
strategy and channel count, and a timeline of each handshake of the largest set-ups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import pyplot, save_figure

STRATEGIES = ("parallel", "resume", "lazy")


def kind(row: dict[str, Any]) -> str:
    """A row's transport, and its path unless loopback (``"udp over veth"``)."""
    path = row.get("path", "loopback")
    return str(row["transport"]) if path == "loopback" else f"{row['transport']} over {path}"


def plot_figures(result: dict[str, Any], directory: Path, *, target_ratio: float) -> list[Path]:
    """Ratios per strategy and channel count (``target_ratio``: the target's line); a
    timeline of the 32-channel set-ups."""
    plt = pyplot()
    where = result.get("where", "host")
    rows = result["rows"]
    paths: list[Path] = []
    tls_versions = sorted({r["tls"] for r in rows})
    transports = sorted({kind(r) for r in rows})
    if not rows:
        return paths
    colours = {"parallel": "tab:blue", "resume": "tab:green", "lazy": "tab:orange"}

    fig, axes = plt.subplots(
        len(transports),
        len(tls_versions),
        figsize=(5.5 * len(tls_versions), 3.8 * len(transports)),
        squeeze=False,
    )
    for i, transport in enumerate(transports):
        for j, tls in enumerate(tls_versions):
            ax = axes[i][j]
            cases = [r for r in rows if r["tls"] == tls and kind(r) == transport]
            counts = sorted({r["channels"] for r in cases})
            strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in cases)]
            width = 0.8 / max(1, len(strategies))
            for k, strategy in enumerate(strategies):
                values = [
                    next(
                        (
                            r["ratio"]
                            for r in cases
                            if r["channels"] == n and r["strategy"] == strategy
                        ),
                        0.0,
                    )
                    for n in counts
                ]
                offset = (k - (len(strategies) - 1) / 2) * width
                positions = [x + offset for x in range(len(counts))]
                bars = ax.bar(positions, values, width, label=strategy, color=colours.get(strategy))
                ax.bar_label(bars, fmt="%.1f", fontsize=7)
            ax.axhline(target_ratio, color="red", linestyle="--", linewidth=1)
            ax.text(
                len(counts) - 0.5, target_ratio, f"target at 32: {target_ratio:g}x",
                color="red", fontsize=7, ha="right", va="bottom",
            )  # fmt: skip
            ax.set_xticks(range(len(counts)), [f"{n} ch" for n in counts])
            ax.set_ylabel("ready time / one TLS/TCP handshake")
            ax.set_title(f"TLS {tls}, {transport} ({where})")
            ax.legend(fontsize=8)
    paths.append(save_figure(fig, directory / f"handshakes-ratio-{where}.png", dpi=110))

    timelines = result.get("timelines", [])
    for transport in transports:
        cases = [t for t in timelines if kind(t) == transport]
        if not cases:
            continue
        fig, axes = plt.subplots(
            1, len(cases), figsize=(3.6 * len(cases), 4.8), squeeze=False, sharey=True
        )
        for ax, case in zip(axes[0], cases, strict=True):
            for stream, start, end, resumed in case["channels_info"]:
                if start is None or end is None:
                    continue
                ax.barh(
                    stream,
                    (end - start) * 1000,
                    left=start * 1000,
                    height=0.8,
                    color="tab:green" if resumed else "tab:blue",
                )
            ax.invert_yaxis()
            ax.set_title(f"TLS {case['tls']} {case['strategy']}", fontsize=9)
            ax.set_xlabel("ms since the association was up")
        axes[0][0].set_ylabel("stream (blue: full handshake, green: resumed)")
        channels = cases[0]["channels"]
        fig.suptitle(f"{channels}-channel set-up, {transport} ({where}): each handshake")
        name = transport.replace(" over ", "-")
        path = directory / f"handshakes-timeline-{where}-{name}.png"
        paths.append(save_figure(fig, path, dpi=110))
    return paths
