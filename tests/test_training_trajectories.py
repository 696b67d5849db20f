"""Reverse-synthesis trajectories (Algorithm 2) from the real MVTec anomalies in ../shared/data."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from local_agent.cli import main
from local_agent.images import load_image
from local_agent.profile import load_profile
from local_agent.protocol import TOOL_NAMES, ToolSpec, parse_agent_message, parse_tool_response
from local_agent.tools import build_tools
from local_agent.training.rewards import is_legal, read_episode
from local_agent.training.trajectories import (FAILURE_MODES, TrajectoryError, at_real_sizes, build_trajectories,
                                               find_real_samples, load_mask, make_failure, parse_proportions,
                                               read_existing, reconstruct_normal)


def _heuristic_tools():
    """The default tools with the heuristic judge pinned: these tests check the build's mechanics on samples that
    judge passes (the calibrated judge has its own tests in test_atlas.py)."""
    tools = load_profile("default")["tools"]
    return {**tools, "quality_eval": {"backend": "heuristic", "pass_location": 4, "pass_quality": 4}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_data):
    """Single, Dual and Triple trajectories from the first real samples of grid (texture) and transistor (object)."""
    out = tmp_path_factory.mktemp("traj") / "train.jsonl"
    tools = _heuristic_tools()
    sums = [build_trajectories(shared_data / "mvtec" / cat, out, tools, {1: 0.2, 2: 0.4, 3: 0.4}, seed=1, limit=lim)
            for cat, lim in (("grid", 14), ("transistor", 30))]
    return out, sums


def test_trajectories_are_parseable_legal_and_end_on_the_real_image(built, shared_data):
    out, sums = built
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == sum(s.written for s in sums) >= 8
    assert {r["meta"]["category"] for r in records} == {"grid", "transistor"}
    assert {r["meta"]["n_attempts"] for r in records} >= {1, 2}
    specs = {name: ToolSpec(name, tool.parameters) for name, tool in build_tools(load_profile("default")["tools"]).items()}
    for r in records:
        msgs = r["messages"]
        assert [m["role"] for m in msgs[:2]] == ["system", "user"]
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in msgs)
        for m in msgs[2:]:
            if m["role"] == "assistant":
                parsed = parse_agent_message(m["content"], specs)
                assert parsed.error is None, parsed.error
            else:
                assert m["role"] == "tool"
                assert parse_tool_response(m["content"])[0] in TOOL_NAMES
        view = read_episode(msgs)
        assert view.format_ok and view.actions[-1] == "answer" and view.actions[-2] == "mask_gen"
        assert all(is_legal(a, b) for a, b in zip(["start", *view.actions], view.actions))
        assert view.actions.count("image_gen") == r["meta"]["n_attempts"]
        # every earlier attempt fails the judge, the last (the real anomaly) passes and is the answer
        assert [s["passed"] for s in r["meta"]["scores"]] == [False] * (r["meta"]["n_attempts"] - 1) + [True]
        last = r["meta"]["n_attempts"] + 1
        assert view.answer["final_image_index"] == last and view.answer["status"] == "success"
        real = load_image(r["meta"]["source"]).rgb
        saved = load_image(out.parent / r["meta"]["images"][str(last)]).rgb
        assert np.array_equal(real, saved)


def test_failed_attempts_use_the_judges_fault_kinds(built):
    out, _ = built
    records = [json.loads(line) for line in out.read_text().splitlines()]
    modes = {m for r in records for m in r["meta"]["failure_modes"]}
    assert modes <= set(FAILURE_MODES) and len(modes) >= 2
    # the refinement after a failed attempt names the judge's faults in the next prompt
    dual = next(r for r in records if r["meta"]["n_attempts"] >= 2)
    prompts = [json.loads(m["content"].split("<tool_call>")[1].split("</tool_call>")[0])["arguments"]["prompt"]
               for m in dual["messages"] if m["role"] == "assistant" and '"image_gen"' in m["content"]]
    assert prompts[0] != prompts[1] and "Refinement:" in prompts[1]
    assert prompts[1].startswith("Using the provided image, change only")


def test_resume_skips_done_samples_and_drops_a_torn_line(built, tmp_path, shared_data):
    out, _ = built
    copy = tmp_path / "t.jsonl"
    lines = out.read_text().splitlines()
    copy.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # a torn last line, as after kill -9
    (tmp_path / "t_images").symlink_to(out.parent / "train_images")
    assert len(read_existing(copy)) == 3
    summary = build_trajectories(shared_data / "mvtec" / "grid", copy, _heuristic_tools(),
                                 {1: 0.2, 2: 0.4, 3: 0.4}, seed=1, limit=14)
    grid_lines = [line for line in lines if '"category": "grid"' in line]
    assert summary.skipped_existing == 3
    assert [json.loads(line)["meta"]["key"] for line in copy.read_text().splitlines()] == \
        [json.loads(line)["meta"]["key"] for line in grid_lines]


def test_each_failure_mode_fails_the_real_judge(shared_data):
    sample = next(s for s in find_real_samples(shared_data / "mvtec" / "transistor") if s.anomaly_type == "damaged_case")
    anomaly = load_image(sample.image).rgb
    mask = load_mask(sample.mask, anomaly.shape[:2])
    normal = reconstruct_normal(anomaly, mask)
    judge = build_tools(_heuristic_tools())["quality_eval"].backend
    from local_agent.tools.imaging import foreground_mask

    fg = foreground_mask(normal, "transistor")
    rng = np.random.default_rng(0)
    verdicts = {}
    for mode in ("faint", "misplaced", "too_large"):
        image = make_failure(mode, normal, anomaly, mask, fg, "broken", rng)
        assert image.shape == anomaly.shape and image.dtype == np.uint8 and not np.array_equal(image, anomaly)
        verdicts[mode] = judge.evaluate(normal, image, "transistor", "damaged_case", foreground=fg)
    assert not any(v["passed"] for v in verdicts.values())
    assert {"too faint", "missing"} & set(verdicts["faint"]["faults"])
    assert "off the object" in verdicts["misplaced"]["faults"]
    # textures have no "off the object": misplacing does not apply there
    assert make_failure("misplaced", normal, anomaly, mask, np.ones_like(mask), "broken", rng) is None


def test_a_wrong_shape_is_made_only_of_a_real_line_and_squashes_it_round():
    """A scratch that is no line (screw's measure 1.0-2.6) squashed along its longer axis became a line across it, the
    shape its kind names: no wrong-shape edit is made of it. A real line is squashed round, its area kept."""
    from local_agent.tools.imaging import difference_mask, elongation

    normal = np.full((128, 128, 3), 120, np.uint8)
    fg = np.ones((128, 128), bool)
    rng = np.random.default_rng(0)
    for size, is_line in (((40, 3), True), ((8, 6), False)):
        anomaly, mask = normal.copy(), np.zeros((128, 128), bool)
        cv2.ellipse(anomaly, (64, 64), size, 30, 0, 360, (40, 40, 40), -1)
        cv2.ellipse(mask.view(np.uint8), (64, 64), size, 30, 0, 360, 1, -1)
        image = make_failure("wrong_shape", normal, anomaly, mask, fg, "scratch", rng)
        if not is_line:
            assert elongation(mask) < 3 and image is None
            continue
        changed = difference_mask(normal, image)[0]
        assert elongation(mask) > 8 and elongation(changed) < 1.5, elongation(changed)
        assert 0.7 < changed.sum() / mask.sum() < 1.5


def test_real_anomalies_are_judged_at_real_sizes_whatever_the_painters_scale(tmp_path, shared_data):
    """A profile whose painter draws real areas times F (``size_scale``) hands F to the calibrated judge in synth;
    a trajectory replays real anomalies, so its judge must stay at real sizes or it calls them too small."""
    tools = load_profile("default")["tools"]
    scaled = {**tools, "image_gen": {**tools["image_gen"], "atlas": "default", "size_scale": 16}}
    assert build_tools(scaled)["quality_eval"].backend.size_scale == 16
    assert build_tools(at_real_sizes(scaled))["quality_eval"].backend.size_scale == 1
    assert scaled["image_gen"]["size_scale"] == 16          # the caller's config is left as it was
    data = tmp_path / "grid"     # one real broken wire, which the judge passes at real sizes and fails 16x smaller
    for part in ("test/broken/000.png", "ground_truth/broken/000_mask.png"):
        (data / part).parent.mkdir(parents=True, exist_ok=True)
        (data / part).symlink_to(shared_data / "mvtec" / "grid" / part)
    plain = {**tools, "image_gen": {k: v for k, v in tools["image_gen"].items() if k != "size_scale"}}
    written = [build_trajectories(data, tmp_path / f"{name}.jsonl", config, {1: 1.0}).written
               for name, config in (("plain", plain), ("scaled", scaled))]
    assert written == [1, 1]


def test_reconstruction_removes_the_defect(shared_data):
    from local_agent.tools.imaging import difference_map

    sample = find_real_samples(shared_data / "mvtec" / "grid")[0]
    anomaly = load_image(sample.image).rgb
    mask = load_mask(sample.mask, anomaly.shape[:2])
    normal = reconstruct_normal(anomaly, mask)
    d = difference_map(normal, anomaly)
    assert d[mask].mean() > 4 * d[~mask].mean()


def test_cli_build_and_bad_input(tmp_path, shared_data):
    out = tmp_path / "cli.jsonl"
    r = CliRunner().invoke(main, ["trajectories", "build", "--data", str(shared_data / "mvtec" / "grid"),
                                  "--out", str(out), "--limit", "3", "--proportions", "1:1"])
    assert r.exit_code == 0, r.output
    assert "trajectories written" in r.output and out.exists()
    bad = CliRunner().invoke(main, ["trajectories", "build", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code != 0 and "no such folder" in bad.output
    with pytest.raises(TrajectoryError):
        parse_proportions("4:1")
    assert parse_proportions("1:1,2:1,3:2") == {1: 0.25, 2: 0.25, 3: 0.5}


def test_diffusers_inpainter_rebuilds_the_normal_image(tmp_path, shared_data):
    """``--inpainter``: a diffusers inpainting folder (a tiny random one, built and saved here, loaded back through
    the same code a real SD-2 folder goes through) repaints only the dilated defect region; an instruction-edit
    folder is refused in one line."""
    from tiny_backends import build_instruct_pix2pix, build_sd_inpaint

    folder = build_sd_inpaint(tmp_path / "sd-inpaint")
    out = tmp_path / "diffusion.jsonl"
    r = CliRunner().invoke(main, ["trajectories", "build", "--data", str(shared_data / "mvtec" / "grid"),
                                  "--out", str(out), "--limit", "2", "--proportions", "1:1", "--keep-unpassed",
                                  "--inpainter", str(folder), "--device", "cpu",
                                  "--inpaint-steps", "2", "--inpaint-resolution", "64"])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(rec["meta"]["reconstruction"] == str(folder) for rec in records)
    rec = records[0]
    anomaly = load_image(rec["meta"]["source"]).rgb
    mask = load_mask(rec["meta"]["mask"], anomaly.shape[:2])
    normal = load_image(out.parent / rec["meta"]["images"]["1"]).rgb
    changed = np.any(normal != anomaly, axis=2)
    assert changed[mask].mean() > 0.9                       # the defect is repainted ...
    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert not changed[far].any()                            # ... and nothing far from it changes

    refused = CliRunner().invoke(main, ["trajectories", "build", "--data", str(shared_data / "mvtec" / "grid"),
                                        "--out", str(tmp_path / "x.jsonl"), "--limit", "1",
                                        "--inpainter", str(build_instruct_pix2pix(tmp_path / "ip2p"))])
    assert refused.exit_code != 0 and "inpainting" in refused.output and "Traceback" not in refused.output
