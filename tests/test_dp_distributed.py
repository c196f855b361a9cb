"""Distributed DP pipeline: rotation, clipping and conditional rounding, end-to-end decoding,
accounting (monotonicity and cross-checks against exact numerics and dp-accounting),
wrap-around, and refusals."""

import dataclasses
import hashlib
import math

import numpy as np
import pytest
from scipy import special, stats

from dp.discrete import RandomWords
from dp.distributed import (
    DEFAULT_ORDERS,
    CalibratedDistributedDp,
    DistributedDpConfig,
    DistributedDpEvent,
    calibrate,
    compute_distributed_epsilon,
    decode_sum,
    distributed_rdp,
    privatize,
    privatize_detailed,
    rdp_to_epsilon,
    rounded_l2_norm_bound,
    wrap_probability_bound,
)
from dp.distributed.accounting import event_rdp
from dp.distributed.site import integer_update, rounded_update
from dp.errors import CalibrationError, InvalidPrivacyParameterError
from dp.rotation import hadamard_transform, padded_dimension, rotate, rotation_signs, unrotate

SEED = hashlib.sha256(b"public round seed").digest()


def key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def config(**overrides) -> DistributedDpConfig:
    base = dict(mechanism="skellam", l2_clip=1.0, target_epsilon=2.0, delta=1e-5, rounds=10,
                min_contributors=3, max_contributors=5)
    base.update(overrides)
    return DistributedDpConfig(**base)


def event(**overrides) -> DistributedDpEvent:
    base = dict(round=0, mechanism="ddg", local_variance=400.0, l2_norm_bound_squared=100, dimension=1,
                noise_contributors=3)
    base.update(overrides)
    return DistributedDpEvent(**base)


# --- rotation -----------------------------------------------------------------------------


def test_rotation_is_deterministic_orthogonal_and_invertible():
    x = np.random.default_rng(1).normal(size=1000)
    y = rotate(x, SEED)
    assert y.shape == (1024,)
    assert np.array_equal(y, rotate(x, SEED))  # every party derives the same signs
    assert not np.allclose(y, rotate(x, key("another seed")))
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert np.allclose(unrotate(y, SEED, 1000), x, atol=1e-12)
    assert np.array_equal(rotation_signs(SEED, 1024), rotation_signs(SEED, 1024))
    assert set(np.unique(rotation_signs(SEED, 1024))) == {-1.0, 1.0}


def test_hadamard_transform_matches_the_matrix():
    from scipy.linalg import hadamard

    v = np.random.default_rng(2).normal(size=16)
    assert np.allclose(hadamard_transform(v), hadamard(16) @ v / 4.0)


def test_rotation_flattens_a_spike():
    """All mass on one coordinate ends up spread evenly: |y_j| = ||x|| / sqrt(d')."""
    x = np.zeros(4096)
    x[17] = 3.0
    assert np.allclose(np.abs(rotate(x, SEED)), 3.0 / 64.0)


@pytest.mark.parametrize("dimension,padded", [(1, 1), (2, 2), (3, 4), (1024, 1024), (1025, 2048)])
def test_padding(dimension, padded):
    assert padded_dimension(dimension) == padded


def test_rotation_refuses_short_seeds_and_mismatched_lengths():
    with pytest.raises(InvalidPrivacyParameterError, match="seed"):
        rotate(np.ones(4), b"short")
    with pytest.raises(InvalidPrivacyParameterError, match="length"):
        unrotate(np.ones(8), SEED, 3)


# --- clipping and conditional rounding ------------------------------------------------------


def test_rounded_l2_norm_bound_formula():
    c, d, beta = 10.0, 64, math.exp(-0.5)
    assert rounded_l2_norm_bound(c, d, beta) == pytest.approx(math.sqrt(100 + 16 + 1.0 * (10 + 4)))
    assert rounded_l2_norm_bound(0.5, 4, 1e-300) == pytest.approx(0.5 + 2)  # tiny beta: the always-true bound


