"""Synthetic multi-site FLAIR cohorts from the MNI152 2009 atlas, written as NIfTI.

:func:`generate_cohort` writes the documented site layout (see
:mod:`models.dataset`) plus ``cohort.json`` (:class:`~models.manifest.CohortManifest`),
so synthetic and real data take the same loading path. Nothing is downloaded:
the atlas comes from nilearn's wheel (:mod:`models.atlas`).

**Subjects.** Each subject is the atlas seen through a random smooth
deformation. For every voxel ``w`` (mm) of the site's acquisition grid, the
atlas position it shows is

``q = c + R diag(1/s) (w - c - t) + u(w)``

with ``c`` the brain centre, ``R`` a small rotation (sd 3 deg about x and y,
4 deg about z), ``s`` a scaling (isotropic ``exp N(0, 0.04)`` times per-axis
``exp N(0, 0.02)``), ``t`` a shift (sd 2 mm) and ``u`` a low-frequency
displacement field: six random plane waves per component, wavelengths
40-120 mm, amplitudes sd 1.2 mm. Tissue fractions are read from the atlas at
``q`` (trilinear, :func:`scipy.ndimage.map_coordinates`), so one subject seed
gives the same anatomy at every resolution.

**FLAIR-like rendering** (relative to white matter = 1): tissue mixture
``f_gm * gm_ratio + f_wm + f_csf * csf_ratio`` (GM slightly brighter than WM,
CSF dark) with a per-subject jitter of 3 % per tissue and a 2.5 % smooth
texture; lesions replace tissue by their occupancy (MS plaques and oedema
hyperintense, enhancing rim brighter, necrotic core dark; see
:mod:`models.lesions`). Then the site's scanner: gamma ``I**gamma``, Gaussian
blur, a smooth multiplicative bias field ``exp(b(w))`` (four plane waves,
wavelengths 200-500 mm), scaling to scanner units, Rician noise
``|I + n_1 + i n_2|`` and skull stripping (0 outside the brain). Files are int16,
as scanners write them.

**Ground truth.** ``*_mask.nii.gz`` is 1 where the lesion occupancy is at least
0.5 *including oedema* for tumours (necrosis + enhancing rim + oedema), inside
the brain mask; 0 elsewhere. Three lesion classes (``LESION_TYPES``): MS plaques,
vascular white-matter hyperintensities and tumours; a share of MS plaques and
WMH are faint (near normal brightness), and every subject, healthy or not,
carries normal bright look-alikes (periventricular caps, the third/fourth
ventricle outline, the corticospinal tract at the internal capsule, sometimes
CSF flow artefacts) that are never in a mask (sizes, prevalences and sources:
:mod:`models.lesions`).

**Site shift** (generator v2). Scanner and protocol change FLAIR intensities
and contrasts between centres, and models trained at one centre degrade on
others: in the MICCAI WMH challenge not all methods generalised to unseen
scanners (Kuijf et al., IEEE TMI 2019, arXiv:1904.00682); Meyer et al.
(Front Neurosci 2021, doi:10.3389/fnins.2021.708196) describe intensity and
contrast differences by protocol, scanner and centre, and bias fields, as what
single-centre models fail on. The site parameters span: grey/white contrast
``gm_ratio`` 1.05-1.45 and residual CSF signal ``csf_ratio`` 0.05-0.45
(inversion time / CSF nulling, 2-D vs 3-D FLAIR), contrast curve ``gamma``
0.65-1.5, bias-field amplitude 5-30 %, noise 1-7 % of white matter, blur up to
2 voxels FWHM (through-plane resolution of thick-slice 2-D FLAIR), plus voxel
size and orientation. These ranges are our choice (wide enough that sites
differ visibly, e.g. normal grey matter at one site is as bright as a faint
lesion at another); they are not fitted to a real multi-site dataset.
Version 1 used narrower ranges (gamma 0.8-1.25, bias 4-18 %, noise 1-5 %,
gm_ratio 1.08-1.30, csf_ratio 0.12-0.35, blur <= 1.2 voxels).

**Sites** differ in acquisition (voxel size, orientation - RAS, LPS, LAS, PIR
in turn - so the loader's reorientation and resampling are exercised), in every
scanner parameter of :class:`~models.manifest.SiteProfile` (drawn stratified,
so the sites spread over each range), in whether brain masks are shipped
(every fourth site, starting with the third, ships none), in size (unequal), and in
their mix of MS and tumour cases.

**Scales** (healthy / pathological volumes per site for ``sites=4``):

========  =========  =========================  =====================  ===============================
scale     voxel      healthy per site           pathological per site  measured (2-core EPYC, 1 worker)
========  =========  =========================  =====================  ===============================
tiny      3 mm       10, 8, 7, 6 (31)           6 (2 of each type)     16 s, 7 MB (niced, busy host)
small     2 mm       40, 30, 24, 18 (112)       12, 10, 8, 10 (40)     36 s, 56 MB (v1)
paper     1.5 mm     649, 389, 278, 216 (1532)  135, 135, 134, 134     ~0.9 s/volume: ~30 min, ~2 GB
========  =========  =========================  =====================  ===============================

The small and paper timings were measured with generator v1 (v2 adds look-alike
maps and a third lesion class; not re-measured). ``paper`` matches the FedDis study's size (1,532 healthy volumes over four
unequal sites, 538 pathological); the site sizes follow weights ``1/(i + 1.5)``
(``workers=2`` roughly halves its time; it defaults to one worker per CPU).
The atlas used is 2 mm for tiny/small and 1 mm for paper; MS plaques have the
same (literature) sizes at every scale (:mod:`models.lesions`), so at 3 mm
voxels the smallest ones are sub-voxel.

Determinism: every subject draws from its own ``numpy.random.default_rng`` seeded by
``SeedSequence([seed, site, subject])``, so the arrays are identical for a
seed whatever the order or number of worker processes. (Synthetic data are not
secret; ``numpy.random`` is fine here.)
"""

