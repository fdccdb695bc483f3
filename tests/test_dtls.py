"""DTLS over SCTP (RFC 6083) on the memory transport, whose SCTP-AUTH is simulated:
messages, the key switch of section 4.7, and peers that misbehave."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme
from OpenSSL import SSL

from trio_sctls import (
    AssociationAbortedError,
    HandshakeError,
    PeerIdentityError,
    RemoteProtocolError,
    ServerOptions,
    TransportOptions,
    open_transport,
)
from trio_sctls.dtls import (
    MAX_PLAINTEXT,
    DTLSAssociation,
    DTLSEngine,
    DTLSListener,
    DTLSOptions,
    create_dtls_context,
    open_dtls_association,
    open_dtls_listener,
    serve_dtls,
)
from trio_sctls.dtls._keys import KeySchedule, next_key_id
from trio_sctls.dtls._records import MAX_RECORD, parse_message
from trio_sctls.transport import Message
from trio_sctls.transport._memory_auth import MemoryAuthKeys
from trio_sctls.transport.memory import MemoryTransport, StreamDelay, memory_pair

from .conftest import CA, OTHER_SERVER_CERT, SERVER_CERT, SERVER_NAME


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The suite's CA and server certificate, and a CA nobody trusts, as PEM files."""
    base = tmp_path_factory.mktemp("dtls")
    paths = {"ca": base / "ca.pem", "server": base / "server.pem", "other_ca": base / "o.pem"}
    CA.cert_pem.write_to_path(str(paths["ca"]))
    SERVER_CERT.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return paths


def server_context(pems: dict[str, Path]) -> SSL.Context:
    return create_dtls_context(server_side=True, certfile=pems["server"])


def client_context(pems: dict[str, Path], ca: str = "ca") -> SSL.Context:
    return create_dtls_context(cafile=pems[ca])


