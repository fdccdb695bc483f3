"""Fewer system calls per byte: UDP segmentation and receive offloads (Linux).

A bulk transfer over an Ethernet-sized path is a stream of SCTP packets of one size
(full DATA packets) to one peer. Sent one ``sendto`` each and read one ``recvfrom``
each, the system calls cost more than the bytes. Linux offers two remedies, used where
the kernel has them and skipped where it refuses:

* ``UDP_SEGMENT`` (generic segmentation offload, Linux >= 4.18): one ``sendmsg`` of a
  *train*, consecutive datagrams to one address, all of one size but the last, which
  may be shorter, with the size in a control message; the kernel (or the NIC) cuts it
  into ordinary datagrams. Nothing changes on the wire: the peer (Linux's own SCTP over
  UDP included) receives the same datagrams it would have. :func:`trains` groups what
  the core wants sent; a train is at most :data:`MAX_SEGMENTS` datagrams and
  :data:`MAX_TRAIN_BYTES` bytes (a UDP payload's limit).
* ``UDP_GRO`` (receive offload, Linux >= 5.0): datagrams of one flow that the kernel
  coalesced (a GSO train that crossed loopback or a veth pair whole, or what the NIC's
  GRO merged) arrive in one ``recvmsg``, with their size in a control message;
  :func:`split` cuts them apart again, and each is fed to the core as the packet it was.
  Without the option the kernel splits such trains itself.

Trains never go to an address of this host (loopback included). The kernel cuts a
train into datagrams only where it leaves the machine; delivered locally, it reaches
the receiving socket whole, to be cut there. Plain UDP sockets take that in stride, but
Linux's own SCTP over UDP does not: a train to it crashed Debian's 6.1 kernel in the
test VM (``tests/sctp/test_kernel_interop.py`` guards this). A Linux SCTP peer on this
host in another network namespace (a veth pair, a container) is exposed the same way
and cannot be told from one elsewhere. So trains are opt-in (:data:`OFFLOAD_ENV`
``=on``); the receive offload, which only changes how our own socket reads, is on by
default.

Support is probed once per socket (:func:`enable_gso`, :func:`enable_gro`). A train the
kernel refuses (:data:`GSO_REFUSED`) is sent at once one datagram per call, so nothing
is lost. ``EINVAL`` may be the train's own fault (a segment larger than the route's
MTU, which one datagram would meet as ``EMSGSIZE``), so only :data:`MAX_REFUSALS` of
them in a row, or any other refusal (``EIO``: the device cannot checksum a train;
``ENOPROTOOPT``, ``EOPNOTSUPP``: no such option), make the socket fall back to one
datagram per call for good. :data:`OFFLOAD_ENV` ``=off`` turns both off, so that
the fallback path can be measured on a kernel that has them.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Final, TypeVar

from ...sctp._pmtud import Fragmentable
from .._linux import SOL_UDP, UDP_GRO, UDP_SEGMENT
from ._icmp import ICMP_ERRNOS

_A = TypeVar("_A")

log = logging.getLogger("trio_sctls.udp")

SocketAddress = tuple[str, int] | tuple[str, int, int, int]

#: Most datagrams in one train: Linux's ``UDP_MAX_SEGMENTS`` was 64 before 6.9.
MAX_SEGMENTS: Final = 64
#: Most bytes in one train: a UDP payload's limit (65,507 bytes over IPv4), with room
#: for IPv6 extension headers.
MAX_TRAIN_BYTES: Final = 65000
#: Errors with which a kernel that knows ``UDP_SEGMENT`` refuses a train (the device
#: cannot checksum it, a segment does not fit the route's MTU, ...): send one datagram
#: per call from then on.
GSO_REFUSED: Final = frozenset(
    {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.ENOTSUP}
)
#: ``EINVAL`` refusals in a row (no train sent in between) after which trains stop.
MAX_REFUSALS: Final = 4
#: The environment variable that chooses the offloads: unset, receive offload only;
#: ``on``, trains too (for peers known not to be Linux SCTP on this host); ``off``,
#: neither, to measure without.
OFFLOAD_ENV: Final = "TRIO_SCTLS_UDP_OFFLOAD"
#: Room for the ``UDP_GRO`` control message (an ``int``) of a ``recvmsg``.
GRO_ANCILLARY: Final = socket.CMSG_SPACE(4)

_SEGMENT_SIZE = struct.Struct("=H")  # the UDP_SEGMENT control message: a u16
_GRO_SIZE = struct.Struct("=i")  # the UDP_GRO control message: an int


def offloads_wanted() -> frozenset[str]:
    """Which offloads :data:`OFFLOAD_ENV` allows: ``{"gro"}`` by default, both with
    ``on`` (or ``gso``, ``all``), neither with ``off``."""
    value = os.environ.get(OFFLOAD_ENV, "").strip().lower()
    if value in ("0", "off", "no", "false", "none"):
        return frozenset()
    if value in ("1", "on", "yes", "true", "gso", "all"):
        return frozenset({"gro", "gso"})
    return frozenset({"gro"})


def _set_udp_option(sock: socket.socket, option: int, value: int) -> bool:
    """Set a ``SOL_UDP`` option; whether the kernel took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(SOL_UDP, option, value)
    except OSError:
        return False
    return True


