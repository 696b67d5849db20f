"""Inspection agent (AgentIAD): gallery, zoom geometry, retrieval, scripted agent, mini-MMAD, CLI, rewards.

Galleries are built from a few real normal images (``--limit``) to keep the file well under a minute.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from local_agent.inspection.episode import ANSWER_KEYS, parse_inspection_message, run_inspection
from local_agent.inspection.gallery import FILES, build_gallery, load_gallery
from local_agent.inspection.mmad import CELLS, box_cell, build_questions, grade, mask_cell
from local_agent.inspection.policy import ScriptedInspector
from local_agent.inspection.rewards import (anomaly_accuracy_reward, bbox_iou_reward, defect_type_reward,
                                            perception_reward, tool_use_reward)
from local_agent.inspection.tools import ComparativeRetriever, PerceptiveZoomer, inspection_tools
from local_agent.inspection.workspace import InspectionWorkspace
from local_agent.protocol import ToolSpec, format_answer, format_tool_call, format_tool_response
from local_agent.tools.base import ToolError

N_GALLERY = 8


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).copy()


@pytest.fixture(scope="module")
def galleries(shared_data, tmp_path_factory) -> Path:
    """A small transistor gallery (grid is indexed in the mixed gallery of the retrieval test)."""
    index = tmp_path_factory.mktemp("gallery")
    build_gallery(shared_data / "mvtec" / "transistor", index, limit=N_GALLERY, zoom_samples=4)
    return index


# -- gallery ---------------------------------------------------------------------------------------------------------
def test_gallery_build_writes_finished_calibrated_files(galleries, shared_data):
    for category in ("transistor",):
        folder = galleries / category
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)      # no temp files left behind
        g = load_gallery(galleries, category)
        assert len(g) == N_GALLERY and g.images.shape == (N_GALLERY, 256, 256, 3)
        assert g.names == sorted(p.name for p in (shared_data / "mvtec" / category / "train" / "good").iterdir())[:N_GALLERY]
        cal = g.calibration
        assert len(cal["image_scores"]) == N_GALLERY
        assert cal["image_low"] <= cal["image_threshold"] <= max(cal["image_scores"]) < cal["image_high"]
        assert g.defect_types == sorted(p.name for p in (shared_data / "mvtec" / category / "test").iterdir()
                                        if p.name != "good")


def test_backbone_is_the_pretrained_imagenet_network(shared_data):
    import torch

    from local_agent.inspection.backbone import load_lite0, to_tensor, weight_file

    model = load_lite0()
    state = torch.load(weight_file(), map_location="cpu", weights_only=True)
    assert torch.equal(model._blocks[10]._project_conv.weight, state["_blocks.10._project_conv.weight"])
    # Real weights and the right preprocessing give confident ImageNet predictions on real photos (a random or
    # mis-normalised network gives near-uniform ones): striped "banded" textures read as a few classes.
    banded = sorted((shared_data / "dtd" / "banded").iterdir())[:4]
    with torch.no_grad():
        probs = model(to_tensor([rgb(p) for p in banded], 224)).softmax(1)
    assert probs.max(1).values.mean() > 0.05                   # 50x the uniform 0.001


def test_same_padding_matches_tensorflow_on_odd_and_even_sizes():
    """SameConv lets the convolution pad itself when TF 'SAME' is symmetric; the result must equal the explicit
    pad (extra pixel bottom/right) that the converted weights expect, on every size and stride."""
    import math

    import torch
    from torch.nn import functional as F

    from local_agent.inspection.backbone import SameConv

    torch.manual_seed(0)
    for kernel, stride in ((1, 1), (3, 1), (3, 2), (5, 1), (5, 2)):
        conv = SameConv(4, 6, kernel, stride=stride, bias=False)
        for side in (16, 17, 32, 33):
            x = torch.randn(2, 4, side, side + 1)
            ih, iw = x.shape[-2:]
            ph = max((math.ceil(ih / stride) - 1) * stride + kernel - ih, 0)
            pw = max((math.ceil(iw / stride) - 1) * stride + kernel - iw, 0)
            ref = F.conv2d(F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]), conv.weight, None, stride)
            assert torch.allclose(conv(x), ref, atol=1e-6), (kernel, stride, side)


def test_build_rejects_a_folder_without_enough_normals(tmp_path, shared_data):
    from local_agent.inspection.gallery import GalleryError

    (tmp_path / "few").mkdir()
    for p in sorted((shared_data / "mvtec" / "grid" / "train" / "good").iterdir())[:3]:
        shutil.copy(p, tmp_path / "few" / p.name)
    with pytest.raises(GalleryError, match="at least"):
        build_gallery(tmp_path / "few", tmp_path / "index", category="few")


# -- zoom geometry ---------------------------------------------------------------------------------------------------
def test_zoom_crops_the_box_and_enlarges_it(shared_data):
    image = rgb(shared_data / "mvtec" / "transistor" / "test" / "good" / "000.png")[:, :200]   # 256 high, 200 wide
    ws = InspectionWorkspace("transistor", [], [image])
    zoomer = PerceptiveZoomer()
    r = zoomer(ws, image_index=1, bbox=[0.25, 0.5, 0.75, 1.0])
    assert r["image_index"] == 2 and r["source_pixels"] == [50, 128, 150, 256]
    zoomed = ws.image(2)
    assert max(zoomed.shape[:2]) == 256 and zoomed.shape[:2] == (256, 200)          # 100x128 crop, aspect kept
    assert r["magnification"] == pytest.approx(2.0)
    crop = image[128:256, 50:150].astype(np.float32)
    small = np.asarray(Image.fromarray(zoomed).resize((100, 128), Image.BILINEAR)).astype(np.float32)
    assert np.abs(small - crop).mean() < 6.0                                          # same content, enlarged
    # a zoom of the zoom maps back to image 1
    r2 = zoomer(ws, image_index=2, bbox=[0.0, 0.0, 0.5, 0.5])
    assert r2["bbox_in_image_1"] == pytest.approx([0.25, 0.5, 0.5, 0.75])
    for bad in ([0.5, 0.5, 0.4, 0.9], [0, 0, 1.2, 1], [0.1, 0.1, 0.11, 0.9], [0, 0, 1], "top"):
        with pytest.raises(ToolError):
            zoomer(ws, image_index=1, bbox=bad)
    with pytest.raises(ToolError):
        zoomer(ws, image_index=9, bbox=[0, 0, 1, 1])


# -- retrieval -------------------------------------------------------------------------------------------------------
def test_retrieval_returns_same_category_normals(shared_data, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for category in ("grid", "transistor"):
        for p in sorted((shared_data / "mvtec" / category / "train" / "good").iterdir())[:5]:
            shutil.copy(p, mixed / f"{category}_{p.name}")
    build_gallery(mixed, tmp_path / "index", category="mixed", k=5, zoom_samples=1)
    g = load_gallery(tmp_path / "index", "mixed")
    assert len(g) == 10 and g.defect_types == [] and sorted(p.name for p in (tmp_path / "index" / "mixed").iterdir()) \
        == sorted(FILES)
    retriever = ComparativeRetriever(gallery=tmp_path / "index")
    for category in ("grid", "transistor"):
        query = rgb(shared_data / "mvtec" / category / "test" / "good" / "001.png")
        ws = InspectionWorkspace("mixed", [], [query])
        r = retriever(ws, image_index=1)
        names = [n["name"] for n in r["nearest_normals"]]
        assert len(names) == 5 and all(n.startswith(category) for n in names), names
        exemplar = ws.image(r["exemplar_image_index"])
        assert np.array_equal(exemplar, ws.cache["gallery"].images[r["nearest_normals"][0]["gallery_id"]])
        assert ws.maps[1].shape == query.shape[:2]


def test_discrepancy_map_is_higher_on_the_defect(galleries, shared_data):
    from local_agent.inspection.mmad import load_mask

    retriever = ComparativeRetriever(gallery=galleries)
    root = shared_data / "mvtec" / "transistor"
    ws = InspectionWorkspace("transistor", [], [rgb(root / "test" / "bent_lead" / "000.png")])
    r = retriever(ws, image_index=1)
    mask = load_mask(root / "ground_truth" / "bent_lead" / "000_mask.png")
    assert ws.maps[1][mask].mean() > 1.3 * ws.maps[1][~mask].mean()
    assert 0 <= r["region_bbox"][0] < r["region_bbox"][2] <= 1
    with pytest.raises(ToolError, match="exemplar"):
        retriever(ws, image_index=r["exemplar_image_index"])


# -- the scripted agent ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("relpath", ["good/000.png", "misplaced/002.png", "damaged_case/003.png"])
def test_scripted_agent_answers_in_the_protocol(galleries, shared_data, relpath):
    types = ["bent_lead", "cut_lead", "damaged_case", "misplaced"]
    tools = inspection_tools(galleries)
    image = rgb(shared_data / "mvtec" / "transistor" / "test" / relpath)
    ep = run_inspection(ScriptedInspector(), tools, image, "transistor", types)
    specs = {n: ToolSpec(n, t.parameters) for n, t in tools.items()}
    assistant = [m["content"] for m in ep.messages if m["role"] == "assistant"]
    assert assistant[0].startswith("<thinking>") and "comparative_retriever" in assistant[0]
    for text in assistant:
        parsed = parse_inspection_message(text, specs)
        assert parsed.error is None and parsed.thinking
    assert all(m["content"].startswith("[Tool Response from ") for m in ep.messages if m["role"] == "tool")
    assert ep.answer is not None and set(ANSWER_KEYS) <= set(ep.answer)
    assert all(s.error is None for s in ep.steps) and 1 <= ep.tool_calls <= 4
    if ep.answer["anomaly_present"]:
        assert ep.answer["defect_type"] in types and len(ep.answer["bbox"]) == 4
    else:
        assert ep.answer["defect_type"] is None and ep.answer["bbox"] is None
    zooms = [s for s in ep.steps if s.tool == "perceptive_zoomer"]
    if zooms:   # uncertain: the zoom is followed by a comparison of the zoomed view
        assert ep.steps[ep.steps.index(zooms[0]) + 1].arguments == {"image_index": zooms[0].result["image_index"]}
    json.dumps(ep.to_record())


def test_loop_feeds_model_mistakes_back(galleries, shared_data):
    class Scripted:
        def __init__(self):
            self.replies = ["no tags here",
                            format_tool_call("perceptive_zoomer", {"image_index": 1, "bbox": [0.9, 0, 0.1, 1]}),
                            format_answer({"anomaly_present": "yes", "defect_type": None, "bbox": None, "confidence": 1}),
                            format_answer({"anomaly_present": False, "defect_type": None, "bbox": None,
                                           "confidence": 0.9})]

        def next_message(self, episode):
            return self.replies.pop(0)

    image = rgb(shared_data / "mvtec" / "transistor" / "test" / "good" / "000.png")
    ep = run_inspection(Scripted(), inspection_tools(galleries), image, "transistor", [])
    assert [s.error is not None for s in ep.steps] == [True, True, True, False]
    assert "anomaly_present must be true or false" in ep.steps[2].error
    assert sum(m["content"].startswith("[Error]") for m in ep.messages if m["role"] == "user") == 3
    assert ep.answer["anomaly_present"] is False


# -- mini-MMAD -------------------------------------------------------------------------------------------------------
def test_mini_mmad_questions_and_grading(shared_data):
    root = shared_data / "mvtec" / "grid"
    qs = build_questions(root)
    n_images = sum(1 for d in (root / "test").iterdir() for _ in d.iterdir())
    assert sum(q["type"] == "anomaly" for q in qs) == n_images
    n_defective = n_images - len(list((root / "test" / "good").iterdir()))
    assert sum(q["type"] == "defect_type" for q in qs) == sum(q["type"] == "location" for q in qs) == n_defective
    loc = next(q for q in qs if q["type"] == "location")
    assert loc["answer"] in CELLS
    m = np.zeros((90, 90), bool)
    m[70:85, 5:20] = True
    assert mask_cell(m) == "bottom-left" and box_cell([0.4, 0.0, 0.6, 0.2]) == "top"
    # a perfect answer sheet scores 1.0, the all-"normal" sheet only gets the good images right
    perfect = {}
    for q in qs:
        if q["type"] == "location":
            r, c = divmod(CELLS.index(q["answer"]), 3)
            perfect[q["image"]]["bbox"] = [c / 3 + 0.1, r / 3 + 0.1, c / 3 + 0.2, r / 3 + 0.2]
        elif q["type"] == "anomaly":
            perfect[q["image"]] = {"anomaly_present": q["answer"] == "yes", "defect_type": q["truth_type"],
                                   "bbox": None, "confidence": 1.0}
    report = grade(qs, perfect)
    assert all(v["accuracy"] == 1.0 for v in report.values())
    normal = {q["image"]: {"anomaly_present": False, "defect_type": None, "bbox": None, "confidence": 1.0} for q in qs}
    report = grade(qs, normal)
    assert report["anomaly"]["accuracy"] == pytest.approx((n_images - n_defective) / n_images, abs=1e-4)
    assert report["defect_type"]["accuracy"] == 0 and report["defect_type"]["chance"] == 0.2


# -- command line ----------------------------------------------------------------------------------------------------
def test_cli_inspect_answers_overlays_resume_and_bad_input(galleries, shared_data, tmp_path):
    from local_agent.cli import main

    root = shared_data / "mvtec" / "transistor" / "test"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(root / "good" / "004.png", inputs / "a_good.png")
    shutil.copy(root / "cut_lead" / "001.png", inputs / "b_cut.png")
    (inputs / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(inputs / "d_tiny.png")
    gray16 = (rgb(root / "good" / "005.png")[:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(inputs / "e_gray16.png")
    out = tmp_path / "out"
    args = ["inspect", str(inputs), "--category", "transistor", "--gallery", str(galleries), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    by_key = {r["key"]: r for r in lines}
    assert sorted(by_key) == ["a_good", "b_cut", "c_corrupt", "d_tiny", "e_gray16"]
    assert "unreadable" in by_key["c_corrupt"]["error"] and "too small" in by_key["d_tiny"]["error"]
    for key in ("a_good", "b_cut", "e_gray16"):
        assert by_key[key]["error"] is None and set(ANSWER_KEYS) <= set(by_key[key]["answer"])
        assert (out / by_key[key]["overlay"]).is_file() and (out / by_key[key]["trajectory"]).is_file()
    assert "grayscale" in by_key["e_gray16"]["note"]
    assert "3 inspected" in result.output and "2 failed" in result.output
    import torch

    before = torch.get_num_threads()
    try:                                                # a rerun resumes, with the torch threads it is given
        again = CliRunner().invoke(main, args + ["--threads", str(before + 1)])
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
    assert again.exit_code == 0 and "3 done before" in again.output
    missing = CliRunner().invoke(main, ["inspect", str(inputs), "--category", "bottle", "--gallery", str(galleries),
                                        "--out", str(tmp_path / "o2")])
    assert missing.exit_code == 1 and "no finished gallery for 'bottle'" in missing.output


def test_cli_eval_reports_accuracy_and_aurocs(galleries, shared_data, tmp_path):
    from local_agent.cli import main

    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["inspect", "--eval", str(shared_data / "mvtec" / "transistor"), "--gallery",
                                       str(galleries), "--out", str(out), "--limit", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["images"] == 5 and report["answered"] == 5
    assert set(report["accuracy"]) == {"anomaly", "defect_type", "location"}
    assert report["accuracy"]["defect_type"]["chance"] == 0.25
    for key in ("image_AUROC", "agent_image_AUROC", "pixel_AUROC"):
        assert 0.0 <= report[key] <= 1.0
    assert report["pixel_AUROC"] > 0.6
    assert len(list((out / "maps").glob("*.npy"))) == 5


# -- rewards ---------------------------------------------------------------------------------------------------------
def _answer(present, dtype=None, box=None, conf=0.9):
    return format_answer({"anomaly_present": present, "defect_type": dtype, "bbox": box, "confidence": conf}, "done")


def test_perception_rewards_on_hand_made_cases():
    completions = [_answer(True, "crack", [0.0, 0.0, 0.5, 0.5]),        # right, half-overlapping box
                   _answer(False),                                    # normal, right
                   _answer(True, "scratch", [0.5, 0.5, 1.0, 1.0]),     # wrong type, disjoint box
                   "<thinking>hm</thinking>no answer"]                # invalid
    truth_present = [True, False, True, True]
    truth_type = ["crack", None, "crack", "crack"]
    truth_box = [[0.0, 0.0, 0.5, 1.0], None, [0.0, 0.0, 0.5, 0.5], [0, 0, 1, 1]]
    prompts = [""] * 4
    assert anomaly_accuracy_reward(prompts, completions, truth_present) == [1.0, 1.0, 1.0, 0.0]
    assert bbox_iou_reward(prompts, completions, truth_box) == [0.5, 1.0, 0.0, 0.0]
    assert defect_type_reward(prompts, completions, truth_type) == [1.0, 1.0, 0.0, 0.0]
    assert defect_type_reward(prompts, [_answer(True, "Crack")], ["crack"]) == [1.0]
    assert perception_reward(prompts, completions, truth_present, truth_type, truth_box) == [1.75, 2.0, 1.0, 0.0]
    conversational = [[{"role": "assistant", "content": _answer(False)}]]
    assert anomaly_accuracy_reward(prompts[:1], conversational, [False]) == [1.0]


def test_behaviour_reward_prefers_efficient_valid_tool_use():
    call = format_tool_call("comparative_retriever", {"image_index": 1}, "compare")
    zoom = format_tool_call("perceptive_zoomer", {"image_index": 1, "bbox": [0, 0, 0.5, 0.5]}, "zoom")
    resp = {"role": "tool", "content": format_tool_response("comparative_retriever", {"anomaly_score": 1.0})}

    def conv(*texts, error=False):
        msgs = []
        for t in texts:
            msgs.append({"role": "assistant", "content": t})
            msgs.append(resp)
        msgs.pop()
        if error:
            msgs.insert(1, {"role": "user", "content": "[Error] perceptive_zoomer: bbox is too small"})
        return msgs

    efficient = conv(call, zoom, _answer(True, "crack", [0, 0, 0.5, 0.5]))
    repeated = conv(call, call, call, call, _answer(False))          # 1 repeat... 3 repeats + 1 beyond the limit
    malformed = conv("<thinking>x</thinking><tool_call>{bad json</tool_call>", _answer(False))
    no_answer = conv(call, zoom)
    rewards = tool_use_reward([""] * 5, [efficient, repeated, malformed, no_answer, conv(call, _answer(False), error=True)])
    assert rewards == [1.0, 0.0, 0.75, 0.0, 0.75]
    assert tool_use_reward([""], [_answer(False)]) == [1.0]


# -- a model policy drives the same loop -----------------------------------------------------------------------------
class ChatServer:
    """An OpenAI-compatible chat server on 127.0.0.1 answering from a queue and recording requests."""

    def __init__(self, replies: list[str]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                outer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                data = json.dumps({"choices": [{"message": {"content": outer.replies.pop(0)}}]}).encode()
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


def test_vlm_policy_drives_inspection_through_the_cli(galleries, shared_data, tmp_path):
    from local_agent.cli import main

    answer = _answer(True, "bent_lead", [0.1, 0.5, 0.4, 0.9], 0.7)
    server = ChatServer([format_tool_call("comparative_retriever", {"image_index": 1}, "compare first"),
                         "I think it is fine", answer])
    try:
        image = shared_data / "mvtec" / "transistor" / "test" / "bent_lead" / "002.png"
        result = CliRunner().invoke(main, ["inspect", str(image), "--category", "transistor", "--gallery",
                                           str(galleries), "--out", str(tmp_path / "o"), "--policy", "vlm",
                                           "--policy-option", "engine=openai", "--policy-option",
                                           f"base_url={server.url}"])
        assert result.exit_code == 0, result.output
        record = json.loads((tmp_path / "o" / "answers.jsonl").read_text())
        assert record["answer"]["defect_type"] == "bent_lead" and record["tool_calls"] == 1 and record["steps"] == 3
        first, last = server.requests[0]["messages"], server.requests[-1]["messages"]
        assert first[0]["role"] == "system" and "perceptive_zoomer" in first[0]["content"]
        assert first[1]["content"][0]["type"] == "image_url"                    # image 1 arrives with the task
        dumped = json.dumps(last)
        assert "[Tool Response from comparative_retriever]" in dumped and "normal exemplar" in dumped
        assert "[Error]" in json.dumps(last[-1])
    finally:
        server.close()
