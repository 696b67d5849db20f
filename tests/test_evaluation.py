"""Evaluation harness: metric functions against hand-computed values, layout refusal messages, the baseline IG
backends on real MVTec images (a visible anomaly on grid and transistor), the type measures (a collapsed classifier
is flagged), and tiny end-to-end benchmarks: seeds and paired differences (a second run is identical), several
categories in one call (one mean table)."""
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
from local_agent.evaluation.metrics import aupro, detection_metrics, f1_max, image_scores, per_type_metrics


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


def test_per_type_metrics_judge_each_type_against_the_good_images_alone():
    # goods score 0.1 and 0.5; "crack" images 0.9 and 0.3 (one found, one below a good); "hole" 0.6 (above both)
    types = ["good", "crack", "hole", "good", "crack"]
    scores = np.array([0.1, 0.9, 0.6, 0.5, 0.3])
    masks = np.zeros((5, 2, 2), bool)
    masks[1, 0, 0] = masks[2, 1, 1] = masks[4, 0, 1] = True
    maps = np.zeros((5, 2, 2), np.float32)
    maps[1, 0, 0], maps[2, 1, 1], maps[4, 1, 0] = 0.9, 0.8, 0.7       # the second crack's map misses its pixel
    m = per_type_metrics(types, scores, masks, maps)
    assert set(m) == {"crack", "hole"} and m["crack"]["n"] == 2 and m["hole"]["n"] == 1
    assert m["crack"]["image_AUROC"] == pytest.approx(0.75)   # 3 of 4 (crack, good) pairs ordered right
    assert m["hole"]["image_AUROC"] == pytest.approx(1.0)     # the overall AUROC would mix the two
    assert m["hole"]["pixel_AP"] == pytest.approx(1.0)
    assert m["crack"]["pixel_AP"] < 1.0
    assert per_type_metrics(["crack"], scores[:1], masks[1:2], maps[1:2])["crack"]["image_AUROC"] is None


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


def test_test_images_of_several_sizes_are_resized_to_the_most_common(shared_data, tmp_path):
    """Magnetic-tile crops and a plant's photos come in several sizes; the pixel metrics need one. Before, a
    category like that stopped `evaluate` with an error. The odd image and its mask are resized together."""
    from local_agent.evaluation.harness import load_real

    root = make_category(shared_data, tmp_path / "cat", n_train=2, n_good=2, n_per_type=2)
    image, mask = root / "test" / "thread" / "001.png", root / "ground_truth" / "thread" / "001_mask.png"
    with Image.open(mask) as m:
        before = np.asarray(m.convert("L")) >= 128
    for path, resample in ((image, Image.BILINEAR), (mask, Image.NEAREST)):
        with Image.open(path) as im:
            im.resize((300, 200), resample).save(path)
    real = load_real(read_category(root), 64)
    assert real.resized == 1 and real.test_masks.shape[1:] == (256, 256)
    assert all(im.shape[:2] == (256, 256) for im in real.test_images)
    i = [str(it.image) for it in read_category(root).test].index(str(image))
    back = real.test_masks[i]
    assert (back & before).sum() / (back | before).sum() > 0.8, "the mask stays on its defect"
    assert load_real(read_category(make_category(shared_data, tmp_path / "plain", 2, 2, 2)), 64).resized == 0


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
    "draem-fg": {"backend": "draem", "textures": "DTD", "foreground": True},
    "nsa": {"backend": "nsa", "sources": "SOURCES"},
}


