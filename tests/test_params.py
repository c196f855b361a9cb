"""Tests of secagg.params: exact hypergeometric tails, failure bounds, parameter search."""

from __future__ import annotations

import hashlib
import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from secagg.errors import InfeasibleParametersError, InvalidInputError
from secagg.graph import harary_graph
from secagg.params import Parameters, failure_bounds, find_parameters, hypergeometric_tail

# --------------------------------------------------------------------------- reference model
# An independent, deliberately naive transcription of the bounds documented in
# secagg/params.py (direct sums of math.comb, no recurrence, no caching).


def ref_tail(population: int, successes: int, draws: int, at_least: int) -> Fraction:
    top = min(successes, draws)
    numerator = sum(
        math.comb(successes, x) * math.comb(population - successes, draws - x)
        for x in range(max(at_least, 0), top + 1)
    )
    return Fraction(numerator, math.comb(population, draws))


def ref_security(n, k, t, C, D, malicious) -> Fraction:
    # malicious: u answers (X >= t - 1) or stays silent (X >= 2t - (k+1)), whichever needs fewer
    c_min = min(2 * t - (k + 1), t - 1) if malicious else t
    bound = n * ref_tail(n - 1, C, k, c_min)
    if k < n - 1:
        h, R = k // 2, min(n, C + D)
        bound += n * Fraction(math.comb(R, h), math.comb(n, h))
    return bound


def ref_correctness(n, k, t, D, C=0, malicious=False) -> Fraction:
    if malicious and max(t, (n + C) // 2 + 1) > n - D:
        return Fraction(1)  # the consistency quorum is out of the survivors' reach
    bound = (n - D) * ref_tail(n - 1, D, k, k + 2 - t)
    if D:
        bound += D * ref_tail(n - 1, D - 1, k, k + 1 - t)
    return bound


def round_up(value: Fraction) -> float:
    if value >= 1:
        return 1.0
    f = float(value)
    return f if Fraction(f) >= value else math.nextafter(f, math.inf)


def ref_search(n, cf: Fraction, df: Fraction, sec_bits, corr_bits, malicious):
    """The documented search, by brute force over every (k, t); None if infeasible."""
    C, D = math.ceil(cf * n), math.ceil(df * n)
    sec_target, corr_target = Fraction(1, 2**sec_bits), Fraction(1, 2**corr_bits)
    for k in [*range(2, n - 1, 2), n - 1]:
        for t in range((k + 1) // 2 + 1, k + 2):
            if ref_security(n, k, t, C, D, malicious) <= sec_target:
                if ref_correctness(n, k, t, D, C, malicious) <= corr_target:
                    return k, t
                break  # the smallest secure t failed correctness; larger t only worse
    return None


# --------------------------------------------------------------------------- hypergeometric tails


@pytest.mark.parametrize("population, successes, draws", [(6, 2, 3), (7, 3, 4), (8, 5, 5), (5, 0, 2), (5, 5, 3)])
def test_tail_matches_enumeration(population, successes, draws):
    marked = set(range(successes))
    samples = [len(marked.intersection(c)) for c in itertools.combinations(range(population), draws)]
    for at_least in range(-1, draws + 3):
        expected = Fraction(sum(x >= at_least for x in samples), len(samples))
        assert hypergeometric_tail(population, successes, draws, at_least) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda N: st.tuples(
    st.just(N), st.integers(0, N), st.integers(0, N), st.integers(-2, N + 2))))
def test_tail_matches_direct_sum(args):
    population, successes, draws, at_least = args
    assert hypergeometric_tail(population, successes, draws, at_least) == ref_tail(*args)


