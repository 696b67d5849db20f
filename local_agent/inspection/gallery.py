"""The gallery of normal exemplars of one category: images, patch features, a FAISS index, calibration.

On disk, ``<index>/<category>/`` holds ``images.npy`` (uint8 exemplars at the feature resolution, so the gallery is
self-contained and a retrieved exemplar can be shown), ``patches.npy`` (float16 patch features), ``index.faiss``
(pose-aware global descriptors, exact L2) and ``meta.json`` (names, settings, calibration). Every file is written
to a temp name and renamed; ``meta.json`` goes last, so a gallery without it is an unfinished build and is rebuilt.

Calibration uses ``train/good`` only: the exemplars are split into folds, each fold is scored against the others
exactly as an inspected image would be, and the thresholds are quantiles of those normal scores. No anomalous image
is ever looked at, so the thresholds are honest on any category.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..images import atomic_write_bytes, list_images, load_image
from .mmad import defect_types

FILES = ("images.npy", "patches.npy", "index.faiss", "meta.json")
FORMAT = 2                # 2: image scores are the mean of the top patch distances (discrepancy.image_score)
DEFAULT_K = 16            # nearest normal exemplars the discrepancy map is computed against
DEFAULT_RADIUS = 0        # patch positions (8 px at 256) a patch may move and still match; 0 = anywhere
CALIBRATION_FOLDS = 4
ZOOM_SAMPLES = 32         # held-out exemplars whose zoomed view is scored (each zoom costs 1 + k_zoom forwards)
IMAGE_QUANTILE = 0.95     # image threshold: 5 % of held-out normal images would be flagged
PIXEL_QUANTILE = 0.999    # pixel threshold for the discrepant region


class GalleryError(ValueError):
    """A gallery that cannot be built or read; one line for the console."""


@dataclass
class Gallery:
    category: str
    images: np.ndarray                    # (N, S, S, 3) uint8
    patches: np.ndarray                   # (N, h, w, D) float16
    descriptors: np.ndarray               # (N, G) float32, L2-normalised
    names: list[str]
    k: int = DEFAULT_K
    radius: int = DEFAULT_RADIUS
    calibration: dict[str, Any] = field(default_factory=dict)
    defect_types: list[str] = field(default_factory=list)   # test/<type> names of the source folder, if any
    _index: Any = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> Any:
        if self._index is None:
            self._index = flat_index(self.descriptors)
        return self._index

    def nearest(self, descriptor: np.ndarray, k: int | None = None,
                exclude: set[int] | None = None) -> tuple[list[int], list[float]]:
        """The k most similar exemplars (ids and L2 distances), optionally leaving some out (calibration)."""
        k = min(k or self.k, len(self) - len(exclude or ()))
        d, ids = self.index.search(descriptor.reshape(1, -1).astype(np.float32), min(len(self), k + len(exclude or ())))
        pairs = [(int(i), float(np.sqrt(max(x, 0.0)))) for i, x in zip(ids[0], d[0]) if i >= 0 and
                 int(i) not in (exclude or ())]
        return [i for i, _ in pairs[:k]], [x for _, x in pairs[:k]]


def flat_index(vectors: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def category_dir(index_dir: Path, category: str) -> Path:
    """``<index_dir>/<safe_name(category)>``: a category is one folder inside the index, whatever its text."""
    from ..outputs import inside, safe_name

    return inside(Path(index_dir), safe_name(category))


def normal_images(folder: Path) -> list[Path]:
    """``train/good`` of an MVTec category folder, or the folder itself when it holds images directly."""
    folder = Path(folder)
    good = folder / "train" / "good"
    source = good if good.is_dir() else folder
    if not source.is_dir():
        raise GalleryError(f"{folder}: not a folder")
    paths = list_images(source)
    if len(paths) < 2 * CALIBRATION_FOLDS:
        raise GalleryError(f"{source}: found {len(paths)} images; a gallery needs at least {2 * CALIBRATION_FOLDS} "
                           "normal images (MVTec layout: <category>/train/good)")
    return paths


def is_built(index_dir: Path, category: str) -> bool:
    """Whether ``<index_dir>/<category>/`` holds a finished gallery of this format (else it is (re)built)."""
    try:
        meta = json.loads((category_dir(index_dir, category) / "meta.json").read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def build_gallery(folder: Path, index_dir: Path, category: str | None = None, k: int = DEFAULT_K,
                  radius: int = DEFAULT_RADIUS, limit: int | None = None, zoom_samples: int = ZOOM_SAMPLES,
                  progress: Callable[[int, int, str], None] | None = None,
                  skipped: list[str] | None = None) -> Path:
    """Index the normal images of ``folder`` into ``<index_dir>/<category>/`` and calibrate; returns that folder.

    ``limit`` keeps the first N images and ``zoom_samples`` bounds the zoom calibration (tests, quick demos).
    Unreadable images are skipped with a one-line reason appended to ``skipped``. ``progress(done, total, stage)``
    is called as work proceeds.
    """
    import cv2
    import faiss

    from .backbone import INPUT_SIDE, global_descriptor, patch_features

    folder = Path(folder)
    if not folder.is_dir():
        raise GalleryError(f"{folder}: not a folder")
    category = category or (folder.resolve().name if (folder / "train" / "good").is_dir() else None)
    if not category:
        raise GalleryError(f"{folder}: not an MVTec category folder (no train/good); pass --category")
    paths = normal_images(folder)[:limit]
    images, names = [], []
    for path in paths:
        try:
            rgb = load_image(path).rgb
        except ValueError as e:                    # ImageRejected
            if skipped is not None:
                skipped.append(str(e))
            continue
        images.append(cv2.resize(rgb, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA
                                 if min(rgb.shape[:2]) > INPUT_SIDE else cv2.INTER_LINEAR))
        names.append(path.name)
    if len(images) < 2 * CALIBRATION_FOLDS:
        raise GalleryError(f"{folder}: only {len(images)} readable normal images; need {2 * CALIBRATION_FOLDS}")
    stack = np.stack(images)
    total = 2 * len(images)
    chunks = []
    for i in range(0, len(images), 8):
        chunks.append(patch_features(images[i:i + 8]))
        if progress:
            progress(min(i + 8, len(images)), total, "features")
    patches = np.concatenate(chunks)
    gallery = Gallery(category, stack, patches.astype(np.float16), global_descriptor(patches), names, k=k,
                      radius=radius)
    step = (lambda d, t, s: progress(len(images) + d, total, s)) if progress else None
    gallery.calibration = calibrate(gallery, zoom_samples=zoom_samples, progress=step)
    out = category_dir(index_dir, category)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)    # a half-rebuilt gallery must not look finished
    atomic_write_bytes(out / "images.npy", _npy_bytes(stack))
    atomic_write_bytes(out / "patches.npy", _npy_bytes(gallery.patches))
    atomic_write_bytes(out / "index.faiss", faiss.serialize_index(gallery.index).tobytes())
    meta = {"format": FORMAT, "category": category, "source": str(folder.resolve()), "names": names, "k": k,
            "radius": radius, "defect_types": defect_types(folder),
            "backbone": "efficientnet-lite0 (ImageNet), blocks 4+10, 3x3 avg", "input_side": INPUT_SIDE,
            "calibration": gallery.calibration}
    atomic_write_bytes(out / "meta.json", json.dumps(meta, indent=1).encode())
    return out


def calibrate(gallery: Gallery, folds: int = CALIBRATION_FOLDS, zoom_samples: int = ZOOM_SAMPLES,
              progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Score every exemplar against the other folds (as an inspected image would be) and take quantiles.

    Records the global image score and the score after zooming into the most discrepant region, because the
    scripted policy decides on one or the other and each needs a normal reference of its own scale.
    """
    from .discrepancy import compare_full, compare_zoom, region_of

    n = len(gallery)
    fold_of = np.arange(n) % folds
    zoom_every = max(1, -(-n // max(1, zoom_samples)))
    image_scores, zoom_scores, pixel_values = [], [], []
    for i in range(n):
        held_out = set(np.flatnonzero(fold_of == fold_of[i]).tolist())
        full = compare_full(gallery, gallery.images[i], exclude=held_out, patches=gallery.patches[i].astype(np.float32))
        image_scores.append(full.score)
        pixel_values.append(np.quantile(full.map, PIXEL_QUANTILE))
        if i % zoom_every == 0:
            box = region_of(full.map, None).box
            zoom_scores.append(compare_zoom(gallery, gallery.images[i], box, full.neighbours).score)
        if progress:
            progress(i + 1, n, "calibration")
    image_scores_a, zoom_a = np.array(image_scores), np.array(zoom_scores)
    return {
        "folds": folds,
        "image_threshold": float(np.quantile(image_scores_a, IMAGE_QUANTILE)),
        "image_low": float(np.quantile(image_scores_a, 0.5)),
        "image_high": float(image_scores_a.max() * 1.15),
        "image_std": float(image_scores_a.std() + 1e-6),
        "zoom_threshold": float(np.quantile(zoom_a, IMAGE_QUANTILE)),
        "zoom_std": float(zoom_a.std() + 1e-6),
        "pixel_threshold": float(np.median(pixel_values)),
        "image_scores": [round(float(x), 5) for x in image_scores_a],
        "zoom_scores": [round(float(x), 5) for x in zoom_a],
    }


_CACHE: dict[tuple[str, str, int], Gallery] = {}


def load_gallery(index_dir: Path, category: str) -> Gallery:
    """Read ``<index_dir>/<category>/``; a one-line GalleryError names what is missing and how to build it."""
    import faiss

    folder = category_dir(index_dir, category)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise GalleryError(f"no finished gallery for '{category}' in {index_dir} (missing {', '.join(missing)}); "
                           f"build it with: local-agent index-gallery <{category} folder> --out {index_dir}")
    key = (str(folder.resolve()), category, (folder / "meta.json").stat().st_mtime_ns)  # a rebuild is a new gallery
    if key in _CACHE:
        return _CACHE[key]
    rebuild = f"rebuild it with: local-agent index-gallery <{category} folder> --out {index_dir}"

    def read(name: str, how: Callable[[Path], Any]) -> Any:
        try:
            return how(folder / name)
        except (OSError, ValueError, RuntimeError, EOFError, KeyError, TypeError) as e:  # faiss raises RuntimeError
            reason = " ".join(str(e).split())[:160] or type(e).__name__
            raise GalleryError(f"{folder / name}: unreadable or corrupt ({reason}); {rebuild}") from e

    meta = read("meta.json", lambda p: json.loads(p.read_bytes().decode("utf-8")))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise GalleryError(f"{folder / 'meta.json'}: gallery format {found} != {FORMAT}; {rebuild}")
    index = read("index.faiss", lambda p: faiss.deserialize_index(np.fromfile(p, dtype=np.uint8)))
    descriptors = read("index.faiss", lambda _: index.reconstruct_n(0, index.ntotal))
    images = read("images.npy", lambda p: np.load(p, allow_pickle=False))
    patches = read("patches.npy", lambda p: np.load(p, allow_pickle=False))
    gallery = read("meta.json", lambda _: Gallery(
        category, images, patches, descriptors, list(meta["names"]), k=int(meta.get("k", DEFAULT_K)),
        radius=int(meta.get("radius", DEFAULT_RADIUS)), calibration=dict(meta["calibration"]),
        defect_types=list(meta.get("defect_types", [])), _index=index))
    if not len(gallery.names) == len(images) == len(patches) == index.ntotal:
        raise GalleryError(f"{folder}: {len(gallery.names)} names in meta.json, {len(images)} images, "
                           f"{len(patches)} patch sets, {index.ntotal} index vectors; {rebuild}")
    _CACHE[key] = gallery
    return gallery
