"""Reading any image a plant might hand us, and writing outputs so that no half-written file ever exists.

Every image becomes uint8 RGB for the tools; the source mode is remembered so that outputs keep it
(grayscale in, grayscale out — MVTec grid, for example, is grayscale).
"""
from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 32          # below this no defect can be drawn or judged
MAX_SIDE = 4096        # above this the tools would be slow and the judge's thresholds meaningless
MAX_PIXELS = 64_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageRejected(ValueError):
    """An input the run skips, with a one-line reason for the console and the manifest."""


@dataclass
class LoadedImage:
    rgb: np.ndarray            # uint8 (H, W, 3)
    grayscale: bool            # save outputs as L
    note: str = ""             # what was converted, for the manifest


def load_image(path: Path) -> LoadedImage:
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageRejected(f"{path.name}: image too large ({im.width}x{im.height} > {MAX_PIXELS} pixels)")
            im.load()
            im = ImageOps.exif_transpose(im)
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageRejected(f"{path.name}: unreadable image ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise ImageRejected(f"{path.name}: image too small ({w}x{h}; need at least {MIN_SIDE} px per side)")
    if max(w, h) > MAX_SIDE:
        raise ImageRejected(f"{path.name}: image too large ({w}x{h}; at most {MAX_SIDE} px per side — resize it first)")
    notes = []
    mode = im.mode
    grayscale = mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        notes.append(f"{mode} converted to 8-bit")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
        notes.append("alpha composited on white")
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    if grayscale:
        notes.append("grayscale")
    return LoadedImage(rgb=rgb, grayscale=grayscale, note="; ".join(notes))


def _create_temp(path: Path) -> tuple[int, str]:
    """A new hidden temp file beside ``path``, opened with mode 0666 so the umask decides the permissions exactly as
    for a plain ``open()`` (``tempfile.mkstemp`` makes 0600, which the rename would carry to the output)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: could not create a temporary file for {path.name}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see the old file or the new, never half.
    The file gets the permissions a plain ``open()`` would give (the umask is respected)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def encode_png(array: np.ndarray, grayscale: bool = False) -> bytes:
    im = Image.fromarray(array)
    if grayscale and im.mode != "L":
        im = im.convert("L")
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # 5-10x faster than the default; files ~20 % larger
    return buf.getvalue()


def save_png_atomic(path: Path, array: np.ndarray, grayscale: bool = False) -> None:
    atomic_write_bytes(path, encode_png(array, grayscale))


def save_mask_atomic(path: Path, mask: np.ndarray) -> None:
    """MVTec convention: 0 / 255 single-channel PNG."""
    atomic_write_bytes(path, encode_png((mask.astype(bool) * 255).astype(np.uint8)))


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def broken_links(folder: Path) -> list[Path]:
    """Symbolic links with an image suffix whose target is gone: :func:`list_images` cannot see them, a manifest
    should say they were left out."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_symlink() and not p.exists())
