"""The measures of a defect, shared by the atlas builder (real defects) and the calibrated judge (synthetic attempts).

One function measures both: ``measure(image, normal, mask, foreground, features)``. A real defect is measured
against its reconstructed normal image (OpenCV inpainting, as ``trajectories build`` does) with its ground-truth
mask; an attempt against the workspace's normal image with the mask tool's difference mask. Measuring both the same
way is the point: the judge asks "would this attempt's numbers be typical among real defects of its kind?".

Unit of measurement: one row per anomaly IMAGE mask (all its connected parts together). The judge sees a whole
attempt's region at once (several parts included), so a real row must be the same unit; ``n_parts`` counts the parts.

Feature space: EfficientNet-Lite0 patch features (``local_agent.inspection.backbone.patch_features``, 32x32 patches
at 256 px). The "normal patches" are those of the image's own normal (the reconstruction for a real defect, image 1
for an attempt) — the only normal image the judge has, so the atlas uses the same bank; the spread is the median
distance of a normal patch to its nearest normal patch outside its own 5x5 neighbourhood.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from .atlas import MEASURES, Atlas, AtlasError
from .imaging import (WORK_SIDE, at_work_side, clean_mask, difference_map, difference_mask, elongation,
                      foreground_mask, to_lab)
from .painter.spec import defect_kind, kind_of

SPECK = 12              # px: parts smaller than this are not counted (the mask tool drops them too)
RING = (2, 7)           # px: the ring outside a defect that stands for "its surroundings"
FEATURE_SIDE = 256      # encoder input side (backbone.INPUT_SIDE)
SELF_EXCLUDE = 2        # patches: a normal patch's nearest neighbour is searched outside its 5x5 neighbourhood
CODE_VERSION = "5"      # bump when a measure changes meaning (the stale-atlas test also hashes this file)
COUNTERFEIT_SEED = 0    # the bad edits of a real defect are drawn with trajectories.sample_seed(this, its key)

def atlas_kind(type_name: str) -> str | None:
    """The painter's kind of a real type name, or None when it names no kind ("manipulated_front") or only an
    object part at a place ("thread_side", "thread_top": damage on a screw's thread, not a fibre): ``defect_kind``.
    Rows always keep the real ``type`` too, so a kind-less type still finds its own rows by name.
    """
    return defect_kind(type_name)


def object_mask(image: np.ndarray, category: str) -> np.ndarray:
    """Foreground of the normal image (textures: all of it)."""
    return foreground_mask(image, category)


# ------------------------------------------------------------------------------------------ where, how big, shape
def shape_measures(mask: np.ndarray, foreground: np.ndarray) -> dict[str, float]:
    h, w = mask.shape
    fg = foreground.astype(bool)
    m8 = mask.astype(np.uint8)
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    fg_area = max(float(fg.sum()), 1.0)
    whole = bool(fg.all())
    # Signed distance of the centroid to the object's boundary (image border counts as boundary: textures).
    pad = np.pad(fg.astype(np.uint8), 1)
    inside = cv2.distanceTransform(pad, cv2.DIST_L2, 5)[1:-1, 1:-1]
    outside = cv2.distanceTransform(1 - pad, cv2.DIST_L2, 5)[1:-1, 1:-1]
    iy, ix = min(int(round(cy)), h - 1), min(int(round(cx)), w - 1)
    signed = float(inside[iy, ix]) if fg[iy, ix] else -float(outside[iy, ix])
    grown = cv2.dilate(m8, np.ones((3, 3), np.uint8)).astype(bool)
    touches_edge = 0.0 if whole else float((grown & ~fg).any())
    n, _, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    parts = int((stats[1:, cv2.CC_STAT_AREA] >= SPECK).sum()) if n > 1 else 0
    fys, fxs = np.nonzero(fg) if fg.any() else (np.array([0, h - 1]), np.array([0, w - 1]))
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    area = float(mask.sum())
    return {
        "dist_to_boundary": signed / np.sqrt(fg_area),
        "touches_object_edge": touches_edge,
        "touches_image_border": float(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()),
        "pos_x": (cx - fxs.min()) / max(float(fxs.max() - fxs.min()), 1.0),
        "pos_y": (cy - fys.min()) / max(float(fys.max() - fys.min()), 1.0),
        "n_parts": float(max(parts, 1)),
        "on_object": float((mask & fg).sum()) / max(float(mask.sum()), 1.0),
        "area_frac_object": area / fg_area,
        "area_frac_image": area / float(h * w),
        "bbox_w_frac": (xs.max() - xs.min() + 1) / float(w),
        "bbox_h_frac": (ys.max() - ys.min() + 1) / float(h),
        "elongation": float(elongation(mask)),
        "roughness": float(perimeter ** 2 / (4 * np.pi * max(area, 1.0))),
    }


def ring_around(mask: np.ndarray, inner: int = RING[0], outer: int = RING[1]) -> np.ndarray:
    m8 = mask.astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    return cv2.dilate(m8, k, iterations=outer).astype(bool) & ~cv2.dilate(m8, k, iterations=inner).astype(bool)


# ------------------------------------------------------------------------------------------ how it looks
def _gradient(light: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of an L* image."""
    gx = cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def look_measures(image: np.ndarray, normal: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    diff = difference_map(normal, image)
    lab_i, lab_n = to_lab(image), to_lab(normal)
    sat_i = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    sat_n = cv2.cvtColor(normal, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
    ring = ring_around(mask)
    if not ring.any():
        ring = ~mask
    light = lab_i[..., 0]
    delta_e = float(np.median(diff[mask]))
    m8 = mask.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    border = cv2.dilate(m8, k).astype(bool) & ~cv2.erode(m8, k).astype(bool)
    grad = _gradient(light)
    return {
        "delta_e": delta_e,
        "visibility": delta_e / (float(lab_n[..., 0][ring].std()) + 1.0),
        "lightness_change": float((lab_i[..., 0][mask] - lab_n[..., 0][mask]).mean()),
        "saturation_change": float((sat_i[mask] - sat_n[mask]).mean()),
        "texture_change": float((light[mask].std() + 1.0) / (light[ring].std() + 1.0)),
        # the border's gradient against the same pixels' in the normal: the edge the defect made, not the scene's
        # (a defect whose outline follows a part's own edge read as a "hard seam" against a flat ring)
        "edge_sharpness": float((grad[border].mean() + 1.0) / (_gradient(lab_n[..., 0])[border].mean() + 1.0)),
    }


# ------------------------------------------------------------------------------------------ feature space
@dataclass
class NormalFeatures:
    """Patch features of one normal image and their own nearest-neighbour spread (what 'far' is measured in)."""

    patches: np.ndarray        # (h, w, d)
    spread: float

    @classmethod
    def of(cls, normal: np.ndarray) -> "NormalFeatures":
        from local_agent.inspection.backbone import patch_features

        f = patch_features([normal], side=FEATURE_SIDE)[0]
        h, w, d = f.shape
        flat = f.reshape(-1, d)
        dist = _pairwise(flat, flat)
        dist[_near_cells(h, w)] = np.inf
        nn = dist.min(axis=1)
        spread = float(np.median(nn[np.isfinite(nn)])) if np.isfinite(nn).any() else 1.0
        return cls(f, max(spread, 1e-6))


@functools.lru_cache(maxsize=4)
def _near_cells(h: int, w: int) -> np.ndarray:
    """(h*w, h*w): which patch pairs are too close to count as another place (one per grid size, reused)."""
    yy, xx = np.divmod(np.arange(h * w), w)
    near = (np.abs(yy[:, None] - yy[None]) <= SELF_EXCLUDE) & (np.abs(xx[:, None] - xx[None]) <= SELF_EXCLUDE)
    near.flags.writeable = False
    return near


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def patch_cover(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Share of each patch cell covered by the mask."""
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def edited_features(image: np.ndarray) -> np.ndarray:
    from local_agent.inspection.backbone import patch_features

    return patch_features([image], side=FEATURE_SIDE)[0]


def feature_distance(edited: np.ndarray, normal: NormalFeatures, mask: np.ndarray) -> float:
    """Largest distance of a defect patch (cells covered >= 25 %, at least the most covered one) to its nearest
    normal patch, in units of the normal patches' own spread."""
    h, w, d = edited.shape
    cover = patch_cover(mask, (h, w))
    sel = cover >= 0.25
    if not sel.any():
        sel = cover >= cover.max()
    nn = _pairwise(edited[sel], normal.patches.reshape(-1, d)).min(axis=1)
    return float(nn.max() / normal.spread)


def feature_change(edited: np.ndarray, normal: NormalFeatures) -> np.ndarray:
    """Per patch: how far the attempt's feature moved from the normal's at the same place, in spread units."""
    return np.sqrt(((edited - normal.patches) ** 2).sum(-1)) / normal.spread


# ------------------------------------------------------------------------------------------ everything
def measure(image: np.ndarray, normal: np.ndarray, mask: np.ndarray, foreground: np.ndarray,
            normal_features: NormalFeatures | None = None, features: np.ndarray | None = None) -> dict[str, float]:
    """Every ``MEASURES`` entry of the defect in ``mask`` (image vs its normal), the pixel measures at
    ``WORK_SIDE``. Features (the encoder resizes to its own side) are taken from the images as given."""
    small_image, small_normal, small_mask, small_fg = at_work_side(image, normal, mask.astype(bool),
                                                                   foreground.astype(bool))
    if not small_mask.any():
        raise ValueError("empty defect mask" + (f" at {WORK_SIDE} px on the long side" if mask.any() else ""))
    if normal_features is None:
        normal_features = NormalFeatures.of(normal)
    if features is None:
        features = edited_features(image)
    image, normal, mask, foreground = small_image, small_normal, small_mask, small_fg
    out: dict[str, Any] = {**shape_measures(mask, foreground), **look_measures(image, normal, mask)}
    out["feature_distance"] = feature_distance(features, normal_features, mask)
    return {k: out[k] for k in MEASURES}


def measure_attempt(normal: np.ndarray, edited: np.ndarray, foreground: np.ndarray,
                    normal_features: NormalFeatures | None = None
                    ) -> tuple[np.ndarray, dict[str, float], np.ndarray] | None:
    """How the calibrated judge measures an attempt: the mask tool's difference mask of ``edited`` vs ``normal``,
    then ``measure``, both at ``WORK_SIDE`` (the region too). Returns (region, measures, the attempt's patch
    features), or None when nothing changed."""
    small_normal, small_edited, small_fg = at_work_side(normal, edited, foreground.astype(bool))
    region, _ = difference_mask(small_normal, small_edited)
    if region.sum() == 0:
        return None
    nf = normal_features if normal_features is not None else NormalFeatures.of(normal)
    ef = edited_features(edited)
    return region, measure(small_edited, small_normal, region, small_fg, nf, ef), ef


# ------------------------------------------------------------------------------------------ building an atlas
def category_dirs(roots: Iterable[Path], depth: int = 3) -> list[Path]:
    """MVTec-layout category folders (``test/`` and ``ground_truth/``) at or below each root."""
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise AtlasError(f"{root}: no such folder")
        level = [root]
        hits: list[Path] = []
        for _ in range(depth + 1):
            nxt = []
            for d in level:
                if (d / "test").is_dir() and (d / "ground_truth").is_dir():
                    hits.append(d)
                else:
                    nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            level = nxt
        if not hits:
            raise AtlasError(f"{root}: no MVTec-layout category folder (<category>/test/<type>/*.png with "
                             "<category>/ground_truth/<type>/*_mask.png) at or below it")
        found.extend(hits)
    return found


def real_samples(roots: Iterable[Path]) -> list[Any]:
    """Every real anomaly image with a mask under the roots (``trajectories``' finder, one category at a time)."""
    from local_agent.training.trajectories import TrajectoryError, find_real_samples

    out = []
    for cat in category_dirs(roots):
        try:
            out.extend(find_real_samples(cat))
        except TrajectoryError:
            continue          # a category folder without any masked anomaly adds nothing
    if not out:
        raise AtlasError(f"{', '.join(map(str, roots))}: no anomaly images with masks")
    return out


def code_fingerprint() -> str:
    """Source of every function a row's numbers come from (here, imaging, the reconstruction, the encoder's patch
    features), plus the measure names: editing a docstring elsewhere does not make the atlas stale, this does."""
    import inspect

    from local_agent.inspection import backbone
    from local_agent.training import trajectories

    from . import imaging

    parts = [CODE_VERSION, ",".join(MEASURES), ",".join(trajectories.FAILURE_MODES), str(COUNTERFEIT_SEED)]
    for fn in (atlas_kind, shape_measures, ring_around, _gradient, look_measures, NormalFeatures, _pairwise,
               patch_cover, edited_features, feature_distance, measure, real_pair, measure_sample, measure_attempt,
               counterfeit_rows, _rounded, _near_cells, imaging.difference_mask, imaging.difference_map,
               imaging._difference_map, imaging._recall, imaging.align_to, imaging.clean_mask, imaging.foreground_mask,
               imaging._grabcut_foreground, imaging.elongation, imaging.at_work_side, trajectories.reconstruct_normal,
               trajectories.load_mask, backbone.patch_features, backbone.SameConv, backbone.MBConv,
               backbone.EfficientNetLite0.stages, kind_of, defect_kind, trajectories.make_failure,
               trajectories.sample_seed):
        parts.append(inspect.getsource(fn))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def inputs_fingerprint(samples: list[Any]) -> str:
    """Hash of every input image and mask (bytes) plus the measuring code: the atlas is stale when it changes."""
    h = hashlib.sha256(code_fingerprint().encode())
    for s in sorted(samples, key=lambda s: s.key):
        h.update(s.key.encode())
        h.update(Path(s.image).read_bytes())
        h.update(Path(s.mask).read_bytes())
    return h.hexdigest()[:16]


def real_pair(sample: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anomaly image, its mask, its normal) for a real sample, at ``WORK_SIDE`` on the long side.

    The normal is the OpenCV reconstruction (``trajectories.reconstruct_normal``, which inpaints a dilated region to
    remove the defect's halo) pasted back only inside the mask grown by 2 px: outside it the real pixels stay, so
    the difference a judge sees is the labelled defect, not the inpainting's smoothing of the texture around it
    (on grid that smoothing alone made the changed region 1.8x the mask). The halo and the pasting are in pixels,
    so a plant's 1024-px defect is reconstructed at the size the shipped atlas's were.
    """
    from local_agent.images import load_image
    from local_agent.training.trajectories import load_mask, reconstruct_normal

    image = load_image(sample.image).rgb
    image, mask = at_work_side(image, load_mask(sample.mask, image.shape[:2]))
    mask = clean_mask(mask, min_area=1, close=1) if mask.any() else mask
    if not mask.any():
        raise ValueError("empty mask")
    inside = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)[..., None]
    normal = np.where(inside, reconstruct_normal(image, mask), image)
    return image, mask, normal


def measure_sample(sample: Any, counterfeits: bool = False) -> dict[str, Any] | tuple[dict, list[dict]]:
    """One atlas row for a real anomaly: its mask, measured against its reconstructed normal. With
    ``counterfeits``: (that row, the rows of its counterfeits, ``counterfeit_rows``)."""
    image, mask, normal = real_pair(sample)
    fg = object_mask(normal, sample.category)
    nf = NormalFeatures.of(normal)
    values = measure(image, normal, mask, fg, nf)
    row: dict[str, Any] = {"category": sample.category, "type": sample.anomaly_type,
                           "kind": atlas_kind(sample.anomaly_type), "image": sample.key,
                           "texture": bool(fg.all())}   # as the judge decides: the whole image is the object
    row.update(_rounded(values, 4))
    if not counterfeits:
        return row
    return row, counterfeit_rows(row, image, mask, normal, fg, nf)


def _rounded(values: dict[str, Any], digits: int) -> dict[str, Any]:
    return {k: (None if v is None else float(f"{v:.{digits}g}")) for k, v in values.items()}


def counterfeit_rows(row: dict[str, Any], image: np.ndarray, mask: np.ndarray, normal: np.ndarray,
                     foreground: np.ndarray, normal_features: NormalFeatures) -> list[dict[str, Any]]:
    """The deliberately bad edits of one real defect (``trajectories.make_failure``, every mode that applies, drawn
    with a fixed per-defect seed), each measured exactly as the calibrated judge measures an attempt
    (``measure_attempt``). What a learned judge contrasts real defects with; an edit with no visible change is
    left out (the judge's "missing" rule fails it anyway)."""
    from local_agent.training.trajectories import FAILURE_MODES, make_failure, sample_seed

    rng = np.random.default_rng(sample_seed(COUNTERFEIT_SEED, row["image"]))
    out = []
    for mode in FAILURE_MODES:
        bad = make_failure(mode, normal, image, mask, foreground, kind_of(row["type"]), rng)
        got = None if bad is None else measure_attempt(normal, bad, foreground, normal_features)
        if got is not None:
            out.append({**{k: row[k] for k in ("category", "type", "kind", "image", "texture")}, "mode": mode,
                        **_rounded(got[1], 3)})
    return out


def build_atlas(roots: list[Path], on_progress: Callable[[int, int, str], None] | None = None,
                samples: list[Any] | None = None, leave_out: bool = False) -> tuple[Atlas, dict]:
    """Measure every real anomaly under the roots (or ``samples``, found under them beforehand).
    Returns the atlas and {key: reason} for the images skipped. ``leave_out``: the consumers of the atlas leave the
    synthesized category's own rows out (an atlas of benchmark test sets, like the shipped one)."""
    samples = real_samples(roots) if samples is None else samples
    rows, fakes, skipped = [], [], {}
    for i, s in enumerate(samples):
        try:
            row, bad = measure_sample(s, counterfeits=True)
            rows.append(row)
            fakes.extend(bad)
            what = s.key
        except (ValueError, OSError) as e:
            skipped[s.key] = str(e)
            what = f"{s.key} skipped"
        if on_progress:
            on_progress(i + 1, len(samples), what)
    atlas = Atlas(rows=rows, sources=[str(r) for r in roots], counterfeits=fakes)
    atlas.meta = {"fingerprint": inputs_fingerprint(samples), "code_version": CODE_VERSION, "n_inputs": len(samples),
                  "leave_out": bool(leave_out)}
    return atlas, skipped
