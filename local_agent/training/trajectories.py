"""Reverse synthesis (the paper's Algorithm 2): SFT trajectories built backwards from REAL anomaly images.

For each real anomaly image with its mask:
1. reconstruct the normal image by inpainting the (dilated) defect away — OpenCV Telea by default;
2. sample N ∈ {1, 2, 3} image-generation turns (Single / Dual / Triple) with configurable proportions;
3. make attempts 1..N−1 plausible failures built from the real defect — fainter (blended at low alpha), misplaced
   (moved off the object), too large (scaled up), wrong shape (squashed or stretched) — and keep only those that
   our real judge actually fails; attempt N is the real anomaly image;
4. run the real agent loop on it: the scripted policy (Algorithm 1) drives, prompt_gen returns a prompt written for
   this image (its place, size and kind, in the prompt writer's vocabulary), image_gen replays the planned attempts,
   and quality_eval, knowledge_retrieval (when the profile configures a backend) and mask_gen are the real tools;
   the policy refines the prompt with the real Refine (``refine_prompt``) from each review and ends with its answer.

Output: one JSONL line per trajectory, ``{"messages": [{"role", "content"}...], "meta": {...}}`` — the chat format
TRL's SFTTrainer reads directly (tool responses are ``tool`` turns, error observations ``user`` turns) — and the
attempt images (image 1 = the reconstruction) under ``<out stem>_images/`` beside it.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
import cv2
import numpy as np

FAILURE_MODES = ("faint", "misplaced", "too_large", "wrong_shape")
# A real defect of a line-like kind is squashed into a blob ("wrong_shape") only when it is a line: at least this
# many times as long as wide (``imaging.elongation``). Screw's real scratches measure 1.0-2.6; squashing one along
# its longer axis drew a line across it, the shape its kind names, and the judge rightly passed 19 of 20.
LINE_LIKE = 3.0
DEFAULT_PROPORTIONS = {1: 0.3, 2: 0.4, 3: 0.3}


class TrajectoryError(RuntimeError):
    """Stops the build with a one-line reason (no data found, bad options)."""


@dataclass(frozen=True)
class RealSample:
    category: str
    anomaly_type: str
    image: Path
    mask: Path

    @property
    def key(self) -> str:
        return f"{self.category}/{self.anomaly_type}/{self.image.stem}"


@dataclass
class BuildSummary:
    found: int = 0
    written: int = 0
    skipped_existing: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    failure_modes: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


# ------------------------------------------------------------------------------------------ real data
def find_real_samples(data: Path) -> list[RealSample]:
    """Every anomaly image with a mask under an MVTec category folder, or under a folder of category folders."""
    data = Path(data)
    if not data.is_dir():
        raise TrajectoryError(f"--data {data}: no such folder")
    categories = [data] if (data / "test").is_dir() else sorted(p for p in data.iterdir() if (p / "test").is_dir())
    samples = []
    for cat_dir in categories:
        for type_dir in sorted(p for p in (cat_dir / "test").iterdir() if p.is_dir() and p.name != "good"):
            for image in sorted(type_dir.glob("*.png")):
                mask = cat_dir / "ground_truth" / type_dir.name / f"{image.stem}_mask.png"
                if mask.is_file():
                    samples.append(RealSample(cat_dir.name, type_dir.name, image, mask))
    if not samples:
        raise TrajectoryError(f"--data {data}: no anomaly images with masks (expected <category>/test/<type>/NNN.png "
                              "and <category>/ground_truth/<type>/NNN_mask.png)")
    return samples


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mask = np.asarray(im.convert("L")) > 127
    if mask.shape != shape:
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def reconstruct_normal(image: np.ndarray, mask: np.ndarray, dilate: int = 7, radius: int = 5,
                       inpainter: Any = None, category: str = "", seed: int = 0) -> np.ndarray:
    """Inpaint the defect away: OpenCV Telea, or ``inpainter`` (a diffusers inpainting
    :class:`~local_agent.tools.diffusion.DiffusersEditor`) when one is given. Dilating first removes the defect's
    halo, which the mask often misses; the diffusion region is feathered so its edge does not show."""
    region = cv2.dilate(mask.astype(np.uint8) * 255, np.ones((dilate, dilate), np.uint8))
    if inpainter is None:
        return cv2.inpaint(image, region, radius, cv2.INPAINT_TELEA)
    soft = cv2.GaussianBlur(cv2.dilate(region, np.ones((dilate, dilate), np.uint8)).astype(np.float32) / 255,
                            (0, 0), dilate / 2)
    soft[region > 0] = 1.0
    name = category.replace("_", " ") or "the object"
    return inpainter.inpaint(image, soft, f"a flawless {name}, clean intact surface, no defect", seed)


# ------------------------------------------------------------------------------------------ failed attempts
def _soft(mask: np.ndarray, blur: int = 5) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (blur, blur), 0)


def _composite(base: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    w = np.clip(weight, 0.0, 1.0)[..., None]
    return np.clip(base.astype(np.float32) * (1 - w) + source.astype(np.float32) * w + 0.5, 0, 255).astype(np.uint8)


def _warp_defect(normal: np.ndarray, anomaly: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Move the real defect's pixels by an affine map and paste them onto the reconstruction."""
    h, w = mask.shape
    region = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    moved = cv2.warpAffine(anomaly, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    weight = cv2.warpAffine(region, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return _composite(normal, moved, _soft(weight > 0.5))


def _largest_part(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _principal_axes(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(centre x, centre y, angle of the longer axis in degrees, its length over the shorter's)."""
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()), float(ys.mean())
    if len(xs) < 3:
        return cx, cy, 0.0, 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, int(np.argmax(evals))]
    ratio = float(np.sqrt(max(evals.max(), 1e-6) / max(evals.min(), 1e-6)))
    return cx, cy, float(np.degrees(np.arctan2(major[1], major[0]))), ratio


def _anisotropic(cx: float, cy: float, angle: float, along: float, across: float) -> np.ndarray:
    """Scale by ``along`` on the axis at ``angle`` and ``across`` perpendicular to it, about (cx, cy)."""
    t = np.radians(angle)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a = r @ np.diag([along, across]) @ r.T
    c = np.array([cx, cy])
    return np.hstack([a, (c - a @ c)[:, None]]).astype(np.float32)


def make_failure(mode: str, normal: np.ndarray, anomaly: np.ndarray, mask: np.ndarray, foreground: np.ndarray,
                 kind: str | None, rng: np.random.Generator) -> np.ndarray | None:
    """One plausible failed attempt built from the real defect, or None when the mode cannot apply here."""
    from ..tools.imaging import difference_map, elongation
    from ..tools.painter.spec import BLOB_KINDS, LINEAR_KINDS

    if mode == "faint":
        strength = float(np.median(difference_map(normal, anomaly)[mask])) if mask.any() else 0.0
        alpha = float(np.clip(rng.uniform(5.0, 8.0) / max(strength, 1e-3), 0.08, 0.4))
        return _composite(normal, anomaly, alpha * _soft(mask))
    mask = _largest_part(mask)  # moving or scaling scattered parts about one centre would tear them apart
    cx, cy, angle, ratio = _principal_axes(mask)
    if mode == "misplaced":
        if foreground.all():  # a texture: everywhere is on the object, so no place is wrong
            return None
        background = cv2.erode((~foreground).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
        ys, xs = np.nonzero(background)
        if len(xs) == 0:
            return None
        i = int(rng.integers(len(xs)))
        m = np.float32([[1, 0, xs[i] - cx], [0, 1, ys[i] - cy]])
        return _warp_defect(normal, anomaly, mask, m)
    if mode == "too_large":
        rel = mask.sum() / max(foreground.sum(), 1)
        s = float(np.clip(np.sqrt(rng.uniform(0.3, 0.45) / max(rel, 1e-4)), 1.8, 8.0))
        return _warp_defect(normal, anomaly, mask, _anisotropic(cx, cy, angle, s, s))
    if mode == "wrong_shape":
        if kind in LINEAR_KINDS:     # a scratch or thread squashed into a blob: its axes made equal, area kept
            if elongation(mask) < LINE_LIKE:
                return None          # already compact: squashing it would draw the line its kind names
            s = float(np.sqrt(ratio))
            return _warp_defect(normal, anomaly, mask, _anisotropic(cx, cy, angle, 1 / s, s))
        if kind in BLOB_KINDS:       # a hole or particle stretched into a line
            return _warp_defect(normal, anomaly, mask, _anisotropic(cx, cy, angle, 5.0, 0.3))
        return None
    raise ValueError(f"unknown failure mode {mode!r}; choose from {', '.join(FAILURE_MODES)}")


def plan_failures(n: int, normal: np.ndarray, anomaly: np.ndarray, mask: np.ndarray, foreground: np.ndarray,
                  category: str, anomaly_type: str, judge: Any, rng: np.random.Generator
                  ) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` failed attempts, each one the judge really fails; modes in a random order, no mode twice."""
    from ..tools.painter.spec import kind_of

    kind = kind_of(anomaly_type)
    out: list[tuple[str, np.ndarray]] = []
    for mode in rng.permutation(FAILURE_MODES):
        if len(out) == n:
            break
        image = make_failure(str(mode), normal, anomaly, mask, foreground, kind, rng)
        if image is None:
            continue
        verdict = judge.evaluate(normal, image, category, anomaly_type, foreground=foreground)
        if not verdict["passed"]:
            out.append((str(mode), image))
    return out


# ------------------------------------------------------------------------------------------ prompts and replay
def describe_place(mask: np.ndarray, foreground: np.ndarray) -> str:
    """Where the defect sits on the object, in the words the prompt writer and the painter use."""
    ys, xs = np.nonzero(foreground if foreground.any() else np.ones_like(mask))
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = np.nonzero(mask)
    fy = (my.mean() - y0) / max(y1 - y0, 1)
    fx = (mx.mean() - x0) / max(x1 - x0, 1)
    row = "upper" if fy < 1 / 3 else "lower" if fy > 2 / 3 else ""
    col = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else ""
    if row and col:
        return f"{row} {col} area"
    if row:
        return f"{row} part"
    if col:
        return f"{col} side"
    return "centre"


def describe_size(mask: np.ndarray, foreground: np.ndarray) -> str:
    rel = mask.sum() / max(foreground.sum(), 1)
    return "very small" if rel < 0.005 else "small" if rel < 0.03 else "medium" if rel < 0.08 else "large"


def write_prompt(image: np.ndarray, mask: np.ndarray, foreground: np.ndarray, category: str, anomaly_type: str,
                 first_failure: str | None) -> str:
    """The first edit prompt, written for the real defect (as the paper's Algorithm 2 writes prompts to match).

    The words say what the first attempt shows: a faint first attempt was asked for a "subtle" defect, an
    oversized one for a "large" one.
    """
    from ..tools.imaging import luminance
    from ..tools.prompt_gen import defect_phrase, item_noun

    item = item_noun(category)
    _, phrase = defect_phrase(anomaly_type)
    size = "large" if first_failure == "too_large" else describe_size(mask, foreground)
    look = "subtle" if first_failure == "faint" else "clearly visible"
    tone = "dark" if luminance(image).mean() < 100 else "light"
    return (f"Using the provided image, change only the {describe_place(mask, foreground)} of the {item} to add "
            f"{look} {size} {phrase.removeprefix('a ').removeprefix('an ')} on the {tone} surface, matching the "
            f"local texture and lighting. Keep the rest of the image, including the background and the {item}'s "
            f"shape, unchanged.")


class WrittenPrompt:
    """prompt_gen backend for reverse synthesis: returns the prompt written for this sample's real defect."""

    def __init__(self, prompt: str):
        self.prompt = prompt

    def generate(self, image: np.ndarray, category: str, anomaly_type: str, knowledge: str | None,
                 rng: np.random.Generator) -> str:
        return self.prompt


class ReplayEditor:
    """image_gen backend for reverse synthesis: returns the planned attempts in order (the last is the real image)."""

    def __init__(self, attempts: list[np.ndarray]):
        self.attempts = list(attempts)

    def edit(self, image: np.ndarray, prompt: str, seed: int, category: str) -> np.ndarray:
        if not self.attempts:
            from ..tools.base import ToolError

            raise ToolError("no further attempt planned for this trajectory")
        return self.attempts.pop(0)


# ------------------------------------------------------------------------------------------ one trajectory
@dataclass
class Trajectory:
    messages: list[dict[str, str]]
    meta: dict[str, Any]
    images: list[np.ndarray]


def sample_seed(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}/{key}".encode()) & 0x7FFFFFFF


def build_trajectory(sample: RealSample, base_tools: dict[str, Any], n_attempts: int, seed: int,
                     require_pass: bool = True, kr_threshold: float = 3.0, inpainter: Any = None) -> Trajectory | str:
    """One reverse-synthesis trajectory, or a one-line reason why this sample gives none."""
    from ..images import load_image
    from ..loop import run_episode
    from ..policies.scripted import ScriptedPolicy
    from ..tools.image_gen import ImageGen
    from ..tools.imaging import foreground_mask
    from ..tools.prompt_gen import PromptGen
    from .rewards import is_legal, read_episode

    anomaly = load_image(sample.image).rgb
    mask = load_mask(sample.mask, anomaly.shape[:2])
    if not mask.any():
        return "empty mask"
    normal = reconstruct_normal(anomaly, mask, inpainter=inpainter, category=sample.category, seed=seed)
    tools = dict(base_tools)  # the real QE, KR and MG; prompt_gen and image_gen are replaced below
    judge = tools["quality_eval"].backend
    foreground = foreground_mask(normal, sample.category)
    final = judge.evaluate(normal, anomaly, sample.category, sample.anomaly_type, foreground=foreground)
    if require_pass and not final["passed"]:
        return "the judge fails the real anomaly"
    rng = np.random.default_rng(seed)
    failures = plan_failures(n_attempts - 1, normal, anomaly, mask, foreground, sample.category,
                             sample.anomaly_type, judge, rng)
    modes = [m for m, _ in failures]
    prompt = write_prompt(normal, mask, foreground, sample.category, sample.anomaly_type, modes[0] if modes else None)
    tools["prompt_gen"] = PromptGen(WrittenPrompt(prompt))
    tools["image_gen"] = ImageGen(ReplayEditor([img for _, img in failures] + [anomaly]))
    episode = run_episode(ScriptedPolicy(kr_threshold=kr_threshold), tools, normal, sample.category,
                          sample.anomaly_type, seed=seed, max_attempts=len(failures) + 1)
    view = read_episode(episode.messages)
    legal = all(is_legal(a, b) for a, b in zip(["start", *view.actions], view.actions))
    if not (legal and view.format_ok) or any(s.error for s in episode.steps):
        return "the episode broke the protocol"  # cannot happen with the scripted policy; checked, not assumed
    if episode.final_index != len(failures) + 2 and require_pass:
        return "the real anomaly was not the final image"
    messages = [{"role": m["role"], "content": m["content"]} for m in episode.messages]
    meta = {"key": sample.key, "category": sample.category, "anomaly_type": sample.anomaly_type,
            "source": str(sample.image), "mask": str(sample.mask), "n_attempts": len(failures) + 1,
            "failure_modes": modes, "used_knowledge": "knowledge_retrieval" in view.actions,
            "reconstruction": getattr(inpainter, "model", None) or "opencv-telea",
            "scores": episode.scores(), "final_image_index": episode.final_index, "passed": episode.passed,
            "seed": seed}
    return Trajectory(messages, meta, list(episode.workspace.images))


# ------------------------------------------------------------------------------------------ the whole file
def parse_proportions(text: str) -> dict[int, float]:
    """``"1:0.3,2:0.4,3:0.3"`` -> {1: .3, 2: .4, 3: .3}, normalised."""
    out: dict[int, float] = {}
    try:
        for part in text.split(","):
            n, _, p = part.partition(":")
            out[int(n)] = float(p)
    except ValueError:
        raise TrajectoryError(f"--proportions {text!r}: write N:share pairs, e.g. 1:0.3,2:0.4,3:0.3") from None
    if not out or set(out) - {1, 2, 3} or any(v < 0 for v in out.values()) or sum(out.values()) <= 0:
        raise TrajectoryError(f"--proportions {text!r}: N must be 1, 2 or 3 with non-negative shares")
    total = sum(out.values())
    return {k: v / total for k, v in sorted(out.items())}


def read_existing(path: Path) -> list[dict[str, Any]]:
    """Complete lines of an earlier run; a torn last line (killed mid-write) is dropped, not fatal."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            record["meta"]["key"]
            records.append(record)
        except (ValueError, KeyError, TypeError):
            continue
    return records


def images_dir(out: Path) -> Path:
    return out.parent / f"{out.stem}_images"


def at_real_sizes(tools_config: dict[str, Any]) -> dict[str, Any]:
    """The tools without the painter's ``size_scale``: a trajectory replays a real anomaly and recipe edits of it, at
    real sizes, so ``build_tools`` must not hand that scale to the judge (it would call real defects too small)."""
    gen = tools_config.get("image_gen")
    if not (isinstance(gen, dict) and "size_scale" in gen):
        return tools_config
    return {**tools_config, "image_gen": {k: v for k, v in gen.items() if k != "size_scale"}}


def build_trajectories(data: Path, out: Path, tools_config: dict[str, Any], proportions: dict[int, float],
                       seed: int = 0, limit: int | None = None, require_pass: bool = True,
                       kr_threshold: float = 3.0,
                       on_progress: Callable[[int, int, str], None] | None = None,
                       inpainter: Any = None) -> BuildSummary:
    """Build (or resume) ``out``. Images are written before their line, and each line is appended with fsync.
    ``inpainter``: a diffusers inpainting editor for the normal-image reconstruction (default: OpenCV Telea)."""
    from ..images import atomic_write_bytes, encode_png
    from ..tools import build_tools

    samples = find_real_samples(data)
    if limit:
        samples = samples[:limit]
    summary = BuildSummary(found=len(samples))
    out = Path(out)
    existing = read_existing(out)
    atomic_write_bytes(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in existing).encode())
    done = {r["meta"]["key"] for r in existing}
    ns, shares = list(proportions), list(proportions.values())
    tools = build_tools(at_real_sizes(tools_config))
    with out.open("a") as f:
        for i, sample in enumerate(samples):
            if sample.key in done:
                summary.skipped_existing += 1
                if on_progress:
                    on_progress(i + 1, len(samples), "skipped")
                continue
            s = sample_seed(seed, sample.key)
            n = int(np.random.default_rng(s).choice(ns, p=shares))
            result = build_trajectory(sample, tools, n, s, require_pass, kr_threshold, inpainter)
            if isinstance(result, str):
                summary.reject(result)
                if on_progress:
                    on_progress(i + 1, len(samples), result)
                continue
            grayscale = result.images[0].ndim == 3 and bool(np.all(result.images[0][..., 0] == result.images[0][..., 1]))
            files = {}
            for k, image in enumerate(result.images, start=1):
                name = f"{sample.key.replace('/', '_')}_img{k}.png"
                atomic_write_bytes(images_dir(out) / name, encode_png(image, grayscale))
                files[str(k)] = f"{images_dir(out).name}/{name}"
            result.meta["images"] = files
            f.write(json.dumps({"messages": result.messages, "meta": result.meta}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            summary.written += 1
            summary.attempts[result.meta["n_attempts"]] = summary.attempts.get(result.meta["n_attempts"], 0) + 1
            for m in result.meta["failure_modes"]:
                summary.failure_modes[m] = summary.failure_modes.get(m, 0) + 1
            if on_progress:
                on_progress(i + 1, len(samples), "written")
    return summary


# ------------------------------------------------------------------------------------------ CLI
@click.group("trajectories")
def trajectories() -> None:
    """Reverse-synthesis SFT trajectories (Algorithm 2)."""


@trajectories.command("build")
@click.option("--data", "data", type=click.Path(path_type=Path), required=True,
              help="An MVTec category folder (test/<type> + ground_truth) or a folder of them.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output JSONL file.")
@click.option("--profile", default="default", show_default=True, help="Tool profile (QE, KR and MG backends).")
@click.option("--proportions", default="1:0.3,2:0.4,3:0.3", show_default=True,
              help="Shares of Single / Dual / Triple generation trajectories.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--limit", default=None, type=int, help="Use only the first N real samples.")
@click.option("--keep-unpassed", is_flag=True,
              help="Also keep samples whose real anomaly the judge fails (their answer then says 'failed').")
@click.option("--inpainter", type=click.Path(path_type=Path), default=None,
              help="A diffusers inpainting pipeline folder (e.g. weights/stable-diffusion-2-inpainting) to rebuild "
                   "the normal image; default: OpenCV Telea inpainting.")
@click.option("--device", default="auto", show_default=True, help="Device for --inpainter: auto, cpu, cuda.")
@click.option("--inpaint-steps", default=30, show_default=True, type=click.IntRange(1),
              help="Denoising steps of --inpainter.")
@click.option("--inpaint-resolution", default=512, show_default=True, type=click.IntRange(64),
              help="Working resolution (long side, px) of --inpainter; the result is resized back.")
def build_command(data: Path, out: Path, profile: str, proportions: str, seed: int, limit: int | None,
                  keep_unpassed: bool, inpainter: Path | None, device: str, inpaint_steps: int,
                  inpaint_resolution: int) -> None:
    """Build chat-format JSONL trajectories (TRL SFT format) from real anomaly images with masks."""
    from ..cli import console, progress_steps
    from ..profile import ProfileError, load_profile
    from ..tools.base import BackendUnavailable

    try:
        config = load_profile(profile)
        editor = None
        if inpainter is not None:
            from ..tools.diffusion import DiffusersEditor

            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            editor = DiffusersEditor(str(inpainter), steps=inpaint_steps, resolution=inpaint_resolution,
                                     device=device, dtype="float16" if device.startswith("cuda") else "float32")
            if editor.mode != "inpaint":
                raise BackendUnavailable(f"--inpainter {inpainter}: {editor.class_name} is not an inpainting "
                                         "pipeline (e.g. StableDiffusionInpaintPipeline)")
        props = parse_proportions(proportions)
        policy = config.get("policy", {})
        with progress_steps("trajectories", "{label} ({what})") as on_progress:
            summary = build_trajectories(data, out, config["tools"], props, seed, limit, not keep_unpassed,
                                         float(policy.get("kr_threshold", 3.0)), on_progress, editor)
    except (TrajectoryError, ProfileError, ValueError, BackendUnavailable) as e:
        raise click.ClickException(str(e)) from None
    console(stderr=False).print(
        f"{summary.written} trajectories written to {out} ({summary.skipped_existing} already there) "
        f"from {summary.found} real samples; attempts {dict(sorted(summary.attempts.items()))}; "
        f"failure modes {summary.failure_modes}; rejected {summary.rejected or 'none'}", markup=False)
