"""``secagg simulate``: federated DP training of a brain-MRI autoencoder with secure aggregation.

The round itself - budget check, local DP-SGD, encoding, the protocol with
dropouts, the spend committed when the updates are in, FedAvg of the
decoded sum, checkpoints - is :mod:`simulation.federation.rounds`, shared with the
Flower engine. This module adds what only a one-machine simulation has: the
cohort (synthetic or a directory of NIfTI files, split into sites), the
in-process fleet of sites (:mod:`simulation.engines.inprocess.fleet`), simulated dropouts
(:mod:`simulation.federation.dropout`), and the evaluation at the end (the federated
model against local-only, central and intensity baselines on the pooled
pathological test set).

:func:`~simulation.federation.setup.open_run` (shared with the Flower ServerApp)
validates the settings, calibrates the noise, and creates or reopens the run
directory and ledger; ``--resume RUN_DIR`` continues after the last completed
round (what a resume keeps and loses: :mod:`simulation.federation.setup`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...config import SimulationConfig, SimulationConfigError
from ...federation.coordinator import Coordinator
from ...federation.dropout import NoDropout, ProbabilisticDropout, load_schedule
from ...federation.rounds import run_rounds
from ...federation.runstore import RunDirectory, private_dir, private_umask
from ...federation.setup import SimulationError, check_resume, open_run
from ...federation.site import Site
from ...federation.summary import privacy_summary, public_site_facts
from .fleet import SITE_LOCAL_DIR, SITE_LOCAL_LABEL, InProcessFleet
from ...progress import Progress

__all__ = ["run_simulation", "SimulationResult", "format_summary", "CohortSplit", "prepare_cohort", "new_model",
           "evaluate_model", "train_baseline", "pooled_training_data", "pathology_sites"]


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


# -- the run ----------------------------------------------------------------------


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
        raise SimulationError("experiment_cohort must be a simulation.engines.inprocess.simulate.CohortSplit")
    if experiment_monitor is not None:
        from ...experiment.early_stopping import ValidationMonitor

        if not isinstance(experiment_monitor, ValidationMonitor):
            raise SimulationError("experiment_monitor must be a simulation.experiment.early_stopping.ValidationMonitor")

    if experiment_noise is not None:
        from ...experiment.randomness import SeededExperimentNoise

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
        check_resume(config, out_dir)
    else:
        RunDirectory(out_dir).check_new()  # before the cohort and the calibration: an unusable --out fails at once
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
    from ...federation.runstore import atomic_write_json

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
    from ...federation.runstore import atomic_write_json

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


def _figures(config, cohort, model, report, metrics, store, log) -> list[str]:
    """Run plots and anomaly-map examples; a failing figure is reported, never fatal."""
    written = []
    try:
        from ...reports.plots import plot_run

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
