"""Reading an MVTec-AD category folder for evaluation, refusing one that breaks the layout with a one-line reason.

Why strict: a missing or mis-sized mask silently becomes "no defect here" and every pixel metric is then wrong
without anyone noticing. Better to stop and say which file is at fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..images import IMAGE_SUFFIXES, list_images


class LayoutError(ValueError):
    """The folder does not follow the MVTec AD layout; the message says what is wrong and where."""


@dataclass(frozen=True)
class TestItem:
    image: Path
    anomaly_type: str          # "good" for normal test images
    mask: Path | None          # None for good images

    @property
    def is_anomalous(self) -> bool:
        return self.anomaly_type != "good"


@dataclass(frozen=True)
class Category:
    root: Path
    name: str
    train_good: list[Path]
    test: list[TestItem]
    anomaly_types: list[str]   # the test/<type> folder names except good, sorted

    @property
    def size(self) -> tuple[int, int]:
        with Image.open(self.test[0].image) as im:
            return im.size


def _mask_for(root: Path, anomaly_type: str, image: Path) -> Path | None:
    folder = root / "ground_truth" / anomaly_type
    for suffix in (".png", image.suffix):
        for name in (f"{image.stem}_mask{suffix}", f"{image.stem}{suffix}"):
            if (folder / name).is_file():
                return folder / name
    return None


def type_names(test_dir: Path) -> list[str]:
    """The defect types of a test folder: its sub-folders other than ``good``; hidden ones (.ipynb_checkpoints)
    are not defect types."""
    return sorted(p.name for p in Path(test_dir).iterdir()
                  if p.is_dir() and p.name != "good" and not p.name.startswith("."))


def read_category(root: str | Path) -> Category:
    """Validate and list a category folder: train/good, test/good, test/<type>, ground_truth/<type>/*_mask.png."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: no such folder (give an MVTec-layout category folder, e.g. mvtec/grid)")
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise LayoutError(f"{root}: missing train/good/ (synthesis needs normal training images)")
    train = list_images(train_dir)
    if not train:
        raise LayoutError(f"{train_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise LayoutError(f"{root}: missing test/ (evaluation needs real test images)")
    types = type_names(test_dir)
    if not types:
        raise LayoutError(f"{test_dir}: no defect-type folders (test/<type>/ besides test/good)")
    items: list[TestItem] = []
    good_dir = test_dir / "good"
    if good_dir.is_dir():
        items += [TestItem(p, "good", None) for p in list_images(good_dir)]
    for t in types:
        images = list_images(test_dir / t)
        if not images:
            raise LayoutError(f"{test_dir / t}: no test images")
        for p in images:
            mask = _mask_for(root, t, p)
            if mask is None:
                raise LayoutError(f"{p}: missing mask (expected ground_truth/{t}/{p.stem}_mask.png)")
            with Image.open(p) as im, Image.open(mask) as mk:
                if im.size != mk.size:
                    raise LayoutError(f"{mask}: mask size {mk.size[0]}x{mk.size[1]} does not match image "
                                      f"{p.name} {im.size[0]}x{im.size[1]}")
            items.append(TestItem(p, t, mask))
    if not any(not it.is_anomalous for it in items):
        raise LayoutError(f"{root}: no normal test images in test/good/ (image AUROC needs both classes)")
    return Category(root=root, name=root.resolve().name, train_good=train, test=items, anomaly_types=types)


def is_category(folder: Path) -> bool:
    """A folder that looks like one category (train/ and test/ inside), as opposed to a folder of categories."""
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def find_categories(paths: list[str | Path]) -> list[Path]:
    """Category folders from ``--data``: each path is a category folder or a folder of category folders (told
    apart by the layout: train/ and test/ inside). Order kept; sub-folders sorted by name."""
    found: list[Path] = []
    if not paths:
        raise LayoutError("no --data folder given")
    for p in map(Path, paths):
        if not p.is_dir():
            raise LayoutError(f"{p}: no such folder (give an MVTec-layout category folder, e.g. mvtec/grid, "
                              "or a folder of them)")
        if is_category(p):
            found.append(p)
            continue
        subs = sorted(q for q in p.iterdir() if q.is_dir() and is_category(q))
        if not subs:
            if not (p / "train").exists() and not (p / "test").exists() and any(q.is_dir() for q in p.iterdir()):
                raise LayoutError(f"{p}: neither a category folder (train/, test/ inside) nor a folder of them")
            found.append(p)          # a broken category: read_category says what it lacks
            continue
        found.extend(subs)
    return found
