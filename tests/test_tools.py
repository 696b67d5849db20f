"""The embedded tools through their Tool interface: PG template, heuristic judge, difference mask."""
import cv2
import numpy as np
import pytest

from local_agent.profile import load_profile
from local_agent.tools import ToolError, Workspace, build_tools
from local_agent.tools.quality_eval import HeuristicJudge


@pytest.fixture(scope="module")
def tools():
    return build_tools(load_profile()["tools"])


def workspace(image, category="transistor", anomaly="scratch"):
    return Workspace(category=category, anomaly_type=anomaly, images=[image], seed=3)


def test_prompt_is_in_the_papers_form(tools, transistor_image):
    out = tools["prompt_gen"](workspace(transistor_image), item_name="transistor", anomaly_type="bent_lead")
    p = out["prompt"]
    assert p.startswith("Using the provided image, change only") and "Keep the rest of the image" in p
    assert "transistor" in p and "bent" in p
    with_k = tools["prompt_gen"](workspace(transistor_image), item_name="transistor", anomaly_type="bent_lead",
                                 knowledge="Bent leads show a sharp kink near the body. More text follows here.")
    assert "sharp kink near the body." in with_k["prompt"] and "More text" not in with_k["prompt"]


def test_unknown_type_keeps_its_words(tools, grid_image):
    p = tools["prompt_gen"](workspace(grid_image, "grid"), item_name="grid", anomaly_type="weird_blemish")["prompt"]
    assert "weird blemish" in p


def test_image_gen_edits_the_original_and_indexes_from_one(tools, grid_image):
    ws = workspace(grid_image, "grid", "crack")
    r1 = tools["image_gen"](ws, prompt="Using the provided image, change only the centre to add a crack. Keep the rest")
    r2 = tools["image_gen"](ws, prompt="Using the provided image, change only the centre to add a crack. Keep the rest")
    assert (r1["image_index"], r2["image_index"]) == (2, 3)
    assert len(ws.images) == 3 and ws.images[0] is grid_image
    assert not np.array_equal(ws.images[1], ws.images[2]), "each attempt gets its own seed"


def test_without_reseeding_a_refinement_redraws_the_same_defect(grid_image):
    """``reseed: false``: every attempt draws with the first attempt's seed, so the same prompt gives the same image
    and a refinement changes only what its words ask; the first attempt is the reseeding loop's (open-loop's) own."""
    config = load_profile()["tools"]
    keep = build_tools({**config, "image_gen": {**config["image_gen"], "reseed": False}})["image_gen"]
    ws, ws_default = workspace(grid_image, "grid", "crack"), workspace(grid_image, "grid", "crack")
    prompt = "Using the provided image, change only the centre to add a crack. Keep the rest"
    keep(ws, prompt=prompt)
    keep(ws, prompt=prompt)
    build_tools(config)["image_gen"](ws_default, prompt=prompt)
    assert np.array_equal(ws.images[1], ws.images[2]) and np.array_equal(ws.images[1], ws_default.images[1])
    keep(ws, prompt=prompt.replace("add a crack", "add a large pronounced crack"))
    assert not np.array_equal(ws.images[1], ws.images[3]), "the words still change the defect"
    with pytest.raises(ValueError, match="reseed must be true or false"):
        build_tools({**config, "image_gen": {**config["image_gen"], "reseed": "no"}})


def test_bad_indices_are_tool_errors(tools, grid_image):
    ws = workspace(grid_image, "grid")
    for tool, args in [("quality_eval", {"image_index": 5}), ("mask_gen", {"image_index": 1}),
                       ("mask_gen", {"image_index": "2"}), ("image_gen", {"prompt": "  "})]:
        with pytest.raises(ToolError):
            tools[tool](ws, **args)


def _blob(image, centre, radius, value, soft=False):
    out = image.copy()
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.circle(mask, centre, radius, 1.0, -1)
    if soft:
        mask = cv2.GaussianBlur(mask, (0, 0), radius / 3)
    return np.clip(out * (1 - mask[..., None]) + value * mask[..., None], 0, 255).astype(np.uint8)


