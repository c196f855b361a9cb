"""``secagg dpia`` (a Data Protection Impact Assessment of a run) and ``secagg audit`` (an empirical lower
bound on epsilon)."""

from __future__ import annotations

import argparse
import sys

from .common import Formatter, UsageError, fmt_epsilon, positive, probability
from .output import emit

__all__ = ["register", "cmd_dpia", "cmd_audit"]


def cmd_dpia(args: argparse.Namespace) -> int:
    from ..reports.dpia import write_dpia

    path, doc = write_dpia(args.run_dir, fmt=args.format, out=args.output, org_path=args.org)
    emit(args, lambda: {"output": str(path), "format": args.format, "placeholders": doc["placeholders"],
                        "sections": [s["title"] for s in doc["sections"]], "facts": doc["facts"]},
         _dpia_lines(args, path, doc))
    return 0


def _dpia_lines(args: argparse.Namespace, path, doc: dict):
    yield f"wrote the DPIA ({args.format}) of {args.run_dir} to {path}"
    if doc["placeholders"]:
        yield (f"  {len(doc['placeholders'])} organisational fact(s) left as [TO BE COMPLETED: ...]: "
               f"{', '.join(doc['placeholders'])}")


def cmd_audit(args: argparse.Namespace) -> int:
    from dp.audit import audit_dp_sgd, write_audit

    if args.guesses is not None and args.canaries != "auto" and not 1 <= args.guesses <= args.canaries // 2:
        raise UsageError(f"secagg audit: error: --guesses must be in [1, {args.canaries // 2}]; got {args.guesses}")
    if args.own_training:
        if not args.run_dir:
            raise UsageError("secagg audit: error: --own-training needs a RUN_DIR (the run whose training is audited)")
        given = [f"--{n}" for n in ("noise-multiplier", "sample-rate", "steps", "clipping-norm", "canary-kind")
                 if getattr(args, n.replace("-", "_")) is not None]
        if given:
            raise UsageError(f"secagg audit: error: --own-training takes sigma, q, steps and C from the run; "
                             f"drop {', '.join(given)}")
        from ..reports.audit_run import audit_own_training

        result = audit_own_training(args.run_dir, site=args.site, canaries=args.canaries,
                                    guesses_per_side=args.guesses, confidence=args.confidence, delta=args.delta,
                                    max_canaries=args.max_canaries)
    else:
        if args.site is not None:
            raise UsageError("secagg audit: error: --site needs --own-training")
        params = {"noise_multiplier": args.noise_multiplier, "sample_rate": args.sample_rate, "steps": args.steps,
                  "delta": args.delta, "clipping_norm": args.clipping_norm}
        if args.run_dir:
            privacy = _run_privacy(args.run_dir)
            for key, value in privacy.items():
                if params.get(key) is None:
                    params[key] = value
        missing = [k.replace("_", "-") for k in ("noise_multiplier", "sample_rate", "steps") if params[k] is None]
        if missing:
            raise UsageError(f"secagg audit: error: give --{', --'.join(missing)} or a RUN_DIR to take them from")
        params["delta"] = params["delta"] if params["delta"] is not None else 1e-5
        params["clipping_norm"] = params["clipping_norm"] if params["clipping_norm"] is not None else 1.0
        result = audit_dp_sgd(**params, canaries=args.canaries, guesses_per_side=args.guesses,
                              confidence=args.confidence, canary_kind=args.canary_kind or "gradient",
                              max_canaries=args.max_canaries)
    warnings_ = _audit_warnings(result)
    written = str(write_audit(args.run_dir, result)) if args.run_dir else None
    emit(args, lambda: result.to_dict() | {"written": written, "warnings": warnings_},
         _audit_lines(args, result, written))
    if not args.json:  # what the audit cannot see, and a bound above the accounted one, go to stderr
        for line in warnings_:
            print(f"  WARNING: {line}", file=sys.stderr)
        if not result.consistent:
            print("  INCONSISTENT: the lower bound exceeds the accounted epsilon - the implementation or the "
                  "accounting is wrong", file=sys.stderr)
    return 0 if result.consistent else 1


