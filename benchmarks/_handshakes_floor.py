"""The "OpenSSL alone" floor of the handshakes benchmark: the CPU time of the same TLS
handshakes with both ends in memory BIOs, and nothing else (no SCTP, Trio or
trio-sctls; only OpenSSL and the ssl module).

What an association of n channels must do at the least is one full handshake and n - 1
resumed ones (the ``resume`` strategy's work; ``parallel`` does n full ones, which cost
more), so that is the floor of a case: :func:`setup_floor` measures it (wall and CPU time), both
ends in this process, and the benchmark measures it in every round, right before the
association, so that both see the same machine load. :func:`openssl_floor` gives
the per-handshake figures behind it, for the log and the results.
"""

from __future__ import annotations

import contextlib
import ssl
import statistics
import time

from ._common import SERVER_NAME


def _memory_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None
) -> ssl.SSLObject:
    """Both ends of one handshake in memory BIOs, nothing else: OpenSSL's own cost (and
    the ssl module's: setting ``session`` copies it, certificate included)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=SERVER_NAME, session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_done = server_done = False
    while not (client_done and server_done):
        for obj, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            if not (client_done if obj is client else server_done):
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                else:
                    if obj is client:
                        client_done = True
                    else:
                        server_done = True
            peer_in.write(out.read())
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read(1)  # TLS 1.3: take in the session tickets
    return client


def openssl_floor(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> dict[str, float]:
    """CPU seconds of one full and one resumed handshake in memory (median of 31)."""
    first = _memory_handshake(server_ctx, client_ctx, None)
    session = first.session
    full, resumed = [], []
    for _ in range(31):
        cpu = time.process_time()
        _memory_handshake(server_ctx, client_ctx, None)
        full.append(time.process_time() - cpu)
        cpu = time.process_time()
        again = _memory_handshake(server_ctx, client_ctx, session)
        resumed.append(time.process_time() - cpu)
        assert again.session_reused
    return {"full": statistics.median(full), "resumed": statistics.median(resumed)}


def setup_floor(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, channels: int
) -> tuple[float, float]:
    """Seconds of wall time and of CPU time, both ends in memory, of what ``channels``
    channels need at the least: one full handshake, reading its session once, and
    ``channels - 1`` handshakes that resume it. (Wall time to compare with a set-up's
    wall time, which a busy machine stretches alike.)"""
    started, cpu = time.perf_counter(), time.process_time()
    session = _memory_handshake(server_ctx, client_ctx, None).session
    for _ in range(channels - 1):
        _memory_handshake(server_ctx, client_ctx, session)
    return time.perf_counter() - started, time.process_time() - cpu
