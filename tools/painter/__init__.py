"""The procedural defect painter: the embedded image-generation backend that needs no weights.

``ProceduralPainter.edit(image, prompt, seed)`` reads the prompt's words (:mod:`.spec`), places the defect on
the object where the words say (:mod:`.placement`), draws it from the image's own pixels (:mod:`.render`) and
composites it with a grain that matches the local texture.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ..base import BackendUnavailable, positive_option
from ..baselines import list_texture_files
from ..imaging import WORK_SIDE, at_work_side, clean_mask, difference_map, foreground_mask, keep_mode, part_fills_frame
from .placement import PART_STRETCHES, choose_point, object_box, part_band
from .render import KIND_RENDERERS, Canvas
from .priors import EDGE_KINDS, apply_priors, load_atlas
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


def _match_contrast(img: np.ndarray, target: np.ndarray, alpha: np.ndarray, delta_e: float,
                    lighter: bool | None, limits: tuple[float, float] = (0.35, 3.0)) -> np.ndarray:
    """Give the defect the contrast of the real defect it copies (its ΔE against the normal, and lighter or
    darker), scaling the kind's own change up or down; a change the surface has no headroom for is mirrored."""
    if alpha.max() <= 0:
        return target
    core = alpha >= 0.5 * alpha.max()
    lum_w = np.array([0.299, 0.587, 0.114], np.float32)
    signed = (target[core] - img[core]) @ lum_w
    if lighter is not None and (float(np.median(signed)) >= 0) != lighter:
        target = 2 * img - target  # the real one was lighter (darker): turn the kind's change around
    a = cv2.cvtColor(np.clip(img, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[core]
    b = cv2.cvtColor(np.clip(target, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[core]
    have = float(np.median(np.sqrt(((a - b) ** 2).sum(1))))
    if have < 0.5:
        return target
    k = float(np.clip(delta_e / have, *limits))
    out = img + k * (target - img)
    over = np.clip(out, 0, 255) != out
    if k > 1 and over[core].mean() > 0.3:  # no headroom this way: mirror around the original
        out = img - k * (target - img)
    return out


# Area of a kind's drawing in units of scale^2 (blobs: ~pi/4 of the bounding square) and how its area grows with
# scale (blobs: squared; strokes: linearly, their width is set apart).
_LINEAR = ("scratch", "crack", "cut", "thread", "fold", "print")


def _scale_for_area(kind: str, area_px: float, width: float) -> float:
    if kind in _LINEAR:
        return area_px / (1.5 * max(width, 1.0))
    return float(np.sqrt(area_px / 0.8))


def _behind_plate(image: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """The background with the object removed (inpainted at 64 px): what a missing piece of an object uncovers."""
    h, w = fg.shape
    side = 64
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    hole = cv2.resize(cv2.dilate(fg.astype(np.uint8), np.ones((7, 7), np.uint8)) * 255, (side, side),
                      interpolation=cv2.INTER_NEAREST)
    plate = cv2.inpaint(small, hole, 3, cv2.INPAINT_TELEA)
    return cv2.resize(plate, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def _distance(mask: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]


def _object_body(img: np.ndarray, fg: np.ndarray) -> np.ndarray | None:
    """The object mask's pixels that look like the object rather than the background (a loose foreground mask
    takes in bits of the background; a chip painted on those would not be on the part's rim)."""
    inner = cv2.erode(fg.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    if inner.sum() < 50 or (~fg).sum() < 50:
        return None
    obj = np.median(img[inner], axis=0)
    bg = np.median(img[~fg], axis=0)
    objectness = np.linalg.norm(img - bg, axis=2) - np.linalg.norm(img - obj, axis=2)
    body = (fg & (objectness > 0)).astype(np.uint8)
    # Open with a tenth of the object's size: grooves and holes of the background that happen to share the
    # object's colour are thin or small next to the part's body, and fall away.
    k = max(3, int(0.1 * np.sqrt(fg.sum())) | 1)
    body = cv2.morphologyEx(body, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    if n <= 1:
        return None
    largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return largest if largest.sum() >= 0.3 * fg.sum() else None


# fill: texture leaves these their own look: a bend moves real pixels, a missing or broken piece shows the background.
OWN_LOOK_KINDS = frozenset({"bent", "missing", "broken"})
# Kinds that by nature reach past the object's outline (a chip, a bent lead): not clipped to the object mask.
PAST_OUTLINE_KINDS = EDGE_KINDS | {"bent"}


def paint(image: np.ndarray, spec: DefectSpec, fg: np.ndarray, rng: np.random.Generator,
          jitter: bool = True, texture_field: np.ndarray | None = None,
          behind: np.ndarray | None = None, surface: np.ndarray | None = None,
          frame_part: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``spec`` onto ``image`` (uint8 RGB). Returns the edit and the region it changed (bool).

    ``frame_part``: ``fg`` is the whole frame because the part fills it (not a texture): a chip or a missing piece
    comes off the frame's border, where the part's rim is, as real breaks of a tile's crop do (on a texture it may
    sit anywhere: a broken wire of a mesh).

    ``surface`` (float RGB, the image's size): what the defect's area shows instead of the kind's own rendering
    (``fill: texture``: a foreign texture blended in, DRAEM's anomaly look), then given the real defect's contrast
    like any kind. A bend (a warp of real pixels) and a missing or broken piece (the background shows) keep theirs.

    ``jitter`` lets size and contrast vary around the words' values, as any generator's output does; the judge
    then catches attempts that came out too faint or too large and the agent refines the words. A spec filled
    from the atlas (``spec.area`` / ``spec.delta_e`` set) varies by the real defects it copies instead.
    """
    img = image.astype(np.float32)
    lum = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lighting = cv2.GaussianBlur(lum, (0, 0), 6)
    texture = np.sqrt(np.maximum(cv2.GaussianBlur(lum * lum, (0, 0), 6) - lighting ** 2, 0))
    x0, y0, x1, y1 = object_box(fg)
    on_object = fg.mean() < 0.95
    s = spec
    if jitter:
        s = replace(spec, size=spec.size * float(rng.uniform(0.75, 1.5)))
        if spec.delta_e is None:
            s.intensity = float(np.clip(spec.intensity * rng.uniform(0.45, 1.15), 0.1, 1.0))
    # Never below what the mask tool keeps (it drops specks under 12 px): a pit of 9 px would teach nothing.
    area_px = max(24.0, s.area * float(fg.sum())) if s.area is not None else None
    width = None
    if area_px is not None and s.count > 1:  # each part must stay visible to the mask tool (>= 12 px)
        s = replace(s, count=int(max(1, min(s.count, area_px // 24))))
    if area_px is not None:
        if s.kind in _LINEAR:
            width = float(np.clip(np.sqrt(area_px / (s.elongation or 8.0)), 1.0, 5.0))
        scale = _scale_for_area(s.kind, area_px, width or 2.0)
    else:
        scale = max(4.0, s.size * min(x1 - x0, y1 - y0))
    scale = float(np.clip(scale, 2.0, 1.2 * max(x1 - x0, y1 - y0)))
    where = fg
    if s.kind == "bent":  # a bend shows where there is structure to displace (a lead, a wire), not on flat plastic
        grad = cv2.morphologyEx(lum, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        busy = cv2.dilate((grad > np.percentile(grad[fg], 75)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        where = fg & busy if (fg & busy).any() else fg
    if on_object:   # "head", "neck", "shaft", "tip" of an elongated part: only that stretch of it
        for place in (p for p in PART_STRETCHES if p in s.location):
            band = part_band(fg, place)
            if band is not None and (where & band).any():
                where = where & band
    chips = s.kind in EDGE_KINDS
    frame_rim = frame_part and not on_object and chips   # the frame's border is the part's rim
    if chips and s.edge is None:
        # A break on an object starts at its rim (on the side the words name), unless the words say the middle.
        s = replace(s, edge=(on_object or frame_rim) and "centre" not in s.location)
    location = s.location + (("edge",) if s.edge and "edge" not in s.location else ())
    rim = chips or "edge" in location
    dist = _distance(fg) if on_object or frame_rim else None
    if frame_rim and "edge" in location:
        where = fg & (dist <= max(3.0, 0.04 * min(fg.shape)))
    depth = s.depth * float(np.sqrt(fg.sum())) if s.depth is not None else None
    rim_strength = None
    material, material_dist = fg, dist   # where a chip can take material away
    if on_object and "edge" in location:  # the outline where the object meets a contrasting background
        body = _object_body(img, fg)
        if body is not None:  # the mask's rim where it is also the body's rim (else the body's rim)
            body_rim = cv2.dilate((body & (_distance(body) <= 2)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            both = where & (dist <= 3) & body_rim
            where = both if both.sum() >= 20 else (body & where if (body & where).any() else body)
            material, material_dist = body, _distance(body)
        rim_strength = cv2.morphologyEx(cv2.GaussianBlur(lum, (0, 0), 1.5), cv2.MORPH_GRADIENT,
                                        np.ones((5, 5), np.uint8))
    centre = choose_point(where, location, rng, margin=0.0 if rim else 0.3 * scale, aim=s.aim, depth=depth,
                          rim_strength=rim_strength)
    kind_seed = int(rng.integers(2 ** 31))
    background = _background_colour(image, fg)

    def render(scale: float) -> tuple[np.ndarray, np.ndarray]:
        canvas = Canvas(img, lighting, texture, material if chips else fg, centre, scale, s,
                        np.random.default_rng(kind_seed), background, behind=behind if on_object else None,
                        width=width, texture_field=texture_field, dist=material_dist if chips else dist,
                        frame_part=frame_rim)
        a, t = KIND_RENDERERS[s.kind](canvas)
        if on_object and s.kind not in PAST_OUTLINE_KINDS:
            a = a * fg
        return np.clip(a, 0, 1).astype(np.float32), t

    alpha, target = render(scale)
    if area_px is not None:  # the kinds' shapes vary: correct the scale twice towards the real area
        # the mask tool sees a soft kind only where its fade is still strong
        cover = 0.6 if s.kind in ("rough", "color", "stain") else 0.3
        tries = [(alpha, target, float((alpha >= cover).sum()))]
        for _ in range(2):
            got = tries[-1][2]
            if got <= 0 or 0.8 <= area_px / got <= 1.25:
                break
            power = 1.0 if s.kind in _LINEAR else 0.5
            scale = float(np.clip(scale * np.clip(area_px / got, 0.1, 10.0) ** power, 1.5,
                                  1.5 * max(x1 - x0, y1 - y0)))
            a, t = render(scale)
            tries.append((a, t, float((a >= cover).sum())))
        # keep the closest (a long stroke scaled up on a thin part can run off it: never keep an empty one)
        alpha, target, _ = min((tr for tr in tries if tr[2] > 0), default=tries[0],
                               key=lambda tr: abs(np.log(area_px / tr[2])))
    if surface is not None and s.kind not in OWN_LOOK_KINDS:
        target = surface
    if s.soft and alpha.max() > 0:  # the words ask for a gentler fade: widen the edge, keep the core's strength
        peak = alpha.max()
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.5, 0.06 * scale))
        alpha = np.clip(alpha / max(alpha.max(), 1e-6) * peak * 1.2, 0, 1)
    if s.kind == "bent":  # a warp's visibility is its displacement; a real bend's contrast may deepen its shading
        if s.delta_e is not None:
            target = _match_contrast(img, target, alpha, s.delta_e, None, limits=(1.0, 2.0))
    elif s.delta_e is not None and s.kind not in EDGE_KINDS:
        target = _match_contrast(img, target, alpha, s.delta_e, s.lighter)
    else:
        target = _ensure_contrast(img, target, alpha, lighting, centre, s.intensity)
    # Objects: keep the defect on the object (a dilated mask lets edge defects cross the outline a little),
    # except kinds that by nature reach past it.
    if on_object and s.kind not in PAST_OUTLINE_KINDS:
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


def _texture_files(folder: str | Path) -> list[Path]:
    """The texture folder's images, listed as the ``draem`` backend lists them (one rule for both), refused as
    this option's error."""
    try:
        return list_texture_files(folder)
    except BackendUnavailable as e:
        raise ValueError(f"option textures: {e}") from e


class ProceduralPainter:
    """IG backend ``procedural``: a prompt-conditioned defect painter (no weights, milliseconds per edit).

    Options: ``atlas`` — ``none`` (the words and the kinds' own defaults decide), ``default`` (the shipped defect
    atlas: what the words leave open is copied from a real defect of the kind, the painted category left out) or
    an atlas file (a plant's own: one of the category's real defects of the requested type is copied when it holds
    any); ``textures`` — a folder of texture images (e.g. DTD) whose patterns give rough and broken surfaces their
    grain; ``jitter`` — vary size and contrast around the words (no-atlas mode); ``fill`` — ``kind`` (each kind
    draws its own look) or ``texture`` (the defect's area shows a foreign texture of ``textures``, augmented and
    blended as DRAEM does, at the contrast the words or the real defect give: DRAEM's look in a real defect's
    place, size and shape); ``size_scale`` — with an atlas, the copied real defect's area times this (1: real sizes;
    4 draws defects as large as DRAEM's regions).
    """

    PROCEDURAL_BANK = 8   # fill: texture without a folder: procedural textures drawn once per image size

    def __init__(self, jitter: bool = True, atlas: str | None = "none", textures: str | None = None,
                 fill: str = "kind", size_scale: float = 1.0):
        if fill not in ("kind", "texture"):
            raise ValueError(f"option fill: expected kind or texture, got {fill!r}")
        self.size_scale = positive_option("size_scale", size_scale)
        self.fill = fill
        self.jitter = bool(jitter)
        self.priors = load_atlas(atlas)      # an Atlas, or None; priors.for_category(category) per painted category
        self.texture_files = _texture_files(textures) if textures else []
        self._textures: dict[Path, np.ndarray] = {}
        self._banks: dict[tuple[int, int], list[np.ndarray]] = {}
        self._fg_cache: tuple[int, str, np.ndarray] | None = None
        self._behind_cache: tuple[int, str, np.ndarray] | None = None

    def foreground(self, image: np.ndarray, category: str) -> np.ndarray:
        key = hash(image.tobytes())  # every byte: a subsampled key let two images that differ in a defect share a mask
        if self._fg_cache is None or self._fg_cache[:2] != (key, category):
            self._fg_cache = (key, category, foreground_mask(image, category))
        return self._fg_cache[2]

    def behind(self, image: np.ndarray, category: str, fg: np.ndarray) -> np.ndarray | None:
        if fg.mean() >= 0.95:
            return None
        key = hash(image.tobytes())
        if self._behind_cache is None or self._behind_cache[:2] != (key, category):
            self._behind_cache = (key, category, _behind_plate(image, fg))
        return self._behind_cache[2]

    def texture_field(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
        """A patch of one texture image (picked by the seed), as a zero-mean, unit-std luminance pattern."""
        if not self.texture_files:
            return None
        path = self.texture_files[int(rng.integers(len(self.texture_files)))]
        if path not in self._textures:
            raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if raw is None:
                raise ValueError(f"option textures: cannot read {path}")
            self._textures[path] = raw.astype(np.float32)
        tex = self._textures[path]
        h, w = shape
        if tex.shape[0] < h or tex.shape[1] < w:
            tex = cv2.resize(tex, (max(w, tex.shape[1]), max(h, tex.shape[0])), interpolation=cv2.INTER_LINEAR)
        y = int(rng.integers(tex.shape[0] - h + 1))
        x = int(rng.integers(tex.shape[1] - w + 1))
        patch = tex[y:y + h, x:x + w]
        patch = patch - cv2.GaussianBlur(patch, (0, 0), 8)  # keep the texture's pattern, not its lighting
        return patch / (patch.std() + 1e-6)

    reads_type = True   # ImageGen passes the requested type name: a plant's own defects of it are copied first

    def edit(self, image: np.ndarray, prompt: str, seed: int = 0, category: str = "",
             anomaly_type: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category, anomaly_type)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str, seed: int = 0, category: str = "",
                         anomaly_type: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(the edit, the region it changed). An image larger than ``WORK_SIDE`` is drawn on at that side and the
        change is added to the full image, upsampled: stroke widths, feathering and grain are in pixels, fitted
        at the atlas's 256 px, and the judge measures there too (at 1024 px a thread drawn at its own size was
        "too faint" and "too small" there, and a synth run took 2.4 times as long). Its own fine detail stays."""
        h, w = image.shape[:2]
        if max(h, w) <= WORK_SIDE:
            return self._draw(image, prompt, seed, category, anomaly_type)
        small = at_work_side(image)[0]
        drawn, region = self._draw(small, prompt, seed, category, anomaly_type)
        change = cv2.resize(drawn.astype(np.float32) - small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        out = np.clip(np.round(image.astype(np.float32) + change), 0, 255).astype(np.uint8)
        return out, cv2.resize(region.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5

    def _draw(self, image: np.ndarray, prompt: str, seed: int, category: str,
              anomaly_type: str) -> tuple[np.ndarray, np.ndarray]:
        spec = parse_prompt(prompt)
        fg = self.foreground(image, category)
        if self.priors is not None:  # its own stream: the same words and seed draw the same real defect
            atlas = self.priors.for_category(category)
            spec = apply_priors(spec, atlas, np.random.default_rng([seed, 17]), on_object=bool(fg.mean() < 0.95),
                                object_frac=float(fg.mean()), own=atlas.own_rows(category, anomaly_type),
                                size_scale=self.size_scale)
        field = self.texture_field(fg.shape, np.random.default_rng([seed, 23]))
        surface = (self.surface(image, np.random.default_rng([seed, 29]))
                   if self.fill == "texture" and spec.kind not in OWN_LOOK_KINDS else None)
        rng = np.random.default_rng(seed)
        return paint(image, spec, fg, rng, jitter=self.jitter, texture_field=field,
                     behind=self.behind(image, category, fg), surface=surface,
                     frame_part=spec.kind in EDGE_KINDS and part_fills_frame(image, category))

    def surface(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """DRAEM's anomaly look over the whole image: (1 - β) T + β I with T an augmented foreign texture and
        β ~ U(0, 0.8); grey for a grey image. Without a texture folder T is one of a fixed bank of procedural
        textures per image size (drawn once: a new one per edit would cost more than the rest of the edit)."""
        from ..baselines import foreign_texture, procedural_texture

        h, w = image.shape[:2]
        bank: list[np.ndarray] = []
        if not self.texture_files:
            if (h, w) not in self._banks:
                bank_rng = np.random.default_rng([h, w, 31])
                self._banks[(h, w)] = [procedural_texture(h, w, bank_rng) for _ in range(self.PROCEDURAL_BANK)]
            bank = self._banks[(h, w)]
        tex = keep_mode(image, foreign_texture(self.texture_files, h, w, rng, bank))
        beta = float(rng.uniform(0.0, 0.8))
        return (1.0 - beta) * tex.astype(np.float32) + beta * image.astype(np.float32)
