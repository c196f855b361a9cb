"""``secagg simulate``: federated DP training of a brain-MRI autoencoder with secure aggregation.

The round itself - budget check, local DP-SGD, encoding, the protocol with
dropouts, the spend committed when the updates are in, FedAvg of the
decoded sum, checkpoints - is :mod:`simulation.federation.rounds`, shared with the
Flower engine. This module adds what only a one-machine simulation has: the
cohort (synthetic or a directory of NIfTI files, split into sites), the
in-process fleet of sites (:mod:`simulation.inprocess`), simulated dropouts
(:mod:`simulation.federation.dropout`), and the evaluation at the end (the federated
model against local-only, central and intensity baselines on the pooled
pathological test set).

:func:`open_run` (also used by the Flower ServerApp) validates the settings,
calibrates the noise, and creates or reopens the run directory and ledger.
``--resume RUN_DIR`` continues after the last completed round. A round whose
spend is in the ledger but whose checkpoint is not (a crash during the
round) keeps its spend - it was released - and its aggregate is lost: the
run continues with the next round index, so nothing is counted twice.
"""

from __future__ import annotations

import json
import math
import time
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import secagg
from secagg import STAGES

from .config import SimulationConfig, SimulationConfigError
from .federation.coordinator import Coordinator
from .federation.dropout import NoDropout, ProbabilisticDropout, load_schedule
from .errors import SimulationInputError
from .inprocess import SITE_LOCAL_DIR, SITE_LOCAL_LABEL, InProcessFleet
from .progress import Progress
from .federation.rounds import RunContext, run_rounds
from .federation.runstore import RunDirectory, RunDirectoryError, private_dir, private_umask
from .federation.site import Site

__all__ = ["run_simulation", "protocol_parameters", "open_run", "dp_sgd_config", "OpenRun", "privacy_summary",
           "public_site_facts",
           "SimulationResult", "SimulationError", "resume_config", "CohortSplit", "prepare_cohort", "new_model",
           "evaluate_model", "train_baseline", "pooled_training_data", "pathology_sites"]


class SimulationError(SimulationInputError):
    """Bad input for a simulation (data, parameters, run directory): exit code 2."""


@dataclass
class CohortSplit:
    """The pooled evaluation sets and each site's training data."""

    site_names: list
    train: dict  # site -> (N, 1, H, W) float32
    patients: dict  # site -> (N,) patient index of each training slice (patient-level DP-SGD)
    val: list  # healthy validation volumes (pooled over sites)
    pathology: list  # pathological test volumes (pooled over sites)
    data_root: str
    examples: dict = field(default_factory=dict)  # site -> SiteData (for figures)
    skipped: list = field(default_factory=list)  # [{"path", "reason"}] left out by skip_invalid


@dataclass
class SimulationResult:
    run_dir: Path
    summary: dict
    registry: dict = field(default_factory=dict)  # site -> ledger verify key: keep a copy outside the run dir
    # In memory only, for the experiment (simulation.experiment): never written by the simulation.
    reports: dict = field(default_factory=dict)  # evaluated model -> models.DetectionReport ("federated", or per site)
    models: dict = field(default_factory=dict)  # the same keys -> the evaluated torch model
    cohort: object = None  # the CohortSplit the run trained and evaluated on


# -- data -----------------------------------------------------------------------


def prepare_cohort(config: SimulationConfig, log) -> CohortSplit:
    """The run's cohort (synthetic, generated and cached, or ``config.data``) split into sites."""
    return _prepare_data(config, log)


def pathology_sites(cohort: CohortSplit) -> list[str]:
    """The site each pooled pathological volume came from (aligned with ``cohort.pathology``)."""
    owner = {id(v): name for name, site in cohort.examples.items() for v in site.pathology}
    return [owner.get(id(v), "unknown") for v in cohort.pathology]


def pooled_training_data(cohort: CohortSplit):
    """All sites' training slices and patient ids, pooled (the central baseline's data).

    Patient ids stay distinct across sites: each site's ids are offset by the patients before it."""
    names = cohort.site_names
    pooled = np.concatenate([cohort.train[n] for n in names])
    offsets = np.cumsum([0] + [int(cohort.patients[n].max()) + 1 for n in names[:-1]])
    patients = np.concatenate([cohort.patients[n] + o for n, o in zip(names, offsets)])
    return pooled, patients


