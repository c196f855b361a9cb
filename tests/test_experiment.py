"""``secagg experiment``: every arm over seeds, seeded (labelled) noise, reproducibility, the report.

The runs are the tiny preset with 2 seeds and 1 round of 2 steps (seconds of training; the first
noise calibration of the process dominates).
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nilearn")

from simulation.cli import build_parser, main  # noqa: E402
from simulation.config import ConfigError, load_config  # noqa: E402
from simulation.experiment import (  # noqa: E402
    SEEDED_NOISE_LABEL,
    SeededExperimentNoise,
    load_experiment_config,
    render_report,
    run_experiment,
    summarise,
)

_SIM = ["--tiny", "--rounds", "1", "--local-steps", "2"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, shared_tiny_run):
    """A copy of the session's shared tiny run's cache (tests/shared_runs.py): the same cohort (tiny, 3 sites,
    data seed 0: ``--same-data``) is reused instead of generated again."""
    from tests.shared_runs import seed_cache

    return str(seed_cache(shared_tiny_run.cache, tmp_path_factory.mktemp("experiment-cache") / "cache"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache_dir):
    """The experiment through the CLI with --json (2 seeds, one cohort for both), the seeds in 2 spawned processes."""
    out = tmp_path_factory.mktemp("experiment") / "exp"
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a)))
                    if k.get("file") is None else None)
    try:
        code = main(["experiment", *_SIM, "--seeds", "0,1", "--same-data", "--cache-dir", cache_dir,
                     "--out", str(out), "--json", "--jobs", "2"])
    finally:
        capture.undo()
    assert code == 0
    return out, json.loads("\n".join(lines))


def _config(cache_dir, **overrides):
    simulation = {"preset": "tiny", "rounds": 1, "local_steps": 2, "cache_dir": cache_dir}
    return load_experiment_config(seeds=[0, 1], vary_data=False, simulation=simulation, **overrides)


def test_every_arm_runs_for_every_seed(cli_run):
    out, printed = cli_run
    results = json.loads((out / "results.json").read_text())
    labels = {(r["seed"], r["label"]) for r in results["records"]}
    expected = {"federated", "local site-1", "local site-2", "local site-3", "central", "non-private central (NO DP)"}
    assert labels == {(s, label) for s in (0, 1) for label in expected}
    assert printed["seeds"] == [0, 1] and printed["seeded_noise"] == SEEDED_NOISE_LABEL
    assert printed["overall_auprc"]["differences"]["best_local"]["t"]["n"] == 2
    # The same number of steps in every arm; patients drawn by each arm's seeded generator are counted.
    for r in results["records"]:
        if r["arm"] != "non-private":
            assert r["visits"]["units_sampled"] >= 0 and r["privacy"]["steps"] == 2
    non_private = [r for r in results["records"] if r["arm"] == "non-private"]
    assert all(not r["privacy"]["dp"] and r["privacy"]["epsilon"] == "inf" for r in non_private)
    assert all(r["seeded_noise"] is None for r in non_private)  # no DP noise, so nothing seeded to label


def test_federated_arm_is_the_real_secure_aggregation_path_without_dropouts(cli_run):
    out, _ = cli_run
    run = out / "runs" / "seed-0" / "federated"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "secagg" and summary["rounds_completed"] == 1 and summary["dropouts_survived"] == 0
    assert summary["privacy"]["ledger_verified"] and summary["privacy"]["secure_rng"] is False
    assert summary["seeded_noise"]["label"] == SEEDED_NOISE_LABEL
    assert summary["privacy"]["seeded_noise"] == SEEDED_NOISE_LABEL
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["dropout"] == 0.0 and config["dropout_schedule"] is None and config["secure_rng"] is False
    from dp import PrivacyLedger

    with PrivacyLedger.open(run) as ledger:
        events = [e for site in sorted(ledger.budgets) for e in ledger.events(site)]
    assert events and all(e.secure_rng is False for e in events)  # the ledger says: not the CSPRNG


def test_every_output_is_labelled(cli_run):
    out, _ = cli_run
    report = (out / "report.md").read_text()
    assert SEEDED_NOISE_LABEL.upper() in report
    assert "secagg experiment --tiny --rounds 1" in report  # the command that produced it
    assert "2 unit(s) at a time (each in its own process, one torch thread)" in report
    for name in ("results.json", "experiment.json"):
        assert json.loads((out / name).read_text())["seeded_noise"] == SEEDED_NOISE_LABEL
    assert {p.name for p in (out / "plots").iterdir()} >= {"auprc_by_arm.png", "paired_differences.png"}


def test_report_has_the_comparisons_the_baseline_and_each_arms_privacy(cli_run):
    out, _ = cli_run
    report = (out / "report.md").read_text()
    for text in ("federated − best local", "federated − mean local", "federated − central =",
                 "federated − non-private", "intensity baseline", "n = 2", "Per lesion type", "lesion/ms/auprc",
                 "Per test site", "site/site-1/auprc", "patient-level, add/remove one patient", "| pld |",
                 "**NO** | NO DP: no clipping, no noise, calibration skipped", "95% t"):
        assert text in report, text
    results = json.loads((out / "results.json").read_text())
    fed = [r for r in results["records"] if r["arm"] == "federated"]
    assert {"ms", "tumour"} <= set(fed[0]["metrics"]["model"]["lesion"])
    assert set(fed[0]["metrics"]["intensity"]["site"]) == {"site-1", "site-2", "site-3"}


def test_same_seed_same_metrics_and_different_seeds_differ(cli_run, tmp_path, cache_dir):
    """Also: the numbers do not depend on how many seeds ran at once (CLI: 2 processes; here: 1, in-process)."""
    out, _ = cli_run
    results = json.loads((out / "results.json").read_text())
    first = results["records"]
    again = run_experiment(_config(cache_dir), tmp_path / "again", log=lambda line: None, command="test", jobs=1)
    assert results["jobs"] == 2 and again.results["jobs"] == 1
    second = again.results["records"]
    assert [(r["seed"], r["label"]) for r in first] == [(r["seed"], r["label"]) for r in second]
    for a, b in zip(first, second):
        if a["arm"] == "federated":
            # The protocol's stochastic rounding stays on the CSPRNG (resolution ~2^-29 of the clip).
            assert a["metrics"]["model"]["overall"]["auprc"] == pytest.approx(
                b["metrics"]["model"]["overall"]["auprc"], abs=1e-4)
            assert a["visits"] == b["visits"]  # the same patients were drawn
        else:
            assert a["metrics"] == b["metrics"], a["label"]
            assert a["visits"] == b["visits"]
    by_seed = {s: {r["label"]: r["metrics"]["model"]["overall"]["auprc"] for r in first if r["seed"] == s}
               for s in (0, 1)}
    assert all(by_seed[0][label] != by_seed[1][label] for label in by_seed[0])


def test_seeded_streams_repeat_and_differ():
    a, b = SeededExperimentNoise(3, "local").for_site("site-1"), SeededExperimentNoise(3, "local").for_site("site-1")
    assert np.array_equal(a.poisson_mask(50, 0.3), b.poisson_mask(50, 0.3))
    assert np.array_equal(a.gaussian((4, 3), 1.5), b.gaussian((4, 3), 1.5))
    other_seed = SeededExperimentNoise(4, "local").for_site("site-1")
    other_site = SeededExperimentNoise(3, "local").for_site("site-2")
    fresh = SeededExperimentNoise(3, "local").for_site("site-1")
    reference = fresh.gaussian((20,), 1.0)
    assert not np.array_equal(reference, other_seed.gaussian((20,), 1.0))
    assert not np.array_equal(reference, other_site.gaussian((20,), 1.0))
    assert a.secure is False and a.label == SEEDED_NOISE_LABEL
    with pytest.raises(ValueError, match="seed"):
        SeededExperimentNoise(-1, "x")


def test_the_default_path_keeps_the_csprng(monkeypatch, cache_dir, tmp_path):
    """simulate's default draws its DP noise from the CSPRNG; seeded noise cannot be switched on there."""
    import dp.training as training
    from simulation.federation.setup import SimulationError
    from simulation.engines.inprocess.simulate import run_simulation

    assert load_config().secure_rng is True and load_config(preset="tiny").secure_rng is True
    calls = []
    real = training.csprng_gaussian
    monkeypatch.setattr(training, "csprng_gaussian", lambda shape, std: calls.append(shape) or real(shape, std))
    config = load_config(preset="tiny", rounds=1, local_steps=2, cache_dir=cache_dir, baselines=())
    run_simulation(config, tmp_path / "default", quiet=True)
    assert calls  # every DP-SGD step drew its noise from the CSPRNG
    with pytest.raises(SimulationError, match="secure_rng = false"):
        run_simulation(config, tmp_path / "refused", quiet=True, experiment_noise=SeededExperimentNoise(0, "x"))
    with pytest.raises(SimulationError, match="SeededExperimentNoise"):
        run_simulation(config.with_overrides(secure_rng=False), tmp_path / "refused2", quiet=True,
                       experiment_noise=object())
    # No flag of `secagg simulate` and no configuration key reaches it.
    simulate = build_parser()._subparsers._group_actions[0].choices["simulate"]
    options = " ".join(o for a in simulate._actions for o in a.option_strings)
    assert "seed" not in options.replace("--seed", "") and "experiment" not in options
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        load_config(preset="tiny", experiment_noise=True)