from __future__ import annotations

import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atlas import TissueAtlas, load_atlas
from .errors import ConfigError, DatasetError
from .lesions import (
    Tumour,
    VascularWMH,
    band_occupancy,
    corticospinal_tracts,
    ellipsoid_occupancy,
    lookalike_maps,
    mass_effect,
    sample_lookalikes,
    sample_ms_lesions,
    sample_tumour,
    sample_vascular,
    tumour_occupancy,
)
from .manifest import MANIFEST_NAME, CohortManifest, SiteProfile, SubjectRecord

__all__ = [
    "GENERATOR_VERSION",
    "LESION_TYPES",
    "SCALES",
    "ScaleSpec",
    "generate_cohort",
    "site_profiles",
    "render_subject",
    "RenderedSubject",
    "lesion_counts",
]

GENERATOR_VERSION = 2
LESION_TYPES = ("ms", "vascular", "tumour")
# Brain centre in MNI mm (rotation/scaling pivot) and the world box every site grid covers.
_BRAIN_CENTRE = np.array([0.0, -18.0, 8.0])
_WORLD_BOX = np.array([[-90.0, 90.0], [-126.0, 90.0], [-78.0, 96.0]])
_ORIENTATIONS = ("RAS", "LPS", "LAS", "PIR")
_VOXEL_FACTORS = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0.85, 0.85, 1.35), (1.15, 1.15, 1.15))
#: Per site (cycled): shares of MS, vascular and tumour cases among its pathological volumes.
_LESION_MIX = ((0.4, 0.3, 0.3), (0.2, 0.4, 0.4), (0.5, 0.3, 0.2), (0.3, 0.4, 0.3))
_AXIS_CODES = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


@dataclass(frozen=True)
class ScaleSpec:
    """Size and resolution of one cohort scale (see the module docstring)."""

    name: str
    voxel_mm: float
    atlas_mm: int
    ms_radius_mm: tuple[float, float]
    ms_count: tuple[int, int]
    tumour_radius_mm: tuple[float, float]

    def site_sizes(self, sites: int) -> tuple[tuple[int, int], ...]:
        """(healthy, pathological) volumes for each of ``sites`` sites."""
        if self.name == "tiny":
            pattern = (10, 8, 7, 6)
            return tuple((pattern[i % 4], 6) for i in range(sites))
        if self.name == "small":
            healthy, sick = (40, 30, 24, 18), (12, 10, 8, 10)
            return tuple((healthy[i % 4], sick[i % 4]) for i in range(sites))
        weights = np.array([1.0 / (i + 1.5) for i in range(sites)])
        return tuple(zip(_allocate(1532, weights), _allocate(538, np.ones(sites))))


