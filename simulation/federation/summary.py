"""What ``summary.json`` says that every engine shares: the privacy part and the public facts per site.

The in-process simulation (:mod:`simulation.engines.inprocess.simulate`) and the Flower ServerApp
(:mod:`simulation.engines.flower.server_app`) write the same two parts, so a run's summary reads
the same whichever engine ran it.
"""

from __future__ import annotations

from ..config import SimulationConfig

__all__ = ["public_site_facts", "privacy_summary"]


def public_site_facts(config: SimulationConfig, site_names) -> dict:
    """What summary.json may say per site: its declared public weight and, if declared, public size."""
    weights = config.public_weights(site_names)
    facts = {}
    for name in sorted(site_names):
        facts[name] = {"public_weight": weights[name],
                       "weight_source": "declared" if config.site_weights is not None else "equal (default)",
                       "training_size": "held at the site (not released)"}
        if config.public_size is not None:
            facts[name]["declared_public_size"] = {"value": config.public_size, "unit": config.privacy_unit}
    return facts


def privacy_summary(config: SimulationConfig, noise_multiplier: float, metrics: list, ledger_verified: bool) -> dict:
    """The privacy part of ``summary.json`` (every engine): guarantee, parameters, spend, ledger check."""
    from dp.events import describe_guarantee

    guarantee = describe_guarantee(config.privacy_unit)
    unit_text = ("one patient (all of their slices; the GDPR data subject)" if config.privacy_unit == "patient"
                 else "one 2-D training slice - NOT one patient: a patient with k slices is protected only by "
                      "group privacy over k records")
    return {
        "guarantee": f"{guarantee}: DP of each site's released updates; the unit is {unit_text}",
        "privacy_unit": config.privacy_unit,
        "adjacency": f"add/remove one {config.privacy_unit}",
        "public_normaliser": (f"q * declared public size ({config.public_size})" if config.public_size is not None
                              else "1 (no declared public size)"),
        "max_slices_per_patient": config.max_slices_per_patient,
        "delta": config.delta,
        "budget_per_site": config.epsilon,
        "noise_multiplier": noise_multiplier,
        "sample_rate": config.sample_rate,
        "clipping_norm": config.max_grad_norm,
        "local_steps_per_round": config.local_steps,
        "calibration_accountant": "tightest of rdp, prv, pld",
        "epsilon_spent": metrics[-1]["epsilon"] if metrics else {},
        "epsilon_unit": guarantee,
        "ledger_verified": ledger_verified,
        "secure_rng": config.secure_rng,
        "site_level": None if not config.distributed_dp else {
            "guarantee": "site-level DP of each released sum (zero-out adjacency: one site's whole clipped "
                         "update), if at least t minus the tolerated colluding sites add honest noise",
            "mechanism": config.distributed_dp,
            "budget": config.ddp_epsilon,
            "delta": config.delta,
            "l2_clip": config.ddp_clip,
            "epsilon_spent": metrics[-1].get("site_level_epsilon") if metrics else {},
            "accountant": "RDP of the distributed discrete mechanism (dp.distributed)",
        },
    }
