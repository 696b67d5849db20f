"""Rewards for training the inspector, TRL style: plain ``(prompts, completions, **kwargs) -> list[float]``.

``completions`` are either strings (one assistant message) or conversations (lists of ``{"role", "content"}``
messages, tool turns included) as TRL passes them; the ground truth arrives as dataset columns in ``kwargs``
(``anomaly_present``, ``defect_type``, ``bbox``), one value per completion.

Perception (AgentIAD): is the yes/no right, does the box overlap the defect (IoU), is the type right.
Behaviour: a well-formed trajectory that ends in a valid answer, without wasted calls (beyond ``max_tool_calls``,
repeated identical calls, calls the tools rejected).
"""
from __future__ import annotations

import json
from typing import Any

from ..protocol import ToolSpec
from .episode import parse_inspection_message
from .tools import ComparativeRetriever, PerceptiveZoomer

SPECS = {t.name: ToolSpec(t.name, t.parameters) for t in (PerceptiveZoomer, ComparativeRetriever)}


def _assistant_texts(completion: Any) -> list[str]:
    if isinstance(completion, str):
        return [completion]
    return [m.get("content") or "" for m in completion if m.get("role") == "assistant"]


def _error_turns(completion: Any) -> int:
    if isinstance(completion, str):
        return 0
    return sum(1 for m in completion if m.get("role") != "assistant" and str(m.get("content", "")).startswith("[Error]"))


def final_answer(completion: Any) -> dict[str, Any] | None:
    """The valid answer the completion ends with, or None."""
    texts = _assistant_texts(completion)
    if not texts:
        return None
    return parse_inspection_message(texts[-1], SPECS).answer


def iou(a: list[float] | None, b: list[float] | None) -> float:
    if not a or not b:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _norm(name: Any) -> str | None:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_") if name else None


def anomaly_accuracy_reward(prompts: list[Any], completions: list[Any], anomaly_present: list[bool],
                            **kwargs: Any) -> list[float]:
    """1 when the yes/no decision matches the label, else 0 (no valid answer is wrong)."""
    out = []
    for completion, truth in zip(completions, anomaly_present):
        answer = final_answer(completion)
        out.append(float(answer is not None and answer["anomaly_present"] == bool(truth)))
    return out


def bbox_iou_reward(prompts: list[Any], completions: list[Any], bbox: list[list[float] | None],
                    **kwargs: Any) -> list[float]:
    """IoU of the answer's box with the true box; on a normal image (true box None), 1 for no box, else 0."""
    out = []
    for completion, truth in zip(completions, bbox):
        answer = final_answer(completion)
        if answer is None:
            out.append(0.0)
        elif truth is None:
            out.append(float(answer["bbox"] is None and not answer["anomaly_present"]))
        else:
            out.append(round(iou(answer["bbox"], truth), 6) if answer["anomaly_present"] else 0.0)
    return out


def defect_type_reward(prompts: list[Any], completions: list[Any], defect_type: list[str | None],
                       **kwargs: Any) -> list[float]:
    """1 for the right type name (case, spaces and dashes ignored); on a normal image, 1 for no type."""
    out = []
    for completion, truth in zip(completions, defect_type):
        answer = final_answer(completion)
        if answer is None:
            out.append(0.0)
        elif truth is None:
            out.append(float(answer["defect_type"] is None or not answer["anomaly_present"]))
        else:
            out.append(float(answer["anomaly_present"] and _norm(answer["defect_type"]) == _norm(truth)))
    return out


def perception_reward(prompts: list[Any], completions: list[Any], anomaly_present: list[bool],
                      defect_type: list[str | None], bbox: list[list[float] | None], w_accuracy: float = 1.0,
                      w_iou: float = 0.5, w_type: float = 0.5, **kwargs: Any) -> list[float]:
    """Weighted sum of the three perception terms (AgentIAD: accuracy first, then where and what)."""
    acc = anomaly_accuracy_reward(prompts, completions, anomaly_present)
    box = bbox_iou_reward(prompts, completions, bbox)
    typ = defect_type_reward(prompts, completions, defect_type)
    return [round(w_accuracy * a + w_iou * b + w_type * t, 6) for a, b, t in zip(acc, box, typ)]


def tool_use_reward(prompts: list[Any], completions: list[Any], max_tool_calls: int = 3, penalty: float = 0.25,
                    **kwargs: Any) -> list[float]:
    """Behaviour: 1 for a well-formed trajectory ending in a valid answer, minus ``penalty`` for each malformed
    message, each call the tools rejected, each repeat of an identical call and each call beyond
    ``max_tool_calls``; 0 floor. Without a valid final answer the reward is 0."""
    out = []
    for completion in completions:
        texts = _assistant_texts(completion)
        parsed = [parse_inspection_message(t, SPECS) for t in texts]
        if not parsed or parsed[-1].answer is None:
            out.append(0.0)
            continue
        calls = [json.dumps([p.call.name, p.call.arguments], sort_keys=True) for p in parsed if p.call is not None]
        malformed = sum(p.error is not None for p in parsed)
        repeats = len(calls) - len(set(calls))
        excess = max(0, len(calls) - max_tool_calls)
        value = 1.0 - penalty * (malformed + _error_turns(completion) + repeats + excess)
        out.append(round(max(0.0, value), 6))
    return out


REWARDS = {"accuracy": anomaly_accuracy_reward, "iou": bbox_iou_reward, "type": defect_type_reward,
           "perception": perception_reward, "behaviour": tool_use_reward}
