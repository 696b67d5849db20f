"""Quality Evaluation (QE): the paper's rubric — location 0-5, quality 0-5, and a review a refinement can act on."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .base import Tool, Workspace, build_backend, string_arg
from .imaging import at_work_side, difference_mask, elongation, foreground_mask, luminance
from .painter.spec import BLOB_KINDS, LINEAR_KINDS, SOFT_KINDS, defect_kind

# Fault name -> what the refinement should do about it (the scripted policy and the SFT data read these).
FAULT_ADVICE = {
    "missing": "no visible change: add the defect clearly",
    "too faint": "make it more pronounced, high-contrast",
    "off the object": "place it on the object surface, at the centre",
    "too large": "make it small",
    "too small": "make it medium",
    "hard seam": "blend it smoothly into the surrounding texture",
    "flat patch": "keep the underlying texture and lighting visible through it",
    "scattered": "make it a single defect",
    "wrong shape": "",  # filled per kind
    # the calibrated judge's faults (its reviews also say what real defects of the kind measure)
    "too strong": "make it subtle, blend it smoothly",
    "off the edge": "place it at the edge of the object",
    "on the edge": "place it in the centre of the object, away from its edge",
    "blurred edge": "make it distinct, sharp-edged",
    "too busy": "make it smooth and soft",
    "too few parts": "make several small ones",
    "unlabelled change": "keep the change inside one clear defect, no halo or shift elsewhere",
}


class HeuristicJudge:
    """A measurable, image-based judge. It sees only the normal image, the edit and the requested type.

    It finds the changed region (the same CIELAB difference the mask tool uses), then scores:
    location — share of the change on the object (textures: everywhere counts), less one for scattered changes;
    quality — five minus penalties for: invisible or faint change, oversized or tiny region, a hard seam where
    the type should blend, a texture-less flat patch, and a shape that contradicts the type (a scratch must be
    thin and long, a hole compact).
    """

    def __init__(self, pass_location: int = 4, pass_quality: int = 4, faint_delta_e: float = 12.0,
                 max_area: float = 0.12):
        self.pass_location = int(pass_location)
        self.pass_quality = int(pass_quality)
        self.faint_delta_e = float(faint_delta_e)
        self.max_area = float(max_area)

    def evaluate(self, normal: np.ndarray, edited: np.ndarray, category: str, anomaly_type: str,
                 foreground: np.ndarray | None = None) -> dict[str, Any]:
        kind = defect_kind(anomaly_type)
        given = normal
        normal, edited = at_work_side(normal, edited)    # its px thresholds are for 256-px images
        region, diff = difference_mask(normal, edited)
        faults: list[str] = []
        if region.sum() == 0:
            return self._result(0, 0, ["missing"], kind, anomaly_type, {})
        fg = at_work_side((foreground if foreground is not None else foreground_mask(given, category)).astype(bool))[0]
        area = float(region.sum())
        on_object = float((region & fg).sum()) / area
        n_parts = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)[0] - 1
        location = int(round(5 * on_object))
        if on_object < 0.8:
            faults.append("off the object")
        if n_parts > 4:
            location -= 1
            faults.append("scattered")

        quality = 5
        strength = float(np.median(diff[region]))
        if strength < self.faint_delta_e:
            quality -= 3 if strength < self.faint_delta_e / 2 else 2
            faults.append("too faint")
        rel_area = area / max(float(fg.sum()), 1.0)
        if rel_area > self.max_area:
            quality -= 2 if rel_area > 2 * self.max_area else 1
            faults.append("too large")
        elif area < 12:
            quality -= 1
            faults.append("too small")
        # Seam: a soft defect fades out into a faint halo just outside its visible border; a pasted one stops dead.
        k = np.ones((3, 3), np.uint8)
        u8 = region.astype(np.uint8)
        ring = cv2.dilate(u8, k, iterations=3).astype(bool) & ~cv2.dilate(u8, k, iterations=1).astype(bool)
        halo = float((diff[ring] > 1.0).mean()) if ring.any() else 1.0
        if kind in SOFT_KINDS and halo < 0.25:
            quality -= 1
            faults.append("hard seam")
        before = luminance(normal)[region]
        after = luminance(edited)[region]
        if kind not in LINEAR_KINDS and area > 150 and before.std() > 6 and after.std() < 0.25 * before.std():
            quality -= 1
            faults.append("flat patch")
        elong = elongation(region)
        if (kind in LINEAR_KINDS and elong < 2.5) or (kind in BLOB_KINDS and elong > 6.0):
            quality -= 2
            faults.append("wrong shape")
        measures = {"delta_e": round(strength, 2), "area_ratio": round(rel_area, 4), "on_object": round(on_object, 3),
                    "parts": int(n_parts), "elongation": round(elong, 2), "halo": round(halo, 3)}
        return self._result(max(location, 0), max(quality, 0), faults, kind, anomaly_type, measures)

    def _result(self, location: int, quality: int, faults: list[str], kind: str | None, anomaly_type: str,
                measures: dict[str, Any]) -> dict[str, Any]:
        advice = []
        for f in faults:
            if f == "wrong shape":
                want = "thin and elongated" if kind in LINEAR_KINDS else "compact and rounded"
                advice.append(f"wrong shape for a {anomaly_type}: make it {want}")
            else:
                advice.append(f"{f}: {FAULT_ADVICE[f]}")
        passed = location >= self.pass_location and quality >= self.pass_quality
        return verdict(location, quality, passed, faults, advice, measures,
                       f"Plausible {anomaly_type} on the object")


def verdict(location: int, quality: int, passed: bool, faults: list[str], advice: list[str],
            measures: dict[str, Any], plausible: str) -> dict[str, Any]:
    """The judge's answer, one shape for every backend: the review lists each fault's advice, which is what
    ``refine_prompt`` reads ("fault: why: make it …; fault: …")."""
    if passed:
        review = f"{plausible}; location {location}/5, quality {quality}/5."
        if advice:
            review += " Minor: " + "; ".join(advice) + "."
    else:
        review = "Not acceptable yet. " + ("; ".join(advice) + "." if advice else "Scores below the pass mark.")
    return {"location_score": int(location), "quality_score": int(quality), "passed": bool(passed),
            "faults": list(faults), "review": review, "measures": measures}


BACKENDS: dict[str, type | str] = {"heuristic": HeuristicJudge,
                                   "calibrated": "local_agent.tools.calibrated_judge:CalibratedJudge",
                                   "vlm": "local_agent.tools.vlm:VLMJudge", "smollm2": "local_agent.tools.vlm:SmolLM2Judge"}


class QualityEval(Tool):
    name = "quality_eval"
    description = ("Judge an attempt against image 1: location score 0-5, quality score 0-5, pass/fail and a review "
                   "naming what to fix.")
    parameters = {
        "type": "object",
        "properties": {
            "image_index": {"type": "integer", "description": "the attempt to judge (2 or more)"},
            "item_name": {"type": "string", "description": "object category"},
            "anomaly_type": {"type": "string", "description": "the requested defect type"},
        },
        "required": ["image_index"],
    }

    def __call__(self, workspace: Workspace, **arguments: Any) -> dict[str, Any]:
        index = arguments.get("image_index")
        edited = workspace.image(index)
        item = string_arg(arguments, "item_name", workspace.category)
        anomaly = string_arg(arguments, "anomaly_type", workspace.anomaly_type)
        if "foreground" not in workspace.cache:
            workspace.cache["foreground"] = foreground_mask(workspace.normal, item)
        result = self.backend.evaluate(workspace.normal, edited, item, anomaly,
                                       foreground=workspace.cache["foreground"])
        return {"image_index": index, **result}


def build(config: dict[str, Any]) -> QualityEval:
    return QualityEval(build_backend(BACKENDS, QualityEval.name, config))
