"""Reading a BIDS dataset (Brain Imaging Data Structure) as cohort sites.

A small reader of the BIDS filename rules, enough for anatomical anomaly
detection; it does not need pybids. What it reads::

    ROOT/dataset_description.json                      marks ROOT as a BIDS dataset
    ROOT/participants.tsv                              participant_id, <group column>, [<site column>]
    ROOT/sub-<label>/[ses-<label>/]anat/
        sub-<label>[_ses-<label>][_acq-<label>][_run-<index>]_<SUFFIX>.nii[.gz]
        (same name).json                               optional sidecar; "lesion_type" is read
    ROOT/derivatives/<pipeline>/sub-<label>/[ses-<label>/]anat/
        <image entities>_desc-lesion_mask.nii.gz       lesion mask (BIDS-derivatives convention)
        <image entities>_<SUFFIX>_mask.nii.gz          lesion mask (alternative spelling)
        <image entities>_desc-brain_mask.nii.gz        optional brain mask
        <image entities>_<SUFFIX>_brainmask.nii.gz     optional brain mask (alternative spelling)

**Names.** A file name is ``key-value`` entities joined by ``_``, then the
suffix, then the extension. ``sub`` comes first; entity labels are
alphanumeric (:data:`ENTITY_LABEL`); ``run`` is a non-negative integer; a key
appears at most once. Files whose names break these rules under ``anat/``
raise :class:`~models.errors.DatasetError` naming the file; files of another
suffix (``T1w`` when the suffix is ``FLAIR``) are ignored. Every session and
every run of a subject is one volume, named by its file stem
(``sub-01_ses-2_run-1_FLAIR``).

**Healthy or pathological** comes from ``participants.tsv``: the column
``BidsOptions.group_column`` (default ``group``) holds one of
``healthy_values`` (default ``healthy``, ``control``) or ``patient_values``
(default ``patient``); any other value, a subject missing from the table, or
a table without the column is a :class:`DatasetError`. A patient's volume
needs a lesion mask from ``derivatives/<pipeline>/`` (default pipeline name
``lesions``, :data:`DEFAULT_PIPELINE`). The lesion type is the image
sidecar's ``"lesion_type"``, else the participants column ``lesion_type``
(when present and not ``n/a``), else unknown.

**Sites.** ``--data`` may be one BIDS dataset or a folder of BIDS datasets
(one per site, named by their folder). In one dataset, a participants column
``BidsOptions.site_column`` (default ``site``) splits the subjects into
sites; without that column the dataset is one site named after its folder.

Detection (:func:`find_bids_datasets`): a folder is BIDS when it holds
``dataset_description.json``.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError, DatasetError, NiftiError, SkippedFilesWarning
from .nifti import NIFTI_SUFFIXES, is_nifti_path, nifti_stem

__all__ = [
    "DATASET_DESCRIPTION",
    "DEFAULT_PIPELINE",
    "ENTITY_LABEL",
    "BidsName",
    "BidsOptions",
    "BidsScan",
    "parse_bids_name",
    "is_bids_dataset",
    "find_bids_datasets",
    "read_participants",
    "discover_bids",
    "load_bids_cohort",
]

DATASET_DESCRIPTION = "dataset_description.json"
DEFAULT_PIPELINE = "lesions"
#: An entity label: letters and digits only (BIDS forbids ``_``, ``-`` and other punctuation).
ENTITY_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_SUFFIX = re.compile(r"^[A-Za-z0-9]+$")
_KEY = re.compile(r"^[a-z]+$")


@dataclass(frozen=True)
class BidsOptions:
    """How to read a BIDS dataset (see the module docstring).

    ``suffix``: the modality read (``FLAIR``; ``T2w``, ``T1w`` ...).
    ``group_column`` of ``participants.tsv`` and its ``healthy_values`` /
    ``patient_values`` (compared case-insensitively). ``site_column``: the
    participants column naming each subject's site, used when present.
    ``pipeline``: the ``derivatives/`` folder holding lesion (and brain) masks.
    """

    suffix: str = "FLAIR"
    group_column: str = "group"
    healthy_values: tuple[str, ...] = ("healthy", "control")
    patient_values: tuple[str, ...] = ("patient",)
    site_column: str = "site"
    pipeline: str = DEFAULT_PIPELINE

    def __post_init__(self) -> None:
        if not isinstance(self.suffix, str) or not _SUFFIX.match(self.suffix):
            raise ConfigError(f"BIDS suffix must be letters and digits (e.g. FLAIR); got {self.suffix!r}")
        for name in ("group_column", "site_column", "pipeline"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
                raise ConfigError(f"BIDS {name} must be a non-empty name; got {value!r}")
        healthy = tuple(str(v).lower() for v in self.healthy_values)
        patient = tuple(str(v).lower() for v in self.patient_values)
        if not healthy or not patient:
            raise ConfigError("BIDS healthy_values and patient_values must both be non-empty")
        overlap = set(healthy) & set(patient)
        if overlap:
            raise ConfigError(f"BIDS group values {sorted(overlap)} are both healthy and patient")
        object.__setattr__(self, "healthy_values", healthy)
        object.__setattr__(self, "patient_values", patient)

    @classmethod
    def from_dict(cls, values: dict | None) -> "BidsOptions":
        """Options from a mapping (a TOML ``[bids]`` table); unknown keys are a :class:`ConfigError`."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown BIDS options {sorted(unknown)}; known: {sorted(known)}")
        for key in ("healthy_values", "patient_values"):
            if key in values:
                if isinstance(values[key], str):
                    values[key] = (values[key],)
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name: ordered ``entities``, ``suffix`` and ``extension``."""

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str

    def get(self, key: str) -> str | None:
        return dict(self.entities).get(key)

    @property
    def prefix(self) -> str:
        """The entities as written: ``sub-01_ses-1_run-1``."""
        return "_".join(f"{k}-{v}" for k, v in self.entities)


def parse_bids_name(name: str) -> BidsName:
    """Parse ``sub-01[_key-value...]_SUFFIX.ext`` (rules in the module docstring).

    Raises :class:`DatasetError` (one line, naming ``name``) for a name that
    does not start with ``sub-``, repeats an entity, has a label with
    punctuation, a non-integer ``run`` or no suffix.
    """
    base = Path(name).name
    extension = ""
    for ext in NIFTI_SUFFIXES + (".json",):
        if base.lower().endswith(ext):
            extension, base = base[-len(ext):], base[: -len(ext)]
            break
    parts = base.split("_")
    if len(parts) < 2:
        raise DatasetError(f"{name}: not a BIDS name (expected sub-<label>[_key-<label>...]_<suffix>)")
    *pairs, suffix = parts
    if not _SUFFIX.match(suffix):
        raise DatasetError(f"{name}: BIDS suffix {suffix!r} must be letters and digits")
    entities: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, label = pair.partition("-")
        if not sep or not _KEY.match(key) or not ENTITY_LABEL.match(label):
            raise DatasetError(f"{name}: {pair!r} is not a BIDS entity key-<alphanumeric label>")
        if key in dict(entities):
            raise DatasetError(f"{name}: entity {key!r} appears twice")
        if key == "run" and not label.isdigit():
            raise DatasetError(f"{name}: run label must be an integer; got {label!r}")
        entities.append((key, label))
    if entities[0][0] != "sub":
        raise DatasetError(f"{name}: a BIDS name starts with sub-<label>")
    return BidsName(tuple(entities), suffix, extension)


@dataclass(frozen=True)
class BidsScan:
    """One image of the chosen suffix with its companion files and its participant's row."""

    subject: str  # without the sub- prefix
    session: str | None
    name: BidsName
    image: Path
    site: str
    pathological: bool
    lesion_mask: Path | None = None
    brain_mask: Path | None = None
    sidecar: Path | None = None
    participant: dict = field(default_factory=dict, compare=False)


