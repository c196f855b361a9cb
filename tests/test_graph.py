"""Tests of secagg.graph: complete graph and seeded Harary (SecAgg+) graph."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidInputError
from secagg.graph import complete_graph, harary_graph
from secagg.prg import DeterministicStream


def seed_of(i: int) -> bytes:
    return hashlib.sha256(b"test-graph-seed-%d" % i).digest()


def assert_simple_symmetric(graph: dict[int, frozenset[int]], ids) -> None:
    assert set(graph) == set(ids)
    for u, neighbours in graph.items():
        assert isinstance(neighbours, frozenset)
        assert u not in neighbours
        assert neighbours <= set(ids)
        for v in neighbours:
            assert u in graph[v], f"edge {u}-{v} is not symmetric"


# --------------------------------------------------------------------------- complete graph


def test_complete_graph_maps_each_id_to_all_others():
    ids = [7, 3, 11, 0]
    graph = complete_graph(ids)
    assert graph == {
        0: frozenset({3, 7, 11}),
        3: frozenset({0, 7, 11}),
        7: frozenset({0, 3, 11}),
        11: frozenset({0, 3, 7}),
    }
    assert_simple_symmetric(graph, ids)


def test_complete_graph_accepts_iterators_and_numpy_ints():
    graph = complete_graph(np.uint32(i) for i in range(3))
    assert graph == {0: frozenset({1, 2}), 1: frozenset({0, 2}), 2: frozenset({0, 1})}
    assert all(type(u) is int for u in graph)


@pytest.mark.parametrize(
    "ids, fragment",
    [
        ([1], "at least 2"),
        ([], "at least 2"),
        ([1, 2, 2], "duplicates: 2"),
        ([-1, 2], "got -1"),
        ([0, 2**32], f"got {2**32}"),
        ([0, 1.0], "got 1.0"),
        ([0, True], "got True"),
        ([0, "1"], "got '1'"),
    ],
)
def test_complete_graph_rejects_bad_ids(ids, fragment):
    with pytest.raises(InvalidInputError, match="got") as info:
        complete_graph(ids)
    assert fragment in str(info.value)


def test_complete_graph_rejects_non_iterable():
    with pytest.raises(InvalidInputError, match="iterable"):
        complete_graph(5)


# --------------------------------------------------------------------------- Harary graph


@pytest.mark.parametrize("n, degree", [(5, 2), (6, 4), (10, 4), (40, 8), (101, 10), (64, 62)])
def test_harary_is_regular_symmetric_and_self_free(n, degree):
    ids = [3 * i + 1 for i in range(n)]
    graph = harary_graph(ids, degree, seed_of(0))
    assert_simple_symmetric(graph, ids)
    assert all(len(neighbours) == degree for neighbours in graph.values())
    assert sum(len(v) for v in graph.values()) == n * degree


def test_harary_matches_the_documented_construction():
    ids = [100, 5, 42, 7, 0, 13, 99, 1000, 64, 8, 31]
    degree, seed = 4, seed_of(1)
    order = DeterministicStream(seed).shuffle(sorted(ids))
    expected = {
        node: frozenset(order[(i + j) % len(ids)] for j in (-2, -1, 1, 2))
        for i, node in enumerate(order)
    }
    assert harary_graph(ids, degree, seed) == expected


def test_harary_is_deterministic_and_independent_of_input_order():
    ids = list(range(50))
    seed = seed_of(2)
    first = harary_graph(ids, 6, seed)
    assert harary_graph(list(reversed(ids)), 6, seed) == first
    assert harary_graph(iter(ids), 6, bytearray(seed)) == first
    assert list(first) == sorted(ids)


def test_harary_differs_between_seeds():
    ids = list(range(50))
    graphs = {tuple(sorted(harary_graph(ids, 4, seed_of(i))[0])) for i in range(20)}
    assert len(graphs) > 10


@pytest.mark.parametrize("n, degree", [(3, 2), (5, 4), (5, 6), (6, 6), (7, 100), (2, 2)])
def test_harary_falls_back_to_complete_graph(n, degree):
    ids = list(range(n))
    assert harary_graph(ids, degree, seed_of(3)) == complete_graph(ids)


def test_harary_with_degree_n_minus_2_misses_exactly_one_node():
    ids = list(range(12))
    graph = harary_graph(ids, 10, seed_of(4))
    assert all(len(neighbours) == 10 for neighbours in graph.values())
    # each node misses exactly its antipode, and the antipode relation is an involution
    missing = {u: (set(ids) - {u} - graph[u]).pop() for u in ids}
    assert all(missing[missing[u]] == u for u in ids)


@pytest.mark.parametrize(
    "degree, fragment",
    [(3, "got 3"), (0, "got 0"), (-2, "got -2"), (1, "got 1"), (4.0, "got 4.0"), (True, "got True"),
     ("4", "got '4'")],
)
def test_harary_rejects_bad_degree(degree, fragment):
    with pytest.raises(InvalidInputError, match="even integer >= 2") as info:
        harary_graph(range(10), degree, seed_of(0))
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "seed, fragment",
    [(b"\x00" * 31, "bytes of length 31"), (b"\x00" * 33, "bytes of length 33"),
     ("a" * 32, "str of length 32"), (None, "NoneType of length ?")],
)
def test_harary_rejects_bad_seed(seed, fragment):
    with pytest.raises(InvalidInputError, match="seed must be 32 bytes") as info:
        harary_graph(range(10), 4, seed)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "ids, fragment",
    [([1], "got 1"), ([1, 2, 3, 1], "duplicates: 1"), ([0, -5, 3], "got -5"),
     ([0, 1, 2**32 + 1], f"got {2**32 + 1}")],
)
def test_harary_rejects_bad_ids(ids, fragment):
    with pytest.raises(InvalidInputError) as info:
        harary_graph(ids, 2, seed_of(0))
    assert fragment in str(info.value)


def test_harary_accepts_extreme_ids():
    ids = [0, 2**32 - 1, 5, 6, 7]
    graph = harary_graph(ids, 2, seed_of(5))
    assert_simple_symmetric(graph, ids)


def test_harary_neighbourhood_is_a_uniform_random_subset():
    # The analysis in secagg.params rests on N(u) being a uniform k-subset of the
    # other n - 1 ids. For n = 7, k = 2 there are C(6, 2) = 15 possible subsets.
    n, degree, trials = 7, 2, 3000
    counts = Counter(harary_graph(range(n), degree, seed_of(10_000 + i))[0] for i in range(trials))
    subsets = list(itertools.combinations(range(1, n), degree))
    assert set(counts) == {frozenset(s) for s in subsets}
    expected = trials / len(subsets)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # 14 degrees of freedom: P[chi2 > 40] is about 2e-4.
    assert chi2 < 40, (chi2, counts)


@settings(max_examples=60, deadline=None)
@given(
    ids=st.sets(st.integers(0, 2**32 - 1), min_size=2, max_size=80),
    half=st.integers(1, 45),
    seed=st.binary(min_size=32, max_size=32),
)
def test_harary_properties(ids, half, seed):
    degree = 2 * half
    n = len(ids)
    graph = harary_graph(ids, degree, seed)
    assert_simple_symmetric(graph, ids)
    expected_degree = degree if degree < n - 1 else n - 1
    assert all(len(neighbours) == expected_degree for neighbours in graph.values())
    # Circulant structure: the graph has exactly n * k / 2 edges and is connected.
    assert sum(len(v) for v in graph.values()) == n * expected_degree
    start = next(iter(graph))
    seen, frontier = {start}, [start]
    while frontier:
        for v in graph[frontier.pop()]:
            if v not in seen:
                seen.add(v)
                frontier.append(v)
    assert len(seen) == n
