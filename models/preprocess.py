"""From a canonical NIfTI volume to a stack of normalised axial slices.

The pipeline (:func:`preprocess_volume`), in order:

1. **Brain mask** - the given ``*_brainmask`` or :func:`derive_brain_mask`.
2. **Intensity normalisation** - ``x' = clip(x / m, 0, clip_max)`` where ``m`` is
   the *median of the intensities inside the brain mask* (``intensity_statistic=
   "median"``, the default). Why the median of brain voxels: it is a statistic of
   the tissue mixture that a lesion cannot move until it fills half the brain. A
   percentile of the whole slice or volume (or even the brain's 99th percentile,
   offered as ``"p99"`` for comparison) is set by the brightest voxels: one
   large hyperintense tumour (oedema can reach 5-10 % of the brain) raises it,
   the whole image is divided by more, and the tumour's contrast against normal
   tissue - the very signal anomaly detection needs - shrinks. Voxels outside
   the brain are set to 0 (skull-stripped input, as in FedDis).
3. **Resampling onto a fixed physical grid** - one affine resampling
   (``scipy.ndimage.affine_transform``, trilinear, order 1) straight from the
   canonical voxel grid to the output slice grid: in-plane spacing
   ``s = field_of_view_mm / image_size`` mm, slice spacing ``slice_spacing_mm``
   (default ``s``: isotropic), image centred on the centre of the brain's
   bounding box. Choice and reasons: a fixed field of view in mm keeps anatomy
   at the same physical scale for every subject and site (a site scanning at
   0.9 mm and one at 3 mm give the same picture), needs a single interpolation
   (resample-then-resize would interpolate twice), handles oblique affines for
   free, and lets predictions be written back to NIfTI (``grid_affine``).
   Linear interpolation cannot overshoot, so intensities stay non-negative and
   no ringing appears around bright lesions. When the output is coarser than
   the input, the volume is first smoothed with a Gaussian whose FWHM is
   ``sqrt(out^2 - in^2)`` along each axis, so downsampling averages noise
   instead of aliasing it. Masks go through the same resampling as fractions
   and are thresholded at 0.5 (area-preserving).
4. **Slice selection** - among the output planes that contain brain, numbered
   from the most inferior, keep those whose centre lies in the fraction
   ``slice_range = (lo, hi)`` of the brain's axial extent (default 0.30-0.70: from the temporal lobes to the
   top of the lateral ventricles, where most MS lesions and gliomas appear and
   where cerebellum and skull base, which autoencoders reconstruct poorly, are
   excluded).

Memory: every step works in float32 and in place where it can, so loading plus
preprocessing one volume peaks at a small multiple of the volume's float32 size
(``benchmarks/test_bench_memory.py`` measures the peak RSS and states it).

Output slices are ``(S, H, W)`` float32 in display orientation: row 0 is
anterior, column 0 is the patient's left (neurological convention), slice 0 is
the most inferior kept plane. ``grid_affine`` maps an index ``(slice, row, col)``
to RAS+ millimetres.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import ConfigError, NiftiError, PreprocessWarning
from .nifti import NiftiVolume, nifti_stem

__all__ = [
    "PreprocessConfig",
    "SliceVolume",
    "preprocess_volume",
    "derive_brain_mask",
    "otsu_threshold",
    "brain_statistic",
]

IntensityStatistic = Literal["median", "p99"]
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess_volume` (part of the cache key).

    ``image_size``: output slices are ``image_size x image_size`` (128 as in
    FedDis; 64 for CPU demos). ``field_of_view_mm``: in-plane extent of a slice;
    220 mm holds an adult brain (MNI152 is 145 x 181 mm in-plane) with room for
    head size and rotation. ``slice_spacing_mm``: distance between kept planes,
    ``None`` for isotropic (= in-plane spacing). ``slice_range``: fraction of the
    brain's axial extent kept, ``0 <= lo < hi <= 1``. ``intensity_statistic``:
    ``"median"`` (default) or ``"p99"`` of brain voxels. ``clip_max``: upper clip
    of normalised intensities (guards against hot voxels).
    """

    image_size: int = 128
    field_of_view_mm: float = 220.0
    slice_spacing_mm: float | None = None
    slice_range: tuple[float, float] = (0.30, 0.70)
    intensity_statistic: IntensityStatistic = "median"
    clip_max: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, (int, np.integer)) or not 16 <= int(self.image_size) <= 1024:
            raise ConfigError(f"image_size must be an integer in [16, 1024]; got {self.image_size!r}")
        if not (math.isfinite(self.field_of_view_mm) and self.field_of_view_mm > 0):
            raise ConfigError(f"field_of_view_mm must be positive; got {self.field_of_view_mm!r}")
        if self.slice_spacing_mm is not None and not (
            math.isfinite(self.slice_spacing_mm) and self.slice_spacing_mm > 0
        ):
            raise ConfigError(f"slice_spacing_mm must be positive or None; got {self.slice_spacing_mm!r}")
        try:
            lo, hi = (float(v) for v in self.slice_range)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"slice_range must be a pair (lo, hi); got {self.slice_range!r}") from exc
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"slice_range must satisfy 0 <= lo < hi <= 1; got {self.slice_range!r}")
        object.__setattr__(self, "slice_range", (lo, hi))
        if self.intensity_statistic not in ("median", "p99"):
            raise ConfigError(
                f"intensity_statistic must be 'median' or 'p99'; got {self.intensity_statistic!r}"
            )
        if not self.clip_max > 1.0:
            raise ConfigError(f"clip_max must exceed 1; got {self.clip_max!r}")
        object.__setattr__(self, "image_size", int(self.image_size))

    @property
    def pixel_spacing_mm(self) -> float:
        """In-plane spacing ``field_of_view_mm / image_size``."""
        return self.field_of_view_mm / self.image_size

    @property
    def plane_spacing_mm(self) -> float:
        """Slice spacing (the in-plane spacing when ``slice_spacing_mm`` is None)."""
        return self.slice_spacing_mm if self.slice_spacing_mm is not None else self.pixel_spacing_mm

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SliceVolume:
    """One preprocessed volume: aligned stacks of axial slices, all ``(S, H, W)``.

    ``image`` float32 normalised intensities (0 outside the brain); ``brain``
    bool brain mask; ``lesion`` bool ground truth restricted to the brain mask
    (``None`` for healthy volumes);
    ``grid_affine`` maps ``(slice, row, col, 1)`` to RAS+ mm; ``slice_fraction``
    the position of each slice within the brain's axial extent (0 = most
    inferior brain plane, 1 = top); ``intensity_scale`` the brain statistic the
    source intensities were divided by; ``subject`` the data subject the volume
    belongs to (a BIDS ``sub-`` label: several sessions or runs of one person
    share it), ``None`` when the volume is its own subject (the site layout
    holds one volume per subject). Arrays are read-only.
    """

    name: str
    source: Path
    image: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    grid_affine: np.ndarray
    slice_fraction: np.ndarray
    intensity_scale: float
    lesion_type: str | None = None
    subject: str | None = None

    @property
    def subject_key(self) -> str:
        """The identity of the data subject: ``subject`` when known, else the volume's own source path."""
        return f"subject:{self.subject}" if self.subject is not None else f"volume:{self.source}"

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape)  # type: ignore[return-value]

    @property
    def lesion_voxels(self) -> int:
        return 0 if self.lesion is None else int(self.lesion.sum())


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut that maximises the between-class variance.

    With histogram probabilities ``p_i`` at bin centres ``c_i``, class weight
    ``w(t) = sum_{i<=t} p_i`` and class mean ``mu(t) = sum_{i<=t} p_i c_i``, the
    between-class variance is ``(mu_T w - mu)^2 / (w (1 - w))``; the threshold is
    the upper edge of the maximising bin.
    """
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    values = values.ravel()  # a view for contiguous input: no float64 copy of a float32 volume
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = counts / counts.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w = np.cumsum(p)
    mu = np.cumsum(p * centres)
    mu_total = mu[-1]
    denominator = w * (1.0 - w)
    valid = denominator > 1e-12
    between = np.zeros_like(w)
    between[valid] = (mu_total * w[valid] - mu[valid]) ** 2 / denominator[valid]
    return float(edges[int(np.argmax(between)) + 1])


def _ball(radius_vox: np.ndarray) -> np.ndarray:
    """An ellipsoidal structuring element with the given per-axis radii (voxels)."""
    r = np.maximum(np.ceil(radius_vox).astype(int), 1)
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    return sum((g / max(rad, 1e-6)) ** 2 for g, rad in zip(grids, radius_vox)) <= 1.0


def derive_brain_mask(data: np.ndarray, voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A brain mask for a *skull-stripped* volume (background at or near zero).

    Steps: Gaussian smoothing (sigma 1 mm, suppresses background noise) ->
    foreground = smoothed > 0.5 x Otsu threshold (Otsu separates background
    from tissue; half of it keeps dark CSF, which in FLAIR sits well below
    tissue but well above the background) -> the largest 26-connected component
    (drops noise specks) -> closing with a 3 mm ball (bridges sulci) -> hole
    filling in 3-D and then slice by slice (ventricles). Without skull
    stripping this returns the head, not the brain: supply ``*_brainmask`` then.
    """
    from scipy import ndimage

    data = np.asarray(data, dtype=np.float32)
    voxel = np.asarray(voxel_size, dtype=np.float64)
    smoothed = ndimage.gaussian_filter(data, sigma=1.0 / voxel)
    threshold = 0.5 * otsu_threshold(smoothed)
    foreground = smoothed > threshold
    del smoothed  # memory: never hold the smoothed copy and the labels together
    if not foreground.any():
        return foreground
    labels, n = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        foreground = labels == int(np.argmax(sizes))
    del labels
    radius = 3.0 / voxel
    pad = np.maximum(np.ceil(radius).astype(int), 1)
    padded = np.pad(foreground, [(p, p) for p in pad])
    closed = ndimage.binary_closing(padded, structure=_ball(radius))
    closed = closed[tuple(slice(p, -p) for p in pad)]
    filled = ndimage.binary_fill_holes(closed)
    for k in range(filled.shape[2]):
        filled[:, :, k] = ndimage.binary_fill_holes(filled[:, :, k])
    return filled


