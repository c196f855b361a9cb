"""Writing the synthetic cohort (:mod:`models.synth`) as one valid BIDS dataset.

Layout written (read back by :mod:`models.bids`)::

    OUT/dataset_description.json        Name, BIDSVersion, DatasetType raw, Authors, GeneratedBy
    OUT/README, OUT/CHANGES
    OUT/participants.tsv (+ .json)       participant_id, group (healthy|patient), site, lesion_type
    OUT/sub-<SS><NNNN>/anat/sub-<SS><NNNN>_FLAIR.nii.gz
    OUT/derivatives/lesions/dataset_description.json          DatasetType derivative
    OUT/derivatives/lesions/sub-.../anat/sub-..._desc-lesion_mask.nii.gz (+ .json)   patients
    OUT/derivatives/lesions/sub-.../anat/sub-..._desc-brain_mask.nii.gz (+ .json)    where the site ships masks
    OUT/sourcedata/cohort.json          the generator's manifest (seed, scanner parameters per site)

Subject labels join the site number (two digits) and the subject's number in
its site (four digits): ``sub-020013`` is subject 13 of ``site-2``. The
voxels are exactly those of :func:`models.synth.generate_cohort` for the same
seed and scale (the files are moved, not re-rendered).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from .bids import DATASET_DESCRIPTION, DEFAULT_PIPELINE
from .errors import DatasetError

__all__ = ["BIDS_VERSION", "write_bids_cohort"]

BIDS_VERSION = "1.9.0"
_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Subject label (site number, then subject number within the site)"},
    "group": {"Description": "Healthy control or patient", "Levels": {
        "healthy": "no lesion (training and threshold validation)",
        "patient": "synthetic lesion with a voxel mask in derivatives/lesions"}},
    "site": {"Description": "Acquisition site (scanner) of the synthetic cohort"},
    "lesion_type": {"Description": "Lesion type of a patient", "Levels": {
        "ms": "multiple-sclerosis-like white-matter plaques", "tumour": "glioma-like tumour with oedema"}},
}


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def write_bids_cohort(out_dir: str | Path, *, sites: int = 4, scale: str = "tiny", seed: int = 0,
                      workers: int | None = None, overwrite: bool = False):
    """Generate the synthetic cohort and write it to ``out_dir`` as a BIDS dataset.

    Returns the generator's :class:`~models.manifest.CohortManifest` with
    ``root`` set to ``out_dir``. If ``out_dir`` already holds this cohort
    (same seed, scale, number of sites and generator version, every image
    present) nothing is rewritten and the manifest comes back with
    ``reused=True``. Any other non-empty ``out_dir`` is a :class:`DatasetError`
    unless ``overwrite=True`` (then it is replaced only if it is a BIDS dataset
    this function wrote).
    """
    from .manifest import CohortManifest
    from .synth import GENERATOR_VERSION, generate_cohort

    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        written_here = (root / "sourcedata" / "cohort.json").is_file() and (root / DATASET_DESCRIPTION).is_file()
        if written_here and not overwrite:
            old = CohortManifest.load(root / "sourcedata")
            same = (old.seed, old.scale, len(old.sites), old.generator_version) == (seed, scale, sites,
                                                                                   GENERATOR_VERSION)
            rows = (root / "participants.tsv").read_text().splitlines()[1:] if same else []
            if same and len(rows) == len(old.subjects) and len(list(root.glob("sub-*/anat/*_FLAIR.nii.gz"))) == len(rows):
                return replace(old, root=root, reused=True)  # this very cohort is already there
        if not overwrite:
            raise DatasetError(f"{root} exists and holds something else; choose another --out or pass --overwrite")
        if not written_here:
            raise DatasetError(f"{root} is not a synthetic BIDS dataset written by secagg; refusing to overwrite it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / "sourcedata" / ".staging"
    manifest = generate_cohort(staging, sites=sites, scale=scale, seed=seed, workers=workers, overwrite=True)
    site_number = {name: i + 1 for i, name in enumerate(manifest.site_names)}
    rows = []
    for record in manifest.subjects:
        label = f"{site_number[record.site]:02d}{int(record.subject[4:]):04d}"
        subject = f"sub-{label}"
        anat = root / subject / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        source = f"bids::{subject}/anat/{subject}_FLAIR.nii.gz"
        shutil.move(str(staging / record.image), anat / f"{subject}_FLAIR.nii.gz")
        derived = root / "derivatives" / DEFAULT_PIPELINE / subject / "anat"
        if record.lesion_mask:
            derived.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / record.lesion_mask), derived / f"{subject}_desc-lesion_mask.nii.gz")
            _write_json(derived / f"{subject}_desc-lesion_mask.json", {"Type": "Lesion", "Sources": [source]})
        if record.brain_mask:
            derived.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging / record.brain_mask), derived / f"{subject}_desc-brain_mask.nii.gz")
            _write_json(derived / f"{subject}_desc-brain_mask.json", {"Type": "Brain", "Sources": [source]})
        rows.append((subject, "healthy" if record.kind == "healthy" else "patient", record.site,
                     record.lesion_type or "n/a"))
    manifest_text = (staging / "cohort.json").read_text()
    shutil.rmtree(staging)
    (root / "sourcedata" / "cohort.json").write_text(manifest_text)
    rows.sort()
    (root / "participants.tsv").write_text(
        "participant_id\tgroup\tsite\tlesion_type\n" + "".join("\t".join(r) + "\n" for r in rows))
    _write_json(root / "participants.json", _PARTICIPANTS_JSON)
    generated_by = [{"Name": "secagg data synth", "Description": f"synthetic FLAIR cohort, scale {scale}, seed {seed}"}]
    _write_json(root / DATASET_DESCRIPTION, {
        "Name": f"secagg synthetic FLAIR cohort ({scale}, {sites} sites, seed {seed})",
        "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC0",
        "Authors": ["secagg synthetic generator"], "GeneratedBy": generated_by,
    })
    _write_json(root / "derivatives" / DEFAULT_PIPELINE / DATASET_DESCRIPTION, {
        "Name": "Lesion and brain masks of the synthetic cohort", "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative", "GeneratedBy": generated_by,
    })
    (root / "README").write_text(
        "Synthetic multi-site FLAIR cohort written by `secagg data synth --layout bids`.\n"
        "Subjects are the MNI152 2009 template through random deformations, with per-site scanner effects;\n"
        "patients carry MS-like lesions or tumours whose voxel masks are in derivatives/lesions.\n"
        "participants.tsv: group (healthy|patient), site, lesion_type. Not real patient data.\n")
    (root / "CHANGES").write_text(f"1.0.0 synthetic\n  - generated with seed {seed}, scale {scale}\n")
    return replace(manifest, root=root)
