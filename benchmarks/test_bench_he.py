"""HE path (CKKS via TenSEAL): encrypt, sum and decrypt time and bytes per parameter.

Two configurations side by side, for 100k and 1M parameters (the 1M cases are
marked ``slow``: deselect with ``-m "not slow"``):

* ``ours``: :func:`secagg.he.find_he_parameters` for n = 10 sites (N = 8192, one
  48-bit data prime, symmetric-key encryption, integer encodings, exact
  rounded decryption; the default precision of the masking path).
* ``peer``: a common TenSEAL federated-learning setting: N = 8192,
  coeff_mod_bit_sizes = [60, 40, 40], scale 2^40, public-key encryption of the
  raw float32 values, raw (noisy) decryption.

Measured per configuration: one site's encryption of its update (ours includes
the fixed-point encoding), the coordinator's sum of n = 10 uploads (parse +
add; the same upload is reused to keep setup short, which costs the same as
distinct ones), and the key holder's decryption of the sum (ours includes the
rounding and range checks). ``extra_info`` records ciphertext bytes per
parameter and the expansion over float32.
"""

from __future__ import annotations

import numpy as np
import pytest

tenseal = pytest.importorskip("tenseal")

from secagg.he import CKKSContext, find_he_parameters  # noqa: E402

from .conftest import record  # noqa: E402

SITES = 10
SIZES = [
    pytest.param(100_000, id="100k"),
    pytest.param(1_000_000, id="1m", marks=pytest.mark.slow),
]
CONFIGS = ["ours", "peer_60_40_40"]
_LABEL = {100_000: "100k", 1_000_000: "1m"}


class _Ours:
    """The project's HE path (what the sessions call)."""

    def __init__(self, m: int) -> None:
        self.m = m
        self.params = find_he_parameters(vector_length=m, max_summands=SITES)
        self.private = CKKSContext.generate(self.params)
        self.public = CKKSContext.from_public_bytes(self.private.public_bytes, self.params)
        self.update = np.random.default_rng(0).uniform(-1, 1, m)

    def encrypt(self):
        return self.private.encrypt(self.params.encoder.encode(self.update).ring.view(np.int64))

    def sum(self, uploads):
        total = None
        for chunks in uploads:
            total = self.public.add(total, self.public.load(chunks, self.m))
        return self.public.serialize(total)

    def decrypt(self, summed):
        return self.private.decrypt_sum(self.private.load(summed, self.m), summands=SITES, vector_length=self.m)


class _Peer:
    """TenSEAL as commonly configured for FL: [60, 40, 40], scale 2^40, public-key CKKS, raw floats."""

    def __init__(self, m: int) -> None:
        ts = tenseal
        self.m = m
        self.ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40])
        self.ctx.global_scale = 2.0**40
        self.public = ts.context_from(self.ctx.serialize(save_secret_key=False))
        self.slots = 4096
        self.update = np.random.default_rng(0).uniform(-1, 1, m).astype(np.float32)

    def encrypt(self):
        values = self.update.astype(np.float64)
        return tuple(
            tenseal.ckks_vector(self.ctx, values[i : i + self.slots]).serialize() for i in range(0, self.m, self.slots)
        )

    def sum(self, uploads):
        total = None
        for chunks in uploads:
            vectors = [tenseal.ckks_vector_from(self.public, c) for c in chunks]
            total = vectors if total is None else [a + b for a, b in zip(total, vectors)]
        return tuple(v.serialize() for v in total)

    def decrypt(self, summed):
        return np.concatenate([np.array(tenseal.ckks_vector_from(self.ctx, c).decrypt()) for c in summed])


_CACHE: dict = {}


def _setup(config: str, m: int):
    key = (config, m)
    if key not in _CACHE:
        impl = _Ours(m) if config == "ours" else _Peer(m)
        upload = impl.encrypt()
        summed = impl.sum([upload] * SITES)
        _CACHE[key] = (impl, upload, summed)
    return _CACHE[key]


def _bytes_info(benchmark, m: int, upload) -> None:
    size = sum(map(len, upload))
    benchmark.extra_info["ciphertext_bytes_per_parameter"] = size / m
    benchmark.extra_info["expansion_over_float32"] = size / m / 4


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", SIZES)
def test_he_encrypt(benchmark, config, m):
    impl, upload, _ = _setup(config, m)
    benchmark.pedantic(impl.encrypt, rounds=3 if m < 1_000_000 else 2, warmup_rounds=0)
    _bytes_info(benchmark, m, upload)
    record(benchmark, f"he_{config}_encrypt_one_site_{_LABEL[m]}")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", SIZES)
def test_he_sum(benchmark, config, m):
    impl, upload, _ = _setup(config, m)
    benchmark.pedantic(impl.sum, args=([upload] * SITES,), rounds=3 if m < 1_000_000 else 2, warmup_rounds=0)
    _bytes_info(benchmark, m, upload)
    record(benchmark, f"he_{config}_coordinator_sum_{SITES}_sites_{_LABEL[m]}")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("m", SIZES)
def test_he_decrypt(benchmark, config, m):
    impl, upload, summed = _setup(config, m)
    out = benchmark.pedantic(impl.decrypt, args=(summed,), rounds=3 if m < 1_000_000 else 2, warmup_rounds=0)
    assert len(out) == m
    _bytes_info(benchmark, m, upload)
    record(benchmark, f"he_{config}_decrypt_sum_{_LABEL[m]}")
