"""The trained inspector (issue 16): `synth` → `train-inspector` → `inspect --inspector`, and MMAD's scoring.

A tiny real pipeline: 8 normal grid images, the real `synth` (2 types x 2 samples), a head trained for a few steps.
The numbers it reaches mean nothing at this size; the tests check the plumbing, what is read, and the scoring.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from local_agent.inspection.mmad import grade

TYPES = ("crack", "hole")


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """(category folder, synth output, inspector folder, every file PIL opened while training)."""
    from PIL import Image

    from local_agent.cli import main

    root = tmp_path_factory.mktemp("trained")
    real = shared_data / "mvtec" / "grid"
    cat = root / "data" / "grid"
    (cat / "train" / "good").mkdir(parents=True)
    for p in sorted((real / "train" / "good").glob("*.png"))[:8]:
        shutil.copy(p, cat / "train" / "good" / p.name)
    for kind in ("good", "broken"):                  # real test images beside train/good: training must not open them
        (cat / "test" / kind).mkdir(parents=True)
        shutil.copy(real / "test" / kind / "000.png", cat / "test" / kind / "000.png")
    (cat / "ground_truth" / "broken").mkdir(parents=True)
    shutil.copy(real / "ground_truth" / "broken" / "000_mask.png", cat / "ground_truth" / "broken" / "000_mask.png")
    synth = root / "synth"
    result = CliRunner().invoke(main, ["synth", str(cat), "--type", ",".join(TYPES), "--n", "2", "--out", str(synth),
                                       "--no-trajectories"])
    assert result.exit_code == 0, result.output
    opened: list[str] = []
    real_open = Image.open

    def recording_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "open", recording_open)
        out = root / "inspector"
        result = CliRunner().invoke(main, ["train-inspector", "--data", str(synth), "--out", str(out), "--steps", "10"])
    assert result.exit_code == 0, result.output
    return cat, synth, out, opened


def test_training_writes_one_finished_folder_that_loads(trained):
    from local_agent.evaluation.classifier import class_probabilities, defect_crop
    from local_agent.images import load_image
    from local_agent.inspection.mmad import load_mask
    from local_agent.inspection.trained import load_inspector, synth_samples

    cat, synth, out, _ = trained
    folder = out / "grid"
    assert {p.name for p in folder.iterdir()} == {"decoder.pt", "classifier.npz", "gallery", "inspector.json"}
    assert not list(folder.rglob(".*.tmp"))                       # atomic writes leave no temp file
    meta = json.loads((folder / "inspector.json").read_text())
    records = [json.loads(x) for x in (synth / "manifest.jsonl").read_text().splitlines()]
    passed = [r for r in records if r.get("status") == "passed"]
    # a type the judge passed fewer than 2 samples of also trains on its failed ones: every type is known
    used = passed + [r for r in records if r.get("status") == "failed" and
                     sum(p["anomaly_type"] == r["anomaly_type"] for p in passed) < 2]
    assert meta["types"] == sorted({r["anomaly_type"] for r in records}) == sorted(TYPES)
    assert meta["trained_on"]["samples"] == len(used) >= 2 and meta["trained_on"]["threshold_normals"] == 2
    assert sum(meta["trained_on"]["failed_samples_per_type"].values()) == len(used) - len(passed)
    assert meta["trained_on"]["threshold_samples_held_out"] == (len(used) > len(meta["types"]))
    assert meta["seg"]["steps"] == 10 and np.isfinite(meta["threshold"])
    inspector = load_inspector(out, "grid")
    assert inspector.classes == meta["types"] and inspector.gallery_dir == folder / "gallery"
    # the saved classifier is the trained one: it names its own (training) crops
    samples = synth_samples(synth)["grid"]
    crops = [defect_crop(load_image(s.image).rgb, load_mask(s.mask)) for s in samples]
    p = class_probabilities(inspector.classifier, crops)
    assert np.allclose(p.sum(1), 1.0)
    assert [inspector.classes[i] for i in p.argmax(1)] == [s.anomaly_type for s in samples]


def test_threshold_never_reads_real_test_images(trained):
    cat, synth, _, opened = trained
    assert any(str(synth) in p for p in opened) and any("train/good" in p for p in opened)
    for folder in ("test", "ground_truth"):
        assert not [p for p in opened if str(cat / folder) in p], f"training opened {folder} images"


def test_inspect_with_the_trained_folder_uses_head_and_classifier(trained, tmp_path):
    from local_agent.cli import main

    cat, _, out, _ = trained
    result = CliRunner().invoke(main, ["inspect", str(cat / "test"), "--category", "grid", "--inspector", str(out),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (tmp_path / "o" / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["error"] is None for r in records)
    for r in records:
        episode = json.loads((tmp_path / "o" / r["trajectory"]).read_text())
        tool_text = " ".join(m["content"] for m in episode["messages"] if m["role"] == "tool")
        assert "fused_score" in tool_text and "head_score" in tool_text     # what a VLM policy reads too
        answer = r["answer"]
        zoomed = any(s["tool"] == "perceptive_zoomer" for s in episode["steps"])
        assert zoomed == answer["anomaly_present"]      # the zoom names a flagged image's type; it never decides
        if answer["anomaly_present"]:
            assert answer["defect_type"] in TYPES and 0.5 <= answer["type_probability"] <= 1.0
            assert "type_probabilities" in tool_text and answer["bbox"] is not None
    missing = CliRunner().invoke(main, ["inspect", str(cat / "test"), "--category", "bottle", "--inspector", str(out),
                                        "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 1 and "no trained inspector for 'bottle'" in missing.output


def test_without_a_trained_folder_the_inspector_answers_as_before(trained):
    from local_agent.images import load_image
    from local_agent.inspection.episode import ANSWER_KEYS, run_inspection
    from local_agent.inspection.policy import ScriptedInspector
    from local_agent.inspection.tools import inspection_tools

    cat, _, out, _ = trained
    image = load_image(cat / "test" / "broken" / "000.png").rgb
    ep = run_inspection(ScriptedInspector(), inspection_tools(out / "grid" / "gallery"), image, "grid", list(TYPES))
    assert set(ep.answer) == set(ANSWER_KEYS) | {"anomaly_score"}        # no trained fields
    assert all("fused_score" not in (s.result or {}) for s in ep.steps)
    assert ep.steps[0].tool == "comparative_retriever"


def test_balanced_accuracy_overkill_and_miss_on_hand_made_answers():
    from local_agent.inspection.evaluate import markdown_table
    from local_agent.inspection.trained import threshold_at

    qs = [{"image": f"n{i}", "type": "anomaly", "answer": "no", "options": ["yes", "no"]} for i in range(4)]
    qs += [{"image": f"d{i}", "type": "anomaly", "answer": "yes", "options": ["yes", "no"]} for i in range(6)]
    qs += [{"image": f"d{i}", "type": "defect_type", "answer": "crack" if i < 4 else "hole",
            "options": ["crack", "hole", "cut"]} for i in range(6)]
    said = {"n0": True, "n1": False, "n2": False, "n3": False,             # 1 of 4 normals flagged (overkill 0.25)
            "d0": True, "d1": True, "d2": False, "d3": None, "d4": True, "d5": True}   # 2 of 6 defects missed
    answers = {k: None if v is None else {"anomaly_present": v, "defect_type": "crack" if v else None, "bbox": None,
                                          "confidence": 0.9} for k, v in said.items()}
    r = grade(qs, answers)["anomaly"]
    assert r["accuracy"] == 0.7 and r["majority"] == 0.6
    assert r["overkill"] == 0.25 and r["miss"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["balanced_accuracy"] == pytest.approx((0.75 + 4 / 6) / 2, abs=1e-4)
    t = grade(qs, answers)["defect_type"]
    assert t["accuracy"] == pytest.approx(2 / 6, abs=1e-4) and t["chance"] == pytest.approx(1 / 3, abs=1e-4)
    assert t["majority"] == pytest.approx(4 / 6, abs=1e-4)
    # always "yes": accuracy = the majority share, balanced accuracy = 0.5
    yes = {q["image"]: {"anomaly_present": True} for q in qs}
    assert grade(qs, yes)["anomaly"]["balanced_accuracy"] == 0.5
    table = markdown_table([{"category": "a", "images": 10, "accuracy": {"anomaly": r}},
                            {"category": "b", "images": 10, "accuracy": {"anomaly": {**r, "balanced_accuracy": 0.9}}}])
    mean_row = table.strip().splitlines()[-1].split("|")
    assert "**mean**" in mean_row[1]
    assert float(mean_row[3]) == pytest.approx((r["balanced_accuracy"] + 0.9) / 2, abs=1e-3)
    # the threshold: the (1 - rate) quantile of the held-out normals; the synthetic anomalies do not move it
    normal = np.arange(20, dtype=float)
    thr, at = threshold_at(normal, np.array([5.0, 100.0]), 0.1)
    assert thr == pytest.approx(np.quantile(normal, 0.9)) and threshold_at(normal, np.array([1e6]), 0.1)[0] == thr
    assert at["false_alarm"] == 0.1 and at["synthetic_detected"] == 0.5


def test_a_type_with_too_few_passed_samples_trains_on_its_failed_ones(tmp_path):
    from local_agent.images import save_mask_atomic, save_png_atomic
    from local_agent.inspection.trained import synth_samples

    rows = [("crack", 0, "passed"), ("crack", 1, "passed"), ("crack", 2, "failed"), ("hole", 0, "failed"),
            ("hole", 1, "failed")]
    lines = []
    for atype, i, status in rows:
        folder = "test" if status == "passed" else "failed"
        image, mask = f"grid/{folder}/{atype}/{i:03d}.png", f"grid/{folder}/{atype}/{i:03d}_mask.png"
        save_png_atomic(tmp_path / image, np.zeros((8, 8, 3), np.uint8))
        save_mask_atomic(tmp_path / mask, np.ones((8, 8), bool))
        lines.append(json.dumps({"category": "grid", "anomaly_type": atype, "index": i, "status": status,
                                 "passed": status == "passed", "image": image, "mask": mask, "source": "n/a.png"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    got = sorted((s.anomaly_type, s.index, s.passed) for s in synth_samples(tmp_path)["grid"])
    assert got == [("crack", 0, True), ("crack", 1, True), ("hole", 0, False), ("hole", 1, False)]


def test_a_manifest_path_leading_outside_the_synth_folder_is_refused(tmp_path):
    from local_agent.images import save_mask_atomic, save_png_atomic
    from local_agent.inspection.trained import InspectorError, synth_samples

    data = tmp_path / "synth"
    save_png_atomic(tmp_path / "elsewhere.png", np.zeros((8, 8, 3), np.uint8))      # exists, but outside
    save_mask_atomic(data / "grid/ground_truth/crack/000_mask.png", np.ones((8, 8), bool))
    (data / "manifest.jsonl").write_text(json.dumps({
        "category": "grid", "anomaly_type": "crack", "index": 0, "status": "passed", "passed": True,
        "image": "../elsewhere.png", "mask": "grid/ground_truth/crack/000_mask.png"}) + "\n")
    with pytest.raises(InspectorError, match="outside"):
        synth_samples(data)