@pytest.mark.parametrize("rotation", [True, False])
def test_clipping_and_conditional_rounding_respect_the_bound(rotation):
    """Every rounded vector satisfies ||x~||^2 <= B^2 (exact integers), and clipping is reported."""
    cal = calibrate(config(rotation=rotation, scale=3.0, beta=0.5), 500)
    rng = RandomWords(key(f"round{rotation}"))
    gen = np.random.default_rng(3)
    for i in range(40):
        x = gen.normal(size=500) * (10.0 if i % 2 else 0.01)
        rounded, clipped, norm, tries = rounded_update(x, cal, SEED, rng)
        assert rounded.dtype == np.int64 and rounded.shape == (cal.vector_length,)
        assert int(np.dot(rounded, rounded)) <= cal.l2_norm_bound_squared
        assert clipped == (norm > 1.0)
        assert tries >= 1


def test_conditional_rounding_retries_until_the_bound_holds():
    """Worst case for rounding: every scaled coordinate is exactly 1/2, so ||x~||^2 is
    Binomial(36, 1/2) while beta = 0.99 makes B^2 = 18 (just above its mean): many roundings fail
    the bound and are redrawn, and every accepted one satisfies it."""
    cal = calibrate(config(rotation=False, scale=3.0, beta=0.99), 36)
    assert cal.l2_norm_bound_squared == 18
    x = np.full(36, 1.0 / 6.0)  # norm 1 = the clip; scaled coordinates 0.5
    rng = RandomWords(key("retries"))
    attempts = []
    for _ in range(200):
        rounded, _, _, tries = rounded_update(x, cal, SEED, rng)
        assert int(np.dot(rounded, rounded)) <= 18
        assert set(np.unique(rounded)) <= {0, 1}
        attempts.append(tries)
    # P[Binomial(36, 1/2) <= 18] = 0.57, so about 1.76 attempts on average.
    assert 1.5 < np.mean(attempts) < 2.1


def test_rounding_is_unbiased():
    cal = calibrate(config(rotation=False, scale=2.0), 8)
    x = np.array([0.1, 0.2, 0.3, -0.25, 0.05, -0.1, 0.0, 0.15])  # norm < 1: no clipping
    rng = RandomWords(key("unbiased"))
    mean = np.mean([rounded_update(x, cal, SEED, rng)[0] for _ in range(3000)], axis=0)
    assert np.allclose(mean, 2.0 * x, atol=0.05)


def test_huge_finite_inputs_are_clipped_without_overflow():
    cal = calibrate(config(rotation=False, scale=4.0), 10)
    rounded, clipped, norm, _ = rounded_update(np.full(10, 1e300), cal, SEED, RandomWords(key("huge")))
    assert clipped and norm == pytest.approx(1e300 * math.sqrt(10))
    assert int(np.dot(rounded, rounded)) <= cal.l2_norm_bound_squared


def test_privatize_does_not_modify_its_input():
    cal = calibrate(config(rotation=False), 16)
    x = np.linspace(-0.1, 0.1, 16)
    before = x.copy()
    privatize(x, cal, SEED)
    assert np.array_equal(x, before)


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["skellam", "ddg"])
@pytest.mark.parametrize("rotation", [True, False])
def test_sum_of_privatized_updates_decodes_within_the_expected_noise(mechanism, rotation):
    d, n = 2000, 4  # 4 survivors of at most 5 (threshold 3)
    cal = calibrate(config(mechanism=mechanism, rotation=rotation, target_epsilon=20.0, rounds=1), d)
    gen = np.random.default_rng(4)
    updates = [gen.normal(size=d) * (0.05 if i else 1.0) for i in range(n)]  # the first one is clipped
    ring = np.zeros(cal.vector_length, dtype=cal.ring_dtype)
    clipped_sum = np.zeros(d)
    for i, u in enumerate(updates):
        out = privatize_detailed(u, cal, SEED, key=key(f"e2e{i}{mechanism}{rotation}"))
        assert out.ring.dtype == cal.ring_dtype and out.ring.shape == (cal.vector_length,)
        ring += out.ring  # wraps mod 2^b exactly like the masked aggregate
        clipped_sum += u * min(1.0, 1.0 / np.linalg.norm(u))
    decoded = decode_sum(ring, cal, SEED, n)
    residual = decoded - clipped_sum
    expected = cal.noise_std(n)
    noise_only = math.sqrt(n * cal.local_noise_variance) / cal.scale
    assert noise_only * 0.85 < residual.std() < expected * 1.15
    assert abs(residual.mean()) < 5 * expected / math.sqrt(d)
    assert np.abs(residual).max() < 6 * expected
    # The signal is there: projected on the true sum's direction, the noisy sum recovers its
    # length up to the noise's (one coordinate's worth of) standard deviation.
    norm = np.linalg.norm(clipped_sum)
    assert abs(np.dot(decoded, clipped_sum) / norm**2 - 1.0) < 5 * expected / norm


