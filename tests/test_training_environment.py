"""GRPO on TRL's own tool loop (``rollouts: environment``): the environment, the format translation both ways, SFT
and GRPO on a tiny random model with Qwen3's chat template (which calls tools), a tiny Qwen3-VL that sees the
images, and the same turns at synth time; all built offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import trajectory_texts

from local_agent.profile import load_profile
from local_agent.protocol import format_answer, format_tool_call

pytest.importorskip("trl")

PROMPT = "Using the provided image, add a small dark bent deformation in the centre of the grid."
SCRIPT = [  # one synthesis, Algorithm 1 with a single attempt: (thinking, tool, arguments) then the answer
    ("Ask for a prompt.", "prompt_gen", {"item_name": "grid", "anomaly_type": "bent"}),
    ("Edit image 1.", "image_gen", {"prompt": PROMPT}),
    ("Judge attempt 2.", "quality_eval", {"image_index": 2, "item_name": "grid", "anomaly_type": "bent"}),
    ("Segment attempt 2.", "mask_gen", {"image_index": 2}),
]
ANSWER = {"status": "success", "final_image_index": 2, "mask_generated": True, "synthesis_logic": "one attempt"}


def native_turn(k: int) -> str:
    """The same turn as Qwen's template writes a tool call."""
    if k < len(SCRIPT):
        thinking, name, arguments = SCRIPT[k]
        call = json.dumps({"name": name, "arguments": arguments})
        return f"<thinking>{thinking}</thinking>\n<tool_call>\n{call}\n</tool_call>"
    return protocol_turn(k)


def protocol_turn(k: int) -> str:
    """The k-th turn in the paper's protocol, as our loop's policies write it."""
    if k < len(SCRIPT):
        thinking, name, arguments = SCRIPT[k]
        return format_tool_call(name, arguments, thinking)
    return format_answer(ANSWER, "Done.")


@pytest.fixture(scope="module")
def tools():
    from local_agent.tools import build_tools

    return build_tools(load_profile("default")["tools"])


@pytest.fixture(scope="module")
def task(shared_data):
    from local_agent.training.rollout import sample_tasks

    return sample_tasks(shared_data / "mvtec" / "grid", 1, 0)[0]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, corpus) -> Path:
    """A tiny random Llama whose tokenizer carries Qwen3's chat template (tool calls as <tool_call> JSON)."""
    from trl.chat_template_utils import qwen3_chat_template

    from local_agent.training.tiny import build_tiny_chat_model

    texts = trajectory_texts(corpus) + [protocol_turn(k) for k in range(len(SCRIPT) + 1)]
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-qwen"), texts, chat_template=qwen3_chat_template)


def settings_for(shared_data, out: Path, model_dir: Path, **changes):
    from local_agent.training.grpo import GRPOSettings

    options = dict(data=shared_data / "mvtec" / "grid", output_dir=out, model_dir=model_dir, rollouts="environment",
                   n_prompts=1, num_generations=2, max_steps=1, max_attempts=1, max_turns=6, max_new_tokens=16)
    return GRPOSettings.load(None).replace(**{**options, **changes})


def train_on_script(settings, model=None, processing_class=None, **kwargs) -> tuple[object, list[str], list]:
    """GRPO steps whose policy turns are SCRIPT's, in Qwen's format, instead of generated ones (the turn is the
    number of tool responses so far). Returns the trainer, every prompt the policy was asked to continue and, per
    generation call, how many images each rollout had in its context."""
    from local_agent.training.grpo import build_grpo_trainer

    trainer, _ = build_grpo_trainer(settings, model, processing_class, **kwargs)
    tok = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
    prompts: list[str] = []
    images_seen: list[list[int]] = []

    def scripted_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        prompts.extend(tok.decode(ids) for ids in prompt_ids)
        images_seen.append([len(i) if i else 0 for i in images] if images else [0] * len(prompt_ids))
        return [tok(native_turn(tok.decode(ids).count("<tool_response>")) + "<|im_end|>",
                    add_special_tokens=False)["input_ids"] for ids in prompt_ids], None

    trainer._generate_single_turn = scripted_turn
    trainer.train()
    return trainer, prompts, images_seen


