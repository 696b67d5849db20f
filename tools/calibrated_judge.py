"""The calibrated judge: an attempt passes when its measures are typical of REAL defects of its kind.

It measures the attempt exactly as the atlas measured real defects (``atlas_measure.measure``: the attempt vs image 1,
inside the mask tool's difference mask) and asks, per measure, how far into the tail of the real distribution the
value falls (two-sided tail probability; the shipped atlas leaves the synthesized category out, so the judge of a
category has never seen its real defects; a plant's own atlas with at least ``MIN_ROWS`` real defects of the type
judges by those). Location and quality 0-5 come from the worst tail over the measures that
matter for each. A label-agreement check fails attempts whose change (in feature space) reaches beyond the mask.
The review names the measure furthest from the real range in the painter's words (``painter.spec``).

Two ways to decide (``decide``): ``tails`` (default) fails an attempt when a measure falls in the far tail, with
hand-set weights per measure and side; ``learned`` lets a logistic regression trained on the atlas decide: real
defects of the OTHER categories (label 1) against their counterfeits (``Atlas.counterfeits``: the bad edits
``trajectories.make_failure`` builds from them, label 0). Its features are the same tails (``learned_features``),
computed for each training row with its own category left out as well, so training rows look like what the judge
sees at deployment. It passes when p(real) >= 0.5 (and the label-agreement rule holds); quality = min(5, floor(8 p)),
so the pass is exactly quality >= 4; location and the review's advice stay as ``tails`` computes them (a passed
attempt's location is raised to the pass mark, its tail complaints kept as "Minor").

``size_scale`` F: the image generator paints real areas times F (its own ``size_scale``; ``build_tools`` passes it
on), so the attempt's area is divided by F before it is compared with real ones. Otherwise the judge would call
every such attempt "too large" and the loop would shrink it back to real sizes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.special import stdtr

from .atlas import MIN_ROWS, Atlas
from .atlas_measure import NormalFeatures, atlas_kind, feature_change, measure_attempt, patch_cover
from .base import positive_option
from .imaging import foreground_mask
from .painter.spec import BLOB_KINDS, KINDS, LINEAR_KINDS, SIZE_WORDS
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
# Borrowed rows (``borrowed``: too few of the kind's own once its category is left out) do not bound its size from
# above as its own would: a missing part is no pit. Real missing transistors cover 40 % of the frame, the blob kinds
# lent to them 0.2-1 %; three in four painted ones were "too large", and the loop shrank them toward a pit. So an
# area above the borrowed rows' median counts at a tenth of its rarity, as a more visible than usual defect does
# (``visibility`` above); with no bound at all, scaled-up counterfeits of borrowed kinds passed (bad edits failed
# 53 % against 63 %). Too small keeps its full weight: a defect the detector cannot see teaches nothing. A blob kind
# (glue, a pit, a stain) borrows only other blobs' rows (``pools``), which do bound it: material on a surface, of
# the same kind of size, so it keeps its full weight (stop 38: grid's glue scaled up to a quarter of the grid passed).
BORROWED_WEIGHTS: dict[str, tuple[float, float]] = {"area_frac_object": (1.0, 0.1)}
BINARY = frozenset({"touches_object_edge", "touches_image_border"})
LINEAR = frozenset({"dist_to_boundary", "pos_x", "pos_y", "lightness_change", "saturation_change", "on_object"})
OBJECT_ONLY = frozenset({"dist_to_boundary", "touches_object_edge", "on_object"})   # meaningless on a texture
# Tail probability -> score (a priori, not tuned): >= 5 % typical, >= 2 % still plausible (the pass mark 4).
SCORE_STEPS = ((0.05, 5), (0.02, 4), (0.005, 3), (0.001, 2), (1e-4, 1))
# The learned judge's measures: the tail judge's, plus boundary roughness. Each gives two features (how surprising
# the value is below, and above, the real median), so the model learns a weight per side where ``tails`` hand-sets
# one; plus two raw ones (log share of the object, share on the object). C is fixed a priori, never tuned.
LEARNED_MEASURES = (*LOCATION_MEASURES, *QUALITY_MEASURES, "roughness")
LEARNED_C = 1.0
DECIDERS = ("tails", "learned")
# ``trust``: ``always`` (default) lets the loop refine on every category; ``auto`` only where the judge passes its
# self-check on the plant's own defects (``judge_check``; docs/synthesis.md, stop 24: it did not replicate).
TRUST_CHOICES = ("always", "auto")


def tail_probability(values: np.ndarray, x: float, measure: str) -> float:
    """Two-sided tail probability of ``x`` among real ``values``.

    Inside the real range: the smoothed empirical tail (rank-based, so skewed and two-mode distributions are fine).
    Beyond it: no larger than that, and falling off with the robust z-score (median / IQR, log scale for sizes and
    ratios; Student-t with n - 1 degrees of freedom, widened for a new draw, so five real values bound less than a
    hundred), so 10x too large scores lower than just past the largest real one. Binary measures: the smoothed share
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
    # Student-t predictive tail of a new draw from n real values: a few real defects (a plant's five of a type)
    # cannot bound a distribution as tightly as a hundred; for large n this is the Gaussian tail.
    p_z = 2 * stdtr(n - 1, -z / math.sqrt(1 + 1 / n)) if n > 1 else 1.0
    return float(min(p_emp, p_z))