def test_decoding_needs_the_same_public_seed():
    """R_wrong^T R = D_wrong D (H H = d' I): a wrong seed flips the sign of about half the coordinates."""
    cal = calibrate(config(target_epsilon=1000.0, rounds=1), 256)  # little noise: std ~0.035
    x = np.full(256, 1.0 / 16.0)  # norm 1
    ring = sum((privatize(x, cal, SEED) for _ in range(3)), np.zeros(256, dtype=cal.ring_dtype))
    right = decode_sum(ring, cal, SEED, 3)
    wrong = decode_sum(ring, cal, key("wrong"), 3)
    assert np.all(right > 0) and np.mean(right) == pytest.approx(3.0 / 16.0, abs=0.01)
    assert 0.3 < np.mean(wrong < 0) < 0.7
    assert np.allclose(np.abs(wrong), np.abs(right), rtol=1e-12, atol=1e-12)


# --- accounting ------------------------------------------------------------------------------


def renyi(log_p: np.ndarray, log_q: np.ndarray, alpha: float) -> float:
    return float(special.logsumexp(alpha * log_p + (1 - alpha) * log_q) / (alpha - 1))


def discrete_gaussian_sum_pmf(sigma_squared: float, n: int):
    half = int(30 * math.sqrt(sigma_squared)) + 30
    k = np.arange(-half, half + 1, dtype=np.float64)
    p = np.exp(-k * k / (2 * sigma_squared))
    p /= p.sum()
    total = p
    for _ in range(n - 1):
        total = np.convolve(total, p)
    return np.arange(-n * half, n * half + 1), total


ORDERS = np.array([1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0])


@pytest.mark.parametrize("sigma_squared,n,shift", [(0.25, 2, 1), (1.0, 3, 1), (4.0, 3, 2), (25.0, 4, 5), (2.0, 1, 1)])
def test_ddg_rdp_bound_dominates_the_exact_renyi_divergence(sigma_squared, n, shift):
    """1-D: the sum of n discrete Gaussians vs the same shifted by an integer; exact divergence by
    summing the convolved pmf. The KLS21 bound is valid everywhere and tight once sigma >= 1."""
    ks, p = discrete_gaussian_sum_pmf(sigma_squared, n)
    q = np.zeros_like(p)
    q[shift:] = p[:-shift]
    ok = (p > 1e-250) & (q > 1e-250)
    exact = np.array([renyi(np.log(p[ok]), np.log(q[ok]), a) for a in ORDERS])
    ev = event(local_variance=sigma_squared, l2_norm_bound_squared=shift**2, noise_contributors=n)
    bound = event_rdp(ev, ORDERS)
    assert np.all(bound >= exact * (1 - 1e-9))
    if sigma_squared >= 1:
        assert np.all(bound[:-1] <= exact[:-1] * 1.01)


@pytest.mark.parametrize("mu,n,shift", [(0.5, 2, 1), (2.0, 3, 1), (10.0, 3, 3), (100.0, 4, 10), (1000.0, 2, 20)])
def test_skellam_rdp_bound_dominates_the_exact_renyi_divergence(mu, n, shift):
    lam = n * mu
    half = int(40 * math.sqrt(2 * lam)) + 40
    ks = np.arange(-half, half + 1)
    lp = stats.skellam.logpmf(ks, lam, lam)
    lq = stats.skellam.logpmf(ks - shift, lam, lam)
    ok = (lp > -600) & (lq > -600)
    exact = np.array([renyi(lp[ok], lq[ok], a) for a in ORDERS])
    ev = event(mechanism="skellam", local_variance=2 * mu, l2_norm_bound_squared=shift**2, noise_contributors=n)
    bound = event_rdp(ev, ORDERS)
    assert np.all(bound >= exact * (1 - 1e-9))
    if mu >= 100:  # tight at integer orders in the regime the pipeline uses
        assert np.all(bound[1:5] <= exact[1:5] * 1.01)


