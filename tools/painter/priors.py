"""Defect parameters from real defects: the atlas's priors for a kind, with the painted category left out.

The painter copies ONE real defect of the kind (``Atlas.sample``) so its measures stay consistent (a large defect
that was also faint stays both), then lets the prompt's words override: a size or intensity word picks a band of
the kind's real distribution ("large" = the 60-85th percentile of real areas of that kind), a location word
replaces the real defect's place. The prompt writer goes the other way (:func:`describe`): it copies a real
defect and writes the words for its band, so words and priors mean the same thing in both tools.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..atlas import MIN_ROWS, Atlas, AtlasError
from .spec import DefectSpec

# Word -> percentile band of the kind's real distribution. The prompt writer writes the first word of a band.
SIZE_BANDS: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (("tiny", "very small", "minute"), 0.0, 0.2),
    (("small", "little"), 0.2, 0.4),
    (("medium", "moderate", "mid-sized"), 0.4, 0.6),
    (("large", "big", "broad", "wide", "long"), 0.6, 0.85),
    (("very large", "huge"), 0.85, 1.0),
)
INTENSITY_BANDS: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (("faint", "barely"), 0.0, 0.2),
    (("subtle", "slight", "light", "mild"), 0.2, 0.4),
    (("visible", "noticeable"), 0.4, 0.6),
    (("clearly visible", "clear", "distinct", "obvious"), 0.6, 0.85),
    (("pronounced", "more pronounced", "high-contrast", "high contrast", "strong", "severe", "heavy", "deep"),
     0.85, 1.0),
)
# A defect the mask tool cannot see is no training sample: contrast never below 1.5x its 6 ΔE floor.
MIN_DELTA_E = 9.0
MAX_AREA = 0.4            # of the object: "up to a third of the part" for the broadest real kinds
GENERIC_MAX_AREA = 0.25   # a defect lent to another kind is at most this share of its object
BROAD_AREA = (0.15, 0.35)  # share of the part a broad defect ("uneven") covers when no word sizes it: about a third
# Shape word -> percentile band of the kind's real elongations (the judge's "wrong shape" advice names one).
SHAPE_BANDS = {"elongated": (0.6, 0.9), "compact": (0.05, 0.3)}
MULTI_KINDS = frozenset({"hole", "contamination", "scratch", "rough", "glue", "stain"})
# Kinds whose look is physical (what lies behind a break, the shadow in a cavity, a displaced surface): the
# real defect's lighter/darker sign is not copied onto them.
PHYSICAL_LOOK = frozenset({"missing", "broken", "bent", "hole", "crack", "cut", "fold"})
# Kinds that sit on an object's rim when nothing else says where (a chip comes off the edge).
EDGE_KINDS = frozenset({"missing", "broken"})


def atlas_off(option: Any) -> bool:
    """Whether an ``atlas`` option asks for no atlas (unset, ``none``, ``off``, ``false``)."""
    return option is None or str(option).strip().lower() in ("", "none", "off", "false")


def load_atlas(option: str | Path | None) -> Atlas | None:
    """The painter/prompt-writer option ``atlas``: ``none`` (no priors), ``default`` (the shipped atlas) or a path."""
    if atlas_off(option):
        return None
    try:
        return Atlas.load(None if str(option).strip().lower() == "default" else option)
    except AtlasError as e:
        raise ValueError(f"option atlas: {e}") from e


def band_of(word: str | None, bands) -> tuple[float, float] | None:
    if not word:
        return None
    for words, lo, hi in bands:
        if word in words:
            return lo, hi
    return None


def word_for(q: float, bands) -> str:
    for words, lo, hi in bands:
        if q < hi:
            return words[0]
    return bands[-1][0][0]


def is_object_row(row: dict[str, Any]) -> bool:
    """A row measured on an object, not on a texture (the atlas's ``texture`` flag; else: its object is smaller
    than the frame)."""
    if row.get("texture") is not None:
        return not row["texture"]
    return float(row.get("area_frac_object") or 0) > 1.05 * float(row.get("area_frac_image") or 0)


def _quantile(atlas: Atlas, kind: str, measure: str, band: tuple[float, float], rng: np.random.Generator) -> float | None:
    v = atlas.values(kind, measure)
    if v.size == 0:
        return None
    return float(np.quantile(v, rng.uniform(*band)))


def _edge_rate(atlas: Atlas, kind: str) -> float | None:
    """Share of the kind's real defects on OBJECTS that touch the object's rim (textures have no rim)."""
    rows = [r for r in atlas.rows_for(kind) if is_object_row(r) and r.get("touches_object_edge") is not None]
    return float(np.mean([float(r["touches_object_edge"]) for r in rows])) if rows else None


def has_prior(atlas: Atlas, kind: str) -> bool:
    """Whether the atlas holds enough real defects of this kind to be its own prior (else it lends every kind's)."""
    return sum(str(r.get("kind") or "").strip().lower() == kind for r in atlas.rows) >= MIN_ROWS


def prior_atlas(atlas: Atlas, kind: str, on_object: bool) -> Atlas:
    """The real defects a kind's prior is drawn from: the kind's own in the same setting (objects for an object,
    textures for a texture), else the kind's own anywhere, else - the kind is too rare once the category is left
    out - every defect of the same setting (the atlas's own fallback), leaving out whole-part defects (a missing
    transistor is no generic defect size)."""
    same = [r for r in atlas.rows if is_object_row(r) == on_object]
    for rows in (same, atlas.rows):
        sub = Atlas(rows, atlas.sources)
        if has_prior(sub, kind):
            return sub
    generic = [r for r in same if float(r.get("area_frac_object") or 0) <= GENERIC_MAX_AREA]
    if len(generic) < MIN_ROWS:
        generic = [r for r in atlas.rows if float(r.get("area_frac_object") or 0) <= GENERIC_MAX_AREA]
    return Atlas(generic or atlas.rows, atlas.sources)


def transfer_area(row: dict[str, Any], on_object: bool, object_frac: float) -> float | None:
    """The row's size as a share of the object to paint. Same setting: its share of its own object. Lent across
    settings (a texture's defect to a part, or the reverse): its share of the FRAME is kept, since a texture's
    "object" is its whole frame while a part fills only ``object_frac`` of its image (on ../shared/data real
    defects cover 0.3-2.3 % of the frame on parts and on textures alike, but 0.5-6 % of a part)."""
    afo, afi = row.get("area_frac_object"), row.get("area_frac_image")
    if afo is None:
        return None
    if is_object_row(row) == on_object or afi is None:
        return float(afo)
    return float(afi) / (max(object_frac, 1e-3) if on_object else 1.0)


def kind_areas(atlas: Atlas, kind: str, on_object: bool, object_frac: float) -> np.ndarray:
    a = [transfer_area(r, on_object, object_frac) for r in atlas.rows_for(kind)]
    return np.array([v for v in a if v is not None], float)


def sample_in_bands(atlas: Atlas, kind: str, rng: np.random.Generator,
                    bands: dict[str, tuple[float, float] | None]) -> dict[str, Any]:
    """One real defect of the kind whose measures lie in the words' percentile bands ("large" = the 60-85th
    percentile of the kind's real areas), so the rest of what is copied from it (contrast, shape, place) belongs to
    a real defect of that size and look. A band no real row falls in is let go (the look's first, then the size's);
    the size and contrast themselves are still drawn in their bands (:func:`apply_priors`)."""
    rows = atlas.rows_for(kind)
    wanted = [(m, b) for m, b in bands.items() if b is not None]
    while wanted:
        fits = np.ones(len(rows), bool)
        for m, (lo, hi) in wanted:
            x = np.array([np.nan if r.get(m) is None else float(r[m]) for r in rows])
            pct = atlas.percentiles(kind, m, x)
            fits &= np.isfinite(x) & (pct >= lo) & (pct <= hi)
        if fits.any():
            return dict(rows[int(rng.choice(np.flatnonzero(fits)))])
        wanted.pop()
    return atlas.sample(kind, rng)


def apply_priors(spec: DefectSpec, atlas: Atlas, rng: np.random.Generator, on_object: bool,
                 object_frac: float = 1.0, own: list[dict[str, Any]] | None = None,
                 size_scale: float = 1.0) -> DefectSpec:
    """Fill what the words leave open from one real defect of the kind; words that are there win. ``own``: the
    painted category's own real defects of the type (``Atlas.own_rows``, a plant's atlas); one of them is the
    defect copied, while size and look words still pick their bands among all real defects of the kind.
    ``size_scale``: the real area drawn (from a word's band or the real defect) times this (an explicit percentage
    is kept): larger than real, what DRAEM's regions are."""
    if not atlas.rows:
        return replace(spec)
    # A kind too rare once the category is left out borrows generic defects (prior_atlas): a generic real defect
    # is a better prior than none. Pin words ("pitting", "pinhole") read as "tiny": the smallest band of it.
    atlas = prior_atlas(atlas, spec.kind, on_object)
    if own:   # the plant's own defect is better evidence of its size and look than the pin-word default's guess
        spec = replace(spec, pinned=(), **{f"{a}_word": None for a in spec.pinned if a != "area"})
    row = dict(own[int(rng.integers(len(own)))]) if own else sample_in_bands(atlas, spec.kind, rng, {
        "area_frac_object": band_of(spec.size_word, SIZE_BANDS) if spec.area is None else None,
        "delta_e": band_of(spec.intensity_word, INTENSITY_BANDS)})
    s = replace(spec)
    kind = spec.kind
    # Size: explicit percentage > size word (a band of the real areas) > the real defect's own area.
    if s.area is None and "area" in spec.pinned:  # broad: its own share of the part, kept like a percentage in
        s.area = float(rng.uniform(*BROAD_AREA))   # the words (a plant's own rows unpin it, above)
    elif s.area is None:
        band = band_of(s.size_word, SIZE_BANDS)
        areas = kind_areas(atlas, kind, on_object, object_frac)
        a = (float(np.quantile(areas, rng.uniform(*band))) if band and areas.size else
             transfer_area(row, on_object, object_frac))
        if a is not None:
            s.area = float(np.clip(a * size_scale, 2e-4, MAX_AREA))
    # Contrast: an intensity word picks a band of the kind's real ΔE; else the real defect's own.
    band = band_of(s.intensity_word, INTENSITY_BANDS)
    de = _quantile(atlas, kind, "delta_e", band, rng) if band else row.get("delta_e")
    if de is not None:
        s.delta_e = max(MIN_DELTA_E, float(de))
        # the kinds' own drawing strength follows (a warp has no colour to match: this is all it gets); an
        # intensity word keeps at least its own strength
        s.intensity = float(np.clip(s.delta_e / 20.0, 0.1, 1.0))
        if band:
            s.intensity = max(s.intensity, spec.intensity)
    if kind not in PHYSICAL_LOOK and row.get("lightness_change") is not None and s.colour is None:
        s.lighter = float(row["lightness_change"]) > 0
    if not s.counted and kind in MULTI_KINDS and row.get("n_parts"):
        s.count = int(np.clip(row["n_parts"], 1, 5))
    if row.get("elongation"):
        s.elongation = float(np.clip(row["elongation"], 1.0, 40.0))
    if s.shape in SHAPE_BANDS:   # the words' shape: a band of the kind's real elongations, not the copied one's
        elongation = _quantile(atlas, kind, "elongation", SHAPE_BANDS[s.shape], rng)
        if elongation is not None:
            s.elongation = float(np.clip(elongation, 1.0, 40.0))
    if not s.location and on_object:
        rate = _edge_rate(atlas, kind)
        if rate is None:
            s.edge = kind in EDGE_KINDS
        else:
            s.edge = bool(rng.random() < rate)
        if is_object_row(row) and row.get("pos_x") is not None and row.get("pos_y") is not None:
            s.aim = (float(row["pos_x"]), float(row["pos_y"]))
            if row.get("dist_to_boundary") is not None and not s.edge:
                s.depth = float(row["dist_to_boundary"])
    return s


def describe(atlas: Atlas, kind: str, rng: np.random.Generator, on_object: bool) -> dict[str, str]:
    """Words for one real defect of the kind (the prompt writer's draw): size, look, place, count."""
    words: dict[str, str] = {}
    if not atlas.rows:
        return words
    atlas = prior_atlas(atlas, kind, on_object)
    row = atlas.sample(kind, rng)
    if row.get("area_frac_object") is not None:
        words["size"] = word_for(atlas.percentile(kind, "area_frac_object", float(row["area_frac_object"])),
                                 SIZE_BANDS)
    if row.get("delta_e") is not None:
        words["look"] = word_for(atlas.percentile(kind, "delta_e", float(row["delta_e"])), INTENSITY_BANDS)
    if on_object and is_object_row(row):
        if row.get("touches_object_edge"):
            words["place"] = "edge"
        elif row.get("pos_x") is not None and row.get("pos_y") is not None:
            x, y = float(row["pos_x"]), float(row["pos_y"])
            words["place"] = ("centre" if abs(x - 0.5) < 0.2 and abs(y - 0.5) < 0.2 else
                              ("upper part" if y < 0.5 else "lower part") if abs(y - 0.5) >= abs(x - 0.5) else
                              ("left side" if x < 0.5 else "right side"))
    elif on_object and kind in EDGE_KINDS:
        words["place"] = "edge"
    if kind in MULTI_KINDS and int(row.get("n_parts") or 1) >= 2:
        words["count"] = "two" if int(row["n_parts"]) == 2 else "several"
    return words
