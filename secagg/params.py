"""Choosing the SecAgg+ graph degree k and Shamir threshold t (Bell et al., CCS 2020).

Given n clients, the tolerated fraction of corrupt clients and of dropped
clients, and target failure probabilities (2^-40 for security, 2^-20 for
correctness by default), :func:`find_parameters` picks the sparsest graph
degree ``k`` and a threshold ``t`` whose *upper bounds* on both failure
probabilities meet the targets, or refuses with :class:`InfeasibleParametersError`
saying which bound failed and what the best achievable numbers are.
:func:`failure_bounds` evaluates the two bounds for a given ``(k, t)``.

Protocol conventions
--------------------
* Graph: the Harary graph H_{k,n} over a uniformly random permutation of the
  clients (:func:`secagg.graph.harary_graph`, k even, k < n - 1), or the
  complete graph (k = n - 1, plain SecAgg).
* Each client u secret-shares its two secrets (self-mask seed b_u and masking
  key s_u) t-out-of-(k+1) among its *closed* neighbourhood N[u] = N(u) + {u}
  (it keeps one share itself). ``degree`` is k = |N(u)|.
* The threshold always satisfies (k+1)/2 < t <= k+1. t > (k+1)/2 is what stops
  a server from splitting u's honest neighbours into one group that reveals
  b_u-shares and a disjoint group that reveals s_u-shares.

Assumptions
-----------
* C = ceil(corrupt_fraction * n) clients are corrupt and D =
  ceil(dropout_fraction * n) clients drop out (fractions given as floats are
  read as the shortest decimal that round-trips, so 0.1 means exactly 1/10).
* Static corruption: the corrupt set is fixed independently of the graph's
  random permutation, i.e. the permutation's seed is unpredictable to whoever
  chooses whom to corrupt. Dropouts are also independent of the permutation
  (the worst case over *which* clients drop or are corrupt is covered because
  the permutation is uniform whatever the sets are).
* Then the open neighbourhood of any fixed client is a uniformly random k-subset
  of the other n - 1 clients (see :mod:`secagg.graph`), so for an honest client
  the number of corrupt neighbours is X ~ Hypergeometric(population n - 1,
  successes C, draws k), and the number of dropped neighbours of a client that
  survives is Y ~ Hypergeometric(n - 1, D, k); for a dropped client the other
  n - 1 contain only D - 1 dropped ones, Y' ~ Hypergeometric(n - 1, D - 1, k).
* Correctness is promised against dropouts: clients that have not dropped
  answer the server (a malicious client can always make a round abort, so no
  protocol promises correctness against it).
* Neighbourhoods of different clients are dependent, so every bound below is a
  *union bound* over clients: valid whatever the dependence, possibly loose.

Security bound
--------------
security_failure <= n * P[X >= c_min] + P_disconnect, where

* semi-honest server (``malicious=False``): c_min = t. The server follows the
  protocol, so each honest neighbour reveals shares of only one of u's two
  secrets; it learns x_u only if the corrupt neighbours alone hold t shares of
  both, i.e. X >= t.
* malicious server (``malicious=True``): c_min = min(2t - (k+1), t - 1),
  assuming the consistency round with the *global* quorum Q = max(t,
  floor((n + C)/2) + 1) of :class:`secagg.config.SessionConfig` (every honest
  client that answers then sees the same survivor set U3; see
  ``docs/security.md``). With one U3: if u is not in U3 no honest party
  reveals b_u, so u is safe unless X >= t. If u is in U3, honest parties never
  reveal s_u, so the server needs the key of every honest peer u masked with
  (M_u, |M_u| >= t - 1 since u checks it), all of which must then be outside
  U3. Then either u answers, which it does only if its neighbours in U3 are
  among M_u, hence all corrupt, and at least t - 1 of them: X >= t - 1; or
  u stays silent and its b_u-shares come from at most X + (k - |M_u|) <=
  X + k - t + 1 holders, which reach t only if X >= 2t - (k+1). Uneven share
  forwarding is exactly the freedom to choose M_u; it cannot do better.
  (With t > (k+1)/2, c_min >= 1; a c_min <= 0 would make the probability 1
  and (k, t) infeasible.) What "learns more than the sum" means here is
  weaker than for a semi-honest server: a malicious server can claim any
  clients dropped, so on a SecAgg+ graph it can cut the survivors into groups
  and learn each group's sum; every such group contains an honest client that
  answered and its t - 1 surviving neighbours, so no individual input of an
  honest client is learned (docs/security.md). The correctness bound also
  needs Q <= n - D: the consistency quorum must be reachable after dropouts.
* n * P[...] is the union over at most n honest clients (using n rather than
  n - C keeps the bound monotone in C; it is still valid).
* P_disconnect bounds the probability that the subgraph of honest, non-dropped
  clients is disconnected (the server would then learn the sums of its
  components). Remove R = min(n, C + D) clients (the worst case, corrupt and
  dropped sets disjoint). On the circulant graph C_n(1..k/2) two consecutive
  remaining clients on the circle are adjacent unless at least k/2 removed
  clients lie between them, so disconnection needs a run of >= k/2 consecutive
  removed positions. The removed set's positions are a uniformly random
  R-subset of the n positions, so a fixed window of h = k/2 positions is all
  removed with probability C(R, h) / C(n, h) (hypergeometric); a union over the
  n windows gives P_disconnect <= n * C(R, h) / C(n, h). For the complete graph
  P_disconnect = 0.

Correctness bound
-----------------
The server can finish iff every client w has at least t members of N[w] that
are still alive at unmasking. A surviving client has k + 1 - Y alive members
(itself included); a dropped client has k - Y' (its own share is gone).
Union bound over the n - D survivors and the D dropped clients::

    correctness_failure <= (n - D) * P[Y > k + 1 - t] + D * P[Y' > k - t]

Counting a dropped client as alive in its own neighbourhood would *not* be an
upper bound (it would under-count that client's failure), so dropped clients
get their own term. Clients that drop before sharing need no reconstruction;
treating them as needing it only makes the bound larger, so it stays valid.

For the complete graph (k = n - 1) the same formulas degenerate correctly:
X = C, Y = D and Y' = D - 1 with probability 1, so the bounds are 0 or at
least 1 (exact conditions t > C, resp. 2t - n > C, and t <= n - D).

Exactness
---------
Hypergeometric tails are computed exactly as integer ratios (``math.comb`` and
an exact integer recurrence for the terms, :class:`fractions.Fraction` for the
sums) and only converted to ``float`` at the end, *rounded upwards* (a returned
bound is never below the exact rational bound) and capped at 1. Comparisons
with the targets 2^-bits are exact.

Search
------
For k = 2, 4, ... < n - 1, take the smallest t in ((k+1)/2, k+1] whose security
bound meets 2^-security_bits (the security bound is non-increasing in t and
the correctness bound non-decreasing, so the smallest secure t is the most
dropout-tolerant) and accept the first k whose correctness bound at that t
meets 2^-correctness_bits. If no sparse k works, try the complete graph. To
stay fast for large n, each k is first screened with a floating-point
(log-gamma) evaluation of the same bounds, accurate to far better than the
0.1 % screening slack; every accepted (k, t) is decided by the exact
computation. Feasible settings return in milliseconds for n = 10^4; an
infeasible setting scans all k and costs O(n^2) float operations.
Because every bound is monotone in C and in D, tolerating more corruption or
more dropouts never yields a smaller k.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from .errors import InfeasibleParametersError, InvalidInputError

__all__ = [
    "DEFAULT_SECURITY_BITS",
    "DEFAULT_CORRECTNESS_BITS",
    "Parameters",
    "find_parameters",
    "failure_bounds",
    "hypergeometric_tail",
    "consistency_quorum",
]

DEFAULT_SECURITY_BITS = 40
DEFAULT_CORRECTNESS_BITS = 20

# Relative slack of the floating-point screen. Its own relative error is a few
# ulps of log(n!) (about 1e-10 at n = 1e4, 1e-7 at n = 1e7), far below the slack,
# so the screen never rejects a (k, t) that the exact test would accept.
_SCREEN_SLACK = 1.0 + 1e-3


# ----------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(
            f"{name} must be an integer >= {minimum}; got {value!r} of type {type(value).__name__}"
        )
    value = int(value)
    if value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def _check_fraction(name: str, value) -> Fraction:
    """An exact fraction in [0, 1); floats are read as their shortest repr."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(
            f"{name} must be a real number in [0, 1); got {value!r} of type {type(value).__name__}"
        )
    if isinstance(value, numbers.Rational):
        exact = Fraction(value.numerator, value.denominator)
    else:
        as_float = float(value)
        if not math.isfinite(as_float):
            raise InvalidInputError(f"{name} must be a real number in [0, 1); got {as_float}")
        exact = Fraction(repr(as_float))
    if not 0 <= exact < 1:
        raise InvalidInputError(f"{name} must be a real number in [0, 1); got {value!r}")
    return exact


