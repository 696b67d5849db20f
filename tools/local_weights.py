"""Checks that a local weights folder is complete before any heavy library touches it.

Why: a half-copied folder on an air-gapped machine otherwise fails deep inside transformers/diffusers with a
traceback about a hub that cannot be reached. Here it fails with one line naming the file that is missing and the
backend that works without it; ``local-agent doctor`` runs the same checks for every backend at once.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import BackendUnavailable

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def missing(backend: str, what: str, fallback: str) -> BackendUnavailable:
    return BackendUnavailable(f"{backend}: missing {what}; {fallback}; run `local-agent doctor`")


def has_weights(folder: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir() if p.is_file())


def check_diffusers_folder(folder: str | Path, backend: str, fallback: str) -> dict:
    """The folder's ``model_index.json`` (parsed); every component it names must be present, with weights."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise missing(backend, str(index), fallback)
    try:
        data = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise BackendUnavailable(f"{backend}: {index} is not valid JSON ({e.msg}); run `local-agent doctor`") from e
    for name, value in data.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue
        sub = folder / name
        if not sub.is_dir() or not any(sub.iterdir()):
            raise missing(backend, f"{sub}/ (component '{name}' named in model_index.json)", fallback)
        if (sub / "config.json").is_file() and not has_weights(sub):
            raise missing(backend, f"weights in {sub}/ (*.safetensors)", fallback)
    return data


def check_transformers_folder(folder: str | Path, backend: str, fallback: str, processor: bool = True) -> None:
    """config.json, weights, a tokenizer and (for a VLM) the image processor config."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise missing(backend, str(folder / "config.json"), fallback)
    if not has_weights(folder):
        raise missing(backend, f"weights in {folder}/ (*.safetensors)", fallback)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise missing(backend, str(folder / "tokenizer.json"), fallback)
    if processor and not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise missing(backend, str(folder / "preprocessor_config.json"), fallback)
