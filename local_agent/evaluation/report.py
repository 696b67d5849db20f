"""What a person reads after ``evaluate``: results.md (a table per category, a mean table over categories, paired
differences to the reference method) and a contact sheet per method and seed."""
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


def _cell(stat: dict[str, Any] | None, percent: bool = True, flags: list[str] | None = None, signed: bool = False) -> str:
    """``mean ± sd`` (sd left out with one seed); a measure flagged in every seed prints its flag instead."""
    flags = flags or []
    if not stat or stat.get("mean") is None:
        return flags[0].split(" (")[0] if flags and flags[0].startswith("collapsed") else (flags[0] if flags else "–")
    scale = 100 if percent else 1
    sign = "+" if signed else ""
    text = f"{scale * stat['mean']:{sign}.1f}" if percent else f"{stat['mean']:{sign}.3f}"
    if stat.get("sd") is not None:
        text += f" ± {scale * stat['sd']:.1f}" if percent else f" ± {stat['sd']:.3f}"
    if flags:
        text += f" ({len(flags)} flagged)"
    return text


TYPE_COLUMNS = (("type_image_accuracy", "type acc. image"), ("type_image_balanced", "type bal. acc. image"),
                ("type_crop_accuracy", "type acc. crop"), ("type_crop_balanced", "type bal. acc. crop"))