_MAX_BITS = 1000


def _check_bits(name: str, value) -> Fraction:
    """Return the exact target 2**-value."""
    expected = f"{name} must be a positive number of bits, at most {_MAX_BITS}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{expected}; got {value!r} of type {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        if not 0 < value <= _MAX_BITS:
            raise InvalidInputError(f"{expected}; got {value}")
        return Fraction(1, 2 ** int(value))
    as_float = float(value)
    if not (math.isfinite(as_float) and 0 < as_float <= _MAX_BITS):
        raise InvalidInputError(f"{expected}; got {value!r}")
    return Fraction(2.0**-as_float)  # the float target, exactly


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be a bool; got {value!r} of type {type(value).__name__}")
    return bool(value)


def _count(fraction: Fraction, n: int) -> int:
    """ceil(fraction * n), exactly."""
    return math.ceil(fraction * n)


def _check_counts(n: int, corrupt: int, dropped: int) -> None:
    if corrupt >= n:
        raise InfeasibleParametersError(
            f"corrupt fraction leaves no honest client: ceil(corrupt_fraction * n) = {corrupt} "
            f"of n = {n} clients; lower corrupt_fraction"
        )
    if dropped >= n:
        raise InfeasibleParametersError(
            f"dropout fraction leaves no surviving client: ceil(dropout_fraction * n) = {dropped} "
            f"of n = {n} clients; lower dropout_fraction"
        )


