"""The paper's GRPO reward, R = α·R_task + β·R_ref + γ·R_beh, as plain functions of one episode's conversation.

An episode is read from its chat messages only (``Episode.messages``, a trajectory record's ``messages`` or a GRPO
rollout), so the same code scores scripted runs, SFT data and the policy's rollouts:

- ``S`` is the normalised judge score of one attempt: ``(location_score + quality_score) / 10`` in [0, 1]
  (both scores are the QE rubric's 0-5 integers).
- ``R_task = S_final``: the judge score of the image the answer names (``final_image_index``); 0 when the episode
  never answers or names an image that was not judged (a caller that has the image may pass its evaluation).
- ``R_ref = Σ_m max(0, S_m − S_{m−1})``: the improvement over successive judged attempts; never negative, so a
  failed refinement costs nothing but a good one pays.
- ``R_beh = Σ_t Φ(a_{t−1}, a_t) + λ_KR·Σ_t [a_t = KR ∧ S_t < δ] + 𝟙[format ok] − λ_T·max(0, T − T_max)``:
  Φ pays ``phi_legal`` for a transition of Algorithm 1's table and ``phi_illegal`` (negative) for any other;
  KR is rewarded only when called after an attempt scoring under δ; format is ok when every agent message parses
  and the episode ends with an answer; T is the number of agent actions (tool calls and the answer).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..protocol import parse_agent_message, parse_tool_response

START, ANSWER, INVALID = "start", "answer", "invalid"

# Algorithm 1 as a transition table: which action may follow which.
LEGAL_TRANSITIONS: dict[str, frozenset[str]] = {
    START: frozenset({"prompt_gen"}),
    "prompt_gen": frozenset({"image_gen"}),
    "image_gen": frozenset({"quality_eval"}),
    "quality_eval": frozenset({"image_gen", "knowledge_retrieval", "mask_gen"}),
    "knowledge_retrieval": frozenset({"image_gen"}),
    "mask_gen": frozenset({ANSWER}),
}


def is_legal(previous: str, action: str) -> bool:
    return action in LEGAL_TRANSITIONS.get(previous, frozenset())


@dataclass
class RewardConfig:
    """Weights and thresholds of R. Scores (S, δ) are on the normalised 0-1 scale."""

    alpha: float = 1.0        # R_task weight
    beta: float = 0.5         # R_ref weight
    gamma: float = 0.2        # R_beh weight
    lambda_kr: float = 0.5    # bonus for knowledge retrieval after a low score
    delta: float = 0.6        # "low score" threshold δ for that bonus
    lambda_t: float = 0.2     # penalty per action beyond T_max
    t_max: int = 10           # Triple generation with KR is 9 tool calls + the answer
    phi_legal: float = 0.1    # Φ for a transition in LEGAL_TRANSITIONS
    phi_illegal: float = -0.5  # Φ for any other transition (including unparseable messages)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "RewardConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown reward option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: Path) -> "RewardConfig":
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_mapping(data.get("reward", data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpisodeView:
    """What the rewards need from a conversation: the agent's actions, the judge's scores, the answer."""

    actions: list[str]                  # tool name, "answer" or "invalid", one per agent message
    score_before: list[float | None]    # S of the latest judged attempt when each action was taken
    attempt_scores: list[float]         # S of each judge call, in order
    scores_by_image: dict[int, float]   # latest S per image index
    answer: dict[str, Any] | None
    format_ok: bool


def normalised_score(evaluation: Mapping[str, Any]) -> float:
    """S = (location + quality) / 10: the QE rubric's two 0-5 scores on one 0-1 scale."""
    return (float(evaluation["location_score"]) + float(evaluation["quality_score"])) / 10.0


def read_episode(messages: Iterable[Mapping[str, Any]]) -> EpisodeView:
    """Parse a conversation (system/user/assistant/tool messages) into an :class:`EpisodeView`."""
    actions: list[str] = []
    before: list[float | None] = []
    scores: list[float] = []
    by_image: dict[int, float] = {}
    answer = None
    format_ok = True
    current: float | None = None
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role == "assistant":
            parsed = parse_agent_message(content if isinstance(content, str) else "")
            before.append(current)
            if parsed.error is not None:
                actions.append(INVALID)
                format_ok = False
            elif parsed.answer is not None:
                actions.append(ANSWER)
                answer = parsed.answer
            else:
                actions.append(parsed.call.name)
        elif isinstance(content, str) and content.startswith("[Tool Response from quality_eval]"):
            try:
                _, body = parse_tool_response(content)
                s = normalised_score(body)
            except (ValueError, KeyError, TypeError):
                continue
            scores.append(s)
            current = s
            if isinstance(body.get("image_index"), int):
                by_image[body["image_index"]] = s
    if answer is None:
        format_ok = False
    return EpisodeView(actions, before, scores, by_image, answer, format_ok)


# ------------------------------------------------------------------------------------------ the three terms
def task_reward(view: EpisodeView, final_evaluation: Mapping[str, Any] | None = None) -> float:
    """R_task = S_final. ``final_evaluation`` (a judge result for the answered image) overrides the conversation."""
    if final_evaluation is not None:
        return normalised_score(final_evaluation)
    if view.answer is None:
        return 0.0
    index = view.answer.get("final_image_index")
    return view.scores_by_image.get(index, 0.0) if isinstance(index, int) else 0.0


