"""Open-weight architectures from configs written here, random weights, saved exactly like the real downloads.

Why: real weights cannot be fetched on an air-gapped machine, but every backend's architecture can be built from
its config, saved with ``save_pretrained`` (``torch.save`` for MetaUAS) and loaded back through the very code a
user's checkpoint goes through. Two scales of the same builders: ``tiny`` (the test suite, seconds on a CPU) and
``full`` (the published sizes, for ``scripts/gpu_check.py`` on a GPU). Heavy imports stay inside the functions.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterable

SCALES = ("tiny", "full")
SD_KINDS = ("sd2-inpaint", "sdxl-inpaint", "instruct-pix2pix")
VL_FAMILIES = ("qwen2.5-vl", "qwen3-vl")
QWEN_VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# ------------------------------------------------------------------------------------------ CLIP text encoders
# (hidden, intermediate, heads, layers, projection, activation): the published text towers.
CLIP_TEXT = {
    "tiny": (32, 37, 4, 2, 32, "quick_gelu"),
    "vit-l": (768, 3072, 12, 12, 768, "quick_gelu"),        # SD 1.x / InstructPix2Pix / SDXL's first encoder
    "vit-h": (1024, 4096, 16, 23, 512, "gelu"),             # SD 2 (OpenCLIP ViT-H, penultimate layer)
    "vit-bigg": (1280, 5120, 20, 32, 1280, "gelu"),         # SDXL's second encoder (OpenCLIP ViT-bigG)
}


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


def clip_text_model(size: str, tok: Any, with_projection: bool = False):
    """A CLIP text tower of a published size; the real vocabulary (49,408) at full size so the embedding is real."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden, inter, heads, layers, proj, act = CLIP_TEXT[size]
    config = CLIPTextConfig(vocab_size=len(tok) if size == "tiny" else 49408, hidden_size=hidden,
                            intermediate_size=inter, num_attention_heads=heads, num_hidden_layers=layers,
                            max_position_embeddings=tok.model_max_length, hidden_act=act, projection_dim=proj,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


# ------------------------------------------------------------------------------------------ diffusion pipelines
def _vae(scale: str, sample_size: int):
    from diffusers import AutoencoderKL

    if scale == "tiny":
        return AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             latent_channels=4, norm_num_groups=8, sample_size=64)
    return AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, in_channels=3, out_channels=3,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=4, sample_size=sample_size,
                         scaling_factor=0.13025 if sample_size == 1024 else 0.18215)


def _sd_unet(kind: str, scale: str, in_channels: int):
    """SD 1.x/2 UNet: 4 levels (320-1280), 2 layers per block; SD 2 with ViT-H conditioning and linear projections."""
    from diffusers import UNet2DConditionModel

    if scale == "tiny":
        return UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32,
                                    in_channels=in_channels, out_channels=4,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    norm_num_groups=8, attention_head_dim=4)
    sd2 = kind == "sd2-inpaint"
    return UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64, in_channels=in_channels,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1024 if sd2 else 768, attention_head_dim=(5, 10, 20, 20) if sd2 else 8,
        use_linear_projection=sd2)


def _sdxl_unet(scale: str):
    """SDXL UNet: 3 levels (320-1280), 1/2/10 transformer layers, 2048-d conditioning plus pooled text and sizes."""
    from diffusers import UNet2DConditionModel

    tiny = scale == "tiny"
    return UNet2DConditionModel(
        block_out_channels=(32, 64) if tiny else (320, 640, 1280), layers_per_block=1 if tiny else 2,
        sample_size=32 if tiny else 128, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D") if tiny
        else ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D") if tiny
        else ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2) if tiny else (1, 2, 10), attention_head_dim=(2, 4) if tiny else (5, 10, 20),
        cross_attention_dim=64 if tiny else 2048, norm_num_groups=8 if tiny else 32, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8 if tiny else 256,
        # 6 size/crop numbers of addition_time_embed_dim each, plus the second encoder's pooled projection
        projection_class_embeddings_input_dim=8 * 6 + 32 if tiny else 256 * 6 + 1280)


def build_sd_pipeline(folder: Path, kind: str, scale: str = "tiny", dtype: str = "float32",
                      device: str = "cpu") -> Path:
    """One diffusers pipeline folder: ``sd2-inpaint`` (UNet with 9 input channels: latents, mask, masked-image
    latents), ``sdxl-inpaint`` (two text encoders), ``instruct-pix2pix`` (8 channels: latents, image latents)."""
    import torch
    from diffusers import (EulerDiscreteScheduler, PNDMScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionInstructPix2PixPipeline, StableDiffusionXLInpaintPipeline)

    if kind not in SD_KINDS or scale not in SCALES:
        raise ValueError(f"unknown diffusion model {kind!r} at scale {scale!r}")
    torch.manual_seed(0)
    tiny = scale == "tiny"
    with torch.device(device):
        if kind == "sdxl-inpaint":
            tok, tok2 = clip_tokenizer(32 if tiny else 77), clip_tokenizer(32 if tiny else 77)
            parts = dict(text_encoder=clip_text_model("tiny" if tiny else "vit-l", tok),
                         text_encoder_2=clip_text_model("tiny" if tiny else "vit-bigg", tok2, with_projection=True),
                         tokenizer=tok, tokenizer_2=tok2, unet=_sdxl_unet(scale), vae=_vae(scale, 1024),
                         scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                          beta_end=0.012, steps_offset=1),
                         requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)
            pipe = StableDiffusionXLInpaintPipeline(**parts)
        else:
            tok = clip_tokenizer(32 if tiny else 77)
            inpaint = kind == "sd2-inpaint"
            text = clip_text_model("tiny" if tiny else ("vit-h" if inpaint else "vit-l"), tok)
            unet = _sd_unet(kind, scale, 9 if inpaint else 8)
            # the tiny models keep the tests' historical construction order (text, unet, vae) for their seeds
            parts = dict(vae=_vae(scale, 512), text_encoder=text, tokenizer=tok, unet=unet,
                         scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1) if tiny else
                         PNDMScheduler(skip_prk_steps=True, steps_offset=1, beta_schedule="scaled_linear",
                                       beta_start=0.00085, beta_end=0.012),
                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionInstructPix2PixPipeline
            pipe = cls(**parts)
    if dtype != "float32":
        pipe.to(dtype=getattr(torch, dtype))
    pipe.save_pretrained(folder)
    return Path(folder)


