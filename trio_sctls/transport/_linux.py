"""The Linux SCTP socket API from Python: constants and struct layouts of
``include/uapi/linux/sctp.h`` (checked against Debian's 6.1 kernel, see below),
socket creation and options, socket addresses, and parsing of notifications.

Everything here is synchronous and stateless; :mod:`trio_sctls.transport.kernel` builds
the transport on it.

**Struct layouts** (x86-64, checked against Debian's 6.1 kernel): ``sctp_initmsg``
``=HHHH`` (8 bytes); ``sctp_sndinfo`` ``@HHIIi`` (16); ``sctp_rcvinfo`` ``@HHHIIIIi``
(28: two padding bytes after the flags, PPID at offset 8); ``sctp_event`` ``@iHB`` padded
to 8; ``sctp_status`` 176 bytes starting ``=iiIHHHHI`` (``sstat_state`` is the kernel's
state plus one); the notifications as parsed here. ``SCTP_GET_LOCAL_ADDRS`` reports
an ``optlen`` that leaves out its 8-byte header, so the address count is what is
trusted, not the length.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Final

import trio

from .._errors import (
    SCTPNotSupportedError,
)
from ._base import (
    MIN_MAX_MESSAGE_SIZE,
    Event,
    PeerAddressChange,
    PeerAddressState,
    RemoteError,
    SendFailed,
)
from ._setup import Timers, clamped_rtos

# --- Constants of the Linux SCTP socket API (include/uapi/linux/sctp.h) ----------------

#: The SCTP protocol number (``socket.IPPROTO_SCTP`` is missing on some builds).
IPPROTO_SCTP: Final = 132

# Socket options (level IPPROTO_SCTP).
_SCTP_RTOINFO: Final = 0
_SCTP_ASSOCINFO: Final = 1
_SCTP_INITMSG: Final = 2
_SCTP_NODELAY: Final = 3
_SCTP_PEER_ADDR_PARAMS: Final = 9
_SCTP_STATUS: Final = 14
_SCTP_RECVRCVINFO: Final = 32
_SCTP_SOCKOPT_BINDX_ADD: Final = 100
_SCTP_GET_PEER_ADDRS: Final = 108
_SCTP_GET_LOCAL_ADDRS: Final = 109
_SCTP_SOCKOPT_CONNECTX: Final = 110
_SCTP_RECONFIG_SUPPORTED: Final = 117
_SCTP_ENABLE_STREAM_RESET: Final = 118
_SCTP_RESET_STREAMS: Final = 119
_SCTP_EVENT: Final = 127
# SCTP-AUTH (RFC 4895; RFC 6458 section 8.1.20-8.3.4), and its per-socket switch
# (Linux 5.1+; before it, only the net.sctp.auth_enable sysctl).
_SCTP_AUTH_CHUNK: Final = 21
_SCTP_HMAC_IDENT: Final = 22
_SCTP_AUTH_KEY: Final = 23
_SCTP_AUTH_ACTIVE_KEY: Final = 24
_SCTP_AUTH_DELETE_KEY: Final = 25
_SCTP_PEER_AUTH_CHUNKS: Final = 26
_SCTP_AUTH_DEACTIVATE_KEY: Final = 35
_SCTP_AUTH_SUPPORTED: Final = 129

# Control message types.
_SCTP_SNDINFO: Final = 2
_SCTP_RCVINFO: Final = 3

# Flags: SCTP_UNORDERED in snd_flags / rcv_flags; MSG_NOTIFICATION in recvmsg's flags.
_SCTP_UNORDERED: Final = 1
#: RFC 9260 section 3.3.10.12: User-Initiated Abort, carrying the upper layer's reason.
_USER_INITIATED_ABORT: Final = 12
_MSG_NOTIFICATION: Final = 0x8000

# --- UDP offloads (include/uapi/linux/udp.h), for the udp transport's socket -----------
# Python 3.11's socket module names none of these.

#: The socket option and control message level of UDP (``SOL_UDP`` = ``IPPROTO_UDP``).
SOL_UDP: Final = 17
#: Generic segmentation offload (Linux >= 4.18): a ``u16`` segment size in a
#: ``sendmsg`` control message makes the kernel cut one buffer into datagrams of that
#: size (the last may be shorter).
UDP_SEGMENT: Final = 103
#: Receive offload (Linux >= 5.0): datagrams of one flow may arrive coalesced in one
#: ``recvmsg``, with an ``int`` control message giving the size of each.
UDP_GRO: Final = 104
_MSG_EOR: Final = socket.MSG_EOR

# Notification types (enum sctp_sn_type).
_SCTP_ASSOC_CHANGE: Final = 0x8001
_SCTP_PEER_ADDR_CHANGE: Final = 0x8002
_SCTP_SEND_FAILED: Final = 0x8003
_SCTP_REMOTE_ERROR: Final = 0x8004
_SCTP_SHUTDOWN_EVENT: Final = 0x8005
_SCTP_STREAM_RESET_EVENT: Final = 0x800A
_SCTP_SEND_FAILED_EVENT: Final = 0x800D

# Stream reconfiguration (RFC 6525): what we allow, what we ask, what the event reports.
_SCTP_ENABLE_RESET_STREAM_REQ: Final = 0x01
_SCTP_STREAM_RESET_OUTGOING: Final = 0x02
_SCTP_STREAM_RESET_INCOMING_SSN: Final = 0x0001
_SCTP_STREAM_RESET_DENIED: Final = 0x0004
_SCTP_STREAM_RESET_FAILED: Final = 0x0008

# Struct layouts, verified against the kernel (see the module docstring).
_INITMSG: Final = struct.Struct("=HHHH")
_SNDINFO: Final = struct.Struct("@HHIIi")
_RCVINFO: Final = struct.Struct("@HHHIIIIi")
_RCVINFO_HEAD: Final = struct.Struct("@HHHI")  # rcv_sid, rcv_ssn, rcv_flags, rcv_ppid
_EVENT: Final = struct.Struct("@iHBx")
_ASSOC_VALUE: Final = struct.Struct("=iI")  # struct sctp_assoc_value
# struct sctp_rtoinfo: assoc id, then initial, MAX, min (milliseconds), in that order.
_RTOINFO: Final = struct.Struct("=iIII")
# struct sctp_assocparams: assoc id, asocmaxrxt, peer destinations, peer rwnd, local
# rwnd, cookie life.
_ASSOCPARAMS: Final = struct.Struct("=iHHIII")
# struct sctp_paddrparams, packed (aligned to 4: 156 bytes): assoc id, sockaddr_storage,
# hbinterval (ms), pathmaxrxt, pathmtu, sackdelay, flags, ipv6 flowlabel, dscp.
_PADDRPARAMS: Final = struct.Struct("=i128sIHIIIIBx")
_SPP_HB_ENABLE: Final = 1
_RESET_STREAMS: Final = struct.Struct("=iHHH")  # struct sctp_reset_streams, one stream
_AUTHKEY: Final = struct.Struct("=iHH")  # struct sctp_authkey, the key bytes follow
#: struct sctp_authkeyid: assoc id, key number, two bytes of padding (6 bytes: EINVAL).
_AUTHKEYID: Final = struct.Struct("=iHxx")
_AUTHCHUNKS: Final = struct.Struct("=iI")  # struct sctp_authchunks, the types follow
_HMACALGO: Final = struct.Struct("=I")  # struct sctp_hmacalgo, the 16-bit ids follow
_STREAM_RESET_EVENT_LIST: Final = 12  # stream ids (host order) after type/flags/length/id
_STATUS: Final = struct.Struct("=iiIHHHHI")
_STATUS_SIZE: Final = 176
_NOTIFICATION_HEADER: Final = struct.Struct("=HHI")
# sctp_assoc_change after the header: state, error, outbound, inbound, assoc id; info.
_ASSOC_CHANGE: Final = struct.Struct("=HHHHi")
_ASSOC_CHANGE_INFO: Final = 20
# sctp_paddr_change: sockaddr_storage at 8, then state, error, assoc id at 136.
_PADDR_CHANGE_ADDRESS: Final = 8
_PADDR_CHANGE_TAIL: Final = struct.Struct("=iii")
_PADDR_CHANGE_TAIL_OFFSET: Final = 136
# sctp_send_failed_event: error, sctp_sndinfo (sid, flags, ppid, ...) ; data at 32.
_SEND_FAILED_EVENT: Final = struct.Struct("=IHHI")
_SEND_FAILED_EVENT_DATA: Final = 32
# sctp_send_failed: error, sctp_sndrcvinfo (sid, ssn, flags, pad, ppid, ...); data at 48.
_SEND_FAILED: Final = struct.Struct("=IHHHxxI")
_SEND_FAILED_DATA: Final = 48
# sctp_remote_error: cause (network order) at 8, data at 16.
_REMOTE_ERROR_DATA: Final = 16
_SOCKADDR_IN_SIZE: Final = 16
_SOCKADDR_IN6_SIZE: Final = 28
_ADDRS_HEADER: Final = struct.Struct("=iI")

#: Bytes asked of one ``recvmsg`` call. A TLS record (at most 18,437 bytes) and any
#: message up to 64 KiB arrive in one call; larger ones are reassembled from pieces.
#: It is allocated once per association.
RECEIVE_BUFFER_SIZE: Final = 64 * 1024

#: Room for one SCTP_RCVINFO control message.
_ANCILLARY_SIZE: Final = socket.CMSG_SPACE(_RCVINFO.size)

#: Seconds :meth:`KernelTransport.aclose` waits for SHUTDOWN to complete (the peer must
#: first acknowledge everything we queued) before it aborts the association instead.
GRACEFUL_CLOSE_TIMEOUT: Final = 10.0

#: Back-off bounds (seconds) of :meth:`KernelTransport.reset_outgoing_stream` while Linux
#: says "not now": a stream reset waits for the stream's queued messages to be sent.
RESET_RETRY_MIN: Final = 0.005
RESET_RETRY_MAX: Final = 0.2

#: RFC 9260 section 3.3.10 cause codes, for error messages.
_CAUSES: Final = {
    1: "invalid stream identifier",
    2: "missing mandatory parameter",
    3: "stale cookie",
    4: "out of resource",
    5: "unresolvable address",
    6: "unrecognized chunk type",
    7: "invalid mandatory parameter",
    8: "unrecognized parameters",
    9: "no user data",
    10: "cookie received while shutting down",
    11: "restart with new addresses",
    12: "user-initiated abort",
    13: "protocol violation",
}

# Errors from accept() that concern one incoming association, not the listener.
_IGNORED_ACCEPT_ERRORS: Final = frozenset(
    {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM}
)


# --- Creating sockets and addressing them ----------------------------------------------


def _sctp_socket(family: int) -> socket.socket:
    """Create a non-blocking one-to-one SCTP socket, or explain why there is none."""
    if not sys.platform.startswith("linux"):
        raise SCTPNotSupportedError(
            errno.EPROTONOSUPPORT,
            f"kernel SCTP transport is implemented for Linux only, not {sys.platform}",
        )
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
            raise SCTPNotSupportedError(
                exc.errno,
                "this kernel has no SCTP support: socket(SOCK_STREAM, IPPROTO_SCTP) failed "
                f"({exc.strerror}); load the 'sctp' kernel module or use another transport",
            ) from exc
        raise
    sock.setblocking(False)
    return sock


def _configure(
    sock: socket.socket,
    outbound_streams: int,
    max_inbound_streams: int,
    timers: Timers | None = None,
) -> None:
    """Options set before connect or listen (accepted sockets inherit them)."""
    timers = timers or Timers()
    # Max.Init.Retransmits is sinit_max_attempts (Linux retransmits INIT that many
    # times, as RFC 9260 counts); T1-init backs off up to sinit_max_init_timeo, which
    # follows RTO.Max as the udp transport's T1 does. 0 keeps the system's value.
    sock.setsockopt(
        IPPROTO_SCTP,
        _SCTP_INITMSG,
        _INITMSG.pack(
            outbound_streams,
            max_inbound_streams,
            timers.max_init_retransmissions or 0,
            _ms(timers.rto_max) if timers.rto_max is not None else 0,
        ),
    )
    _apply_timers(sock, timers)
    _configure_io(sock)
    for kind in (_SCTP_ASSOC_CHANGE, _SCTP_PEER_ADDR_CHANGE, _SCTP_REMOTE_ERROR):
        _subscribe(sock, kind)
    _subscribe(sock, _SCTP_SHUTDOWN_EVENT)
    try:
        _subscribe(sock, _SCTP_SEND_FAILED_EVENT)
    except OSError as exc:  # kernels before 5.5 only have the RFC 6458 deprecated one
        if exc.errno != errno.EINVAL:
            raise
        _subscribe(sock, _SCTP_SEND_FAILED)
    # Offer stream reconfiguration (off by default: net.sctp.reconf_enable) and accept
    # the peer's outgoing-stream resets. Without it, reset_outgoing_stream() says False.
    try:
        sock.setsockopt(IPPROTO_SCTP, _SCTP_RECONFIG_SUPPORTED, _ASSOC_VALUE.pack(0, 1))
        sock.setsockopt(
            IPPROTO_SCTP,
            _SCTP_ENABLE_STREAM_RESET,
            _ASSOC_VALUE.pack(0, _SCTP_ENABLE_RESET_STREAM_REQ),
        )
        _subscribe(sock, _SCTP_STREAM_RESET_EVENT)
    except OSError as exc:  # kernels before 4.11
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            raise


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _apply_timers(sock: socket.socket, timers: Timers) -> None:
    """The liveness knobs as socket defaults (``SCTP_FUTURE_ASSOC``): the association
    made by connect, or by the listener for each peer, copies them."""
    if (timers.rto_min, timers.rto_initial, timers.rto_max) != (None, None, None):
        _id, initial, high, low = _RTOINFO.unpack(
            _Libc.getsockopt(sock.fileno(), IPPROTO_SCTP, _SCTP_RTOINFO, bytes(16), 16)
        )
        rtos = clamped_rtos(timers, low / 1000, initial / 1000, high / 1000)
        low, initial, high = (_ms(value) for value in rtos)
        sock.setsockopt(IPPROTO_SCTP, _SCTP_RTOINFO, _RTOINFO.pack(0, initial, high, low))
    if timers.max_retransmissions is not None:
        # Zeros leave the other fields alone.
        sock.setsockopt(
            IPPROTO_SCTP,
            _SCTP_ASSOCINFO,
            _ASSOCPARAMS.pack(0, timers.max_retransmissions, 0, 0, 0, 0),
        )
    if timers.heartbeat_interval is not None or timers.max_retransmissions is not None:
        # One path (or several, each counted on its own): a path is given up after
        # the same count as the association, so with one path they end together.
        sock.setsockopt(
            IPPROTO_SCTP,
            _SCTP_PEER_ADDR_PARAMS,
            _PADDRPARAMS.pack(
                0,
                b"",
                _ms(timers.heartbeat_interval) if timers.heartbeat_interval is not None else 0,
                timers.max_retransmissions or 0,
                0,
                0,
                _SPP_HB_ENABLE,
                0,
                0,
            ),
        )


def read_timers(fd: int) -> Timers:
    """The liveness settings in force on the SCTP socket ``fd``: its association's once connected
    (or accepted), else the socket's defaults for the next one. ``max_init_retransmissions``
    is the socket's (Linux does not report an association's)."""
    _id, initial, high, low = _RTOINFO.unpack(
        _Libc.getsockopt(fd, IPPROTO_SCTP, _SCTP_RTOINFO, bytes(16), 16)
    )
    assocparams = _Libc.getsockopt(fd, IPPROTO_SCTP, _SCTP_ASSOCINFO, bytes(20), 20)
    paddr = _Libc.getsockopt(
        fd, IPPROTO_SCTP, _SCTP_PEER_ADDR_PARAMS, bytes(_PADDRPARAMS.size), _PADDRPARAMS.size
    )
    initmsg = _Libc.getsockopt(fd, IPPROTO_SCTP, _SCTP_INITMSG, bytes(8), 8)
    hb_fields = _PADDRPARAMS.unpack(paddr)
    return Timers(
        heartbeat_interval=hb_fields[2] / 1000 if hb_fields[6] & _SPP_HB_ENABLE else None,
        rto_initial=initial / 1000,
        rto_min=low / 1000,
        rto_max=high / 1000,
        max_retransmissions=_ASSOCPARAMS.unpack(assocparams)[1],
        max_init_retransmissions=_INITMSG.unpack(initmsg)[2],
    )


def _configure_io(sock: socket.socket) -> None:
    """Per-socket I/O options (set again on accepted sockets, to be independent of what
    the kernel copies from the listener)."""
    sock.setsockopt(IPPROTO_SCTP, _SCTP_RECVRCVINFO, 1)
    # Like Trio's TCP_NODELAY: a message goes out when it is sent, not when a full packet
    # has gathered. Nagle made 100-byte messages ~2x slower in the VM measurement.
    sock.setsockopt(IPPROTO_SCTP, _SCTP_NODELAY, 1)


def _subscribe(sock: socket.socket, kind: int) -> None:
    # struct sctp_event; the association id is ignored on one-to-one sockets.
    sock.setsockopt(IPPROTO_SCTP, _SCTP_EVENT, _EVENT.pack(0, kind, 1))


def _hosts_list(hosts: str | Sequence[str], what: str) -> list[str]:
    result = [hosts] if isinstance(hosts, str) else list(hosts)
    if not result:
        raise ValueError(f"{what}: at least one address is needed")
    return result


async def _resolve(host: str, port: int, *, passive: bool = False) -> list[tuple[int, str, int]]:
    """All (family, address, scope id) a name stands for, in resolver order."""
    infos = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE if passive else 0
    )
    seen: list[tuple[int, str, int]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0]).partition("%")[0]
        scope = int(sockaddr[-1]) if family == socket.AF_INET6 else 0
        entry = (int(family), address, scope)
        if entry not in seen:
            seen.append(entry)
    if not seen:
        raise OSError(errno.EADDRNOTAVAIL, f"{host!r} has no IPv4 or IPv6 address")
    return seen


def _pack_sockaddr(family: int, address: str, port: int, scope: int = 0) -> bytes:
    """A struct sockaddr_in or sockaddr_in6, as sctp_bindx/sctp_connectx take them."""
    if family == socket.AF_INET:
        return (
            struct.pack("=H", socket.AF_INET)
            + struct.pack("!H", port)
            + socket.inet_pton(socket.AF_INET, address)
            + bytes(8)
        )
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, address)
        + struct.pack("=I", scope)
    )


def _unpack_sockaddr(data: bytes | memoryview, offset: int) -> tuple[tuple[str, int], int]:
    """Parse one sockaddr at ``offset``: ((host, port), its size). IPv4-mapped IPv6
    addresses come back as plain IPv4."""
    (family,) = struct.unpack_from("=H", data, offset)
    (port,) = struct.unpack_from("!H", data, offset + 2)
    if family == socket.AF_INET:
        raw = bytes(data[offset + 4 : offset + 8])
        return (socket.inet_ntop(socket.AF_INET, raw), port), _SOCKADDR_IN_SIZE
    if family == socket.AF_INET6:
        address = ipaddress.IPv6Address(bytes(data[offset + 8 : offset + 24]))
        mapped = address.ipv4_mapped
        host = str(mapped) if mapped is not None else str(address)
        return (host, port), _SOCKADDR_IN6_SIZE
    raise ValueError(f"unexpected address family {family}")


class _Libc:
    """``getsockopt`` with a caller-initialised buffer (see the module docstring)."""

    _getsockopt: ctypes._NamedFuncPointer | None = None

    @classmethod
    def getsockopt(cls, fd: int, level: int, option: int, data: bytes, size: int) -> bytes:
        if cls._getsockopt is None:
            function = ctypes.CDLL(None, use_errno=True).getsockopt
            function.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_uint32),
            ]
            function.restype = ctypes.c_int
            cls._getsockopt = function
        buffer = ctypes.create_string_buffer(data, size)
        length = ctypes.c_uint32(size)
        if cls._getsockopt(fd, level, option, buffer, ctypes.byref(length)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return buffer.raw


def _association_addresses(
    sock: socket.socket, option: int, assoc_id: int
) -> list[tuple[str, int]]:
    """The addresses of this socket's association (struct sctp_getaddrs)."""
    size = 4096
    while True:
        try:
            raw = _Libc.getsockopt(
                sock.fileno(), IPPROTO_SCTP, option, _ADDRS_HEADER.pack(assoc_id, 0), size
            )
            break
        except OSError as exc:
            if exc.errno != errno.ENOMEM or size >= 1 << 20:
                raise
            size *= 4
    _assoc, count = _ADDRS_HEADER.unpack_from(raw)
    result: list[tuple[str, int]] = []
    offset = _ADDRS_HEADER.size
    for _ in range(count):
        address, length = _unpack_sockaddr(raw, offset)
        result.append(address)
        offset += length
    return result


