"""A sans-IO DTLS 1.2 engine for DTLS over SCTP (RFC 6083), over pyOpenSSL memory BIOs.

Theory of operation
===================

The engine is fed the user messages SCTP delivered (:meth:`DTLSEngine.receive`) and
the application's plaintext (:meth:`DTLSEngine.encrypt`); it hands out the records to
send, one SCTP user message each, with the stream, PPID and ordering each must travel
with (:meth:`DTLSEngine.outgoing`), and the plaintext messages received
(:meth:`DTLSEngine.plaintext`). It performs no I/O and keeps no clock: SCTP is
reliable, so DTLS's retransmission timers are never driven (RFC 6083 section 3.4),
and nothing here ever waits.

Records and streams. OpenSSL writes into a memory BIO; what it wrote is cut at record
boundaries (:mod:`._records`). Handshake, alert and ChangeCipherSpec records go on
stream 0, ordered, with the handshake PPID; application data goes on the stream, PPID
and ordering the application chose (RFC 6083 section 4.4). OpenSSL's MTU is set so a
handshake message up to the record limit fits in one record: SCTP, not DTLS, fragments.

Epochs. Application data may use any stream, so SCTP does not order it against the
handshake on stream 0: a record of the epoch a handshake is starting can arrive before
the Finished that opens that epoch, and OpenSSL would hold it back and return its
plaintext later, detached from its stream and PPID. The engine therefore keeps such
records itself (bounded) and feeds them once the handshake has completed. A record of
an epoch already left behind cannot be read any more (OpenSSL, like RFC 6347, drops
it), so it ends the association instead of vanishing; RFC 6083 avoids it by waiting
for the sender's SCTP queue to drain before a key change, which an application gets by
not sending during a renegotiation.

Failures. DTLS silently drops a record that fails authentication; over a reliable
transport that can only be tampering or a broken peer, so the engine checks that every
application-data record yields its plaintext, and raises otherwise. Every error the
peer causes is raised as a :class:`~trio_sctls.AssociationError` naming the stream.

Keys. The handshake's SCTP-AUTH key switch (RFC 6083 section 4.7) is driven from here,
through :class:`._keys.KeySchedule`: install when this handshake's ChangeCipherSpec is
written or read; switch just before our Finished when the peer's was read already
(:meth:`DTLSEngine.sending`), else once it is read, so that every Finished travels under
a key its receiver already holds.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from dataclasses import dataclass
from typing import final

from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from .._errors import HandshakeError, PeerIdentityError, RemoteProtocolError
from ..transport import AuthKeys, Message
from ._context import VerificationError, is_ip_address, prepare_context, verify_peer_identity
from ._keys import BUGGY_EXPORTER_LABEL, EXPORTER_LABEL, SECRET_SIZE, KeySchedule
from ._records import (
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    CONTROL_TYPES,
    HANDSHAKE,
    HEADER_SIZE,
    MAX_PLAINTEXT,
    RecordHeader,
    parse_message,
    split_records,
)

#: OpenSSL's ciphertext MTU: one record of the largest plaintext with room for the
#: header, explicit IV, MAC and padding, so neither application data nor a handshake
#: message that fits a record is split by DTLS (SCTP fragments the user message).
RECORD_MTU = HEADER_SIZE + MAX_PLAINTEXT + 256
#: Records of a coming epoch kept until its handshake completes. A peer that sends
#: more before finishing the handshake is misbehaving.
MAX_EARLY_RECORDS = 256
#: How much one read from OpenSSL may return (a record's plaintext, plus one byte).
_READ_SIZE = MAX_PLAINTEXT + 1
_BIO_READ_SIZE = 1 << 20
#: The DTLS handshake header (RFC 6347 section 4.2.2) after msg_type and length:
#: message_seq (2), fragment_offset (3, as 1 + 2).
_HANDSHAKE_HEADER = struct.Struct("!4xHBH")


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One DTLS record to send as one SCTP user message.

    Attributes:
        data: the record, header included.
        header: its parsed header.
        stream: the SCTP stream (0 for handshake, alert and ChangeCipherSpec).
        ppid: the payload protocol identifier.
        unordered: send it unordered (application data only, if asked).
    """

    data: bytes
    header: RecordHeader
    stream: int
    ppid: int
    unordered: bool = False


