"""The head-of-line benchmark's figures: latency CDFs per loss rate, percentiles against
the loss rate, and the CDF of each flow, multi-stream against one connection; each for
one path of a result (by default its first, the standard one: the veth pair on a host
where it could run).

Drawn with matplotlib's object API (``Figure``), imported on demand: numpy dies of an
illegal instruction on the VM's emulated CPU, so the VM's result is plotted on the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._hol_flows import LABELS
from ._hol_stats import PERCENTILES, case_key, streams_loss_rate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"multi": "tab:blue", "single": "tab:orange"}


def _log_axis(axis: Any) -> None:
    """Plain numbers (20, 50, 100...) on a logarithmic axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda _value, _position: ""))


STYLES = {"tls": "-", "bare": ":"}


def _label(result: dict[str, Any], layer: str, variant: str) -> str:
    """What a carrier is called in the figures of ``result``."""
    return LABELS[result.get("place", "host"), layer, variant]


def _path(result: dict[str, Any], path: str | None) -> str:
    """``path``, or the result's first (standard) path."""
    return path or next(iter(result.get("paths") or {"loopback": ""}))


def _where(result: dict[str, Any], path: str) -> str:
    return f"{result.get('place')}, {path}"


def cdf_figure(result: dict[str, Any], path: str | None = None) -> Figure:
    """Latency CDF per loss rate on ``path``: multi-stream against one connection."""
    from matplotlib.figure import Figure

    path = _path(result, path)
    losses = result["settings"]["loss_pct"]
    figure = Figure(figsize=(4.2 * len(losses), 3.8), layout="constrained")
    axes = figure.subplots(1, len(losses), sharey=True, squeeze=False)[0]
    for ax, loss in zip(axes, losses, strict=True):
        for key, xs in result["cdf_ms"].items():
            key_path, layer, variant, key_loss = key.split("/")
            if key_path != path or float(key_loss) != loss or not xs:
                continue
            ax.plot(
                xs,
                result["cdf_probabilities"],
                STYLES[layer],
                color=COLORS[variant],
                label=_label(result, layer, variant),
                drawstyle="steps-post",
            )
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(f"{loss:g}% loss")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of messages")
    # The legend goes where every carrier appears (the bare reference skips some rates).
    max(axes, key=lambda ax: len(ax.get_lines())).legend(fontsize="small", loc="lower right")
    figure.suptitle(
        f"Request/response latency, {result['settings']['flows']} flows ({_where(result, path)})"
    )
    return figure


def percentile_figure(result: dict[str, Any], path: str | None = None) -> Figure:
    """p50/p90/p99/p99.9 against the loss rate on ``path``, multi-stream and one
    connection."""
    from matplotlib.figure import Figure

    path = _path(result, path)
    figure = Figure(figsize=(4 * len(PERCENTILES), 3.6), layout="constrained")
    axes = figure.subplots(1, len(PERCENTILES), squeeze=False)[0]
    rows = [r for r in result["rows"] if r.get("path", "loopback") == path]
    for ax, name in zip(axes, PERCENTILES, strict=True):
        for layer in STYLES:
            for variant in COLORS:
                points = sorted(
                    (r["loss_pct"], r[f"{name}_ms"])
                    for r in rows
                    if r["layer"] == layer and r["variant"] == variant
                )
                if not points:
                    continue
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    STYLES[layer],
                    marker="o",
                    color=COLORS[variant],
                    label=_label(result, layer, variant),
                )
        ax.set_yscale("log")
        _log_axis(ax.yaxis)
        ax.set_title(name)
        ax.set_xlabel("packet loss (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize="small")
    figure.suptitle(f"Latency percentiles against loss ({_where(result, path)})")
    return figure


def streams_figure(
    result: dict[str, Any], loss: float | None = None, layer: str = "tls", path: str | None = None
) -> Figure:
    """Latency CDF of each flow at one loss rate (2 % by default) on ``path``, multi
    against single."""
    from matplotlib.figure import Figure

    path = _path(result, path)
    if loss is None:
        loss = streams_loss_rate(result["settings"]["loss_pct"])
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for ax, variant in zip(axes, COLORS, strict=True):
        per_flow = result["flow_cdf_ms"].get(case_key(path, layer, variant, loss), [])
        for flow, xs in enumerate(per_flow):
            if xs:
                ax.plot(
                    xs,
                    result["cdf_probabilities"],
                    drawstyle="steps-post",
                    linewidth=0.9,
                    label=f"flow {flow}",
                )
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_title(f"{_label(result, layer, variant)}, {loss:g}% loss", fontsize="medium")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of the flow's messages")
    figure.suptitle(f"Each flow at {loss:g}% loss ({_where(result, path)})")
    return figure


def plot(result: dict[str, Any], directory: Path) -> list[Path]:
    """Write the CDF, percentile and per-flow figures of the standard path as PNGs
    (``hol-PLACE-NAME.png``), and the percentiles of any other path
    (``hol-PLACE-PATH-percentiles.png``)."""
    place = result.get("place", "host")
    standard, *others = list(result.get("paths") or {"loopback": ""})
    figures = [
        (f"hol-{place}-cdf.png", cdf_figure(result, standard)),
        (f"hol-{place}-percentiles.png", percentile_figure(result, standard)),
        (f"hol-{place}-streams.png", streams_figure(result, path=standard)),
    ]
    figures += [
        (f"hol-{place}-{path}-percentiles.png", percentile_figure(result, path)) for path in others
    ]
    out = []
    for name, figure in figures:
        figure.savefig(directory / name, dpi=110)
        out.append(directory / name)
    return out
