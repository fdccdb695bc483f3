"""Which failures the command line reports in one line, and how it words them.

A failure the network or the peer can cause (a refused or lost association, a failed
handshake, a port in use, an unreadable certificate, a bad option value) is expected:
the command prints one line naming it, without a traceback, and exits with status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import ssl

import trio


class ConnectTimeoutError(trio.TooSlowError):
    """No association within ``--connect-timeout`` seconds."""


#: Exceptions that mean "the peer, the network or the user's input", not a bug here.
EXPECTED = (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError)

#: Hints added to TLS verification failures that have a usual cause.
_HINTS = {
    "Hostname mismatch": "the certificate is for another name: pass --server-name NAME",
    "IP address mismatch": "the certificate is for a name, not this address: "
    "pass --server-name NAME",
    "unable to get local issuer certificate": "the server's CA is not trusted: "
    "pass --cafile CA.pem",
    "self-signed certificate": "the server's CA is not trusted: pass --cafile CA.pem",
}


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` and its nested groups (``exc`` itself if it is no
    group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def is_expected(exc: BaseException) -> bool:
    """Whether every leaf of ``exc`` is a failure to report in one line."""
    return all(isinstance(leaf, EXPECTED) for leaf in leaves(exc))


def _describe_one(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    causes = [exc.__cause__] if exc.__cause__ is not None else []
    for cause in [exc, *causes]:
        if isinstance(cause, ssl.SSLCertVerificationError):
            for needle, hint in _HINTS.items():
                if needle in str(cause.verify_message):
                    return f"{text} ({hint})"
    return text


def describe_error(exc: BaseException) -> str:
    """One line for ``exc``: its message, or its leaves' messages joined (each once)."""
    return "; ".join(dict.fromkeys(_describe_one(leaf) for leaf in leaves(exc)))
