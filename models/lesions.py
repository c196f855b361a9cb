"""Geometry of synthetic lesions: where they go, what shape they have.

Everything here lives in *atlas space* (MNI mm): a lesion is placed relative to
the template's anatomy and is then carried into each subject by the subject's
deformation, exactly like the tissue (the renderer evaluates the occupancy at
the atlas position of every subject voxel).

**MS-like lesions** (:class:`Ellipsoid`): ovoids whose long axis follows the
gradient of the distance to the ventricles, i.e. points away from the
ventricular wall (the "Dawson's finger" orientation of periventricular
plaques). 70 % of centres are periventricular (white matter within 10 mm of a
ventricle), 30 % deep white matter (10-30 mm). Centres lie between 5 mm below
and 50 mm above the AC-PC plane so they fall in the kept axial slices.

**Tumours** (:class:`Tumour`): a glioblastoma-like mass in hemispheric white
matter: necrotic core (``rho < necrosis_fraction``), enhancing rim
(``necrosis_fraction <= rho < 1``) and vasogenic oedema
(``1 <= rho < oedema_ratio``, restricted to white matter, which gives it the
finger-like spread along tracts). ``rho = |q - c| / (R * m(n))`` is the
distance to the centre relative to a direction-dependent radius, with the
lobulation ``m(n) = 1 + sum_j alpha_j (n . v_j) + beta_j ((n . v_j)^2 - 1/3)``
for the unit direction ``n``. The tumour also pushes tissue aside
(:func:`mass_effect`).

**MS plaque sizes** (generator v2): semi-axis scale ``r`` log-uniform in
1-6 mm (semi-axes ``1.6 r, r, 0.8 r``), i.e. long-axis diameters 3.2-19 mm:
from the smallest lesions counted for diagnosis (at least 3 mm in long axis,
MAGNIMS consensus, Filippi et al., Lancet Neurol 2016;15:292-303) to the large
ovoid plaques (> 6 mm, van Walderveen and Barkhof, "Measures of T1 and T2
relaxation", doi:10.1201/9781439812242-17), with small plaques the common
ones. The same sizes at every scale: at 3 mm voxels the smallest plaques fall
below the voxel and leave no mask voxel (the mask counts occupancy >= 0.5).

**Vascular WMH** (:class:`VascularWMH`): white-matter hyperintensities of
presumed vascular origin, a separate lesion class, segmented under the STRIVE
standards in the MICCAI WMH challenge (Kuijf et al., IEEE TMI 2019,
arXiv:1904.00682): a periventricular band (Fazekas-like: thin caps/lining to a
smooth halo, irregular where the modulation is large) and punctate or patchy
deep foci. Periventricular and deep WMH are distinct patterns (Kanekar and
Devgun, "A pattern approach to focal white matter hyperintensities";
PMC5473621). Volumes come out at ~5-50 ml, mild to severe small-vessel disease.

**Faint lesions** (``FAINT_SHARE`` = 30 % of MS plaques, WMH band levels and
WMH foci): FLAIR level ``U(1.08, 1.25)`` times white matter, inside the range
of normal grey matter (``gm_ratio`` 1.05-1.45), so brightness alone does not
find them. Real WMH are foci of a more widespread, graded white-matter change
("WMH penumbra", Maillard et al., Stroke 2011;42:1917-22) with "pre-visible"
stages of altered water content (Wardlaw et al., J Am Heart Assoc 2015,
PMC4599520), and partial volume makes small plaques faint at coarse voxels.
The 30 % share is our choice, not a measured prevalence.

**Bright look-alikes** (:class:`LookAlikes`, rendered in *every* subject,
healthy or not, and never in a mask): fast FLAIR of normal volunteers
(Neuroradiology 1997;39:243-9, doi:10.1007/s002340050402) shows caps of high
signal around the frontal horns in 90 % and occipital horns in 77 % (54 %
asymmetrical), a thin bright outline of the third and fourth ventricles and
high signal along the corticospinal tract at the internal capsule in all
subjects (extending 0.5-5.5 cm). The frontal caps are the "ependymitis
granularis" pseudo-lesions (Sze et al., AJR 1986;147:331-7), triangular and
under 1 cm. Intraventricular CSF pulsation artefacts appear as hyperintensity
in 16 % of FLAIR examinations (fourth > third > lateral ventricles; Ogbole et
al., Niger Med J 2016;57:59-63; flow artefacts are common at the foramen of
Monro and aqueduct). Caps, outline and tract are parenchymal; flow blobs
replace dark CSF. Their FLAIR levels (caps 1.1-1.4, outline 1.1-1.35, tract
1.04-1.15, flow 0.7-1.4 times white matter) are our assumptions: the sources
give prevalence and shape, not intensities. The septum pellucidum is *not*
rendered as a look-alike: it is isointense in normal subjects and bright
mainly in hydrocephalus (Kim et al., J Korean Radiol Soc 1994;30:795-800).

Occupancies are partial-volume fractions with a linear ramp of ``edge_mm``
across the nominal boundary: ``clip(0.5 + (1 - rho) * r / edge_mm, 0, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .atlas import TissueAtlas

__all__ = [
    "Ellipsoid",
    "Tumour",
    "VascularWMH",
    "LookAlikes",
    "LOOKALIKE_CHANNELS",
    "FAINT_SHARE",
    "FAINT_CONTRAST",
    "sample_vascular",
    "band_occupancy",
    "sample_lookalikes",
    "lookalike_maps",
    "corticospinal_tracts",
    "sample_ms_lesions",
    "sample_tumour",
    "ellipsoid_occupancy",
    "tumour_occupancy",
    "mass_effect",
]

EDGE_MM = 1.0
#: Share of lesions drawn *faint* and their FLAIR level relative to white matter: near normal
#: brightness, within the range of normal grey matter (module docstring, "faint lesions").
FAINT_SHARE = 0.3
FAINT_CONTRAST = (1.08, 1.25)
# Axial band (MNI z, mm) where lesions are placed: inside the default slice range.
_Z_BAND_MS = (-5.0, 50.0)
_Z_BAND_TUMOUR = (-5.0, 40.0)


@dataclass(frozen=True)
class Ellipsoid:
    """An MS-like plaque: centre (mm), orthonormal ``axes`` (columns), semi-axes ``radii`` (mm)."""

    centre: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]
    radii: tuple[float, float, float]
    intensity: float  # FLAIR intensity relative to white matter

    def as_dict(self) -> dict:
        return {"centre": list(self.centre), "radii": list(self.radii), "intensity": self.intensity}


@dataclass(frozen=True)
class Tumour:
    """A glioblastoma-like mass (see the module docstring for the geometry)."""

    centre: tuple[float, float, float]
    radius_mm: float
    necrosis_fraction: float
    oedema_ratio: float
    lobe_vectors: tuple[tuple[float, float, float], ...]
    lobe_alpha: tuple[float, ...]
    lobe_beta: tuple[float, ...]
    mass_effect: float
    necrosis_intensity: float
    rim_intensity: float
    oedema_intensity: float

    def as_dict(self) -> dict:
        return {
            "centre": list(self.centre),
            "radius_mm": self.radius_mm,
            "necrosis_fraction": self.necrosis_fraction,
            "oedema_ratio": self.oedema_ratio,
            "mass_effect": self.mass_effect,
            "intensities": {
                "necrosis": self.necrosis_intensity,
                "rim": self.rim_intensity,
                "oedema": self.oedema_intensity,
            },
        }


def _axis_mm(atlas: TissueAtlas, axis: int) -> np.ndarray:
    """MNI coordinate (mm) along world axis ``axis`` of each atlas index along that axis
    (the atlas grid is axis-aligned, RAS)."""
    index = np.zeros((atlas.shape[axis], 3))
    index[:, axis] = np.arange(atlas.shape[axis])
    return atlas.world(index)[:, axis]


@lru_cache(maxsize=4)
def _ms_candidates(atlas: TissueAtlas) -> tuple[np.ndarray, np.ndarray]:
    """Atlas voxel indices for periventricular and for deep white-matter MS centres."""
    z = _axis_mm(atlas, 2)
    band = (z >= _Z_BAND_MS[0]) & (z <= _Z_BAND_MS[1])
    d = atlas.ventricle_distance_mm
    in_band = np.zeros(atlas.shape, dtype=bool)
    in_band[:, :, band] = True
    periventricular = (atlas.wm > 0.7) & (d > 0) & (d <= 10.0) & in_band
    deep = (atlas.wm > 0.85) & (d > 10.0) & (d <= 30.0) & in_band
    return np.argwhere(periventricular), np.argwhere(deep)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


def _local_gradient(field: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Central-difference gradient of ``field`` at one voxel (index units)."""
    grad = np.zeros(3)
    for axis in range(3):
        lo, hi = index.copy(), index.copy()
        lo[axis] = max(index[axis] - 1, 0)
        hi[axis] = min(index[axis] + 1, field.shape[axis] - 1)
        if hi[axis] > lo[axis]:
            grad[axis] = (float(field[tuple(hi)]) - float(field[tuple(lo)])) / (hi[axis] - lo[axis])
    return grad


