"""SCTP-AUTH (RFC 4895) in the sans-IO core, on the simulated network.

Two authenticating ends exchange data with AUTH chunks on the wire (and the HMAC is
checked against one computed here from the RFC's recipe, not from the code under test);
DATA without AUTH, with a wrong HMAC, an unknown key or an HMAC we never offered is
dropped and counted while the association lives on; keys switch the way RFC 6083
section 4.7 does it; a peer without SCTP-AUTH is refused when it is required.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sctp.harness import Net, Node, chunks_of, connected, data_chunks, fast_config, pair, tap
from tests.sctp.test_fuzz_parsers import PARSERS
from trio_sctls.sctp import (
    Association,
    AssociationAborted,
    LocalProtocolError,
    Packet,
    PeerError,
    SCTPConfig,
    State,
)
from trio_sctls.sctp._auth import AssociationAuth
from trio_sctls.sctp._auth_wire import (
    AuthChunk,
    ChunkListParam,
    HmacAlgoParam,
    RandomParam,
    UnsupportedHmacIdentifier,
)
from trio_sctls.sctp._causes import MissingMandatoryParameter
from trio_sctls.sctp._chunks import CookieEchoChunk, DataChunk, InitAckChunk, InitChunk
from trio_sctls.sctp._packet import finish_packet

AUTH = fast_config(auth=True)


def auth_of(net: Net, side: int) -> AssociationAuth:
    auth = net.nodes[side].assoc.auth
    assert auth is not None
    return auth


def with_crc(data: bytes | bytearray) -> bytes:
    buf = bytearray(data)
    buf[8:12] = bytes(4)
    return finish_packet(buf)


def tamper_first_data(change: object) -> tuple[list[bytes], object]:
    """A hook that rewrites the first DATA packet from the client once (``change`` gets
    the datagram, returns its replacement); the originals it saw are kept."""
    seen: list[bytes] = []

    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        if i == 0 and not seen and data_chunks(d):
            seen.append(d)
            return [change(d)]  # type: ignore[operator]
        return [d]

    return seen, hook


def test_two_authenticating_ends_exchange_data_with_auth_chunks_on_the_wire() -> None:
    wire: list[tuple[int, bytes]] = []
    net = connected(pair(AUTH, hook=tap(lambda i, d, now: wire.append((i, d)))))
    net.a.assoc.send(b"x" * 5000, 1)
    net.b.assoc.send(b"answer", 2)
    assert net.run_until(lambda: bool(net.b.messages() and net.a.messages()))
    assert net.b.messages() == [b"x" * 5000]
    assert net.a.messages() == [b"answer"]
    with_data = [(i, d) for i, d in wire if data_chunks(d)]
    assert with_data
    for _, d in with_data:
        kinds = [type(c) for c in chunks_of(d)]
        assert AuthChunk in kinds
        assert kinds.index(AuthChunk) < kinds.index(DataChunk)
        assert len(d) <= AUTH.max_packet_size
    # The HMAC, computed here from the INIT and INIT ACK on the wire (RFC 4895 6.1, 6.2).
    (init,) = [c for _, d in wire for c in chunks_of(d) if isinstance(c, InitChunk)]
    (ack,) = [c for _, d in wire for c in chunks_of(d) if isinstance(c, InitAckChunk)]

    def vector(chunk: InitChunk | InitAckChunk) -> bytes:
        byclass = {type(p): p for p in chunk.params}
        parts = [byclass[RandomParam], byclass[ChunkListParam], byclass[HmacAlgoParam]]
        return b"".join(bytes(p)[: 4 + len(p.value())] for p in parts)

    v1, v2 = sorted((vector(init), vector(ack)), key=lambda v: int.from_bytes(v, "big"))
    key = b"" + v1 + v2  # endpoint-pair shared key 0 is empty
    _, d = with_data[0]
    start = 12  # the AUTH chunk leads these packets
    auth = chunks_of(d)[0]
    assert isinstance(auth, AuthChunk)
    assert (auth.key_id, auth.hmac_id) == (0, 3)  # SHA-256: both ends prefer it
    covered = bytearray(d[start:])
    covered[8 : 8 + 32] = bytes(32)
    assert hmac.new(key, covered, hashlib.sha256).digest() == auth.hmac
    assert auth_of(net, 0).counters.dropped_chunks == 0
    assert auth_of(net, 1).counters.dropped_chunks == 0


@pytest.mark.parametrize("endpoint", [False, True])
def test_an_endpoint_server_authenticates_too(endpoint: bool) -> None:
    net = connected(pair(AUTH, endpoint=endpoint))
    net.a.assoc.send(b"to the server", 0)
    assert net.run_until(lambda: bool(net.b.messages()))
    assert auth_of(net, 1).verify_types == frozenset({0, 192})  # DATA, FORWARD TSN
    assert auth_of(net, 0).sign_types == frozenset({0, 192})


def strip_auth(d: bytes) -> bytes:
    packet = Packet.parse(d)
    packet.chunks = [c for c in packet.chunks if not isinstance(c, AuthChunk)]
    return bytes(packet)


def flip_hmac(d: bytes) -> bytes:
    buf = bytearray(d)
    assert buf[12] == AuthChunk.CODE
    buf[12 + 8] ^= 0x01
    return with_crc(buf)


def flip_payload(d: bytes) -> bytes:
    buf = bytearray(d)
    assert buf[12 + 40] == DataChunk.CODE  # AUTH (SHA-256: 40 bytes), then DATA
    buf[12 + 40 + 16] ^= 0x80  # the first byte of its user data
    return with_crc(buf)


def other_key(d: bytes) -> bytes:
    buf = bytearray(d)
    struct.pack_into("!H", buf, 12 + 4, 7)  # shared key identifier 7: never installed
    return with_crc(buf)


@pytest.mark.parametrize(
    ("change", "counter"),
    [
        (strip_auth, "unauthenticated"),
        (flip_hmac, "bad_hmac"),
        (flip_payload, "bad_hmac"),
        (other_key, "unknown_key"),
    ],
)
def test_bad_authentication_drops_the_data_counts_it_and_the_association_lives(
    change: object, counter: str
) -> None:
    seen, hook = tamper_first_data(change)
    net = connected(pair(AUTH))
    net.hook = hook  # type: ignore[assignment]
    net.a.assoc.send(b"first", 0)
    net.run_for(0.1)  # delivered (tampered) well before T3 resends it
    assert seen
    assert net.b.messages() == []
    counters = auth_of(net, 1).counters
    assert getattr(counters, counter) == 1
    assert counters.dropped_chunks >= 1
    # The retransmission, untouched, gets through; the association never noticed.
    assert net.run_until(lambda: net.b.messages() == [b"first"], 10)
    net.a.assoc.send(b"second", 0)
    assert net.run_until(lambda: net.b.messages() == [b"first", b"second"], 10)
    assert net.a.assoc.state is State.ESTABLISHED and net.b.assoc.state is State.ESTABLISHED
    assert not net.a.of_type(AssociationAborted) and not net.b.of_type(AssociationAborted)


def test_an_hmac_we_never_offered_earns_an_error_and_is_dropped() -> None:
    def sha1_id(d: bytes) -> bytes:
        buf = bytearray(d)
        struct.pack_into("!H", buf, 12 + 6, 2)  # HMAC identifier 2: reserved
        return with_crc(buf)

    _, hook = tamper_first_data(sha1_id)
    net = connected(pair(AUTH))
    net.hook = hook  # type: ignore[assignment]
    net.a.assoc.send(b"first", 0)
    assert net.run_until(lambda: bool(net.a.of_type(PeerError)), 5)
    (error,) = net.a.of_type(PeerError)
    assert isinstance(error, PeerError)
    assert error.causes == (UnsupportedHmacIdentifier(2),)
    assert auth_of(net, 1).counters.unsupported_hmac == 1
    assert net.run_until(lambda: net.b.messages() == [b"first"], 10)


def test_sha1_is_used_when_the_peer_offers_only_sha1() -> None:
    wire: list[bytes] = []
    server = fast_config(auth=True, auth_hmacs=(1,))
    net = connected(pair(AUTH, server, hook=tap(lambda i, d, now: wire.append(d))))
    net.a.assoc.send(b"sha-1", 0)
    net.b.assoc.send(b"sha-1 too", 0)
    assert net.run_until(lambda: bool(net.b.messages() and net.a.messages()))
    hmac_ids = {c.hmac_id for d in wire for c in chunks_of(d) if isinstance(c, AuthChunk)}
    assert hmac_ids == {1}  # each end uses the peer's favourite among its own


def test_key_switch_in_the_shape_of_rfc_6083() -> None:
    net = connected(pair(AUTH))
    a, b = auth_of(net, 0), auth_of(net, 1)
    secret = bytes(range(64))
    # The client switches first: the server does not hold key 1 yet, so it drops.
    a.add_key(1, secret)
    a.activate_key(1)
    assert a.active_key_id == 1
    net.a.assoc.send(b"under key 1", 0)
    net.run_for(0.1)
    assert net.b.messages() == []
    assert b.counters.unknown_key == 1
    # Once it has the key, the retransmission gets through; key 0 still works too.
    b.add_key(1, secret)
    assert net.run_until(lambda: net.b.messages() == [b"under key 1"], 10)
    net.b.assoc.send(b"still under key 0", 0)
    assert net.run_until(lambda: net.a.messages() == [b"still under key 0"], 10)
    b.activate_key(1)
    b.deactivate_key(0)
    net.b.assoc.send(b"server on key 1", 0)
    assert net.run_until(lambda: len(net.a.messages()) == 2, 10)
    # The old key goes: what is signed with it is dropped from then on.
    a.delete_key(0)
    b.delete_key(0)
    assert a.key_ids == b.key_ids == (1,)
    net.a.assoc.send(b"after the switch", 0)
    assert net.run_until(lambda: net.b.messages()[-1:] == [b"after the switch"], 10)
    forged = build_data_signed_with(net, key_id=0)
    before = b.counters.unknown_key
    net.inject(1, forged)
    net.run_for(0.05)
    assert b.counters.unknown_key == before + 1


def key_ids_on_the_wire(wire: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """For each DATA packet: the key its AUTH chunk names, and the payloads it carries."""
    out = []
    for d in wire:
        if data_chunks(d):
            (auth,) = [c for c in chunks_of(d) if isinstance(c, AuthChunk)]
            out.append((auth.key_id, [c.user_data for c in data_chunks(d)]))
    return out


@pytest.mark.parametrize("lose_first", [False, True])
def test_messages_keep_the_key_they_were_queued_under(lose_first: bool) -> None:
    """RFC 6083's key switch, as DTLS drives it: the client queues the records that let
    the server compute the new key (its key exchange and ChangeCipherSpec), then
    activates that key and queues its Finished. The records queued before the switch
    must travel, and be retransmitted, under the old key: signed with the new one they
    would be dropped by a server that can only learn the new key by reading them (the
    handshake then never completed). Only the Finished may be dropped."""
    wire: list[bytes] = []
    lost: list[bytes] = []

    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        if i != 0:
            return [d]
        if lose_first and not lost and data_chunks(d):
            lost.append(d)
            return []
        wire.append(d)
        return [d]

    net = connected(pair(AUTH, hook=hook))
    a, b = auth_of(net, 0), auth_of(net, 1)
    secret = bytes(range(64))
    net.a.assoc.send(b"key exchange", 0)
    net.a.assoc.send(b"change cipher spec", 0)
    a.add_key(1, secret)
    a.activate_key(1)
    net.a.assoc.send(b"finished", 0)
    # The server reads what was delivered, and learns key 1 from the second message.
    assert net.run_until(lambda: len(net.b.messages()) >= 2, 10)
    assert net.b.messages()[:2] == [b"key exchange", b"change cipher spec"]
    b.add_key(1, secret)
    assert net.run_until(lambda: net.b.messages()[2:] == [b"finished"], 10)
    sent = key_ids_on_the_wire(wire)
    assert {key for key, payloads in sent if b"key exchange" in payloads} == {0}
    assert {key for key, payloads in sent if b"change cipher spec" in payloads} == {0}
    assert {key for key, payloads in sent if b"finished" in payloads} == {1}
    assert [key for key, _ in key_ids_on_the_wire(lost)] == ([0] if lose_first else [])
    assert b.counters.bad_hmac == 0
    # The Finished alone: first sent and, after a loss, retransmitted with the rest.
    assert b.counters.dropped_chunks == 2 * b.counters.unknown_key <= 4


def test_a_message_held_by_a_stream_reset_keeps_its_key() -> None:
    """A message sent while its stream is being reset waits (RFC 6525): it leaves under
    the key active when it was sent, not under one activated meanwhile."""
    wire: list[bytes] = []
    net = connected(pair(AUTH, hook=tap(lambda i, d, now: wire.append(d) if i == 0 else None)))
    a, b = auth_of(net, 0), auth_of(net, 1)
    net.a.assoc.reset_streams([1], net.now)
    net.a.assoc.send(b"held", 1)
    for keys in (a, b):
        keys.add_key(1, b"k" * 64)
    a.activate_key(1)
    net.a.assoc.send(b"after the switch", 2)
    assert net.run_until(lambda: len(net.b.messages()) == 2, 10)
    sent = {payloads[0]: key for key, payloads in key_ids_on_the_wire(wire)}
    assert sent == {b"held": 0, b"after the switch": 1}


def build_data_signed_with(net: Net, key_id: int) -> bytes:
    """A DATA packet for the server as if signed with ``key_id`` (a key it deleted)."""
    client = net.a.assoc
    header = struct.pack("!HHII", client.local_port, client.remote_port, client._peer_tag, 0)
    data = bytes(DataChunk(0x12345, 0, 9, 0, b"forged"))
    auth = struct.pack("!BBHHH", AuthChunk.CODE, 0, 40, key_id, 3) + bytes(32)
    return with_crc(header + auth + data)


def test_key_management_mistakes_raise() -> None:
    net = connected(pair(AUTH))
    auth = auth_of(net, 0)
    with pytest.raises(LocalProtocolError):
        auth.activate_key(5)
    with pytest.raises(LocalProtocolError):
        auth.delete_key(0)  # the active key
    with pytest.raises(LocalProtocolError):
        auth.deactivate_key(0)
    with pytest.raises(LocalProtocolError):
        auth.add_key(70000, b"k")
    with pytest.raises(LocalProtocolError):
        auth.add_key(0, b"another secret for the active key")
    auth.add_key(2, b"k")
    auth.deactivate_key(2)
    with pytest.raises(LocalProtocolError):
        auth.activate_key(2)


@pytest.mark.parametrize("endpoint", [False, True])
def test_a_server_requiring_auth_refuses_a_client_without_it(endpoint: bool) -> None:
    net = pair(fast_config(), AUTH, endpoint=endpoint)
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.closed, 30)
    (aborted,) = net.a.of_type(AssociationAborted)
    assert isinstance(aborted, AssociationAborted)
    assert aborted.by_peer
    assert aborted.causes == (MissingMandatoryParameter((0x8002, 0x8004)),)


def test_a_client_requiring_auth_aborts_a_server_without_it() -> None:
    net = pair(AUTH, fast_config())
    net.a.assoc.connect(net.now)
    assert net.run_until(lambda: net.a.assoc.closed, 30)
    (aborted,) = net.a.of_type(AssociationAborted)
    assert isinstance(aborted, AssociationAborted)
    assert not aborted.by_peer
    assert "SCTP" in aborted.reason or "0x8002" in aborted.reason
    assert not net.b.assoc.established


def test_without_auth_nothing_changes_on_the_wire() -> None:
    wire: list[bytes] = []
    net = connected(pair(fast_config(), hook=tap(lambda i, d, now: wire.append(d))))
    assert net.a.assoc.auth is None and net.b.assoc.auth is None
    kinds = {
        type(p)
        for d in wire
        for c in chunks_of(d)
        if isinstance(c, InitChunk | InitAckChunk)
        for p in c.params
    }
    assert RandomParam not in kinds


COOKIE_AUTH = fast_config(auth=True, auth_chunks=(0, 10))


@pytest.mark.parametrize("endpoint", [False, True])
def test_an_authenticated_cookie_echo(endpoint: bool) -> None:
    wire: list[bytes] = []
    net = connected(
        pair(AUTH, COOKIE_AUTH, endpoint=endpoint, hook=tap(lambda i, d, now: wire.append(d)))
    )
    (echo,) = [d for d in wire if any(isinstance(c, CookieEchoChunk) for c in chunks_of(d))]
    assert [type(c) for c in chunks_of(echo)][:2] == [AuthChunk, CookieEchoChunk]
    net.a.assoc.send(b"after an authenticated cookie", 0)
    assert net.run_until(lambda: bool(net.b.messages()))


@pytest.mark.parametrize("endpoint", [False, True])
def test_a_cookie_echo_without_its_auth_makes_nothing(endpoint: bool) -> None:
    def hook(i: int, d: bytes, now: float) -> list[bytes]:
        if any(isinstance(c, CookieEchoChunk) for c in chunks_of(d)):
            return [strip_auth(d)]
        return [d]

    net = pair(AUTH, COOKIE_AUTH, endpoint=endpoint, hook=hook)
    net.a.assoc.connect(net.now)
    net.run_for(3)
    assert not net.a.assoc.established
    if endpoint:
        assert not net.b.endpoint_assocs
    else:
        assert net.b.assoc.state is State.CLOSED


def test_full_packets_keep_room_for_the_auth_chunk() -> None:
    config = fast_config(auth=True, mtu=1280)
    assert config.max_fragment_size == SCTPConfig(mtu=1280).max_fragment_size - 40
    wire: list[bytes] = []
    net = connected(pair(config, hook=tap(lambda i, d, now: wire.append(d))))
    net.a.assoc.send(bytes(20000), 0)
    assert net.run_until(lambda: bool(net.b.messages()))
    assert max(len(d) for d in wire) <= config.max_packet_size
    assert max(len(d) for d in wire) > config.max_packet_size - 80  # and they are full


MUTANTS = settings(PARSERS, max_examples=60)


@MUTANTS
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_authenticated_packets_never_hurt_the_association(
    flips: list[tuple[int, int]],
) -> None:
    captured: list[bytes] = []
    net = connected(pair(AUTH, hook=tap(lambda i, d, now: captured.append(d) if i == 0 else None)))
    net.a.assoc.send(b"payload" * 10, 0)
    assert net.run_until(lambda: bool(net.b.messages()))
    signed = next(d for d in captured if data_chunks(d))
    buf = bytearray(signed)
    for where, value in flips:
        buf[12 + where % (len(buf) - 12)] = value
    net.inject(1, with_crc(buf))
    net.run_for(0.5)
    assert net.b.assoc.state is State.ESTABLISHED
    net.a.assoc.send(b"still fine", 0)
    assert net.run_until(lambda: net.b.messages()[-1:] == [b"still fine"], 10)


@pytest.mark.parametrize("seed", range(4))
def test_an_init_collision_agrees_on_one_key(seed: int) -> None:
    a = Association(AUTH, local_port=7000, remote_port=7001, rng=random.Random(seed))
    b = Association(AUTH, local_port=7001, remote_port=7000, rng=random.Random(seed + 10))
    net = Net(Node(a), Node(b), seed=seed, jitter=0.01)
    a.connect(0.0)
    b.connect(0.0)
    assert net.run_until(lambda: a.established and b.established, 30)
    a.send(b"ping")
    b.send(b"pong")
    assert net.run_until(lambda: net.b.messages() == [b"ping"] and net.a.messages() == [b"pong"])
    assert a.auth is not None and b.auth is not None
    assert a.auth.counters.dropped_chunks == b.auth.counters.dropped_chunks == 0
