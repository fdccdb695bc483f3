"""The ``trio-sctls`` command line (``python -m trio_sctls``).

Commands: ``demo`` (a loopback server and client, a table per channel), ``serve`` and
``connect`` (TLS over SCTP with real peers, like ``openssl s_server`` / ``s_client``:
see :mod:`.peer`), ``demo-certs DIR`` (write the demo's certificates, for trying
``serve`` and ``connect``), and ``info``. Only the public API of :mod:`trio_sctls` is
used. Expected failures print one line and exit 1 (see :mod:`.errors`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .. import AssociationOptions, TransportOptions, kernel_sctp_available
from . import dtls
from .certs import DEMO_SERVER_NAME, client_context, server_context, tls_version, write_demo_certs
from .demo import parse_size, resolve, run_demo
from .errors import describe_error, is_expected, leaves
from .peer import LineMode, run_client, run_server, status

#: serve's SCTP port when none is given (and the README's examples).
DEFAULT_PORT = 5000
#: Seconds connect waits for the association and its handshakes.
DEFAULT_CONNECT_TIMEOUT = 15.0
#: Seconds connect keeps printing replies after standard input ends.
DEFAULT_LINGER = 1.0

EPILOG = f"""\
two terminals, with the demo's certificates (public keys: demos only):
  trio-sctls demo-certs certs
  trio-sctls serve --cert certs/server.pem --key certs/server.key --port {DEFAULT_PORT}
  trio-sctls connect --cafile certs/ca.pem --server-name {DEMO_SERVER_NAME} \
