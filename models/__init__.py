"""Brain-MRI side: NIfTI I/O and preprocessing, synthetic cohorts, autoencoders, anomaly scoring.

A tour (the CPU demo's sizes)::

    import models

    manifest = models.generate_cohort("data/tiny", scale="tiny", seed=0)      # 4 sites, NIfTI + cohort.json
    sites = models.load_cohort("data/tiny", image_size=64, cache_dir="data/cache")
    split = models.split_healthy(sites["site-1"], val_fraction=0.2, seed=0)   # by subject
    x = models.training_array(split.train)                                   # (N, 1, 64, 64) float32

    model = models.create_model("compact-feddis", image_size=64)             # Opacus-compatible
    models.shared_parameter_names(model)                                     # shape encoder only
    ...                                                                      # train (dp/, simulation/)
    report = models.evaluate(model, split.val, sites["site-1"].pathology, fpr=0.01, median_size=3)
    print(report.summary())                                                  # model beside intensity baseline

Modules, one job each: :mod:`~models.nifti` (read/write, canonical RAS),
:mod:`~models.preprocess` (mask, normalisation, resampling, slices),
:mod:`~models.cache` (and :mod:`~models.owner_only`, its 0700 folders), :mod:`~models.dataset` (site layout, splits), :mod:`~models.bids` (BIDS datasets),
:mod:`~models.atlas` / :mod:`~models.lesions` / :mod:`~models.synth` /
:mod:`~models.manifest` (synthetic cohorts), :mod:`~models.autoencoders` /
:mod:`~models.registry` / :mod:`~models.feddis` (models and the FedDis objective), :mod:`~models.scoring` /
:mod:`~models.metrics` / :mod:`~models.evaluation` (detection),
:mod:`~models.figures` (PNGs), :mod:`~models.modelfile` (exported models) /
:mod:`~models.detect` (NIfTI anomaly maps of new scans), :mod:`~models.prepare` (raw scans to
model input), :mod:`~models.errors`.

``models`` imports nothing from the project's other packages. Names are
loaded lazily on first use, so ``import models`` is cheap and the pure-numpy
parts (metrics) work without torch; the heavy dependencies come with
``pip install secagg[mri]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import (
    ConfigError,
    DatasetError,
    MissingDependencyError,
    ModelsError,
    ModelsWarning,
    NiftiError,
    PreprocessWarning,
    ScoringError,
    SkippedFilesWarning,
    UnknownModelError,
)

_LAZY: dict[str, str] = {
    # NIfTI I/O and preprocessing
    "NiftiVolume": "nifti",
    "load_nifti": "nifti",
    "VolumeLimits": "nifti",
    "NiftiHeader": "nifti",
    "read_nifti_header": "nifti",
    "load_mask": "nifti",
    "save_nifti": "nifti",
    "PreprocessConfig": "preprocess",
    "SliceVolume": "preprocess",
    "preprocess_volume": "preprocess",
    "derive_brain_mask": "preprocess",
    "PreprocessCache": "cache",
    "owner_only_dirs": "owner_only",
    # site layout
    "SiteData": "dataset",
    "HealthySplit": "dataset",
    "SkippedFile": "dataset",
    "discover_site": "dataset",
    "load_site": "dataset",
    "load_cohort": "dataset",
    "split_healthy": "dataset",
    "training_array": "dataset",
    # BIDS datasets
    "BidsOptions": "bids",
    "BidsName": "bids",
    "BidsScan": "bids",
    "parse_bids_name": "bids",
    "is_bids_dataset": "bids",
    "find_bids_datasets": "bids",
    "discover_bids": "bids",
    "load_bids_cohort": "bids",
    "read_participants": "bids",
    "write_bids_cohort": "bids_synth",
    # exported models and detection on new scans
    "ModelFile": "modelfile",
    "ModelFileError": "modelfile",
    "save_model_file": "modelfile",
    "load_model_file": "modelfile",
    "ScanMismatchError": "detect",
    "DetectionResult": "detect",
    "check_scan": "detect",
    "check_scans": "detect",
    "detect_scan": "detect",
    "detect_raw_scan": "detect",
    "lesion_volume_ml": "detect",
    "PrepareOptions": "prepare",
    "prepare_scan": "prepare",
    "prepare_dataset": "prepare",
    "to_source_space": "prepare",
    "training_patients": "dataset",
    # synthetic cohorts
    "generate_cohort": "synth",
    "site_profiles": "synth",
    "SCALES": "synth",
    "LESION_TYPES": "synth",
    "GENERATOR_VERSION": "synth",
    "CohortManifest": "manifest",
    "SiteProfile": "manifest",
    "SubjectRecord": "manifest",
    # models
    "ConvAutoencoder": "autoencoders",
    "DisentangledAutoencoder": "autoencoders",
    "shared_parameter_names": "autoencoders",
    "count_parameters": "autoencoders",
    "FedDisLosses": "feddis",
    "feddis_loss": "feddis",
    "training_loss": "feddis",
    "ModelSpec": "registry",
    "CostMeasurement": "registry",
    "available_models": "registry",
    "model_spec": "registry",
    "create_model": "registry",
    "measure_cost": "registry",
    # scoring and metrics
    "RankingCurve": "metrics",
    "ranking_curve": "metrics",
    "auroc": "metrics",
    "auprc": "metrics",
    "dice": "metrics",
    "best_dice": "metrics",
    "threshold_at_fpr": "metrics",
    "Threshold": "scoring",
    "VolumeScores": "scoring",
    "as_reconstruct_fn": "scoring",
    "positive_residual": "scoring",
    "median_filter_scores": "scoring",
    "median_size_for": "scoring",
    "score_volume": "scoring",
    "intensity_scores": "scoring",
    "calibrate_threshold": "scoring",
    "DetectionMetrics": "evaluation",
    "MethodReport": "evaluation",
    "DetectionReport": "evaluation",
    "evaluate": "evaluation",
    "score_examples": "evaluation",
    # figures
    "plot_site_examples": "figures",
    "plot_detection": "figures",
    "plot_detection_examples": "figures",
}

# The errors (imported eagerly above: cheap, and what callers catch) are listed once, in models.errors.
__all__ = [*errors.__all__, *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    except ImportError as exc:
        if isinstance(exc, MissingDependencyError):
            raise
        raise MissingDependencyError(
            f"models.{name} needs {exc.name or 'an optional dependency'}; "
            f"install it with `pip install secagg[mri]` ({exc})"
        ) from exc
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see the real names
    from .autoencoders import ConvAutoencoder, DisentangledAutoencoder, count_parameters, shared_parameter_names
    from .bids import (
        BidsName,
        BidsOptions,
        BidsScan,
        discover_bids,
        find_bids_datasets,
        is_bids_dataset,
        load_bids_cohort,
        parse_bids_name,
        read_participants,
    )
    from .bids_synth import write_bids_cohort
    from .cache import PreprocessCache
    from .owner_only import owner_only_dirs
    from .detect import (DetectionResult, ScanMismatchError, check_scan, check_scans, detect_raw_scan, detect_scan,
                         lesion_volume_ml)
    from .dataset import (
        HealthySplit,
        SiteData,
        SkippedFile,
        discover_site,
        load_cohort,
        load_site,
        split_healthy,
        training_array,
        training_patients,
    )
    from .feddis import FedDisLosses, feddis_loss, training_loss
    from .evaluation import DetectionMetrics, DetectionReport, MethodReport, evaluate, score_examples
    from .figures import plot_detection, plot_detection_examples, plot_site_examples
    from .manifest import CohortManifest, SiteProfile, SubjectRecord
    from .prepare import PrepareOptions, prepare_dataset, prepare_scan, to_source_space
    from .modelfile import ModelFile, ModelFileError, load_model_file, save_model_file
    from .metrics import RankingCurve, auprc, auroc, best_dice, dice, ranking_curve, threshold_at_fpr
    from .nifti import NiftiHeader, NiftiVolume, VolumeLimits, load_mask, load_nifti, read_nifti_header, save_nifti
    from .preprocess import PreprocessConfig, SliceVolume, derive_brain_mask, preprocess_volume
    from .registry import CostMeasurement, ModelSpec, available_models, create_model, measure_cost, model_spec
    from .scoring import (
        Threshold,
        VolumeScores,
        as_reconstruct_fn,
        calibrate_threshold,
        intensity_scores,
        median_filter_scores,
        median_size_for,
        positive_residual,
        score_volume,
    )
    from .synth import GENERATOR_VERSION, LESION_TYPES, SCALES, generate_cohort, site_profiles
