"""Mask Generation (MG): the pixel mask of the anomaly in an attempt, from the aligned difference to image 1."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Tool, ToolError, Workspace, build_backend
from .imaging import difference_mask


class DifferenceMask:
    """Mask = denoised, thresholded, cleaned CIELAB difference between the normal image and the edit."""

    def __init__(self, floor: float = 6.0):
        self.floor = float(floor)

    def mask(self, normal: np.ndarray, edited: np.ndarray) -> np.ndarray:
        return difference_mask(normal, edited, floor=self.floor)[0]


BACKENDS: dict[str, type | str] = {"difference": DifferenceMask, "metauas": "local_agent.tools.metauas:MetaUASMask"}


class MaskGen(Tool):
    name = "mask_gen"
    description = "Compute the binary anomaly mask of an attempt (image_index >= 2). Returns the anomaly ratio."
    parameters = {
        "type": "object",
        "properties": {"image_index": {"type": "integer", "description": "the attempt to segment"}},
        "required": ["image_index"],
    }

    def __call__(self, workspace: Workspace, **arguments: Any) -> dict[str, Any]:
        index = arguments.get("image_index")
        edited = workspace.image(index)
        if index == 1:
            raise ToolError("image 1 is the normal image; give the index of an edited attempt (2 or more)")
        mask = self.backend.mask(workspace.normal, edited)
        workspace.masks[index] = mask
        ratio = float(mask.mean())
        return {"image_index": index, "anomaly_ratio": round(ratio, 5), "mask_pixels": int(mask.sum()),
                "empty": bool(ratio == 0.0)}


def build(config: dict[str, Any]) -> MaskGen:
    return MaskGen(build_backend(BACKENDS, MaskGen.name, config))
