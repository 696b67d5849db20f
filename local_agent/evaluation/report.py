"""What a person reads after ``evaluate``: results.md (one table, methods as rows) and a contact sheet per method."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..images import atomic_write_bytes, encode_png, load_image
from .synthesis import Sample

TABLE_METRICS = ("image_AUROC", "image_AP", "image_F1Max", "pixel_AUROC", "pixel_AP", "pixel_F1Max", "pixel_AUPRO")


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    over = image.copy()
    m = mask.astype(bool)
    over[m] = (0.6 * image[m] + 0.4 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(over, contours, -1, (255, 40, 40), 1)
    return over


def write_contact_sheet(path: Path, samples: list[Sample], title: str, per_type: int = 4, tile: int = 160) -> None:
    """Rows = defect types, columns = the first ``per_type`` samples: image | image with the mask overlaid."""
    import cv2
    from PIL import Image

    types = list(dict.fromkeys(s.anomaly_type for s in samples))
    label_h = 18
    sheet = np.full((label_h + len(types) * (tile + label_h), per_type * 2 * tile, 3), 255, np.uint8)
    cv2.putText(sheet, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for r, t in enumerate(types):
        y = label_h + r * (tile + label_h)
        cv2.putText(sheet, t, (4, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for c, s in enumerate([s for s in samples if s.anomaly_type == t][:per_type]):
            image = load_image(s.image).rgb
            with Image.open(s.mask) as im:
                mask = np.asarray(im.convert("L")) >= 128
            for k, panel in enumerate((image, _overlay(image, mask))):
                x = (2 * c + k) * tile
                sheet[y + label_h:y + label_h + tile, x:x + tile] = cv2.resize(panel, (tile, tile),
                                                                                 interpolation=cv2.INTER_AREA)
    atomic_write_bytes(path, encode_png(sheet))


def _fmt(value: Any, percent: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per method: detection (%), type accuracy (%), generative metrics, cost."""
    methods = results["methods"]
    gen_names: list[str] = []
    for r in methods.values():
        for k in r.get("generative", {}):
            if k not in ("per_type", "networks") and k not in gen_names:
                gen_names.append(k)
    metric_names = [m for m in TABLE_METRICS if any(m in r.get("metrics", {}) for r in methods.values())]
    resnet = any(isinstance(r.get("type_accuracy", {}).get("resnet34"), dict) for r in methods.values())
    head = (["method"] + metric_names + ["type acc. (Lite0)"] + (["type acc. (ResNet34)"] if resnet else [])
            + gen_names + ["judge pass %", "s/sample", "s/passed"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in methods.items():
        cost = r.get("cost", {})
        row = [name] + [_fmt(r.get("metrics", {}).get(m)) for m in metric_names]
        row.append(_fmt(r.get("type_accuracy", {}).get("accuracy")))
        if resnet:
            other = r.get("type_accuracy", {}).get("resnet34")
            row.append(_fmt(other.get("accuracy") if isinstance(other, dict) else None))
        row += [_fmt(r.get("generative", {}).get(g), percent=False) for g in gen_names]
        row += [_fmt(cost.get("judge_pass_rate")), _fmt(cost.get("seconds_per_sample"), percent=False),
                _fmt(cost.get("seconds_per_passed"), percent=False)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _resnet_note(results: dict[str, Any]) -> str:
    """Why the paper's ResNet34 column is absent, when it is."""
    for r in results["methods"].values():
        other = r.get("type_accuracy", {}).get("resnet34")
        if isinstance(other, str):
            return f" (ResNet34 {other})"
    return ""


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    cfg = results["config"]
    ts = results["test_set"]
    text = (f"# Synthetic-anomaly benchmark: {results['category']}\n\n"
            f"Data: `{results['data']}` — {ts['train_good']} train/good images; test: {ts['images']} images "
            f"({ts['anomalous']} anomalous; types {', '.join(ts['types'])}).\n"
            f"{cfg['n_per_type']} synthetic samples per type and method, seed {cfg['seed']}; detector "
            f"{cfg['seg'].get('encoder', 'UNet')} + decoder, {cfg['seg']['side']} px, {cfg['seg']['steps']} steps; "
            f"classifier EfficientNet-Lite0 "
            f"{cfg['cls']['side']} px, {cfg['cls']['steps']} steps{_resnet_note(results)}. Detection numbers and "
            "accuracy in %.\n\n"
            + markdown_table(results) + "\n\n"
            "Generative metrics are named after the networks that computed them: `IS` / `IC-LPIPS` only with "
            "Inception-v3 and LPIPS weights under weights/; `IS-effnet-lite0` / `IC-feature-dist-effnet-lite0` are "
            "substitutes on EfficientNet-Lite0 and are not comparable with the paper's numbers.\n"
            f"\nWall time: {results.get('wall_seconds', 0):.0f} s.\n")
    atomic_write_bytes(path, text.encode())
