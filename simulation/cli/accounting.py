"""``secagg epsilon`` and ``secagg noise``: privacy accounting and noise calibration of DP-SGD."""

from __future__ import annotations

import argparse

from .common import Formatter, fmt_epsilon, positive, probability
from .output import emit

__all__ = ["register", "cmd_epsilon", "cmd_noise"]


_ACCOUNTANT_CHOICES = ("rdp", "prv", "pld", "rdp-dpa", "all")


def _accountants(choice: str) -> tuple:
    from dp.accounting import DEFAULT_ACCOUNTANTS

    return DEFAULT_ACCOUNTANTS if choice == "all" else (choice,)


def cmd_epsilon(args: argparse.Namespace) -> int:
    from dp.accounting import epsilon_for

    report = epsilon_for(
        noise_multiplier=args.noise_multiplier, sample_rate=args.sample_rate, steps=args.steps,
        delta=args.delta, accountants=_accountants(args.accountant),
        approximations=("gdp",) if args.show_gdp else (),
        neighbouring=args.neighbouring,
    )
    data = report.to_dict()
    data.update(noise_multiplier=args.noise_multiplier, sample_rate=args.sample_rate, steps=args.steps,
                neighbouring=args.neighbouring)
    emit(args, data, _epsilon_lines(args, report))
    # Only the text form fails when no accountant gives a bound: the JSON carries "bound": null instead.
    return 1 if not args.json and report.bound is None else 0


def _epsilon_lines(args: argparse.Namespace, report):
    yield (f"DP-SGD: noise multiplier {args.noise_multiplier}, sample rate {args.sample_rate}, {args.steps} steps, "
           f"delta {args.delta}, {'add/remove-one' if args.neighbouring == 'add_remove_one' else 'replace-one'} "
           "adjacency")
    for result in report.results:
        suffix = f"  ({result.error})" if not result.ok else ""
        yield f"  {result.accountant:<8} epsilon = {fmt_epsilon(result.epsilon)}   [{result.library}]{suffix}"
    for result in report.approximations:
        yield (f"  {result.accountant:<8} epsilon = {fmt_epsilon(result.epsilon)}   [{result.library}] "
               "APPROXIMATION, not an upper bound; never used as the bound")
    if report.bound is None:
        yield "  no accountant produced a valid bound"
        return
    yield (f"bound: epsilon <= {report.bound:.4f} at delta = {args.delta} (tightest valid upper bound: "
           f"{report.bound_accountant})")


def cmd_noise(args: argparse.Namespace) -> int:
    from dp.calibration import calibrate_noise

    calibration = calibrate_noise(
        target_epsilon=args.target_epsilon, delta=args.delta, sample_rate=args.sample_rate,
        steps=args.steps, accountant=args.accountant,
    )
    used = "the tightest of rdp, prv, pld" if args.accountant == "all" else args.accountant
    emit(args, calibration.to_dict,
         f"noise multiplier {calibration.noise_multiplier:.4f} gives epsilon {calibration.epsilon:.4f} "
         f"<= {args.target_epsilon} at delta {args.delta} over {args.steps} steps with sample rate "
         f"{args.sample_rate} (accountant: {used})")
    return 0


def register(sub) -> None:
    """Add ``epsilon`` and ``noise`` to the top-level sub-parsers."""
    epsilon = sub.add_parser(
        "epsilon",
        help="epsilon of DP-SGD (Poisson-subsampled Gaussian) under several accountants",
        formatter_class=Formatter,
        description=(
            "Epsilon at the given delta for STEPS steps of DP-SGD with Poisson sampling, from Opacus RDP,\n"
            "Opacus PRV and dp-accounting PLD side by side. The bound is the tightest of the valid upper\n"
            "bounds; an accountant that fails is reported with its reason. GDP (--show-gdp) is an\n"
            "approximation that can under-estimate epsilon and is never used as the bound."
        ),
        epilog=(
            "Examples:\n  secagg epsilon --noise-multiplier 1.1 --sample-rate 0.01 --steps 1000 --delta 1e-5\n"
            "  secagg epsilon --noise-multiplier 1.0 --sample-rate 0.004 --steps 14000 --delta 1e-5 --json\n"
            "  secagg epsilon --noise-multiplier 0.8 --sample-rate 1 --steps 10 --delta 1e-6 --accountant pld"
        ),
    )
    epsilon.add_argument("--noise-multiplier", required=True, type=positive(float, "noise multiplier"),
                         help="sigma: noise std divided by the clipping norm")
    epsilon.add_argument("--sample-rate", required=True, type=probability("sample rate", high_closed=True),
                         help="q: Poisson sampling probability per step, in (0, 1]")
    epsilon.add_argument("--steps", required=True, type=positive(int, "steps"), help="number of DP-SGD steps")
    epsilon.add_argument("--delta", required=True, type=probability("delta"), help="target delta, in (0, 1)")
    epsilon.add_argument("--accountant", choices=_ACCOUNTANT_CHOICES, default="all",
                         help="one accountant, or all of rdp, prv, pld")
    epsilon.add_argument("--neighbouring", choices=("add_remove_one", "replace_one"), default="add_remove_one",
                         help="adjacency relation (Opacus accountants support add/remove only)")
    epsilon.add_argument("--show-gdp", action="store_true", help="also show the GDP approximation (labelled)")
    epsilon.add_argument("--json", action="store_true",
                         help='one JSON object with keys "epsilon" (accountant -> value or null) and "bound"')
    epsilon.set_defaults(func=cmd_epsilon)

    noise = sub.add_parser(
        "noise",
        help="calibrate the noise multiplier for a target epsilon over the whole run",
        formatter_class=Formatter,
        description=(
            "Smallest noise multiplier whose epsilon after STEPS steps (rounds x local steps: the whole\n"
            "run, not one epoch) is at most the target, under the chosen accountant."
        ),
        epilog=(
            "Examples:\n  secagg noise --target-epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000\n"
            "  secagg noise --target-epsilon 1 --delta 1e-6 --sample-rate 0.05 --steps 200 --accountant rdp --json"
        ),
    )
    noise.add_argument("--target-epsilon", required=True, type=positive(float, "target epsilon"))
    noise.add_argument("--delta", required=True, type=probability("delta"), help="target delta, in (0, 1)")
    noise.add_argument("--sample-rate", required=True, type=probability("sample rate", high_closed=True),
                       help="q, in (0, 1]")
    noise.add_argument("--steps", required=True, type=positive(int, "steps"), help="total steps of the run")
    noise.add_argument("--accountant", choices=_ACCOUNTANT_CHOICES, default="all",
                       help="calibrate against one accountant, or the tightest valid bound of all")
    noise.add_argument("--json", action="store_true", help='one JSON object with key "noise_multiplier"')
    noise.set_defaults(func=cmd_noise)