def reflection_reward(view: EpisodeView) -> float:
    """R_ref = Σ_m max(0, S_m − S_{m−1}) over successive judged attempts."""
    s = view.attempt_scores
    return float(sum(max(0.0, b - a) for a, b in zip(s, s[1:])))


def transition_reward(view: EpisodeView, config: RewardConfig) -> float:
    """Σ_t Φ(a_{t−1}, a_t) with a_0 = start."""
    previous = START
    total = 0.0
    for action in view.actions:
        total += config.phi_legal if is_legal(previous, action) else config.phi_illegal
        previous = action
    return total


def knowledge_bonus(view: EpisodeView, config: RewardConfig) -> float:
    """λ_KR·Σ_t [a_t = KR ∧ S_t < δ]: retrieval pays only when the last attempt scored low."""
    return config.lambda_kr * sum(1 for a, s in zip(view.actions, view.score_before)
                                  if a == "knowledge_retrieval" and s is not None and s < config.delta)


def length_penalty(view: EpisodeView, config: RewardConfig) -> float:
    """λ_T·max(0, T − T_max)."""
    return config.lambda_t * max(0, len(view.actions) - config.t_max)


def behaviour_reward(view: EpisodeView, config: RewardConfig) -> float:
    """R_beh = Σ_t Φ(a_{t−1}, a_t) + λ_KR·[a_t = KR ∧ S_t < δ] + 𝟙[format ok] − λ_T·max(0, T − T_max)."""
    return (transition_reward(view, config) + knowledge_bonus(view, config) + float(view.format_ok)
            - length_penalty(view, config))


def total_reward(view: EpisodeView, config: RewardConfig, final_evaluation: Mapping[str, Any] | None = None) -> float:
    return (config.alpha * task_reward(view, final_evaluation) + config.beta * reflection_reward(view)
            + config.gamma * behaviour_reward(view, config))


def reward_terms(messages: Iterable[Mapping[str, Any]], config: RewardConfig | None = None,
                 final_evaluation: Mapping[str, Any] | None = None) -> dict[str, float]:
    """All terms of one episode, for logs and reports."""
    config = config or RewardConfig()
    view = read_episode(messages)
    return {"task": task_reward(view, final_evaluation), "reflection": reflection_reward(view),
            "behaviour": behaviour_reward(view, config), "total": total_reward(view, config, final_evaluation)}


# ------------------------------------------------------------------------------------------ TRL-style callables
def _conversation(prompt: Any, completion: Any, index: int, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The whole episode for one sample: a rollout's ``episode_messages`` when given, else prompt + completion
    (TRL's tool-calling messages translated to the paper's protocol)."""
    from ..protocol import protocol_messages

    environments = kwargs.get("environments")
    if environments is not None and environments[index].failure:
        raise RuntimeError(f"GRPO rollout stopped by a tool backend, not the policy: {environments[index].failure}")
    episodes = kwargs.get("episode_messages")
    if episodes is not None:
        return list(episodes[index])
    prompt_msgs = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    completion_msgs = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
    return protocol_messages([*prompt_msgs, *completion_msgs])


def _final_evaluation(index: int, kwargs: Mapping[str, Any], view: EpisodeView) -> Mapping[str, Any] | None:
    """The judge's verdict on the answered image: from the rollout, or asked of the episode's TRL environment."""
    evaluations = kwargs.get("final_evaluation")
    if evaluations is not None:
        return evaluations[index]
    environments = kwargs.get("environments")
    if environments is not None and view.answer is not None:
        from .environment import answer_evaluation

        environment = environments[index]
        return answer_evaluation(environment.workspace, environment.tools, view.answer.get("final_image_index"))
    return None


def make_reward_funcs(config: RewardConfig | None = None, terms: tuple[str, ...] = ("task", "reflection", "behaviour")
                      ) -> list[Callable[..., list[float]]]:
    """One ``(prompts, completions, **kwargs) -> list[float]`` callable per term, already weighted (α, β, γ).

    TRL sums reward functions, so passing all three gives R; passing a prefix gives Table 5's ablation rows.
    """
    config = config or RewardConfig()

    def r_task(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        views = [read_episode(_conversation(p, c, i, kwargs)) for i, (p, c) in enumerate(zip(prompts, completions))]
        return [config.alpha * task_reward(v, _final_evaluation(i, kwargs, v)) for i, v in enumerate(views)]

    def r_ref(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [config.beta * reflection_reward(read_episode(_conversation(p, c, i, kwargs)))
                for i, (p, c) in enumerate(zip(prompts, completions))]

    def r_beh(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [config.gamma * behaviour_reward(read_episode(_conversation(p, c, i, kwargs)), config)
                for i, (p, c) in enumerate(zip(prompts, completions))]

    by_name = {"task": r_task, "reflection": r_ref, "behaviour": r_beh}
    unknown = [t for t in terms if t not in by_name]
    if unknown:
        raise ValueError(f"unknown reward term(s): {', '.join(unknown)}; choose from task, reflection, behaviour")
    return [by_name[t] for t in terms]

