"""Fewer system calls per byte on the udp transport (trio_sctls/transport/udp/_batch.py):
trains for ``UDP_SEGMENT``, coalesced datagrams from ``UDP_GRO``, the fallback where
the kernel refuses them, and ``receive_nowait``.

The grouping and splitting are pure functions, tested on bytes; the socket tests use
loopback, where this kernel has both offloads, and sockets that refuse them to test
the fallback.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_sctls.sctp import SCTPConfig
from trio_sctls.transport import Message
from trio_sctls.transport._linux import SOL_UDP, UDP_GRO
from trio_sctls.transport.udp._batch import (
    GRO_ANCILLARY,
    MAX_REFUSALS,
    MAX_SEGMENTS,
    MAX_TRAIN_BYTES,
    OFFLOAD_ENV,
    TrainSender,
    enable_gro,
    enable_gso,
    received_size,
    split,
    trains,
)

from .test_udp_transport import udp_pair


@pytest.fixture(autouse=True)
def _trains_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trains are opt-in (they can crash a Linux SCTP peer on this host); these tests
    are about them."""
    monkeypatch.setenv(OFFLOAD_ENV, "on")


A = ("10.0.0.1", 9899)
B = ("10.0.0.2", 9899)


# -- trains (pure) ------------------------------------------------------------------------


def test_equal_datagrams_to_one_address_make_one_train_ended_by_a_shorter_one() -> None:
    datagrams = [(b"x" * 100, A)] * 5 + [(b"y" * 40, A), (b"z" * 100, A)]
    assert trains(datagrams) == [
        ([b"x" * 100] * 5 + [b"y" * 40], A, 100),
        ([b"z" * 100], A, 100),
    ]


def test_another_address_or_a_longer_datagram_starts_a_new_train() -> None:
    datagrams = [(b"a" * 10, A), (b"a" * 10, B), (b"a" * 10, B), (b"b" * 20, B), (b"b" * 20, B)]
    assert trains(datagrams) == [
        ([b"a" * 10], A, 10),
        ([b"a" * 10] * 2, B, 10),
        ([b"b" * 20] * 2, B, 20),
    ]


def test_a_train_holds_at_most_max_segments_datagrams() -> None:
    grouped = trains([(b"s" * 10, A)] * (MAX_SEGMENTS + 3))
    assert [len(train) for train, _, _ in grouped] == [MAX_SEGMENTS, 3]


def test_a_train_holds_at_most_max_train_bytes() -> None:
    size = 1400
    grouped = trains([(b"s" * size, A)] * MAX_SEGMENTS)
    assert all(sum(map(len, train)) <= MAX_TRAIN_BYTES for train, _, _ in grouped)
    assert len(grouped[0][0]) == MAX_TRAIN_BYTES // size


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"a" * 1200, b"b" * 1200, b"c" * 300, b"d" * 30000]), st.booleans()
        )
    )
)
def test_trains_keep_every_datagram_in_order_and_obey_the_kernels_rules(
    items: list[tuple[bytes, bool]],
) -> None:
    datagrams = [(data, A if first else B) for data, first in items]
    grouped = trains(datagrams)
    assert [(d, a) for train, a, _ in grouped for d in train] == datagrams
    for train, _address, size in grouped:
        assert len(train) <= MAX_SEGMENTS
        assert len(train) == 1 or sum(map(len, train)) <= MAX_TRAIN_BYTES
        assert all(len(d) == size for d in train[:-1])
        assert len(train[-1]) <= size


# -- coalesced datagrams (pure) -----------------------------------------------------------


def test_a_coalesced_buffer_splits_at_the_segment_size_the_last_one_shorter() -> None:
    buffer = b"a" * 10 + b"b" * 10 + b"c" * 4
    assert split(buffer, 10) == [b"a" * 10, b"b" * 10, b"c" * 4]


def test_one_datagram_or_no_segment_size_is_left_whole() -> None:
    assert split(b"q" * 10, 10) == [b"q" * 10]
    assert split(b"q" * 10, 0) == [b"q" * 10]