def category_table(entry: dict[str, Any]) -> str:
    """One row per method: detection (%), type measures (%, or the flag), judge pass rate, cost."""
    from .harness import DETECTION_METRICS

    methods = entry["methods"]
    metric_names = [m for m in DETECTION_METRICS
                    if any(e["summary"].get(m, {}).get("mean") is not None for e in methods.values())]
    has_types = any((r.get("type_accuracy") is not None) for e in methods.values() for r in e["seeds"].values())
    head = ["method"] + metric_names + ([c for _, c in TYPE_COLUMNS] if has_types else []) + \
        ["judge pass %", "s/sample"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in methods.items():
        s = e["summary"]
        row = [name] + [_cell(s.get(m)) for m in metric_names]
        if has_types:
            row += [_cell(s.get(k), flags=s.get(f"type_{k.split('_')[1]}_flags")) for k, _ in TYPE_COLUMNS]
        row += [_judge_cell(s.get("judge_pass_rate")), _cell(s.get("seconds_per_sample"), percent=False)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def per_type_table(entry: dict[str, Any], metric: str = "image_AUROC") -> str:
    """One row per method, one column per real defect type: ``metric`` of that type's test images against the good
    ones, mean ± sd over the seeds that have it (runs written before per-type detection have none)."""
    from .harness import mean_sd

    methods = entry["methods"]
    types = sorted({t for e in methods.values() for r in e["seeds"].values() for t in r.get("per_type_detection") or {}})
    if not types:
        return ""
    lines = ["| method | " + " | ".join(types) + " |", "|" + "---|" * (len(types) + 1)]
    for name, e in methods.items():
        cells = [_cell(mean_sd([((r.get("per_type_detection") or {}).get(t) or {}).get(metric)
                                for r in e["seeds"].values()])) for t in types]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _judge_cell(stat: dict[str, Any] | None) -> str:
    """The judge pass rate; one that passed every sample of every seed is marked: there it could not fail, so it
    filtered nothing (a finding about the judge, not a quality of the samples)."""
    cell = _cell(stat)
    if stat and stat.get("mean") == 1.0 and not stat.get("sd"):
        cell += " (all passed)"
    return cell


def paired_table(methods: dict[str, dict[str, Any]], reference: str) -> str:
    """Method minus reference, per seed then mean ± sd (percentage points)."""
    from .harness import PAIRED_METRICS

    rows = {m: e["paired"] for m, e in methods.items() if "paired" in e}
    if not rows:
        return ""
    names = [k for k in PAIRED_METRICS if any(p.get(k, {}).get("mean") is not None for p in rows.values())]
    head = ["method"] + [f"Δ {k}" for k in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, p in rows.items():
        lines.append("| " + " | ".join([f"{m} − {reference}"] + [_cell(p.get(k), signed=True) for k in names]) + " |")
    return "\n".join(lines)


def mean_table(results: dict[str, Any]) -> str:
    """Methods as rows: mean ± sd over seeds of the per-category mean."""
    from .harness import DETECTION_METRICS, TYPE_METRICS

    mean = results["mean"]
    names = [k for k in DETECTION_METRICS + TYPE_METRICS
             if any(mean[m].get(k, {}).get("n") for m in mean)]
    head = ["method"] + names + ["judge pass %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, stats in mean.items():
        cells = []
        for k in names:
            st = stats.get(k, {})
            cell = _cell(st)
            if st.get("missing"):
                cell += f" ({st['missing']} seed(s) flagged in some category)" if st.get("n") else " (flagged)"
            cells.append(cell)
        lines.append("| " + " | ".join([m] + cells + [_cell(stats.get("judge_pass_rate"))]) + " |")
    return "\n".join(lines)


def markdown_table(results: dict[str, Any]) -> str:
    """The mean table with several categories, else the one category's table (what the CLI prints)."""
    cats = results["categories"]
    if len(cats) > 1:
        return mean_table(results)
    return category_table(next(iter(cats.values())))


def _resnet_note(results: dict[str, Any]) -> str:
    """Why the paper's ResNet34 column is absent, when it is."""
    for c in results["categories"].values():
        for e in c["methods"].values():
            for r in e["seeds"].values():
                other = (r.get("type_accuracy") or {}).get("resnet34")
                if isinstance(other, str):
                    return f" ResNet34 (the paper's classifier) {other}."
    return ""


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    cfg = results["config"]
    seeds = results["seeds"]
    ref = results["reference"]
    cls = cfg["cls"]
    parts = [f"# Synthetic-anomaly benchmark: {', '.join(results['categories'])}\n",
             f"{cfg['n_per_type']} synthetic samples per type and method; seeds {', '.join(map(str, seeds))} "
             f"(synthesis and detector); cells are mean ± sd over seeds (sample sd), in %. Detector "
             f"{cfg['seg'].get('encoder', '')} + decoder, {cfg['seg']['side']} px, {cfg['seg']['steps']} steps. "
             f"Type classifier: {cls['mode']} ({cls['side']} px); 'image' = whole images (the paper's measure), "
             f"'crop' = crops around the synthetic mask (train) and the ground-truth mask (test), one crop rule. "
             f"A classifier whose top class takes >= 90 % of the predictions is flagged 'collapsed', a category with "
             f"one type 'n/a (1 type)'; flagged runs are left out of the means. A judge pass rate marked 'all passed' "
             f"means the judge passed every sample of every seed: there it filtered nothing.{_resnet_note(results)}\n"]
    if len(results["categories"]) > 1:
        typed = [n for n, c in results["categories"].items() if len(c.get("test_set", {}).get("types", [])) != 1]
        note = ("" if len(typed) == len(results["categories"]) else
                f" Type measures: over the categories with more than one defect type ({', '.join(typed) or 'none'}).")
        parts += [f"## Mean over {len(results['categories'])} categories\n",
                  f"Per seed the mean over categories, then mean ± sd over seeds.{note}\n", mean_table(results) + "\n"]
        paired = {m: {"paired": s["paired"]} for m, s in results["mean"].items() if "paired" in s}
        if paired:
            parts += [f"Paired difference to {ref} (per seed, then mean ± sd; percentage points):\n",
                      paired_table(paired, ref) + "\n"]
    for name, c in results["categories"].items():
        ts = c["test_set"]
        types = ts["types"]
        chance = f"chance: balanced 1/{len(types)} = {100 / len(types):.1f} %" if len(types) > 1 else "one type"
        parts += [f"## {name}\n",
                  f"`{c['data']}` — {ts['train_good']} train/good; test {ts['images']} images ({ts['anomalous']} "
                  f"anomalous; types {', '.join(types)}; {chance}). Time: {c.get('run_seconds', 0):.0f} s in its runs "
                  f"(synthesis, detector, classifier, real-image features), {c.get('wall_seconds', 0):.0f} s wall "
                  "in this call (less when runs were read back).\n",
                  category_table(c) + "\n"]
        table = paired_table(c["methods"], ref)
        if table:
            parts += [f"Paired difference to {ref} (percentage points):\n", table + "\n"]
        for metric in ("image_AUROC", "pixel_AP"):
            table = per_type_table(c, metric)
            if table:
                parts += [f"{metric} per defect type (that type's test images against the good ones):\n", table + "\n"]
    parts.append(f"Total wall time: {results.get('wall_seconds', 0):.0f} s.\n")
    atomic_write_bytes(path, "\n".join(parts).encode())
