"""SAT search over every coordinator strategy of the split-view kind, on small sessions.

The model and its CNF encoding are in :mod:`tests.attack_model`: the
coordinator picks, per honest client, whose shares it forwards (the masking
set), the one survivor view it shows, whether it asks for a signature and for
an unmasking; the honest clients apply exactly the checks of
:class:`secagg.ClientSession`; corrupt clients sign anything and reveal every
share they hold. The goal is one honest victim's input: t shares of b_u and
t shares of s_sk_u or of every honest masking peer's key.

What this file proves, for n <= 12, Harary graphs of degree k in {2, 4, 6}
(built with :func:`secagg.graph.harary_graph`; a circulant graph is
vertex-transitive, so one victim stands for all) and the complete graph
(n <= 8), every valid threshold t:

* with the *old* acceptance rule (t signatures counted inside N[w]) the
  search finds the split-view attack with no corrupt client at all
  (n >= 8, t = k/2 + 1), and every witness needs two different signed views;
* with the *new* rule (Q = max(t, floor((n + c)/2) + 1) signatures from
  anywhere) it finds no attack for any corrupt set C (|C| <= 2 by default,
  |C| = 3 in the slow sweep) that leaves the victim fewer than
  c_min = min(2t - (k+1), t - 1) corrupt neighbours, the bound of
  :mod:`secagg.params`;
* that bound is tight on Harary graphs: with exactly c_min corrupt neighbours
  an attack exists for every such corrupt set. (At t = k + 1 that is c_min = k:
  a victim whose every neighbour is corrupt is unmasked by an honest run, so
  the bare 2t - (k+1) would be wrong there.)
* on the complete graph the bound is not tight: c = 2t - n colluders (which
  SessionConfig refuses in active mode) still cannot unmask anyone, c = 2t - n + 1 can;
* the quorum is only as good as ``max_corrupt``: one colluder more than
  declared, anywhere in the graph (not near the victim), unmasks the victim
  when n + c is odd (two signed views may then overlap in c + 1 signers);
* passive mode has no such defence: on the complete graph n = 5, t = 3 the
  search finds the routing trick (replayed on real sessions in
  :mod:`tests.test_split_view_attack`).

Every witness the solver returns is re-checked with the plain-Python
predicates (:func:`tests.attack_model.plan_unmasks_victim`), which
:mod:`tests.test_model_differential` ties to the real client code.
"""

from __future__ import annotations

import itertools

import pycosat
import pytest

from secagg.graph import complete_graph, harary_graph

from .attack_model import Instance, Cnf, plan_unmasks_victim, search_attack

SEED = bytes(32)
VICTIM = 0


def _graph(n: int, degree: int | None) -> dict:
    if degree is None:
        return complete_graph(range(n))
    return harary_graph(range(n), degree, SEED)


def c_min(degree: int, threshold: int) -> int:
    """Fewest corrupt neighbours of u with which a malicious coordinator may unmask u."""
    return min(2 * threshold - (degree + 1), threshold - 1)


