"""``secagg ledger show`` and ``secagg ledger verify``: a run's privacy ledger."""

from __future__ import annotations

import argparse
import sys

from .common import Formatter, Parser, UsageError, fmt_epsilon
from .output import emit

__all__ = ["register", "cmd_ledger_show", "cmd_ledger_verify"]


def cmd_ledger_show(args: argparse.Namespace) -> int:
    from dp.ledger import PrivacyLedger, adjacency_of

    with PrivacyLedger.open(args.run_dir) as ledger:
        entries = ledger.entries()
        accountants = ledger.accountants
        delta = ledger.delta
        budgets = ledger.budgets
        unit, adjacency = ledger.unit, ledger.adjacency
    rows = []
    for entry in entries:
        if entry.kind != "spend":
            continue
        event, cumulative = entry.body["event"], entry.body["cumulative"]
        rows.append({
            "seq": entry.seq, "site": event["site"], "round": event["round"],
            "unit": event.get("unit", "slice"), "neighbouring": event.get("neighbouring", "add_remove_one"),
            "noise_multiplier": event["noise_multiplier"], "sample_rate": event["sample_rate"],
            "steps": event["steps"], "epsilon": cumulative["epsilon"], "bound": cumulative["bound"],
            "bound_accountant": cumulative["bound_accountant"],
            "adjacency": adjacency_of(event.get("neighbouring", "add_remove_one"), event.get("unit", unit)),
            "signed": "signature" in entry.body,
        })
    emit(args, {"delta": delta, "budgets": budgets, "accountants": list(accountants), "unit": unit,
                "adjacency": adjacency, "entries": len(entries), "spends": rows},
         _show_lines(args, entries, rows, accountants, delta, budgets, unit, adjacency))
    return 0


