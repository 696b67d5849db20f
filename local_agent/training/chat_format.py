"""The chat format the trainers see: ChatML (SmolLM2's template) with ``{% generation %}`` markers for the loss mask.

SmolLM2's own template has no generation markers, so TRL cannot tell the agent's tokens from the tools'. This
template renders exactly the same text (checked against the tokenizer's own template before it is swapped in) and
marks each assistant turn, its ``<|im_end|>`` included, so the model also learns to stop.
"""
from __future__ import annotations

import re
from typing import Any

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM2_DEFAULT_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CHATML_TRAINING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SMOLLM2_DEFAULT_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_PROBE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
          {"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
          {"role": "assistant", "content": "b"}]


def use_training_template(tokenizer: Any) -> bool:
    """Swap in the marked ChatML template when it renders exactly like the tokenizer's own. True if swapped.

    Other templates (Qwen-VL …) are left alone: TRL patches the ones it knows when ``assistant_only_loss`` is on.
    """
    template = tokenizer.chat_template
    if not isinstance(template, str) or re.search(r"\{%-?\s*generation\s*-?%\}", template):
        return False
    theirs = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    mine = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True,
                                         chat_template=CHATML_TRAINING_TEMPLATE)
    if mine != theirs:
        return False
    tokenizer.chat_template = CHATML_TRAINING_TEMPLATE
    return True
