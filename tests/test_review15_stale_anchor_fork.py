"""Issue-15 review (second round): a fork below the sites' anchors, in active mode with the registry at every node.

The break it found: a node signed its spend at whatever sequence number the coordinator named, and
``record_chain_anchor`` silently kept an older anchor, so a coordinator could have every site sign a
fork at old sequence numbers, unmask the round and commit nothing, with ``verify`` only warning.
Now a site refuses to sign at or below an entry it anchored, refuses to anchor a chain ending below
its anchor (or at it with another history), and a round a site unmasked as a survivor that the
ledger does not charge fails the audit.
"""

import pytest

from dp import (EntryStatement, LedgerSigner, PrivacyEvent, PrivacyLedger, ReleaseRecord, load_anchors, round_chain,
                verify_ledger)
from dp.accounting import compute_epsilon
from dp.errors import LedgerError

DELTA = 1e-5
SITES = ("a", "b", "c")
RUN = "fork-run"


def _event(site, r):
    return PrivacyEvent(site, r, 1.0, 0.02, 10, DELTA)


def test_a_fork_below_the_anchors_is_refused_and_an_uncharged_survivor_fails_the_audit(tmp_path):
    from simulation.federation.identity import run_site_identities

    ids = run_site_identities(tmp_path, SITES, create=True)
    signers = {s: LedgerSigner(s, ids.keys[s].seed, ids.folders[s]) for s in SITES}
    ledger = PrivacyLedger.create(tmp_path, run_id=RUN, delta=DELTA, budgets={s: 50.0 for s in SITES},
                                  accountants=("rdp",))
    ledger.commit_round(0, [_event(s, 0) for s in SITES], signers=signers)
    honest = round_chain(ledger.entries(), 0)
    for s in SITES:  # what each Flower node does before it unmasks round 0
        signers[s].record_chain_anchor(RUN, honest)
        ReleaseRecord(RUN, s, {0: "survivor"}).write(ids.folders[s] / "released.json")
    assert {signers[s].anchor().seq for s in SITES} == {4}

    # Round 1: the coordinator asks each site to sign a fork at seqs 2..4, below every anchor: refused.
    body = {"event": _event("a", 1).to_dict(),
            "cumulative": compute_epsilon([_event("a", 0), _event("a", 1)], DELTA,
                                          accountants=("rdp",)).to_dict()}
    with pytest.raises(LedgerError, match="refuses to sign entry 2: it anchored entry 4"):
        signers["a"].sign_entry(EntryStatement(RUN, 2, "ab" * 32, "spend", body))
    # A chain ending below the anchor (or at it with another history) is not anchored either.
    with pytest.raises(LedgerError, match="a fork"):
        signers["a"].record_chain_anchor(RUN, honest[:1])
    assert signers["a"].anchor().seq == 4
    ledger.close()

    # And a round a site unmasked as a survivor must be charged: the audit fails, not only warns.
    ReleaseRecord(RUN, "a", {0: "survivor", 1: "survivor"}).write(ids.folders["a"] / "released.json")
    from dp import load_releases

    report = verify_ledger(tmp_path, registry=ids.registry, anchors=load_anchors([tmp_path / "sites"]),
                           releases=load_releases([tmp_path / "sites"]))
    assert not report.ok and "unmasked round 1 as a survivor" in report.reason, report
