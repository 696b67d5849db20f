"""Tiny random open-weight models, built from config and saved like real checkpoints (diffusers tests' habit).

Every model here is written with ``save_pretrained`` (or ``torch.save`` for MetaUAS) into a folder laid out like
the real download, then the backends load it back through exactly the code a real checkpoint goes through.
Built once per test session (``build_all``) under pytest's temporary directory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

VLM_IMAGE_TOKEN = "<image>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte gets a printable character."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def clip_tokenizer(max_length: int = 32):
    """A byte-level CLIP tokenizer with no merges: every character is a token; built offline."""
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _sd_parts(unet_in_channels: int):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tok = clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=32,
                                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                        pad_token_id=tok.pad_token_id, projection_dim=32))
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32,
                                in_channels=unet_in_channels, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=8, attention_head_dim=4)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=8, sample_size=64)
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return dict(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)


def build_sd_inpaint(folder: Path) -> Path:
    """StableDiffusionInpaintPipeline (UNet with 9 input channels: latents, mask, masked-image latents)."""
    from diffusers import StableDiffusionInpaintPipeline

    StableDiffusionInpaintPipeline(**_sd_parts(9)).save_pretrained(folder)
    return folder


def build_instruct_pix2pix(folder: Path) -> Path:
    """StableDiffusionInstructPix2PixPipeline (UNet with 8 input channels: latents, image latents)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    StableDiffusionInstructPix2PixPipeline(**_sd_parts(8)).save_pretrained(folder)
    return folder


def build_metauas(path: Path) -> tuple[Path, dict]:
    """A small MetaUAS (same key layout as the official model, narrower and shallower) saved as a plain state dict."""
    import torch

    from local_agent.tools.metauas import MetaUASConfig, build_model

    options = {"width": 0.25, "depth": 0.34, "decoder_channels": [32, 32, 16, 16, 16]}
    torch.manual_seed(0)
    model = build_model(MetaUASConfig(width=0.25, depth=0.34, decoder_channels=(32, 32, 16, 16, 16)))
    with torch.no_grad():  # BatchNorm running stats as a trained model would have: not the identity at init
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path, options


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


QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def build_tiny_qwen3_vl(folder: Path, corpus: list[str]):
    """A tiny random Qwen3-VL (saved and loaded back) and its processor, built in memory.

    The processor cannot be built the normal way on a machine without torchvision: Qwen3VLProcessor insists on its
    video processor, which needs torchvision even when no video is ever passed. So this one is assembled from its
    parts (tokenizer with Qwen3-VL's chat template, the PIL image processor returning tensors as the torchvision
    one does) without the constructor's class check. Everything downstream — chat template, image tokens, the
    model's vision tower — is the real Qwen3-VL code.
    """
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from trl.chat_template_utils import qwen3_vl_chat_template

    from local_agent.training.tiny import build_tiny_chat_model

    build_tiny_chat_model(folder / "tokenizer", corpus, chat_template=qwen3_vl_chat_template)
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": QWEN_VISION_TOKENS})
    processor = Qwen3VLProcessor.__new__(Qwen3VLProcessor)
    processor.image_processor = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=16,
                                                         merge_size=2, temporal_patch_size=2, return_tensors="pt")
    processor.tokenizer, processor.video_processor, processor.chat_template = tok, None, qwen3_vl_chat_template
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_VISION_TOKENS}
    processor.image_token, processor.image_token_id = "<|image_pad|>", ids["<|image_pad|>"]
    processor.video_token, processor.video_token_id = "<|video_pad|>", ids["<|video_pad|>"]
    processor.vision_start_token, processor.vision_start_token_id = "<|vision_start|>", ids["<|vision_start|>"]
    processor.vision_end_token, processor.vision_end_token_id = "<|vision_end|>", ids["<|vision_end|>"]
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64, deepstack_visual_indexes=[1])
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(folder / "model")  # GRPO loads its reference policy from the model's folder
    return Qwen3VLForConditionalGeneration.from_pretrained(folder / "model", local_files_only=True), processor


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