def _prepare_data(config: SimulationConfig, log) -> CohortSplit:
    import models
    from models.errors import ModelsError

    cache = Path(config.cache_dir)
    try:
        if config.data is None:
            # The generator version is in the name: a cohort cached by an older generator is not reused.
            root = cache / (f"cohort-{config.scale}-{config.sites}sites-seed{config.data_seed}"
                            f"-v{models.GENERATOR_VERSION}")
            log(f"synthetic cohort: {config.sites} sites, scale '{config.scale}', seed {config.data_seed} -> {root}")
            manifest = models.generate_cohort(root, sites=config.sites, scale=config.scale, seed=config.data_seed)
            log("  (reused from the cache)" if getattr(manifest, "reused", False) else "  generated")
        else:
            root = Path(config.data)
            if not root.is_dir():
                raise SimulationError(f"data directory {root} does not exist")
        # With skip_invalid, each site's SkippedFilesWarning reaches stderr (one line at the CLI).
        sites = models.load_cohort(root, image_size=config.image_size, cache_dir=cache / "preprocessed",
                                   bids=config.bids, skip_invalid=config.skip_invalid,
                                   limits=models.VolumeLimits.from_mapping(config.volume_limits))
    except ModelsError as exc:
        raise SimulationError(f"cannot load the cohort: {exc}") from None
    train, patients, val, pathology = {}, {}, [], []
    for name, site in sites.items():
        if len({v.subject_key for v in site.healthy}) < 2:
            raise SimulationError(f"site {name} has {len(site.healthy)} healthy volume(s) of fewer than 2 subjects; "
                                  "at least 2 subjects are needed "
                                  "(training and threshold validation)")
        split = models.split_healthy(site, val_fraction=config.val_fraction, seed=config.seed)
        train[name] = models.training_array(split.train)
        patients[name] = models.training_patients(split.train)
        val.extend(split.val)
        pathology.extend(site.pathology)
    if not pathology:
        raise SimulationError(f"the cohort in {root} has no pathological volumes to evaluate detection on")
    skipped = [{"site": name, "path": str(s.path), "reason": s.reason}
               for name, site in sorted(sites.items()) for s in site.skipped]
    return CohortSplit(sorted(sites), train, patients, val, pathology, str(root), examples=dict(sites),
                       skipped=skipped)


# -- models ---------------------------------------------------------------------


def new_model(config: SimulationConfig):
    """A fresh model of ``config.model``, initialised from ``config.seed`` (the same for every arm)."""
    import torch

    import models

    torch.manual_seed(config.seed)  # the same initial weights for every site and baseline
    return models.create_model(config.model, image_size=config.image_size)


def _shared_names(model) -> list[str]:
    import models

    return models.shared_parameter_names(model)


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
        _check_resume(config, out_dir)
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
        from .federation.identity import IdentityError, run_site_identities

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


def _check_resume(config: SimulationConfig, out_dir) -> None:
    if resume_config(out_dir).fingerprint() != config.fingerprint():
        raise RunDirectoryError(f"{out_dir} belongs to another configuration; resume it with its own settings")