def test_a_truncated_buffer_loses_only_its_incomplete_last_datagram() -> None:
    assert split(b"a" * 10 + b"b" * 10 + b"c" * 4, 10, truncated=True) == [b"a" * 10, b"b" * 10]


def test_the_segment_size_comes_from_the_udp_gro_control_message() -> None:
    assert received_size([(SOL_UDP, UDP_GRO, (1172).to_bytes(4, "little"))]) == 1172
    assert received_size([(0, 11, b"\0" * 16)]) == 0
    assert received_size([]) == 0


# -- on real sockets ----------------------------------------------------------------------


def bound_pair(sender_class: type[socket.socket] = socket.socket) -> tuple[Any, socket.socket]:
    """A sender and a receiver socket on loopback."""
    sender = sender_class(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (sender, receiver):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    return sender, receiver


def received(receiver: socket.socket, gro: bool) -> tuple[list[bytes], int]:
    """Every datagram waiting (coalesced ones split), and the calls that read them."""
    out: list[bytes] = []
    calls = 0
    while True:
        try:
            data, ancillary, flags, _ = receiver.recvmsg(65536, GRO_ANCILLARY)
        except BlockingIOError:
            return out, calls
        calls += 1
        out += (
            split(data, received_size(ancillary), bool(flags & socket.MSG_TRUNC)) if gro else [data]
        )


TRAIN = [os.urandom(1000) for _ in range(5)] + [os.urandom(300)]


def train_sender(sock: socket.socket) -> TrainSender:
    """A TrainSender that sends trains to loopback too: the receivers here are plain
    UDP sockets, which take them whole."""
    out = TrainSender(sock)
    out.local_trains = True
    return out


def test_this_kernel_sends_a_train_in_one_call_and_reads_it_in_one() -> None:
    sender, receiver = bound_pair()
    with sender, receiver:
        out = train_sender(sender)
        gro = enable_gro(receiver)
        assert out.gso and gro  # Linux >= 5.0, with the offloads left on
        address = receiver.getsockname()
        out._send_all([(d, address) for d in TRAIN])
        assert (out.send_calls, out.datagrams_sent, out.dropped_sends) == (1, 6, 0)
        datagrams, calls = received(receiver, gro)
        assert datagrams == TRAIN
        assert calls == 1  # loopback keeps a GSO train whole for a GRO socket


class RefusingSocket(socket.socket):
    """A socket whose kernel knows UDP_SEGMENT but refuses every train (as one whose
    device cannot checksum it does, with EIO)."""

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EIO, "no checksum offload")


class OversizeSocket(socket.socket):
    """A socket whose kernel refuses trains with EINVAL, as it does a train whose
    segments do not fit the route's MTU, while ``fits`` is false."""

    fits = False

    def sendmsg(self, *args: Any, **kwargs: Any) -> int:
        if not self.fits:
            raise OSError(errno.EINVAL, "Invalid argument")
        return super().sendmsg(*args, **kwargs)


def test_an_einval_refusal_costs_that_train_only_until_several_come_in_a_row() -> None:
    sender, receiver = bound_pair(OversizeSocket)
    with sender, receiver:
        out = train_sender(sender)
        address = receiver.getsockname()
        batch = [(d, address) for d in TRAIN]
        for _ in range(MAX_REFUSALS - 1):
            out._send_all(batch)
        assert out.gso and out.send_calls == 6 * (MAX_REFUSALS - 1)
        sender.fits = True
        out._send_all(batch)  # a train that fits resets the count
        assert out.send_calls == 6 * (MAX_REFUSALS - 1) + 1
        sender.fits = False
        for _ in range(MAX_REFUSALS - 1):
            out._send_all(batch)
        assert out.gso
        out._send_all(batch)
        assert not out.gso
        assert received(receiver, False)[0] == TRAIN * (2 * MAX_REFUSALS)


class OldKernelSocket(socket.socket):
    """A socket on a kernel without UDP_SEGMENT (before 4.18)."""

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        if level == SOL_UDP:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        super().setsockopt(level, option, value, *rest)


