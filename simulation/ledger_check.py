"""Verify a run's ledger with what the run directory holds: its registry copy and its sites' anchors.

One job: the check that ``secagg simulate --resume``, ``secagg dpia`` and ``secagg export`` run before
they use or publish a ledger's epsilons, and the plain words for what that check covered.

What it proves. The hash chain (each entry's kind inside its hash), every epsilon re-derived, and -
where the run directory holds ``registry.json`` and ``sites/SITE/ledger.anchor.json`` (the in-process
simulation keeps them there) - every spend's site signature and every site's anchor. That stops a
ledger rewritten without the site keys: a deleted round, a relabelled or edited spend (issue-15
reviews). It does NOT stop whoever holds the whole directory, keys included; only
``secagg ledger verify --registry REG --anchors ...`` with copies kept elsewhere does, and the
``scope`` text says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLedgerCheck", "verify_run_ledger"]


@dataclass(frozen=True)
class RunLedgerCheck:
    """A :class:`dp.ledger.VerificationReport` and what it covered, in words."""

    report: object
    scope: str


def verify_run_ledger(run_dir) -> RunLedgerCheck:
    """Verify ``run_dir``'s ledger with the registry and anchors inside it, where present."""
    from dp import load_anchors, verify_ledger
    from dp.errors import LedgerError

    from .identity import REGISTRY_FILE, SITES_DIR, load_registry

    root = Path(run_dir)
    registry = load_registry(root / REGISTRY_FILE) if (root / REGISTRY_FILE).is_file() else None
    anchors = []
    if registry is not None and (root / SITES_DIR).is_dir():
        try:
            anchors = load_anchors([root / SITES_DIR])
        except LedgerError:
            anchors = []  # no site anchored yet (a run stopped before its first commit)
    report = verify_ledger(root, registry=registry, anchors=anchors)
    if registry is None:
        scope = ("hash chain and re-derived epsilons only: NO registry in the run directory, so site signatures "
                 "were not checked; run `secagg ledger verify RUN --registry REG --anchors ...`")
    else:
        scope = (f"hash chain, re-derived epsilons, {report.signatures_checked} site signatures and "
                 f"{len(report.anchors_checked)} site anchors, all checked against copies inside the run "
                 "directory: this stops a rewrite without the site keys, not one by whoever holds the whole "
                 "directory (for that, `secagg ledger verify RUN --registry REG --anchors ...` with copies kept "
                 "elsewhere)")
    return RunLedgerCheck(report, scope)