def run_simulation(
    config: SimulationConfig,
    out_dir,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after_round: int | None = None,
    test_only_randomness=None,
    experiment_noise=None,
    experiment_cohort=None,
    experiment_monitor=None,
) -> SimulationResult:
    """Run (or resume) a simulation into ``out_dir``; returns the summary.

    ``experiment_noise`` (``secagg experiment`` ONLY, never the default): a
    :class:`simulation.experiment.SeededExperimentNoise` whose per-site seeded streams replace the
    sites' CSPRNG sampling and noise, so that an experiment repeats exactly. Seeded noise is not a
    privacy guarantee: it needs ``secure_rng=False`` (the ledger records it), is refused with
    anything but that class, and ``summary.json`` then carries ``"seeded_noise"`` with the label.
    Only with ``experiment_noise``: ``experiment_cohort`` (a :class:`CohortSplit`) replaces the
    configuration's cohort (the experiment's leave-one-site-out split; a cohort without pathological
    volumes - learning-rate tuning - is trained and not evaluated), and ``experiment_monitor`` (a
    :class:`simulation.experiment.early_stopping.ValidationMonitor`) is asked after each round whether to
    stop; the best round's model (global and site-local parts) is then restored before the
    evaluation, while the ledger keeps every round that ran.

    ``test_only_randomness`` (TESTS ONLY, never the default): a function site name -> an object
    with ``poisson_mask(n, q)`` and ``gaussian(shape, std)`` that replaces the sites' DP sampling
    and noise; it needs ``secure_rng=False`` (so the ledger records that the noise was not from
    the CSPRNG) and is refused otherwise.

    Least privilege on disk: the run directory, the data cache and everything
    else the run writes are owner-only (directories 0700, files 0600) whatever
    the caller's umask - explicit modes where this project writes, umask 077
    for what libraries write (see :mod:`simulation.federation.runstore`).
    """
    with private_umask():
        result = _run_simulation(config, out_dir, resume=resume, quiet=quiet, stop_after_round=stop_after_round,
                                 test_only_randomness=test_only_randomness, experiment_noise=experiment_noise,
                                 experiment_cohort=experiment_cohort, experiment_monitor=experiment_monitor)
    RunDirectory(out_dir).restrict()
    return result


def _run_simulation(config: SimulationConfig, out_dir, *, resume: bool, quiet: bool,
                    stop_after_round: int | None, test_only_randomness=None,
                    experiment_noise=None, experiment_cohort=None, experiment_monitor=None) -> SimulationResult:
    import torch

    if experiment_noise is None and (experiment_cohort is not None or experiment_monitor is not None):
        raise SimulationError("experiment_cohort and experiment_monitor are for secagg experiment runs only "
                              "(they need experiment_noise)")
    if experiment_cohort is not None and not isinstance(experiment_cohort, CohortSplit):
        raise SimulationError("experiment_cohort must be a simulation.simulate.CohortSplit")
    if experiment_monitor is not None:
        from .experiment.early_stopping import ValidationMonitor

        if not isinstance(experiment_monitor, ValidationMonitor):
            raise SimulationError("experiment_monitor must be a simulation.experiment.early_stopping.ValidationMonitor")

    if experiment_noise is not None:
        from .experiment.randomness import SeededExperimentNoise

        if not isinstance(experiment_noise, SeededExperimentNoise):
            raise SimulationError("experiment_noise must be a simulation.experiment.SeededExperimentNoise")
        if config.secure_rng:
            raise SimulationError("seeded experiment noise needs secure_rng = false (it is not a privacy guarantee)")
        if test_only_randomness is not None:
            raise SimulationError("pass either test_only_randomness or experiment_noise, not both")
        if resume:
            raise SimulationError("an experiment run cannot be resumed: its seeded streams would restart")
        test_only_randomness = experiment_noise.for_site

    torch.set_num_threads(max(1, torch.get_num_threads()))
    progress = Progress(enabled=not quiet)
    log = progress.log
    started = time.perf_counter()

    # Validate everything that can be validated before touching the run directory.
    if resume:
        _check_resume(config, out_dir)
    cohort = _prepare_data(config, log) if experiment_cohort is None else experiment_cohort
    names = cohort.site_names
    try:
        dropout_model = (
            load_schedule(config.dropout_schedule, names) if config.dropout_schedule is not None
            else ProbabilisticDropout(config.dropout, config.dropout_seed) if config.dropout > 0 else NoDropout()
        )
    except SimulationConfigError as exc:
        raise SimulationError(str(exc)) from None

    # Models: one local copy per site (FedDis keeps appearance parameters local), one global state.
    reference = new_model(config)
    shared_names = _shared_names(reference)
    shared_init = {n: p.detach().clone() for n, p in reference.named_parameters()}
    if test_only_randomness is not None and config.secure_rng:
        raise SimulationError("injected test randomness needs secure_rng = false (tests only)")
    try:
        weights = config.public_weights(names)
    except SimulationConfigError as exc:
        raise SimulationError(str(exc)) from None
    sites = {name: Site(name, i + 1, torch.from_numpy(cohort.train[name]), new_model(config), shared_names,
                        patients=cohort.patients[name], public_weight=weights[name],
                        randomness=None if test_only_randomness is None else test_only_randomness(name))
             for i, name in enumerate(names)}
    coordinator = Coordinator(shared_init, shared_names, config.server_rule())
    # FedAvg weights are declared and public (equal by default): never a site's private record count.
    weight_bound = max(weights.values())
    run = open_run(config, names, coordinator, weight_bound, out_dir, resume=resume, log=log, site_identities=True)
    fleet = InProcessFleet(sites, run.identities.keys, progress, site_folders=run.identities.folders,
                           site_local_dir=run.store.root / SITE_LOCAL_DIR)
    if run.restored:
        fleet.load_checkpoints(run.store)
    log(f"dropouts: {dropout_model.describe()}")
    def snapshot():
        return coordinator.state_dict(), {name: site.snapshot() for name, site in sites.items()}

    def monitor_round(round_index):
        # new_model re-seeds torch's generator, which FedDis' intensity augmentation draws from: fork it
        # so that measuring the validation loss leaves training exactly as it would be without.
        with torch.random.fork_rng(devices=[]):
            current = _federated_models(config, coordinator, sites, shared_names, reference)
        return experiment_monitor.after_round(round_index, list(current.values()), snapshot)

    after_round = monitor_round if experiment_monitor is not None else None  # only experiments watch rounds
    try:
        stopped, interrupted = run_rounds(run.ctx, fleet, run.store, run.state, run.start_round, dropout_model,
                                          stop_after_round, after_round)
    finally:
        run.ctx.ledger.close()
    if experiment_monitor is not None and experiment_monitor.best_state is not None and not interrupted:
        # Evaluate the best round's model; the checkpoints and the ledger keep the last round that ran.
        shared, site_states = experiment_monitor.best_state
        coordinator.load_state_dict(shared)
        for name, state in site_states.items():
            sites[name].rollback(state)
    registry = dict(run.identities.registry)
    if interrupted:
        return SimulationResult(Path(out_dir), {"stopped_after_round": stop_after_round}, registry)
    reports: dict = {}
    summary = _finish(config, cohort, sites, coordinator, run.store, run.ctx.protocol, run.calibration, shared_names,
                      reference, started, stopped, progress, registry, reports=reports,
                      seeded=None if experiment_noise is None else experiment_noise.describe())
    evaluated = (_federated_models(config, coordinator, sites, shared_names, reference)
                 if experiment_noise is not None else {})
    return SimulationResult(Path(out_dir), summary, registry, reports=reports, cohort=cohort, models=evaluated)



