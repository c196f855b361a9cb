"""Model export (models.modelfile, secagg export) and detection on new scans (models.detect, secagg detect)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("nilearn")

import nibabel as nib  # noqa: E402
import torch  # noqa: E402

from models import PreprocessConfig, create_model, save_nifti  # noqa: E402
from models.detect import ScanMismatchError, detect_scan, lesion_volume_ml  # noqa: E402
from models.modelfile import FORMAT_VERSION, ModelFile, ModelFileError, load_model_file, save_model_file  # noqa: E402
from tests.test_models_helpers import ellipsoid_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _model_file(image_size=32, threshold=0.5, median=3) -> ModelFile:
    torch.manual_seed(0)
    model = create_model("compact-ae", image_size=image_size)
    return ModelFile(
        architecture="compact-ae", image_size=image_size, preprocess=PreprocessConfig(image_size=image_size),
        threshold={"value": threshold, "target_fpr": 0.01, "source": "test"}, median_size=median,
        privacy={"unit": "record-level", "delta": 1e-5, "epsilon_max": 3.0, "accountant": "prv"},
        state_dict={k: v.clone() for k, v in model.state_dict().items()},
    )


# -- the model file -------------------------------------------------------------------------


def test_model_file_round_trips(tmp_path):
    original = _model_file()
    path = save_model_file(tmp_path / "m.secagg", original)
    loaded = load_model_file(path)
    assert loaded.manifest() == original.manifest()
    assert set(loaded.state_dict) == set(original.state_dict)
    for name, tensor in original.state_dict.items():
        assert torch.equal(loaded.state_dict[name], tensor)
    batch = torch.rand(2, 1, 32, 32)
    reference = create_model("compact-ae", image_size=32)
    reference.load_state_dict(original.state_dict)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(batch), reference.eval()(batch))
    assert b"pickle" not in path.read_bytes()[:8] and path.read_bytes()[8:9] == b"{"  # safetensors JSON header


def _rewrite_metadata(path: Path, out: Path, **changes) -> Path:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n :])
    return out


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    model = _model_file()
    state = dict(model.state_dict)
    state.pop(next(iter(state)))
    path = save_model_file(tmp_path / "m.secagg", ModelFile(**{**model.__dict__, "state_dict": state}))
    with pytest.raises(ModelFileError, match="do not fit architecture 'compact-ae'"):
        load_model_file(path).build_model()


def test_model_file_from_the_future_is_refused(tmp_path):
    path = save_model_file(tmp_path / "m.secagg", _model_file())
    future = _rewrite_metadata(path, tmp_path / "future.secagg", format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=f"newer secagg \\(model format {FORMAT_VERSION + 1}\\)"):
        load_model_file(future)
    # the same edit with the current version loads: the refusal is about the version alone
    assert load_model_file(_rewrite_metadata(path, tmp_path / "same.secagg", format_version=str(FORMAT_VERSION)))


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_truncated_model_file_is_refused(tmp_path, keep):
    path = save_model_file(tmp_path / "m.secagg", _model_file())
    blob = path.read_bytes()
    cut = tmp_path / "cut.secagg"
    cut.write_bytes(blob[: keep if keep >= 0 else len(blob) - 1])
    with pytest.raises(ModelFileError, match="truncated") as info:
        load_model_file(cut)
    assert "\n" not in str(info.value)


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    path = save_model_file(tmp_path / "m.secagg", _model_file())
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / "flip.secagg").write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model_file(tmp_path / "flip.secagg")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not a secagg model file"):
        load_model_file(tmp_path / "plain.safetensors")
    (tmp_path / "junk.secagg").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelFileError, match="not JSON"):
        load_model_file(tmp_path / "junk.secagg")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_file(tmp_path / "missing.secagg")


# -- lesion volume ------------------------------------------------------------------------


def test_lesion_volume_is_count_times_voxel_volume_exactly():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:5, 3:6, 4:7] = True  # 27 voxels
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    assert lesion_volume_ml(mask, affine) == pytest.approx(27 * 24 / 1000, rel=1e-12)
    flipped = np.diag([-2.0, -3.0, 4.0, 1.0])  # LPS storage: same volume
    assert lesion_volume_ml(mask, flipped) == pytest.approx(0.648, rel=1e-12)
    assert lesion_volume_ml(np.zeros_like(mask), affine) == 0.0


# -- detection geometry on a known scan ------------------------------------------------------

SHAPE = (64, 72, 60)


def _scan(tmp_path, name="sub-01_FLAIR.nii.gz", lps=True):
    """A skull-stripped ellipsoid 'brain' at 3 mm with a bright 12x12x10-voxel cube, off centre, stored LPS."""
    brain = ellipsoid_volume(SHAPE, radii=(26.0, 30.0, 24.0), value=1.0) > 0
    rng = np.random.default_rng(0)
    data = np.where(brain, 500.0 + 10.0 * rng.standard_normal(SHAPE), 0.0)
    lesion = np.zeros(SHAPE, dtype=bool)
    lesion[37:49, 39:51, 25:35] = True  # right, anterior, mid-height in RAS index terms
    data[lesion] = 1000.0
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-96.0, -110.0, -90.0]
    if lps:  # store it flipped along x and y, as DICOM-derived scans often are
        data, lesion = data[::-1, ::-1], lesion[::-1, ::-1]
        affine = affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, -1, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    path = save_nifti(tmp_path / name, data.astype(np.int16), affine)
    save_nifti(tmp_path / "truth.nii.gz", lesion.astype(np.uint8), affine)
    return path, lesion, affine


@pytest.mark.parametrize("lps", [True, False])
def test_detect_output_overlays_the_input_exactly(tmp_path, lps):
    path, lesion, affine = _scan(tmp_path, lps=lps)
    # Threshold half way between tissue (1.0 after median normalisation) and the cube (2.0); the
    # "reconstruction" is zero, so the score is the median-filtered normalised intensity.
    model = _model_file(image_size=64, threshold=1.5, median=3)
    result = detect_scan(model, path, tmp_path / "out", reconstruct=lambda b: np.zeros_like(b))
    source = nib.load(path)
    for out in (result.anomaly_map, result.segmentation):
        image = nib.load(out)
        assert image.shape == source.shape
        np.testing.assert_array_equal(image.affine, source.affine)
        np.testing.assert_array_equal(image.header.get_qform(), source.header.get_qform())
    seg = np.asarray(nib.load(result.segmentation).dataobj) > 0
    # In the input's own storage order: the segmentation sits on the cube (stated tolerance: Dice >= 0.8,
    # volume within 20 %, centre of mass within one voxel; 3 mm voxels, 3.4 mm model grid).
    dice = 2 * np.count_nonzero(seg & lesion) / (np.count_nonzero(seg) + np.count_nonzero(lesion))
    assert dice >= 0.8, dice
    truth_ml = lesion_volume_ml(lesion, affine)
    assert result.record["lesion_volume_ml"] == pytest.approx(lesion_volume_ml(seg, affine), rel=1e-12)
    assert abs(result.record["lesion_volume_ml"] - truth_ml) <= 0.2 * truth_ml
    np.testing.assert_allclose(np.argwhere(seg).mean(axis=0), np.argwhere(lesion).mean(axis=0), atol=1.0)
    anomaly = np.asarray(nib.load(result.anomaly_map).dataobj)
    assert anomaly[lesion].mean() > 1.5 > anomaly[~lesion & (anomaly > 0)].mean()
    # Outside the scored axial slab the maps are 0.
    z0, z1 = result.record["scored_slab_z_mm"]
    world_z = nib.affines.apply_affine(affine, np.argwhere(np.ones(SHAPE, dtype=bool)))[:, 2].reshape(SHAPE)
    outside = (world_z < z0 - 3.5) | (world_z > z1 + 3.5)
    assert outside.any() and not anomaly[outside].any() and not seg[outside].any()
    assert result.montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.record["threshold"]["value"] == 1.5 and result.record["threshold"]["source"] == "test"


def test_detect_refuses_mismatched_scans(tmp_path):
    path, _, affine = _scan(tmp_path)
    model = _model_file(image_size=64)
    data = np.asarray(nib.load(path).dataobj).astype(np.float32)
    cases = {
        "sub-01_T1w.nii.gz": (data, affine, "wrong modality"),
        "coarse.nii.gz": (data[::3, ::3, ::3], affine @ np.diag([3, 3, 3, 1]), "resolution mismatch"),
        "zscored.nii.gz": (np.where(data > 0, (data - 500) / 10, -3.0), affine, "normalisation mismatch"),
        "skull.nii.gz": (data + 50.0, affine, "not skull-stripped"),
    }
    theta = np.deg2rad(35)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0, 0], [np.sin(theta), np.cos(theta), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    cases["oblique.nii.gz"] = (data, rotation @ affine, "orientation mismatch")
    for name, (array, aff, message) in cases.items():
        scan = save_nifti(tmp_path / name, array, aff)
        with pytest.raises(ScanMismatchError, match=message) as info:
            detect_scan(model, scan, tmp_path / "out", reconstruct=lambda b: np.zeros_like(b))
        assert "\n" not in str(info.value)


def test_check_scans_refuses_outputs_that_would_collide(tmp_path):
    from models import DatasetError
    from models.detect import check_scans

    first, _, _ = _scan(tmp_path)
    (tmp_path / "other").mkdir()
    second = shutil.copy(first, tmp_path / "other" / first.name)
    model = _model_file(image_size=64)
    check_scans(model, [first])
    with pytest.raises(DatasetError, match="same name"):
        check_scans(model, [first, second])


# -- export -> detect through the CLI, without the run directory ------------------------------------


def secagg_cli(*args, timeout=900, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


JOURNEY = "**From a BIDS folder to an anomaly map you open in a viewer.**"
RAW_SCAN = "raw/sub-07_FLAIR.nii.gz"  # the README's raw scanner scan; the journey fixture writes it
TRUTH = "truth/sub-07_lesion.nii.gz"  # its lesion mask, on its grid (not part of the README)
THETA = np.deg2rad(12.0)
DISTORTION = np.array([[np.cos(THETA), -np.sin(THETA), 0, 8.0], [np.sin(THETA), np.cos(THETA), 0, -6.0],
                       [0, 0, 1, 4.0], [0, 0, 0, 1]])  # 12 degrees about z, 10.8 mm shift


def readme_journey() -> list[list[str]]:
    """The `secagg ...` command lines of the README's researcher journey (its first bash block), comments cut."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```bash\n", text.index(JOURNEY)) + len("```bash\n")
    block = text[start : text.index("```", start)]
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("secagg ")]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _lesion_volumes(data: Path) -> dict[str, float]:
    patients = [line.split("\t")[0] for line in (data / "participants.tsv").read_text().splitlines()[1:]
                if "\tpatient\t" in line]
    return {p: lesion_volume_ml(np.asarray(nib.load(
        data / f"derivatives/lesions/{p}/anat/{p}_desc-lesion_mask.nii.gz").dataobj) > 0,
        nib.load(data / f"{p}/anat/{p}_FLAIR.nii.gz").affine) for p in patients}


