"""A small copy of a real category for tests: a few train/good images keep a run fast."""
from __future__ import annotations

import shutil
from pathlib import Path


def small_category(shared_data: Path, root: Path, category: str, n_images: int = 2,
                   names: list[str] | None = None) -> Path:
    """``root/<category>/train/good`` with the first ``n_images`` (or the ``names``) of the MVTec category."""
    folder = Path(root) / category / "train" / "good"
    folder.mkdir(parents=True)
    source = Path(shared_data) / "mvtec" / category / "train" / "good"
    for p in [source / n for n in names] if names else sorted(source.glob("*.png"))[:n_images]:
        shutil.copy(p, folder / p.name)
    return folder.parent.parent