def _allocate(total: int, weights: np.ndarray) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder, exact sum)."""
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


#: MS plaque semi-axis scale r (semi-axes 1.6 r, r, 0.8 r): long-axis diameters 3.2-19 mm, the range of
#: countable plaques (at least 3 mm long, MAGNIMS 2016) to large ovoid ones (> 6 mm, Barkhof), at every scale.
_MS_RADIUS_MM = (1.0, 6.0)

SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec("tiny", 3.0, 2, _MS_RADIUS_MM, (5, 10), (10.0, 18.0)),
    "small": ScaleSpec("small", 2.0, 2, _MS_RADIUS_MM, (5, 15), (8.0, 18.0)),
    "paper": ScaleSpec("paper", 1.5, 1, _MS_RADIUS_MM, (5, 20), (8.0, 18.0)),
}


def _seed_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _stratified(rng: np.random.Generator, n: int, lo: float, hi: float, log: bool = False) -> np.ndarray:
    """n values spread over [lo, hi]: one per equal-width stratum, in random site order."""
    u = (rng.permutation(n) + rng.uniform(0.15, 0.85, n)) / n
    if log:
        return np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u)
    return lo + (hi - lo) * u


def site_profiles(seed: int, scale: str, sites: int) -> tuple[SiteProfile, ...]:
    """The per-site acquisition and scanner parameters of a cohort (deterministic in ``seed``)."""
    spec = _scale(scale)
    rng = _seed_rng(seed, 0x5173)
    draws = {
        "gm_ratio": _stratified(rng, sites, 1.05, 1.45),
        "csf_ratio": _stratified(rng, sites, 0.05, 0.45),
        "gamma": _stratified(rng, sites, 0.65, 1.5),
        "bias_amplitude": _stratified(rng, sites, 0.05, 0.30),
        "noise": _stratified(rng, sites, 0.01, 0.07),
        "blur_fwhm_mm": _stratified(rng, sites, 0.0, 2.0 * spec.voxel_mm),
        "intensity_scale": _stratified(rng, sites, 300.0, 3000.0, log=True),
        "ms_contrast": _stratified(rng, sites, 1.5, 1.9),
        "oedema_contrast": _stratified(rng, sites, 1.55, 1.9),
    }
    width = len(str(sites))
    profiles = []
    for i, (n_healthy, n_pathology) in enumerate(spec.site_sizes(sites)):
        factors = _VOXEL_FACTORS[i % len(_VOXEL_FACTORS)]
        profiles.append(
            SiteProfile(
                name=f"site-{i + 1:0{width}d}",
                orientation=_ORIENTATIONS[i % len(_ORIENTATIONS)],
                voxel_size_mm=tuple(round(spec.voxel_mm * f, 4) for f in factors),
                ships_brain_masks=(i % 4) != 2,
                n_healthy=n_healthy,
                n_pathology=n_pathology,
                **{k: round(float(v[i]), 4) for k, v in draws.items()},
            )
        )
    return tuple(profiles)


def _scale(scale: str) -> ScaleSpec:
    try:
        return SCALES[scale]
    except KeyError:
        raise ConfigError(f"scale must be one of {sorted(SCALES)}; got {scale!r}") from None


def site_grid(site: SiteProfile) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel-to-world affine and shape of a site's acquisition grid (covers ``_WORLD_BOX``).

    Array axis ``a`` runs along the world axis named by ``site.orientation[a]``
    (``"LPS"``: index 0 grows towards the Left, 1 towards Posterior, 2 towards
    Superior), with that axis's voxel size.
    """
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    shape = []
    for axis, code in enumerate(site.orientation):
        world_axis, sign = _AXIS_CODES[code]
        voxel = site.voxel_size_mm[axis]
        lo, hi = _WORLD_BOX[world_axis]
        n = int(math.floor((hi - lo) / voxel)) + 1
        affine[world_axis, axis] = sign * voxel
        affine[world_axis, 3] = lo if sign > 0 else lo + (n - 1) * voxel
        shape.append(n)
    return affine, tuple(shape)  # type: ignore[return-value]