def _frame(long_axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An orthonormal frame (columns) whose first column is ``long_axis``."""
    a = _unit(long_axis)
    helper = _unit(rng.standard_normal(3))
    b = _unit(helper - a * (helper @ a))
    if np.linalg.norm(helper - a * (helper @ a)) < 1e-6:
        b = _unit(np.cross(a, [1.0, 0.0, 0.0]))
    c = np.cross(a, b)
    return np.stack([a, b, c], axis=1)


def sample_ms_lesions(
    atlas: TissueAtlas,
    rng: np.random.Generator,
    *,
    count: tuple[int, int],
    radius_mm: tuple[float, float],
    contrast: float,
    faint_share: float = FAINT_SHARE,
) -> tuple[Ellipsoid, ...]:
    """Draw ``count[0]..count[1]`` MS-like ovoids (semi-axis scale in ``radius_mm``).

    Each ovoid has semi-axes ``(1.6 r, r, 0.8 r)`` with ``r`` log-uniform in
    ``radius_mm`` (small plaques are the common ones); its intensity is
    ``contrast * (1 + N(0, 0.08))`` times white matter (at least 1.2), or, with
    probability ``faint_share``, faint: ``U(FAINT_CONTRAST)``.
    """
    periventricular, deep = _ms_candidates(atlas)
    n = int(rng.integers(count[0], count[1] + 1))
    lesions = []
    for _ in range(n):
        pool = periventricular if (rng.random() < 0.7 or len(deep) == 0) else deep
        index = pool[int(rng.integers(len(pool)))]
        centre = atlas.world(index[None, :] + rng.uniform(-0.5, 0.5, 3))[0]
        direction = atlas.affine[:3, :3] @ _local_gradient(atlas.ventricle_distance_mm, index)
        axes = _frame(direction if np.linalg.norm(direction) > 1e-6 else rng.standard_normal(3), rng)
        r = float(np.exp(rng.uniform(np.log(radius_mm[0]), np.log(radius_mm[1]))))
        if rng.random() < faint_share:
            intensity = float(rng.uniform(*FAINT_CONTRAST))
        else:
            intensity = max(float(contrast * (1.0 + 0.08 * rng.standard_normal())), 1.2)
        lesions.append(
            Ellipsoid(
                centre=tuple(float(v) for v in centre),
                axes=tuple(tuple(float(v) for v in row) for row in axes),
                radii=(1.6 * r, r, 0.8 * r),
                intensity=intensity,
            )
        )
    return tuple(lesions)


def sample_tumour(
    atlas: TissueAtlas,
    rng: np.random.Generator,
    *,
    radius_mm: tuple[float, float],
    oedema_contrast: float,
) -> Tumour:
    """Draw one glioblastoma-like tumour in hemispheric white matter.

    Radius ``R ~ U(radius_mm)`` (outer edge of the enhancing rim); necrotic core
    fraction ``U(0.3, 0.6)``; oedema to ``U(1.5, 2.2) R``; lobulation
    ``alpha ~ N(0, 0.08)``, ``beta ~ N(0, 0.15)``; mass effect ``U(0.25, 0.45)``.
    FLAIR intensities relative to white matter: necrosis ``U(0.55, 0.9)`` (dark),
    rim ``U(1.9, 2.3)`` (bright), oedema ``oedema_contrast * U(0.95, 1.1)``.
    """
    radius = float(rng.uniform(*radius_mm))
    z_axis, x_axis = _axis_mm(atlas, 2), _axis_mm(atlas, 0)
    ok_z = (z_axis >= _Z_BAND_TUMOUR[0]) & (z_axis <= _Z_BAND_TUMOUR[1])
    ok_x = np.abs(x_axis) >= 12.0  # one hemisphere, off the midline
    base = (atlas.wm > 0.5) & ok_x[:, None, None] & ok_z[None, None, :] & ~atlas.ventricles
    while True:
        candidates = np.argwhere(base & (atlas.surface_distance_mm >= radius + 8.0))
        if len(candidates) or radius <= 4.0:
            break
        radius *= 0.85  # a brain too small for this tumour: shrink it rather than fail
    if not len(candidates):
        candidates = np.argwhere(atlas.wm > 0.5)
    index = candidates[int(rng.integers(len(candidates)))]
    centre = atlas.world(index[None, :] + rng.uniform(-0.5, 0.5, 3))[0]
    vectors = np.stack([_unit(rng.standard_normal(3)) for _ in range(3)])
    return Tumour(
        centre=tuple(float(v) for v in centre),
        radius_mm=radius,
        necrosis_fraction=float(rng.uniform(0.3, 0.6)),
        oedema_ratio=float(rng.uniform(1.5, 2.2)),
        lobe_vectors=tuple(tuple(float(v) for v in row) for row in vectors),
        lobe_alpha=tuple(float(v) for v in 0.08 * rng.standard_normal(3)),
        lobe_beta=tuple(float(v) for v in 0.15 * rng.standard_normal(3)),
        mass_effect=float(rng.uniform(0.25, 0.45)),
        necrosis_intensity=float(rng.uniform(0.55, 0.9)),
        rim_intensity=float(rng.uniform(1.9, 2.3)),
        oedema_intensity=float(oedema_contrast * rng.uniform(0.95, 1.1)),
    )


def _ramp(rho: np.ndarray, boundary: float, radius: float, edge_mm: float) -> np.ndarray:
    """Partial-volume occupancy of ``rho < boundary``: a linear ramp ``edge_mm`` wide."""
    return np.clip(0.5 + (boundary - rho) * (radius / edge_mm), 0.0, 1.0).astype(np.float32)


def ellipsoid_occupancy(q: np.ndarray, lesion: Ellipsoid, edge_mm: float = EDGE_MM) -> np.ndarray:
    """Occupancy in [0, 1] of one ovoid at atlas positions ``q`` (shape ``(3, ...)``).

    ``rho = || diag(1/radii) axes^T (q - centre) ||``; occupancy ramps from 1 to 0
    across ``rho = 1`` over ``edge_mm`` (scaled by the geometric-mean radius).
    """
    centre = np.asarray(lesion.centre, dtype=np.float32).reshape(3, *([1] * (q.ndim - 1)))
    d = q - centre
    reach = max(lesion.radii) + edge_mm
    near = (d[0] ** 2 + d[1] ** 2 + d[2] ** 2) <= reach**2
    out = np.zeros(q.shape[1:], dtype=np.float32)
    if not near.any():
        return out
    local = d[:, near]
    axes = np.asarray(lesion.axes, dtype=np.float32)
    radii = np.asarray(lesion.radii, dtype=np.float32)
    coords = (axes.T @ local) / radii[:, None]
    rho = np.sqrt((coords**2).sum(axis=0))
    out[near] = _ramp(rho, 1.0, float(np.exp(np.log(radii).mean())), edge_mm)
    return out


def _relative_radius(q: np.ndarray, tumour: Tumour) -> np.ndarray:
    """``rho = |q - c| / (R m(n))`` for positions ``q`` of shape (3, N)."""
    centre = np.asarray(tumour.centre, dtype=np.float32)[:, None]
    d = q - centre
    r = np.sqrt((d**2).sum(axis=0))
    n = d / np.maximum(r, 1e-6)
    lobes = np.ones_like(r)
    for v, a, b in zip(tumour.lobe_vectors, tumour.lobe_alpha, tumour.lobe_beta):
        cos = np.asarray(v, dtype=np.float32) @ n
        lobes += a * cos + b * (cos**2 - 1.0 / 3.0)
    return r / (tumour.radius_mm * np.maximum(lobes, 0.5))


def tumour_occupancy(
    q: np.ndarray, tumour: Tumour, white_matter: np.ndarray, edge_mm: float = EDGE_MM
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancies ``(necrosis, rim, oedema)`` at atlas positions ``q`` (shape ``(3, ...)``).

    ``white_matter`` (same spatial shape) is the subject's white-matter fraction;
    oedema occupancy is multiplied by ``clip((wm - 0.2) / 0.4, 0, 1)`` so that
    it spreads in white matter only. The three layers never overlap and sum to
    at most 1.
    """
    shape = q.shape[1:]
    flat = q.reshape(3, -1)
    reach = tumour.radius_mm * tumour.oedema_ratio * 1.6 + edge_mm
    centre = np.asarray(tumour.centre, dtype=np.float32)[:, None]
    near = ((flat - centre) ** 2).sum(axis=0) <= reach**2
    necrosis = np.zeros(flat.shape[1], dtype=np.float32)
    rim = np.zeros_like(necrosis)
    oedema = np.zeros_like(necrosis)
    if near.any():
        rho = _relative_radius(flat[:, near], tumour)
        core = _ramp(rho, tumour.necrosis_fraction, tumour.radius_mm, edge_mm)
        solid = _ramp(rho, 1.0, tumour.radius_mm, edge_mm)
        spread = _ramp(rho, tumour.oedema_ratio, tumour.radius_mm, edge_mm)
        wm = white_matter.reshape(-1)[near]
        spread = spread * np.clip((wm - 0.2) / 0.4, 0.0, 1.0)
        necrosis[near] = core
        rim[near] = solid - core
        oedema[near] = np.maximum(spread - solid, 0.0)
    return necrosis.reshape(shape), rim.reshape(shape), oedema.reshape(shape)


def mass_effect(q: np.ndarray, tumour: Tumour) -> np.ndarray:
    """Where the tissue now seen at atlas position ``q`` came from (shape ``(3, ...)``).

    ``q' = c + (q - c) (1 - m exp(-|q - c|^2 / (2 s^2)))`` with ``s = 1.5 R``: a
    radial map that is monotone in ``|q - c|`` for ``m < 1`` (its derivative
    is at least ``1 - m``), so tissue is compressed around the tumour without
    folding; the largest push is about ``0.6 s m`` (5 mm for R = 15 mm, m = 0.4).
    """
    centre = np.asarray(tumour.centre, dtype=np.float32).reshape(3, *([1] * (q.ndim - 1)))
    d = q - centre
    s = 1.5 * tumour.radius_mm
    shrink = 1.0 - tumour.mass_effect * np.exp(-(d**2).sum(axis=0) / (2.0 * s * s))
    return (centre + d * shrink).astype(np.float32)


# -- vascular white-matter hyperintensities ----------------------------------------------------------


@dataclass(frozen=True)
class VascularWMH:
    """White-matter hyperintensities of presumed vascular origin (see :func:`sample_vascular`).

    A periventricular band (``band_mm`` thick on average, modulated by the
    plane waves ``band_waves``: rows ``(omega_x, omega_y, omega_z, phase, amplitude)``)
    plus deep punctate/patchy foci (``foci``, near-spherical :class:`Ellipsoid` s).
    """

    band_mm: float
    band_waves: tuple[tuple[float, float, float, float, float], ...]
    band_intensity: float
    foci: tuple[Ellipsoid, ...]

    def as_dict(self) -> dict:
        return {"band_mm": self.band_mm, "band_intensity": self.band_intensity,
                "foci": [f.as_dict() for f in self.foci]}


def _intensity(rng: np.random.Generator, bright: tuple[float, float], faint_share: float,
               faint: tuple[float, float] = FAINT_CONTRAST) -> float:
    """A lesion's FLAIR level relative to white matter: faint (near normal) with probability ``faint_share``."""
    if rng.random() < faint_share:
        return float(rng.uniform(*faint))
    return float(rng.uniform(*bright))


def sample_vascular(atlas: TissueAtlas, rng: np.random.Generator, *, faint_share: float = FAINT_SHARE) -> VascularWMH:
    """Draw one subject's vascular WMH (small-vessel disease, Fazekas-like grades).

    Periventricular band: mean thickness ``U(1.5, 6)`` mm (Fazekas 1 "caps or
    pencil-thin lining" to 2 "smooth halo"; 3, irregular extension into deep
    white matter, comes from the modulation ``1 + sum of 4 plane waves``, wavelengths
    30-90 mm, amplitudes ``N(0, 0.25)``). Deep foci: 2-12 near-spherical ovoids
    (semi-axes ``r, 0.85 r, 0.7 r``, ``r ~ U(1, 4)`` mm: punctate 2-8 mm foci)
    in deep white matter, any orientation. Levels relative to white matter
    ``U(1.25, 1.6)`` (the band) and per focus, each faint (``FAINT_CONTRAST``)
    with probability ``faint_share``.
    """
    periventricular, deep = _ms_candidates(atlas)
    waves = []
    for _ in range(4):
        direction = _unit(rng.standard_normal(3))
        omega = direction * (2.0 * np.pi / rng.uniform(30.0, 90.0))
        phase, amplitude = float(rng.uniform(0, 2 * np.pi)), float(0.25 * rng.standard_normal())
        waves.append((*(float(v) for v in omega), phase, amplitude))
    foci = []
    pool = deep if len(deep) else periventricular
    for _ in range(int(rng.integers(2, 13))):
        index = pool[int(rng.integers(len(pool)))]
        centre = atlas.world(index[None, :] + rng.uniform(-0.5, 0.5, 3))[0]
        r = float(rng.uniform(1.0, 4.0))
        foci.append(Ellipsoid(
            centre=tuple(float(v) for v in centre),
            axes=tuple(tuple(float(v) for v in row) for row in _frame(rng.standard_normal(3), rng)),
            radii=(r, 0.85 * r, 0.7 * r),
            intensity=_intensity(rng, (1.25, 1.6), faint_share),
        ))
    return VascularWMH(
        band_mm=float(rng.uniform(1.5, 6.0)),
        band_waves=tuple(waves),
        band_intensity=_intensity(rng, (1.25, 1.6), faint_share),
        foci=tuple(foci),
    )


def band_occupancy(q: np.ndarray, ventricle_distance: np.ndarray, parenchyma: np.ndarray, wmh: VascularWMH,
                   edge_mm: float = EDGE_MM) -> np.ndarray:
    """Occupancy of the periventricular band at atlas positions ``q`` (shape ``(3, ...)``).

    ``ventricle_distance`` (mm, same spatial shape as ``q[0]``) is the atlas's
    distance to the ventricles read at ``q``, ``parenchyma`` the subject's
    GM + WM fraction there. Occupancy ``ramp(d < T(q))`` with the local
    thickness ``T(q) = band_mm * max(0.2, 1 + sum_k a_k cos(omega_k . q + phi_k))``,
    outside the ventricles (``d > 0``), times ``parenchyma``, inside the axial band
    where lesions are placed.
    """
    modulation = np.ones(q.shape[1:], dtype=np.float32)
    for wx, wy, wz, phase, amplitude in wmh.band_waves:
        modulation += np.float32(amplitude) * np.cos(wx * q[0] + wy * q[1] + wz * q[2] + np.float32(phase))
    thickness = np.float32(wmh.band_mm) * np.maximum(modulation, 0.2)
    occupancy = np.clip(0.5 + (thickness - ventricle_distance) / np.float32(edge_mm), 0.0, 1.0)
    occupancy *= (ventricle_distance > 0).astype(np.float32)
    in_band = ((q[2] >= _Z_BAND_MS[0]) & (q[2] <= _Z_BAND_MS[1])).astype(np.float32)
    return (occupancy * parenchyma * in_band).astype(np.float32)


# -- bright look-alikes (normal findings and artefacts, never lesions) --------------------------------


@dataclass(frozen=True)
class LookAlikes:
    """One subject's normal FLAIR hyperintensities (see :func:`sample_lookalikes`); levels relative to WM,
    0 where absent. ``flow`` are intraventricular CSF flow-artefact blobs."""

    frontal_caps: tuple[float, float]  # left, right
    occipital_caps: tuple[float, float]
    ependymal_line: float
    corticospinal: float
    corticospinal_length_mm: float
    flow: tuple[Ellipsoid, ...]

    def as_dict(self) -> dict:
        return {"frontal_caps": list(self.frontal_caps), "occipital_caps": list(self.occipital_caps),
                "ependymal_line": self.ependymal_line, "corticospinal": self.corticospinal,
                "corticospinal_length_mm": self.corticospinal_length_mm,
                "flow": [f.as_dict() for f in self.flow]}


#: Channels of :func:`lookalike_maps` (atlas grid, channel-last).
LOOKALIKE_CHANNELS = ("ventricle_distance", "frontal_cap_left", "frontal_cap_right", "occipital_cap_left",
                      "occipital_cap_right", "ependymal_line")


@lru_cache(maxsize=4)
def lookalike_maps(atlas: TissueAtlas) -> np.ndarray:
    """Atlas-grid maps ``(X, Y, Z, len(LOOKALIKE_CHANNELS))`` for periventricular look-alikes.

    * ``ventricle_distance`` (mm), for the vascular band;
    * caps: parenchyma within 5 mm of the 4 mm tip of each hemisphere's
      frontal (anterior) or occipital (posterior) horn, in front of (behind)
      the tip, edges softened (sigma 0.5 mm): a focus under 1 cm across;
    * ``ependymal_line``: parenchyma within 1.5 mm of the third ventricle
      (ventricle voxels with ``|x| < 4`` mm below z = 12 mm): its thin bright outline.
    """
    from scipy import ndimage

    d = atlas.ventricle_distance_mm
    x, y, z = _axis_mm(atlas, 0), _axis_mm(atlas, 1), _axis_mm(atlas, 2)
    voxel = float(atlas.resolution_mm)
    parenchyma = np.clip(atlas.gm + atlas.wm, 0.0, 1.0)
    outside = ~atlas.ventricles

    def near(seed: np.ndarray, reach_mm: float) -> np.ndarray:
        """Soft occupancy of the parenchyma within ``reach_mm`` of ``seed`` voxels (outside the ventricles)."""
        if not seed.any():
            return np.zeros(atlas.shape, dtype=np.float32)
        distance = ndimage.distance_transform_edt(~seed) * voxel
        region = ((distance > 0) & (distance <= reach_mm) & outside).astype(np.float32)
        return np.clip(ndimage.gaussian_filter(region, 0.5 / voxel), 0.0, 1.0) * parenchyma * outside

    maps = [d.astype(np.float32)]
    for side in (x < 0, x >= 0):  # left, right (RAS: x grows to the right)
        hemisphere = atlas.ventricles & side[:, None, None] & (np.abs(x)[:, None, None] >= 2.0)
        ys = y[np.nonzero(hemisphere)[1]] if hemisphere.any() else np.array([0.0])
        front, back = float(ys.max()), float(ys.min())
        frontal_tip = hemisphere & (y >= front - 4.0)[None, :, None]
        occipital_tip = hemisphere & (y <= back + 4.0)[None, :, None]
        maps.append(near(frontal_tip, 5.0) * (y >= front - 4.0)[None, :, None])
        maps.append(near(occipital_tip, 5.0) * (y <= back + 4.0)[None, :, None])
    # Channel order: frontal left, frontal right, occipital left, occipital right.
    maps = [maps[0], maps[1], maps[3], maps[2], maps[4]]
    third = atlas.ventricles & (np.abs(x) < 4.0)[:, None, None] & (z < 12.0)[None, None, :]
    maps.append(near(third, max(1.5, voxel)))  # at least the one-voxel shell
    return np.ascontiguousarray(np.stack(maps, axis=-1).astype(np.float32))


def sample_lookalikes(atlas: TissueAtlas, rng: np.random.Generator) -> LookAlikes:
    """Draw one subject's normal FLAIR hyperintensities and flow artefacts (healthy or not).

    Prevalences follow fast-FLAIR findings in normal volunteers (module
    docstring): frontal caps in 90 % and occipital caps in 77 % of subjects,
    each side's level drawn independently (caps are often asymmetrical); the
    third-ventricle outline and the corticospinal-tract signal at the internal
    capsule in every subject (length 5-55 mm); intraventricular CSF flow
    artefacts in 16 % of subjects (1-2 blobs in the third or lateral ventricles
    near the midline). Levels relative to white matter: caps ``U(1.1, 1.4)``,
    outline ``U(1.1, 1.35)``, corticospinal tract ``U(1.04, 1.15)``, flow
    artefacts ``U(0.7, 1.4)`` (in dark CSF).
    """
    def cap(p: float) -> float:
        return float(rng.uniform(1.1, 1.4)) if rng.random() < p else 0.0

    frontal = cap(0.9)
    frontal = (frontal, float(rng.uniform(1.1, 1.4)) if frontal and rng.random() > 0.3 else cap(0.5))
    occipital = cap(0.77)
    occipital = (occipital, float(rng.uniform(1.1, 1.4)) if occipital and rng.random() > 0.3 else cap(0.5))
    flow = []
    if rng.random() < 0.16:
        x = _axis_mm(atlas, 0)
        candidates = np.argwhere(atlas.ventricles & (np.abs(x) < 12.0)[:, None, None])
        for _ in range(int(rng.integers(1, 3))):
            if not len(candidates):
                break
            index = candidates[int(rng.integers(len(candidates)))]
            r = float(rng.uniform(2.0, 5.0))
            flow.append(Ellipsoid(
                centre=tuple(float(v) for v in atlas.world(index[None, :])[0]),
                axes=tuple(tuple(float(v) for v in row) for row in _frame(rng.standard_normal(3), rng)),
                radii=(1.5 * r, r, 0.7 * r), intensity=float(rng.uniform(0.7, 1.4)),
            ))
    return LookAlikes(
        frontal_caps=frontal, occipital_caps=occipital,
        ependymal_line=float(rng.uniform(1.1, 1.35)),
        corticospinal=float(rng.uniform(1.04, 1.15)),
        corticospinal_length_mm=float(rng.uniform(5.0, 55.0)),
        flow=tuple(flow),
    )


def corticospinal_tracts(lookalikes: LookAlikes) -> tuple[Ellipsoid, Ellipsoid]:
    """The two corticospinal-tract segments through the posterior limbs of the internal capsules
    (MNI x = +-23, y = -17, from z = 0 upwards), as vertical ovoids ``length_mm`` long, 3 x 4 mm across."""
    half = lookalikes.corticospinal_length_mm / 2.0
    vertical = ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # columns: long axis z, then x, y
    axes = tuple(tuple(row) for row in np.array(vertical).T)
    return tuple(Ellipsoid(centre=(sign * 23.0, -17.0, half), axes=axes, radii=(half, 3.0, 4.0),
                           intensity=lookalikes.corticospinal) for sign in (-1.0, 1.0))  # type: ignore[return-value]