# -- evaluation, baselines, summary ------------------------------------------------


def _global_model(config, coordinator, reference_site_model=None):
    import torch

    model = new_model(config)
    if reference_site_model is not None:
        model.load_state_dict(reference_site_model.state_dict())
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in coordinator.global_shared.items():
            params[name].copy_(value)
    return model


def _federated_models(config, coordinator, sites, shared_names, reference) -> dict:
    """The federated model as evaluated: {"federated": global model}, or FedDis's personalised model per site."""
    if set(shared_names) != {n for n, _ in reference.named_parameters()}:
        return {name: _global_model(config, coordinator, site.model) for name, site in sites.items()}
    return {"federated": _global_model(config, coordinator)}


def evaluate_model(model, cohort: CohortSplit, config: SimulationConfig):
    """The detection report of ``model`` beside the intensity baseline on the cohort's pooled pathological
    volumes (threshold fixed on the healthy validation volumes), also per test site (``by_group``)."""
    return _evaluate(model, cohort, config)


def _evaluate(model, cohort, config):
    import models

    median = 3 if config.image_size <= 64 else 5
    report = models.evaluate(model, cohort.val, cohort.pathology, fpr=0.01, median_size=median,
                             groups=pathology_sites(cohort))
    return report


def _metrics(report, which: str) -> dict:
    method = report.model if which == "model" else report.baseline
    overall = method.overall
    return {"dice": overall.dice_mean, "auprc": overall.auprc, "auroc": overall.auroc,
            "best_dice_upper_bound": overall.best_dice}