def _check_degree_threshold(n: int, degree: int, threshold: int) -> None:
    if degree != n - 1 and (degree < 2 or degree % 2 or degree > n - 2):
        raise InvalidInputError(
            f"degree must be n - 1 = {n - 1} (complete graph) or an even integer in "
            f"[2, {n - 2}] (Harary graph); got {degree}"
        )
    low = (degree + 1) // 2 + 1
    if not low <= threshold <= degree + 1:
        raise InvalidInputError(
            f"threshold must satisfy (k+1)/2 < t <= k+1, i.e. t in [{low}, {degree + 1}] for "
            f"k = {degree}; got {threshold}"
        )


# ----------------------------------------------------------------------------
# Exact hypergeometric tails
# ----------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _exact_tails(population: int, successes: int, draws: int) -> tuple[int, tuple[int, ...], int]:
    """``(lo, suffix, denominator)`` with P[X >= lo + i] = suffix[i] / denominator.

    X ~ Hypergeometric(population, successes, draws) takes values in
    [lo, hi] = [max(0, draws - failures), min(successes, draws)] with
    P[X = x] = C(successes, x) * C(failures, draws - x) / C(population, draws).
    The numerators follow the exact integer recurrence
    term(x+1) = term(x) * (successes - x) * (draws - x) / ((x + 1) * (failures - draws + x + 1)),
    whose division is exact because term(x+1) is an integer.
    """
    failures = population - successes
    lo = max(0, draws - failures)
    hi = min(successes, draws)
    term = math.comb(successes, lo) * math.comb(failures, draws - lo)
    terms = [term]
    for x in range(lo, hi):
        term = term * (successes - x) * (draws - x) // ((x + 1) * (failures - draws + x + 1))
        terms.append(term)
    suffix = tuple(itertools.accumulate(reversed(terms)))[::-1]
    denominator = math.comb(population, draws)
    if suffix[0] != denominator:  # Vandermonde's identity; cannot fail
        raise AssertionError("hypergeometric terms do not sum to C(population, draws)")
    return lo, suffix, denominator


