"""One synthesis episode as data: the conversation, every step, scores and timings.

The same record serves the console, ``manifest.jsonl``, ``report.html`` and the trainers: a trajectory file is
``Episode.to_record()`` plus the attempt images saved beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .tools.base import Workspace

SYSTEM_PROMPT = (
    "You are AnomalyAgent, an industrial anomaly synthesis agent. Given a normal image (image 1), an object category "
    "and an anomaly type, produce a realistic anomaly image and its mask by calling tools. Think inside "
    "<thinking>...</thinking>, then either call exactly one tool as <tool_call>{\"name\": ..., \"arguments\": {...}}"
    "</tool_call> or finish with <answer>{\"status\": \"success\"|\"failed\", \"final_image_index\": int, "
    "\"mask_generated\": bool, \"synthesis_logic\": str}</answer>. Tools: {tools}. image_gen always edits image 1; "
    "each attempt becomes the next image index. Judge every attempt with quality_eval, refine the prompt from its "
    "review (use knowledge_retrieval when an attempt scores low), and call mask_gen on the image you keep."
)


def user_prompt(category: str, anomaly_type: str) -> str:
    return (f"Image 1 is a normal {category.replace('_', ' ')}. Synthesize a realistic '{anomaly_type}' anomaly on "
            f"it (item_name: {category}, anomaly_type: {anomaly_type}) and generate its mask.")


@dataclass
class Step:
    """One agent action and what came back. ``error`` is set when the model's message or call was bad."""

    message: str
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Episode:
    workspace: Workspace
    tool_specs: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    max_attempts: int = 3
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    @classmethod
    def start(cls, workspace: Workspace, tool_specs: list[dict[str, Any]], max_attempts: int) -> "Episode":
        names = ", ".join(s["name"] for s in tool_specs)
        ep = cls(workspace, tool_specs, max_attempts=max_attempts)
        ep.messages.append({"role": "system", "content": SYSTEM_PROMPT.replace("{tools}", names)})
        ep.messages.append({"role": "user", "content": user_prompt(workspace.category, workspace.anomaly_type),
                            "images": [1]})
        return ep

    # -- views the policies and the record use
    @property
    def attempts(self) -> list[int]:
        return [s.result["image_index"] for s in self.steps if s.tool == "image_gen" and s.result]

    def evaluations(self) -> dict[int, dict[str, Any]]:
        """Latest judge result per image index."""
        return {s.result["image_index"]: s.result for s in self.steps if s.tool == "quality_eval" and s.result}

    def last_result(self, tool: str) -> dict[str, Any] | None:
        for s in reversed(self.steps):
            if s.tool == tool and s.result is not None:
                return s.result
        return None

    @property
    def final_index(self) -> int | None:
        if self.answer and isinstance(self.answer.get("final_image_index"), int):
            return self.answer["final_image_index"]
        return None

    @property
    def passed(self) -> bool:
        i = self.final_index
        return bool(i and self.answer and self.answer.get("status") == "success"
                    and self.evaluations().get(i, {}).get("passed") and i in self.workspace.masks)

    def scores(self) -> list[dict[str, Any]]:
        return [{"image_index": i, "location": e["location_score"], "quality": e["quality_score"],
                 "passed": e["passed"]} for i, e in sorted(self.evaluations().items())]

    def to_record(self, image_files: dict[int, str] | None = None) -> dict[str, Any]:
        return {
            "category": self.workspace.category,
            "anomaly_type": self.workspace.anomaly_type,
            "seed": self.workspace.seed,
            "tools": self.tool_specs,
            "messages": self.messages,
            "steps": [s.__dict__ for s in self.steps],
            "prompts": {str(k): v for k, v in self.workspace.prompts.items()},
            "scores": self.scores(),
            "answer": self.answer,
            "passed": self.passed,
            "final_image_index": self.final_index,
            "seconds": round(self.seconds, 4),
            "images": {str(k): v for k, v in (image_files or {}).items()},
        }


def save_json_atomic(path: Path, data: Any) -> None:
    from .images import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, indent=1, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
