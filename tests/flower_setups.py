"""A valid round setup for the Flower node's unit tests, with any field overridden (shared by several test files)."""

from __future__ import annotations

import secagg
from simulation.engines.flower.transport import RoundSetup

__all__ = ["round_setup"]


def round_setup(**overrides) -> RoundSetup:
    """Site 3 of four (threshold 3) in round 2 of run abc-123, DP-SGD on the compact autoencoder."""
    session = secagg.SessionConfig(session_id=secagg.new_session_id(), participants=(1, 2, 3, 4), threshold=3,
                                   vector_length=101, bit_width=32, degree=None)
    session = overrides.pop("session", session)
    values = dict(session=session, site_names=tuple(f"site-{p}" for p in session.participants), round_index=2, client_id=3, site="site-3", run_id="abc-123",
                  noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.1, local_steps=3, learning_rate=2e-3,
                  delta=1e-5, secure_rng=True, clip=1.0, max_summands=4, encoder_bound=12345, weight_bound=64.0,
                  model="compact-ae", image_size=32, model_seed=0, val_fraction=0.25, split_seed=0,
                  update="dp-sgd", update_length=100, synthetic_seed=0, stage_timeout=30.0, simulate_drop="")
    return RoundSetup(**(values | overrides))
