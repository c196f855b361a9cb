"""``secagg audit RUN_DIR --own-training``: audit a run's own DP-SGD (glue for :func:`dp.audit.audit_training`).

What is audited: one site's local DP-SGD exactly as the run configured it - the
model architecture and initial weights (``config.json``: model, image size,
seed), the site's real training slices and patients (the run's cohort, loaded
or regenerated from the cache as the run did), sigma, q, the clipping norm and
delta as the ledger recorded them, every step the site spent (the sum over its
ledger events), the privacy unit, the public normaliser, the optimiser and
learning rate - with gradient canaries mixed in as extra units. The
difference from the run: the site's steps run in one go from the initial
weights, while the run reloads the global weights and restarts the optimiser
each round (FedAvg is post-processing of each site's DP-SGD output, so the
per-site guarantee audited is the same); the secure-aggregation sum itself is
not attacked. See :mod:`dp.audit`.
"""

from __future__ import annotations

from ..federation.runstore import RunDirectoryError

__all__ = ["audit_own_training"]


def _site_privacy(run_dir, site: str | None) -> tuple:
    """(site, sigma, q, steps of that site, delta, C) from the run's ledger."""
    from dp.ledger import PrivacyLedger

    with PrivacyLedger.open(run_dir) as ledger:
        sites = sorted(ledger.budgets)
        name = site if site is not None else (sites[0] if sites else None)
        if name not in sites:
            raise RunDirectoryError(f"{run_dir}: no site {site!r} in the ledger; sites: {', '.join(sites) or 'none'}")
        events = list(ledger.events(name))
        delta = ledger.delta
    if not events:
        raise RunDirectoryError(f"{run_dir}: the ledger records no release of site {name} to audit")
    if len({e.noise_multiplier for e in events}) > 1 or len({e.sample_rate for e in events}) > 1 or \
            len({e.clipping_norm for e in events}) > 1:
        raise RunDirectoryError(f"{run_dir}: site {name} used several (sigma, q, C); the audit needs one")
    first = events[0]
    return name, first.noise_multiplier, first.sample_rate, sum(e.steps for e in events), delta, first.clipping_norm


def audit_own_training(run_dir, *, site: str | None = None, canaries="auto", guesses_per_side=None,
                       confidence: float = 0.95, delta: float | None = None, max_canaries: int | None = None,
                       effective_noise_multiplier: float | None = None):
    """Audit the DP-SGD of ``site`` (default: the first in the ledger) of the run in ``run_dir``.

    ``delta`` overrides the run's (the accounted epsilon is then taken at that delta);
    ``effective_noise_multiplier`` is for tests only (train with another sigma than the
    accounted one). Returns a :class:`dp.audit.AuditResult` (mode "own-training").
    """
    from dataclasses import replace

    from dp.audit import DEFAULT_MAX_CANARIES, audit_training

    from ..federation.setup import dp_sgd_config, resume_config
    from ..engines.inprocess.simulate import new_model, prepare_cohort

    config = resume_config(run_dir)  # checks the stored fingerprint
    name, sigma, q, steps, run_delta, clip = _site_privacy(run_dir, site)
    if q != config.sample_rate or clip != config.max_grad_norm:
        raise RunDirectoryError(f"{run_dir}: the ledger's q/C differ from config.json; the run cannot be audited")
    cohort = prepare_cohort(config, lambda *_: None)
    if name not in cohort.train:
        raise RunDirectoryError(f"{run_dir}: site {name} of the ledger is not in the run's cohort")
    import torch

    data = torch.from_numpy(cohort.train[name])
    dp_config = replace(dp_sgd_config(config, sigma, steps=steps), delta=delta if delta is not None else run_delta)
    return audit_training(
        new_model(config), data, dp_config, patients=cohort.patients[name], canaries=canaries,
        guesses_per_side=guesses_per_side, confidence=confidence,
        max_canaries=max_canaries if max_canaries is not None else DEFAULT_MAX_CANARIES,
        effective_noise_multiplier=effective_noise_multiplier, site=name,
        model_name=f"{config.model} ({config.image_size}x{config.image_size}, the run's architecture)")
