"""Patient-level privacy end to end: nothing private outside a DP release, accounting, FedDis rollback.

* Property: two runs that differ by exactly one patient at one site, with the sites' DP sampling
  and noise fixed by a seeded TEST-ONLY generator (injected explicitly; the default is the CSPRNG),
  give the coordinator the same view - metrics.jsonl, summary.json, every decoded FedAvg weight -
  except the noised aggregates (the decoded mean updates and what is computed from the released
  model: detection metrics and figures) and wall-clock times.
* Accounting: the ledger's patient-level epsilon equals an independent dp-accounting PLD
  computation from the recorded events.
* FedDis: a site that trained and released nothing (dropped at share, or the round aborted before
  enough masked inputs arrived) rolls its whole local model back; a released site keeps its
  training and its spend is in the ledger.
"""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nilearn")


from .seeded_randomness import SeededTestRandomness  # noqa: E402


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, shared_tiny_run):
    """A copy of the session's shared tiny run's cache (tests/shared_runs.py): the same cohort (tiny, 3 sites,
    data seed 0), reused instead of generated again."""
    from tests.shared_runs import seed_cache

    return str(seed_cache(shared_tiny_run.cache, tmp_path_factory.mktemp("patient-cache") / "cache"))


def _seeded(name):
    return SeededTestRandomness([7, int(name.rsplit("-", 1)[1])])


def _run(out, cache_dir, monkeypatch, *, drop_patient=None, **overrides):
    """A tiny in-process run; ``drop_patient`` = site whose last training patient is removed, and one of
    its healthy validation patients too (the detection threshold is fixed on those)."""
    from simulation.federation import coordinator as coordinator_module
    from simulation.engines.inprocess import simulate as simulate_module
    from simulation.config import load_config

    decoded = []
    original_finish = coordinator_module.Coordinator.finish_round
    original_prepare = simulate_module._prepare_data

    def spy_finish(self, encoder):
        aggregate = original_finish(self, encoder)
        decoded.append(aggregate)
        return aggregate

    def prepare(config, log):
        cohort = original_prepare(config, log)
        if drop_patient is not None:
            ids = cohort.patients[drop_patient]
            keep = ids != ids.max()
            cohort.train[drop_patient] = cohort.train[drop_patient][keep]
            cohort.patients[drop_patient] = ids[keep]
            site_volumes = {id(v) for v in cohort.examples[drop_patient].healthy}
            del cohort.val[next(i for i, v in enumerate(cohort.val) if id(v) in site_volumes)]
        return cohort

    monkeypatch.setattr(coordinator_module.Coordinator, "finish_round", spy_finish)
    monkeypatch.setattr(simulate_module, "_prepare_data", prepare)
    config = load_config(preset="tiny", cache_dir=cache_dir, baselines=(), secure_rng=False, **overrides)
    result = simulate_module.run_simulation(config, out, quiet=True, test_only_randomness=_seeded)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return result.summary, metrics, decoded


@pytest.fixture(scope="module")
def neighbouring_runs(tmp_path_factory, cache_dir):
    base = tmp_path_factory.mktemp("neighbours")
    runs = []
    for out, drop in (("full", None), ("minus-one-patient", "site-1")):
        with pytest.MonkeyPatch.context() as monkeypatch:  # fresh spies for each run
            runs.append(_run(base / out, cache_dir, monkeypatch, drop_patient=drop))
    return base, *runs


def _strip(record, keys):
    return {k: v for k, v in record.items() if k not in keys}


