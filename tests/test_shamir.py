"""Shamir sharing over GF(2^256 + 297): reconstruction, hiding, corruption detection."""

import itertools
import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import shamir
from secagg.errors import InvalidInputError, ReconstructionError


def test_modulus_is_the_smallest_prime_above_2_256():
    sympy = pytest.importorskip("sympy")
    assert sympy.isprime(shamir.PRIME)
    assert sympy.nextprime(2**256) == shamir.PRIME


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(2, 12),
    data=st.data(),
)
def test_any_t_shares_reconstruct(secret, n, data):
    t = data.draw(st.integers(1, n))
    ids = data.draw(st.lists(st.integers(0, 2**32 - 2), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, [shamir.x_coordinate(i) for i in ids])
    subset = data.draw(st.lists(st.sampled_from(sorted(shares)), min_size=t, max_size=n, unique=True))
    assert shamir.reconstruct({x: shares[x] for x in subset}, t) == secret


def test_every_subset_of_size_t_reconstructs():
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 3, range(1, 7))
    for subset in itertools.combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3) == secret


def test_fewer_than_t_shares_refused():
    shares = shamir.split(secrets.token_bytes(32), 4, range(1, 8))
    with pytest.raises(ReconstructionError):
        shamir.reconstruct({x: shares[x] for x in list(shares)[:3]}, 4)


def test_t_minus_one_shares_hide_the_secret():
    """With t = 2 a single share is uniform on GF(p) whatever the secret: compare top bytes."""
    from scipy.stats import ks_2samp

    def top_share_values(secret):
        return np.array([shamir.split(secret, 2, [1, 2])[1] >> 240 for _ in range(3000)])

    zeros, ones = top_share_values(bytes(32)), top_share_values(b"\xff" * 32)
    assert ks_2samp(zeros, ones).pvalue > 1e-6
    assert abs(zeros.mean() / 2**16 - 0.5) < 0.03


def test_corrupted_surplus_share_is_detected():
    secret = secrets.token_bytes(32)
    shares = shamir.split(secret, 3, range(1, 6))
    shares[4] = (shares[4] + 1) % shamir.PRIME
    with pytest.raises(ReconstructionError):
        shamir.reconstruct(shares, 3)  # checks one surplus share by default
    shares[4] = (shares[4] - 1) % shamir.PRIME
    shares[5] = (shares[5] + 1) % shamir.PRIME
    assert shamir.reconstruct(shares, 3, check_extra=1) == secret
    with pytest.raises(ReconstructionError):
        shamir.reconstruct(shares, 3, check_extra=2)


def test_input_validation():
    with pytest.raises(InvalidInputError):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(InvalidInputError):
        shamir.split(secrets.token_bytes(32), 3, [1, 2])
    with pytest.raises(InvalidInputError):
        shamir.split(secrets.token_bytes(32), 2, [1, 1])
    with pytest.raises(InvalidInputError):
        shamir.x_coordinate(-1)
