"""Figures of a run: what the coordinator may publish - epsilon per site, survivors per stage.

Training losses are not plotted: they are statistics of the sites' private data and stay at
the sites (``RUN_DIR/site-local/``), outside the coordinator's metrics.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_run"]


def plot_run(metrics: list[dict], out_dir) -> list[str]:
    """Write ``training.png`` (rounds' status, epsilon, survivors over rounds); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from secagg import STAGES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = [m["round"] for m in metrics]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)

    ax = axes[0]
    ax.plot(rounds, [len(m.get("included", [])) for m in metrics], marker="o", color="tab:blue")
    ax.set_title("sites in each aggregate (losses stay at the sites)")
    ax.set_xlabel("round")
    ax.set_ylabel("sites summed")
    for m in metrics:
        if m["status"] != "completed":
            ax.axvline(m["round"], color="tab:red", alpha=0.3, lw=6)

    ax = axes[1]
    sites = sorted({s for m in metrics for s in m.get("epsilon", {})})
    for site in sites:
        ax.plot(rounds, [m["epsilon"].get(site) if m["epsilon"].get(site) is not None else 0.0 for m in metrics],
                marker=".", label=site)
    guarantee = next((m["epsilon_guarantee"] for m in metrics if m.get("epsilon_guarantee")), None)
    ax.set_title("cumulative epsilon per site" + (f"\n({guarantee})" if guarantee else ""))
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