async def handshaken_pair(
    pems: dict[str, Path], client_delay: StreamDelay | None = None
) -> tuple[DTLSAssociation, DTLSAssociation]:
    client_sctp, server_sctp = memory_pair(auth=True, client_delay=client_delay)
    client = DTLSAssociation(
        client_sctp, client_context(pems), server_side=False, server_hostname=SERVER_NAME
    )
    server = DTLSAssociation(server_sctp, server_context(pems), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    return client, server


def keys_of(association: DTLSAssociation) -> tuple[int, ...]:
    transport = association.transport
    assert isinstance(transport, MemoryTransport) and transport.auth_keys is not None
    return transport.auth_keys.key_ids


def dropped_by(association: DTLSAssociation) -> int:
    transport = association.transport
    assert isinstance(transport, MemoryTransport) and transport.auth_keys is not None
    return transport.auth_keys.dropped


async def test_messages_keep_their_stream_ppid_and_ordering(pems: dict[str, Path]) -> None:
    client, server = await handshaken_pair(pems)
    assert client.version == "DTLSv1.2"
    await client.send_message(b"hello", stream=3, ppid=47)
    await client.send_message(b"x" * MAX_PLAINTEXT, stream=1, ppid=5, unordered=True)
    first, second = await server.receive(), await server.receive()
    assert (first.data, first.stream, first.ppid, first.unordered) == (b"hello", 3, 47, False)
    assert (len(second.data), second.stream, second.ppid, second.unordered) == (2**14, 1, 5, True)
    await client.aclose()
    with pytest.raises(trio.EndOfChannel):
        await server.receive()
    await server.aclose()


async def test_each_record_travels_as_one_message_and_control_records_on_stream_0(
    pems: dict[str, Path],
) -> None:
    client_sctp, server_sctp = memory_pair(auth=True)
    assert client_sctp.auth is not None
    client = DTLSEngine(client_context(pems), client_sctp.auth, server_side=False)
    server = DTLSAssociation(
        server_sctp, server_context(pems), server_side=True, options=DTLSOptions(handshake_ppid=47)
    )
    seen: list[tuple[int, int, int]] = []
    # The client's hello from the sans-IO engine, then the server's flight read raw,
    # the way the client's stack delivers it.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        client.start()
        (hello,) = client.outgoing()
        assert (hello.header.content_type, hello.stream) == (22, 0)
        await client_sctp.send_message(hello.data, stream=hello.stream, ppid=hello.ppid)
        for _ in range(4):  # ServerHello, Certificate, ServerKeyExchange, ServerHelloDone
            message = await client_sctp.receive()
            assert isinstance(message, Message)
            header = parse_message(message.data)
            seen.append((header.content_type, message.stream, message.ppid))
        nursery.cancel_scope.cancel()
    assert seen == [(22, 0, 47)] * 4


async def test_close_notify_waits_until_the_peer_has_everything_sent_before(
    pems: dict[str, Path], autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 6083 (Shutdown): close_notify only once every earlier message is
    # acknowledged. Stream 3 is slow and stream 0 (close_notify's) is not: sent at once,
    # the close_notify would arrive first and the message would never be read.
    client, server = await handshaken_pair(pems, lambda stream: 2.0 if stream == 3 else 0.0)
    await client.send_message(b"last words", stream=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        read = [message.data async for message in server]  # until the close_notify
    assert read == [b"last words"]
    await server.aclose()


async def test_the_first_handshake_switches_both_ends_to_key_1_and_deletes_key_0(
    pems: dict[str, Path],
) -> None:
    client, server = await handshaken_pair(pems)
    await client.send_message(b"ping", stream=1)
    assert (await server.receive()).data == b"ping"
    assert client.active_key_id == server.active_key_id == 1
    assert keys_of(client) == keys_of(server) == (1,)
    assert dropped_by(client) == dropped_by(server) == 0


async def test_a_renegotiation_switches_to_key_2_and_keeps_key_1_until_the_next(
    pems: dict[str, Path],
) -> None:
    client, server = await handshaken_pair(pems)
    pinned = client.peer_certificate

    async def echo() -> None:
        async for message in client:
            await client.send_message(message.data, stream=message.stream, ppid=message.ppid)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        await server.renegotiate()
        assert server.handshakes == 2 and server.active_key_id == 2
        await server.send_message(b"after", stream=2, ppid=9)
        reply = await server.receive()
        assert (reply.data, reply.stream, reply.ppid) == (b"after", 2, 9)
        assert client.handshakes == 2 and client.active_key_id == 2
        # Key 1 is deactivated (it signs nothing more) but still checks what the peer
        # may retransmit under it; the next switch deletes it.
        assert keys_of(client) == keys_of(server) == (1, 2)
        await server.aclose()
    assert client.peer_certificate == pinned
    assert dropped_by(client) == dropped_by(server) == 0


async def test_a_message_under_a_key_the_receiver_does_not_hold_is_dropped_and_counted(
    pems: dict[str, Path],
) -> None:
    client, server = await handshaken_pair(pems)
    keys = client.transport.auth
    assert keys is not None
    keys.add_key(9, b"not the exporter's")
    keys.activate_key(9)
    await client.send_message(b"lost", stream=1)
    keys.activate_key(1)
    await client.send_message(b"kept", stream=1)
    assert (await server.receive()).data == b"kept"
    assert dropped_by(server) == 1


async def test_messages_over_16_kib_are_refused_before_anything_is_sent(
    pems: dict[str, Path],
) -> None:
    client, server = await handshaken_pair(pems)
    with pytest.raises(ValueError, match=r"1\.\.16384"):
        await client.send_message(b"x" * (MAX_PLAINTEXT + 1), stream=1)
    with pytest.raises(ValueError, match="out of range"):
        await client.send_message(b"x", stream=99)
    await client.send_message(b"still fine", stream=1)
    assert (await server.receive()).data == b"still fine"


async def test_a_transport_without_sctp_auth_is_refused() -> None:
    client_sctp, _ = memory_pair(auth=False)
    with pytest.raises(RemoteProtocolError, match="SCTP-AUTH"):
        DTLSAssociation(client_sctp, SSL.Context(SSL.DTLS_METHOD), server_side=False)


def test_a_message_must_be_exactly_one_known_record() -> None:
    record = struct.pack("!BHH6sH", 23, 0xFEFD, 1, b"\0" * 6, 3) + b"abc"
    assert parse_message(record).length == 3
    for bad in (record + b"x", record[:-1], b"\x63" + record[1:], b"x" * (MAX_RECORD + 1)):
        with pytest.raises(ValueError, match="record"):
            parse_message(bad)


# -- a server and the peers it must survive ------------------------------------------------


@asynccontextmanager
async def dtls_server(
    pems: dict[str, Path], nursery: trio.Nursery, options: DTLSOptions | None = None
) -> AsyncIterator[int]:
    async def echo(association: DTLSAssociation) -> None:
        async for message in association:
            await association.send_message(message.data, stream=message.stream, ppid=message.ppid)

    listener: DTLSListener = await nursery.start(
        lambda task_status: serve_dtls(
            echo,
            0,
            ssl_context=server_context(pems),
            transport="memory",
            options=options,
            task_status=task_status,
        )
    )
    yield listener.port
    nursery.cancel_scope.cancel()


async def assert_serves(pems: dict[str, Path], port: int) -> None:
    async with open_dtls_association(
        None,
        port,
        ssl_context=client_context(pems),
        server_hostname=SERVER_NAME,
        transport="memory",
    ) as association:
        await association.send_message(b"still serving", stream=2, ppid=47)
        reply = await association.receive()
        assert (reply.data, reply.stream, reply.ppid) == (b"still serving", 2, 47)


async def test_a_client_that_trusts_another_ca_fails_and_the_server_serves_on(
    pems: dict[str, Path], nursery: trio.Nursery
) -> None:
    async with dtls_server(pems, nursery) as port:
        with pytest.raises(HandshakeError):
            async with open_dtls_association(
                None, port, ssl_context=client_context(pems, "other_ca"), transport="memory"
            ):
                pass  # pragma: no cover
        await assert_serves(pems, port)


@pytest.mark.parametrize("name", ["elsewhere.example", "127.0.0.1"])
async def test_a_certificate_for_another_name_fails_the_handshake(
    pems: dict[str, Path], nursery: trio.Nursery, name: str
) -> None:
    async with dtls_server(pems, nursery) as port:
        with pytest.raises(HandshakeError, match=f"does not match '{re.escape(name)}'"):
            async with open_dtls_association(
                None,
                port,
                ssl_context=client_context(pems),
                server_hostname=name,
                transport="memory",
            ):
                pass  # pragma: no cover
        await assert_serves(pems, port)


def raw_record(content_type: int, epoch: int, payload: bytes) -> bytes:
    return struct.pack("!BHH6sH", content_type, 0xFEFD, epoch, b"\0\0\0\0\0\x63", len(payload)) + (
        payload
    )


@pytest.mark.parametrize(
    ("message", "stream"),
    [
        pytest.param(raw_record(22, 1, b"\x01" * 40), 1, id="handshake-record-on-stream-1"),
        pytest.param(raw_record(21, 1, b"\x02" * 30), 4, id="alert-on-stream-4"),
        pytest.param(raw_record(23, 1, b"\x17" * 48), 1, id="tampered-application-record"),
        pytest.param(raw_record(23, 5, b"\x17" * 48), 2, id="record-from-a-future-epoch"),
        pytest.param(raw_record(23, 0, b"\x17" * 48), 2, id="unprotected-application-data"),
        pytest.param(raw_record(23, 1, b"\0" * (2**14 + 2049)), 1, id="oversized-record"),
        pytest.param(raw_record(23, 1, b"\0" * 10) + b"trailing", 1, id="two-things-in-one"),
    ],
)
async def test_a_bad_record_ends_only_its_association(
    pems: dict[str, Path], nursery: trio.Nursery, message: bytes, stream: int
) -> None:
    async with dtls_server(pems, nursery) as port:
        with pytest.raises(AssociationAbortedError):
            async with open_dtls_association(
                None, port, ssl_context=client_context(pems), transport="memory"
            ) as association:
                await association.transport.send_message(message, stream=stream)
                await association.receive()
        await assert_serves(pems, port)


async def test_a_handshake_record_off_stream_0_is_a_protocol_error(
    pems: dict[str, Path],
) -> None:
    client, server = await handshaken_pair(pems)
    await client.transport.send_message(raw_record(22, 1, b"\x01" * 40), stream=1)
    with pytest.raises(RemoteProtocolError, match=r"stream 1: .*stream 0, ordered"):
        await server.receive()
    with pytest.raises(AssociationAbortedError):
        await client.receive()


async def test_a_tampered_record_is_an_error_naming_the_stream(pems: dict[str, Path]) -> None:
    client, server = await handshaken_pair(pems)
    await client.transport.send_message(raw_record(23, 1, b"\x17" * 48), stream=5)
    with pytest.raises(HandshakeError, match=r"stream 5: .*failed authentication"):
        await server.receive()


async def test_a_peer_that_never_speaks_is_aborted_after_the_handshake_timeout(
    pems: dict[str, Path], nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with dtls_server(pems, nursery, DTLSOptions(handshake_timeout=2.0)) as port:
        async with open_transport(None, port, transport="memory", auth=True) as silent:
            start = trio.current_time()
            with pytest.raises(AssociationAbortedError):
                await silent.receive()
            assert 2.0 <= trio.current_time() - start < 3.0
        await assert_serves(pems, port)


async def test_a_client_without_sctp_auth_is_refused_by_the_dtls_server(
    pems: dict[str, Path], nursery: trio.Nursery
) -> None:
    async with dtls_server(pems, nursery) as port:
        async with open_transport(None, port, transport="memory") as plain:
            with pytest.raises(AssociationAbortedError, match="SCTP-AUTH"):
                await plain.receive()
        await assert_serves(pems, port)


async def test_a_renegotiation_presenting_another_certificate_ends_the_association(
    pems: dict[str, Path], tmp_path: Path
) -> None:
    # The same name, the same CA: valid, but not the certificate pinned at the first
    # handshake (a server whose key changed hands mid-association).
    OTHER_SERVER_CERT.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "other.pem"))
    other = create_dtls_context(server_side=True, certfile=tmp_path / "other.pem")
    server_ctx = server_context(pems)
    hellos = 0

    def on_server_name(connection: SSL.Connection) -> None:
        nonlocal hellos
        hellos += 1
        if hellos > 1:
            connection.set_context(other)

    server_ctx.set_tlsext_servername_callback(on_server_name)
    client_sctp, server_sctp = memory_pair(auth=True)
    client = DTLSAssociation(
        client_sctp, client_context(pems), server_side=False, server_hostname=SERVER_NAME
    )
    server = DTLSAssociation(server_sctp, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    async with trio.open_nursery() as nursery:
        # The server's side of the handshake completes; the client's check fails.
        nursery.start_soon(server.renegotiate)
        with pytest.raises(PeerIdentityError, match="different certificate"):
            await client.receive()
    with pytest.raises(AssociationAbortedError, match="different certificate"):
        await server.receive()
    assert hellos == 2
    assert isinstance(client.error, PeerIdentityError)


async def test_data_that_overtakes_the_finished_on_another_stream_is_read_after_it(
    pems: dict[str, Path], autojump_clock: trio.testing.MockClock
) -> None:
    # The server's stream 0 (its ChangeCipherSpec and Finished) is slow; its first
    # message, on stream 3, reaches the client before the handshake has completed there.
    client_sctp, server_sctp = memory_pair(
        auth=True, server_delay=lambda stream: 0.5 if stream == 0 else 0.0
    )
    client = DTLSAssociation(client_sctp, client_context(pems), server_side=False)
    server = DTLSAssociation(server_sctp, server_context(pems), server_side=True)

    async def serve_first() -> None:
        await server.do_handshake()
        await server.send_message(b"early", stream=3, ppid=7)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_first)
        await client.do_handshake()
    message = await client.receive()
    assert (message.data, message.stream, message.ppid) == (b"early", 3, 7)


def test_key_ids_count_up_and_wrap_from_65535_to_1_never_reusing_0() -> None:
    keys = MemoryAuthKeys()
    keys.add_key(65535, b"k")
    keys.activate_key(65535)
    keys.deactivate_key(0)
    keys.delete_key(0)
    schedule = KeySchedule(keys)
    schedule.install(b"new")
    schedule.install(b"ignored: one key per handshake")
    schedule.switch()
    # 65535 stays, deactivated, for what the peer may still retransmit under it.
    assert (keys.active_key_id, keys.key_ids, keys.sign().secret) == (1, (1, 65535), b"new")
    schedule.install(b"newer")
    schedule.switch()
    assert (keys.active_key_id, keys.key_ids) == (2, (1, 2))
    assert next_key_id(1) == 2 and next_key_id(65535) == 1


async def test_a_client_sending_and_receiving_at_once_does_not_deadlock_on_a_full_window(
    pems: dict[str, Path], autojump_clock: trio.testing.MockClock
) -> None:
    # The server echoes into the client's window while the client's sender waits for
    # the server's: the client's receiver must keep reading, not queue behind it.
    client_sctp, server_sctp = memory_pair(auth=True, window=64 * 1024)
    client = DTLSAssociation(client_sctp, client_context(pems), server_side=False)
    server = DTLSAssociation(server_sctp, server_context(pems), server_side=True)
    count = 64

    async def echo() -> None:
        async for message in server:
            await server.send_message(message.data, stream=message.stream)

    async def send() -> None:
        for index in range(count):
            await client.send_message(bytes([index]) * MAX_PLAINTEXT, stream=1 + index % 2)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            await client.do_handshake()
            nursery.start_soon(send)
            echoed = [await client.receive() for _ in range(count)]
            nursery.cancel_scope.cancel()
    assert sorted(message.data[0] for message in echoed) == list(range(count))


async def test_asking_for_dtls_without_sctp_auth_is_refused(pems: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="requires SCTP-AUTH"):
        async with open_dtls_association(
            None, 1, ssl_context=client_context(pems), transport="memory", auth=False
        ):
            pass  # pragma: no cover


async def test_options_objects_and_their_fields_reach_the_transport_and_the_server(
    pems: dict[str, Path],
) -> None:
    """The transport and server options come whole or field by field, as keywords."""
    memory = TransportOptions(transport="memory", outbound_streams=3)
    limits = ServerOptions(max_associations=1)
    async with trio.open_nursery() as nursery:
        listener: DTLSListener = await nursery.start(
            lambda task_status: serve_dtls(
                echo_one,
                0,
                ssl_context=server_context(pems),
                transport_options=memory,
                server_options=limits,
                max_inbound_streams=2,
                task_status=task_status,
            )
        )
        async with open_dtls_association(
            None,
            listener.port,
            ssl_context=client_context(pems),
            server_hostname=SERVER_NAME,
            transport_options=memory,
            max_inbound_streams=5,
        ) as association:
            # 2 streams: the server's max_inbound_streams field over our 3 outbound.
            assert association.transport.outbound_streams == 2
            assert association.transport.inbound_streams == 3
            await association.send_message(b"hi", stream=1)
            assert (await association.receive()).data == b"hi"
        nursery.cancel_scope.cancel()


async def echo_one(association: DTLSAssociation) -> None:
    message = await association.receive()
    await association.send_message(message.data, stream=message.stream)


async def test_a_misspelt_keyword_is_refused_by_every_dtls_entry_point(
    pems: dict[str, Path],
) -> None:
    with pytest.raises(TypeError, match="outbound_stream"):
        async with open_dtls_association(
            None,
            1,
            ssl_context=client_context(pems),
            outbound_stream=3,  # type: ignore[call-arg]
        ):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="max_association"):
        async with open_dtls_listener(
            0,
            ssl_context=server_context(pems),
            transport="memory",
            max_association=1,  # type: ignore[call-arg]
        ):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="server_option"):
        await serve_dtls(
            echo_one,
            0,
            ssl_context=server_context(pems),
            server_option=None,  # type: ignore[call-arg]
        )


