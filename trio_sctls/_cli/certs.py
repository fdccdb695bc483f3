"""TLS contexts for the command line: from the user's files, or from the demo's.

The demo certificates are package data (``demo_certs/``, made by
``scripts/make-demo-certs``), so ``trio-sctls demo`` needs nothing beyond a plain
``pip install trio-sctls``. Their keys are public: they are for demos on loopback and
nothing else, which every file and every command that uses them says.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path

#: The name in the demo server certificate (``.test`` is reserved: RFC 2606).
DEMO_SERVER_NAME = "demo.trio-sctls.test"
#: What ``trio-sctls demo-certs DIR`` writes, in the order it lists them.
DEMO_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "README.txt")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def tls_version(text: str | None) -> ssl.TLSVersion | None:
    """``"1.2"`` or ``"1.3"`` as an :class:`ssl.TLSVersion`; ``None`` stays ``None``."""
    return None if text is None else _VERSIONS[text]


def _demo_file(name: str) -> resources.abc.Traversable:
    return resources.files(__package__ or "trio_sctls._cli") / "demo_certs" / name


@contextmanager
def _demo_paths(*names: str) -> Iterator[list[str]]:
    """Real file paths for demo files (``load_cert_chain`` takes only paths); from a
    zipped install, temporary copies for the duration of the block."""
    with ExitStack() as stack:
        yield [str(stack.enter_context(resources.as_file(_demo_file(name)))) for name in names]


def write_demo_certs(directory: Path) -> list[Path]:
    """Copy the demo CA, server and client certificates and keys into ``directory``
    (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DEMO_FILES:
        target = directory / name
        target.write_bytes(_demo_file(name).read_bytes())
        if name.endswith(".key"):
            target.chmod(0o600)  # the habit that real keys need, though these are public
        written.append(target)
    return written


def _readable(*paths: str | None) -> None:
    """Raise the error of opening a path that cannot be read: ssl's own errors for a
    missing file do not name it; this one does. (Called before the event loop runs.)"""
    for path in paths:
        if path is not None:
            open(path, "rb").close()


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """``load_cert_chain``, with errors that name the files."""
    _readable(cert, key)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        what = f"{cert} with the key in {key}" if key else f"{cert} (no --key: none found in it)"
        raise ValueError(f"cannot load the certificate {what}: {exc.reason or exc}") from exc


def _pin(context: ssl.SSLContext, version: ssl.TLSVersion | None) -> ssl.SSLContext:
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def server_context(
    *,
    cert: str,
    key: str | None,
    cafile: str | None = None,
    version: ssl.TLSVersion | None = None,
    keylog: str | None = None,
) -> ssl.SSLContext:
    """A server context presenting ``cert`` (``key`` defaults to the same file); with
    ``cafile``, clients must present a certificate issued by it (mutual TLS).

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: a file is not a certificate or key, or they do not match.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert, key)
    if cafile is not None:
        _readable(cafile)
        context.load_verify_locations(cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    if keylog is not None:
        context.keylog_filename = keylog
    return _pin(context, version)


def client_context(
    *,
    cafile: str | None,
    cert: str | None = None,
    key: str | None = None,
    version: ssl.TLSVersion | None = None,
    keylog: str | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (the system's trust store without it), and
    presenting ``cert`` when given (mutual TLS).

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: a file is not a certificate or key, or they do not match.
    """
    _readable(cafile)
    context = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        _load_chain(context, cert, key)
    if keylog is not None:
        context.keylog_filename = keylog
    return _pin(context, version)


def demo_contexts(
    version: ssl.TLSVersion | None = None, *, keylog: str | None = None
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server, client)`` contexts from the packaged demo certificates: the server
    presents ``demo.trio-sctls.test``, the client trusts the demo CA only."""
    with _demo_paths("server.pem", "server.key") as (cert, key):
        server = server_context(cert=cert, key=key, version=version, keylog=keylog)
    client = ssl.create_default_context(cadata=_demo_file("ca.pem").read_text())
    if keylog is not None:
        client.keylog_filename = keylog
    return server, _pin(client, version)
