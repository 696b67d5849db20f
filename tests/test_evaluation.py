"""Evaluation harness: metric functions against hand-computed values, layout refusal messages, the baseline IG
backends on real MVTec images, and a tiny end-to-end benchmark run twice (must give identical numbers)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from local_agent.evaluation.generative import inception_score, intra_cluster_distance, n_centres
from local_agent.evaluation.layout import LayoutError, read_category
from local_agent.evaluation.metrics import aupro, detection_metrics, f1_max, image_scores


# ------------------------------------------------------------------------------------------ metrics
def test_f1_max_hand_computed():
    # threshold 0.35 flags {0.4, 0.35, 0.8}: TP 2, FP 1 -> P 2/3, R 1 -> F1 0.8 (the best threshold)
    assert f1_max(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.8)


def test_detection_metrics_hand_computed():
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    masks = np.zeros((4, 4, 4), bool)
    masks[2, :2, :2] = masks[3, 2:, 2:] = True
    maps = masks.astype(np.float32) * 0.9 + 0.05        # perfect pixel separation
    m = detection_metrics(labels, scores, masks, maps)
    assert m["image_AUROC"] == pytest.approx(0.75)      # 3 of 4 (anomalous, normal) pairs ordered right
    assert m["image_AP"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["image_F1Max"] == pytest.approx(0.8)
    assert m["pixel_AUROC"] == m["pixel_AP"] == m["pixel_F1Max"] == m["pixel_AUPRO"] == pytest.approx(1.0)
    inverted = detection_metrics(labels, scores, masks, 1 - maps)
    assert inverted["pixel_AUROC"] == pytest.approx(0.0) and inverted["pixel_AUPRO"] == pytest.approx(0.0)


def test_aupro_hand_computed():
    # One region of 4 px scoring 0.5; of 6 normal px one scores 1.0. Curve: (0,0) -> (1/6, 0) -> (1/6, 1) -> (1, 1);
    # area up to FPR 0.3 = 0.3 - 1/6, normalised by 0.3 -> 4/9.
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]], bool)[None]
    amap = np.array([[0.5, 0.5, 0.5, 0.5, 1.0, 0, 0, 0, 0, 0]])[None]
    assert aupro(mask, amap) == pytest.approx(4 / 9)
    # Two regions, one found (1.0) and one missed (0.0), normal pixels at 0.2: PRO is 0.5 up to FPR 1 -> 0.5.
    mask2 = np.array([[1, 1, 0, 0, 1, 1]], bool)[None]
    amap2 = np.array([[1.0, 1.0, 0.2, 0.2, 0.0, 0.0]])[None]
    assert aupro(mask2, amap2) == pytest.approx(0.5)


def test_image_score_is_map_maximum():
    maps = np.zeros((2, 3, 3), np.float32)
    maps[0, 1, 2] = 0.7
    maps[1, 0, 0] = 0.2
    assert image_scores(maps).tolist() == pytest.approx([0.7, 0.2])


def test_inception_score_hand_computed():
    assert inception_score(np.full((5, 3), 1 / 3)) == pytest.approx(1.0)          # no information: IS = 1
    assert inception_score(np.eye(4)) == pytest.approx(4.0)                       # 4 sure, distinct classes
    # p = [[1, 0], [.5, .5]], marginal [.75, .25]: KL = ln(4/3) and .5 ln(2/3) + .5 ln 2
    expected = math.exp((math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2)
    assert inception_score(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx(expected)


def test_intra_cluster_distance_hand_computed():
    to_centre = np.array([[0, 0, 5, 5], [5, 5, 0, 1.0]])      # fakes 0,1 -> centre 0; fakes 2,3 -> centre 1
    pairwise = np.array([[0, .2, .9, .9], [.2, 0, .9, .9], [.9, .9, 0, .6], [.9, .9, .6, 0]])
    assert intra_cluster_distance(to_centre, pairwise) == pytest.approx((0.2 + 0.6) / 2)
    # at most 2 per cluster: cluster 0 = fakes 0,1 (d 0.2), the third member is dropped
    to_centre3 = np.array([[0, 0, 0.5, 5], [5, 5, 5, 0.0]])
    assert intra_cluster_distance(to_centre3, pairwise, max_per_cluster=2) == pytest.approx(0.2)
    assert intra_cluster_distance(np.array([[0, 5.0], [5, 0.0]]), np.zeros((2, 2))) is None   # no pairs
    assert (n_centres(12), n_centres(11), n_centres(2)) == (4, 3, 1)


# ------------------------------------------------------------------------------------------ layout
def make_category(shared_data: Path, root: Path, n_train: int = 6, n_good: int = 3, n_per_type: int = 2,
                  types: tuple[str, ...] = ("broken", "thread")) -> Path:
    """A small MVTec-layout copy of real grid images (first files by name)."""
    src = shared_data / "mvtec" / "grid"
    (root / "train" / "good").mkdir(parents=True)
    for p in sorted((src / "train" / "good").iterdir())[:n_train]:
        shutil.copy(p, root / "train" / "good" / p.name)
    (root / "test" / "good").mkdir(parents=True)
    for p in sorted((src / "test" / "good").iterdir())[:n_good]:
        shutil.copy(p, root / "test" / "good" / p.name)
    for t in types:
        (root / "test" / t).mkdir(parents=True)
        (root / "ground_truth" / t).mkdir(parents=True)
        for p in sorted((src / "test" / t).iterdir())[:n_per_type]:
            shutil.copy(p, root / "test" / t / p.name)
            shutil.copy(src / "ground_truth" / t / f"{p.stem}_mask.png", root / "ground_truth" / t / f"{p.stem}_mask.png")
    return root


def test_layout_reads_real_category(shared_data):
    cat = read_category(shared_data / "mvtec" / "transistor")
    assert cat.anomaly_types == ["bent_lead", "cut_lead", "damaged_case", "misplaced"]
    assert len(cat.train_good) == 120 and len(cat.test) == 100
    assert all(it.mask is not None for it in cat.test if it.is_anomalous)


def test_layout_refusals(shared_data, tmp_path):
    root = make_category(shared_data, tmp_path / "cat")
    read_category(root)  # valid
    mask = root / "ground_truth" / "thread" / "000_mask.png"
    with Image.open(mask) as im:
        im.resize((100, 80)).save(mask)
    with pytest.raises(LayoutError, match=r"mask size 100x80 does not match image 000\.png 256x256"):
        read_category(root)
    mask.unlink()
    with pytest.raises(LayoutError, match=r"000\.png: missing mask \(expected ground_truth/thread/000_mask\.png\)"):
        read_category(root)
    shutil.rmtree(root / "test" / "thread")
    (root / "test" / "thread").mkdir()
    with pytest.raises(LayoutError, match=r"thread: no test images"):
        read_category(root)
    shutil.rmtree(root / "train")
    with pytest.raises(LayoutError, match=r"missing train/good/"):
        read_category(root)
    with pytest.raises(LayoutError, match="no such folder"):
        read_category(tmp_path / "nowhere")


def test_layout_refusals_test_split(shared_data, tmp_path):
    root = make_category(shared_data, tmp_path / "cat", n_train=1, n_good=1, n_per_type=1, types=("broken",))
    for remove, expected in (("test/good", r"no normal test images in test/good/"),
                             ("test/broken", r"no defect-type folders"), ("test", r"missing test/")):
        shutil.rmtree(root / remove)
        with pytest.raises(LayoutError, match=expected) as error:
            read_category(root)
        assert "\n" not in str(error.value)          # one line


def test_cli_refuses_bad_layout(shared_data, tmp_path):
    from click.testing import CliRunner

    from local_agent.cli import main

    root = make_category(shared_data, tmp_path / "cat", n_train=2, n_good=1, n_per_type=1, types=("broken",))
    (root / "ground_truth" / "broken" / "000_mask.png").unlink()
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "missing mask" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


# ------------------------------------------------------------------------------------------ baseline backends
BASELINE_CONFIGS = {
    "cutpaste-patch": {"backend": "cutpaste", "variant": "patch"},
    "cutpaste-scar": {"backend": "cutpaste", "variant": "scar"},
    "draem-dtd": {"backend": "draem", "textures": "DTD"},
    "draem-procedural": {"backend": "draem"},
    "nsa": {"backend": "nsa", "sources": "SOURCES"},
}


@pytest.mark.parametrize("name", sorted(BASELINE_CONFIGS))
@pytest.mark.parametrize("category", ["grid", "transistor"])
def test_baseline_backend_on_real_images(name, category, shared_data):
    from local_agent.tools import image_gen, mask_gen
    from local_agent.tools.base import build_backend

    config = dict(BASELINE_CONFIGS[name])
    if config.get("textures") == "DTD":
        config["textures"] = str(shared_data / "dtd")
    if config.get("sources") == "SOURCES":
        config["sources"] = str(shared_data / "mvtec" / category / "train" / "good")
    backend = build_backend(image_gen.BACKENDS, "image_gen", config)
    masker = build_backend(mask_gen.BACKENDS, "mask_gen", {"backend": "difference"})
    image = np.asarray(Image.open(shared_data / "mvtec" / category / "train" / "good" / "003.png").convert("RGB"))
    outputs = []
    for seed in (0, 1):
        edited, region = backend.edit_with_region(image, "", seed=seed, category=category)
        assert edited.shape == image.shape and edited.dtype == np.uint8
        assert region.any(), f"{name} seed {seed}: the method changed no region"
        assert masker.mask(image, edited).any(), f"{name} seed {seed}: MG found no change"
        assert np.array_equal(edited, backend.edit(image, "", seed=seed, category=category))  # deterministic
        outputs.append(edited)
    assert not np.array_equal(outputs[0], outputs[1])
    if category == "grid":  # grayscale in, grayscale out
        assert np.array_equal(outputs[0][..., 0], outputs[0][..., 1]) and np.array_equal(outputs[0][..., 1],
                                                                                           outputs[0][..., 2])


def test_baseline_backend_bad_options(tmp_path):
    from local_agent.tools import image_gen
    from local_agent.tools.base import BackendUnavailable, build_backend

    with pytest.raises(ValueError, match="variant must be patch, scar or both"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "cutpaste", "variant": "blob"})
    with pytest.raises(BackendUnavailable, match="texture folder not found"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "draem", "textures": str(tmp_path / "none")})
    with pytest.raises(BackendUnavailable, match="no images in sources folder"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "nsa", "sources": str(tmp_path)})


# ------------------------------------------------------------------------------------------ the harness
def test_tiny_benchmark_is_deterministic_and_resumes(shared_data, tmp_path):
    from local_agent.evaluation.classifier import ClsConfig
    from local_agent.evaluation.harness import EvalConfig, evaluate
    from local_agent.evaluation.segmentation import SegConfig

    root = make_category(shared_data, tmp_path / "grid")

    def config() -> EvalConfig:
        return EvalConfig(seg=SegConfig(side=64, width=4, steps=3, batch=4), cls=ClsConfig(side=96, steps=2, batch=4),
                          weights_dir=str(tmp_path / "no-weights"))

    runs = [evaluate(root, ["nsa", "open-loop"], tmp_path / f"out{i}", n_per_type=2, seed=3, config=config())
            for i in (1, 2)]
    for method in ("nsa", "open-loop"):
        a, b = (r["methods"][method] for r in runs)
        for key in ("metrics", "type_accuracy", "generative", "empty_masks", "segmentation_final_loss"):
            assert a[key] == b[key], f"{method}: {key} differs between two runs with the same seed"
        assert set(a["metrics"]) == {"image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP",
                                     "pixel_F1Max", "pixel_AUPRO"}
        assert a["cost"]["samples"] == 4 and 0 <= a["cost"]["judge_pass_rate"] <= 1
        gen = a["generative"]
        assert "IS" not in gen and "IC-LPIPS" not in gen                   # no Inception / LPIPS weights here
        assert gen["IS-effnet-lite0"] >= 1.0 and gen["IC-feature-dist-effnet-lite0"] > 0
        assert (tmp_path / "out1" / method / "contact_sheet.png").is_file()
    out = tmp_path / "out1"
    saved = json.loads((out / "results.json").read_text())
    assert saved["seed"] == 3 and saved["config"]["seg"]["steps"] == 3 and "torch" in saved["versions"]
    table = (out / "results.md").read_text()
    assert "| nsa |" in table and "| open-loop |" in table and "IS-effnet-lite0" in table
    assert "| IS |" not in table
    # A rerun with the same configuration reads every method back instead of retraining.
    rerun = evaluate(root, ["nsa", "open-loop"], out, n_per_type=2, seed=3, config=config())
    assert rerun["methods"] == runs[0]["methods"]


def test_paper_networks_load_from_weights_folder(tmp_path):
    """IS / IC-LPIPS names appear only when weights/ holds the TorchScript networks (tiny random stand-ins here)."""
    import torch
    from torch import nn

    from local_agent.evaluation.generative import INCEPTION_FILE, LPIPS_FILE, generative_metrics, load_networks

    class TinyClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.mean(dim=(2, 3)) * 10)

    class MeanAbsDistance(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a - b).abs().mean(dim=(1, 2, 3))

    torch.manual_seed(0)
    for module, rel in ((TinyClassifier(), INCEPTION_FILE), (MeanAbsDistance(), LPIPS_FILE)):
        (tmp_path / rel).parent.mkdir(parents=True)
        torch.jit.script(module).save(str(tmp_path / rel))
    nets = load_networks(tmp_path)
    rng = np.random.default_rng(0)
    fakes = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    reals = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    out = generative_metrics({"scratch": fakes}, {"scratch": reals}, nets)
    assert out["IS"] >= 1.0 and "IS-effnet-lite0" not in out
    # one centre (3 // 3): all four fakes in one cluster; IC = mean pairwise mean-absolute difference in [-1, 1] units
    pairs = [np.abs(fakes[i].astype(float) - fakes[j]).mean() / 127.5 for i in range(4) for j in range(i + 1, 4)]
    assert out["IC-LPIPS"] == pytest.approx(np.mean(pairs), rel=1e-5)


def test_resnet34_classifier_loads_torchvision_layout_from_weights_folder(tmp_path):
    """The paper's ResNet34 row: a state dict with torchvision's names (a tiny random one, width 8, stands in for
    resnet34-b627a593.pth) loads strictly and is fine-tuned; no file or a wrong file gives one-line reasons."""
    import torch

    from local_agent.evaluation.classifier import ClsConfig, type_accuracy
    from local_agent.evaluation.resnet import RESNET34_FILE, ResNet34, load_resnet34
    from local_agent.tools.base import BackendUnavailable

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    labels, config = np.array([0, 1, 0, 1, 0, 1]), ClsConfig(side=64, steps=2, batch=4)
    skipped = type_accuracy(images, labels, images, labels, ["a", "b"], config, seed=0, weights_dir=tmp_path)
    assert skipped["resnet34"].startswith("skipped: missing") and "\n" not in skipped["resnet34"]

    torch.manual_seed(0)
    state = ResNet34(width=8).state_dict()
    assert {"conv1.weight", "layer4.0.downsample.1.running_var", "layer3.5.conv2.weight", "fc.bias"} <= set(state)
    (tmp_path / RESNET34_FILE).parent.mkdir(parents=True)
    torch.save(state, tmp_path / RESNET34_FILE)
    loaded = load_resnet34(tmp_path)
    assert torch.equal(loaded.state_dict()["layer2.1.conv1.weight"], state["layer2.1.conv1.weight"])
    result = type_accuracy(images, labels, images, labels, ["a", "b"], config, seed=0, weights_dir=tmp_path)
    assert result["resnet34"]["classifier"].startswith("resnet34") and 0 <= result["resnet34"]["accuracy"] <= 1
    assert np.sum(result["resnet34"]["confusion"]) == len(labels)

    del state["layer4.2.bn2.weight"]
    torch.save(state, tmp_path / RESNET34_FILE)
    with pytest.raises(BackendUnavailable, match="not a torchvision resnet34 state dict") as error:
        load_resnet34(tmp_path)
    assert "\n" not in str(error.value)