def is_bids_dataset(path: str | Path) -> bool:
    """True when ``path`` is a folder holding ``dataset_description.json``."""
    return (Path(path) / DATASET_DESCRIPTION).is_file()


def find_bids_datasets(root: str | Path) -> list[Path] | None:
    """``[root]`` if it is a BIDS dataset, else its BIDS sub-folders (one per site), else None."""
    root = Path(root)
    if is_bids_dataset(root):
        return [root]
    if not root.is_dir():
        return None
    found = sorted(d for d in root.iterdir() if d.is_dir() and is_bids_dataset(d))
    return found or None


def read_participants(root: str | Path) -> list[dict]:
    """Rows of ``root/participants.tsv`` (tab-separated, header line, ``participant_id`` column)."""
    path = Path(root) / "participants.tsv"
    if not path.is_file():
        raise DatasetError(f"{root}: BIDS dataset without participants.tsv (needed for healthy vs patient)")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from exc
    if "participant_id" not in header:
        raise DatasetError(f"{path}: needs a participant_id column (and at least one row)")
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):
        pid = (row.get("participant_id") or "").strip()
        if not pid.startswith("sub-") or not ENTITY_LABEL.match(pid[4:]):
            raise DatasetError(f"{path}: line {i}: participant_id {pid!r} is not sub-<alphanumeric label>")
        if pid in seen:
            raise DatasetError(f"{path}: line {i}: participant {pid} listed twice")
        seen.add(pid)
        row["participant_id"] = pid
    return rows


