"""Paired comparisons across seeds: mean difference with a 95% confidence interval.

For arms A and B run under the same seed s (same data, same initial weights),
d_s = A_s - B_s. Over n seeds, with mean d̄ and sample standard deviation
s_d (divisor n - 1):

* **Student t** (:func:`paired_t`): d̄ ± t_{1-α/2, n-1} · s_d / √n, the
  interval of the paired t-test (valid when the d_s are i.i.d. normal; with
  few seeds it is wide, as it should be). With n < 2 there is no interval.
* **Paired bootstrap** (:func:`paired_bootstrap`): resample the n seeds with
  replacement B times (a fixed-seed generator: the interval is
  reproducible), take the mean difference of each resample, and report the
  α/2 and 1-α/2 percentiles. With 5 seeds there are only 126 distinct
  resamples, so it is a rough check, not a better interval.

"A beats B" is claimed only when the whole interval is above 0.

**Rank correlation** (:func:`rank_correlation`): Spearman's ρ between two
paired lists (Pearson's r of their ranks, ties averaged) with the two-sided
p-value of scipy's t approximation, ``t = ρ √((n-2)/(1-ρ²))`` on n - 2
degrees of freedom (rough for n < 10; reported with n). The experiment
uses it to ask whether its stopping criterion, the healthy validation loss,
tracks what is evaluated, the AUPRC on lesions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["PairedDifference", "paired_t", "paired_bootstrap", "t_quantile", "rank_correlation"]


def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the paired differences A - B with its confidence interval."""

    n: int
    mean: float
    sd: float  # sample standard deviation of the differences (n - 1)
    low: float  # nan when n < 2
    high: float
    confidence: float
    method: str  # "t" or "bootstrap"

    @property
    def verdict(self) -> str:
        """'higher' / 'lower' when the interval excludes 0, else 'inconclusive'."""
        if math.isnan(self.low):
            return "inconclusive"
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "inconclusive"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D sequences of the same length; got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no pairs")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired samples must be finite")
    return a - b


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Mean of ``a - b`` with the Student-t interval (module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    d = _differences(a, b)
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, float("nan"), float("nan"), float("nan"), confidence, "t")
    sd = float(d.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(n, mean, sd, mean - half, mean + half, confidence, "t")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *, resamples: int = 10_000,
                     seed: int = 0) -> PairedDifference:
    """Mean of ``a - b`` with the percentile bootstrap interval over seeds (module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1; got {resamples}")
    d = _differences(a, b)
    n = d.size
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(n, mean, float("nan"), float("nan"), float("nan"), confidence, "bootstrap")
    rng = np.random.default_rng(seed)  # reproducible resampling of seeds (statistics, not privacy)
    means = d[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return PairedDifference(n, mean, float(d.std(ddof=1)), float(low), float(high), confidence, "bootstrap")


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> dict:
    """{"rho", "p", "n"}: Spearman's ρ of paired values (None where n < 3 or a side is constant)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("rank_correlation needs two paired one-dimensional lists")
    n = int(x.size)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": n}
    result = spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": n}
