"""The association states and every transition between them (RFC 9260, Section 4).

Everything that moves an association from one state to another goes through
``Association._set_state()``, which checks it against :data:`TRANSITIONS`; this table is
the whole state machine at a glance.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """The states of RFC 9260, Section 4 (Figure 3)."""

    CLOSED = "CLOSED"
    COOKIE_WAIT = "COOKIE-WAIT"
    COOKIE_ECHOED = "COOKIE-ECHOED"
    ESTABLISHED = "ESTABLISHED"
    SHUTDOWN_PENDING = "SHUTDOWN-PENDING"
    SHUTDOWN_SENT = "SHUTDOWN-SENT"
    SHUTDOWN_RECEIVED = "SHUTDOWN-RECEIVED"
    SHUTDOWN_ACK_SENT = "SHUTDOWN-ACK-SENT"

    # Enum hashes a member by its name, in Python; the hot paths test membership in the
    # frozensets below on every packet and every message. Members are singletons
    # compared by identity, so the identity hash (in C) is as correct and much cheaper.
    __hash__ = object.__hash__


S = State

#: state -> the states it may move to, and why. Any state may also move to CLOSED
#: (ABORT sent or received, retransmission limit reached).
TRANSITIONS: dict[State, frozenset[State]] = {
    # connect() sends INIT; a valid COOKIE ECHO on a listening association (Section 5.1).
    S.CLOSED: frozenset({S.COOKIE_WAIT, S.ESTABLISHED}),
    # INIT ACK -> COOKIE ECHO; or an INIT collision resolved by the peer's cookie
    # (Section 5.2.4, cases B and D).
    S.COOKIE_WAIT: frozenset({S.COOKIE_ECHOED, S.ESTABLISHED}),
    # COOKIE ACK (or a collision cookie); a Stale Cookie error restarts with a new INIT
    # (Section 5.2.6).
    S.COOKIE_ECHOED: frozenset({S.ESTABLISHED, S.COOKIE_WAIT}),
    # shutdown() by our user; SHUTDOWN from the peer (Section 9.2).
    S.ESTABLISHED: frozenset({S.SHUTDOWN_PENDING, S.SHUTDOWN_RECEIVED}),
    # all our data acknowledged -> SHUTDOWN; or the peer's SHUTDOWN crossed ours.
    S.SHUTDOWN_PENDING: frozenset({S.SHUTDOWN_SENT, S.SHUTDOWN_RECEIVED}),
    # SHUTDOWN ACK -> CLOSED; a SHUTDOWN from the peer (both sides closing at once).
    S.SHUTDOWN_SENT: frozenset({S.SHUTDOWN_ACK_SENT}),
    # all our data acknowledged -> SHUTDOWN ACK.
    S.SHUTDOWN_RECEIVED: frozenset({S.SHUTDOWN_ACK_SENT}),
    # SHUTDOWN COMPLETE (or SHUTDOWN ACK, when both closed at once) -> CLOSED.
    S.SHUTDOWN_ACK_SENT: frozenset(),
}

#: States in which the peer's DATA is accepted.
RECEIVING = frozenset(
    {S.COOKIE_ECHOED, S.ESTABLISHED, S.SHUTDOWN_PENDING, S.SHUTDOWN_SENT, S.SHUTDOWN_RECEIVED}
)
#: States in which the association exists with both tags known.
ALIVE = RECEIVING | {S.SHUTDOWN_ACK_SENT}
#: States in which our user may still queue messages.
SENDING = frozenset({S.ESTABLISHED})
#: States in which our DATA still flows (queued before shutdown() must get through).
TRANSMITTING = frozenset({S.ESTABLISHED, S.SHUTDOWN_PENDING, S.SHUTDOWN_RECEIVED})


def allowed(old: State, new: State) -> bool:
    """Whether ``old -> new`` is a transition of the state machine."""
    return new is State.CLOSED or new in TRANSITIONS[old]