def _write_raw_scan(data: Path, base: Path) -> None:
    """RAW_SCAN: the synthetic patient with the largest lesion as a scanner gives it - moved by DISTORTION,
    a smooth bias field (x0.75-1.4), no skull stripping (tissue-like background), stored LPS as the cohort
    is - and TRUTH, its lesion mask on the same grid."""
    volumes = _lesion_volumes(data)
    patient = max(volumes, key=volumes.get)
    image = nib.load(data / f"{patient}/anat/{patient}_FLAIR.nii.gz")
    mask = nib.load(data / f"derivatives/lesions/{patient}/anat/{patient}_desc-lesion_mask.nii.gz")
    values = np.asarray(image.dataobj, dtype=np.float32)
    affine = DISTORTION @ image.affine
    world = nib.affines.apply_affine(affine, np.indices(values.shape).reshape(3, -1).T)
    bias = np.exp(0.2 * np.sin(world[:, 0] / 60.0) + 0.15 * np.cos(world[:, 1] / 80.0)).reshape(values.shape)
    raw = np.where(values > 0, values * bias, 0.05 * float(values.max()))
    save_nifti(base / RAW_SCAN, raw.astype(np.float32), affine)
    save_nifti(base / TRUTH, (np.asarray(mask.dataobj) > 0).astype(np.uint8), affine)


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    """The README's researcher journey, every `secagg` line run as written (in a fresh folder, tiny scale):
    BIDS synth -> simulate -> export -> detect -> data prepare -> detect --prepare. Before the first line
    naming RAW_SCAN, the raw scan is made from the synthetic cohort (:func:`_write_raw_scan`)."""
    base = tmp_path_factory.mktemp("journey")
    commands = readme_journey()
    steps = [tuple(c[1:3]) if c[1] == "data" else (c[1], "--prepare" in c) for c in commands]
    assert steps == [("data", "synth"), ("simulate", False), ("export", False), ("detect", False),
                     ("data", "prepare"), ("detect", True)], steps
    for command in commands:
        if RAW_SCAN in command and not (base / RAW_SCAN).exists():
            _write_raw_scan(base / _option(commands[0], "--out"), base)
        code, _, stderr = secagg_cli(*command[1:], cwd=base)
        assert code == 0, (command, stderr[-2000:])
    return base, commands


