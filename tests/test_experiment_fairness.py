"""The fairness parts of ``secagg experiment``: learning rates tuned per arm on validation data, one
early-stopping rule (and the epsilon of an early stop), and the leave-one-site-out split.

Pure logic runs on known fakes; the training paths run the tiny preset for a few steps.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nilearn")

from simulation.config import ConfigError  # noqa: E402
from simulation.experiment import (  # noqa: E402
    EarlyStopping,
    StoppingRule,
    ValidationMonitor,
    held_out_site_for,
    load_experiment_config,
    run_experiment,
    score_by_arm,
    select_learning_rate,
    split_held_out_site,
    train_arms,
    train_with_stopping,
    tune_learning_rates,
    validation_loss,
    without_test_volumes,
)
from simulation.engines.inprocess.simulate import pathology_sites, pooled_training_data, prepare_cohort  # noqa: E402


# -- learning-rate selection ------------------------------------------------------


def test_the_learning_rate_with_the_lowest_validation_loss_is_chosen():
    assert select_learning_rate({5e-4: 0.30, 2e-3: 0.10, 5e-3: 0.20}) == 2e-3
    assert select_learning_rate({5e-4: 0.10, 2e-3: 0.30, 5e-3: 0.20}) == 5e-4
    assert select_learning_rate({5e-4: 0.30, 2e-3: 0.20, 5e-3: 0.10}) == 5e-3
    assert select_learning_rate({5e-3: 0.1, 5e-4: 0.1}) == 5e-4  # a tie goes to the smaller rate
    # A diverged run (nan, inf, None) never wins, however low the others are.
    assert select_learning_rate({5e-4: 0.9, 2e-3: float("nan"), 5e-3: float("inf"), 1e-2: None}) == 5e-4
    with pytest.raises(ValueError, match="finite"):
        select_learning_rate({1e-3: float("nan"), 2e-3: float("inf")})


def test_an_arms_score_is_its_best_validation_loss_and_local_is_the_mean_of_its_sites():
    def trained(arm, best):
        stopping = EarlyStopping(StoppingRule(every=1, max_steps=1))
        stopping.update(1, best)
        return SimpleNamespace(arm=arm, stopping=stopping)

    scores = score_by_arm([trained("federated", 0.2), trained("local", 0.1), trained("local", 0.3),
                           trained("central", float("nan"))])
    assert scores["federated"] == pytest.approx(0.2) and scores["local"] == pytest.approx(0.2)
    assert math.isinf(scores["central"])


# -- the early-stopping rule ------------------------------------------------------


def _run_curve(rule, curve):
    stopping = EarlyStopping(rule)
    for i, loss in enumerate(curve):
        step = (i + 1) * rule.every
        _, stop = stopping.update(step, loss)
        if stop:
            break
    return stopping


def test_early_stopping_on_a_synthetic_loss_curve():
    curve = [1.0, 0.8, 0.7, 0.72, 0.71, 0.75, 0.6, 0.5]
    stopping = _run_curve(StoppingRule(every=10, max_steps=80, patience=3), curve)
    # Best at step 30; three measurements without improvement (40, 50, 60): stop at 60, never seeing 0.6.
    assert (stopping.best_step, stopping.best_loss, stopping.stopped_step) == (30, 0.7, 60)
    assert stopping.stopped_early and [s for s, _ in stopping.history] == [10, 20, 30, 40, 50, 60]
    # More patience reaches the later improvement.
    longer = _run_curve(StoppingRule(every=10, max_steps=80, patience=4), curve)
    assert (longer.best_step, longer.stopped_step, longer.stopped_early) == (80, 80, False)
    # patience 0: no early stopping, the whole curve is measured.
    off = _run_curve(StoppingRule(every=10, max_steps=80, patience=0), curve)
    assert off.stopped_step == 80 and not off.stopped_early and off.best_step == 80
    # A relative minimum improvement of 15%: 1.0 -> 0.8 counts (20%), 0.8 -> 0.7 does not (12.5%).
    strict = _run_curve(StoppingRule(every=10, max_steps=80, patience=2, min_improvement=0.15), curve)
    assert (strict.best_step, strict.best_loss, strict.stopped_step) == (20, 0.8, 40)
    # A diverged measurement is never an improvement.
    nan = _run_curve(StoppingRule(every=1, max_steps=5, patience=1), [0.5, float("nan"), 0.1])
    assert (nan.best_step, nan.stopped_step) == (1, 2)
    with pytest.raises(RuntimeError, match="already stopped"):
        strict.update(50, 0.1)


def test_stopping_rule_is_checked():
    for bad in ({"every": 0, "max_steps": 5}, {"every": 1, "max_steps": 5, "patience": -1},
                {"every": 1, "max_steps": 5, "min_improvement": 1.0}, {"every": 1.5, "max_steps": 5}):
        with pytest.raises(ValueError):
            StoppingRule(**bad)


class _Scale(torch.nn.Module):
    """Reconstruction w·x: validation loss (w - 1)² · mean(x²), so a trainer's weights set its loss."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.w * x


