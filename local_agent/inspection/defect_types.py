"""Naming the defect type from the type NAMES alone (no labelled anomalous image is ever used).

Each name is mapped to a defect kind with the painter's vocabulary (``bent_lead`` → bent, ``metal_contamination``
→ contamination), and each kind to what its words say about the region: linear kinds (scratch, crack, thread, cut,
fold) are thin and long, blob kinds (hole, contamination, stain, glue) small and compact, "missing" parts large,
structural kinds (bent, broken) medium, colour kinds change hue more than brightness, holes are darker. The region's
measured shape and change are scored against these word-derived expectations; ties go to the first name.

This is a zero-shot guess from words, not a trained classifier: measured accuracy is reported next to chance
(1 / number of types) in the evaluation. With labelled examples (``examples``), the nearest class centroid of the
region's patch features is used instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tools.painter.spec import kind_of

LINEAR = {"scratch", "crack", "thread", "cut", "fold"}
BLOB = {"hole", "contamination", "stain", "glue"}
LARGE = {"missing"}
STRUCTURAL = {"bent", "broken", "rough", "print"}
COLOUR = {"color", "stain"}


@dataclass
class RegionFacts:
    area: float          # fraction of the image
    elongation: float    # >= 1; thin long regions are high
    brightness: float    # mean luminance change vs the nearest normal, in 0..255 units (signed)
    chroma: float        # mean absolute colour change beyond brightness


def region_facts(image: np.ndarray, exemplar: np.ndarray, mask: np.ndarray) -> RegionFacts:
    import cv2

    from ..tools.imaging import elongation

    if exemplar.shape[:2] != image.shape[:2]:
        exemplar = cv2.resize(exemplar, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    a = image.astype(np.float32)[mask]
    b = exemplar.astype(np.float32)[mask]
    if len(a) == 0:
        return RegionFacts(0.0, 1.0, 0.0, 0.0)
    diff = a - b
    bright = float(diff.mean())
    chroma = float(np.abs(diff - diff.mean(axis=1, keepdims=True)).mean())
    return RegionFacts(float(mask.mean()), float(elongation(mask)), bright, chroma)


def kind_score(kind: str | None, facts: RegionFacts) -> float:
    """How well the region fits what the kind's words imply (higher is better)."""
    thin = float(np.clip((facts.elongation - 2.0) / 3.0, 0.0, 1.0))
    large = float(np.clip((facts.area - 0.01) / 0.05, 0.0, 1.0))
    colourful = float(np.clip(facts.chroma / 12.0, 0.0, 1.0))
    darker = float(np.clip(-facts.brightness / 30.0, 0.0, 1.0))
    if kind is None:
        return 0.0
    score = 0.0
    score += thin if kind in LINEAR else (1.0 - thin) if kind in BLOB | LARGE else 0.5 * (1.0 - thin)
    score += large if kind in LARGE else (1.0 - large) if kind in BLOB | LINEAR else 0.5
    score += colourful if kind in COLOUR else 0.5 * (1.0 - colourful)
    if kind == "hole":
        score += darker
    return score


def guess_type(types: list[str], facts: RegionFacts) -> tuple[str | None, dict[str, float]]:
    if not types:
        return None, {}
    scores = {t: round(kind_score(kind_of(t), facts), 4) for t in types}
    best = max(types, key=lambda t: scores[t])          # max keeps the first of equal scores
    return best, scores
