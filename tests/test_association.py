"""The secure association, end to end, on every transport (see conftest.transport)."""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import pytest
import trio
import trio.testing

from trio_sctls import (
    AssociationAbortedError,
    AssociationError,
    AssociationOptions,
    BufferLimitError,
    HandshakeError,
    PeerIdentityError,
    RemoteProtocolError,
    SecureAssociation,
    SessionCache,
    run_association,
    wrap_transport,
)
from trio_sctls._api import TransportName
from trio_sctls.transport import ShutdownReceived, StreamReset
from trio_sctls.transport.memory import memory_pair

from .conftest import (
    OTHER_SERVER_CERT,
    SERVER_NAME,
    Pair,
    association_pair,
    client_context,
    connect,
    server_context,
    serving,
    wrap_client,
)
from .hygiene import no_leaks

PairFactory = Any


def strategy_pair(
    pair_factory: PairFactory, tls_version: ssl.TLSVersion, strategy: str
) -> AbstractAsyncContextManager[Pair]:
    """A pair with four channels in ``tls_version``, the client using ``strategy``."""
    return cast(
        AbstractAsyncContextManager[Pair],
        pair_factory(
            client_ctx=client_context(tls_version),
            server_ctx=server_context(tls_version),
            client_options={"handshake": strategy, "outbound_streams": 4, "max_inbound_streams": 4},
        ),
    )


async def echo_once(channel: trio.SSLStream[Any], data: bytes, peer: trio.SSLStream[Any]) -> None:
    await channel.send_all(data)
    got = b""
    while len(got) < len(data):
        got += await peer.receive_some()
    assert got == data


async def test_asymmetric_stream_counts_give_min_tls_channels_and_plain_extras(
    pair_factory: PairFactory,
) -> None:
    async with pair_factory(
        client_options={"outbound_streams": 4, "max_inbound_streams": 6, "plain_streams": True},
        server_options={"outbound_streams": 10, "max_inbound_streams": 10, "plain_streams": True},
    ) as pair:
        client, server = pair.client, pair.server
        assert (client.outbound_streams, client.inbound_streams) == (4, 6)
        assert (server.outbound_streams, server.inbound_streams) == (6, 4)
        assert len(client.channels) == len(server.channels) == 4
        for i in range(4):
            await echo_once(server.channels[i], b"tls %d" % i, client.channels[i])
        # Streams 4 and 5 exist only from server to client: unprotected (RFC 3436 s7).
        await server.send_unprotected(b"plain on 5", stream=5, ppid=46)
        message = await client.receive_unprotected()
        assert (message.stream, message.data, message.ppid) == (5, b"plain on 5", 46)
        with pytest.raises(ValueError, match="carries TLS"):
            await server.send_unprotected(b"x", stream=3)


async def test_data_beyond_tls_streams_without_opt_in_aborts_naming_the_stream(
    pair_factory: PairFactory,
) -> None:
    async with pair_factory(
        client_options={"outbound_streams": 2, "max_inbound_streams": 4},
        server_options={"plain_streams": True},
    ) as pair:
        await pair.server.send_unprotected(b"sneaky", stream=3)
        with pytest.raises(RemoteProtocolError) as info:
            await pair.client.channels[0].receive_some()
        assert info.value.stream == 3
        assert pair.client.error is not None


async def test_check_two_way_stream_on_channels(pair_factory: PairFactory) -> None:
    async with pair_factory(
        client_options={"outbound_streams": 30, "max_inbound_streams": 30},
        server_options={"outbound_streams": 30, "max_inbound_streams": 30},
    ) as pair:
        streams = iter(range(30))

        async def maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            i = next(streams)
            return pair.client.channels[i], pair.server.channels[i]

        await trio.testing.check_two_way_stream(maker, None)
        # The channels used up above closed one by one; the association is fine.
        assert pair.client.error is None and pair.server.error is None
        i = next(streams)
        await echo_once(pair.client.channels[i], b"still here", pair.server.channels[i])


