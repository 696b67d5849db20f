"""The two inspection tools: the Perceptive Zoomer and the Comparative Retriever (AgentIAD).

Same shape as the synthesis tools (``local_agent.tools.base.Tool``: name, description, JSON-schema parameters,
``__call__(workspace, **arguments) -> dict``) but they act on an :class:`InspectionWorkspace`. A bad argument is a
``ToolError`` the policy sees and can correct; a missing gallery or weight file stops the run (``BackendUnavailable``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..tools.base import BackendUnavailable, Tool, ToolError
from .workspace import Box, InspectionWorkspace, View, compose

ZOOM_OUTPUT_SIDE = 256     # the zoomed image's longer side
MIN_ZOOM_SIDE = 1 / 32     # a box narrower than this is a typo, not a closer look


def parse_box(value: Any) -> Box:
    """Validate a normalised [x0, y0, x1, y1] box; every problem is a ToolError the model can fix."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ToolError("bbox must be a list of four numbers [x0, y0, x1, y1] in 0..1")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ToolError("bbox values must be numbers in 0..1")
    x0, y0, x1, y1 = (float(v) for v in value)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ToolError(f"bbox {list(value)} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    if x1 - x0 < MIN_ZOOM_SIDE or y1 - y0 < MIN_ZOOM_SIDE:
        raise ToolError(f"bbox {list(value)} is too small; each side must be at least {MIN_ZOOM_SIDE:.3f}")
    return (x0, y0, x1, y1)


class PerceptiveZoomer(Tool):
    name = "perceptive_zoomer"
    description = ("Crop a normalised bounding box [x0, y0, x1, y1] (0..1, origin top-left) of an image and return it "
                   "enlarged as a new image, to look closer at a suspicious region.")
    parameters = {
        "type": "object",
        "properties": {
            "image_index": {"type": "integer", "description": "image to zoom into (1 = the inspected image)"},
            "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                     "description": "normalised [x0, y0, x1, y1] within that image"},
        },
        "required": ["image_index", "bbox"],
    }

    def __init__(self, backend: Any = None, output_side: int = ZOOM_OUTPUT_SIDE):
        super().__init__(backend)
        self.output_side = int(output_side)

    def __call__(self, workspace: InspectionWorkspace, **arguments: Any) -> dict[str, Any]:
        from .discrepancy import crop_box, enlarge

        index = arguments.get("image_index")
        source = workspace.image(index)
        box = parse_box(arguments.get("bbox"))
        parent = workspace.view(index)
        crop = crop_box(source, box)
        zoomed = enlarge(crop, self.output_side)
        view = View(parent.kind if parent.kind == "exemplar" else "zoom", compose(parent.box, box), parent.gallery_id)
        new = workspace.add_image(zoomed, view)
        h, w = source.shape[:2]
        result = {"image_index": new, "source_index": index, "bbox": [round(v, 4) for v in box],
                  "source_pixels": [int(np.floor(box[0] * w)), int(np.floor(box[1] * h)),
                                    int(np.ceil(box[2] * w)), int(np.ceil(box[3] * h))],
                  "size": [int(zoomed.shape[1]), int(zoomed.shape[0])],
                  "magnification": round(zoomed.shape[1] / crop.shape[1], 3)}
        if view.kind == "zoom":
            result["bbox_in_image_1"] = [round(v, 4) for v in view.box]
        return result


class ComparativeRetriever(Tool):
    name = "comparative_retriever"
    description = ("Fetch the nearest normal exemplars of the category from the gallery and compare an image with them "
                   "patch by patch. Returns the nearest normals (the closest is added as a new image), an anomaly "
                   "score with the normal range calibrated on normal images, and the most discrepant region as a "
                   "normalised bbox. Works on the inspected image (1) and on zooms of it.")
    parameters = {
        "type": "object",
        "properties": {
            "image_index": {"type": "integer", "description": "1 or a zoom of image 1"},
            "k": {"type": "integer",
                  "description": "how many nearest normal exemplars to compare with (default: the gallery's, 16)"},
        },
        "required": ["image_index"],
    }

    def __init__(self, backend: Any = None, gallery: str | Path | None = None, k: int | None = None):
        """``gallery`` is an index folder (``<gallery>/<category>/``); ``backend`` is unused (no alternatives)."""
        super().__init__(backend)
        self.gallery_dir = Path(gallery) if gallery else None
        self.k = k

    def gallery_for(self, workspace: InspectionWorkspace) -> Any:
        from .gallery import GalleryError, load_gallery

        if "gallery" in workspace.cache:
            return workspace.cache["gallery"]
        if self.gallery_dir is None:
            raise BackendUnavailable("comparative_retriever has no gallery: build one with "
                                     "`local-agent index-gallery DIR --out INDEX` and pass --gallery INDEX")
        try:
            gallery = load_gallery(self.gallery_dir, workspace.category)
        except GalleryError as e:
            raise BackendUnavailable(str(e)) from e
        workspace.cache["gallery"] = gallery
        return gallery

    def full_comparison(self, workspace: InspectionWorkspace, k: int | None = None) -> Any:
        """Image 1 against its nearest normals (cached: a zoom reuses the same neighbours)."""
        from .discrepancy import compare_full

        key = f"full:{k}"
        if key not in workspace.cache:
            workspace.cache[key] = compare_full(self.gallery_for(workspace), workspace.query, k=k)
            workspace.cache.setdefault("full", workspace.cache[key])
        return workspace.cache[key]

    def __call__(self, workspace: InspectionWorkspace, **arguments: Any) -> dict[str, Any]:
        from .discrepancy import compare_zoom, crop_box, enlarge, region_of

        index = arguments.get("image_index")
        workspace.image(index)
        k = arguments.get("k", self.k)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64):
            raise ToolError("k must be an integer between 1 and 64")
        view = workspace.view(index)
        if view.kind == "exemplar":
            raise ToolError(f"image {index} is a normal exemplar; compare image 1 or a zoom of it")
        gallery = self.gallery_for(workspace)
        cal = gallery.calibration
        full = self.full_comparison(workspace, k)
        if view.kind == "query":
            comparison, threshold, std = full, cal["image_threshold"], cal["image_std"]
            normal_range = [cal["image_low"], cal["image_high"]]
        else:
            comparison = compare_zoom(gallery, workspace.query, view.box, full.neighbours, workspace.image(index))
            threshold, std = cal["zoom_threshold"], cal["zoom_std"]
            normal_range = [min(cal["zoom_scores"]), max(cal["zoom_scores"])]
        workspace.maps[index] = comparison.map
        region = region_of(comparison.map, cal["pixel_threshold"])
        workspace.cache.setdefault("regions", {})[index] = region
        nearest = comparison.neighbours[0]
        exemplar = enlarge(crop_box(gallery.images[nearest], view.box), max(workspace.image(index).shape[:2])) \
            if view.kind == "zoom" else gallery.images[nearest]
        exemplar_index = workspace.add_image(exemplar, View("exemplar", view.box, nearest))
        score = comparison.score
        assessment = ("typical of normal exemplars" if score < normal_range[0] else
                      "far outside the normal range" if score >= normal_range[1] else
                      "above the normal threshold" if score >= threshold else "within the normal range but high")
        return {
            "compared_image": index,
            "nearest_normals": [{"gallery_id": int(i), "name": gallery.names[i], "distance": round(d, 4)}
                                for i, d in zip(full.neighbours, full.distances)][:5],
            "exemplar_image_index": exemplar_index,
            "anomaly_score": round(score, 4),
            "threshold": round(threshold, 4),
            "normalized_score": round(score / threshold, 4),
            "margin": round((score - threshold) / std, 3),
            "normal_range": [round(v, 4) for v in normal_range],
            "assessment": assessment,
            "region_bbox": list(region.box),
            "region_tight_bbox": list(region.tight),
            "region_bbox_in_image_1": list(compose(view.box, region.tight)),
            "region_area": round(region.area, 5),
        }


def inspection_tools(gallery: str | Path | None, k: int | None = None) -> dict[str, Tool]:
    """The AgentIAD tool set, name -> tool."""
    return {PerceptiveZoomer.name: PerceptiveZoomer(),
            ComparativeRetriever.name: ComparativeRetriever(gallery=gallery, k=k)}
