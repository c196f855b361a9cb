"""EXPERIMENT ONLY: seeded DP sampling and noise, so that an experiment can be repeated exactly.

**Seeded noise is not a privacy guarantee.** Anyone who knows the seed can
regenerate the noise and subtract it; the accounted epsilon then protects
nothing. The default of every real run (``secagg simulate``, the Flower
apps) is the CSPRNG of :mod:`dp.training` (AES-CTR keyed from ``secrets``),
and nothing in :class:`~simulation.config.SimulationConfig`, the
``simulate`` flags or the Flower configuration can select this generator:
only :func:`simulation.engines.inprocess.simulate.run_simulation`'s keyword
``experiment_noise=`` does, which ``secagg experiment`` alone passes, and it
needs ``secure_rng = false`` so that every ledger event records that the
noise did not come from the CSPRNG. Every output an experiment writes
carries :data:`SEEDED_NOISE_LABEL`.

Streams. One :class:`SeededExperimentNoise` per (experiment seed, arm);
:meth:`SeededExperimentNoise.for_site` gives each site (or baseline) its own
independent stream from ``numpy.random.SeedSequence([seed, arm, site])``
(arm and site names hashed to integers with SHA-256, so the streams do not
depend on the order in which they are created). Each stream counts the
privacy units it sampled (the arm's measured sample visits).

Why numpy here: :mod:`dp` and :mod:`secagg` never use ``numpy.random`` for
noise (the project's rule); this module lives in :mod:`simulation`, is
reached only from the experiment, and says what it is in its name.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["SEEDED_NOISE_LABEL", "SeededExperimentNoise", "SeededStream"]

#: The label every experiment output carries.
SEEDED_NOISE_LABEL = "seeded noise: not a privacy guarantee"


def _word(text: str) -> int:
    """A stable 64-bit integer for a name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class SeededStream:
    """One site's seeded Poisson sampling and Gaussian noise (the interface of :func:`dp.train_dp_sgd`'s
    ``randomness``); counts the units sampled and the steps taken."""

    secure = False
    label = SEEDED_NOISE_LABEL

    def __init__(self, seed: int, arm: str, site: str) -> None:
        self.seed, self.arm, self.site = int(seed), arm, site
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, _word(arm), _word(site)]))
        self.units_sampled = 0
        self.steps = 0

    def poisson_mask(self, n: int, q: float) -> np.ndarray:
        mask = self._rng.random(int(n)) < q
        self.units_sampled += int(mask.sum())
        self.steps += 1
        return mask

    def gaussian(self, shape, std: float) -> np.ndarray:
        return self._rng.normal(0.0, std, size=tuple(shape))


class SeededExperimentNoise:
    """The seeded noise of one arm of one experiment seed: a :class:`SeededStream` per site."""

    label = SEEDED_NOISE_LABEL

    def __init__(self, seed: int, arm: str) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"an experiment seed must be an integer >= 0; got {seed!r}")
        self.seed, self.arm = seed, str(arm)
        self.streams: dict[str, SeededStream] = {}

    def for_site(self, site: str) -> SeededStream:
        """The stream of ``site`` (created once; the same object on every call)."""
        if site not in self.streams:
            self.streams[site] = SeededStream(self.seed, self.arm, site)
        return self.streams[site]

    @property
    def units_sampled(self) -> int:
        """Privacy units (patients, or slices at slice level) sampled over all streams so far."""
        return sum(s.units_sampled for s in self.streams.values())

    def describe(self) -> dict:
        return {"label": SEEDED_NOISE_LABEL, "seed": self.seed, "arm": self.arm,
                "generator": "numpy PCG64 from SeedSequence([seed, sha256(arm), sha256(site)])",
                "units_sampled": {name: s.units_sampled for name, s in sorted(self.streams.items())}}