def test_a_refused_train_goes_out_one_datagram_per_call_and_trains_stop() -> None:
    sender, receiver = bound_pair(RefusingSocket)
    with sender, receiver:
        out = train_sender(sender)
        assert out.gso
        address = receiver.getsockname()
        out._send_all([(d, address) for d in TRAIN])
        assert not out.gso
        assert (out.send_calls, out.datagrams_sent, out.dropped_sends) == (6, 6, 0)
        out._send_all([(d, address) for d in TRAIN])
        assert out.send_calls == 12
        assert received(receiver, False)[0] == TRAIN * 2


def test_trains_do_not_go_to_an_address_of_this_host_by_default() -> None:
    # Delivered locally a train reaches the receiving socket whole, which Linux's own
    # SCTP over UDP does not survive (see _batch's module docs).
    sender, receiver = bound_pair()
    with sender, receiver:
        out = TrainSender(sender)
        assert out.gso and not out.local_trains
        address = receiver.getsockname()
        out._send_all([(d, address) for d in TRAIN])
        assert (out.send_calls, out.datagrams_sent) == (6, 6)
        assert received(receiver, False)[0] == TRAIN
        assert out._is_local("127.0.0.1") and not out._is_local("192.0.2.1")


def test_a_kernel_without_the_option_gets_one_datagram_per_call() -> None:
    sender, receiver = bound_pair(OldKernelSocket)
    with sender, receiver:
        out = train_sender(sender)
        assert not out.gso
        address = receiver.getsockname()
        out._send_all([(d, address) for d in TRAIN])
        assert (out.send_calls, out.datagrams_sent) == (6, 6)
        assert received(receiver, False)[0] == TRAIN


def test_trains_are_opt_in_and_both_offloads_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value, gso, gro in (("off", False, False), ("", False, True), ("on", True, True)):
        monkeypatch.setenv(OFFLOAD_ENV, value)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            assert (enable_gso(sock), enable_gro(sock)) == (gso, gro), value


# -- end to end ---------------------------------------------------------------------------

#: An Ethernet-sized path: a 16 KiB message is 14 packets.
ETHERNET = SCTPConfig(mtu=1500)


async def test_a_bulk_transfer_needs_far_fewer_system_calls_than_datagrams() -> None:
    options = {"config": ETHERNET}
    async with udp_pair(client=options, server=options) as (client, server, _):
        client._udp.local_trains = server._udp.local_trains = True  # as on a real path
        payload = os.urandom(16 * 1024)
        for _ in range(32):
            await client.send_message(payload, stream=0)
        for _ in range(32):
            item = await server.receive()
            assert isinstance(item, Message) and item.data == payload
        out, into = client._udp, server._udp
        assert out.datagrams_sent >= 32 * 12
        assert out.send_calls * 4 < out.datagrams_sent
        assert into.receive_calls * 4 < into.datagrams_received


async def test_a_burst_of_data_is_acknowledged_with_fewer_sacks_than_every_second_packet() -> None:
    # RFC 9260 Section 6.2 asks for a SACK at least every second DATA packet; the pump
    # reads a burst before it collects what to send, so one SACK answers the burst.
    options = {"config": ETHERNET}
    async with udp_pair(client=options, server=options) as (client, server, _):
        payload = os.urandom(16 * 1024)
        sent_before = server._udp.datagrams_sent
        for _ in range(16):
            await client.send_message(payload, stream=0)
        for _ in range(16):
            await server.receive()
        received_data = server._udp.datagrams_received
        sacks = server._udp.datagrams_sent - sent_before
        assert 0 < sacks * 2 < received_data


async def test_receive_nowait_drains_what_arrived_without_waiting() -> None:
    async with udp_pair() as (client, server, _):
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        for n in range(5):
            await client.send_message(b"m%d" % n, stream=n % 2)
        first = await server.receive()
        await trio.testing.wait_all_tasks_blocked()
        rest = [server.receive_nowait() for _ in range(4)]
        assert [m.data for m in [first, *rest] if isinstance(m, Message)] == [
            b"m%d" % n for n in range(5)
        ]
        with pytest.raises(trio.WouldBlock):
            server.receive_nowait()
        # What receive_nowait took left the receive window, as receive's does.
        recv = server.association._recv
        assert recv is not None and recv.a_rwnd == server.association.config.receive_buffer
