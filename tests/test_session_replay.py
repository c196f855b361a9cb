"""Why no node may ever join one session twice: a rerun defeats the consistency quorum.

Found by the independent review of issue 14's fix.
Claim 1 of docs/security.md says an honest client "signs once per session" and
that the signature "covers the session fingerprint, so it cannot be replayed
from another session". But the fingerprint is a hash of the SessionConfig, and
the coordinator chooses the config, including ``session_id``. Nothing stops it
from starting a second run with the *same* config (in Flower: the same
``session-id`` in a setup record with another ``round-index``), and nothing
binds a consistency signature to the run it came from: the payload is only
(fp, U3). Every honest client therefore signs one view per *run*, so two runs
give every client two signatures, and two different views can each collect a
quorum. Issue 14's split-view attack then unmasks the victim bit for bit, with
no colluding client, on the SecAgg+ graph and on the complete graph.

``ClientSession`` is sans-IO and cannot remember other sessions, so "one session,
one run" is a precondition its callers keep: a Flower node journals every session
fingerprint durably before it advertises and refuses a second run
(simulation/engines/flower/session_journal.py, tests/test_flower_node_refusals.py); the
in-process simulation draws a fresh random session id per round. This test shows
the precondition is necessary: break it and the victim is unmasked.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg import ClientSession, find_parameters, wire
from secagg.messages import ConsistencyRequest, KeyDirectory, MaskedInputRequest, UnmaskRequest

from .adversary import AttackPlan, MaliciousServer, passive_split_view_plan, split_view_plan
from .harness import Deployment


def _run_again(d: Deployment, sign_view) -> dict:
    """Run the same SessionConfig once more with fresh ClientSessions (honest routing).

    Each honest client signs exactly once in this run: the view ``sign_view(w)``.
    Returns {view: {signer: signature}}.
    """
    config, fp = d.config, d.config.fingerprint
    clients = {i: ClientSession(config, i, signing_key=d.identities[i].seed, masked_input=d.encoded[i])
               for i in d.ids}
    adverts = {i: wire.decode(wire.encode(c.advertise())) for i, c in clients.items()}
    shares = {w: wire.decode(wire.encode(clients[w].handle(wire.encode(KeyDirectory(
        fp, w, {v: adverts[v].keys for v in config.closed_neighborhood(w)})))))
        for w in clients}
    for w in clients:
        routed = {v: shares[v].ciphertexts[w] for v in config.neighbors[w]}
        clients[w].handle(wire.encode(MaskedInputRequest(fp, w, routed)))
    collected: dict = {}
    for w in clients:
        view = sign_view(w)
        reply = wire.decode(wire.encode(clients[w].handle(wire.encode(ConsistencyRequest(fp, w, view)))))
        collected.setdefault(view, {})[w] = reply.signature
    return collected


def _signatures_from_reruns(d: Deployment, plan) -> dict:
    """As many reruns as the plan has views: in rerun r each client signs the r-th view it belongs to."""
    views = sorted({frozenset(v) for v in plan.consistency_views.values()}, key=sorted)
    extra: dict = {}
    for r in range(len(views)):
        def pick(w, r=r):
            mine = [v for v in views if w in v]
            return mine[r % len(mine)]
        for view, sigs in _run_again(d, pick).items():
            extra.setdefault(view, {}).update(sigs)
    return extra


def _active(plan: AttackPlan) -> AttackPlan:
    """A passive plan played in active mode: each client is asked to sign the view it will unmask for."""
    views = {w: frozenset(s) for w, (s, _) in plan.unmask_requests.items()}
    return AttackPlan(plan.victim, plan.forwarding, views, plan.unmask_requests)


class ReplayingServer(MaliciousServer):
    """The split-view coordinator of tests/adversary.py, topping up each quorum with the other run's signatures."""

    def __init__(self, config, clients, extra: dict) -> None:
        super().__init__(config, clients)
        self.extra = extra

    def _send(self, recipient, message, stage, report):
        if isinstance(message, UnmaskRequest):
            sigs = dict(self.extra.get(message.survivors, {}))
            sigs.update(message.signatures)
            message = UnmaskRequest(message.session, message.recipient, message.survivors, message.dropped, sigs)
        return super()._send(recipient, message, stage, report)


def _params(n: int):
    chosen = find_parameters(n, corrupt_fraction=0, dropout_fraction=0.05, malicious=True)
    return chosen.degree, chosen.threshold


@pytest.mark.parametrize("n, degree, threshold", [
    pytest.param(20, 4, 3, id="n20-k4-t3"),
    pytest.param(50, *_params(50), id="n50-find_parameters"),
    pytest.param(5, None, 3, id="complete-n5-t3"),
])
def test_rerunning_one_session_lets_two_views_reach_the_quorum(n, degree, threshold):
    d = Deployment(n=n, threshold=threshold, degree=degree, active=True, ids=range(n), length=32)
    victim = 2 if degree is None else 7
    # issue 14's plan on the sparse graph; on the complete graph the routing trick of passive mode
    plan = _active(passive_split_view_plan(d.config, victim)) if degree is None else split_view_plan(d.config, victim)
    extra = _signatures_from_reruns(d, plan)
    report = ReplayingServer(d.config, d.clients, extra).run(plan)
    # With reruns allowed, every quorum fills up and the victim is unmasked bit for bit.
    recovered = victim in report.recovered and np.array_equal(report.recovered[victim], d.encoded[victim])
    assert recovered, f"b_u shares: {report.b_count(victim)}, refusals: {sorted(report.refusals)}"