@pytest.mark.parametrize("name", sorted(BASELINE_CONFIGS))
@pytest.mark.parametrize("category", ["grid", "transistor"])
def test_baseline_gives_visible_anomaly(name, category, shared_data):
    """Every baseline changes its region visibly (ΔE above the MG floor on at least a quarter of it and 16 px),
    the MG tool finds the change, the output is deterministic per seed and grayscale stays grayscale."""
    from local_agent.tools import image_gen, mask_gen
    from local_agent.tools.base import build_backend
    from local_agent.tools.baselines import VISIBLE_DELTA_E, visible_pixels
    from local_agent.tools.imaging import foreground_mask

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
        n, share = visible_pixels(image, edited, region, VISIBLE_DELTA_E)
        assert n >= 16 and share >= 0.25, f"{name} seed {seed}: {n} px ({100 * share:.0f} %) visibly changed"
        assert masker.mask(image, edited).sum() >= 16, f"{name} seed {seed}: MG found no change"
        assert np.array_equal(edited, backend.edit(image, "", seed=seed, category=category))  # deterministic
        if name == "draem-fg":
            assert not (region & ~foreground_mask(image, category)).any()          # on the object only
        outputs.append(edited)
    assert not np.array_equal(outputs[0], outputs[1])
    if category == "grid":  # grayscale in, grayscale out
        assert np.array_equal(outputs[0][..., 0], outputs[0][..., 1]) and np.array_equal(outputs[0][..., 1],
                                                                                           outputs[0][..., 2])


def test_draem_with_an_atlas_paints_the_painters_real_sizes_in_its_own_region_shape(shared_data):
    """``draem`` with ``atlas``: the Perlin region covers the share of the object the painter's prior gives the
    same type and seed (a real defect's, the category left out), on the object."""
    from local_agent.evaluation.synthesis import open_loop_prompt
    from local_agent.tools import image_gen
    from local_agent.tools.atlas import Atlas
    from local_agent.tools.base import build_backend
    from local_agent.tools.baselines import perlin_region
    from local_agent.tools.imaging import foreground_mask
    from local_agent.tools.painter import parse_prompt
    from local_agent.tools.painter.priors import apply_priors

    image = np.asarray(Image.open(shared_data / "mvtec" / "screw" / "train" / "good" / "003.png").convert("RGB"))
    fg = foreground_mask(image, "screw")
    sized = build_backend(image_gen.BACKENDS, "image_gen", {"backend": "draem", "foreground": True, "atlas": "default"})
    plain = build_backend(image_gen.BACKENDS, "image_gen", {"backend": "draem", "foreground": True})
    assert sized.reads_type and not plain.reads_type
    atlas = Atlas.load().for_category("screw")
    shares = []
    for seed, kind in [(0, "scratch_head"), (1, "thread_top"), (2, "manipulated_front")]:
        _, region = sized.edit_with_region(image, "", seed=seed, category="screw", anomaly_type=kind)
        spec = apply_priors(parse_prompt(open_loop_prompt("screw", kind)), atlas, np.random.default_rng([seed, 17]),
                            on_object=True, object_frac=float(fg.mean()))
        assert not (region & ~fg).any()
        assert abs(int(region.sum()) - max(16, round(spec.area * fg.sum()))) <= 1, (kind, region.sum(), spec.area)
        shares.append(region.sum() / fg.sum())
        edited = image_gen.edit_image(sized, image, "", seed, "screw", kind)   # ImageGen passes the type
        assert np.array_equal(edited, sized.edit(image, "", seed=seed, category="screw", anomaly_type=kind))
    assert len(set(shares)) == 3
    # the closed loop's refinements steer it: "large" draws from the larger real sizes, "pronounced" an opaque texture
    base = open_loop_prompt("screw", "scratch_head")
    areas = {w: [sized.edit_with_region(image, base.replace(" Keep", f" Refinement: make it {w}. Keep"), seed=s,
                                        category="screw", anomaly_type="scratch_head")[1].sum() for s in range(6)]
             for w in ("tiny", "very large")}
    assert max(areas["tiny"]) < min(areas["very large"]), areas
    strong, faint = (sized.edit(image, base.replace(" Keep", f" Refinement: make it {w}. Keep"), seed=0,
                                category="screw", anomaly_type="scratch_head") for w in ("pronounced", "faint"))
    _, region = sized.edit_with_region(image, base, seed=0, category="screw", anomaly_type="scratch_head")
    change = lambda edited: np.abs(edited.astype(float) - image).sum(-1)[region].mean()   # noqa: E731
    assert change(strong) > change(faint)
    from local_agent.profile import atlas_options   # the synthetic folder's key and --atlas see it as an atlas reader

    assert atlas_options({"tools": {"image_gen": {"backend": "draem", "atlas": "plant.json"}}}) == {"image_gen": "plant.json"}
    exact = perlin_region(64, 64, np.random.default_rng(0), 100, within=np.pad(np.ones((20, 20), bool), 22))
    assert exact.sum() == 100 and not exact[:22].any()        # exactly the area asked, inside ``within``


