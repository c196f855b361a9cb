"""An abstract model of what honest clients check, and a SAT search for coordinator attacks.

The model (issue 14). A session has participants P on a graph with open
neighbourhoods N(w), Shamir threshold t, a set C of corrupt clients that
collude with the coordinator, and one honest victim u. The coordinator
chooses, for every honest client w:

* M_w subset of N(w): whose share ciphertexts it forwards to w (w masks with
  exactly M_w and holds shares of exactly M_w); w masks only if |M_w| + 1 >= t;
* V_w subset of P: the one survivor view w is shown. In active mode w signs it
  (once per session) if w in V_w, V_w & N(w) subset of M_w and
  |V_w & N(w)| + 1 >= t (under the new rule also |V_w| >= Q: a smaller set
  can never collect the quorum); in passive mode the same checks, without
  the quorum, guard the unmasking;
* whether w is asked to unmask. In active mode w answers only its signed view,
  with a valid signature from every listed signer, all signers in V_w, and

  - ``rule="old"`` (the code before the fix): at least t signers in N[w];
  - ``rule="new"`` (the fix): at least Q = max(t, floor((n + c)/2) + 1) signers
    among all participants, c = the session's ``max_corrupt``.

  The unmasking request's dropped list is then forced on N(w) (it must equal
  M_w minus V_w), so an answering w reveals its b-shares of (V_w & M_w) + {w}
  and its s_sk-shares of M_w minus V_w. An honest client never reveals its own
  s_sk share. A signature of an honest z counts for w only if V_z == V_w;
  corrupt clients sign anything and reveal every share they hold.

The coordinator unmasks u iff it gets >= t shares of b_u and either >= t
shares of s_sk_u or, for every honest v in M_u, >= t shares of s_sk_v
(corrupt peers' keys it knows). :func:`search_attack` encodes exactly this as
CNF (pycosat) and returns a witness :class:`ModelPlan` or ``None``;
:func:`plan_unmasks_victim` re-checks a witness with the plain-Python
predicates below, which :mod:`tests.test_model_differential` ties to the real
:class:`secagg.ClientSession`. What the model does not
cover: leaking a *sum* of a few inputs (only one individual input is the
goal), and the choice of the graph itself (the graph is fixed and public).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping

import pycosat

__all__ = [
    "Instance",
    "ModelPlan",
    "Cnf",
    "quorum",
    "accepts_masking",
    "accepts_view",
    "accepts_unmask",
    "revealed",
    "plan_unmasks_victim",
    "search_attack",
]


def quorum(n: int, threshold: int, max_corrupt: int) -> int:
    """Q = max(t, floor((n + c)/2) + 1): two views signed by Q share > c signers."""
    return max(threshold, (n + max_corrupt) // 2 + 1)


@dataclass(frozen=True)
class Instance:
    """One session to attack: graph, threshold, corrupt set, victim, acceptance rule."""

    neighbors: Mapping[int, frozenset]
    threshold: int
    corrupt: frozenset
    victim: int
    rule: str = "new"  # "old" | "new"
    max_corrupt: int | None = None  # c in Q; defaults to |corrupt|

    @property
    def participants(self) -> frozenset:
        return frozenset(self.neighbors)

    @property
    def honest(self) -> list[int]:
        return sorted(self.participants - self.corrupt)

    @property
    def quorum(self) -> int:
        c = len(self.corrupt) if self.max_corrupt is None else self.max_corrupt
        return quorum(len(self.neighbors), self.threshold, c)

    def closed(self, w: int) -> frozenset:
        return self.neighbors[w] | {w}


# -- the honest client's checks, as plain predicates -------------------------------


def accepts_masking(inst: Instance, w: int, masking: frozenset) -> bool:
    """MaskedInputRequest: shares routed from M_w (neighbours only), |M_w| + 1 >= t."""
    return masking <= inst.neighbors[w] and len(masking) + 1 >= inst.threshold


def accepts_view(inst: Instance, w: int, masking: frozenset, view: frozenset, *, active: bool = True) -> bool:
    """ConsistencyRequest (active), or the survivor part of a passive UnmaskRequest."""
    near = view & inst.neighbors[w]
    if active and inst.rule == "new" and len(view) < inst.quorum:
        return False
    return w in view and view <= inst.participants and near <= masking and len(near) + 1 >= inst.threshold


def accepts_unmask(inst: Instance, w: int, masking: frozenset, signed: frozenset | None, view: frozenset,
                   dropped: frozenset, signatures: Mapping[int, bool], *, active: bool = True) -> bool:
    """UnmaskRequest: ``signatures`` maps each listed signer to whether its signature verifies."""
    if dropped & view or not dropped <= inst.participants or w in dropped:
        return False
    if not accepts_view(inst, w, masking, view, active=active):
        return False
    if (view | dropped) & inst.neighbors[w] != masking:
        return False
    if not active:
        return True
    if signed is None or view != signed:
        return False
    if not set(signatures) <= view:
        return False
    if inst.rule == "old":
        counted = [z for z in signatures if z in inst.closed(w)]
        return all(signatures[z] for z in counted) and len(counted) >= inst.threshold
    return all(signatures.values()) and len(signatures) >= inst.quorum


def revealed(w: int, masking: frozenset, view: frozenset) -> tuple[frozenset, frozenset]:
    """(owners of the b-shares, owners of the s_sk-shares) an accepting w sends."""
    return (view & masking) | {w}, masking - view


# -- a witness and its independent check --------------------------------------------


@dataclass(frozen=True)
class ModelPlan:
    """A coordinator strategy in the model: M_w, V_w, who signs, who answers (honest w only)."""

    masking: Mapping[int, frozenset]
    views: Mapping[int, frozenset]
    signers: frozenset
    answerers: frozenset


def plan_unmasks_victim(inst: Instance, plan: ModelPlan, *, active: bool = True) -> bool:
    """Re-check a plan with the plain predicates: every honest step is accepted and u is unmasked."""
    t, u, corrupt = inst.threshold, inst.victim, inst.corrupt
    masking, views = plan.masking, plan.views
    for w in plan.signers | plan.answerers | {u}:
        if not accepts_masking(inst, w, masking[w]):
            return False
    if active:
        for w in plan.signers:
            if not accepts_view(inst, w, masking[w], views[w]):
                return False
    b_holders, sk_holders = set(), {}
    for w in plan.answerers:
        if active and w not in plan.signers:
            return False
        signatures = {z: True for z in corrupt if z in views[w]}
        if active:
            signatures.update({z: True for z in plan.signers if views[z] == views[w]})
        dropped = masking[w] - views[w]
        if not accepts_unmask(inst, w, masking[w], views[w] if active else None, views[w], dropped,
                              signatures, active=active):
            return False
        b_owners, sk_owners = revealed(w, masking[w], views[w])
        if u in b_owners:
            b_holders.add(w)
        for v in sk_owners:
            sk_holders.setdefault(v, set()).add(w)
    b_holders |= corrupt & inst.closed(u)
    if len(b_holders) < t:
        return False

    def key_known(v: int) -> bool:
        return v in corrupt or len(sk_holders.get(v, set()) | (corrupt & inst.neighbors[v])) >= t

    return key_known(u) or all(key_known(v) for v in masking[u])


# -- the SAT encoding ----------------------------------------------------------------


class Cnf:
    def __init__(self) -> None:
        self.count = 0
        self.clauses: list[list[int]] = []
        self.true = self.new()
        self.clauses.append([self.true])

    def new(self) -> int:
        self.count += 1
        return self.count

    def implies_all(self, a: int, bs) -> None:
        for b in bs:
            self.clauses.append([-a, b])

    def at_least(self, literals: list[int], k: int) -> int:
        """A literal g with g -> (at least k of ``literals`` are true) (sequential counter)."""
        if k <= 0:
            return self.true
        if k > len(literals):
            return -self.true
        previous = [self.true] + [-self.true] * k  # R[0][j]
        for i, lit in enumerate(literals, start=1):
            row = [self.true]
            for j in range(1, k + 1):
                if j > i:
                    row.append(-self.true)
                    continue
                r = self.new()
                self.clauses.append([-r, previous[j], lit])
                self.clauses.append([-r, previous[j], previous[j - 1]])
                row.append(r)
            previous = row
        return previous[k]


def search_attack(inst: Instance, *, active: bool = True) -> ModelPlan | None:
    """A coordinator strategy that unmasks the victim in the model, or ``None`` if none exists."""
    cnf = Cnf()
    t, u = inst.threshold, inst.victim
    honest = inst.honest
    corrupt = inst.corrupt
    people = sorted(inst.participants)
    if u in corrupt:
        raise ValueError("the victim must be honest")
    nb = inst.neighbors
    r = {(w, v): cnf.new() for w in honest for v in sorted(nb[w])}  # v in M_w
    m = {w: cnf.new() for w in honest}  # w sent its masked input
    x = {(w, z): cnf.new() for w in honest for z in people}  # z in V_w
    s = {w: cnf.new() for w in honest}  # w signed V_w (active)
    a = {w: cnf.new() for w in honest}  # w answered the unmasking request
    for w in honest:
        # masking: |M_w| + 1 >= t
        cnf.clauses.append([-m[w], cnf.at_least([r[w, v] for v in sorted(nb[w])], t - 1)])
        gate = s[w] if active else a[w]  # who checks the view
        cnf.implies_all(gate, [m[w], x[w, w]])
        cnf.implies_all(a[w], [m[w], x[w, w]] + ([s[w]] if active else []))
        for z in sorted(nb[w]):
            cnf.clauses.append([-gate, -x[w, z], r[w, z]])
        cnf.clauses.append([-gate, cnf.at_least([x[w, z] for z in sorted(nb[w])], t - 1)])
        if active and inst.rule == "new":
            cnf.clauses.append([-gate, cnf.at_least([x[w, z] for z in people], inst.quorum)])
    if active:
        equal = {}
        for z, w in itertools.permutations(honest, 2):
            e = cnf.new()  # e -> V_z == V_w
            for i in people:
                cnf.clauses.append([-e, -x[z, i], x[w, i]])
                cnf.clauses.append([-e, x[z, i], -x[w, i]])
            equal[z, w] = e
        for w in honest:
            pool = sorted(inst.closed(w)) if inst.rule == "old" else people
            need = t if inst.rule == "old" else inst.quorum
            valid = []
            for z in pool:
                if z == w:
                    valid.append(s[w])
                elif z in corrupt:
                    valid.append(x[w, z])
                else:
                    v = cnf.new()
                    cnf.implies_all(v, [s[z], equal[z, w], x[w, z]])
                    valid.append(v)
            cnf.clauses.append([-a[w], cnf.at_least(valid, need)])
    # goal: b_u
    b_lits = []
    for h in sorted(nb[u] - corrupt):
        q = cnf.new()
        cnf.implies_all(q, [a[h], x[h, u], r[h, u]])
        b_lits.append(q)
    b_lits.append(a[u])
    cnf.clauses.append([m[u]])
    cnf.clauses.append([cnf.at_least(b_lits, t - len(nb[u] & corrupt))])

    def key_known(v: int) -> int:
        lits = []
        for h in sorted(nb[v] - corrupt - {v}):
            p = cnf.new()
            cnf.implies_all(p, [a[h], -x[h, v], r[h, v]])
            lits.append(p)
        return cnf.at_least(lits, t - len(nb[v] & corrupt))

    via_u = key_known(u)
    via_peers = cnf.new()
    for v in sorted(nb[u] - corrupt):
        cnf.clauses.append([-via_peers, -r[u, v], key_known(v)])
    cnf.clauses.append([via_u, via_peers])
    solution = pycosat.solve(cnf.clauses)
    if solution == "UNSAT":
        return None
    true = {lit for lit in solution if lit > 0}
    return ModelPlan(
        masking={w: frozenset(v for v in nb[w] if r[w, v] in true) for w in honest},
        views={w: frozenset(z for z in people if x[w, z] in true) for w in honest},
        signers=frozenset(w for w in honest if active and s[w] in true),
        answerers=frozenset(w for w in honest if a[w] in true),
    )