def _tail(population: int, successes: int, draws: int, at_least: int) -> Fraction:
    lo, suffix, denominator = _exact_tails(population, successes, draws)
    if at_least <= lo:
        return Fraction(1)
    index = at_least - lo
    if index >= len(suffix):
        return Fraction(0)
    return Fraction(suffix[index], denominator)


def hypergeometric_tail(population: int, successes: int, draws: int, at_least: int) -> Fraction:
    """Exact P[X >= at_least] for X ~ Hypergeometric(population, successes, draws).

    X counts the marked items among ``draws`` items drawn without replacement
    from ``population`` items of which ``successes`` are marked. Returned as an
    exact :class:`fractions.Fraction`.
    """
    population = _check_int("population", population, 0)
    successes = _check_int("successes", successes, 0)
    draws = _check_int("draws", draws, 0)
    if isinstance(at_least, bool) or not isinstance(at_least, numbers.Integral):
        raise InvalidInputError(
            f"at_least must be an integer; got {at_least!r} of type {type(at_least).__name__}"
        )
    if successes > population or draws > population:
        raise InvalidInputError(
            f"need successes <= population and draws <= population; got population={population}, "
            f"successes={successes}, draws={draws}"
        )
    return _tail(population, successes, draws, int(at_least))


# ----------------------------------------------------------------------------
# The bounds, exactly
# ----------------------------------------------------------------------------


def _c_min(degree: int, threshold: int, malicious: bool) -> int:
    """Fewest corrupt neighbours of a client that let the server learn its input (module docstring)."""
    return min(2 * threshold - (degree + 1), threshold - 1) if malicious else threshold


