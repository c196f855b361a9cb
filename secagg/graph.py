"""Neighbourhood graphs for SecAgg (complete graph) and SecAgg+ (Harary graph).

In SecAgg (Bonawitz et al., CCS 2017) every client shares its secrets with, and
agrees pairwise masks with, every other client: the *complete graph*. SecAgg+
(Bell et al., CCS 2020) replaces it with a sparse k-regular graph, so that each
client only talks to k = O(log n) neighbours and the cost per client drops from
O(n) to O(log n).

Math. Let the n client ids be placed on a circle in the order of a uniformly
random permutation ``pi``. The Harary graph H_{k,n} for even k is the circulant
graph C_n(1, ..., k/2): position i is joined to positions i +- 1, ..., i +- k/2
(mod n). For k < n - 1 the 2 * (k/2) = k offsets are pairwise distinct modulo n
and non-zero (because k/2 < n/2), so every node has exactly k neighbours, the
graph is symmetric (offset +j from i is offset -j from i + j) and has no self
loops. Because ``pi`` is uniform over all n! orderings, the open neighbourhood
N(u) of a fixed client u is a *uniformly random k-subset* of the other n - 1
clients (the clients at the k positions around u are a uniformly random ordered
selection of the others). This is what the parameter finder
(:mod:`secagg.params`) relies on: the number of corrupt (or dropped) neighbours
of a fixed client is hypergeometric. Neighbourhoods of different clients are
*not* independent, which is why the bounds there are union bounds.

Randomness. The permutation is the Fisher-Yates shuffle of the sorted ids
driven by :class:`secagg.prg.DeterministicStream` keyed with a 32-byte public
seed, so every party computes the same graph from the same seed. The seed is
public, not secret, but it must be *unpredictable to whoever chooses which
clients to corrupt*: the analysis assumes the corrupted set is fixed
independently of the permutation (static corruption). A malicious server that
can pick or grind the seed until the corrupt clients surround a victim is
outside this model; Bell et al. likewise assume honest graph generation (public
randomness, e.g. from a beacon or a commit-then-reveal among clients). Deriving
the seed is the caller's responsibility.

Both functions return the *open* neighbourhood (a client is not its own
neighbour) as ``dict[int, frozenset[int]]``.
"""

from __future__ import annotations

import numbers
from typing import Iterable

from .errors import InvalidInputError
from .prg import DeterministicStream

__all__ = ["MAX_CLIENT_ID", "SEED_BYTES", "complete_graph", "harary_graph"]

#: Client ids are integers in ``[0, MAX_CLIENT_ID)`` (they fit in 32 bits on the wire).
MAX_CLIENT_ID = 2**32
#: Length in bytes of the public seed that fixes the Harary graph's permutation.
SEED_BYTES = 32


def _validate_ids(ids: Iterable[int]) -> list[int]:
    """Return the ids sorted ascending, after checking type, range and uniqueness."""
    try:
        items = list(ids)
    except TypeError:
        raise InvalidInputError(
            f"ids must be an iterable of integers; got {type(ids).__name__}"
        ) from None
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise InvalidInputError(
                f"client ids must be integers in [0, 2**32); got {item!r} "
                f"of type {type(item).__name__}"
            )
        value = int(item)
        if not 0 <= value < MAX_CLIENT_ID:
            raise InvalidInputError(f"client ids must be integers in [0, 2**32); got {value}")
        out.append(value)
    if len(out) < 2:
        raise InvalidInputError(f"a neighbourhood graph needs at least 2 client ids; got {len(out)}")
    out.sort()
    duplicates = sorted({a for a, b in zip(out, out[1:]) if a == b})
    if duplicates:
        shown = ", ".join(str(d) for d in duplicates[:10])
        more = "" if len(duplicates) <= 10 else f" (and {len(duplicates) - 10} more)"
        raise InvalidInputError(f"client ids must be distinct; got duplicates: {shown}{more}")
    return out


def complete_graph(ids: Iterable[int]) -> dict[int, frozenset[int]]:
    """The complete graph on ``ids``: each id maps to the set of all *other* ids.

    This is the SecAgg (Bonawitz et al. 2017) setting, degree k = n - 1.
    Ids must be distinct integers in ``[0, 2**32)``, at least two of them.
    """
    sorted_ids = _validate_ids(ids)
    everyone = frozenset(sorted_ids)
    return {u: everyone - {u} for u in sorted_ids}


def harary_graph(ids: Iterable[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """The SecAgg+ graph: Harary graph H_{degree,n} over a seeded random permutation.

    The ids are sorted, permuted with ``DeterministicStream(seed).shuffle`` and
    placed on a circle in that order; each node is joined to the ``degree // 2``
    nodes on each side (the circulant graph C_n(1..degree/2)). Each node's
    neighbourhood is then a uniformly random ``degree``-subset of the other ids
    (see the module docstring for the math and for the assumption that the seed
    is unpredictable to whoever chooses which clients to corrupt).

    Args:
        ids: distinct integer client ids in ``[0, 2**32)``, at least two.
        degree: even integer >= 2, the number k of neighbours per node. If
            ``degree >= n - 1`` the complete graph is returned instead.
        seed: 32 bytes of public session randomness fixing the permutation.

    Returns:
        A symmetric, self-loop-free mapping id -> frozenset of neighbour ids in
        which every node has exactly ``degree`` neighbours (``n - 1`` for the
        complete-graph fallback).

    Raises:
        InvalidInputError: bad ids, degree or seed (the message says what was
        expected and what arrived).
    """
    sorted_ids = _validate_ids(ids)
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral):
        raise InvalidInputError(
            f"degree must be an even integer >= 2; got {degree!r} of type {type(degree).__name__}"
        )
    degree = int(degree)
    if degree < 2 or degree % 2:
        raise InvalidInputError(f"degree must be an even integer >= 2; got {degree}")
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
        length = len(seed) if hasattr(seed, "__len__") else "?"
        raise InvalidInputError(
            f"seed must be {SEED_BYTES} bytes; got {type(seed).__name__} of length {length}"
        )
    n = len(sorted_ids)
    if degree >= n - 1:
        return complete_graph(sorted_ids)

    order = DeterministicStream(bytes(seed)).shuffle(sorted_ids)
    half = degree // 2
    graph: dict[int, frozenset[int]] = {}
    for position, node in enumerate(order):
        graph[node] = frozenset(
            order[(position + offset) % n]
            for offset in range(-half, half + 1)
            if offset != 0
        )
    return {u: graph[u] for u in sorted_ids}