def _pld_epsilon(log_p: dict, log_q: dict, rounds: int, delta: float) -> float:
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = pld.from_two_probability_mass_functions(log_q, log_p, pessimistic_estimate=True)
    return float((dist.self_compose(rounds) if rounds > 1 else dist).get_epsilon_for_delta(delta))


@pytest.mark.parametrize("mechanism,param,n,shift,rounds", [("skellam", 50.0, 3, 10, 10), ("ddg", 30.0, 3, 10, 10),
                                                            ("skellam", 400.0, 4, 8, 1)])
def test_epsilon_is_an_upper_bound_on_the_numerical_pld_epsilon(mechanism, param, n, shift, rounds):
    """1-D cross-check: dp-accounting's PLD (pessimistic) of the exact pmfs, composed over the
    rounds, is below our RDP epsilon, and not far below it (RDP is within ~15% here)."""
    if mechanism == "skellam":
        lam = n * param
        half = int(30 * math.sqrt(2 * lam)) + 30 + shift
        ks = np.arange(-half, half + 1)
        lp, lq = stats.skellam.logpmf(ks, lam, lam), stats.skellam.logpmf(ks - shift, lam, lam)
        ev = event(mechanism="skellam", local_variance=2 * param, l2_norm_bound_squared=shift**2, noise_contributors=n)
    else:
        ks, p = discrete_gaussian_sum_pmf(param, n)
        q = np.zeros_like(p)
        q[shift:] = p[:-shift]
        with np.errstate(divide="ignore"):
            lp, lq = np.log(p), np.log(q)
        ev = event(local_variance=param, l2_norm_bound_squared=shift**2, noise_contributors=n)
    log_p = {int(k): float(v) for k, v in zip(ks, lp) if v > -200}
    log_q = {int(k): float(v) for k, v in zip(ks, lq) if v > -200}
    numeric = _pld_epsilon(log_p, log_q, rounds, 1e-5)
    ours = compute_distributed_epsilon([ev] * rounds, 1e-5)
    assert numeric <= ours <= numeric * 1.15


def test_single_site_ddg_matches_dp_accounting():
    """n = 1 (tau = 0): RDP equals dp-accounting's zCDP event exactly, and the PLD of its
    discrete Gaussian mechanism is a lower (tighter) epsilon."""
    import dp_accounting
    from dp_accounting.pld import privacy_loss_distribution as pld
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    sigma_squared, shift, rounds, delta = 900.0, 20, 8, 1e-6
    ev = event(local_variance=sigma_squared, l2_norm_bound_squared=shift**2, noise_contributors=1)
    ours = compute_distributed_epsilon([ev] * rounds, delta)
    accountant = rdp.RdpAccountant(orders=list(DEFAULT_ORDERS))
    accountant.compose(dp_accounting.ZCDpEvent(rho=shift**2 / (2 * sigma_squared)), rounds)
    assert ours == pytest.approx(accountant.get_epsilon(delta), rel=1e-9)
    tight = pld.from_discrete_gaussian_mechanism(math.sqrt(sigma_squared), sensitivity=shift)
    assert tight.self_compose(rounds).get_epsilon_for_delta(delta) <= ours


def test_ddg_with_many_sites_and_large_sigma_is_zcdp():
    """tau underflows to 0 for sigma >= ~2: the bound is (Delta^2 / (2 n sigma^2))-zCDP."""
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    ev = event(local_variance=1e6, l2_norm_bound_squared=66556, noise_contributors=5, dimension=4096)
    accountant = rdp.RdpAccountant(orders=list(DEFAULT_ORDERS))
    accountant.compose(dp_accounting.ZCDpEvent(rho=66556 / (2 * 5 * 1e6)), 25)
    assert compute_distributed_epsilon([ev] * 25, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)


def test_rdp_conversion_matches_dp_accounting():
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    for ev in (event(), event(mechanism="skellam", local_variance=50.0), event(local_variance=1e5)):
        curve = distributed_rdp([ev] * 7)
        ours = rdp_to_epsilon(DEFAULT_ORDERS, curve, 1e-5)
        theirs = compute_epsilon(list(DEFAULT_ORDERS), list(curve), 1e-5)
        assert ours[0] == pytest.approx(theirs[0], rel=1e-12, abs=1e-12)
        assert ours[1] == theirs[1]


