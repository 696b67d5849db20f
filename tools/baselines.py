"""Classic anomaly-synthesis baselines as image-generation backends: CutPaste, DRAEM and NSA.

They ignore the prompt (that is what makes them baselines: no words, no judge, no knowledge) and draw the usual
self-supervised "anomaly": a pasted patch or scar (CutPaste, Li et al. CVPR 2021), a Perlin-noise region filled with
a foreign texture (DRAEM, Zavrtanik et al. ICCV 2021), a patch of another normal image Poisson-blended into this one
(NSA, Schlüter et al. ECCV 2022). Each has the IG backend API ``edit(image, prompt, seed, category) -> uint8`` so it
runs in ``synth`` and in the evaluation harness like any other editor, and ``edit_with_region`` that also returns the
region the method itself changed (for inspection; the harness derives every method's mask with the same MG tool).

Grayscale inputs (three equal channels, e.g. MVTec grid) stay grayscale: a colour tint would be a give-away the real
defects never have.

Every method draws until its change is visible (:func:`visible`: at least 16 pixels and a quarter of its region
changed by more than the MG tool's floor of 6 CIELAB ΔE; up to ``tries`` draws from the same seeded generator,
else the draw with the most visible pixels): a region whose
pixels did not change teaches a detector noise, and the MG difference mask the harness trains on would be empty.
Parameters and their deviations from the official code are tabulated in docs/evaluation.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .base import BackendUnavailable, positive_option
from .imaging import TEXTURE_CATEGORIES, clean_mask, difference_map, foreground_mask, keep_mode

TEXTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------------------ shared helpers
def colour_jitter(patch: np.ndarray, rng: np.random.Generator, strength: float = 0.1) -> np.ndarray:
    """CutPaste's ColorJitter(brightness, contrast, saturation, hue = 0.1) on a uint8 RGB patch."""
    x = patch.astype(np.float32)
    x = x * rng.uniform(1 - strength, 1 + strength)                                  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean                  # contrast
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - gray[..., None]) * rng.uniform(1 - strength, 1 + strength) + gray[..., None]  # saturation
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(round(rng.uniform(-strength, strength) * 180))) % 180  # hue
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def list_texture_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendUnavailable(f"texture folder not found: {folder} (leave textures unset for procedural textures)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXTURE_SUFFIXES)
    if not files:
        raise BackendUnavailable(f"no images in texture folder {folder} (leave textures unset for procedural textures)")
    return files


def read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB resized to (w, h)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BackendUnavailable(f"cannot read image {path}")
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, interpolation=cv2.INTER_AREA)


VISIBLE_DELTA_E = 6.0   # the difference MG tool's floor (tools/imaging.difference_mask)


def visible_pixels(image: np.ndarray, edited: np.ndarray, region: np.ndarray,
                   floor: float = VISIBLE_DELTA_E) -> tuple[int, float]:
    """(pixels of ``region`` changed by more than ``floor`` CIELAB ΔE, their share of the region)."""
    if not region.any():
        return 0, 0.0
    n = int((difference_map(image, edited)[region] > floor).sum())
    return n, n / int(region.sum())


def visible(image: np.ndarray, edited: np.ndarray, region: np.ndarray, floor: float = VISIBLE_DELTA_E,
            min_area: int = 16, min_share: float = 0.25) -> bool:
    """At least ``min_area`` pixels and ``min_share`` of the region changed visibly (what the MG tool will see)."""
    n, share = visible_pixels(image, edited, region, floor)
    return n >= min_area and share >= min_share


def first_visible(draw, image: np.ndarray, rng: np.random.Generator, tries: int) -> tuple[np.ndarray, np.ndarray]:
    """``draw(rng) -> (edited, region)`` until the change is :func:`visible`; else the draw with the most visible
    pixels of ``tries``."""
    best, best_score = None, -1
    for _ in range(max(1, tries)):
        edited, region = draw(rng)
        if visible(image, edited, region):
            return edited, region
        score = visible_pixels(image, edited, region)[0]
        if score > best_score:
            best, best_score = (edited, region), score
    assert best is not None
    return best