def train_baseline(config, data, patients, steps, sigma, site_name, progress=None, *, randomness=None):
    """RESEARCH-ONLY: :func:`_train_baseline` (``randomness``: an experiment's seeded stream, or None)."""
    if progress is None:
        progress = Progress(enabled=False)
    return _train_baseline(config, data, patients, steps, sigma, site_name, progress, randomness=randomness)


def _train_baseline(config, data, patients, steps, sigma, site_name, progress, *, randomness=None):
    """RESEARCH-ONLY comparison: a model trained alone on ``data`` with the same sigma, q, unit and
    total steps. Only the simulator, which holds every site's data, can train it; nothing of it is
    released in a deployment, and it is not in the ledger."""
    import torch

    import models
    from dp import DpSgdConfig, train_dp_sgd

    model = new_model(config)
    cfg = DpSgdConfig(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm, sample_rate=config.sample_rate,
                      steps=steps, learning_rate=config.learning_rate, delta=config.delta,
                      secure_mode=config.secure_rng, privacy_unit=config.privacy_unit,
                      public_size=config.public_size, max_slices_per_patient=config.max_slices_per_patient)
    with progress.task(f"baseline {site_name}", total=steps) as advance:
        train_dp_sgd(model, torch.from_numpy(data), cfg, site=site_name, round_index=0,
                     progress=lambda step, loss: advance(), patients=patients,
                     loss_fn=models.training_loss(model), randomness=randomness)
    return model


def _finish(config, cohort, sites, coordinator, store, protocol, calibration, shared_names, reference, started,
            stopped, progress, registry=None, reports=None, seeded=None) -> dict:
    log = progress.log
    if cohort.skipped:  # which input files were left out stays with the sites' own records
        local = store.root / SITE_LOCAL_DIR
        local.mkdir(mode=0o700, exist_ok=True)
        (local / "skipped_files.json").write_text(json.dumps({"site_local": SITE_LOCAL_LABEL,
                                                               "files": cohort.skipped}, indent=2))
    metrics = store.read_metrics()
    sigma = calibration.noise_multiplier
    total_steps = config.rounds * config.local_steps
    if cohort.pathology:
        results, figures, threshold = _evaluate_run(config, cohort, sites, coordinator, shared_names, reference,
                                                    sigma, total_steps, metrics, store, progress, reports)
    else:  # an experiment's tuning run: it must never see a test volume (simulation.experiment.held_out)
        log("no pathological volumes: trained only, not evaluated (learning-rate tuning)")
        results, figures, threshold = None, [], None
    from dp import verify_ledger

    verification = verify_ledger(store.root, registry=registry)  # the sites' signatures on every spend
    completed = [m for m in metrics if m["status"] == "completed"]
    summary = {
        "mode": config.mode,
        "protection": (
            "none: PLAIN baseline, the coordinator saw every site's update" if config.mode == "plain"
            else "homomorphic encryption (CKKS): the coordinator saw only ciphertexts and the sum; WEAKER trust "
                 "model - any one site colluding with the coordinator can decrypt every update" if config.mode == "he"
            else "secure aggregation: the coordinator saw only sums of masked updates"),
        "preset": config.preset,
        "scale": config.scale if config.data is None else "user data",
        "data": cohort.data_root,
        "model": config.model,
        "image_size": config.image_size,
        # Only public facts per site: record and patient counts stay at the sites.
        "sites": public_site_facts(config, cohort.site_names),
        # Input files left out by --skip-invalid: the count only; which files (paths can name
        # subjects) is in the run's site-local folder.
        "skipped_files": {"count": len(cohort.skipped), "files_listed_in": f"{SITE_LOCAL_DIR}/skipped_files.json",
                          "release": "outside the ledger, public by declaration: how many input files were "
                                     "unreadable or out of bounds (issue 18 asks for it), not a count of patients"},
        "rounds_planned": config.rounds,
        "rounds_completed": len(completed),
        "rounds_aborted": [m["round"] for m in metrics if m["status"] == "aborted"],
        "stopped": stopped,
        "dropouts_survived": sum(len(m["planned_dropouts"]) for m in completed),
        "threshold": protocol["threshold"],
        "graph": "complete" if protocol["degree"] is None else f"Harary degree {protocol['degree']}",
        "secagg_plus_parameters": protocol["finder"],
        "privacy": privacy_summary(config, sigma, metrics, verification.ok),
        "detection": results,
        "detection_threshold": threshold,
        "evaluation_privacy": EVALUATION_PRIVACY if results is not None else None,
        "figures": figures,
        "baselines_note": "RESEARCH-ONLY comparisons: local/central baselines are counterfactual models the "
                          "simulator (which holds every site's data) trains with the same noise multiplier, "
                          "privacy unit and steps; a deployment never trains or releases them, and they are not "
                          "in the ledger",
    }
    seconds = round(time.perf_counter() - started, 1)  # a wall time grows with data size: kept site-local
    if seeded is not None:  # secagg experiment: the DP noise and sampling were seeded (not a guarantee)
        summary["seeded_noise"] = seeded
        summary["privacy"]["seeded_noise"] = seeded["label"]
    from .federation.runstore import atomic_write_json

    atomic_write_json(store.summary_path, summary)
    atomic_write_json(private_dir(store.root / SITE_LOCAL_DIR) / "run_time.json",
                      {"site_local": SITE_LOCAL_LABEL, "seconds": seconds})
    log(f"finished in {seconds} s (kept in {SITE_LOCAL_DIR}/run_time.json, not in summary.json)")
    return summary


