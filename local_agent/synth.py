"""``local-agent synth`` as a library: plan samples, run the agent on each, write the MVTec layout, resume.

Output (``out``):
  <category>/test/<type>/NNN.png, <category>/ground_truth/<type>/NNN_mask.png   samples the judge passed
  <category>/failed/<type>/NNN.png (+ NNN_mask.png)                          best attempt of samples that never passed
  trajectories/<category>/<type>/NNN.json (+ NNN_img<k>.png attempts)        the full episode, for training
  manifest.jsonl                                                             one line per finished sample
  report.html (+ report_files/)                                              a contact sheet a person can open

A sample is finished when its manifest line exists and its files are on disk; a rerun skips it. Files are written
atomically before the manifest line, so an interrupted run (Ctrl-C, kill -9) loses at most the samples in flight.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .catalog import KNOWN_TYPES
from .images import (ImageRejected, IMAGE_SUFFIXES, list_images, load_image, save_mask_atomic, save_png_atomic)
from .report import write_report
from .sharding import SHARD_GLOB, bind_local_gpu, finish_shard, process_rank, shard, shard_path, start_shard


class SynthError(RuntimeError):
    """Stops the whole run (bad output folder, bad profile, a backend that cannot run) with a one-line reason."""


@dataclass(frozen=True)
class Job:
    category: str
    anomaly_type: str
    index: int
    source: str
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.category, self.anomaly_type, self.index

    @property
    def stem(self) -> str:
        return f"{self.index:03d}"


@dataclass
class SynthSummary:
    planned: int = 0
    skipped: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    seconds: float = 0.0
    sample_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.passed + self.failed

    @property
    def seconds_per_sample(self) -> float | None:
        return self.sample_seconds / self.ran if self.ran else None

    @property
    def seconds_per_passed(self) -> float | None:
        return self.sample_seconds / self.passed if self.passed else None


# ------------------------------------------------------------------------------------------ inputs and plan
def _mvtec_category_dir(path: Path) -> bool:
    return (path / "train" / "good").is_dir()


def discover_sources(inputs: Iterable[Path], category: str | None = None) -> tuple[dict[str, list[Path]], list[str]]:
    """Group input images by category. Folders: an MVTec category folder (uses train/good) or a plain image folder;
    files: their own category (MVTec layout parent, else ``category``, else the parent folder's name)."""
    sources: dict[str, list[Path]] = {}
    warnings: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            warnings.append(f"{path}: no such file or folder; skipped")
            continue
        if path.is_dir():
            if _mvtec_category_dir(path):
                cat, images = category or path.resolve().name, list_images(path / "train" / "good")
            else:
                cat, images = category or path.resolve().name, list_images(path)
            if not images:
                warnings.append(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found; skipped")
                continue
        else:
            parents = path.resolve().parents
            in_mvtec = len(parents) > 2 and parents[0].name == "good" and parents[1].name in ("train", "test")
            cat = category or (parents[2].name if in_mvtec else parents[0].name)
            images = [path]
        sources.setdefault(cat, [])
        sources[cat].extend(p for p in images if p not in sources[cat])
    return sources, warnings


def name_warnings(categories: Iterable[str], anomaly_types: Iterable[str]) -> list[str]:
    from .tools.painter.spec import kind_of

    out = []
    for cat in categories:
        if cat not in KNOWN_TYPES:
            out.append(f"category '{cat}' is not a known MVTec AD / VisA name: used as free text")
    all_types = {t for types in KNOWN_TYPES.values() for t in types}
    for t in anomaly_types:
        kind = kind_of(t)
        if t not in all_types:
            read = f"drawn as '{kind}'" if kind else "no defect kind recognised, drawn as generic contamination"
            out.append(f"anomaly type '{t}' is not a known MVTec AD / VisA name: used as free text ({read})")
    return out


def sample_seed(seed: int, category: str, anomaly_type: str, index: int) -> int:
    """Stable across runs, machines and worker counts (unlike Python's salted hash)."""
    return zlib.crc32(f"{seed}/{category}/{anomaly_type}/{index}".encode()) & 0x7FFFFFFF


def plan_jobs(sources: dict[str, list[Path]], anomaly_types: list[str], n: int, seed: int) -> list[Job]:
    jobs = []
    for cat, paths in sources.items():
        for t_i, anomaly_type in enumerate(anomaly_types):
            for i in range(n):
                src = paths[(i + t_i * 7) % len(paths)]  # different types start on different images
                jobs.append(Job(cat, anomaly_type, i, str(src), sample_seed(seed, cat, anomaly_type, i)))
    return jobs


# ------------------------------------------------------------------------------------------ manifest and resume
def read_manifest(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Last record per sample. A torn last line (kill -9 mid-write) is ignored, not fatal."""
    records: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
            records[(r["category"], r["anomaly_type"], int(r["index"]))] = r
        except (ValueError, KeyError, TypeError):
            continue
    return records


def is_finished(record: dict[str, Any] | None, out: Path) -> bool:
    if not record or record.get("status") not in ("passed", "failed"):
        return False
    return all((out / record[k]).is_file() for k in ("image", "mask") if record.get(k))


def append_manifest(path: Path, record: dict[str, Any]) -> None:
    """One line per sample, flushed and fsynced, so the manifest survives a crash up to the last finished sample."""
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _end_torn_line(manifest: Path) -> None:
    """A run killed mid-line leaves a partial last line; end it so the next record starts on a line of its own."""
    if manifest.exists() and manifest.stat().st_size:
        with open(manifest, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SynthError(f"cannot write to output folder {out}: {e.strerror or e}") from e


def remove_stale_temp_files(out: Path) -> int:
    n = 0
    for p in out.rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


# ------------------------------------------------------------------------------------------ one sample
_WORKER: dict[str, Any] = {}


def _init_worker(profile: dict[str, Any]) -> None:
    """Build the tools and the policy once per process (backends may load models)."""
    import cv2

    from .profile import build_policy
    from .tools import build_tools

    cv2.setNumThreads(1)
    if "LOCAL_RANK" in os.environ:
        bind_local_gpu()  # `device: cuda` in a profile means this rank's own GPU
    _WORKER["tools"] = build_tools(profile["tools"])
    _WORKER["policy"] = build_policy(profile.get("policy", {"backend": "scripted"}))


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    over = image.copy()
    red = np.zeros_like(image)
    red[..., 0] = 255
    m = mask.astype(bool)
    over[m] = (0.55 * image[m] + 0.45 * red[m]).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(over, contours, -1, (255, 40, 40), 1)
    return over


def _thumb(image: np.ndarray, size: int = 192) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((size, size))
    return np.asarray(im)


def run_job(job: Job, out: str, max_attempts: int, save_trajectory: bool = True) -> dict[str, Any]:
    """Run one sample end to end in this process and write its files. Returns its manifest record."""
    from .episode import save_json_atomic
    from .loop import run_episode
    from .tools.base import BackendUnavailable

    out_dir = Path(out)
    record: dict[str, Any] = {"category": job.category, "anomaly_type": job.anomaly_type, "index": job.index,
                              "source": job.source, "seed": job.seed}
    t0 = time.perf_counter()
    try:
        loaded = load_image(Path(job.source))
    except ImageRejected as e:
        return {**record, "status": "error", "error": str(e), "seconds": round(time.perf_counter() - t0, 4)}
    try:
        episode = run_episode(_WORKER["policy"], _WORKER["tools"], loaded.rgb, job.category, job.anomaly_type,
                              seed=job.seed, max_attempts=max_attempts)
    except BackendUnavailable:
        raise
    except Exception as e:  # a bug on one odd image must not cost the other thousands of samples
        return {**record, "status": "error", "error": f"internal error: {type(e).__name__}: {e}",
                "seconds": round(time.perf_counter() - t0, 4)}
    ws = episode.workspace
    final = episode.final_index
    mask = ws.masks.get(final) if final else None
    passed = episode.passed
    record.update(status="passed" if passed else "failed", passed=passed, note=loaded.note,
                  prompts=[ws.prompts[i] for i in sorted(ws.prompts)], scores=episode.scores(),
                  attempts=len(episode.attempts), final_image_index=final,
                  steps=[s.tool or ("error" if s.error else "answer") for s in episode.steps],
                  model_errors=[s.error for s in episode.steps if s.error])
    try:
        if final is None or mask is None or final < 2:
            record.update(status="failed", passed=False, image=None, mask=None,
                          error="the policy ended without a masked attempt")
        else:
            sub = "test" if passed else "failed"
            image_rel = f"{job.category}/{sub}/{job.anomaly_type}/{job.stem}.png"
            mask_rel = (f"{job.category}/ground_truth/{job.anomaly_type}/{job.stem}_mask.png" if passed
                        else f"{job.category}/failed/{job.anomaly_type}/{job.stem}_mask.png")
            save_png_atomic(out_dir / image_rel, ws.images[final - 1], loaded.grayscale)
            save_mask_atomic(out_dir / mask_rel, mask)
            record.update(image=image_rel, mask=mask_rel, anomaly_ratio=round(float(mask.mean()), 5))
            thumbs = f"report_files/{job.category}_{job.anomaly_type}_{job.stem}"
            save_png_atomic(out_dir / f"{thumbs}_normal.png", _thumb(loaded.rgb))
            save_png_atomic(out_dir / f"{thumbs}_overlay.png", _thumb(_overlay(ws.images[final - 1], mask)))
            record["thumbs"] = thumbs
        if save_trajectory:
            traj_dir = out_dir / "trajectories" / job.category / job.anomaly_type
            files = {1: job.source}
            for k in range(2, len(ws.images) + 1):
                rel = f"trajectories/{job.category}/{job.anomaly_type}/{job.stem}_img{k}.png"
                save_png_atomic(out_dir / rel, ws.images[k - 1], loaded.grayscale)
                files[k] = rel
            save_json_atomic(traj_dir / f"{job.stem}.json", episode.to_record(files))
            record["trajectory"] = f"trajectories/{job.category}/{job.anomaly_type}/{job.stem}.json"
    except OSError as e:
        record.update(status="error", passed=False, error=f"cannot write outputs: {e.strerror or e}")
    record["seconds"] = round(time.perf_counter() - t0, 4)
    record["episode_seconds"] = round(episode.seconds, 4)
    return record


def _run_job_in_worker(args: tuple[Job, str, int, bool]) -> dict[str, Any]:
    return run_job(*args)


# ------------------------------------------------------------------------------------------ the run
def synthesize(inputs: list[Path], anomaly_types: list[str], out: Path, n: int = 10, seed: int = 0,
               profile: dict[str, Any] | None = None, max_attempts: int = 3, workers: int = 1,
               category: str | None = None, save_trajectories: bool = True,
               on_start: Callable[[int, int], None] | None = None,
               on_record: Callable[[dict[str, Any]], None] | None = None) -> SynthSummary:
    """Plan, skip what is finished, run the rest (in ``workers`` processes), write manifest and report."""
    from .profile import load_profile

    if n < 1:
        raise SynthError("--n must be at least 1")
    if max_attempts < 1:
        raise SynthError("--max-turns must be at least 1")
    if not anomaly_types:
        raise SynthError("give at least one anomaly type")
    profile = profile if profile is not None else load_profile()
    out = Path(out)
    rank, world = process_rank()  # under `accelerate launch` / torchrun: one process per GPU, each its own share
    check_writable(out)
    if world == 1:  # with several ranks another process's in-flight temp file must not be removed
        remove_stale_temp_files(out)
    sources, warnings = discover_sources(inputs, category)
    if not sources:
        raise SynthError("no input images found" + (f": {'; '.join(warnings)}" if warnings else ""))
    warnings += name_warnings(sources, anomaly_types)
    summary = SynthSummary(warnings=warnings)
    jobs = shard(plan_jobs(sources, anomaly_types, n, seed), rank, world)  # shard the plan: stable across reruns
    manifest = shard_path(out, rank, world)
    _end_torn_line(manifest)
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in [out / "manifest.jsonl", *sorted(out.glob(SHARD_GLOB))]:
        done.update(read_manifest(path))
    todo = [j for j in jobs if not is_finished(done.get(j.key), out)]
    summary.planned, summary.skipped = len(jobs), len(jobs) - len(todo)
    if world > 1:
        start_shard(out, rank)
    if on_start:
        on_start(len(jobs), summary.skipped)
    t0 = time.perf_counter()
    args = [(j, str(out), max_attempts, save_trajectories) for j in todo]
    try:
        if workers <= 1 or len(todo) <= 1:
            _init_worker(profile)
            results: Iterable[dict[str, Any]] = map(_run_job_in_worker, args)
            _consume(results, manifest, summary, on_record)
        else:
            ctx = mp.get_context("spawn")  # fork is unsafe once a backend has started threads or CUDA
            with ctx.Pool(workers, initializer=_init_worker, initargs=(profile,)) as pool:
                _consume(pool.imap_unordered(_run_job_in_worker, args), manifest, summary, on_record)
    finally:
        summary.seconds = time.perf_counter() - t0
        if world == 1 and manifest.exists():  # also after Ctrl-C: the report shows what is finished
            write_report(out)
    if world > 1 and finish_shard(out, rank, world):  # the last rank to finish merges the shards
        write_report(out)
    return summary


def _consume(results: Iterable[dict[str, Any]], manifest: Path, summary: SynthSummary,
             on_record: Callable[[dict[str, Any]], None] | None) -> None:
    for record in results:
        append_manifest(manifest, record)
        status = record.get("status")
        if status == "passed":
            summary.passed += 1
        elif status == "failed":
            summary.failed += 1
        else:
            summary.errors += 1
        if status in ("passed", "failed"):
            summary.sample_seconds += float(record.get("seconds", 0.0))
        if on_record:
            on_record(record)


def summary_dict(summary: SynthSummary) -> dict[str, Any]:
    d = asdict(summary)
    d.update(seconds_per_sample=summary.seconds_per_sample, seconds_per_passed=summary.seconds_per_passed)
    return d