@pytest.mark.parametrize("strategy", ["parallel", "resume", "lazy"])
async def test_handshake_strategies(
    pair_factory: PairFactory, tls_version: ssl.TLSVersion, strategy: str
) -> None:
    async with strategy_pair(pair_factory, tls_version, strategy) as pair:
        client = pair.client
        if strategy == "lazy":
            assert all(client.channel_info(i).handshake_seconds is None for i in range(4))
        for i in range(4):
            await echo_once(client.channels[i], b"ping %d" % i, pair.server.channels[i])
            await echo_once(pair.server.channels[i], b"pong %d" % i, client.channels[i])
        infos = [client.channel_info(i) for i in range(4)]
        expected = "TLSv1.3" if tls_version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
        assert all(info.version == expected for info in infos)
        assert all(info.handshake_seconds is not None for info in infos)
        assert infos[0].resumed is False
        if strategy == "resume":
            # Abbreviated handshakes resuming stream 0's session, TLS 1.2 and 1.3 alike.
            assert all(info.resumed for info in infos[1:]), infos
            assert all(pair.server.channels[i].session_reused for i in range(1, 4))
        else:
            assert not any(info.resumed for info in infos)


async def test_resume_falls_back_to_full_handshakes_without_a_ticket(
    pair_factory: PairFactory,
) -> None:
    # A TLS 1.3 server that issues no tickets, like some RFC 3436 peers.
    server_ctx = server_context(ssl.TLSVersion.TLSv1_3)
    server_ctx.num_tickets = 0
    async with pair_factory(
        client_ctx=client_context(ssl.TLSVersion.TLSv1_3),
        server_ctx=server_ctx,
        client_options={"handshake": "resume", "outbound_streams": 3, "max_inbound_streams": 3},
    ) as pair:
        infos = [pair.client.channel_info(i) for i in range(3)]
        assert not any(info.resumed for info in infos)
        assert "no resumable session" in infos[1].note
        await echo_once(pair.client.channels[2], b"works", pair.server.channels[2])


async def test_session_cache_resumes_a_later_association(
    transport: TransportName, tls_version: ssl.TLSVersion
) -> None:
    cache = SessionCache()
    client_ctx = client_context(tls_version)
    server_ctx = server_context(tls_version)

    async def handler(association: SecureAssociation) -> None:
        await association.channels[0].send_all(b"hello")
        assert await association.channels[0].receive_some() == b""

    async with serving(handler, transport, server_ctx) as listener:
        resumed = []
        for _ in range(2):
            async with connect(
                transport,
                listener.port,
                client_ctx,
                session_cache=cache,
                handshake="resume",
                outbound_streams=2,
            ) as client:
                assert await client.channels[0].receive_some() == b"hello"
                resumed.append([client.channel_info(i).resumed for i in range(2)])
    assert resumed == [[False, True], [True, True]]


async def test_resume_against_a_server_that_reads_every_channel_at_once(
    transport: TransportName, tls_version: ssl.TLSVersion
) -> None:
    # Regression: the server's TLS 1.3 session tickets on stream 0 were sent by a task
    # that waited for the ClientHello, which the handler's own read could take first;
    # the tickets then waited for the handler's first write, and no stream resumed.
    async def echo_every_channel(association: SecureAssociation) -> None:
        async def echo(channel: trio.SSLStream[Any]) -> None:
            while data := await channel.receive_some():
                await channel.send_all(data)

        async with trio.open_nursery() as nursery:
            for channel in association.channels:
                nursery.start_soon(echo, channel)

    streams = {"outbound_streams": 8, "max_inbound_streams": 8}
    async with serving(
        echo_every_channel, transport, server_context(tls_version), **streams
    ) as listener:
        for _ in range(3):  # the race it guards against was timing-dependent
            async with connect(
                transport,
                listener.port,
                client_context(tls_version),
                handshake="resume",
                close_timeout=1.0,
                **streams,
            ) as client:
                infos = [client.channel_info(i) for i in range(8)]
                assert [info.resumed for info in infos] == [False] + [True] * 7, infos
                for i, channel in enumerate(client.channels):
                    await channel.send_all(b"echo %d" % i)
                    assert await channel.receive_some() == b"echo %d" % i


@pytest.mark.parametrize("strategy", ["parallel", "resume"])
async def test_channels_know_their_handshake_before_any_io(
    pair_factory: PairFactory, tls_version: ssl.TLSVersion, strategy: str
) -> None:
    # The association drives the handshakes itself; the channels' SSLStreams must still
    # answer version(), cipher(), getpeercert() at once, as after do_handshake().
    async with strategy_pair(pair_factory, tls_version, strategy) as pair:
        client, server = pair.client, pair.server
        expected = "TLSv1.3" if tls_version is ssl.TLSVersion.TLSv1_3 else "TLSv1.2"
        for channel in client.channels:
            assert channel.version() == expected
            assert channel.cipher() is not None
            assert channel.getpeercert(binary_form=True) == client.peer_certificate
        # The server completes its last handshake a moment after the client (TLS 1.3:
        # on the client's Finished); then its channels know too, untouched by the handler.
        with trio.fail_after(10):
            while any(server.channel_info(i).finished_at is None for i in range(4)):
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            await trio.testing.wait_all_tasks_blocked()
        for i, channel in enumerate(server.channels):
            assert channel.version() == expected
            assert channel.session_reused == bool(client.channel_info(i).resumed)