@pytest.mark.parametrize(
    "population, successes, draws, at_least",
    [(39, 8, 8, 5), (999, 50, 30, 17), (999, 100, 44, 26), (9999, 500, 34, 20),
     (9999, 3334, 124, 87), (9999, 1000, 52, 30), (99, 33, 60, 35), (9999, 500, 34, 30)],
)
def test_tail_matches_scipy(population, successes, draws, at_least):
    stats = pytest.importorskip("scipy.stats")
    exact = hypergeometric_tail(population, successes, draws, at_least)
    theirs = stats.hypergeom.sf(at_least - 1, population, successes, draws)
    assert float(exact) == pytest.approx(theirs, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    "args", [(5, 6, 2, 1), (5, 2, 6, 1), (-1, 0, 0, 0), (5, 2, 2, 1.5), (5.0, 2, 2, 1), (5, True, 2, 1)]
)
def test_tail_rejects_bad_arguments(args):
    with pytest.raises(InvalidInputError, match="got"):
        hypergeometric_tail(*args)


# --------------------------------------------------------------------------- failure_bounds


@st.composite
def settings_strategy(draw, max_n=120):
    n = draw(st.integers(3, max_n))
    complete = draw(st.booleans()) or n <= 3
    k = n - 1 if complete else 2 * draw(st.integers(1, (n - 2) // 2))
    t = draw(st.integers((k + 1) // 2 + 1, k + 1))
    cf = Fraction(draw(st.integers(0, 45)), 100)
    df = Fraction(draw(st.integers(0, 45)), 100)
    return n, k, t, cf, df, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(settings_strategy())
def test_failure_bounds_are_the_documented_bounds_rounded_up(setting):
    n, k, t, cf, df, malicious = setting
    C, D = math.ceil(cf * n), math.ceil(df * n)
    security, correctness = failure_bounds(
        n, k, t, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious)
    assert security == round_up(ref_security(n, k, t, C, D, malicious))
    assert correctness == round_up(ref_correctness(n, k, t, D, C, malicious))
    # valid upper bounds: never below the exact rational value (unless capped at 1)
    assert Fraction(security) >= min(1, ref_security(n, k, t, C, D, malicious))
    assert Fraction(correctness) >= min(1, ref_correctness(n, k, t, D, C, malicious))


def test_failure_bounds_complete_graph_is_exact_threshold_logic():
    # k = n - 1: X = C, Y = D exactly. n = 10, t = 6.
    assert failure_bounds(10, 9, 6, corrupt_fraction=0.5, dropout_fraction=0.4) == (0.0, 0.0)
    assert failure_bounds(10, 9, 6, corrupt_fraction=0.6, dropout_fraction=0.0)[0] == 1.0
    assert failure_bounds(10, 9, 6, corrupt_fraction=0.0, dropout_fraction=0.5)[1] == 1.0
    # malicious: needs 2t - n > C, i.e. C < 2 for t = 6
    assert failure_bounds(10, 9, 6, corrupt_fraction=0.1, dropout_fraction=0, malicious=True)[0] == 0.0
    assert failure_bounds(10, 9, 6, corrupt_fraction=0.2, dropout_fraction=0, malicious=True)[0] == 1.0


def test_dropped_clients_get_their_own_correctness_term():
    # Counting a dropped client as alive in its own neighbourhood would give
    # n * P[Y > k + 1 - t]; the documented bound is larger (and is the valid one).
    n, k, t, D = 40, 8, 5, 8
    naive = n * ref_tail(n - 1, D, k, k + 2 - t)
    _, correctness = failure_bounds(n, k, t, corrupt_fraction=0, dropout_fraction=Fraction(D, n))
    assert correctness > float(naive)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=1, degree=1, threshold=1), "n must be an integer >= 2; got 1"),
        (dict(n=10, degree=3, threshold=3), "got 3"),
        (dict(n=10, degree=9, threshold=5), "t in [6, 10]"),
        (dict(n=10, degree=4, threshold=6), "got 6"),
        (dict(n=10, degree=10, threshold=6), "got 10"),
    ],
)
def test_failure_bounds_rejects_bad_shapes(kwargs, fragment):
    with pytest.raises(InvalidInputError) as info:
        failure_bounds(**kwargs, corrupt_fraction=0.1, dropout_fraction=0.1)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- find_parameters

