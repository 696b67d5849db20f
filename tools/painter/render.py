"""The defect kinds: each draws a coverage map (alpha) and the defect's appearance, derived from the image itself.

Every appearance is computed from the original pixels (darkened, lit, tinted, displaced, textured), so the
defect follows the local texture and lighting; coverage maps are anti-aliased and feathered so that the
composite has no seam. All randomness comes from the ``rng`` passed in: same seed and words, same defect.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .spec import DefectSpec

F32 = np.float32


@dataclass
class Canvas:
    """What a kind needs to draw: the image (float RGB 0-255), its lighting, the object mask and the aim."""

    image: np.ndarray
    lighting: np.ndarray       # local mean luminance (H, W)
    texture: np.ndarray        # local luminance std (H, W)
    fg: np.ndarray             # bool object mask
    centre: tuple[int, int]
    scale: float               # defect size in pixels
    spec: DefectSpec
    rng: np.random.Generator
    background: np.ndarray     # (3,) typical background colour (objects) or dark cavity colour (textures)
    behind: np.ndarray | None = None    # (H, W, 3) the background with the object removed (objects only)
    width: float | None = None          # stroke width of linear kinds (from a real defect's elongation)
    texture_field: np.ndarray | None = None  # zero-mean, unit-std luminance pattern from a texture folder (DTD)
    dist: np.ndarray | None = None      # distance to the object's boundary (pixels)
    frame_part: bool = False            # a part that fills the frame: its rim is the frame's border

    @property
    def on_object(self) -> bool:
        return bool(self.fg.mean() < 0.95)

    @property
    def has_rim(self) -> bool:
        """Whether a piece can come off a rim here: an object's outline, or the border of a frame-filling part."""
        return self.on_object or self.frame_part


# ---------------------------------------------------------------- shapes
def _aspect(c: Canvas, lo: float | None = None, hi: float | None = None) -> float:
    """A blob's aspect (its axes' ratio is the square): drawn in [lo, hi] (1 without a range), unless the words asked
    for a shape (the judge's "wrong shape" advice), then the elongation they set: an ellipse of aspect a measures
    a**2. Drawn either way, so the rest of the draw stays what it was."""
    drawn = float(c.rng.uniform(lo, hi)) if lo is not None else 1.0
    if c.spec.shape == "elongated":
        return max(drawn, float(np.sqrt(c.spec.elongation or 4.0)))
    if c.spec.shape == "compact":   # never more elongated than drawn (an aspect under 1 elongates the other way)
        return float(np.sqrt(min(max(drawn, 1 / drawn) ** 2, max(c.spec.elongation or 1.0, 1.0))))
    return drawn


def _angle(c: Canvas) -> float:
    o = c.spec.orientation
    base = {"horizontal": 0.0, "vertical": np.pi / 2, "diagonal": np.pi / 4}.get(o or "", c.rng.uniform(0, np.pi))
    return float(base + c.rng.normal(0, 0.08 if o else 0.0))


