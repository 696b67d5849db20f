"""Where a defect goes: a point on the object that matches the prompt's location words."""
from __future__ import annotations

import cv2
import numpy as np


def object_box(fg: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(fg)
    if len(xs) == 0:
        h, w = fg.shape
        return 0, 0, w, h
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# Stretches of an elongated part along its long axis, 0 at its wider end (a screw's head; its tip tapers to a point).
PART_STRETCHES = {"head": (0.0, 0.18), "neck": (0.15, 0.35), "shaft": (0.3, 0.92), "tip": (0.85, 1.0)}
ELONGATED = 2.0   # axis ratio from which a part has a head and a tip


def part_band(fg: np.ndarray, place: str) -> np.ndarray | None:
    """The object's pixels in the stretch ``place`` names ("head", "neck", "shaft", "tip") when the object is
    elongated (a screw, a bolt, a pin); None otherwise. The head end is the wider one: the spread across the axis in
    the last 15 % at each end (the 10th-90th percentile, so that a thread's teeth do not count as width)."""
    ys, xs = np.nonzero(fg)
    if place not in PART_STRETCHES or len(xs) < 50:
        return None
    pts = np.stack([xs, ys], 1).astype(np.float64)
    pts -= pts.mean(0)
    ev, vec = np.linalg.eigh(np.cov(pts.T))
    if ev[1] < ELONGATED ** 2 * max(ev[0], 1e-6):
        return None
    t = pts @ vec[:, 1]
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    across = pts @ vec[:, 0]

    def width(end: np.ndarray) -> float:
        return float(np.subtract(*np.percentile(across[end], [90, 10]))) if end.sum() >= 5 else 0.0

    if width(t > 0.85) > width(t < 0.15):
        t = 1.0 - t
    lo, hi = PART_STRETCHES[place]
    keep = (t >= lo) & (t <= hi)
    band = np.zeros(fg.shape, bool)
    band[ys[keep], xs[keep]] = True
    return band


def choose_point(fg: np.ndarray, location: tuple[str, ...], rng: np.random.Generator,
                 margin: float = 0.0, aim: tuple[float, float] | None = None,
                 depth: float | None = None, rim_strength: np.ndarray | None = None) -> tuple[int, int]:
    """A foreground pixel near the place the words name (``top``, ``left``, ``edge``, ``corner``, ``centre``…).

    ``margin`` (pixels) keeps the point that far inside the object unless the words ask for the edge. Without
    place words, ``aim`` (x, y in the object's box, 0..1) and ``depth`` (pixels from the object's boundary) put it
    where a real defect sat (the atlas prior). ``rim_strength`` (e.g. the image gradient) keeps edge points on
    the part of the outline where the object really meets its background, not where the mask is loose.
    """
    h, w = fg.shape
    x0, y0, x1, y1 = object_box(fg)
    bw, bh = x1 - x0, y1 - y0
    fx, fy = 0.5, 0.5
    if "left" in location:
        fx = 0.2
    if "right" in location:
        fx = 0.8
    if "top" in location:
        fy = 0.2
    if "bottom" in location:
        fy = 0.8
    if "corner" in location and fx == 0.5 and fy == 0.5:
        fx, fy = rng.choice([0.12, 0.88]), rng.choice([0.12, 0.88])
    elif "corner" in location:
        fx, fy = (0.12 if fx < 0.5 else 0.88 if fx > 0.5 else fx), (0.12 if fy < 0.5 else 0.88 if fy > 0.5 else fy)
    if not location:  # nowhere in particular: where a real defect sat, else anywhere on the object
        fx, fy = aim if aim is not None else (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
    target = np.array([x0 + fx * bw, y0 + fy * bh])
    # Candidate pixels: inside the object (and near its boundary if the words say edge/rim).
    dist = cv2.distanceTransform(np.pad(fg.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    if "edge" in location and fg.mean() < 0.95:
        cand = fg & (dist <= max(3.0, 0.04 * min(bw, bh)))
        if rim_strength is not None and cand.sum() > 20:
            strong = cand & (rim_strength >= np.percentile(rim_strength[cand], 70))
            cand = strong if strong.any() else cand
    else:
        cand = fg & (dist > margin) if (fg & (dist > margin)).any() else fg
        if depth is not None and fg.mean() < 0.95:
            band = cand & (np.abs(dist - depth) <= max(2.0, 0.3 * depth))
            cand = band if band.any() else cand
    ys, xs = np.nonzero(cand)
    if len(xs) == 0:
        return int(np.clip(target[0], 0, w - 1)), int(np.clip(target[1], 0, h - 1))
    if tuple(location) == ("edge",) and aim is None:  # "at the edge", nowhere in particular: anywhere on the rim
        i = int(rng.integers(len(xs)))
        return int(xs[i]), int(ys[i])
    jitter = rng.normal(0, 0.08 * max(bw, bh), size=2)
    aim = target + jitter
    d2 = (xs - aim[0]) ** 2 + (ys - aim[1]) ** 2
    # Among the 20 nearest candidates, take one at random: placement varies with the seed but obeys the words.
    nearest = np.argsort(d2)[:20]
    i = int(rng.choice(nearest))
    return int(xs[i]), int(ys[i])