SEC_TARGET, CORR_TARGET = 2.0**-40, 2.0**-20

# Regression table (semi-honest, default 2^-40 / 2^-20). Change only together
# with the documented bounds in secagg/params.py.
TABLE = {
    (100, 0.05, 0.05): (22, 12),
    (100, 0.1, 0.1): (32, 17),
    (100, 1 / 3, 0.1): (60, 35),
    (1000, 0.05, 0.05): (30, 17),
    (1000, 0.1, 0.1): (44, 26),
    (1000, 1 / 3, 0.1): (100, 71),
    (10000, 0.05, 0.05): (34, 20),
    (10000, 0.1, 0.1): (52, 30),
    (10000, 1 / 3, 0.1): (124, 87),
}


def check_parameters(p: Parameters, n, cf, df, malicious=False, sec=SEC_TARGET, corr=CORR_TARGET):
    assert (p.n, p.malicious) == (n, malicious)
    assert p.security_failure <= sec and p.correctness_failure <= corr
    assert (p.degree + 1) / 2 < p.threshold <= p.degree + 1
    assert p.complete == (p.degree == n - 1)
    if not p.complete:
        assert p.degree % 2 == 0 and 2 <= p.degree < n - 1
    assert failure_bounds(n, p.degree, p.threshold, corrupt_fraction=cf, dropout_fraction=df,
                          malicious=malicious) == (p.security_failure, p.correctness_failure)


@pytest.mark.parametrize("key", list(TABLE))
def test_known_parameters(key):
    n, cf, df = key
    p = find_parameters(n, corrupt_fraction=cf, dropout_fraction=df)
    print(p.describe())
    check_parameters(p, n, cf, df)
    assert (p.degree, p.threshold) == TABLE[key]


def test_n1000_is_much_sparser_than_complete():
    p = find_parameters(1000, corrupt_fraction=0.05, dropout_fraction=0.05)
    print(p)
    assert p.degree <= 64 < 999
    assert not p.complete


def test_malicious_parameters_meet_targets():
    for n in (100, 1000, 10000):
        for cf, df in ((0.05, 0.05), (0.1, 0.1), (1 / 3, 0.1)):
            p = find_parameters(n, corrupt_fraction=cf, dropout_fraction=df, malicious=True)
            check_parameters(p, n, cf, df, malicious=True)
            semi = find_parameters(n, corrupt_fraction=cf, dropout_fraction=df)
            assert p.degree >= semi.degree


def test_large_n_has_parameters():
    # Its speed is measured in benchmarks/test_bench_params.py, not asserted here.
    for cf, df in ((0.05, 0.05), (0.1, 0.1), (1 / 3, 0.1)):
        for malicious in (False, True):
            p = find_parameters(10_000, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious)
            check_parameters(p, 10_000, cf, df, malicious=malicious)