def test_train_with_stopping_stops_the_trainer_and_restores_the_best_model():
    model = _Scale()
    slices = np.ones((3, 1, 4, 4), dtype=np.float32)
    weights = [0.0, 0.5, 0.9, 0.5, 0.3, 0.2, 1.0, 1.0]
    steps_run = []

    def trainer(progress):
        for step, w in enumerate(weights, start=1):
            with torch.no_grad():
                model.w.fill_(w)
            steps_run.append(step)
            progress(step, None)

    stopping = train_with_stopping(trainer, model, StoppingRule(every=1, max_steps=8, patience=2), slices)
    assert steps_run == [1, 2, 3, 4, 5]  # stopped two measurements after the best, before w = 1.0
    assert stopping.best_step == 3 and stopping.stopped_step == 5
    assert float(model.w.detach()) == pytest.approx(0.9)  # the best model is restored
    assert validation_loss(model, slices) == pytest.approx(stopping.best_loss) == pytest.approx(0.01)
    # Measured only every `every` steps (and at the last one).
    model2, steps_run[:] = _Scale(), []
    weights[:] = [0.1 * i for i in range(1, 8)]

    def trainer2(progress):
        for step, w in enumerate(weights, start=1):
            with torch.no_grad():
                model2.w.fill_(w)
            progress(step, None)

    sparse = train_with_stopping(trainer2, model2, StoppingRule(every=3, max_steps=7, patience=5), slices)
    assert [s for s, _ in sparse.history] == [3, 6, 7] and sparse.stopped_step == 7 and not sparse.stopped_early
    with pytest.raises(RuntimeError, match="without reporting"):
        train_with_stopping(lambda progress: progress(1, None), _Scale(), StoppingRule(every=1, max_steps=3), slices)


def test_validation_monitor_keeps_the_best_rounds_state_and_says_why_it_stops():
    slices = np.ones((2, 1, 4, 4), dtype=np.float32)
    monitor = ValidationMonitor(StoppingRule(every=5, max_steps=30, patience=1), slices)
    model = _Scale()
    reasons = []
    for round_index, w in enumerate([0.5, 0.8, 0.6]):
        with torch.no_grad():
            model.w.fill_(w)
        reasons.append(monitor.after_round(round_index, [model], lambda w=w: {"w": w}))
    assert reasons[:2] == [None, None] and "early stopping" in reasons[2] and "step 10" in reasons[2]
    assert monitor.best_state == {"w": 0.8} and monitor.stopping.stopped_step == 15
    # patience 0: nothing is kept to restore (the last model stays), the curve is still recorded.
    off = ValidationMonitor(StoppingRule(every=5, max_steps=10, patience=0), slices)
    assert off.after_round(0, [model], lambda: "state") is None and off.best_state is None
    assert off.after_round(1, [model], lambda: "state") is None and off.stopping.stopped_step == 10


# -- configuration ----------------------------------------------------------------


def test_fairness_settings_are_checked():
    with pytest.raises(ConfigError, match="evaluation seed"):
        load_experiment_config(seeds=[0, 1], lr_grid=[1e-3, 2e-3], tuning_seed=1)
    with pytest.raises(ConfigError, match="positive learning rates"):
        load_experiment_config(lr_grid=[1e-3, -1])
    with pytest.raises(ConfigError, match="distinct"):
        load_experiment_config(lr_grid=[1e-3, 1e-3])
    with pytest.raises(ConfigError, match="patience"):
        load_experiment_config(patience=-1)
    with pytest.raises(ConfigError, match="min_improvement"):
        load_experiment_config(min_improvement=1.5)
    with pytest.raises(ConfigError, match="held_out_site"):
        load_experiment_config(held_out_site="yes")
    with pytest.raises(ConfigError, match="at least 3 sites"):
        load_experiment_config(held_out_site=True, simulation={"sites": 2})
    config = load_experiment_config("experiments/reference.toml")
    assert config.lr_grid and config.tuning_seed not in config.seeds and config.patience > 0 and config.held_out_site


