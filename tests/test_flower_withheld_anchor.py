"""Issue 15, attack review: a coordinator that controls when nodes anchor, or skips a site's signature.

Through the real ServerApp and ClientApp code on the in-memory grid. Before the fix a coordinator
could withhold the last round's anchors (the nodes anchored only what the coordinator delivered),
then delete that round from its ledger, and ``ledger verify --registry --anchors`` said OK. Now
a node anchors its own signed entry itself when it is asked to unmask, and refuses to unmask a
round whose spend it did not sign; a site whose update left without a signed spend is named by
``verify`` from the site's own release record.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")

from dp.ledger_signatures import entry_site_and_round  # noqa: E402
from simulation import rounds  # noqa: E402
from simulation.flower import client_app  # noqa: E402
from simulation.flower.ledger_link import ANCHOR_RECORD, ANCHORS_DIR  # noqa: E402

from .flower_harness import InMemoryGrid  # noqa: E402
from .ledger_rewrite import ledger_rows, rewrite_ledger  # noqa: E402
from .test_flower_ledger import DEFAULTS, RUN, SITES, _consortium, _federate, _run_id, _verify  # noqa: E402


class _WithholdingGrid(InMemoryGrid):
    """Delivers each node only its first anchor (round 0); every later anchor is stripped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: set = set()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            records = m.content.config_records
            if ANCHOR_RECORD in records:
                node = m.metadata.dst_node_id
                if node in self.seen:
                    del records[ANCHOR_RECORD]
                else:
                    self.seen.add(node)
        return super().send_and_receive(messages, timeout=timeout)


def test_withheld_last_anchor_then_truncated_round_is_caught(tmp_path, capsys):
    registry, states, nodes = _consortium(tmp_path)
    run_dir = tmp_path / "run"
    summary = _federate(_WithholdingGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    assert summary["rounds_completed"] == 2
    run_id = _run_id(run_dir)
    anchors = [states[s] / ANCHORS_DIR / run_id for s in states]
    # Each node anchored its round-1 entry itself when it was asked to unmask round 1.
    rows = ledger_rows(run_dir)
    last_spend = max(i for i, (kind, _) in enumerate(rows) if kind == "spend") + 1
    assert max(json.loads((a / "ledger.anchor.json").read_text())["seq"] for a in anchors) >= last_spend
    round_ends = [i for i, (kind, _) in enumerate(rows) if kind == "round"]
    rewrite_ledger(run_dir, rows[: round_ends[-2] + 1])  # round 1 (released, unmasked, applied) deleted
    code, out, err = _verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 1, "the coordinator under-reported round 1 and verify said OK"
    assert "the ledger was truncated" in err and "ledger BROKEN at entry" in err


def test_a_node_refuses_to_unmask_a_round_whose_spend_it_did_not_sign(tmp_path, capsys, monkeypatch):
    """A coordinator that records no spend for site-1 in round 1 and never asks it to sign: site-1
    refuses its unmask shares, its anchor stays at round 0, and verify names the uncharged release."""
    honest_call = rounds.ReleaseCommitter.__call__

    def omit_site_1_in_round_1(self, released_ids):
        if self.plan.round_index != 1:
            return honest_call(self, released_ids)
        honest_call(self, frozenset(i for i in released_ids if self.ctx.site_of(i) != "site-1"))
        self.released_sites = sorted(self.ctx.site_of(i) for i in released_ids)  # hide it from its own check

    monkeypatch.setattr(rounds.ReleaseCommitter, "__call__", omit_site_1_in_round_1)
    registry, states, nodes = _consortium(tmp_path)
    run_dir = tmp_path / "run"
    summary = _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    captured = capsys.readouterr()
    assert "unmasks round 1 only after it signed its spend" in captured.out + captured.err
    run_id = _run_id(run_dir)
    site_1 = states["site-1"] / ANCHORS_DIR / run_id
    released = json.loads((site_1 / "released.json").read_text())
    assert released["rounds"] == {"0": "survivor", "1": "released"}
    spends = [entry_site_and_round(kind, body) for kind, body in ledger_rows(run_dir) if kind == "spend"]
    assert set(spends) == {(s, r) for s in SITES for r in (0, 1)} - {("site-1", 1)}
    anchors = [states[s] / ANCHORS_DIR / run_id for s in SITES]
    code, out, err = _verify(capsys, run_dir, "--registry", registry, "--anchors", *anchors)
    assert code == 0, err  # every recorded entry is intact: the omission is a warning, not a broken chain
    assert ("site 'site-1' released a masked update in round 1" in out
            and "charges it no spend for that round" in out), out
    # The other two sites still revealed site-1's self-mask shares (threshold 2 of 3), so its update was in
    # round 1's sum: the gap only the release record exposes (its node's own ledger charged the spend).
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["rounds_completed"] == 2 and "site-1" in metrics[1]["included"]


def test_a_damaged_anchor_file_is_a_broken_ledger_not_a_usage_error(tmp_path, capsys):
    registry, states, nodes = _consortium(tmp_path)
    run_dir = tmp_path / "run"
    _federate(InMemoryGrid(client_app.app, nodes, DEFAULTS | RUN), run_dir, registry=str(registry))
    folder = states["site-2"] / ANCHORS_DIR / _run_id(run_dir)
    (folder / "ledger.anchor.json").write_text("{not json")
    code, _, err = _verify(capsys, run_dir, "--registry", registry, "--anchors", folder)
    assert code == 1 and "ledger BROKEN" in err and "ledger.anchor.json does not parse" in err
    # An anchor signed by the wrong site is named as that anchor, not as "the head record".
    other = states["site-3"] / ANCHORS_DIR / _run_id(run_dir) / "ledger.anchor.json"
    forged = json.loads(other.read_text()) | {"site": "site-2"}
    (folder / "ledger.anchor.json").write_text(json.dumps(forged))
    code, _, err = _verify(capsys, run_dir, "--registry", registry, "--anchors", folder)
    assert code == 1 and "BROKEN at the anchor of site 'site-2'" in err, err
