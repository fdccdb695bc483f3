"""How an association is set up, as the transports' connect and listen functions take
it: the stream counts and message limit every transport shares, and the liveness knobs
(:class:`Timers`) that :class:`~trio_sctls.TransportOptions` inherits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from .._options import TransportOptions


class StreamArguments(TypedDict):
    """The keyword arguments every transport's connect and listen functions share."""

    outbound_streams: int
    max_inbound_streams: int
    max_message_size: int


def stream_arguments(options: TransportOptions) -> StreamArguments:
    """The :class:`StreamArguments` of ``options``."""
    return {
        "outbound_streams": options.outbound_streams,
        "max_inbound_streams": options.max_inbound_streams,
        "max_message_size": options.max_message_size,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """The liveness knobs (heartbeats, retransmission timeouts and limits): fields that
    :class:`~trio_sctls.TransportOptions` inherits, and what the connect and listen
    functions of each transport take. ``None`` keeps the transport's own default; the
    fields mean what they mean there (validated there too). Keyword-only, so that a
    subclass's fields never shift a positional argument.

    Attributes:
        heartbeat_interval: HB.interval, seconds.
        rto_initial: RTO.Initial, seconds.
        rto_min: RTO.Min, seconds.
        rto_max: RTO.Max, seconds.
        max_retransmissions: Association.Max.Retrans.
        max_init_retransmissions: Max.Init.Retransmits.
    """

    heartbeat_interval: float | None = None
    rto_initial: float | None = None
    rto_min: float | None = None
    rto_max: float | None = None
    max_retransmissions: int | None = None
    max_init_retransmissions: int | None = None


def timers_of(options: TransportOptions) -> Timers:
    """The :class:`Timers` fields of ``options``, as a plain Timers."""
    return Timers(
        **{field.name: getattr(options, field.name) for field in dataclasses.fields(Timers)}
    )


def clamped_rtos(
    timers: Timers, default_min: float, default_initial: float, default_max: float
) -> tuple[float, float, float]:
    """``(rto_min, rto_initial, rto_max)``: the values given in ``timers``, and the
    defaults moved where needed so that ``min <= initial <= max`` holds (giving only
    ``rto_max=2`` must not leave a larger default RTO.Initial above it)."""
    low, high = timers.rto_min, timers.rto_max
    initial = timers.rto_initial
    if low is None:
        low = min([default_min] + [v for v in (initial, high) if v is not None])
    if high is None:
        high = max([default_max] + [v for v in (initial, low) if v is not None])
    if initial is None:
        initial = min(max(default_initial, low), high)
    return low, initial, high