def active_secret(association: DTLSAssociation) -> bytes:
    transport = association.transport
    assert isinstance(transport, MemoryTransport) and transport.auth_keys is not None
    return transport.auth_keys.sign().secret


@pytest.mark.parametrize("server_bug", [True, False], ids=["both", "client-only"])
async def test_the_label_bug_option_keys_with_old_openssls_label_and_needs_it_on_both_ends(
    pems: dict[str, Path], autojump_clock: trio.testing.MockClock, server_bug: bool
) -> None:
    # Old OpenSSL exported with the label's NUL byte counted in (-sctp_label_bug in
    # OpenSSL 3): a different key, so a peer without the quirk drops our DATA.
    client_sctp, server_sctp = memory_pair(auth=True)
    client = DTLSAssociation(
        client_sctp,
        client_context(pems),
        server_side=False,
        options=DTLSOptions(label_bug=True, handshake_timeout=5.0),
    )
    server = DTLSAssociation(
        server_sctp,
        server_context(pems),
        server_side=True,
        options=DTLSOptions(label_bug=server_bug, handshake_timeout=5.0),
    )
    if not server_bug:

        async def fails(association: DTLSAssociation) -> None:
            with pytest.raises(HandshakeError, match=r"no DTLS handshake within 5\.0 s"):
                await association.do_handshake()

        # The server finishes second: its Finished, under the server's key, is dropped
        # by the client, whose handshake never completes; the server's does.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            await fails(client)
        assert dropped_by(client) > 0
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    connection = client._engine._connection
    secret = active_secret(client)
    assert secret == connection.export_keying_material(b"EXPORTER_DTLS_OVER_SCTP\0", 64)
    assert secret != connection.export_keying_material(b"EXPORTER_DTLS_OVER_SCTP", 64)
    assert active_secret(server) == secret
    await client.send_message(b"keyed the old way", stream=2)
    assert (await server.receive()).data == b"keyed the old way"
    await client.aclose()
    await server.aclose()


def test_openssl_retransmissions_never_reach_the_transport(pems: dict[str, Path]) -> None:
    # RFC 6083 section 3.5: SCTP is reliable, so DTLS must not retransmit. OpenSSL's
    # timer (1 s, wall clock) fires when it is driven with nothing to read after the
    # timer expired: hold the server's flight 1.2 s, then feed it one record at a time.
    client = DTLSEngine(client_context(pems), MemoryAuthKeys(), server_side=False)
    server = DTLSEngine(server_context(pems), MemoryAuthKeys(), server_side=True)
    client.start()
    server.start()
    sent: list[tuple[int, int]] = []
    for round_ in range(6):
        from_client = client.outgoing()
        sent += [(r.header.content_type, r.header.epoch) for r in from_client]
        for record in from_client:
            client.sending(record)
            client.sent(record)
            server.receive(record.data, record.stream, record.ppid, record.unordered)
        from_server = server.outgoing()
        if round_ < 2:
            time.sleep(1.2)
        for record in from_server:
            server.sending(record)
            server.sent(record)
            client.receive(record.data, record.stream, record.ppid, record.unordered)
    assert client.handshake_complete and server.handshake_complete
    assert sent == [(22, 0), (22, 0), (20, 0), (22, 1)]
