"""Classic anomaly-synthesis baselines as image-generation backends: CutPaste, DRAEM and NSA.

They ignore the prompt (that is what makes them baselines: no words, no judge, no knowledge) and draw the usual
self-supervised "anomaly": a pasted patch or scar (CutPaste, Li et al. CVPR 2021), a Perlin-noise region filled with
a foreign texture (DRAEM, Zavrtanik et al. ICCV 2021), a patch of another normal image Poisson-blended into this one
(NSA, Schlüter et al. ECCV 2022). Each has the IG backend API ``edit(image, prompt, seed, category) -> uint8`` so it
runs in ``synth`` and in the evaluation harness like any other editor, and ``edit_with_region`` that also returns the
region the method itself changed (for inspection; the harness derives every method's mask with the same MG tool).

Grayscale inputs (three equal channels, e.g. MVTec grid) stay grayscale: a colour tint would be a give-away the real
defects never have.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .base import BackendUnavailable
from .imaging import clean_mask, foreground_mask, keep_mode

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


# ------------------------------------------------------------------------------------------ CutPaste
class CutPaste:
    """IG backend ``cutpaste``: cut a patch (or a thin "scar") of the image, jitter its colour, paste it elsewhere.

    ``variant``: ``patch`` (area 2-15 % of the image, aspect ratio 0.3-3.3), ``scar`` (2-16 px wide, 10-25 px long,
    rotated ±45°) or ``both`` (one of the two per seed), as in the paper (sizes given for 256 px; scaled with the image).
    """

    def __init__(self, variant: str = "both"):
        if variant not in ("patch", "scar", "both"):
            raise ValueError(f"cutpaste variant must be patch, scar or both, got {variant!r}")
        self.variant = variant

    def edit(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str = "", seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        variant = self.variant if self.variant != "both" else str(rng.choice(["patch", "scar"]))
        return self._scar(image, rng) if variant == "scar" else self._patch(image, rng)

    def _patch(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        area = rng.uniform(0.02, 0.15) * h * w
        aspect = rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 3.3)])
        ph = int(np.clip(round(np.sqrt(area * aspect)), 4, h - 1))
        pw = int(np.clip(round(np.sqrt(area / aspect)), 4, w - 1))
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        patch = colour_jitter(image[y0:y0 + ph, x0:x0 + pw], rng)
        y1, x1 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        out = image.copy()
        out[y1:y1 + ph, x1:x1 + pw] = patch
        region = np.zeros((h, w), bool)
        region[y1:y1 + ph, x1:x1 + pw] = True
        return keep_mode(image, out), region

    def _scar(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
        y1, x1 = int(rng.integers(0, h - side_h + 1)), int(rng.integers(0, w - side_w + 1))
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


def perlin_mask(h: int, w: int, rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    """DRAEM's anomaly region: Perlin noise at scale 2^[0,6) per axis, rotated ±90°, thresholded at 0.5."""
    side = 1 << int(np.ceil(np.log2(max(h, w, 64))))  # lattice-friendly square, cropped afterwards
    for _ in range(20):
        sy, sx = 2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6))
        noise = perlin_2d((side, side), (sy, sx), rng)
        rot = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-90, 90)), 1.0)
        noise = cv2.warpAffine(noise.astype(np.float32), rot, (side, side), borderMode=cv2.BORDER_REFLECT)
        mask = noise[:h, :w] > threshold
        if mask.mean() > 0.002:
            return mask
    return mask


def procedural_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A foreign texture when no texture folder is given: two octaves of coloured Perlin noise plus stripes."""
    side = 1 << int(np.ceil(np.log2(max(h, w, 64))))
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
    """Three of DRAEM's imgaug operations, re-done in OpenCV/NumPy (no imgaug dependency)."""
    def gamma(x):
        g = rng.uniform(0.5, 2.0)
        return np.clip(255.0 * (x / 255.0) ** g, 0, 255).astype(np.uint8)

    def brightness(x):
        return np.clip(x.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30), 0, 255).astype(np.uint8)

    def sharpen(x):
        k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
        a = rng.uniform(0, 1)
        return np.clip((1 - a) * x + a * cv2.filter2D(x, -1, k), 0, 255).astype(np.uint8)

    def hue(x):
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-50, 51))) % 180
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)

    def solarize(x):
        return np.where(x >= 128, 255 - x, x).astype(np.uint8)

    def posterize(x):
        bits = int(rng.integers(4, 9))
        return (x >> (8 - bits) << (8 - bits)).astype(np.uint8)

    def invert(x):
        return (255 - x).astype(np.uint8)

    def autocontrast(x):
        lo, hi = np.percentile(x, 1), np.percentile(x, 99)
        return np.clip((x.astype(np.float32) - lo) * 255.0 / max(hi - lo, 1.0), 0, 255).astype(np.uint8)

    def equalize(x):
        ycc = cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb)
        ycc[..., 0] = cv2.equalizeHist(ycc[..., 0])
        return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)

    def rotate(x):
        h, w = x.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-45, 45)), 1.0)
        return cv2.warpAffine(x, m, (w, h), borderMode=cv2.BORDER_REFLECT)

    ops = [gamma, brightness, sharpen, hue, solarize, posterize, invert, autocontrast, equalize, rotate]
    for i in rng.choice(len(ops), size=3, replace=False):
        tex = ops[int(i)](tex)
    return tex