def _audit_lines(args: argparse.Namespace, result, written: str | None):
    where = f", site {result.site}" if result.site else ""
    yield (f"one-run audit (Steinke, Nasr, Jagielski 2023), {result.mode} mode{where}: {result.canaries} "
           f"{result.canary_kind} canaries ({result.canaries_chosen}; {result.included} included), "
           f"{result.guesses} guesses, {result.correct} correct")
    yield f"  audits: {result.scope}"
    yield (f"  empirical lower bound: epsilon >= {result.epsilon_lower_bound:.4f} at {result.confidence:.0%} "
           f"confidence (delta {result.delta})")
    yield f"  ceiling: this setting can certify at most epsilon >= {result.ceiling:.4f} (every guess right)"
    yield (f"  accounted upper bound: epsilon <= {fmt_epsilon(result.epsilon_accounted)} ({result.accountant}) for "
           f"sigma {result.noise_multiplier}, q {result.sample_rate}, {result.steps} steps, C {result.clipping_norm}"
           f", {result.privacy_unit} level")
    if written:
        yield f"  wrote {written} (secagg dpia {args.run_dir} shows it)"


def _audit_warnings(result) -> list:
    """Plain statements of what the audit cannot see (it warns and runs; it never refuses for this)."""
    if result.ceiling_reaches_accounted:
        return []
    lines = [f"this audit cannot detect a violation above epsilon {result.ceiling:.4f} (its ceiling), below the "
             f"accounted {result.epsilon_accounted:.4f}: 'consistent' says nothing about epsilons in between"]
    if result.max_ceiling is not None:
        lines.append(f"no number of canaries up to the cap reaches the accounted epsilon at delta {result.delta} and "
                     f"{result.confidence:.0%} confidence: the largest ceiling is {result.max_ceiling:.4f} "
                     f"(m = {result.max_ceiling_canaries}), used here; each tenfold smaller --delta raises the largest "
                     f"ceiling by about 2.30 (ln 10) with about ten times the canaries, while the accounted epsilon "
                     f"at that delta rises too")
    return lines