def _show_lines(args: argparse.Namespace, entries, rows, accountants, delta, budgets, unit, adjacency):
    yield (f"privacy ledger of {args.run_dir}: {len(entries)} entries, delta = {delta}, "
           f"budgets {budgets}; privacy unit: one {unit} ({adjacency}); cumulative epsilon per site after each round")
    yield f"{'seq':>4} {'site':<12} {'round':>5} {'sigma':>7} {'q':>8} {'steps':>6} " + " ".join(
        f"{a:>9}" for a in accountants) + f" {'bound':>9}"
    for r in rows:
        yield (f"{r['seq']:>4} {r['site']:<12} {r['round']:>5} {r['noise_multiplier']:>7.3f} "
               f"{r['sample_rate']:>8.4f} {r['steps']:>6} "
               + " ".join(f"{fmt_epsilon(r['epsilon'].get(a)):>9}" for a in accountants)
               + f" {fmt_epsilon(r['bound']):>9}")


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the ledger verifies; 1 (one line on stderr naming the entry) when it does not or is damaged."""
    from pathlib import Path

    from dp.errors import LedgerError, LedgerIntegrityError
    from dp.ledger import verify_ledger
    from dp.ledger_signatures import load_anchors, load_releases

    from ..federation.identity import REGISTRY_FILE, SITES_DIR, load_registry

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"secagg ledger verify: error: {run_dir} is not a directory (a run directory holds "
                         "ledger.sqlite)")
    if args.registry:
        registry_path, registry_note = Path(args.registry), "given with --registry"
    elif (run_dir / REGISTRY_FILE).is_file():
        registry_path = run_dir / REGISTRY_FILE
        registry_note = ("the copy inside the run directory: only as trustworthy as the directory; pass --registry "
                         "with the consortium's own copy")
    else:
        registry_path, registry_note = None, "none: site signatures are NOT checked"
    registry = load_registry(registry_path) if registry_path is not None else None
    try:
        anchors = load_anchors(args.anchors or [])
        releases = load_releases(args.anchors or [])
    except LedgerIntegrityError as exc:  # a damaged anchor or release record: evidence that fails, not a usage slip
        print(f"ledger BROKEN: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except LedgerError as exc:
        raise UsageError(f"secagg ledger verify: error: {' '.join(str(exc).split())}") from None
    if anchors and registry is None:
        raise UsageError("secagg ledger verify: error: --anchors needs a registry of site verify keys (--registry)")
    try:
        report = verify_ledger(run_dir, registry=registry, anchors=anchors, releases=releases)
    except LedgerError as exc:
        print(f"ledger BROKEN: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    registry_line = f"registry: {registry_path if registry_path else 'none'} ({registry_note})"
    # Signatures and anchors bind a history only against parties that cannot sign: say so when the keys or
    # the anchors sit where the ledger's owner can rewrite them (the in-process simulation keeps them there).
    resolved = run_dir.resolve()
    inside_keys = sorted(str(p.relative_to(run_dir)) for p in (run_dir / SITES_DIR).glob("*/*.ed25519"))
    if report.ok and inside_keys:
        report.warnings.append(
            f"{len(inside_keys)} site signing key(s) are inside the run directory ({inside_keys[0]}, ...): whoever "
            "can write it can re-sign a cheaper history, so these signatures prove nothing against its owner; "
            "they bind only where each site keeps its key on its own machine (the Flower deployment)")
    if report.ok and registry_path is not None and not args.registry and report.signatures_checked:
        report.warnings.append(
            f"the {report.signatures_checked} site signatures were checked against the registry copy inside the run "
            "directory: whoever can write the directory can replace it and re-sign; pass --registry with the "
            "consortium's own copy")
    if report.ok and any(Path(a.source).resolve().is_relative_to(resolved) for a in anchors):
        report.warnings.append("some --anchors lie inside the run directory: its owner can rewrite them; copy "
                               "each site's anchor out of the run directory before auditing it")
    emit(args, lambda: report.to_dict() | {"registry": None if registry_path is None else str(registry_path),
                                           "registry_note": registry_note, "anchors": [a.source for a in anchors]},
         _verify_lines(report, registry_line))
    if not report.ok:
        print(f"ledger BROKEN at {report.where()}: {' '.join(str(report.reason).split())}", file=sys.stderr)
    return 0 if report.ok else 1


def _verify_lines(report, registry_line: str):
    """A broken ledger prints only the registry line here (stderr names the broken entry)."""
    if not report.ok:
        yield registry_line
        return
    yield (f"ledger OK: {report.entries} entries, hash chain intact, head record matches, epsilons re-derived; "
           f"{report.signatures_checked} site signatures verified; {len(report.anchors_checked)} site anchors matched")
    yield registry_line
    yield f"privacy unit: one {report.unit} ({report.adjacency})"
    for note in report.notes:
        yield f"  note: {note}"
    for warning in report.warnings:
        yield f"  warning: {warning}"
    for site, eps in sorted(report.epsilon.items()):
        yield (f"  {site}: epsilon <= {eps['bound']:.4f} ({eps['bound_accountant']}) at delta {eps['delta']}, "
               f"{report.adjacency}")


def register(sub) -> None:
    """Add ``ledger`` and its sub-commands ``show`` and ``verify``."""
    ledger = sub.add_parser(
        "ledger", help="show or verify a run's privacy ledger", formatter_class=Formatter,
        description="The append-only, hash-chained privacy ledger of a run directory.",
        epilog="Examples:\n  secagg ledger show runs/demo\n  secagg ledger verify runs/demo --json",
    )
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, parser_class=Parser)
    show = ledger_sub.add_parser(
        "show", help="per site and round: events and cumulative epsilon per accountant", formatter_class=Formatter,
        epilog="Example:\n  secagg ledger show runs/demo",
    )
    show.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_ledger_show)
    verify = ledger_sub.add_parser(
        "verify", formatter_class=Formatter,
        help="check the hash chain, the sites' signatures, their anchors and every epsilon; exit 0 when intact, "
             "1 naming the first broken entry",
        description=(
            "Checks every entry in order (chain link, hash, the signature of the site a spend charges, the\n"
            "re-derived epsilon within budget), then the sites' anchors, then the head record, and names the\n"
            "first entry that fails (sequence number, site, round). Without --anchors, deleting the last\n"
            "round(s) is caught only by the head record, which whoever controls the run directory can rewrite."),
        epilog=("Examples:\n  secagg ledger verify runs/demo\n"
                "  secagg ledger verify runs/demo --registry ~/consortium/registry.json --anchors site-1-state/ "
                "site-2-state/"),
    )
    verify.add_argument("run_dir", help="a run directory (holds ledger.sqlite)")
    verify.add_argument("--registry", metavar="REG",
                        help="JSON registry of the sites' Ed25519 verify keys (default: RUN_DIR/registry.json when "
                             "present - only as trustworthy as the run directory)")
    verify.add_argument("--anchors", nargs="+", metavar="DIR",
                        help="the sites' anchors: files, folders holding ledger.anchor.json, or folders of such "
                             "folders (RUN_DIR/sites in the simulation; a node's state dir)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=cmd_ledger_verify)
