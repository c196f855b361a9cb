"""``secagg experiment``: the multi-seed comparison of federated, local, central and non-private training."""

from __future__ import annotations

import argparse
import sys

from .common import Formatter, positive
from .output import emit

__all__ = ["register", "cmd_experiment"]


def _int_list(name: str):
    def parse(text: str) -> list:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma list of integers; got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} must not be empty")
        return values

    return parse


def _float_list(name: str):
    def parse(text: str) -> list:
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma list of numbers; got {text!r}") from None

    return parse


def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from ..experiment import load_experiment_config, run_experiment

    simulation = {"preset": "tiny" if args.tiny else None, "scale": args.scale, "model": args.model,
                  "sites": args.sites, "rounds": args.rounds, "local_steps": args.local_steps,
                  "epsilon": args.epsilon, "image_size": args.image_size, "cache_dir": args.cache_dir,
                  "server_optimizer": args.server_optimizer}
    arms = None if args.arms is None else [a for a in args.arms.split(",") if a]
    config = load_experiment_config(args.config, seeds=args.seeds, arms=arms, epsilons=args.epsilons,
                                    vary_data=False if args.same_data else None, simulation=simulation)
    out = args.out or f"experiments/runs/{config.name}-{__import__('time').strftime('%Y%m%d-%H%M%S')}"
    command = "secagg " + " ".join(shlex.quote(a) for a in (args.argv or []))
    result = run_experiment(config, out, log=(lambda text: print(text, file=sys.stderr, flush=True)) if args.json
                            else None, command=command, jobs=args.jobs)
    emit(args, lambda: _experiment_payload(result), lambda: _experiment_lines(result), default=str)
    return 0


def _experiment_payload(result) -> dict:
    stats = result.results["statistics"]
    return {"out_dir": str(result.out_dir), "report": str(result.out_dir / "report.md"),
            "seeded_noise": result.results["seeded_noise"], "seeds": stats["seeds"],
            "overall_auprc": stats["metrics"].get("overall/auprc"), "seconds": result.results["seconds"]}


def _experiment_lines(result) -> list:
    from ..experiment.report import headline

    return ["", f"== secagg experiment ({result.results['seeded_noise']})", *headline(result.results),
            f"   report: {result.out_dir / 'report.md'}"]


def register(sub) -> None:
    """Add ``experiment`` to the top-level sub-parsers."""
    experiment = sub.add_parser(
        "experiment",
        help="a fair multi-seed comparison: federated vs every local-only model, central and non-private",
        formatter_class=Formatter,
        description=(
            "For each seed, runs under identical conditions: federated training through the real secure-\n"
            "aggregation path (no protocol dropouts), one local-only model per site, a central model on the\n"
            "pooled data (same sigma, q, maximum steps: the same target epsilon) and a non-private central\n"
            "model (NO DP: no clipping, no noise, calibration skipped). Then writes OUT/report.md and\n"
            "OUT/plots/: per-arm AUPRC/AUROC/Dice overall, per lesion type and per test site beside the\n"
            "intensity baseline, paired differences with 95% t and bootstrap intervals, the privacy of\n"
            "each arm, and with --epsilons a privacy-utility curve. Optional (TOML keys): learning rates\n"
            "tuned per arm on a separate seed by healthy validation loss (lr_grid, tuning_seed), early\n"
            "stopping on that loss, the same rule for every arm (patience, min_improvement), and a\n"
            "held-out site per seed (held_out_site).\n\n"
            "EXPERIMENT MODE: DP sampling and noise come from seeded generators so that a seed repeats\n"
            "exactly. Seeded noise is NOT a privacy guarantee; every output is labelled so. Real runs\n"
            "(`secagg simulate`, Flower) always use the CSPRNG.\n"
            "Settings: a TOML file (--config; see experiments/reference.toml) with top-level keys name,\n"
            "seeds, arms, vary_data, epsilons, lr_grid, tuning_seed, patience, min_improvement,\n"
            "held_out_site and a [simulation] table of `secagg simulate` keys; flags\n"
            "override it."
        ),
        epilog=(
            "Examples:\n  secagg experiment --config experiments/reference.toml\n"
            "  secagg experiment --tiny --seeds 0,1 --out runs/exp-smoke\n"
            "  secagg experiment --config experiments/reference.toml --epsilons 1,4 --json\n"
            "  secagg experiment --tiny --seeds 0,1,2 --arms federated,local --jobs 1"
        ),
    )
    experiment.add_argument("--config", help="experiment TOML file (default: built-in defaults)")
    experiment.add_argument("--seeds", type=_int_list("seeds"), help="comma list of seeds (default 0,1,2,3,4)")
    experiment.add_argument("--arms", help="comma list of federated,local,central,non-private (default all)")
    experiment.add_argument("--epsilons", type=_float_list("epsilons"),
                            help="extra target epsilons for the privacy-utility curve (federated and central)")
    experiment.add_argument("--same-data", action="store_true",
                            help="one cohort for every seed (default: seed s uses data_seed + s)")
    experiment.add_argument("--tiny", action="store_true", help="the tiny simulation preset (a smoke test)")
    experiment.add_argument("--scale", help="synthetic cohort scale")
    experiment.add_argument("--model", help="model name (see models.available_models())")
    experiment.add_argument("--sites", type=positive(int, "sites"), help="synthetic sites")
    experiment.add_argument("--rounds", type=positive(int, "rounds"), help="federated rounds")
    experiment.add_argument("--local-steps", type=positive(int, "local steps"), help="DP-SGD steps per round")
    experiment.add_argument("--epsilon", type=positive(float, "epsilon"), help="target epsilon of every DP arm")
    experiment.add_argument("--image-size", type=positive(int, "image size"), help="slice size in pixels")
    experiment.add_argument("--server-optimizer", choices=("fedavg", "momentum", "adam"),
                            help="update rule applied at the coordinator to the decoded sum")
    experiment.add_argument("--cache-dir", help="cache of synthetic data and preprocessing")
    experiment.add_argument("--out", help="output directory, new or empty (default experiments/runs/NAME-TIME)")
    experiment.add_argument("--jobs", type=positive(int, "jobs"),
                            help="seeds (and tuning rates) trained at once, each in its own process with one torch "
                                 "thread (default: one per CPU); the results do not depend on it")
    experiment.add_argument("--json", action="store_true",
                            help="print one JSON object (out_dir, report, seeds, overall AUPRC statistics); "
                                 "progress goes to stderr")
    experiment.set_defaults(func=cmd_experiment)