# -- leave-one-site-out -----------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fairness-cache"))


@pytest.fixture(scope="module")
def four_sites(cache_dir):
    config = load_experiment_config(seeds=[0, 1], vary_data=False, simulation={
        "preset": "tiny", "sites": 4, "rounds": 2, "local_steps": 1, "cache_dir": cache_dir})
    sim = config.for_seed(0)
    return sim, prepare_cohort(sim, lambda text: None)


def test_held_out_site_rotates_over_seeds():
    names = ["site-3", "site-1", "site-4", "site-2"]
    assert [held_out_site_for(s, names) for s in range(6)] == ["site-1", "site-2", "site-3", "site-4", "site-1",
                                                                "site-2"]
    with pytest.raises(ValueError, match="at least 3 sites"):
        held_out_site_for(0, ["a", "b"])


def test_the_held_out_sites_data_never_enters_training(four_sites):
    _, cohort = four_sites
    for held in cohort.site_names:
        training, test = split_held_out_site(cohort, held)
        site = cohort.examples[held]
        held_ids = {id(v) for v in (*site.healthy, *site.pathology)}
        held_subjects = {v.subject_key for v in (*site.healthy, *site.pathology)}
        # Training: the other sites only - their slices, patients, validation and test volumes.
        assert held not in training.site_names and set(training.train) == set(training.patients) == (
            set(cohort.site_names) - {held})
        for name in training.site_names:
            assert training.train[name] is cohort.train[name] and training.patients[name] is cohort.patients[name]
        pooled, patients = pooled_training_data(training)
        assert pooled.shape[0] == sum(cohort.train[n].shape[0] for n in training.site_names) == patients.shape[0]
        assert not any(id(v) in held_ids or v.subject_key in held_subjects for v in (*training.val,
                                                                                        *training.pathology))
        assert set(pathology_sites(training)) == set(training.site_names)
        # Held-out test set: exactly that site's pathological volumes; threshold from the training sites.
        assert [id(v) for v in test.pathology] == [id(v) for v in site.pathology] and test.pathology
        assert set(pathology_sites(test)) == {held}
        assert [id(v) for v in test.val] == [id(v) for v in training.val] and not test.train
        assert len(training.val) + sum(1 for v in cohort.val if id(v) in held_ids) == len(cohort.val)
    with pytest.raises(ValueError, match="no site"):
        split_held_out_site(cohort, "site-9")
    assert without_test_volumes(cohort).pathology == [] and cohort.pathology  # a copy; the cohort keeps its own


