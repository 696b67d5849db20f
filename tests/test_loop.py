"""The loop end to end with the scripted policy (Algorithm 1), and recovery from a model's mistakes."""
import json

import pytest

from local_agent.loop import run_episode
from local_agent.policies.scripted import ScriptedPolicy, refine_prompt
from local_agent.profile import load_profile
from local_agent.protocol import format_answer, format_tool_call, parse_agent_message
from local_agent.tools import build_tools
from local_agent.tools.knowledge_retrieval import KnowledgeRetrieval

LEGAL_NEXT = {
    None: {"prompt_gen"}, "prompt_gen": {"image_gen"}, "image_gen": {"quality_eval"},
    "quality_eval": {"image_gen", "knowledge_retrieval", "mask_gen"}, "knowledge_retrieval": {"image_gen"},
    "mask_gen": {"answer"},
}


def tool_sequence(episode):
    return [s.tool or "answer" for s in episode.steps if not s.error]


def assert_legal(seq):
    prev = None
    for a in seq:
        assert a in LEGAL_NEXT[prev], f"illegal transition {prev} -> {a} in {seq}"
        prev = a
    assert seq[-1] == "answer"


@pytest.fixture(scope="module")
def tools():
    return build_tools(load_profile()["tools"])


@pytest.mark.parametrize("category, anomaly", [("grid", "bent"), ("grid", "metal_contamination"), ("grid", "thread"),
                                               ("transistor", "bent_lead"), ("transistor", "damaged_case"),
                                               ("transistor", "cut_lead"), ("transistor", "misplaced")])
def test_scripted_episode_end_to_end(tools, category, anomaly, grid_image, transistor_image):
    image = grid_image if category == "grid" else transistor_image
    ep = run_episode(ScriptedPolicy(), tools, image, category, anomaly, seed=4, max_attempts=3)
    assert_legal(tool_sequence(ep))
    for m in ep.messages:
        if m["role"] == "assistant":
            assert parse_agent_message(m["content"]).error is None
    assert ep.answer["final_image_index"] >= 2 and ep.final_index in ep.workspace.masks
    assert ep.answer["status"] in ("success", "failed")
    assert ep.answer["mask_generated"] is True
    # image_gen always edits image 1: every attempt differs from the normal image only locally
    for k in ep.attempts:
        assert ep.workspace.images[k - 1].shape == image.shape
    record = json.loads(json.dumps(ep.to_record({1: "normal.png"})))
    assert record["messages"][0]["role"] == "system" and record["messages"][1]["images"] == [1]
    assert record["scores"] and all(0 <= s["location"] <= 5 and 0 <= s["quality"] <= 5 for s in record["scores"])


class ReplayPolicy:
    """A policy that says given messages in order: stands in for a model's raw output."""

    def __init__(self, messages):
        self.messages = list(messages)

    def next_message(self, episode):
        return self.messages.pop(0)


def test_malformed_output_becomes_observations_and_the_episode_recovers(tools, grid_image):
    prompt = "Using the provided image, change only the centre of the grid to add a clearly visible crack. Keep the rest"
    policy = ReplayPolicy([
        "I think I should edit the image now.",                                            # no tags
        '<tool_call>{"name": "image_gen", "arguments": {"prompt": 3}}</tool_call>',       # wrong type
        '<tool_call>{"name": "paint", "arguments": {}}</tool_call>',                      # unknown tool
        '<tool_call>{"name": "quality_eval", "arguments": {"image_index": 7}}</tool_call>',  # tool error
        format_tool_call("image_gen", {"prompt": prompt}) + format_tool_call("image_gen", {"prompt": prompt}),
        format_tool_call("image_gen", {"prompt": prompt}),
        format_tool_call("mask_gen", {"image_index": 2}),
        format_answer({"status": "success", "final_image_index": 2, "mask_generated": True, "synthesis_logic": "x"}),
    ])
    ep = run_episode(policy, tools, grid_image, "grid", "crack", seed=1)
    errors = [s.error for s in ep.steps if s.error]
    assert len(errors) == 5
    assert "no <tool_call>" in errors[0] and "must be a string" in errors[1] and "unknown tool" in errors[2]
    assert "does not exist" in errors[3] and "one action per message" in errors[4]
    observations = [m["content"] for m in ep.messages if m["role"] == "user"][1:]
    assert len(observations) == 5 and all(o.startswith("[Error]") for o in observations)
    assert ep.answer["final_image_index"] == 2 and 2 in ep.workspace.masks
    assert not ep.passed, "never judged: an answer alone does not make a sample pass"


def test_attempt_limit_and_step_limit(tools, grid_image):
    prompt = "Using the provided image, change only the centre to add a crack. Keep the rest"
    policy = ReplayPolicy([format_tool_call("image_gen", {"prompt": prompt})] * 50)
    ep = run_episode(policy, tools, grid_image, "grid", "crack", max_attempts=2, max_steps=6)
    assert len(ep.attempts) == 2 and ep.answer is None and len(ep.steps) == 6
    assert "attempt limit" in ep.steps[2].error


class FixedKnowledge:
    """A KR backend over one in-test passage (the faiss backend has its own tests)."""

    def retrieve(self, item_name, anomaly_type, query, k):
        return [{"text": "Grid glue residue is a brown, glossy drop that bridges two wires. It hardens.",
                 "source": "test.md", "score": 1.0}]


def test_failed_attempts_use_knowledge_then_mask_the_best(grid_image):
    profile = load_profile()
    profile["tools"]["quality_eval"].update(pass_location=6, pass_quality=6)  # nothing can pass
    tools = build_tools(profile["tools"])
    tools["knowledge_retrieval"] = KnowledgeRetrieval(FixedKnowledge())
    ep = run_episode(ScriptedPolicy(kr_threshold=6), tools, grid_image, "grid", "glue", seed=2, max_attempts=3)
    seq = tool_sequence(ep)
    assert_legal(seq)
    assert seq.count("image_gen") == 3 and seq.count("knowledge_retrieval") == 1
    kr_at = seq.index("knowledge_retrieval")
    next_prompt = ep.steps[kr_at + 1].arguments["prompt"]
    assert "brown, glossy drop" in next_prompt and next_prompt.index("brown") < next_prompt.index("Keep the rest")
    assert ep.answer["status"] == "failed" and not ep.passed
    assert ep.final_index in ep.attempts and ep.final_index in ep.workspace.masks


def test_refine_acts_on_each_fault():
    p = ("Using the provided image, change only the upper left area of the grid to add subtle small crack on the "
         "light surface. Keep the rest of the image unchanged.")
    r = refine_prompt(p, ["too faint", "off the object", "hard seam"], "review")
    head, tail = r.split(" Keep the rest")
    assert "more pronounced" in head and "blend it smoothly" in head and "the centre" in head
    assert "upper left" not in head and tail == " of the image unchanged."
    again = refine_prompt(r, ["too large"], "review")
    assert again.count("Refinement:") == 1 and "make it small" in again and "more pronounced" not in again
    from local_agent.tools.painter import parse_prompt

    assert parse_prompt(r).intensity == 1.0 and parse_prompt(r).soft and parse_prompt(r).location == ("centre",)
