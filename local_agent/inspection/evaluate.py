"""``local-agent inspect --eval DIR``: the mini-MMAD questions of one MVTec category, answered by the inspector.

Reports accuracy per question type (with chance), ``image_AUROC`` of the discrepancy's image score,
``agent_image_AUROC`` of the answer itself (confidence signed by the yes/no decision, so any policy can be scored),
``pixel_AUROC`` of the discrepancy map against the ground-truth masks (good images count as all-normal pixels), and
seconds per image. AUROCs come from scikit-learn. The gallery must come from ``train/good`` only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..images import atomic_write_bytes
from .episode import Policy
from .mmad import build_questions, defect_types, grade, load_mask, write_questions
from .runner import inspect_images


def agent_score(answer: dict[str, Any] | None) -> float:
    """The answer as one number: P(anomaly) read from the decision and its confidence."""
    if not answer:
        return 0.5
    c = float(answer.get("confidence", 0.5))
    return c if answer.get("anomaly_present") else 1.0 - c


def evaluate(folder: Path, tools: dict[str, Any], policy: Policy, out: Path, types: list[str] | None = None,
             limit: int | None = None, progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    import json

    from sklearn.metrics import roc_auc_score

    folder, out = Path(folder), Path(out)
    questions = build_questions(folder)
    if limit:                                   # a quick look: the first ``limit`` images of every test folder
        keep, count = set(), {}
        for q in questions:
            count.setdefault(q["truth_type"], set()).add(q["image"])
            if len(count[q["truth_type"]]) <= limit:
                keep.add(q["image"])
        questions = [q for q in questions if q["image"] in keep]
    write_questions(questions, out / "questions.jsonl")
    images = list(dict.fromkeys(q["image"] for q in questions))
    types = types or defect_types(folder)
    summary = inspect_images([Path(p) for p in images], folder.name, types, tools, policy, out, save_maps=True,
                             progress=progress)
    records = {r["image"]: r for r in summary.records}
    answers = {p: records[p].get("answer") for p in images if p in records}
    truth = {q["image"]: q for q in questions if q["type"] == "anomaly"}
    labels, map_scores, agent_scores, pix_true, pix_score, seconds = [], [], [], [], [], []
    for p in images:
        rec = records.get(p, {})
        if rec.get("map_score") is None:
            continue
        labels.append(truth[p]["answer"] == "yes")
        map_scores.append(rec["map_score"])
        agent_scores.append(agent_score(rec.get("answer")))
        seconds.append(rec.get("seconds", 0.0))
        dmap = np.load(out / rec["map"]).astype(np.float32)
        mask = load_mask(Path(truth[p]["mask"])) if truth[p]["mask"] else np.zeros(dmap.shape, bool)
        if mask.shape != dmap.shape:
            import cv2
            mask = cv2.resize(mask.astype(np.uint8), dmap.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
        pix_true.append(mask.ravel())
        pix_score.append(dmap.ravel())
    both = len(set(labels)) == 2
    report = {
        "category": folder.name,
        "images": len(images),
        "answered": sum(a is not None for a in answers.values()),
        "errors": summary.errors,
        "accuracy": grade(questions, answers),
        "image_AUROC": round(float(roc_auc_score(labels, map_scores)), 4) if both else None,
        "agent_image_AUROC": round(float(roc_auc_score(labels, agent_scores)), 4) if both else None,
        "pixel_AUROC": round(float(roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score))), 4)
        if pix_true and np.concatenate(pix_true).any() else None,
        "seconds_per_image": round(float(np.mean(seconds)), 3) if seconds else None,
        "mean_tool_calls": round(float(np.mean([r.get("tool_calls", 0) for r in records.values()])), 3)
        if records else None,
    }
    atomic_write_bytes(out / "eval.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "eval.md", markdown_table([report]).encode())
    return report


COLUMNS = (("anomaly", "balanced_accuracy", "anomaly bal. acc."), ("anomaly", "accuracy", "anomaly acc."),
           ("anomaly", "majority", "always-majority acc."), ("anomaly", "overkill", "overkill"),
           ("anomaly", "miss", "miss"), ("defect_type", "accuracy", "type acc."), ("defect_type", "chance", "chance"),
           ("defect_type", "majority", "majority"), ("location", "accuracy", "location acc."),
           ("location", "chance", "chance"), ("location", "majority", "majority"))


def markdown_table(reports: list[dict[str, Any]]) -> str:
    """MMAD-style results, one row per category and, for several, their mean (missing values left out of it)."""
    head = ["category", "images"] + [c[2] for c in COLUMNS] + ["image_AUROC", "s/image"]

    def values(r: dict[str, Any]) -> list[Any]:
        acc = r.get("accuracy", {})
        return [r.get("images")] + [acc.get(q, {}).get(k) for q, k, _ in COLUMNS] + \
            [r.get("image_AUROC"), r.get("seconds_per_image")]

    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [values(r) for r in reports]
    lines += ["| " + " | ".join([r["category"]] + [cell(v) for v in row]) + " |" for r, row in zip(reports, rows)]
    if len(reports) > 1:
        mean = [float(np.mean(col)) if (col := [v for v in column if v is not None]) else None
                for column in zip(*rows)]
        lines.append("| **mean** | " + " | ".join(cell(v) for v in mean) + " |")
    return "\n".join(lines) + "\n"