async def test_a_peer_that_shuts_down_mid_handshake_fails_the_set_up() -> None:
    client_transport, server_transport = memory_pair(client_outbound=2, server_outbound=2)

    async def peer() -> None:
        await server_transport.receive()  # a ClientHello; no answer
        await server_transport.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            with pytest.raises(HandshakeError) as info:
                async with wrap_transport(
                    client_transport,
                    client_context(),
                    server_side=False,
                    server_hostname=SERVER_NAME,
                ):
                    pytest.fail("the association must not open")  # pragma: no cover
    assert info.value.stream in (0, 1)


async def test_resume_keeps_application_data_read_while_waiting_for_a_ticket() -> None:
    # A server that speaks first on stream 0, before the client resumes the others:
    # the ticket harvest must hand that data to the user, not swallow it.
    server_ctx = server_context(ssl.TLSVersion.TLSv1_3)

    async def handler(association: SecureAssociation) -> None:
        await association.channels[0].send_all(b"server speaks first")
        await trio.sleep_forever()

    async with (
        serving(handler, "memory", server_ctx) as listener,
        connect(
            "memory",
            listener.port,
            client_context(ssl.TLSVersion.TLSv1_3),
            handshake="resume",
            outbound_streams=3,
            close_timeout=0.5,
        ) as client,
    ):
        assert await client.channels[0].receive_some() == b"server speaks first"


async def test_mutual_tls(pair_factory: PairFactory, tls_version: ssl.TLSVersion) -> None:
    async with pair_factory(
        client_ctx=client_context(tls_version, client_cert=True),
        server_ctx=server_context(tls_version, require_client_cert=True),
        client_options={"outbound_streams": 3},
    ) as pair:
        for i in range(3):
            await echo_once(pair.client.channels[i], b"mutual", pair.server.channels[i])
        assert pair.server.peer_certificate is not None
        assert pair.client.peer_certificate is not None
        san = pair.server.channels[1].getpeercert()["subjectAltName"]
        assert ("DNS", "client.example") in san


async def test_mutual_tls_refuses_a_client_without_certificate(transport: TransportName) -> None:
    # TLS 1.2: the server refuses before its Finished, so the client's setup fails.
    with pytest.raises(AssociationError):
        async with association_pair(
            transport,
            server_ctx=server_context(ssl.TLSVersion.TLSv1_2, require_client_cert=True),
            client_options={"outbound_streams": 2},
        ):
            pytest.fail("the association must not open")  # pragma: no cover


async def test_thirty_streams(pair_factory: PairFactory) -> None:
    async with pair_factory(
        client_options={"outbound_streams": 30, "max_inbound_streams": 30},
        server_options={"outbound_streams": 30, "max_inbound_streams": 30},
    ) as pair:
        assert len(pair.client.channels) == 30

        async def one(i: int) -> None:
            await echo_once(pair.client.channels[i], b"stream %d" % i * 50, pair.server.channels[i])

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(one, i)


async def test_large_message_through_one_channel(pair_factory: PairFactory) -> None:
    payload = bytes(range(256)) * 400  # 100 KiB: several maximum-size TLS records
    async with pair_factory(client_options={"outbound_streams": 2}) as pair:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pair.client.channels[1].send_all, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await pair.server.channels[1].receive_some()
        assert got == payload


