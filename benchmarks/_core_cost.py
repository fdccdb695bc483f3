"""CPU cost of the sans-IO SCTP core (``trio_sctls.sctp``) per packet, each side alone.

A sender and a receiver :class:`~trio_sctls.sctp.Association` exchange a transfer in
memory (no sockets, no Trio), driven the way the udp transport drives them: the
application keeps the send queue topped up to the transport's send buffer, the
receiver reads a burst of up to ``MAX_BURST`` datagrams before it flushes what it has to
send (its SACKs), the sender reads every SACK before it flushes (more DATA). The clock
advances by one microsecond a step; nothing is lost, so no timer fires except the
delayed SACK at the very end.

Both sides are deterministic given their seeds and the ``now`` of every call, so the
exchange is recorded once, as each side's list of calls, and then *replayed one side
at a time* into a fresh association: the sender's replay (``send``, SACKs in, DATA
out) is timed with :func:`time.process_time` as one block, then the receiver's (DATA
in, events out, SACKs out), and each total is divided by the DATA packets of the
transfer. So a figure is the CPU time the core spends on one side of one DATA packet,
with no driver, clock-reading or other-side costs mixed in, and a profile of one side
(:func:`profile_side`) shows only that side. The replay checks that it produced the
same packets as the recording (same count and bytes): a change to the core that altered
the wire would fail here.

The handshake is recorded and replayed too, but not timed.
"""

from __future__ import annotations

import cProfile
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from trio_sctls.sctp import Association, MessageReceived, SCTPConfig

#: What the udp transport keeps queued, and reads per burst (its SEND_BUFFER, MAX_BURST).
SEND_BUFFER = 1024 * 1024
MAX_BURST = 64
#: IPv4: the transport subtracts 20 bytes of IP header from an IPv4 path's MTU.
IPV4_HEADER = 20
_SECRET = b"k" * 32
#: One step of the simulated clock (seconds).
_TICK = 1e-6

#: One recorded call: (method, argument, now).
Call = tuple[str, Any, float]


@dataclass
class Workload:
    """A transfer: ``messages`` messages of ``size`` bytes in packets of ``mtu``."""

    name: str
    size: int
    messages: int
    mtu: int = 1500

    def config(self) -> SCTPConfig:
        """The configuration both ends use: the udp transport's on an IPv4 path whose
        MTU is known (path MTU discovery off, so every packet has the workload's size)."""
        return SCTPConfig(
            mtu=self.mtu,
            ip_header_size=IPV4_HEADER,
            heartbeat_interval=None,
            outbound_streams=1,
            pmtud=False,
        )


@dataclass
class _Side:
    """One association and the calls made on it (after ``mark``: the timed part)."""

    assoc: Association
    calls: list[Call] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    mark: int = 0

    def do(self, method: str, argument: Any, now: float) -> list[bytes]:
        self.calls.append((method, argument, now))
        out = _apply(self.assoc, method, argument, now)
        self.sent.extend(out)
        return out


def _apply(assoc: Association, method: str, argument: Any, now: float) -> list[bytes]:
    """Make one recorded call; the datagrams it made (for ``out``), else ``[]``."""
    if method == "recv":
        assoc.receive_datagram(argument, now)
        return []
    if method == "out":
        out = assoc.datagrams_to_send(now)
        while assoc.next_event() is not None:
            pass
        return out
    if method == "send":
        assoc.send(argument)
        return []
    if method == "timer":
        assoc.handle_timer(now)
        return []
    assoc.connect(now)  # "connect"
    return []


def _associations(config: SCTPConfig) -> tuple[Association, Association]:
    sender = Association(
        config, local_port=5000, remote_port=5001, secret=_SECRET, rng=random.Random(1)
    )
    receiver = Association(
        config, local_port=5001, remote_port=5000, secret=_SECRET, rng=random.Random(2)
    )
    return sender, receiver


@dataclass
class Recording:
    """A recorded transfer: each side's calls, and the DATA packets it took."""

    workload: Workload
    sender: list[Call]
    receiver: list[Call]
    sender_mark: int
    receiver_mark: int
    sender_out: list[bytes]
    receiver_out: list[bytes]
    data_packets: int
    sack_packets: int


