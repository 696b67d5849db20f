"""Model policy ``vlm``: an open VLM (or, with ``engine: text``, a text-only model such as SmolLM2) writes the next
agent message from the conversation.

The conversation is ``Episode.messages``; a message's ``images`` lists the 1-based indices of the images it
carries (image 1 with the task, each image_gen result with its tool response), taken from the episode's
workspace. Tool responses go to the model as user turns (every chat template has one), already in the paper's
``[Tool Response from <tool>]`` form, so the model sees exactly the text the protocol defines.

Import-light: the engines (torch, transformers, vllm) load when a policy is built, not when POLICIES is read.
"""
from __future__ import annotations

import json
from typing import Any

from ..episode import Episode


def episode_chat(episode: Episode) -> list[dict[str, Any]]:
    """The episode as neutral chat messages (see ``local_agent.tools.vlm``), images in place."""
    from ..tools.quality_eval import HeuristicJudge
    from ..tools.vlm import describe_edit, describe_normal, image_part, text

    ws = episode.workspace
    measurer = HeuristicJudge()
    chat: list[dict[str, Any]] = []
    for message in episode.messages:
        role = {"system": "system", "assistant": "assistant"}.get(message["role"], "user")
        parts: list[dict[str, Any]] = []
        for k in message.get("images", []):
            image = ws.images[k - 1]
            if k == 1:
                description = describe_normal(image, ws.category, 1)
            else:
                measured = measurer.evaluate(ws.normal, image, ws.category, ws.anomaly_type)
                description = describe_edit(measured["measures"], measured["faults"], k)
            parts.append(image_part(image, description))
        content = message["content"]
        if role == "system":
            content += "\nTool schemas: " + json.dumps(episode.tool_specs, ensure_ascii=False)
        parts.append(text(content))
        if chat and chat[-1]["role"] == role:  # templates want alternating turns: merge consecutive ones
            chat[-1]["content"].extend(parts)
        else:
            chat.append({"role": role, "content": parts})
    return chat


def episode_chat_native(episode: Episode, vision: bool) -> list[dict[str, Any]]:
    """The episode as GRPO's environment rollouts show it to a tool-calling policy (``training/environment.py``):
    the template's own tool calls and tool messages, image 1 after the task text and each image_gen result before
    its response (a VLM; a text model gets no image parts), a tool's error as that tool's message."""
    from ..protocol import native_tool_calls
    from ..tools.vlm import text

    ws = episode.workspace
    chat: list[dict[str, Any]] = []
    for message, native in zip(episode.messages, native_tool_calls(episode.messages)):
        content = native["content"]
        images = [{"type": "image", "image": ws.images[k - 1], "text": ""} for k in message.get("images", [])] \
            if vision else []
        if native["role"] == "user" and chat and chat[-1].get("tool_calls") and content.startswith("[Error]"):
            native = {"role": "tool", "name": chat[-1]["tool_calls"][0]["function"]["name"]}
        parts = [*images, text(content)] if native["role"] == "tool" else [text(content), *images]
        chat.append({**native, "content": parts})
    return chat


class VLMPolicy:
    """Policy ``vlm``: ``engine`` transformers | vllm | openai | text, plus that engine's options (``model``…).

    ``native_tools``: for a policy trained with GRPO's environment rollouts (or SFT with --native-tool-calls), the
    conversation is rendered as it was there: the chat template's tool calls, and the tools' schemas in the system
    prompt (transformers and text engines)."""

    default_engine = "transformers"

    def __init__(self, engine: str | None = None, max_new_tokens: int = 384, temperature: float = 0.0,
                 native_tools: bool = False, **engine_options: Any):
        from ..tools.vlm import ChatRole

        engine = engine or self.default_engine
        if native_tools and engine not in ("transformers", "text"):
            raise ValueError(f"policy vlm: native_tools needs the transformers or text engine, not {engine!r}")
        self.role = ChatRole(engine, max_new_tokens, temperature, **engine_options)
        self.schemas = None
        if native_tools:
            from ..training.environment import tool_schemas

            self.schemas = tool_schemas()

    def next_message(self, episode: Episode) -> str:
        seed = episode.workspace.seed * 1000 + len(episode.steps)
        if self.schemas is not None:
            return self.role.ask(episode_chat_native(episode, self.role.engine.vision), seed=seed, tools=self.schemas)
        return self.role.ask(episode_chat(episode), seed=seed)

