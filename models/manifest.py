"""The ``cohort.json`` manifest written beside a synthetic cohort.

It records everything needed to regenerate or audit the cohort: the seed and
scale, the generator version, each site's acquisition and scanner parameters,
and one record per subject (kind, lesion type, files, lesion volume). Paths
are relative to the cohort root, so the directory can be moved.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import DatasetError

__all__ = ["SiteProfile", "SubjectRecord", "CohortManifest", "MANIFEST_NAME"]

MANIFEST_NAME = "cohort.json"


@dataclass(frozen=True)
class SiteProfile:
    """One synthetic site: acquisition grid and scanner appearance.

    Intensities are FLAIR-like and relative to white matter (WM = 1 before the
    site's gamma, bias, scale and noise):

    * ``gm_ratio`` grey matter / white matter (> 1: GM brighter than WM in FLAIR);
    * ``csf_ratio`` CSF / white matter (dark, fluid-attenuated);
    * ``gamma`` contrast curve ``I -> I ** gamma``;
    * ``bias_amplitude`` standard deviation of the log of the smooth multiplicative
      bias field;
    * ``noise`` Rician noise sigma relative to white matter;
    * ``blur_fwhm_mm`` Gaussian point-spread function;
    * ``intensity_scale`` scanner units of white matter (files are int16);
    * ``ms_contrast`` / ``oedema_contrast`` lesion intensity relative to WM;
    * ``orientation`` nibabel axis codes of the stored array (e.g. ``"LPS"``);
    * ``ships_brain_masks`` whether ``*_brainmask.nii.gz`` files are written
      (otherwise the loader derives the mask).
    """

    name: str
    orientation: str
    voxel_size_mm: tuple[float, float, float]
    intensity_scale: float
    gm_ratio: float
    csf_ratio: float
    gamma: float
    bias_amplitude: float
    noise: float
    blur_fwhm_mm: float
    ms_contrast: float
    oedema_contrast: float
    ships_brain_masks: bool
    n_healthy: int
    n_pathology: int


@dataclass(frozen=True)
class SubjectRecord:
    """One written volume; paths are relative to the cohort root."""

    subject: str
    site: str
    kind: str  # "healthy" or "pathology"
    lesion_type: str | None
    image: str
    brain_mask: str | None
    lesion_mask: str | None
    lesion_volume_ml: float
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class CohortManifest:
    """What :func:`models.synth.generate_cohort` wrote (or found already written)."""

    root: Path
    seed: int
    scale: str
    generator_version: int
    sites: tuple[SiteProfile, ...]
    subjects: tuple[SubjectRecord, ...]
    seconds: float
    reused: bool = False

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.sites)

    def site_dir(self, name: str) -> Path:
        return self.root / name

    def count(self, *, site: str | None = None, kind: str | None = None, lesion_type: str | None = None) -> int:
        """Number of subjects matching every given filter."""
        return sum(
            1
            for s in self.subjects
            if (site is None or s.site == site)
            and (kind is None or s.kind == kind)
            and (lesion_type is None or s.lesion_type == lesion_type)
        )

    def summary(self) -> str:
        """A human-readable table of the cohort (what a CLI prints after generating it)."""
        verb = "found (reused)" if self.reused else f"written in {self.seconds:.1f} s"
        lines = [
            f"synthetic cohort '{self.scale}', seed {self.seed}, {len(self.sites)} sites, "
            f"{self.count(kind='healthy')} healthy + {self.count(kind='pathology')} pathological volumes "
            f"({self.count(lesion_type='ms')} MS, {self.count(lesion_type='tumour')} tumour), {verb}",
            f"root: {self.root}",
            f"{'site':<9} {'orient':<6} {'voxel mm':<16} {'healthy':>7} {'MS':>4} {'tumour':>6} "
            f"{'gamma':>6} {'noise':>6} {'bias':>5} {'GM/WM':>6} {'brain masks':>11}",
        ]
        for site in self.sites:
            voxel = "x".join(f"{v:g}" for v in site.voxel_size_mm)
            n_ms = self.count(site=site.name, lesion_type="ms")
            n_tumour = self.count(site=site.name, lesion_type="tumour")
            lines.append(
                f"{site.name:<9} {site.orientation:<6} {voxel:<16} {site.n_healthy:>7} {n_ms:>4} {n_tumour:>6} "
                f"{site.gamma:>6.2f} {site.noise:>6.3f} {site.bias_amplitude:>5.2f} {site.gm_ratio:>6.2f} "
                f"{'shipped' if site.ships_brain_masks else 'derived':>11}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The ``cohort.json`` payload (JSON-ready; paths relative to ``root``)."""
        return {
            "generator_version": self.generator_version,
            "seed": self.seed,
            "scale": self.scale,
            "seconds": round(self.seconds, 3),
            "sites": [asdict(site) for site in self.sites],
            "subjects": [asdict(subject) for subject in self.subjects],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self) -> Path:
        path = self.root / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, root: str | Path) -> "CohortManifest":
        """Read ``root/cohort.json``; :class:`DatasetError` if missing or malformed."""
        root = Path(root)
        path = root / MANIFEST_NAME
        try:
            payload = json.loads(path.read_text())
            sites = tuple(_build(SiteProfile, s) for s in payload["sites"])
            subjects = tuple(_build(SubjectRecord, s) for s in payload["subjects"])
            return cls(
                root=root,
                seed=int(payload["seed"]),
                scale=str(payload["scale"]),
                generator_version=int(payload["generator_version"]),
                sites=sites,
                subjects=subjects,
                seconds=float(payload.get("seconds", 0.0)),
            )
        except FileNotFoundError as exc:
            raise DatasetError(f"{path}: no cohort manifest") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: malformed cohort manifest ({exc})") from exc


def _build(cls, data: dict):
    """Instantiate a flat dataclass from JSON, turning lists back into tuples."""
    names = {f.name for f in fields(cls)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return cls(**values)
