"""Run every party of one HE session in-process, through the real sessions and wire bytes.

:func:`run_local_he` mirrors :func:`secagg.run_local`: it encodes each site's
float vector (optionally pre-weighted for FedAvg, the weight riding in one
extra slot as in :func:`secagg.weighted_vector`), creates an
:class:`~secagg.he.client.HEClientSession` per site and one
:class:`~secagg.he.server.HEServerSession`, and moves *wire bytes* between
them round by round, with dropouts at chosen stages and an optional
``tamper`` hook that plays a malicious coordinator.

Stages (:data:`HE_STAGES`, derived from :mod:`secagg.he.transitions`):
``advertise`` (round-0 keys), ``context`` (the key holder's context bundle),
``upload`` (encrypted updates), ``decrypt`` (the key holder's answer). A site
listed under a stage sends nothing from that stage on; the key holder
dropping at any stage aborts the round (single point of failure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ..config import new_session_id
from ..crypto import SigningKeyPair
from ..encoding import check_finite_vector, weighted_mean, weighted_vector
from ..errors import InvalidInputError
from ..exchange import run_exchange, validate_dropouts, validate_updates
from . import wire
from .ckks import CKKSContext
from .client import HEClientSession
from .config import HESessionConfig
from .params import HEParameters, find_he_parameters
from .server import HEServerSession
from .transitions import HE_ANSWER_STAGE, HE_STAGES

__all__ = ["HE_STAGES", "HE_ANSWER_STAGE", "HELocalResult", "run_local_he"]


@dataclass(frozen=True)
class HELocalResult:
    """Outcome of :func:`run_local_he`.

    Attributes:
        aggregate: float64 decoded sum of the included sites' clipped (and, with
            ``weights``, pre-weighted, weight slot appended) inputs.
        survivors: ids whose inputs are in the sum (U2).
        resolution: quantisation step; ``|aggregate - exact| < len(survivors) * resolution``.
        server_view: every message the coordinator received, in wire form, in arrival order.
        coordinator_context: the CKKS context the coordinator held (public: no secret key).
        mean / weight_sum: with ``weights``, the FedAvg mean and the summed normalised weight.
        clipped: per site, how many coordinates were clipped.
        refusals: per site, the error with which it refused a coordinator message (if any).
        bytes_up / bytes_down: wire bytes per stage, sites -> coordinator and back.
        seconds: wall time per stage (site and coordinator work together).
        config / params: the session's public configuration and CKKS parameters.
    """

    aggregate: np.ndarray
    survivors: frozenset
    resolution: float
    server_view: list
    coordinator_context: CKKSContext | None
    mean: np.ndarray | None
    weight_sum: float | None
    clipped: Mapping[int, int]
    refusals: Mapping[int, Exception]
    bytes_up: Mapping[str, int]
    bytes_down: Mapping[str, int]
    seconds: Mapping[str, float]
    config: HESessionConfig = field(repr=False)
    params: HEParameters = field(repr=False)


def run_local_he(
    updates: Mapping[int, np.ndarray],
    *,
    threshold: int,
    dropouts: Mapping[str, object] | None = None,
    clip: float = 1.0,
    weights: Mapping[int, float] | None = None,
    max_weight: float | None = None,
    active: bool = False,
    key_holder: int | None = None,
    resolution: float | None = None,
    params: HEParameters | None = None,
    session_id: bytes | None = None,
    tamper: Callable | None = None,
    refusals: str = "raise",
) -> HELocalResult:
    """Aggregate ``updates`` under CKKS with every party simulated in this process.

    Args:
        updates: site id -> 1-D float array (all the same length).
        threshold: t (2 <= t <= n): minimum number of contributions in the sum.
        dropouts: stage name -> site ids silent from that stage on (see :data:`HE_STAGES`).
        clip: each coordinate is clipped to ``[-clip, clip]`` before encoding.
        weights: optional site id -> positive FedAvg weight (e.g. number of records); each
            update is pre-weighted with :func:`secagg.weighted_vector` (the weight rides in one
            extra slot, so the coordinator learns only the sum of the weights).
        max_weight: public bound on the weights (default: their maximum).
        active: Ed25519 signatures on keys, context, uploads and sum; the key holder
            decrypts only sums of >= t signed contributions it re-sums itself.
        key_holder: the site that creates the key and decrypts (default: the smallest id).
        resolution / params: encoding precision, or a full parameter set
            (default: :func:`secagg.he.find_he_parameters`).
        session_id: the 32-byte session nonce (fresh random by default).
        tamper: ``(recipient_id, message) -> message | None`` applied to every coordinator ->
            site message (``None`` withholds it): a malicious coordinator.
        refusals: ``"raise"`` re-raises the first refusal of an honest site; ``"drop"``
            records it and treats the site as dropped.

    Raises:
        ProtocolError subclasses: invalid input, refusals, missing TenSEAL
        (:class:`~secagg.he.errors.HEUnavailableError`), or
        :class:`~secagg.errors.ThresholdNotMetError` when fewer than t remain or the key
        holder is gone.
    """
    if refusals not in ("raise", "drop"):
        raise InvalidInputError(f"refusals must be 'raise' or 'drop'; got {refusals!r}")
    ids, length = validate_updates(updates, party="site")
    silent = validate_dropouts(dropouts, ids, HE_STAGES, party="site")
    vectors = {i: check_finite_vector(updates[i], length=length, name=f"update of site {i}") for i in ids}
    clipped = {i: int(np.count_nonzero(np.abs(vectors[i]) > clip)) for i in ids}
    if weights is not None:
        if set(weights) != set(ids):
            raise InvalidInputError("weights must give one positive weight per site")
        bound = max(weights.values()) if max_weight is None else max_weight
        vectors = {i: weighted_vector(vectors[i], weights[i], max_weight=bound, clip=clip) for i in ids}
        length += 1
    if params is None:
        params = find_he_parameters(vector_length=length, max_summands=len(ids), clip=clip, resolution=resolution)
    encoder = params.encoder
    holder = ids[0] if key_holder is None else key_holder
    identities = {i: SigningKeyPair.generate() for i in ids} if active else {}
    config = HESessionConfig(
        session_id=session_id or new_session_id(),
        participants=tuple(ids),
        threshold=threshold,
        vector_length=length,
        key_holder=holder,
        params=params,
        active=active,
        verify_keys={i: k.verify_key for i, k in identities.items()},
    )
    sites = {
        i: HEClientSession(config, i, signing_key=identities[i].seed if active else None,
                           masked_input=encoder.encode(vectors[i]).ring)
        for i in ids
    }
    del vectors

    server = HEServerSession(config)
    record = run_exchange(server.receive, server.advance, sites, stages=HE_STAGES, answer_stage=HE_ANSWER_STAGE,
                      encode=wire.encode, silent_from=silent,
                      tamper=tamper, refusals="raise" if refusals == "raise" else "record")

    result = server.result
    aggregate = encoder.decode(result.ring_sum)
    mean = weight_sum = None
    if weights is not None:
        mean, weight_sum = weighted_mean(aggregate, clip=clip)
    return HELocalResult(
        aggregate=aggregate,
        survivors=result.survivors,
        resolution=params.resolution,
        server_view=record.server_view,
        coordinator_context=server.context,
        mean=mean,
        weight_sum=weight_sum,
        clipped=clipped,
        refusals=record.refused,
        bytes_up=record.bytes_up,
        bytes_down=record.bytes_down,
        seconds=record.seconds,
        config=config,
        params=params,
    )
