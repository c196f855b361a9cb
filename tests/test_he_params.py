"""CKKS parameter choice: security table, precision (measured), expansion (measured), lazy TenSEAL import."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from secagg.errors import InfeasibleParametersError, InvalidInputError
from secagg.he import HEParameters, find_he_parameters
from secagg.he.params import SEAL_MAX_COEFF_BITS_128


@pytest.mark.parametrize("n", [2, 3, 10, 40, 100, 1000])
@pytest.mark.parametrize("m", [10, 2048, 2049, 100_000])
def test_finder_meets_security_precision_and_capacity(n, m):
    p = find_he_parameters(vector_length=m, max_summands=n)
    assert p.poly_modulus_degree == (4096 if m <= 2048 else 8192)
    assert sum(p.coeff_mod_bit_sizes) <= SEAL_MAX_COEFF_BITS_128[p.poly_modulus_degree]
    assert p.error_bound <= 0.25
    # Default precision: the masking path's default 32-bit ring.
    assert p.bound == (2**31 - 1) // n
    assert p.fits((1 << p.data_bits) - (1 << (p.data_bits - 8)))
    assert p.data_bits in (48, 56)


def test_coarser_resolution_picks_a_smaller_prime_and_finer_a_larger_one():
    coarse = find_he_parameters(vector_length=1000, max_summands=10, resolution=1e-5)
    fine = find_he_parameters(vector_length=1000, max_summands=10, resolution=1e-11)
    finest = find_he_parameters(vector_length=1000, max_summands=1000, resolution=2.0**-30)
    assert coarse.data_bits == 40 and coarse.resolution <= 1e-5
    assert fine.data_bits == 56 and fine.resolution <= 1e-11
    assert finest.data_bits == 60 and finest.resolution <= 2.0**-30


def test_impossible_requests_are_refused_with_a_reason():
    with pytest.raises(InfeasibleParametersError, match="coarser resolution"):
        find_he_parameters(vector_length=10, max_summands=10, resolution=1e-13)
    with pytest.raises(InfeasibleParametersError):
        find_he_parameters(vector_length=10, max_summands=10, data_bits=40)  # default precision needs more
    with pytest.raises(InfeasibleParametersError):
        find_he_parameters(vector_length=10, max_summands=10, poly_modulus_degree=2048)
    with pytest.raises(InvalidInputError):
        find_he_parameters(vector_length=0, max_summands=10)
    with pytest.raises(InvalidInputError):
        find_he_parameters(vector_length=10, max_summands=10, clip=float("nan"))


def test_hand_built_parameters_are_checked():
    good = find_he_parameters(vector_length=10, max_summands=4)
    fields = dict(poly_modulus_degree=good.poly_modulus_degree, coeff_mod_bit_sizes=good.coeff_mod_bit_sizes,
                  scale=good.scale, bound=good.bound, clip=good.clip, max_summands=good.max_summands)
    assert HEParameters(**fields) == good
    with pytest.raises(InfeasibleParametersError, match="128-bit"):
        HEParameters(**{**fields, "coeff_mod_bit_sizes": (60, 60)})  # 120 > 109 bits for N = 4096
    with pytest.raises(InfeasibleParametersError, match="noise"):
        HEParameters(**{**fields, "scale": 64})
    with pytest.raises(InfeasibleParametersError, match="cannot hold"):
        HEParameters(**{**fields, "scale": good.scale * 2**20})
    with pytest.raises(InfeasibleParametersError):
        HEParameters(**{**fields, "poly_modulus_degree": 1024})
    with pytest.raises(InvalidInputError):
        HEParameters(**{**fields, "bound": 0})


def test_chunking_packs_n_over_2_values_per_ciphertext():
    p = find_he_parameters(vector_length=10_000, max_summands=3)
    assert p.chunk_lengths(10_000) == (4096, 4096, 1808)
    assert p.chunk_lengths(8192) == (4096, 4096)
    assert p.describe()["slots_per_ciphertext"] == 4096


# -- measured with TenSEAL ------------------------------------------------------------------


def test_measured_precision_of_a_sum_and_expansion():
    """Raw CKKS error of a sum of n = 10 encrypted vectors stays far inside the bound; <= 8x float32."""
    pytest.importorskip("tenseal")
    from secagg.he import CKKSContext

    n, m = 10, 8192
    p = find_he_parameters(vector_length=m, max_summands=n)
    ctx = CKKSContext.generate(p)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(-p.bound, p.bound + 1, m) for _ in range(n)]
    total = None
    size = 0
    for x in inputs:
        chunks = ctx.encrypt(x.astype(np.int64))
        size += sum(map(len, chunks))
        total = ctx.add(total, ctx.load(chunks, m))
    raw = np.concatenate([np.array(v.decrypt()) for v in total])  # the noisy decryption (test only)
    exact = np.sum(inputs, axis=0)
    raw_error = float(np.max(np.abs(raw - exact)))
    assert raw_error < p.noise_bound
    rounded = ctx.decrypt_sum(total, summands=n, vector_length=m)
    np.testing.assert_array_equal(rounded, exact)
    bytes_per_float32 = size / (n * m) / 4
    assert bytes_per_float32 <= 8.0
    print(f"\nN={p.poly_modulus_degree} primes={p.coeff_mod_bit_sizes} scale={p.scale}: raw max error "
          f"{raw_error:.4f} units (bound {p.noise_bound:.4f}); expansion {bytes_per_float32:.2f}x float32")


def test_tenseal_missing_gives_a_clear_error_and_import_still_works():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tenseal"] = None  # as if TenSEAL were not installed
        import numpy as np
        import secagg, secagg.he
        from secagg.he import HEUnavailableError, run_local_he, tenseal_available
        assert not tenseal_available()
        try:
            run_local_he({0: np.zeros(3), 1: np.zeros(3)}, threshold=2)
        except HEUnavailableError as exc:
            assert "pip install 'secagg[he]'" in str(exc), exc
            assert isinstance(exc, secagg.LocalProtocolError) and isinstance(exc, ImportError)
            print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
