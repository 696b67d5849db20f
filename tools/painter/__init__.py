"""The procedural defect painter: the embedded image-generation backend that needs no weights.

``ProceduralPainter.edit(image, prompt, seed)`` reads the prompt's words (:mod:`.spec`), places the defect on
the object where the words say (:mod:`.placement`), draws it from the image's own pixels (:mod:`.render`) and
composites it with a grain that matches the local texture.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..imaging import clean_mask, difference_map, foreground_mask
from .placement import choose_point, object_box
from .render import KIND_RENDERERS, Canvas
from .spec import DefectSpec, parse_prompt

__all__ = ["ProceduralPainter", "DefectSpec", "parse_prompt", "paint"]


def _background_colour(image: np.ndarray, fg: np.ndarray) -> np.ndarray:
    if fg.mean() < 0.95 and (~fg).any():
        return np.median(image[~fg].reshape(-1, 3), axis=0).astype(np.float32)
    # Texture: what lies behind a missing piece is a shadowed cavity.
    return (np.percentile(image.reshape(-1, 3), 3, axis=0) * 0.6).astype(np.float32)


VISIBLE_DELTA_E = 6.0


def _ensure_contrast(img: np.ndarray, target: np.ndarray, alpha: np.ndarray, lighting: np.ndarray,
                     centre: tuple[int, int], intensity: float) -> np.ndarray:
    """Give the defect the luminance contrast its intensity words ask for.

    A dark crack on black plastic is invisible; real ones catch the light. Where a kind's own appearance is
    weaker than ``14 + 40 * intensity`` grey levels, it is pushed further in its own direction when the surface
    has the headroom, else mirrored (a dark mark becomes a light one on a black surface) and pushed. So "faint"
    stays faint and "pronounced" is pronounced on any surface.
    """
    if alpha.max() <= 0:
        return target
    core = alpha >= 0.5 * alpha.max()
    lum_w = np.array([0.299, 0.587, 0.114], np.float32)
    signed = (target[core] - img[core]) @ lum_w
    need = 14.0 + 40.0 * intensity
    have = float(np.median(np.abs(signed)))
    if have >= need:
        return target
    direction = 1.0 if float(np.median(signed)) >= 0 else -1.0
    level = float(lighting[centre[1], centre[0]])
    headroom = 255.0 - level if direction > 0 else level
    if headroom < need:  # no room this way: mirror the appearance around the original
        target = 2 * img - target
        direction = -direction
    return target + direction * (need - have)


def paint(image: np.ndarray, spec: DefectSpec, fg: np.ndarray, rng: np.random.Generator,
          jitter: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``spec`` onto ``image`` (uint8 RGB). Returns the edit and the region it changed (bool).

    ``jitter`` lets size and contrast vary around the words' values, as any generator's output does; the judge
    then catches attempts that came out too faint or too large and the agent refines the words.
    """
    img = image.astype(np.float32)
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lighting = cv2.GaussianBlur(lum, (0, 0), 6)
    texture = np.sqrt(np.maximum(cv2.GaussianBlur(lum * lum, (0, 0), 6) - lighting ** 2, 0))
    x0, y0, x1, y1 = object_box(fg)
    s = spec
    if jitter:
        s = DefectSpec(**{**spec.__dict__, "size": spec.size * float(rng.uniform(0.75, 1.5)),
                          "intensity": float(np.clip(spec.intensity * rng.uniform(0.45, 1.15), 0.1, 1.0))})
    scale = max(4.0, s.size * min(x1 - x0, y1 - y0))
    where = fg
    if s.kind == "bent":  # a bend shows where there is structure to displace (a lead, a wire), not on flat plastic
        grad = cv2.morphologyEx(lum, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        busy = cv2.dilate((grad > np.percentile(grad[fg], 75)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        where = fg & busy if (fg & busy).any() else fg
    centre = choose_point(where, s.location, rng, margin=0.3 * scale if s.kind not in ("missing", "broken") else 0.0)
    canvas = Canvas(img, lighting, texture, fg, centre, scale, s, rng, _background_colour(image, fg))
    alpha, target = KIND_RENDERERS[s.kind](canvas)
    alpha = np.clip(alpha, 0, 1).astype(np.float32)
    if s.soft and alpha.max() > 0:  # the words ask for a gentler fade: widen the edge, keep the core's strength
        peak = alpha.max()
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.5, 0.06 * scale))
        alpha = np.clip(alpha / max(alpha.max(), 1e-6) * peak * 1.2, 0, 1)
    if s.kind != "bent":  # a warp's visibility is its displacement, not a brightness change
        target = _ensure_contrast(img, target, alpha, lighting, centre, s.intensity)
    # Objects: keep the defect on the object (a dilated mask lets edge defects cross the outline a little),
    # except kinds that by nature reach past it.
    if fg.mean() < 0.95 and s.kind not in ("missing", "broken", "bent"):
        near = cv2.dilate(fg.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
        alpha *= cv2.GaussianBlur(near, (0, 0), 1.0)
    # Camera grain inside the defect, matched to the local texture, so the patch is not unnaturally clean.
    grain = rng.standard_normal(lum.shape).astype(np.float32) * np.clip(0.25 * texture, 1.0, 6.0)
    if s.kind != "bent":  # a warp moves real pixels: they already carry the camera's grain
        target = target + grain[..., None]
    out = img * (1 - alpha[..., None]) + target * alpha[..., None]
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    # The edit region: where the defect covers the pixel at all (alpha >= 0.1) and the change is visible (> 6 ΔE),
    # as one region (gaps inside a rough or speckled defect belong to it).
    return out, clean_mask((alpha >= 0.1) & (difference_map(image, out) > VISIBLE_DELTA_E))


class ProceduralPainter:
    """IG backend ``procedural``: a prompt-conditioned defect painter (no weights, milliseconds per edit)."""

    def __init__(self, jitter: bool = True):
        self.jitter = bool(jitter)
        self._fg_cache: tuple[int, str, np.ndarray] | None = None

    def foreground(self, image: np.ndarray, category: str) -> np.ndarray:
        key = hash(image.tobytes()[:: max(1, image.size // 4096)])
        if self._fg_cache is None or self._fg_cache[:2] != (key, category):
            self._fg_cache = (key, category, foreground_mask(image, category))
        return self._fg_cache[2]

    def edit(self, image: np.ndarray, prompt: str, seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str, seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        spec = parse_prompt(prompt)
        rng = np.random.default_rng(seed)
        return paint(image, spec, self.foreground(image, category), rng, jitter=self.jitter)
