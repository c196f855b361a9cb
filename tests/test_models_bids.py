"""BIDS input: the filename rules, participants.tsv groups and sites, derivatives masks, typed errors,
``secagg data synth --layout bids`` (checked by the official bids-validator where node/npm exist) and a
round trip through ``secagg simulate``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel")

from models import (  # noqa: E402
    BidsOptions,
    ConfigError,
    DatasetError,
    discover_bids,
    find_bids_datasets,
    load_cohort,
    parse_bids_name,
    save_nifti,
)
from tests.test_models_helpers import ellipsoid_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
AFFINE[:3, 3] = [-60.0, -72.0, -54.0]
SHAPE = (40, 48, 36)


def _image(path: Path, seed: int, lesion_mask: Path | None = None, brain_mask: Path | None = None) -> None:
    rng = np.random.default_rng(seed)
    brain = ellipsoid_volume(SHAPE, value=1.0) > 0
    data = np.where(brain, 500.0 + 20.0 * rng.standard_normal(SHAPE), 0.0).astype(np.float32)
    if lesion_mask is not None:
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[18:23, 22:27, 16:20] = 1
        data = np.where(mask > 0, 1000.0, data)
        save_nifti(lesion_mask, mask, AFFINE)
    if brain_mask is not None:
        save_nifti(brain_mask, brain.astype(np.uint8), AFFINE)
    save_nifti(path, data, AFFINE)


def _dataset(root: Path, participants: list[tuple], columns=("participant_id", "group", "site")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text(
        "\t".join(columns) + "\n" + "".join("\t".join(row) + "\n" for row in participants))
    return root


@pytest.fixture
def bids_root(tmp_path):
    """Two sites in one dataset; sessions, runs, acq, both mask spellings, a T1w to ignore."""
    root = _dataset(tmp_path / "study", [
        ("sub-01", "healthy", "north"), ("sub-02", "control", "north"), ("sub-03", "HEALTHY", "south"),
        ("sub-04", "healthy", "south"), ("sub-10", "patient", "north"), ("sub-11", "patient", "south"),
    ])
    deriv = root / "derivatives" / "lesions"
    _image(root / "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz", 1)
    _image(root / "sub-01/ses-2/anat/sub-01_ses-2_FLAIR.nii.gz", 2,
           brain_mask=deriv / "sub-01/ses-2/anat/sub-01_ses-2_desc-brain_mask.nii.gz")
    _image(root / "sub-02/anat/sub-02_run-1_FLAIR.nii.gz", 3)
    _image(root / "sub-02/anat/sub-02_run-2_FLAIR.nii.gz", 4)
    _image(root / "sub-03/anat/sub-03_acq-3d_FLAIR.nii.gz", 5)
    _image(root / "sub-04/anat/sub-04_FLAIR.nii.gz", 6)
    _image(root / "sub-04/anat/sub-04_T1w.nii.gz", 7)
    (root / "sub-04/anat/sub-04_FLAIR.json").write_text("{}")
    _image(root / "sub-10/anat/sub-10_FLAIR.nii.gz", 10,
           lesion_mask=deriv / "sub-10/anat/sub-10_desc-lesion_mask.nii.gz")
    (root / "sub-10/anat/sub-10_FLAIR.json").write_text(json.dumps({"lesion_type": "ms"}))
    _image(root / "sub-11/ses-pre/anat/sub-11_ses-pre_run-1_FLAIR.nii.gz", 11,
           lesion_mask=deriv / "sub-11/ses-pre/anat/sub-11_ses-pre_run-1_FLAIR_mask.nii.gz")
    return root


# -- file names -----------------------------------------------------------------------


def test_parse_bids_name_reads_entities_in_order():
    name = parse_bids_name("sub-01_ses-2_acq-3d_run-1_FLAIR.nii.gz")
    assert name.entities == (("sub", "01"), ("ses", "2"), ("acq", "3d"), ("run", "1"))
    assert (name.suffix, name.extension, name.prefix) == ("FLAIR", ".nii.gz", "sub-01_ses-2_acq-3d_run-1")
    assert name.get("run") == "1" and name.get("task") is None
    assert parse_bids_name("sub-A1_T2w.nii").extension == ".nii"


@pytest.mark.parametrize("bad, why", [
    ("ses-1_sub-01_FLAIR.nii.gz", "starts with sub"),
    ("sub-01_ses-1_ses-2_FLAIR.nii.gz", "twice"),
    ("sub-0_1_FLAIR.nii.gz", "not a BIDS entity"),
    ("sub-01_acq-a.b_FLAIR.nii.gz", "not a BIDS entity"),
    ("sub-01_run-x_FLAIR.nii.gz", "run label must be an integer"),
    ("sub-01.nii.gz", "not a BIDS name"),
    ("sub-01_FL-AIR.nii.gz", "suffix"),
])
def test_parse_bids_name_refuses_broken_names(bad, why):
    with pytest.raises(DatasetError, match=why) as info:
        parse_bids_name(bad)
    assert bad in str(info.value) and "\n" not in str(info.value)


# -- discovery and loading ----------------------------------------------------------------


def test_discover_finds_sessions_runs_masks_and_groups(bids_root):
    scans = {s.image.name: s for s in discover_bids(bids_root)}
    assert sorted(scans) == sorted([
        "sub-01_ses-1_FLAIR.nii.gz", "sub-01_ses-2_FLAIR.nii.gz", "sub-02_run-1_FLAIR.nii.gz",
        "sub-02_run-2_FLAIR.nii.gz", "sub-03_acq-3d_FLAIR.nii.gz", "sub-04_FLAIR.nii.gz",
        "sub-10_FLAIR.nii.gz", "sub-11_ses-pre_run-1_FLAIR.nii.gz",
    ])  # the T1w is another modality: ignored
    assert scans["sub-01_ses-2_FLAIR.nii.gz"].session == "2"
    assert scans["sub-01_ses-2_FLAIR.nii.gz"].brain_mask.name == "sub-01_ses-2_desc-brain_mask.nii.gz"
    assert scans["sub-01_ses-1_FLAIR.nii.gz"].brain_mask is None
    assert scans["sub-10_FLAIR.nii.gz"].lesion_mask.name == "sub-10_desc-lesion_mask.nii.gz"
    assert scans["sub-11_ses-pre_run-1_FLAIR.nii.gz"].lesion_mask.name == "sub-11_ses-pre_run-1_FLAIR_mask.nii.gz"
    assert scans["sub-04_FLAIR.nii.gz"].sidecar.name == "sub-04_FLAIR.json"
    assert [s.pathological for s in scans.values()].count(True) == 2
    assert {s.site for s in scans.values()} == {"north", "south"}


def test_load_cohort_detects_bids_and_splits_sites_by_column(bids_root):
    sites = load_cohort(bids_root, image_size=32)
    assert sorted(sites) == ["north", "south"]
    north, south = sites["north"], sites["south"]
    assert sorted(v.name for v in north.healthy) == [
        "sub-01_ses-1_FLAIR", "sub-01_ses-2_FLAIR", "sub-02_run-1_FLAIR", "sub-02_run-2_FLAIR"]
    assert sorted(v.name for v in south.healthy) == ["sub-03_acq-3d_FLAIR", "sub-04_FLAIR"]
    assert [v.name for v in north.pathology] == ["sub-10_FLAIR"]
    assert north.pathology[0].lesion_type == "ms"  # from the image's sidecar
    assert south.pathology[0].lesion_voxels > 0
    assert south.pathology[0].lesion_type is None  # no sidecar, no lesion_type column


def test_sessions_and_runs_of_one_subject_are_one_data_subject(bids_root):
    """Every session and run of one person is one subject: never on both sides of the healthy split,
    and one patient (one index) for patient-level DP-SGD, which samples and clips per patient."""
    from models import split_healthy, training_patients

    north = load_cohort(bids_root, image_size=32)["north"]
    assert {v.name: v.subject for v in north.healthy} == {
        "sub-01_ses-1_FLAIR": "01", "sub-01_ses-2_FLAIR": "01", "sub-02_run-1_FLAIR": "02", "sub-02_run-2_FLAIR": "02"}
    for seed in range(8):
        split = split_healthy(north, val_fraction=0.5, seed=seed)
        train, val = {v.subject for v in split.train}, {v.subject for v in split.val}
        assert len(train) == len(val) == 1 and not train & val  # 2 subjects, not 4 volumes, were split
        patients = training_patients(split.train)
        assert patients.tolist() == [0] * sum(v.n_slices for v in split.train)  # two volumes, one patient
    both = training_patients(north.healthy)
    counts = [v.n_slices for v in north.healthy]
    assert len(set(both.tolist())) == 2 and len(both) == sum(counts)
    with pytest.raises(DatasetError, match="2 healthy subjects"):
        split_healthy([v for v in north.healthy if v.subject == "01"])


def test_one_dataset_without_site_column_is_one_site_named_after_its_folder(tmp_path):
    root = _dataset(tmp_path / "hospital", [("sub-1", "healthy", "n/a"), ("sub-2", "patient", "n/a")],
                    columns=("participant_id", "group", "lesion_type"))
    (root / "participants.tsv").write_text("participant_id\tgroup\tlesion_type\nsub-1\thealthy\tn/a\n"
                                           "sub-2\tpatient\ttumour\n")
    _image(root / "sub-1/anat/sub-1_FLAIR.nii.gz", 1)
    _image(root / "sub-2/anat/sub-2_FLAIR.nii.gz", 2,
           lesion_mask=root / "derivatives/lesions/sub-2/anat/sub-2_desc-lesion_mask.nii.gz")
    sites = load_cohort(root, image_size=32)
    assert list(sites) == ["hospital"]
    assert sites["hospital"].pathology[0].lesion_type == "tumour"  # from the participants column


def test_a_folder_of_bids_datasets_is_one_site_each(tmp_path):
    for site, seed in (("site-a", 1), ("site-b", 5)):
        root = _dataset(tmp_path / "all" / site, [("sub-1", "healthy"), ("sub-2", "healthy")],
                        columns=("participant_id", "group"))
        _image(root / "sub-1/anat/sub-1_FLAIR.nii.gz", seed)
        _image(root / "sub-2/anat/sub-2_FLAIR.nii.gz", seed + 1)
    (tmp_path / "all" / "notes").mkdir()
    assert [p.name for p in find_bids_datasets(tmp_path / "all")] == ["site-a", "site-b"]
    sites = load_cohort(tmp_path / "all", image_size=32)
    assert sorted(sites) == ["site-a", "site-b"] and all(len(s.healthy) == 2 for s in sites.values())


def test_options_choose_suffix_group_column_values_and_pipeline(tmp_path):
    root = _dataset(tmp_path / "d", [("sub-1", "HC"), ("sub-2", "MS")], columns=("participant_id", "diagnosis"))
    _image(root / "sub-1/anat/sub-1_T2w.nii.gz", 1)
    _image(root / "sub-2/anat/sub-2_T2w.nii.gz", 2,
           lesion_mask=root / "derivatives/manual/sub-2/anat/sub-2_T2w_mask.nii.gz")
    options = {"suffix": "T2w", "group_column": "diagnosis", "healthy_values": ["hc"], "patient_values": ["ms"],
               "pipeline": "manual"}
    site = load_cohort(root, image_size=32, bids=options)["d"]
    assert [v.name for v in site.healthy] == ["sub-1_T2w"] and [v.name for v in site.pathology] == ["sub-2_T2w"]
    with pytest.raises(DatasetError, match="wrong modality"):
        load_cohort(root, image_size=32, bids={**options, "suffix": "FLAIR"})  # no FLAIR there


def test_bids_options_refuse_nonsense():
    with pytest.raises(ConfigError, match="unknown BIDS options"):
        BidsOptions.from_dict({"sufix": "FLAIR"})
    with pytest.raises(ConfigError, match="both healthy and patient"):
        BidsOptions(healthy_values=("x",), patient_values=("X",))
    with pytest.raises(ConfigError, match="letters and digits"):
        BidsOptions(suffix="FLAIR_mask")


# -- typed errors --------------------------------------------------------------------------


def test_missing_participants_tsv(bids_root):
    (bids_root / "participants.tsv").unlink()
    with pytest.raises(DatasetError, match="without participants.tsv"):
        load_cohort(bids_root, image_size=32)


def test_unknown_group_value_and_missing_column(bids_root):
    text = (bids_root / "participants.tsv").read_text().replace("sub-04\thealthy", "sub-04\tmaybe")
    (bids_root / "participants.tsv").write_text(text)
    with pytest.raises(DatasetError, match="sub-04 has group='maybe'"):
        discover_bids(bids_root)
    with pytest.raises(DatasetError, match="no 'dx' column"):
        discover_bids(bids_root, BidsOptions(group_column="dx"))


def test_subject_folder_without_participant_row(bids_root):
    _image(bids_root / "sub-99/anat/sub-99_FLAIR.nii.gz", 99)
    with pytest.raises(DatasetError, match="sub-99 has a folder but no row"):
        discover_bids(bids_root)


def test_patient_without_lesion_mask(bids_root):
    shutil.rmtree(bids_root / "derivatives")
    with pytest.raises(DatasetError, match="patient volume without a lesion mask"):
        load_cohort(bids_root, image_size=32)


def test_badly_named_file_under_anat(bids_root):
    _image(bids_root / "sub-04/anat/sub-04_acq-x_y_FLAIR.nii.gz", 1)
    with pytest.raises(DatasetError, match="sub-04_acq-x_y_FLAIR.nii.gz"):
        discover_bids(bids_root)
    (bids_root / "sub-04/anat/sub-04_acq-x_y_FLAIR.nii.gz").unlink()
    _image(bids_root / "sub-04/anat/sub-03_FLAIR.nii.gz", 1)
    with pytest.raises(DatasetError, match="do not match the folders"):
        discover_bids(bids_root)


def test_non_bids_folder(tmp_path):
    (tmp_path / "stuff" / "scans").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a BIDS dataset"):
        discover_bids(tmp_path / "stuff")
    with pytest.raises(DatasetError, match="no site directories"):
        load_cohort(tmp_path / "stuff")


def secagg_cli(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "simulation.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("case", ["non-bids", "no-participants", "wrong-modality"])
def test_simulate_reports_bad_bids_input_in_one_line(case, bids_root, tmp_path):
    pytest.importorskip("torch")
    data = bids_root
    extra = []
    if case == "non-bids":
        data = tmp_path / "plain"
        (data / "x").mkdir(parents=True)
    elif case == "no-participants":
        (bids_root / "participants.tsv").unlink()
    else:
        extra = ["--bids-suffix", "T2w"]
    code, _, stderr = secagg_cli("simulate", "--tiny", "--data", str(data), "--out", str(tmp_path / "run"),
                                 "--cache-dir", str(tmp_path / "cache"), *extra, timeout=300)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secagg simulate: error:"), stderr
    assert {"non-bids": "no site directories", "no-participants": "without participants.tsv",
            "wrong-modality": "wrong modality"}[case] in lines[0]
    assert not (tmp_path / "run").exists()


# -- writing the synthetic cohort as BIDS ------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_bids(tmp_path_factory):
    pytest.importorskip("nilearn")
    out = tmp_path_factory.mktemp("bids") / "cohort"
    code, stdout, stderr = secagg_cli("data", "synth", "--out", str(out), "--layout", "bids", "--sites", "2",
                                      "--seed", "3", "--json", timeout=600)
    assert code == 0, stderr[-2000:]
    assert json.loads(stdout)["layout"] == "bids"
    return out


def test_synthetic_bids_follows_the_naming_rules(synthetic_bids):
    root = synthetic_bids
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["BIDSVersion"] == "1.9.0" and description["DatasetType"] == "raw"
    derived = json.loads((root / "derivatives/lesions/dataset_description.json").read_text())
    assert derived["DatasetType"] == "derivative" and derived["GeneratedBy"][0]["Name"]
    header, *rows = [line.split("\t") for line in (root / "participants.tsv").read_text().splitlines()]
    assert header == ["participant_id", "group", "site", "lesion_type"]
    assert set(json.loads((root / "participants.json").read_text())) == set(header)
    groups = {r[0]: r for r in rows}
    images = sorted(root.glob("sub-*/anat/*"))
    assert len(images) == len(rows) == 10 + 8 + 6 + 6  # tiny scale, two sites (generator v2: 6 patients each)
    for image in images:
        name = parse_bids_name(image.name)
        assert name.suffix == "FLAIR" and name.extension == ".nii.gz"
        assert f"sub-{name.get('sub')}" == image.parent.parent.name in groups
        mask = root / "derivatives/lesions" / image.parent.relative_to(root) / f"{name.prefix}_desc-lesion_mask.nii.gz"
        assert mask.is_file() == (groups[image.parent.parent.name][1] == "patient")
    assert {r[2] for r in rows} == {"site-1", "site-2"}
    assert {r[3] for r in rows if r[1] == "patient"} == {"ms", "vascular", "tumour"}
    assert (root / "sourcedata/cohort.json").is_file() and not (root / "sourcedata/.staging").exists()


def test_synthetic_bids_is_reused_and_never_clobbers(synthetic_bids, tmp_path):
    from models.bids_synth import write_bids_cohort

    before = {p: p.stat().st_mtime_ns for p in synthetic_bids.rglob("*") if p.is_file()}
    again = write_bids_cohort(synthetic_bids, sites=2, scale="tiny", seed=3)
    assert again.reused and {p: p.stat().st_mtime_ns for p in synthetic_bids.rglob("*") if p.is_file()} == before
    with pytest.raises(DatasetError, match="holds something else"):
        write_bids_cohort(synthetic_bids, sites=2, scale="tiny", seed=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a synthetic BIDS dataset"):
        write_bids_cohort(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "precious.txt").read_text() == "x"


def test_synthetic_bids_loads_like_the_site_layout(synthetic_bids, tmp_path):
    from models import generate_cohort

    bids_sites = load_cohort(synthetic_bids, image_size=32)
    generate_cohort(tmp_path / "sites", sites=2, scale="tiny", seed=3)
    site_sites = load_cohort(tmp_path / "sites", image_size=32)
    assert sorted(bids_sites) == sorted(site_sites) == ["site-1", "site-2"]
    for name in bids_sites:
        a, b = bids_sites[name], site_sites[name]
        assert len(a.healthy) == len(b.healthy) and len(a.pathology) == len(b.pathology)
        # the same voxels: the files were moved, not re-rendered
        for x, y in zip(a.healthy + a.pathology, b.healthy + b.pathology):
            np.testing.assert_array_equal(x.image, y.image)
        assert [v.lesion_type for v in a.pathology] == [v.lesion_type for v in b.pathology]
        assert [v.lesion_voxels for v in a.pathology] == [v.lesion_voxels for v in b.pathology]


def bids_validator() -> list[str]:
    """The official (node) bids-validator: $BIDS_VALIDATOR, on PATH, or installed once into .cache/."""
    if os.environ.get("BIDS_VALIDATOR"):
        return [os.environ["BIDS_VALIDATOR"]]
    if shutil.which("bids-validator"):
        return [shutil.which("bids-validator")]
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm missing: the BIDS validator cannot run (the naming-rule tests still do)")
    prefix = ROOT / ".cache" / "bids-validator"
    binary = prefix / "node_modules" / ".bin" / "bids-validator"
    if not binary.exists():
        proc = subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                               "bids-validator@1.15.0"], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"bids-validator@1.15.0 not installable from npm: {proc.stderr.strip()[-300:]}")
    return [str(binary)]


def validate_bids(root: Path) -> dict:
    """The official validator's JSON report on ``root`` (skips the test where node/npm are missing)."""
    proc = subprocess.run([*bids_validator(), str(root), "--json"], capture_output=True, text=True, timeout=300)
    return json.loads(proc.stdout)


