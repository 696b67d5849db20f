"""What limits a trained inspector, read from `inspect --eval ... --inspector DIR --out EVAL_DIR` folders.

    python scripts/inspect_evidence.py EVAL_DIR [EVAL_DIR ...]

Per folder (docs/inspection.md, "Stop 21"):
- image AUROC of each normalised score the trained retriever reports for image 1 (discrepancy, trained head) and of
  their mean (the decision), over the test images: which evidence ranks defects above normals;
- the same for the maximum of the two, a fusion that was measured and not adopted;
- among flagged defects, type accuracy when the answer's box lies in the right 3x3 cell and when it does not: whether
  a wrong type comes from a wrong box or from the classifier.
Not a test; reads only what the evaluation wrote.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from local_agent.inspection.mmad import box_cell, load_mask, mask_cell


def _path(folder: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() or p.exists() else folder / p


def read_answers(folder: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    except (OSError, ValueError) as e:
        raise SystemExit(f"{folder / 'answers.jsonl'}: unreadable ({e}); give an `inspect --eval` output folder")


def evidence(folder: Path, answers: list[dict]) -> dict[str, float]:
    disc, head, truth = [], [], []
    for answer in answers:
        first = json.loads(_path(folder, answer["trajectory"]).read_text())["steps"][0]["result"]
        if "head_normalized" not in first:
            raise SystemExit(f"{folder}: not an `inspect --eval --inspector` folder (no head evidence)")
        disc.append(first["discrepancy_normalized"])
        head.append(first["head_normalized"])
        truth.append(Path(answer["image"]).parent.name != "good")
    d, h, y = np.array(disc), np.array(head), np.array(truth)
    if y.all() or not y.any():
        raise SystemExit(f"{folder}: needs normal and defective test images")
    return {"discrepancy": roc_auc_score(y, d), "head": roc_auc_score(y, h), "fused (mean)": roc_auc_score(y, d + h),
            "max": roc_auc_score(y, np.maximum(d, h))}


def type_by_location(folder: Path, answers: list[dict]) -> dict[str, float | int] | None:
    given = {a["image"]: a["answer"] for a in answers}
    right = {True: [], False: []}
    for line in (folder / "questions.jsonl").read_text().splitlines():
        q = json.loads(line)
        if q["type"] != "defect_type" or len(q["options"]) < 2:
            continue
        a = given.get(q["image"]) or {}
        if not a.get("bbox"):
            continue
        located = box_cell(a["bbox"]) == mask_cell(load_mask(_path(folder, q["mask"])))
        right[located].append(a.get("defect_type") == q["answer"])
    if not right[True] and not right[False]:
        return None
    return {"box right": len(right[True]), "type acc. | box right": float(np.mean(right[True])) if right[True] else None,
            "box wrong": len(right[False]),
            "type acc. | box wrong": float(np.mean(right[False])) if right[False] else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args()
    for folder in args.folders:
        answers = read_answers(folder)
        auc = evidence(folder, answers)
        print(f"{folder}: image AUROC " + ", ".join(f"{k} {v:.3f}" for k, v in auc.items()))
        typed = type_by_location(folder, answers)
        if typed:
            print("   flagged defects: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in typed.items()))


if __name__ == "__main__":
    main()