class DraemTexture:
    """IG backend ``draem``: a Perlin-noise region of the image replaced by an augmented foreign texture.

    ``textures``: a folder of texture images (e.g. the DTD); when unset, a procedural texture is drawn instead.
    Blend as in DRAEM: I' = (1 - M) I + (1 - β) M T + β M I with β ~ U(0, 0.8).
    """

    def __init__(self, textures: str | None = None, max_beta: float = 0.8):
        self.textures = list_texture_files(textures) if textures else []
        self.max_beta = float(max_beta)

    def edit(self, image: np.ndarray, prompt: str = "", seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]

    def edit_with_region(self, image: np.ndarray, prompt: str = "", seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        h, w = image.shape[:2]
        if self.textures:
            tex = read_rgb(self.textures[int(rng.integers(len(self.textures)))], (w, h))
        else:
            tex = procedural_texture(h, w, rng)
        tex = _augment_texture(tex, rng)
        mask = perlin_mask(h, w, rng)
        beta = rng.uniform(0, self.max_beta)
        m = mask[..., None].astype(np.float32)
        out = image * (1 - m) + (1 - beta) * tex * m + beta * image * m
        return keep_mode(image, np.clip(out + 0.5, 0, 255).astype(np.uint8)), mask


# ------------------------------------------------------------------------------------------ NSA
class NaturalSynthetic:
    """IG backend ``nsa``: Natural Synthetic Anomalies — a patch of ANOTHER normal image, resized and moved,
    Poisson-blended (``cv2.seamlessClone``) into this one, so its edges carry no seam a detector could learn.

    ``sources``: a folder or a list of normal images to take patches from (e.g. the category's train/good); the
    input image itself is skipped when it is among them. Without sources, patches come from the input image.
    On objects (not texture categories) the patch is taken from and placed on the object (foreground), as NSA does.
    The method's own mask is where the blend changed the image by more than ``mask_threshold`` grey levels inside
    the patch; up to 10 draws are tried until the change covers at least ``min_area`` pixels.
    """

    def __init__(self, sources: str | Sequence[str] | None = None, mixed: bool = False,
                 mask_threshold: float = 12.0, min_area: int = 40):
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
        self.mask_threshold = float(mask_threshold)
        self.min_area = int(min_area)
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
        h, w = image.shape[:2]
        fg = foreground_mask(image, category)
        best: tuple[np.ndarray, np.ndarray] | None = None
        for _ in range(10):
            source = self._source(image, rng)
            out, region = self._blend_once(image, source, fg, rng)
            if best is None or region.sum() > best[1].sum():
                best = (out, region)
            if region.sum() >= self.min_area:
                break
        assert best is not None
        return keep_mode(image, best[0]), best[1]

    def _blend_once(self, image: np.ndarray, source: np.ndarray, fg: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        pw = int(round(rng.uniform(0.1, 0.4) * w))
        ph = int(round(np.clip(pw * rng.uniform(0.5, 2.0), 0.1 * h, 0.4 * h)))
        src_fg = foreground_mask(source, "") if fg.mean() < 0.999 else np.ones((h, w), bool)
        y0, x0 = self._inside(src_fg, ph, pw, rng)
        patch = source[y0:y0 + ph, x0:x0 + pw]
        scale = rng.uniform(0.7, 1.3)
        nh, nw = max(6, min(h - 4, int(round(ph * scale)))), max(6, min(w - 4, int(round(pw * scale))))
        patch = cv2.resize(patch, (nw, nh), interpolation=cv2.INTER_LINEAR)
        cy, cx = self._centre_inside(fg, nh, nw, rng)
        blend_mask = np.full((nh, nw), 255, np.uint8)
        flag = cv2.MIXED_CLONE if self.mixed else cv2.NORMAL_CLONE
        out = cv2.seamlessClone(np.ascontiguousarray(patch[..., ::-1]), np.ascontiguousarray(image[..., ::-1]),
                                blend_mask, (cx, cy), flag)[..., ::-1]
        out = np.ascontiguousarray(out)
        box = np.zeros((h, w), bool)
        top, left = cy - nh // 2, cx - nw // 2
        box[max(0, top):top + nh, max(0, left):left + nw] = True
        diff = np.abs(out.astype(np.int16) - image.astype(np.int16)).max(axis=2)
        region = clean_mask((diff > self.mask_threshold) & box)
        return out, region

    @staticmethod
    def _inside(fg: np.ndarray, ph: int, pw: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of a ph x pw box whose centre lies on the foreground."""
        h, w = fg.shape
        valid = fg[ph // 2:h - ph + ph // 2 + 1, pw // 2:w - pw + pw // 2 + 1]
        ys, xs = np.nonzero(valid)
        if len(ys) == 0:
            return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        i = int(rng.integers(len(ys)))
        return int(ys[i]), int(xs[i])

    @staticmethod
    def _centre_inside(fg: np.ndarray, nh: int, nw: int, rng: np.random.Generator) -> tuple[int, int]:
        """Centre (y, x) for seamlessClone: the whole patch plus a 1 px border inside the frame, centre on the object."""
        h, w = fg.shape
        ylo, yhi = nh // 2 + 1, h - (nh - nh // 2) - 1
        xlo, xhi = nw // 2 + 1, w - (nw - nw // 2) - 1
        valid = fg[ylo:yhi + 1, xlo:xhi + 1]
        ys, xs = np.nonzero(valid)
        if len(ys) == 0:
            return int(rng.integers(ylo, yhi + 1)), int(rng.integers(xlo, xhi + 1))
        i = int(rng.integers(len(ys)))
        return int(ys[i]) + ylo, int(xs[i]) + xlo
