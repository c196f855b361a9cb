"""Loading a site's volumes from the documented directory layout.

Layout of one site (real or synthetic)::

    ROOT/SITE/healthy/<name>.nii.gz              healthy volume (training / validation)
    ROOT/SITE/healthy/<name>_brainmask.nii.gz    optional brain mask
    ROOT/SITE/pathology/<name>.nii.gz            pathological volume (test)
    ROOT/SITE/pathology/<name>_mask.nii.gz       required voxel ground truth (1 = lesion)
    ROOT/SITE/pathology/<name>_brainmask.nii.gz  optional brain mask
    ROOT/SITE/pathology/<name>.json              optional sidecar: {"lesion_type": "ms"}

``.nii`` works wherever ``.nii.gz`` does. Files ending in ``_mask`` or
``_brainmask`` are never images. The lesion type of a pathological volume is
the sidecar's ``"lesion_type"`` if there is one, else the BIDS-style entity
``lesion-<type>`` in the file name (``sub-0011_lesion-ms.nii.gz`` -> ``"ms"``),
else unknown (``None``). Files without a NIfTI suffix (sidecars, notes) are
ignored. Either sub-directory may be absent, not both.

Errors: a missing or empty site, or a pathological volume without its
ground-truth mask, raises :class:`~models.errors.DatasetError`; an unusable
file raises :class:`~models.errors.NiftiError` naming it. That includes a
NIfTI-named path that is not a regular file (a symlink loop, a dangling
symlink, a symlink to a device such as ``/dev/zero``, a directory named
``*.nii.gz``, a FIFO: never opened), a header outside the resource limits
(:class:`~models.nifti.VolumeLimits`, checked before any voxel is read or any
cache entry is looked up), and running out of memory on one volume. With
``skip_invalid=True`` each of these is left out instead, one
:class:`~models.errors.SkippedFilesWarning` lists each with its reason, and
:attr:`SiteData.skipped` holds them (``secagg simulate --skip-invalid``
counts them in ``summary.json``); a site left with no volume at all still raises.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .cache import PreprocessCache
from .errors import ConfigError, DatasetError, NiftiError, SkippedFilesWarning
from .nifti import (
    VolumeLimits,
    is_nifti_path,
    load_mask,
    load_nifti,
    nifti_stem,
    non_regular_reason,
    read_nifti_header,
)
from .preprocess import PreprocessConfig, SliceVolume, preprocess_volume

__all__ = [
    "HEALTHY_DIR",
    "PATHOLOGY_DIR",
    "SkippedFile",
    "SiteData",
    "HealthySplit",
    "VolumeFiles",
    "discover_site",
    "load_site",
    "load_cohort",
    "split_healthy",
    "training_array",
    "training_patients",
]

HEALTHY_DIR = "healthy"
PATHOLOGY_DIR = "pathology"
_MASK_SUFFIX = "_mask"
_BRAIN_SUFFIX = "_brainmask"
_LESION_ENTITY = re.compile(r"(?:^|_)lesion-([A-Za-z0-9]+)(?:_|$)")


@dataclass(frozen=True)
class SkippedFile:
    """A file left out by ``skip_invalid=True`` (or an orphan mask), with the reason."""

    path: Path
    reason: str


@dataclass(frozen=True)
class VolumeFiles:
    """The files of one volume found in a site directory."""

    image: Path
    brain_mask: Path | None
    lesion_mask: Path | None
    sidecar: Path | None
    pathological: bool


@dataclass(frozen=True)
class SiteData:
    """All preprocessed volumes of one site.

    ``healthy[i].image`` is an ``(n_slices, H, W)`` float32 stack (n_slices
    varies with the brain's height), ``healthy[i].brain`` its brain mask;
    ``pathology[i]`` additionally has ``lesion`` (ground truth) and
    ``lesion_type`` (``None`` if unknown). ``skipped`` lists what
    ``skip_invalid=True`` left out; ``cache_hits``/``cache_misses`` count
    preprocessed volumes read from / written to the cache.
    """

    name: str
    root: Path
    config: PreprocessConfig
    healthy: tuple[SliceVolume, ...]
    pathology: tuple[SliceVolume, ...]
    skipped: tuple[SkippedFile, ...] = ()
    cache_hits: int = 0
    cache_misses: int = 0

    @property
    def lesion_types(self) -> tuple[str, ...]:
        """Distinct known lesion types of the pathological volumes, sorted."""
        return tuple(sorted({v.lesion_type for v in self.pathology if v.lesion_type is not None}))

    @property
    def n_healthy_slices(self) -> int:
        return sum(v.n_slices for v in self.healthy)

    @property
    def healthy_images(self) -> tuple[np.ndarray, ...]:
        return tuple(v.image for v in self.healthy)

    @property
    def healthy_brains(self) -> tuple[np.ndarray, ...]:
        return tuple(v.brain for v in self.healthy)


@dataclass(frozen=True)
class HealthySplit:
    """Healthy volumes split by subject (never by slice, so no subject is in both)."""

    train: tuple[SliceVolume, ...]
    val: tuple[SliceVolume, ...]


def _strip(stem: str, suffix: str) -> str | None:
    return stem[: -len(suffix)] if stem.endswith(suffix) else None


def discover_site(site_dir: str | Path, *, strict: bool = False) -> tuple[list[VolumeFiles], list[SkippedFile]]:
    """List a site's volumes and their companion files (no file is opened).

    Returns the volumes and the left-out files: orphan masks (masks whose image
    is missing, and ``_mask`` files under ``healthy/``) and NIfTI-named paths
    that are not regular files (symlink loop, dangling symlink, device,
    directory, FIFO). With ``strict=True`` the first such path raises
    :class:`NiftiError` instead. Raises :class:`DatasetError` for a missing
    site, a site with neither sub-directory, or one without any image.
    """
    site = Path(site_dir)
    if not site.is_dir():
        raise DatasetError(f"{site}: site directory does not exist")
    subdirs = [(site / HEALTHY_DIR, False), (site / PATHOLOGY_DIR, True)]
    if not any(d.is_dir() for d, _ in subdirs):
        raise DatasetError(
            f"{site}: expected a '{HEALTHY_DIR}/' and/or '{PATHOLOGY_DIR}/' sub-directory of NIfTI volumes"
        )
    volumes: list[VolumeFiles] = []
    orphans: list[SkippedFile] = []
    for directory, pathological in subdirs:
        if not directory.is_dir():
            continue
        files = {}
        for p in sorted(directory.iterdir()):
            if not is_nifti_path(p):
                continue
            reason = non_regular_reason(p)
            if reason is None:
                files[nifti_stem(p)] = p
            elif strict:
                raise NiftiError(p, reason)
            else:
                orphans.append(SkippedFile(p, reason))
        images = {
            stem: path for stem, path in files.items()
            if _strip(stem, _MASK_SUFFIX) is None and _strip(stem, _BRAIN_SUFFIX) is None
        }
        for stem, path in files.items():
            for suffix in (_MASK_SUFFIX, _BRAIN_SUFFIX):
                base = _strip(stem, suffix)
                if base is not None and base not in images:
                    orphans.append(SkippedFile(path, f"mask without an image named {base}.nii[.gz]"))
                if base is not None and suffix == _MASK_SUFFIX and not pathological and base in images:
                    orphans.append(SkippedFile(path, "lesion mask under healthy/ (ignored)"))
        for stem, path in sorted(images.items()):
            sidecar = directory / f"{stem}.json"
            volumes.append(
                VolumeFiles(
                    image=path,
                    brain_mask=files.get(stem + _BRAIN_SUFFIX),
                    lesion_mask=files.get(stem + _MASK_SUFFIX) if pathological else None,
                    sidecar=sidecar if sidecar.is_file() else None,
                    pathological=pathological,
                )
            )
    if not volumes:
        raise DatasetError(
            f"{site}: no NIfTI images (*.nii, *.nii.gz) under {HEALTHY_DIR}/ or {PATHOLOGY_DIR}/"
        )
    return volumes, orphans


def _lesion_type(files: VolumeFiles) -> str | None:
    """Lesion type from the sidecar, else from a ``lesion-<type>`` name entity, else None."""
    if files.sidecar is not None:
        try:
            payload = json.loads(files.sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{files.sidecar}: unreadable JSON sidecar ({exc})") from exc
        value = payload.get("lesion_type") if isinstance(payload, dict) else None
        if value is not None:
            if not isinstance(value, str) or not value:
                raise DatasetError(f"{files.sidecar}: 'lesion_type' must be a non-empty string; got {value!r}")
            return value
    match = _LESION_ENTITY.search(nifti_stem(files.image))
    return match.group(1) if match else None


def _load_volume(files: VolumeFiles, config: PreprocessConfig, cache: PreprocessCache | None,
                 limits: VolumeLimits | None = None) -> SliceVolume:
    """Read, validate and preprocess one volume (through the cache when given).

    Every header is checked against ``limits`` first, so neither the cache key
    (which reads the files' bytes) nor a cache hit bypasses the limits.
    """
    if files.pathological and files.lesion_mask is None:
        raise DatasetError(
            f"{files.image}: pathological volume without its ground-truth mask "
            f"{nifti_stem(files.image)}{_MASK_SUFFIX}.nii.gz"
        )
    lesion_type = _lesion_type(files) if files.pathological else None
    name = nifti_stem(files.image)
    limits = limits or VolumeLimits()
    read_nifti_header(files.image, limits=limits)
    for mask in (files.brain_mask, files.lesion_mask):
        if mask is not None:
            read_nifti_header(mask, limits=limits, min_extent=1)
    key = None
    if cache is not None:
        key = cache.key(config, files.image, files.brain_mask, files.lesion_mask)
        hit = cache.load(key, name=name, source=files.image)
        if hit is not None:
            return replace(hit, lesion_type=lesion_type)
    try:
        volume = load_nifti(files.image, limits=limits)
        brain = load_mask(files.brain_mask, volume, limits=limits) if files.brain_mask is not None else None
        lesion = load_mask(files.lesion_mask, volume, limits=limits) if files.lesion_mask is not None else None
        result = preprocess_volume(volume, config=config, brain_mask=brain, lesion_mask=lesion, name=name)
    except MemoryError:
        raise NiftiError(files.image, "out of memory while reading or preprocessing this volume; lower "
                                      "VolumeLimits or give the process more memory") from None
    if cache is not None and key is not None:
        cache.store(key, result)
    return replace(result, lesion_type=lesion_type)


def _config(config: PreprocessConfig | None, image_size: int | None, slice_range) -> PreprocessConfig:
    config = config or PreprocessConfig()
    changes = {}
    if image_size is not None:
        changes["image_size"] = image_size
    if slice_range is not None:
        changes["slice_range"] = tuple(slice_range)
    return replace(config, **changes) if changes else config


def load_site(
    site_dir: str | Path,
    *,
    config: PreprocessConfig | None = None,
    image_size: int | None = None,
    slice_range: tuple[float, float] | None = None,
    cache_dir: str | Path | None = None,
    skip_invalid: bool = False,
    limits: VolumeLimits | None = None,
) -> SiteData:
    """Load and preprocess every volume of one site (layout in the module docstring).

    ``config`` sets preprocessing (default :class:`PreprocessConfig`: 128 x 128,
    220 mm field of view, slices 0.30-0.70 of the brain's height);
    ``image_size`` and ``slice_range`` override its fields. ``cache_dir``
    enables the ``.npz`` cache (:mod:`models.cache`). ``skip_invalid`` leaves
    unusable volumes (and non-regular paths) out with a :class:`SkippedFilesWarning`
    instead of raising. ``limits`` bounds every header (default :class:`VolumeLimits`).
    """
    site = Path(site_dir)
    config = _config(config, image_size, slice_range)
    limits = limits or VolumeLimits()
    volumes, orphans = discover_site(site, strict=not skip_invalid)
    cache = PreprocessCache(Path(cache_dir)) if cache_dir is not None else None
    healthy: list[SliceVolume] = []
    pathology: list[SliceVolume] = []
    skipped: list[SkippedFile] = list(orphans)
    for files in volumes:
        try:
            volume = _load_volume(files, config, cache, limits)
        except (NiftiError, DatasetError) as exc:
            if not skip_invalid:
                raise
            skipped.append(SkippedFile(files.image, str(exc)))
            continue
        (pathology if files.pathological else healthy).append(volume)
    if skipped:
        listing = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped)
        warnings.warn(f"{site.name}: skipped {len(skipped)} file(s): {listing}", SkippedFilesWarning, stacklevel=2)
    if not healthy and not pathology:
        raise DatasetError(f"{site}: no usable volume (all {len(volumes)} were invalid)")
    return SiteData(
        name=site.name,
        root=site,
        config=config,
        healthy=tuple(healthy),
        pathology=tuple(pathology),
        skipped=tuple(skipped),
        cache_hits=cache.hits if cache else 0,
        cache_misses=cache.misses if cache else 0,
    )


def load_cohort(root: str | Path, **kwargs) -> dict[str, SiteData]:
    """Load every site under ``root`` (sub-directories with ``healthy/`` or ``pathology/``).

    A BIDS dataset, or a folder of them, is read by :func:`models.bids.load_bids_cohort`
    instead (``bids=`` takes its :class:`~models.bids.BidsOptions`).
    Keyword arguments are those of :func:`load_site`. Sites are returned in
    name order; :class:`DatasetError` if there is none.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: cohort directory does not exist")
    from .bids import find_bids_datasets, load_bids_cohort  # lazily: models.bids builds on this module

    if find_bids_datasets(root) is not None:  # a BIDS dataset (or a folder of them), detected automatically
        return load_bids_cohort(root, **kwargs)
    kwargs.pop("bids", None)
    sites = sorted(
        d for d in root.iterdir()
        if d.is_dir() and ((d / HEALTHY_DIR).is_dir() or (d / PATHOLOGY_DIR).is_dir())
    )
    if not sites:
        raise DatasetError(f"{root}: no site directories (each needs {HEALTHY_DIR}/ or {PATHOLOGY_DIR}/)")
    return {site.name: load_site(site, **kwargs) for site in sites}


def split_healthy(
    site: SiteData | Sequence[SliceVolume], val_fraction: float = 0.2, seed: int = 0
) -> HealthySplit:
    """Split healthy volumes into training and validation sets *by subject*.

    Volumes of one data subject (:attr:`SliceVolume.subject_key`: the BIDS
    subject, so every session and run of one person) always land on the same
    side. ``max(1, round(val_fraction * n))`` of the n subjects, drawn by a
    permutation from ``numpy.random.default_rng(seed)``, go to validation (used
    to fix the anomaly threshold); the rest train. Needs at least two subjects.
    """
    volumes = tuple(site.healthy if isinstance(site, SiteData) else site)
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1; got {val_fraction!r}")
    subjects = list(dict.fromkeys(v.subject_key for v in volumes))  # first-seen order: deterministic
    if len(subjects) < 2:
        raise DatasetError(f"need at least 2 healthy subjects to split; got {len(subjects)} "
                           f"({len(volumes)} volume(s))")
    n_val = min(max(1, int(round(val_fraction * len(subjects)))), len(subjects) - 1)
    order = np.random.default_rng(seed).permutation(len(subjects))
    val_subjects = {subjects[i] for i in order[:n_val]}
    val = tuple(v for v in volumes if v.subject_key in val_subjects)
    train = tuple(v for v in volumes if v.subject_key not in val_subjects)
    return HealthySplit(train=train, val=val)


def training_array(volumes: Iterable[SliceVolume]) -> np.ndarray:
    """All slices of ``volumes`` stacked as an ``(N, 1, H, W)`` float32 array (torch-ready)."""
    stacks = [v.image for v in volumes]
    if not stacks:
        raise DatasetError("no volumes to stack")
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) != 1:
        raise DatasetError(f"volumes have different slice sizes {sorted(shapes)}; preprocess them alike")
    return np.ascontiguousarray(np.concatenate(stacks, axis=0)[:, None, :, :], dtype=np.float32)


def training_patients(volumes: Iterable[SliceVolume]) -> np.ndarray:
    """The patient index of each slice of :func:`training_array` of the same volumes, in order.

    A patient is a data subject (:attr:`SliceVolume.subject_key`), not a volume: the slices of
    every session and run of one BIDS subject share one index, so patient-level DP-SGD samples
    and clips that person's whole contribution at once. Indices are 0..P-1 in first-seen order.
    """
    volumes = list(volumes)
    if not volumes:
        raise DatasetError("no volumes to stack")
    index: dict[str, int] = {}
    ids = [index.setdefault(v.subject_key, len(index)) for v in volumes]
    return np.repeat(np.asarray(ids, dtype=np.int64), [int(v.image.shape[0]) for v in volumes])