# ------------------------------------------------------------------------------------------ the environment
def test_environment_runs_the_real_tools_and_reports_mistakes_as_observations(tools, task):
    from local_agent.training.environment import SynthesisEnvironment

    env = SynthesisEnvironment(tools, max_attempts=1)
    assert env.reset(task=task.to_json(), prompt=[]) is None  # text policy: nothing added to the task message
    assert env.workspace.category == "grid" and len(env.workspace.images) == 1
    assert env.prompt_gen("grid", task.anomaly_type).startswith("[Tool Response from prompt_gen]\n")
    edited = env.image_gen(PROMPT)
    assert json.loads(edited.split("\n", 1)[1])["image_index"] == 2 and len(env.workspace.images) == 2
    assert env.image_gen(PROMPT).startswith("[Error] attempt limit reached (1 image_gen calls)")
    judged = json.loads(env.quality_eval(2).split("\n", 1)[1])
    assert {"location_score", "quality_score"} <= set(judged)
    assert env.quality_eval(7).startswith("[Error] quality_eval: ")            # a ToolError, recoverable
    assert env.knowledge_retrieval("grid", "bent").startswith("[Error] knowledge_retrieval has no backend")
    assert env.mask_gen(2).startswith("[Tool Response from mask_gen]")
    env.reset(task=task.to_json())
    assert len(env.workspace.images) == 1 and env.attempts == 0 and not env.workspace.masks


def test_a_backend_failure_stops_the_run_instead_of_reaching_the_policy(tools, task):
    """TRL turns any exception of a tool into an error message for the model; a broken backend must not train it."""
    from local_agent.training.environment import SynthesisEnvironment
    from local_agent.training.rewards import make_reward_funcs

    class Broken:
        def __call__(self, workspace, **arguments):
            raise OSError("CUDA out of memory")

    env = SynthesisEnvironment({**tools, "image_gen": Broken()})
    env.reset(task=task.to_json())
    with pytest.raises(OSError):
        env.image_gen(PROMPT)
    completion = [{"role": "assistant", "content": "<answer>{}</answer>"}]
    with pytest.raises(RuntimeError, match="stopped by a tool backend.*image_gen failed: OSError: CUDA out of memory"):
        make_reward_funcs()[0]([[]], [completion], environments=[env])
    env.reset(task=task.to_json())
    assert make_reward_funcs()[0]([[]], [completion], environments=[env]) == [0.0]


def test_vlm_environment_shows_image_1_and_every_attempt(tools, task):
    from PIL import Image

    from local_agent.training.environment import SynthesisEnvironment

    env = SynthesisEnvironment(tools, max_attempts=2, show_images=True)
    first = env.reset(task=task.to_json())
    assert [p["type"] for p in first] == ["image"] and isinstance(first[0]["image"], Image.Image)
    env.prompt_gen("grid", task.anomaly_type)
    parts = env.image_gen(PROMPT)
    assert [p["type"] for p in parts] == ["image", "text"]
    assert parts[0]["image"].size == first[0]["image"].size and parts[1]["text"].startswith("[Tool Response from")


def test_tool_schemas_follow_the_methods_and_the_tools_parameters(tools):
    from local_agent.training.environment import TOOL_METHODS, tool_schemas

    schemas = {s["function"]["name"] if "function" in s else s["name"]: s for s in tool_schemas()}
    assert tuple(schemas) == TOOL_METHODS == tuple(sorted(TOOL_METHODS))
    for name, tool in tools.items():
        schema = schemas[name].get("function", schemas[name])
        assert set(schema["parameters"]["properties"]) == set(tool.parameters["properties"]), name
        assert set(schema["parameters"].get("required", [])) <= set(tool.parameters["properties"])