def _ras_grid(site: SiteProfile) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The same voxels as :func:`site_grid`, indexed in RAS order (axes x, y, z ascending).

    Rendering happens on this grid: its memory order follows the atlas's, so
    sampling the atlas walks memory nearly sequentially. :func:`_to_site` then
    transposes and flips the result into the site's storage order (exact).
    """
    spacing = [0.0, 0.0, 0.0]
    for axis, code in enumerate(site.orientation):
        spacing[_AXIS_CODES[code][0]] = site.voxel_size_mm[axis]
    affine = np.eye(4)
    shape = []
    for world_axis in range(3):
        lo, hi = _WORLD_BOX[world_axis]
        affine[world_axis, world_axis] = spacing[world_axis]
        affine[world_axis, 3] = lo
        shape.append(int(math.floor((hi - lo) / spacing[world_axis])) + 1)
    return affine, tuple(shape)  # type: ignore[return-value]


def _to_site(array: np.ndarray, site: SiteProfile) -> np.ndarray:
    """Reorder an RAS-indexed array (from :func:`_ras_grid`) into the site's storage order."""
    codes = [_AXIS_CODES[code] for code in site.orientation]
    out = np.transpose(array, [world_axis for world_axis, _ in codes])
    for axis, (_, sign) in enumerate(codes):
        if sign < 0:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out)


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _plane_waves(
    rng: np.random.Generator,
    grid: tuple[np.ndarray, tuple[int, int, int]],
    n: int,
    wavelength: tuple[float, float],
    amplitude: float,
) -> np.ndarray:
    """sum_k a_k cos(omega_k . w + phi_k) over the world positions w of a voxel grid.

    On a lattice ``w = A i + b`` the phase is ``(A^T omega) . i + omega . b``, a sum
    of three 1-D ramps, so it is built by broadcasting instead of a dot product
    per voxel.
    """
    affine, shape = grid
    # float32 phases: numpy's float32 cos is vectorised (20x faster than float64),
    # and phases stay below ~50 rad, where float32 keeps ~1e-5 rad accuracy.
    axes = [np.arange(n_axis, dtype=np.float32) for n_axis in shape]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(n):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        omega = (2.0 * math.pi / rng.uniform(*wavelength)) * direction
        phase0 = rng.uniform(0.0, 2.0 * math.pi) + float(omega @ affine[:3, 3])
        a = amplitude * rng.standard_normal()
        alpha = (affine[:3, :3].T @ omega).astype(np.float32)
        phase = (
            (alpha[0] * axes[0])[:, None, None]
            + (alpha[1] * axes[1])[None, :, None]
            + (alpha[2] * axes[2] + np.float32(phase0))[None, None, :]
        )
        field += np.float32(a) * np.cos(phase)
    return field


