"""The paper's reward terms on hand-made episodes, and on a real scripted episode."""
from __future__ import annotations

import pytest

from local_agent.protocol import format_answer, format_tool_call, format_tool_response
from local_agent.training.rewards import (LEGAL_TRANSITIONS, RewardConfig, behaviour_reward, is_legal,
                                          knowledge_bonus, length_penalty, make_reward_funcs, read_episode,
                                          reflection_reward, reward_terms, task_reward, transition_reward)

ITEM = {"item_name": "grid", "anomaly_type": "thread"}


def call(name, **args):
    return {"role": "assistant", "content": format_tool_call(name, args, "t")}


def tool(name, result):
    return {"role": "tool", "content": format_tool_response(name, result)}


def judge(index, location, quality, passed=False):
    return tool("quality_eval", {"image_index": index, "location_score": location, "quality_score": quality,
                                 "passed": passed, "faults": [], "review": "r"})


def answer(index, status="success"):
    return {"role": "assistant", "content": format_answer(
        {"status": status, "final_image_index": index, "mask_generated": True, "synthesis_logic": "x"})}


def episode(scores, kr_after=None, final=None):
    """A legal Algorithm-1 episode with one attempt per (location, quality) pair; KR after attempt ``kr_after``."""
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
            call("prompt_gen", **ITEM), tool("prompt_gen", {"prompt": "p"})]
    for m, (loc, qual) in enumerate(scores):
        k = m + 2
        msgs += [call("image_gen", prompt="p"), tool("image_gen", {"image_index": k}),
                 call("quality_eval", image_index=k, **ITEM), judge(k, loc, qual, loc >= 4 and qual >= 4)]
        if kr_after == m:
            msgs += [call("knowledge_retrieval", **ITEM), tool("knowledge_retrieval", {"passages": []})]
    last = final or len(scores) + 1
    msgs += [call("mask_gen", image_index=last), tool("mask_gen", {"image_index": last, "empty": False}),
             answer(last)]
    return msgs


def test_transition_table_is_algorithm_one():
    assert LEGAL_TRANSITIONS["start"] == {"prompt_gen"}
    assert LEGAL_TRANSITIONS["quality_eval"] == {"image_gen", "knowledge_retrieval", "mask_gen"}
    assert is_legal("knowledge_retrieval", "image_gen") and not is_legal("knowledge_retrieval", "mask_gen")
    assert is_legal("mask_gen", "answer") and not is_legal("image_gen", "mask_gen")


def test_task_reward_is_final_image_score():
    view = read_episode(episode([(2, 1), (5, 4)]))
    assert task_reward(view) == pytest.approx(0.9)
    # answering with the weaker attempt scores that attempt
    assert task_reward(read_episode(episode([(2, 1), (5, 4)], final=2))) == pytest.approx(0.3)
    # an explicit judge result for the final image overrides the conversation
    assert task_reward(view, {"location_score": 1, "quality_score": 0}) == pytest.approx(0.1)
    # no answer, no task reward
    assert task_reward(read_episode(episode([(5, 5)])[:-1])) == 0.0


def test_reflection_reward_sums_only_improvements():
    assert reflection_reward(read_episode(episode([(1, 1), (3, 2), (5, 5)]))) == pytest.approx(0.3 + 0.5)
    assert reflection_reward(read_episode(episode([(5, 5), (1, 1), (3, 3)]))) == pytest.approx(0.4)
    assert reflection_reward(read_episode(episode([(4, 4)]))) == 0.0


