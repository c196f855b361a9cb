"""A hand-played malicious coordinator for attack tests (issue 14).

:class:`MaliciousServer` drives honest :class:`secagg.ClientSession` objects
with *valid wire bytes only* (every server message goes through
:func:`secagg.wire.encode`, every reply comes back through
:func:`secagg.wire.decode`), but it follows an :class:`AttackPlan` instead of
the protocol: it routes share ciphertexts unevenly, shows different clients
different survivor views, and sends each client its own unmasking request.
Whenever an honest client refuses (raises a :class:`secagg.ProtocolError`)
the refusal is recorded and the attack goes on with whoever answered.

Afterwards the server does what a real attacker would: it pools the Shamir
shares it was sent, reconstructs every secret for which it holds at least t
shares (:mod:`secagg.shamir`), and strips the masks off a masked vector with
the protocol's own key schedule and PRG (:mod:`secagg.keyschedule`,
:mod:`secagg.prg`). :class:`AttackReport` says exactly which shares arrived,
so a test can check the gathered material, not just the exceptions.

The split-view plan (:func:`split_view_plan`) is the attack of issue 14 for a
victim u: forward to u only the shares of t - 1 neighbours M_u (u masks with
just those), let everyone else receive everything; then show view
B = P minus (N(u) minus M_u) to u and M_u, and view A = P minus M_u to all
other clients. u reveals its share of b_u under B; the clients under A reveal
the other t - 1 shares of b_u and, listing M_u as dropped, t shares of each
s_sk_v, v in M_u. With today's neighbourhood-only signature count both views
are accepted on a SecAgg+ graph at t = k/2 + 1, and x_u comes out bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from secagg import ClientSession, ProtocolError, SessionConfig, shamir, wire
from secagg.crypto import x25519_public_key
from secagg.encoding import ring_dtype
from secagg.keyschedule import pairwise_mask_key, self_mask_key
from secagg.messages import (
    ConsistencyRequest,
    KeyDirectory,
    MaskedInputRequest,
    UnmaskRequest,
)
from secagg.prg import add_keystream

__all__ = ["AttackPlan", "AttackReport", "MaliciousServer", "split_view_plan", "passive_split_view_plan",
           "graph_distances"]


@dataclass(frozen=True)
class AttackPlan:
    """What the malicious coordinator shows each client.

    Attributes:
        victim: the client whose input the attack is after.
        forwarding: recipient -> the senders whose share ciphertexts it gets
            (its masking set M_w).
        consistency_views: recipient -> survivor view V_w it is asked to sign
            (active mode; empty in passive mode).
        unmask_requests: recipient -> (survivors, dropped) of its unmasking
            request. In active mode the request carries every collected
            signature over exactly that survivor set.
    """

    victim: int
    forwarding: Mapping[int, frozenset]
    consistency_views: Mapping[int, frozenset]
    unmask_requests: Mapping[int, tuple]


@dataclass
class AttackReport:
    """Everything the coordinator got out of one run of a plan."""

    threshold: int
    refusals: dict = field(default_factory=dict)  # client -> (stage, ProtocolError)
    signed: dict = field(default_factory=dict)  # client -> the view it signed
    answered: set = field(default_factory=set)  # clients that sent an UnmaskResponse
    b_shares: dict = field(default_factory=dict)  # owner -> {x: share}
    sk_shares: dict = field(default_factory=dict)  # owner -> {x: share}
    masking_sets: dict = field(default_factory=dict)  # client -> peers it masked with
    masked: dict = field(default_factory=dict)  # client -> masked vector y
    recovered: dict = field(default_factory=dict)  # client -> unmasked vector, where possible

    def b_count(self, owner: int) -> int:
        return len(self.b_shares.get(owner, {}))

    def sk_count(self, owner: int) -> int:
        return len(self.sk_shares.get(owner, {}))

    def missing_for(self, owner: int) -> list[str]:
        """Why ``owner`` cannot be unmasked (empty when it can)."""
        t = self.threshold
        missing = []
        if self.b_count(owner) < t:
            missing.append(f"b_{owner}: {self.b_count(owner)} < t shares")
        if self.sk_count(owner) < t:
            peers = [v for v in sorted(self.masking_sets.get(owner, ())) if self.sk_count(v) < t]
            if peers:
                missing.append(
                    f"s_sk_{owner}: {self.sk_count(owner)} < t shares and s_sk of masking peers {peers} "
                    f"({[self.sk_count(v) for v in peers]} shares)"
                )
        return missing


class MaliciousServer:
    """A coordinator that speaks valid wire bytes but follows an :class:`AttackPlan`."""

    def __init__(self, config: SessionConfig, clients: Mapping[int, ClientSession]) -> None:
        self.config = config
        self.clients = dict(clients)
        self._fp = config.fingerprint

    def _send(self, recipient: int, message, stage: str, report: AttackReport):
        try:
            reply = self.clients[recipient].handle(wire.encode(message))
        except ProtocolError as error:
            report.refusals[recipient] = (stage, error)
            return None
        return wire.decode(wire.encode(reply))

    def run(self, plan: AttackPlan) -> AttackReport:
        config, fp = self.config, self._fp
        report = AttackReport(threshold=config.threshold)
        adverts = {i: wire.decode(wire.encode(c.advertise())) for i, c in self.clients.items()}
        shares = {}
        for w in self.clients:
            directory = KeyDirectory(fp, w, {v: adverts[v].keys for v in config.closed_neighborhood(w)})
            reply = self._send(w, directory, "key-directory", report)
            if reply is not None:
                shares[w] = reply
        for w, senders in plan.forwarding.items():
            if w not in shares:
                continue
            routed = {v: shares[v].ciphertexts[w] for v in senders if v in shares}
            reply = self._send(w, MaskedInputRequest(fp, w, routed), "masked-input", report)
            if reply is not None:
                report.masked[w] = reply.vector.astype(ring_dtype(config.bit_width))
                report.masking_sets[w] = frozenset(routed)
        signatures = {}  # signer -> (view, signature)
        if config.active:
            for w, view in plan.consistency_views.items():
                if w not in report.masked:
                    continue
                reply = self._send(w, ConsistencyRequest(fp, w, frozenset(view)), "consistency", report)
                if reply is not None:
                    signatures[w] = (frozenset(view), reply.signature)
                    report.signed[w] = frozenset(view)
        for w, (survivors, dropped) in plan.unmask_requests.items():
            if w not in report.masked or (config.active and w not in signatures):
                continue
            sigs = {z: s for z, (view, s) in signatures.items() if view == frozenset(survivors)}
            request = UnmaskRequest(fp, w, frozenset(survivors), frozenset(dropped), sigs)
            reply = self._send(w, request, "unmask", report)
            if reply is None:
                continue
            report.answered.add(w)
            x = shamir.x_coordinate(w)
            for owner, share in reply.self_mask_shares.items():
                report.b_shares.setdefault(owner, {})[x] = share
            for owner, share in reply.key_shares.items():
                report.sk_shares.setdefault(owner, {})[x] = share
        for u in report.masked:
            vector = self._unmask(u, report, adverts)
            if vector is not None:
                report.recovered[u] = vector
        return report

    def _secret(self, shares: dict, threshold: int):
        if len(shares) < threshold:
            return None
        return shamir.reconstruct(shares, threshold)

    def _unmask(self, u: int, report: AttackReport, adverts) -> np.ndarray | None:
        """x_u = y_u - PRG(b_u) -/+ sum_v PRG(s_uv), if the pooled shares allow it."""
        t, fp = self.config.threshold, self._fp
        seed = self._secret(report.b_shares.get(u, {}), t)
        if seed is None:
            return None
        sk_u = self._secret(report.sk_shares.get(u, {}), t)
        if sk_u is not None and x25519_public_key(sk_u) != adverts[u].masking_key:
            return None
        keys = {}
        for v in report.masking_sets[u]:
            if sk_u is not None:
                keys[v] = pairwise_mask_key(fp, sk_u, adverts[v].masking_key, u, v)
                continue
            sk_v = self._secret(report.sk_shares.get(v, {}), t)
            if sk_v is None or x25519_public_key(sk_v) != adverts[v].masking_key:
                return None
            keys[v] = pairwise_mask_key(fp, sk_v, adverts[u].masking_key, v, u)
        y = report.masked[u].copy()
        scratch = np.empty_like(y)
        add_keystream(y, self_mask_key(fp, seed, u), scratch, subtract=True)
        for v, key in keys.items():
            # u added +PRG(s_uv) if u < v and -PRG(s_uv) if u > v: undo it.
            add_keystream(y, key, scratch, subtract=u < v)
        return y


def graph_distances(neighbors: Mapping[int, frozenset], source: int) -> dict[int, int]:
    """Hop distances from ``source`` (breadth-first search)."""
    distance = {source: 0}
    frontier = [source]
    while frontier:
        following = []
        for w in frontier:
            for v in sorted(neighbors[w]):
                if v not in distance:
                    distance[v] = distance[w] + 1
                    following.append(v)
        frontier = following
    return distance


def _masking_peers(config: SessionConfig, victim: int) -> frozenset:
    """The t - 1 neighbours of the victim that share the fewest neighbours with it.

    On the Harary circle these are the farthest ones (u +- k/2, ...): their own
    neighbourhoods reach furthest away from u, so the most clients outside
    N[u] hold shares of their masking keys.
    """
    closed = config.closed_neighborhood(victim)
    ranked = sorted(config.neighbors[victim], key=lambda v: (len(config.neighbors[v] & closed), v))
    return frozenset(ranked[: config.threshold - 1])


def split_view_plan(config: SessionConfig, victim: int, *, extra_b_signers: int = 0) -> AttackPlan:
    """The active-mode split-view attack of issue 14 against ``victim``.

    ``extra_b_signers`` moves that many clients farthest from the victim from
    view A to view B, to balance the two views' signer counts (against a
    global signature quorum neither half then reaches it).
    """
    neighbors, everyone = config.neighbors, frozenset(config.participants)
    masking = _masking_peers(config, victim)
    others = neighbors[victim] - masking
    forwarding = {w: neighbors[w] for w in everyone}
    forwarding[victim] = masking
    view_b, view_a = everyone - others, everyone - masking
    distance = graph_distances(neighbors, victim)
    far = sorted(everyone - masking - {victim}, key=lambda w: (-distance.get(w, len(everyone)), w))
    b_signers = {victim} | masking | set(far[:extra_b_signers])
    views = {w: view_b if w in b_signers else view_a for w in everyone}
    # Under B only the victim is asked to unmask (M_u just sign); under A everyone is.
    unmask = {w: (views[w], forwarding[w] - views[w]) for w in everyone if w == victim or w not in b_signers}
    return AttackPlan(victim, forwarding, views, unmask)


def passive_split_view_plan(config: SessionConfig, victim: int) -> AttackPlan:
    """The same routing trick without a consistency round (semi-honest mode).

    u masks with M_u only and is told the rest of N(u) is not there; each
    m in M_u is told that the *other* members of M_u dropped; everyone else is
    told that all of M_u dropped. Each honest client's request is consistent
    with what it saw, so each answers.
    """
    neighbors, everyone = config.neighbors, frozenset(config.participants)
    masking = _masking_peers(config, victim)
    others = neighbors[victim] - masking
    forwarding = {w: neighbors[w] for w in everyone}
    forwarding[victim] = masking
    unmask = {victim: (everyone - others, frozenset())}
    for w in everyone - {victim}:
        gone = masking - {w}
        unmask[w] = (everyone - gone, neighbors[w] & gone)
    return AttackPlan(victim, forwarding, {}, unmask)


def _demonstrate() -> None:
    """Replay the attack against the checked-out code and say what came out."""
    from .harness import Deployment

    for n, degree, threshold in ((20, 4, 3), (50, 8, 5)):
        d = Deployment(n=n, threshold=threshold, degree=degree, active=True, ids=range(n), length=32)
        victim = 7
        report = MaliciousServer(d.config, d.clients).run(split_view_plan(d.config, victim))
        exact = victim in report.recovered and np.array_equal(report.recovered[victim], d.encoded[victim])
        refusals = {w: f"{stage}: {type(error).__name__}" for w, (stage, error) in sorted(report.refusals.items())}
        print(f"n={n} k={degree} t={threshold}: x_u recovered bit for bit: {exact}; "
              f"b_u shares {report.b_count(victim)}; refusals {refusals or 'none'}")


if __name__ == "__main__":
    _demonstrate()