def brain_statistic(data: np.ndarray, brain: np.ndarray, statistic: IntensityStatistic = "median") -> float:
    """The median (or 99th percentile) of ``data`` over voxels where ``brain`` is true."""
    values = np.asarray(data)[np.asarray(brain, dtype=bool)]  # a copy we own: partitioned in place below
    if values.size == 0:
        raise ValueError("brain mask is empty")
    if statistic == "median":
        return float(np.median(values, overwrite_input=True))
    return float(np.percentile(values, 99.0, overwrite_input=True))


def _antialias_sigma(in_spacing: np.ndarray, out_spacing: np.ndarray) -> np.ndarray:
    """Per-axis Gaussian sigma (input voxels) whose FWHM is sqrt(out^2 - in^2) mm."""
    extra = np.sqrt(np.maximum(out_spacing**2 - in_spacing**2, 0.0))
    return extra * _FWHM_TO_SIGMA / in_spacing


def _output_grid(centre_xy: np.ndarray, z0: float, config: PreprocessConfig) -> np.ndarray:
    """Affine mapping (slice, row, col, 1) to RAS+ mm for planes starting at z0."""
    s, dz, n = config.pixel_spacing_mm, config.plane_spacing_mm, config.image_size
    half = (n - 1) / 2.0 * s
    return np.array(
        [
            [0.0, 0.0, s, centre_xy[0] - half],  # x grows with the column (left -> right)
            [0.0, -s, 0.0, centre_xy[1] + half],  # y falls with the row (anterior at the top)
            [dz, 0.0, 0.0, z0],  # z grows with the slice index (inferior -> superior)
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _resample(array: np.ndarray, source_affine: np.ndarray, grid: np.ndarray, shape, sigma, *,
              owned: bool = False) -> np.ndarray:
    """Trilinear resampling of ``array`` (after optional anti-alias smoothing) onto ``grid``.

    Memory: at most one float32 copy of the input volume. ``owned=True`` says the
    caller hands over a float32 array it no longer needs, which is then smoothed
    in place (no copy at all).
    """
    from scipy import ndimage

    array = np.asarray(array)
    if not (owned and array.dtype == np.float32 and array.flags.writeable):
        array = array.astype(np.float32)  # the one copy (bool masks must become fractions anyway)
    if np.any(sigma > 0.05):
        # separable 1-D passes through line buffers: in-place output is exact and saves a volume
        ndimage.gaussian_filter(array, sigma=np.where(sigma > 0.05, sigma, 0.0), output=array)
    index_map = np.linalg.inv(source_affine) @ grid
    return ndimage.affine_transform(
        array, index_map[:3, :3], offset=index_map[:3, 3], output_shape=tuple(shape),
        order=1, mode="constant", cval=0.0, prefilter=False,
    )


def _bounding_box_world(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space (RAS mm) min and max corners of the voxels where ``mask`` is true."""
    # Per-axis projections, not np.argwhere: that would hold 24 bytes per brain voxel (6 volumes).
    lo, hi = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(present[0]))
        hi.append(int(present[-1]))
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)
    world = (affine @ np.vstack([corners, np.ones(corners.shape[1])]))[:3]
    return world.min(axis=1), world.max(axis=1)


def preprocess_volume(
    volume: NiftiVolume,
    *,
    config: PreprocessConfig | None = None,
    brain_mask: np.ndarray | None = None,
    lesion_mask: np.ndarray | None = None,
    name: str | None = None,
) -> SliceVolume:
    """Normalise, resample and slice one volume (see the module docstring for the math).

    ``brain_mask`` / ``lesion_mask`` are bool arrays on ``volume``'s grid (from
    :func:`models.nifti.load_mask`); without ``brain_mask`` one is derived.
    Raises :class:`NiftiError` naming ``volume.path`` when the brain is empty,
    its intensities are not positive, or nothing survives resampling.
    """
    config = config or PreprocessConfig()
    path = volume.path
    data = volume.data
    if brain_mask is None:
        brain = derive_brain_mask(data, volume.voxel_size)
    else:
        brain = np.asarray(brain_mask, dtype=bool)
    if not brain.any():
        raise NiftiError(path, "brain mask is empty (no voxel inside the brain)")
    scale = brain_statistic(data, brain, config.intensity_statistic)
    if not (math.isfinite(scale) and scale > 0):
        raise NiftiError(
            path, f"{config.intensity_statistic} brain intensity is {scale:g}; expected a positive value"
        )
    # One float32 working copy, updated in place (a chained expression would hold three).
    normalised = np.divide(data, np.float32(scale), dtype=np.float32)
    np.clip(normalised, 0.0, config.clip_max, out=normalised)
    normalised *= brain

    lo, hi = _bounding_box_world(brain, volume.affine)
    centre = 0.5 * (lo + hi)
    extent = hi - lo
    if max(extent[0], extent[1]) > config.field_of_view_mm:
        warnings.warn(
            f"{path}: brain spans {extent[0]:.0f} x {extent[1]:.0f} mm in-plane, more than the "
            f"{config.field_of_view_mm:.0f} mm field of view; its edges are cut off",
            PreprocessWarning,
            stacklevel=2,
        )
    dz = config.plane_spacing_mm
    n_planes = int(math.floor(extent[2] / dz)) + 1
    z0 = centre[2] - (n_planes - 1) / 2.0 * dz
    in_spacing = np.asarray(volume.voxel_size)
    out_spacing = np.array([config.pixel_spacing_mm, config.pixel_spacing_mm, dz])
    sigma = _antialias_sigma(in_spacing, out_spacing)
    size = config.image_size

    full_grid = _output_grid(centre[:2], z0, config)
    brain_full = _resample(brain, volume.affine, full_grid, (n_planes, size, size), sigma) >= 0.5
    planes = np.flatnonzero(brain_full.any(axis=(1, 2)))
    if planes.size == 0:
        raise NiftiError(path, "the brain vanishes after resampling (mask too small for the grid)")
    first, last = int(planes[0]), int(planes[-1])
    span = last - first + 1
    lo_frac, hi_frac = config.slice_range
    centres = (np.arange(span) + 0.5) / span  # position of each plane's centre in the brain's height
    chosen = np.flatnonzero((centres >= lo_frac) & (centres <= hi_frac))
    if chosen.size == 0:  # a range narrower than one plane: take the plane nearest its middle
        chosen = np.array([int(np.argmin(np.abs(centres - 0.5 * (lo_frac + hi_frac))))])
    keep = first + np.arange(chosen[0], chosen[-1] + 1)
    start = int(keep[0])
    grid = _output_grid(centre[:2], z0 + start * dz, config)
    shape = (keep.size, size, size)

    image = _resample(normalised, volume.affine, grid, shape, sigma, owned=True)
    del normalised  # smoothed in place by _resample: no longer the normalised volume
    brain_out = brain_full[keep]
    image = np.where(brain_out, np.clip(image, 0.0, config.clip_max), 0.0).astype(np.float32)
    lesion_out = None
    if lesion_mask is not None:
        lesion_out = (_resample(np.asarray(lesion_mask, bool), volume.affine, grid, shape, sigma) >= 0.5) & brain_out
    fraction = centres[keep - first]

    arrays = [image, brain_out, fraction, grid] + ([lesion_out] if lesion_out is not None else [])
    for array in arrays:
        array.flags.writeable = False
    return SliceVolume(
        name=name if name is not None else nifti_stem(path),
        source=path,
        image=image,
        brain=brain_out,
        lesion=lesion_out,
        grid_affine=grid,
        slice_fraction=fraction,
        intensity_scale=scale,
    )