def _settings(ns=range(5, 13)):
    for n in ns:
        for degree in (2, 4, 6, None):
            if degree is not None and degree >= n - 1:
                continue
            if degree is None and n > 8:
                continue
            k = n - 1 if degree is None else degree
            for threshold in range(k // 2 + 1, k + 2):
                yield n, degree, k, threshold


def _within_bound(sizes):
    for n, degree, k, threshold in _settings():
        graph = _graph(n, degree)
        for size in sizes:
            for corrupt in itertools.combinations(sorted(set(graph) - {VICTIM}), size):
                corrupt = frozenset(corrupt)
                if len(corrupt & graph[VICTIM]) < c_min(k, threshold):
                    yield Instance(graph, threshold, corrupt, VICTIM, rule="new")


def _describe(inst: Instance, witness) -> str:
    return (f"n={len(inst.neighbors)} t={inst.threshold} corrupt={sorted(inst.corrupt)} "
            f"masking={dict(witness.masking)} views={dict(witness.views)} answerers={sorted(witness.answerers)}")


def test_cardinality_encoding_is_exact():
    """g from at_least(lits, k) is satisfiable together with an assignment iff >= k lits are true."""
    for size, k in itertools.product(range(0, 5), range(0, 6)):
        for bits in itertools.product((False, True), repeat=size):
            cnf = Cnf()
            lits = [cnf.new() for _ in range(size)]
            gate = cnf.at_least(lits, k)
            units = [[lit if bit else -lit] for lit, bit in zip(lits, bits)]
            sat = pycosat.solve(cnf.clauses + units + [[gate]]) != "UNSAT"
            assert sat == (sum(bits) >= k), (size, k, bits)


@pytest.mark.parametrize("n, degree, threshold", [(8, 4, 3), (10, 4, 3), (12, 4, 3), (12, 6, 4)])
def test_old_rule_search_finds_the_split_view_attack_without_colluders(n, degree, threshold):
    graph = _graph(n, degree)
    old = Instance(graph, threshold, frozenset(), VICTIM, rule="old")
    witness = search_attack(old)
    assert witness is not None
    assert plan_unmasks_victim(old, witness)
    # It needs two different signed survivor sets among those who answer ...
    assert len({witness.views[w] for w in witness.answerers}) >= 2
    # ... which is exactly what the global quorum forbids.
    assert not plan_unmasks_victim(Instance(graph, threshold, frozenset(), VICTIM, rule="new"), witness)


@pytest.mark.parametrize("n, threshold", [(5, 3), (7, 4)])
def test_old_rule_already_held_on_the_complete_graph(n, threshold):
    """On the complete graph N[w] is everyone, so t > n/2 signers already meant one view."""
    assert search_attack(Instance(_graph(n, None), threshold, frozenset(), VICTIM, rule="old")) is None


def test_passive_mode_search_finds_the_routing_trick_on_the_complete_graph():
    inst = Instance(_graph(5, None), 3, frozenset(), VICTIM, rule="new")
    witness = search_attack(inst, active=False)
    assert witness is not None and plan_unmasks_victim(inst, witness, active=False)


def _assert_no_attack(instances) -> int:
    count = 0
    for inst in instances:
        witness = search_attack(inst)
        assert witness is None, "attack within the bound: " + _describe(inst, witness)
        count += 1
    return count


def test_new_rule_search_finds_no_attack_within_the_bound():
    """Every setting of _settings() with |C| <= 2 corrupt clients (about 2,000 instances)."""
    assert _assert_no_attack(_within_bound(sizes=(0, 1, 2))) > 1500


@pytest.mark.slow
def test_new_rule_search_finds_no_attack_within_the_bound_with_three_colluders():
    """The same sweep with |C| = 3 (about 3,000 more instances)."""
    assert _assert_no_attack(_within_bound(sizes=(3,))) > 2500


@pytest.mark.parametrize("n, degree", [(8, 2), (8, 4), (10, 4), (10, 6), (12, 6)])
def test_the_bound_is_tight_on_harary_graphs(n, degree):
    """With exactly c_min corrupt neighbours of u, every such corrupt set unmasks u (new rule)."""
    graph = _graph(n, degree)
    for threshold in range(degree // 2 + 1, degree + 2):
        bound = c_min(degree, threshold)
        for corrupt in itertools.combinations(sorted(graph[VICTIM]), bound):
            inst = Instance(graph, threshold, frozenset(corrupt), VICTIM, rule="new")
            witness = search_attack(inst)
            assert witness is not None, (n, degree, threshold, corrupt)
            assert plan_unmasks_victim(inst, witness)


def test_every_neighbour_corrupt_unmasks_the_victim_without_any_lie():
    """At t = k + 1 the bare 2t - (k+1) = k + 1 would call c_u = k safe; it is not.

    The witness is an honest-looking run: the victim masks with its (corrupt)
    neighbours, answers one view, and its b_u share plus k corrupt shares
    reach t. This is why c_min is min(2t - (k+1), t - 1) and why
    :mod:`secagg.params` also bounds the honest subgraph's disconnection.
    """
    graph = _graph(8, 4)
    inst = Instance(graph, 5, frozenset(graph[VICTIM]), VICTIM, rule="new")
    witness = search_attack(inst)
    assert witness is not None and plan_unmasks_victim(inst, witness)
    assert len({witness.views[w] for w in witness.answerers}) == 1


@pytest.mark.parametrize("n", [9, 11])
def test_one_undeclared_colluder_far_from_the_victim_breaks_the_quorum_when_n_plus_c_is_odd(n):
    """max_corrupt = 0 but one client outside N[u] colludes: 2Q - n = 1 signer may be it."""
    graph = _graph(n, 4)
    far = sorted(set(graph) - graph[VICTIM] - {VICTIM})
    broken = []
    for colluder in far:
        inst = Instance(graph, 3, frozenset({colluder}), VICTIM, rule="new", max_corrupt=0)
        witness = search_attack(inst)
        if witness is not None:
            assert plan_unmasks_victim(inst, witness)
            broken.append(colluder)
        # Declaring it (max_corrupt = 1) restores the guarantee.
        assert search_attack(Instance(graph, 3, frozenset({colluder}), VICTIM, rule="new", max_corrupt=1)) is None
    assert broken


@pytest.mark.parametrize("n, threshold", [(5, 3), (6, 4), (7, 4)])
def test_complete_graph_tolerates_c_equal_to_2t_minus_n_and_not_one_more(n, threshold):
    """On the complete graph the quorum needs the victim's own signature at c = 2t - n.

    SessionConfig asks for 2t - n > c in active mode; the model shows that this
    is one colluder conservative (c = 2t - n is still safe) and that c = 2t - n + 1
    is not. Every corrupt set of a given size is equivalent on the complete graph.
    """
    graph = _graph(n, None)
    others = sorted(set(graph) - {VICTIM})
    safe = 2 * threshold - n
    assert search_attack(Instance(graph, threshold, frozenset(others[:safe]), VICTIM, rule="new")) is None
    inst = Instance(graph, threshold, frozenset(others[: safe + 1]), VICTIM, rule="new")
    witness = search_attack(inst)
    assert witness is not None and plan_unmasks_victim(inst, witness)
