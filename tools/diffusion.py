"""IG backend ``diffusers``: edit the normal image with an open diffusion pipeline loaded from a local folder.

Two families, told apart by the pipeline class the folder's own ``model_index.json`` names:
- inpainting (SD 1.5 / SD 2 / SDXL inpainting, FLUX Fill): the region comes from the same words-to-place logic as
  the procedural painter (``parse_prompt`` gives kind, place, size and count; ``choose_point`` puts it on the
  object) as a soft blob; the prompt is the text condition; every pixel outside the blob is copied back from the
  original, so the edit is local by construction and the mask tool sees only the defect.
- instruction editing (InstructPix2Pix, Qwen-Image-Edit, FLUX Kontext): the prompt alone drives the edit; the
  mask then comes from MG.

The output is resized back to the input's size (and back to grey when the input is grey). Torch and diffusers
are imported when the backend is built, never at package import.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .base import BackendUnavailable
from .imaging import foreground_mask, keep_mode
from .local_weights import check_diffusers_folder
from .painter.placement import choose_point, object_box
from .painter.spec import LINEAR_KINDS, parse_prompt

INPAINT_PIPELINES = frozenset({"StableDiffusionInpaintPipeline", "StableDiffusionXLInpaintPipeline",
                               "FluxFillPipeline", "FluxInpaintPipeline", "StableDiffusion3InpaintPipeline"})
INSTRUCT_PIPELINES = frozenset({"StableDiffusionInstructPix2PixPipeline", "StableDiffusionXLInstructPix2PixPipeline",
                                "QwenImageEditPipeline", "QwenImageEditPlusPipeline", "FluxKontextPipeline"})
FALLBACK = "the 'procedural' image_gen backend needs no weights"
DTYPES = ("float32", "float16", "bfloat16")


def defect_region(image: np.ndarray, prompt: str, category: str, rng: np.random.Generator,
                  min_radius: float = 0.03) -> np.ndarray:
    """Soft blob mask (float32 HxW in [0, 1], exact zeros far from it) where the prompt's words put the defect.

    Linear kinds (scratch, crack, …) get a long thin ellipse along the words' orientation; the rest a compact,
    slightly irregular blob. Sizes follow the painter: ``spec.size`` is a fraction of the object's shorter side.
    """
    h, w = image.shape[:2]
    spec = parse_prompt(prompt)
    fg = foreground_mask(image, category)
    x0, y0, x1, y1 = object_box(fg)
    scale = max(min_radius * min(h, w) * 2, spec.size * min(x1 - x0, y1 - y0))
    hard = np.zeros((h, w), np.uint8)
    for _ in range(max(1, spec.count)):
        cx, cy = choose_point(fg, spec.location, rng, margin=0.3 * scale)
        if spec.kind in LINEAR_KINDS:
            axes = (max(3, int(scale * 0.9)), max(2, int(scale * 0.14)))
            angle = {"horizontal": 0.0, "vertical": 90.0, "diagonal": 45.0}.get(spec.orientation or "",
                                                                              float(rng.uniform(0, 180)))
        else:
            r = scale / 2
            axes = (max(2, int(r * rng.uniform(0.8, 1.2))), max(2, int(r * rng.uniform(0.6, 1.0))))
            angle = float(rng.uniform(0, 180))
        cv2.ellipse(hard, (int(cx), int(cy)), axes, angle, 0, 360, 1, -1)
    # Irregular outline: warp the ellipse with low-frequency noise so the region does not look stamped.
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), max(2.0, scale / 6))
    noise /= max(float(np.abs(noise).max()), 1e-6)
    dist_in = cv2.distanceTransform(hard, cv2.DIST_L2, 3)
    dist_out = cv2.distanceTransform(1 - hard, cv2.DIST_L2, 3)
    signed = dist_in - dist_out + noise * max(1.5, scale * 0.12)
    feather = max(1.5, scale * 0.08)
    soft = np.clip((signed + feather) / (2 * feather), 0.0, 1.0).astype(np.float32)
    return soft


def _dtype_key() -> str:
    """diffusers 0.42 renamed ``torch_dtype`` to ``dtype``; older releases know only the first."""
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"


def resolve_pipeline_class(name: str) -> Any:
    """The diffusers class a model folder names; only DiffusionPipeline subclasses are accepted."""
    import diffusers

    cls = getattr(diffusers, name, None) if name.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, diffusers.DiffusionPipeline):
        raise BackendUnavailable(f"image_gen backend diffusers: model_index.json names {name!r}, which is not a "
                                 f"pipeline of the installed diffusers {diffusers.__version__}")
    return cls


class DiffusersEditor:
    """IG backend ``diffusers``. ``model`` is a local pipeline folder (``weights/<name>``).

    ``strength`` applies to inpainting (1.0 repaints the region from noise); ``image_guidance`` to
    InstructPix2Pix; ``guidance`` is the text guidance (Qwen-Image-Edit's true CFG). ``resolution`` is the
    longer side the pipeline runs at (rounded to a multiple of 16).
    """

    def __init__(self, model: str, steps: int = 30, guidance: float = 7.5, strength: float = 0.99,
                 image_guidance: float = 1.5, resolution: int = 512, device: str = "cpu", dtype: str = "float32",
                 negative_prompt: str = "blurry, cartoon, text, watermark, low quality",
                 mode: str = "auto", progress: bool = False):
        index = check_diffusers_folder(model, "image_gen backend diffusers", FALLBACK)
        class_name = str(index.get("_class_name", ""))
        if mode == "auto":
            mode = ("inpaint" if class_name in INPAINT_PIPELINES
                    else "instruct" if class_name in INSTRUCT_PIPELINES else "")
        if mode not in ("inpaint", "instruct"):
            known = ", ".join(sorted(INPAINT_PIPELINES | INSTRUCT_PIPELINES))
            raise BackendUnavailable(f"image_gen backend diffusers: {class_name!r} in {model}/model_index.json is "
                                     f"neither an inpainting nor an instruction-edit pipeline (known: {known}); "
                                     "set mode: inpaint|instruct to force one")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        import torch

        cls = resolve_pipeline_class(class_name)
        extra: dict[str, Any] = {}
        if "safety_checker" in index:  # an NSFW filter blacks out close-ups of metal and fabric; not our domain
            extra.update(safety_checker=None, requires_safety_checker=False)
        try:
            self.pipe = cls.from_pretrained(model, local_files_only=True, **{_dtype_key(): getattr(torch, dtype)},
                                            **extra)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:200]
            raise BackendUnavailable(f"image_gen backend diffusers: cannot load {model} ({first}); "
                                     "run `local-agent doctor`") from e
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=not progress)
        self.class_name, self.mode, self.model = class_name, mode, str(Path(model))
        self.steps, self.guidance, self.strength = int(steps), float(guidance), float(strength)
        self.image_guidance, self.resolution = float(image_guidance), int(resolution)
        self.device, self.negative_prompt = device, negative_prompt
        import inspect

        self._accepts = set(inspect.signature(self.pipe.__call__).parameters)
        self._torch = torch

    def _size(self, h: int, w: int) -> tuple[int, int]:
        s = self.resolution / max(h, w)
        return max(16, int(round(h * s / 16)) * 16), max(16, int(round(w * s / 16)) * 16)

    def _call(self, prompt: str, image: np.ndarray, mask: np.ndarray | None, seed: int) -> np.ndarray:
        from PIL import Image

        h, w = self._size(*image.shape[:2])
        kwargs: dict[str, Any] = {
            "prompt": prompt, "image": Image.fromarray(cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)),
            "num_inference_steps": self.steps, "height": h, "width": w, "output_type": "np",
            "generator": self._torch.Generator(device="cpu").manual_seed(int(seed) % (2 ** 63)),
            "negative_prompt": self.negative_prompt,
        }
        if mask is not None:
            binary = (cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 0.02).astype(np.uint8) * 255
            kwargs.update(mask_image=Image.fromarray(binary), strength=self.strength)
        if "true_cfg_scale" in self._accepts:  # Qwen-Image-Edit / Kontext: true CFG carries the text guidance
            kwargs["true_cfg_scale"] = self.guidance
        else:
            kwargs["guidance_scale"] = self.guidance
        if "image_guidance_scale" in self._accepts:
            kwargs["image_guidance_scale"] = self.image_guidance
        out = self.pipe(**{k: v for k, v in kwargs.items() if k in self._accepts}).images[0]
        out = np.clip(np.asarray(out, np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
        return cv2.resize(out, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)

    def inpaint(self, image: np.ndarray, soft: np.ndarray, prompt: str, seed: int = 0) -> np.ndarray:
        """Repaint the region ``soft`` (float 0-1, feathered) from ``prompt``; every pixel outside it is restored
        exactly. RGB in, RGB out; a grayscale image (three equal channels) stays grayscale."""
        if self.mode != "inpaint":
            raise BackendUnavailable(f"{self.model} is an instruction-edit pipeline ({self.class_name}); "
                                     "inpainting needs an inpainting pipeline")
        generated = keep_mode(image, self._call(prompt, image, soft, seed))
        alpha = soft[..., None]
        out = np.clip(image * (1 - alpha) + generated * alpha + 0.5, 0, 255).astype(np.uint8)
        out[soft == 0] = image[soft == 0]  # exact restore outside the region (no float round trip)
        return out

    def edit_with_region(self, image: np.ndarray, prompt: str, seed: int = 0,
                         category: str = "") -> tuple[np.ndarray, np.ndarray]:
        """The edit and the region the backend allowed to change (bool; all True for instruction edits)."""
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
        if self.mode == "inpaint":
            soft = defect_region(rgb, prompt, category, np.random.default_rng(seed))
            out, region = self.inpaint(rgb, soft, prompt, seed), soft > 0
        else:
            out = keep_mode(rgb, self._call(prompt, rgb, None, seed))
            region = np.ones(rgb.shape[:2], bool)
        return (out[..., 0] if image.ndim == 2 else out), region

    def edit(self, image: np.ndarray, prompt: str, seed: int = 0, category: str = "") -> np.ndarray:
        return self.edit_with_region(image, prompt, seed, category)[0]