def test_behaviour_reward_terms():
    cfg = RewardConfig(phi_legal=0.1, phi_illegal=-0.5, lambda_kr=0.5, delta=0.6, lambda_t=0.2, t_max=10)
    view = read_episode(episode([(1, 1), (5, 5)], kr_after=0))
    # actions: PG IG QE KR IG QE MG answer: 8 legal transitions
    assert view.actions == ["prompt_gen", "image_gen", "quality_eval", "knowledge_retrieval", "image_gen",
                            "quality_eval", "mask_gen", "answer"]
    assert transition_reward(view, cfg) == pytest.approx(0.8)
    assert knowledge_bonus(view, cfg) == pytest.approx(0.5)  # S = 0.2 < δ before KR
    assert view.format_ok
    assert length_penalty(view, cfg) == 0.0
    assert behaviour_reward(view, cfg) == pytest.approx(0.8 + 0.5 + 1.0)
    # KR after a good attempt earns nothing
    high = read_episode(episode([(4, 3), (5, 5)], kr_after=0))
    assert knowledge_bonus(high, cfg) == 0.0
    # a long episode pays λ_T per action beyond T_max
    long = read_episode(episode([(1, 1), (2, 2), (3, 3)], kr_after=0))
    assert len(long.actions) == 10
    assert length_penalty(long, RewardConfig(lambda_t=0.2, t_max=10)) == 0.0
    assert length_penalty(long, RewardConfig(lambda_t=0.2, t_max=8)) == pytest.approx(0.4)


def test_illegal_and_unparseable_actions_cost():
    cfg = RewardConfig()
    msgs = [{"role": "user", "content": "u"}, call("image_gen", prompt="p"), tool("image_gen", {"image_index": 2}),
            {"role": "assistant", "content": "I will now answer"}, {"role": "user", "content": "[Error] ..."},
            call("mask_gen", image_index=2), tool("mask_gen", {"image_index": 2}), answer(2)]
    view = read_episode(msgs)
    assert view.actions == ["image_gen", "invalid", "mask_gen", "answer"]
    assert not view.format_ok
    # start→IG illegal, IG→invalid illegal, invalid→MG illegal, MG→answer legal
    assert transition_reward(view, cfg) == pytest.approx(3 * cfg.phi_illegal + cfg.phi_legal)
    assert task_reward(view) == 0.0  # image 2 was never judged


def test_trl_callables_weight_and_sum_to_total():
    cfg = RewardConfig(alpha=1.0, beta=0.5, gamma=0.2)
    eps = [episode([(1, 1), (5, 5)], kr_after=0), episode([(2, 2)])]
    prompts = [e[:2] for e in eps]
    completions = [e[2:] for e in eps]
    funcs = make_reward_funcs(cfg)
    summed = [sum(vals) for vals in zip(*(f(prompts, completions) for f in funcs))]
    assert summed == pytest.approx([reward_terms(e, cfg)["total"] for e in eps])
    # rollout extras (full episode messages) take precedence over prompt + completion text
    only_task = make_reward_funcs(cfg, ("task",))[0]
    assert only_task(["x", "y"], ["a", "b"], episode_messages=eps) == pytest.approx([1.0, 0.4])
    with pytest.raises(ValueError, match="unknown reward term"):
        make_reward_funcs(cfg, ("speed",))


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("reward:\n  alpha: 2\n  delta: 0.5\n")
    assert RewardConfig.from_yaml(path).alpha == 2 and RewardConfig.from_yaml(path).delta == 0.5
    with pytest.raises(ValueError, match="unknown reward option"):
        RewardConfig.from_mapping({"alpah": 1})


def test_real_scripted_episode_scores(grid_image):
    from local_agent.loop import run_episode
    from local_agent.policies.scripted import ScriptedPolicy
    from local_agent.profile import load_profile
    from local_agent.tools import build_tools

    tools = build_tools(load_profile("default")["tools"])
    ep = run_episode(ScriptedPolicy(), tools, grid_image, "grid", "thread", seed=3, max_attempts=3)
    view = read_episode(ep.messages)
    assert view.format_ok
    assert all(is_legal(a, b) for a, b in zip(["start", *view.actions], view.actions))
    terms = reward_terms(ep.messages)
    final = ep.evaluations()[ep.final_index]
    assert terms["task"] == pytest.approx((final["location_score"] + final["quality_score"]) / 10)
