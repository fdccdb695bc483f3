"""Which failures the command line reports in one line, and how it words them.

A failure the network or the peer can cause (a refused or lost association, a failed
handshake, a port in use, an unreadable certificate, a bad option value) is expected:
the command prints one line naming it, without a traceback, and exits with status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import trio


class ConnectTimeoutError(trio.TooSlowError):
    """No association within ``--connect-timeout`` seconds."""


#: Exceptions that mean "the peer, the network or the user's input", not a bug here.
EXPECTED = (OSError, trio.BrokenResourceError, trio.TooSlowError, ValueError)

#: Hints for the client's usual mistakes, added to the failures they cause.
_HINTS = {
    "Hostname mismatch": "the certificate is for another name: pass --server-name NAME",
    "IP address mismatch": "the certificate is for a name, not this address: "
    "pass --server-name NAME",
    "unable to get local issuer certificate": "the server's CA is not trusted: "
    "pass --cafile CA.pem",
    "self-signed certificate": "the server's CA is not trusted: pass --cafile CA.pem",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the server wants a client certificate: "
    "pass --cert and --key",
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


def _describe_one(exc: BaseException, hints: bool) -> str:
    # trio.SSLStream raises a bare BrokenResourceError from the ssl error: say that.
    while not str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        # "[Errno 111] ..." says nothing a reader needs; the file name does.
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    for needle, hint in _HINTS.items() if hints else ():
        if needle in text:
            return f"{text} ({hint})"
    return text


def describe_error(exc: BaseException, *, hints: bool = False) -> str:
    """One line for ``exc``: its message, or its leaves' messages joined, each once (a
    message contained in another, as an ssl error in the one naming its stream, is
    dropped). With ``hints``, a client's usual mistakes get a hint at the option that
    fixes them."""
    texts = list(dict.fromkeys(_describe_one(leaf, hints) for leaf in leaves(exc)))
    kept = [text for text in texts if not any(text in other for other in texts if other != text)]
    return "; ".join(kept)