def test_synthetic_bids_passes_the_bids_validator(synthetic_bids, tmp_path):
    report = validate_bids(synthetic_bids)
    assert report["issues"]["errors"] == [], json.dumps(report["issues"]["errors"])[:2000]
    # The validator is really checking: a misnamed copy fails it.
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_bids, broken)
    first = sorted(broken.glob("sub-*/anat/*_FLAIR.nii.gz"))[0]
    first.rename(first.with_name(first.name.replace("_FLAIR", "_flair-x_FLAIR")))
    assert validate_bids(broken)["issues"]["errors"] != []


@pytest.mark.slow
def test_synthetic_bids_round_trips_through_simulate(synthetic_bids, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    code, stdout, stderr = secagg_cli("simulate", "--tiny", "--data", str(synthetic_bids), "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), "--json")
    assert code == 0, stderr[-2000:]
    summary = json.loads(stdout)
    assert sorted(summary["sites"]) == ["site-1", "site-2"] and summary["data"] == str(synthetic_bids)
    assert summary["rounds_completed"] == 2 and summary["privacy"]["ledger_verified"]
    assert 0.0 <= summary["detection"]["federated"]["auroc"] <= 1.0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["data"] == str(synthetic_bids) and "bids" not in config  # defaults: left out of the fingerprint


def test_bids_options_in_the_simulation_config(tmp_path):
    from simulation.config import ConfigError as SimConfigError
    from simulation.config import load_config

    toml = tmp_path / "run.toml"
    toml.write_text('[bids]\ngroup_column = "diagnosis"\nhealthy_values = ["hc"]\npatient_values = ["ms"]\n')
    config = load_config(preset="tiny", toml_path=str(toml), bids={"suffix": "T2w"})
    assert config.bids == {"group_column": "diagnosis", "healthy_values": ["hc"], "patient_values": ["ms"],
                           "suffix": "T2w"}
    assert config.to_dict()["bids"]["suffix"] == "T2w"
    assert "bids" not in load_config(preset="tiny").to_dict()  # unset: not part of the fingerprint
    assert load_config(preset="tiny").fingerprint() != config.fingerprint()
    with pytest.raises(SimConfigError, match="unknown BIDS options"):
        load_config(preset="tiny", bids={"sufix": "T2w"})


def test_participants_table_rules(bids_root):
    tsv = bids_root / "participants.tsv"
    original = tsv.read_text()
    tsv.write_text(original + "sub-01\thealthy\tnorth\n")
    with pytest.raises(DatasetError, match="sub-01 listed twice"):
        discover_bids(bids_root)
    tsv.write_text(original + "subject_7\thealthy\tnorth\n")
    with pytest.raises(DatasetError, match="not sub-<alphanumeric label>"):
        discover_bids(bids_root)
    tsv.write_text(original.replace("sub-03\tHEALTHY\tsouth", "sub-03\tHEALTHY\tn/a"))
    with pytest.raises(DatasetError, match="sub-03 has no value in the 'site' column"):
        discover_bids(bids_root)
    tsv.write_text("id\tgroup\nsub-01\thealthy\n")
    with pytest.raises(DatasetError, match="participant_id column"):
        discover_bids(bids_root)