def at_real_size(measures: dict[str, Any], size_scale: float) -> dict[str, Any]:
    """The measures with the areas divided by the generator's ``size_scale``: the real size it scaled up from, which
    the areas are ranked at among real defects."""
    m = dict(measures)
    if size_scale != 1.0:
        for k in ("area_frac_object", "area_frac_image"):
            if m.get(k) is not None:
                m[k] = float(m[k]) / size_scale
    return m


def pools(atlas: Atlas, key: str, by_shape: bool = True) -> tuple[list[dict], list[dict]]:
    """(real rows of the kind, real OBJECT rows of the kind) the tails are taken in. A kind with too few rows
    (``MIN_ROWS``; zero-shot, 11 of ../shared's 16 types once their category is left out) borrows the rows of the
    painter's kinds of its shape (a thread, a cut: scratches, cracks; a blob: pits, stains, glue; a missing or
    broken part: every kind that is not a line), else every row. Until stop 38 a blob borrowed every kind that is not
    a line, missing transistors (40 % of the frame) among them, and grid's glue scaled up to a quarter passed.
    Before stop 30 it borrowed every row, a third of them ball-screw pits, and a real-looking thread was failed
    as "wrong shape: real defects are compact". ``by_shape=False`` keeps that: the learned decider was trained and
    measured on it (with the shape pools it failed fewer faded edits, 60 % against 75 %)."""
    rows = atlas.kind_rows(key)
    own = rows is not None
    if not own and by_shape:
        shape = LINEAR_KINDS if key in LINEAR_KINDS else BLOB_KINDS if key in BLOB_KINDS \
            else frozenset(KINDS) - LINEAR_KINDS
        rows = [r for r in atlas.rows if r.get("kind") in shape] if key in KINDS else []
    if rows is None or len(rows) < MIN_ROWS:
        rows = atlas.rows
    # where on the part a rare kind sits is not known from its shape: every object row (on ../shared the line-like
    # object rows are transistor's ten cut leads, all on the part, and a scratch on a screw's thin end was "off it")
    object_rows = [r for r in rows if not r.get("texture")] if own else []
    if len(object_rows) < MIN_ROWS:
        object_rows = [r for r in atlas.rows if not r.get("texture")] or rows
    return rows, object_rows


def measure_tails(m: dict[str, float], rows: list[dict], object_rows: list[dict], texture: bool,
                  names: Any) -> dict[str, tuple[float, bool]]:
    """Per measure: (two-sided tail probability of the value among the real rows, whether it is above their
    median). Location measures are skipped on a texture (everything is the object)."""
    out: dict[str, tuple[float, bool]] = {}
    for name in names:
        if texture and name in OBJECT_ONLY:
            continue
        pool = object_rows if name in OBJECT_ONLY else rows
        values = np.array([r[name] for r in pool if r.get(name) is not None], float)
        x = float(m[name])
        above = not (values.size and x < float(np.median(values)))
        out[name] = (tail_probability(values, x, name), above)
    return out


