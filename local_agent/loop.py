"""The think → act → observe loop (the paper's Algorithm 1, driven by any policy).

Model mistakes (unparseable output, unknown tool, bad arguments, a ToolError) are recorded on the step and fed
back as an observation; infrastructure failures (a backend that cannot run) propagate and stop the sample.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from .episode import Episode, Step
from .protocol import ToolSpec, format_tool_response, parse_agent_message
from .tools.base import Tool, ToolError, Workspace


class Policy(Protocol):
    """Given the conversation so far, the next assistant message (protocol text)."""

    def next_message(self, episode: Episode) -> str: ...


def error_observation(error: str) -> str:
    return f"[Error] {error}. Reply with <thinking>…</thinking> and one <tool_call> or <answer>."


def run_episode(policy: Policy, tools: dict[str, Tool], image: np.ndarray, category: str, anomaly_type: str,
                seed: int = 0, max_attempts: int = 3, max_steps: int | None = None) -> Episode:
    """Run one episode. ``max_attempts`` bounds image_gen calls; ``max_steps`` bounds messages (runaway policies)."""
    workspace = Workspace(category=category, anomaly_type=anomaly_type, images=[image], seed=seed)
    specs = {name: ToolSpec(name, tool.parameters) for name, tool in tools.items()}
    episode = Episode.start(workspace, [t.spec() for t in tools.values()], max_attempts)
    max_steps = max_steps or 6 * max_attempts + 6
    t0 = time.perf_counter()
    for _ in range(max_steps):
        text = policy.next_message(episode)
        episode.messages.append({"role": "assistant", "content": text})
        parsed = parse_agent_message(text, specs)
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
        if call.name == "image_gen" and len(episode.attempts) >= max_attempts:
            step.error = f"attempt limit reached ({max_attempts} image_gen calls); call mask_gen and answer"
            episode.messages.append({"role": "user", "content": error_observation(step.error)})
            continue
        started = time.perf_counter()
        try:
            result: dict[str, Any] = tools[call.name](workspace, **call.arguments)
        except ToolError as e:
            step.error = str(e)
            step.seconds = time.perf_counter() - started
            episode.messages.append({"role": "user", "content": error_observation(f"{call.name}: {e}")})
            continue
        step.seconds = time.perf_counter() - started
        step.result = result
        message: dict[str, Any] = {"role": "tool", "name": call.name, "content": format_tool_response(call.name, result)}
        if call.name == "image_gen":
            message["images"] = [result["image_index"]]
        episode.messages.append(message)
    episode.seconds = time.perf_counter() - t0
    return episode