def test_one_patient_more_or_less_changes_only_the_noised_aggregates(neighbouring_runs):
    base, (summary_a, metrics_a, decoded_a), (summary_b, metrics_b, decoded_b) = neighbouring_runs
    # metrics.jsonl: identical but for wall-clock times (a timing side channel, not a release).
    assert len(metrics_a) == len(metrics_b) == 2
    for a, b in zip(metrics_a, metrics_b):
        assert _strip(a, {"seconds"}) == _strip(b, {"seconds"})
        assert not {"loss", "mean_loss", "clipped_coordinates"} & set(a)
    # summary.json: identical but for what is computed from the released (noised) model, and times.
    released_model = {"detection", "detection_threshold", "figures", "seconds"}
    assert _strip(summary_a, released_model) == _strip(summary_b, released_model)
    # The evaluation (threshold and accuracy, on held-out scans) is labelled as outside the ledger, and holds
    # no count of patients, volumes or voxels: only values that a patient changes by a small amount.
    assert "NOT differentially private" in summary_a["evaluation_privacy"]
    for key in ("healthy_volumes", "n_voxels"):
        assert key not in summary_a["detection_threshold"] and key not in summary_b["detection_threshold"]
    assert set(summary_a["detection_threshold"]) == set(summary_b["detection_threshold"])
    assert all(set(facts) >= {"public_weight"} and "training_slices" not in facts
               for facts in summary_a["sites"].values())
    # Every decoded value: the FedAvg weight sums are public functions of who survived ...
    assert [d.weight_sum for d in decoded_a] == [d.weight_sum for d in decoded_b] == [3.0, 3.0]
    assert [sorted(d.included) for d in decoded_a] == [sorted(d.included) for d in decoded_b]
    # ... and only the noised aggregates differ (site-1 trained on one patient fewer).
    assert all(not np.array_equal(a.mean_update, b.mean_update) for a, b in zip(decoded_a, decoded_b))
    # Each site's own trained model (global + its DP update) stays in the sites' folder, not in checkpoints/.
    assert not list((base / "full" / "checkpoints").glob("site-*.pt"))
    assert sorted(p.name for p in (base / "full" / "site-local" / "checkpoints").glob("*.pt")) == [
        "site-1.pt", "site-2.pt", "site-3.pt"]
    # The site keeps its own statistics, labelled, outside the coordinator's files.
    local = [json.loads(line) for line in (base / "full" / "site-local" / "site-1.jsonl").read_text().splitlines()]
    assert local and all(r["site_local"].startswith("SITE-LOCAL") and "mean_loss" in r for r in local)


def test_summary_and_metrics_name_the_unit_and_adjacency(neighbouring_runs):
    _, (summary, metrics, _), _ = neighbouring_runs
    privacy = summary["privacy"]
    assert privacy["privacy_unit"] == "patient" and privacy["adjacency"] == "add/remove one patient"
    assert privacy["epsilon_unit"] == "patient-level, add/remove one patient"
    assert privacy["guarantee"].startswith("patient-level, add/remove one patient")
    assert all(m["epsilon_guarantee"] == "patient-level, add/remove one patient" for m in metrics)
    from simulation.engines.inprocess.simulate import format_summary

    text = format_summary(summary)
    assert "PATIENT-LEVEL epsilon" in text and "add/remove one patient" in text and "default unit" in text