def _evaluate_run(config, cohort, sites, coordinator, shared_names, reference, sigma, total_steps, metrics, store,
                  progress, reports):
    """The detection results (federated, intensity baseline, the summary's local/central baselines), figures
    and the federated model's threshold record."""
    log = progress.log
    log("evaluating on the pooled pathological test set "
        "(threshold fixed on the pooled healthy validation volumes; counts in the site-local folder)")
    federated_shared_only = set(shared_names) != {n for n, _ in reference.named_parameters()}
    results = {}
    if federated_shared_only:
        # FedDis: each site's personalised model (global shape + its own appearance and decoder).
        per_site = {name: _evaluate(_global_model(config, coordinator, site.model), cohort, config)
                    for name, site in sites.items()}
        if reports is not None:
            reports.update(per_site)
        results["federated"] = {k: float(np.mean([_metrics(r, "model")[k] for r in per_site.values()]))
                                for k in ("dice", "auprc", "auroc", "best_dice_upper_bound")}
        results["federated_per_site"] = {n: _metrics(r, "model") for n, r in per_site.items()}
        first_site = next(iter(sites))
        federated_model = _global_model(config, coordinator, sites[first_site].model)
        federated_report = per_site[first_site]
    else:
        first_site = None
        federated_model = _global_model(config, coordinator)
        federated_report = _evaluate(federated_model, cohort, config)
        if reports is not None:
            reports["federated"] = federated_report
        results["federated"] = _metrics(federated_report, "model")
    results["intensity_baseline"] = _metrics(federated_report, "baseline")
    if "local" in config.baselines:
        results["local"] = {}
        for name in cohort.site_names:
            model = _train_baseline(config, cohort.train[name], cohort.patients[name], total_steps, sigma,
                                    f"local-{name}", progress)
            results["local"][name] = _metrics(_evaluate(model, cohort, config), "model")
    if "central" in config.baselines:
        pooled, pooled_patients = pooled_training_data(cohort)
        model = _train_baseline(config, pooled, pooled_patients, total_steps, sigma, "central", progress)
        results["central"] = _metrics(_evaluate(model, cohort, config), "model")

    figures = _figures(config, cohort, federated_model, federated_report, metrics, store, log)
    _write_evaluation_counts(store, cohort, federated_report)
    return results, figures, _threshold_record(federated_report, first_site)


def _verify_before_resume(out_dir) -> None:
    """A resume decides budgets from the ledger: it verifies first, signatures and the sites' anchors included
    (:func:`simulation.federation.ledger_check.verify_run_ledger`). The sites also refuse to sign below their anchors
    (:class:`dp.LedgerSigner`), so a truncated ledger cannot be continued either."""
    from dp import PrivacyLedger

    from .federation.ledger_check import verify_run_ledger

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