def judged_rows(atlas: Atlas, category: str, anomaly_type: str, *, own_at_least: int = MIN_ROWS,
                by_shape: bool = True) -> tuple[list[dict], list[dict]]:
    """(rows, object rows) an attempt of ``anomaly_type`` in ``category`` is judged against, in the atlas the
    category may read: the category's own real defects of the type when it has at least ``own_at_least`` of them (a
    plant's atlas), else every real defect of the kind (``pools``). The self-check passes a lower ``own_at_least``
    when it has left one of the plant's rows out, so it judges as the deployed judge does."""
    rows, object_rows = pools(atlas, atlas_kind(anomaly_type) or anomaly_type, by_shape)
    own = atlas.own_rows(category, anomaly_type)
    if own and len(own) >= own_at_least:
        rows = own
        object_rows = [r for r in own if not r.get("texture")] or object_rows
    return rows, object_rows


def borrowed(atlas: Atlas, category: str, anomaly_type: str, *, own_at_least: int = MIN_ROWS) -> bool:
    """Whether ``judged_rows`` judges the type among other kinds' rows (too few of its kind's own and of the
    category's own of the type) that do not bound its size, so ``BORROWED_WEIGHTS`` apply: not for a blob kind,
    whose borrowed rows are other blobs."""
    key = atlas_kind(anomaly_type) or anomaly_type
    own = atlas.own_rows(category, anomaly_type)
    return key not in BLOB_KINDS and atlas.kind_rows(key) is None and len(own or []) < own_at_least


def tail_scores(m: dict[str, float], rows: list[dict], object_rows: list[dict], texture: bool,
                borrowed_rows: bool = False) -> tuple[int, int, dict[str, float]]:
    """(location 0-5, quality 0-5, weighted tail per measure) of measures ``m`` among the real rows: the tails
    decider's scores, from measures alone (the self-check scores atlas rows with it, no image needed).
    ``borrowed_rows``: the rows are other kinds' (``borrowed``), and ``BORROWED_WEIGHTS`` replace the measures' own."""
    weights = {**LOCATION_MEASURES, **QUALITY_MEASURES, **(BORROWED_WEIGHTS if borrowed_rows else {})}
    tails = {k: min(1.0, p / weights[k][1 if above else 0])
             for k, (p, above) in measure_tails(m, rows, object_rows, texture, weights).items()}
    loc_tails = [tails[k] for k in LOCATION_MEASURES if k in tails]
    location = score_of(min(loc_tails)) if loc_tails else 5
    quality = score_of(min(tails[k] for k in QUALITY_MEASURES))
    return location, quality, tails


def learned_features(m: dict[str, float], rows: list[dict], object_rows: list[dict], texture: bool) -> list[float]:
    """The learned judge's features of one measured defect (attempt or atlas row): per ``LEARNED_MEASURES`` entry,
    -log10 of its tail probability on the side it lies (0 on the other side, and both 0 where the measure does not
    apply), then log10 of the share of the object and the share on the object."""
    tails = measure_tails(m, rows, object_rows, texture, LEARNED_MEASURES)
    feats: list[float] = []
    for name in LEARNED_MEASURES:
        p, above = tails.get(name, (1.0, True))
        surprise = -math.log10(max(p, 1e-6))
        feats += [0.0 if above else surprise, surprise if above else 0.0]
    feats += [math.log10(max(float(m["area_frac_object"]), 1e-6)), 1.0 if texture else float(m["on_object"])]
    return feats