127.0.0.1 {DEFAULT_PORT}
then type `3: hello` in the second to send "hello" on stream 3.
"""


def _peer_arguments(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """The options serve and connect share."""
    tls = parser.add_argument_group("TLS")
    tls.add_argument(
        "--cert",
        required=server,
        help="our certificate chain, PEM" + ("" if server else " (mutual TLS)"),
    )
    tls.add_argument("--key", help="our private key, PEM (default: in the --cert file)")
    tls.add_argument(
        "--cafile",
        help="require client certificates issued by this CA (PEM)"
        if server
        else "trust this CA (PEM) instead of the system's",
    )
    tls.add_argument("--tls", choices=["1.2", "1.3"], help="only this TLS version")
    tls.add_argument(
        "--keylog", metavar="FILE", help="append TLS secrets (NSS key log) for Wireshark"
    )
    sctp = parser.add_argument_group("SCTP")
    sctp.add_argument(
        "--streams",
        type=int,
        default=10,
        metavar="N",
        help="outbound streams, and the most inbound ones accepted (default 10)",
    )
    sctp.add_argument(
        "--transport",
        choices=["auto", "kernel", "udp"],
        default="auto",
        help="kernel SCTP, SCTP over UDP (RFC 6951), or auto: kernel where it has SCTP",
    )
    sctp.add_argument(
        "--udp-port",
        type=int,
        metavar="PORT",
        help="(udp) our UDP port; "
        + ("default 9899, 0 picks a free one" if server else "default: any free one"),
    )
    if not server:
        sctp.add_argument(
            "--remote-udp-port",
            type=int,
            metavar="PORT",
            help="(udp) the server's UDP port (default 9899)",
        )
    sctp.add_argument(
        "--ppid", type=int, default=0, help="payload protocol identifier on every message"
    )
    parser.add_argument(
        "--dtls",
        action="store_true",
        help="DTLS over SCTP (RFC 6083: messages, SCTP-AUTH; needs trio-sctls[dtls]) "
        "instead of TLS on every stream (RFC 3436)",
    )
    io = parser.add_argument_group("what to do with the channels")
    modes = io.add_mutually_exclusive_group()
    default = "echo" if server else "lines"
    for mode, what in (
        ("echo", "send back what arrives on every channel"),
        ("lines", "send stdin lines, print what arrives"),
    ):
        suffix = " (default)" if mode == default else ""
        modes.add_argument(
            f"--{mode}", dest="mode", action="store_const", const=mode, help=what + suffix
        )
    parser.set_defaults(mode=default)
    io.add_argument(
        "--stream",
        type=int,
        default=0,
        metavar="N",
        help="the stream for lines without an `N: ` prefix (default 0)",
    )
    io.add_argument(
        "--no-prefix", action="store_true", help="send lines as they are, `N: ` included"
    )
    io.add_argument("-q", "--quiet", action="store_true", help="do not print what arrives")
    io.add_argument("-v", "--verbose", action="store_true", help="log at INFO")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-sctls",
        description="TLS over multi-stream SCTP (RFC 3436) on Trio.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="TLS on every stream of a loopback association")
    demo.add_argument("--streams", type=int, default=8, help="streams each way (default 8)")
    demo.add_argument("--bytes", type=parse_size, default=parse_size("1MiB"), dest="size")
    demo.add_argument("--transport", choices=["auto", "kernel", "udp", "memory"], default="auto")
    demo.add_argument("--handshake", choices=["parallel", "resume", "lazy"], default="parallel")
    demo.add_argument("--tls", choices=["1.2", "1.3"], default=None)
    demo.add_argument("--port", type=int, default=0, help="server port (default: any free)")
    demo.add_argument("--keylog", metavar="FILE", help="append TLS secrets (NSS key log)")
    demo.add_argument(
        "--dtls",
        action="store_true",
        help="DTLS over SCTP (RFC 6083) instead of RFC 3436 (needs trio-sctls[dtls])",
    )

    serve = commands.add_parser(
        "serve",
        help="accept associations (like openssl s_server)",
        description="Accept associations and run TLS on every stream of each; echo by "
        "default. The first line on stderr says the SCTP port (and UDP port) bound.",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"SCTP port (default {DEFAULT_PORT})"
    )
    serve.add_argument(
        "--host",
        action="append",
        metavar="ADDRESS",
        help="local address to bind; repeat to multihome (default: all)",
    )
    _peer_arguments(serve, server=True)

    connect = commands.add_parser(
        "connect",
        help="open an association (like openssl s_client)",
        description="Open an association and run TLS on every stream; send stdin lines "
        "(`3: text` goes to stream 3) and print what arrives as `[stream 3] text`.",
    )
    connect.add_argument("host", help="server address (several, comma-separated: multihoming)")
    connect.add_argument("port", type=int, help="server SCTP port")
    connect.add_argument("--server-name", help="name to verify in the certificate (default: host)")
    connect.add_argument("--handshake", choices=["parallel", "resume", "lazy"], default="parallel")
    connect.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on the association and handshakes (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    connect.add_argument(
        "--linger",
        type=float,
        default=DEFAULT_LINGER,
        metavar="SECONDS",
        help=f"after stdin ends, print replies this long, then close (default {DEFAULT_LINGER:g};"
        " `inf`: until the server closes)",
    )
    _peer_arguments(connect, server=False)

    certs = commands.add_parser(
        "demo-certs",
        help="write the demo CA, server and client certificates into DIR",
        description="Write the demo's CA, server certificate (for "
        f"{DEMO_SERVER_NAME}) and client certificate, with their keys, into DIR. Their "
        "keys ship with trio-sctls, so anyone has them: for demos only, never trust them.",
    )
    certs.add_argument("directory", type=Path, metavar="DIR")

    commands.add_parser("info", help="what this machine offers")
    return parser


def _transport_options(args: argparse.Namespace) -> TransportOptions:
    return TransportOptions(
        transport=args.transport,
        outbound_streams=args.streams,
        max_inbound_streams=args.streams,
        udp_port=args.udp_port,
        remote_udp_port=getattr(args, "remote_udp_port", None),
    )


def _association_options(args: argparse.Namespace) -> AssociationOptions:
    return AssociationOptions(
        handshake=getattr(args, "handshake", "parallel"),
        ppid=args.ppid,
        # A command-line client is one association: resuming across runs cannot happen.
        session_cache=None,
    )


def _line_mode(args: argparse.Namespace) -> LineMode:
    return LineMode(stream=args.stream, prefix=not args.no_prefix, quiet=args.quiet)


async def _until_signalled(run: Callable[[], Awaitable[object]]) -> None:
    """Run ``run`` until SIGINT or SIGTERM, then cancel it (the server shuts down)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def run_then_stop() -> None:
                await run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run_then_stop)
            async for signum in signals:
                status(f"stopping ({signal.Signals(signum).name})")
                nursery.cancel_scope.cancel()
                break


def _refuse_tls_only(args: argparse.Namespace) -> None:
    if args.tls or args.keylog:
        raise ValueError("--tls and --keylog apply to TLS channels, not --dtls (DTLS 1.2 only)")