def _check_stream_counts(outbound_streams: int, max_inbound_streams: int) -> None:
    for name, value in (
        ("outbound_streams", outbound_streams),
        ("max_inbound_streams", max_inbound_streams),
    ):
        if not 1 <= value <= 0xFFFF:
            raise ValueError(f"{name} must be between 1 and 65535, not {value}")


def _check_max_message_size(max_message_size: int) -> None:
    if max_message_size < MIN_MAX_MESSAGE_SIZE:
        raise ValueError(
            f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE} bytes "
            f"(RFC 3436 section 3.2), not {max_message_size}"
        )


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")


def _cause_text(cause: int) -> str:
    name = _CAUSES.get(cause)
    return f"cause {cause}: {name}" if name else f"cause {cause}"


def _parse_rcvinfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[int, int, bool]:
    """(stream, ppid, unordered) from the SCTP_RCVINFO control message."""
    for level, kind, data in ancillary:
        if level == IPPROTO_SCTP and kind == _SCTP_RCVINFO and len(data) >= _RCVINFO.size:
            stream, _ssn, flags, ppid = _RCVINFO_HEAD.unpack_from(data)
            return stream, socket.ntohl(ppid), bool(flags & _SCTP_UNORDERED)
    return 0, 0, False


def _parse_event(data: bytes) -> Event | None:
    """The :class:`Event` for a peer address change, send failure or remote error
    notification (``None`` for anything else)."""
    kind, _flags, _length = _NOTIFICATION_HEADER.unpack_from(data)
    if kind == _SCTP_PEER_ADDR_CHANGE:
        address, _size = _unpack_sockaddr(data, _PADDR_CHANGE_ADDRESS)
        state, error, _assoc = _PADDR_CHANGE_TAIL.unpack_from(data, _PADDR_CHANGE_TAIL_OFFSET)
        try:
            address_state = PeerAddressState(state)
        except ValueError:
            return None
        return PeerAddressChange(address, address_state, error)
    if kind == _SCTP_SEND_FAILED_EVENT:
        error, stream, _sflags, ppid = _SEND_FAILED_EVENT.unpack_from(
            data, _NOTIFICATION_HEADER.size
        )
        payload = data[_SEND_FAILED_EVENT_DATA:]
    elif kind == _SCTP_SEND_FAILED:
        error, stream, _ssn, _sflags, ppid = _SEND_FAILED.unpack_from(
            data, _NOTIFICATION_HEADER.size
        )
        payload = data[_SEND_FAILED_DATA:]
    elif kind == _SCTP_REMOTE_ERROR:
        (cause,) = struct.unpack_from("!H", data, _NOTIFICATION_HEADER.size)
        return RemoteError(cause, data[_REMOTE_ERROR_DATA:])
    else:
        return None
    # Linux stores the cause code of the ABORT that failed the message, in network order.
    return SendFailed(stream, socket.ntohl(ppid), payload, socket.ntohs(error & 0xFFFF))


def sctp_status(sock: socket.socket) -> tuple[int, int, int, int]:
    """``(association id, DATA chunks unacknowledged, inbound streams, outbound
    streams)`` of a one-to-one socket's association (``SCTP_STATUS``).

    Raises:
        OSError: the socket has no association (any more).
    """
    raw = sock.getsockopt(IPPROTO_SCTP, _SCTP_STATUS, _STATUS_SIZE)
    assoc_id, _state, _rwnd, unacked, _pending, inbound, outbound, _frag = _STATUS.unpack_from(raw)
    return assoc_id, unacked, inbound, outbound
