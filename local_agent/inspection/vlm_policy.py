"""Policy ``vlm`` for inspection: an open VLM (transformers, vLLM, or a local OpenAI-compatible server) writes the
next inspector message.

The synthesis ``VLMPolicy`` describes images with the synthesis judge's measures (attempt vs normal image), which
mean nothing here; this policy sends the same kind of chat (``local_agent.tools.vlm`` message parts, images in
place, tool responses as user turns) with each image labelled by what it shows: the inspected image, a zoom of a
box of it, or a normal exemplar. The engines are the synthesis ones (``ChatRole``), loaded when the policy is built.
"""
from __future__ import annotations

import json
from typing import Any

from .episode import InspectionEpisode


def describe_view(episode: InspectionEpisode, index: int) -> str:
    ws = episode.workspace
    view, image = ws.views[index - 1], ws.images[index - 1]
    size = f"{image.shape[1]}x{image.shape[0]} px"
    box = "[" + ", ".join(f"{v:.2f}" for v in view.box) + "]"
    if view.kind == "query":
        return f"[image {index}: the inspected {ws.category.replace('_', ' ')}, {size}]"
    if view.kind == "zoom":
        return f"[image {index}: zoom of image 1, box {box}, {size}]"
    return f"[image {index}: normal exemplar (gallery #{view.gallery_id}), box {box}, {size}]"


def inspection_chat(episode: InspectionEpisode) -> list[dict[str, Any]]:
    """The episode as neutral chat messages with image parts; consecutive same-role turns merged."""
    from ..tools.vlm import image_part, text

    chat: list[dict[str, Any]] = []
    for message in episode.messages:
        role = {"system": "system", "assistant": "assistant"}.get(message["role"], "user")
        parts = [image_part(episode.workspace.images[k - 1], describe_view(episode, k))
                 for k in message.get("images", [])]
        content = message["content"]
        if role == "system":
            content += "\nTool schemas: " + json.dumps(episode.tool_specs, ensure_ascii=False)
        parts.append(text(content))
        if chat and chat[-1]["role"] == role:
            chat[-1]["content"].extend(parts)
        else:
            chat.append({"role": role, "content": parts})
    return chat


class InspectionVLMPolicy:
    """``engine`` transformers | vllm | openai | text, plus that engine's options (``model``, ``base_url``…)."""

    def __init__(self, engine: str | None = None, max_new_tokens: int = 384, temperature: float = 0.0,
                 **engine_options: Any):
        from ..tools.vlm import ChatRole

        self.role = ChatRole(engine or "transformers", max_new_tokens, temperature, **engine_options)

    def next_message(self, episode: InspectionEpisode) -> str:
        return self.role.ask(inspection_chat(episode), seed=len(episode.steps))