def consistency_quorum(n: int, threshold: int, corrupt: int) -> int:
    """Q = max(t, floor((n + C)/2) + 1), the active-mode quorum (same rule as SessionConfig)."""
    return max(threshold, (n + corrupt) // 2 + 1)


def _p_disconnect(n: int, degree: int, corrupt: int, dropped: int) -> Fraction:
    if degree >= n - 1:
        return Fraction(0)
    half = degree // 2
    removed = min(n, corrupt + dropped)
    return n * Fraction(math.comb(removed, half), math.comb(n, half))


def _exact_security(n: int, degree: int, threshold: int, corrupt: int, dropped: int,
                    malicious: bool) -> Fraction:
    c_min = _c_min(degree, threshold, malicious)
    tail = Fraction(1) if c_min <= 0 else _tail(n - 1, corrupt, degree, c_min)
    return n * tail + _p_disconnect(n, degree, corrupt, dropped)


def _exact_correctness(n: int, degree: int, threshold: int, dropped: int, corrupt: int = 0,
                       malicious: bool = False) -> Fraction:
    if malicious and consistency_quorum(n, threshold, corrupt) > n - dropped:
        return Fraction(1)  # the survivors can never sign U3 with the consistency quorum
    bound = (n - dropped) * _tail(n - 1, dropped, degree, degree + 2 - threshold)
    if dropped:
        bound += dropped * _tail(n - 1, dropped - 1, degree, degree + 1 - threshold)
    return bound


def _round_up(value: Fraction) -> float:
    """The smallest float >= value, capped at 1 (a probability bound)."""
    if value >= 1:
        return 1.0
    result = float(value)
    if Fraction(result) < value:
        result = math.nextafter(result, math.inf)
    return result


def _exact_smallest_secure_threshold(n: int, degree: int, corrupt: int, dropped: int,
                                     malicious: bool, target: Fraction) -> Optional[int]:
    """Smallest t in ((k+1)/2, k+1] with security bound <= target, or None (binary search)."""
    low = (degree + 1) // 2 + 1
    high = degree + 1
    if _exact_security(n, degree, high, corrupt, dropped, malicious) > target:
        return None
    while low < high:  # invariant: high is secure
        mid = (low + high) // 2
        if _exact_security(n, degree, mid, corrupt, dropped, malicious) <= target:
            high = mid
        else:
            low = mid + 1
    return high


# ----------------------------------------------------------------------------
# The bounds, approximately (screening only)
# ----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return np.array([math.lgamma(i + 1) for i in range(n + 1)], dtype=np.float64)


def _float_tail(lf: np.ndarray, population: int, successes: int,
                draws: int) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised approximate c -> P[X >= c] for X ~ Hypergeometric(population, successes, draws)."""
    failures = population - successes
    lo = max(0, draws - failures)
    hi = min(successes, draws)
    x = np.arange(lo, hi + 1)
    log_pmf = (
        (lf[successes] - lf[x] - lf[successes - x])
        + (lf[failures] - lf[draws - x] - lf[failures - draws + x])
        - (lf[population] - lf[draws] - lf[population - draws])
    )
    with np.errstate(under="ignore"):
        tail = np.cumsum(np.exp(log_pmf)[::-1])[::-1]

    def at(c: np.ndarray) -> np.ndarray:
        index = np.clip(c - lo, 0, len(tail) - 1)
        return np.where(c <= lo, 1.0, np.where(c > hi, 0.0, tail[index]))

    return at


def _float_p_disconnect(lf: np.ndarray, n: int, degree: int, corrupt: int, dropped: int) -> float:
    half = degree // 2
    removed = min(n, corrupt + dropped)
    if removed < half:
        return 0.0
    log_ratio = (lf[removed] - lf[half] - lf[removed - half]) - (lf[n] - lf[half] - lf[n - half])
    return n * math.exp(log_ratio)


@dataclass
class _Screen:
    """Approximate bounds of one sparse degree k."""

    best_security: float  # at t = k + 1
    threshold: Optional[int]  # smallest t passing the security screen
    correctness: float  # at that threshold (inf if none)


def _screen(lf: np.ndarray, n: int, degree: int, corrupt: int, dropped: int, malicious: bool,
            security_target: float) -> _Screen:
    thresholds = np.arange((degree + 1) // 2 + 1, degree + 2)
    c_min = np.minimum(2 * thresholds - (degree + 1), thresholds - 1) if malicious else thresholds
    security = n * _float_tail(lf, n - 1, corrupt, degree)(c_min)
    security = security + _float_p_disconnect(lf, n, degree, corrupt, dropped)
    passing = np.flatnonzero(security <= security_target * _SCREEN_SLACK)
    if passing.size == 0:
        return _Screen(float(security[-1]), None, math.inf)
    t = int(thresholds[passing[0]])
    correctness = (n - dropped) * _float_tail(lf, n - 1, dropped, degree)(np.array([degree + 2 - t]))[0]
    if dropped:
        correctness += dropped * _float_tail(lf, n - 1, dropped - 1, degree)(np.array([degree + 1 - t]))[0]
    return _Screen(float(security[-1]), t, float(correctness))


# ----------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------


def _format_probability(p: float) -> str:
    """'2^-x' with x rounded *down* to 0.1, so the text never overstates a bound."""
    if p <= 0:
        return "0"
    if p >= 1:
        return "1 (no guarantee)"
    return f"2^-{math.floor(-math.log2(p) * 10) / 10:.1f}"


@dataclass(frozen=True)
class Parameters:
    """Graph degree and Shamir threshold chosen for one SecAgg / SecAgg+ session.

    Attributes:
        n: number of clients.
        degree: k, the number of neighbours of each client (n - 1 for the
            complete graph).
        threshold: t, Shamir threshold over the k + 1 members of each closed
            neighbourhood; (k+1)/2 < t <= k+1.
        complete: True for the complete graph (SecAgg), False for the Harary
            graph (SecAgg+).
        corrupt_fraction, dropout_fraction: the tolerated fractions the bounds
            were computed for (C = ceil(fraction * n) clients each).
        security_failure: upper bound on the probability that the server
            learns more than the sum (see the module docstring).
        correctness_failure: upper bound on the probability that the server
            cannot finish the round with the tolerated dropouts.
        malicious: whether the bounds assume a malicious (rather than
            semi-honest) server.
    """

    n: int
    degree: int
    threshold: int
    complete: bool
    corrupt_fraction: float
    dropout_fraction: float
    security_failure: float
    correctness_failure: float
    malicious: bool = False

    def __post_init__(self) -> None:
        n = _check_int("n", self.n, 2)
        degree = _check_int("degree", self.degree, 1)
        threshold = _check_int("threshold", self.threshold, 1)
        _check_degree_threshold(n, degree, threshold)
        if _check_bool("complete", self.complete) != (degree == n - 1):
            raise InvalidInputError(
                f"complete must be {degree == n - 1} for degree {degree} and n = {n}; got {self.complete}"
            )
        _check_fraction("corrupt_fraction", self.corrupt_fraction)
        _check_fraction("dropout_fraction", self.dropout_fraction)
        for name in ("security_failure", "correctness_failure"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
                raise InvalidInputError(f"{name} must be a probability in [0, 1]; got {value!r}")
        _check_bool("malicious", self.malicious)

    @property
    def neighbourhood_size(self) -> int:
        """k + 1: the number of shares of each secret (closed neighbourhood)."""
        return self.degree + 1

    @property
    def corrupt_count(self) -> int:
        """C = ceil(corrupt_fraction * n), the corrupt clients the bounds cover."""
        return _count(_check_fraction("corrupt_fraction", self.corrupt_fraction), self.n)

    @property
    def consistency_quorum(self) -> int:
        """Q = max(t, floor((n + C)/2) + 1): signers of U3 each honest client needs in active mode."""
        return consistency_quorum(self.n, self.threshold, self.corrupt_count)

    @property
    def dropout_count(self) -> int:
        """D = ceil(dropout_fraction * n), the dropped clients the bounds cover."""
        return _count(_check_fraction("dropout_fraction", self.dropout_fraction), self.n)

    def describe(self) -> str:
        """A one-paragraph, human-readable summary (for logs, reports and the DPIA)."""
        graph = "complete graph (SecAgg)" if self.complete else "Harary graph over a random permutation (SecAgg+)"
        server = "malicious" if self.malicious else "semi-honest"
        return (
            f"{graph}: n={self.n} clients, degree k={self.degree}, threshold t={self.threshold} "
            f"of k+1={self.degree + 1} shares per secret; {server} server; tolerates "
            f"{self.corrupt_count} corrupt clients (corrupt_fraction={self.corrupt_fraction:g}) and "
            f"{self.dropout_count} dropped clients (dropout_fraction={self.dropout_fraction:g}); "
            f"security failure <= {_format_probability(self.security_failure)}, "
            f"correctness failure <= {_format_probability(self.correctness_failure)} "
            f"(union bounds assuming static corruption independent of the graph's public seed)"
        )


def failure_bounds(n: int, degree: int, threshold: int, *, corrupt_fraction: float,
                   dropout_fraction: float, malicious: bool = False) -> tuple[float, float]:
    """Upper bounds ``(security_failure, correctness_failure)`` for a given (k, t).

    ``degree`` is n - 1 for the complete graph or an even k in [2, n - 2] for
    the Harary graph; ``threshold`` must satisfy (k+1)/2 < t <= k+1. The bounds
    are the union bounds of the module docstring, computed exactly and rounded
    up to floats (capped at 1).

    Raises:
        InvalidInputError: malformed arguments.
        InfeasibleParametersError: the fractions leave no honest or no
            surviving client.
    """
    n = _check_int("n", n, 2)
    degree = _check_int("degree", degree, 1)
    threshold = _check_int("threshold", threshold, 1)
    _check_degree_threshold(n, degree, threshold)
    corrupt = _count(_check_fraction("corrupt_fraction", corrupt_fraction), n)
    dropped = _count(_check_fraction("dropout_fraction", dropout_fraction), n)
    malicious = _check_bool("malicious", malicious)
    _check_counts(n, corrupt, dropped)
    security = _exact_security(n, degree, threshold, corrupt, dropped, malicious)
    correctness = _exact_correctness(n, degree, threshold, dropped, corrupt, malicious)
    return _round_up(security), _round_up(correctness)


def find_parameters(n: int, *, corrupt_fraction: float, dropout_fraction: float,
                    security_bits: float = DEFAULT_SECURITY_BITS,
                    correctness_bits: float = DEFAULT_CORRECTNESS_BITS,
                    malicious: bool = False) -> Parameters:
    """The sparsest (k, t) meeting both failure targets (see the module docstring).

    Args:
        n: number of clients, an integer >= 2.
        corrupt_fraction: tolerated fraction of corrupt clients, in [0, 1).
        dropout_fraction: tolerated fraction of dropped clients, in [0, 1).
        security_bits: the security failure bound must be <= 2^-security_bits.
        correctness_bits: the correctness failure bound must be <= 2^-correctness_bits.
        malicious: bound a malicious server (c_min = 2t - (k+1)) instead of a
            semi-honest one (c_min = t).

    Returns:
        :class:`Parameters` with the smallest even k < n - 1 that works (with
        the smallest secure t for it), else the complete graph if it works.

    Raises:
        InvalidInputError: malformed arguments (message says expected vs got).
        InfeasibleParametersError: no (k, t) meets both targets; the message
            names the bound that failed, the best achievable numbers and what to
            change.
    """
    n = _check_int("n", n, 2)
    corrupt_exact = _check_fraction("corrupt_fraction", corrupt_fraction)
    dropout_exact = _check_fraction("dropout_fraction", dropout_fraction)
    security_target = _check_bits("security_bits", security_bits)
    correctness_target = _check_bits("correctness_bits", correctness_bits)
    malicious = _check_bool("malicious", malicious)
    corrupt = _count(corrupt_exact, n)
    dropped = _count(dropout_exact, n)

    setting = (
        f"n={n}, corrupt_fraction={float(corrupt_fraction):g} (C={corrupt}), "
        f"dropout_fraction={float(dropout_fraction):g} (D={dropped}), "
        f"{'malicious' if malicious else 'semi-honest'} server"
    )
    _check_counts(n, corrupt, dropped)
    if corrupt + dropped > n:
        raise InfeasibleParametersError(
            f"{setting}: C + D = {corrupt + dropped} exceeds n; no honest surviving client "
            f"could be protected. Lower corrupt_fraction or dropout_fraction."
        )
    if malicious and (n + corrupt) // 2 + 1 > n - dropped:
        raise InfeasibleParametersError(
            f"{setting}: a malicious server is only stopped if the survivors sign one survivor set with the "
            f"consistency quorum floor((n + C)/2) + 1 = {(n + corrupt) // 2 + 1}, but only n - D = {n - dropped} "
            "clients are sure to survive (two sets signed by fewer could both be accepted). "
            "Lower dropout_fraction or corrupt_fraction: roughly corrupt_fraction + 2 * dropout_fraction < 1 is needed."
        )

    def make(degree: int, threshold: int, security: Fraction, correctness: Fraction) -> Parameters:
        return Parameters(
            n=n, degree=degree, threshold=threshold, complete=degree == n - 1,
            corrupt_fraction=float(corrupt_fraction), dropout_fraction=float(dropout_fraction),
            security_failure=_round_up(security), correctness_failure=_round_up(correctness),
            malicious=malicious,
        )

    security_target_f = float(security_target)
    correctness_target_f = float(correctness_target)
    # Best achievable numbers, for the error message: (bound, k, t).
    best_security: tuple[float, int, int] = (math.inf, 0, 0)
    best_correctness: tuple[float, int, int] = (math.inf, 0, 0)  # among secure (k, t)

    lf = _log_factorials(n) if n - 1 > 2 else None
    for degree in range(2, n - 1, 2):
        screen = _screen(lf, n, degree, corrupt, dropped, malicious, security_target_f)
        if screen.best_security < best_security[0]:
            best_security = (screen.best_security, degree, degree + 1)
        if screen.threshold is None:
            continue
        if screen.correctness < best_correctness[0]:
            best_correctness = (screen.correctness, degree, screen.threshold)
        if screen.correctness > correctness_target_f * _SCREEN_SLACK:
            continue
        threshold = _exact_smallest_secure_threshold(
            n, degree, corrupt, dropped, malicious, security_target)
        if threshold is None:
            continue
        correctness = _exact_correctness(n, degree, threshold, dropped, corrupt, malicious)
        if correctness <= correctness_target:
            security = _exact_security(n, degree, threshold, corrupt, dropped, malicious)
            return make(degree, threshold, security, correctness)

    # The complete graph: X = C, Y = D, Y' = D - 1 deterministically.
    degree = n - 1
    best_complete = _exact_security(n, degree, n, corrupt, dropped, malicious)
    if float(best_complete) < best_security[0]:
        best_security = (_round_up(best_complete), degree, n)
    threshold = _exact_smallest_secure_threshold(n, degree, corrupt, dropped, malicious, security_target)
    if threshold is not None:
        correctness = _exact_correctness(n, degree, threshold, dropped, corrupt, malicious)
        if correctness <= correctness_target:
            security = _exact_security(n, degree, threshold, corrupt, dropped, malicious)
            return make(degree, threshold, security, correctness)
        if float(correctness) < best_correctness[0]:
            best_correctness = (_round_up(correctness), degree, threshold)

    raise InfeasibleParametersError(
        _infeasible_message(setting, n, corrupt, dropped, malicious, security_bits, correctness_bits,
                            best_security, best_correctness)
    )


def _infeasible_message(setting: str, n: int, corrupt: int, dropped: int, malicious: bool,
                        security_bits, correctness_bits, best_security: tuple[float, int, int],
                        best_correctness: tuple[float, int, int]) -> str:
    def where(degree: int, threshold: int) -> str:
        kind = " (complete graph)" if degree == n - 1 else ""
        return f"k={degree}, t={threshold}{kind}"

    head = (
        f"{setting}: no (k, t) meets 2^-{float(security_bits):g} security and "
        f"2^-{float(correctness_bits):g} correctness. "
    )
    if best_correctness[0] == math.inf:
        bound, degree, threshold = best_security
        if malicious:
            complete_rule = f"complete graph needs 2t - n > C, i.e. t >= {(n + corrupt) // 2 + 1}"
        else:
            complete_rule = f"complete graph needs t > C, i.e. t >= {max(corrupt, n // 2) + 1}"
        body = (
            f"The security bound fails for every (k, t): best security bound "
            f"~{_format_probability(bound)} at {where(degree, threshold)} ({complete_rule} <= n). "
            f"Lower corrupt_fraction or security_bits"
            + (", or add clients" if n > 3 else "")
            + "."
        )
    else:
        bound, degree, threshold = best_correctness
        if malicious:
            complete_rule = f"t >= {(n + corrupt) // 2 + 1}"
        else:
            complete_rule = f"t >= {max(corrupt, n // 2) + 1}"
        if bound >= 1:
            best = "is >= 1 (no guarantee) for every degree"
        else:
            best = f"is ~{_format_probability(bound)}, at {where(degree, threshold)}"
        body = (
            f"Security is reachable, but then the correctness bound fails: the best correctness "
            f"bound at the smallest secure threshold {best} (the complete graph needs {complete_rule} and "
            f"t <= n - D = {n - dropped}). Lower dropout_fraction or correctness_bits"
            + (" (or corrupt_fraction, which lowers the secure threshold)" if corrupt else "")
            + "."
        )
    hint = (
        " For large k the bounds can only be met if corrupt_fraction + 2 * dropout_fraction < 1"
        if malicious
        else " For large k the bounds can only be met if dropout_fraction < 1/2 and "
        "corrupt_fraction + dropout_fraction < 1"
    )
    return head + body + hint + "."