def test_epsilon_monotonicity():
    base = event(local_variance=400.0, noise_contributors=3, dimension=64)
    eps = lambda *evs: compute_distributed_epsilon(list(evs), 1e-5)  # noqa: E731
    assert eps(base) > eps(dataclasses.replace(base, local_variance=800.0))  # more noise
    assert eps(base) > eps(dataclasses.replace(base, noise_contributors=6))  # more honest sites
    assert eps(base, base) > eps(base)  # more rounds
    assert eps(dataclasses.replace(base, neighbouring="replace_one")) > eps(base)
    assert eps(dataclasses.replace(base, l2_norm_bound_squared=200)) > eps(base)
    for mechanism in ("ddg", "skellam"):
        values = [eps(*[dataclasses.replace(base, mechanism=mechanism)] * r) for r in (1, 2, 4, 8, 16)]
        assert values == sorted(values)
    # At large noise the Skellam and discrete Gaussian bounds coincide (both tend to the Gaussian's).
    big = dataclasses.replace(base, local_variance=1e7, l2_norm_bound_squared=10**6)
    assert eps(big) == pytest.approx(eps(dataclasses.replace(big, mechanism="skellam")), rel=1e-3)


@pytest.mark.parametrize("mechanism", ["skellam", "ddg"])
def test_calibration_meets_the_target(mechanism):
    cfg = config(mechanism=mechanism, target_epsilon=1.5, rounds=30)
    cal = calibrate(cfg, 5000)
    events = [cal.event(r) for r in range(30)]
    assert cal.epsilon <= 1.5
    assert compute_distributed_epsilon(events, cfg.delta) == pytest.approx(1.5, rel=1e-4)
    assert cal.bits == 32 and cal.wrap_probability <= cfg.max_wrap_probability
    assert cal.padded_dimension == cal.vector_length == 8192
    # The scale keeps the rounding inflation at the configured 1%.
    assert cal.l2_norm_bound <= 1.01 * cal.scale * cfg.l2_clip * (1 + 1e-9)
    # A tighter target needs more noise; colluders need more noise from the honest sites.
    assert calibrate(dataclasses.replace(cfg, target_epsilon=0.5), 5000).local_variance > cal.local_variance
    assert calibrate(dataclasses.replace(cfg, colluding_sites=1), 5000).local_variance > cal.local_variance


def test_event_round_trip_and_immutability():
    ev = calibrate(config(), 100).event(7)
    assert DistributedDpEvent.from_dict(ev.to_dict()) == ev
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.round = 8
    with pytest.raises(InvalidPrivacyParameterError, match="unknown"):
        DistributedDpEvent.from_dict(ev.to_dict() | {"site": "a"})


# --- wrap-around ----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_wrap_probability_bound_holds_empirically_at_small_bit_widths(mechanism):
    """3 sites, d' = 64, noise std ~20 per site: the bound at b = 8 is non-trivial and the observed
    wrap rate stays below it; at b = 6 wraps are frequent (the check can see them)."""
    cal = calibrate(config(mechanism=mechanism, scale=20.0, max_contributors=3), 64)
    cal = dataclasses.replace(cal, local_variance=400.0)
    n, trials = 3, 400
    gen = np.random.default_rng(5)
    rng = RandomWords(key(f"wrap{mechanism}"))
    sums = []
    for _ in range(trials):
        total = np.zeros(64, dtype=np.int64)
        for _ in range(n):
            x = gen.normal(size=64)
            total += integer_update(x / np.linalg.norm(x), cal, SEED, rng)[0]
        sums.append(total)
    peak = np.max(np.abs(np.array(sums)), axis=1)

    def observed(bits):  # a coordinate wraps when it leaves [-2^(b-1), 2^(b-1))
        return float(np.mean(peak >= 2 ** (bits - 1)))

    def bound(bits):
        return wrap_probability_bound(
            mechanism=mechanism, local_variance=400.0, scale=20.0, l2_clip=1.0,
            l2_norm_bound_squared=cal.l2_norm_bound_squared, dimension=64, contributors=n, bits=bits, rotation=True,
        )

    assert 0 < bound(8) < 0.6
    assert observed(8) <= bound(8)
    assert observed(6) > 0.5
    assert bound(10) < 1e-6 and observed(10) == 0.0
    assert bound(6) <= 1.0


