"""``secagg data prepare`` on a BIDS dataset writes a BIDS dataset that ``secagg simulate`` trains on:
the prepared images at the same paths, each derivatives/ mask pushed through its image's recorded
transform (nearest neighbour, 0/1), participants.tsv and the other metadata carried over, typed errors.

The README's two lines (the bash block after :data:`BLOCK`) run as written, in a fresh folder, on
``hospital-bids``: a small copy of ``secagg data synth --layout bids --sites 2`` (two healthy subjects
per site and one tumour patient whose image and masks are moved by a known affine, 8 degrees and 8 mm,
as a scanner would store them; five scans, so the preparation stays short)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("nilearn")

import nibabel as nib  # noqa: E402

from models import DatasetError, load_cohort, save_nifti  # noqa: E402
from tests.test_models_bids import validate_bids  # noqa: E402
from tests.test_prepare import DISTORTION  # noqa: E402 - the same known rigid move as prepare's own tests

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("sub-010001", "sub-010002", "sub-010015", "sub-020001", "sub-020002")
PATIENT = "sub-010015"  # site-1, tumour
LESION = f"derivatives/lesions/{PATIENT}/anat/{PATIENT}_desc-lesion_mask.nii.gz"
IMAGE = f"{PATIENT}/anat/{PATIENT}_FLAIR.nii.gz"


BLOCK = "**A raw BIDS dataset: prepare it, then train.**"


def secagg_cli(*args, timeout=900, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def readme_lines() -> list[list[str]]:
    """The `secagg ...` lines of the README's prepare-then-train block, comments cut."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```bash\n", text.index(BLOCK)) + len("```bash\n")
    block = text[start : text.index("```", start)]
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("secagg ")]