def test_experiment_settings_are_checked():
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        load_experiment_config(seeds=[0])
    with pytest.raises(ConfigError, match="may not set"):
        load_experiment_config(simulation={"dropout": 0.1})
    with pytest.raises(ConfigError, match="plain"):
        load_experiment_config(simulation={"mode": "plain"})
    with pytest.raises(ConfigError, match="arms"):
        load_experiment_config(arms=["federated", "oracle"])
    with pytest.raises(ConfigError, match="unknown experiment keys"):
        load_experiment_config(rounds=3)


def test_the_reference_configuration_is_valid():
    config = load_experiment_config("experiments/reference.toml")
    assert len(config.seeds) >= 5 and set(config.arms) == {"federated", "local", "central", "non-private"}
    base = config.base_simulation()
    assert base.dropout == 0.0 and base.dropout_schedule is None and base.secure_rng is False
    assert "experiments/reference.toml" in open("Makefile").read()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert main(["experiment", "--tiny", "--seeds", "0,1", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "never overwrites" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    assert main(["experiment", "--seeds", "0"]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and "secagg experiment --config experiments/reference.toml" in text
    assert "NOT a privacy guarantee" in text


def _record(seed, arm, label, auprc, intensity=0.8):
    metric = {"auprc": auprc, "auroc": 0.9, "dice": 0.3, "n_volumes": 4}
    side = {"overall": metric, "lesion": {}, "site": {}}
    base = {"overall": dict(metric, auprc=intensity), "lesion": {}, "site": {}}
    privacy = {"dp": True, "guarantee": "patient-level, add/remove one patient", "accountant": "pld", "delta": 1e-5,
               "budget": 8.0, "epsilon": 7.99, "noise_multiplier": 1.1, "sample_rate": 0.1, "steps": 100}
    return {"seed": seed, "arm": arm, "label": label, "epsilon_target": 8.0, "sweep": False,
            "metrics": {"model": side, "intensity": base}, "privacy": privacy, "visits": {}, "seconds": 1.0}


def test_best_local_is_the_per_seed_maximum_and_an_unfavourable_result_is_stated():
    records = []
    fed = [0.30, 0.32, 0.31]
    locals_ = {"local site-1": [0.40, 0.20, 0.41], "local site-2": [0.35, 0.45, 0.36]}
    for seed in range(3):
        records.append(_record(seed, "federated", "federated", fed[seed]))
        for label, values in locals_.items():
            records.append(_record(seed, "local", label, values[seed]))
    stats = summarise(records, ("federated", "local"))
    best = stats["metrics"]["overall/auprc"]["differences"]["best_local"]["t"]
    assert best["mean"] == pytest.approx(np.mean([0.30 - 0.40, 0.32 - 0.45, 0.31 - 0.41]))
    mean_local = stats["metrics"]["overall/auprc"]["differences"]["mean_local"]["t"]
    assert mean_local["mean"] == pytest.approx(np.mean([0.30 - 0.375, 0.32 - 0.325, 0.31 - 0.385]))
    results = {"statistics": stats, "records": records, "command": "secagg experiment --x", "seconds": 60,
               "experiment": {"name": "t", "arms": ["federated", "local"], "vary_data": True, "epsilons": []},
               "simulation_base": load_config(preset="tiny").to_dict(), "cpu_count": 2}
    text = render_report(results, [])
    assert "**Federated was worse than the best local-only model**" in text
    assert "**The autoencoder did NOT beat the intensity-threshold baseline**" in text
    assert "Only 3 seeds" in text


def test_no_dpia_rests_on_a_seeded_experiment_run(cli_run, capsys):
    out, _ = cli_run
    run = out / "runs" / "seed-0" / "federated"
    assert main(["dpia", str(run), "--format", "md"]) == 2
    assert "seeded noise: not a privacy guarantee" in capsys.readouterr().err
    assert not (run / "dpia.md").exists()


def test_privacy_utility_curve_is_summarised_and_rendered():
    records = []
    for seed in range(2):
        for eps, fed, central in ((8.0, 0.3, 0.32), (1.0, 0.2, 0.21)):
            for arm, value in (("federated", fed + 0.01 * seed), ("central", central)):
                r = _record(seed, arm, arm, value)
                r["epsilon_target"], r["sweep"] = eps, eps != 8.0
                records.append(r)
    stats = summarise(records, ("federated", "central"))
    curve = stats["privacy_utility"]
    assert list(curve["federated"]) == ["1.0", "8.0"]
    assert curve["federated"]["1.0"]["mean"] == pytest.approx(0.205) and curve["central"]["8.0"]["n"] == 2
    # The sweep's runs never enter the main comparison.
    assert stats["metrics"]["overall/auprc"]["differences"]["central"]["t"]["mean"] == pytest.approx(0.3 + 0.005 - 0.32)
    results = {"statistics": stats, "records": records, "command": "c", "seconds": 1,
               "experiment": {"name": "t", "arms": ["federated", "central"], "vary_data": False, "epsilons": [1.0]},
               "simulation_base": load_config(preset="tiny").to_dict(), "cpu_count": 2}
    page = render_report(results, [])
    assert "## Privacy-utility" in page
    # Paired by seed: federated at eps 1 - at eps 8 = -0.1 on both seeds; less budget, worse: the expected direction.
    paired = stats["privacy_utility_paired"]["federated"]["1.0"]
    assert paired["mean"] == pytest.approx(-0.1) and paired["n"] == 2
    assert "- federated: ε = 1 − ε = 8: -0.100" in page and "not monotone" not in page


def test_a_curve_that_falls_with_more_budget_is_said_plainly():
    records = []
    for seed in range(3):
        for eps, fed in ((8.0, 0.10 + 0.01 * seed), (2.0, 0.20 + 0.012 * seed)):
            r = _record(seed, "federated", "federated", fed)
            r["epsilon_target"], r["sweep"] = eps, eps != 8.0
            records.append(r)
    stats = summarise(records, ("federated",))
    assert stats["privacy_utility_paired"]["federated"]["2.0"]["low"] > 0
    results = {"statistics": stats, "records": records, "command": "c", "seconds": 1,
               "experiment": {"name": "t", "arms": ["federated"], "vary_data": False, "epsilons": [2.0]},
               "simulation_base": load_config(preset="tiny").to_dict(), "cpu_count": 2}
    assert "**less budget, better detection** - the curve is not monotone here" in render_report(results, [])


def test_the_stopping_criterions_alignment_with_detection_is_reported():
    records = []
    for seed, (loss, auprc) in enumerate([(0.1, 0.5), (0.2, 0.4), (0.3, 0.3), (0.4, 0.2), (0.5, 0.1)]):
        r = _record(seed, "federated", "federated", auprc)
        r["training"] = {"best_val_loss": loss, "best_step": 100, "every": 20, "history": [], "max_steps": 100,
                         "min_improvement": 0.0, "patience": 0, "stopped_early": False, "stopped_step": 100}
        r["learning_rate"] = 1e-3
        records.append(r)
    stats = summarise(records, ("federated",))
    assert stats["stopping_criterion"]["federated"]["rho"] == pytest.approx(-1.0)
    assert stats["stopping_criterion"]["federated"]["n"] == 5
    results = {"statistics": stats, "records": records, "command": "c", "seconds": 1,
               "experiment": {"name": "t", "arms": ["federated"], "vary_data": False, "epsilons": []},
               "simulation_base": load_config(preset="tiny").to_dict(), "cpu_count": 2}
    page = render_report(results, [])
    assert "## Does the stopping criterion track detection?" in page and "Aligned (ρ < 0, p < 0.05) in: federated" in page
    for r, auprc in zip(records, (0.1, 0.2, 0.3, 0.4, 0.5)):  # now the lowest loss detects worst
        r["metrics"]["model"]["overall"]["auprc"] = auprc
    page = render_report(dict(results, statistics=summarise(records, ("federated",))), [])
    assert "Aligned (ρ < 0, p < 0.05) in: **no arm**" in page
