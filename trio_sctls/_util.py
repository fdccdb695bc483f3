"""Small helpers shared by the modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .transport import MessageTransport


def single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (however deeply nested), or ``None``."""
    exceptions = group.exceptions
    while len(exceptions) == 1:
        only = exceptions[0]
        if not isinstance(only, BaseExceptionGroup):
            return only
        exceptions = only.exceptions
    return None


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Let a nursery owned by a context manager raise its one exception bare.

    The background tasks of an association never raise (their failures are the
    association's state), so an exception group holding a single exception came from
    the caller's own code, and users should see it as they raised it.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


class _Closable(Protocol):
    async def aclose(self) -> None: ...

    def abort(self, reason: str = "") -> None: ...


_C = TypeVar("_C", bound=_Closable)


@asynccontextmanager
async def closed_or_aborted(resource: _C) -> AsyncIterator[_C]:
    """Yield ``resource``; close it gracefully when the block ends normally, abort it
    when the block raises (or is cancelled), and let the exception through."""
    try:
        yield resource
    except BaseException:
        resource.abort()
        raise
    else:
        await resource.aclose()


class OverTransport:
    """Base of the secure associations (TLS and DTLS) layered over one SCTP
    association: securing a message changes none of its streams, so the stream counts
    are those the transport negotiated."""

    def __init__(self, transport: MessageTransport) -> None:
        #: The SCTP association underneath.
        self.transport = transport

    @property
    def outbound_streams(self) -> int:
        """Streams we may send on (negotiated)."""
        return self.transport.outbound_streams

    @property
    def inbound_streams(self) -> int:
        """Streams the peer may send on (negotiated)."""
        return self.transport.inbound_streams
