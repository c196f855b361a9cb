"""``secagg data prepare`` on a BIDS dataset: a prepared BIDS dataset that :mod:`models.bids` reads.

Input: a BIDS dataset, or a folder of them (one per site), found as the reader finds them
(:func:`models.bids.find_bids_datasets`) and read with the same :class:`models.bids.BidsOptions`
(:func:`models.bids.discover_bids`: ``participants.tsv`` present and well formed, every name valid).
Output, for each dataset ``IN`` into ``OUT`` (``OUT/<dataset folder>`` for a folder of datasets)::

    OUT/sub-*/[ses-*/]anat/<image>_<SUFFIX>.nii.gz    prepared image (models.prepare.prepare_scan), same path
    OUT/sub-*/[ses-*/]anat/<image>_<SUFFIX>.json      the image's BIDS sidecar keys + the preparation record
    OUT/derivatives/<pipeline>/.../<mask>.nii.gz      its lesion / brain mask, pushed onto the prepared grid
                                                      by the image's recorded transform, nearest neighbour, 0/1
    OUT/derivatives/<pipeline>/.../<mask>.json        the mask's sidecar, verbatim
    OUT/derivatives/<pipeline>/dataset_description.json   the input's (or a new one), GeneratedBy prepended
    OUT/participants.tsv, participants.json, README, CHANGES, ...   every top-level file of IN, verbatim
    OUT/dataset_description.json                      IN's, with DatasetType "derivative" and
                                                      GeneratedBy [secagg data prepare <version>, IN's ...]

Only images of the BIDS suffix (default FLAIR) are prepared: those are what ``secagg simulate``
reads. Other modalities, other datatype folders (``func/``...), ``sourcedata/`` and other
derivatives pipelines are not carried over.

**Refused before any work** (:class:`~models.errors.DatasetError`, one line): whatever the reader
refuses (no ``participants.tsv``, a subject without a row, a bad name...), a file in
``derivatives/<pipeline>/`` named as a mask (``*_desc-lesion_mask``, ``*_desc-brain_mask``,
``*_<SUFFIX>_mask``, ``*_<SUFFIX>_brainmask``) whose image does not exist, a mask off its image's
grid (from the headers; a junk header too), ``OUT`` equal to ``IN``,
and an ``OUT`` that holds a BIDS dataset not written by ``secagg data prepare``.

**Only a finished OUT is a BIDS dataset.** ``OUT/dataset_description.json``, which marks a folder
as BIDS for the reader, is removed when a run starts and written last, after every scan, mask and
metadata file: ``secagg simulate`` refuses an interrupted OUT instead of training on part of it, and
a rerun finishes it (done scans are skipped).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bids import DATASET_DESCRIPTION, BidsOptions, discover_bids, find_bids_datasets
from .errors import DatasetError
from .nifti import is_nifti_path, nifti_stem, read_nifti_header
from .prepare import PrepareJob, PrepareOptions

__all__ = ["GENERATOR_NAME", "BidsPreparePlan", "plan_bids"]

#: The ``GeneratedBy`` name of a prepared dataset (also how a rerun recognises its own OUT).
GENERATOR_NAME = "secagg data prepare"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("secagg")
    except PackageNotFoundError:
        return "unknown"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: must hold a JSON object")
    return value


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def _mask_tails(suffix: str) -> tuple[str, ...]:
    return ("_desc-lesion_mask", "_desc-brain_mask", f"_{suffix}_mask", f"_{suffix}_brainmask")


def _generated_by(options: PrepareOptions) -> dict:
    steps = [s for s in ("reorient", "n4", "register", "skull_strip", "normalise") if getattr(options, s)]
    return {"Name": GENERATOR_NAME, "Version": _version(),
            "Description": (f"steps: {', '.join(steps) or 'none'}"
                            + ("; grid: MNI152 2009 (nilearn), 2 mm" if options.register else "")
                            + "; masks in derivatives/ pushed through each image's recorded transform, "
                              "nearest neighbour")}


def _with_generator(description: dict, options: PrepareOptions) -> dict:
    earlier = description.get("GeneratedBy")
    earlier = [g for g in earlier if not (isinstance(g, dict) and g.get("Name") == GENERATOR_NAME)] \
        if isinstance(earlier, list) else []
    return {**description, "DatasetType": "derivative", "GeneratedBy": [_generated_by(options), *earlier]}


@dataclass(frozen=True)
class BidsPreparePlan:
    """The jobs for every (input dataset, output dataset) pair and how to finish the outputs."""

    datasets: tuple[tuple[Path, Path], ...]
    jobs: tuple[PrepareJob, ...]
    pipeline: str

    def begin(self) -> None:
        """Unmark every output as BIDS until :meth:`finish` (the reader refuses an unfinished OUT)."""
        for _, out in self.datasets:
            (out / DATASET_DESCRIPTION).unlink(missing_ok=True)

    def finish(self, options: PrepareOptions) -> list[Path]:
        """Copy the metadata, then write each ``dataset_description.json`` last; returns the outputs."""
        for src, out in self.datasets:
            for item in sorted(src.iterdir()):
                if item.is_file() and item.name != DATASET_DESCRIPTION:
                    _copy_atomic(item, out / item.name)  # participants.tsv (+ .json), README, CHANGES, ...
            jobs = [j for j in self.jobs if src in j.source.parents]
            for job in jobs:
                for mask, dst in job.masks:
                    sidecar = mask.with_name(nifti_stem(mask) + ".json")
                    if sidecar.is_file():
                        _copy_atomic(sidecar, dst.with_name(nifti_stem(dst) + ".json"))
            pipeline_src = src / "derivatives" / self.pipeline / DATASET_DESCRIPTION
            if any(j.masks for j in jobs) or pipeline_src.is_file():
                base = _read_json(pipeline_src) if pipeline_src.is_file() else {
                    "Name": "masks on the prepared grid", "BIDSVersion": _read_json(src / DATASET_DESCRIPTION)
                    .get("BIDSVersion", "1.9.0")}
                _write_atomic(out / "derivatives" / self.pipeline / DATASET_DESCRIPTION,
                              json.dumps(_with_generator(base, options), indent=2) + "\n")
            description = _with_generator(_read_json(src / DATASET_DESCRIPTION), options)
            _write_atomic(out / DATASET_DESCRIPTION, json.dumps(description, indent=2) + "\n")
        return [out for _, out in self.datasets]


def _orphans(src: Path, options: BidsOptions, claimed: set[Path]) -> None:
    pipeline = src / "derivatives" / options.pipeline
    if not pipeline.is_dir():
        return
    for path in sorted(pipeline.rglob("*")):
        if not path.is_file() or not is_nifti_path(path) or path in claimed:
            continue
        stem = nifti_stem(path)
        tail = next((t for t in _mask_tails(options.suffix) if stem.endswith(t)), None)
        if tail is None:
            continue  # not a mask the reader pairs with an image: neither used nor carried over
        image = path.parent.relative_to(pipeline) / f"{stem[: -len(tail)]}_{options.suffix}.nii[.gz]"
        raise DatasetError(f"{path}: a mask without its image (no {image} in {src})")


def _corners(header) -> np.ndarray:
    """World positions (mm) of a grid's 8 corner voxels, in an order that ignores the storage order."""
    index = np.array(np.meshgrid(*[[0, n - 1] for n in header.shape], indexing="ij")).reshape(3, -1)
    world = (header.affine[:3, :3] @ index).T + header.affine[:3, 3]
    return world[np.lexsort(np.round(world, 1).T[::-1])]