def test_an_early_stop_is_charged_for_the_steps_taken_and_the_best_round_is_kept(four_sites, tmp_path):
    """Federated: the ledger holds only the rounds run and its epsilon is that of those steps (below the
    target); every arm's accounted epsilon is that of its own steps; the models are the best measured ones."""
    from dp import PrivacyLedger, epsilon_for
    from simulation.experiment import validation_slices

    sim, cohort = four_sites
    sim = sim.with_overrides(rounds=4, local_steps=1)
    training, _ = split_held_out_site(cohort, "site-4")
    lrs = {"federated": 2e-3, "local": 2e-3, "central": 2e-3, "non-private": 2e-3}
    # min_improvement 0.99: nothing after the first measurement counts as better, so patience 1 stops at step 2.
    trained = train_arms(sim, training, ["federated", "local", "central", "non-private"], lrs, seed=0, tag="t",
                         run_dir=tmp_path / "run", patience=1, min_improvement=0.99, log=lambda text: None)
    fed = trained[0]
    assert fed.arm == "federated" and fed.stopping.stopped_step == 2 and fed.stopping.best_step == 1
    sigma = fed.privacy["noise_multiplier"]
    taken = epsilon_for(noise_multiplier=sigma, sample_rate=sim.sample_rate, steps=2, delta=sim.delta).bound
    full = epsilon_for(noise_multiplier=sigma, sample_rate=sim.sample_rate, steps=4, delta=sim.delta).bound
    assert fed.privacy["steps"] == 2 and fed.privacy["max_steps"] == 4 and fed.privacy["rounds_run"] == 2
    assert fed.privacy["epsilon"] == pytest.approx(taken) and taken < full <= sim.epsilon
    assert fed.privacy["epsilon_spent_ledger"] == pytest.approx(taken, rel=1e-3)
    with PrivacyLedger.open(tmp_path / "run") as ledger:
        assert set(ledger.budgets) == {"site-1", "site-2", "site-3"}  # the held-out site never trained
        assert {e.round for site in ledger.budgets for e in ledger.events(site)} == {0, 1}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and "early stopping" in summary["stopped"]
    assert set(summary["sites"]) == {"site-1", "site-2", "site-3"}
    # The federated model handed back is the best round's (round 0), not the last one run.
    val = validation_slices(training.val)
    assert validation_loss(fed.models, val) == pytest.approx(fed.stopping.best_loss, rel=1e-6)
    labels = [t.label for t in trained]
    assert labels == ["federated", "local site-1", "local site-2", "local site-3", "central",
                      "non-private central (NO DP)"]
    for t in trained[1:]:
        assert t.stopping.stopped_step == 2 and t.stopping.best_step == 1 and t.privacy["steps"] == 2
        assert validation_loss(t.models, val) == pytest.approx(t.stopping.best_loss, rel=1e-6)
        if t.privacy["dp"]:
            assert t.privacy["epsilon"] == pytest.approx(taken) and t.privacy["noise_multiplier"] == sigma


def test_tuning_picks_each_arms_lowest_validation_loss_without_a_test_volume(cache_dir, tmp_path, monkeypatch):
    import models

    def refuse(*args, **kwargs):
        raise AssertionError("tuning evaluated on test volumes")

    monkeypatch.setattr(models, "evaluate", refuse)
    config = load_experiment_config(seeds=[0, 1], vary_data=False, arms=["federated", "local"], lr_grid=[1e-4, 5e-3],
                                    tuning_seed=9, patience=1, held_out_site=True, simulation={
                                        "preset": "tiny", "sites": 4, "rounds": 2, "local_steps": 1,
                                        "cache_dir": cache_dir})
    tuning = tune_learning_rates(config, tmp_path, lambda text: None)
    assert tuning["tuning_seed"] == 9 and tuning["held_out_site"] == held_out_site_for(9, ["site-1", "site-2",
                                                                                             "site-3", "site-4"])
    for arm in ("federated", "local"):
        scores = {float(k): v for k, v in tuning["scores"][arm].items()}
        assert set(scores) == {1e-4, 5e-3} and tuning["chosen"][arm] == min(scores, key=scores.get)
    for lr in ("0.0001", "0.005"):
        summary = json.loads((tmp_path / "tuning" / f"lr-{lr}" / "summary.json").read_text())
        assert summary["detection"] is None and summary["figures"] == []  # trained, never evaluated
        assert tuning["held_out_site"] not in summary["sites"]
    assert "Papernot & Steinke 2022" in tuning["note"]


def test_experiment_with_tuning_early_stopping_and_a_held_out_site(cache_dir, tmp_path):
    config = load_experiment_config(seeds=[0, 1], vary_data=False, arms=["federated", "local", "central"],
                                    lr_grid=[1e-3, 5e-3], tuning_seed=5, patience=1, held_out_site=True,
                                    simulation={"preset": "tiny", "sites": 4, "rounds": 2, "local_steps": 1,
                                                "cache_dir": cache_dir})
    result = run_experiment(config, tmp_path / "exp", log=lambda text: None, command="secagg experiment --test",
                            jobs=1)
    results = result.results
    chosen = results["tuning"]["chosen"]
    for r in results["records"]:
        held = held_out_site_for(r["seed"], ["site-1", "site-2", "site-3", "site-4"])
        assert r["held_out_site"] == held and held not in r["training_sites"]
        assert r["label"] != f"local {held}" and r["learning_rate"] == chosen[r["arm"]]
        assert set(r["metrics"]["model"]["site"]) == set(r["training_sites"])  # held-out subjects: training sites
        assert "held_out" in r["metrics"]["model"] and "held_out" in r["metrics"]["intensity"]
        assert r["training"]["stopped_step"] <= 2 and r["privacy"]["steps"] == r["training"]["stopped_step"]
    stats = results["statistics"]
    assert stats["metrics"]["held_out/overall/auprc"]["differences"]["best_local"]["t"]["n"] == 2
    assert stats["site_shift"]["seeds"] == [0, 1]
    report = (tmp_path / "exp" / "report.md").read_text()
    for text in ("## Held-out site", "held_out/overall/auprc", "Does a single-site model degrade",
                 "tuned per arm", "Papernot & Steinke 2022", "stopped at step", "seed 0: site-1", "seed 1: site-2",
                 f"**{chosen['federated']:g}**", "ε accounted (steps taken)"):
        assert text in report, text
    assert "Learning rates are not tuned" not in report and "No early stopping" not in report


