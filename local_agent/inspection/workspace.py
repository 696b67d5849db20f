"""What the inspection tools act on: the inspected image, the views made of it, the exemplars fetched for it.

Every image in the conversation remembers what it shows (a :class:`View`): the inspected image itself, a zoom of
a box of it, or a normal exemplar from the gallery. Boxes are kept in the inspected image's normalised frame, so a
zoom of a zoom and a region found in a zoomed view map straight back to image 1, and the retriever can cut the
same box out of the normal exemplars.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tools.base import ToolError

Box = tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class View:
    kind: str                 # "query" (image 1), "zoom" (a box of image 1) or "exemplar" (a gallery image)
    box: Box = FULL           # the box of image 1 (or of the exemplar) that this image shows
    gallery_id: int | None = None


def compose(outer: Box, inner: Box) -> Box:
    """``inner`` is normalised within ``outer``; the result is normalised in the frame ``outer`` lives in."""
    x0, y0, x1, y1 = outer
    w, h = x1 - x0, y1 - y0
    return (round(x0 + inner[0] * w, 6), round(y0 + inner[1] * h, 6),
            round(x0 + inner[2] * w, 6), round(y0 + inner[3] * h, 6))


@dataclass
class InspectionWorkspace:
    category: str
    defect_types: list[str]
    images: list[np.ndarray]
    views: list[View] = field(default_factory=lambda: [View("query")])
    maps: dict[int, np.ndarray] = field(default_factory=dict)   # discrepancy map per compared image index
    cache: dict[str, Any] = field(default_factory=dict)

    def image(self, index: Any) -> np.ndarray:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ToolError(f"image_index must be an integer, got {index!r}")
        if not 1 <= index <= len(self.images):
            raise ToolError(f"image_index {index} does not exist; images are numbered 1..{len(self.images)}")
        return self.images[index - 1]

    def view(self, index: int) -> View:
        self.image(index)
        return self.views[index - 1]

    def add_image(self, image: np.ndarray, view: View) -> int:
        self.images.append(image)
        self.views.append(view)
        return len(self.images)

    @property
    def query(self) -> np.ndarray:
        return self.images[0]