def test_wrap_bound_decreases_with_bits_and_grows_with_contributors():
    kw = dict(mechanism="skellam", local_variance=1e6, scale=300.0, l2_clip=1.0, l2_norm_bound_squared=91000,
              dimension=4096, rotation=True)
    values = [wrap_probability_bound(**kw, contributors=5, bits=b) for b in (14, 15, 16, 17)]
    assert values == sorted(values, reverse=True)
    many, few = (wrap_probability_bound(**kw, contributors=n, bits=15) for n in (50, 5))
    assert many >= few


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,match", [
    (dict(mechanism="gaussian"), "mechanism"),
    (dict(l2_clip=0.0), "l2_clip"),
    (dict(target_epsilon=-1.0), "target_epsilon"),
    (dict(delta=1.0), "delta"),
    (dict(rounds=0), "rounds"),
    (dict(min_contributors=0), "min_contributors"),
    (dict(max_contributors=2), "max_contributors"),
    (dict(colluding_sites=3), "colluding"),
    (dict(bits=16), "bits"),
    (dict(beta=1.0), "beta"),
    (dict(max_wrap_probability=0.0), "max_wrap_probability"),
    (dict(rounding_inflation=0.0), "rounding_inflation"),
    (dict(neighbouring="add_remove_one"), "neighbouring"),
    (dict(target_epsilon=float("nan")), "target_epsilon"),
])
def test_bad_configurations_are_refused(overrides, match):
    with pytest.raises(InvalidPrivacyParameterError, match=match):
        config(**overrides)


def test_impossible_settings_are_refused_with_the_reason():
    # 32 bits cannot hold 4096 sites at a scaled clip of 2^20 without wrapping; 64 bits can.
    cfg = config(scale=2.0**20, min_contributors=1000, max_contributors=4096, bits=32)
    with pytest.raises(CalibrationError, match="wrap"):
        calibrate(cfg, 16)
    assert calibrate(dataclasses.replace(cfg, bits=None), 16).bits == 64
    # Noise far beyond what an exact table can hold.
    with pytest.raises(CalibrationError, match="table"):
        calibrate(config(target_epsilon=1e-4, rounds=1000), 1 << 20)
    with pytest.raises(CalibrationError, match="2\\^28"):
        calibrate(config(scale=1e9), 16)


def test_bad_events_are_refused():
    with pytest.raises(InvalidPrivacyParameterError, match="sigma >= 1/2"):
        event(local_variance=0.2)
    with pytest.raises(InvalidPrivacyParameterError, match="mechanism"):
        event(mechanism="laplace")
    with pytest.raises(InvalidPrivacyParameterError, match="no distributed-DP events"):
        compute_distributed_epsilon([], 1e-5)
    with pytest.raises(InvalidPrivacyParameterError, match="delta"):
        compute_distributed_epsilon([event()], 0.0)
    with pytest.raises(InvalidPrivacyParameterError, match="DistributedDpEvent"):
        compute_distributed_epsilon([{"round": 0}], 1e-5)


def test_bad_inputs_to_privatize_and_decode_are_refused():
    cal = calibrate(config(), 10)
    with pytest.raises(InvalidPrivacyParameterError, match="NaN"):
        privatize(np.array([np.nan] + [0.0] * 9), cal, SEED)
    with pytest.raises(InvalidPrivacyParameterError, match="length 10"):
        privatize(np.zeros(11), cal, SEED)
    with pytest.raises(InvalidPrivacyParameterError, match="seed"):
        privatize(np.zeros(10), cal, b"x")
    ring = privatize(np.zeros(10), cal, SEED)
    with pytest.raises(InvalidPrivacyParameterError, match="n_contributors"):
        decode_sum(ring, cal, SEED, 2)  # below the threshold: the calibration assumed 3 noise shares
    with pytest.raises(InvalidPrivacyParameterError, match="n_contributors"):
        decode_sum(ring, cal, SEED, 6)
    with pytest.raises(InvalidPrivacyParameterError, match="ring vector"):
        decode_sum(ring.astype(np.uint64), cal, SEED, 3)
    with pytest.raises(InvalidPrivacyParameterError, match="CalibratedDistributedDp"):
        privatize(np.zeros(10), cal.config, SEED)
    assert isinstance(cal, CalibratedDistributedDp)