def record(workload: Workload) -> Recording:
    """Run the transfer of ``workload`` once, recording both sides' calls."""
    sender_assoc, receiver_assoc = _associations(workload.config())
    sender, receiver = _Side(sender_assoc), _Side(receiver_assoc)
    now = 0.0
    to_receiver: deque[bytes] = deque()
    sender.do("connect", None, now)
    while not (sender_assoc.established and receiver_assoc.established):
        now += _TICK
        to_receiver.extend(sender.do("out", None, now))
        while to_receiver:
            receiver.do("recv", to_receiver.popleft(), now)
        for d in receiver.do("out", None, now):
            sender.do("recv", d, now)
    sender.mark, receiver.mark = len(sender.calls), len(receiver.calls)
    handshake_out = len(sender.sent), len(receiver.sent)
    payload = bytes(range(256)) * (workload.size // 256 + 1)
    payload = payload[: workload.size]
    left = workload.messages
    delivered = 0
    counting = receiver_assoc

    while delivered < workload.messages:
        now += _TICK
        while left and sender_assoc.queued_bytes + workload.size <= SEND_BUFFER:
            sender.do("send", payload, now)
            left -= 1
        to_receiver.extend(sender.do("out", None, now))
        moved = bool(to_receiver)
        for _ in range(min(len(to_receiver), MAX_BURST)):
            receiver.do("recv", to_receiver.popleft(), now)
        # Count deliveries without consuming the events (the replay's "out" drains them).
        delivered += sum(type(e) is MessageReceived for e in counting._events)
        acks = receiver.do("out", None, now)
        moved = moved or bool(acks)
        for d in acks:
            sender.do("recv", d, now)
        if not moved and not to_receiver:
            deadlines = [
                d for d in (sender_assoc.timer_deadline(), receiver_assoc.timer_deadline()) if d
            ]
            if not deadlines:
                raise RuntimeError("transfer stalled with no timer running")
            now = max(now, min(deadlines))
            sender.do("timer", None, now)
            receiver.do("timer", None, now)
    # The last SACK (delayed), so the sender ends with nothing outstanding.
    while sender_assoc.queued_bytes:
        now = max(now + _TICK, receiver_assoc.timer_deadline() or now)
        receiver.do("timer", None, now)
        for d in receiver.do("out", None, now):
            sender.do("recv", d, now)
    return Recording(
        workload,
        sender.calls,
        receiver.calls,
        sender.mark,
        receiver.mark,
        sender.sent,
        receiver.sent,
        data_packets=len(sender.sent) - handshake_out[0],
        sack_packets=len(receiver.sent) - handshake_out[1],
    )


def replay(recording: Recording, side: str, profiler: cProfile.Profile | None = None) -> float:
    """Replay one side (``"sender"`` or ``"receiver"``) into a fresh association; return
    the CPU seconds (:func:`time.process_time`) its timed part took, with ``profiler``
    (if given) enabled around it.

    Raises:
        RuntimeError: the replay sent other packets than the recording (the core is not
            deterministic, or changed its wire output mid-run).
    """
    sender_assoc, receiver_assoc = _associations(recording.workload.config())
    if side == "sender":
        assoc, calls, mark, expected = (
            sender_assoc,
            recording.sender,
            recording.sender_mark,
            recording.sender_out,
        )
    else:
        assoc, calls, mark, expected = (
            receiver_assoc,
            recording.receiver,
            recording.receiver_mark,
            recording.receiver_out,
        )
    sent: list[bytes] = []
    for method, argument, now in calls[:mark]:
        sent += _apply(assoc, method, argument, now)
    timed = calls[mark:]
    outs: list[list[bytes]] = []
    keep = outs.append
    apply = _apply
    if profiler is not None:
        profiler.enable()
    started = time.process_time()
    for method, argument, now in timed:
        keep(apply(assoc, method, argument, now))
    cpu = time.process_time() - started
    if profiler is not None:
        profiler.disable()
    for out in outs:
        sent += out
    if sent != expected:
        raise RuntimeError(f"the {side}'s replay sent other packets than the recording")
    return cpu


def profile_side(recording: Recording, side: str) -> cProfile.Profile:
    """A deterministic profile of one side's timed part (call counts are repeatable)."""
    profiler = cProfile.Profile()
    replay(recording, side, profiler)
    return profiler


#: The standard workloads: bulk (16 KiB messages, 11 to 12 packets each) and small
#: messages (100 bytes, about 13 bundled per packet), in Ethernet-sized packets.
WORKLOADS = {
    "bulk": Workload("bulk", 16 * 1024, 1000),
    "small": Workload("small", 100, 20000),
}


def measure(workload: Workload, rounds: int) -> dict[str, Any]:
    """Median µs of CPU per DATA packet on each side of ``workload``, over ``rounds``
    replays alternating the sides."""
    recording = record(workload)
    sender: list[float] = []
    receiver: list[float] = []
    for _ in range(rounds):
        sender.append(replay(recording, "sender"))
        receiver.append(replay(recording, "receiver"))
    packets = recording.data_packets
    sender.sort()
    receiver.sort()
    send_us = sender[len(sender) // 2] / packets * 1e6
    receive_us = receiver[len(receiver) // 2] / packets * 1e6
    return {
        "workload": workload.name,
        "message_size": workload.size,
        "messages": workload.messages,
        "mtu": workload.mtu,
        "data_packets": packets,
        "sack_packets": recording.sack_packets,
        "messages_per_packet": round(workload.messages / packets, 2),
        "send_us_per_packet": round(send_us, 2),
        "receive_us_per_packet": round(receive_us, 2),
        "send_us_per_message": round(send_us * packets / workload.messages, 3),
        "receive_us_per_message": round(receive_us * packets / workload.messages, 3),
        "send_us_samples": [round(s / packets * 1e6, 2) for s in sender],
        "receive_us_samples": [round(s / packets * 1e6, 2) for s in receiver],
    }
