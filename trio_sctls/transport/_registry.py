"""The transports by name: one table instead of an if/else chain per entry point.

Each transport module (``memory``, ``udp``, ``kernel``) exposes two async context managers
with the same signature, :data:`OpenClient` and :data:`OpenServer`; this module picks the
module by :attr:`TransportOptions.transport <trio_sctls.TransportOptions.transport>` and
imports it only when it is used (the kernel transport needs Linux's socket API, and a
program on udp should not pay for importing it).
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol, cast

from ._base import MessageListener, MessageTransport

if TYPE_CHECKING:
    from .._options import TransportName, TransportOptions

ConcreteName = Literal["kernel", "udp", "memory"]


class OpenClient(Protocol):
    """``open_client(hosts, port, options)``: yields the established association; on
    exit aborts whatever is still open."""

    def __call__(
        self, hosts: tuple[str, ...] | None, port: int, options: TransportOptions
    ) -> AbstractAsyncContextManager[MessageTransport]: ...


class OpenServer(Protocol):
    """``open_server(port, hosts, options)``: yields the listener; on exit closes it (and,
    where associations share its resources, as on udp, aborts those it accepted)."""

    def __call__(
        self, port: int, hosts: tuple[str, ...] | None, options: TransportOptions
    ) -> AbstractAsyncContextManager[MessageListener]: ...


#: Transport name -> the module (relative to this package) implementing it.
TRANSPORTS: dict[ConcreteName, str] = {
    "memory": ".memory",
    "udp": ".udp",
    "kernel": ".kernel",
}


def kernel_sctp_available() -> bool:
    """Whether this kernel can create SCTP sockets (Linux with the ``sctp`` module)."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except (OSError, AttributeError):
        return False
    sock.close()
    return True


def resolve(name: TransportName) -> ConcreteName:
    """The transport ``name`` stands for here: ``"auto"`` is kernel SCTP where the kernel
    has it, otherwise our own SCTP over UDP (RFC 6951), which talks to any SCTP-over-UDP
    peer, Linux's included.

    Raises:
        ValueError: an unknown name.
    """
    if name == "auto":
        return "kernel" if kernel_sctp_available() else "udp"
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; use 'auto', 'kernel', 'udp' or 'memory'")
    return name


def _module(name: TransportName) -> ModuleType:
    return importlib.import_module(TRANSPORTS[resolve(name)], __package__)


@asynccontextmanager
async def open_client(
    hosts: tuple[str, ...] | None, port: int, options: TransportOptions
) -> AsyncIterator[MessageTransport]:
    """Establish an association on ``options.transport`` and yield it; whatever is still
    open on exit is aborted (close it with ``aclose()`` inside the block to end it
    gracefully).

    Args:
        hosts: the peer's address(es); ``None`` is 127.0.0.1 (the memory transport
            ignores them).
        port: the peer's SCTP port.
        options: the transport and how to set the association up.

    Raises:
        OSError: the association could not be established (``ConnectionRefusedError``,
            ``TimeoutError``, :class:`~trio_sctls.SCTPNotSupportedError`...).
    """
    opener = cast(OpenClient, _module(options.transport).open_client)
    async with opener(hosts, port, options) as transport:
        yield transport


@asynccontextmanager
async def open_server(
    port: int, hosts: tuple[str, ...] | None, options: TransportOptions
) -> AsyncIterator[MessageListener]:
    """Listen on ``options.transport`` and yield the listener; it is closed on exit.

    Args:
        port: our SCTP port; 0 picks a free one (see the listener's ``port``).
        hosts: local address(es) to bind; ``None``: every address.
        options: the transport and how to set associations up.

    Raises:
        OSError: the port could not be bound.
    """
    opener = cast(OpenServer, _module(options.transport).open_server)
    async with opener(port, hosts, options) as listener:
        yield listener


__all__ = ["kernel_sctp_available", "open_client", "open_server", "resolve"]
