"""GRPO rollouts on TRL's own tool loop: the five tools as the methods of an environment (``environment_factory``).

Why a second rollout path next to ``rollout.py``: a VLM policy (Qwen3-VL class) has to SEE each image_gen result,
and TRL builds image inputs for images that appear inside a completion — for generation with transformers or vLLM
and for the policy-gradient forward — only on its own tool loop. On this path the policy writes tool calls in its
chat template's native format (Qwen's ``<tool_call>{"name": …, "arguments": …}</tool_call>``, the same JSON the
paper's protocol uses); TRL parses them, calls the methods below, masks the tool tokens and batches the images.
Every tool response is the paper's ``[Tool Response from X]`` text, so the observations read as in the SFT
trajectories, and ``protocol.protocol_messages`` turns a TRL conversation back into the paper's protocol so that the
same reward functions (``rewards.py``) score both paths.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..loop import error_observation
from ..protocol import format_tool_response

Content = str | list[dict[str, Any]]


def image_content(image: np.ndarray, text: str | None = None) -> list[dict[str, Any]]:
    """A multimodal tool response: the image (PIL, as TRL and the processors take it), then the text."""
    from PIL import Image

    parts: list[dict[str, Any]] = [{"type": "image", "image": Image.fromarray(image)}]
    if text is not None:
        parts.append({"type": "text", "text": text})
    return parts


class SynthesisEnvironment:
    """One synthesis episode. ``reset`` starts it from a dataset row's ``task``; each public method is one tool.

    ``show_images``: image 1 is appended to the task message and each image_gen result is returned with its tool
    response as an image (VLM policies); off, the policy reads the tools' JSON only (text policies).
    Model mistakes (a ToolError, the attempt limit) come back as the loop's ``[Error] …`` observation; a backend
    that fails otherwise is kept in ``failure`` and the rewards stop the run on it, as the agent loop would.
    """

    def __init__(self, tools: Mapping[str, Any], max_attempts: int = 3, show_images: bool = False,
                 on_reset: Callable[[Any], None] | None = None):
        self.tools, self.max_attempts, self.show_images, self.on_reset = tools, max_attempts, show_images, on_reset
        self.workspace: Any = None
        self.attempts = 0
        self.failure: str | None = None  # a backend that could not run (not a model mistake): stops training

    def reset(self, task: str = "", **_: Any) -> list[dict[str, Any]] | None:
        """Load the task's normal image; TRL appends what this returns to the task message."""
        from ..images import load_image
        from ..tools.base import Workspace
        from .rollout import Task

        if not task:
            raise ValueError("a GRPO row needs a 'task' column (see grpo.build_dataset)")
        t = Task(**json.loads(task))
        image = load_image(Path(t.source)).rgb
        self.workspace = Workspace(category=t.category, anomaly_type=t.anomaly_type, images=[image], seed=t.seed)
        self.attempts, self.failure = 0, None
        if self.on_reset:
            self.on_reset(t)
        return image_content(image) if self.show_images else None

    def _call(self, name: str, **arguments: Any) -> Content:
        from ..tools.base import ToolError

        if name not in self.tools:
            return error_observation(f"{name} has no backend in this profile")
        if name == "image_gen" and self.attempts >= self.max_attempts:
            return error_observation(f"attempt limit reached ({self.max_attempts} image_gen calls); "
                                     "call mask_gen and answer")
        try:
            result = self.tools[name](self.workspace, **{k: v for k, v in arguments.items() if v not in ("", None)})
        except ToolError as e:
            return error_observation(f"{name}: {e}")
        except Exception as e:  # TRL would hand any exception to the policy as a tool error; keep it for the rewards
            self.failure = f"{name} failed: {type(e).__name__}: {e}"
            raise
        text = format_tool_response(name, result)
        if name == "image_gen":
            self.attempts += 1
            if self.show_images:
                return image_content(self.workspace.images[result["image_index"] - 1], text)
        return text

    def prompt_gen(self, item_name: str, anomaly_type: str, knowledge: str = "") -> Content:
        """Write the local-editing prompt for the requested defect on image 1.

        Args:
            item_name: object category, e.g. 'transistor'
            anomaly_type: defect type, e.g. 'bent_lead'
            knowledge: optional retrieved defect knowledge to use
        """
        return self._call("prompt_gen", item_name=item_name, anomaly_type=anomaly_type, knowledge=knowledge)

    def image_gen(self, prompt: str) -> Content:
        """Edit image 1 with a local-editing prompt; the result becomes the next image index.

        Args:
            prompt: the local-editing prompt
        """
        return self._call("image_gen", prompt=prompt)

    def quality_eval(self, image_index: int, item_name: str = "", anomaly_type: str = "") -> Content:
        """Judge an attempt against image 1: location and quality scores (0-5) and a review naming its faults.

        Args:
            image_index: the attempt to judge (2 or more)
            item_name: object category
            anomaly_type: the requested defect type
        """
        return self._call("quality_eval", image_index=image_index, item_name=item_name, anomaly_type=anomaly_type)

    def knowledge_retrieval(self, item_name: str, anomaly_type: str, query: str = "") -> Content:
        """Retrieve reference knowledge on how this defect looks on this object.

        Args:
            item_name: object category
            anomaly_type: defect type
            query: optional free text to steer the search, e.g. the review
        """
        return self._call("knowledge_retrieval", item_name=item_name, anomaly_type=anomaly_type, query=query)

    def mask_gen(self, image_index: int) -> Content:
        """Segment the synthesized defect of an attempt into a binary mask.

        Args:
            image_index: the attempt to segment
        """
        return self._call("mask_gen", image_index=image_index)


def answer_evaluation(workspace: Any, tools: Mapping[str, Any], image_index: Any) -> dict[str, Any] | None:
    """The judge's verdict on the image an answer names (R_task), or None for an image that does not exist.
    (Not a method of the environment: TRL offers every public method to the policy as a tool.)"""
    images = workspace.images if workspace is not None else []
    if "quality_eval" not in tools or not isinstance(image_index, int) or not 2 <= image_index <= len(images):
        return None
    return tools["quality_eval"](workspace, image_index=image_index)


def environment_factory(tools: Mapping[str, Any], max_attempts: int, show_images: bool,
                        on_reset: Callable[[Any], None] | None = None) -> Callable[[], SynthesisEnvironment]:
    """TRL's ``environment_factory``: one environment per concurrent rollout, all sharing the loaded tool backends;
    ``on_reset`` hears of every rollout's task."""
    missing = {"prompt_gen", "image_gen", "quality_eval", "mask_gen"} - set(tools)
    if missing:
        raise ValueError(f"the environment needs the tools {', '.join(sorted(missing))}; check the profile")
    return lambda: SynthesisEnvironment(tools, max_attempts, show_images, on_reset)


# in the order TRL lists an environment's methods (inspect.getmembers: by name)
TOOL_METHODS = ("image_gen", "knowledge_retrieval", "mask_gen", "prompt_gen", "quality_eval")


def tool_schemas() -> list[dict[str, Any]]:
    """The JSON schemas TRL renders into the system prompt on this path (from the methods' signatures and
    docstrings); SFT data for such a policy carries the same ones, so both see one prompt."""
    from transformers.utils import get_json_schema

    environment = SynthesisEnvironment({})
    return [get_json_schema(getattr(environment, name)) for name in TOOL_METHODS]