def on_object(category: str) -> bool:
    """Objects get placement on the foreground; textures (the whole image is the object) do not."""
    return category.lower() not in TEXTURE_CATEGORIES


def _centre_on(fg: np.ndarray, ph: int, pw: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ph x pw box inside the image whose centre lies on ``fg`` (anywhere when none can)."""
    h, w = fg.shape
    valid = fg[ph // 2:h - ph + ph // 2 + 1, pw // 2:w - pw + pw // 2 + 1]
    ys, xs = np.nonzero(valid)
    if len(ys) == 0:
        return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


# ------------------------------------------------------------------------------------------ CutPaste
class CutPaste:
    """IG backend ``cutpaste``: cut a patch (or a thin "scar") of the image, jitter its colour, paste it elsewhere.

    ``variant``: ``patch`` (area 2-15 % of the image, aspect ratio from (0.3, 1) or (1, 3.3)), ``scar`` (2-16 px
    wide, 10-25 px long, rotated ±45°) or ``both`` (one of the two per seed, the paper's CutPaste-Union), as in the
    paper (sizes given for 256 px; scaled with the image). Deviation: on objects the paste lands centred on the
    object (a background patch pasted on background is no anomaly), and a draw is kept only when visible.
    """

    def __init__(self, variant: str = "both", tries: int = 10):
        if variant not in ("patch", "scar", "both"):
            raise ValueError(f"cutpaste variant must be patch, scar or both, got {variant!r}")
        self.variant = variant
        self.tries = int(tries)

    def edit(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str = "", seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        variant = self.variant if self.variant != "both" else str(rng.choice(["patch", "scar"]))
        fg = foreground_mask(image, category) if on_object(category) else np.ones(image.shape[:2], bool)
        draw = (lambda r: self._scar(image, r, fg)) if variant == "scar" else (lambda r: self._patch(image, r, fg))
        return first_visible(draw, image, rng, self.tries)

    def _patch(self, image: np.ndarray, rng: np.random.Generator, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        area = rng.uniform(0.02, 0.15) * h * w
        aspect = rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 3.3)])
        ph = int(np.clip(round(np.sqrt(area * aspect)), 4, h - 1))
        pw = int(np.clip(round(np.sqrt(area / aspect)), 4, w - 1))
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch = colour_jitter(image[y0:y0 + ph, x0:x0 + pw], rng)
        y1, x1 = _centre_on(fg, ph, pw, rng)
        out = image.copy()
        out[y1:y1 + ph, x1:x1 + pw] = patch
        region = np.zeros((h, w), bool)
        region[y1:y1 + ph, x1:x1 + pw] = True
        return keep_mode(image, out), region

    def _scar(self, image: np.ndarray, rng: np.random.Generator, fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        s = min(h, w) / 256.0
        sw = max(2, int(round(rng.uniform(2, 16) * s)))
        sh = max(4, int(round(rng.uniform(10, 25) * s)))
        y0, x0 = int(rng.integers(0, h - sh + 1)), int(rng.integers(0, w - sw + 1))
        patch = colour_jitter(image[y0:y0 + sh, x0:x0 + sw], rng)
        # Rotate the scar (and its opacity) about its centre inside a square canvas that holds any angle.
        side = int(np.ceil(np.hypot(sh, sw))) + 2
        canvas = np.zeros((side, side, 3), np.uint8)
        alpha = np.zeros((side, side), np.uint8)
        oy, ox = (side - sh) // 2, (side - sw) // 2
        canvas[oy:oy + sh, ox:ox + sw] = patch
        alpha[oy:oy + sh, ox:ox + sw] = 255
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-45, 45)), 1.0)
        canvas = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(alpha, rot, (side, side), flags=cv2.INTER_NEAREST) > 127
        side_h, side_w = min(side, h), min(side, w)
        canvas, alpha = canvas[:side_h, :side_w], alpha[:side_h, :side_w]
        y1, x1 = _centre_on(fg, side_h, side_w, rng)
        out = image.copy()
        window = out[y1:y1 + side_h, x1:x1 + side_w]
        window[alpha] = canvas[alpha]
        region = np.zeros((h, w), bool)
        region[y1:y1 + side_h, x1:x1 + side_w] = alpha
        return keep_mode(image, out), region


# ------------------------------------------------------------------------------------------ DRAEM
def perlin_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise in about [-1, 1] on a ``res`` lattice; shape must be a multiple of res (DRAEM's)."""
    def fade(t: np.ndarray) -> np.ndarray:
        return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3

    dy, dx = shape[0] // res[0], shape[1] // res[1]
    grid = np.mgrid[0:res[0]:res[0] / shape[0], 0:res[1]:res[1] / shape[1]].transpose(1, 2, 0) % 1
    angles = 2 * np.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    def tile(sl_y: slice, sl_x: slice) -> np.ndarray:
        return np.repeat(np.repeat(gradients[sl_y, sl_x], dy, axis=0), dx, axis=1)

    def dot(grad: np.ndarray, sy: float, sx: float) -> np.ndarray:
        return (np.stack([grid[..., 0] + sy, grid[..., 1] + sx], axis=-1) * grad[:shape[0], :shape[1]]).sum(-1)

    n00 = dot(tile(slice(0, -1), slice(0, -1)), 0, 0)
    n10 = dot(tile(slice(1, None), slice(0, -1)), -1, 0)
    n01 = dot(tile(slice(0, -1), slice(1, None)), 0, -1)
    n11 = dot(tile(slice(1, None), slice(1, None)), -1, -1)
    t = fade(grid[:shape[0], :shape[1]])
    n0 = n00 * (1 - t[..., 0]) + t[..., 0] * n10
    n1 = n01 * (1 - t[..., 0]) + t[..., 0] * n11
    return np.sqrt(2) * ((1 - t[..., 1]) * n0 + t[..., 1] * n1)


def _lattice_side(h: int, w: int) -> int:
    """The power-of-two square Perlin noise is drawn on (any lattice 2^k divides it), cropped to h x w afterwards."""
    return 1 << int(np.ceil(np.log2(max(h, w, 64))))


def _perlin_field(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One of DRAEM's noise fields: Perlin noise at scale 2^[0,6) per axis, rotated ±90° (zero fill, as imgaug's
    Affine), h x w."""
    side = _lattice_side(h, w)
    sy, sx = 2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6))
    noise = perlin_2d((side, side), (sy, sx), rng)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-90, 90)), 1.0)
    noise = cv2.warpAffine(noise.astype(np.float32), rot, (side, side), borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    return noise[:h, :w]


def perlin_mask(h: int, w: int, rng: np.random.Generator, threshold: float = 0.5,
                within: np.ndarray | None = None, min_fraction: float = 0.002) -> np.ndarray:
    """DRAEM's anomaly region: a :func:`_perlin_field` thresholded at 0.5. ``within`` (draem-fg): the region is
    intersected with it, as GLASS does with the object's foreground. Redrawn (at most 20 times) until it covers
    ``min_fraction`` of the image (of ``within``): DRAEM keeps an empty draw as a normal sample, here every sample
    must be an anomaly."""
    need = min_fraction * (within.sum() if within is not None else h * w)
    for _ in range(20):
        mask = _perlin_field(h, w, rng) > threshold
        if within is not None:
            mask &= within
        if mask.sum() > need:
            return mask
    return mask


def perlin_region(h: int, w: int, rng: np.random.Generator, pixels: int,
                  within: np.ndarray | None = None) -> np.ndarray:
    """DRAEM's region shape at a given size: the ``pixels`` highest points of one :func:`_perlin_field` (inside
    ``within``), i.e. the field thresholded at the level that leaves exactly that area."""
    noise = _perlin_field(h, w, rng)
    allowed = np.ones((h, w), bool) if within is None else within.astype(bool)
    idx = np.flatnonzero(allowed)
    n = int(np.clip(pixels, 1, idx.size))
    top = idx[np.argpartition(-noise.ravel()[idx], n - 1)[:n]]
    mask = np.zeros(h * w, bool)
    mask[top] = True
    return mask.reshape(h, w)


def procedural_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A foreign texture when no texture folder is given: two octaves of coloured Perlin noise plus stripes."""
    side = _lattice_side(h, w)
    channels = []
    for _ in range(3):
        n = perlin_2d((side, side), (4, 4), rng) + 0.5 * perlin_2d((side, side), (16, 16), rng)
        channels.append(n[:h, :w])
    tex = np.stack(channels, axis=-1)
    yy, xx = np.mgrid[0:h, 0:w]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    stripes = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))[..., None] * rng.uniform(0, 0.6)
    tex = tex + stripes
    tex = (tex - tex.min()) / max(float(tex.max() - tex.min()), 1e-6)
    base = rng.uniform(0, 255, 3)
    return np.clip(base * 0.5 + tex * rng.uniform(80, 255), 0, 255).astype(np.uint8)


