"""``trio-sctls serve`` and ``trio-sctls connect``: TLS over SCTP with real peers, in the
spirit of ``openssl s_server`` and ``s_client``.

Two modes, on either side. ``echo`` (serve's default) sends back whatever arrives on
each channel. ``lines`` (connect's default) reads standard input line by line and sends
each line on a stream: the one given by ``--stream`` (default 0), or the one the line
names with a prefix: ``3: hello`` sends ``hello`` and a newline on stream 3. A prefix is
decimal digits, a colon and an optional space, and is stripped once, so text that
itself starts with ``N:`` goes out as ``0: 3: not a prefix``; ``--no-prefix`` sends
every line as it is. Whatever arrives on any channel is printed on stdout line by line
as ``[stream 3] hello`` (the server adds the association's number: ``[#2 stream 3]``),
unless ``--quiet``. Status lines and errors go to stderr, so stdout carries only data.

The server in line mode sends each line to every association open at the time; each
association has its own queue and sending task, so a client whose channel is still
waiting for its handshake (``--handshake lazy``) holds up nobody else.

Standard input. A pipe, socket or terminal is read through
:class:`trio.lowlevel.FdStream` on a duplicate of fd 0: no thread, and cancellable, so
the program ends as soon as the association does, even while nobody types
(:func:`trio.wrap_file` reads in a worker thread, which a cancellation has to wait for:
until the user presses Enter). FdStream makes the open file non-blocking (trio restores
the flag when it closes), which a terminal shares with stdout; what we print are short
lines. epoll cannot wait on a regular file or ``/dev/null``, which never block anyway:
those are read through :func:`trio.wrap_file` (in trio's worker thread, one short read
at a time).
"""

from __future__ import annotations

import errno
import math
import os
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import trio

from .. import (
    AssociationOptions,
    SecureAssociation,
    SecureListener,
    TransportOptions,
    open_association,
    serve,
)
from .errors import ConnectTimeoutError, describe_error

_Opened = TypeVar("_Opened")

Mode = Literal["echo", "lines"]

#: The longest partial line held back before it is printed anyway (binary data or a
#: peer that never sends a newline must not grow memory without bound).
MAX_PENDING_LINE = 4096
#: Lines queued for one association (server line mode) before new ones are dropped.
SEND_QUEUE_LINES = 256
#: How much of standard input one read takes.
STDIN_READ_SIZE = 65536


