"""Run setup shared by every engine: settings checked, noise calibrated, run directory opened.

:func:`open_run` is everything before the first round, for the in-process simulation
(:mod:`simulation.engines.inprocess.simulate`) and the Flower ServerApp
(:mod:`simulation.engines.flower.server_app`) alike: the protocol parameters
(:func:`protocol_parameters`: threshold, SecAgg+ graph degree, active-mode quorum), the
DP-SGD noise calibrated for the whole planned run, the encoding (fixed point, or the CKKS
parameters of the HE path), distributed DP, and the run directory and ledger - created, or
reopened on resume after the ledger verified with its registry and anchors. Impossible
settings raise :class:`SimulationError` before anything is written.

A resume continues after the last completed round. A round whose spend is in the ledger
but whose checkpoint is not (a crash during the round) keeps its spend - it was released -
and its aggregate is lost: the run continues with the next round index, so nothing is
counted twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import secagg
from secagg import STAGES

from ..config import SimulationConfig, SimulationConfigError
from ..errors import SimulationInputError
from .coordinator import Coordinator
from .rounds import RunContext
from .runstore import RunDirectory, RunDirectoryError

__all__ = ["SimulationError", "protocol_parameters", "resume_config", "check_resume", "OpenRun", "dp_sgd_config",
           "open_run"]


class SimulationError(SimulationInputError):
    """Bad input for a simulation (data, parameters, run directory): exit code 2."""


# -- protocol parameters ------------------------------------------------------------


def protocol_parameters(config: SimulationConfig, n: int) -> dict:
    """Threshold and graph degree for n sites, validated up front."""
    overall_drop = 1 - (1 - config.dropout) ** len(STAGES)
    if config.mode == "plain":
        return {"threshold": 1, "degree": None, "finder": None}
    if config.mode == "secagg+":
        try:
            params = secagg.find_parameters(
                n, corrupt_fraction=config.corrupt_fraction, dropout_fraction=min(overall_drop, 0.99),
                malicious=config.active,
            )
        except secagg.InfeasibleParametersError as exc:
            raise SimulationError(f"SecAgg+ parameters: {exc}") from None
        degree = None if params.complete else params.degree
        threshold = config.threshold or params.threshold
        security, correctness = params.security_failure, params.correctness_failure
        if threshold != params.threshold and (params.degree + 1) / 2 < threshold <= params.degree + 1:
            # An overridden t gets its own bounds, never the finder's (a smaller t can be far weaker).
            security, correctness = secagg.failure_bounds(
                n, params.degree, threshold, corrupt_fraction=config.corrupt_fraction,
                dropout_fraction=min(overall_drop, 0.99), malicious=config.active)
            if security > 2.0 ** -secagg.DEFAULT_SECURITY_BITS:
                raise SimulationError(
                    f"threshold {threshold} on the SecAgg+ graph of degree {params.degree} gives a "
                    f"{'malicious' if config.active else 'semi-honest'}-server security failure bound of "
                    f"{security:.3g} (target 2^-{secagg.DEFAULT_SECURITY_BITS}); the parameter finder's t is "
                    f"{params.threshold}")
        finder = {"degree": params.degree, "threshold": threshold, "finder_threshold": params.threshold,
                  "complete": params.complete, "security_failure": security, "correctness_failure": correctness}
    else:
        degree, finder = None, None
        threshold = config.threshold or n // 2 + 1
    k = n - 1 if degree is None else degree
    if threshold > n:
        raise SimulationError(f"threshold {threshold} is above the number of sites ({n})")
    if config.mode == "he":
        if threshold < 2:
            raise SimulationError("the HE path needs a threshold of at least 2 contributions per sum")
        return {"threshold": threshold, "degree": None, "finder": None}
    if not (k + 1) / 2 < threshold <= k + 1:
        raise SimulationError(
            f"threshold {threshold} is unsafe for {n} sites: it must exceed half of each client's "
            f"neighbourhood ({k + 1}), i.e. be in [{(k + 1) // 2 + 1}, {k + 1}]"
        )
    # Active mode: the consistency quorum tolerates the parameter finder's corrupt count C.
    # (the fraction read as its shortest decimal, as secagg.find_parameters reads it)
    max_corrupt = math.ceil(Fraction(repr(float(config.corrupt_fraction))) * n) if config.active else 0
    quorum = max(threshold, (n + max_corrupt) // 2 + 1)
    if config.active and (quorum > n or max_corrupt >= n):
        raise SimulationError(f"active mode with {n} sites tolerating {max_corrupt} corrupt ones needs a consistency "
                              f"quorum of {quorum} > {n} signers; lower corrupt_fraction")
    if config.active and degree is None and 2 * threshold - n <= max_corrupt:
        raise SimulationError(f"active mode on the complete graph with {max_corrupt} corrupt sites needs 2t - n > "
                              f"{max_corrupt}: use threshold >= {(n + max_corrupt) // 2 + 1} (got {threshold})")
    return {"threshold": threshold, "degree": degree, "finder": finder, "max_corrupt": max_corrupt}


# -- the run ----------------------------------------------------------------------


def resume_config(run_dir) -> SimulationConfig:
    stored, fingerprint = RunDirectory(run_dir).load_config()
    try:
        config = SimulationConfig(**stored)
    except (TypeError, SimulationConfigError) as exc:
        raise RunDirectoryError(f"{run_dir}/config.json is not a valid configuration: {exc}") from None
    if config.fingerprint() != fingerprint:
        raise RunDirectoryError(f"{run_dir}/config.json does not match its fingerprint (edited?)")
    return config


@dataclass
class OpenRun:
    """A run directory opened for rounds: the shared round context and where to start."""

    ctx: RunContext
    store: RunDirectory
    state: dict
    start_round: int
    calibration: object  # dp.CalibrationResult of the record-level noise
    restored: bool  # checkpoints of an earlier round were loaded (resume)
    identities: object = None  # simulation.federation.identity.RunIdentities (in-process sites), or None


def dp_sgd_config(config: SimulationConfig, noise_multiplier: float, steps: int | None = None):
    """Each site's DP-SGD configuration of a run (``steps``: per round unless given); also what
    ``secagg audit --own-training`` audits."""
    from dp import DpSgdConfig

    return DpSgdConfig(noise_multiplier=noise_multiplier, max_grad_norm=config.max_grad_norm,
                       sample_rate=config.sample_rate, steps=config.local_steps if steps is None else int(steps),
                       learning_rate=config.learning_rate, delta=config.delta, secure_mode=config.secure_rng,
                       privacy_unit=config.privacy_unit, public_size=config.public_size,
                       max_slices_per_patient=config.max_slices_per_patient)


def open_run(config: SimulationConfig, site_names, coordinator: Coordinator, weight_bound: float, out_dir, *,
             resume: bool, log, verify_keys: dict | None = None, site_identities: bool = False) -> OpenRun:
    """Everything before the first round, for every engine: protocol parameters, noise calibration,
    encoding, distributed DP, the run directory and the ledger (created, or reopened on resume).

    ``site_identities`` (the in-process engine, where every site lives in this process): give each
    site its own Ed25519 identity in ``RUN_DIR/sites/SITE/`` (:func:`~simulation.federation.identity.run_site_identities`);
    the sites sign their ledger spends with it (and their active-mode messages), and the registry of
    their verify keys is ``RUN_DIR/registry.json``. Engines whose sites keep their own keys pass
    ``verify_keys`` instead.

    Raises :class:`SimulationError` for impossible settings before anything is written.
    """
    from dp import PrivacyLedger, calibrate_noise
    from dp.errors import PrivacyError
    from dp.events import describe_guarantee

    store = RunDirectory(out_dir)
    names = sorted(site_names)
    if resume:
        check_resume(config, out_dir)
    else:
        store.check_new()  # an unusable run directory fails before the calibration, not after it
    protocol = protocol_parameters(config, len(names))
    try:
        public_weights = config.public_weights(names)
    except SimulationConfigError as exc:
        raise SimulationError(str(exc)) from None
    if weight_bound != max(public_weights.values()):
        raise SimulationError("the FedAvg weight scale must be the largest declared public weight")
    total_steps = config.rounds * config.local_steps
    try:
        calibration = calibrate_noise(target_epsilon=config.epsilon, delta=config.delta,
                                      sample_rate=config.sample_rate, steps=total_steps)
    except PrivacyError as exc:
        raise SimulationError(f"noise calibration: {exc}") from None
    sigma = calibration.noise_multiplier
    guarantee = describe_guarantee(config.privacy_unit)
    log(f"noise multiplier {sigma:.4f}: epsilon {calibration.epsilon:.3f} <= {config.epsilon} ({guarantee}) at "
        f"delta {config.delta} after {config.rounds} rounds x {config.local_steps} steps, q = {config.sample_rate} "
        f"per {config.privacy_unit} ({calibration.report.bound_accountant})")
    dp_config = dp_sgd_config(config, sigma)
    shared = coordinator.global_shared
    vector_length = sum(shared[n].numel() for n in coordinator.shared_names) + 1  # + the FedAvg weight
    he_params = None
    if config.mode == "he":
        from secagg import he

        try:
            he.require_tenseal()
        except he.HEUnavailableError as exc:
            raise SimulationError(str(exc)) from None
        he_params = he.find_he_parameters(vector_length=vector_length, max_summands=len(names),
                                          clip=config.update_clip)
        encoder = he_params.encoder
        log(he.THREAT_MODEL)
        log(he_params.describe())
    else:
        encoder = secagg.FixedPointEncoder.create(clip=config.update_clip, max_summands=len(names))
    ddp = None
    if config.distributed_dp:
        from dp import DistributedDpConfig, calibrate_distributed

        try:
            ddp = calibrate_distributed(DistributedDpConfig(
                config.distributed_dp, l2_clip=config.ddp_clip, target_epsilon=config.ddp_epsilon,
                delta=config.delta, rounds=config.rounds,
                min_contributors=1 if config.mode == "plain" else protocol["threshold"],
                max_contributors=len(names), colluding_sites=config.ddp_colluding, bits=config.ddp_bits,
            ), vector_length - 1)
        except PrivacyError as exc:
            raise SimulationError(f"distributed DP: {exc}") from None
        vector_length = ddp.vector_length
        log(f"distributed DP ({config.distributed_dp}): site-level epsilon {ddp.epsilon:.3f} <= {config.ddp_epsilon} "
            f"at delta {config.delta} over {config.rounds} rounds with >= {ddp.config.noise_contributors} honest "
            f"noise shares; L2 clip {config.ddp_clip}; noise std of the sum {ddp.noise_std(len(names)):.4g} per "
            f"coordinate; {ddp.bits}-bit ring, wrap-around probability <= {ddp.wrap_probability:.2g}")
    if config.active and not site_identities and set(verify_keys or {}) != set(names):
        raise SimulationError(f"active mode needs every site's verify key; missing for "
                              f"{sorted(set(names) - set(verify_keys or {}))}")

    restored = False
    if resume:
        _verify_before_resume(out_dir)
        ledger = PrivacyLedger.open(out_dir)
        if set(ledger.budgets) != set(names):
            ledger.close()
            raise SimulationError(f"{out_dir} is a run of sites {sorted(ledger.budgets)}; these sites are "
                                  f"{sorted(names)}: resume it with the same sites")
        state = store.read_state()
        start_round = state["last_round"] + 1
        if start_round > 0:
            coordinator.load_state_dict(store.load_torch("global.pt"))
            if (store.checkpoints / "server_optimizer.pt").exists():
                coordinator.load_server_state_dict(store.load_torch("server_optimizer.pt"))
            restored = True
        lost = sorted(r for r in ledger.committed_rounds() if r >= start_round)
        if lost:
            log(f"rounds {lost} were interrupted after their spend was committed: the spend stands, "
                "their aggregates are lost; continuing after them")
            for r in lost:
                state.setdefault("rounds", {})[str(r)] = "interrupted (spend committed, aggregate lost)"
            start_round = max(lost) + 1
            state["last_round"] = max(lost)
            store.write_state(state)
        store.rewrite_metrics([m for m in store.read_metrics() if m["round"] < start_round])
        log(f"resuming {out_dir} at round {start_round}")
    else:
        store.create(config.to_dict(), config.fingerprint())
        ledger = PrivacyLedger.create(out_dir, run_id=config.fingerprint()[:16] + "-" + secagg.new_session_id().hex()[:8],
                                      delta=config.delta, budgets={n: config.epsilon for n in names},
                                      site_level_budget=config.ddp_epsilon if ddp is not None else None,
                                      unit=config.privacy_unit)
        state = {"last_round": -1, "rounds": {}}
        start_round = 0
        store.write_state(state)
    identities = None
    if site_identities:
        from .identity import IdentityError, run_site_identities

        try:
            identities = run_site_identities(out_dir, names, create=not resume)
        except IdentityError as exc:
            ledger.close()
            raise SimulationError(f"site identities of {out_dir}: {exc}") from None
        verify_keys = dict(identities.registry)
        log(f"site identities (ledger signatures): registry of verify keys {identities.registry_path}; keep a "
            "copy outside the run directory to verify the ledger against")
    ctx = RunContext(config=config, site_ids={name: i + 1 for i, name in enumerate(names)}, coordinator=coordinator,
                     ledger=ledger, dp_config=dp_config, encoder=encoder, weight_bound=weight_bound,
                     protocol=protocol, vector_length=vector_length, he_params=he_params, ddp=ddp,
                     verify_keys=dict(verify_keys or {}), log=log, public_weights=public_weights)
    label = "PLAIN (no protection: the coordinator sees every update)" if config.mode == "plain" else config.mode
    log(f"{len(names)} sites, mode {label}, threshold t = {protocol['threshold']}, "
        f"{vector_length:,} values per update, {config.rounds} rounds")
    return OpenRun(ctx, store, state, start_round, calibration, restored, identities)


def check_resume(config: SimulationConfig, out_dir) -> None:
    if resume_config(out_dir).fingerprint() != config.fingerprint():
        raise RunDirectoryError(f"{out_dir} belongs to another configuration; resume it with its own settings")


def _verify_before_resume(out_dir) -> None:
    """A resume decides budgets from the ledger: it verifies first, signatures and the sites' anchors included
    (:func:`simulation.federation.ledger_check.verify_run_ledger`). The sites also refuse to sign below their anchors
    (:class:`dp.LedgerSigner`), so a truncated ledger cannot be continued either."""
    from dp import PrivacyLedger

    from .ledger_check import verify_run_ledger

    report = verify_run_ledger(out_dir).report
    if not report.ok:
        raise SimulationError(f"{out_dir}: the ledger does not verify ({report.where()}: {report.reason}); a resume "
                              "would decide budgets from it - see `secagg ledger verify`")
    # Every round the run recorded as completed released updates, so its spend must be in the ledger: a ledger
    # truncated together with its anchors would otherwise let the resume re-run (and re-charge from zero)
    # rounds whose updates were already released (issue-15 review, round 3).
    state = RunDirectory(out_dir).read_state()
    completed = sorted(int(r) for r, status in (state.get("rounds") or {}).items() if status == "completed")
    with PrivacyLedger.open(out_dir) as ledger:
        missing = sorted(set(completed) - ledger.committed_rounds())
    if missing:
        raise SimulationError(f"{out_dir}: the run completed round(s) {missing} but its ledger commits no spend for "
                              "them (truncated?); a resume would leave those releases uncharged - see `secagg "
                              "ledger verify`")
