"""Multi-turn GRPO rollouts through the real agent loop and the real tools, traced token by token.

TRL's built-in tool loop needs a chat template that parses tool calls; our protocol is the paper's
``<tool_call>`` JSON, so we give GRPOTrainer a ``rollout_func`` instead. Each rollout is ``loop.run_episode`` with a
policy that generates with the model being trained and records, for the trainer: the prompt ids (system + task),
the completion ids (every agent turn and every tool response in between, exactly as the model saw them) and an
``env_mask`` that is 1 on the model's own tokens and 0 on tool-response tokens, so only the agent's tokens carry
the policy gradient (TRL's tool_mask).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..smollm import GenerationSettings, chat_messages, generate_turn


@dataclass(frozen=True)
class Task:
    """One GRPO prompt: a normal image, its category and the anomaly type to synthesise."""

    source: str
    category: str
    anomaly_type: str
    seed: int

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class TracingPolicy:
    """A policy that writes with ``model`` and keeps the exact token stream of the episode."""

    def __init__(self, model: Any, tokenizer: Any, settings: GenerationSettings):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.prompt_ids: list[int] | None = None
        self.completion_ids: list[int] = []
        self.env_mask: list[int] = []
        self._rendered = ""  # the conversation up to the last agent turn, as the template renders it

    def _render(self, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(chat_messages(messages), tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def next_message(self, episode: Any) -> str:
        full = self._render(episode.messages, True)
        if self.prompt_ids is None:
            self.prompt_ids = self._encode(full)
        else:
            if not full.startswith(self._rendered):
                raise RuntimeError("the chat template is not prefix-preserving; multi-turn rollouts need one")
            env = self._encode(full[len(self._rendered):])
            self.completion_ids += env
            self.env_mask += [0] * len(env)
        new = generate_turn(self.model, self.tokenizer, self.prompt_ids + self.completion_ids, self.settings)
        self.completion_ids += new
        self.env_mask += [1] * len(new)
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        rendered_turn = self._render([*episode.messages, {"role": "assistant", "content": text}], False)
        # What the template puts after the agent's text (e.g. "<|im_end|>\n") and the model did not write itself:
        eos = self.tokenizer.eos_token or ""
        closing = rendered_turn[len(full) + len(text):]
        if new and new[-1] == self.tokenizer.eos_token_id and closing.startswith(eos):
            closing = closing[len(eos):]
        tail = self._encode(closing) if closing else []
        self.completion_ids += tail
        self.env_mask += [0] * len(tail)
        self._rendered = rendered_turn
        return text


def run_policy_episode(policy: Any, tools: dict[str, Any], task: Task, max_attempts: int,
                       max_turns: int) -> dict[str, Any]:
    """One episode of any policy on a task: its messages and the judge's verdict on the answered image."""
    import time

    from ..images import load_image
    from ..loop import run_episode
    from .environment import answer_evaluation

    started = time.perf_counter()
    episode = run_episode(policy, tools, load_image(Path(task.source)).rgb, task.category, task.anomaly_type,
                          seed=task.seed, max_attempts=max_attempts, max_steps=max_turns)
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in episode.messages],
            "final_evaluation": answer_evaluation(episode.workspace, tools, episode.final_index),
            "answered": episode.answer is not None, "seconds": time.perf_counter() - started,
            "generated_tokens": None}


def run_traced_episode(model: Any, tokenizer: Any, tools: dict[str, Any], task: Task, settings: GenerationSettings,
                       max_attempts: int, max_turns: int) -> dict[str, Any]:
    """One rollout: token trace, the episode's messages, and the judge's verdict on the answered image."""
    policy = TracingPolicy(model, tokenizer, settings)
    result = run_policy_episode(policy, tools, task, max_attempts, max_turns)
    completion, mask = list(policy.completion_ids), list(policy.env_mask)
    if tokenizer.eos_token_id in completion:  # end on the agent's last end-of-turn, not the template's newline
        while completion[-1] != tokenizer.eos_token_id and mask[-1] == 0:
            completion.pop()
            mask.pop()
    if not completion:
        completion, mask = [tokenizer.eos_token_id], [0]
    return {**result, "prompt_ids": policy.prompt_ids, "completion_ids": completion, "env_mask": mask,
            "generated_tokens": sum(mask)}


def task_of(prompt: list[dict[str, Any]]) -> Task:
    for message in prompt:
        if message.get("task"):
            return Task(**json.loads(message["task"]))
    raise ValueError("GRPO prompt carries no task (a user message with a 'task' field)")


def make_rollout_func(tools: dict[str, Any], settings: GenerationSettings, max_attempts: int, max_turns: int,
                      on_rollout: Callable[[dict[str, Any]], None] | None = None) -> Callable[..., dict[str, Any]]:
    """GRPOTrainer's ``rollout_func(prompts, trainer)``: one traced episode per prompt (groups arrive repeated)."""

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        training = model.training
        model.eval()
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "env_mask": [],
                                     "episode_messages": [], "final_evaluation": []}
        try:
            for prompt in prompts:
                r = run_traced_episode(model, tokenizer, tools, task_of(prompt), settings, max_attempts, max_turns)
                out["prompt_ids"].append(r["prompt_ids"])
                out["completion_ids"].append(r["completion_ids"])
                out["env_mask"].append(r["env_mask"])
                out["episode_messages"].append(r["messages"])
                out["final_evaluation"].append(r["final_evaluation"])
                if on_rollout:
                    on_rollout(r)
        finally:
            model.train(training)
        return {**out, "logprobs": None}

    return rollout


def sample_tasks(data: Path, n: int, seed: int, images_per_category: int = 8) -> list[Task]:
    """``n`` tasks over the MVTec categories under ``data``: normal images from train/good, types from test/."""
    data = Path(data)
    categories = [data] if (data / "train" / "good").is_dir() else sorted(
        p for p in data.iterdir() if (p / "train" / "good").is_dir())
    if not categories:
        raise ValueError(f"{data}: no MVTec category folder (with train/good) found")
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n):
        cat = categories[i % len(categories)]
        types = sorted(p.name for p in (cat / "test").iterdir() if p.is_dir() and p.name != "good")
        goods = sorted((cat / "train" / "good").glob("*.png"))[:images_per_category]
        if not types or not goods:
            raise ValueError(f"{cat}: needs train/good images and test/<type> folders")
        tasks.append(Task(str(goods[int(rng.integers(len(goods)))]), cat.name, str(rng.choice(types)),
                          int(rng.integers(2**31 - 1))))
    return tasks