@pytest.fixture(scope="module")
def finished_run(journey):
    """A --tiny run on a two-site synthetic BIDS cohort: the journey's."""
    base, commands = journey
    return base / _option(commands[0], "--out"), base / _option(commands[1], "--out")


@pytest.mark.slow
def test_readme_journey_ends_in_maps_that_overlay_the_scans(journey):
    """Each step of the README's journey left what the README says: the model file, maps with the
    scanned input's affine and shape (raw scan included), the prepared scan and its sidecar."""
    base, commands = journey
    assert (base / _option(commands[2], "--out")).read_bytes()[8:9] == b"{"  # the exported safetensors file
    for command in (commands[3], commands[5]):
        scan, out = base / command[3], base / _option(command, "--out")
        stem = scan.name[: -len(".nii.gz")]
        source = nib.load(scan)
        for suffix in ("anomaly", "segmentation"):
            image = nib.load(out / f"{stem}_{suffix}.nii.gz")
            assert image.shape == source.shape and np.array_equal(image.affine, source.affine), (command, suffix)
    prepared = base / _option(commands[4], "--out")
    from nilearn.datasets import load_mni152_template

    template, image = load_mni152_template(resolution=2), nib.load(prepared / "sub-07_FLAIR.nii.gz")
    assert image.shape == template.shape and np.allclose(image.affine, template.affine)  # MNI152, 2 mm
    assert json.loads((prepared / "sub-07_FLAIR.json").read_text())["transform_template_to_source_ras"]
    report = json.loads((base / "results" / "detections.json").read_text())
    assert [Path(r["anomaly_map"]).name for r in report["scans"]] == ["sub-07_FLAIR_anomaly.nii.gz"]


