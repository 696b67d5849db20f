"""The ablation rows map to the right harness runs; rows without a trained policy are reported, not faked."""
from __future__ import annotations

import json

from click.testing import CliRunner

from local_agent.cli import main
from local_agent.profile import load_profile
from local_agent.training.ablate import ROWS, markdown_table, row_profile, run_ablation


def test_rows_are_the_papers_tables():
    assert [r.name for r in ROWS if r.table == "4"] == ["fixed prompt", "+PG", "+PG+QE", "+KR", "+SFT", "+RL"]
    assert [r.name for r in ROWS if r.table == "5"] == ["R_task", "+R_ref", "+R_beh"]


def test_row_profiles(tmp_path):
    base = load_profile("default")
    by_name = {r.name: r for r in ROWS}
    models = {"sft_model": tmp_path / "sft", "rl_model": None}
    assert row_profile(by_name["+PG+QE"], base, models)["tools"]["knowledge_retrieval"]["backend"] == "none"
    assert row_profile(by_name["+KR"], base, models)["tools"]["knowledge_retrieval"]["backend"] == "faiss"
    sft = row_profile(by_name["+SFT"], base, models)
    assert sft["policy"] == {"backend": "smollm2", "model_dir": str(tmp_path / "sft")}
    assert row_profile(by_name["+RL"], base, models) is None
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text('{"model_type": "qwen3_vl", "vision_config": {}}')
    native = row_profile(by_name["+SFT"], base, models, native_tools=True)["policy"]
    assert {k: native[k] for k in ("backend", "engine", "model", "native_tools")} == \
        {"backend": "vlm", "engine": "transformers", "model": str(tmp_path / "sft"), "native_tools": True}
    (tmp_path / "sft" / "config.json").write_text('{"model_type": "qwen3"}')
    assert row_profile(by_name["+SFT"], base, models, native_tools=True)["policy"]["engine"] == "text"
    # δ for the KR rows only: the rows without KR keep the base profile's policy
    assert row_profile(by_name["+KR"], base, models, kr_threshold=4)["policy"]["kr_threshold"] == 4.0
    assert row_profile(by_name["+PG+QE"], base, models, kr_threshold=4)["policy"] == base["policy"]
    assert base["tools"]["knowledge_retrieval"]["backend"] == "none"  # the base profile is not modified
    assert by_name["+PG"].max_attempts == 1 and by_name["fixed prompt"].method == "open-loop"


def test_rows_without_models_are_listed_as_not_run(tmp_path, shared_data):
    rows = run_ablation(shared_data / "mvtec" / "grid", tmp_path, {}, 1, 0, load_profile("default"), tables=("5",))
    assert [r["status"] for r in rows] == ["not run: no --rl-task-model given", "not run: no --rl-ref-model given",
                                           "not run: no --rl-model given"]
    assert "not run" in markdown_table(rows, "grid")
    r = CliRunner().invoke(main, ["ablate", "--data", str(shared_data / "mvtec" / "grid"), "--out", str(tmp_path),
                                  "--table", "5"])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "ablation.json").read_text())) == 3