def test_baseline_backend_bad_options(tmp_path):
    from local_agent.tools import image_gen
    from local_agent.tools.base import BackendUnavailable, build_backend

    with pytest.raises(ValueError, match="variant must be patch, scar or both"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "cutpaste", "variant": "blob"})
    with pytest.raises(BackendUnavailable, match="texture folder not found"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "draem", "textures": str(tmp_path / "none")})
    with pytest.raises(BackendUnavailable, match="no images in sources folder"):
        build_backend(image_gen.BACKENDS, "image_gen", {"backend": "nsa", "sources": str(tmp_path)})


# ------------------------------------------------------------------------------------------ type measures
def test_collapsed_classifier_is_flagged_not_reported():
    from local_agent.evaluation.classifier import type_scores
    from local_agent.evaluation.report import _cell

    types = ["bent", "broken", "glue"]
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    collapsed = type_scores(np.zeros(10, int), truth, types)             # one class for every image
    assert collapsed["accuracy"] == pytest.approx(0.4)                    # = the share of that class: no result
    assert collapsed["balanced_accuracy"] == pytest.approx(1 / 3)
    assert collapsed["collapsed"] == "collapsed (bent for 100 % of images)"
    assert collapsed["confusion"] == [[4, 0, 0], [2, 0, 0], [4, 0, 0]]
    near = type_scores(np.array([1] * 9 + [0]), truth, types)             # near-constant: 90 % one class
    assert near["collapsed"].startswith("collapsed (broken for 90 %")
    good = type_scores(np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0]), truth, types)
    assert good["collapsed"] is None and good["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 3 / 4) / 3)
    assert good["chance_balanced"] == pytest.approx(1 / 3) and good["chance_majority"] == pytest.approx(0.4)
    single = type_scores(np.zeros(3, int), np.zeros(3, int), ["crack"])
    assert single["collapsed"] == "n/a (1 type)" and single["balanced_accuracy"] is None
    # results.md prints the flag instead of the number
    assert _cell({"mean": None, "sd": None}, flags=[collapsed["collapsed"]] * 3) == "collapsed"
    assert _cell({"mean": None}, flags=["n/a (1 type)"]) == "n/a (1 type)"
    assert _cell({"mean": 0.5, "sd": 0.1}, flags=["collapsed (x)"]) == "50.0 ± 10.0 (1 flagged)"


def test_defect_crop_is_one_rule():
    from local_agent.evaluation.classifier import defect_crop

    image = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    mask = np.zeros((100, 120), bool)
    mask[10:20, 100:118] = True                        # 10 x 18 box near the right border
    crop = defect_crop(image, mask, context=1.5, min_fraction=0.125)
    assert crop.shape[:2] == (27, 27)                  # 1.5 x 18, shifted inside the image
    assert np.array_equal(crop, image[2:29, 93:120])
    tiny = np.zeros((100, 120), bool)
    tiny[50, 60] = True
    assert defect_crop(image, tiny).shape[:2] == (12, 12)           # at least 1/8 of the shorter side
    assert defect_crop(image, np.zeros((100, 120), bool)).shape == image.shape   # no mask: whole image


def test_classifier_api_is_reusable():
    """train_classifier / predict: any image size, string labels, both modes; two separable classes are learnt."""
    from local_agent.evaluation.classifier import ClsConfig, predict, train_classifier

    rng = np.random.default_rng(0)
    dark = [rng.integers(0, 60, (40, 50, 3), dtype=np.uint8) for _ in range(6)]
    striped = [np.tile((np.arange(50) % 8 < 4).astype(np.uint8)[None, :, None] * 255, (40, 1, 3)) for _ in range(6)]
    labels = ["dark"] * 6 + ["striped"] * 6
    clf = train_classifier(dark + striped, labels, ClsConfig(side=64))
    assert clf.classes == ["dark", "striped"]
    assert predict(clf, [dark[0], striped[0]]) == ["dark", "striped"]
    tuned = train_classifier(dark + striped, labels, ClsConfig(side=64, mode="finetune", steps=2, batch=4), seed=0)
    assert set(predict(tuned, dark[:2])) <= {"dark", "striped"}
    with pytest.raises(ValueError, match="not among the classes"):
        train_classifier(dark, ["dark"] * 6, classes=["other"])


# ------------------------------------------------------------------------------------------ the harness
def heuristic_profile() -> dict:
    """The default tools with the heuristic judge (fixed here: the test measures the harness, not the judge)."""
    from local_agent.profile import load_profile

    profile = load_profile("default")
    profile["tools"]["quality_eval"] = {"backend": "heuristic", "pass_location": 4, "pass_quality": 4}
    return profile


def tiny_config(tmp_path: Path, **kw):
    from local_agent.evaluation.classifier import ClsConfig
    from local_agent.evaluation.harness import EvalConfig
    from local_agent.evaluation.segmentation import SegConfig

    return EvalConfig(seg=SegConfig(side=64, width=4, steps=3, batch=4), cls=ClsConfig(side=64),
                      weights_dir=str(tmp_path / "no-weights"), **kw)


def test_detector_training_flushes_denormals_only_while_it_trains():
    """Flushed while the decoder trains (ball_screw: 3.4x faster, its tiny gradients go denormal), off again after
    (the judge's features elsewhere in the process keep full precision); the key says which numerics a run had."""
    from dataclasses import replace

    import torch

    from local_agent.evaluation.segmentation import SegConfig, train_decoder

    seen = []
    tiny = torch.tensor([1e-39])
    feats = [torch.zeros(2, c, s, s) for c, s in ((24, 16), (40, 8), (112, 4))]
    config = SegConfig(side=64, width=4, steps=2, batch=4)
    train_decoder(feats, np.zeros((2, 64, 64), bool), feats, config, 0, lambda k: seen.append(float(tiny * 1.0)))
    assert seen == [0.0, 0.0]
    assert float(tiny * 1.0) > 0.0
    seen.clear()
    train_decoder(feats, np.zeros((2, 64, 64), bool), feats, replace(config, flush_denormals=False), 0,
                  lambda k: seen.append(float(tiny * 1.0)))
    assert all(v > 0.0 for v in seen)
    assert SegConfig().to_dict()["flush_denormals"] is True
    assert "flush_denormals" not in SegConfig(flush_denormals=False).to_dict()   # the key of runs cached before


def test_several_detectors_retrain_the_run_and_keep_its_samples(shared_data, tmp_path):
    from dataclasses import replace

    from local_agent.evaluation.harness import evaluate, run_result
    from local_agent.evaluation.segmentation import SegConfig, detector_seed

    assert "detectors" not in SegConfig().to_dict()          # one decoder: the cache keys from before the option
    assert SegConfig(detectors=3).to_dict()["detectors"] == 3
    assert detector_seed(7, 0) == 7 and len({detector_seed(7, k) for k in range(4)}) == 4
    root = make_category(shared_data, tmp_path / "grid")
    config = tiny_config(tmp_path, classifier=False)
    out = tmp_path / "out"
    one = run_result(evaluate(root, ["nsa"], out, n_per_type=2, seeds=(3,), profile=heuristic_profile(),
                              config=config), "nsa", "grid", 3)
    images = sorted((out / "grid" / "nsa" / "seed3" / "synthetic").rglob("*.png"))
    stamps = [p.stat().st_mtime_ns for p in images]
    two = run_result(evaluate(root, ["nsa"], out, n_per_type=2, seeds=(3,), profile=heuristic_profile(),
                              config=replace(config, seg=replace(config.seg, detectors=2))), "nsa", "grid", 3)
    assert two["config_key"] != one["config_key"] and two["metrics"] != one["metrics"]
    assert [p.stat().st_mtime_ns for p in images] == stamps   # same samples, only the detector retrained


def test_an_atlas_holding_the_tested_defects_is_refused(shared_data, tmp_path):
    """A plant's atlas keeps its category's own rows; evaluating on the defects it holds would score the agent on
    what it copied, so evaluate stops in one line. Rows of other images of the category are allowed (few-shot)."""
    from local_agent.evaluation.harness import EvaluationError, atlas_leaks, evaluate
    from local_agent.evaluation.layout import read_category
    from local_agent.tools.atlas import Atlas

    root = make_category(shared_data, tmp_path / "grid")
    shipped = Atlas.load()
    plant = tmp_path / "plant.json"
    Atlas([r for r in shipped.rows if r["category"] == "grid"], ["grid"]).save(plant)
    profile = heuristic_profile()
    profile["tools"]["image_gen"] = {**profile["tools"]["image_gen"], "atlas": str(plant)}
    category = read_category(root)
    assert atlas_leaks(heuristic_profile(), category) == []             # the shipped atlas leaves grid out
    assert atlas_leaks(profile, category) == ["grid/broken/000", "grid/broken/001", "grid/thread/000", "grid/thread/001"]
    with pytest.raises(EvaluationError, match="holds 4 of the real defects it is tested on"):
        evaluate(root, ["open-loop"], tmp_path / "out", n_per_type=1, seeds=(0,), profile=profile,
                 config=tiny_config(tmp_path))
    assert not (tmp_path / "out").exists()
    Atlas([r for r in shipped.rows if r["category"] == "grid" and r["image"].endswith(("/005", "/006"))],
          ["grid"]).save(plant)                                         # other images of grid: the few shots
    assert atlas_leaks(profile, category) == []


def test_a_rebuilt_atlas_file_makes_new_samples(tmp_path):
    """The key of open-loop's and the agent's samples holds the content of a plant's atlas file, not only its path;
    the shipped atlas adds nothing (earlier runs keep their keys)."""
    from local_agent.evaluation.synthesis import synthesis_inputs

    atlas = tmp_path / "plant.json"
    profile = heuristic_profile()
    assert synthesis_inputs("agent", profile, None, 3) == {"profile": profile, "max_attempts": 3}
    profile["tools"]["image_gen"] = {**profile["tools"]["image_gen"], "atlas": str(atlas)}
    keys = []
    for text in ('{"rows": []}', '{"rows": [], "sources": ["x"]}'):
        atlas.write_text(text)
        keys.append([synthesis_inputs(m, profile, None, 3) for m in ("agent", "open-loop")])
    assert all(a != b for a, b in zip(*keys))
    assert synthesis_inputs("draem", profile, "tex", 3) == synthesis_inputs("draem", heuristic_profile(), "tex", 3)
    # the loop's own image_gen option keys the agent's samples, not open-loop's (one attempt: nothing to reseed)
    keep = heuristic_profile()
    keep["tools"]["image_gen"] = {**keep["tools"]["image_gen"], "reseed": False}
    assert synthesis_inputs("open-loop", keep, None, 3) == synthesis_inputs("open-loop", heuristic_profile(), None, 3)
    assert synthesis_inputs("agent", keep, None, 3) != synthesis_inputs("agent", heuristic_profile(), None, 3)


def test_open_loop_is_judged_by_the_judge_the_agent_answers_to(shared_data, tmp_path):
    """With the painter at twice the real sizes the agent's judge measures in those units; open-loop's judge pass %
    must be that judge's verdict too, so that one attempt of the agent is open-loop's sample, to the verdict. Before,
    open-loop was judged at real sizes (ball_screw's third pit: passed there, failed by the agent's judge)."""
    from local_agent.evaluation.synthesis import synthesize_method
    from local_agent.profile import load_profile

    profile = load_profile("default")
    profile["tools"]["image_gen"] = {**profile["tools"]["image_gen"], "atlas": "default", "size_scale": 2}
    category = read_category(shared_data / "bsdata" / "ball_screw")
    one_shot = synthesize_method("open-loop", category, tmp_path / "ol", n=3, seed=0, profile=profile)
    agent = synthesize_method("agent", category, tmp_path / "agent", n=3, seed=0, profile=profile, max_attempts=1)
    assert len(one_shot) == len(agent) == 3
    for a, b in zip(one_shot, agent):
        assert np.array_equal(np.asarray(Image.open(a.image)), np.asarray(Image.open(b.image)))
    assert [s.passed for s in one_shot] == [s.passed for s in agent]
    assert not all(s.passed for s in agent)


def test_seeds_and_paired_differences_are_deterministic_and_resume(shared_data, tmp_path):
    from local_agent.evaluation.harness import evaluate, flat_metrics

    root = make_category(shared_data, tmp_path / "grid")
    runs = [evaluate(root, ["nsa", "draem"], tmp_path / f"out{i}", n_per_type=2, seeds=(3, 4), profile=heuristic_profile(),
                     config=tiny_config(tmp_path)) for i in (1, 2)]
    cat = runs[0]["categories"]["grid"]
    for method in ("nsa", "draem"):
        a, b = (r["categories"]["grid"]["methods"][method] for r in runs)
        assert set(a["seeds"]) == {"3", "4"}
        for s in ("3", "4"):
            for key in ("metrics", "type_accuracy", "empty_masks", "segmentation_final_loss"):
                assert a["seeds"][s][key] == b["seeds"][s][key], f"{method} seed {s}: {key} differs between runs"
        assert a["seeds"]["3"]["metrics"] != a["seeds"]["4"]["metrics"]      # the seed moves the result
        for key in ("pixel_AP", "image_AUROC", "type_crop_balanced", "type_image_accuracy", "judge_pass_rate"):
            assert a["summary"][key] == b["summary"][key]                  # timings aside, the same summary
        run = a["seeds"]["3"]
        assert set(run["metrics"]) == {"image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP",
                                       "pixel_F1Max", "pixel_AUPRO"}
        assert run["cost"]["samples"] == 4 and 0 <= run["cost"]["judge_pass_rate"] <= 1
        assert set(run["per_type_detection"]) == {"broken", "thread"}                  # each real type on its own
        assert all(v["n"] == 2 and 0 <= v["image_AUROC"] <= 1 for v in run["per_type_detection"].values())
        assert np.sum(run["type_accuracy"]["crop"]["confusion"]) == 4           # 2 real defects per type
        assert "generative" not in run                                     # off by default
        assert (tmp_path / "out1" / "grid" / method / "seed3" / "contact_sheet.png").is_file()
    # mean ± sd over seeds and the paired difference, from the per-seed numbers
    nsa, draem = cat["methods"]["nsa"], cat["methods"]["draem"]
    values = [nsa["seeds"][s]["metrics"]["pixel_AP"] for s in ("3", "4")]
    assert nsa["summary"]["pixel_AP"]["mean"] == pytest.approx(np.mean(values))
    assert nsa["summary"]["pixel_AP"]["sd"] == pytest.approx(np.std(values, ddof=1))
    diffs = [flat_metrics(nsa["seeds"][s])["pixel_AP"] - flat_metrics(draem["seeds"][s])["pixel_AP"] for s in ("3", "4")]
    assert nsa["paired"]["pixel_AP"]["per_seed"] == pytest.approx(dict(zip(("3", "4"), diffs)))
    assert nsa["paired"]["pixel_AP"]["mean"] == pytest.approx(np.mean(diffs))
    assert "paired" not in draem                                          # the reference itself
    out = tmp_path / "out1"
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [3, 4] and saved["config"]["seg"]["steps"] == 3 and "torch" in saved["versions"]
    table = (out / "results.md").read_text()
    assert "| nsa |" in table and "| draem |" in table and "nsa − draem" in table and " ± " in table
    assert "image_AUROC per defect type" in table and "| method | broken | thread |" in table
    # A rerun reads every (method, seed) back; a third seed only runs what is new.
    rerun = evaluate(root, ["nsa", "draem"], out, n_per_type=2, seeds=(3, 4), profile=heuristic_profile(),
                     config=tiny_config(tmp_path))
    assert rerun["categories"]["grid"]["methods"] == cat["methods"]
    (out / "grid" / "nsa" / "seed3" / "synthetic" / "manifest.jsonl").unlink()   # would be needed to retrain
    more = evaluate(root, ["nsa", "draem"], out, n_per_type=2, seeds=(3, 4, 5), profile=heuristic_profile(),
                    config=tiny_config(tmp_path))
    assert more["categories"]["grid"]["methods"]["nsa"]["seeds"]["3"] == nsa["seeds"]["3"]
    assert more["categories"]["grid"]["methods"]["nsa"]["summary"]["pixel_AP"]["n"] == 3


def test_samples_resume_only_under_the_configuration_that_made_them(shared_data, tmp_path):
    """A changed mask tool redoes a baseline's samples (it masks them); a changed prompt writer, which the baseline
    never calls, reads the run back. Before, a changed profile resumed the old samples and only retrained."""
    from PIL import Image

    from local_agent.evaluation.harness import evaluate

    root = make_category(shared_data, tmp_path / "grid", types=("broken",), n_per_type=1)
    out, run_dir = tmp_path / "out", tmp_path / "out" / "grid" / "nsa" / "seed0"

    def run(profile):
        return evaluate(root, ["nsa"], out, n_per_type=1, seeds=(0,), profile=profile,
                        config=tiny_config(tmp_path, classifier=False))["categories"]["grid"]["methods"]["nsa"]

    def mask_pixels():
        record = json.loads((run_dir / "synthetic" / "manifest.jsonl").read_text().splitlines()[0])
        return int((np.asarray(Image.open(run_dir / "synthetic" / record["mask"])) > 0).sum())

    profile = heuristic_profile()
    first, before = run(profile), mask_pixels()
    sentinel = run_dir / "synthetic" / "kept.txt"
    sentinel.write_text("a file of this run")
    profile["tools"]["prompt_gen"]["describe"] = not profile["tools"]["prompt_gen"].get("describe", False)
    assert run(profile)["seeds"] == first["seeds"] and sentinel.is_file()
    profile["tools"]["mask_gen"]["floor"] = 30.0
    run(profile)
    assert not sentinel.exists() and mask_pixels() < before


def test_several_categories_write_one_mean_table(shared_data, tmp_path):
    import yaml
    from click.testing import CliRunner

    from local_agent.cli import main

    parent = tmp_path / "cats"
    make_category(shared_data, parent / "grid_a", n_train=4, n_good=2, n_per_type=2)
    make_category(shared_data, parent / "grid_b", n_train=4, n_good=2, n_per_type=2, types=("bent",))   # one type
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(heuristic_profile()))
    args = ["evaluate", "--methods", "draem,cutpaste", "--seeds", "0,1", "--n", "2", "--steps", "3", "--side", "64",
            "--width", "4", "--profile", str(profile), "--weights", str(tmp_path / "nw")]
    # a folder of category folders (told apart by the layout) ...
    r = CliRunner().invoke(main, args + ["--data", str(parent), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.count("## Mean over 2 categories") == 1 and "## grid_a" in md and "## grid_b" in md
    assert md.count("| cutpaste − draem |") == 3                        # mean table and each category
    grid_b = md[md.index("## grid_b"):]
    draem_row = next(line for line in grid_b.splitlines() if line.startswith("| draem |"))
    assert [c.strip() for c in draem_row.split("|")[1:-1]][8:12] == ["n/a (1 type)"] * 4   # a flag, not 100 %
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    per_cat = [res["categories"][c]["methods"]["draem"]["seeds"]["1"]["metrics"]["pixel_AP"] for c in ("grid_a", "grid_b")]
    assert res["mean"]["draem"]["pixel_AP"]["per_seed"]["1"] == pytest.approx(np.mean(per_cat))
    # type measures average over the categories that have several types: grid_b's one type is left out, not a zero
    from local_agent.evaluation.harness import flat_metrics

    own = flat_metrics(res["categories"]["grid_a"]["methods"]["draem"]["seeds"]["1"])["type_image_accuracy"]
    assert res["mean"]["draem"]["type_image_accuracy"]["per_seed"]["1"] == (None if own is None else pytest.approx(own))
    assert "Type measures: over the categories with more than one defect type (grid_a)." in md
    assert all(res["categories"][c]["wall_seconds"] > 0 for c in ("grid_a", "grid_b"))
    # ... or the category folders themselves, listed after --data: the same numbers, read back from the first run
    r2 = CliRunner().invoke(main, args + ["--data", str(parent / "grid_a"), str(parent / "grid_b"),
                                          "--out", str(tmp_path / "out")])
    assert r2.exit_code == 0, r2.output
    assert json.loads((tmp_path / "out" / "results.json").read_text())["mean"] == res["mean"]


def test_cli_refuses_bad_seeds(shared_data, tmp_path):
    from click.testing import CliRunner

    from local_agent.cli import main

    root = make_category(shared_data, tmp_path / "cat", n_train=2, n_good=1, n_per_type=1, types=("broken",))
    for args, expected in ((["--seeds", "0,x"], "--seeds"), (["--seeds", "1,1"], "distinct"),
                           (["--seeds", "0", "--seed", "1"], "not both"), (["--methods", "draem,blob"], "unknown method")):
        r = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--out", str(tmp_path / "o")] + args)
        assert r.exit_code != 0 and expected in r.output and "Traceback" not in r.output, r.output


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

    from local_agent.evaluation.classifier import ClsConfig, finetune_resnet34
    from local_agent.evaluation.resnet import RESNET34_FILE, ResNet34, load_resnet34
    from local_agent.tools.base import BackendUnavailable

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    labels, config = np.array([0, 1, 0, 1, 0, 1]), ClsConfig(side=64, steps=2, batch=4)
    with pytest.raises(BackendUnavailable, match="missing") as error:
        finetune_resnet34(images, labels, 2, config, seed=0, weights_dir=tmp_path)
    assert "\n" not in str(error.value)

    torch.manual_seed(0)
    state = ResNet34(width=8).state_dict()
    assert {"conv1.weight", "layer4.0.downsample.1.running_var", "layer3.5.conv2.weight", "fc.bias"} <= set(state)
    (tmp_path / RESNET34_FILE).parent.mkdir(parents=True)
    torch.save(state, tmp_path / RESNET34_FILE)
    loaded = load_resnet34(tmp_path)
    assert torch.equal(loaded.state_dict()["layer2.1.conv1.weight"], state["layer2.1.conv1.weight"])
    predict = finetune_resnet34(images, labels, 2, config, seed=0, weights_dir=tmp_path)
    assert set(predict(images).tolist()) <= {0, 1} and len(predict(images)) == 6

    del state["layer4.2.bn2.weight"]
    torch.save(state, tmp_path / RESNET34_FILE)
    with pytest.raises(BackendUnavailable, match="not a torchvision resnet34 state dict") as error:
        load_resnet34(tmp_path)
    assert "\n" not in str(error.value)


def test_a_judge_that_passed_everything_is_marked():
    from local_agent.evaluation.report import category_table

    def entry(rates):
        seeds = {str(i): {"metrics": {}} for i in range(len(rates))}
        summary = {"pixel_AP": {"mean": 0.3, "sd": 0.01},
                   "judge_pass_rate": {"mean": float(np.mean(rates)), "sd": float(np.std(rates, ddof=1))}}
        return {"methods": {"agent": {"seeds": seeds, "summary": summary}}}

    assert "100.0 ± 0.0 (all passed)" in category_table(entry([1.0, 1.0, 1.0]))
    assert "(all passed)" not in category_table(entry([1.0, 0.9, 1.0]))
