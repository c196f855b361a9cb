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

from ..encoding import weighted_mean, weighted_vector
from ..errors import InvalidInputError
from ..inprocess import InProcessResult, check_run_inputs, run_in_process, session_terms
from . import wire
from .ckks import CKKSContext
from .client import HEClientSession
from .config import HESessionConfig
from .params import HEParameters, find_he_parameters
from .server import HEServerSession
from .transitions import HE_ANSWER_STAGE, HE_STAGES

__all__ = ["HE_STAGES", "HE_ANSWER_STAGE", "HELocalResult", "run_local_he"]


@dataclass(frozen=True)
class HELocalResult(InProcessResult):
    """Outcome of :func:`run_local_he`: the fields of :class:`~secagg.inprocess.InProcessResult`, and

    Attributes:
        aggregate: with ``weights``, the sum of the pre-weighted inputs, weight slot appended.
        survivors: U2; ``|aggregate - exact| < len(survivors) * resolution``.
        coordinator_context: the CKKS context the coordinator held (public: no secret key).
        mean / weight_sum: with ``weights``, the FedAvg mean and the summed normalised weight.
        config / params: the session's public configuration and CKKS parameters.
    """

    coordinator_context: CKKSContext | None
    mean: np.ndarray | None
    weight_sum: float | None
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
    ids, length, silent_from, vectors = check_run_inputs(updates, dropouts, HE_STAGES, refusals, party="site")
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
    identities, agreed = session_terms(ids, length, threshold=threshold, active=active, session_id=session_id)
    config = HESessionConfig(**agreed, key_holder=ids[0] if key_holder is None else key_holder, params=params)
    server, reported = run_in_process(
        config, HEClientSession, HEServerSession, identities=identities,
        encoded_input=lambda i: encoder.encode(vectors.pop(i)).ring, encode=wire.encode, stages=HE_STAGES,
        answer_stage=HE_ANSWER_STAGE, silent_from=silent_from, tamper=tamper, refusals=refusals,
    )
    aggregate = encoder.decode(server.result.ring_sum)
    mean = weight_sum = None
    if weights is not None:
        mean, weight_sum = weighted_mean(aggregate, clip=clip)
    return HELocalResult(
        aggregate=aggregate,
        survivors=server.result.survivors,
        resolution=params.resolution,
        coordinator_context=server.context,
        mean=mean,
        weight_sum=weight_sum,
        clipped=clipped,
        config=config,
        params=params,
        **reported,
    )
