"""Synthesis for the benchmark: every method gets the same source images, the same per-sample seeds and the same
count per defect type; every mask comes from the same MG tool (the profile's mask_gen).

- ``agent``: the closed loop (:func:`local_agent.synth.synthesize`) with the configured profile.
- ``open-loop``: ONE call of the profile's image-generation backend with the fixed comparison prompt below — no
  prompt writer, no judge feedback, no retrieval — the paper's "fixed-prompt editing model" row.
- ``cutpaste`` / ``draem`` / ``draem-fg`` / ``nsa``: one call of that IG backend (:mod:`local_agent.tools.baselines`).

Why MG masks for the baselines too: BENCHMARK.md asks for the same procedure for every method, and the MG
difference mask follows the changed pixels closely (measured against the baselines' own regions on grid and
transistor, 3 seeds each: IoU 0.83-1.0 for DRAEM, NSA and CutPaste patches; 0.3-0.8 for thin CutPaste scars on grid,
where a copied strip of grid lands on identical grid and so changes fewer pixels than its box); a "changed" region
that does not differ in the pixels is not an anomaly a detector can learn. The judge scores baseline samples as well, for the pass rate only: nothing
is filtered except in ``agent``, whose samples are every finished episode's final attempt (passed or not), so that
all methods contribute the same number of samples.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..images import load_image, save_mask_atomic, save_png_atomic
from ..outputs import safe_name
from ..synth import Job, append_manifest, compact_manifest, is_finished, plan_jobs, read_manifest
from .layout import Category

BASELINES = ("cutpaste", "draem", "draem-fg", "nsa")
METHODS = ("cutpaste", "draem", "draem-fg", "nsa", "open-loop", "agent")

# The fixed comparison prompt (paper's "editing model + fixed prompt" baselines): category and type name only.
OPEN_LOOP_PROMPT = ("Using the provided image, change only one region of the {item} to add a {defect} defect. "
                    "Keep the rest of the image unchanged.")


def open_loop_prompt(category: str, anomaly_type: str) -> str:
    words = lambda s: re.sub(r"[_\-]+", " ", s).strip()  # noqa: E731
    return OPEN_LOOP_PROMPT.format(item=words(category), defect=words(anomaly_type))


@dataclass(frozen=True)
class Sample:
    anomaly_type: str
    index: int
    image: Path
    mask: Path
    passed: bool
    seconds: float


def first_attempt_seed(job_seed: int) -> int:
    """The seed ImageGen gives the first attempt of an episode (tools/image_gen.py), so open-loop and the agent's
    first try draw the same defect."""
    return int(np.random.SeedSequence([job_seed, 1]).generate_state(1)[0])


def ig_config(method: str, category: Category, profile: dict[str, Any], textures: str | None) -> dict[str, Any]:
    if method == "cutpaste":
        return {"backend": "cutpaste"}
    if method in ("draem", "draem-fg"):
        return {"backend": "draem", "textures": textures, "foreground": method == "draem-fg"}
    if method == "nsa":
        return {"backend": "nsa", "sources": str(category.root / "train" / "good")}
    if method == "open-loop":   # one attempt: the loop's own options (reseed) do not apply
        from ..tools import image_gen

        return image_gen.backend_config(profile["tools"]["image_gen"])
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def loop_judge(tools: dict[str, Any]) -> dict[str, Any]:
    """The judge's options as the agent's loop builds them (``build_tools``: with the painter's ``size_scale``), so
    every method's judge pass % is the verdict of the judge the agent answers to."""
    from ..tools import with_shared_scale

    return with_shared_scale(tools)["quality_eval"]


def synthesis_inputs(method: str, profile: dict[str, Any], textures: str | None, max_attempts: int,
                     category: str | None = None) -> dict[str, Any]:
    """What a method's samples, and the judge's verdicts in their manifest, depend on besides the category, the seed
    and the count: the key of its synthetic folder. Each method is keyed on what it calls, so a new prompt writer
    redoes the agent alone and a new mask tool redoes every method. The agent's attempts are those ``synth`` gives
    the category (one where the judge fails its self-check on a plant's own defects)."""
    tools = profile["tools"]
    if method == "agent":
        from ..synth import loop_attempts

        if category is not None:
            max_attempts = loop_attempts(profile, [category], max_attempts)[category]
        return {"profile": profile, "max_attempts": max_attempts, **_atlas_files(profile, tools)}
    from ..tools import image_gen

    used = {"mask_gen": tools["mask_gen"], "quality_eval": loop_judge(tools)}
    if method == "open-loop":
        used["image_gen"] = image_gen.backend_config(tools["image_gen"])
    elif method in ("draem", "draem-fg"):
        used["textures"] = textures
    return {**used, **_atlas_files(profile, used)}


def _atlas_files(profile: dict[str, Any], tools: Any) -> dict[str, Any]:
    """The content of the atlas files the tools read (a rebuilt plant atlas at the same path makes new samples).
    The shipped atlas is not hashed: it changes only with the code, and earlier runs keep their keys."""
    from ..profile import atlas_options

    files = {}
    for option in atlas_options(profile, tools).values():
        path = os.environ.get("LOCAL_AGENT_ATLAS") if option == "default" else option
        if path and path not in ("none", "off", "false", "default") and Path(path).is_file():
            files[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return {"atlas_files": files} if files else {}


def synthesize_method(method: str, category: Category, out: Path, n: int, seed: int, profile: dict[str, Any],
                      textures: str | None = None, max_attempts: int = 3,
                      progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Synthesize (or resume) ``n`` samples per type into ``out`` (MVTec layout + manifest.jsonl); return them."""
    if method == "agent":
        return _synthesize_agent(category, out, n, seed, profile, max_attempts, progress)
    return _synthesize_single_call(method, category, out, n, seed, profile, textures, progress)


def _synthesize_agent(category: Category, out: Path, n: int, seed: int, profile: dict[str, Any], max_attempts: int,
                      progress: Callable[[int, int], None] | None) -> list[Sample]:
    from ..synth import synthesize

    state = {"done": 0, "total": 0}

    def on_start(total: int, skipped: int) -> None:
        state.update(total=total, done=skipped)
        if progress:
            progress(skipped, total)

    def on_record(_: dict) -> None:
        state["done"] += 1
        if progress:
            progress(state["done"], state["total"])

    import torch

    synthesize([category.root], category.anomaly_types, out, n=n, seed=seed, profile=profile,
               max_attempts=max_attempts, category=category.name, save_trajectories=False,
               on_start=on_start, on_record=on_record, threads=torch.get_num_threads())   # evaluate's --threads
    return _read_samples(out, category, n)


def _synthesize_single_call(method: str, category: Category, out: Path, n: int, seed: int, profile: dict[str, Any],
                            textures: str | None, progress: Callable[[int, int], None] | None) -> list[Sample]:
    from ..tools import image_gen, mask_gen, quality_eval
    from ..tools.base import build_backend

    editor = build_backend(image_gen.BACKENDS, "image_gen", ig_config(method, category, profile, textures))
    masker = build_backend(mask_gen.BACKENDS, "mask_gen", profile["tools"]["mask_gen"])
    judge = build_backend(quality_eval.BACKENDS, "quality_eval", loop_judge(profile["tools"]))
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = read_manifest(manifest)
    jobs = plan_jobs({category.name: category.train_good}, category.anomaly_types, n, seed)
    for k, job in enumerate(jobs):
        if progress:
            progress(k, len(jobs))
        if is_finished(done.get(job.key), out):
            continue
        append_manifest(manifest, _one_sample(method, job, out, editor, masker, judge))
    compact_manifest(manifest, out)   # one record per sample, whatever earlier runs appended
    if progress:
        progress(len(jobs), len(jobs))
    return _read_samples(out, category, n)


def _one_sample(method: str, job: Job, out: Path, editor: Any, masker: Any, judge: Any) -> dict[str, Any]:
    from ..tools import image_gen

    loaded = load_image(Path(job.source))
    prompt = open_loop_prompt(job.category, job.anomaly_type) if method == "open-loop" else ""
    t0 = time.perf_counter()
    edited = image_gen.edit_image(editor, loaded.rgb, prompt, first_attempt_seed(job.seed), job.category,
                                  job.anomaly_type)
    mask = masker.mask(loaded.rgb, edited)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    verdict = judge.evaluate(loaded.rgb, edited, job.category, job.anomaly_type)
    judge_seconds = time.perf_counter() - t1
    category, anomaly = safe_name(job.category), safe_name(job.anomaly_type)
    image_rel = f"{category}/test/{anomaly}/{job.stem}.png"
    mask_rel = f"{category}/ground_truth/{anomaly}/{job.stem}_mask.png"
    save_png_atomic(out / image_rel, edited, loaded.grayscale)
    save_mask_atomic(out / mask_rel, mask)
    passed = bool(verdict.get("passed"))
    return {"category": job.category, "anomaly_type": job.anomaly_type, "index": job.index, "source": job.source,
            "seed": job.seed, "method": method, "prompt": prompt, "status": "passed" if passed else "failed",
            "passed": passed, "image": image_rel, "mask": mask_rel, "anomaly_ratio": round(float(mask.mean()), 5),
            "scores": {k: verdict.get(k) for k in ("location_score", "quality_score")},
            "seconds": round(seconds, 4), "judge_seconds": round(judge_seconds, 4)}


def _read_samples(out: Path, category: Category, n: int) -> list[Sample]:
    """The finished samples of this plan (types x indices), in plan order; errors are left out."""
    records = read_manifest(out / "manifest.jsonl")
    samples = []
    for t in category.anomaly_types:
        for i in range(n):
            r = records.get((category.name, t, i))
            if r and is_finished(r, out) and r.get("image") and r.get("mask"):
                samples.append(Sample(t, i, out / r["image"], out / r["mask"], bool(r.get("passed")),
                                      float(r.get("seconds", 0.0))))
    return samples


def manifest_errors(out: Path) -> list[str]:
    """One line per sample that ended in an error (kept out of training, reported in results.json)."""
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("status") == "error":
            lines.append(f"{r.get('anomaly_type')}/{r.get('index')}: {r.get('error')}")
    return lines
