"""Air-gapped weights: the manifest, the packaged profiles, ``local-agent doctor``; and synth sharding helpers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tiny_backends import build_all, tiny_profile

from local_agent.cli import main
from local_agent.doctor import check_backend, diagnose
from local_agent.profile import available_profiles, load_profile
from local_agent.sharding import (finish_shard, finished_keys, merge_manifests, process_rank, shard, shard_path,
                                  start_shard)

ROOT = Path(__file__).resolve().parents[1]
GPU_PROFILES = ("gpu-sd2-qwen2.5vl", "gpu-sdxl-qwen3vl", "gpu-qwen-image-edit")


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return build_all(tmp_path_factory.getbasetemp() / "tiny-models")


def test_profiles_exist_and_cpu_equals_default():
    assert {"cpu", "cpu-kr", "default", *GPU_PROFILES} <= set(available_profiles())
    assert load_profile("cpu") == load_profile("default")
    with_kr, default = load_profile("cpu-kr"), load_profile("default")
    assert with_kr["tools"].pop("knowledge_retrieval")["backend"] == "faiss"
    default["tools"].pop("knowledge_retrieval")
    assert with_kr["policy"].pop("kr_threshold") == 4 and default["policy"].pop("kr_threshold") == 3
    assert with_kr == default   # the same loop, plus retrieval after every failed attempt


def test_manifest_covers_every_folder_the_profiles_use():
    manifest = yaml.safe_load((ROOT / "weights" / "manifest.yaml").read_text())["entries"]
    known = {e["folder"] for e in manifest.values() if e["folder"]}
    files = {f"{e['folder']}/{f}" for e in manifest.values() if e["folder"] for f in e["files"]}
    for name in GPU_PROFILES:
        profile = load_profile(name)
        for config in [*profile["tools"].values(), profile["policy"]]:
            if "model" in config:
                assert config["model"] in known, (name, config["model"])
            if "checkpoint" in config:
                assert config["checkpoint"] in files, (name, config["checkpoint"])
    for entry in manifest.values():
        assert entry["vram_gb"] >= 0 and entry["files"] and entry["license"]


def test_prepare_script_is_the_only_network_code_and_is_not_imported():
    script = (ROOT / "scripts" / "prepare_weights.py").read_text()
    assert "snapshot_download" in script
    for folder in ("local_agent", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "prepare_weights" not in text and "snapshot_download" not in text, path


def test_doctor_reports_ready_and_missing(models, tmp_path):
    ready = tiny_profile(models)
    assert all(check_backend(t, c, has_gpu=False)[0] for t, c in ready["tools"].items())
    ok, detail = check_backend("image_gen", {"backend": "diffusers", "model": str(tmp_path / "sd2")}, False)
    assert not ok and "model_index.json" in detail
    ok, detail = check_backend("mask_gen", {"backend": "metauas", "checkpoint": str(models["metauas"]),
                                            "device": "cuda"}, has_gpu=False)
    assert not ok and "CUDA" in detail
    ok, detail = check_backend("quality_eval", {"backend": "vlm", "engine": "vllm", "model": str(models["vlm"])}, False)
    assert not ok and "vllm" in detail

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(ready))
    result = diagnose([str(path)])
    assert result.profiles[str(path)] == "ready" and result.profiles["cpu"] == "ready"
    assert result.profiles["cpu-kr"] == "ready"   # the test install has the knowledge extra
    assert result.profiles["gpu-sd2-qwen2.5vl"] != "ready"
    assert result.best in ("cpu-kr", str(path))


def test_doctor_cli_lists_backends_and_the_profile_that_runs(models, tmp_path):
    broken = tiny_profile(models)
    broken["tools"]["image_gen"]["model"] = str(tmp_path / "missing-sd")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = CliRunner().invoke(main, ["doctor", "--profile", str(path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "ready" in result.output and "missing" in result.output and "model_index.json" in result.output
    assert "most capable ready profile here: cpu-kr" in result.output


def test_cli_help_stays_light():
    code = "import sys; from local_agent.cli import main; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_rank_from_launcher_environment(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert process_rank() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert process_rank() == (2, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="outside"):
        process_rank()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert process_rank() == (1, 2)


def test_shards_partition_the_plan():
    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(x for p in parts for x in p) == items and max(map(len, parts)) - min(map(len, parts)) <= 1


def _record(cat: str, kind: str, index: int, status: str = "passed") -> str:
    return json.dumps({"category": cat, "anomaly_type": kind, "index": index, "status": status})


def test_merge_and_resume_per_shard(tmp_path):
    assert shard_path(tmp_path, 0, 1).name == "manifest.jsonl"
    for rank in range(2):
        start_shard(tmp_path, rank)
    shard_path(tmp_path, 0, 2).write_text(_record("grid", "bent", 0) + "\n" + _record("grid", "bent", 2) + "\n")
    # rank 1 was killed mid-line: the torn line is ignored, that sample reruns
    shard_path(tmp_path, 1, 2).write_text(_record("grid", "bent", 1) + "\n" + '{"category": "grid", "anom')
    assert finished_keys(tmp_path) == {("grid", "bent", 0), ("grid", "bent", 1), ("grid", "bent", 2)}
    assert not finish_shard(tmp_path, 0, 2)  # rank 1 not done yet: no merge
    assert not (tmp_path / "manifest.jsonl").exists()
    assert finish_shard(tmp_path, 1, 2)
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2]
    # a rerun with one process resumes from the merged manifest; a redone sample keeps its latest record
    shard_path(tmp_path, 1, 2).write_text(_record("grid", "bent", 1, "failed") + "\n")
    assert merge_manifests(tmp_path) == 3
    merged = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert merged[1]["status"] == "failed"


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_gpu_profile_without_weights_stops_with_one_line(name, tmp_path, monkeypatch):
    from local_agent.tools import build_tools
    from local_agent.tools.base import BackendUnavailable

    monkeypatch.chdir(tmp_path)  # no weights/ here
    with pytest.raises(BackendUnavailable, match=r"missing weights/.*local-agent doctor") as e:
        build_tools(load_profile(name)["tools"])
    assert "\n" not in str(e.value)