# ------------------------------------------------------------------------------------------------- MetaUAS
def build_metauas(path: Path, scale: str = "tiny") -> tuple[Path, dict[str, Any]]:
    """MetaUAS (the published EfficientNet-B4 model at ``full``; narrower and shallower at ``tiny``, same key
    layout) saved as a plain state dict. Returns the file and the backend options that rebuild its architecture."""
    import torch

    from .tools.metauas import MetaUASConfig, build_model

    options: dict[str, Any] = {"width": 0.25, "depth": 0.34, "decoder_channels": [32, 32, 16, 16, 16]} \
        if scale == "tiny" else {}
    torch.manual_seed(0)
    config = MetaUASConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()})
    model = build_model(config)
    with torch.no_grad():  # BatchNorm running stats as a trained model would have: not the identity at init
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path, options


# ------------------------------------------------------------------------------------------------ Qwen-VL
def _qwen_vl_configs(family: str, scale: str, tok: Any, ids: dict[str, int]) -> Any:
    """Qwen2.5-VL-7B-Instruct's or Qwen3-VL-4B-Instruct's published config (the vocabulary is the real one, so the
    embedding and head have their real size; our tokenizer uses its first ids), or a tiny one of the same family."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    tiny = scale == "tiny"
    common = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if family == "qwen3-vl":
        text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                    rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
                    tie_word_embeddings=True, **common) if tiny else \
            dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                 rope_theta=5000000, rms_norm_eps=1e-6, tie_word_embeddings=True,
                 rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
                 **common)
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                      deepstack_visual_indexes=[1]) if tiny else \
            dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16, spatial_merge_size=2,
                 temporal_patch_size=2, out_hidden_size=2560, num_position_embeddings=2304,
                 deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh")
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]}, **common) if tiny else \
        dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
             num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rope_theta=1000000.0,
             rms_norm_eps=1e-6, rope_scaling={"rope_type": "default", "mrope_section": [16, 24, 24]}, **common)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, out_hidden_size=32, fullatt_block_indexes=[1]) if tiny else \
        dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
             temporal_patch_size=2, window_size=112, out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)


def _qwen_image_processor(family: str, scale: str):
    """The published image processor settings (pixel budget, patch, merge; mean/std) or a tiny pixel budget."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    patch = 16 if family == "qwen3-vl" else 14
    unit = patch * 2
    if scale == "tiny":
        pixels = dict(min_pixels=unit * unit, max_pixels=4 * unit * unit)
    elif family == "qwen3-vl":
        pixels = dict(min_pixels=65536, max_pixels=16777216)
    else:
        pixels = dict(min_pixels=3136, max_pixels=12845056)
    norm = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3) if family == "qwen3-vl" else {}
    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2, return_tensors="pt",
                                    **pixels, **norm)


def build_qwen_vl(folder: Path, family: str, corpus: Iterable[str], scale: str = "tiny", dtype: str = "float32",
                  device: str = "cpu") -> Path:
    """A Qwen2.5-VL / Qwen3-VL folder: random model, a BPE tokenizer trained here on ``corpus`` with the family's
    real chat template (TRL's copy) and vision tokens, and the real image processor settings.

    The processor is saved as its parts (image processor, tokenizer, chat template), the layout of the published
    Qwen2.5-VL folders: without torchvision a Qwen-VL processor cannot be saved whole (its video processor needs
    it), and ``tools.vlm.load_processor`` reads these parts with or without torchvision.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration
    from trl.chat_template_utils import qwen2_5_vl_chat_template, qwen3_vl_chat_template

    from .training.tiny import build_tiny_chat_model

    if family not in VL_FAMILIES or scale not in SCALES:
        raise ValueError(f"unknown VLM {family!r} at scale {scale!r}")
    folder = Path(folder)
    template = qwen3_vl_chat_template if family == "qwen3-vl" else qwen2_5_vl_chat_template
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_chat_model(Path(tmp), list(corpus), chat_template=template)
        tok = AutoTokenizer.from_pretrained(tmp, local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": QWEN_VISION_TOKENS})
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_VISION_TOKENS}
    config = _qwen_vl_configs(family, scale, tok, ids)
    cls = Qwen3VLForConditionalGeneration if family == "qwen3-vl" else Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config)
    model.to(getattr(torch, dtype))
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    _qwen_image_processor(family, scale).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(template)
    return folder


def parameter_count(model: Any) -> int:
    """Parameters of a torch module, or of every torch module of a diffusers pipeline."""
    import torch

    if isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    return sum(parameter_count(m) for m in getattr(model, "components", {}).values()
               if isinstance(m, torch.nn.Module))
