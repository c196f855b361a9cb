"""The staged session skeleton shared by the masking and HE paths.

Both protocols are pairs of sans-IO state machines that move through rounds
listed in one declarative :class:`~secagg.tables.Transitions` table per role
(:mod:`secagg.transitions` for masking, :mod:`secagg.he.transitions` for
CKKS). This module holds everything the paths do alike, so that they differ
only in what they compute:

* :class:`StagedClient` - the site side: ``advertise``, ``provide_input``,
  ``handle``, ``abort`` and the envelope checks on every server message
  (expected type for the state, session fingerprint compared in constant
  time, recipient).
* :class:`StagedServer` - the coordinator side: ``receive``, ``advance``,
  ``expected_senders``, ``released``, ``result`` and the abort, with the
  envelope checks of :func:`secagg.envelope.check_envelope`.

One idiom, validate then commit (the h11 rule). A handler validates the whole
message and computes its answer without touching the session; it returns the
answer and a ``commit`` callable that only assigns. The skeleton calls
``commit`` and then sets the state *once*, from the table. A refused message
(any :class:`~secagg.errors.ProtocolError` from the envelope check or the
handler) therefore leaves the session exactly as it was. The one deliberate
exception is a handler that raises :class:`EndsSession`: its error also
aborts the session (the HE key holder's single decryption attempt, which must
not become a repeatable oracle).

Dispatch goes through dicts keyed by message type (client handlers, server
validators) and by stage (server closers), never through names built from
strings, so renaming a stage or a message breaks at import time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar, Mapping

import numpy as np

from .crypto import constant_time_equal
from .envelope import check_envelope
from .errors import (InvalidInputError, LocalProtocolError, SessionMismatchError, ThresholdNotMetError,
                     UnexpectedMessageError)
from .tables import START, Transitions

__all__ = [
    "AggregateResult",
    "EndsSession",
    "Commit",
    "StagedClient",
    "StagedServer",
]


@dataclass(frozen=True)
class AggregateResult:
    """The only output of a session, masking or HE: the ring sum of the survivors' inputs."""

    ring_sum: np.ndarray
    survivors: frozenset
    bit_width: int


