"""CPU cost of the whole udp transport path per SCTP packet: socket calls, the pump, the
endpoint, the sans-IO core and the :class:`~trio_sctls.MessageTransport` API, no TLS.

A client sends ``messages`` messages of ``size`` bytes on stream 0 of a plain SCTP
association over the udp transport; the server receives them all. Each transfer starts
with a message ``go COUNT`` and ends with the server's answer, a JSON message with the
CPU time (:func:`time.process_time`) it spent from ``go`` to the last message and the
datagrams its UDP socket received and sent meanwhile.

* Over a veth pair (two processes, :func:`serve` and :func:`run_transfers`), each
  process's CPU is its own side's: the sender's CPU per datagram it sent (DATA packets,
  plus a few window probes or retransmissions if any) and the receiver's CPU per
  datagram it received.
* On loopback both ends share this process: one CPU figure for both sides together, per
  DATA datagram.

The datagram counts come from the transport's UDP socket (``datagrams_sent`` /
``datagrams_received``, kept for statistics), reached through the transport's private
``_udp``: a benchmark may look where an application should not.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import trio_sctls
from trio_sctls import Message, MessageTransport

#: A transfer that takes longer is stuck.
TRANSFER_TIMEOUT = 300.0


def _socket(transport: MessageTransport) -> Any:
    """The transport's UDP socket object (its ``datagrams_sent`` / ``_received``)."""
    return getattr(transport, "_udp")  # noqa: B009 - private on purpose, see the docstring


def _counts(transport: MessageTransport) -> tuple[int, int]:
    udp = _socket(transport)
    return udp.datagrams_sent, udp.datagrams_received


async def _next_message(transport: MessageTransport) -> bytes:
    while True:
        item = await transport.receive()
        if isinstance(item, Message):
            return bytes(item.data)


async def answer_transfers(transport: MessageTransport) -> None:
    """The receiving end: for each ``go COUNT``, receive COUNT messages, answer with its
    CPU seconds and datagram counts over them; until the association ends."""
    receive = transport.receive
    while True:
        try:
            go = await _next_message(transport)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel):
            return
        count = int(go.split()[1])
        sent0, received0 = _counts(transport)
        started = time.process_time()
        got = 0
        while got < count:
            item = await receive()
            if isinstance(item, Message):
                got += 1
        cpu = time.process_time() - started
        sent1, received1 = _counts(transport)
        answer = {"cpu": cpu, "sent": sent1 - sent0, "received": received1 - received0}
        await transport.send_message(json.dumps(answer).encode(), stream=0)


async def transfer(transport: MessageTransport, size: int, count: int) -> dict[str, Any]:
    """Send ``count`` messages of ``size`` bytes to :func:`answer_transfers`; return this
    side's CPU seconds and datagrams, and the other side's answer."""
    payload = b"m" * size
    send = transport.send_message
    with trio.fail_after(TRANSFER_TIMEOUT):
        await send(f"go {count}".encode(), stream=0)
        sent0, received0 = _counts(transport)
        started = time.process_time()
        for _ in range(count):
            await send(payload, stream=0)
        answer = json.loads(await _next_message(transport))
        cpu = time.process_time() - started
    sent1, received1 = _counts(transport)
    return {"cpu": cpu, "sent": sent1 - sent0, "received": received1 - received0, "peer": answer}


@asynccontextmanager
async def listening(host: str) -> AsyncIterator[tuple[int, int]]:
    """A udp listener on ``host`` answering transfers on every association it accepts;
    yields its (SCTP port, UDP port)."""
    async with (
        trio_sctls.open_listener(
            0,
            host=host,
            transport="udp",
            outbound_streams=1,
            max_inbound_streams=1,
            udp_port=0,
        ) as listener,
        trio.open_nursery() as nursery,
    ):

        async def accept_all() -> None:
            while True:
                transport = await listener.accept()
                nursery.start_soon(_answer_then_close, transport)

        nursery.start_soon(accept_all)
        assert listener.udp_port is not None
        yield listener.port, listener.udp_port
        nursery.cancel_scope.cancel()


async def _answer_then_close(transport: MessageTransport) -> None:
    try:
        await answer_transfers(transport)
    finally:
        transport.abort()


@asynccontextmanager
async def connected(host: str, port: int, udp_port: int) -> AsyncIterator[MessageTransport]:
    """A plain SCTP association over udp to :func:`listening`'s listener."""
    async with trio_sctls.open_transport(
        host,
        port,
        transport="udp",
        outbound_streams=1,
        max_inbound_streams=1,
        remote_udp_port=udp_port,
    ) as client:
        try:
            yield client
        finally:
            client.abort()


async def run_transfers(
    transport: MessageTransport, workloads: dict[str, tuple[int, int]], rounds: int, *, split: bool
) -> list[dict[str, Any]]:
    """Every workload (name -> (size, count)) ``rounds`` times, interleaved; one row per
    workload with the median CPU µs per packet. ``split``: the two ends are separate
    processes (per-side figures), else one process (both sides together)."""
    for size, _count in workloads.values():
        await transfer(transport, size, 20)  # warm up
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in workloads}
    names = list(workloads)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            size, count = workloads[name]
            samples[name].append(await transfer(transport, size, count))
    rows = []
    for name, runs in samples.items():
        size, count = workloads[name]
        row: dict[str, Any] = {
            "workload": name,
            "message_size": size,
            "messages": count,
            "data_packets": statistics.median(r["sent"] for r in runs),
        }
        if split:
            row["send_us_per_packet"] = round(
                statistics.median(r["cpu"] / r["sent"] * 1e6 for r in runs), 2
            )
            row["receive_us_per_packet"] = round(
                statistics.median(r["peer"]["cpu"] / r["peer"]["received"] * 1e6 for r in runs), 2
            )
            row["send_us_per_message"] = round(
                statistics.median(r["cpu"] / count * 1e6 for r in runs), 3
            )
            row["receive_us_per_message"] = round(
                statistics.median(r["peer"]["cpu"] / count * 1e6 for r in runs), 3
            )
        else:
            # One process: this side's CPU already includes the receiver's work.
            row["both_us_per_packet"] = round(
                statistics.median(r["cpu"] / r["sent"] * 1e6 for r in runs), 2
            )
        row["both_us_per_message"] = round(
            statistics.median(
                (r["cpu"] + (r["peer"]["cpu"] if split else 0.0)) / count * 1e6 for r in runs
            ),
            2,
        )
        rows.append(row)
    return rows
