"""One inspection episode as data, and the loop that runs it with any policy.

The protocol is the synthesis agent's (``local_agent.protocol``): ``<thinking>`` then one ``<tool_call>`` or
``<answer>``, tool output as ``[Tool Response from <tool>]`` + JSON. Only the answer differs: here it is
``{"anomaly_present", "defect_type", "bbox", "confidence"}``. ``parse_agent_message`` checks answers against the
synthesis keys, so answers are parsed here and everything else (tool calls, format errors) is delegated to it.

Any object with ``next_message(episode) -> str`` drives the loop (the scripted inspector, or the transformers /
vLLM policies of ``local_agent.policies``): it reads ``episode.messages`` (chat messages; ``"images"`` lists the
image indices a message shows), ``episode.tool_specs`` and ``episode.workspace.images``, as in synthesis.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..episode import Step
from ..protocol import Parsed, ToolSpec, format_tool_response, parse_agent_message
from ..tools.base import Tool, ToolError
from .workspace import InspectionWorkspace

ANSWER_KEYS = ("anomaly_present", "defect_type", "bbox", "confidence")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_THINK = re.compile(r"<thinking>(.*?)</thinking>", re.S)

SYSTEM_PROMPT = (
    "You are an industrial visual inspector (AgentIAD). Image 1 is a product image of a known category. Decide whether "
    "it shows an anomaly, which defect type, and where. Think inside <thinking>...</thinking>, then either call exactly "
    "one tool as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call> or finish with <answer>{\"anomaly_present\": "
    "bool, \"defect_type\": str|null, \"bbox\": [x0, y0, x1, y1]|null, \"confidence\": 0..1}</answer>; bbox is normalised "
    "to image 1 (0..1, origin top-left). Tools: {tools}. Use comparative_retriever to compare with normal exemplars and "
    "perceptive_zoomer to look closer at a suspicious region; call tools only while they can change your answer."
)


def user_prompt(category: str, defect_types: list[str]) -> str:
    kinds = ", ".join(defect_types) if defect_types else "not given"
    return (f"Image 1 is a {category.replace('_', ' ')}. Is there an anomaly? If so, choose the defect type from: "
            f"{kinds}; and give its bounding box.")


def parse_inspection_message(text: str, specs: dict[str, ToolSpec]) -> Parsed:
    """Parse one inspector message; never raises on model output (problems become ``Parsed.error``)."""
    if isinstance(text, str) and len(_ANSWER.findall(text)) == 1 and "<tool_call>" not in text:
        thinking = "\n".join(t.strip() for t in _THINK.findall(text))
        raw = _ANSWER.search(text).group(1).strip()
        raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw)
        try:
            answer = json.loads(raw)
        except ValueError as e:
            return Parsed(thinking, error=f"answer is not valid JSON: {e}")
        problem = answer_problem(answer)
        return Parsed(thinking, error=problem) if problem else Parsed(thinking, answer=answer)
    return parse_agent_message(text, specs)


def answer_problem(answer: Any) -> str | None:
    """Why an inspection answer is malformed, or None."""
    if not isinstance(answer, dict):
        return "answer must be a JSON object"
    missing = [k for k in ANSWER_KEYS if k not in answer]
    if missing:
        return f"answer is missing key(s): {', '.join(missing)}"
    if not isinstance(answer["anomaly_present"], bool):
        return "answer anomaly_present must be true or false"
    box = answer["bbox"]
    if box is not None and not (isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in box)
            and box[0] < box[2] and box[1] < box[3]):
        return "answer bbox must be null or [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
    c = answer["confidence"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1:
        return "answer confidence must be a number in 0..1"
    if answer["defect_type"] is not None and not isinstance(answer["defect_type"], str):
        return "answer defect_type must be a string or null"
    return None


class Policy(Protocol):
    def next_message(self, episode: "InspectionEpisode") -> str: ...


@dataclass
class InspectionEpisode:
    workspace: InspectionWorkspace
    tool_specs: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    seconds: float = 0.0

    def last_result(self, tool: str) -> dict[str, Any] | None:
        for s in reversed(self.steps):
            if s.tool == tool and s.result is not None:
                return s.result
        return None

    @property
    def tool_calls(self) -> int:
        return sum(1 for s in self.steps if s.tool is not None)

    def to_record(self, image_files: dict[int, str] | None = None) -> dict[str, Any]:
        ws = self.workspace
        return {
            "category": ws.category,
            "defect_types": ws.defect_types,
            "tools": self.tool_specs,
            "messages": self.messages,
            "steps": [s.__dict__ for s in self.steps],
            "views": [{"index": i + 1, "kind": v.kind, "box": list(v.box), "gallery_id": v.gallery_id}
                      for i, v in enumerate(ws.views)],
            "answer": self.answer,
            "seconds": round(self.seconds, 4),
            "images": {str(k): v for k, v in (image_files or {}).items()},
        }


def error_observation(error: str) -> str:
    return f"[Error] {error}. Reply with <thinking>…</thinking> and one <tool_call> or <answer>."


def run_inspection(policy: Policy, tools: dict[str, Tool], image: np.ndarray, category: str,
                   defect_types: list[str], max_steps: int = 8) -> InspectionEpisode:
    """Think → act → observe until an answer or ``max_steps`` messages (then ``answer`` stays None)."""
    workspace = InspectionWorkspace(category=category, defect_types=list(defect_types), images=[image])
    specs = {name: ToolSpec(name, tool.parameters) for name, tool in tools.items()}
    episode = InspectionEpisode(workspace, [t.spec() for t in tools.values()])
    episode.messages.append({"role": "system", "content": SYSTEM_PROMPT.replace("{tools}", ", ".join(tools))})
    episode.messages.append({"role": "user", "content": user_prompt(category, defect_types), "images": [1]})
    t0 = time.perf_counter()
    for _ in range(max_steps):
        text = policy.next_message(episode)
        episode.messages.append({"role": "assistant", "content": text})
        parsed = parse_inspection_message(text, specs)
        step = Step(message=text)
        episode.steps.append(step)
        if parsed.answer is not None:
            episode.answer = parsed.answer
            break
        if parsed.error is not None:
            step.error = parsed.error
            episode.messages.append({"role": "user", "content": error_observation(parsed.error)})
            continue
        call = parsed.call
        step.tool, step.arguments = call.name, call.arguments
        before = len(workspace.images)
        started = time.perf_counter()
        try:
            result = tools[call.name](workspace, **call.arguments)
        except ToolError as e:
            step.error = str(e)
            step.seconds = time.perf_counter() - started
            episode.messages.append({"role": "user", "content": error_observation(f"{call.name}: {e}")})
            continue
        step.seconds = time.perf_counter() - started
        step.result = result
        message: dict[str, Any] = {"role": "tool", "name": call.name, "content": format_tool_response(call.name, result)}
        if len(workspace.images) > before:
            message["images"] = list(range(before + 1, len(workspace.images) + 1))
        episode.messages.append(message)
    episode.seconds = time.perf_counter() - t0
    return episode
