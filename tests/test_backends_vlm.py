"""VLM roles (PG, QE, policy) on a tiny Idefics3 model and on an OpenAI-compatible server faked on loopback;
the full loop with every open-weight backend pointing at tiny models."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from tiny_backends import build_all, tiny_profile

from local_agent.episode import Episode
from local_agent.loop import run_episode
from local_agent.policies import POLICIES
from local_agent.profile import build_policy
from local_agent.protocol import format_answer, format_tool_call, parse_agent_message
from local_agent.tools import build_tools
from local_agent.tools.base import BackendUnavailable, ToolError
from local_agent.tools.vlm import (PROMPT_HEAD, VLLMEngine, VLMJudge, VLMPromptWriter, clean_prompt, load_engine,
                                   parse_judgement)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


@pytest.fixture(scope="session")
def small_transistor(transistor_image):
    return cv2.resize(transistor_image, (64, 64), interpolation=cv2.INTER_AREA)


class FakeServer:
    """An OpenAI-compatible chat server on 127.0.0.1 that answers from a queue and records every request."""

    def __init__(self, replies: list[str]):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                reply = {"choices": [{"message": {"role": "assistant", "content": outer.replies.pop(0)}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("reply, expected", [
    ('{"location_score": 4, "quality_score": 3, "review": "blend it"}', (4, 3, "blend it")),
    ('Sure!\n```json\n{"location_score": "5/5", "quality_score": 2.6, "review": "too {bright}"}\n```',
     (5, 3, "too {bright}")),
    ("{'location_score': 7, 'quality_score': -1, 'review': 'x'}", (5, 0, "x")),
    ("location_score: 2\nquality_score = 1\nreview: it is off the object", (2, 1, "it is off the object")),
])
def test_judgement_parsing_is_robust(reply, expected):
    verdict = parse_judgement(reply)
    assert (verdict["location_score"], verdict["quality_score"], verdict["review"]) == expected


@pytest.mark.parametrize("reply", ["", "no scores here", '{"location_score": 3}', "{broken json"])
def test_unparseable_judgement_is_none(reply):
    assert parse_judgement(reply) is None


def test_prompt_is_cleaned_into_the_paper_frame():
    assert clean_prompt('Here it is: "Using the provided image, change only the rim to add a dent."') == (
        "Using the provided image, change only the rim to add a dent. Keep the rest of the image unchanged.")
    assert clean_prompt("add a dent on the rim").startswith(PROMPT_HEAD)
    with pytest.raises(ToolError):
        clean_prompt("  ")


def test_tiny_vlm_prompt_writer_and_judge(models, small_transistor):
    writer = VLMPromptWriter(model=str(models["vlm"]), max_new_tokens=10)
    prompt = writer.generate(small_transistor, "transistor", "bent_lead", "Leads bend under force.",
                             np.random.default_rng(0))
    assert prompt.startswith(PROMPT_HEAD) and "Keep the rest" in prompt
    judge = VLMJudge(model=str(models["vlm"]), max_new_tokens=10)
    assert judge.engine is writer.engine  # one copy of the model serves both roles
    with pytest.raises(ToolError, match="no location/quality scores twice"):  # random weights write no JSON
        judge.evaluate(small_transistor, small_transistor, "transistor", "bent_lead")


def test_missing_vlm_folder_is_one_line(tmp_path, models):
    with pytest.raises(BackendUnavailable, match=r"config\.json.*local-agent doctor"):
        VLMPromptWriter(model=str(tmp_path / "qwen2.5-vl"))
    folder = tmp_path / "no-processor"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_bytes((models["vlm"] / name).read_bytes())
    with pytest.raises(BackendUnavailable, match="preprocessor_config.json"):
        VLMJudge(model=str(folder))


def test_vllm_engine_says_it_is_not_installed(models):
    with pytest.raises(BackendUnavailable, match="vllm is not installed"):
        VLLMEngine(model=str(models["vlm"]))


def test_judge_and_writer_over_a_local_openai_server(small_transistor):
    server = FakeServer(["I think it is fine.",  # no JSON: the judge retries once
                         '{"location_score": 5, "quality_score": 4, "review": "Looks real."}',
                         "Using the provided image, change only the left lead to add a bend. Keep the rest unchanged."])
    try:
        judge = VLMJudge(engine="openai", base_url=server.url, model="weights/qwen2.5-vl-7b-instruct")
        edited = small_transistor.copy()
        edited[25:35, 28:34] = 30
        result = judge.evaluate(small_transistor, edited, "transistor", "bent_lead")
        assert (result["location_score"], result["quality_score"], result["passed"]) == (5, 4, True)
        assert result["review"] == "Looks real." and "delta_e" in result["measures"]
        path, body = server.requests[0]
        assert path == "/v1/chat/completions" and body["model"] == "qwen2.5-vl-7b-instruct"
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert len(server.requests[1][1]["messages"]) == 3  # the retry carries the first reply and a reminder
        writer = VLMPromptWriter(engine="openai", base_url=server.url, model="weights/qwen2.5-vl-7b-instruct")
        assert writer.generate(small_transistor, "transistor", "bent_lead", None,
                               np.random.default_rng(0)).startswith("Using the provided image, change only the left")
    finally:
        server.close()


def test_openai_engine_refuses_remote_hosts_and_reports_a_dead_server():
    with pytest.raises(ValueError, match="not this machine"):
        load_engine("openai", {"base_url": "http://10.1.2.3:8000/v1"})
    dead = load_engine("openai", {"base_url": "http://127.0.0.1:9/v1", "timeout": 2})
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        dead.chat([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 4, 0.0, 0)


def test_vlm_policy_sees_the_conversation_with_images(small_transistor):
    answer = format_answer({"status": "failed", "final_image_index": 1, "mask_generated": False,
                            "synthesis_logic": "stop"})
    server = FakeServer([format_tool_call("prompt_gen", {"item_name": "transistor", "anomaly_type": "bent_lead"}),
                         "this is not protocol", answer])
    try:
        policy = build_policy({"backend": "vlm", "engine": "openai", "base_url": server.url, "max_new_tokens": 64})
        tools = build_tools({"prompt_gen": {"backend": "template"}, "image_gen": {"backend": "procedural"},
                             "quality_eval": {"backend": "heuristic"}, "mask_gen": {"backend": "difference"}})
        episode = run_episode(policy, tools, small_transistor, "transistor", "bent_lead", seed=1)
        assert episode.answer["status"] == "failed"
        assert episode.steps[0].tool == "prompt_gen" and episode.steps[1].error is not None
        first = server.requests[0][1]["messages"]
        assert first[0]["role"] == "system" and "Tool schemas" in first[0]["content"]
        assert first[1]["content"][0]["type"] == "image_url"  # image 1 arrives with the task
        last = server.requests[-1][1]["messages"]
        assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert "[Tool Response from prompt_gen]" in json.dumps(last[3]) and "[Error]" in json.dumps(last[5])
    finally:
        server.close()


def test_vlm_policy_registered_without_heavy_imports():
    import subprocess
    import sys

    assert "vlm" in POLICIES
    code = "import sys, local_agent.policies; print(any(m in sys.modules for m in ('torch', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_full_loop_with_tiny_open_weight_backends(models, small_transistor):
    profile = tiny_profile(models)
    tools = build_tools(profile["tools"])
    policy = build_policy(profile["policy"])
    episode = run_episode(policy, tools, small_transistor, "transistor", "bent_lead", seed=2, max_attempts=2)
    assert episode.answer is not None and episode.final_index in episode.workspace.masks
    assert episode.steps[0].tool == "prompt_gen" and episode.steps[0].result["prompt"].startswith(PROMPT_HEAD)
    attempts = episode.attempts
    assert 1 <= len(attempts) <= 2
    for k in attempts:
        assert episode.workspace.images[k - 1].shape == small_transistor.shape
    mask = episode.workspace.masks[episode.final_index]
    assert mask.shape == small_transistor.shape[:2] and mask.dtype == bool


def test_tiny_vlm_as_the_policy(models, small_transistor):
    """Random weights write no protocol: every message becomes an error observation, the loop stays bounded."""
    policy = build_policy({"backend": "vlm", "model": str(models["vlm"]), "max_new_tokens": 8})
    tools = build_tools(tiny_profile(models)["tools"] | {"prompt_gen": {"backend": "template"}})
    episode = run_episode(policy, tools, small_transistor, "transistor", "scratch", seed=0, max_steps=3)
    assert len(episode.steps) == 3 and all(s.error for s in episode.steps)
    assert all(parse_agent_message(s.message).error for s in episode.steps)
    assert isinstance(episode, Episode) and episode.workspace.images[0] is small_transistor



def test_native_tools_policy_shows_a_vlm_its_images_where_grpo_environment_rollouts_do(models, grid_image):
    """``native_tools``: image 1 after the task text, each attempt before its tool response, the template's tool
    calls; the transformers engine takes the schemas. (The tiny Idefics3 template ignores them: what a Qwen3-VL
    template makes of them is checked on a text model in tests/test_training_environment.py.)"""
    from local_agent.policies.vlm import VLMPolicy, episode_chat_native

    class Scripted:
        turns = [format_tool_call("prompt_gen", {"item_name": "grid", "anomaly_type": "bent"}),
                 format_tool_call("image_gen", {"prompt": "Using the provided image, change only the centre."}),
                 format_tool_call("quality_eval", {"image_index": 9})]

        def next_message(self, episode):
            return self.turns[sum(1 for m in episode.messages if m["role"] == "assistant")]

    tools = build_tools({"prompt_gen": {"backend": "template"}, "image_gen": {"backend": "procedural"},
                         "quality_eval": {"backend": "heuristic"}, "mask_gen": {"backend": "difference"}})
    episode = run_episode(Scripted(), tools, grid_image, "grid", "bent", max_attempts=1, max_steps=3)
    chat = episode_chat_native(episode, vision=True)
    kinds = [(m["role"], [p["type"] for p in m["content"]]) for m in chat]
    assert kinds == [("system", ["text"]), ("user", ["text", "image"]), ("assistant", ["text"]), ("tool", ["text"]),
                     ("assistant", ["text"]), ("tool", ["image", "text"]), ("assistant", ["text"]),
                     ("tool", ["text"])]
    assert chat[5]["content"][0]["image"] is episode.workspace.images[1]
    assert [m["tool_calls"][0]["function"]["name"] for m in chat if m.get("tool_calls")] == \
        ["prompt_gen", "image_gen", "quality_eval"]
    assert chat[-1]["name"] == "quality_eval" and chat[-1]["content"][0]["text"].startswith("[Error] quality_eval:")
    assert [p["type"] for m in episode_chat_native(episode, vision=False) for p in m["content"]] == ["text"] * 8
    policy = VLMPolicy(engine="transformers", model=str(models["vlm"]), native_tools=True, max_new_tokens=4)
    assert isinstance(policy.next_message(episode), str)
    with pytest.raises(ValueError, match="native_tools needs the transformers or text engine"):
        VLMPolicy(engine="openai", native_tools=True)
