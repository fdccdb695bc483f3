"""trio-sctls: TLS over multi-stream SCTP (RFC 3436) on Trio.

One SCTP association, many independent ordered streams, one TLS connection per
bidirectional stream; each channel is an ordinary :class:`trio.SSLStream`.

Clients: :func:`open_association` (TLS channels) and :func:`open_sctp_association`
(plain SCTP). Servers: :func:`serve` and :func:`serve_sctp`, built on
:func:`open_secure_listener` / :func:`open_listener` and :func:`serve_listeners`.
Options: :class:`TransportOptions`, :class:`AssociationOptions` and, for servers,
:class:`ServerOptions`. Tools for tests:
:mod:`trio_sctls.testing`.
"""

from ._api import kernel_sctp_available as kernel_sctp_available
from ._api import open_association as open_association
from ._api import open_listener as open_listener
from ._api import open_sctp_association as open_sctp_association
from ._api import open_secure_listener as open_secure_listener
from ._api import open_transport as open_transport
from ._api import serve as serve
from ._api import serve_sctp as serve_sctp
from ._association import AssociationStatistics as AssociationStatistics
from ._association import Channel as Channel
from ._association import ChannelInfo as ChannelInfo
from ._association import SecureAssociation as SecureAssociation
from ._association import run_association as run_association
from ._association import wrap_transport as wrap_transport
from ._errors import AssociationAbortedError as AssociationAbortedError
from ._errors import AssociationError as AssociationError
from ._errors import AssociationLostError as AssociationLostError
from ._errors import AuthNotSupportedError as AuthNotSupportedError
from ._errors import BufferLimitError as BufferLimitError
from ._errors import HandshakeError as HandshakeError
from ._errors import PeerIdentityError as PeerIdentityError
from ._errors import PeerShutdownError as PeerShutdownError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import SCTLSError as SCTLSError
from ._errors import SCTPNotSupportedError as SCTPNotSupportedError
from ._errors import SendFailedError as SendFailedError
from ._listeners import SecureListener as SecureListener
from ._listeners import serve_listeners as serve_listeners
from ._options import AssociationOptions as AssociationOptions
from ._options import ServerOptions as ServerOptions
from ._options import TransportOptions as TransportOptions
from ._options import default_session_cache as default_session_cache
from ._tls import SessionCache as SessionCache
from .transport import Message as Message
from .transport import MessageListener as MessageListener
from .transport import MessageTransport as MessageTransport

__version__ = "0.1.0"