def test_threshold_is_the_smallest_secure_one_and_k_the_smallest():
    for n, cf, df, malicious in [(200, 0.1, 0.1, False), (300, 0.2, 0.15, True), (500, 0.05, 0.2, False)]:
        p = find_parameters(n, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious)
        check_parameters(p, n, cf, df, malicious)

        def bounds(k, t):
            return failure_bounds(n, k, t, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious)

        for t in range((p.degree + 1) // 2 + 1, p.threshold):
            assert bounds(p.degree, t)[0] > SEC_TARGET
        for k in range(2, p.degree, 2):
            secure = [t for t in range((k + 1) // 2 + 1, k + 2) if bounds(k, t)[0] <= SEC_TARGET]
            assert not secure or bounds(k, secure[0])[1] > CORR_TARGET


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 36),
    cf=st.integers(0, 40).map(lambda i: Fraction(i, 100)),
    df=st.integers(0, 40).map(lambda i: Fraction(i, 100)),
    sec_bits=st.sampled_from([4, 10, 20, 40]),
    corr_bits=st.sampled_from([2, 5, 10, 20]),
    malicious=st.booleans(),
)
def test_search_agrees_with_brute_force(n, cf, df, sec_bits, corr_bits, malicious):
    C, D = math.ceil(cf * n), math.ceil(df * n)
    assume(C < n and D < n and C + D <= n)
    expected = ref_search(n, cf, df, sec_bits, corr_bits, malicious)
    kwargs = dict(corrupt_fraction=cf, dropout_fraction=df, security_bits=sec_bits,
                  correctness_bits=corr_bits, malicious=malicious)
    if expected is None:
        with pytest.raises(InfeasibleParametersError):
            find_parameters(n, **kwargs)
    else:
        p = find_parameters(n, **kwargs)
        assert (p.degree, p.threshold) == expected
        check_parameters(p, n, cf, df, malicious, 2.0**-sec_bits, 2.0**-corr_bits)


@pytest.mark.parametrize("n", [100, 1000])
@pytest.mark.parametrize("malicious", [False, True])
def test_more_corruption_or_dropout_never_gives_smaller_degree(n, malicious):
    grid = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25]
    for df in (0.0, 0.1):
        degrees = [find_parameters(n, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious).degree
                   for cf in grid]
        assert degrees == sorted(degrees), degrees
    for cf in (0.0, 0.1):
        degrees = [find_parameters(n, corrupt_fraction=cf, dropout_fraction=df, malicious=malicious).degree
                   for df in grid]
        assert degrees == sorted(degrees), degrees


def test_stricter_targets_never_give_smaller_degree():
    degrees = [find_parameters(1000, corrupt_fraction=0.1, dropout_fraction=0.1, security_bits=b).degree
               for b in (20, 30, 40, 60, 80)]
    assert degrees == sorted(degrees)
    degrees = [find_parameters(1000, corrupt_fraction=0.1, dropout_fraction=0.1, correctness_bits=b).degree
               for b in (5, 10, 20, 30, 40)]
    assert degrees == sorted(degrees)


def test_small_consortia_use_the_complete_graph():
    p = find_parameters(5, corrupt_fraction=0.2, dropout_fraction=0.2)
    assert p.complete and p.degree == 4 and p.threshold == 3
    p = find_parameters(2, corrupt_fraction=0, dropout_fraction=0)
    assert p.complete and (p.degree, p.threshold) == (1, 2)


def test_fractions_are_read_as_decimals():
    # 0.1 * 100 is exactly 10 clients, not 11 (Fraction(0.1) is slightly above 1/10).
    p = find_parameters(100, corrupt_fraction=0.1, dropout_fraction=0.1)
    assert (p.corrupt_count, p.dropout_count) == (10, 10)
    q = find_parameters(300, corrupt_fraction=Fraction(1, 3), dropout_fraction=0.1)
    r = find_parameters(300, corrupt_fraction=1 / 3, dropout_fraction=0.1)
    assert q.corrupt_count == r.corrupt_count == 100
    assert (q.degree, q.threshold) == (r.degree, r.threshold)


# --------------------------------------------------------------------------- infeasible settings


def test_infeasible_dropout_explains_itself():
    with pytest.raises(InfeasibleParametersError) as info:
        find_parameters(50, corrupt_fraction=0.1, dropout_fraction=0.55)
    message = str(info.value)
    print(message)
    for fragment in ("n=50", "C=5", "D=28", "2^-40", "2^-20", "correctness bound fails", "no guarantee",
                     "t <= n - D = 22", "Lower dropout_fraction", "dropout_fraction < 1/2"):
        assert fragment in message