def test_native_and_protocol_formats_give_the_same_rewards(corpus):
    from local_agent.protocol import native_tool_calls, protocol_messages
    from local_agent.training.rewards import reward_terms

    for line in corpus.read_text().splitlines():
        messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        native = native_tool_calls(messages)
        calls = [m for m in native if m.get("tool_calls")]
        assert calls and all("<tool_call>" not in m["content"] for m in calls)
        assert all(m.get("name") for m in native if m["role"] == "tool")
        assert reward_terms(protocol_messages(native)) == reward_terms(messages)
    two = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "mask_gen", "arguments": {"image_index": 2}}}] * 2}
    assert reward_terms([two])["behaviour"] < 0  # two calls in one message are the protocol's illegal action


# ------------------------------------------------------------------------------------------ training
def test_sft_with_native_tool_calls_renders_them_with_the_policys_template(qwen_dir, corpus, tmp_path):
    from local_agent.smollm import load_smollm2
    from local_agent.training.sft import SFTSettings, build_sft_trainer

    model, tok = load_smollm2("float32", qwen_dir)
    trainer = build_sft_trainer(SFTSettings(corpus, tmp_path / "m", max_steps=1, native_tool_calls=True), model, tok)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    text = tok.decode(ids)
    trained = tok.decode([i for i, label in zip(ids, labels) if label != -100])
    assert "<tools>" in text and '"name": "knowledge_retrieval"' in text   # the environment's schemas
    assert '<tool_call>\n{"name": "prompt_gen", "arguments": {"item_name": "grid"' in trained
    assert "<tool_response>" in text and "<tool_response>" not in trained and "[Tool Response from" not in trained


def test_environment_rollouts_score_like_the_agent_loop(qwen_dir, tools, task, shared_data, tmp_path):
    """A scripted policy through TRL's tool loop: its calls reach the real tools, and R equals the same actions'
    R through our own loop (run_episode + reward_terms)."""
    from local_agent.images import load_image
    from local_agent.loop import run_episode
    from local_agent.training.rewards import RewardConfig, reward_terms

    trainer, _, _ = train_on_script(settings_for(shared_data, tmp_path / "g", qwen_dir))
    log = next(h for h in trainer.state.log_history if "reward" in h)
    assert log["tools/call_frequency"] == pytest.approx(len(SCRIPT)) and log["tools/failure_frequency"] == 0

    class Scripted:
        def next_message(self, episode):
            return protocol_turn(sum(1 for m in episode.messages if m["role"] == "assistant"))

    episode = run_episode(Scripted(), tools, load_image(Path(task.source)).rgb, task.category, task.anomaly_type,
                          seed=task.seed, max_attempts=1)
    final = tools["quality_eval"](episode.workspace, image_index=2)
    expected = reward_terms(episode.messages, RewardConfig(), final)
    assert expected["behaviour"] == pytest.approx(5 * 0.1 + 1)  # five legal actions, format ok
    assert log["rewards/r_task/mean"] == pytest.approx(expected["task"]) and expected["task"] > 0
    assert log["rewards/r_beh/mean"] == pytest.approx(0.2 * expected["behaviour"])
    assert log["reward"] == pytest.approx(expected["total"])