@pytest.mark.slow
def test_export_then_detect_in_a_fresh_process_without_the_run(finished_run, tmp_path):
    data, shared_run = finished_run
    run = tmp_path / "run"
    shutil.copytree(shared_run, run)  # a private copy, deleted below
    code, stdout, stderr = secagg_cli("export", str(run), "--out", str(tmp_path / "model.secagg"), "--json")
    assert code == 0, stderr[-2000:]
    exported = json.loads(stdout)
    summary = json.loads((run / "summary.json").read_text())
    assert exported["threshold"]["value"] == summary["detection_threshold"]["value"]
    assert exported["privacy"]["delta"] == summary["privacy"]["delta"]
    assert exported["privacy"]["epsilon_max"] == pytest.approx(max(summary["privacy"]["epsilon_spent"].values()))
    assert exported["privacy"]["accountant"] and "patient-level" in exported["privacy"]["unit"]
    # Delete the run: detect must need nothing but the model file.
    shutil.rmtree(run)
    patients = [line.split("\t")[0] for line in (data / "participants.tsv").read_text().splitlines()[1:]
                if "\tpatient\t" in line]
    volumes = {p: lesion_volume_ml(np.asarray(nib.load(
        data / f"derivatives/lesions/{p}/anat/{p}_desc-lesion_mask.nii.gz").dataobj) > 0,
        nib.load(data / f"{p}/anat/{p}_FLAIR.nii.gz").affine) for p in patients}
    largest = max(volumes, key=volumes.get)
    scan = data / f"{largest}/anat/{largest}_FLAIR.nii.gz"
    code, stdout, stderr = secagg_cli("detect", str(tmp_path / "model.secagg"), str(scan), "--out",
                                      str(tmp_path / "out"), "--json", cwd=tmp_path)
    assert code == 0, stderr[-2000:]
    report = json.loads(stdout)
    record = report["scans"][0]
    seg = nib.load(record["segmentation"])
    source = nib.load(scan)
    assert seg.shape == source.shape and np.array_equal(seg.affine, source.affine)
    assert record["lesion_volume_ml"] == pytest.approx(lesion_volume_ml(np.asarray(seg.dataobj) > 0, seg.affine))
    assert record["threshold"]["value"] == exported["threshold"]["value"]
    assert "healthy validation" in record["threshold"]["source"]
    assert report["model"]["privacy"]["epsilon_max"] == exported["privacy"]["epsilon_max"]
    # The tiny model (2 rounds x 3 steps at 32 x 32) is weak: a loose end-to-end bound on the largest
    # tumour only - something is flagged, and no more than twice the true lesion volume.
    assert 0.0 < record["lesion_volume_ml"] <= 2.0 * volumes[largest], (record["lesion_volume_ml"], volumes[largest])