def status(text: str) -> None:
    """A status line, on stderr."""
    print(f"trio-sctls: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LineMode:
    """How stdin lines become messages.

    Attributes:
        stream: the stream a line goes to when it names none.
        prefix: whether ``N:`` at the start of a line picks the stream.
        quiet: print nothing of what arrives.
    """

    stream: int = 0
    prefix: bool = True
    quiet: bool = False


def parse_line(line: bytes, mode: LineMode) -> tuple[int, bytes]:
    """``(stream, data)`` for one stdin line (with its newline, if it had one)."""
    if mode.prefix:
        head, colon, rest = line.partition(b":")
        if colon and head.strip().isdigit():
            return int(head), rest[1:] if rest.startswith(b" ") else rest
    return mode.stream, line


class LinePrinter:
    """Prints what arrives on one channel as whole lines, each labelled."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self._pending = b""

    def feed(self, data: bytes | bytearray) -> None:
        """Print every line ``data`` completes; hold the rest."""
        if self.quiet:
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self._print(line)
        if len(self._pending) > MAX_PENDING_LINE:
            self.flush()

    def flush(self) -> None:
        """Print what is held, if anything (at end of stream)."""
        if self._pending and not self.quiet:
            self._print(self._pending)
        self._pending = b""

    def _print(self, line: bytes) -> None:
        text = line.removesuffix(b"\r").decode("utf-8", "backslashreplace")
        print(f"[{self.label}] {text}", flush=True)


async def stdin_lines() -> AsyncIterator[bytes]:
    """Standard input, line by line (see the module docstring for how it is read)."""
    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(0):
        async with trio.lowlevel.FdStream(os.dup(0)) as stream:
            pending = b""
            while chunk := await stream.receive_some(STDIN_READ_SIZE):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    yield line + b"\n"
            if pending:
                yield pending
    else:
        # A regular file or a device like /dev/null: epoll refuses those, and reading
        # them never blocks for long.
        async with trio.wrap_file(os.fdopen(os.dup(0), "rb")) as file:
            while line := await file.readline():
                yield line


def _channel_count_note(association: SecureAssociation) -> str:
    count = len(association.channels)
    return f"{count} TLS channel{'s' if count != 1 else ''} (streams 0..{count - 1})"


async def send_line(association: SecureAssociation, stream: int, data: bytes, label: str) -> None:
    """Send one line on one channel; a stream out of range or a closed channel is
    reported and skipped. A broken association raises."""
    if not 0 <= stream < len(association.channels):
        status(f"{label}no stream {stream}: {_channel_count_note(association)}; line not sent")
        await trio.lowlevel.checkpoint()
        return
    try:
        await association.channels[stream].send_all(data)
    except trio.ClosedResourceError:
        status(f"{label}stream {stream} is closed; line not sent")


async def read_channel(
    channel: trio.SSLStream[trio.abc.Stream], printer: LinePrinter, *, echo: bool
) -> None:
    """Print (and with ``echo``, send back) what arrives on one channel until the peer
    closes it."""
    while data := await channel.receive_some():
        printer.feed(data)
        if echo:
            await channel.send_all(data)
    printer.flush()
    if echo:
        await channel.aclose()


def _peer(association: SecureAssociation) -> str:
    addresses = association.transport.peer_addresses
    return ", ".join(f"{host} port {port}" for host, port in addresses) or "?"


# -- serve --------------------------------------------------------------------------


class _Live:
    """The server's open associations, numbered in arrival order, each with the queue
    its line-mode sender reads."""

    def __init__(self) -> None:
        self._count = 0
        self.queues: dict[int, trio.MemorySendChannel[tuple[int, bytes]]] = {}

    def number(self) -> int:
        self._count += 1
        return self._count


async def _serve_one(
    live: _Live, mode: Mode, lines: LineMode, association: SecureAssociation
) -> None:
    number = live.number()
    status(f"#{number} association from {_peer(association)}: {_channel_count_note(association)}")
    send_queue, receive_queue = trio.open_memory_channel[tuple[int, bytes]](SEND_QUEUE_LINES)
    if mode == "lines":
        live.queues[number] = send_queue
    try:
        async with trio.open_nursery() as nursery:
            if mode == "lines":
                nursery.start_soon(_send_queued, association, receive_queue, f"#{number} ")
            async with trio.open_nursery() as readers:
                for stream, channel in enumerate(association.channels):
                    printer = LinePrinter(f"#{number} stream {stream}", quiet=lines.quiet)
                    readers.start_soon(partial(read_channel, channel, printer, echo=mode == "echo"))
            nursery.cancel_scope.cancel()
    except Exception as exc:
        # The peer's failure ends this association only: serve() contains it (and
        # logs it at INFO); a bug in this code propagates, as it should.
        status(f"#{number} ended: {describe_error(exc)}")
        raise
    finally:
        live.queues.pop(number, None)
        send_queue.close()
        receive_queue.close()
    status(f"#{number} closed by the peer")


async def _send_queued(
    association: SecureAssociation,
    queue: trio.MemoryReceiveChannel[tuple[int, bytes]],
    label: str,
) -> None:
    async for stream, data in queue:
        await send_line(association, stream, data, label)


async def _broadcast_stdin(live: _Live, lines: LineMode) -> None:
    async for line in stdin_lines():
        stream, data = parse_line(line, lines)
        if not live.queues:
            status("no association is open; line not sent")
        for number, queue in list(live.queues.items()):
            try:
                queue.send_nowait((stream, data))
            except trio.WouldBlock:
                status(f"#{number} is not keeping up; line dropped")
            except trio.ClosedResourceError:
                pass  # it ended in the meantime
        await trio.lowlevel.checkpoint()
    status("end of standard input; still serving (Ctrl-C stops)")


async def run_server(
    *,
    port: int,
    hosts: Sequence[str] | None,
    ssl_context: ssl.SSLContext,
    transport_options: TransportOptions,
    options: AssociationOptions,
    mode: Mode,
    lines: LineMode,
) -> None:
    """Serve until cancelled; the first status line says where it listens."""
    live = _Live()
    where = ", ".join(hosts) if hosts else "all addresses"
    async with trio.open_nursery() as nursery:
        try:
            listener: SecureListener = await nursery.start(
                partial(
                    serve,
                    partial(_serve_one, live, mode, lines),
                    port,
                    ssl_context=ssl_context,
                    host=hosts,
                    options=options,
                    transport_options=transport_options,
                )
            )
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            udp = transport_options.udp_port
            ports = f"SCTP port {port}" + (f", UDP port {udp}" if udp is not None else "")
            raise OSError(
                exc.errno,
                f"cannot listen on {where} ({ports}): {exc.strerror}; "
                "choose another with --port (or --udp-port: SCTP over UDP defaults to 9899)",
            ) from exc
        if listener.udp_port is not None:
            carried = f" over UDP port {listener.udp_port} (SCTP over UDP)"
        else:
            carried = " (kernel SCTP)"
        status(
            f"listening on SCTP port {listener.port}{carried} on {where}; {mode} mode; Ctrl-C stops"
        )
        if mode == "lines":
            nursery.start_soon(_broadcast_stdin, live, lines)


# -- connect ------------------------------------------------------------------------


async def _send_stdin(
    association: SecureAssociation,
    lines: LineMode,
    start_reader: Callable[[int], None],
) -> None:
    async for line in stdin_lines():
        stream, data = parse_line(line, lines)
        # Reading a channel starts its handshake; with the lazy strategy that waits
        # until we first send on it.
        start_reader(stream)
        await send_line(association, stream, data, "")


async def run_client(
    *,
    hosts: Sequence[str],
    port: int,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None,
    transport_options: TransportOptions,
    options: AssociationOptions,
    mode: Mode,
    lines: LineMode,
    connect_timeout: float,
    linger: float,
) -> None:
    """Connect, then echo or send stdin lines until stdin ends (and ``linger`` seconds
    more) or the peer closes every channel.

    Raises:
        ConnectTimeoutError: no association within ``connect_timeout`` seconds.
    """
    failure = (
        f"no association with {', '.join(hosts)} port {port} within {connect_timeout:g} s "
        "(nothing answered the SCTP INIT, or the TLS handshakes did not finish; "
        "see --connect-timeout)"
    )
    opening = open_association(
        list(hosts),
        port,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        options=options,
        transport_options=transport_options,
    )
    async with connected_within(opening, connect_timeout, failure) as association:
        await _talk(association, mode, lines, linger)


@asynccontextmanager
async def connected_within(
    opening: AbstractAsyncContextManager[_Opened], seconds: float, failure: str
) -> AsyncIterator[_Opened]:
    """Enter ``opening`` (an association being opened) within ``seconds`` and yield
    what it opens, with no deadline left on the session that follows: a connect timeout
    must not cut a long session short.

    Raises:
        ConnectTimeoutError: ``failure``, when it was not open in time.
    """
    with trio.CancelScope(deadline=trio.current_time() + seconds) as connecting:
        async with opening as opened:
            connecting.deadline = math.inf
            yield opened
    if connecting.cancelled_caught:
        raise ConnectTimeoutError(failure)


async def _talk(association: SecureAssociation, mode: Mode, lines: LineMode, linger: float) -> None:
    info = association.channel_info(0)
    described = f"{info.version}, {info.cipher}" if info.version else "handshakes on first use"
    status(
        f"connected to {_peer(association)} ({association.transport.kind}): "
        f"{_channel_count_note(association)}, {described}; {mode} mode"
    )
    reading: set[int] = set()
    open_readers = 0
    all_closed = trio.Event()

    async with trio.open_nursery() as nursery:

        async def reader(stream: int) -> None:
            nonlocal open_readers
            printer = LinePrinter(f"stream {stream}", quiet=lines.quiet)
            await read_channel(association.channels[stream], printer, echo=mode == "echo")
            open_readers -= 1
            if open_readers == 0 and len(reading) == len(association.channels):
                all_closed.set()

        def start_reader(stream: int) -> None:
            nonlocal open_readers
            if stream in reading or not 0 <= stream < len(association.channels):
                return
            reading.add(stream)
            open_readers += 1
            nursery.start_soon(reader, stream)

        if mode == "echo" or association.options.handshake != "lazy":
            for stream in range(len(association.channels)):
                start_reader(stream)

        async def until_all_closed() -> None:
            await all_closed.wait()
            status("the peer closed every channel")
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_all_closed)
        if mode == "lines":
            await _send_stdin(association, lines, start_reader)
            # What was just sent may still be answered: wait a little before closing.
            with trio.move_on_after(linger):
                await all_closed.wait()
            nursery.cancel_scope.cancel()
