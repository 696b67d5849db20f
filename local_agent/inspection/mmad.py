"""A mini-MMAD benchmark from any MVTec-layout category folder, and how an inspector's answer is graded.

Three question types per test image, as in MMAD: ``anomaly`` (is there a defect? yes/no, every image), and for
defective images ``defect_type`` (which of the category's types, i.e. the ``test/<type>`` folder names) and
``location`` (which cell of a 3x3 grid holds most of the ground-truth mask). One inspector answer is graded against
all questions of its image, so each image is inspected once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..images import atomic_write_bytes, list_images

GRID = (("top-left", "top", "top-right"), ("left", "center", "right"), ("bottom-left", "bottom", "bottom-right"))
CELLS = [c for row in GRID for c in row]
QUESTION_TYPES = ("anomaly", "defect_type", "location")


def defect_types(category_folder: Path) -> list[str]:
    """The category's defect type names: the ``test/<type>`` folders other than ``good``."""
    from ..evaluation.layout import type_names

    test = Path(category_folder) / "test"
    return type_names(test) if test.is_dir() else []


def mask_cell(mask: np.ndarray) -> str:
    """The 3x3 cell holding the most mask pixels."""
    h, w = mask.shape
    counts = [[mask[r * h // 3:(r + 1) * h // 3, c * w // 3:(c + 1) * w // 3].sum() for c in range(3)] for r in range(3)]
    r, c = np.unravel_index(int(np.argmax(counts)), (3, 3))
    return GRID[r][c]


def box_cell(box: list[float]) -> str:
    """The 3x3 cell holding a normalised box's centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return GRID[min(int(cy * 3), 2)][min(int(cx * 3), 2)]


def load_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def build_questions(category_folder: Path) -> list[dict[str, Any]]:
    """Every question of the category's test split, in a stable order."""
    folder = Path(category_folder)
    category, types = folder.name, defect_types(folder)
    if not (folder / "test").is_dir():
        raise ValueError(f"{folder}: not an MVTec category folder (no test/)")
    questions: list[dict[str, Any]] = []
    for kind_dir in [folder / "test" / t for t in sorted(["good", *types]) if (folder / "test" / t).is_dir()]:
        for image in list_images(kind_dir):
            defective = kind_dir.name != "good"
            mask = folder / "ground_truth" / kind_dir.name / f"{image.stem}_mask.png"
            base = {"image": str(image), "category": category, "truth_type": kind_dir.name,
                    "mask": str(mask) if defective and mask.is_file() else None}
            qid = f"{category}/{kind_dir.name}/{image.stem}"
            questions.append({**base, "id": f"{qid}/anomaly", "type": "anomaly", "options": ["yes", "no"],
                              "question": f"Is there any defect in this {category}?",
                              "answer": "yes" if defective else "no"})
            if not defective:
                continue
            questions.append({**base, "id": f"{qid}/defect_type", "type": "defect_type", "options": types,
                              "question": f"Which defect does this {category} show?", "answer": kind_dir.name})
            if base["mask"]:
                questions.append({**base, "id": f"{qid}/location", "type": "location", "options": CELLS,
                                  "question": "Where is the defect (3x3 grid)?",
                                  "answer": mask_cell(load_mask(mask))})
    return questions


def write_questions(questions: list[dict[str, Any]], path: Path) -> None:
    atomic_write_bytes(path, "".join(json.dumps(q) + "\n" for q in questions).encode())


def answer_to_choice(question: dict[str, Any], answer: dict[str, Any] | None) -> str | None:
    """What the inspector's answer says for this question (None: it gave no usable answer)."""
    if not answer:
        return None
    if question["type"] == "anomaly":
        return "yes" if answer.get("anomaly_present") else "no"
    if question["type"] == "defect_type":
        return answer.get("defect_type") if answer.get("anomaly_present") else None
    box = answer.get("bbox")
    return box_cell(box) if answer.get("anomaly_present") and box else None


def grade(questions: list[dict[str, Any]], answers: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Accuracy per question type (``answers`` maps image path to the inspector's answer), with chance levels.

    Type and location questions exist only for defective images; a missed defect answers them wrongly. Their
    ``accuracy_when_flagged`` counts only images the inspector flagged, to separate naming/locating from detecting.
    """
    result: dict[str, Any] = {}
    for qtype in QUESTION_TYPES:
        qs = [q for q in questions if q["type"] == qtype]
        if not qs:
            continue
        hits = [answer_to_choice(q, answers.get(q["image"])) == q["answer"] for q in qs]
        result[qtype] = {"accuracy": round(sum(hits) / len(qs), 4), "correct": int(sum(hits)), "questions": len(qs),
                         "chance": round(1 / len(qs[0]["options"]), 4)}
        if qtype == "anomaly":   # always answering the commoner label; on skewed sets this beats a coin
            yes = sum(q["answer"] == "yes" for q in qs) / len(qs)
            result[qtype]["majority"] = round(max(yes, 1 - yes), 4)
            result[qtype].update(anomaly_rates(qs, hits))
        else:
            answers_seen = [q["answer"] for q in qs]
            result[qtype]["majority"] = round(max(map(answers_seen.count, set(answers_seen))) / len(qs), 4)
            flagged = [h for q, h in zip(qs, hits) if (answers.get(q["image"]) or {}).get("anomaly_present")]
            result[qtype]["flagged"] = len(flagged)
            result[qtype]["accuracy_when_flagged"] = round(sum(flagged) / len(flagged), 4) if flagged else None
    return result


def anomaly_rates(questions: list[dict[str, Any]], hits: list[bool]) -> dict[str, Any]:
    """MMAD's anomaly measure: balanced accuracy = (accuracy on normal images + accuracy on defective ones) / 2
    (scikit-learn; always answering one label scores 0.5), with the overkill rate (normal images flagged) and the
    miss rate (defects not flagged). A missing answer counts as wrong."""
    from sklearn.metrics import balanced_accuracy_score

    truth = [q["answer"] == "yes" for q in questions]
    said = [t if h else not t for t, h in zip(truth, hits)]
    normal = [h for t, h in zip(truth, hits) if not t]
    defect = [h for t, h in zip(truth, hits) if t]
    return {"balanced_accuracy": round(float(balanced_accuracy_score(truth, said)), 4) if normal and defect else None,
            "balanced_chance": 0.5,
            "overkill": round(1 - sum(normal) / len(normal), 4) if normal else None,
            "miss": round(1 - sum(defect) / len(defect), 4) if defect else None}