@pytest.mark.slow
def test_detect_cli_bad_inputs_are_one_line_errors(finished_run, tmp_path):
    data, run = finished_run
    code, _, stderr = secagg_cli("export", str(run), "--out", str(tmp_path / "model.secagg"))
    assert code == 0, stderr[-2000:]
    blob = (tmp_path / "model.secagg").read_bytes()
    (tmp_path / "cut.secagg").write_bytes(blob[: len(blob) // 2])
    _rewrite_metadata(tmp_path / "model.secagg", tmp_path / "future.secagg", format_version="99")
    t1w = tmp_path / "sub-01_T1w.nii.gz"
    shutil.copy(next(data.glob("sub-*/anat/*_FLAIR.nii.gz")), t1w)
    scan = str(next(data.glob("sub-*/anat/*_FLAIR.nii.gz")))
    cases = [
        (("detect", str(tmp_path / "cut.secagg"), scan), "truncated"),
        (("detect", str(tmp_path / "future.secagg"), scan), "newer secagg"),
        (("detect", str(tmp_path / "model.secagg"), str(t1w)), "wrong modality"),
        (("detect", str(tmp_path / "model.secagg"), str(t1w), "--prepare"), "wrong modality"),  # before preparing
        (("detect", str(tmp_path / "model.secagg"), str(tmp_path / "nope.nii.gz")), "does not exist"),
        (("export", str(tmp_path), "--out", str(tmp_path / "x.secagg")), "not a run directory"),
    ]
    for args, message in cases:
        code, _, stderr = secagg_cli(*args, "--out", str(tmp_path / "o")) if args[0] == "detect" else secagg_cli(*args)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (args, stderr)
    assert not (tmp_path / "o" / "prepared").exists()  # the T1w was refused before any preparation
    for name, blob, message in (("junk_FLAIR.nii.gz", b"not a NIfTI file", "not a readable NIfTI file"),
                                 ("cut_FLAIR.nii.gz", Path(scan).read_bytes()[:20000], "truncated or corrupt")):
        (tmp_path / name).write_bytes(blob)  # --prepare reads it with the same bounded, typed reader
        code, _, stderr = secagg_cli("detect", str(tmp_path / "model.secagg"), str(tmp_path / name), "--prepare",
                                     "--out", str(tmp_path / "o2"))
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (name, stderr)


@pytest.mark.slow
def test_detect_prepare_maps_back_onto_the_raw_scan(journey, tmp_path):
    """The journey's raw scan is refused as is; `detect --prepare` prepared it into results/prepared/ (maps
    there overlay the prepared scan) and wrote maps on the raw scan's own grid: the same affine, shape and
    header, equal to the prepared-grid maps resampled independently (scipy) through the inverse of the
    recorded transform, keeping the overlap the model achieved with the true lesion."""
    from scipy import ndimage

    base, commands = journey
    model = base / commands[5][2]
    code, _, stderr = secagg_cli("detect", str(model), str(base / RAW_SCAN), "--out", str(tmp_path / "plain"))
    assert code == 2 and "not skull-stripped" in stderr and stderr.count("\n") == 1, stderr
    out = base / _option(commands[5], "--out")
    record = next(r for r in json.loads((out / "detections.json").read_text())["scans"]
                  if r.get("prepared_from") == RAW_SCAN)
    prepared = out / "prepared" / "sub-07_FLAIR.nii.gz"
    assert record["scan"] == str(prepared.relative_to(base))
    sidecar = json.loads((out / "prepared" / "sub-07_FLAIR.json").read_text())
    assert sidecar["steps"] == ["reorient", "n4", "register", "skull_strip", "normalise"]
    transform = np.array(sidecar["transform_template_to_source_ras"])
    assert np.array_equal(np.array(record["transform_template_to_source_ras"]), transform)
    raw, truth = nib.load(base / RAW_SCAN), np.asarray(nib.load(base / TRUTH).dataobj) > 0
    assert not nib.aff2axcodes(raw.affine) == ("R", "A", "S")  # stored LPS: the storage order is undone too
    # Prepared-grid maps overlay the prepared scan.
    reference = nib.load(prepared)
    grid = {}
    for key in ("anomaly_map", "segmentation"):
        image = nib.load(base / record["prepared_grid"][key])
        assert image.shape == reference.shape and np.array_equal(image.affine, reference.affine)
        grid[key] = np.asarray(image.dataobj, dtype=np.float32)
        assert record["space"][key] == "input scan (its own affine, shape and header)"
    # Raw-grid maps: the raw scan's affine, shape and header fields; data types float32 / uint8.
    maps = {}
    for key, dtype in (("anomaly_map", np.float32), ("segmentation", np.uint8)):
        image = nib.load(base / record[key])
        assert image.shape == raw.shape and np.array_equal(image.affine, raw.affine)
        assert np.array_equal(image.header.get_qform(), raw.header.get_qform())
        assert np.array_equal(image.header.get_zooms(), raw.header.get_zooms())
        assert image.get_data_dtype() == dtype
        maps[key] = np.asarray(image.dataobj)
    # Independent resampling: raw voxel v is read at prepared voxel P^-1 T^-1 A v.
    index = np.linalg.inv(reference.affine) @ np.linalg.inv(transform) @ raw.affine
    expected = ndimage.affine_transform(grid["anomaly_map"], index[:3, :3], offset=index[:3, 3],
                                        output_shape=raw.shape, order=1, mode="constant", cval=0.0, prefilter=False)
    assert maps["anomaly_map"].max() > 0
    np.testing.assert_allclose(maps["anomaly_map"], expected, atol=1e-4 * float(expected.max()))
    seg = maps["segmentation"] > 0
    assert record["lesion_volume_ml"] == pytest.approx(lesion_volume_ml(seg, raw.affine), rel=1e-12)
    # Volume: the prepared-grid volume in template mm^3 times |det T| (template -> raw mm^3), within 15 %.
    physical = record["prepared_grid"]["lesion_volume_ml"] * abs(np.linalg.det(transform[:3, :3]))
    assert record["lesion_volume_ml"] == pytest.approx(physical, rel=0.15), (record["lesion_volume_ml"], physical)
    # Overlap: the truth pushed onto the prepared grid (scipy, by T) meets the model's prepared-grid segmentation;
    # on the raw grid the mapped segmentation keeps at least 80 % of that Dice. (Measured in two runs: 0.28 and
    # 0.42, equal on both grids; mapped with T un-inverted 0.0, without the registration 0.04 and 0.12; volume
    # 17.1 mL raw vs 16.8 mL from the grid.) The tiny model is weak (truth: 88 mL), so its Dice with the truth is
    # only required to be positive; the mapping is what is tested here.
    forward = np.linalg.inv(raw.affine) @ transform @ reference.affine
    truth_grid = ndimage.affine_transform(truth.astype(np.float32), forward[:3, :3], offset=forward[:3, 3],
                                          output_shape=reference.shape, order=1, prefilter=False) >= 0.5
    grid_dice = _dice(grid["segmentation"] > 0, truth_grid)
    raw_dice = _dice(seg, truth)
    assert grid_dice > 0 and raw_dice >= 0.8 * grid_dice, (grid_dice, raw_dice)


@pytest.mark.slow
def test_ground_truth_lesion_survives_prepare_and_back(journey):
    """The mapping alone, on the truth: the raw scan's lesion mask pushed onto the prepared grid by the
    recorded transform (scipy, independent of the code under test) lands on the prepared scan's bright lesion
    (prepare resampled the scan with this transform), and `to_source_space` brings it back onto the raw grid:
    Dice >= 0.9 and volume within 5 % of the truth. (Measured: Dice 0.997, 88.45 vs 88.18 mL (+0.3 %); mapped
    back with the transform un-inverted: Dice 0.05, +51 %; without it: Dice 0.34, +22 %. The pushed truth's mean
    on the prepared scan is 1.40 x the brain's median; 1.10 if the registration were ignored, 0.41 if inverted.)"""
    from scipy import ndimage

    from models.prepare import to_source_space

    base, commands = journey
    prepared = base / _option(commands[4], "--out")
    transform = np.array(json.loads((prepared / "sub-07_FLAIR.json").read_text())["transform_template_to_source_ras"])
    reference = nib.load(prepared / "sub-07_FLAIR.nii.gz")
    raw, truth = nib.load(base / RAW_SCAN), np.asarray(nib.load(base / TRUTH).dataobj) > 0
    forward = np.linalg.inv(raw.affine) @ transform @ reference.affine
    pushed = ndimage.affine_transform(truth.astype(np.float32), forward[:3, :3], offset=forward[:3, 3],
                                      output_shape=reference.shape, order=1, prefilter=False) >= 0.5
    scan = reference.get_fdata()
    assert scan[pushed].mean() > 1.25 * np.median(scan[(scan > 0) & ~pushed])  # the tumour, where prepare put it
    back = to_source_space(pushed.astype(np.float32), reference.affine, raw.affine, raw.shape, transform,
                           nearest=True) > 0.5
    dice = _dice(back, truth)
    volume, truth_ml = lesion_volume_ml(back, raw.affine), lesion_volume_ml(truth, raw.affine)
    assert dice >= 0.9 and abs(volume - truth_ml) <= 0.05 * truth_ml, (dice, volume, truth_ml)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)