def _check_grid(image: Path, mask: Path) -> None:
    """A mask must lie on its image's grid (as the reader's ``load_mask`` requires), checked from the headers."""
    a, b = read_nifti_header(image), read_nifti_header(mask, min_extent=1)
    voxel = float(np.linalg.norm(a.affine[:3, :3], axis=0).min())
    if sorted(a.shape) != sorted(b.shape) or np.abs(_corners(a) - _corners(b)).max() > max(1e-3, 0.01 * voxel):
        raise DatasetError(f"{mask}: lies on a different grid than its image {image.name} "
                           "(a mask must share its image's shape and affine)")


def _check_out(src: Path, out: Path) -> None:
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r:
        raise DatasetError(f"{out}: --out is the input dataset itself; choose another folder")
    if src_r in out_r.parents and out_r.relative_to(src_r).parts[0].startswith("sub-"):
        raise DatasetError(f"{out}: --out lies inside a subject folder of the input dataset")
    description = out / DATASET_DESCRIPTION
    if description.is_file():
        try:
            generated = json.loads(description.read_text()).get("GeneratedBy") or [{}]
            ours = isinstance(generated, list) and isinstance(generated[0], dict) \
                and generated[0].get("Name") == GENERATOR_NAME
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DatasetError(f"{out} holds a BIDS dataset not written by {GENERATOR_NAME}; choose another --out")


def plan_bids(src_root: str | Path, out_root: str | Path, bids: BidsOptions | dict | None = None) -> BidsPreparePlan:
    """Check every input (see the module docstring) and list the jobs; writes nothing."""
    options = bids if isinstance(bids, BidsOptions) else BidsOptions.from_dict(bids)
    src_root, out_root = Path(src_root), Path(out_root)
    datasets = find_bids_datasets(src_root)
    if datasets is None:
        raise DatasetError(f"{src_root}: neither a BIDS dataset nor a folder of BIDS datasets "
                           f"(no {DATASET_DESCRIPTION})")
    pairs, jobs = [], []
    for src in datasets:
        out = out_root if src == src_root else out_root / src.name
        _check_out(src, out)
        scans = discover_bids(src, options)
        claimed = {m for s in scans for m in (s.lesion_mask, s.brain_mask) if m is not None}
        _orphans(src, options, claimed)
        for scan in scans:
            for mask in (scan.lesion_mask, scan.brain_mask):
                if mask is not None:
                    _check_grid(scan.image, mask)
            masks = tuple((m, out / m.relative_to(src)) for m in (scan.lesion_mask, scan.brain_mask) if m is not None)
            extra = _read_json(scan.sidecar) if scan.sidecar is not None else None
            jobs.append(PrepareJob(scan.image, out / scan.image.relative_to(src), masks, extra))
        pairs.append((src, out))
    return BidsPreparePlan(tuple(pairs), tuple(jobs), options.pipeline)