@final
class DTLSEngine:
    """One DTLS 1.2 connection over one SCTP association (see the module docstring).

    Args:
        context: a pyOpenSSL context (``SSL.DTLS_METHOD``); it is pinned to DTLS 1.2.
        keys: the association's SCTP-AUTH keys.
        server_side: act as the DTLS server.
        server_hostname: (client) the name or address the server's certificate must
            match; also sent as SNI when it is a name.
        handshake_ppid: the PPID of handshake, alert and ChangeCipherSpec records.
        label_bug: export the SCTP-AUTH keys with old OpenSSL's label (see
            :class:`~trio_sctls.dtls.DTLSOptions`).
    """

    def __init__(
        self,
        context: SSL.Context,
        keys: AuthKeys,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        handshake_ppid: int = 0,
        label_bug: bool = False,
    ) -> None:
        prepare_context(context)
        connection = SSL.Connection(context)
        connection.set_ciphertext_mtu(RECORD_MTU)
        if server_side:
            connection.set_accept_state()
        else:
            if server_hostname is not None and not is_ip_address(server_hostname):
                connection.set_tlsext_host_name(server_hostname.encode("idna"))
            connection.set_connect_state()
        self._connection = connection
        self._server_hostname = server_hostname
        self._handshake_ppid = handshake_ppid
        self._exporter_label = BUGGY_EXPORTER_LABEL if label_bug else EXPORTER_LABEL
        self._schedule = KeySchedule(keys)
        self._outgoing: deque[OutgoingRecord] = deque()
        self._plaintext: deque[Message] = deque()
        self._early: list[tuple[bytes, RecordHeader, int, int, bool]] = []
        # Whether OpenSSL's do_handshake() has returned once (after that, recv() drives
        # renegotiations).
        self._openssl_done = False
        # Epochs: of the last record written by OpenSSL, of the last record we sent, of
        # the last control record received, and the epoch application data is read in.
        self._produced_epoch = 0
        self._sent_epoch = 0
        self._received_epoch = 0
        self._readable_epoch = 0
        self._secret_pending = False
        self._pinned: bytes | None = None
        # What was already sent, to drop OpenSSL's own retransmissions (RFC 6083
        # section 3.5: SCTP is reliable, DTLS must not retransmit): clear handshake
        # fragments by (epoch, message_seq, fragment_offset), ChangeCipherSpec by epoch.
        self._sent_fragments: set[tuple[int, int, int]] = set()
        self._sent_ccs: set[int] = set()
        #: Handshakes completed (the first one and every renegotiation).
        self.handshakes = 0
        #: The peer sent close_notify.
        self.peer_closed = False

    # -- state -------------------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        """Whether the first handshake has completed (keys switched, identity checked)."""
        return self.handshakes > 0

    @property
    def in_handshake(self) -> bool:
        """Whether a handshake is under way (before the first, or a renegotiation)."""
        return not self.handshakes or self._secret_pending or self._connection.renegotiate_pending()

    @property
    def active_key_id(self) -> int:
        """The SCTP-AUTH key id our messages are signed with now."""
        return self._schedule.active_key_id

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), pinned at the first handshake."""
        return self._pinned

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite."""
        return self._connection.get_cipher_name()

    @property
    def version(self) -> str:
        """The negotiated protocol version ("DTLSv1.2")."""
        return self._connection.get_protocol_version_name()

    # -- driving -----------------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake (the client writes its ClientHello)."""
        self._drive(stream=0)

    def renegotiate(self) -> None:
        """Start a new handshake on the established connection (new keys, identity
        checked again and compared with the pinned one).

        Raises:
            RuntimeError: the first handshake has not completed, or one is under way.
        """
        if not self.handshake_complete or self.in_handshake:
            raise RuntimeError("a handshake is under way")
        if not self._connection.renegotiate():
            raise RuntimeError("OpenSSL refused to renegotiate")
        self._drive(stream=0)

    def receive(self, data: bytes, stream: int, ppid: int, unordered: bool) -> None:
        """Process one user message SCTP delivered.

        Raises:
            RemoteProtocolError: the message is not one DTLS record, a handshake,
                alert or ChangeCipherSpec record is not on stream 0 ordered, or too
                many records arrived early.
            HandshakeError: DTLS failed (a bad handshake, an alert, a record that
                failed authentication or came from an epoch already left).
            PeerIdentityError: a renegotiation presented a different certificate.
        """
        try:
            header = parse_message(data)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc), stream=stream) from None
        if header.content_type in CONTROL_TYPES:
            if stream != 0 or unordered:
                where = "unordered" if stream == 0 else f"on stream {stream}"
                raise RemoteProtocolError(
                    f"DTLS record of type {header.content_type} sent {where}: handshake, "
                    "alert and ChangeCipherSpec records go on stream 0, ordered "
                    "(RFC 6083 section 4.4)",
                    stream=stream,
                )
            self._connection.bio_write(data)
            self._drive(stream)
            if header.content_type == CHANGE_CIPHER_SPEC:
                self._install_secret()
            self._received_epoch = max(self._received_epoch, header.epoch)
            self._check_round()
            return
        if header.epoch == 0:
            raise RemoteProtocolError("application data before the handshake", stream=stream)
        if header.epoch > self._readable_epoch + 1:
            # Only the epoch of a handshake under way can be ahead of us.
            raise RemoteProtocolError(
                f"a record of epoch {header.epoch} while reading epoch {self._readable_epoch}",
                stream=stream,
            )
        if header.epoch > self._readable_epoch:
            if len(self._early) >= MAX_EARLY_RECORDS:
                raise RemoteProtocolError(
                    f"more than {MAX_EARLY_RECORDS} records arrived before their handshake "
                    "completed",
                    stream=stream,
                )
            self._early.append((data, header, stream, ppid, unordered))
            return
        self._read_application(data, header, stream, ppid, unordered)

    def encrypt(self, data: bytes, stream: int, ppid: int, unordered: bool) -> bool:
        """Protect one message of at most 2**14 bytes into one record (queued for
        :meth:`outgoing`).

        Returns:
            ``False`` if OpenSSL cannot write now (it is in the middle of a
            renegotiation and waits for the peer): call again once it has completed.

        Raises:
            HandshakeError: the connection failed.
        """
        try:
            written = self._connection.send(data)
        except (SSL.WantReadError, SSL.WantWriteError):
            self._collect(stream, ppid, unordered)
            return False
        except SSL.Error as exc:
            raise HandshakeError(f"DTLS failed: {_describe(exc)}", stream=stream) from exc
        self._collect(stream, ppid, unordered)
        assert written == len(data), "DTLS writes a message as one record"
        return True

    def close(self) -> None:
        """Queue a close_notify alert (stream 0)."""
        with contextlib.suppress(SSL.Error):
            self._connection.shutdown()
        self._collect(0, self._handshake_ppid, False)

    def outgoing(self) -> list[OutgoingRecord]:
        """Take the records queued for sending, in order."""
        records = list(self._outgoing)
        self._outgoing.clear()
        return records

    def sending(self, record: OutgoingRecord) -> None:
        """``record`` is about to be sent. If it is our Finished and the peer's was
        read already, the peer holds the new key: switch to it first."""
        epoch = record.header.epoch
        if epoch > self._sent_epoch and epoch == self._received_epoch and self._secret_pending:
            self._schedule.switch()

    def sent(self, record: OutgoingRecord) -> None:
        """``record`` was handed to SCTP."""
        if record.header.epoch > self._sent_epoch:
            self._sent_epoch = record.header.epoch
            self._check_round()

    def plaintext(self) -> list[Message]:
        """Take the application messages decrypted so far, in order."""
        messages = list(self._plaintext)
        self._plaintext.clear()
        return messages

    # -- internals ---------------------------------------------------------------------

    def _drive(self, stream: int) -> None:
        """Let OpenSSL process what it was fed; collect what it writes."""
        try:
            if not self._openssl_done:
                try:
                    self._connection.do_handshake()
                except SSL.WantReadError:
                    return
                self._openssl_done = True
            while True:
                try:
                    data = self._connection.recv(_READ_SIZE)
                except SSL.WantReadError:
                    return
                except SSL.ZeroReturnError:
                    self.peer_closed = True
                    return
                # Application data comes only from application-data records, which
                # are read in _read_application; OpenSSL kept none back (see the
                # module docstring), so this is a peer mixing types in one epoch.
                raise RemoteProtocolError(
                    f"{len(data)} bytes of application data out of a control record",
                    stream=stream,
                )
        except SSL.Error as exc:
            raise HandshakeError(f"DTLS failed: {_describe(exc)}", stream=stream) from exc
        finally:
            self._collect(0, self._handshake_ppid, False)

    def _read_application(
        self, data: bytes, header: RecordHeader, stream: int, ppid: int, unordered: bool
    ) -> None:
        if header.epoch < self._readable_epoch:
            raise HandshakeError(
                f"a record of epoch {header.epoch} arrived after the switch to epoch "
                f"{self._readable_epoch}: it cannot be decrypted any more",
                stream=stream,
            )
        self._connection.bio_write(data)
        try:
            plaintext = self._connection.recv(_READ_SIZE)
        except SSL.WantReadError:
            plaintext = b""
        except SSL.ZeroReturnError:
            self.peer_closed = True
            return
        except SSL.Error as exc:
            raise HandshakeError(f"DTLS failed: {_describe(exc)}", stream=stream) from exc
        finally:
            self._collect(0, self._handshake_ppid, False)
        if not plaintext:
            # DTLS drops a record that fails authentication without a word.
            raise HandshakeError(
                "a DTLS record failed authentication (tampered with, or not from this connection)",
                stream=stream,
            )
        self._plaintext.append(Message(plaintext, stream, ppid, unordered))

    def _collect(self, stream: int, ppid: int, unordered: bool) -> None:
        """Move what OpenSSL wrote into the outgoing queue, one record per message."""
        chunks = []
        while True:
            try:
                chunks.append(self._connection.bio_read(_BIO_READ_SIZE))
            except SSL.WantReadError:
                break
        if not chunks:
            return
        resent_epoch = -1
        for header, record in split_records(b"".join(chunks)):
            if self._retransmitted(header, record, resent_epoch):
                if header.content_type == CHANGE_CIPHER_SPEC:
                    # The encrypted Finished after a repeated ChangeCipherSpec (in the
                    # same write) is the same flight again; its header cannot show it.
                    resent_epoch = header.epoch + 1
                continue
            if header.content_type == APPLICATION_DATA:
                target = OutgoingRecord(record, header, stream, ppid, unordered)
            else:
                target = OutgoingRecord(record, header, 0, self._handshake_ppid)
            if header.content_type == CHANGE_CIPHER_SPEC:
                self._install_secret()
            self._produced_epoch = max(self._produced_epoch, header.epoch)
            self._outgoing.append(target)

    def _retransmitted(self, header: RecordHeader, record: bytes, resent_epoch: int) -> bool:
        """Whether OpenSSL's timer wrote this record again (remember it if not)."""
        if header.content_type == CHANGE_CIPHER_SPEC:
            if header.epoch in self._sent_ccs:
                return True
            self._sent_ccs.add(header.epoch)
            return False
        if header.content_type != HANDSHAKE:
            return False
        if header.epoch == resent_epoch:
            return True
        if header.epoch > 0 or len(record) < HEADER_SIZE + _HANDSHAKE_HEADER.size:
            return False
        message_seq, offset_high, offset_low = _HANDSHAKE_HEADER.unpack_from(record, HEADER_SIZE)
        key = (header.epoch, message_seq, offset_high << 16 | offset_low)
        if key in self._sent_fragments:
            return True
        self._sent_fragments.add(key)
        return False

    def _install_secret(self) -> None:
        """This handshake's master secret exists now: install its SCTP-AUTH key."""
        if not self._secret_pending:
            secret = self._connection.export_keying_material(self._exporter_label, SECRET_SIZE)
            self._schedule.install(secret)
            self._secret_pending = True

    def _check_round(self) -> None:
        """Both Finished messages of a handshake have crossed: switch the SCTP-AUTH
        key, check the peer's identity, read what arrived early."""
        epoch = self._sent_epoch
        if not (self._secret_pending and epoch == self._received_epoch > self._readable_epoch):
            return
        self._schedule.switch()
        self._secret_pending = False
        self._readable_epoch = epoch
        self.handshakes += 1
        self._check_identity()
        early, self._early = self._early, []
        for data, header, stream, ppid, unordered in early:
            if header.epoch > epoch:
                self._early.append((data, header, stream, ppid, unordered))
            else:
                self._read_application(data, header, stream, ppid, unordered)

    def _check_identity(self) -> None:
        certificate = self._connection.get_peer_certificate(as_cryptography=True)
        if self._server_hostname is not None:
            if certificate is None:
                raise HandshakeError("the server presented no certificate", stream=0)
            try:
                verify_peer_identity(certificate, self._server_hostname)
            except VerificationError as exc:
                raise HandshakeError(
                    f"the server's certificate does not match {self._server_hostname!r}: {exc}",
                    stream=0,
                ) from exc
        der = certificate.public_bytes(Encoding.DER) if certificate is not None else None
        if self.handshakes == 1:
            self._pinned = der
        elif der != self._pinned:
            raise PeerIdentityError(
                "the peer presented a different certificate in a renegotiation", stream=0
            )


def _describe(exc: SSL.Error) -> str:
    """OpenSSL's error queue as one line."""
    parts = []
    for entry in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        parts.append(str(entry[-1]) if isinstance(entry, tuple) else str(entry))
    return "; ".join(p for p in parts if p) or repr(exc)