def _subset(full: Path, out: Path) -> Path:
    """``KEEP`` of the synthetic BIDS dataset ``full``, with the patient moved by ``DISTORTION``."""
    out.mkdir(parents=True)
    for item in full.iterdir():
        if item.is_file() and item.name != "participants.tsv":
            shutil.copy(item, out / item.name)
    header, *rows = (full / "participants.tsv").read_text().splitlines()
    (out / "participants.tsv").write_text("\n".join([header, *[r for r in rows if r.split("\t")[0] in KEEP]]) + "\n")
    for subject in KEEP:
        shutil.copytree(full / subject, out / subject)
        shutil.copytree(full / "derivatives/lesions" / subject, out / "derivatives/lesions" / subject)
    shutil.copy(full / "derivatives/lesions/dataset_description.json", out / "derivatives/lesions")
    for path in (out / IMAGE, *sorted((out / f"derivatives/lesions/{PATIENT}/anat").glob("*.nii.gz"))):
        image = nib.load(path)
        save_nifti(path, np.asarray(image.dataobj), DISTORTION @ image.affine)  # same voxels, moved in the world
    # The image's own BIDS sidecar: kept in the prepared one (the reader takes lesion_type from it first).
    (out / IMAGE.replace(".nii.gz", ".json")).write_text(json.dumps({"EchoTime": 0.125, "lesion_type": "glioma"}))
    # Not carried over: another modality and sourcedata/.
    shutil.copy(out / "sub-020001/anat/sub-020001_FLAIR.nii.gz", out / "sub-020001/anat/sub-020001_T1w.nii.gz")
    (out / "sourcedata").mkdir()
    (out / "sourcedata" / "scanner-export.txt").write_text("raw\n")
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(raw input, prepared OUT, the README's lines, the folder they run in): the prepare line run as written."""
    base = tmp_path_factory.mktemp("bidsprep")
    lines = readme_lines()
    assert [c[1:3] for c in lines] == [["data", "prepare"], ["simulate", "--tiny"]], lines
    prepare = lines[0]
    code, _, stderr = secagg_cli("data", "synth", "--out", str(base / "full"), "--layout", "bids", "--sites", "2",
                                 "--seed", "3", "--json")
    assert code == 0, stderr[-2000:]
    raw = _subset(base / "full", base / prepare[3])
    code, stdout, stderr = secagg_cli(*prepare[1:], cwd=base)
    assert code == 0, stderr[-2000:]
    return raw, base / prepare[prepare.index("--out") + 1], lines, base


def test_prepare_writes_every_scan_and_mask_and_resumes(prepared):
    raw, out, _, _ = prepared
    assert sorted(p.name for p in out.glob("sub-*/anat/*.nii.gz")) == sorted(f"{s}_FLAIR.nii.gz" for s in KEEP)
    assert len(list(out.glob("derivatives/lesions/sub-*/anat/*_mask.nii.gz"))) == 6  # 5 brain masks + 1 lesion
    assert not (out / "sourcedata").exists()  # nor the T1w (above)
    for subject in KEEP:
        image = nib.load(out / subject / "anat" / f"{subject}_FLAIR.nii.gz")
        for mask in sorted((out / "derivatives/lesions" / subject / "anat").glob("*.nii.gz")):
            loaded = nib.load(mask)  # on the prepared image's grid, exactly
            assert loaded.shape == image.shape and np.allclose(loaded.affine, image.affine)
    code, stdout, stderr = secagg_cli("data", "prepare", str(raw), "--out", str(out), "--json")
    again = json.loads(stdout)
    assert code == 0 and again["prepared"] == [] and len(again["skipped"]) == 5 and again["masks"] == 0, stderr
    assert again["bids_datasets"] == [str(out)] and (out / "dataset_description.json").is_file()


def test_prepared_masks_land_on_the_lesion_binary(prepared):
    """The pushed lesion mask equals an independent scipy push of the raw mask through the sidecar's transform
    (prepared voxel p reads raw voxel A^-1 T P p), keeps the lesion's volume and sits on the bright lesion of
    the prepared image; pushed without the transform it would not (the check has teeth)."""
    from scipy import ndimage

    raw, out, _, _ = prepared
    mask_img, image_img = nib.load(out / LESION), nib.load(out / IMAGE)
    raw_mask_img, raw_image_img = nib.load(raw / LESION), nib.load(raw / IMAGE)
    assert mask_img.get_data_dtype() == np.uint8
    mask = np.asarray(mask_img.dataobj)
    assert set(np.unique(mask)) == {0, 1}
    mask = mask > 0
    transform = np.array(json.loads((out / IMAGE.replace(".nii.gz", ".json")).read_text())
                         ["transform_template_to_source_ras"])
    raw_mask = np.asarray(raw_mask_img.dataobj) > 0

    def push(matrix):
        index = np.linalg.inv(raw_mask_img.affine) @ matrix @ mask_img.affine
        return ndimage.affine_transform(raw_mask.astype(np.float32), index[:3, :3], offset=index[:3, 3],
                                        output_shape=mask.shape, order=0) > 0.5

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(mask, push(transform)) >= 0.99  # measured 1.0
    # Volume: the raw lesion's, scaled by the registration's determinant (measured 0.3 % off).
    raw_ml = raw_mask.sum() * abs(np.linalg.det(raw_mask_img.affine[:3, :3])) / abs(np.linalg.det(transform[:3, :3]))
    ml = mask.sum() * abs(np.linalg.det(mask_img.affine[:3, :3]))
    assert abs(ml - raw_ml) <= 0.05 * raw_ml, (ml, raw_ml)
    # On the lesion: the prepared image is as bright inside the mask, relative to the rest of the brain, as the
    # raw image inside the raw mask (measured 1.83 vs 1.93). The mask pushed without registration (identity)
    # or with the transform inverted lands beside the lesion (measured 1.41 and 1.12).
    image, raw_image = image_img.get_fdata(), raw_image_img.get_fdata()

    def contrast(img, inside):
        return img[inside].mean() / np.median(img[(img > 0) & ~inside])

    reference = contrast(raw_image, raw_mask)
    assert contrast(image, mask) >= 0.85 * reference, (contrast(image, mask), reference)
    assert contrast(image, push(np.eye(4))) < 0.8 * reference
    assert contrast(image, push(np.linalg.inv(transform))) < 0.8 * reference


def test_participants_metadata_and_sidecars_survive(prepared):
    from importlib.metadata import version

    raw, out, _, _ = prepared
    for name in ("participants.tsv", "participants.json", "README", "CHANGES"):
        assert (out / name).read_bytes() == (raw / name).read_bytes(), name
    header = (out / "participants.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["participant_id", "group", "site", "lesion_type"]
    source, description = (json.loads((d / "dataset_description.json").read_text()) for d in (raw, out))
    assert description["Name"] == source["Name"] and description["BIDSVersion"] == source["BIDSVersion"]
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0] == {**description["GeneratedBy"][0], "Name": "secagg data prepare",
                                             "Version": version("secagg")}
    assert description["GeneratedBy"][1:] == source["GeneratedBy"]
    derived = json.loads((out / "derivatives/lesions/dataset_description.json").read_text())
    assert derived["DatasetType"] == "derivative" and derived["GeneratedBy"][0]["Name"] == "secagg data prepare"
    mask_sidecar = LESION.replace(".nii.gz", ".json")
    assert (out / mask_sidecar).read_bytes() == (raw / mask_sidecar).read_bytes()
    sidecar = json.loads((out / IMAGE.replace(".nii.gz", ".json")).read_text())
    assert sidecar["EchoTime"] == 0.125 and sidecar["lesion_type"] == "glioma"  # the image's BIDS sidecar, kept
    assert sidecar["steps"] == ["reorient", "n4", "register", "skull_strip", "normalise"]
    assert [m["output"] for m in sidecar["masks"]] == [f"{PATIENT}_desc-lesion_mask.nii.gz",
                                                       f"{PATIENT}_desc-brain_mask.nii.gz"]
    # The reader: the site column splits the sites, the group column the patients, the sidecar names the type.
    sites = load_cohort(out, image_size=32)
    assert sorted(sites) == ["site-1", "site-2"]
    assert [len(sites[s].healthy) for s in ("site-1", "site-2")] == [2, 2]
    assert [v.name for v in sites["site-1"].pathology] == [f"{PATIENT}_FLAIR"] and not sites["site-2"].pathology
    assert sites["site-1"].pathology[0].lesion_type == "glioma" and sites["site-1"].pathology[0].lesion_voxels > 0


def test_prepared_bids_passes_the_bids_validator(prepared, tmp_path):
    _, out, _, _ = prepared
    report = validate_bids(out)
    assert report["issues"]["errors"] == [], json.dumps(report["issues"]["errors"])[:2000]
    broken = tmp_path / "broken"  # the validator is checking the prepared dataset: a misnamed copy fails
    shutil.copytree(out, broken)
    (broken / IMAGE).rename(broken / IMAGE.replace("_FLAIR", "_flair-x_FLAIR"))
    assert validate_bids(broken)["issues"]["errors"] != []


@pytest.mark.slow
def test_prepared_bids_trains_and_evaluates_through_simulate(prepared):
    """The README's train line, as written, on what its prepare line wrote."""
    pytest.importorskip("torch")
    _, out, lines, base = prepared
    code, _, stderr = secagg_cli(*lines[1][1:], cwd=base)
    assert code == 0, stderr[-2000:]
    summary = json.loads((base / lines[1][lines[1].index("--out") + 1] / "summary.json").read_text())
    assert sorted(summary["sites"]) == ["site-1", "site-2"] and Path(summary["data"]) == Path(lines[1][4])
    assert (base / summary["data"]).resolve() == out.resolve()
    assert summary["rounds_completed"] == 2 and summary["privacy"]["ledger_verified"]
    assert 0.0 <= summary["detection"]["federated"]["auroc"] <= 1.0


def test_an_interrupted_prepare_is_not_a_bids_dataset_until_a_rerun_finishes_it(prepared, tmp_path):
    """dataset_description.json is written last: the reader refuses a half-prepared OUT; the rerun skips
    what was done. Without registration the masks are the raw masks voxel for voxel (identity transform)."""
    from models.prepare import PrepareOptions, prepare_dataset

    raw, _, _, _ = prepared
    out = tmp_path / "out"
    options = PrepareOptions(register=False, skull_strip=False)
    seen = []

    def crash(name):
        seen.append(name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, out, options=options, progress=crash)
    assert len(seen) == 1 and not (out / "dataset_description.json").exists()
    with pytest.raises(DatasetError, match="no site directories"):  # not BIDS (yet), nor the site layout
        load_cohort(out, image_size=32)
    result = prepare_dataset(raw, out, options=options)
    assert len(result["skipped"]) == 1 and len(result["prepared"]) == 4
    assert (out / "dataset_description.json").is_file()
    assert sorted(load_cohort(out, image_size=32)) == ["site-1", "site-2"]
    pushed = nib.as_closest_canonical(nib.load(out / LESION))
    source = nib.as_closest_canonical(nib.load(raw / LESION))
    np.testing.assert_array_equal(np.asarray(pushed.dataobj), np.asarray(source.dataobj) > 0)
    np.testing.assert_allclose(pushed.affine, source.affine, atol=1e-4)


@pytest.mark.parametrize("case", ["no-participants", "mask-without-image", "mask-off-grid", "out-is-input",
                                  "foreign-out"])
def test_bad_bids_input_is_one_typed_line_before_any_work(case, prepared, tmp_path):
    raw, _, _, _ = prepared
    data = tmp_path / "data"
    shutil.copytree(raw, data)
    out = tmp_path / "out"
    before = None
    if case == "no-participants":
        (data / "participants.tsv").unlink()
    elif case == "mask-without-image":
        (data / IMAGE).unlink()
    elif case == "mask-off-grid":
        mask = nib.load(data / LESION)
        shifted = mask.affine.copy()
        shifted[:3, 3] += 6.0  # two voxels off
        save_nifti(data / LESION, np.asarray(mask.dataobj), shifted)
    elif case == "out-is-input":
        out = data
    else:
        shutil.copytree(raw, out)  # another BIDS dataset is there
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, stderr = secagg_cli("data", "prepare", str(data), "--out", str(out), timeout=300)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secagg data: error:"), stderr
    assert {"no-participants": "without participants.tsv",
            "mask-without-image": f"_mask.nii.gz: a mask without its image (no {IMAGE[:-3]}[.gz] in {data})",
            "mask-off-grid": f"{PATIENT}_desc-lesion_mask.nii.gz: lies on a different grid than its image",
            "out-is-input": "is the input dataset itself",
            "foreign-out": "not written by secagg data prepare"}[case] in lines[0], lines[0]
    if case in ("no-participants", "mask-without-image", "mask-off-grid"):
        assert not out.exists()  # refused before anything was written
    if before is not None:
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