def _group(row: dict, options: BidsOptions, where: str) -> bool:
    """True for a patient, False for a healthy participant (per ``options``)."""
    if options.group_column not in row:
        raise DatasetError(f"{where}: participants.tsv has no '{options.group_column}' column "
                           "(healthy vs patient; set the BIDS group_column option)")
    value = (row.get(options.group_column) or "").strip().lower()
    if value in options.healthy_values:
        return False
    if value in options.patient_values:
        return True
    raise DatasetError(
        f"{where}: {row['participant_id']} has {options.group_column}={value!r}; expected one of "
        f"{list(options.healthy_values)} (healthy) or {list(options.patient_values)} (patient)"
    )


def _derivative(directory: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in NIFTI_SUFFIXES:
            candidate = directory / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _anat_dirs(subject_dir: Path) -> list[tuple[str | None, Path]]:
    found = []
    if (subject_dir / "anat").is_dir():
        found.append((None, subject_dir / "anat"))
    for ses in sorted(subject_dir.glob("ses-*")):
        if ses.is_dir() and (ses / "anat").is_dir():
            label = ses.name[4:]
            if not ENTITY_LABEL.match(label):
                raise DatasetError(f"{ses}: session folder must be ses-<alphanumeric label>")
            found.append((label, ses / "anat"))
    return found


def discover_bids(root: str | Path, options: BidsOptions | None = None) -> list[BidsScan]:
    """Every ``<suffix>`` image of one BIDS dataset with its masks and group (no image is opened).

    Raises :class:`DatasetError` for a folder that is not BIDS, a missing or
    malformed ``participants.tsv``, a subject folder missing from it, a file
    under ``anat/`` whose name breaks the BIDS rules or does not match its
    folders, or a dataset without any image of the suffix.
    """
    options = options or BidsOptions()
    root = Path(root)
    if not is_bids_dataset(root):
        raise DatasetError(f"{root}: not a BIDS dataset (no {DATASET_DESCRIPTION})")
    try:
        json.loads((root / DATASET_DESCRIPTION).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root / DATASET_DESCRIPTION}: unreadable JSON ({exc})") from exc
    rows = {row["participant_id"]: row for row in read_participants(root)}
    derivatives = root / "derivatives" / options.pipeline
    scans: list[BidsScan] = []
    for subject_dir in sorted(root.glob("sub-*")):
        if not subject_dir.is_dir():
            continue
        pid = subject_dir.name
        if not ENTITY_LABEL.match(pid[4:]):
            raise DatasetError(f"{subject_dir}: subject folder must be sub-<alphanumeric label>")
        row = rows.get(pid)
        if row is None:
            raise DatasetError(f"{root}: {pid} has a folder but no row in participants.tsv")
        pathological = _group(row, options, str(root))
        site_value = (row.get(options.site_column) or "").strip()
        if options.site_column in row and (not site_value or site_value.lower() == "n/a"):
            raise DatasetError(f"{root}: {pid} has no value in the '{options.site_column}' column")
        site = site_value or root.name
        for session, anat in _anat_dirs(subject_dir):
            for path in sorted(anat.iterdir()):
                if not path.is_file() or not is_nifti_path(path):
                    continue
                name = parse_bids_name(path.name)
                if name.suffix != options.suffix:
                    continue
                if name.get("sub") != pid[4:] or name.get("ses") != session:
                    raise DatasetError(f"{path}: sub/ses entities do not match the folders it is in")
                relative = anat.relative_to(root)
                derived = derivatives / relative
                prefix = name.prefix
                sidecar = anat / f"{nifti_stem(path)}.json"
                scans.append(BidsScan(
                    subject=pid[4:], session=session, name=name, image=path, site=site,
                    pathological=pathological,
                    lesion_mask=_derivative(derived, (f"{prefix}_desc-lesion_mask", f"{prefix}_{name.suffix}_mask")),
                    brain_mask=_derivative(derived, (f"{prefix}_desc-brain_mask",
                                                     f"{prefix}_{name.suffix}_brainmask")),
                    sidecar=sidecar if sidecar.is_file() else None,
                    participant=dict(row),
                ))
    if not scans:
        raise DatasetError(f"{root}: BIDS dataset without any sub-*/[ses-*/]anat/*_{options.suffix}.nii[.gz] "
                           "(wrong modality? set the BIDS suffix option)")
    return scans


def _lesion_type_from_participant(scan: BidsScan) -> str | None:
    value = (scan.participant.get("lesion_type") or "").strip()
    return value if value and value.lower() != "n/a" else None


def load_bids_cohort(root: str | Path, *, bids: BidsOptions | dict | None = None, **kwargs) -> dict:
    """Load a BIDS dataset, or a folder of BIDS datasets, as ``{site: SiteData}`` (name order).

    Keyword arguments are those of :func:`models.dataset.load_site`
    (``config``, ``image_size``, ``slice_range``, ``cache_dir``,
    ``skip_invalid``); ``bids`` are the :class:`BidsOptions`. A patient's
    volume without a lesion mask is a :class:`DatasetError` (or skipped with
    ``skip_invalid=True``).
    """
    from .cache import PreprocessCache
    from .dataset import SiteData, SkippedFile, VolumeFiles, _config, _load_volume

    options = bids if isinstance(bids, BidsOptions) else BidsOptions.from_dict(bids)
    datasets = find_bids_datasets(root)
    if datasets is None:
        raise DatasetError(f"{root}: neither a BIDS dataset nor a folder of BIDS datasets (no {DATASET_DESCRIPTION})")
    config = _config(kwargs.get("config"), kwargs.get("image_size"), kwargs.get("slice_range"))
    cache_dir = kwargs.get("cache_dir")
    skip_invalid = bool(kwargs.get("skip_invalid", False))
    limits = kwargs.get("limits")  # models.nifti.VolumeLimits: every header is checked before allocation
    unknown = set(kwargs) - {"config", "image_size", "slice_range", "cache_dir", "skip_invalid", "limits"}
    if unknown:
        raise ConfigError(f"unknown loading options {sorted(unknown)}")
    by_site: dict[str, list[BidsScan]] = {}
    for dataset in datasets:
        for scan in discover_bids(dataset, options):
            # A folder of datasets: each dataset is one site unless its participants name sites.
            by_site.setdefault(scan.site, []).append(scan)
    sites = {}
    for site_name in sorted(by_site):
        cache = PreprocessCache(Path(cache_dir)) if cache_dir is not None else None
        healthy, pathology, skipped = [], [], []
        for scan in by_site[site_name]:
            files = VolumeFiles(image=scan.image, brain_mask=scan.brain_mask,
                                lesion_mask=scan.lesion_mask if scan.pathological else None,
                                sidecar=scan.sidecar, pathological=scan.pathological)
            try:
                if scan.pathological and scan.lesion_mask is None:
                    raise DatasetError(
                        f"{scan.image}: patient volume without a lesion mask "
                        f"derivatives/{options.pipeline}/.../{scan.name.prefix}_desc-lesion_mask.nii.gz")
                volume = _load_volume(files, config, cache, limits)
            except (NiftiError, DatasetError) as exc:
                if not skip_invalid:
                    raise
                skipped.append(SkippedFile(scan.image, str(exc)))
                continue
            # Every session and run of one subject is one data subject: the split and patient-level DP group by it.
            volume = replace(volume, subject=scan.subject)
            if scan.pathological and volume.lesion_type is None:
                volume = replace(volume, lesion_type=_lesion_type_from_participant(scan))
            (pathology if scan.pathological else healthy).append(volume)
        if skipped:
            listing = "; ".join(f"{s.path.name}: {s.reason}" for s in skipped)
            warnings.warn(f"{site_name}: skipped {len(skipped)} file(s): {listing}", SkippedFilesWarning, stacklevel=2)
        if not healthy and not pathology:
            raise DatasetError(f"{site_name}: no usable volume (all {len(by_site[site_name])} were invalid)")
        sites[site_name] = SiteData(
            name=site_name, root=Path(root), config=config, healthy=tuple(healthy), pathology=tuple(pathology),
            skipped=tuple(skipped), cache_hits=cache.hits if cache else 0, cache_misses=cache.misses if cache else 0,
        )
    return sites