def test_infeasible_malicious_large_n():
    with pytest.raises(InfeasibleParametersError) as info:
        find_parameters(2000, corrupt_fraction=0.3, dropout_fraction=0.36, malicious=True)
    message = str(info.value)
    assert "malicious" in message and "corrupt_fraction + 2 * dropout_fraction < 1" in message


@pytest.mark.parametrize(
    "n, cf, df, fragment",
    [(10, 0.6, 0.5, "C + D = 11 exceeds n"), (10, 0.95, 0.0, "no honest client"),
     (10, 0.0, 0.95, "no surviving client"), (5, 0.0, 0.5, "t <= n - D = 2")],
)
def test_infeasible_counts(n, cf, df, fragment):
    with pytest.raises(InfeasibleParametersError) as info:
        find_parameters(n, corrupt_fraction=cf, dropout_fraction=df)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=1), "n must be an integer >= 2; got 1"),
        (dict(n=10.0), "got 10.0 of type float"),
        (dict(n=True), "got True"),
        (dict(corrupt_fraction=-0.1), "corrupt_fraction must be a real number in [0, 1); got -0.1"),
        (dict(corrupt_fraction=1.0), "got 1.0"),
        (dict(dropout_fraction=float("nan")), "got nan"),
        (dict(dropout_fraction="0.1"), "got '0.1' of type str"),
        (dict(security_bits=0), "security_bits must be a positive number of bits, at most 1000; got 0"),
        (dict(security_bits=10**9), "got 1000000000"),
        (dict(correctness_bits=-3.5), "got -3.5"),
        (dict(security_bits=float("inf")), "got inf"),
        (dict(malicious="yes"), "malicious must be a bool; got 'yes'"),
    ],
)
def test_find_parameters_rejects_bad_inputs(kwargs, fragment):
    arguments = dict(n=100, corrupt_fraction=0.1, dropout_fraction=0.1) | kwargs
    with pytest.raises(InvalidInputError) as info:
        find_parameters(**arguments)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- Parameters


def test_parameters_is_frozen_and_describes_itself():
    p = find_parameters(1000, corrupt_fraction=0.05, dropout_fraction=0.05)
    with pytest.raises(AttributeError):
        p.degree = 4  # type: ignore[misc]
    text = p.describe()
    for fragment in ("SecAgg+", "n=1000", f"k={p.degree}", f"t={p.threshold}", "semi-honest",
                     "50 corrupt", "50 dropped", "security failure <= 2^-40", "correctness failure <= 2^-"):
        assert fragment in text
    assert p.neighbourhood_size == p.degree + 1


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(degree=5), "got 5"),
        (dict(threshold=5), "got 5"),
        (dict(complete=True), "complete must be False"),
        (dict(security_failure=1.5), "security_failure must be a probability"),
        (dict(corrupt_fraction=1.2), "got 1.2"),
        (dict(malicious=None), "malicious must be a bool"),
    ],
)
def test_parameters_validates_itself(changes, fragment):
    fields = dict(n=100, degree=22, threshold=12, complete=False, corrupt_fraction=0.05,
                  dropout_fraction=0.05, security_failure=0.0, correctness_failure=0.0,
                  malicious=False)
    Parameters(**fields)  # the unchanged fields are valid
    with pytest.raises(InvalidInputError) as info:
        Parameters(**(fields | changes))
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- Monte Carlo