def test_environment_grpo_two_steps_train_and_save(qwen_dir, shared_data, tmp_path):
    import torch

    from local_agent.training.grpo import build_grpo_trainer, train_grpo
    from local_agent.training.models import load_policy

    def completion_length(prompts, completions, **kwargs):
        """A random model's episodes all earn the same R; a length term gives the group a spread to learn from."""
        return [sum(len(str(m.get("content", ""))) for m in c) / 100 for c in completions]

    model, tok = load_policy(qwen_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = settings_for(shared_data, tmp_path / "g", qwen_dir, max_steps=2, learning_rate=1e-2)
    trainer, _ = build_grpo_trainer(settings, model, tok, extra_reward_funcs=[completion_length])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and all(f"rewards/{t}/mean" in logs[0] for t in ("r_task", "r_ref", "r_beh"))
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    result = train_grpo(settings.replace(max_steps=1, output_dir=tmp_path / "saved"))
    assert result["steps"] == 1 and (tmp_path / "saved" / "config.json").is_file()
    assert load_policy(tmp_path / "saved")[0].config.vocab_size == model.config.vocab_size


def test_native_tool_calls_refuse_a_template_that_cannot_render_them(shared_data, corpus, tmp_path):
    from local_agent.tools.base import BackendUnavailable
    from local_agent.training.grpo import build_grpo_trainer
    from local_agent.training.tiny import build_tiny_chat_model

    from local_agent.smollm import load_smollm2
    from local_agent.training.sft import SFTSettings, build_sft_trainer

    chatml = build_tiny_chat_model(tmp_path / "chatml", ["hello world"] * 4, vocab_size=300)
    with pytest.raises(ValueError, match="rollouts: loop"):
        build_grpo_trainer(settings_for(shared_data, tmp_path / "g", chatml))
    with pytest.raises(ValueError, match="need a chat template that renders tool calls"):  # would drop every call
        build_sft_trainer(SFTSettings(corpus, tmp_path / "s", native_tool_calls=True), *load_smollm2("float32", chatml))
    with pytest.raises(BackendUnavailable, match="needs a policy folder"):
        build_grpo_trainer(settings_for(shared_data, tmp_path / "g", None))
    with pytest.raises(BackendUnavailable, match="config.json"):
        build_grpo_trainer(settings_for(shared_data, tmp_path / "g", tmp_path / "empty"))
    with pytest.raises(ValueError, match="'loop' or 'environment'"):
        build_grpo_trainer(settings_for(shared_data, tmp_path / "g", chatml, rollouts="vllm"))
    with pytest.raises(ValueError, match="set rollouts: environment"):
        build_grpo_trainer(settings_for(shared_data, tmp_path / "g", chatml, rollouts="loop", use_vllm=True))


def test_cli_sft_with_native_calls_then_environment_grpo(qwen_dir, corpus, shared_data, tmp_path):
    """The GPU recipe's two commands, end to end on the tiny model: SFT in the template's tool calls, then GRPO on
    TRL's tool loop from that checkpoint, then ``train score`` runs it as it was trained."""
    from click.testing import CliRunner

    from local_agent.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["train", "sft", "--data", str(corpus), "--out", str(tmp_path / "sft"), "--model",
                             str(qwen_dir), "--max-steps", "1", "--native-tool-calls"])
    assert r.exit_code == 0, r.output
    config = tmp_path / "g.yaml"
    config.write_text("grpo:\n  n_prompts: 1\n  num_generations: 2\n  max_new_tokens: 8\n  max_turns: 2\n"
                      "  rollouts: environment\n")
    r = runner.invoke(main, ["train", "grpo", "--config", str(config), "--model", str(tmp_path / "sft"), "--data",
                             str(shared_data / "mvtec" / "grid"), "--out", str(tmp_path / "grpo"), "--max-steps", "1"])
    assert r.exit_code == 0, r.output
    log = json.loads((tmp_path / "grpo" / "grpo_log.json").read_text())
    assert log["steps"] == 1 and len(log["rewards"]) == 1 and log["rollouts"] == 2
    r = runner.invoke(main, ["train", "score", "--config", str(config), "--model", str(tmp_path / "grpo"), "--data",
                             str(shared_data / "mvtec" / "grid"), "--out", str(tmp_path / "score.json")])
    assert r.exit_code == 0, r.output
    scored = json.loads((tmp_path / "score.json").read_text())
    assert len(scored["episodes"]) == 1 and "mean R" in r.output  # run as trained: vlm policy, native tool calls
    assert scored["episodes"][0]["generated_tokens"] is None and scored["episodes"][0]["agent_messages"]


