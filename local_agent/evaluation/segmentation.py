"""The downstream detector: a frozen EfficientNet-Lite0 encoder (real ImageNet weights) and a small decoder trained
from scratch on synthetic anomalies plus normal images.

Why not a UNet from scratch: with tens of synthetic samples and a few hundred CPU steps, a UNet trained from
random weights scored at or below chance on real grid / transistor defects (pixel AUROC 41-70 %), so the benchmark
could not tell a good synthesis method from a bad one. Pretrained features turn the question into "which feature
changes mean a defect", which a few hundred decoder steps can learn from synthetic data.

It is deliberately the same for every synthesis method (encoder, decoder, steps, seed, batch order), so that the
only thing that differs between two rows of the results table is the synthetic data. The encoder is frozen, so
each image's features are computed once (normal and test images once per run, shared by all methods) and a
training step only runs the decoder: about 0.1 s per step of 16 images on one core.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Blocks of EfficientNet-Lite0 whose outputs the decoder reads: last block of stage 2 (24 ch, stride 4), stage 3
# (40 ch, stride 8) and stage 5 (112 ch, stride 16). Stride 4 keeps thin defects (scratches, threads) visible.
ENCODER_BLOCKS = (2, 4, 10)
ENCODER_CHANNELS = (24, 40, 112)
ENCODER_NAME = "efficientnet-lite0 (ImageNet weights, frozen; blocks 2, 4, 10)"

Features = list[torch.Tensor]   # one (N, C, h, w) tensor per ENCODER_BLOCKS entry


@dataclass(frozen=True)
class SegConfig:
    side: int = 256            # encoder input side (MVTec images are resized to side x side)
    width: int = 32            # decoder channels at stride 8 (half of it at stride 4)
    steps: int = 300
    batch: int = 16
    lr: float = 2e-3
    anomaly_fraction: float = 0.5   # share of each batch drawn from the synthetic anomalies
    smoothing_sigma: float = 4.0    # Gaussian smoothing of the anomaly map (at the mask's resolution)
    detectors: int = 1              # decoders per run, their maps averaged (see detector_seed)
    flush_denormals: bool = True    # while training (see train_decoder); False repeats runs cached before it

    def to_dict(self) -> dict:
        d = {**asdict(self), "encoder": ENCODER_NAME}
        if self.detectors == 1:     # absent at the default, so runs cached before the option keep their key
            d.pop("detectors")
        if not self.flush_denormals:
            d.pop("flush_denormals")    # the numbers of runs cached before it: their key too
        return d


def detector_seed(seed: int, k: int) -> int:
    """Seed of the k-th decoder of a run. The first is the run's own seed (one decoder = the results before the
    option); the others are drawn from (seed, k). With the same synthetic set, the decoder's seed alone moved grid's
    pixel AP by up to 6 points (docs/evaluation.md), as much as the differences between methods the benchmark is
    there to resolve; averaging several decoders' maps shrinks that part of the spread."""
    return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0] >> 1)


class Encoder:
    """EfficientNet-Lite0 up to stage 5, in eval mode with gradients off (its BatchNorm keeps ImageNet statistics)."""

    def __init__(self, model: Any = None) -> None:
        from .classifier import pretrained_lite0

        self.model = (model if model is not None else pretrained_lite0()).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 16,
                 progress: Callable[[int], None] | None = None) -> Features:
        """uint8 (N, S, S, 3) -> features at ENCODER_BLOCKS (Lite0's (x - 127) / 128 input scaling)."""
        from .classifier import _to_input

        parts: list[list[torch.Tensor]] = []
        for i in range(0, len(images), batch):
            parts.append(self.model.stages(_to_input(images[i:i + batch]), ENCODER_BLOCKS))
            if progress:
                progress(min(i + batch, len(images)))
        return [torch.cat([p[k] for p in parts]) for k in range(len(ENCODER_BLOCKS))]