def _augment_texture(tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three of DRAEM's ten imgaug operations (without repetition), re-done in OpenCV/NumPy/PIL with imgaug's
    default ranges: GammaContrast((0.5, 2), per channel), MultiplyAndAddToBrightness((0.8, 1.2), (-30, 30)),
    EnhanceSharpness (factor 0-2), AddToHueAndSaturation((-50, 50), per channel), Solarize(p 0.5, threshold
    32-128), Posterize (1-8 bits), Invert, Autocontrast (cutoff 0-20 %), Equalize (per channel), Affine(±45°)."""
    from PIL import Image, ImageEnhance

    def gamma(x):
        g = rng.uniform(0.5, 2.0, size=3)
        return np.clip(255.0 * (x / 255.0) ** g, 0, 255).astype(np.uint8)

    def brightness(x):
        return np.clip(x.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255).astype(np.uint8)

    def sharpen(x):
        return np.asarray(ImageEnhance.Sharpness(Image.fromarray(x)).enhance(float(rng.uniform(0.0, 2.0))))

    def hue_saturation(x):
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(round(rng.uniform(-50, 50) * 180 / 255))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-50, 51)), 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)

    def solarize(x):
        if rng.random() >= 0.5:
            return x
        t = rng.uniform(32, 128)
        return np.where(x >= t, 255 - x, x).astype(np.uint8)

    def posterize(x):
        bits = int(rng.integers(1, 9))
        return (x >> (8 - bits) << (8 - bits)).astype(np.uint8)

    def invert(x):
        return (255 - x).astype(np.uint8)

    def autocontrast(x):
        cut = rng.uniform(0, 20)
        out = np.empty_like(x)
        for c in range(3):
            lo, hi = np.percentile(x[..., c], cut), np.percentile(x[..., c], 100 - cut)
            out[..., c] = np.clip((x[..., c].astype(np.float32) - lo) * 255.0 / max(hi - lo, 1.0), 0, 255)
        return out

    def equalize(x):
        return np.stack([cv2.equalizeHist(np.ascontiguousarray(x[..., c])) for c in range(3)], axis=-1)

    def rotate(x):
        h, w = x.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-45, 45)), 1.0)
        return cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    ops = [gamma, brightness, sharpen, hue_saturation, solarize, posterize, invert, autocontrast, equalize, rotate]
    for i in rng.choice(len(ops), size=3, replace=False):
        tex = ops[int(i)](tex)
    return tex


def foreign_texture(files: Sequence[Path], h: int, w: int, rng: np.random.Generator,
                    bank: Sequence[np.ndarray] = ()) -> np.ndarray:
    """DRAEM's anomaly source: one texture image of ``files`` picked by ``rng`` (else one of ``bank``, else a new
    procedural one), resized to the image and put through three of its augmentations; uint8 RGB. The painter's
    ``fill: texture`` draws its defects' surface from the same source."""
    if files:
        tex = read_rgb(files[int(rng.integers(len(files)))], (w, h))
    elif bank:
        tex = bank[int(rng.integers(len(bank)))].copy()
    else:
        tex = procedural_texture(h, w, rng)
    return _augment_texture(tex, rng)


