"""DTLS over SCTP on the real transports (udp here, kernel in the VM), with SCTP-AUTH on
the wire. The kernel rows run in the VM like the other kernel tests (``-m kernel``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import pytest
import trio

from trio_sctls import HandshakeError
from trio_sctls.dtls import (
    DTLSAssociation,
    DTLSListener,
    create_dtls_context,
    open_dtls_association,
    open_dtls_listener,
    serve_dtls,
)
from trio_sctls.sctp import AssociationAuth, AuthCounters

from .conftest import SERVER_NAME
from .test_cli import certs, two_lines_round_trip
from .test_dtls import pems

__all__ = ["certs", "pems"]  # the fixtures, re-used

TRANSPORTS = [
    pytest.param("udp", id="udp"),
    pytest.param("kernel", id="kernel", marks=pytest.mark.kernel),
]


async def echo(association: DTLSAssociation) -> None:
    async for message in association:
        await association.send_message(message.data, stream=message.stream, ppid=message.ppid)


async def start_server(
    nursery: trio.Nursery, transport: str, pems: dict[str, Path]
) -> DTLSListener:
    context = create_dtls_context(server_side=True, certfile=pems["server"])
    listener: DTLSListener = await nursery.start(
        partial(
            serve_dtls,
            echo,
            0,
            ssl_context=context,
            host="127.0.0.1",
            transport=transport,  # type: ignore[arg-type]
            auth=True,
            **({"udp_port": 0} if transport == "udp" else {}),  # type: ignore[arg-type]
        )
    )
    return listener


def client_keywords(transport: str, listener: DTLSListener) -> dict[str, object]:
    keywords: dict[str, object] = {"transport": transport, "auth": True}
    if transport == "udp":
        keywords["remote_udp_port"] = listener.udp_port
    return keywords


def connect(
    transport: str, listener: DTLSListener, pems: dict[str, Path]
) -> AbstractAsyncContextManager[DTLSAssociation]:
    return open_dtls_association(
        "127.0.0.1",
        listener.port,
        ssl_context=create_dtls_context(cafile=pems["ca"]),
        server_hostname=SERVER_NAME,
        **client_keywords(transport, listener),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_messages_flow_with_the_exporter_key_active_on_both_ends(
    transport: str, pems: dict[str, Path], nursery: trio.Nursery
) -> None:
    listener = await start_server(nursery, transport, pems)
    async with connect(transport, listener, pems) as association:
        assert association.transport.auth is not None
        for stream in range(1, 4):
            await association.send_message(b"m" * 16384, stream=stream, ppid=47, unordered=True)
        replies = [await association.receive() for _ in range(3)]
        assert sorted(reply.stream for reply in replies) == [1, 2, 3]
        assert all(len(reply.data) == 16384 and reply.ppid == 47 for reply in replies)
        assert association.active_key_id == 1
    nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_trusting_another_ca_fails_and_the_server_serves_on(
    transport: str, pems: dict[str, Path], nursery: trio.Nursery
) -> None:
    listener = await start_server(nursery, transport, pems)
    with pytest.raises(HandshakeError):
        async with open_dtls_association(
            "127.0.0.1",
            listener.port,
            ssl_context=create_dtls_context(cafile=pems["other_ca"]),
            **client_keywords(transport, listener),  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover
    async with connect(transport, listener, pems) as association:
        await association.send_message(b"still serving", stream=0)
        assert (await association.receive()).data == b"still serving"
    nursery.cancel_scope.cancel()


async def test_no_chunk_is_dropped_for_want_of_a_key_through_two_renegotiations(
    pems: dict[str, Path],
) -> None:
    """Each Finished travels under a key its receiver already holds, so no key switch
    costs a retransmission timeout (RFC 6083 section 4.7, as its successor draft and
    OpenSSL order it). Our SCTP core counts every chunk it drops (RFC 4895 section 6.3):
    a Finished signed with a key the peer's DTLS layer has not derived yet would be
    one. After the third handshake key 1 is deleted, key 2 retired, key 3 active."""
    context = create_dtls_context(server_side=True, certfile=pems["server"])
    async with (
        open_dtls_listener(
            0, host="127.0.0.1", ssl_context=context, transport="udp", udp_port=0
        ) as listener,
        trio.open_nursery() as nursery,
    ):
        accepted: list[DTLSAssociation] = []
        rounds_done = trio.Event()

        async def serve_one() -> None:
            association = await listener.accept()
            accepted.append(association)
            await association.do_handshake()
            for round_ in range(1, 4):  # the handshake, then two renegotiations
                if round_ > 1:
                    await association.renegotiate()
                assert association.active_key_id == round_
                await association.send_message(b"round %d" % round_, stream=round_)
                assert (await association.receive()).data == b"round %d" % round_
            rounds_done.set()

        nursery.start_soon(serve_one)
        async with connect("udp", listener, pems) as client, trio.open_nursery() as echoing:

            async def echo() -> None:
                async for message in client:
                    await client.send_message(message.data, stream=message.stream)

            echoing.start_soon(echo)
            await rounds_done.wait()
            echoing.cancel_scope.cancel()
        for association in (client, accepted[0]):
            auth = association.transport.auth
            assert isinstance(auth, AssociationAuth)
            assert association.active_key_id == 3 and auth.key_ids == (2, 3)
            assert auth.counters == AuthCounters(), auth.counters


async def test_the_command_line_serves_and_connects_with_dtls(certs: Path) -> None:
    extra = ["--dtls", "--ppid", "47"]
    async with two_lines_round_trip(certs, ["--dtls"], extra, label=" ppid 47"):
        pass