def _curve(c: Canvas, length: float, bend: float, centre: tuple[float, float] | None = None,
           angle: float | None = None, n: int = 40) -> np.ndarray:
    """A quadratic Bezier through the centre: nearly straight for scratches, curvy for threads."""
    cx, cy = centre or c.centre
    a = _angle(c) if angle is None else angle
    d = np.array([np.cos(a), np.sin(a)]) * length / 2
    nrm = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6)
    p0, p2 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
    p1 = np.array([cx, cy]) + nrm * c.rng.normal(0, bend * length)
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _polyline_alpha(shape: tuple[int, int], pts: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased stroke at 4x supersampling, so 1-2 px lines keep their soft, real-looking profile."""
    h, w = shape
    s = 4
    canvas = np.zeros((h * s, w * s), np.uint8)
    cv2.polylines(canvas, [np.round(pts * s).astype(np.int32)], False, 255, max(1, int(round(width * s))),
                  cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(F32) / 255.0


def _random_walk(c: Canvas, length: float, start: tuple[float, float], angle: float, step: float = 2.0,
                 wiggle: float = 0.35) -> np.ndarray:
    pts = [np.array(start, dtype=float)]
    a = angle
    for _ in range(max(2, int(length / step))):
        a += c.rng.normal(0, wiggle)
        a = 0.7 * a + 0.3 * angle  # keep a general direction: cracks run, they do not coil
        pts.append(pts[-1] + step * np.array([np.cos(a), np.sin(a)]))
    return np.array(pts)


def _blob(c: Canvas, radius: float, irregular: float = 0.35, centre: tuple[float, float] | None = None,
          aspect: float = 1.0) -> np.ndarray:
    """Irregular filled blob: a polygon whose radius is a smooth random function of the angle."""
    h, w = c.fg.shape
    cx, cy = centre or c.centre
    k = 48
    th = np.linspace(0, 2 * np.pi, k, endpoint=False)
    r = np.ones(k)
    for f in (2, 3, 5):
        r += irregular / f * np.sin(f * th + c.rng.uniform(0, 2 * np.pi)) * c.rng.uniform(0.5, 1.0)
    rot = c.rng.uniform(0, np.pi)
    x = radius * r * np.cos(th) * aspect
    y = radius * r * np.sin(th) / aspect
    xs = cx + x * np.cos(rot) - y * np.sin(rot)
    ys = cy + x * np.sin(rot) + y * np.cos(rot)
    s = 4
    canvas = np.zeros((h * s, w * s), np.uint8)
    cv2.fillPoly(canvas, [np.round(np.stack([xs, ys], 1) * s).astype(np.int32)], 255, cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(F32) / 255.0


def _feather(alpha: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(alpha, (0, 0), sigma) if sigma > 0 else alpha


def _noise(c: Canvas, sigma: float) -> np.ndarray:
    n = c.rng.standard_normal(c.fg.shape).astype(F32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / (n.std() + 1e-6)


def _pattern(c: Canvas, sigma: float) -> np.ndarray:
    """A zero-mean unit-std pattern: a real texture (DTD) when the painter has a texture folder, else noise."""
    if c.texture_field is not None:
        t = cv2.GaussianBlur(c.texture_field, (0, 0), max(0.3, sigma * 0.5))
        return t / (t.std() + 1e-6)
    return _noise(c, sigma)


def _points_around(c: Canvas, n: int, spread: float) -> list[tuple[float, float]]:
    pts = [c.centre]
    for _ in range(n - 1):
        pts.append((c.centre[0] + c.rng.normal(0, spread), c.centre[1] + c.rng.normal(0, spread)))
    return pts


# ---------------------------------------------------------------- appearance helpers
def _darken(c: Canvas, amount: float) -> np.ndarray:
    return c.image * (1.0 - amount)


def _lighten(c: Canvas, amount: float) -> np.ndarray:
    return c.image + (255.0 - c.image) * amount


def _contrast_sign(c: Canvas) -> float:
    """+1 where a mark should read bright (dark surface), -1 where dark (bright surface), at the aim point."""
    x, y = c.centre
    return 1.0 if c.lighting[y, x] < 110 else -1.0


def _tint(c: Canvas, colour: np.ndarray, amount: float) -> np.ndarray:
    """Move towards ``colour`` but keep the local texture: colour scaled by relative luminance."""
    lum = (0.299 * c.image[..., 0] + 0.587 * c.image[..., 1] + 0.114 * c.image[..., 2])
    rel = (lum / np.maximum(c.lighting, 1.0))[..., None]
    return c.image * (1 - amount) + np.clip(colour[None, None, :] * rel, 0, 255) * amount


def _colour(c: Canvas, default: tuple[int, int, int]) -> np.ndarray:
    return np.array(c.spec.colour if c.spec.colour else default, F32)


# ---------------------------------------------------------------- kinds
# Each returns (alpha, target): composite = image * (1 - alpha) + target * alpha.
Kind = Callable[[Canvas], tuple[np.ndarray, np.ndarray]]


def scratch(c: Canvas):
    alpha = np.zeros(c.fg.shape, F32)
    for p in _points_around(c, c.spec.count, c.scale * 0.3):
        length = c.scale * c.rng.uniform(1.2, 1.8)
        width = c.width * c.rng.uniform(0.8, 1.2) if c.width is not None else c.rng.uniform(1.0, 1.8)
        alpha = np.maximum(alpha, _polyline_alpha(c.fg.shape, _curve(c, length, 0.04, p), width))
    k = 0.55 + 0.4 * c.spec.intensity
    light = c.spec.lighter if c.spec.lighter is not None else (_contrast_sign(c) > 0 or c.spec.metallic)
    target = _lighten(c, k) if light else _darken(c, k)
    return alpha, target


def crack(c: Canvas):
    """A running crack: a dark gap of real width (a real crack's mask is 2-6 px wide at 256 px), thinner
    branches, and a faint lit lip on one side where the fracture face catches the light."""
    a0 = _angle(c)
    length = c.scale * c.rng.uniform(1.3, 1.9)
    width = c.width if c.width is not None else c.rng.uniform(1.8, 3.0)
    start = (c.centre[0] - np.cos(a0) * length / 2, c.centre[1] - np.sin(a0) * length / 2)
    main = _random_walk(c, length, start, a0)
    # The gap's width varies along the crack: segments of varying thickness.
    alpha = np.zeros(c.fg.shape, F32)
    k = max(2, len(main) // 6)
    for i in range(0, len(main) - 1, k):
        alpha = np.maximum(alpha, _polyline_alpha(c.fg.shape, main[i:i + k + 1], width * c.rng.uniform(0.6, 1.25)))
    for _ in range(int(c.rng.choice([0, 0, 1, 2]))):  # real cracks mostly run as one line
        j = int(c.rng.integers(len(main) // 4, 3 * len(main) // 4))
        branch = _random_walk(c, length * c.rng.uniform(0.2, 0.4), tuple(main[j]), a0 + c.rng.choice([-1, 1]) * 0.8)
        alpha = np.maximum(alpha, _polyline_alpha(c.fg.shape, branch, max(1.0, 0.5 * width)))
    core = cv2.GaussianBlur(alpha, (0, 0), 0.6)
    target = _darken(c, 0.45 + 0.5 * c.spec.intensity) * (1 - 0.15 * core)[..., None]
    lip = np.clip(np.roll(alpha, -1, 0) - alpha, 0, 1)
    target = target + (255 - target) * (0.25 * lip)[..., None]
    return np.maximum(alpha, 0.6 * lip), target


def hole(c: Canvas):
    """Pin-sized pits (pitting, pores, pin holes): small dark cavities, possibly several, each with a lit lip."""
    alpha = np.zeros(c.fg.shape, F32)
    n = max(1, c.spec.count)
    r0 = c.scale * 0.25 / np.sqrt(n)  # several pits share the area one pit would have
    for p in _points_around(c, n, max(6.0, c.scale * 0.8)):
        r = max(1.3, r0 * c.rng.uniform(0.75, 1.25))
        alpha = np.maximum(alpha, _blob(c, r, 0.2, p, aspect=_aspect(c, 0.8, 1.3)))
    inner = cv2.GaussianBlur(alpha, (0, 0), max(0.6, r0 * 0.3))
    depth = 0.35 + 0.55 * c.spec.intensity
    target = c.image * (1 - depth * np.clip(0.6 + 0.6 * inner, 0, 1))[..., None]
    rim = np.clip(alpha - np.roll(np.roll(alpha, 1, 0), 1, 1), 0, 1)
    target = target + (255 - target) * (0.4 * rim)[..., None]
    return alpha, target


def cut(c: Canvas):
    length = c.scale * c.rng.uniform(1.0, 1.5)
    pts = _curve(c, length, 0.01)
    alpha = _polyline_alpha(c.fg.shape, pts, c.rng.uniform(2.0, 3.2))
    target = _darken(c, 0.6 + 0.35 * c.spec.intensity)
    edge = np.clip(_polyline_alpha(c.fg.shape, pts + 1.5, 1.0) - alpha, 0, 1)
    target = target + (255 - target) * (0.6 * edge)[..., None]
    return np.maximum(alpha, edge * 0.9), target


def contamination(c: Canvas):
    alpha = np.zeros(c.fg.shape, F32)
    for p in _points_around(c, c.spec.count, c.scale * 0.5):
        alpha = np.maximum(alpha, _blob(c, max(2.0, c.scale * c.rng.uniform(0.2, 0.35)), 0.5, p, aspect=_aspect(c)))
    default = (175, 175, 180) if c.spec.metallic else tuple(c.rng.choice([(60, 45, 30), (35, 35, 35), (120, 95, 60)]))
    colour = _colour(c, default)
    grain = _noise(c, 0.8)[..., None]
    target = colour[None, None, :] * (1 + 0.15 * grain) * (c.lighting / max(c.lighting.mean(), 1))[..., None] ** 0.3
    mix = 0.6 + 0.4 * c.spec.intensity
    target = c.image * (1 - mix) + target * mix
    if c.spec.metallic:  # a specular glint on metal particles
        glint = _blob(c, max(1.0, c.scale * 0.06), 0.2, (c.centre[0] - c.scale * 0.05, c.centre[1] - c.scale * 0.05))
        target = target + (255 - target) * (0.8 * glint)[..., None]
    return _feather(alpha, 0.5), target


def stain(c: Canvas):
    alpha = _blob(c, max(3.0, c.scale * c.rng.uniform(0.45, 0.65)), 0.45, aspect=_aspect(c))
    alpha = _feather(alpha, max(2.0, c.scale * 0.08))
    colour = _colour(c, (95, 70, 40))
    k = 0.3 + 0.35 * c.spec.intensity
    target = _tint(c, colour, 0.35) * (1 - k)
    ring = np.clip(alpha - cv2.GaussianBlur(alpha, (0, 0), 2.0), 0, 1) * 2.0  # coffee-ring edge of a dried liquid
    target = target * (1 - 0.3 * np.clip(ring, 0, 1))[..., None]
    return np.clip(alpha * 1.15, 0, 1), target


def color(c: Canvas):
    """A colour or shade change over a broad, soft-bordered area (discolouration, uneven colour)."""
    alpha = _broad_region(c, max(3.0, c.scale * c.rng.uniform(0.45, 0.6)))
    if c.spec.colour is not None:
        target = _tint(c, _colour(c, (0, 0, 0)), 0.45 + 0.4 * c.spec.intensity)
    else:
        hsv = cv2.cvtColor(np.clip(c.image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(F32)
        hsv[..., 0] = (hsv[..., 0] + c.rng.choice([-1, 1]) * (12 + 18 * c.spec.intensity)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * 1.3 + 40 * c.spec.intensity, 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] * (1 - 0.3 * c.spec.intensity), 0, 255)
        target = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(F32)
        if np.abs(target - c.image).mean() < 8:  # grey surfaces have no hue to turn: shade them instead
            target = c.image * (1 - (0.2 + 0.3 * c.spec.intensity) * (0.8 + 0.2 * _noise(c, 3.0)))[..., None]
    return alpha, target


def print_(c: Canvas):
    pts = _curve(c, c.scale * c.rng.uniform(1.0, 1.5), 0.15)
    alpha = _polyline_alpha(c.fg.shape, pts, max(2.0, c.scale * 0.15))
    alpha = cv2.blur(alpha, (5, 1)) if c.rng.random() < 0.5 else cv2.blur(alpha, (1, 5))  # smeared ink
    ink = _colour(c, (30, 30, 35) if _contrast_sign(c) < 0 else (225, 225, 220))
    mix = 0.55 + 0.4 * c.spec.intensity
    return np.clip(alpha * 1.3, 0, 1), c.image * (1 - mix) + ink[None, None, :] * mix


def bent(c: Canvas):
    """A local warp: the surface is displaced along a smooth bump, with a highlight where it bends."""
    h, w = c.fg.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    sigma = max(3.0, c.scale * 0.45)
    g = np.exp(-((xx - c.centre[0]) ** 2 + (yy - c.centre[1]) ** 2) / (2 * sigma ** 2))
    a = _angle(c)
    amp = (0.3 + 0.45 * c.spec.intensity) * sigma
    mapx = (xx - amp * g * np.cos(a)).astype(F32)
    mapy = (yy - amp * g * np.sin(a)).astype(F32)
    target = cv2.remap(c.image, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shade = np.gradient(g, axis=1) * np.cos(a) + np.gradient(g, axis=0) * np.sin(a)
    target = target * (1 + 0.4 * c.spec.intensity * shade * sigma)[..., None]
    alpha = np.clip((amp * g - 0.5) / 0.8, 0, 1).astype(F32)
    return alpha, target


def _rim_anchor(c: Canvas, radius: float) -> tuple[float, float]:
    """Objects: move the aim onto the rim, so the piece bites into the object from its edge (a chip comes off
    the edge; a hole in the middle of a flat face is not what real breaks look like)."""
    x, y = c.centre
    if not c.has_rim or c.dist is None or not c.spec.edge or c.dist[y, x] <= radius * 0.5:
        return float(x), float(y)
    ys, xs = np.nonzero(c.fg & (c.dist <= 2.0))
    if len(xs):
        i = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
        x, y = int(xs[i]), int(ys[i])
    return float(x), float(y)


def _behind(c: Canvas) -> np.ndarray:
    """What a missing piece uncovers: the background plate (objects) or a dark cavity colour (textures)."""
    grain = (1 + 0.06 * _noise(c, 1.0))[..., None]
    if c.behind is not None:
        return c.behind * grain
    return np.broadcast_to(c.background[None, None, :], c.image.shape) * grain


def missing(c: Canvas):
    """A part is gone: the region shows what lies behind it (the background for objects, a cavity in textures)."""
    r = max(3.0, c.scale * c.rng.uniform(0.45, 0.6))
    centre = _rim_anchor(c, r)
    alpha = _blob(c, r, 0.25, centre, aspect=_aspect(c, 0.8, 1.5))
    if c.on_object:
        alpha = alpha * c.fg  # only material can go missing
    mix = 0.75 + 0.25 * c.spec.intensity
    return _feather(alpha.astype(F32), 0.6), c.image * (1 - mix) + _behind(c) * mix


def fold(c: Canvas):
    h, w = c.fg.shape
    a = _angle(c)
    length = c.scale * c.rng.uniform(1.4, 2.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    nx, ny = -np.sin(a), np.cos(a)
    d = (xx - c.centre[0]) * nx + (yy - c.centre[1]) * ny            # signed distance across the crease
    t = (xx - c.centre[0]) * np.cos(a) + (yy - c.centre[1]) * np.sin(a)  # position along it
    width = max(2.0, c.scale * 0.12)
    along = np.clip(1 - (np.abs(t) / (length / 2)) ** 4, 0, 1)
    shade = -np.tanh(d / width) * np.exp(-(d / (2 * width)) ** 2)    # one flank lit, the other in shadow
    k = 0.35 + 0.4 * c.spec.intensity
    target = c.image * (1 + k * shade)[..., None]
    crease = np.exp(-(d / 1.0) ** 2)
    target = target * (1 - 0.4 * k * crease)[..., None]
    alpha = (along * np.clip(np.exp(-(d / (1.6 * width)) ** 2) * 1.6, 0, 1)).astype(F32)
    return alpha, target


def glue(c: Canvas):
    alpha = _feather(_blob(c, max(3.0, c.scale * c.rng.uniform(0.35, 0.55)), 0.4, aspect=_aspect(c)), 2.0)
    blurred = cv2.GaussianBlur(c.image, (0, 0), 1.5)
    colour = _colour(c, (205, 175, 110))
    mix = 0.3 + 0.35 * c.spec.intensity
    target = blurred * (1 - mix) + colour[None, None, :] * mix
    hl = _blob(c, max(1.0, c.scale * 0.1), 0.2, (c.centre[0] - c.scale * 0.12, c.centre[1] - c.scale * 0.12))
    target = target + (255 - target) * (0.6 * _feather(hl, 1.0))[..., None]
    return np.clip(alpha * 1.1, 0, 1), target


def thread(c: Canvas):
    alpha = np.zeros(c.fg.shape, F32)
    for p in _points_around(c, c.spec.count, c.scale * 0.3):
        length = c.scale * c.rng.uniform(1.8, 2.6)
        alpha = np.maximum(alpha, _polyline_alpha(c.fg.shape, _curve(c, length, 0.35, p, n=60), c.rng.uniform(1.2, 2.0)))
    colour = _colour(c, (40, 40, 40) if _contrast_sign(c) < 0 else (230, 230, 225))
    mix = 0.6 + 0.4 * c.spec.intensity
    shadow = np.roll(np.roll(alpha, 1, 0), 1, 1)
    target = c.image * (1 - mix) + colour[None, None, :] * mix
    base = c.image * (1 - 0.35 * shadow)[..., None]
    return np.maximum(alpha, 0.7 * shadow * (alpha < 0.2)), np.where(alpha[..., None] > 0.2, target, base)


def _broad_region(c: Canvas, radius: float) -> np.ndarray:
    """A broad, soft-bordered, irregular area (uneven shading, a colour cast): a blob whose border is warped by
    low-frequency noise and fades over about a fifth of its radius."""
    base = _blob(c, radius, 0.55, aspect=_aspect(c, 0.7, 1.6))
    warp = _noise(c, max(2.0, radius * 0.25))
    soft = cv2.GaussianBlur(base, (0, 0), max(1.5, radius * 0.2))
    return np.clip((soft - 0.25 + 0.12 * warp) / 0.5, 0, 1).astype(F32)


def rough(c: Canvas):
    """Unevenness: broad smooth bands of light and shadow with a fine grit (DTD when given), soft-bordered."""
    alpha = _broad_region(c, max(3.0, c.scale * c.rng.uniform(0.45, 0.6)))
    shade = _noise(c, max(1.5, c.scale * 0.12))
    grit = _pattern(c, 1.0)
    sign = 1.0 if c.spec.lighter else -1.0
    k = 14 + 30 * c.spec.intensity
    target = c.image + (k * (0.75 * shade + 0.2 * grit))[..., None] + sign * 0.1 * c.spec.intensity * c.image
    return alpha, target


def broken(c: Canvas):
    """A chip or break. On objects it bites in from the rim: where material is gone the background shows, and a
    grainy, lighter fracture face lines the bite. On textures the structure is broken through: the pattern is
    gone over a small area, leaving the shadowed gap behind it, sometimes with a short crack running off."""
    r = max(2.5, c.scale * c.rng.uniform(0.4, 0.55))
    centre = _rim_anchor(c, r)
    chunk = _blob(c, r, 0.8, centre, aspect=_aspect(c, 0.7, 1.6))
    grit = _pattern(c, 0.7)
    if c.has_rim:   # a part that fills the frame (a tile's crop) breaks like an object, at the frame's border
        chunk = chunk * c.fg
        if c.dist is not None and c.spec.edge:   # outer part gone, inner part the fracture face
            inner = cv2.GaussianBlur(np.clip(c.dist / max(r * 0.55, 1.0), 0, 1).astype(F32), (0, 0), 1.0)
        else:  # a chip out of the face, not through the part: only the fractured material shows
            inner = np.ones(chunk.shape, F32)
        face = c.image + (255 - c.image) * (0.25 + 0.25 * c.spec.intensity) + (18 * grit)[..., None]
        target = _behind(c) * (1 - inner[..., None]) + face * inner[..., None]
        return _feather(chunk.astype(F32), 0.5), target
    # The pattern is gone: what shows is the surface's local mean (the gap behind a mesh, the bed under a
    # weave), a little shadowed, with a broken grain - not a black blob.
    hollow = cv2.GaussianBlur(c.image, (0, 0), max(2.0, r * 0.6))
    target = hollow * (1 - (0.1 + 0.3 * c.spec.intensity)) * (1 + 0.06 * grit)[..., None]
    alpha = chunk
    if c.rng.random() < 0.5:
        a0 = c.rng.uniform(0, 2 * np.pi)
        start = (centre[0] + np.cos(a0) * r * 0.8, centre[1] + np.sin(a0) * r * 0.8)
        alpha = np.maximum(alpha, _polyline_alpha(c.fg.shape, _random_walk(c, r * c.rng.uniform(0.8, 1.4), start, a0),
                                                  1.2))
    return _feather(alpha, 0.4), target


KIND_RENDERERS: dict[str, Kind] = {
    "scratch": scratch, "crack": crack, "hole": hole, "cut": cut, "contamination": contamination,
    "stain": stain, "color": color, "print": print_, "bent": bent, "missing": missing, "fold": fold,
    "glue": glue, "thread": thread, "rough": rough, "broken": broken,
}