EVALUATION_PRIVACY = (
    "NOT differentially private and not in the ledger: the detection threshold (fixed on the sites' healthy "
    "validation scans), the accuracy metrics and figures (on their pathological test scans) are computed by the "
    "party that holds those held-out scans - here the simulator, which holds every site's data. They carry no "
    "count of patients, volumes or voxels (those stay in site-local/evaluation_counts.json), but each value "
    "depends on every held-out scan. A deployment computes them where the test data lives or keeps them private.")


def _write_evaluation_counts(store, cohort, report) -> None:
    """Exact counts behind the evaluation, for the simulator only (site-local, 0600)."""
    local = store.root / SITE_LOCAL_DIR
    local.mkdir(mode=0o700, exist_ok=True)
    from .federation.runstore import atomic_write_json

    atomic_write_json(local / "evaluation_counts.json", {
        "site_local": SITE_LOCAL_LABEL, "pathological_test_volumes": len(cohort.pathology),
        "healthy_validation_volumes": report.n_healthy_volumes, "threshold_voxels": report.model.threshold.n_voxels})


def _threshold_record(report, site_model) -> dict:
    """The federated model's detection threshold as ``secagg export`` / ``detect`` use it."""
    threshold = report.model.threshold
    # No count of volumes or voxels here (exact counts of a site's patients; issue-15 review): the
    # simulator keeps them in site-local/evaluation_counts.json.
    return {"value": threshold.value, "target_fpr": threshold.target_fpr, "achieved_fpr": threshold.achieved_fpr,
            "median_size": report.median_size,
            "site_model": site_model,  # FedDis: whose local appearance/decoder parts complete the global model
            "source": "(1 - fpr) quantile of the federated model's median-filtered residuals over the brain voxels "
                      "of the run's healthy validation volumes (no lesion label used)"}


def public_site_facts(config: SimulationConfig, site_names) -> dict:
    """What summary.json may say per site: its declared public weight and, if declared, public size."""
    weights = config.public_weights(site_names)
    facts = {}
    for name in sorted(site_names):
        facts[name] = {"public_weight": weights[name],
                       "weight_source": "declared" if config.site_weights is not None else "equal (default)",
                       "training_size": "held at the site (not released)"}
        if config.public_size is not None:
            facts[name]["declared_public_size"] = {"value": config.public_size, "unit": config.privacy_unit}
    return facts


def privacy_summary(config: SimulationConfig, noise_multiplier: float, metrics: list, ledger_verified: bool) -> dict:
    """The privacy part of ``summary.json`` (every engine): guarantee, parameters, spend, ledger check."""
    from dp.events import describe_guarantee

    guarantee = describe_guarantee(config.privacy_unit)
    unit_text = ("one patient (all of their slices; the GDPR data subject)" if config.privacy_unit == "patient"
                 else "one 2-D training slice - NOT one patient: a patient with k slices is protected only by "
                      "group privacy over k records")
    return {
        "guarantee": f"{guarantee}: DP of each site's released updates; the unit is {unit_text}",
        "privacy_unit": config.privacy_unit,
        "adjacency": f"add/remove one {config.privacy_unit}",
        "public_normaliser": (f"q * declared public size ({config.public_size})" if config.public_size is not None
                              else "1 (no declared public size)"),
        "max_slices_per_patient": config.max_slices_per_patient,
        "delta": config.delta,
        "budget_per_site": config.epsilon,
        "noise_multiplier": noise_multiplier,
        "sample_rate": config.sample_rate,
        "clipping_norm": config.max_grad_norm,
        "local_steps_per_round": config.local_steps,
        "calibration_accountant": "tightest of rdp, prv, pld",
        "epsilon_spent": metrics[-1]["epsilon"] if metrics else {},
        "epsilon_unit": guarantee,
        "ledger_verified": ledger_verified,
        "secure_rng": config.secure_rng,
        "site_level": None if not config.distributed_dp else {
            "guarantee": "site-level DP of each released sum (zero-out adjacency: one site's whole clipped "
                         "update), if at least t minus the tolerated colluding sites add honest noise",
            "mechanism": config.distributed_dp,
            "budget": config.ddp_epsilon,
            "delta": config.delta,
            "l2_clip": config.ddp_clip,
            "epsilon_spent": metrics[-1].get("site_level_epsilon") if metrics else {},
            "accountant": "RDP of the distributed discrete mechanism (dp.distributed)",
        },
    }


