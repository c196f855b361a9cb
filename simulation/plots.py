"""Figures of a run: loss, epsilon per site, survivors per stage (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_run"]


def plot_run(metrics: list[dict], out_dir) -> list[str]:
    """Write ``training.png`` (loss, epsilon, survivors over rounds); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from secagg import STAGES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = [m["round"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)

    ax = axes[0]
    ax.plot(rounds, [m.get("mean_loss") if m.get("mean_loss") is not None else float("nan") for m in metrics],
            marker="o", color="tab:blue")
    ax.set_title("mean local training loss (DP-SGD)")
    ax.set_xlabel("round")
    ax.set_ylabel("reconstruction MSE")
    for m in metrics:
        if m["status"] != "completed":
            ax.axvline(m["round"], color="tab:red", alpha=0.3, lw=6)

    ax = axes[1]
    sites = sorted({s for m in metrics for s in m.get("epsilon", {})})
    for site in sites:
        ax.plot(rounds, [m["epsilon"].get(site) if m["epsilon"].get(site) is not None else 0.0 for m in metrics],
                marker=".", label=site)
    ax.set_title("cumulative epsilon per site (tightest valid bound)")
    ax.set_xlabel("round")
    ax.set_ylabel("epsilon")
    ax.legend(fontsize=8)

    ax = axes[2]
    stages = metrics[-1].get("protocol_stages") or list(STAGES) if metrics else list(STAGES)
    for stage in stages:
        counts = [len(m.get("survivors_per_stage", {}).get(stage, [])) for m in metrics]
        if any(counts):
            ax.plot(rounds, counts, marker="o", label=stage)
    ax.set_title("sites that answered, per protocol stage")
    ax.set_xlabel("round")
    ax.set_ylabel("sites")
    ax.legend(fontsize=8)
    if metrics and metrics[0].get("mode") == "plain":
        fig.suptitle("PLAIN baseline: no protection", color="tab:red")
    path = out_dir / "training.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]
