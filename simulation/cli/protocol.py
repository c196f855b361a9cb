"""``secagg demo`` (one secure-aggregation session, with dropouts and a refused attack) and ``secagg params``
(the SecAgg+ parameter finder)."""

from __future__ import annotations

import argparse

import secagg

from .common import Formatter, positive
from .output import emit

__all__ = ["register", "cmd_demo", "cmd_params"]


def cmd_demo(args: argparse.Namespace) -> int:
    from ..engines.inprocess.demo import format_report, run_demo

    report = run_demo(sites=args.sites, vector_length=args.length, active=not args.semi_honest)
    emit(args, report.to_dict, lambda: format_report(report))
    return 0 if report.exact and report.attack_refused else 1


def cmd_params(args: argparse.Namespace) -> int:
    params = secagg.find_parameters(
        args.n,
        corrupt_fraction=args.corrupt,
        dropout_fraction=args.dropout,
        security_bits=args.security_bits,
        correctness_bits=args.correctness_bits,
        malicious=args.malicious,
    )
    emit(args, {
        "n": params.n, "degree": params.degree, "threshold": params.threshold,
        "complete": params.complete, "security_failure": params.security_failure,
        "correctness_failure": params.correctness_failure, "malicious": params.malicious,
        "corrupt_fraction": params.corrupt_fraction, "dropout_fraction": params.dropout_fraction,
    }, params.describe)
    return 0


def register(sub) -> None:
    """Add ``demo`` and ``params`` to the top-level sub-parsers."""
    demo = sub.add_parser(
        "demo",
        help="run one secure-aggregation session with dropouts and a malicious-coordinator attack",
        formatter_class=Formatter,
        description=(
            "Hospitals aggregate synthetic updates through the real client/server sessions and wire\n"
            "encoding. One site drops after advertising keys, one after sharing keys, one after\n"
            "uploading its masked input. Prints what the coordinator saw and learned, then shows\n"
            "honest sites refusing a coordinator that asks for both shares of one site."
        ),
        epilog="Examples:\n  secagg demo\n  secagg demo --sites 12 --length 1000000\n  secagg demo --json",
    )
    demo.add_argument("--sites", type=int, default=8, help="number of hospitals (>= 5)")
    demo.add_argument("--length", type=positive(int, "length"), default=100_000, help="parameters per update")
    demo.add_argument("--semi-honest", action="store_true",
                      help="skip the consistency-check round and signatures (default: active mode)")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    demo.set_defaults(func=cmd_demo)

    params = sub.add_parser(
        "params",
        help="choose the SecAgg+ graph degree k and threshold t (Bell et al. 2020)",
        formatter_class=Formatter,
        description=(
            "Smallest even degree k and a threshold t meeting the security failure bound 2^-S and\n"
            "the correctness failure bound 2^-C for n clients, a corrupt fraction and a dropout\n"
            "fraction. Infeasible settings are refused with the reason (exit code 2)."
        ),
        epilog="Examples:\n  secagg params --n 1000 --corrupt 0.05 --dropout 0.05\n"
               "  secagg params --n 500 --corrupt 0.1 --dropout 0.1 --malicious --json",
    )
    params.add_argument("--n", type=int, required=True, help="number of clients")
    params.add_argument("--corrupt", type=float, default=0.05, help="tolerated corrupt fraction of clients")
    params.add_argument("--dropout", type=float, default=0.05, help="tolerated dropout fraction")
    params.add_argument("--security-bits", type=float, default=40, help="security failure <= 2^-S")
    params.add_argument("--correctness-bits", type=float, default=20, help="correctness failure <= 2^-C")
    params.add_argument("--malicious", action="store_true", help="account for a malicious coordinator")
    params.add_argument("--json", action="store_true", help="print one JSON object")
    params.set_defaults(func=cmd_params)
