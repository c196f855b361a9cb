"""The skeleton both in-process runners share: :func:`secagg.run_local` and :func:`secagg.he.run_local_he`.

A runner checks its inputs (:func:`check_run_inputs`), builds its session
configuration from the fields both paths share (:func:`session_terms`, which
also makes the parties' signing identities in active mode) and its own, and
hands it to :func:`run_in_process`, which creates one client (site) session
per participant and the server (coordinator) session, moves *wire bytes*
between them with :func:`secagg.exchange.run_exchange`, and returns the
server and what the exchange recorded. The two paths differ only in their encoder, their
configuration and their session classes; the fields every result reports
are in :class:`InProcessResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .config import new_session_id
from .crypto import SigningKeyPair
from .encoding import check_finite_vector
from .errors import InvalidInputError
from .exchange import run_exchange, validate_dropouts, validate_updates

__all__ = ["InProcessResult", "check_run_inputs", "session_terms", "run_in_process"]


@dataclass(frozen=True)
class InProcessResult:
    """What every in-process run reports.

    Attributes:
        aggregate: float64 decoded sum of the included parties' clipped inputs.
        survivors: ids whose inputs are in the sum.
        resolution: quantisation step of the encoding.
        server_view: every message the server received, in wire form, in arrival order.
        clipped: per party, how many coordinates were clipped.
        refusals: per party, the error with which it refused a server message (if any).
        bytes_up / bytes_down: wire bytes per stage, parties -> server and server -> parties.
        seconds: wall time per stage (party and server work together).
    """

    aggregate: np.ndarray
    survivors: frozenset
    resolution: float
    server_view: list
    clipped: Mapping[int, int]
    refusals: Mapping[int, Exception]
    bytes_up: Mapping[str, int]
    bytes_down: Mapping[str, int]
    seconds: Mapping[str, float]


def check_run_inputs(updates: Mapping[int, np.ndarray], dropouts: Mapping[str, object] | None, stages,
                     refusals: str, party: str) -> tuple[list[int], int, dict[int, str], dict[int, np.ndarray]]:
    """``(sorted ids, vector length, id -> first silent stage, id -> finite float vector)``.

    Raises :class:`InvalidInputError` for a ``refusals`` other than ``"raise"``
    or ``"drop"``, fewer than two updates, unequal or empty shapes, unknown
    dropout stages or ids, and non-finite values.
    """
    if refusals not in ("raise", "drop"):
        raise InvalidInputError(f"refusals must be 'raise' or 'drop'; got {refusals!r}")
    ids, length = validate_updates(updates, party=party)
    silent_from = validate_dropouts(dropouts, ids, stages, party=party)
    vectors = {i: check_finite_vector(updates[i], length=length, name=f"update of {party} {i}") for i in ids}
    return ids, length, silent_from, vectors


def session_terms(ids: list[int], length: int, *, threshold: int, active: bool,
                  session_id: bytes | None) -> tuple[dict[int, SigningKeyPair], dict]:
    """``(identities, fields)``: a fresh Ed25519 identity per party in active mode (none otherwise),
    and the configuration fields both paths share (``session_id``, fresh when ``None``;
    ``participants``, ``threshold``, ``vector_length``, ``active``, ``verify_keys``)."""
    identities = {i: SigningKeyPair.generate() for i in ids} if active else {}
    fields = {"session_id": session_id or new_session_id(), "participants": tuple(ids), "threshold": threshold,
              "vector_length": length, "active": active,
              "verify_keys": {i: k.verify_key for i, k in identities.items()}}
    return identities, fields


def run_in_process(config, client_session: type, server_session: type, *, identities: Mapping,
                   encoded_input: Callable[[int], np.ndarray], encode: Callable, stages, answer_stage,
                   silent_from: Mapping[int, str], tamper: Callable | None, refusals: str) -> tuple[object, dict]:
    """Run one session of ``config`` to its end; return the server session and the exchange's record.

    ``encoded_input(i)`` is asked once per participant, in id order, for its
    encoded input (so a runner can encode one vector at a time);
    ``identities`` holds each participant's :class:`~secagg.crypto.SigningKeyPair`
    in active mode. The record is returned as the keyword arguments of
    :class:`InProcessResult` it fills: ``server_view``, ``refusals``,
    ``bytes_up``, ``bytes_down`` and ``seconds``. ``refusals="raise"``
    re-raises the first refusal of an honest party; ``"drop"`` records it and
    treats the party as dropped.
    """
    clients = {
        i: client_session(config, i, signing_key=identities[i].seed if config.active else None,
                          masked_input=encoded_input(i))
        for i in config.participants
    }
    server = server_session(config)
    record = run_exchange(server.receive, server.advance, clients, stages=stages, answer_stage=answer_stage,
                          encode=encode, silent_from=silent_from, tamper=tamper,
                          refusals="raise" if refusals == "raise" else "record")
    reported = {"server_view": record.server_view, "refusals": record.refused, "bytes_up": record.bytes_up,
                "bytes_down": record.bytes_down, "seconds": record.seconds}
    return server, reported
