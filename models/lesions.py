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
    "sample_ms_lesions",
    "sample_tumour",
    "ellipsoid_occupancy",
    "tumour_occupancy",
    "mass_effect",
]

EDGE_MM = 1.0
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
) -> tuple[Ellipsoid, ...]:
    """Draw ``count[0]..count[1]`` MS-like ovoids (semi-axis scale in ``radius_mm``).

    Each ovoid has semi-axes ``(1.6 r, r, 0.8 r)`` with ``r ~ U(radius_mm)``;
    its intensity is ``contrast * (1 + N(0, 0.08))`` times white matter.
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
        r = float(rng.uniform(*radius_mm))
        intensity = float(contrast * (1.0 + 0.08 * rng.standard_normal()))
        lesions.append(
            Ellipsoid(
                centre=tuple(float(v) for v in centre),
                axes=tuple(tuple(float(v) for v in row) for row in axes),
                radii=(1.6 * r, r, 0.8 * r),
                intensity=max(intensity, 1.2),
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
