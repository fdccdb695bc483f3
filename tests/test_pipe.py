"""StreamPipe alone: TLS record framing on the way out, buffering on the way in."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sctls import AssociationAbortedError
from trio_sctls._pipe import HANDSHAKE_WAIT, StreamPipe
from trio_sctls.transport import Message, MessageTransport
from trio_sctls.transport.memory import memory_pair


class Owner:
    """The smallest PipeOwner: a transport and a byte count."""

    def __init__(self, transport: MessageTransport) -> None:
        self.transport = transport
        self.consumed = 0
        self.closed: list[int] = []
        self.flushes: list[int] = []

    def check_usable(self) -> None:
        pass

    def note_consumed(self, nbytes: int) -> None:
        self.consumed += nbytes

    def pipe_closed(self, pipe: StreamPipe) -> None:
        self.closed.append(pipe.stream_id)

    def flush_requested(self, pipe: StreamPipe) -> None:
        self.flushes.append(pipe.stream_id)


def record(content_type: int, body: bytes) -> bytes:
    return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body


async def test_each_tls_record_becomes_one_ordered_message_with_the_ppid() -> None:
    client, server = memory_pair()
    pipe = StreamPipe(Owner(client), 3, ppid=47)
    records = [record(22, b"hello"), record(23, b"x" * 300), record(21, b"\x01\x00")]
    await pipe.send_all(b"".join(records))
    for expected in records:
        assert await server.receive() == Message(expected, 3, 47, False)


async def test_a_record_split_across_writes_is_sent_once_complete() -> None:
    client, server = memory_pair()
    pipe = StreamPipe(Owner(client), 0)
    whole = record(23, b"abcdef")
    await pipe.send_all(whole[:3])
    await pipe.send_all(whole[3:8])
    with trio.move_on_after(0) as scope:
        await server.receive()
    assert scope.cancelled_caught  # nothing sent yet
    await pipe.send_all(whole[8:])
    assert await server.receive() == Message(whole, 0)


async def test_fed_bytes_are_read_in_order_and_accounted() -> None:
    client, _ = memory_pair()
    owner = Owner(client)
    pipe = StreamPipe(owner, 1)
    assert pipe.feed(b"abc") and pipe.feed(b"defg")
    assert pipe.buffered == 7
    assert await pipe.receive_some(2) == b"ab"
    assert await pipe.receive_some() == b"cdefg"
    assert owner.consumed == 7 and pipe.buffered == 0


async def test_finish_ends_the_receive_side_and_breaks_the_send_side() -> None:
    client, _ = memory_pair()
    pipe = StreamPipe(Owner(client), 1)
    pipe.feed(b"tail")
    pipe.finish()
    assert await pipe.receive_some() == b"tail"
    assert await pipe.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await pipe.send_all(record(23, b"x"))


async def test_closing_drops_unread_bytes_and_discards_later_ones() -> None:
    client, _ = memory_pair()
    owner = Owner(client)
    pipe = StreamPipe(owner, 2)
    pipe.feed(b"unread")
    await pipe.aclose()
    await pipe.aclose()
    assert owner.consumed == 6 and owner.closed == [2]
    assert not pipe.feed(b"late")
    with pytest.raises(trio.ClosedResourceError):
        await pipe.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await pipe.send_all(b"x")


async def test_a_waiting_reader_is_woken_by_close() -> None:
    client, _ = memory_pair()
    pipe = StreamPipe(Owner(client), 0)

    async def reader() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await pipe.receive_some()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await pipe.receive_some()
        await pipe.aclose()


async def test_queued_records_reach_the_transport_at_once_without_a_checkpoint() -> None:
    client, server = memory_pair()
    owner = Owner(client)
    pipe = StreamPipe(owner, 4)
    pipe.queue_out(b"")
    first, second = record(22, b"flight"), record(22, b"more")
    pipe.queue_out(first + second)
    # Handed over synchronously, record by record: nothing left to flush.
    assert owner.flushes == [] and pipe.pending_out == b""
    assert server.receive_nowait() == Message(first, 4)
    assert server.receive_nowait() == Message(second, 4)


async def test_queued_bytes_the_transport_cannot_take_now_ask_for_a_flush_and_go_first() -> None:
    client, server = memory_pair(window=15)
    owner = Owner(client)
    pipe = StreamPipe(owner, 4)
    # 11, 9 and 6 bytes: the second does not fit behind the first, the third behind it.
    first, second, third = record(22, b"flight"), record(22, b"more"), record(23, b"d")
    pipe.queue_out(first)  # fits the peer's empty window
    pipe.queue_out(second)  # the window is full now: waits for the flush
    assert owner.flushes == [4] and pipe.pending_out == second
    assert server.receive_nowait() == Message(first, 4)
    await pipe.send_all(third)
    assert await server.receive() == Message(second, 4)
    assert await server.receive() == Message(third, 4)
    await pipe.flush()  # nothing left: a checkpoint only
    with trio.move_on_after(0) as scope:
        await server.receive()
    assert scope.cancelled_caught


async def test_whole_records_of_a_write_go_out_and_a_trailing_partial_one_waits() -> None:
    client, server = memory_pair()
    pipe = StreamPipe(Owner(client), 2)
    first, second, third = record(23, b"one"), record(23, b"two" * 100), record(23, b"three")
    # Nothing pending: the records are cut straight out of the caller's buffer.
    await pipe.send_all(first + second + third[:4])
    assert await server.receive() == Message(first, 2)
    assert await server.receive() == Message(second, 2)
    with trio.move_on_after(0) as scope:
        await server.receive()
    assert scope.cancelled_caught  # the partial record was held back
    # The rest completes it, and the record after it goes out too.
    fourth = record(21, b"\x01\x00")
    await pipe.send_all(third[4:] + fourth)
    assert await server.receive() == Message(third, 2)
    assert await server.receive() == Message(fourth, 2)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
async def test_one_record_in_any_bytes_like_object_is_one_message(kind: type) -> None:
    client, server = memory_pair()
    pipe = StreamPipe(Owner(client), 1)
    whole = record(23, b"payload")
    await pipe.send_all(kind(whole))
    assert await server.receive() == Message(whole, 1)


async def test_every_send_is_a_checkpoint_even_when_it_only_buffers() -> None:
    client, _server = memory_pair()
    pipe = StreamPipe(Owner(client), 0)
    whole = record(23, b"abc")
    with trio.testing.assert_checkpoints():
        await pipe.send_all(whole)
    with trio.testing.assert_checkpoints():
        await pipe.send_all(whole[:2])  # a partial record: nothing is sent


async def test_a_send_behind_a_blocked_one_waits_its_turn_and_keeps_order() -> None:
    # A one-byte window: each message waits until the peer has read the previous one.
    client, server = memory_pair(window=1)
    pipe = StreamPipe(Owner(client), 0)
    records = [record(23, bytes([i]) * 50) for i in range(4)]
    await pipe.send_all(records[0])  # through: the window was empty
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipe.send_all, records[1])  # blocked by the window
        await trio.testing.wait_all_tasks_blocked()
        # A sender queued behind it and cancelled there gives up its turn.
        queued = await nursery.start(cancellable_send, pipe, b"\x17\x03\x03")
        await trio.testing.wait_all_tasks_blocked()
        queued.cancel()
        nursery.start_soon(pipe.send_all, records[2])
        await trio.testing.wait_all_tasks_blocked()
        for expected in records[:3]:
            assert await server.receive() == Message(expected, 0)
    await pipe.send_all(records[3])
    assert await server.receive() == Message(records[3], 0)


async def cancellable_send(
    pipe: StreamPipe, data: bytes, *, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    with trio.CancelScope() as scope:
        task_status.started(scope)
        await pipe.send_all(data)


class FailingOwner(Owner):
    """An owner whose association can fail (and then closes the transport)."""

    failure: Exception | None = None

    def check_usable(self) -> None:
        if self.failure is not None:
            raise self.failure


async def test_a_send_cut_short_by_the_associations_failure_reports_that_failure() -> None:
    client, _server = memory_pair(window=1)
    owner = FailingOwner(client)
    pipe = StreamPipe(owner, 0)
    await pipe.send_all(record(23, b"first"))  # through: the window was empty

    async def fail() -> None:
        await trio.testing.wait_all_tasks_blocked()
        # The association fails and closes its transport under the waiting send, which
        # must report the association's error, not the transport's "closed".
        owner.failure = AssociationAbortedError("the peer aborted the association")
        client.abort()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail)
        with pytest.raises(AssociationAbortedError, match="the peer aborted"):
            await pipe.send_all(record(23, b"second"))  # waits for room


async def test_the_handshake_marker_holds_the_sender_until_the_handshake_is_done() -> None:
    client, server = memory_pair()
    pipe = StreamPipe(Owner(client), 1)
    pipe.handshake_running = True
    done = trio.Event()

    async def trio_step() -> None:
        await pipe.send_all(HANDSHAKE_WAIT)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio_step)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        pipe.handshake_done()
    # Also once the handshake is over (Trio may get to send after it completed).
    await pipe.send_all(HANDSHAKE_WAIT)
    with trio.move_on_after(0) as scope:
        await server.receive()
    assert scope.cancelled_caught  # the marker never reaches the transport


async def test_closing_the_pipe_ends_a_wait_for_the_handshake() -> None:
    client, _ = memory_pair()
    pipe = StreamPipe(Owner(client), 1)
    pipe.handshake_running = True
    async with trio.open_nursery() as nursery:

        async def trio_step() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await pipe.send_all(HANDSHAKE_WAIT)

        nursery.start_soon(trio_step)
        await trio.testing.wait_all_tasks_blocked()
        await pipe.aclose()
