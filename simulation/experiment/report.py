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


def headline(results: dict) -> list[str]:
    """The plain-language result, one sentence per claim of the study (true or false)."""
    stats = results["statistics"]["metrics"].get("overall/auprc")
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
        lines.append(f"- Against central (same ε): federated − central = {_ci(diffs['central'])}{rel}. "
                     f"Within 10% of central: {'yes' if within_mean else 'NO'} on the mean, "
                     f"{'yes' if within_ci else 'not shown'} on the whole 95% interval.")
    verdict("non_private", "Federated beat the non-private upper bound (unexpected)",
            "Federated was below the non-private upper bound", "Federated was indistinguishable from non-private")
    verdict("intensity", "**The autoencoder beat the intensity-threshold baseline** overall",
            "**The autoencoder did NOT beat the intensity-threshold baseline** overall",
            "**The autoencoder did not beat the intensity-threshold baseline** overall (inconclusive)")
    lesion = {k.split("/")[1]: v for k, v in results["statistics"]["metrics"].items()
              if k.startswith("lesion/") and "intensity" in v["differences"]}
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


def _privacy_table(results: dict) -> list[str]:
    rows = ["| arm | DP | unit / guarantee | accountant | δ | ε (target) | ε accounted | noise σ | q | steps |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in results["records"]:
        if r["sweep"] or (r["arm"], r["label"] if r["arm"] != "local" else "local") in seen:
            continue
        seen.add((r["arm"], r["label"] if r["arm"] != "local" else "local"))
        p = r["privacy"]
        label = "local (each site)" if r["arm"] == "local" else r["label"]
        if p["dp"]:
            eps = _f(p["epsilon"])
            if p.get("epsilon_spent_ledger") is not None:
                eps += f" (ledger: {_f(p['epsilon_spent_ledger'])})"
            rows.append(f"| {label} | yes | {p['guarantee']} | {p['accountant']} | {p['delta']:g} | "
                        f"{_f(p['budget'], 2)} | {eps} | {_f(p['noise_multiplier'], 4)} | {p['sample_rate']} | "
                        f"{p['steps']} |")
        else:
            rows.append(f"| {label} | **NO** | {p['guarantee']} | — | — | — | ∞ | 0 | — | — |")
    return rows


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
           f"{results['seconds'] / 60:.1f} min on {results.get('cpu_count')} CPU(s).",
           "",
           "## Result", ""]
    out += headline(results)
    if n < 5:
        out += ["", f"*Only {n} seeds: the intervals are wide; the issue asks for at least 5.*"]
    out += ["", "## Setup (identical for every arm)", "",
            f"- Cohort: {'synthetic, scale ' + repr(base['scale']) if base.get('data') is None else base['data']}, "
            f"{base['sites']} sites, {base['image_size']}×{base['image_size']} slices; "
            f"{'a new cohort per seed (data_seed + seed)' if exp['vary_data'] else 'the same cohort for every seed'}; "
            "same initial weights and healthy train/validation split for all arms of a seed.",
            f"- Model `{base['model']}`; Adam, learning rate {base['learning_rate']}; T = {base['rounds']} rounds × "
            f"{base['local_steps']} local steps = {base['rounds'] * base['local_steps']} optimiser steps in every arm "
            "(the federated sites restart Adam each round; the other arms keep it for all T steps).",
            f"- Federated: mode `{base['mode']}` (the real secure-aggregation path), server optimiser "
            f"`{base.get('server_optimizer', 'fedavg')}` on the decoded mean, **no protocol dropouts**, equal public "
            "weights.",
            f"- Sample visits: each DP arm samples each of its patients with probability q = {base['sample_rate']} per "
            "step, so every patient is visited q·T times in expectation in every arm; federated, central and "
            "non-private arms visit q·N·T slices of the pooled N (non-private: exactly round(q·N) per step, "
            "uniformly); a local arm visits its own site's share. Measured counts are in results.json (`visits`).",
            "- Evaluation: pooled pathological test volumes of all sites (held-out subjects), threshold at 1% FPR "
            "on the healthy validation volumes; AUPRC/AUROC pooled over brain voxels; Dice per volume at the "
            "threshold. The intensity baseline is scored on the same volumes.",
            "- *best local*: per seed, the local model with the highest score **on the test set** (an oracle "
            "choice that favours the local arm).",
            "", "## Privacy of each arm", ""]
    out += _privacy_table(results)
    out += ["", "Local and central models are research-only counterfactuals with the same σ, q and T as the "
            "federated sites, hence the same patient-level ε per patient; they are in no ledger.", ""]
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
    curve = results["statistics"].get("privacy_utility") or {}
    if any(len(v) > 1 for v in curve.values()):
        out += ["## Privacy-utility (overall AUPRC against the target ε, patient-level)", "",
                "| arm | " + " | ".join(f"ε = {e}" for e in next(iter(curve.values()))) + " |",
                "|---|" + "---|" * len(next(iter(curve.values())))]
        for arm, by in curve.items():
            out.append(f"| {arm} | " + " | ".join(_ms(v) for v in by.values()) + " |")
        out.append("")
    if figures:
        out += ["## Figures", ""] + [f"![{Path(f).stem}](plots/{Path(f).name})" for f in figures] + [""]
    out += ["## Not covered", "",
            "- Learning rates are not tuned per arm and there is no early stopping: every arm trains for T steps.",
            "- Per-test-site numbers are on held-out *subjects* of sites that also trained; held-out *sites* are "
            "evaluated only if the cohort provides them.", ""]
    return "\n".join(out)


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
