"""SCTP-AUTH (RFC 4895) on the udp transport: ``TransportOptions(auth=True)`` reaches the
core, ``transport.auth`` manages the keys, a peer without SCTP-AUTH fails typed.

(The kernel interop of the same, both directions and tampered packets, is in
``tests/test_auth_interop.py``, run in the VM.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from trio_sctls import AuthNotSupportedError, TransportOptions
from trio_sctls.sctp._auth import AssociationAuth
from trio_sctls.transport import AuthKeys, Message, MessageTransport
from trio_sctls.transport._registry import open_client, open_server


@asynccontextmanager
async def auth_pair(
    client_auth: bool = True, server_auth: bool = True
) -> AsyncIterator[tuple[MessageTransport, MessageTransport]]:
    server_options = TransportOptions(transport="udp", udp_port=0, auth=server_auth)
    async with open_server(0, ("127.0.0.1",), server_options) as listener:
        options = TransportOptions(
            transport="udp", remote_udp_port=listener.udp_port, auth=client_auth
        )
        async with open_client(None, listener.port, options) as client:
            server = await listener.accept()  # held in its backlog once up
            yield client, server
            client.abort()
            server.abort()


async def echo_once(a: MessageTransport, b: MessageTransport, data: bytes) -> None:
    await a.send_message(data, stream=1, ppid=46)
    got = await b.receive()
    assert isinstance(got, Message)
    assert (got.data, got.stream, got.ppid) == (data, 1, 46)


async def test_auth_true_authenticates_data_and_exposes_the_keys() -> None:
    with trio.fail_after(20):
        async with auth_pair() as (client, server):
            assert isinstance(client.auth, AssociationAuth)
            assert isinstance(server.auth, AssociationAuth)
            keys: AuthKeys = client.auth
            await echo_once(client, server, b"signed")
            await echo_once(server, client, b"signed back")
            # RFC 6083 section 4.7: both add the new key, then switch, then drop key 0.
            for side in (client, server):
                assert side.auth is not None
                side.auth.add_key(1, b"k" * 64)
            for side in (client, server):
                assert side.auth is not None
                side.auth.activate_key(1)
            await echo_once(client, server, b"under key 1")
            for side in (client, server):
                assert side.auth is not None
                side.auth.delete_key(0)
            await echo_once(server, client, b"key 0 is gone")
            assert keys.active_key_id == 1
            with pytest.raises(ValueError, match="active"):
                keys.delete_key(1)
            assert client.auth.counters.dropped_chunks == 0
            assert server.auth.counters.dropped_chunks == 0


async def test_without_auth_there_are_no_keys() -> None:
    with trio.fail_after(20):
        async with auth_pair(False, False) as (client, server):
            assert client.auth is None and server.auth is None
            await echo_once(client, server, b"plain")


@pytest.mark.parametrize(("client_auth", "server_auth"), [(True, False), (False, True)])
async def test_a_peer_without_auth_fails_the_connect_typed(
    client_auth: bool, server_auth: bool
) -> None:
    with trio.fail_after(20), pytest.raises(AuthNotSupportedError, match="SCTP-AUTH"):
        async with auth_pair(client_auth, server_auth):
            pytest.fail("connected without SCTP-AUTH")
