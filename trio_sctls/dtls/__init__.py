"""DTLS over SCTP (RFC 6083): one DTLS 1.2 connection per SCTP association, messages on
any stream, SCTP-AUTH keyed from the DTLS exporter.

Where RFC 3436 (:func:`trio_sctls.open_association`) runs one TLS connection per
bidirectional stream and gives byte streams, DTLS over SCTP keeps SCTP's messages:
each message (at most 2**14 bytes) is one DTLS record, sent on the stream, with the
PPID and ordering the application chooses. It needs pyOpenSSL and service_identity:
``pip install trio-sctls[dtls]``.

Clients: :func:`open_dtls_association`. Servers: :func:`serve_dtls`, built on
:func:`open_dtls_listener`. Contexts: :func:`create_dtls_context` or any pyOpenSSL
``SSL.Context(SSL.DTLS_METHOD)``. The sans-IO core: :class:`DTLSEngine`.
"""

try:
    import OpenSSL.SSL  # noqa: F401
    import service_identity  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "DTLS over SCTP needs pyOpenSSL and service_identity: pip install trio-sctls[dtls]"
    ) from exc

from ._api import DTLSHandler as DTLSHandler
from ._api import DTLSListener as DTLSListener
from ._api import open_dtls_association as open_dtls_association
from ._api import open_dtls_listener as open_dtls_listener
from ._api import serve_dtls as serve_dtls
from ._association import DTLSAssociation as DTLSAssociation
from ._context import create_dtls_context as create_dtls_context
from ._engine import DTLSEngine as DTLSEngine
from ._engine import OutgoingRecord as OutgoingRecord
from ._keys import EXPORTER_LABEL as EXPORTER_LABEL
from ._options import DTLSOptions as DTLSOptions
from ._records import MAX_PLAINTEXT as MAX_PLAINTEXT
