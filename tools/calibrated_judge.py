"""The calibrated judge: an attempt passes when its measures are typical of REAL defects of its kind.

It measures the attempt exactly as the atlas measured real defects (``atlas_measure.measure``: the attempt vs image 1,
inside the mask tool's difference mask) and asks, per measure, how far into the tail of the real distribution the
value falls (two-sided tail probability; the synthesized category is left out of the atlas, so the judge of a
category has never seen its real defects). Location and quality 0-5 come from the worst tail over the measures that
matter for each. A label-agreement check fails attempts whose change (in feature space) reaches beyond the mask.
The review names the measure furthest from the real range in the painter's words (``painter.spec``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .atlas import MIN_ROWS, Atlas
from .atlas_measure import NormalFeatures, atlas_kind, edited_features, feature_change, measure, patch_cover
from .imaging import difference_mask, foreground_mask
from .painter.spec import SIZE_WORDS
from .quality_eval import verdict

# Measure -> (weight below the real median, weight above it). A tail probability counts as p / weight: weight 1
# fails an attempt at the pass mark (p < 2 %), weight 0.1 only at ten times that rarity. Low weights go to measures
# that depend on the category's surface more than on the defect (parts on a grid, edge contrast on a texture) and
# to the side that is not a failure mode (a defect more pronounced than usual is rarely what makes it unreal).
# The number of parts is not scored at all: a grid's wires cut one real defect into 3-4 pieces, which no other
# category shows, so leaving grid out made every real grid defect "scattered".
LOCATION_MEASURES: dict[str, tuple[float, float]] = {
    "dist_to_boundary": (1.0, 1.0), "touches_object_edge": (1.0, 1.0), "on_object": (1.0, 1.0)}
QUALITY_MEASURES: dict[str, tuple[float, float]] = {
    "area_frac_object": (1.0, 1.0), "elongation": (1.0, 1.0), "visibility": (1.0, 0.1), "delta_e": (0.1, 0.1),
    "feature_distance": (1.0, 0.1), "texture_change": (0.1, 0.1), "edge_sharpness": (0.1, 0.1)}
BINARY = frozenset({"touches_object_edge", "touches_image_border"})
LINEAR = frozenset({"dist_to_boundary", "pos_x", "pos_y", "lightness_change", "saturation_change", "on_object"})
OBJECT_ONLY = frozenset({"dist_to_boundary", "touches_object_edge", "on_object"})   # meaningless on a texture
# Tail probability -> score (a priori, not tuned): >= 5 % typical, >= 2 % still plausible (the pass mark 4).
SCORE_STEPS = ((0.05, 5), (0.02, 4), (0.005, 3), (0.001, 2), (1e-4, 1))


def tail_probability(values: np.ndarray, x: float, measure: str) -> float:
    """Two-sided tail probability of ``x`` among real ``values``.

    Inside the real range: the smoothed empirical tail (rank-based, so skewed and two-mode distributions are fine).
    Beyond it: no larger than that, and falling off with the robust z-score (median / IQR, log scale for sizes and
    ratios), so 10x too large scores lower than just past the largest real one. Binary measures: the smoothed share
    of real defects with the same value.
    """
    v = values[np.isfinite(values)]
    n = v.size
    if n == 0:
        return 1.0
    if measure in BINARY:
        return float(((v >= 0.5) == (x >= 0.5)).sum() + 0.5) / (n + 1)
    below = float((v < x).sum() + 0.5 * (v == x).sum())
    f = (below + 0.5) / (n + 1)
    p_emp = 2 * min(f, 1 - f)
    if v.min() <= x <= v.max():
        return p_emp
    t = (lambda a: np.asarray(a, float)) if measure in LINEAR else (lambda a: np.log(np.maximum(a, 1e-6)))
    tv, tx = t(v), float(t(x))
    q1, med, q3 = np.percentile(tv, [25, 50, 75])
    scale = max((q3 - q1) / 1.349, 0.05)     # a floor: many real values tie (on the object: 1.0)
    z = abs(tx - med) / scale
    p_z = math.erfc(z / math.sqrt(2))
    return float(min(p_emp, p_z))


def score_of(p: float) -> int:
    for threshold, score in SCORE_STEPS:
        if p >= threshold:
            return score
    return 0


def size_word(area_frac: float) -> str:
    """The painter's size word closest to a defect covering ``area_frac`` of the object (size = sqrt(area))."""
    size = math.sqrt(max(area_frac, 0.0))
    words = [w for w in SIZE_WORDS if w[0] in ("very small", "small", "medium", "large", "very large")]
    return min(words, key=lambda w: abs(w[1] - size))[0]