def training_set(atlas: Atlas, without_modes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X, y, category of each row) for the learned judge from an atlas that already lacks the judged category:
    real rows (1) and their counterfeits (0, except ``without_modes``), each row's features taken with ITS OWN
    category left out too (what a judged attempt meets: an atlas without its category)."""
    X, y, cats = [], [], []
    cache: dict[tuple[str, str], tuple[list[dict], list[dict]]] = {}
    for label, group in ((1, atlas.rows), (0, [r for r in atlas.counterfeits if r.get("mode") not in without_modes])):
        for r in group:
            key = r.get("kind") or r["type"]
            if (r["category"], key) not in cache:
                cache[(r["category"], key)] = pools(atlas.without(r["category"]), key, by_shape=False)
            X.append(learned_features(r, *cache[(r["category"], key)], bool(r.get("texture"))))
            y.append(label)
            cats.append(r["category"])
    return np.array(X, float), np.array(y, int), cats


def fit_learned(atlas: Atlas, without_modes: tuple[str, ...] = ()) -> Any:
    """Standardised, class-balanced logistic regression (``LEARNED_C``) on ``training_set``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _ = training_set(atlas, without_modes)
    if len(set(y.tolist())) < 2:
        raise ValueError("the atlas holds no counterfeits (or no real rows) to learn from: rebuild it with "
                         "`local-agent atlas build DIR... --out FILE`")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=LEARNED_C, class_weight="balanced", max_iter=2000))
    return model.fit(X, y)


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
    """Two significant digits, never in exponent form: "1.6e+02 %" would reach the painter as "02 %"."""
    return f"{float(f'{100 * x:.2g}'):g} %" if x >= 0.001 else "under 0.1 %"


