"""TEST ONLY: seeded DP sampling and noise, injected explicitly (never the default; needs secure_rng=False)."""

import numpy as np


class SeededTestRandomness:
    """Seeded Poisson sampling and Gaussian noise for one site, for reproducible privacy tests."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def poisson_mask(self, n, q):
        return self.rng.random(n) < q

    def gaussian(self, shape, std):
        return self.rng.normal(0.0, std, size=shape)