def _pct(x: float) -> str:
    return f"{100 * x:.2g} %" if x >= 0.001 else "under 0.1 %"


class CalibratedJudge:
    """Scores an attempt by how typical its measures are among real defects of its kind (the atlas)."""

    def __init__(self, atlas: str | None = None, pass_location: int = 4, pass_quality: int = 4,
                 outside_change: float = 4.0, on_object: float = 0.0):
        self.atlas = Atlas.load(Path(atlas) if atlas and atlas != "default" else None)   # "default": the shipped one
        self.pass_location = int(pass_location)
        self.pass_quality = int(pass_quality)
        self.outside_change = float(outside_change)   # spread units: a feature change this strong must be masked
        self.min_on_object = float(on_object)         # optional hard floor; the atlas decides by default
        self._normals: dict[int, NormalFeatures] = {}
        self._own_kind = True

    def normal_features(self, normal: np.ndarray) -> NormalFeatures:
        """Cached per normal image: every attempt of an episode is compared with the same image 1."""
        key = hash(normal.tobytes())
        if key not in self._normals:
            if len(self._normals) > 8:
                self._normals.clear()
            self._normals[key] = NormalFeatures.of(normal)
        return self._normals[key]

    def evaluate(self, normal: np.ndarray, edited: np.ndarray, category: str, anomaly_type: str,
                 foreground: np.ndarray | None = None) -> dict[str, Any]:
        region, _ = difference_mask(normal, edited)
        if region.sum() == 0:
            return self._result(0, 0, [("missing", "missing: no visible change: add the defect clearly")], {})
        fg = foreground if foreground is not None else foreground_mask(normal, category)
        texture = bool(fg.all())
        nf = self.normal_features(normal)
        ef = edited_features(edited)
        m = measure(edited, normal, region, fg, nf, ef)
        key = atlas_kind(anomaly_type) or anomaly_type
        atlas = self.atlas.without(category)
        rows = atlas.rows_for(key)
        self._own_kind = len(rows) < len(atlas.rows)   # False: too few real rows of the kind, every kind stands in
        name = anomaly_type.replace("_", " ")

        object_rows = [r for r in rows if not r.get("texture")]
        if len(object_rows) < MIN_ROWS:
            object_rows = [r for r in atlas.rows if not r.get("texture")] or rows
        weights = {**LOCATION_MEASURES, **QUALITY_MEASURES}
        tails: dict[str, float] = {}
        for measure_name, (w_low, w_high) in weights.items():
            if texture and measure_name in OBJECT_ONLY:
                continue
            pool = object_rows if measure_name in OBJECT_ONLY else rows
            values = np.array([r[measure_name] for r in pool if r.get(measure_name) is not None], float)
            x = float(m[measure_name])
            weight = w_low if values.size and x < float(np.median(values)) else w_high
            tails[measure_name] = min(1.0, tail_probability(values, x, measure_name) / weight)

        faults: list[tuple[str, str]] = []
        loc_tails = [tails[k] for k in LOCATION_MEASURES if k in tails]
        location = score_of(min(loc_tails)) if loc_tails else 5
        quality = score_of(min(tails[k] for k in QUALITY_MEASURES))
        on_object = float(m["on_object"])
        if on_object < self.min_on_object:
            location = min(location, int(5 * on_object))
            faults.append(("off the object", "off the object: place it on the object surface, at the centre"))
        # Label agreement: a strong feature change outside the (dilated) mask is a change the label misses.
        change = feature_change(ef, nf)
        near = patch_cover(cv2.dilate(region.astype(np.uint8), np.ones((33, 33), np.uint8)).astype(bool),
                           change.shape) > 0
        outside = float(change[~near].max()) if (~near).any() else 0.0
        if outside > self.outside_change:
            quality = min(quality, 2)
            faults.append(("unlabelled change", "unlabelled change: the image changes outside the defect; "
                           "keep the change inside one clear defect, no halo or shift elsewhere"))
        ranked = sorted(tails.items(), key=lambda kv: kv[1])
        for measure_name, p in ranked:
            if score_of(p) >= 4:
                break
            pool = object_rows if measure_name in OBJECT_ONLY else rows
            fault = self._advice(measure_name, float(m[measure_name]), pool, name, key)
            if fault and fault[0] not in {f for f, _ in faults}:
                faults.append(fault)
        measures = {k: round(float(v), 4) for k, v in m.items()}
        measures.update({"on_object": round(on_object, 3), "outside_change": round(outside, 2),
                         "worst_measure": ranked[0][0] if ranked else None,
                         "worst_tail": round(ranked[0][1], 4) if ranked else None,
                         "atlas_rows": len(rows), "atlas_key": key})
        return self._result(location, quality, faults, measures, name)

    # ---------------------------------------------------------------------------------------------- words
    def _advice(self, measure_name: str, x: float, rows: list[dict], name: str, kind: str) -> tuple[str, str] | None:
        """(fault, advice) for a measure outside the real range, in words the refinement and the painter act on."""
        values = np.array([r[measure_name] for r in rows if r.get(measure_name) is not None], float)
        if values.size == 0:
            return None
        med = float(np.median(values))
        low = x < med
        plural = f"real {kind.replace('_', ' ')} defects" if kind and self._own_kind else "real defects"
        if measure_name == "area_frac_object":
            word = size_word(med)
            if low:
                return "too small", f"too small: {plural} cover about {_pct(med)} of the part: make it {word}"
            return "too large", f"too large: {plural} cover about {_pct(med)} of the part: make it {word}"
        if measure_name in ("delta_e", "feature_distance", "visibility"):
            if low:
                return "too faint", (f"too faint: {plural} stand out more from the surface: make it more "
                                     "pronounced, high-contrast")
            return "too strong", f"too strong: {plural} are subtler: make it subtle, blend it smoothly"
        if measure_name == "elongation":
            if low:
                return "wrong shape", (f"wrong shape for a {name}: {plural} are thin and elongated: make it thin "
                                       "and long")
            return "wrong shape", f"wrong shape for a {name}: {plural} are compact: make it compact and rounded"
        if measure_name == "edge_sharpness":
            if low:
                return "blurred edge", f"blurred edge: {plural} have a crisp border: make it distinct, sharp-edged"
            return "hard seam", f"hard seam: {plural} have softer borders: blend it smoothly, soft-edged"
        if measure_name == "texture_change":
            if low:
                return "flat patch", ("flat patch: keep the underlying texture and lighting visible through it")
            return "too busy", f"too busy: {plural} are smoother inside: make it smooth and soft"
        if measure_name == "on_object" and low:
            return "off the object", "off the object: place it on the object surface, at the centre"
        if measure_name in ("dist_to_boundary", "touches_object_edge", "on_object"):
            edge_share = float(np.mean([r.get("touches_object_edge", 0) or 0 for r in rows]))
            if measure_name == "touches_object_edge":
                low = x < 0.5     # does not touch, though real ones do
            if x < 0 and measure_name == "dist_to_boundary":
                return "off the object", "off the object: place it on the object surface, at the centre"
            if low and measure_name == "touches_object_edge" or (measure_name == "dist_to_boundary" and not low):
                return "off the edge", (f"off the edge: {_pct(edge_share)} of {plural} touch the object's edge: "
                                        "place it at the edge of the object")
            return "on the edge", (f"on the edge: {plural} sit inside the object, away from its edge: place it "
                                   "in the centre of the object")
        if measure_name == "n_parts":
            if low:
                return "too few parts", f"too few parts: {plural} often come as several: make several small ones"
            return "scattered", "scattered: make it a single defect"
        return None

    def _result(self, location: int, quality: int, faults: list[tuple[str, str]], measures: dict[str, Any],
                name: str = "defect") -> dict[str, Any]:
        passed = location >= self.pass_location and quality >= self.pass_quality and not any(
            f in ("missing", "unlabelled change") for f, _ in faults)
        return verdict(location, quality, passed, [f for f, _ in faults], [a for _, a in faults], measures,
                       f"Plausible {name}: typical of real ones")