def enable_gso(sock: socket.socket) -> bool:
    """Whether ``sock`` can send trains: the kernel knows ``UDP_SEGMENT`` (setting the
    socket's default segment size to 0, "none", asks without changing anything) and
    :data:`OFFLOAD_ENV` asks for them."""
    return "gso" in offloads_wanted() and _set_udp_option(sock, UDP_SEGMENT, 0)


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced datagrams on ``sock``; whether the kernel agreed."""
    return "gro" in offloads_wanted() and _set_udp_option(sock, UDP_GRO, 1)


def segment_option(size: int) -> list[tuple[int, int, bytes]]:
    """The ``sendmsg`` control message that cuts a train into ``size``-byte datagrams."""
    return [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))]


def trains(datagrams: Sequence[tuple[bytes, _A]]) -> list[tuple[list[bytes], _A, int]]:
    """Group ``(datagram, address)`` pairs, in order, into trains that one ``sendmsg``
    with ``UDP_SEGMENT`` can carry: ``(datagrams, address, segment size)``, where every
    datagram is the segment size long but the last, which may be shorter; at most
    :data:`MAX_SEGMENTS` datagrams and :data:`MAX_TRAIN_BYTES` bytes. A train of one is
    an ordinary datagram. Order is kept, so what one peer receives is unchanged."""
    result: list[tuple[list[bytes], _A, int]] = []
    current: list[bytes] = []
    current_address: _A | None = None
    size = total = 0
    open_ = False  # the current train takes more datagrams
    for data, address in datagrams:
        n = len(data)
        if (
            open_
            and n <= size
            and total + n <= MAX_TRAIN_BYTES
            and len(current) < MAX_SEGMENTS
            and address == current_address
        ):
            current.append(data)
            total += n
            open_ = n == size  # a shorter datagram ends its train
            continue
        current = [data]
        current_address = address
        size = total = n
        open_ = True
        result.append((current, address, n))
    return result


def received_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The size of each datagram coalesced into a ``recvmsg``'s buffer, from its
    ``UDP_GRO`` control message; 0 when there is none (one plain datagram)."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= _GRO_SIZE.size:
            return int(_GRO_SIZE.unpack_from(data)[0])
    return 0


def split(buffer: bytes, size: int, truncated: bool = False) -> list[bytes]:
    """The datagrams coalesced into ``buffer``, each ``size`` bytes but the last. A
    ``truncated`` buffer (the kernel had more than fitted) loses its incomplete last
    datagram; SCTP retransmits it."""
    if size <= 0 or len(buffer) <= size:
        return [buffer]
    end = len(buffer)
    if truncated:
        end -= end % size
    return [buffer[offset : offset + size] for offset in range(0, end, size)]


class TrainSender:
    """The sending half of a UDP socket: datagrams in trains where the kernel takes
    them, one per call where it does not, with the statistics of both.

    Attributes:
        sock: the non-blocking UDP socket.
        gso: whether trains go out in one call (``UDP_SEGMENT``); cleared for good when
            the kernel refuses the first one.
        datagrams_sent: datagrams handed to the kernel (or lost trying).
        send_calls: system calls that sent them.
        dropped_sends: datagrams the kernel refused (a full send buffer, an ICMP error
            surfacing): SCTP retransmits them.
        local_trains: send trains to this host's own addresses too (off: see the
            module docs; tests turn it on, as their peers are plain UDP sockets).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gso = enable_gso(sock)
        self.datagrams_sent = 0
        self.send_calls = 0
        self.dropped_sends = 0
        self.local_trains = False
        self._refusals = 0
        self._closed = False
        self._local: dict[str, bool] = {}

    def _send_all(self, datagrams: list[tuple[bytes, SocketAddress]]) -> None:
        """Send ``datagrams`` in order: in trains where the socket can (``UDP_SEGMENT``),
        else one per call."""
        send = self._send
        if not self.gso or len(datagrams) == 1:
            for data, address in datagrams:
                send(data, address)
            return
        for train, address, size in trains(datagrams):
            if (
                len(train) == 1
                or type(train[0]) is Fragmentable  # to go with DF clear, alone
                or (not self.local_trains and self._is_local(address[0]))
            ):
                for data in train:
                    send(data, address)
            else:
                self._send_train(train, address, size)

    def _is_local(self, host: str) -> bool:
        """Whether ``host`` is an address of this host (in this network namespace):
        one a socket can bind to. Asked once per address."""
        local = self._local.get(host)
        if local is None:
            try:
                with socket.socket(self.sock.family, socket.SOCK_DGRAM) as probe:
                    probe.bind((host, 0))
            except OSError as exc:
                local = exc.errno != errno.EADDRNOTAVAIL  # unsure: treat it as local
            else:
                local = True
            self._local[host] = local
        return local

    def _send_train(self, train: list[bytes], address: SocketAddress, size: int) -> None:
        try:
            self.sock.sendmsg(train, segment_option(size), 0, address)
        except OSError as exc:
            if exc.errno in GSO_REFUSED and not self._closed:
                # Refused: one per call instead, now; and for good unless this train
                # may have been at fault (see the module docs).
                self._refusals += 1
                if exc.errno != errno.EINVAL or self._refusals >= MAX_REFUSALS:
                    self.gso = False
                    log.debug("udp transport: UDP_SEGMENT refused (%r); not using it", exc)
                for data in train:
                    self._send(data, address)
                return
            self.datagrams_sent += len(train)
            self._send_failed(exc, address, len(train))
            return
        self._refusals = 0
        self.send_calls += 1
        self.datagrams_sent += len(train)

    def _send(self, data: bytes, address: SocketAddress) -> None:
        self.datagrams_sent += 1
        try:
            self.sock.sendto(data, address)
        except OSError as exc:
            self._send_failed(exc, address, 1)
            return
        self.send_calls += 1

    def _send_failed(self, exc: OSError, address: SocketAddress, count: int) -> None:
        """A send of ``count`` datagrams failed: they are lost, and SCTP retransmits."""
        if isinstance(exc, BlockingIOError | InterruptedError):
            self.dropped_sends += count  # the send buffer is full
            return
        if self._closed:
            return
        self.dropped_sends += count
        # The socket's pending ICMP error may surface here instead of in recvfrom (its
        # details stay in the error queue); SCTP retransmits either way.
        level = logging.DEBUG if exc.errno in ICMP_ERRNOS else logging.WARNING
        log.log(level, "udp transport: sending to %r failed: %r", address, exc)