def _figures(config, cohort, model, report, metrics, store, log) -> list[str]:
    """Run plots and anomaly-map examples; a failing figure is reported, never fatal."""
    written = []
    try:
        from .plots import plot_run

        written += plot_run(metrics, store.plots)
    except Exception as exc:
        log(f"warning: run plots failed: {type(exc).__name__}: {exc}")
    try:
        import models

        median = 3 if config.image_size <= 64 else 5
        path = models.plot_detection_examples(
            model, cohort.pathology, report.model.threshold, store.plots / "anomaly_maps.png",
            per_type=2, median_size=median, baseline_threshold=report.baseline.threshold,
            title=f"federated {config.model} ({config.mode})",
        )
        written.append(str(path))
        written.append(str(models.plot_site_examples(cohort.examples, store.plots / "sites.png")))
    except Exception as exc:
        log(f"warning: anomaly-map figure failed: {type(exc).__name__}: {exc}")
    return written


def format_summary(summary: dict) -> str:
    """The short human summary printed at the end of a run."""
    lines = [
        "",
        f"== secagg simulate: {summary['protection']}",
        f"   {len(summary['sites'])} sites, {summary['rounds_completed']}/{summary['rounds_planned']} rounds "
        f"completed, {summary['dropouts_survived']} dropouts survived, threshold t = {summary['threshold']}, "
        f"{summary['graph']} graph",
    ]
    skipped = summary.get("skipped_files", {}).get("count", 0)
    if skipped:
        lines.append(f"   skipped {skipped} unusable input file(s) (--skip-invalid; listed in summary.json)")
    if summary["rounds_aborted"]:
        lines.append(f"   aborted rounds (too few survivors, no output): {summary['rounds_aborted']}")
    if summary["stopped"]:
        lines.append(f"   run stopped early: {summary['stopped']}")
    p = summary["privacy"]
    unit = p.get("privacy_unit", "slice")
    default = " - the default unit" if unit == "patient" else " - NOT patient-level (labelled option)"
    lines.append(f"   privacy: {unit.upper()}-LEVEL epsilon ({p.get('epsilon_unit', p['guarantee'])}{default}); "
                 f"budget epsilon {p['budget_per_site']} per site at delta {p['delta']}; sigma "
                 f"{p['noise_multiplier']:.3f}, q {p['sample_rate']} per {unit}, C {p['clipping_norm']} per {unit}")
    for site, eps in p["epsilon_spent"].items():
        lines.append(f"     {site}: {unit}-level epsilon spent <= {eps:.3f} (add/remove one {unit})" if eps is not None
                     else f"     {site}: nothing spent")
    if p.get("site_level"):
        sl = p["site_level"]
        lines.append(f"   site-level ({sl['mechanism']} distributed DP, reported separately, never added to the above): "
                     f"budget {sl['budget']} at delta {sl['delta']}, L2 clip {sl['l2_clip']}")
        for site, eps in (sl["epsilon_spent"] or {}).items():
            lines.append(f"     {site}: site-level epsilon <= {eps:.3f}" if eps is not None
                         else f"     {site}: no aggregate released")
    lines.append(f"   ledger verified: {'yes' if p['ledger_verified'] else 'NO'}")
    d = summary["detection"]
    lines.append("   detection on the pooled pathological test set (Dice at 1% healthy FPR / AUPRC / AUROC):")

    def row(label, m):
        return f"     {label:<28} {m['dice']:.3f} / {m['auprc']:.3f} / {m['auroc']:.3f}"

    lines.append(row("federated" + (" (PLAIN)" if summary["mode"] == "plain" else ""), d["federated"]))
    for site, m in d.get("local", {}).items():
        lines.append(row(f"local only: {site} (research-only)", m))
    if "central" in d:
        lines.append(row("central, pooled (research-only)", d["central"]))
    lines.append(row("intensity-threshold baseline", d["intensity_baseline"]))
    lines.append(f"   scale: {summary['scale']} cohort, {summary['model']} at {summary['image_size']}x"
                 f"{summary['image_size']}; the study-sized run is `secagg simulate --preset study` "
                 "(see README; GPU-class budget)")
    return "\n".join(lines)