class CalibratedJudge:
    """Scores an attempt by how typical its measures are among real defects of its kind (the atlas)."""

    def __init__(self, atlas: str | None = None, pass_location: int = 4, pass_quality: int = 4,
                 outside_change: float = 4.0, on_object: float = 0.0, decide: str = "tails", trust: str = "always",
                 size_scale: float = 1.0):
        if decide not in DECIDERS:
            raise ValueError(f"quality_eval decide: {decide!r} is not one of {', '.join(DECIDERS)}")
        if trust not in TRUST_CHOICES:   # read by synth (judge_check.judge_self_check), checked here with the rest
            raise ValueError(f"quality_eval trust: {trust!r} is not one of {', '.join(TRUST_CHOICES)}")
        self.atlas = Atlas.load(Path(atlas) if atlas and atlas != "default" else None)   # "default": the shipped one
        self.pass_location = int(pass_location)
        self.pass_quality = int(pass_quality)
        self.outside_change = float(outside_change)   # spread units: a feature change this strong must be masked
        self.min_on_object = float(on_object)         # optional hard floor; the atlas decides by default
        self.decide = decide
        self.size_scale = positive_option("size_scale", size_scale)   # areas are judged divided by this
        if decide == "learned" and not self.atlas.counterfeits:
            raise ValueError(f"quality_eval decide: learned needs an atlas with counterfeits ({atlas or 'shipped'} has "
                             "none): rebuild it with `local-agent atlas build DIR... --out FILE`")
        self._normals: dict[int, NormalFeatures] = {}
        self._models: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._last: tuple[tuple, Any] | None = None
        self._own_kind = True

    def normal_features(self, normal: np.ndarray) -> NormalFeatures:
        """Cached per normal image: every attempt of an episode is compared with the same image 1."""
        key = hash(normal.tobytes())
        if key not in self._normals:
            if len(self._normals) > 8:
                self._normals.clear()
            self._normals[key] = NormalFeatures.of(normal)
        return self._normals[key]

    def model(self, category: str, without_modes: tuple[str, ...] = ()) -> Any:
        """The learned judge of a category: trained on the atlas the category may read (``Atlas.for_category``:
        the shipped one without the category), cached per category."""
        key = (category.strip().lower(), tuple(sorted(without_modes)))
        if key not in self._models:
            self._models[key] = fit_learned(self.atlas.for_category(category), key[1])
        return self._models[key]

    def _measured(self, normal: np.ndarray, edited: np.ndarray, fg: np.ndarray) -> Any:
        """(``measure_attempt``, the normal's features), remembered for the last attempt (the validity script asks
        both deciders)."""
        key = (hash(normal.tobytes()), hash(edited.tobytes()), hash(fg.tobytes()))
        if self._last is None or self._last[0] != key:
            nf = self.normal_features(normal)
            self._last = (key, (measure_attempt(normal, edited, fg, nf), nf))
        return self._last[1]

    def evaluate(self, normal: np.ndarray, edited: np.ndarray, category: str, anomaly_type: str,
                 foreground: np.ndarray | None = None, decide: str | None = None,
                 without_modes: tuple[str, ...] = ()) -> dict[str, Any]:
        """``decide`` overrides the judge's own; ``without_modes`` trains the learned judge without those
        counterfeit modes (the validity check's leave-one-mode-out)."""
        decide = decide or self.decide
        fg = foreground if foreground is not None else foreground_mask(normal, category)
        got, nf = self._measured(normal, edited, fg)
        if got is None:
            return self._result(0, 0, [("missing", "missing: no visible change: add the defect clearly")], {})
        region, measured, ef = got
        m = at_real_size(measured, self.size_scale)
        texture = bool(fg.all())
        key = atlas_kind(anomaly_type) or anomaly_type
        atlas = self.atlas.for_category(category)
        rows, object_rows = judged_rows(atlas, category, anomaly_type)
        # False: too few real rows of the kind, kinds of its shape (or every kind) stand in: the review then
        # speaks of "real defects", not of real defects of the kind
        self._own_kind = atlas.kind_rows(key) is not None or bool(atlas.own_rows(category, anomaly_type))
        name = anomaly_type.replace("_", " ")
        location, quality, tails = tail_scores(m, rows, object_rows, texture, borrowed(atlas, category, anomaly_type))
        faults: list[tuple[str, str]] = []
        p_real = None
        if decide == "learned":
            learned_rows = judged_rows(atlas, category, anomaly_type, by_shape=False)   # as it was trained
            p_real = float(self.model(category, without_modes).predict_proba(
                [learned_features(m, *learned_rows, texture)])[0, 1])
            quality = min(5, int(8 * p_real))    # p >= 0.5 is exactly quality >= 4, the pass mark
        on_object = float(m["on_object"])
        hard_off = on_object < self.min_on_object
        if hard_off:
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
        for i, (measure_name, p) in enumerate(ranked):
            # learned and failed: at least the measure furthest from the real range is named, so refinement acts
            if score_of(p) >= 4 and not (i == 0 and p_real is not None and p_real < 0.5):
                break
            pool = object_rows if measure_name in OBJECT_ONLY else rows
            fault = self._advice(measure_name, float(m[measure_name]), pool, name, key)
            if fault and fault[0] not in {f for f, _ in faults}:
                faults.append(fault)
        measures = {k: round(float(v), 4) for k, v in measured.items()}
        measures.update({"on_object": round(on_object, 3), "outside_change": round(outside, 2),
                         "worst_measure": ranked[0][0] if ranked else None,
                         "worst_tail": round(ranked[0][1], 4) if ranked else None,
                         "atlas_rows": len(rows), "atlas_key": key})
        if self.size_scale != 1.0:
            measures["size_scale"] = self.size_scale
        passed = None
        if p_real is not None:
            measures["p_real"] = round(p_real, 4)
            passed = p_real >= 0.5 and not hard_off and not any(f == "unlabelled change" for f, _ in faults)
            if passed:   # the tails' complaints stay as "Minor" advice only
                location = max(location, self.pass_location)
        return self._result(location, quality, faults, measures, name, passed)

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
            # The advice names the target share at the painter's own scale: a size word alone is a percentile band
            # of the PAINTER's prior rows, which for a rare kind are other rows than these (grid's threads: the
            # painter's "medium" 0.46 %, these rows' median 2 %), so "make it medium" could not reach the median.
            word = size_word(med)
            share = _pct(med) + (f" ({self.size_scale:g}x that here)" if self.size_scale != 1.0 else "")
            target = f"make it {word}, about {_pct(med * self.size_scale)} of the part"
            if low:
                return "too small", f"too small: {plural} cover about {share} of the part: {target}"
            return "too large", f"too large: {plural} cover about {share} of the part: {target}"
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
                name: str = "defect", passed: bool | None = None) -> dict[str, Any]:
        """``passed`` given: the learned judge's decision; else the scores against the pass marks."""
        if passed is None:
            passed = location >= self.pass_location and quality >= self.pass_quality and not any(
                f in ("missing", "unlabelled change") for f, _ in faults)
        return verdict(location, quality, passed, [f for f, _ in faults], [a for _, a in faults], measures,
                       f"Plausible {name}: typical of real ones")