class EndsSession(Exception):
    """Raised by a handler: refuse with ``error`` *and* abort the session (no retry possible)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


#: What a handler returns next to its answer: assignments only, run after everything validated.
Commit = Callable[[], None]


class _Staged(abc.ABC):
    """What both sides of both paths supply: the wire decoder, the role's table, and what abort forgets.

    A session class names its path in its bases: ``class ClientSession(StagedClient, party="client",
    decode=wire.decode)``; ``party`` ("client" or "site") words the errors, ``decode`` is the path's
    wire decoder (:func:`secagg.wire.decode` or :func:`secagg.he.wire.decode`).
    """

    _PARTY: ClassVar[str]
    _decode: ClassVar[Callable]

    def __init_subclass__(cls, party: str | None = None, decode: Callable | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if party is not None:
            cls._PARTY = party
        if decode is not None:
            cls._decode = staticmethod(decode)

    @abc.abstractmethod
    def _transitions(self) -> Transitions:
        """This role's table (it may depend on the mode or on the party's role)."""

    @abc.abstractmethod
    def _forget(self) -> None:
        """Drop every secret or accumulated value the session holds (on abort)."""


class StagedClient(_Staged):
    """The client side of a staged protocol (subclassed by each path).

    Args:
        config: the session's configuration (``participants``, ``active``, ``verify_keys``, ...).
        party_id: this party's id (one of ``config.participants``); the subclass names it
            ``client_id`` or ``site_id``.
        signing_key: 32-byte Ed25519 seed of the party's long-term identity (required in
            active mode; its verify key must be in ``config.verify_keys``).
        masked_input: optionally, the encoded input (see :meth:`provide_input`).

    A subclass provides:

    * ``party`` and ``decode`` in its bases (see :class:`_Staged`);
    * ``_HANDLERS``: server message type -> ``handler(self, message) -> (reply, commit)``;
    * :meth:`_transitions` (its table), :meth:`_open` (fresh per-session keys),
      :meth:`_check_input`, :meth:`_advertisement` and :meth:`_forget`.
    """

    _HANDLERS: ClassVar[Mapping[type, Callable]]

    def __init__(self, config, party_id: int, *, signing_key: bytes | None = None,
                 masked_input: np.ndarray | None = None) -> None:
        if party_id not in config.participants:
            raise InvalidInputError(f"{self._PARTY} id {party_id} is not a participant of this session")
        if config.active and signing_key is None:
            raise InvalidInputError(f"active mode needs the {self._PARTY}'s Ed25519 signing key")
        self.config = config
        self._id = party_id
        self._signing_key = signing_key
        self._fp = config.fingerprint
        self._input: np.ndarray | None = None
        self._open()
        self.state = self._transitions().initial
        if masked_input is not None:
            self.provide_input(masked_input)

    # -- what each path supplies -------------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Create this session's fresh keys and empty per-round state."""

    @abc.abstractmethod
    def _check_input(self, array: np.ndarray) -> np.ndarray:
        """Return the input to keep (a private copy) or raise :class:`InvalidInputError`."""

    @abc.abstractmethod
    def _advertisement(self):
        """Round 0: the message that opens the session (signed in active mode)."""

    @property
    def party_id(self) -> int:
        return self._id

    # -- local API -------------------------------------------------------------------

    def provide_input(self, encoded: np.ndarray) -> None:
        """Set the encoded input; any time before the round that sends it."""
        array = self._check_input(np.asarray(encoded))
        if self.state not in self._transitions().input_open:
            raise LocalProtocolError(f"input can no longer change in state {self.state.value}")
        self._input = array

    def advertise(self):
        """Round 0: the public keys of this session (signed in active mode)."""
        table = self._transitions()
        if self.state is not table.initial:
            raise LocalProtocolError(f"advertise() called twice (state {self.state.value})")
        next_state, _ = table.step(self.state, START)
        message = self._advertisement()
        self.state = next_state
        return message

    def abort(self) -> None:
        """Forget every secret and refuse further messages (e.g. after a transport timeout)."""
        self._forget()
        self.state = self._transitions().aborted

    # -- message handling ------------------------------------------------------------

    def handle(self, message):
        """Process one server message (object or wire bytes); return this party's reply message."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = self._decode(message)
        expected = self._check_envelope(message)
        try:
            reply, commit = self._HANDLERS[expected](self, message)
        except EndsSession as ending:
            self.abort()
            raise ending.error from None
        commit()
        self.state, _ = self._transitions().step(self.state, expected)
        return reply

    def _check_envelope(self, message) -> type:
        """Refuse a message of the wrong type for the state, of another session, or for another party."""
        party, me = self._PARTY, self._id
        expected = self._transitions().receives(self.state)
        if expected is None:
            raise UnexpectedMessageError(
                f"{party} {me} accepts no {type(message).__name__} in state {self.state.value}"
            )
        if not isinstance(message, expected):
            raise UnexpectedMessageError(
                f"{party} {me} expected {expected.__name__} in state {self.state.value}; "
                f"got {type(message).__name__} (replayed, reordered or stale)"
            )
        if not constant_time_equal(message.session, self._fp):
            raise SessionMismatchError(
                f"message belongs to session {bytes(message.session).hex()[:16]}..., "
                f"expected {self._fp.hex()[:16]}..."
            )
        if message.recipient != me:
            raise SessionMismatchError(f"message addressed to {party} {message.recipient} delivered to {party} {me}")
        return expected


class StagedServer(_Staged):
    """The coordinator side of a staged protocol (subclassed by each path).

    A subclass provides:

    * ``party`` and ``decode`` in its bases, and ``_NOT_ELIGIBLE`` (why a sender may not send, for messages);
    * ``_VALIDATORS``: client message type -> ``validator(self, message) -> (record, commit | None)``,
      where ``record`` is what the stage keeps of the message;
    * ``_CLOSERS``: stage -> ``closer(self, answered) -> ({recipient: message}, commit)``;
    * ``_THRESHOLD_STAGES``: the stages that close only with at least t answers;
    * :meth:`_transitions` and :meth:`_forget`.

    A commit that closes a stage sets ``_eligible``, who may send in the next one.
    """

    _NOT_ELIGIBLE: ClassVar[str]
    _VALIDATORS: ClassVar[Mapping[type, Callable]]
    _CLOSERS: ClassVar[Mapping[object, Callable]]
    _THRESHOLD_STAGES: ClassVar[frozenset]

    def __init__(self, config) -> None:
        self.config = config
        self._fp = config.fingerprint
        self._t = config.threshold
        self.stage = self._transitions().initial
        self._received: dict = {}
        self._eligible: frozenset = frozenset(config.participants)
        self._survivors: frozenset = frozenset()
        self._released_on_abort: frozenset = frozenset()
        self._result: AggregateResult | None = None

    # -- inspection --------------------------------------------------------------

    @property
    def expected_senders(self) -> frozenset:
        """Who may still send a message in the current stage."""
        if self._transitions().receives(self.stage) is None:
            return frozenset()
        return self._eligible - set(self._received)

    @property
    def released(self) -> frozenset:
        """Parties whose input (masked or encrypted) has reached the server so far.

        This is the set whose privacy was spent in this session, whether or
        not the session later completes: record it even when it aborts.
        """
        if self.stage is self._transitions().input_stage:
            return frozenset(self._received)
        return self._survivors if self._survivors else self._released_on_abort

    @property
    def result(self) -> AggregateResult:
        if self._result is None:
            raise LocalProtocolError(f"no result: the session is in stage {self.stage.value}")
        return self._result

    # -- receiving -------------------------------------------------------------------

    def receive(self, message) -> None:
        """Validate and record one message of the current stage."""
        if isinstance(message, (bytes, bytearray, memoryview)):
            message = self._decode(message)
        expected = self._transitions().receives(self.stage)
        sender = check_envelope(message, self.stage, expected, self._fp, self._received, party=self._PARTY)
        if sender not in self.expected_senders:
            raise UnexpectedMessageError(
                f"{self._PARTY} {sender} may not send {type(message).__name__} in stage {self.stage.value} "
                f"({self._NOT_ELIGIBLE})"
            )
        record, commit = self._VALIDATORS[expected](self, message)
        if commit is not None:
            commit()
        self._received[sender] = record

    # -- advancing -------------------------------------------------------------------

    def advance(self) -> dict:
        """Close the current stage; return ``{recipient: message}`` for the next one.

        Raises :class:`ThresholdNotMetError` (or a subclass) when too few
        answered; the session then moves to its aborted stage, with no output.
        """
        table, stage = self._transitions(), self.stage
        expected = table.receives(stage)
        if expected is None:
            raise LocalProtocolError(f"advance() called in terminal stage {stage.value}")
        answered = dict(self._received)
        try:
            if stage in self._THRESHOLD_STAGES and len(answered) < self._t:
                raise ThresholdNotMetError(
                    f"only {len(answered)} {self._PARTY}s answered in stage {stage.value}; threshold is {self._t}. "
                    "The session is aborted and produces no output."
                )
            outgoing, commit = self._CLOSERS[stage](self, answered)
        except ThresholdNotMetError:
            if stage is table.input_stage:
                self._released_on_abort = frozenset(answered)
            self._abort()
            raise
        commit()
        self.stage, _ = table.step(stage, expected)
        self._received = {}
        return outgoing

    def _abort(self) -> None:
        self.stage = self._transitions().aborted
        self._forget()