async def test_records_that_arrive_together_reach_each_channel_whole_and_in_order(
    pair_factory: PairFactory,
) -> None:
    # Many records on many channels, all sent before anyone reads: the demux takes in
    # batches of what is ready at once, and every byte must land on its channel in order.
    channels, writes = 8, 20
    async with pair_factory(
        client_options={"outbound_streams": channels, "max_inbound_streams": channels},
        server_options={"outbound_streams": channels, "max_inbound_streams": channels},
    ) as pair:

        async def write(i: int) -> None:
            for n in range(writes):
                await pair.client.channels[i].send_all(b"%d:%d;" % (i, n) * 40)

        async def read(i: int) -> None:
            expected = b"".join(b"%d:%d;" % (i, n) * 40 for n in range(writes))
            got = bytearray()
            while len(got) < len(expected):
                got += await pair.server.channels[i].receive_some()
            assert got == expected

        async with trio.open_nursery() as nursery:
            for i in range(channels):
                nursery.start_soon(write, i)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as nursery:
            for i in range(channels):
                nursery.start_soon(read, i)


def mitm_server_context(bad_handshake_index: int) -> ssl.SSLContext:
    """A server that presents a different (valid) certificate on one handshake."""
    good = server_context()
    bad = server_context(cert=OTHER_SERVER_CERT)
    seen = 0

    def pick(obj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        nonlocal seen
        if seen == bad_handshake_index:
            obj.context = bad
        seen += 1

    good.sni_callback = pick
    return good


async def test_a_different_peer_certificate_on_one_stream_aborts(
    transport: TransportName, tls_version: ssl.TLSVersion
) -> None:
    with pytest.raises(PeerIdentityError) as info:
        async with association_pair(
            transport,
            client_ctx=client_context(tls_version),
            server_ctx=mitm_server_context(bad_handshake_index=2),
            client_options={"outbound_streams": 4, "handshake": "parallel"},
        ):
            pytest.fail("the association must not open")  # pragma: no cover
    # Whichever stream completed first was pinned; the error names the other one.
    assert info.value.stream is not None
    assert "differs from the one presented on stream" in str(info.value)


async def test_a_different_peer_certificate_on_a_lazy_stream_fails_before_data(
    transport: TransportName,
) -> None:
    async with association_pair(
        transport,
        server_ctx=mitm_server_context(bad_handshake_index=1),
        client_options={"outbound_streams": 3, "handshake": "lazy"},
    ) as pair:
        await echo_once(pair.client.channels[0], b"fine", pair.server.channels[0])
        with pytest.raises(trio.BrokenResourceError):
            await pair.client.channels[2].send_all(b"secret for the real server only")
        assert isinstance(pair.client.error, PeerIdentityError)
        assert pair.client.error.stream == 2
        with pytest.raises(AssociationError):
            await pair.client.channels[0].send_all(b"x")


async def test_a_tls_error_on_one_stream_aborts_the_association(
    pair_factory: PairFactory,
) -> None:
    async with pair_factory(client_options={"outbound_streams": 3}) as pair:
        # A forged application-data record: fails TLS's integrity check.
        forged = b"\x17\x03\x03\x00\x20" + bytes(32)
        await pair.server.transport.send_message(forged, stream=2)
        with pytest.raises(trio.BrokenResourceError):
            await pair.client.channels[2].receive_some()
        assert isinstance(pair.client.error, HandshakeError)
        assert pair.client.error.stream == 2
        # Other channels, and the peer, see the association gone.
        with pytest.raises(AssociationError):
            await pair.client.channels[0].send_all(b"x")
        with pytest.raises(AssociationAbortedError) as info:
            await pair.server.channels[1].receive_some()
        # The ABORT told the peer why (User-Initiated Abort cause), naming the stream,
        # except on Linux one-to-one sockets, which cannot send a reason.
        if pair.client.transport.kind != "kernel":
            assert "stream 2: TLS failure" in str(info.value)


async def test_unordered_message_on_a_tls_stream_is_a_protocol_error(
    pair_factory: PairFactory,
) -> None:
    async with no_leaks(), pair_factory(client_options={"outbound_streams": 2}) as pair:
        await pair.server.transport.send_message(b"\x17\x03\x03\x00\x01x", stream=1, unordered=True)
        with pytest.raises(RemoteProtocolError) as info:
            await pair.client.channels[0].receive_some()
        assert info.value.stream == 1
        # The peer sees the association aborted too.
        with pytest.raises(AssociationError):
            await pair.server.channels[0].receive_some()


async def test_unread_channel_does_not_block_others_under_budget(
    pair_factory: PairFactory,
) -> None:
    async with pair_factory(
        client_options={"outbound_streams": 3, "stream_budget": 256 * 1024}
    ) as pair:
        # 128 KiB that nobody reads on stream 1...
        await pair.server.channels[1].send_all(b"a" * 128 * 1024)
        # ...does not hold back stream 2.
        await echo_once(pair.server.channels[2], b"b" * 1000, pair.client.channels[2])
        got = b""
        while len(got) < 128 * 1024:
            got += await pair.client.channels[1].receive_some()
        assert got == b"a" * 128 * 1024


async def test_pause_policy_stops_reading_at_the_stream_budget() -> None:
    async with association_pair(
        client_options={"outbound_streams": 3, "stream_budget": 32 * 1024}
    ) as pair:
        await pair.server.channels[1].send_all(b"a" * 64 * 1024)
        await pair.server.channels[2].send_all(b"later")
        await trio.testing.wait_all_tasks_blocked()
        # Stream 1 is over budget, so the demux stopped reading: stream 2 waits too.
        with trio.move_on_after(0) as scope:
            await pair.client.channels[2].receive_some()
        assert scope.cancelled_caught
        got = b""
        while len(got) < 64 * 1024:
            got += await pair.client.channels[1].receive_some()
        assert await pair.client.channels[2].receive_some() == b"later"
        assert pair.client.error is None


async def test_abort_policy_aborts_at_the_stream_budget(pair_factory: PairFactory) -> None:
    async with (
        no_leaks(),
        pair_factory(
            client_options={"outbound_streams": 3, "stream_budget": 32 * 1024, "overflow": "abort"}
        ) as pair,
    ):
        with pytest.raises(trio.BrokenResourceError):
            await pair.server.channels[1].send_all(b"a" * 64 * 1024)
            await pair.server.channels[0].receive_some()
        assert isinstance(pair.client.error, BufferLimitError)
        assert pair.client.error.stream == 1


async def test_client_close_is_seen_by_the_server(pair_factory: PairFactory) -> None:
    async with pair_factory(client_options={"outbound_streams": 3}) as pair:
        server = pair.server
        async with trio.open_nursery() as nursery:

            async def server_reads(i: int) -> None:
                assert await server.channels[i].receive_some() == b"bye %d" % i
                # The client's close_notify: a clean end of this channel.
                assert await server.channels[i].receive_some() == b""
                await server.channels[i].aclose()

            for i in range(3):
                nursery.start_soon(server_reads, i)
            for i in range(3):
                await pair.client.channels[i].send_all(b"bye %d" % i)
            await pair.client.aclose()
        await pair.client.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await pair.client.channels[0].send_all(b"x")
        # The server saw SCTP's graceful shutdown after the close_notify records.
        while not isinstance(await server.receive_event(), ShutdownReceived):
            pass


async def test_server_close_is_seen_by_the_client(pair_factory: PairFactory) -> None:
    async with pair_factory(client_options={"outbound_streams": 3}) as pair:
        await pair.server.channels[1].send_all(b"last words")
        pair.release_server.set()  # the handler returns: the server closes
        assert await pair.client.channels[1].receive_some() == b"last words"
        for i in range(3):
            assert await pair.client.channels[i].receive_some() == b""
            await pair.client.channels[i].aclose()  # our close_notify, awaited by the server
        event = await pair.client.receive_event()
        while not isinstance(event, ShutdownReceived):
            event = await pair.client.receive_event()


async def test_abort_from_the_client(pair_factory: PairFactory) -> None:
    async with pair_factory() as pair:
        pair.client.abort()
        pair.client.abort()
        with pytest.raises(trio.ClosedResourceError):
            await pair.client.channels[0].send_all(b"x")
        with pytest.raises(AssociationAbortedError):
            await pair.server.channels[0].receive_some()


async def test_abort_from_the_server(pair_factory: PairFactory) -> None:
    async with pair_factory() as pair:
        pair.server.abort()
        with pytest.raises(AssociationAbortedError):
            await pair.client.channels[3].receive_some()
        assert isinstance(pair.client.error, AssociationAbortedError)


async def test_closing_one_channel_leaves_the_others(pair_factory: PairFactory) -> None:
    async with pair_factory(client_options={"outbound_streams": 3}) as pair:
        await pair.client.channels[1].aclose()
        assert await pair.server.channels[1].receive_some() == b""
        event = await pair.server.receive_event()
        assert event == StreamReset((1,)) or pair.server.transport.kind != "memory"
        await echo_once(pair.client.channels[2], b"alive", pair.server.channels[2])
        await echo_once(pair.server.channels[0], b"alive", pair.client.channels[0])


async def test_body_exception_aborts_and_propagates(transport: TransportName) -> None:
    class Boom(Exception):
        pass

    seen: list[BaseException] = []
    server_saw_it = trio.Event()

    async def handler(association: SecureAssociation) -> None:
        try:
            await association.channels[0].receive_some()
        except trio.BrokenResourceError as exc:
            seen.append(exc)
            server_saw_it.set()

    async with serving(handler, transport) as listener:
        with pytest.raises(Boom):
            async with connect(transport, listener.port):
                raise Boom
        with trio.fail_after(30):  # a safety net for a hang, not a timing
            await server_saw_it.wait()
    assert isinstance(seen[0], AssociationAbortedError)


async def test_cancelled_aclose_aborts(pair_factory: PairFactory) -> None:
    async with no_leaks(), pair_factory() as pair:
        with trio.CancelScope() as scope:
            scope.cancel()
            await pair.client.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await pair.client.channels[0].receive_some()
        with pytest.raises(AssociationError):
            await pair.server.channels[0].receive_some()


async def test_sctp_shutdown_without_close_notify_is_a_truncation_not_an_end(
    pair_factory: PairFactory,
) -> None:
    async with no_leaks(), pair_factory(client_options={"outbound_streams": 2}) as pair:
        await pair.server.channels[1].send_all(b"partial")
        # The peer ends SCTP gracefully but never sends close_notify on the channels.
        await pair.server.transport.aclose()
        assert await pair.client.channels[1].receive_some() == b"partial"
        with pytest.raises(trio.BrokenResourceError) as info:
            await pair.client.channels[1].receive_some()
        assert isinstance(info.value.__cause__, ssl.SSLError)  # EOF without close_notify


async def test_a_handshake_that_stalls_is_cut_off_on_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server_transport = memory_pair(client_outbound=3, server_outbound=3)
    options = AssociationOptions(handshake_timeout=5)
    async with (
        no_leaks(),
        wrap_transport(server_transport, server_context(), options, server_side=True) as server,
    ):
        # A ClientHello record announcing 100 bytes, of which 10 ever arrive.
        await client.send_message(b"\x16\x03\x01\x00\x64" + bytes(10), stream=1)
        with pytest.raises(AssociationAbortedError):
            while True:
                await client.receive()
        assert isinstance(server.error, HandshakeError)
        assert server.error.stream == 1
        assert "did not complete within 5" in str(server.error)


async def test_statistics_show_buffers_the_pause_and_the_handshakes() -> None:
    async with association_pair(
        client_options={"outbound_streams": 3, "handshake": "lazy", "stream_budget": 32 * 1024}
    ) as pair:
        client = pair.client
        before = client.statistics()
        assert before.state == "open"
        assert (before.handshakes_completed, before.handshakes_not_started) == (0, 3)
        await client.channels[1].do_handshake()
        await pair.server.channels[1].send_all(b"a" * 64 * 1024)
        await trio.testing.wait_all_tasks_blocked()
        paused = client.statistics()
        assert (paused.handshakes_completed, paused.handshakes_not_started) == (1, 2)
        # Nobody reads channel 1: the demux stopped at its budget.
        assert paused.paused_by == 1
        assert paused.buffered_per_stream[0] == paused.buffered_per_stream[2] == 0
        assert paused.buffered_per_stream[1] > 32 * 1024
        assert paused.buffered == paused.buffered_per_stream[1]
        assert (paused.events_queued, paused.plain_messages_queued) == (0, 0)
        got = b""
        while len(got) < 64 * 1024:
            got += await client.channels[1].receive_some()
        after = client.statistics()
        assert (after.paused_by, after.buffered) == (None, 0)
        assert after.handshakes_completed == 1
        client.abort()
        assert client.statistics().state == "closed"


async def test_a_listener_runs_accepted_associations_in_its_own_nursery() -> None:
    client_transport, server_transport = memory_pair(client_outbound=2, server_outbound=2)
    async with trio.open_nursery() as listener_nursery:
        server = SecureAssociation(server_transport, server_context(), server_side=True)
        assert await listener_nursery.start(run_association, server) is server
        async with wrap_client(client_transport) as client:
            await echo_once(client.channels[1], b"hi", server.channels[1])
            # Both ends close together (each waits for the other's close_notify); the
            # server's run_association then returns, and the listener's nursery ends.
            listener_nursery.start_soon(server.aclose)
    assert server.statistics().state == "closed"
