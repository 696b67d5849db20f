"""The ``scripted`` inspector: look, compare, zoom only when uncertain, decide.

1. Compare image 1 with its nearest normal exemplars (comparative_retriever).
2. Score below the normal median (calibrated on train/good) → normal; above the largest held-out normal score
   (+15 %) → anomalous. Both need no closer look.
3. In between → zoom into the most discrepant region (perceptive_zoomer), compare the zoom with the same region of
   the exemplars, and decide on the mean of the two normalised scores (each score / its own normal threshold).
4. Answer with the region's box in image 1, the type name that best fits the region (``defect_types``), and a
   confidence from the margin to the threshold in units of the normal scores' spread.
"""
from __future__ import annotations

import math
from typing import Any

from ..protocol import format_answer, format_tool_call
from .defect_types import guess_type, region_facts
from .episode import InspectionEpisode

RETRIEVER, ZOOMER = "comparative_retriever", "perceptive_zoomer"


class ScriptedInspector:
    def __init__(self, max_tool_calls: int = 4):
        self.max_tool_calls = int(max_tool_calls)

    def next_message(self, episode: InspectionEpisode) -> str:
        done = [s for s in episode.steps if s.result is not None]
        full = next((s.result for s in done if s.tool == RETRIEVER and s.result["compared_image"] == 1), None)
        if full is None:
            return format_tool_call(RETRIEVER, {"image_index": 1},
                                    "First compare the image with the nearest normal exemplars of its category.")
        if "fused_score" in full:        # a trained inspector's retriever (``--inspector``): decide on its evidence
            from .trained import trained_next_message

            return trained_next_message(episode, full, self.max_tool_calls)
        last = done[-1]
        score = full["anomaly_score"]
        low, high = full["normal_range"]
        if last is not None and last.tool == RETRIEVER and last.result["compared_image"] != 1:
            zoom = last.result
            value = (full["normalized_score"] + zoom["normalized_score"]) / 2
            margin = (full["margin"] + zoom["margin"]) / 2
            return self._answer(episode, full, value >= 1.0, value, margin,
                                f"The zoomed region scores {zoom['normalized_score']:.2f} of its normal threshold "
                                f"({zoom['assessment']}); with the whole image at {full['normalized_score']:.2f}, the "
                                f"combined evidence is {value:.2f}.")
        if last.tool == ZOOMER:
            return format_tool_call(RETRIEVER, {"image_index": last.result["image_index"]},
                                    "Compare the zoomed region with the same region of the normal exemplars.")
        if score < low or score >= high or episode.tool_calls >= self.max_tool_calls:
            return self._answer(episode, full, score >= high or (score >= full["threshold"] and score >= low),
                                full["normalized_score"], full["margin"],
                                f"The image scores {score:.2f} against normal exemplars ({full['assessment']}; "
                                f"normal range {low:.2f}-{high:.2f}), clear enough to decide without zooming.")
        return format_tool_call(ZOOMER, {"image_index": 1, "bbox": full["region_bbox"]},
                                f"The score {score:.2f} is {full['assessment']} (normal range {low:.2f}-{high:.2f}): "
                                "uncertain. Look closer at the most discrepant region.")

    @staticmethod
    def _answer(episode: InspectionEpisode, full: dict[str, Any], anomalous: bool, value: float, margin: float,
                why: str) -> str:
        ws = episode.workspace
        confidence = round(0.5 + 0.5 * math.tanh(abs(margin) / 2.0), 3)
        answer: dict[str, Any] = {"anomaly_present": bool(anomalous), "defect_type": None, "bbox": None,
                                  "confidence": confidence, "anomaly_score": round(value, 4)}
        if anomalous:
            answer["bbox"] = full["region_tight_bbox"]
            region = ws.cache["regions"][1]
            facts = region_facts(ws.query, ws.images[full["exemplar_image_index"] - 1], region.mask)
            answer["defect_type"], _ = guess_type(ws.defect_types, facts)
            why += (f" Anomalous; the region covers {facts.area:.1%} of the image, elongation {facts.elongation:.1f}, "
                    f"brightness change {facts.brightness:+.0f}, which fits '{answer['defect_type']}' best.")
        else:
            why += " No anomaly."
        return format_answer(answer, why)
