"""Which properties of a synthetic set go with a detector that finds real defects? Read from `evaluate` folders.

    python scripts/sample_usefulness.py EVAL_DIR [EVAL_DIR ...] --cache measures.jsonl

For every run under the folders (``<category>/<method>/seed<k>/`` with ``metrics.json`` and ``synthetic/``), each
sample is measured against its source normal: share of the image its mask covers, median ΔE inside the mask, label
fidelity (the share of masked pixels whose ΔE exceeds 10, i.e. that visibly changed), ΔE-changed pixels outside
the grown mask (per masked pixel), and how far the EfficientNet-Lite0 patch features moved inside and outside the
mask (``atlas_measure.feature_change``, in units of the normal's own patch spread). A run's set = the means over its
samples. Runs with the same (category, seed, config_key) are counted once.

Printed, per run metric (pixel AP, image AUROC, AUPRO): the Spearman correlation of each set property with the
metric after subtracting each category's mean (pooled) and within each category, and how well a ridge regression on
all properties, fitted on the other categories, ranks the runs of the held-out one (Spearman, leave-one-category-out).
A judge scored on usefulness would need such a property to predict the held-out categories (docs/synthesis.md,
"What makes a sample teach the detector"). Measures are cached per run in ``--cache`` (a rerun resumes). Not a test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import spearmanr

from local_agent.images import load_image
from local_agent.tools.atlas_measure import NormalFeatures, edited_features, feature_change, patch_cover
from local_agent.tools.imaging import difference_map
from local_agent.training.trajectories import load_mask

SIDE = 256
CHANGED = 10.0      # ΔE: above the mask tool's 6 ΔE floor, what a person sees as changed
METRICS = ("pixel_AP", "image_AUROC", "pixel_AUPRO")


def _image(path: Path | str) -> np.ndarray:
    return cv2.resize(load_image(path).rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def sample_measures(normal: np.ndarray, image: np.ndarray, mask: np.ndarray, nf: NormalFeatures) -> dict[str, float]:
    fc = feature_change(edited_features(image), nf)
    diff = difference_map(normal, image)
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)),
                       iterations=2).astype(bool)
    changed = diff > CHANGED
    out = {"log_area": float(np.log10(max(mask.mean(), 1e-4))),
           "changed_outside": float(np.log10(1e-3 + (changed & ~grown).sum() / max(1.0, float(mask.sum()))))}
    if not mask.any():
        return {**out, "delta_e": 0.0, "label_fidelity": 0.0, "feature_in": 0.0, "feature_out": 0.0}
    cover, cover_grown = patch_cover(mask, fc.shape), patch_cover(grown, fc.shape)
    inside = cover >= 0.25 if (cover >= 0.25).any() else cover >= cover.max()
    return {**out, "delta_e": float(np.median(diff[mask])), "label_fidelity": float(changed[mask].mean()),
            "feature_in": float(fc[inside].mean()),
            "feature_out": float(np.percentile(fc[cover_grown == 0], 99)) if (cover_grown == 0).any() else 0.0}


def measure_run(run: Path) -> dict:
    normals: dict[str, NormalFeatures] = {}
    samples = []
    for line in (run / "synthetic" / "manifest.jsonl").read_text().splitlines():
        s = json.loads(line)
        if not s.get("image") or not s.get("mask"):
            continue
        normal, image = _image(s["source"]), _image(run / "synthetic" / s["image"])
        mask = load_mask(run / "synthetic" / s["mask"], (SIDE, SIDE))
        if s["source"] not in normals:
            normals[s["source"]] = NormalFeatures.of(normal)
        samples.append(sample_measures(normal, image, mask, normals[s["source"]]))
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": str(run), "category": run.parents[1].name, "seed": run.name,
            "config_key": metrics.get("config_key"), "metrics": metrics["metrics"],
            "set": {k: float(np.mean([s[k] for s in samples])) for k in samples[0]} if samples else {}}


def runs_under(folders: list[Path]) -> list[Path]:
    return sorted({m.parent for f in folders for m in f.rglob("metrics.json") if (m.parent / "synthetic").is_dir()})


def report(rows: list[dict]) -> None:
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    names = list(rows[0]["set"])
    cats = np.array([r["category"] for r in rows])
    x = np.array([[r["set"][k] for k in names] for r in rows])
    xc = x.copy()
    for c in set(cats):
        xc[cats == c] -= x[cats == c].mean(0)
    order = sorted(set(cats))
    for metric in METRICS:
        keep = np.array([r["metrics"].get(metric) is not None for r in rows])
        y = np.array([100 * (r["metrics"].get(metric) or 0.0) for r in rows])
        yc = y.copy()
        for c in set(cats):
            yc[cats == c] -= y[(cats == c) & keep].mean() if ((cats == c) & keep).any() else 0.0
        print(f"\n{metric}: Spearman, category-centred over {keep.sum()} runs | per category ({', '.join(order)})")
        for j, k in enumerate(names):
            per = [spearmanr(x[(cats == c) & keep, j], y[(cats == c) & keep])[0] for c in order]
            print(f"  {k:16s} {spearmanr(xc[keep, j], yc[keep])[0]:+.2f} | " + " ".join(f"{v:+.2f}" for v in per))
        held = []
        for c in order:
            train, test = keep & (cats != c), keep & (cats == c)
            scale = StandardScaler().fit(xc[train])
            model = RidgeCV(alphas=np.logspace(-2, 3, 20)).fit(scale.transform(xc[train]), yc[train])
            held.append(spearmanr(model.predict(scale.transform(xc[test])), yc[test])[0])
        print("  ridge on all, leave-one-category-out: " + " ".join(f"{c} {v:+.2f}" for c, v in zip(order, held)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, required=True, help="JSON lines of per-run measures (resumed)")
    args = parser.parse_args()
    cached = {}
    if args.cache.is_file():
        cached = {r["run"]: r for r in map(json.loads, args.cache.read_text().splitlines())}
    runs = runs_under(args.folders)
    if not runs:
        raise SystemExit(f"no evaluate runs (metrics.json beside synthetic/) under {', '.join(map(str, args.folders))}")
    for i, run in enumerate(runs):
        if str(run) not in cached:
            cached[str(run)] = measure_run(run)
            with args.cache.open("a") as f:
                f.write(json.dumps(cached[str(run)]) + "\n")
        print(f"\r{i + 1}/{len(runs)} runs measured", end="", flush=True)
    unique = {}
    for run in runs:
        r = cached[str(run)]
        if r["set"]:
            unique.setdefault((r["category"], r["seed"], r["config_key"]), r)
    report(list(unique.values()))


if __name__ == "__main__":
    main()
