"""Tiny random open-weight models, built from config and saved like real checkpoints (diffusers tests' habit).

Every model here is written with ``save_pretrained`` (or ``torch.save`` for MetaUAS) into a folder laid out like
the real download, then the backends load it back through exactly the code a real checkpoint goes through.
Built once per test session (``build_all``) under pytest's temporary directory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from local_agent import random_models
from local_agent.random_models import build_sd_pipeline

VLM_IMAGE_TOKEN = "<image>"


def build_sd_inpaint(folder: Path) -> Path:
    """StableDiffusionInpaintPipeline (UNet with 9 input channels: latents, mask, masked-image latents)."""
    return build_sd_pipeline(folder, "sd2-inpaint", "tiny")


def build_instruct_pix2pix(folder: Path) -> Path:
    """StableDiffusionInstructPix2PixPipeline (UNet with 8 input channels: latents, image latents)."""
    return build_sd_pipeline(folder, "instruct-pix2pix", "tiny")


def build_metauas(path: Path) -> tuple[Path, dict]:
    """A small MetaUAS (same key layout as the official model, narrower and shallower) saved as a plain state dict."""
    return random_models.build_metauas(path, "tiny")


def sample_image(size: int = 64) -> np.ndarray:
    """A small image with a bright object on a dark background (deterministic)."""
    rng = np.random.default_rng(0)
    img = np.full((size, size, 3), 40, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.35) ** 2
    img[disc] = (170, 160, 150)
    noise = rng.integers(-6, 7, size=img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_vlm(folder: Path) -> Path:
    """An Idefics3 (SmolVLM-style) model with a BPE tokenizer trained here and the torchvision-free image processor."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig,
                              PreTrainedTokenizerFast)
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    extra = ["<fake_token_around_image>", VLM_IMAGE_TOKEN, "<global-img>", "<end_of_utterance>"]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["Using the provided image, change only the centre of the object to add a small scratch. Keep the rest "
              "of the image unchanged.", '{"location_score": 4, "quality_score": 3, "review": "blend the border"}',
              '<thinking>judge it</thinking><tool_call>{"name": "quality_eval", "arguments": {"image_index": 2}}'
              '</tool_call><answer>{"status": "success"}</answer>'] * 3
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>", additional_special_tokens=extra)
    image_size, patch, scale = 32, 8, 2
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(size={"longest_edge": image_size}, do_image_splitting=False,
                                                  max_image_size={"longest_edge": image_size}),
        tokenizer=tok, image_seq_len=(image_size // patch) ** 2 // scale ** 2, chat_template=VLM_CHAT_TEMPLATE)
    text_config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id)
    vision_config = Idefics3VisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                         num_attention_heads=4, image_size=image_size, patch_size=patch)
    config = Idefics3Config(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
                            scale_factor=scale, image_token_id=tok.convert_tokens_to_ids(VLM_IMAGE_TOKEN),
                            pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_qwen3_vl(folder: Path, corpus: list[str]):
    """A tiny random Qwen3-VL saved in ``folder/model`` and loaded back, with its processor read from that folder
    (``tools.vlm.load_processor``: on a machine without torchvision it is assembled from the saved parts)."""
    from transformers import Qwen3VLForConditionalGeneration

    from local_agent.tools.vlm import load_processor

    model_dir = random_models.build_qwen_vl(folder / "model", "qwen3-vl", corpus, "tiny")
    return (Qwen3VLForConditionalGeneration.from_pretrained(model_dir, local_files_only=True),
            load_processor(model_dir))


_BUILT: dict[str, dict] = {}


def build_all(root: Path) -> dict:
    """Every tiny model, built once per test session under ``root`` (shared by all test_backends_* modules)."""
    key = str(root)
    if key not in _BUILT:
        root.mkdir(parents=True, exist_ok=True)
        metauas, metauas_options = build_metauas(root / "metauas" / "metauas-256.ckpt")
        _BUILT[key] = {
            "sd_inpaint": build_sd_inpaint(root / "sd-inpaint"),
            "instruct_pix2pix": build_instruct_pix2pix(root / "instruct-pix2pix"),
            "vlm": build_tiny_vlm(root / "smolvlm-tiny"),
            "metauas": metauas,
            "metauas_options": metauas_options,
        }
    return _BUILT[key]


def tiny_profile(models: dict, image_size: int = 64) -> dict:
    """A profile dict with every open-weight backend pointing at the tiny models (CPU, few steps)."""
    return {
        "tools": {
            "prompt_gen": {"backend": "vlm", "engine": "transformers", "model": str(models["vlm"]),
                           "max_new_tokens": 12},
            "image_gen": {"backend": "diffusers", "model": str(models["sd_inpaint"]), "steps": 2,
                          "resolution": image_size, "guidance": 5.0},
            "quality_eval": {"backend": "heuristic"},
            "knowledge_retrieval": {"backend": "none"},
            "mask_gen": {"backend": "metauas", "checkpoint": str(models["metauas"]), "image_size": image_size,
                         **models["metauas_options"]},
        },
        "policy": {"backend": "scripted"},
    }