class Decoder(nn.Module):
    """FPN-style: project each level with 1x1 convs, fuse stride 16 into stride 8 (3x3 conv), then into stride 4
    (3x3 conv), one logit per stride-4 cell. About 30 k parameters at width 32."""

    def __init__(self, width: int = 32):
        super().__init__()
        w, h = width, max(1, width // 2)
        c4, c8, c16 = ENCODER_CHANNELS
        self.p16, self.p8, self.p4 = nn.Conv2d(c16, w, 1), nn.Conv2d(c8, w, 1), nn.Conv2d(c4, h, 1)
        self.fuse8 = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU(inplace=True))
        self.fuse4 = nn.Sequential(nn.Conv2d(w + h, h, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(h, 1, 1))

    def forward(self, f4: torch.Tensor, f8: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.p16(f16), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse8(torch.cat([x, self.p8(f8)], 1))
        x = F.interpolate(x, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse4(torch.cat([x, self.p4(f4)], 1))


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal loss (γ = 2) plus soft Dice on the anomaly class: the defect is a few percent of the pixels."""
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    focal = ((1 - pt) ** 2 * bce).mean()
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return focal + dice


def mask_at(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized to ``shape`` (height, width) by area: a pixel is set when half of what it covers is."""
    import cv2

    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) >= 0.5


def train_decoder(anomalies: Features, anomaly_masks: np.ndarray, normals: Features, config: SegConfig, seed: int,
                  progress: Callable[[int], None] | None = None) -> tuple[Decoder, list[float]]:
    """Train a fresh decoder on encoder features; masks are bool (N, S, S) at ``config.side``.

    Each batch holds ``anomaly_fraction`` synthetic anomalies and the rest normal images with empty masks, drawn
    with a generator seeded by ``seed``. The loss is taken at the mask's full resolution (logits upsampled), so a
    one-pixel scratch still counts. No augmentation: features are computed once per image, and the ImageNet encoder
    is already robust to the small photometric changes the old from-scratch UNet needed jitter for.

    Denormal floats are flushed to zero while it trains (``config.flush_denormals``): where the synthetic defects
    are small, the gradients of the many far-negative logits sink into the denormal range, which this CPU computes
    about ten times slower. Side by side, ball_screw's 300 steps took 49 s flushed against 167 s; pixel AP moved by
    0.01 points. torch has no getter for the switch, so it is turned off again afterwards.
    """
    torch.set_flush_denormal(config.flush_denormals)
    try:
        return _train(anomalies, anomaly_masks, normals, config, seed, progress)
    finally:
        torch.set_flush_denormal(False)


def _train(anomalies: Features, anomaly_masks: np.ndarray, normals: Features, config: SegConfig, seed: int,
           progress: Callable[[int], None] | None) -> tuple[Decoder, list[float]]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Decoder(config.width)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    ya = torch.from_numpy(anomaly_masks.astype(np.float32))[:, None]
    n_normal, side = len(normals[0]), anomaly_masks.shape[-1]
    n_anom = max(1, round(config.batch * config.anomaly_fraction)) if len(ya) else 0
    losses = []
    model.train()
    for step in range(config.steps):
        ia = torch.randint(0, len(ya), (n_anom,), generator=g) if n_anom else torch.zeros(0, dtype=torch.long)
        inn = torch.randint(0, n_normal, (config.batch - n_anom,), generator=g)
        feats = [torch.cat([a[ia], n[inn]]) for a, n in zip(anomalies, normals)]
        y = torch.cat([ya[ia], torch.zeros(len(inn), 1, side, side)])
        logits = F.interpolate(model(*feats), size=(side, side), mode="bilinear", align_corners=False)
        loss = _loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1)
    model.eval()
    return model, losses


@torch.no_grad()
def predict_maps(model: Decoder, features: Features, out_size: tuple[int, int], batch: int = 16) -> np.ndarray:
    """Anomaly probability maps (N, H, W) float32 at ``out_size`` (the masks' resolution)."""
    maps = []
    for i in range(0, len(features[0]), batch):
        logits = model(*(f[i:i + batch] for f in features))
        prob = torch.sigmoid(F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False))
        maps.append(prob[:, 0].numpy())
    return np.concatenate(maps).astype(np.float32)


def save_decoder(model: Decoder, path: Any) -> None:
    """Write a trained decoder (its width and weights) atomically; :func:`load_decoder` reads it back."""
    import io

    from ..images import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"width": model.p16.out_channels, "state": model.state_dict()}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_decoder(path: Any) -> Decoder:
    """A decoder saved by :func:`save_decoder`, in eval mode (tensors only: ``weights_only``)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = Decoder(int(blob["width"]))
    model.load_state_dict(blob["state"])
    return model.eval()