def _serve_dtls(args: argparse.Namespace) -> Callable[[], Awaitable[object]]:
    _refuse_tls_only(args)
    run = partial(
        dtls.run_server,
        port=args.port,
        hosts=args.host,
        ssl_context=dtls.server_context(args.cert, args.key, args.cafile),
        transport_options=_transport_options(args),
        quiet=args.quiet,
    )
    return partial(_until_signalled, run)


def _connect_dtls(args: argparse.Namespace) -> Callable[[], Awaitable[object]]:
    _refuse_tls_only(args)
    hosts = [host.strip() for host in args.host.split(",") if host.strip()]
    return partial(
        dtls.run_client,
        hosts=hosts,
        port=args.port,
        ssl_context=dtls.client_context(args.cafile, args.cert, args.key),
        server_hostname=args.server_name or hosts[0],
        transport_options=_transport_options(args),
        ppid=args.ppid,
        mode=args.mode,
        lines=_line_mode(args),
        connect_timeout=args.connect_timeout,
        linger=args.linger,
    )


def _peer_keywords(args: argparse.Namespace, *, server: bool) -> dict[str, Any]:
    """What the server and the client take alike from the command line: the TLS context
    of our side, both options objects, and what to do with lines."""
    make_context = server_context if server else client_context
    context = make_context(
        cert=args.cert,
        key=args.key,
        cafile=args.cafile,
        version=tls_version(args.tls),
        keylog=args.keylog,
    )
    return {
        "ssl_context": context,
        "transport_options": _transport_options(args),
        "options": _association_options(args),
        "mode": args.mode,
        "lines": _line_mode(args),
    }


def _serve(args: argparse.Namespace) -> Callable[[], Awaitable[object]]:
    if args.dtls:
        return _serve_dtls(args)
    peer = _peer_keywords(args, server=True)
    run = partial(run_server, port=args.port, hosts=args.host, **peer)
    return partial(_until_signalled, run)


def _connect(args: argparse.Namespace) -> Callable[[], Awaitable[object]]:
    if args.dtls:
        return _connect_dtls(args)
    peer = _peer_keywords(args, server=False)
    hosts = [host.strip() for host in args.host.split(",") if host.strip()]
    return partial(
        run_client,
        hosts=hosts,
        port=args.port,
        server_hostname=args.server_name or hosts[0],
        connect_timeout=args.connect_timeout,
        linger=args.linger,
        **peer,
    )


def _info() -> int:
    print(f"kernel SCTP: {'yes' if kernel_sctp_available() else 'no'}")
    print(f"transport='auto' means: {resolve('auto')}")
    print(f"OpenSSL: {ssl.OPENSSL_VERSION}; Trio {trio.__version__}")
    return 0


def _run(
    make: Callable[[argparse.Namespace], Callable[[], Awaitable[Any]]],
    args: argparse.Namespace,
) -> int:
    """Build the run from ``args`` and run it; expected failures (see :mod:`.errors`)
    become one line on stderr and exit status 1, Ctrl-C exit status 130."""
    try:
        result = trio.run(make(args))
    except BaseException as exc:
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves(exc)):
            status("interrupted")
            return 130
        if not is_expected(exc):
            raise
        status(f"error: {describe_error(exc, hints=args.command == 'connect')}")
        return 1
    return 0 if result is not False else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trio-sctls`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="trio-sctls: %(levelname)s: %(message)s",
    )
    if getattr(args, "dtls", False):
        try:
            import trio_sctls.dtls  # noqa: F401
        except ImportError as exc:
            status(f"error: {exc}")
            return 1
    if args.command == "info":
        return _info()
    if args.command == "demo-certs":
        for path in write_demo_certs(args.directory):
            print(path)
        print(
            f"DEMO ONLY: these keys are public. Server name: {DEMO_SERVER_NAME}.",
            file=sys.stderr,
        )
        return 0
    if args.command == "demo" and args.dtls:
        dtls_demo = partial(
            dtls.run_demo,
            streams=args.streams,
            size=args.size,
            transport=args.transport,
            port=args.port,
        )
        return _run(lambda _: dtls_demo, args)
    if args.command == "demo":
        demo = partial(
            run_demo,
            streams=args.streams,
            size=args.size,
            transport=args.transport,
            handshake=args.handshake,
            version=tls_version(args.tls),
            port=args.port,
            keylog=args.keylog,
        )
        return _run(lambda _: demo, args)
    return _run(_serve if args.command == "serve" else _connect, args)


__all__ = ["main"]