def test_judge_names_concrete_faults(transistor_image, grid_image):
    judge = HeuristicJudge()
    none = judge.evaluate(grid_image, grid_image.copy(), "grid", "scratch")
    assert none["faults"] == ["missing"] and none["location_score"] == 0 and not none["passed"]

    ring = np.zeros(grid_image.shape[:2], np.uint8)
    cv2.circle(ring, (128, 128), 10, 1, -1)
    faint_edit = np.clip(grid_image.astype(np.int16) + 22 * ring[..., None], 0, 255).astype(np.uint8)
    faint = judge.evaluate(grid_image, faint_edit, "grid", "contamination")
    assert "too faint" in faint["faults"] and not faint["passed"]

    off = judge.evaluate(transistor_image, _blob(transistor_image, (15, 240), 8, 20), "transistor", "contamination")
    assert "off the object" in off["faults"] and off["location_score"] <= 1

    large = judge.evaluate(grid_image, _blob(grid_image, (128, 128), 90, 40, soft=True), "grid", "stain")
    assert "too large" in large["faults"]

    pasted = judge.evaluate(grid_image, _blob(grid_image, (128, 128), 20, 90), "grid", "stain")
    assert "hard seam" in pasted["faults"] and "flat patch" in pasted["faults"]

    round_scratch = judge.evaluate(grid_image, _blob(grid_image, (128, 128), 8, 20), "grid", "scratch")
    assert any(f == "wrong shape" for f in round_scratch["faults"])
    assert "thin and elongated" in round_scratch["review"]

    line = grid_image.copy()
    cv2.line(line, (100, 90), (150, 140), (255, 255, 255), 2)
    good = judge.evaluate(grid_image, line, "grid", "scratch")
    assert good["passed"] and good["faults"] == [] and good["quality_score"] == 5


def test_mask_gen_reports_ratio(tools, grid_image):
    ws = workspace(grid_image, "grid", "hole")
    ws.add_image(_blob(grid_image, (60, 60), 10, 0))
    r = tools["mask_gen"](ws, image_index=2)
    assert r["image_index"] == 2 and 0.003 < r["anomaly_ratio"] < 0.01 and not r["empty"]
    assert ws.masks[2].dtype == bool and ws.masks[2][60, 60]


def test_mask_ignores_a_global_shift_and_tint(grid_image):
    """Diffusion editors shift and tint slightly: the aligned, offset-free difference must not call that a defect."""
    from local_agent.tools.imaging import difference_mask

    edited = _blob(grid_image, (128, 128), 12, 0)
    shifted = np.roll(edited, (2, 1), axis=(0, 1)).astype(np.int16) + 3
    mask, _ = difference_mask(grid_image, np.clip(shifted, 0, 255).astype(np.uint8))
    assert 0.004 < mask.mean() < 0.02


def test_difference_map_cache_gives_fresh_copies(grid_image):
    """The painter, the judge and the mask tool share one difference map per (normal, attempt) pair; a caller that
    changes its copy must not change what the next caller gets."""
    from local_agent.tools.imaging import _difference_map, difference_map

    edited = grid_image.copy()
    edited[100:120, 100:140] = 255
    first = difference_map(grid_image, edited)
    assert np.array_equal(first, _difference_map(grid_image, edited))
    first[:] = -1
    assert np.array_equal(difference_map(grid_image, edited), _difference_map(grid_image, edited))
    other = edited.copy()
    other[0:10, 0:10] = 0
    assert not np.array_equal(difference_map(grid_image, other), difference_map(grid_image, edited))


def test_profile_errors_are_one_line(tmp_path):
    from local_agent.profile import ProfileError

    with pytest.raises(ProfileError, match="unknown profile"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools: [1, 2")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)
    tools = load_profile()["tools"]
    with pytest.raises(ValueError, match="unknown backend 'magic'"):
        build_tools({**tools, "image_gen": {"backend": "magic"}})
    with pytest.raises(ValueError, match="bad options"):
        build_tools({**tools, "quality_eval": {"backend": "heuristic", "colour": 3}})
    with pytest.raises(ValueError, match="tools.mask_gen is missing"):
        build_tools({k: v for k, v in tools.items() if k != "mask_gen"})