class DraemTexture:
    """IG backend ``draem``: a Perlin-noise region of the image replaced by an augmented foreign texture.

    ``textures``: a folder of texture images (e.g. the DTD); when unset, a procedural texture is drawn instead.
    Blend as in DRAEM: I' = (1 - M) I + (1 - β) M T + β M I with β ~ U(0, 0.8). ``foreground`` (the
    ``draem-fg`` method): the Perlin region is restricted to the object (:func:`foreground_mask`; textures are
    all object), as GLASS and later work do, so the anomaly lands where real defects do. ``atlas`` (``none``,
    ``default`` or a file, as the painter's option): the region keeps DRAEM's Perlin shape but takes a real
    defect's size, drawn as the painter draws it for the same prompt, type and seed (:func:`painter.priors.
    apply_priors`: a real defect of the type's kind, the painted category left out of a benchmark atlas; a size word
    picks its band of the real sizes), and an intensity word narrows β ("pronounced": β in the lowest fifth of its
    range, the texture nearly opaque; "faint": the highest). Without words that is DRAEM at real defect sizes; with
    a judge's refinements ("make it large", "more pronounced") it is an editor the closed loop can steer.
    ``size_scale`` (with ``atlas``): that real size times this, as the painter's option.
    """

    def __init__(self, textures: str | None = None, max_beta: float = 0.8, foreground: bool = False,
                 tries: int = 10, atlas: str | None = "none", size_scale: float = 1.0):
        from .painter.priors import load_atlas

        self.textures = list_texture_files(textures) if textures else []
        self.max_beta = float(max_beta)
        self.foreground = bool(foreground)
        self.tries = int(tries)
        self.priors = load_atlas(atlas)
        self.size_scale = positive_option("size_scale", size_scale)
        self.reads_type = self.priors is not None   # ImageGen passes the type name: its kind's real sizes

    def edit(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "",
             anomaly_type: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category, anomaly_type)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "",
                         anomaly_type: str = "") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        within = foreground_mask(image, category) if self.foreground else None
        pixels, beta = None, (0.0, self.max_beta)
        if self.priors is not None:
            from .painter import parse_prompt
            from .painter.priors import INTENSITY_BANDS, apply_priors, band_of

            fg = within if within is not None else foreground_mask(image, category)
            spec = apply_priors(parse_prompt(prompt or anomaly_type), self.priors.for_category(category),
                                np.random.default_rng([seed, 17]), on_object=bool(fg.mean() < 0.95),
                                object_frac=float(fg.mean()), size_scale=self.size_scale)
            if spec.area is not None:
                pixels = max(16, int(round(spec.area * fg.sum())))
            lo, hi = band_of(spec.intensity_word, INTENSITY_BANDS) or (0.0, 1.0)
            beta = (self.max_beta * (1 - hi), self.max_beta * (1 - lo))
        return first_visible(lambda r: self._draw(image, r, within, pixels, beta), image, rng, self.tries)

    def _draw(self, image: np.ndarray, rng: np.random.Generator, within: np.ndarray | None,
              pixels: int | None, beta: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        tex = foreign_texture(self.textures, h, w, rng)
        mask = perlin_mask(h, w, rng, within=within) if pixels is None else perlin_region(h, w, rng, pixels, within)
        beta = rng.uniform(*beta)
        m = mask[..., None].astype(np.float32)
        out = image * (1 - m) + (1 - beta) * tex * m + beta * image * m
        return keep_mode(image, np.clip(out + 0.5, 0, 255).astype(np.uint8)), mask


# ------------------------------------------------------------------------------------------ NSA
class NaturalSynthetic:
    """IG backend ``nsa``: Natural Synthetic Anomalies (Schlüter et al., ECCV 2022; hmsch/natural-synthetic-anomalies
    ``patch_ex``) — patches of ANOTHER normal image, resized and moved, Poisson-blended (``cv2.seamlessClone``) into
    this one, so their edges carry no seam a detector could learn.

    As the official MVTec settings: half-width per axis = (0.03 + Gamma(2, 0.05)) x side, clipped to [0.03, 0.4];
    resize factor clip(N(1, 0.5), 0.7, 1.3) (textures 0.5-2); NORMAL_CLONE (``mixed``: MIXED_CLONE); one patch,
    then up to ``num_patches - 1`` more on coin flips (3 on objects, 4 on textures). On objects the source patch
    must be at least half object, its object pixels must overlap the destination's object by a quarter, and only
    object pixels (of source or destination) are labelled — the official ``skip_background`` with
    :func:`foreground_mask` in place of its per-class brightness thresholds. Label: the official binary one, mean
    absolute change > ``tol`` grey levels inside the labelled pixels, cleaned like the MG tool's masks.

    ``sources``: a folder or a list of normal images to take patches from (e.g. the category's train/good); the
    input image itself is skipped when it is among them. Without sources, patches come from the input image.
    """

    def __init__(self, sources: str | Sequence[str] | None = None, mixed: bool = False, tol: float = 1.0,
                 num_patches: int | None = None, tries: int = 10):
        self.sources: list[Path] = []
        if isinstance(sources, (str, Path)):
            folder = Path(sources)
            if not folder.is_dir():
                raise BackendUnavailable(f"nsa: sources folder not found: {folder}")
            self.sources = sorted(p for p in folder.iterdir() if p.suffix.lower() in TEXTURE_SUFFIXES)
            if not self.sources:
                raise BackendUnavailable(f"nsa: no images in sources folder {folder}")
        elif sources:
            self.sources = [Path(p) for p in sources]
        self.mixed = bool(mixed)
        self.tol = float(tol)
        self.num_patches = num_patches
        self.tries = int(tries)
        self._cache: dict[tuple[Path, int, int], np.ndarray] = {}

    def _source(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        order = rng.permutation(len(self.sources)) if self.sources else []
        for i in order[:4]:
            path = self.sources[int(i)]
            key = (path, w, h)
            if key not in self._cache:
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[key] = read_rgb(path, (w, h))
            src = self._cache[key]
            if not np.array_equal(src, image):
                return src
        return image

    def edit(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str = "", seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        obj = on_object(category)
        dest_fg = foreground_mask(image, category) if obj else None
        n_patches = self.num_patches or (3 if obj else 4)

        def draw(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            out, label = image.copy(), np.zeros(image.shape[:2], bool)
            for k in range(n_patches):
                if k > 0 and r.integers(2) == 0:
                    continue
                source = self._source(image, r)
                src_fg = foreground_mask(source, category) if obj else None
                out, changed = self._patch_once(out, source, dest_fg, src_fg, r, obj)
                label |= changed
            return keep_mode(image, out), label

        return first_visible(draw, image, rng, self.tries)

    def _patch_once(self, dest: np.ndarray, source: np.ndarray, dest_fg: np.ndarray | None,
                    src_fg: np.ndarray | None, rng: np.random.Generator, obj: bool) -> tuple[np.ndarray, np.ndarray]:
        h, w = dest.shape[:2]
        lo, hi = 0.03, 0.4
        hh = int(np.clip((0.03 + rng.gamma(2, 0.05)) * h, lo * h, hi * h))
        hw = int(np.clip((0.03 + rng.gamma(2, 0.05)) * w, lo * w, hi * w))
        nothing = (dest, np.zeros((h, w), bool))
        # Source box: centre anywhere at least the minimal half-width from the border; on objects >= 50 % object.
        # Deviation: the official code has per-class size bounds (screw: half-width <= 0.12); here a box that finds
        # no such place in 50 draws shrinks by 0.8 (down to the lower bound), which adapts to any object's size.
        found = False
        while not found:
            for _ in range(50):
                cy = int(rng.integers(int(lo * h), h - int(lo * h)))
                cx = int(rng.integers(int(lo * w), w - int(lo * w)))
                y0, y1, x0, x1 = max(0, cy - hh), min(h, cy + hh), max(0, cx - hw), min(w, cx + hw)
                if src_fg is None or src_fg[y0:y1, x0:x1].mean() > 0.5:
                    found = True
                    break
            if not found:
                if hh <= lo * h and hw <= lo * w:
                    return nothing
                hh, hw = max(int(lo * h), int(0.8 * hh)), max(int(lo * w), int(0.8 * hw))
        patch = source[y0:y1, x0:x1]
        patch_obj = src_fg[y0:y1, x0:x1] if src_fg is not None else np.ones(patch.shape[:2], bool)
        ph, pw = patch.shape[:2]
        low, high = (0.7, 1.3) if obj else (0.5, 2.0)
        scale = float(np.clip(rng.normal(1, 0.5), low, high))
        nh = int(np.clip(scale * ph, 2 * lo * h, 2 * hi * h))
        nw = int(np.clip(nh / ph * pw, 2 * lo * w, 2 * hi * w))
        nh = int(np.clip(nw / pw * ph, 2 * lo * h, 2 * hi * h))
        nh, nw = min(nh, h - 4), min(nw, w - 4)
        patch = cv2.resize(patch, (nw, nh), interpolation=cv2.INTER_LINEAR)
        patch_obj = cv2.resize(patch_obj.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        # Destination: the whole patch plus a 1 px border inside the frame; on objects the source's object pixels
        # must overlap the destination's object by at least a quarter.
        for _ in range(200):
            cy = int(rng.integers(nh // 2 + 1, h - (nh + 1) // 2 - 1))
            cx = int(rng.integers(nw // 2 + 1, w - (nw + 1) // 2 - 1))
            top, left = cy - nh // 2, cx - nw // 2
            window = dest_fg[top:top + nh, left:left + nw] if dest_fg is not None else None
            if window is None or (patch_obj.sum() and (patch_obj & window).sum() / patch_obj.sum() > 0.25):
                break
        else:
            return nothing
        # Labelled pixels: object of source or destination. Blended: those plus where both are background, i.e. the
        # whole box (the official code adds the common background "to avoid artefacts").
        labelled = patch_obj | window if window is not None else np.ones((nh, nw), bool)
        blend_mask = np.full((nh, nw), 255, np.uint8)
        blend_mask[0], blend_mask[-1], blend_mask[:, 0], blend_mask[:, -1] = 0, 0, 0, 0
        if labelled[1:-1, 1:-1].sum() < 50:       # too little object to make an anomaly of
            return nothing
        flag = cv2.MIXED_CLONE if self.mixed else cv2.NORMAL_CLONE
        centre = (left + nw // 2, top + nh // 2)
        try:
            out = cv2.seamlessClone(np.ascontiguousarray(patch[..., ::-1]), np.ascontiguousarray(dest[..., ::-1]),
                                    blend_mask, centre, flag)[..., ::-1]
        except cv2.error:
            return nothing
        out = np.ascontiguousarray(out)
        placed = np.zeros((h, w), bool)
        placed[top:top + nh, left:left + nw] = labelled & (blend_mask > 0)
        change = np.abs(out.astype(np.float32) - dest.astype(np.float32)).mean(axis=2)
        # Deviation: the official 5 px median filter erases thin changes (grid lines at 256 px leave a few pixels);
        # the MG tool's cleaning (close gaps, fill holes, drop specks) keeps them.
        return out, clean_mask((change > self.tol) & placed)