def test_patient_level_epsilon_equals_an_independent_pld_computation(neighbouring_runs):
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    from dp import PrivacyLedger

    base, _, _ = neighbouring_runs
    with PrivacyLedger.open(base / "full") as ledger:
        for site in sorted(ledger.budgets):
            events = ledger.events(site)
            assert events and all(e.unit == "patient" for e in events)
            accountant = pld_privacy_accountant.PLDAccountant(
                neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
            for e in events:  # one DP-SGD step = Poisson-sampled (over patients) Gaussian, composed
                accountant.compose(dp_accounting.PoissonSampledDpEvent(
                    e.sample_rate, dp_accounting.GaussianDpEvent(e.noise_multiplier)), e.steps)
            independent = accountant.get_epsilon(ledger.delta)
            assert math.isclose(ledger.spent(site).epsilon("pld"), independent, rel_tol=1e-6)
            assert ledger.spent(site).bound <= independent * (1 + 1e-9)


def test_feddis_spends_or_rolls_back(tmp_path, cache_dir, monkeypatch):
    """Round 0: site-2 drops after advertising (trained, released nothing): rolled back. Round 1:
    site-2 and site-3 drop before uploading: one masked input < t = 2, the round aborts; site-1's
    input had reached the coordinator (released, spent), sites 2 and 3 roll back."""
    from simulation.engines.inprocess import fleet as inprocess
    from simulation.engines.inprocess.simulate import new_model

    states = []
    original_save = inprocess.InProcessFleet.save_checkpoints

    def save(self, store):
        states.append({n: {k: v.clone() for k, v in s.model.state_dict().items()} for n, s in self.sites.items()})
        return original_save(self, store)

    monkeypatch.setattr(inprocess.InProcessFleet, "save_checkpoints", save)
    schedule = {"0": {"share": ["site-2"]}, "1": {"mask": ["site-2", "site-3"]}}
    summary, metrics, _ = _run(tmp_path / "feddis", cache_dir, monkeypatch, model="feddis",
                               dropout_schedule=schedule)
    assert [m["status"] for m in metrics] == ["completed", "aborted"]
    assert metrics[0]["released"] == ["site-1", "site-3"] and metrics[1]["released"] == ["site-1"]
    from simulation.config import load_config

    initial = new_model(load_config(preset="tiny", model="feddis")).state_dict()

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    after0, after1 = states
    assert same(after0["site-2"], initial)  # trained in round 0, released nothing: rolled back
    assert not same(after0["site-1"], initial) and not same(after0["site-3"], initial)
    assert same(after1["site-3"], after0["site-3"]) and same(after1["site-2"], initial)  # aborted, unreleased
    assert not same(after1["site-1"], after0["site-1"])  # released in the aborted round: kept, and spent
    from dp import PrivacyLedger

    with PrivacyLedger.open(tmp_path / "feddis") as ledger:
        assert [e.round for e in ledger.events("site-1")] == [0, 1]
        assert [e.round for e in ledger.events("site-3")] == [0]
        assert ledger.events("site-2") == []
    local = [json.loads(line) for line in (tmp_path / "feddis" / "site-local" / "site-2.jsonl").read_text()
             .splitlines()]
    assert [r["rolled_back"] for r in local] == [True, True]


def test_slice_level_is_a_labelled_option_everywhere():
    from simulation.cli import build_parser
    from simulation.config import ConfigError, load_config
    from simulation.federation.summary import privacy_summary
    from simulation.engines.inprocess.simulate import format_summary

    args = build_parser().parse_args(["simulate", "--privacy-unit", "slice"])
    assert args.privacy_unit == "slice"
    assert build_parser().parse_args(["simulate"]).privacy_unit is None  # the config's default applies
    assert load_config().privacy_unit == "patient"
    config = load_config(privacy_unit="slice")
    privacy = privacy_summary(config, 1.0, [{"epsilon": {"site-1": 2.0}}], True)
    assert privacy["epsilon_unit"] == "slice-level, add/remove one slice" and "NOT one patient" in privacy["guarantee"]
    summary = {"protection": "x", "sites": {}, "rounds_completed": 1, "rounds_planned": 1, "dropouts_survived": 0,
               "threshold": 2, "graph": "complete", "rounds_aborted": [], "stopped": None, "privacy": privacy,
               "detection": {"federated": {"dice": 0, "auprc": 0, "auroc": 0},
                             "intensity_baseline": {"dice": 0, "auprc": 0, "auroc": 0}},
               "mode": "secagg", "scale": "tiny", "model": "compact-ae", "image_size": 32, "seconds": 1}
    text = format_summary(summary)
    assert "SLICE-LEVEL epsilon" in text and "NOT patient-level" in text and "add/remove one slice" in text
    with pytest.raises(ConfigError, match="privacy_unit"):
        load_config(privacy_unit="hospital")


def test_fedavg_weights_are_declared_public_numbers():
    from simulation.config import ConfigError, load_config

    assert load_config().public_weights(["site-2", "site-1"]) == {"site-1": 1.0, "site-2": 1.0}
    config = load_config(site_weights={"site-1": 2, "site-2": 1})
    assert config.public_weights(["site-1", "site-2"]) == {"site-1": 2.0, "site-2": 1.0}
    with pytest.raises(ConfigError, match="missing"):
        config.public_weights(["site-1", "site-2", "site-3"])
    with pytest.raises(ConfigError, match="positive"):
        load_config(site_weights={"site-1": 0})
    # Distributed DP sums unweighted updates: declared weights would be ignored while the summary said "declared".
    with pytest.raises(ConfigError, match="site_weights cannot be used with distributed_dp"):
        load_config(site_weights={"site-1": 2, "site-2": 1}, distributed_dp="skellam")


def test_ledger_show_and_dpia_name_unit_and_adjacency(neighbouring_runs, capsys):
    from simulation.cli import main
    from simulation.reports.dpia import build_dpia, render_dpia

    base, _, _ = neighbouring_runs
    assert main(["ledger", "show", str(base / "full"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["spends"] and all(r["unit"] == "patient" and r["neighbouring"] == "add_remove_one"
                                   for r in shown["spends"])
    md = render_dpia(build_dpia(base / "full"), "md")
    assert "patient-level, add/remove one patient" in md
    assert "held at the site (not released)" in md and "Training slices" not in md
    assert "Released outside the ledger" in md and "NOT covered by the ledger: the evaluation" in md
