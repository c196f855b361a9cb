"""``secagg export``: a finished run directory's federated model as one self-describing file.

:func:`model_from_run` assembles what :mod:`models.modelfile` stores from the
run directory: the global weights (``checkpoints/global.pt``; for FedDis
models completed by the local appearance and decoder parts of the site whose
personalised model was evaluated, ``site-local/checkpoints/NAME.pt``), the
architecture and preprocessing of ``config.json``, the detection threshold
that the run fixed on its healthy validation volumes (``summary.json``), and
the privacy guarantee: the guarantee's unit and delta from ``summary.json``,
epsilon per site and the accountant re-derived from the privacy ledger by
:func:`dp.verify_ledger`. A run whose ledger does not verify is refused: its
model's guarantee could not be stated.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..federation.runstore import RunDirectory, RunDirectoryError

__all__ = ["model_from_run", "export_run"]


def _summary(run_dir: Path) -> dict:
    path = RunDirectory(run_dir).summary_path
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirectoryError(f"{run_dir} has no summary.json: the run has not finished") from None
    except ValueError:
        raise RunDirectoryError(f"{path} is corrupt") from None
    if "detection_threshold" not in summary:
        raise RunDirectoryError(f"{path} records no detection threshold (a run from an older secagg); "
                                "re-run it to export its model")
    return summary


def model_from_run(run_dir):
    """The run's federated model as a :class:`models.modelfile.ModelFile` (nothing written)."""
    import torch

    from models import PreprocessConfig, create_model
    from models.modelfile import ModelFile

    from ..federation.setup import resume_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{run_dir} is not a directory")
    config = resume_config(run_dir)  # checks the fingerprint
    summary = _summary(run_dir)
    store = RunDirectory(run_dir)
    threshold = dict(summary["detection_threshold"])
    model = create_model(config.model, image_size=config.image_size)
    site_model = threshold.get("site_model")
    if site_model:
        model.load_state_dict(store.load_site_model(site_model))
    shared = store.load_torch("global.pt")
    with torch.no_grad():
        params = dict(model.named_parameters())
        unknown = set(shared) - set(params)
        if unknown:
            raise RunDirectoryError(f"{store.checkpoints / 'global.pt'} holds parameters the model lacks: "
                                    f"{sorted(unknown)[:3]}")
        for name, value in shared.items():
            params[name].copy_(value)
    from ..federation.ledger_check import verify_run_ledger

    check = verify_run_ledger(run_dir)
    report = check.report
    if not report.ok:
        raise RunDirectoryError(f"{run_dir}: the privacy ledger does not verify ({report.reason}); refusing to "
                                "export a model whose privacy guarantee cannot be stated")
    privacy = summary["privacy"]
    epsilons = {site: e["bound"] for site, e in report.epsilon.items()}
    accountants = sorted({e["bound_accountant"] for e in report.epsilon.values() if e.get("bound_accountant")})
    guarantee = {
        "unit": privacy["guarantee"],
        "delta": privacy["delta"],
        "epsilon_per_site": epsilons,
        "epsilon_max": max(epsilons.values()) if epsilons else None,
        "budget_per_site": privacy["budget_per_site"],
        "accountant": ", ".join(accountants) or privacy.get("calibration_accountant"),
        "noise_multiplier": privacy["noise_multiplier"],
        "sample_rate": privacy["sample_rate"],
        "clipping_norm": privacy["clipping_norm"],
        "site_level": privacy.get("site_level"),
        "source": f"privacy ledger of the run, verified by dp.verify_ledger: {check.scope}",
    }
    median = threshold.pop("median_size")
    modality = (config.bids or {}).get("suffix", "FLAIR")
    return ModelFile(
        architecture=config.model, image_size=config.image_size,
        preprocess=PreprocessConfig(image_size=config.image_size), threshold=threshold,
        median_size=int(median if isinstance(median, int) else median[0]), privacy=guarantee, modality=modality,
        source={"run_dir": str(run_dir.resolve()), "config_fingerprint": config.fingerprint(), "mode": config.mode,
                "rounds_completed": summary.get("rounds_completed"), "data": summary.get("data")},
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    )


def export_run(run_dir, out) -> tuple[Path, object]:
    """Write the run's model to ``out`` (:func:`models.modelfile.save_model_file`); returns (path, ModelFile)."""
    from models.modelfile import save_model_file

    model = model_from_run(run_dir)
    return save_model_file(out, model), model