def test_native_tools_policy_sees_at_synth_time_what_grpo_showed_it(qwen_dir, tools, task, shared_data, tmp_path):
    """``policy: vlm`` with ``native_tools`` renders the episode as the environment rollouts did, turn for turn."""
    import re

    from local_agent.images import load_image
    from local_agent.loop import run_episode
    from local_agent.policies.vlm import VLMPolicy

    _, in_grpo, _ = train_on_script(settings_for(shared_data, tmp_path / "g", qwen_dir))

    policy = VLMPolicy(engine="text", model=str(qwen_dir), native_tools=True, max_new_tokens=4)
    engine = policy.role.engine
    at_synth: list[str] = []
    generate = engine.model.generate

    def recording_generate(input_ids, **kwargs):
        at_synth.append(engine.tokenizer.decode(input_ids[0]))
        return generate(input_ids=input_ids, **kwargs)

    engine.model.generate = recording_generate

    class Recording:
        """The real policy renders and generates each turn; the scripted turn is what the episode goes on with."""

        def next_message(self, episode):
            assert isinstance(policy.next_message(episode), str)
            return protocol_turn(sum(1 for m in episode.messages if m["role"] == "assistant"))

    run_episode(Recording(), tools, load_image(Path(task.source)).rgb, task.category, task.anomaly_type,
                seed=task.seed, max_attempts=1)
    empty_think = re.compile(r"<think>\s*</think>\s*")  # Qwen3's template re-renders past turns with one
    first_rollout = in_grpo[::2]  # the group's two rollouts alternate turn by turn
    assert len(at_synth) == len(first_rollout) == len(SCRIPT) + 1 and first_rollout == in_grpo[1::2]
    for synth, grpo in zip(at_synth, first_rollout):
        assert empty_think.sub("", synth) == empty_think.sub("", grpo)
    assert "<tools>" in at_synth[0] and at_synth[-1].count("<tool_response>") == len(SCRIPT)


def test_a_vlm_policy_sees_image_1_and_every_attempt_in_grpo(corpus, shared_data, tmp_path):
    """A tiny Qwen3-VL on the environment rollouts: image 1 comes with the task, each image_gen result with its tool
    response, and the images reach the policy-gradient forward — the vision tower's weights move."""
    import torch
    from tiny_backends import build_tiny_qwen3_vl

    model, processor = build_tiny_qwen3_vl(tmp_path, trajectory_texts(corpus) + [native_turn(k) for k in range(5)])
    vision = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("model.visual.")}
    settings = settings_for(shared_data, tmp_path / "g", tmp_path / "model", learning_rate=1e-2)
    rank = lambda prompts, completions, **kwargs: [float(i) for i in range(len(completions))]  # noqa: E731
    trainer, prompts, images = train_on_script(settings, model, processor, extra_reward_funcs=[rank])
    log = next(h for h in trainer.state.log_history if "reward" in h)
    assert log["tools/call_frequency"] == pytest.approx(len(SCRIPT)) and log["tools/failure_frequency"] == 0
    # per turn, the images in the policy's context: image 1 until image_gen answers, then image 1 and attempt 2
    assert images == [[1, 1], [1, 1], [2, 2], [2, 2], [2, 2]]
    assert all(p.count("<|vision_start|>") == n for p, n in zip(prompts[::2], [1, 1, 2, 2, 2]))
    assert log["rewards/r_task/mean"] > 0 and log["rewards/r_beh/mean"] == pytest.approx(0.2 * 1.5)
    moved = [n for n, p in trainer.model.named_parameters() if n in vision and not torch.equal(vision[n], p.detach())]
    assert moved, "no gradient reached the vision tower: the images were not in the forward pass"