def _canaries(value: str):
    """``auto`` or a positive int (argparse type)."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"canaries must be 'auto' or a positive integer; got {value!r}") from None
    if number < 2:
        raise argparse.ArgumentTypeError(f"canaries must be 'auto' or an integer >= 2; got {value!r}")
    return number


def _run_privacy(run_dir: str) -> dict:
    """sigma, q, steps per site, delta and clipping norm of a run directory (from its ledger)."""
    from dp.ledger import PrivacyLedger

    with PrivacyLedger.open(run_dir) as ledger:
        events = [e for s in sorted(ledger.budgets) for e in ledger.events(s)]
        delta = ledger.delta
    if not events:
        raise UsageError(f"secagg audit: error: the ledger of {run_dir} records no release to audit")
    sigmas = {e.noise_multiplier for e in events}
    rates = {e.sample_rate for e in events}
    if len(sigmas) > 1 or len(rates) > 1:
        raise UsageError(f"secagg audit: error: {run_dir} used several (sigma, q); pass them explicitly")
    per_site: dict = {}
    for e in events:
        per_site[e.site] = per_site.get(e.site, 0) + e.steps
    return {"noise_multiplier": sigmas.pop(), "sample_rate": rates.pop(), "steps": max(per_site.values()),
            "delta": delta, "clipping_norm": events[0].clipping_norm}


def register(sub) -> None:
    """Add ``dpia`` and ``audit`` to the top-level sub-parsers."""
    dpia = sub.add_parser(
        "dpia", help="a Data Protection Impact Assessment (GDPR Art. 35) drawn from a run directory",
        formatter_class=Formatter,
        description=(
            "Writes a DPIA from what the run recorded (configuration, summary, metrics, the privacy ledger,\n"
            "plots, an empirical audit if present) and the organisational facts of a TOML file (controller,\n"
            "DPO, purposes, lawful basis and Art. 9 condition, retention, ...; a documented example is\n"
            "simulation/reports/templates/org.example.toml). Facts left out stay visibly '[TO BE COMPLETED: key]'.\n"
            "Sections: Art. 35(7)(a)-(d), WP248 screening, roles, data-flow diagram, CNIL risks, measures\n"
            "with the run's exact parameters, residual risk, DPO advice, sign-off. HTML is self-contained;\n"
            "PDF needs headless Chromium (apt-get install chromium)."
        ),
        epilog=("Examples:\n  secagg dpia runs/demo\n  secagg dpia runs/demo --org org.toml -o dpia.html\n"
                "  secagg dpia runs/demo --format md -o DPIA.md\n  secagg dpia runs/demo --format pdf --json"),
    )
    dpia.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    dpia.add_argument("--format", choices=("html", "md", "pdf"), default="html", help="output format")
    dpia.add_argument("-o", "--output", help="output file (default: RUN_DIR/dpia.FORMAT)")
    dpia.add_argument("--org", metavar="FILE.toml", help="organisational facts (default: none, all placeholders)")
    dpia.add_argument("--json", action="store_true", help="print one JSON object (output path, placeholders)")
    dpia.set_defaults(func=cmd_dpia)

    audit = sub.add_parser(
        "audit", help="empirical lower bound on epsilon of DP-SGD with one training run (Steinke et al. 2023)",
        formatter_class=Formatter,
        description=(
            "Inserts m canaries, each included with probability 1/2, trains once with the project's DP-SGD,\n"
            "guesses membership from the trained weights and turns the number of correct guesses into a\n"
            "LOWER bound on epsilon at the given confidence, printed beside the accounted UPPER bound and\n"
            "the ceiling (the largest bound the setting can ever show; a warning says when it is below the\n"
            "accounted epsilon). Synthetic mode audits (sigma, q, steps, C) on a small linear model;\n"
            "--own-training audits the run's model, hyper-parameters and one site's real data.\n"
            "With RUN_DIR, sigma, q, steps, delta and C default to the run's ledger and the result is written\n"
            "to RUN_DIR/audit.json (shown by `secagg dpia`). Exit code 1 when the lower bound exceeds the\n"
            "accounted epsilon (a privacy bug)."
        ),
        epilog=("Examples:\n  secagg audit --noise-multiplier 1.0 --sample-rate 0.5 --steps 10\n"
                "  secagg audit runs/demo --canaries 400 --confidence 0.99\n"
                "  secagg audit runs/demo --own-training --site site-2\n"
                "  secagg audit runs/demo --json"),
    )
    audit.add_argument("run_dir", nargs="?", help="a run directory: parameters from its ledger; writes audit.json")
    audit.add_argument("--noise-multiplier", type=positive(float, "noise multiplier"), help="sigma")
    audit.add_argument("--sample-rate", type=probability("sample rate", high_closed=True), help="q, in (0, 1]")
    audit.add_argument("--steps", type=positive(int, "steps"), help="DP-SGD steps")
    audit.add_argument("--delta", type=probability("delta"), help="delta, in (0, 1) (default: the run's, else 1e-5)")
    audit.add_argument("--clipping-norm", type=positive(float, "clipping norm"),
                       help="per-example L2 clip C (default: the run's, else 1.0)")
    audit.add_argument("--canaries", type=_canaries, default="auto",
                       help="m, number of canaries, or 'auto': the smallest m whose ceiling reaches the accounted "
                            "epsilon (default auto)")
    audit.add_argument("--max-canaries", type=positive(int, "max canaries"), default=1_000_000,
                       help="cap of --canaries auto (default 1000000)")
    audit.add_argument("--guesses", type=positive(int, "guesses"),
                       help="k guesses on each side (k in, k out; default: canaries // 4)")
    audit.add_argument("--confidence", type=probability("confidence"), default=0.95,
                       help="confidence of the lower bound, in (0, 1)")
    audit.add_argument("--own-training", action="store_true",
                       help="audit the run's own DP-SGD: its model, hyper-parameters and a site's real data, with "
                            "gradient canaries (needs RUN_DIR)")
    audit.add_argument("--site", help="--own-training: the site whose training is audited (default: the first)")
    audit.add_argument("--canary-kind", choices=("gradient", "record"),
                       help="synthetic mode: gradient canaries (default) or record canaries (m <= 2000)")
    audit.add_argument("--json", action="store_true", help="print one JSON object")
    audit.set_defaults(func=cmd_audit)
