"""Fixed-point encoding: no wrap-around, error bounds, unbiased rounding, bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secagg.encoding import FixedPointEncoder, weighted_mean, weighted_vector
from secagg.errors import InfeasibleParametersError, InvalidInputError

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 50),
    clip=st.floats(0.01, 100),
    data=st.data(),
)
def test_sum_decodes_within_n_steps(n, clip, data):
    encoder = FixedPointEncoder.create(clip=clip, max_summands=n)
    vectors = [data.draw(arrays(np.float64, 8, elements=st.floats(-3 * clip, 3 * clip))) for _ in range(n)]
    total = np.zeros(8, dtype=encoder.dtype)
    for v in vectors:
        total += encoder.encode(v).ring
    exact = sum(np.clip(v, -clip, clip) for v in vectors)
    assert np.all(np.abs(encoder.decode(total) - exact) <= n * encoder.resolution * (1 + 1e-9))


@pytest.mark.parametrize("bit_width", [32, 64])
def test_extreme_inputs_never_wrap(bit_width):
    n = 1000
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=n, bit_width=bit_width)
    top = encoder.encode(np.full(4, 5.0)).ring
    bottom = encoder.encode(np.full(4, -5.0)).ring
    assert np.allclose(encoder.decode(top * np.array(n, dtype=encoder.dtype)), n, atol=n * encoder.resolution)
    assert np.allclose(encoder.decode(bottom * np.array(n, dtype=encoder.dtype)), -n, atol=n * encoder.resolution)


def test_clipping_is_reported():
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=3)
    assert encoder.encode(np.array([0.5, 2.0, -3.0, 1.0])).clipped == 2


def test_stochastic_rounding_is_unbiased():
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=2**29)  # coarse: S = 3
    assert encoder.resolution == pytest.approx(1 / 3)
    value = 0.1  # 0.3 steps: rounds up to one step with probability 0.3
    decoded = encoder.decode(encoder.encode(np.full(200_000, value)).ring)
    assert set(np.round(np.unique(decoded), 9)) <= {0.0, round(1 / 3, 9)}
    assert abs(decoded.mean() - value) < 0.003  # ~9 standard errors


def test_bit_width_grows_when_resolution_needs_it():
    assert FixedPointEncoder.create(clip=1.0, max_summands=100, resolution=1e-6).bit_width == 32
    assert FixedPointEncoder.create(clip=1.0, max_summands=100_000, resolution=1e-6).bit_width == 64
    with pytest.raises(InfeasibleParametersError, match="resolution"):
        FixedPointEncoder.create(clip=1.0, max_summands=100_000, resolution=1e-16)
    with pytest.raises(InfeasibleParametersError):
        FixedPointEncoder.create(clip=1.0, max_summands=100_000, resolution=1e-6, bit_width=32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused(bad):
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=3)
    with pytest.raises(InvalidInputError, match="NaN/Inf"):
        encoder.encode(np.array([0.0, bad]))


def test_wrong_shapes_and_parameters_refused():
    encoder = FixedPointEncoder.create(clip=1.0, max_summands=3)
    with pytest.raises(InvalidInputError, match="1-D"):
        encoder.encode(np.zeros((2, 2)))
    with pytest.raises(InvalidInputError, match="length 3"):
        encoder.encode(np.zeros(2), length=3)
    with pytest.raises(InvalidInputError):
        encoder.encode(["a", "b"])
    for kwargs in ({"clip": 0, "max_summands": 3}, {"clip": 1.0, "max_summands": 0},
                   {"clip": float("nan"), "max_summands": 3}, {"clip": 1.0, "max_summands": 3, "bit_width": 16}):
        with pytest.raises(InvalidInputError):
            FixedPointEncoder.create(**kwargs)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(1, 10))
def test_weighted_mean_recovers_fedavg(data, n):
    clip = 1.0
    updates = [data.draw(arrays(np.float64, 5, elements=st.floats(-1, 1))) for _ in range(n)]
    weights = [data.draw(st.floats(1, 500)) for _ in range(n)]
    total = sum(weighted_vector(u, w, max_weight=500, clip=clip) for u, w in zip(updates, weights))
    mean, weight_sum = weighted_mean(total, clip=clip)
    expected = sum(w * u for u, w in zip(updates, weights)) / sum(weights)
    assert np.allclose(mean, expected)
    assert weight_sum == pytest.approx(sum(weights) / 500)


def test_weighted_vector_refuses_bad_weights():
    with pytest.raises(InvalidInputError):
        weighted_vector(np.zeros(3), 0.0, max_weight=10, clip=1.0)
    with pytest.raises(InvalidInputError):
        weighted_vector(np.zeros(3), 11, max_weight=10, clip=1.0)
