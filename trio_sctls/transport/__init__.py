"""Transports: the SCTP association below the TLS layer.

:class:`MessageTransport` is the interface; ``memory`` (an in-process pair), ``kernel``
(Linux kernel SCTP) and ``udp`` (our own SCTP over UDP, RFC 6951) implement it, and
``_registry`` opens any of them by name.
"""

from ._auth import AuthKeys as AuthKeys
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE,
)
from ._base import (
    MIN_MAX_MESSAGE_SIZE as MIN_MAX_MESSAGE_SIZE,
)
from ._base import (
    AssociationChange as AssociationChange,
)
from ._base import (
    AssociationState as AssociationState,
)
from ._base import (
    Event as Event,
)
from ._base import (
    Message as Message,
)
from ._base import (
    MessageListener as MessageListener,
)
from ._base import (
    MessageTransport as MessageTransport,
)
from ._base import (
    PeerAddressChange as PeerAddressChange,
)
from ._base import (
    PeerAddressState as PeerAddressState,
)
from ._base import (
    Received as Received,
)
from ._base import (
    RemoteError as RemoteError,
)
from ._base import (
    SendFailed as SendFailed,
)
from ._base import (
    ShutdownReceived as ShutdownReceived,
)
from ._base import (
    StreamReset as StreamReset,
)
from ._base import (
    TransportState as TransportState,
)
from ._setup import (
    Timers as Timers,
)