def _trilinear(stack: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a channel-last volume ``(X, Y, Z, C)`` at voxel
    coordinates ``coords`` (3, N). Returns ``(C, N)``.

    One set of corner indices and weights serves all channels (cheaper than one
    ``map_coordinates`` call per tissue map). Coordinates are clamped to the
    volume, whose border is background (zero) in the atlas, so positions
    outside it read zero.
    """
    dims = np.array(stack.shape[:3])
    c = np.clip(coords, 0.0, (dims - 1.001)[:, None].astype(np.float32))
    base = c.astype(np.int32)  # floor, as c >= 0
    frac = c - base
    strides = np.array([dims[1] * dims[2], dims[2], 1], dtype=np.int64)
    linear = base[0].astype(np.int64) * strides[0] + base[1] * strides[1] + base[2]
    flat = stack.reshape(-1, stack.shape[3])
    fx, fy, fz = (f[:, None] for f in frac)

    def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
        b -= a
        b *= t
        b += a
        return b

    # Separable: interpolate along z at the four (x, y) corners, then along y, then x.
    along_z = []
    for dx in (0, 1):
        for dy in (0, 1):
            start = linear + (dx * strides[0] + dy * strides[1])
            along_z.append(lerp(np.take(flat, start, axis=0), np.take(flat, start + 1, axis=0), fz))
    out = lerp(lerp(along_z[0], along_z[1], fy), lerp(along_z[2], along_z[3], fy), fx)
    return out.T


@dataclass(frozen=True)
class RenderedSubject:
    """Arrays of one synthetic subject on its site grid (plus lesion descriptions)."""

    image: np.ndarray  # int16, scanner units, 0 outside the brain
    brain: np.ndarray  # uint8
    lesion: np.ndarray | None  # uint8 ground truth (incl. oedema)
    lesions: tuple  # Ellipsoid / Tumour / VascularWMH descriptions
    lesion_occupancy: np.ndarray | None = None  # float32: the rendered lesion fraction (mask: >= 0.5, in brain)
    lookalike_occupancy: np.ndarray | None = None  # float32: rendered look-alike fraction not covered by lesion
    lookalikes: object = None  # LookAlikes description


def render_subject(
    atlas: TissueAtlas,
    site: SiteProfile,
    spec: ScaleSpec,
    rng: np.random.Generator,
    lesion_type: str | None = None,
) -> RenderedSubject:
    """Render one subject on ``site``'s grid (see the module docstring for the model).

    The arrays come back in the site's storage order, on :func:`site_grid`.
    """
    from scipy import ndimage

    grid = _ras_grid(site)
    affine, shape = grid
    # World positions (3, N) of the voxels, built from 1-D ramps per axis.
    w = np.empty((3, *shape), dtype=np.float32)
    ramps = [np.arange(n, dtype=np.float32) for n in shape]
    for row in range(3):
        a = affine[row].astype(np.float32)
        w[row] = (
            (a[0] * ramps[0])[:, None, None]
            + (a[1] * ramps[1])[None, :, None]
            + (a[2] * ramps[2] + a[3])[None, None, :]
        )

    # Subject anatomy: affine part plus a smooth displacement field.
    angles = np.deg2rad(rng.normal(0.0, [3.0, 3.0, 4.0]))
    scaling = math.exp(rng.normal(0.0, 0.04)) * np.exp(rng.normal(0.0, 0.02, 3))
    shift = rng.normal(0.0, 2.0, 3)
    m = (_rotation(angles) @ np.diag(1.0 / scaling)).astype(np.float32)
    centre = _BRAIN_CENTRE.astype(np.float32)[:, None, None, None]
    offset = (centre[:, 0, 0, 0] - m @ (centre[:, 0, 0, 0] + shift.astype(np.float32))).astype(np.float32)
    q = (m @ w.reshape(3, -1)).reshape(w.shape) + offset[:, None, None, None]
    for component in range(3):
        q[component] += _plane_waves(rng, grid, 6, (40.0, 120.0), 1.2)

    lesions: tuple = ()
    tumour: Tumour | None = None
    if lesion_type == "tumour":
        tumour = sample_tumour(atlas, rng, radius_mm=spec.tumour_radius_mm, oedema_contrast=site.oedema_contrast)
        lesions = (tumour,)
        q_tissue = mass_effect(q, tumour)
    elif lesion_type == "ms":
        lesions = sample_ms_lesions(
            atlas, rng, count=spec.ms_count, radius_mm=spec.ms_radius_mm, contrast=site.ms_contrast
        )
        q_tissue = q
    elif lesion_type == "vascular":
        lesions = (sample_vascular(atlas, rng),)
        q_tissue = q
    elif lesion_type is None:
        q_tissue = q
    else:
        raise ConfigError(f"lesion type must be one of {LESION_TYPES} or None; got {lesion_type!r}")

    inverse = np.linalg.inv(atlas.affine).astype(np.float32)
    coords = inverse[:3, :3] @ q_tissue.reshape(3, -1) + inverse[:3, 3][:, None]
    gm, wm, brain_p = (c.reshape(shape) for c in _trilinear(atlas.tissue_stack, coords))
    aux = _trilinear(lookalike_maps(atlas), coords).reshape(-1, *shape)  # LOOKALIKE_CHANNELS
    del coords
    lookalikes = sample_lookalikes(atlas, rng)
    csf = np.clip(brain_p - gm - wm, 0.0, 1.0)
    total = gm + wm + csf
    safe = np.where(total > 1e-6, total, 1.0)
    f_gm, f_wm, f_csf = gm / safe, wm / safe, csf / safe
    brain = brain_p >= 0.5

    # FLAIR-like tissue contrast with per-subject jitter and texture.
    jitter = 1.0 + 0.03 * rng.standard_normal(3)
    tissue = f_gm * (site.gm_ratio * jitter[0]) + f_wm * jitter[1] + f_csf * (site.csf_ratio * jitter[2])
    voxel = np.diag(affine)[:3]  # spacing along the RAS grid's axes (the site's, permuted)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=np.maximum(2.0 / voxel, 0.5))
    texture *= np.float32(0.025 / max(float(texture.std()), 1e-6))
    intensity = tissue * (1.0 + texture)

    # Normal bright findings and artefacts (never lesions): each replaces tissue by its occupancy.
    parenchyma = f_gm + f_wm
    look_parts = [(aux[1], lookalikes.frontal_caps[0]), (aux[2], lookalikes.frontal_caps[1]),
                  (aux[3], lookalikes.occipital_caps[0]), (aux[4], lookalikes.occipital_caps[1]),
                  (aux[5], lookalikes.ependymal_line)]
    look_parts += [(ellipsoid_occupancy(q, t) * parenchyma, t.intensity) for t in corticospinal_tracts(lookalikes)]
    look_parts += [(ellipsoid_occupancy(q, blob) * f_csf, blob.intensity) for blob in lookalikes.flow]
    look_union = np.zeros(shape, dtype=np.float32)
    for occ, level in look_parts:
        if level > 0:
            occ = np.clip(occ, 0.0, 1.0).astype(np.float32)
            intensity = (1.0 - occ) * intensity + occ * np.float32(level)
            look_union = 1.0 - (1.0 - look_union) * (1.0 - occ)

    lesion_occupancy = None
    if lesion_type in ("ms", "vascular"):
        if lesion_type == "ms":
            parts = [(ellipsoid_occupancy(q, plaque), plaque.intensity) for plaque in lesions]
        else:
            wmh: VascularWMH = lesions[0]
            parts = [(band_occupancy(q, aux[0], parenchyma, wmh), wmh.band_intensity)]
            parts += [(ellipsoid_occupancy(q, focus), focus.intensity) for focus in wmh.foci]
        union = np.zeros(shape, dtype=np.float32)
        weighted = np.zeros(shape, dtype=np.float32)
        for occ, level in parts:
            union = 1.0 - (1.0 - union) * (1.0 - occ)
            weighted += occ * np.float32(level)
        # Parenchymal lesions: where an ovoid reaches into a ventricle, CSF stays CSF.
        union *= parenchyma
        level = weighted / np.maximum(union, 1e-6)
        level = np.where(union > 1e-6, np.minimum(level, max(v for _, v in parts)), 1.0)
        intensity = (1.0 - union) * intensity + union * level
        lesion_occupancy = union
    elif tumour is not None:
        necrosis, rim, oedema = tumour_occupancy(q, tumour, f_wm)
        solid = necrosis + rim + oedema
        intensity = (
            (1.0 - solid) * intensity
            + necrosis * tumour.necrosis_intensity
            + rim * tumour.rim_intensity
            + oedema * tumour.oedema_intensity
        )
        lesion_occupancy = solid
    del q, q_tissue

    # Scanner: contrast curve, point-spread function, coil bias, scaling, Rician noise.
    intensity = np.power(np.maximum(intensity, 0.0), np.float32(site.gamma)) * brain_p
    if site.blur_fwhm_mm > 0:
        intensity = ndimage.gaussian_filter(intensity, sigma=site.blur_fwhm_mm / 2.3548 / voxel)
    bias = np.exp(_plane_waves(rng, grid, 4, (200.0, 500.0), site.bias_amplitude / math.sqrt(2.0)))
    signal = intensity * bias * np.float32(site.intensity_scale)
    sigma = np.float32(site.noise * site.intensity_scale)
    n1 = rng.standard_normal(shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(shape, dtype=np.float32) * sigma
    magnitude = np.sqrt((signal + n1) ** 2 + n2**2) * brain
    image = np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)
    lesion = None
    if lesion_occupancy is not None:
        lesion = ((lesion_occupancy >= 0.5) & brain).astype(np.uint8)
        look_union = look_union * (1.0 - lesion_occupancy)  # a lesion drawn over a look-alike is lesion
    return RenderedSubject(
        image=_to_site(image, site),
        brain=_to_site(brain.astype(np.uint8), site),
        lesion=None if lesion is None else _to_site(lesion, site),
        lesions=lesions,
        lesion_occupancy=None if lesion_occupancy is None else _to_site(lesion_occupancy.astype(np.float32), site),
        lookalike_occupancy=_to_site((look_union * brain).astype(np.float32), site),
        lookalikes=lookalikes,
    )


@dataclass(frozen=True)
class _Task:
    root: str
    seed: int
    scale: str
    site_index: int
    site: SiteProfile
    number: int  # subject number within the site, from 1
    lesion_type: str | None


def _subject_paths(task: _Task) -> tuple[str, str, str | None, str | None, str | None]:
    """Subject id and relative paths (image, brain mask, lesion mask, sidecar) of one subject."""
    subject = f"sub-{task.number:04d}"
    if task.lesion_type is None:
        stem = f"{task.site.name}/healthy/{subject}"
        lesion, sidecar = None, None
    else:
        stem = f"{task.site.name}/pathology/{subject}_lesion-{task.lesion_type}"
        lesion, sidecar = f"{stem}_mask.nii.gz", f"{stem}.json"
    brain = f"{stem}_brainmask.nii.gz" if task.site.ships_brain_masks else None
    return subject, f"{stem}.nii.gz", brain, lesion, sidecar


def _generate_one(task: _Task) -> SubjectRecord:
    """Render and write one subject (runs in the parent or in a worker process)."""
    import json

    from .nifti import save_nifti

    spec = SCALES[task.scale]
    atlas = load_atlas(spec.atlas_mm)
    kind_key = 0 if task.lesion_type is None else 1
    rng = _seed_rng(task.seed, task.site_index, task.number, kind_key)
    rendered = render_subject(atlas, task.site, spec, rng, task.lesion_type)
    affine, shape = site_grid(task.site)
    root = Path(task.root)
    subject, image_path, brain_path, lesion_path, sidecar_path = _subject_paths(task)
    save_nifti(root / image_path, rendered.image, affine)
    if brain_path:
        save_nifti(root / brain_path, rendered.brain, affine)
    volume_ml = 0.0
    if lesion_path:
        assert rendered.lesion is not None
        save_nifti(root / lesion_path, rendered.lesion, affine)
        volume_ml = float(rendered.lesion.sum()) * float(np.prod(task.site.voxel_size_mm)) / 1000.0
        sidecar = {
            "lesion_type": task.lesion_type,
            "lesion_volume_ml": round(volume_ml, 3),
            "synthetic": True,
            "lesions": [lesion.as_dict() for lesion in rendered.lesions],
        }
        (root / sidecar_path).write_text(json.dumps(sidecar, indent=1))  # type: ignore[operator]
    return SubjectRecord(
        subject=subject,
        site=task.site.name,
        kind="healthy" if task.lesion_type is None else "pathology",
        lesion_type=task.lesion_type,
        image=image_path,
        brain_mask=brain_path,
        lesion_mask=lesion_path,
        lesion_volume_ml=round(volume_ml, 3),
        shape=shape,
    )


def _tasks(root: Path, seed: int, scale: str, profiles: tuple[SiteProfile, ...]) -> list[_Task]:
    tasks = []
    for i, site in enumerate(profiles):
        for k in range(site.n_healthy):
            tasks.append(_Task(str(root), seed, scale, i, site, k + 1, None))
        counts = lesion_counts(site.n_pathology, _LESION_MIX[i % len(_LESION_MIX)])
        types = [t for t, n in zip(LESION_TYPES, counts) for _ in range(n)]
        for k, lesion_type in enumerate(types):
            tasks.append(_Task(str(root), seed, scale, i, site, site.n_healthy + k + 1, lesion_type))
    return tasks


def lesion_counts(n_pathology: int, mix: tuple[float, ...]) -> list[int]:
    """Cases of each of ``LESION_TYPES`` among a site's pathological volumes: in proportion to ``mix``
    (exact sum), every type present when there are at least as many volumes as types, and
    equal shares when the count is a multiple of the number of types at the tiny scale's 6."""
    k = len(LESION_TYPES)
    if n_pathology == 2 * k:  # tiny: two of each
        return [2] * k
    counts = _allocate(n_pathology, np.asarray(mix, dtype=float))
    if n_pathology >= k:
        for i in range(k):
            while counts[i] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _existing(root: Path, seed: int, scale: str, sites: int) -> CohortManifest | None:
    """The manifest in ``root`` if it describes exactly this cohort and its files exist."""
    if not (root / MANIFEST_NAME).exists():
        return None
    manifest = CohortManifest.load(root)
    same = (
        manifest.seed == seed
        and manifest.scale == scale
        and len(manifest.sites) == sites
        and manifest.generator_version == GENERATOR_VERSION
    )
    if not same:
        raise DatasetError(
            f"{root} already holds a different cohort (seed {manifest.seed}, scale {manifest.scale}, "
            f"{len(manifest.sites)} sites, generator v{manifest.generator_version}); "
            "pass overwrite=True or choose another directory"
        )
    for subject in manifest.subjects:
        for rel in (subject.image, subject.brain_mask, subject.lesion_mask):
            if rel and not (root / rel).is_file():
                return None
    return manifest


def generate_cohort(
    out_dir: str | Path,
    *,
    sites: int = 4,
    scale: str = "tiny",
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
) -> CohortManifest:
    """Write a synthetic multi-site FLAIR cohort to ``out_dir`` and return its manifest.

    Layout: ``out_dir/site-K/healthy/sub-NNNN.nii.gz`` and
    ``out_dir/site-K/pathology/sub-NNNN_lesion-{ms,tumour}.nii.gz`` with
    ``_mask.nii.gz`` (ground truth), ``_brainmask.nii.gz`` (where the site ships
    masks) and a ``.json`` sidecar; ``out_dir/cohort.json`` describes it all.

    If ``out_dir`` already holds this exact cohort (same seed, scale, number of
    sites and generator version, all files present) nothing is rewritten and
    the stored manifest is returned with ``reused=True``. A different cohort
    there raises :class:`DatasetError` unless ``overwrite=True``, which deletes
    only the site directories and manifest this function writes.

    ``workers``: processes for rendering (default 1; ``paper`` defaults to the
    CPU count). The output is identical for any number of workers.
    """
    spec = _scale(scale)
    if not isinstance(sites, (int, np.integer)) or not 1 <= int(sites) <= 64:
        raise ConfigError(f"sites must be an integer in [1, 64]; got {sites!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}")
    sites, seed = int(sites), int(seed)
    root = Path(out_dir)
    started = time.perf_counter()
    profiles = site_profiles(seed, spec.name, sites)
    if not overwrite:
        found = _existing(root, seed, spec.name, sites)
        if found is not None:
            return replace(found, reused=True)
        clashes = [p.name for p in profiles if (root / p.name).exists()]
        if clashes:
            raise DatasetError(
                f"{root} already contains {', '.join(clashes)} without a matching {MANIFEST_NAME}; "
                "pass overwrite=True to replace them"
            )
    else:
        if (root / MANIFEST_NAME).exists():
            try:
                old = CohortManifest.load(root)
                stale = [root / name for name in old.site_names]
            except DatasetError:
                stale = []
            (root / MANIFEST_NAME).unlink()
        else:
            stale = []
        for directory in stale + [root / p.name for p in profiles]:
            if directory.is_dir():
                shutil.rmtree(directory)
    root.mkdir(parents=True, exist_ok=True)

    tasks = _tasks(root, seed, spec.name, profiles)
    if workers is None:
        workers = (os.cpu_count() or 1) if spec.name == "paper" else 1
    if workers > 1 and len(tasks) > 1:
        import multiprocessing

        # spawn, not fork: the parent may hold torch/OpenMP threads that fork would break.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            records = list(pool.map(_generate_one, tasks, chunksize=max(1, len(tasks) // (8 * workers))))
    else:
        records = [_generate_one(task) for task in tasks]

    manifest = CohortManifest(
        root=root,
        seed=seed,
        scale=spec.name,
        generator_version=GENERATOR_VERSION,
        sites=profiles,
        subjects=tuple(records),
        seconds=time.perf_counter() - started,
    )
    manifest.save()
    return manifest
