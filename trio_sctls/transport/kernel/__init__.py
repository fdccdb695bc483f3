"""Linux kernel SCTP as a :class:`~trio_sctls.transport.MessageTransport`.

``_transport`` is one association on a one-to-one socket, ``_listener`` connects and
listens; the socket API itself (constants, structs, options) is in
:mod:`trio_sctls.transport._linux`.
"""

from .._linux import GRACEFUL_CLOSE_TIMEOUT as GRACEFUL_CLOSE_TIMEOUT
from .._linux import read_timers as read_timers
from ._listener import SOCKET_BUFFER_SIZE as SOCKET_BUFFER_SIZE
from ._listener import KernelListener as KernelListener
from ._listener import connect_kernel as connect_kernel
from ._listener import listen_kernel as listen_kernel
from ._listener import open_client as open_client
from ._listener import open_server as open_server
from ._transport import KernelTransport as KernelTransport

__all__ = [
    "GRACEFUL_CLOSE_TIMEOUT",
    "KernelListener",
    "KernelTransport",
    "connect_kernel",
    "listen_kernel",
    "open_client",
    "open_server",
    "read_timers",
]
