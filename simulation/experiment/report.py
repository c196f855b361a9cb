"""``report.md`` and plots of an experiment, from its ``results.json`` content alone.

The report states the result plainly - including when federated training
does not beat the local models or the intensity baseline - with the command
that produced it, the number of seeds, the paired 95% intervals (Student t;
the bootstrap beside it), the intensity baseline beside every number, and
the privacy unit, accountant, delta and epsilon of every arm. Every page and
figure carries the seeded-noise label.
"""

from __future__ import annotations

import math
from pathlib import Path

from .randomness import SEEDED_NOISE_LABEL

__all__ = ["write_report", "render_report", "headline"]

_NAMES = {"best_local": "best local", "mean_local": "mean local", "central": "central",
          "non_private": "non-private (NO DP)", "intensity": "intensity baseline"}


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def _ms(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{_f(d['mean'])} ± {_f(d['sd'])}" if d.get("sd") is not None else _f(d["mean"])


def _ci(diff: dict) -> str:
    t = diff["t"]
    return f"{t['mean']:+.3f} [{_f(t['low'])}, {_f(t['high'])}]"


def _privacy_utility_lines(results: dict) -> list[str]:
    """Each sweep point against the main epsilon, paired by seed; a step against the budget is said plainly."""
    main_eps = next((r["epsilon_target"] for r in results["records"] if not r["sweep"]),
                    results["simulation_base"]["epsilon"])
    lines = []
    for arm, by in (results["statistics"].get("privacy_utility_paired") or {}).items():
        for eps, t in sorted(by.items(), key=lambda x: float(x[0])):
            verdict = _verdict(t)
            lower_budget = float(eps) < float(main_eps)
            against = ((verdict == "higher" and lower_budget) or (verdict == "lower" and not lower_budget))
            lines.append(f"- {arm}: ε = {float(eps):g} − ε = {float(main_eps):g}: {t['mean']:+.3f} "
                         f"[{_f(t['low'])}, {_f(t['high'])}] AUPRC (paired by seed, n = {t['n']})"
                         + (": **less budget, better detection** - the curve is not monotone here" if against else
                            "" if verdict in ("higher", "lower") else ": indistinguishable at this n"))
    return lines


def _stopping_criterion_lines(results: dict) -> list[str]:
    """Whether the validation loss that tuning and early stopping minimise goes with better detection."""
    alignment = results["statistics"].get("stopping_criterion") or {}
    if not alignment:
        return []
    lines = ["## Does the stopping criterion track detection?", "",
             "Tuning and early stopping minimise the healthy validation loss (reconstruction MSE); the comparison is "
             "on lesion AUPRC. Spearman's ρ between a model's best validation loss and its overall AUPRC, over "
             "every model of the arm (all seeds, main and ε sweep; ρ < 0: lower loss, better detection):", "",
             "| arm | ρ | p (two-sided) | models |", "|---|---|---|---|"]
    for arm, c in alignment.items():
        lines.append(f"| {arm} | {_f(c['rho'], 2)} | {_f(c['p'], 2)} | {c['n']} |")
    aligned = [a for a, c in alignment.items() if c["rho"] is not None and c["rho"] < 0 and c["p"] < 0.05]
    lines += ["", "Aligned (ρ < 0, p < 0.05) in: " + (", ".join(aligned) if aligned else
              "**no arm** - a lower reconstruction loss did not go with better detection, so the criterion that "
              "picks learning rates and stopping steps is not known to pick the better detector") + ".", ""]
    return lines


def headline(results: dict, prefix: str = "") -> list[str]:
    """The plain-language result, one sentence per claim of the study (true or false); ``prefix``
    ``"held_out/"``: the same on the held-out site."""
    stats = results["statistics"]["metrics"].get(prefix + "overall/auprc")
    n = len(results["statistics"]["seeds"])
    if stats is None:
        return ["No overall AUPRC was computed."]
    lines = []
    diffs = stats["differences"]

    def verdict(name: str, better: str, worse: str, unclear: str) -> None:
        if name not in diffs:
            return
        d = diffs[name]["t"]
        word = {"higher": better, "lower": worse}.get(d["verdict"] if "verdict" in d else _verdict(d), unclear)
        lines.append(f"- {word}: federated − {_NAMES[name]} = {_ci(diffs[name])} AUPRC (mean [95% t-interval], "
                     f"n = {n} seeds; federated higher in {diffs[name]['federated_wins']} of {d['n']}).")

    verdict("best_local", "**Federated beat every local-only model**",
            "**Federated was worse than the best local-only model**",
            "**Federated did not beat the best local-only model** (the interval includes 0)")
    locals_ = [k for k in diffs if k.startswith("local ")]
    if locals_:
        beaten = [k for k in locals_ if _verdict(diffs[k]["t"]) == "higher"]
        lines.append(f"- Federated was significantly above {len(beaten)} of {len(locals_)} local models "
                     f"({', '.join(k.split(' ', 1)[1] for k in beaten) or 'none'}).")
    verdict("mean_local", "Federated beat the average local model", "Federated was below the average local model",
            "Federated was indistinguishable from the average local model")
    if "central" in diffs:
        d = diffs["central"]["t"]
        central = stats["arms"].get("central", {}).get("mean")
        rel = (f"; {100 * d['mean'] / central:+.1f}% of central's mean" if central else "")
        low = d["low"] if isinstance(d["low"], float) and not math.isnan(d["low"]) else None
        within_mean = bool(central) and d["mean"] >= -0.1 * central
        within_ci = bool(central) and low is not None and low >= -0.1 * central
        lines.append(f"- Against central (same target ε): federated − central = {_ci(diffs['central'])}{rel}. "
                     f"Within 10% of central: {'yes' if within_mean else 'NO'} on the mean, "
                     f"{'yes' if within_ci else 'not shown'} on the whole 95% interval.")
    verdict("non_private", "Federated beat the non-private upper bound (unexpected)",
            "Federated was below the non-private upper bound", "Federated was indistinguishable from non-private")
    verdict("intensity", "**The autoencoder beat the intensity-threshold baseline** overall",
            "**The autoencoder did NOT beat the intensity-threshold baseline** overall",
            "**The autoencoder did not beat the intensity-threshold baseline** overall (inconclusive)")
    lesion = {k[len(prefix):].split("/")[1]: v for k, v in results["statistics"]["metrics"].items()
              if k.startswith(prefix + "lesion/") and "intensity" in v["differences"]}
    won = [k for k, v in lesion.items() if _verdict(v["differences"]["intensity"]["t"]) == "higher"]
    if lesion:
        lines.append(f"- Per lesion type, federated beat the intensity baseline on: {', '.join(won) or 'none'} "
                     f"(of {', '.join(sorted(lesion))}).")
    return lines


def _verdict(t: dict) -> str:
    low, high = t.get("low"), t.get("high")
    if low is None or (isinstance(low, float) and math.isnan(low)) or isinstance(low, str):
        return "inconclusive"
    return "higher" if low > 0 else "lower" if high < 0 else "inconclusive"


def _span(values, digits: int = 3) -> str:
    """'a' when all equal, else 'min–max'."""
    values = [v for v in values if v is not None and not isinstance(v, str)]
    if not values:
        return "n/a"
    low, high = min(values), max(values)
    fmt = (lambda v: str(int(v))) if all(float(v).is_integer() for v in values) and digits == 0 else (
        lambda v: _f(float(v), digits))
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def _privacy_table(results: dict) -> list[str]:
    """One row per arm (local: all its site models); ε accounted and steps as min–max over seeds: an arm that
    stops early is charged for the steps it took."""
    rows = ["| arm | DP | unit / guarantee | accountant | δ | ε (target, at max T) | ε accounted (steps taken) | "
            "noise σ | q | steps taken / max T |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in results["records"]:
        if not r["sweep"]:
            groups.setdefault("local (each site)" if r["arm"] == "local" else r["label"], []).append(r["privacy"])
    for label, ps in groups.items():
        p = ps[0]
        if p["dp"]:
            eps = _span([q["epsilon"] for q in ps])
            ledger = [q.get("epsilon_spent_ledger") for q in ps if q.get("epsilon_spent_ledger") is not None]
            if ledger:
                eps += f" (ledger: {_span(ledger)})"
            rows.append(f"| {label} | yes | {p['guarantee']} | {p['accountant']} | {p['delta']:g} | "
                        f"{_f(p['budget'], 2)} | {eps} | {_f(p['noise_multiplier'], 4)} | {p['sample_rate']} | "
                        f"{_span([q['steps'] for q in ps], 0)} / {p.get('max_steps', p['steps'])} |")
        else:
            rows.append(f"| {label} | **NO** | {p['guarantee']} | — | — | — | ∞ | 0 | — | "
                        f"{_span([q.get('steps') for q in ps], 0)} |")
    return rows


def _training_lines(results: dict) -> list[str]:
    """Learning rates (tuned or fixed) and the early-stopping rule with each arm's stopping steps."""
    exp, base = results["experiment"], results["simulation_base"]
    tuning = results.get("tuning")
    training = results["statistics"].get("training") or {}
    lines = []
    if tuning:
        scores = tuning["scores"]
        lines += [f"- Learning rates **tuned per arm** on seed {tuning['tuning_seed']} (not an evaluation seed; "
                  f"{'its own cohort' if exp.get('vary_data') else 'the same cohort, its own split and weights'}"
                  f"{', site ' + tuning['held_out_site'] + ' held out' if tuning.get('held_out_site') else ''}; "
                  f"no test volume seen) over the grid {tuning['grid']}, each arm keeping the rate with the lowest "
                  f"{tuning['criterion']}:", "",
                  "| arm | " + " | ".join(f"lr {g:g}" for g in tuning["grid"]) + " | chosen |",
                  "|---|" + "---|" * (len(tuning["grid"]) + 1)]
        for arm, by in scores.items():
            lines.append(f"| {arm} | " + " | ".join(_f(by.get(str(float(g))), 5) for g in tuning["grid"]) +
                         f" | **{tuning['chosen'][arm]:g}** |")
        lines += ["", f"  {tuning['note']}"]
        if exp.get("epsilons"):
            lines.append("  The rates were tuned at the main ε; the ε sweep reuses them.")
    else:
        lines.append(f"- Learning rate {base['learning_rate']} for every arm (not tuned: `lr_grid` is empty).")
    patience = exp.get("patience", 0)
    rule = (f"early stopping on the healthy validation loss (reconstruction MSE over the validation slices), "
            f"measured every {base['local_steps']} steps (one federated round); stop after {patience} "
            f"measurement(s) without improvement"
            f"{' by more than ' + str(100 * exp.get('min_improvement', 0)) + '% (relative)' if exp.get('min_improvement') else ''}"
            f", best model restored" if patience else
            "no early stopping (`patience = 0`): every arm trains T steps and keeps its last model")
    lines.append(f"- Training: at most T = {base['rounds']} rounds × {base['local_steps']} local steps = "
                 f"{base['rounds'] * base['local_steps']} optimiser steps per arm, the same rule for all: {rule}. "
                 "The federated sites restart Adam each round; the other arms keep one Adam for the whole run.")
    if training:
        lines += ["", "| arm | learning rate | stopped at step (over seeds) | best step | stopped early |",
                  "|---|---|---|---|---|"]
        for arm in ("federated", "local", "central", "non-private"):
            t = training.get(arm)
            if t:
                lines.append(f"| {arm}{' (all site models)' if arm == 'local' else ''} | "
                             f"{', '.join(f'{x:g}' for x in t['learning_rates'])} | "
                             f"{_span(t['stopped_steps'], 0)} (mean {sum(t['stopped_steps']) / len(t['stopped_steps']):.0f}) / "
                             f"{t['max_steps']} | {_span(t['best_steps'], 0)} | {t['stopped_early']} of {t['n']} |")
        lines += ["", "  The DP arms' noise σ is calibrated for the target ε at max T; an arm that stops at step "
                  "t < T has released t steps and is charged for t (the privacy table), so it spends less than the "
                  "target. All DP arms share σ, q and the target, so they stay at the same target ε."]
    return lines


def _metric_table(stats: dict, key: str, arms_order: list[str]) -> list[str]:
    entry = stats[key]
    rows = [f"| arm | {key} (mean ± sd) | intensity baseline | federated − arm [95% t CI] | bootstrap CI | "
            "federated higher |", "|---|---|---|---|---|---|"]
    intensity = _ms(entry["intensity"])
    rows.append(f"| federated | {_ms(entry['federated'])} | {intensity} | — | — | — |")
    for arm in arms_order:
        if arm not in entry["arms"]:
            continue
        diff_key = {"non-private": "non_private"}.get(arm, arm)
        d = entry["differences"].get(diff_key)
        rows.append(f"| {arm} | {_ms(entry['arms'][arm])} | {intensity} | {_ci(d) if d else 'n/a'} | "
                    f"{'[' + _f(d['bootstrap']['low']) + ', ' + _f(d['bootstrap']['high']) + ']' if d else 'n/a'} | "
                    f"{str(d['federated_wins']) + '/' + str(d['t']['n']) if d else 'n/a'} |")
    for name in ("best_local", "mean_local", "intensity"):
        d = entry["differences"].get(name)
        if d:
            rows.append(f"| *{_NAMES[name]}* | | {intensity} | {_ci(d)} | [{_f(d['bootstrap']['low'])}, "
                        f"{_f(d['bootstrap']['high'])}] | {d['federated_wins']}/{d['t']['n']} |")
    return rows


def render_report(results: dict, figures: list[str]) -> str:
    stats = results["statistics"]["metrics"]
    exp = results["experiment"]
    base = results["simulation_base"]
    n = len(results["statistics"]["seeds"])
    local_labels = sorted({r["label"] for r in results["records"] if r["arm"] == "local"})
    arms_order = local_labels + [a for a in ("central", "non-private") if a in exp["arms"]]
    out = [f"# Experiment '{exp['name']}': federated vs local, central and non-private",
           "",
           f"> **{SEEDED_NOISE_LABEL.upper()}.** The DP sampling and noise of every arm came from seeded generators "
           "so that the experiment repeats; the epsilons below describe the mechanism's parameters, but a run whose "
           "seed is known protects nobody. Real runs (`secagg simulate`, Flower) use the CSPRNG.",
           "",
           f"Command: `{results['command']}`  ",
           f"Seeds: {', '.join(map(str, results['statistics']['seeds']))} (n = {n}); wall time "
           f"{results['seconds'] / 60:.1f} min on {results.get('cpu_count')} CPU(s)"
           + (f", {results['jobs']} unit(s) at a time (each in its own process, one torch thread)."
              if results.get("jobs") else "."),
           "",
           "## Result", ""]
    out += headline(results)
    if n < 5:
        out += ["", f"*Only {n} seeds: the intervals are wide; the issue asks for at least 5.*"]
    out += ["", "## Setup (the same rules for every arm)", "",
            f"- Cohort: {'synthetic, scale ' + repr(base['scale']) if base.get('data') is None else base['data']}, "
            f"{base['sites']} sites, {base['image_size']}×{base['image_size']} slices; "
            f"{'a new cohort per seed (data_seed + seed)' if exp['vary_data'] else 'the same cohort for every seed'}; "
            "same initial weights and healthy train/validation split for all arms of a seed.",
            f"- Model `{base['model']}`, Adam.",
            f"- Federated: mode `{base['mode']}` (the real secure-aggregation path), server optimiser "
            f"`{base.get('server_optimizer', 'fedavg')}` on the decoded mean, **no protocol dropouts**, equal public "
            "weights.",
            f"- Sample visits: each DP arm samples each of its patients with probability q = {base['sample_rate']} per "
            "step, so every patient is visited q·t times in expectation over the t ≤ T steps an arm takes; "
            "federated, central and non-private arms visit q·N·t slices of the pooled N (non-private: exactly round(q·N) per step, "
            "uniformly); a local arm visits its own site's share. Measured counts are in results.json (`visits`).",
            "- Evaluation: pooled pathological test volumes of all training sites (held-out subjects), threshold "
            "at 1% FPR on the training sites' healthy validation volumes; AUPRC/AUROC pooled over brain voxels; "
            "Dice per volume at the threshold. The intensity baseline is scored on the same volumes."
            + (" Leave-one-site-out: seed s holds out site sorted(sites)[s mod n] (rotating over the seeds, one "
               "training per seed); nothing of it - no healthy scan, no validation volume - enters training, "
               "tuning, early stopping or the threshold; its pathological volumes are the held-out-site test set."
               if exp.get("held_out_site") else ""),
            "- *best local*: per seed, the local model with the highest score **on the test set** (an oracle "
            "choice that favours the local arm).",
            "- Validation (tuning, early stopping): every arm measures its loss on the same pooled healthy validation "
            "slices of all training sites - more than a single hospital would hold, which favours the local arm.",
            ""]
    out += _training_lines(results)
    out += ["", "## Privacy of each arm", ""]
    out += _privacy_table(results)
    out += ["", "Local and central models are research-only counterfactuals with the same σ, q and maximum T as "
            "the federated sites, each charged for the steps it took; they are in no ledger. The federated row's "
            "ledger value is what its sites actually spent (the rounds run).", ""]
    out += ["## Overall", ""]
    for key in ("overall/auprc", "overall/auroc", "overall/dice"):
        if key in stats:
            out += [f"### {key}", ""] + _metric_table(stats, key, arms_order) + [""]
    lesion_keys = [k for k in stats if k.startswith("lesion/")]
    if lesion_keys:
        out += ["## Per lesion type (AUPRC)", ""]
        for key in lesion_keys:
            out += [f"### {key}", ""] + _metric_table(stats, key, arms_order) + [""]
    site_keys = [k for k in stats if k.startswith("site/")]
    if site_keys:
        out += ["## Per test site (AUPRC; pathological volumes of that site)", ""]
        for key in site_keys:
            out += [f"### {key}", ""] + _metric_table(stats, key, arms_order) + [""]
    out += _held_out_section(results, arms_order)
    out += _site_shift_lines(results)
    curve = results["statistics"].get("privacy_utility") or {}
    if any(len(v) > 1 for v in curve.values()):
        out += ["## Privacy-utility (overall AUPRC against the target ε, patient-level)", "",
                "| arm | " + " | ".join(f"ε = {e}" for e in next(iter(curve.values()))) + " |",
                "|---|" + "---|" * len(next(iter(curve.values())))]
        for arm, by in curve.items():
            out.append(f"| {arm} | " + " | ".join(_ms(v) for v in by.values()) + " |")
        out += [""] + _privacy_utility_lines(results) + [""]
    out += _stopping_criterion_lines(results)
    if figures:
        out += ["## Figures", ""] + [f"![{Path(f).stem}](plots/{Path(f).name})" for f in figures] + [""]
    out += ["## Not covered", ""]
    if not results.get("tuning"):
        out.append("- Learning rates are not tuned per arm (`lr_grid` is empty).")
    if not exp.get("patience"):
        out.append("- No early stopping (`patience = 0`): every arm trains for T steps.")
    if not exp.get("held_out_site"):
        out.append("- Per-test-site numbers are on held-out *subjects* of sites that also trained; no site is held "
                   "out (`held_out_site = false`).")
    out.append("- The learning-rate tuning and the validation-based early stopping are not privacy-accounted.")
    out.append("")
    return "\n".join(out)


def _held_out_section(results: dict, arms_order: list[str]) -> list[str]:
    stats = results["statistics"]["metrics"]
    if "held_out/overall/auprc" not in stats:
        return []
    held = sorted({(r["seed"], r["held_out_site"]) for r in results["records"] if not r["sweep"]})
    out = ["## Held-out site", "",
           "Each seed trains on all sites but one and tests on the held-out site's pathological volumes "
           f"({', '.join(f'seed {s}: {h}' for s, h in held)}); the local arms are that seed's training sites' "
           "models. Pairs are within a seed (every arm faces the same held-out site).", ""]
    out += headline(results, "held_out/")
    out.append("")
    for key in [k for k in stats if k.startswith("held_out/")]:
        out += [f"### {key}", ""] + _metric_table(stats, key, arms_order) + [""]
    return out


def _shown(t: dict, higher: str = "**shown**") -> str:
    return {"higher": higher, "lower": "**refuted** (the interval lies below 0)"}.get(
        _verdict(t), "**not shown** (the interval includes 0)")


def _site_shift_lines(results: dict) -> list[str]:
    """The premise, three ways (simulation.experiment.site_shift): held-out site, same volumes, healthy residual."""
    shift = results["statistics"].get("site_shift")
    if not shift:
        return []
    out = ["## Does a single-site model degrade on another site's scanner?", "",
           "The study's premise (FedDis: single-site models meet other scanners as a domain shift). Positive "
           "differences support it; 95% t-intervals over seeds; the measures are defined in "
           "`simulation/experiment/site_shift.py`.", ""]
    if shift.get("model"):
        m, i, b = shift["model"]["t"], shift["intensity"]["t"], shift["beyond_intensity"]["t"]
        out += [f"1. **Held-out site.** Local model on its own site's held-out subjects − the same model on the "
                f"held-out site: {m['mean']:+.3f} [{_f(m['low'])}, {_f(m['high'])}] AUPRC (mean over the seed's local "
                f"models, n = {len(shift['seeds'])} seeds). The intensity baseline (trained on nothing) on the same "
                f"site pairs: {i['mean']:+.3f} [{_f(i['low'])}, {_f(i['high'])}] - how much harder the held-out site's "
                f"lesions are by themselves. Degradation beyond that: {b['mean']:+.3f} [{_f(b['low'])}, "
                f"{_f(b['high'])}]: {_shown(b)}. The two test sets hold different patients, so this measure "
                "confounds the shift with the test sets' difficulty."]
    same = shift.get("same_volumes")
    if same:
        t = same["t"]
        out += [f"2. **Same volumes, in-site vs cross-site.** On each site's own pathological test volumes, the "
                f"local model trained there − the other sites' local models on the same volumes: "
                f"{t['mean']:+.3f} [{_f(t['low'])}, {_f(t['high'])}] AUPRC (mean over sites, n = {len(same['seeds'])} "
                f"seeds; per seed {', '.join(f'{v:+.3f}' for v in same['values'])}). Same patients, lesions and "
                f"threshold rule: only the training site differs. Degradation on other sites' scanners: {_shown(t)}."]
    healthy = shift.get("healthy_residual")
    if healthy:
        t = healthy["t"]
        ratio = math.exp(t["mean"])
        out += [f"3. **Healthy tissue, in-site vs cross-site.** On each site's healthy validation volumes, the mean "
                f"anomaly score (the map the detector thresholds) of the other sites' local models ÷ that of the "
                f"site's own model: ×{ratio:.2f} (log-ratio {t['mean']:+.3f} [{_f(t['low'])}, {_f(t['high'])}], "
                f"n = {len(healthy['seeds'])} seeds). Whether the models *see* the scanner shift on normal tissue: "
                f"{_shown(t)}."]
        shares = healthy.get("variance_shares")
        if shares:
            out += [f"   Variance of the log healthy score (mean over seeds): {100 * shares['model']:.0f}% from which "
                    f"site trained the model, {100 * shares['site']:.0f}% from which site is scored, "
                    f"{100 * shares['interaction']:.0f}% neither (where an in-site advantage would show)."]
        if same and _verdict(t) == "higher" and _verdict(same["t"]) != "higher":
            out += ["", "The models see the shift on healthy tissue (3) but it does not decide detection (2): at this "
                    "scale the lesions' contrast against each model's own reconstruction error, not the scanner, "
                    "sets the AUPRC."]
    out.append("")
    return out


def _plots(results: dict, folder: Path) -> list[str]:
    """AUPRC per arm and seed; paired differences with their intervals; privacy-utility curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    main = [r for r in results["records"] if not r["sweep"]]
    labels = []
    for r in main:
        if r["label"] not in labels:
            labels.append(r["label"])
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4))
    for i, label in enumerate(labels):
        values = [r["metrics"]["model"]["overall"]["auprc"] for r in main if r["label"] == label]
        ax.scatter([i] * len(values), values, s=18)
        ax.hlines(sum(values) / len(values), i - 0.3, i + 0.3, color="black")
    intensity = [r["metrics"]["intensity"]["overall"]["auprc"] for r in main if r["arm"] == "federated"]
    ax.axhline(sum(intensity) / len(intensity), ls="--", color="grey", label="intensity baseline (mean)")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("overall AUPRC")
    ax.set_title(f"AUPRC per arm and seed\n({SEEDED_NOISE_LABEL})", fontsize=9)
    ax.legend(fontsize=8)
    save(fig, "auprc_by_arm.png")

    diffs = results["statistics"]["metrics"]["overall/auprc"]["differences"]
    names = [k for k in ("best_local", "mean_local", "central", "non_private", "intensity") if k in diffs]
    if names:
        fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
        for i, name in enumerate(names):
            t = diffs[name]["t"]
            if isinstance(t["low"], float) and not math.isnan(t["low"]):
                ax.plot([t["low"], t["high"]], [i, i], color="black")
            ax.plot([t["mean"]], [i], "o", color="C0")
        ax.axvline(0, color="grey", ls="--")
        ax.set_yticks(range(len(names)), [f"federated − {_NAMES[n]}" for n in names])
        ax.set_xlabel("paired AUPRC difference (95% t-interval)")
        ax.set_title(f"n = {len(results['statistics']['seeds'])} seeds ({SEEDED_NOISE_LABEL})", fontsize=9)
        save(fig, "paired_differences.png")

    curve = results["statistics"].get("privacy_utility") or {}
    if any(len(v) > 1 for v in curve.values()):
        fig, ax = plt.subplots(figsize=(5, 4))
        for arm, by in curve.items():
            eps = [float(e) for e in by]
            ax.errorbar(eps, [v["mean"] for v in by.values()], yerr=[v["sd"] or 0 for v in by.values()],
                        marker="o", capsize=3, label=arm)
        np_values = [r["metrics"]["model"]["overall"]["auprc"] for r in main if r["arm"] == "non-private"]
        if np_values:
            ax.axhline(sum(np_values) / len(np_values), color="C3", ls=":", label="non-private (NO DP)")
        ax.axhline(sum(intensity) / len(intensity), ls="--", color="grey", label="intensity baseline")
        ax.set_xscale("log")
        ax.set_xlabel("target ε (patient-level, add/remove one patient)")
        ax.set_ylabel("overall AUPRC (mean ± sd over seeds)")
        ax.set_title(f"privacy-utility ({SEEDED_NOISE_LABEL})", fontsize=9)
        ax.legend(fontsize=8)
        save(fig, "privacy_utility.png")
    return written


def write_report(results: dict, out_dir) -> Path:
    """Write ``plots/`` and ``report.md`` into ``out_dir``; a failing figure is reported in the page, never fatal."""
    out = Path(out_dir)
    try:
        figures = _plots(results, out / "plots")
        note = ""
    except Exception as exc:  # noqa: BLE001 - a missing matplotlib must not lose the numbers
        figures, note = [], f"\n\n*Figures failed: {type(exc).__name__}: {exc}*\n"
    path = out / "report.md"
    path.write_text(render_report(results, figures) + note)
    return path
