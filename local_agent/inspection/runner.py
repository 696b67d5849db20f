"""``local-agent inspect`` as a library call: inspect many images, write answers, overlays and trajectories.

Layout of ``out``: ``answers.jsonl`` (one line per image: answer or one-line error), ``overlays/<key>.png`` (the
image with the discrepancy heat map and the answer's box), ``trajectories/<key>.json`` (the episode; zooms and
exemplars shown in it saved as ``trajectories/<key>/image_N.png``) and, for evaluation, ``maps/<key>.npy``.
A rerun skips every image that already has an answer; a bad image gets a one-line error and the run goes on.
Keys follow :func:`local_agent.outputs.safe_name` (one file-name component each, unique within a run), and
``answers.jsonl`` is compacted at the start and end of a run: one current record per image, torn lines dropped.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..episode import save_json_atomic
from ..images import IMAGE_SUFFIXES, ImageRejected, atomic_write_bytes, load_image, save_png_atomic
from ..outputs import (append_record, check_record_file, inside, read_records, remove_replaced, safe_name,
                       write_records)
from .episode import InspectionEpisode, Policy, run_inspection

ANSWERS = "answers.jsonl"


@dataclass
class InspectSummary:
    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their images (recursively, sorted), duplicates dropped."""
    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and
                              (q.is_file() or (q.is_symlink() and not q.exists()))))  # a broken link gets a line
        else:
            out.append(p)
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def image_keys(paths: list[Path]) -> list[str]:
    """Safe unique names: the path below the inputs' common folder (``bent/000.png`` → ``bent__000``), through
    :func:`~local_agent.outputs.safe_name`; a key two images would share gets a hash of the second's path."""
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved])) if resolved else Path(".")
    keys: list[str] = []
    used: set[str] = set()
    for p in resolved:
        rel = p.relative_to(root)
        key = safe_name("__".join(rel.with_suffix("").parts) or rel.name)
        if key in used:  # "a b.png" beside "a b.jpg", or bent__000.png beside bent/000.png
            key = safe_name(f"{key}/{rel.as_posix()}")
        keys.append(key)
        used.add(key)
    return keys


RECORD_FILES = ("trajectory", "overlay", "map")   # answer fields that name files under ``out``


def read_answers(path: Path) -> dict[str, dict[str, Any]]:
    """Last record per key; a torn last line (crash mid-write) is ignored."""
    return read_records(path, lambda r: str(r["key"]))  # type: ignore[return-value]


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One write of one whole line, flushed and fsynced: a crash loses at most the line being written."""
    append_record(path, record, default=_jsonable)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def overlay(image: np.ndarray, dmap: np.ndarray | None, threshold: float, answer: dict[str, Any] | None) -> np.ndarray:
    """The image with the discrepancy map as a heat map (red = at or above the normal threshold) and the box."""
    import cv2

    out = image.copy()
    if dmap is not None:
        level = np.clip(dmap / (threshold * 1.5), 0, 1)
        heat = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
        alpha = (0.15 + 0.45 * level)[..., None]
        out = (out * (1 - alpha) + heat * alpha).astype(np.uint8)
    h, w = out.shape[:2]
    if answer and answer.get("bbox"):
        x0, y0, x1, y1 = answer["bbox"]
        cv2.rectangle(out, (int(x0 * w), int(y0 * h)), (int(x1 * w) - 1, int(y1 * h) - 1), (255, 255, 255), 2)
    if answer:
        label = (f"{answer.get('defect_type') or 'anomaly'} {answer.get('confidence', 0):.2f}"
                 if answer.get("anomaly_present") else f"normal {answer.get('confidence', 0):.2f}")
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_trajectory(out: Path, key: str, source: Path, episode: InspectionEpisode) -> str:
    files = {1: str(source)}
    for old in inside(out, f"trajectories/{key}").glob("image_*.png"):  # an earlier run's extra views
        old.unlink(missing_ok=True)
    for i, img in enumerate(episode.workspace.images[1:], start=2):
        rel = f"trajectories/{key}/image_{i}.png"
        save_png_atomic(inside(out, rel), img)
        files[i] = rel
    rel = f"trajectories/{key}.json"
    save_json_atomic(inside(out, rel), episode.to_record(files))
    return rel


def inspect_images(inputs: list[Path], category: str, defect_types: list[str], tools: dict[str, Any],
                   policy: Policy, out: Path, save_maps: bool = False, max_steps: int = 8,
                   progress: Callable[[int, int, str], None] | None = None) -> InspectSummary:
    """Inspect every image; resume from ``out/answers.jsonl``. Infrastructure errors (no gallery) propagate."""
    from .tools import ComparativeRetriever

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_record_file(out / ANSWERS)
    paths = expand_inputs(inputs)
    keys = image_keys(paths)
    previous = read_answers(out / ANSWERS)
    if (out / ANSWERS).is_file():
        write_records(out / ANSWERS, previous.values(), default=_jsonable)  # one record per image, no torn line
    summary = InspectSummary()
    retriever = next((t for t in tools.values() if isinstance(t, ComparativeRetriever)), None)
    t0 = time.perf_counter()
    for n, (path, key) in enumerate(zip(paths, keys), start=1):
        if key in previous and previous[key].get("answer") is not None:
            summary.skipped += 1
            summary.records.append(previous[key])
            if progress:
                progress(n, len(paths), f"{key} (done before)")
            continue
        record: dict[str, Any] = {"key": key, "image": str(path), "category": category, "answer": None, "error": None}
        started = time.perf_counter()
        try:
            if path.is_symlink() and not path.exists():
                raise ImageRejected(f"{path}: broken symbolic link (points to {os.readlink(path)})")
            if not path.exists():
                raise ImageRejected(f"{path}: no such file")
            loaded = load_image(path)
        except ImageRejected as e:
            record["error"] = str(e)
        else:
            episode = run_inspection(policy, tools, loaded.rgb, category, defect_types, max_steps=max_steps)
            ws = episode.workspace
            if save_maps and 1 not in ws.maps and retriever is not None:   # a policy that never compared image 1
                ws.maps[1] = retriever.full_comparison(ws).map
            dmap = ws.maps.get(1)
            full = ws.cache.get("full")            # the retriever's comparison of image 1 (it made every map of it)
            threshold = retriever.gallery_for(ws).calibration["image_threshold"] if retriever else 1.0
            record.update(answer=episode.answer, note=loaded.note, tool_calls=episode.tool_calls,
                          steps=len(episode.steps), map_score=full.score if full is not None else None,
                          trajectory=save_trajectory(out, key, path, episode), overlay=f"overlays/{key}.png")
            if episode.answer is None:
                record["error"] = f"{path.name}: the policy gave no valid answer in {max_steps} messages"
            save_png_atomic(inside(out, record["overlay"]), overlay(loaded.rgb, dmap, threshold, episode.answer))
            if save_maps and dmap is not None:
                buf = _npy(dmap.astype(np.float16))
                atomic_write_bytes(inside(out, f"maps/{key}.npy"), buf)
                record["map"] = f"maps/{key}.npy"
        record["seconds"] = round(time.perf_counter() - started, 4)
        append_line(out / ANSWERS, record)
        remove_replaced(out, previous.get(key), record, RECORD_FILES)
        summary.records.append(record)
        if record["error"]:
            summary.errors.append(record["error"])
        else:
            summary.done += 1
        if progress:
            progress(n, len(paths), record["error"] or key)
    summary.seconds = time.perf_counter() - t0
    write_records(out / ANSWERS, read_answers(out / ANSWERS).values(), default=_jsonable)
    return summary


def _npy(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