def test_the_experiment_only_hooks_of_simulate_need_experiment_noise(four_sites, tmp_path):
    from simulation.federation.setup import SimulationError
    from simulation.engines.inprocess.simulate import run_simulation

    sim, cohort = four_sites
    monitor = ValidationMonitor(StoppingRule(every=1, max_steps=2), np.zeros((1, 1, 32, 32), dtype=np.float32))
    for kwargs in ({"experiment_cohort": cohort}, {"experiment_monitor": monitor}):
        with pytest.raises(SimulationError, match="need experiment_noise"):
            run_simulation(sim.with_overrides(secure_rng=True), tmp_path / "refused", quiet=True, **kwargs)
    from simulation.experiment import SeededExperimentNoise

    with pytest.raises(SimulationError, match="CohortSplit"):
        run_simulation(sim, tmp_path / "refused", quiet=True, experiment_noise=SeededExperimentNoise(0, "x"),
                       experiment_cohort=object())
    with pytest.raises(SimulationError, match="ValidationMonitor"):
        run_simulation(sim, tmp_path / "refused", quiet=True, experiment_noise=SeededExperimentNoise(0, "x"),
                       experiment_monitor=object())
    assert not (tmp_path / "refused").exists()


def test_site_shift_is_own_site_minus_held_out_site_beside_the_intensity_baseline():
    from simulation.experiment import site_shift

    def method(own_site, own, held):
        one = lambda v: {"auprc": v, "auroc": 0.9, "dice": 0.3, "n_volumes": 2}  # noqa: E731
        return {"overall": one(own), "lesion": {}, "site": {own_site: one(own)}, "held_out": {
            "overall": one(held), "lesion": {}, "site": {}}}

    records = []
    # seed -> [(local site, model own, model held-out, intensity own, intensity held-out)]
    data = {0: [("site-2", 0.6, 0.3, 0.5, 0.5), ("site-3", 0.5, 0.3, 0.4, 0.5)],
            1: [("site-1", 0.7, 0.2, 0.6, 0.4), ("site-3", 0.4, 0.3, 0.4, 0.4)],
            2: [("site-1", 0.5, 0.4, 0.5, 0.5)]}
    for seed, rows in data.items():
        intensity_sites = {}
        for site, m_own, m_held, i_own, i_held in rows:
            records.append({"seed": seed, "arm": "local", "label": f"local {site}", "visits": {"site": site},
                            "metrics": {"model": method(site, m_own, m_held), "intensity": {}}})
            intensity_sites[site] = (i_own, i_held)
        intensity = method("x", 0.0, rows[0][4])
        intensity["site"] = {s: {"auprc": v[0]} for s, v in intensity_sites.items()}
        records.append({"seed": seed, "arm": "federated", "label": "federated", "visits": {},
                        "metrics": {"model": {}, "intensity": intensity}})
    shift = site_shift(records)
    model = [np.mean([0.3, 0.2]), np.mean([0.5, 0.1]), 0.1]
    intensity = [np.mean([0.0, -0.1]), np.mean([0.2, 0.0]), 0.0]
    assert shift["seeds"] == [0, 1, 2]
    assert shift["model"]["t"]["mean"] == pytest.approx(np.mean(model))
    assert shift["intensity"]["t"]["mean"] == pytest.approx(np.mean(intensity))
    assert shift["beyond_intensity"]["t"]["mean"] == pytest.approx(np.mean(model) - np.mean(intensity))
    assert site_shift([r for r in records if r["arm"] == "federated"]) is None  # no local model: nothing to show
