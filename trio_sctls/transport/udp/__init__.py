"""SCTP carried in UDP datagrams (RFC 6951): the Trio driver of the sans-IO core.

``_socket`` shares UDP sockets between SCTP endpoints and pumps them, ``_transport`` is one
association as a :class:`~trio_sctls.transport.MessageTransport`, ``_listener`` accepts
and opens associations.
"""

from ._listener import DEFAULT_UDP_PORT as DEFAULT_UDP_PORT
from ._listener import UDPListener as UDPListener
from ._listener import open_client as open_client
from ._listener import open_server as open_server
from ._listener import open_udp_listener as open_udp_listener
from ._listener import open_udp_transport as open_udp_transport
from ._socket import DEFAULT_BACKLOG as DEFAULT_BACKLOG
from ._socket import DEFAULT_MTU as DEFAULT_MTU
from ._socket import GRACEFUL_CLOSE_TIMEOUT as GRACEFUL_CLOSE_TIMEOUT
from ._socket import LOOPBACK_MTU as LOOPBACK_MTU
from ._socket import LOOPBACK_RTO_INITIAL as LOOPBACK_RTO_INITIAL
from ._socket import LOOPBACK_RTO_MIN as LOOPBACK_RTO_MIN
from ._socket import MAX_BURST as MAX_BURST
from ._socket import RECEIVE_BUFFER as RECEIVE_BUFFER
from ._socket import SEND_BUFFER as SEND_BUFFER
from ._socket import SOCKET_BUFFER as SOCKET_BUFFER
from ._socket import _UDPSocket as _UDPSocket
from ._transport import UDPTransport as UDPTransport

__all__ = [
    "DEFAULT_UDP_PORT",
    "UDPListener",
    "UDPTransport",
    "open_client",
    "open_server",
    "open_udp_listener",
    "open_udp_transport",
]
