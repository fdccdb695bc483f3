"""Stream reconfiguration (RFC 6525): resetting outgoing streams, both directions.

Only the Outgoing SSN Reset Request is performed. Our side (Section 5.1.2): streams to
reset are *held* at once (messages sent on them after the call wait, so that they are
numbered from SSN 0 after the reset) and the request names the last TSN assigned before
it; only one request is outstanding at a time (Section 5.1.1), later calls are merged
into the next one; "In progress" answers are retried on the reconfiguration timer.
The peer's side (Section 5.2.2): done at once when everything up to its last TSN has
arrived, otherwise deferred (answer "In progress") and done when the cumulative TSN gets
there. Incoming SSN Reset, SSN/TSN Reset and Add Streams requests are answered
"Denied". Request sequence numbers start at the initial TSN (Section 3.1 of RFC 6525).
"""

from __future__ import annotations

from collections import deque

from ._events import Event, StreamResetDone, StreamResetFailed
from ._inbound import ReceiveSide
from ._outbound import SendSide
from ._params import (
    AddIncomingStreamsRequest,
    AddOutgoingStreamsRequest,
    IncomingSSNResetRequest,
    OutgoingSSNResetRequest,
    Param,
    ReconfigResponse,
    ReconfigResult,
    SSNTSNResetRequest,
)

_M32 = 0xFFFFFFFF


class Reconfig:
    """The RE-CONFIG state of one association."""

    def __init__(self, our_initial_tsn: int, peer_initial_tsn: int, events: deque[Event]) -> None:
        self._events = events
        self._next_seq = our_initial_tsn & _M32
        self._peer_seq = peer_initial_tsn & _M32  # the next request we expect
        self.outstanding: OutgoingSSNResetRequest | None = None
        self._queued: dict[int, None] = {}  # streams waiting for the next request
        self._queued_last_tsn = 0
        # The last request we answered: (seq, streams, last TSN, result).
        self._last_answer: tuple[int, tuple[int, ...], int, int] | None = None
        self.deadline: float | None = None
        #: The peer answered "In progress" since we last sent the request.
        self.answered = False

    # -- our requests ------------------------------------------------------------------

    def request(self, streams: tuple[int, ...], send: SendSide) -> bool:
        """Ask to reset ``streams``; return ``True`` if a request is ready to send now."""
        last = send.hold_streams(streams)
        for s in streams:
            self._queued[s] = None
        self._queued_last_tsn = last
        return self._start_next()

    def _start_next(self) -> bool:
        if self.outstanding is not None or not self._queued:
            return False
        self.outstanding = OutgoingSSNResetRequest(
            request_seq=self._next_seq,
            response_seq=(self._peer_seq - 1) & _M32,
            last_tsn=self._queued_last_tsn,
            streams=tuple(self._queued),
        )
        self._queued.clear()
        return True

    def on_response(self, resp: ReconfigResponse, send: SendSide) -> bool:
        """Handle the answer to our request; return ``True`` if a new request is ready."""
        req = self.outstanding
        if req is None or resp.response_seq != req.request_seq:
            return False
        if resp.result == ReconfigResult.IN_PROGRESS:
            self.answered = True  # the peer is alive: the retry is no error
            return False  # keep it outstanding: the timer sends it again
        self.outstanding = None
        self.deadline = None
        self._next_seq = (self._next_seq + 1) & _M32
        ok = resp.result in (ReconfigResult.SUCCESS_PERFORMED, ReconfigResult.SUCCESS_NOTHING_TO_DO)
        still_queued = set(self._queued)
        done = tuple(s for s in req.streams if s not in still_queued)
        send.release_streams(done, reset=ok)
        if ok:
            self._events.append(StreamResetDone(req.streams, outgoing=True))
        else:
            self._events.append(StreamResetFailed(req.streams, resp.result))
        return self._start_next()

    # -- the peer's requests -----------------------------------------------------------

    def on_request(self, param: Param, recv: ReceiveSide) -> ReconfigResponse | None:
        """Answer one request parameter of the peer (RFC 6525, Section 5.2)."""
        if not isinstance(
            param,
            OutgoingSSNResetRequest
            | IncomingSSNResetRequest
            | SSNTSNResetRequest
            | AddOutgoingStreamsRequest
            | AddIncomingStreamsRequest,
        ):
            return None
        seq = param.request_seq
        if seq == self._peer_seq:
            self._peer_seq = (seq + 1) & _M32
            if isinstance(param, OutgoingSSNResetRequest):
                result = self._reset_incoming(param, recv)
                self._last_answer = (seq, param.streams, param.last_tsn, result)
            else:
                result = ReconfigResult.DENIED
                self._last_answer = (seq, (), 0, result)
            return ReconfigResponse(seq, result)
        last = self._last_answer
        if last is not None and seq == last[0]:
            # A retransmitted request (our answer was lost, or it said "In progress").
            result = last[3]
            if result == ReconfigResult.IN_PROGRESS and recv.unwrap(last[2]) <= recv.cum:
                result = ReconfigResult.SUCCESS_PERFORMED
                self._last_answer = (*last[:3], result)
            return ReconfigResponse(seq, result)
        return ReconfigResponse(seq, ReconfigResult.ERROR_BAD_SEQUENCE_NUMBER)

    def _reset_incoming(self, req: OutgoingSSNResetRequest, recv: ReceiveSide) -> int:
        if not recv.valid_streams(req.streams):
            return ReconfigResult.DENIED
        if recv.cannot_defer(req.last_tsn):
            return ReconfigResult.ERROR_REQUEST_ALREADY_IN_PROGRESS
        if recv.reset_streams(req.streams, req.last_tsn):
            return ReconfigResult.SUCCESS_PERFORMED
        return ReconfigResult.IN_PROGRESS
