"""scripts/gpu_check.py at the tiny scale on a CPU: the code path the real-size GPU check runs, so it cannot rot.

Every model is built from its config, saved, loaded back through the backends, called, run through the real synth
and one GRPO step; the table and its JSON say what ran. The full size without a GPU is refused in one line.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
NEEDED = ("diffusers", "transformers")  # the gpu extra; trl (GRPO) and vllm are reported per stage when absent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.fixture(scope="module")
def tiny_run(gpu_check, tmp_path_factory):
    """One end-to-end tiny run (module scope: built once, inspected by several tests)."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"[optional dependency absent] {', '.join(missing)}: pip install 'local-agent[gpu]'")
    out = tmp_path_factory.mktemp("gpu-check")
    assert gpu_check.main(["--scale", "tiny", "--out", str(out), "--json", str(out / "table.json")]) == 0
    report = json.loads((out / "table.json").read_text())
    return out, report, {r["stage"]: r for r in report["rows"]}


def test_help_names_every_option(gpu_check, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--scale", "--out", "--only", "--json", "--max-minutes", "tiny", "full"):
        assert option in text


def test_full_size_without_a_gpu_is_refused_in_one_line(gpu_check, capsys, monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--out", str(tmp_path / "never")])  # --scale full is the default
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GPU" in err[0] and "--scale tiny" in err[0]
    assert not (tmp_path / "never").exists()  # refused before anything was built or written


def test_unknown_stage_is_refused_in_one_line(gpu_check, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--scale", "tiny", "--only", "sd2-inpaint,sd3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sd3" in err[0] and "sd2-inpaint" in err[0]


def test_tiny_scale_runs_every_backend_synth_and_grpo(tiny_run):
    out, report, rows = tiny_run
    assert report["scale"] == "tiny" and report["machine"]["torch"]
    for stage in ("editor sd2-inpaint", "editor sdxl-inpaint", "editor instruct-pix2pix"):
        row = rows[stage]
        assert row["status"] == "ok", row
        assert row["params"] > 1e6 and row["load_s"] > 0
        assert row["calls"]["edit_32"] > 0 and row["calls"]["edit_64"] > 0
    for stage in ("vlm qwen2.5-vl", "vlm qwen3-vl"):
        row = rows[stage]
        assert row["status"] == "ok", row
        assert row["params"] > 1e5 and all(row["calls"][k] > 0 for k in ("prompt", "judge", "policy_turn"))
    assert rows["mask metauas"]["status"] == "ok" and rows["mask metauas"]["calls"]["mask"] > 0
    for name in ("gpu-sd2-qwen2.5vl", "gpu-sdxl-qwen3vl"):
        row = rows[f"synth {name}"]
        assert row["status"] == "ok", row
        assert 0 < row["calls"]["sample"] < row["calls"]["sample_est"]
        records = [json.loads(line) for line in (out / "synth" / "tiny" / name / "manifest.jsonl").open()]
        assert len(records) == 2 and all(r["status"] in ("passed", "failed") for r in records)
        for r in records:  # the real synth wrote each sample's image and mask
            assert (out / "synth" / "tiny" / name / r["image"]).is_file()
            assert (out / "synth" / "tiny" / name / r["mask"]).is_file()
    grpo = rows["grpo step, vLLM off"]
    if importlib.util.find_spec("trl") is None:
        assert grpo["status"].startswith("skipped: trl is not installed")
    else:
        assert grpo["status"] == "ok", grpo
        assert grpo["params"] > 1e5 and grpo["calls"]["step"] > 0
    vllm = rows["grpo step, vLLM on"]
    if importlib.util.find_spec("vllm") is None:
        assert vllm["status"].startswith("skipped: vllm is not installed")
    assert rows["editor qwen-image-edit"]["status"].startswith("skipped: Qwen-Image-Edit")
    assert rows["synth gpu-qwen-image-edit"]["status"].startswith("skipped:")
    assert all(r["peak_gb"] is None for r in report["rows"])  # no GPU here: no memory figure is made up


def test_a_failing_stage_is_reported_and_a_rerun_reuses_the_built_models(gpu_check, tiny_run, monkeypatch, capsys):
    from local_agent.tools import diffusion

    out, _, _ = tiny_run

    def broken(self, *args, **kwargs):
        raise RuntimeError("edit exploded")

    monkeypatch.setattr(diffusion.DiffusersEditor, "edit", broken)
    assert gpu_check.main(["--scale", "tiny", "--out", str(out), "--only", "sd2-inpaint,metauas",
                           "--json", str(out / "again.json")]) == 0
    rows = {r["stage"]: r for r in json.loads((out / "again.json").read_text())["rows"]}
    assert set(rows) == {"editor sd2-inpaint", "mask metauas"}
    assert rows["editor sd2-inpaint"]["status"] == "error: RuntimeError: edit exploded"
    assert rows["mask metauas"]["status"] == "ok" and rows["mask metauas"]["build_s"] is None  # reused
    assert "edit exploded" in (out / "errors.log").read_text()
    table = capsys.readouterr().out
    assert "| editor sd2-inpaint |" in table and "error: RuntimeError: edit exploded" in table


def test_what_does_not_fit_the_time_budget_is_skipped_with_a_line(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--scale", "tiny", "--out", str(tmp_path), "--max-minutes", "0",
                           "--json", str(tmp_path / "t.json")]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert rows and all(r["status"].startswith("skipped: ") for r in rows)
    budget = [r for r in rows if "time budget" in r["status"]]
    assert {"vlm qwen2.5-vl", "editor sd2-inpaint", "mask metauas", "grpo step, vLLM off"} <= {r["stage"] for r in budget}
    assert not (tmp_path / "models").exists()  # nothing was built
    printed = capsys.readouterr().out
    assert "[skip] editor sd2-inpaint: skipped: the time budget (0 min) is spent" in printed