def test_monte_carlo_on_sampled_harary_graphs():
    """Empirical frequencies on real sampled graphs stay within the union bounds.

    n = 40, k = 8, C = 8 corrupt (ids 0..7), D = 8 dropped (ids 8..15), chosen
    independently of the graph seeds. Neighbourhood marginals must match the
    hypergeometric laws; the "some client fails" frequencies must not exceed
    the union bounds.
    """
    n, k, C, D, trials = 40, 8, 8, 8, 2000
    c, t = 5, 5
    corrupt, dropped = set(range(C)), set(range(C, C + D))
    honest = [u for u in range(n) if u not in corrupt]
    removed = corrupt | dropped

    per_node_hits = 0  # honest (node, graph) pairs with >= c corrupt neighbours
    any_hit = 0  # graphs with some honest node having >= c corrupt neighbours
    survivor_fail = dropped_fail = any_fail = disconnected = 0
    for i in range(trials):
        graph = harary_graph(range(n), k, hashlib.sha256(b"mc-%d" % i).digest())
        hits = [len(graph[u] & corrupt) >= c for u in honest]
        per_node_hits += sum(hits)
        any_hit += any(hits)
        # correctness: alive members of the closed neighbourhood, excluding dropped clients
        failed = False
        for u in range(n):
            alive = len(graph[u] - dropped) + (u not in dropped)
            if alive < t:
                failed = True
                if u in dropped:
                    dropped_fail += 1
                else:
                    survivor_fail += 1
        any_fail += failed
        # connectivity of the honest surviving clients
        remaining = [u for u in range(n) if u not in removed]
        seen, frontier = {remaining[0]}, [remaining[0]]
        while frontier:
            for v in graph[frontier.pop()] - removed:
                if v not in seen:
                    seen.add(v)
                    frontier.append(v)
        disconnected += len(seen) < len(remaining)

    def within(freq, p, samples, sigmas=5.0):
        return abs(freq - p) <= sigmas * math.sqrt(max(p * (1 - p), 1e-4) / samples)

    p_corrupt = float(hypergeometric_tail(n - 1, C, k, c))
    assert within(per_node_hits / (trials * len(honest)), p_corrupt, trials)
    p_survivor = float(hypergeometric_tail(n - 1, D, k, k + 2 - t))
    p_dropped = float(hypergeometric_tail(n - 1, D - 1, k, k + 1 - t))
    assert within(survivor_fail / (trials * (n - D)), p_survivor, trials)
    assert within(dropped_fail / (trials * D), p_dropped, trials)
    # a dropped client fails far more often than the "counts itself alive" formula says
    assert dropped_fail / (trials * D) > 2 * p_survivor

    slack = lambda p: 5 * math.sqrt(max(p * (1 - p), 1e-4) / trials)  # noqa: E731
    union_security = n * p_corrupt
    assert any_hit / trials <= union_security + slack(union_security)
    _, correctness = failure_bounds(n, k, t, corrupt_fraction=0, dropout_fraction=Fraction(D, n))
    assert any_fail / trials <= correctness + slack(correctness)
    p_disconnect = n * math.comb(C + D, k // 2) / math.comb(n, k // 2)
    assert disconnected / trials <= p_disconnect
    print(f"MC: any-corrupt {any_hit / trials:.4f} <= {union_security:.4f}; "
          f"correctness {any_fail / trials:.4f} <= {correctness:.4f}; "
          f"disconnected {disconnected / trials:.4f} <= {p_disconnect:.4f}")


def test_float_screen_never_hides_a_feasible_degree():
    # The search screens each k in floating point; compare it with exact
    # failure_bounds on a dense grid around the boundary for a mid-size n.
    n = 400
    for cf, df in ((0.1, 0.1), (0.2, 0.2), (0.0, 0.3)):
        p = find_parameters(n, corrupt_fraction=cf, dropout_fraction=df)
        for k in range(2, p.degree, 2):
            sec_at_max_t, _ = failure_bounds(n, k, k + 1, corrupt_fraction=cf, dropout_fraction=df)
            if sec_at_max_t > SEC_TARGET:
                continue
            lo, hi = (k + 1) // 2 + 1, k + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if failure_bounds(n, k, mid, corrupt_fraction=cf, dropout_fraction=df)[0] <= SEC_TARGET:
                    hi = mid
                else:
                    lo = mid + 1
            assert failure_bounds(n, k, lo, corrupt_fraction=cf, dropout_fraction=df)[1] > CORR_TARGET
